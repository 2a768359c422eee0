//! Request and response bodies of the control API. Field names are stable: scripts read them
//! through `veer --output json`.

use std::net::{IpAddr, SocketAddr};

use serde::{Deserialize, Serialize};

use crate::{
    control::{
        Answer, DataplaneReport, SourceView,
        offline::{Names, OfflineView},
        views::{
            BackendView, ConfigView, FlowView, FlowsView, GroupView, RevisionView, RolloutView,
            ServiceView, StatusView, StepState, Waiting,
        },
    },
    fleet::{AppliedConfig, StatusError},
    model::{NodeChange, Plan, Protocol, Weight},
    rollout::Phase,
    state::Author,
};

/// `GET /v1/status`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Status {
    /// Revision files that cannot be used, and the one that holds changes back.
    #[serde(default)]
    pub state_files: StateFilesStatus,
    /// The config file: last good reload, last rejection, settings waiting for a restart.
    #[serde(default)]
    pub config: ConfigFileStatus,
    /// The live revision (none before the first apply).
    pub revision: Option<RevisionInfo>,
    /// Interfaces the programs are attached to (from the config file).
    pub interfaces: Vec<String>,
    /// Each interface's hook, mode and why; node settings; clients on the node.
    #[serde(default)]
    pub dataplane: DataplaneStatus,
    /// Conntrack use.
    pub conntrack: ConntrackStatus,
    /// Every service, in the order of the state.
    pub services: Vec<ServiceStatus>,
    /// Set when the status was read from the pinned maps with no daemon (`--offline`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offline: Option<OfflineInfo>,
    /// The etcd source, when the services come from there (`veer daemon --source etcd`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<SourceStatus>,
}

/// How an offline status was read.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OfflineInfo {
    /// The pin directory read.
    pub pin_dir: String,
    /// The revision whose ids named things (none: shown by id, `#3`).
    pub names_from_revision: Option<u64>,
    /// Where the names come from, in words.
    pub names: String,
}

/// What steers traffic on the node, in `Status`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DataplaneStatus {
    /// Every interface veer is attached to.
    pub interfaces: Vec<InterfaceStatus>,
    /// The node settings the data path depends on, as last checked.
    pub node_settings: Vec<NodeSettingStatus>,
    /// Clients on the node (the socket hooks).
    pub local_clients: LocalClientsStatus,
}

/// An interface in `Status`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct InterfaceStatus {
    /// Its name.
    pub name: String,
    /// Its index now (0: the interface is gone; veer attaches again when it comes back).
    pub ifindex: u32,
    /// Link kind (`veth`, `bridge`, `physical (pci)` ...).
    pub kind: String,
    /// `xdp` or `tc`.
    pub hook: String,
    /// `native`, `generic`, `tcx` or `clsact`.
    pub mode: String,
    /// Why this hook.
    pub why: String,
    /// Whether `veer_xdp` redirects into it (`VEER_TX_PORTS`).
    pub xdp_redirect_target: bool,
    /// Why (or why not).
    pub xdp_redirect_why: String,
}

/// A node setting in `Status`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeSettingStatus {
    /// The sysctl (`net.ipv4.conf.n-v1.forwarding`).
    pub key: String,
    /// Its value now.
    pub value: String,
    /// The value veer found before it set it (none: it was already right).
    pub was: Option<String>,
    /// Why the data path needs it.
    pub why: String,
}

/// Clients on the node in `Status`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LocalClientsStatus {
    /// Whether their connections to a VIP are steered (the socket hooks are attached).
    pub steered: bool,
    /// The cgroup the socket hooks are attached to.
    pub cgroup: Option<String>,
    /// Why (or why not).
    pub why: String,
}

/// A revision, briefly.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RevisionInfo {
    /// Revision number (1, 2, 3 ...).
    pub number: u64,
    /// RFC 3339 time.
    pub time: String,
    /// `config`, `apply`, `shift`, `drain`, `pin`, `unpin`, `rollback`.
    pub origin: String,
    /// What changed.
    pub summary: String,
    /// Who made it: `{"kind": "user", "uid": 1000, "name": "alice"}`, `{"kind": "config-file"}`,
    /// `{"kind": "rollout"}`, `{"kind": "fleet"}`, `{"kind": "unknown"}` (made before veer
    /// recorded it).
    #[serde(default)]
    pub author: Author,
    /// Why, as its author said (`--reason`).
    #[serde(default)]
    pub reason: Option<String>,
}

/// A service in `Status`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceStatus {
    /// The name, unique where it lives.
    pub name: String,
    /// Virtual IP of the service.
    pub vip: IpAddr,
    /// Service port.
    pub port: u16,
    /// `tcp` or `udp`.
    pub protocol: Protocol,
    /// Groups, in the order of the state.
    pub groups: Vec<GroupStatus>,
    /// Source-prefix pins.
    pub pins: Vec<PinStatus>,
    /// Packets steered.
    pub packets: u64,
    /// Bytes steered.
    pub bytes: u64,
    /// Flows created.
    pub new_flows: u64,
    /// TCP segments with ACK and no entry (evicted, or older than veer): steered by the flow
    /// hash and tracked unconfirmed until the backend answers.
    pub midflow_misses: u64,
    /// Flows confirmed and moved into the table of confirmed flows.
    #[serde(default)]
    pub promotions: u64,
    /// Promotions refused because that table was full (each attempt).
    #[serde(default)]
    pub promotions_refused: u64,
    /// TCP segments with an invalid flag combination (dropped without a flow, forwarded
    /// unchanged with one; never an entry or a state change).
    #[serde(default)]
    pub invalid_tcp: u64,
}

/// A group in `Status`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupStatus {
    /// The name, unique where it lives.
    pub name: String,
    /// Weight in percent.
    pub weight: Weight,
    /// Sum of the backends' active flows.
    pub active_flows: u64,
    /// Flows of its backends that paced drains ended (a reset to both ends), ever.
    #[serde(default)]
    pub ended_flows: u64,
    /// The paced drain in force on it (`veer drain --deadline`, a rollout's `--drain-deadline`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drain: Option<DrainStatus>,
    /// Backends, in the order of the state.
    pub backends: Vec<BackendStatus>,
}

/// A paced drain in force on a group.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DrainStatus {
    /// When its flows still active begin to be ended (RFC 3339, UTC).
    pub ends_at: String,
    /// Milliseconds until then (0 once it has passed).
    pub deadline_left_ms: u64,
    /// How fast they are ended (`50/s`, `600/m`).
    pub pace: String,
    /// `waiting` (before the deadline), `ending` (after it, flows left) or `done` (no flow was
    /// left after it).
    pub phase: String,
}

/// A backend in `Status`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackendStatus {
    /// `ip:port` (`[v6]:port`).
    pub address: SocketAddr,
    /// Passing its health checks (always true without checks): takes new flows.
    pub healthy: bool,
    /// Its flows that are not closing, in either flow table, and the socket flows of clients on
    /// the node it was given.
    pub active_flows: u64,
    /// Flows given to it.
    pub new_flows: u64,
    /// Connection attempts it answered with a SYN-ACK.
    #[serde(default)]
    pub answered_flows: u64,
    /// Connection attempts it refused (RST answering the SYN).
    #[serde(default)]
    pub refused_flows: u64,
    /// Connection attempts it refused or left unanswered for 3 s.
    pub failed_flows: u64,
    /// Packets steered to it or reverse-NATed from it.
    pub packets: u64,
    /// Bytes of those packets.
    pub bytes: u64,
}

/// A pin in `Status`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PinStatus {
    /// `203.0.113.0/24`.
    pub prefix: String,
    /// Name of the group.
    pub group: String,
}

/// What every change request may add: why (recorded with its revisions), and whether to make
/// it or only show what it would do.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChangeOptions {
    /// Why, in the operator's words (recorded with the revisions it makes, shown by `history`);
    /// one line of at most 1024 bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Decide the change and answer with `DryRunResponse`, applying and recording nothing.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub dry_run: bool,
}

/// `POST /v1/apply`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ApplyRequest {
    /// The config file's text.
    pub config: String,
    /// Its path, for messages and history.
    pub path: String,
    /// Reason, dry run.
    #[serde(flatten)]
    pub options: ChangeOptions,
}

/// The answer to a change with `"dry_run": true`: what it would do, nothing done.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DryRunResponse {
    /// The revision in force (it stays in force).
    pub revision: u64,
    /// Whether the request would make a revision.
    pub changed: bool,
    /// Always true: nothing was applied.
    pub dry_run: bool,
    /// How the desired state would differ (empty: no change).
    pub diff: Vec<DiffEntry>,
    /// The summary of each revision it would make, in order.
    pub revisions: Vec<String>,
    /// Why nothing would change, when it deserves a word.
    #[serde(default)]
    pub note: Option<String>,
    /// `[node]` settings the request asks for that would wait for a daemon restart.
    #[serde(default)]
    pub pending_restart: Vec<NodeChange>,
}

/// One difference between the desired state in force and the one a change would make.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "change")]
pub enum DiffEntry {
    /// A new service.
    ServiceAdded {
        /// Name of the service.
        service: String,
        /// `vip:port/proto`.
        endpoint: String,
    },
    /// A service that goes away.
    ServiceRemoved {
        /// Name of the service.
        service: String,
        /// `vip:port/proto`.
        endpoint: String,
    },
    /// A service that moves.
    EndpointChanged {
        /// Name of the service.
        service: String,
        /// Before.
        from: String,
        /// After.
        to: String,
    },
    /// A new group.
    GroupAdded {
        /// Name of the service.
        service: String,
        /// Name of the group.
        group: String,
        /// Its weight (percent).
        weight: Weight,
    },
    /// A group that goes away.
    GroupRemoved {
        /// Name of the service.
        service: String,
        /// Name of the group.
        group: String,
        /// Its weight before (percent).
        weight: Weight,
    },
    /// A weight that changes.
    WeightChanged {
        /// Name of the service.
        service: String,
        /// Name of the group.
        group: String,
        /// Before (percent).
        from: Weight,
        /// After (percent).
        to: Weight,
    },
    /// A backend that joins a group.
    BackendAdded {
        /// Name of the service.
        service: String,
        /// Name of the group.
        group: String,
        /// `ip:port`.
        backend: SocketAddr,
    },
    /// A backend that leaves a group.
    BackendRemoved {
        /// Name of the service.
        service: String,
        /// Name of the group.
        group: String,
        /// `ip:port`.
        backend: SocketAddr,
    },
    /// A new pin.
    PinAdded {
        /// Name of the service.
        service: String,
        /// `203.0.113.0/24`.
        prefix: String,
        /// Name of the group.
        group: String,
    },
    /// A pin that goes away.
    PinRemoved {
        /// Name of the service.
        service: String,
        /// `203.0.113.0/24`.
        prefix: String,
        /// Name of the group.
        group: String,
    },
    /// A pin that moves to another group.
    PinChanged {
        /// Name of the service.
        service: String,
        /// `203.0.113.0/24`.
        prefix: String,
        /// Group before.
        from: String,
        /// Group after.
        to: String,
    },
    /// A health check added, removed or changed.
    HealthChanged {
        /// Name of the service.
        service: String,
        /// Before, in words.
        from: Option<String>,
        /// After, in words.
        to: Option<String>,
    },
    /// A declared rollout added, removed or changed.
    DeclaredRolloutChanged {
        /// Name of the service.
        service: String,
        /// Before, in words.
        from: Option<String>,
        /// After, in words.
        to: Option<String>,
    },
}

/// Answer to every change.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApplyResponse {
    /// The revision in force.
    pub revision: u64,
    /// Whether this request made it (false: already in force).
    pub changed: bool,
    /// Why nothing changed, when it deserves a word (an abort with no rollout running).
    #[serde(default)]
    pub note: Option<String>,
    /// `[node]` settings the request asked for that wait for a daemon restart.
    #[serde(default)]
    pub pending_restart: Vec<NodeChange>,
}

/// Revision files that cannot be used, in `Status`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StateFilesStatus {
    /// The newest revision file when it cannot be used: the maps are kept as they are and no
    /// change is made until an operator chooses the state (`advice` says how).
    pub held: Option<HeldStatus>,
    /// Every file named like a revision that cannot be used (reported, never used, never
    /// overwritten), by number.
    pub unusable: Vec<UnusableFile>,
}

/// The revision file that holds changes back.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeldStatus {
    /// The file.
    #[serde(flatten)]
    pub file: UnusableFile,
    /// The newest revision that can be used.
    pub newest_usable: Option<u64>,
    /// What to do.
    pub advice: String,
}

/// A file named like a revision that cannot be used.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UnusableFile {
    /// The number its name claims.
    pub revision: u64,
    /// The file.
    pub path: String,
    /// What is wrong with it.
    pub problem: String,
}

impl From<&crate::state::Unusable> for UnusableFile {
    fn from(u: &crate::state::Unusable) -> Self {
        Self {
            revision: u.number,
            path: u.path.display().to_string(),
            problem: u.problem.to_string(),
        }
    }
}

impl StateFilesStatus {
    /// The files of `f`; `etcd`: the node's services come from etcd (the advice says what
    /// happens after the hold).
    fn of(f: &crate::control::views::FilesView, etcd: bool) -> Self {
        Self {
            held: f.held.as_ref().map(|h| HeldStatus {
                file: UnusableFile::from(h),
                newest_usable: f.newest_usable,
                advice: format!(
                    "the maps are kept as they are and nothing changes until you choose the state to put in force: {}",
                    crate::control::held_advice(f.newest_usable, etcd)
                ),
            }),
            unusable: f.unusable.iter().map(UnusableFile::from).collect(),
        }
    }
}

/// The config file in `Status`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConfigFileStatus {
    /// The file the daemon reads.
    pub path: String,
    /// When it was last applied or found in force (start, SIGHUP, change), RFC 3339.
    pub last_reload: Option<String>,
    /// The last reload that refused it, unless a good one came after.
    pub last_error: Option<ReloadErrorInfo>,
    /// `[node]` settings asked for (by the file or `veer apply`) that wait for a daemon restart.
    pub pending_restart: Vec<NodeChange>,
}

/// A refused reload.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReloadErrorInfo {
    /// When, RFC 3339.
    pub time: String,
    /// The file, when the file itself is wrong.
    pub file: Option<String>,
    /// 1-based line.
    pub line: Option<usize>,
    /// 1-based column.
    pub column: Option<usize>,
    /// What is wrong.
    pub message: String,
}

/// One group's new weight.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct GroupWeight {
    /// Name of the group.
    pub group: String,
    /// Weight in percent.
    pub weight: Weight,
}

/// `POST /v1/shift`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ShiftRequest {
    /// Services shifted together in one revision (e.g. the IPv4 and IPv6 services of a
    /// dual-stack pair).
    pub services: Vec<String>,
    /// New weights; groups not named keep theirs.
    pub weights: Vec<GroupWeight>,
    /// Accept weights that leave a service with no group taking new connections.
    #[serde(default)]
    pub force: bool,
    /// Reason, dry run.
    #[serde(flatten)]
    pub options: ChangeOptions,
}

/// `POST /v1/drain`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct DrainRequest {
    /// Name of the service.
    pub service: String,
    /// Name of the group.
    pub group: String,
    /// Drain even the last group taking new flows.
    #[serde(default)]
    pub force: bool,
    /// After a deadline, end the flows left at a pace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end: Option<crate::model::drain::DrainEnd>,
    /// Reason, dry run.
    #[serde(flatten)]
    pub options: ChangeOptions,
}

/// `POST /v1/pin`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PinRequest {
    /// Name of the service.
    pub service: String,
    /// Client prefix (a bare address is one host: /32 or /128).
    pub prefix: String,
    /// Name of the group.
    pub group: String,
    /// Reason, dry run.
    #[serde(flatten)]
    pub options: ChangeOptions,
}

/// `POST /v1/unpin`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct UnpinRequest {
    /// Name of the service.
    pub service: String,
    /// Client prefix (a bare address is one host: /32 or /128).
    pub prefix: String,
    /// Reason, dry run.
    #[serde(flatten)]
    pub options: ChangeOptions,
}

/// `POST /v1/rollback`.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct RollbackRequest {
    /// Only this service.
    #[serde(default)]
    pub service: Option<String>,
    /// Revision to go back to (default: the one before the live one).
    #[serde(default)]
    pub to: Option<u64>,
    /// Reason, dry run.
    #[serde(flatten)]
    pub options: ChangeOptions,
}

/// One entry of `GET /v1/history`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistoryEntry {
    /// The revision.
    #[serde(flatten)]
    pub revision: RevisionInfo,
}

/// `GET /v1/history`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct HistoryResponse {
    /// Newest first.
    pub revisions: Vec<HistoryEntry>,
}

/// One conntrack entry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FlowInfo {
    /// Client address and port.
    pub client: SocketAddr,
    /// VIP and port it talks to.
    pub vip: SocketAddr,
    /// `tcp` or `udp`.
    pub protocol: String,
    /// Service (when it still exists).
    pub service: Option<String>,
    /// Group the backend was picked from (when it still exists).
    pub group: Option<String>,
    /// Address and port of the backend.
    pub backend: SocketAddr,
    /// `syn`, `syn_acked`, `midflow`, `established`, `closing`, `udp`.
    pub state: String,
    /// Seconds since the last packet (1 s resolution).
    pub idle_seconds: u64,
}

/// `GET /v1/flows`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct FlowsResponse {
    /// At most `limit` entries.
    pub flows: Vec<FlowInfo>,
    /// How many entries matched in all.
    pub matched: usize,
}

/// `GET /v1/version`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct VersionResponse {
    /// The daemon's version.
    pub version: String,
}

/// Every error answer.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ErrorBody {
    /// The error.
    pub error: ErrorDetail,
}

/// What went wrong.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ErrorDetail {
    /// Stable kind: `bad_request`, `invalid_config`, `forbidden`, `not_found`, `conflict`,
    /// `dataplane`, `store`.
    pub kind: String,
    /// The full message.
    pub message: String,
    /// More, by kind: `invalid_config` has `diagnostics`, every problem of the file
    /// (`file`, `line`, `column`, `key`, `message`, `expected`).
    #[serde(flatten)]
    pub details: serde_json::Map<String, serde_json::Value>,
}

/// `POST /v1/rollouts`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RolloutStartRequest {
    /// Name of the service.
    pub service: String,
    /// The plan.
    pub plan: Plan,
    /// Reason, dry run.
    #[serde(flatten)]
    pub options: ChangeOptions,
}

/// `POST /v1/rollouts/SERVICE/{pause,resume,abort,retry,promote}` (an empty body is `{}`).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct RolloutActionRequest {
    /// `promote` only: straight to the last step.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub full: bool,
    /// Reason, dry run.
    #[serde(flatten)]
    pub options: ChangeOptions,
}

/// Attempts and failures of the target group in the current step.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepCounts {
    /// Connection attempts to the target group its backends answered or failed (UDP: new
    /// flows given to it).
    pub attempted: u64,
    /// Of those, refused or unanswered.
    pub failed: u64,
}

/// `GET /v1/rollouts/SERVICE`: the service's latest rollout.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RolloutStatus {
    /// Name of the service.
    pub service: String,
    /// Target group.
    pub to: String,
    /// `running`, `paused`, `completed`, `rolled_back`, `aborted`.
    pub phase: Phase,
    /// Current step, 1-based.
    pub step: usize,
    /// Target shares of every step.
    pub steps: Vec<Weight>,
    /// Target share now.
    pub share: Weight,
    /// Every group's weight now.
    pub weights: Vec<(String, Weight)>,
    /// The target's attempts and failures in this step.
    pub in_step: StepCounts,
    /// What the step waits for, when running.
    pub waiting: Option<String>,
    /// Why it was paused, rolled back or aborted.
    pub reason: Option<String>,
    /// The plan.
    pub plan: Plan,
    /// The canary judge's latest verdict (the current step's, live, or the one that ended the
    /// last judged step), with its numbers; none for a rollout without the judge.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub judge: Option<crate::rollout::canary::StepVerdict>,
    /// What the step waits for, when running, as data (`waiting` says it in words).
    #[serde(default)]
    pub waiting_for: Option<WaitingFor>,
    /// The current step's pause was skipped (`veer rollout promote`).
    #[serde(default)]
    pub pause_skipped: bool,
    /// Seconds since the current step began.
    #[serde(default)]
    pub step_seconds: u64,
    /// Every step of the plan and where it is.
    #[serde(default)]
    pub progress: Vec<StepStatus>,
    /// Every group of the service in the current step.
    #[serde(default)]
    pub groups: Vec<RolloutGroupStatus>,
    /// The failure-rate judgement of the target group in the current step (or the last one).
    #[serde(default)]
    pub verdict: Option<VerdictStatus>,
}

/// What a running step waits for.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum WaitingFor {
    /// The pause: this many seconds left.
    Pause {
        /// Seconds left (rounded up).
        seconds_left: u64,
        /// Whether the step is the last (it completes, rather than steps on, when it holds).
        last_step: bool,
    },
    /// New flows to the target: `seen` of `needed`.
    MinFlows {
        /// Seen so far in the step.
        seen: u64,
        /// The plan's `min_flows`.
        needed: u64,
    },
    /// The extra gates are being checked.
    Gates {
        /// The gates, as written.
        gates: Vec<String>,
    },
    /// The canary judge has not passed the step yet.
    Judge {
        /// Its latest verdict (`not_enough_data`, or `pass` before the end of the pause);
        /// none before its first look.
        outcome: Option<crate::rollout::judge::Outcome>,
    },
}

/// A step in `RolloutStatus.progress`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepStatus {
    /// 1-based.
    pub step: usize,
    /// The target's share (percent).
    pub share: Weight,
    /// Every group's weight in the step.
    pub weights: Vec<(String, Weight)>,
    /// `done`, `running`, `paused`, `pending`, `skipped`, `breached`, `aborted`.
    pub state: String,
    /// How long it ran (so far), in seconds; none for a step not reached.
    pub seconds: Option<u64>,
    /// The target's new flows in it; none for a step not reached.
    pub new_flows: Option<u64>,
    /// Of those, refused or unanswered.
    pub failed_flows: Option<u64>,
}

/// A group in `RolloutStatus.groups`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RolloutGroupStatus {
    /// Name of the group.
    pub name: String,
    /// Its weight now (percent).
    pub weight: Weight,
    /// Its active flows now.
    pub active_flows: u64,
    /// New flows in the current step (none when unknown: a rollout that is over).
    pub new_flows: Option<u64>,
    /// Failed attempts in the current step.
    pub failed_flows: Option<u64>,
    /// New flows per second, averaged over the step so far.
    pub new_flows_per_second: Option<f64>,
}

/// The failure-rate verdict in `RolloutStatus`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct VerdictStatus {
    /// New flows to the target in the step.
    pub new_flows: u64,
    /// Of those, refused or unanswered.
    pub failed_flows: u64,
    /// `failed_flows` over `new_flows`, in percent.
    pub failure_rate: f64,
    /// The plan's limit, in percent.
    pub max_failure_rate: Weight,
    /// The plan's `min_flows`: below it, the step is not judged yet.
    pub min_flows: u64,
    /// Whether the step had enough new flows to be judged.
    pub judged: bool,
}

/// Conntrack use in `Status`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConntrackStatus {
    /// Entries in the table of confirmed flows (`VEER_FLOWS`).
    pub entries: u64,
    /// Its capacity (`conntrack_max`).
    pub capacity: u32,
    /// Entries in the table of new flows (`VEER_NEWFLOWS`: handshakes, mid-flow misses, UDP).
    #[serde(default)]
    pub new_entries: u64,
    /// Its capacity (`conntrack_new_max`).
    #[serde(default)]
    pub new_capacity: u32,
}

impl From<&RevisionView> for RevisionInfo {
    fn from(r: &RevisionView) -> Self {
        Self {
            number: r.number,
            time: rfc3339(r.time),
            origin: r.origin.word().to_owned(),
            summary: r.summary.clone(),
            author: r.audit.author.clone(),
            reason: r.audit.reason.clone(),
        }
    }
}

impl From<&BackendView> for BackendStatus {
    fn from(b: &BackendView) -> Self {
        Self {
            address: b.addr,
            healthy: b.healthy,
            active_flows: b.active_flows,
            new_flows: b.new_flows,
            answered_flows: b.answered_flows,
            refused_flows: b.refused_flows,
            failed_flows: b.failed_flows,
            packets: b.packets,
            bytes: b.bytes,
        }
    }
}

impl From<&GroupView> for GroupStatus {
    fn from(g: &GroupView) -> Self {
        Self {
            name: g.name.clone(),
            weight: g.weight,
            active_flows: g.active_flows,
            ended_flows: g.ended_flows,
            drain: g.drain.as_ref().map(|d| DrainStatus {
                ends_at: humantime::format_rfc3339_millis(d.ends_from).to_string(),
                deadline_left_ms: u64::try_from(d.deadline_left.as_millis()).unwrap_or(u64::MAX),
                pace: d.pace.to_string(),
                phase: if d.done {
                    "done"
                } else if d.deadline_left.is_zero() {
                    "ending"
                } else {
                    "waiting"
                }
                .to_owned(),
            }),
            backends: g.backends.iter().map(BackendStatus::from).collect(),
        }
    }
}

impl From<&ServiceView> for ServiceStatus {
    fn from(s: &ServiceView) -> Self {
        Self {
            name: s.name.clone(),
            vip: s.vip,
            port: s.port,
            protocol: s.protocol,
            groups: s.groups.iter().map(GroupStatus::from).collect(),
            pins: s
                .pins
                .iter()
                .map(|p| PinStatus {
                    prefix: format!("{}/{}", p.prefix, p.len),
                    group: p.group.clone(),
                })
                .collect(),
            packets: s.counters.packets,
            bytes: s.counters.bytes,
            new_flows: s.counters.new_flows,
            midflow_misses: s.counters.midflow_misses,
            promotions: s.counters.promotions,
            promotions_refused: s.counters.promotions_refused,
            invalid_tcp: s.counters.invalid_tcp,
        }
    }
}

fn rfc3339(t: std::time::SystemTime) -> String {
    humantime::format_rfc3339_seconds(t).to_string()
}

impl From<&ConfigView> for ConfigFileStatus {
    fn from(c: &ConfigView) -> Self {
        Self {
            path: c.path.display().to_string(),
            last_reload: c.last_good.map(rfc3339),
            last_error: c.last_error.as_ref().map(|e| ReloadErrorInfo {
                time: rfc3339(e.time),
                file: e.location.as_ref().map(|l| l.file.display().to_string()),
                line: e.location.as_ref().map(|l| l.line),
                column: e.location.as_ref().map(|l| l.column),
                message: e.message.clone(),
            }),
            pending_restart: c.pending_restart.clone(),
        }
    }
}

impl From<&DataplaneReport> for DataplaneStatus {
    fn from(d: &DataplaneReport) -> Self {
        Self {
            interfaces: d
                .interfaces
                .iter()
                .map(|i| InterfaceStatus {
                    name: i.name.clone(),
                    ifindex: i.ifindex,
                    kind: i.kind.clone(),
                    hook: i.hook.clone(),
                    mode: i.mode.clone(),
                    why: i.why.clone(),
                    xdp_redirect_target: i.xdp_redirect_target,
                    xdp_redirect_why: i.xdp_redirect_why.clone(),
                })
                .collect(),
            node_settings: d
                .node_settings
                .iter()
                .map(|n| NodeSettingStatus {
                    key: n.key.clone(),
                    value: n.value.clone(),
                    was: n.was.clone(),
                    why: n.why.clone(),
                })
                .collect(),
            local_clients: LocalClientsStatus {
                steered: d.local_clients.steered,
                cgroup: d
                    .local_clients
                    .cgroup
                    .as_ref()
                    .map(|c| c.display().to_string()),
                why: d.local_clients.why.clone(),
            },
        }
    }
}

impl From<&StatusView> for Status {
    fn from(s: &StatusView) -> Self {
        Self {
            state_files: StateFilesStatus::of(&s.files, s.source.is_some()),
            config: ConfigFileStatus::from(&s.config),
            revision: s.revision.as_ref().map(RevisionInfo::from),
            interfaces: s.interfaces.clone(),
            dataplane: DataplaneStatus::from(&s.dataplane),
            conntrack: ConntrackStatus {
                entries: s.conntrack_entries,
                capacity: s.conntrack_capacity,
                new_entries: s.conntrack_new_entries,
                new_capacity: s.conntrack_new_capacity,
            },
            services: s.services.iter().map(ServiceStatus::from).collect(),
            offline: None,
            source: s.source.as_ref().map(SourceStatus::from),
        }
    }
}

impl From<&OfflineView> for Status {
    fn from(v: &OfflineView) -> Self {
        let mut s = Status::from(&v.status);
        let (names_from_revision, names) = match &v.names {
            Names::Revision(n) => (Some(*n), format!("names from revision {n}")),
            Names::Ids(why) => (None, format!("names unknown ({why}): shown by id")),
        };
        s.offline = Some(OfflineInfo {
            pin_dir: v.pin_dir.display().to_string(),
            names_from_revision,
            names,
        });
        s
    }
}

impl From<&FlowView> for FlowInfo {
    fn from(f: &FlowView) -> Self {
        Self {
            client: f.client,
            vip: f.vip,
            protocol: f.protocol.as_str().to_owned(),
            service: f.service.clone(),
            group: f.group.clone(),
            backend: f.backend,
            state: f.state.as_str().to_owned(),
            idle_seconds: f.idle.as_secs(),
        }
    }
}

impl From<&FlowsView> for FlowsResponse {
    fn from(f: &FlowsView) -> Self {
        Self {
            flows: f.flows.iter().map(FlowInfo::from).collect(),
            matched: f.matched,
        }
    }
}

impl From<&RolloutView> for RolloutStatus {
    fn from(v: &RolloutView) -> Self {
        let r = &v.rollout;
        let last_step = r.at_last_step();
        Self {
            service: r.service.clone(),
            to: r.plan.to.clone(),
            phase: r.phase,
            step: r.step + 1,
            steps: r.plan.steps.clone(),
            share: r.share(),
            weights: v.weights.clone(),
            in_step: StepCounts {
                attempted: v.in_step.attempted,
                failed: v.in_step.failed,
            },
            waiting: v.waiting.map(|w| match w {
                Waiting::Pause { left } if last_step => {
                    format!("completes in {}s", seconds_up(left))
                }
                Waiting::Pause { left } => format!("next step in {}s", seconds_up(left)),
                Waiting::MinFlows { seen, needed } => {
                    format!("waiting for {seen} of {needed} new flows")
                }
                Waiting::Gates => "checking gates".to_owned(),
                Waiting::Judge => format!(
                    "the judge ({})",
                    v.judge
                        .as_ref()
                        .map_or("no look yet", |s| match s.verdict.outcome {
                            crate::rollout::judge::Outcome::NotEnoughData => "not enough data",
                            _ => "the look at the end of the pause",
                        })
                ),
            }),
            reason: r.reason.clone(),
            plan: r.plan.clone(),
            judge: v.judge.clone(),
            waiting_for: v.waiting.map(|w| match w {
                Waiting::Pause { left } => WaitingFor::Pause {
                    seconds_left: seconds_up(left),
                    last_step,
                },
                Waiting::MinFlows { seen, needed } => WaitingFor::MinFlows { seen, needed },
                Waiting::Gates => WaitingFor::Gates {
                    gates: r.plan.gates.iter().map(ToString::to_string).collect(),
                },
                Waiting::Judge => WaitingFor::Judge {
                    outcome: v.judge.as_ref().map(|j| j.verdict.outcome),
                },
            }),
            pause_skipped: r.pause_skipped,
            step_seconds: v.elapsed.as_secs(),
            progress: v
                .steps
                .iter()
                .map(|s| StepStatus {
                    step: s.step + 1,
                    share: s.share,
                    weights: s.weights.clone(),
                    state: match s.state {
                        StepState::Done => "done",
                        StepState::Running => "running",
                        StepState::Paused => "paused",
                        StepState::Pending => "pending",
                        StepState::Skipped => "skipped",
                        StepState::Breached => "breached",
                        StepState::Aborted => "aborted",
                    }
                    .to_owned(),
                    seconds: s.duration.map(|d| d.as_secs()),
                    new_flows: s.counts.map(|c| c.attempted),
                    failed_flows: s.counts.map(|c| c.failed),
                })
                .collect(),
            groups: v
                .groups
                .iter()
                .map(|g| RolloutGroupStatus {
                    name: g.name.clone(),
                    weight: g.weight,
                    active_flows: g.active_flows,
                    new_flows: g.in_step.map(|c| c.attempted),
                    failed_flows: g.in_step.map(|c| c.failed),
                    new_flows_per_second: g.new_per_second.map(|r| (r * 10.0).round() / 10.0),
                })
                .collect(),
            verdict: Some(VerdictStatus {
                new_flows: v.verdict.counts.attempted,
                failed_flows: v.verdict.counts.failed,
                failure_rate: (v.verdict.failure_percent() * 100.0).round() / 100.0,
                max_failure_rate: v.verdict.max_failure_rate,
                min_flows: v.verdict.min_flows,
                judged: v.verdict.is_judged(),
            }),
        }
    }
}

/// Whole seconds, rounded up (a pause with 0.2 s left has 1 s left, not 0).
fn seconds_up(d: std::time::Duration) -> u64 {
    d.as_secs() + u64::from(d.subsec_nanos() > 0)
}

impl From<&crate::control::Preview> for DryRunResponse {
    fn from(p: &crate::control::Preview) -> Self {
        Self {
            revision: p.revision,
            changed: !p.summaries.is_empty(),
            dry_run: true,
            diff: p.diff.iter().map(DiffEntry::from).collect(),
            revisions: p.summaries.clone(),
            note: p.note.clone(),
            pending_restart: p.pending_restart.clone(),
        }
    }
}

impl From<&crate::control::diff::Difference> for DiffEntry {
    fn from(d: &crate::control::diff::Difference) -> Self {
        use crate::control::diff::Difference as D;
        match d.clone() {
            D::ServiceAdded { service, endpoint } => DiffEntry::ServiceAdded { service, endpoint },
            D::ServiceRemoved { service, endpoint } => {
                DiffEntry::ServiceRemoved { service, endpoint }
            }
            D::EndpointChanged { service, from, to } => {
                DiffEntry::EndpointChanged { service, from, to }
            }
            D::GroupAdded {
                service,
                group,
                weight,
            } => DiffEntry::GroupAdded {
                service,
                group,
                weight,
            },
            D::GroupRemoved {
                service,
                group,
                weight,
            } => DiffEntry::GroupRemoved {
                service,
                group,
                weight,
            },
            D::WeightChanged {
                service,
                group,
                from,
                to,
            } => DiffEntry::WeightChanged {
                service,
                group,
                from,
                to,
            },
            D::BackendAdded {
                service,
                group,
                backend,
            } => DiffEntry::BackendAdded {
                service,
                group,
                backend,
            },
            D::BackendRemoved {
                service,
                group,
                backend,
            } => DiffEntry::BackendRemoved {
                service,
                group,
                backend,
            },
            D::PinAdded {
                service,
                prefix,
                group,
            } => DiffEntry::PinAdded {
                service,
                prefix,
                group,
            },
            D::PinRemoved {
                service,
                prefix,
                group,
            } => DiffEntry::PinRemoved {
                service,
                prefix,
                group,
            },
            D::PinChanged {
                service,
                prefix,
                from,
                to,
            } => DiffEntry::PinChanged {
                service,
                prefix,
                from,
                to,
            },
            D::HealthChanged { service, from, to } => {
                DiffEntry::HealthChanged { service, from, to }
            }
            D::DeclaredRolloutChanged { service, from, to } => {
                DiffEntry::DeclaredRolloutChanged { service, from, to }
            }
        }
    }
}

impl From<&Answer> for ApplyResponse {
    fn from(a: &Answer) -> Self {
        Self {
            revision: a.revision,
            changed: a.changed,
            note: a.note.clone(),
            pending_restart: a.pending_restart.clone(),
        }
    }
}

/// The etcd source in `Status`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceStatus {
    /// `etcd`.
    pub kind: String,
    /// The endpoints, comma-separated.
    pub endpoints: String,
    /// The key prefix.
    pub prefix: String,
    /// This node's name in the fleet.
    pub node: String,
    /// Whether the node synced with etcd since it started (until then it serves its last local
    /// revision).
    pub ready: bool,
    /// The etcd revision the node has heard of.
    pub revision: i64,
    /// The config document in force: its key and mod revision.
    pub config: Option<AppliedConfig>,
    /// RFC 3339 time since which etcd has been unreachable; `null` while connected.
    pub stale_since: Option<String>,
    /// The last etcd error.
    pub error: Option<String>,
    /// The config document refused, and why (`/veer/config:12:9: ...`).
    pub refused: Option<StatusError>,
    /// Other errors (the node's part of fleet rollouts).
    pub errors: Vec<StatusError>,
    /// RFC 3339 time of the last list or reconnection.
    pub last_sync: Option<String>,
    /// Local changes in force over the config document until its next change, newest first.
    pub local_changes: Vec<String>,
}

impl From<&SourceView> for SourceStatus {
    fn from(s: &SourceView) -> Self {
        Self {
            kind: "etcd".to_owned(),
            endpoints: s.source.endpoints.clone(),
            prefix: s.source.prefix.clone(),
            node: s.source.node.to_string(),
            ready: s.ready,
            revision: s.revision,
            config: s.applied.clone(),
            stale_since: s.stale_since.map(rfc3339),
            error: s.error.clone(),
            refused: s.refused.clone(),
            errors: s.errors.clone(),
            last_sync: s.last_sync.map(rfc3339),
            local_changes: s.local_changes.clone(),
        }
    }
}
