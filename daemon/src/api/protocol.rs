//! Request and response bodies of the control API. Field names are stable: scripts read them
//! through `veer --output json`.

use std::net::{IpAddr, SocketAddr};

use serde::{Deserialize, Serialize};

use crate::{
    control::{
        Answer, DataplaneReport,
        views::{
            BackendView, ConfigView, FlowView, FlowsView, GroupView, RevisionView, RolloutView,
            ServiceView, StatusView, Waiting,
        },
    },
    model::{NodeChange, Plan, Protocol, Weight},
    rollout::Phase,
};

/// `GET /v1/status`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Status {
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
    /// Backends, in the order of the state.
    pub backends: Vec<BackendStatus>,
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

/// `POST /v1/apply`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ApplyRequest {
    /// The config file's text.
    pub config: String,
    /// Its path, for messages and history.
    pub path: String,
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
}

/// `POST /v1/pin`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PinRequest {
    /// Name of the service.
    pub service: String,
    /// Client prefix.
    pub prefix: String,
    /// Name of the group.
    pub group: String,
}

/// `POST /v1/unpin`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct UnpinRequest {
    /// Name of the service.
    pub service: String,
    /// Client prefix.
    pub prefix: String,
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
}

/// `POST /v1/rollouts`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RolloutStartRequest {
    /// Name of the service.
    pub service: String,
    /// The plan.
    pub plan: Plan,
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
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
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
    /// The canary judge's latest verdict (the current step's, or the one that ended the last
    /// judged step), with its numbers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verdict: Option<crate::rollout::canary::StepVerdict>,
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
        }
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
                Waiting::Pause { left } => format!("next step in {}s", left.as_secs()),
                Waiting::MinFlows { seen, needed } => {
                    format!("waiting for {seen} of {needed} new flows")
                }
                Waiting::Gates => "checking gates".to_owned(),
                Waiting::Judge => format!(
                    "the judge ({})",
                    v.verdict
                        .as_ref()
                        .map_or("no look yet", |s| match s.verdict.outcome {
                            crate::rollout::judge::Outcome::NotEnoughData => "not enough data",
                            _ => "the look at the end of the pause",
                        })
                ),
            }),
            reason: r.reason.clone(),
            plan: r.plan.clone(),
            verdict: v.verdict.clone(),
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
