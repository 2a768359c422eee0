//! Request and response bodies of the control API. Field names are stable: scripts read them
//! through `veer --output json`.

use std::net::{IpAddr, SocketAddr};

use serde::{Deserialize, Serialize};

use crate::model::{Protocol, Weight};

/// API version in every path (`/v1/...`).
pub const VERSION: &str = "v1";

/// `GET /v1/status`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Status {
    /// The live revision (none before the first apply).
    pub revision: Option<RevisionInfo>,
    /// Interfaces the programs are attached to (from the config file).
    pub interfaces: Vec<String>,
    /// Each interface's hook, mode and why; node settings; clients on the node.
    #[serde(default)]
    pub dataplane: crate::dataplane::DataplaneReport,
    /// Conntrack use.
    pub conntrack: ConntrackStatus,
    /// Services.
    pub services: Vec<ServiceStatus>,
}

/// A revision, briefly.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RevisionInfo {
    /// Number.
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
    /// Name.
    pub name: String,
    /// VIP.
    pub vip: IpAddr,
    /// Port.
    pub port: u16,
    /// `tcp` or `udp`.
    pub protocol: Protocol,
    /// Groups.
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
    /// Name.
    pub name: String,
    /// Weight in percent.
    pub weight: Weight,
    /// Sum of the backends' active flows.
    pub active_flows: u64,
    /// Backends.
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
    /// Group.
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
}

/// One group's new weight.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct GroupWeight {
    /// Group.
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
    /// Service.
    pub service: String,
    /// Group.
    pub group: String,
    /// Drain even the last group taking new flows.
    #[serde(default)]
    pub force: bool,
}

/// `POST /v1/pin`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PinRequest {
    /// Service.
    pub service: String,
    /// Client prefix.
    pub prefix: String,
    /// Group.
    pub group: String,
}

/// `POST /v1/unpin`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct UnpinRequest {
    /// Service.
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
    /// Backend.
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
    /// Service.
    pub service: String,
    /// The plan.
    pub plan: crate::rollout::Plan,
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
    /// Service.
    pub service: String,
    /// Target group.
    pub to: String,
    /// `running`, `paused`, `completed`, `rolled_back`, `aborted`.
    pub phase: crate::rollout::Phase,
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
    pub plan: crate::rollout::Plan,
}

/// Conntrack use in `Status`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConntrackStatus {
    /// Entries (every state).
    pub entries: u64,
    /// Capacity.
    pub capacity: u32,
}
