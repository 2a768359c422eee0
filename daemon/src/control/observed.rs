//! What the core reads besides the live revision: the counters and health of the groups that
//! rollouts watch, and the outcomes of their gates. The controller gathers them
//! (`wanted_groups` says which, `group_counts` reads a group's judged attempts) before the core
//! decides.

use std::{
    collections::{BTreeMap, BTreeSet},
    time::SystemTime,
};

use veer_common::counters::BackendCounters;

use super::{
    change::Head, effects::Readings, error::ControlError, health::Health, request::Request,
};
use crate::{
    model::{DesiredState, GroupRef, Protocol},
    rollout::{GateFailure, Observation, Rollout, canary::StepJudge, engine::Counts},
};

/// Identifies one watch of one step: (service, step index, when the step began). A resumed or
/// restarted step begins anew, so an outcome of its earlier watch never counts for it.
pub type GateKey = (String, usize, SystemTime);

/// The key of `rollout`'s current step.
pub(super) fn gate_key(rollout: &Rollout) -> GateKey {
    (rollout.service.clone(), rollout.step, rollout.step_started)
}

/// A step's extra gates: being checked, or checked (the first failure, if any).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum GateState {
    /// Handed out as a `GateJob`, no outcome yet.
    Pending,
    /// Checked: the first failure, if any.
    Done(Result<(), GateFailure>),
}

/// What the core reads besides the head: counters, health and gate outcomes of the groups that
/// rollouts watch. The controller gathers them (`wanted_groups` says which) before deciding.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Observations {
    /// Judged connection attempts of each group's backends and how many of them failed
    /// (absolute counters, `group_counts`).
    pub counts: BTreeMap<GroupRef, Counts>,
    /// Backends of each group that take new flows (health).
    pub up: BTreeMap<GroupRef, usize>,
    /// Extra gates of rollout steps: being checked, or checked with this outcome.
    pub gates: BTreeMap<GateKey, GateState>,
    /// The canary judge of each judged step (`judging`).
    pub judges: BTreeMap<GateKey, StepJudge>,
}

impl Observations {
    /// Every group's counters of `service` that were observed, in the order of `groups`.
    pub fn group_counts(&self, service: &str, groups: &[String]) -> Vec<(String, Counts)> {
        groups
            .iter()
            .map(|g| {
                let counts = self
                    .counts
                    .get(&(service.to_owned(), g.clone()))
                    .copied()
                    .unwrap_or_default();
                (g.clone(), counts)
            })
            .collect()
    }

    /// What the rollout engine sees of `rollout` now (gate outcomes only once they are known).
    pub fn of(&self, rollout: &Rollout) -> Observation {
        let group = (rollout.service.clone(), rollout.plan.to.clone());
        Observation {
            counts: self.counts.get(&group).copied().unwrap_or_default(),
            target_up: self.up.get(&group).copied().unwrap_or(0),
            gates: match self.gates.get(&gate_key(rollout)) {
                Some(GateState::Done(outcome)) => Some(outcome.clone()),
                _ => None,
            },
            judge: self.judges.get(&gate_key(rollout)).cloned(),
        }
    }
}

/// The groups whose counters and health `request` (or a rollout tick, without one) may read:
/// every group of a service whose rollout is not over, and of a service a rollout starts (the
/// target is judged; every group's counters are kept at each step's start, so that each group's
/// new flows and failures in the step can be shown).
pub(super) fn wanted_groups(request: Option<&Request>, head: &Head) -> BTreeSet<GroupRef> {
    let all_of = |service: &str, target: &str| {
        let mut groups: Vec<GroupRef> = head
            .state
            .service(service)
            .map(|s| {
                s.groups
                    .iter()
                    .map(|g| (service.to_owned(), g.name.clone()))
                    .collect()
            })
            .unwrap_or_default();
        groups.push((service.to_owned(), target.to_owned()));
        groups
    };
    let mut groups: BTreeSet<GroupRef> = head
        .rollouts
        .iter()
        .filter(|r| !r.phase.is_final())
        .flat_map(|r| all_of(&r.service, &r.plan.to))
        .collect();
    match request {
        Some(
            Request::RolloutStart { service, plan } | Request::FleetRollout { service, plan, .. },
        ) => {
            groups.extend(all_of(service, &plan.to));
        }
        Some(Request::RolloutRetry { service } | Request::RolloutPromote { service, .. }) => {
            if let Some(r) = head.latest_rollout(service) {
                groups.extend(all_of(service, &r.plan.to));
            }
        }
        Some(Request::Apply { state, .. }) => {
            for s in &state.services {
                let Some(plan) = &s.rollout else { continue };
                groups.extend(
                    s.groups
                        .iter()
                        .map(|g| (s.name.clone(), g.name.clone()))
                        .chain([(s.name.clone(), plan.to.clone())]),
                );
            }
        }
        _ => {}
    }
    groups
}

/// One backend's judged connection attempts and failures, from its counters and the attempts
/// upkeep found it left unanswered. A failure is the backend's: an RST answering the SYN, or no
/// answer within the connect timeout. A TCP attempt is judged once the backend answered it
/// either way, so a client that never completes its handshake (a spoofed SYN) is neither an
/// attempt nor a failure. UDP has no such signal: its new flows are its attempts, and none fails.
pub(super) fn judged(protocol: Protocol, c: &BackendCounters, unanswered: u64) -> Counts {
    match protocol {
        Protocol::Udp => Counts {
            attempted: c.new_flows,
            failed: 0,
        },
        Protocol::Tcp => {
            let failed = c.refused_flows + unanswered;
            Counts {
                attempted: c.answered_flows + failed,
                failed,
            }
        }
    }
}

/// Judged attempts and failures of `group`'s backends (`judged`), as counters; `state` says
/// the service's protocol.
pub(super) fn group_counts<R: Readings>(
    readings: &R,
    health: &Health,
    state: &DesiredState,
    service: &str,
    group: &str,
) -> Result<Counts, ControlError> {
    let protocol = state.service(service).map_or(Protocol::Tcp, |s| s.protocol);
    let mut c = Counts::default();
    for ((s, g, _), id) in &readings.ids().backends {
        if s == service && g == group {
            let k = judged(
                protocol,
                &readings.backend_counters(*id)?,
                health.unanswered(*id),
            );
            c.attempted += k.attempted;
            c.failed += k.failed;
        }
    }
    Ok(c)
}
