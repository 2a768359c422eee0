//! Request and response bodies of the control API. Field names are stable: scripts read them
//! through `veer --output json`.

use std::net::{IpAddr, SocketAddr};

use serde::{Deserialize, Serialize};

use crate::{
    control::{
        Answer, SourceView,
        views::{
            BackendView, ConfigView, FlowView, FlowsView, GroupView, RevisionView, RolloutView,
            ServiceView, StatusView, Waiting,
        },
    },
    fleet::{AppliedConfig, StatusError},
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
    /// Conntrack use.
    pub conntrack: ConntrackStatus,
    /// Every service, in the order of the state.
    pub services: Vec<ServiceStatus>,
    /// The etcd source, when the services come from there (`veer daemon --source etcd`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<SourceStatus>,
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
    /// Flows created by a TCP non-SYN (entry evicted or older than veer).
    pub midflow_misses: u64,
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
    /// Conntrack entries in SYN, established or UDP state.
    pub active_flows: u64,
    /// Flows given to it.
    pub new_flows: u64,
    /// Connection attempts it refused (RST answering the SYN) or left unanswered.
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
    /// `syn`, `established`, `closing`, `udp`.
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
    /// New flows given to the target group.
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
}

/// Conntrack use in `Status`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConntrackStatus {
    /// Entries (every state).
    pub entries: u64,
    /// Entries the map can hold.
    pub capacity: u32,
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

impl From<&StatusView> for Status {
    fn from(s: &StatusView) -> Self {
        Self {
            config: ConfigFileStatus::from(&s.config),
            revision: s.revision.as_ref().map(RevisionInfo::from),
            interfaces: s.interfaces.clone(),
            conntrack: ConntrackStatus {
                entries: s.conntrack_entries,
                capacity: s.conntrack_capacity,
            },
            services: s.services.iter().map(ServiceStatus::from).collect(),
            source: s.source.as_ref().map(SourceStatus::from),
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
            }),
            reason: r.reason.clone(),
            plan: r.plan.clone(),
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
