//! What the control layer shows: the live revision, services with their counters, conntrack
//! entries, history and rollouts, as domain values. The API and the metrics turn them into
//! their own formats; nothing here knows JSON field names or metric names.

use std::{
    collections::HashMap,
    fmt::Write as _,
    net::{IpAddr, SocketAddr},
    path::PathBuf,
    time::{Duration, SystemTime},
};

use veer_common::{
    PROTO_TCP,
    addr::words_addr,
    counters::ServiceCounters,
    flow::{
        STATE_CLOSING, STATE_ESTABLISHED, STATE_MIDFLOW, STATE_SYN, STATE_SYN_ACKED, STATE_UDP,
        TICK_SHIFT, ticks_since,
    },
};

use super::{
    effects::{DataplaneReport, FlowTable, Readings},
    error::ControlError,
    health::Health,
};
use crate::{
    config::{ConfigErrors, LoadError, Location},
    error::chain,
    model::{DesiredState, NodeChange, Pin, Protocol, Weight},
    rollout::{Phase, Rollout, StepOutcome, engine::Counts},
    state::{Audit, Origin, Revision, Unusable},
};

/// A revision, briefly.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RevisionView {
    /// Revision number (1, 2, 3 ...).
    pub number: u64,
    /// When it was committed.
    pub time: SystemTime,
    /// Where it came from.
    pub origin: Origin,
    /// What changed.
    pub summary: String,
    /// Who made it, and why.
    pub audit: Audit,
}

impl From<&Revision> for RevisionView {
    fn from(r: &Revision) -> Self {
        Self {
            number: r.number,
            time: r.time,
            origin: r.origin.clone(),
            summary: r.summary.clone(),
            audit: r.audit.clone(),
        }
    }
}

/// A reload of the config file (or the start's reading of it) that was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReloadError {
    /// When.
    pub time: SystemTime,
    /// Where in the file, when the file itself is wrong.
    pub location: Option<Location>,
    /// What is wrong (without the location).
    pub message: String,
}

impl ReloadError {
    /// The rejection `e`, at `time`.
    pub fn of(e: &ControlError, time: SystemTime) -> Self {
        let invalid = match e {
            ControlError::Config(c) => Some(c),
            ControlError::ConfigFile(load) => match load.as_ref() {
                LoadError::Invalid(c) => Some(c),
                LoadError::Read { .. } => None,
            },
            _ => None,
        };
        let first = invalid.and_then(ConfigErrors::first);
        let more = invalid.map_or(0, |c| c.errors.len().saturating_sub(1));
        let mut message = first.map_or_else(|| chain(e), |c| c.kind.to_string());
        if more > 0 {
            // Infallible: writing into a String cannot fail.
            let _ = write!(
                message,
                " (and {more} more problem{}: veer validate -f FILE lists them)",
                if more == 1 { "" } else { "s" }
            );
        }
        Self {
            time,
            location: first.map(|c| c.location.clone()),
            message,
        }
    }
}

/// What the daemon knows of its config file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigView {
    /// The file.
    pub path: PathBuf,
    /// When it was last applied or found in force (start, SIGHUP, change).
    pub last_good: Option<SystemTime>,
    /// When it was last read to be applied, whatever came of it.
    pub last_attempt: Option<SystemTime>,
    /// Reloads (the start's reading included) that applied it or found it in force.
    pub reloads_ok: u64,
    /// Reloads (the start's reading included) that refused it.
    pub reloads_failed: u64,
    /// The last reload that refused it, unless a good one came after.
    pub last_error: Option<ReloadError>,
    /// Node settings asked for (by the file or `veer apply`) that wait for a daemon restart.
    pub pending_restart: Vec<NodeChange>,
}

/// Files of the state directory named like revisions that cannot be used.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FilesView {
    /// The newest of them when it is newer than every usable revision: nothing changes until an
    /// operator chooses the state.
    pub held: Option<Unusable>,
    /// The newest revision that can be used (what `veer rollback --to` can name).
    pub newest_usable: Option<u64>,
    /// All of them, by number (reported, never used, never overwritten).
    pub unusable: Vec<Unusable>,
}

/// The node now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StatusView {
    /// Revision files that cannot be used.
    pub files: FilesView,
    /// The config file.
    pub config: ConfigView,
    /// The live revision (none before the first).
    pub revision: Option<RevisionView>,
    /// Interfaces the programs are attached to.
    pub interfaces: Vec<String>,
    /// How each interface is steered (hook, mode, why, XDP redirect target), the node settings
    /// the data path depends on, and whether clients on the node are steered.
    pub dataplane: DataplaneReport,
    /// Entries in the table of confirmed flows (`VEER_FLOWS`).
    pub conntrack_entries: u64,
    /// Its capacity (`conntrack_max`).
    pub conntrack_capacity: u32,
    /// Entries in the table of new flows (`VEER_NEWFLOWS`: handshakes, mid-flow misses, UDP).
    pub conntrack_new_entries: u64,
    /// Its capacity (`conntrack_new_max`).
    pub conntrack_new_capacity: u32,
    /// Every service, in the order of the state.
    pub services: Vec<ServiceView>,
    /// The etcd source, when the services come from there.
    pub source: Option<super::SourceView>,
}

/// A service and its counters.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceView {
    /// The name, unique where it lives.
    pub name: String,
    /// Virtual IP of the service.
    pub vip: IpAddr,
    /// Service port.
    pub port: u16,
    /// TCP or UDP.
    pub protocol: Protocol,
    /// Groups, in order.
    pub groups: Vec<GroupView>,
    /// Source-prefix pins.
    pub pins: Vec<Pin>,
    /// What the kernel counted for it.
    pub counters: ServiceCounters,
}

/// A group and its backends.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupView {
    /// The name, unique where it lives.
    pub name: String,
    /// Share of new flows, in percent.
    pub weight: Weight,
    /// Sum of the backends' active flows.
    pub active_flows: u64,
    /// Flows of its backends that paced drains ended (the kernel's count of client resets).
    pub ended_flows: u64,
    /// The paced drain in force on it, if any.
    pub drain: Option<DrainView>,
    /// Backends, in the order of the state.
    pub backends: Vec<BackendView>,
}

/// A paced drain in force on a group, as `status` shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DrainView {
    /// When its flows still active begin to be ended.
    pub ends_from: std::time::SystemTime,
    /// How long until then (zero once it has passed).
    pub deadline_left: std::time::Duration,
    /// How fast they are ended.
    pub pace: crate::model::drain::Pace,
    /// No flow was left after the deadline: the drain is over.
    pub done: bool,
}

/// A backend and its counters.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BackendView {
    /// Address and port.
    pub addr: SocketAddr,
    /// Takes new flows (passes its health checks, or has none).
    pub healthy: bool,
    /// Its flows that are not closing, in either flow table, and the socket flows of clients on
    /// the node it was given.
    pub active_flows: u64,
    /// Flows given to it.
    pub new_flows: u64,
    /// Connection attempts it answered with a SYN-ACK.
    pub answered_flows: u64,
    /// Connection attempts it refused (RST answering the SYN).
    pub refused_flows: u64,
    /// Connection attempts it refused or left unanswered for 3 s.
    pub failed_flows: u64,
    /// Packets steered to it or reverse-NATed from it.
    pub packets: u64,
    /// Bytes of those packets.
    pub bytes: u64,
}

/// Where a flow is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FlowState {
    /// TCP, the client's SYN forwarded, the backend has not answered.
    Syn,
    /// TCP, the backend answered with a SYN-ACK, the client has not acknowledged it.
    SynAcked,
    /// TCP, a segment met no entry and was steered by the flow hash; unconfirmed until the
    /// backend answers.
    Midflow,
    /// TCP, confirmed.
    Established,
    /// TCP, FIN or RST seen.
    Closing,
    /// UDP (IP protocol 17).
    Udp,
    /// A state this build does not know.
    Unknown(u8),
}

impl FlowState {
    fn of(state: u8) -> Self {
        match state {
            STATE_SYN => Self::Syn,
            STATE_SYN_ACKED => Self::SynAcked,
            STATE_MIDFLOW => Self::Midflow,
            STATE_ESTABLISHED => Self::Established,
            STATE_CLOSING => Self::Closing,
            STATE_UDP => Self::Udp,
            other => Self::Unknown(other),
        }
    }

    /// `syn`, `syn_acked`, `midflow`, `established`, `closing`, `udp`, `unknown`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Syn => "syn",
            Self::SynAcked => "syn_acked",
            Self::Midflow => "midflow",
            Self::Established => "established",
            Self::Closing => "closing",
            Self::Udp => "udp",
            Self::Unknown(_) => "unknown",
        }
    }
}

/// One conntrack entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FlowView {
    /// Client address and port.
    pub client: SocketAddr,
    /// VIP and port it talks to.
    pub vip: SocketAddr,
    /// TCP or UDP.
    pub protocol: Protocol,
    /// Service (when one still has the flow's VIP, port and protocol).
    pub service: Option<String>,
    /// Group the backend was picked from (when it is still the service's).
    pub group: Option<String>,
    /// Address and port of the backend.
    pub backend: SocketAddr,
    /// Where the flow is in its life.
    pub state: FlowState,
    /// Time since the last packet.
    pub idle: Duration,
}

/// Conntrack entries matching a query, at most the limit asked for.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FlowsView {
    /// The entries.
    pub flows: Vec<FlowView>,
    /// How many matched in all.
    pub matched: usize,
}

/// What a running rollout's step waits for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Waiting {
    /// The pause is not over.
    Pause {
        /// Time left.
        left: Duration,
    },
    /// Too few new flows to the target to judge the step.
    MinFlows {
        /// Seen so far in the step.
        seen: u64,
        /// New flows the step needs (`min_flows`).
        needed: u64,
    },
    /// The extra gates are being checked.
    Gates,
    /// The canary judge has not passed the step (not enough data yet, or no look since the
    /// pause ended).
    Judge,
}

/// Where a step of a rollout is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StepState {
    /// It held, and the rollout went on.
    Done,
    /// The rollout is watching it.
    Running,
    /// The rollout is held at it.
    Paused,
    /// Not reached (yet).
    Pending,
    /// Skipped by a full promotion.
    Skipped,
    /// A gate failed during it.
    Breached,
    /// The rollout was aborted during it.
    Aborted,
}

/// One step of a rollout, as the live view shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StepView {
    /// Index in the plan's steps.
    pub step: usize,
    /// The target's share in it.
    pub share: Weight,
    /// Every group's weight in it.
    pub weights: Vec<(String, Weight)>,
    /// Where it is.
    pub state: StepState,
    /// How long it ran (so far, for the current one); none for a step not reached.
    pub duration: Option<Duration>,
    /// The target group's new flows and failures in it (so far); none for a step not reached.
    pub counts: Option<Counts>,
}

/// A group of a service under rollout, in the current step.
#[derive(Clone, Debug, PartialEq)]
pub struct GroupInStep {
    /// Name of the group.
    pub name: String,
    /// Its weight now.
    pub weight: Weight,
    /// Its active flows now.
    pub active_flows: u64,
    /// Its new flows and failures since the step began (none when the rollout was recorded
    /// before veer kept every group's counters).
    pub in_step: Option<Counts>,
    /// Its new flows per second, averaged over the step so far.
    pub new_per_second: Option<f64>,
}

/// The failure-rate judgement of the target group in the current step (or the last one).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Verdict {
    /// The target's new flows and failures in the step.
    pub counts: Counts,
    /// The highest failure share allowed.
    pub max_failure_rate: Weight,
    /// New flows the step needs before it is judged.
    pub min_flows: u64,
}

impl Verdict {
    /// Whether there are enough new flows to judge.
    pub fn is_judged(&self) -> bool {
        self.counts.attempted >= self.min_flows.max(1)
    }

    /// The failure share in percent (0 with no new flow).
    pub fn failure_percent(&self) -> f64 {
        if self.counts.attempted == 0 {
            0.0
        } else {
            self.counts.failed as f64 * 100.0 / self.counts.attempted as f64
        }
    }
}

/// A service's latest rollout and where it stands.
#[derive(Clone, Debug, PartialEq)]
pub struct RolloutView {
    /// The rollout (plan, step, phase, reason).
    pub rollout: Rollout,
    /// Every group's weight now.
    pub weights: Vec<(String, Weight)>,
    /// The target's attempts and failures in this step.
    pub in_step: Counts,
    /// What the step waits for, when running.
    pub waiting: Option<Waiting>,
    /// The canary judge's latest verdict: the current step's, live, or else the one kept in the
    /// rollout.
    pub judge: Option<crate::rollout::canary::StepVerdict>,
    /// Every step of the plan.
    pub steps: Vec<StepView>,
    /// Every group of the service, in the current step.
    pub groups: Vec<GroupInStep>,
    /// Time since the current step began.
    pub elapsed: Duration,
    /// The failure-rate judgement of the step.
    pub verdict: Verdict,
}

/// Every step of `r` at `now`, the current one having seen `in_step`.
pub(super) fn steps(r: &Rollout, in_step: Counts, now: SystemTime) -> Vec<StepView> {
    let elapsed = now.duration_since(r.step_started).unwrap_or_default();
    (0..r.plan.steps.len())
        .map(|i| {
            let record = r.history.iter().rev().find(|h| h.step == i);
            let current = i == r.step && !r.phase.is_final();
            let (state, duration, counts) = if current {
                let state = if r.phase == Phase::Paused {
                    StepState::Paused
                } else {
                    StepState::Running
                };
                (state, Some(elapsed), Some(in_step))
            } else if let Some(h) = record {
                let state = match h.outcome {
                    StepOutcome::Passed => StepState::Done,
                    StepOutcome::Skipped => StepState::Skipped,
                    StepOutcome::Breached => StepState::Breached,
                    StepOutcome::Aborted => StepState::Aborted,
                };
                let took = h.ended.duration_since(h.started).unwrap_or_default();
                (state, Some(took), Some(h.counts))
            } else if i < r.step || (i == r.step && r.phase == Phase::Completed) {
                // Recorded before veer kept each step's record.
                (StepState::Done, None, None)
            } else {
                (StepState::Pending, None, None)
            };
            StepView {
                step: i,
                share: r.plan.steps[i],
                weights: r.weights_at_step(i),
                state,
                duration,
                counts,
            }
        })
        .collect()
}

/// The services of `state` (or only `only`) with what `readings` count for them.
pub(super) fn services<R: Readings>(
    state: &DesiredState,
    only: Option<&str>,
    readings: &R,
    health: &Health,
    active: &HashMap<u32, u64>,
) -> Result<Vec<ServiceView>, ControlError> {
    let ids = readings.ids();
    let mut services = Vec::new();
    for s in state
        .services
        .iter()
        .filter(|s| only.is_none_or(|n| n == s.name))
    {
        let mut groups = Vec::new();
        for g in &s.groups {
            let mut backends = Vec::new();
            let mut ended_flows = 0;
            for b in &g.backends {
                let key = (s.name.clone(), g.name.clone(), b.addr);
                let id = ids.backends.get(&key).copied().unwrap_or(0);
                let c = readings.backend_counters(id)?;
                ended_flows += readings.backend_signals(id)?.map_or(0, |sig| sig.ended);
                backends.push(BackendView {
                    addr: b.addr,
                    healthy: health.is_up(&key),
                    active_flows: active.get(&id).copied().unwrap_or(0),
                    new_flows: c.new_flows,
                    answered_flows: c.answered_flows,
                    refused_flows: c.refused_flows,
                    failed_flows: c.refused_flows + health.unanswered(id),
                    packets: c.packets,
                    bytes: c.bytes,
                });
            }
            groups.push(GroupView {
                name: g.name.clone(),
                weight: g.weight,
                active_flows: backends.iter().map(|b| b.active_flows).sum(),
                ended_flows,
                drain: None,
                backends,
            });
        }
        let sid = ids.services.get(&s.name).copied().unwrap_or(0);
        services.push(ServiceView {
            name: s.name.clone(),
            vip: s.vip,
            port: s.port,
            protocol: s.protocol,
            groups,
            pins: s.pins.clone(),
            counters: readings.service_counters(sid)?,
        });
    }
    Ok(services)
}

/// The entries of `table` of one service (by name) and/or one backend, at most `limit`. A flow's
/// service is the one of `state` with its VIP, port and protocol; its group, the one its backend
/// id names in that service.
pub(super) fn flows<R: Readings>(
    table: FlowTable,
    state: &DesiredState,
    readings: &R,
    service: Option<&str>,
    backend: Option<SocketAddr>,
    limit: usize,
) -> FlowsView {
    let services: HashMap<(SocketAddr, Protocol), &str> = state
        .services
        .iter()
        .map(|s| {
            (
                (SocketAddr::new(s.vip, s.port), s.protocol),
                s.name.as_str(),
            )
        })
        .collect();
    // Backend ids are per service, group and address: an entry's id names its group.
    let groups: HashMap<u32, (&str, &str)> = readings
        .ids()
        .backends
        .iter()
        .map(|((s, g, _), id)| (*id, (s.as_str(), g.as_str())))
        .collect();
    let mut out = FlowsView::default();
    for (key, e) in table.entries {
        let vip = SocketAddr::new(
            words_addr(key.dst_addr, key.family),
            u16::from_be(key.dst_port),
        );
        let protocol = if key.proto == PROTO_TCP {
            Protocol::Tcp
        } else {
            Protocol::Udp
        };
        let owner = services.get(&(vip, protocol)).copied();
        if service.is_some_and(|wanted| owner != Some(wanted)) {
            continue;
        }
        let backend_addr = SocketAddr::new(
            words_addr(e.backend_addr, key.family),
            u16::from_be(e.backend_port),
        );
        if backend.is_some_and(|b| b != backend_addr) {
            continue;
        }
        out.matched += 1;
        if out.flows.len() < limit {
            let group = groups
                .get(&e.backend_id)
                .filter(|(s, _)| owner == Some(*s))
                .map(|(_, g)| (*g).to_owned());
            out.flows.push(FlowView {
                client: SocketAddr::new(
                    words_addr(key.src_addr, key.family),
                    u16::from_be(key.src_port),
                ),
                vip,
                protocol,
                service: owner.map(str::to_owned),
                group,
                backend: backend_addr,
                state: FlowState::of(e.state),
                idle: Duration::from_nanos(
                    u64::from(ticks_since(table.now, e.last_seen)) << TICK_SHIFT,
                ),
            });
        }
    }
    out
}
