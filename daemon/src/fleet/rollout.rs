//! Fleet rollouts: a plan fixed at start, progress that the elected driver advances, the
//! driver's decision and each node's part.
//!
//! How one runs:
//!
//! 1. `veer fleet rollout start` reads every node's status, keeps the nodes that can take part
//!    ([`candidates`]), splits them into waves ([`plan_waves`]) and writes the
//!    plan (`rollouts/<service>/plan`) and a progress at wave 0 (`rollouts/<service>/progress`).
//! 2. Every node watches both keys. [`directive`] tells it what to do: nodes of the waves that
//!    have started run the per-node plan (steps, pause, gates, as `veer rollout start`) and
//!    report each step in their status; the others keep the config's weights.
//! 3. The driver (the daemon that won the election) reads the statuses and calls [`decide`]:
//!    the next wave starts when every node of the current one completed its per-node plan; a
//!    breach anywhere rolls the whole fleet back and records the node, the gate and why; when
//!    the last wave passed, the driver writes the target weights into the config and marks the
//!    rollout completed, in one transaction.
//! 4. Progress is in etcd, so a new driver goes on from it.
//!
//! ## Policy for nodes that miss a wave, and mixed fleets
//!
//! - **Who takes part** is fixed at start: nodes whose status is present and ready, that run the
//!   service with the target group, and that run no other rollout of it. The others are listed
//!   in the plan as excluded, with why (down, no such service or group on that node, not synced,
//!   busy). They keep following the config, which the driver changes to the target weights at
//!   completion, so they end where the fleet ends without having been a gate.
//! - **A node of a started wave that does not report** (its status is gone because its lease
//!   expired, or it does not report this rollout, or lost the service) is waited for
//!   `node_timeout`, counted from the wave's start or from when the driver last saw it report.
//!   Then the plan's `missing` policy applies: `roll-back` (the default: a wave is only as good
//!   as the evidence of its nodes) rolls the fleet back naming the node and the gate
//!   `node_missing`; `skip` records the node as skipped and goes on without it. A skipped node
//!   restores its pre-rollout weights when it comes back, and follows the config after that.
//! - **A wave in which every node was skipped** has shown nothing: the fleet rolls back
//!   (`wave_unverified`).
//! - **A new driver** restarts the `node_timeout` clocks when it takes over (it cannot know when
//!   the old one last saw a node), so a takeover never shortens a wait.
//! - **A node that aborts its part locally** (`veer rollout abort` on that node) counts as a
//!   breach: the fleet rolls back (`aborted_on_node`).

use std::{
    collections::{BTreeMap, BTreeSet},
    time::{Duration, SystemTime},
};

use serde::{Deserialize, Serialize};

use super::{
    name::NodeName,
    status::{NodeStatus, RolloutPhase},
    waves::{WaveSpec, WavesError, plan_waves},
};
use crate::model::Plan;

/// Default wait for a node of a started wave that does not report.
pub const DEFAULT_NODE_TIMEOUT: Duration = Duration::from_mins(5);

/// A fleet rollout as started (`rollouts/<service>/plan`); never changed afterwards.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FleetRollout {
    /// Unique per rollout ([`FleetRollout::new_id`]); nodes report it, so a report of an
    /// earlier rollout of the same service is never taken for this one.
    pub id: String,
    /// Service.
    pub service: String,
    /// Target group.
    pub to: String,
    /// `--waves` as given.
    pub spec: WaveSpec,
    /// The nodes of each wave, in order; wave 0 is the canary.
    pub waves: Vec<Vec<NodeName>>,
    /// Nodes that reported a status at start but do not take part, with why.
    #[serde(default)]
    pub excluded: Vec<Excluded>,
    /// What every node of a wave runs: steps, pause, gates, as `veer rollout start`.
    pub node_plan: Plan,
    /// What happens to a node of a started wave that does not report for `node_timeout`.
    #[serde(default)]
    pub missing: MissingNode,
    /// How long such a node is waited for.
    #[serde(with = "super::duration_text")]
    pub node_timeout: Duration,
    /// When it started.
    #[serde(with = "super::rfc3339_millis")]
    pub created: SystemTime,
}

/// What happens to a node of a started wave that stops reporting.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum MissingNode {
    /// Roll the fleet back (gate `node_missing`).
    #[default]
    RollBack,
    /// Record it as skipped and go on without it.
    Skip,
}

/// A node that does not take part, and why.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Excluded {
    /// The node.
    pub node: NodeName,
    /// Why.
    pub reason: ExcludeReason,
}

/// Why a node does not take part.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum ExcludeReason {
    /// It has not completed a sync since it started.
    NotReady,
    /// Its config has no such service (a node-specific config, or an older config).
    NoService,
    /// Its service has no such group, or the group no backend.
    NoTarget,
    /// It runs another rollout of the service.
    Busy {
        /// The other rollout's target.
        to: String,
    },
}

/// Where a fleet rollout is (`rollouts/<service>/progress`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Progress {
    /// The rollout ([`FleetRollout::id`]).
    pub id: String,
    /// State.
    pub state: FleetState,
    /// Index of the latest wave started.
    pub wave: usize,
    /// When it started.
    #[serde(with = "super::rfc3339_millis")]
    pub wave_started: SystemTime,
    /// Nodes skipped under the `skip` policy.
    #[serde(default)]
    pub skipped: Vec<Skipped>,
    /// The daemon that wrote it, or none for an operator.
    #[serde(default)]
    pub driver: Option<NodeName>,
    /// When it was written.
    #[serde(with = "super::rfc3339_millis")]
    pub updated: SystemTime,
}

/// The state of a fleet rollout.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "state")]
pub enum FleetState {
    /// Waves advance.
    Running,
    /// Held by an operator: nodes hold their steps, no wave starts.
    Paused {
        /// Why, as the operator said.
        reason: String,
    },
    /// Every wave passed; the config carries the target weights.
    Completed,
    /// A node broke a gate (or went missing): every node restored its weights.
    RolledBack {
        /// The node.
        node: NodeName,
        /// The gate (`failure_rate`, `health`, `exec:…`, `node_missing` ...).
        gate: String,
        /// Why.
        reason: String,
    },
    /// Aborted by an operator: every node restored its weights.
    Aborted {
        /// Why, as the operator said.
        reason: String,
    },
}

/// A node left out under the `skip` policy.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Skipped {
    /// The node.
    pub node: NodeName,
    /// The wave it was in.
    pub wave: usize,
    /// Why.
    pub reason: String,
}

impl FleetState {
    /// Whether nothing will change any more.
    pub fn is_final(&self) -> bool {
        matches!(
            self,
            FleetState::Completed | FleetState::RolledBack { .. } | FleetState::Aborted { .. }
        )
    }
}

impl FleetRollout {
    /// A rollout id: the service and the start time in milliseconds (`web-1736985600123`).
    pub fn new_id(service: &str, now: SystemTime) -> String {
        let ms = now
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default()
            .as_millis();
        format!("{service}-{ms}")
    }

    /// The wave `node` is in.
    pub fn wave_of(&self, node: &NodeName) -> Option<usize> {
        self.waves.iter().position(|w| w.contains(node))
    }

    /// The JSON written to etcd.
    pub fn to_json(&self) -> Vec<u8> {
        // Infallible: plain data (strings, numbers, durations and times as text).
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// Reads a plan.
    pub fn from_json(bytes: &[u8]) -> Result<FleetRollout, serde_json::Error> {
        serde_json::from_slice(bytes)
    }
}

impl Progress {
    /// The progress a rollout starts with: wave 0 (the canary) running.
    pub fn start(rollout: &FleetRollout, now: SystemTime) -> Progress {
        Progress {
            id: rollout.id.clone(),
            state: FleetState::Running,
            wave: 0,
            wave_started: now,
            skipped: Vec::new(),
            driver: None,
            updated: now,
        }
    }

    /// Whether `node` was skipped.
    pub fn is_skipped(&self, node: &NodeName) -> bool {
        self.skipped.iter().any(|s| &s.node == node)
    }

    /// The JSON written to etcd.
    pub fn to_json(&self) -> Vec<u8> {
        // Infallible: plain data (strings, numbers, times as text).
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// Reads a progress.
    pub fn from_json(bytes: &[u8]) -> Result<Progress, serde_json::Error> {
        serde_json::from_slice(bytes)
    }
}

/// The nodes that can take part in a rollout of `service` to `to`, from their statuses (sorted
/// by name), and the ones that cannot, with why.
pub fn candidates<'a>(
    service: &str,
    to: &str,
    statuses: impl IntoIterator<Item = &'a NodeStatus>,
) -> (Vec<NodeName>, Vec<Excluded>) {
    let mut taking_part = Vec::new();
    let mut excluded = Vec::new();
    for status in statuses {
        let reason = if status.ready {
            match status.service(service) {
                None => Some(ExcludeReason::NoService),
                Some(s) => {
                    let has_target = s.groups.iter().any(|g| g.name == to && g.backends > 0);
                    let busy = s.rollout.as_ref().filter(|r| {
                        matches!(r.phase, RolloutPhase::Running | RolloutPhase::Paused)
                    });
                    if let Some(r) = busy {
                        Some(ExcludeReason::Busy { to: r.to.clone() })
                    } else if has_target {
                        None
                    } else {
                        Some(ExcludeReason::NoTarget)
                    }
                }
            }
        } else {
            Some(ExcludeReason::NotReady)
        };
        match reason {
            None => taking_part.push(status.node.clone()),
            Some(reason) => excluded.push(Excluded {
                node: status.node.clone(),
                reason,
            }),
        }
    }
    taking_part.sort();
    excluded.sort_by(|a, b| a.node.cmp(&b.node));
    (taking_part, excluded)
}

/// What `veer fleet rollout start` needs to write a plan.
#[derive(Clone, Debug)]
pub struct StartRequest<'a> {
    /// Service.
    pub service: &'a str,
    /// Target group.
    pub to: &'a str,
    /// `--waves`.
    pub spec: WaveSpec,
    /// `--canary`.
    pub canary: Option<&'a NodeName>,
    /// The per-node plan (already validated against the fleet config's service).
    pub node_plan: Plan,
    /// `--on-missing-node`.
    pub missing: MissingNode,
    /// `--node-timeout`.
    pub node_timeout: Duration,
}

/// Plans a fleet rollout from the nodes' statuses: the plan and the progress to write.
pub fn start<'a>(
    request: StartRequest<'_>,
    statuses: impl IntoIterator<Item = &'a NodeStatus>,
    now: SystemTime,
) -> Result<(FleetRollout, Progress), WavesError> {
    // The documents keep milliseconds: the plan in memory is the plan etcd will hold.
    let now = super::whole_millis(now);
    let (nodes, excluded) = candidates(request.service, request.to, statuses);
    let waves = plan_waves(&request.spec, &nodes, request.canary)?;
    let rollout = FleetRollout {
        id: FleetRollout::new_id(request.service, now),
        service: request.service.to_owned(),
        to: request.to.to_owned(),
        spec: request.spec,
        waves,
        excluded,
        node_plan: request.node_plan,
        missing: request.missing,
        node_timeout: request.node_timeout,
        created: now,
    };
    let progress = Progress::start(&rollout, now);
    Ok((rollout, progress))
}

/// What a node's status says about its part in a rollout.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Report {
    /// No status: the node is down (its lease expired) or never joined.
    Absent,
    /// Its status does not have the service.
    NoService,
    /// It has the service but does not report this rollout (yet).
    NotStarted,
    /// Running, paused, or a phase this build does not know: not done, not broken.
    Busy,
    /// Completed its per-node plan.
    Passed,
    /// A gate failed on it.
    Breached { gate: String, reason: String },
    /// Aborted on the node.
    Aborted { reason: String },
}

fn report(status: Option<&NodeStatus>, rollout: &FleetRollout) -> Report {
    let Some(status) = status else {
        return Report::Absent;
    };
    let Some(service) = status.service(&rollout.service) else {
        return Report::NoService;
    };
    let Some(r) = service
        .rollout
        .as_ref()
        .filter(|r| r.fleet_id.as_deref() == Some(rollout.id.as_str()))
    else {
        return Report::NotStarted;
    };
    match r.phase {
        RolloutPhase::Running | RolloutPhase::Paused | RolloutPhase::Unknown => Report::Busy,
        RolloutPhase::Completed => Report::Passed,
        RolloutPhase::RolledBack => Report::Breached {
            gate: r.gate.clone().unwrap_or_else(|| "unknown".to_owned()),
            reason: r.reason.clone().unwrap_or_default(),
        },
        RolloutPhase::Aborted => Report::Aborted {
            reason: r.reason.clone().unwrap_or_default(),
        },
    }
}

/// What the driver remembers between decisions about the current wave: when it last heard
/// each node report. In memory only (a new driver starts afresh, which only lengthens waits).
#[derive(Clone, Debug)]
pub struct Tracker {
    started: SystemTime,
    id: String,
    wave: usize,
    last_heard: BTreeMap<NodeName, SystemTime>,
}

impl Tracker {
    /// A tracker created at `now` (when the daemon became the driver).
    pub fn new(now: SystemTime) -> Tracker {
        Tracker {
            started: now,
            id: String::new(),
            wave: usize::MAX,
            last_heard: BTreeMap::new(),
        }
    }

    fn follow(&mut self, progress: &Progress) {
        if self.id != progress.id || self.wave != progress.wave {
            self.id.clone_from(&progress.id);
            self.wave = progress.wave;
            self.last_heard.clear();
        }
    }

    /// Since when `node` has been silent: since this driver last heard it, but not before the
    /// wave started nor before this driver took over.
    fn silent_since(&self, node: &NodeName, progress: &Progress) -> SystemTime {
        let floor = progress.wave_started.max(self.started);
        self.last_heard.get(node).map_or(floor, |t| (*t).max(floor))
    }

    fn heard(&mut self, node: &NodeName, now: SystemTime) {
        self.last_heard.insert(node.clone(), now);
    }
}

/// The driver's next action for one rollout.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Nothing to do now.
    Wait {
        /// Nodes of the current wave that have not completed their per-node plan yet.
        pending: Vec<NodeName>,
        /// Of those, the ones not reporting, and since when.
        silent: Vec<(NodeName, SystemTime)>,
    },
    /// Every node of the current wave passed: start wave `wave` (write the progress).
    StartWave {
        /// Index of the wave to start.
        wave: usize,
        /// Its nodes (minus none: a node is skipped only once its wave started).
        nodes: Vec<NodeName>,
    },
    /// Leave these nodes out (the `skip` policy), then decide again.
    Skip {
        /// The nodes, with why.
        nodes: Vec<Skipped>,
    },
    /// Roll the whole fleet back (write the progress; every node restores its weights).
    RollBack {
        /// The node that broke.
        node: NodeName,
        /// The gate.
        gate: String,
        /// Why.
        reason: String,
    },
    /// Every wave passed: write the target weights into the config and the progress as
    /// completed, in one transaction.
    Complete,
    /// Nothing will happen until an operator acts (paused) or ever (over).
    Idle,
    /// The plan and the progress do not belong together, or the progress is past the plan: an
    /// operator must abort (and start again).
    Inconsistent {
        /// What does not fit.
        why: String,
    },
}

/// The gate recorded when a node of a started wave did not report for `node_timeout`.
pub const GATE_NODE_MISSING: &str = "node_missing";
/// The gate recorded when every node of a wave was skipped.
pub const GATE_WAVE_UNVERIFIED: &str = "wave_unverified";
/// The gate recorded when a node aborted its part locally.
pub const GATE_ABORTED_ON_NODE: &str = "aborted_on_node";

/// The driver's decision for `rollout` at `progress`, from the nodes' statuses (by node; a
/// missing entry is a node without status).
pub fn decide(
    rollout: &FleetRollout,
    progress: &Progress,
    statuses: &BTreeMap<NodeName, NodeStatus>,
    tracker: &mut Tracker,
    now: SystemTime,
) -> Decision {
    if progress.id != rollout.id {
        return Decision::Inconsistent {
            why: format!(
                "progress is of rollout `{}`, the plan is `{}`",
                progress.id, rollout.id
            ),
        };
    }
    if rollout.waves.iter().any(Vec::is_empty) {
        return Decision::Inconsistent {
            why: "the plan has an empty wave".to_owned(),
        };
    }
    if progress.wave >= rollout.waves.len() {
        return Decision::Inconsistent {
            why: format!(
                "progress is at wave {} of a plan with {} waves",
                progress.wave + 1,
                rollout.waves.len()
            ),
        };
    }
    if progress.state != FleetState::Running {
        return Decision::Idle;
    }
    tracker.follow(progress);
    let skipped: BTreeSet<&NodeName> = progress.skipped.iter().map(|s| &s.node).collect();
    if let Some(breach) = first_breach(rollout, progress, statuses, &skipped) {
        return breach;
    }
    let wave = &rollout.waves[progress.wave];
    let survey = survey(rollout, progress, statuses, &skipped, tracker, now);
    if let Some(first) = survey.overdue.first() {
        return match rollout.missing {
            MissingNode::RollBack => Decision::RollBack {
                node: first.node.clone(),
                gate: GATE_NODE_MISSING.to_owned(),
                reason: first.reason.clone(),
            },
            MissingNode::Skip => Decision::Skip {
                nodes: survey.overdue,
            },
        };
    }
    if !survey.pending.is_empty() {
        return Decision::Wait {
            pending: survey.pending,
            silent: survey.silent,
        };
    }
    if survey.passed == 0 {
        return Decision::RollBack {
            // Infallible: no wave is empty (checked above).
            node: wave[0].clone(),
            gate: GATE_WAVE_UNVERIFIED.to_owned(),
            reason: format!(
                "every node of wave {} was skipped: nothing shows the new version works",
                progress.wave + 1
            ),
        };
    }
    let next = progress.wave + 1;
    match rollout.waves.get(next) {
        Some(nodes) => Decision::StartWave {
            wave: next,
            nodes: nodes.clone(),
        },
        None => Decision::Complete,
    }
}

/// A breach on any node of the waves started so far (not skipped), in wave order.
fn first_breach(
    rollout: &FleetRollout,
    progress: &Progress,
    statuses: &BTreeMap<NodeName, NodeStatus>,
    skipped: &BTreeSet<&NodeName>,
) -> Option<Decision> {
    let involved = rollout.waves[..=progress.wave]
        .iter()
        .flatten()
        .filter(|n| !skipped.contains(n));
    for node in involved {
        match report(statuses.get(node), rollout) {
            Report::Breached { gate, reason } => {
                return Some(Decision::RollBack {
                    node: node.clone(),
                    gate,
                    reason,
                });
            }
            Report::Aborted { reason } => {
                return Some(Decision::RollBack {
                    node: node.clone(),
                    gate: GATE_ABORTED_ON_NODE.to_owned(),
                    reason,
                });
            }
            _ => {}
        }
    }
    None
}

/// The current wave's nodes (not skipped), sorted by what they report.
struct Survey {
    pending: Vec<NodeName>,
    silent: Vec<(NodeName, SystemTime)>,
    overdue: Vec<Skipped>,
    passed: usize,
}

fn survey(
    rollout: &FleetRollout,
    progress: &Progress,
    statuses: &BTreeMap<NodeName, NodeStatus>,
    skipped: &BTreeSet<&NodeName>,
    tracker: &mut Tracker,
    now: SystemTime,
) -> Survey {
    let mut s = Survey {
        pending: Vec::new(),
        silent: Vec::new(),
        overdue: Vec::new(),
        passed: 0,
    };
    for node in rollout.waves[progress.wave]
        .iter()
        .filter(|n| !skipped.contains(n))
    {
        let why = match report(statuses.get(node), rollout) {
            Report::Passed => {
                tracker.heard(node, now);
                s.passed += 1;
                continue;
            }
            Report::Busy => {
                tracker.heard(node, now);
                s.pending.push(node.clone());
                continue;
            }
            Report::Absent => "has no status (down, or its lease expired)",
            Report::NoService => "no longer has the service",
            Report::NotStarted => "does not report this rollout",
            // `first_breach` decided those.
            Report::Breached { .. } | Report::Aborted { .. } => continue,
        };
        let since = tracker.silent_since(node, progress);
        s.pending.push(node.clone());
        s.silent.push((node.clone(), since));
        let waited = now.duration_since(since).unwrap_or_default();
        if waited >= rollout.node_timeout {
            s.overdue.push(Skipped {
                node: node.clone(),
                wave: progress.wave,
                reason: format!(
                    "{why} for {}",
                    humantime::format_duration(Duration::from_secs(waited.as_secs()))
                ),
            });
        }
    }
    s
}

/// What one node does about a fleet rollout.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Directive {
    /// Not part of it: follow the config.
    NotInvolved,
    /// In a wave that has not started: keep the config's weights.
    Waiting {
        /// Its wave.
        wave: usize,
    },
    /// Run (or keep running, or stay completed in) the per-node plan.
    Run,
    /// Hold the per-node plan where it is.
    Pause,
    /// The fleet completed: keep the target weights (the config carries them too).
    Complete,
    /// Restore the weights from before the rollout and end the per-node plan.
    Restore {
        /// Why (the breaking node and gate, the operator's reason, or "skipped").
        why: String,
    },
}

/// What `node` does about `rollout` at `progress`.
pub fn directive(rollout: &FleetRollout, progress: &Progress, node: &NodeName) -> Directive {
    if progress.id != rollout.id {
        return Directive::NotInvolved;
    }
    let Some(wave) = rollout.wave_of(node) else {
        return Directive::NotInvolved;
    };
    let started = wave <= progress.wave;
    match &progress.state {
        FleetState::Completed => {
            if progress.is_skipped(node) {
                Directive::NotInvolved
            } else {
                Directive::Complete
            }
        }
        FleetState::RolledBack {
            node: by,
            gate,
            reason,
        } if started => Directive::Restore {
            why: format!(
                "fleet rollout {} rolled back: node {by}, gate {gate}: {reason}",
                rollout.id
            ),
        },
        FleetState::Aborted { reason } if started => Directive::Restore {
            why: format!("fleet rollout {} aborted: {reason}", rollout.id),
        },
        FleetState::RolledBack { .. } | FleetState::Aborted { .. } => Directive::NotInvolved,
        _ if progress.is_skipped(node) => Directive::Restore {
            why: format!("skipped by fleet rollout {}", rollout.id),
        },
        _ if !started => Directive::Waiting { wave },
        FleetState::Running => Directive::Run,
        FleetState::Paused { .. } => Directive::Pause,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fleet::status::{GroupStatus, NodeRollout, STATUS_SCHEMA, ServiceStatus};
    use crate::model::Weight;

    const T0: Duration = Duration::from_secs(1_700_000_000);

    fn at(secs: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + T0 + Duration::from_secs(secs)
    }

    fn n(s: &str) -> NodeName {
        NodeName::new(s).unwrap()
    }

    fn node_plan() -> Plan {
        Plan {
            to: "v2".into(),
            steps: vec![Weight::from_percent_str("50").unwrap(), Weight::FULL],
            pause: Duration::from_secs(1),
            max_failure_rate: Weight::from_percent_str("1").unwrap(),
            min_flows: 1,
            gates: vec![],
            gate_timeout: Duration::from_secs(5),
            on_failure: crate::model::OnFailure::Rollback,
            hold_on_restart: false,
            judge: None,
            drain: None,
        }
    }

    /// A ready node running web with v1 and v2, and optionally a rollout of `id` in `phase`.
    fn status(node: &str, rollout: Option<(&str, RolloutPhase)>) -> NodeStatus {
        NodeStatus {
            schema: STATUS_SCHEMA,
            node: n(node),
            veer_version: "0.1.0".into(),
            ready: true,
            etcd_revision: 10,
            config: None,
            local_revision: 3,
            state_hash: String::new(),
            errors: vec![],
            services: vec![ServiceStatus {
                name: "web".into(),
                groups: ["v1", "v2"]
                    .iter()
                    .map(|g| GroupStatus {
                        name: (*g).into(),
                        weight: Weight::ZERO,
                        backends: 1,
                        up: 1,
                        down: vec![],
                    })
                    .collect(),
                rollout: rollout.map(|(id, phase)| NodeRollout {
                    fleet_id: Some(id.into()),
                    to: "v2".into(),
                    phase,
                    step: 0,
                    steps: 2,
                    gate: (phase == RolloutPhase::RolledBack).then(|| "failure_rate".into()),
                    reason: (phase == RolloutPhase::RolledBack)
                        .then(|| "3 of 10 new flows failed (30%, limit 1%)".into()),
                }),
            }],
            last_sync: at(0),
            local_changes: vec![],
        }
    }

    fn three_nodes() -> (FleetRollout, Progress) {
        let statuses = [status("c", None), status("a", None), status("b", None)];
        start(
            StartRequest {
                service: "web",
                to: "v2",
                spec: "1,25%,100%".parse().unwrap(),
                canary: None,
                node_plan: node_plan(),
                missing: MissingNode::RollBack,
                node_timeout: Duration::from_mins(1),
            },
            &statuses,
            at(0),
        )
        .unwrap()
    }

    fn by_node(statuses: impl IntoIterator<Item = NodeStatus>) -> BTreeMap<NodeName, NodeStatus> {
        statuses.into_iter().map(|s| (s.node.clone(), s)).collect()
    }

    #[test]
    fn start_plans_waves_from_the_nodes_that_can_take_part() {
        let mut no_service = status("d", None);
        no_service.services.clear();
        let mut no_target = status("e", None);
        no_target.services[0].groups.retain(|g| g.name != "v2");
        let mut not_ready = status("f", None);
        not_ready.ready = false;
        let busy = status("g", Some(("web-local", RolloutPhase::Running)));
        let done_before = status("h", Some(("web-old", RolloutPhase::Completed)));
        let statuses = [
            status("c", None),
            status("a", None),
            status("b", None),
            no_service,
            no_target,
            not_ready,
            busy,
            done_before,
        ];
        let (plan, progress) = start(
            StartRequest {
                service: "web",
                to: "v2",
                spec: "1,25%,100%".parse().unwrap(),
                canary: Some(&n("b")),
                node_plan: node_plan(),
                missing: MissingNode::Skip,
                node_timeout: DEFAULT_NODE_TIMEOUT,
            },
            &statuses,
            at(5),
        )
        .unwrap();
        assert_eq!(plan.id, "web-1700000005000");
        // b first (the canary), then by name; 25% of 4 is the canary: that wave is dropped.
        assert_eq!(plan.waves, vec![vec![n("b")], vec![n("a"), n("c"), n("h")]]);
        let excluded: Vec<_> = plan
            .excluded
            .iter()
            .map(|e| (e.node.as_str(), e.reason.clone()))
            .collect();
        assert_eq!(
            excluded,
            [
                ("d", ExcludeReason::NoService),
                ("e", ExcludeReason::NoTarget),
                ("f", ExcludeReason::NotReady),
                ("g", ExcludeReason::Busy { to: "v2".into() }),
            ]
        );
        assert_eq!(progress, Progress::start(&plan, at(5)));
        assert_eq!(FleetRollout::from_json(&plan.to_json()).unwrap(), plan);
        assert_eq!(Progress::from_json(&progress.to_json()).unwrap(), progress);
    }

    #[test]
    fn start_refuses_a_fleet_where_no_node_can_take_part() {
        let mut s = status("a", None);
        s.services.clear();
        let r = start(
            StartRequest {
                service: "web",
                to: "v2",
                spec: WaveSpec::default(),
                canary: None,
                node_plan: node_plan(),
                missing: MissingNode::RollBack,
                node_timeout: DEFAULT_NODE_TIMEOUT,
            },
            &[s],
            at(0),
        );
        assert_eq!(r, Err(WavesError::NoNodes));
    }

    #[test]
    fn waves_advance_when_every_node_passed_then_complete() {
        let (plan, mut progress) = three_nodes();
        assert_eq!(plan.waves, vec![vec![n("a")], vec![n("b"), n("c")]]);
        let id = plan.id.clone();
        let mut tracker = Tracker::new(at(0));

        // The canary has not picked the rollout up yet.
        let statuses = by_node([status("a", None), status("b", None), status("c", None)]);
        assert_eq!(
            decide(&plan, &progress, &statuses, &mut tracker, at(1)),
            Decision::Wait {
                pending: vec![n("a")],
                silent: vec![(n("a"), at(0))]
            }
        );
        // Running on the canary.
        let statuses = by_node([status("a", Some((&id, RolloutPhase::Running)))]);
        assert_eq!(
            decide(&plan, &progress, &statuses, &mut tracker, at(2)),
            Decision::Wait {
                pending: vec![n("a")],
                silent: vec![]
            }
        );
        // Canary passed: wave 2.
        let statuses = by_node([status("a", Some((&id, RolloutPhase::Completed)))]);
        assert_eq!(
            decide(&plan, &progress, &statuses, &mut tracker, at(3)),
            Decision::StartWave {
                wave: 1,
                nodes: vec![n("b"), n("c")]
            }
        );
        progress.wave = 1;
        progress.wave_started = at(3);
        // One of two passed: wait for the other.
        let statuses = by_node([
            status("a", Some((&id, RolloutPhase::Completed))),
            status("b", Some((&id, RolloutPhase::Completed))),
            status("c", Some((&id, RolloutPhase::Paused))),
        ]);
        assert_eq!(
            decide(&plan, &progress, &statuses, &mut tracker, at(4)),
            Decision::Wait {
                pending: vec![n("c")],
                silent: vec![]
            }
        );
        let statuses = by_node([
            status("a", Some((&id, RolloutPhase::Completed))),
            status("b", Some((&id, RolloutPhase::Completed))),
            status("c", Some((&id, RolloutPhase::Completed))),
        ]);
        assert_eq!(
            decide(&plan, &progress, &statuses, &mut tracker, at(5)),
            Decision::Complete
        );
    }

    #[test]
    fn a_breach_on_any_started_node_rolls_the_fleet_back() {
        let (plan, mut progress) = three_nodes();
        let id = plan.id.clone();
        progress.wave = 1;
        let mut tracker = Tracker::new(at(0));
        // The canary (an earlier wave) breaks after it passed its steps... or c breaks now.
        let statuses = by_node([
            status("a", Some((&id, RolloutPhase::Completed))),
            status("b", Some((&id, RolloutPhase::Running))),
            status("c", Some((&id, RolloutPhase::RolledBack))),
        ]);
        assert_eq!(
            decide(&plan, &progress, &statuses, &mut tracker, at(9)),
            Decision::RollBack {
                node: n("c"),
                gate: "failure_rate".into(),
                reason: "3 of 10 new flows failed (30%, limit 1%)".into()
            }
        );
        let mut aborted = status("a", Some((&id, RolloutPhase::Aborted)));
        aborted.services[0].rollout.as_mut().unwrap().reason = Some("operator on a".into());
        let statuses = by_node([aborted]);
        assert_eq!(
            decide(&plan, &progress, &statuses, &mut tracker, at(9)),
            Decision::RollBack {
                node: n("a"),
                gate: GATE_ABORTED_ON_NODE.into(),
                reason: "operator on a".into()
            }
        );
    }

    #[test]
    fn a_report_of_another_rollout_is_not_this_one() {
        let (plan, progress) = three_nodes();
        let mut tracker = Tracker::new(at(0));
        // The canary completed (or broke) an earlier rollout of web: that says nothing now.
        for phase in [RolloutPhase::Completed, RolloutPhase::RolledBack] {
            let statuses = by_node([status("a", Some(("web-1", phase)))]);
            assert_eq!(
                decide(&plan, &progress, &statuses, &mut tracker, at(1)),
                Decision::Wait {
                    pending: vec![n("a")],
                    silent: vec![(n("a"), at(0))]
                },
                "{phase:?}"
            );
        }
    }

    #[test]
    fn a_silent_node_is_waited_for_then_rolls_the_fleet_back() {
        let (plan, progress) = three_nodes();
        let mut tracker = Tracker::new(at(0));
        let none = BTreeMap::new();
        assert!(matches!(
            decide(&plan, &progress, &none, &mut tracker, at(59)),
            Decision::Wait { .. }
        ));
        assert_eq!(
            decide(&plan, &progress, &none, &mut tracker, at(60)),
            Decision::RollBack {
                node: n("a"),
                gate: GATE_NODE_MISSING.into(),
                reason: "has no status (down, or its lease expired) for 1m".into()
            }
        );
    }

    #[test]
    fn the_silence_clock_restarts_when_the_node_reports_and_when_a_driver_takes_over() {
        let (plan, progress) = three_nodes();
        let id = plan.id.clone();
        let mut tracker = Tracker::new(at(0));
        let none = BTreeMap::new();
        let running = by_node([status("a", Some((&id, RolloutPhase::Running)))]);
        assert!(matches!(
            decide(&plan, &progress, &none, &mut tracker, at(50)),
            Decision::Wait { .. }
        ));
        // Heard at 55: silent since then, overdue only at 115.
        decide(&plan, &progress, &running, &mut tracker, at(55));
        assert_eq!(
            decide(&plan, &progress, &none, &mut tracker, at(70)),
            Decision::Wait {
                pending: vec![n("a")],
                silent: vec![(n("a"), at(55))]
            }
        );
        assert!(matches!(
            decide(&plan, &progress, &none, &mut tracker, at(114)),
            Decision::Wait { .. }
        ));
        assert!(matches!(
            decide(&plan, &progress, &none, &mut tracker, at(115)),
            Decision::RollBack { .. }
        ));
        // A new driver at 500 waits a full timeout although the wave started at 0.
        let mut fresh = Tracker::new(at(500));
        assert_eq!(
            decide(&plan, &progress, &none, &mut fresh, at(501)),
            Decision::Wait {
                pending: vec![n("a")],
                silent: vec![(n("a"), at(500))]
            }
        );
        assert!(matches!(
            decide(&plan, &progress, &none, &mut fresh, at(560)),
            Decision::RollBack { .. }
        ));
    }

    #[test]
    fn under_the_skip_policy_silent_nodes_are_skipped_and_the_wave_goes_on() {
        let (mut plan, mut progress) = three_nodes();
        plan.missing = MissingNode::Skip;
        let id = plan.id.clone();
        progress.wave = 1;
        progress.wave_started = at(10);
        let mut tracker = Tracker::new(at(0));
        let mut no_service = status("c", None);
        no_service.services.clear();
        let statuses = by_node([
            status("a", Some((&id, RolloutPhase::Completed))),
            status("b", Some((&id, RolloutPhase::Completed))),
            no_service,
        ]);
        let d = decide(&plan, &progress, &statuses, &mut tracker, at(70));
        let Decision::Skip { nodes } = d else {
            panic!("{d:?}")
        };
        assert_eq!(nodes.len(), 1);
        assert_eq!((nodes[0].node.as_str(), nodes[0].wave), ("c", 1));
        assert_eq!(nodes[0].reason, "no longer has the service for 1m");
        progress.skipped = nodes;
        assert_eq!(
            decide(&plan, &progress, &statuses, &mut tracker, at(71)),
            Decision::Complete
        );
    }

    #[test]
    fn a_wave_of_skipped_nodes_proves_nothing() {
        let (mut plan, mut progress) = three_nodes();
        plan.missing = MissingNode::Skip;
        let mut tracker = Tracker::new(at(0));
        progress.skipped = vec![Skipped {
            node: n("a"),
            wave: 0,
            reason: "down".into(),
        }];
        let d = decide(&plan, &progress, &BTreeMap::new(), &mut tracker, at(1));
        assert!(
            matches!(&d, Decision::RollBack { node, gate, .. } if node.as_str() == "a" && gate == GATE_WAVE_UNVERIFIED),
            "{d:?}"
        );
    }

    #[test]
    fn paused_and_final_rollouts_are_idle_and_mismatches_are_reported() {
        let (plan, mut progress) = three_nodes();
        let mut tracker = Tracker::new(at(0));
        for state in [
            FleetState::Paused {
                reason: "lunch".into(),
            },
            FleetState::Completed,
            FleetState::Aborted { reason: "x".into() },
            FleetState::RolledBack {
                node: n("a"),
                gate: "health".into(),
                reason: "no backend up".into(),
            },
        ] {
            progress.state = state;
            assert_eq!(
                decide(&plan, &progress, &BTreeMap::new(), &mut tracker, at(1000)),
                Decision::Idle
            );
        }
        progress.state = FleetState::Running;
        progress.wave = 2;
        assert!(matches!(
            decide(&plan, &progress, &BTreeMap::new(), &mut tracker, at(1)),
            Decision::Inconsistent { .. }
        ));
        progress.wave = 0;
        progress.id = "web-other".into();
        assert!(matches!(
            decide(&plan, &progress, &BTreeMap::new(), &mut tracker, at(1)),
            Decision::Inconsistent { .. }
        ));
    }

    #[test]
    fn each_node_knows_its_part() {
        let (plan, mut progress) = three_nodes();
        let (a, b, z) = (n("a"), n("b"), n("z"));
        assert_eq!(directive(&plan, &progress, &a), Directive::Run);
        assert_eq!(
            directive(&plan, &progress, &b),
            Directive::Waiting { wave: 1 }
        );
        assert_eq!(directive(&plan, &progress, &z), Directive::NotInvolved);

        progress.state = FleetState::Paused {
            reason: "lunch".into(),
        };
        assert_eq!(directive(&plan, &progress, &a), Directive::Pause);
        assert_eq!(
            directive(&plan, &progress, &b),
            Directive::Waiting { wave: 1 }
        );

        progress.state = FleetState::RolledBack {
            node: a.clone(),
            gate: "health".into(),
            reason: "no v2 backend up".into(),
        };
        assert!(matches!(
            directive(&plan, &progress, &a),
            Directive::Restore { .. }
        ));
        assert_eq!(
            directive(&plan, &progress, &b),
            Directive::NotInvolved,
            "never started, nothing to restore"
        );

        progress.state = FleetState::Running;
        progress.wave = 1;
        progress.skipped = vec![Skipped {
            node: b.clone(),
            wave: 1,
            reason: "down".into(),
        }];
        assert!(matches!(
            directive(&plan, &progress, &b),
            Directive::Restore { .. }
        ));
        assert_eq!(directive(&plan, &progress, &a), Directive::Run);

        progress.state = FleetState::Completed;
        assert_eq!(directive(&plan, &progress, &a), Directive::Complete);
        assert_eq!(
            directive(&plan, &progress, &b),
            Directive::NotInvolved,
            "a skipped node follows the config the driver changed"
        );

        progress.state = FleetState::Aborted {
            reason: "wrong build".into(),
        };
        assert!(matches!(
            directive(&plan, &progress, &a),
            Directive::Restore { .. }
        ));

        progress.id = "web-other".into();
        assert_eq!(directive(&plan, &progress, &a), Directive::NotInvolved);
    }
}
