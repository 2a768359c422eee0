//! The canary judge's part of the control layer: reading what a rollout's canary and baseline
//! did (counters, the kernel's signals and upkeep's unanswered attempts), and keeping one
//! `StepJudge` per judged step, looked at every rollout tick. The decisions stay the engine's.

use std::{collections::BTreeMap, time::SystemTime};

use super::{
    change::Head,
    effects::Readings,
    error::ControlError,
    health::Health,
    observed::{GateKey, gate_key, judged},
};
use crate::{
    model::{DesiredState, Protocol, tolerance::Tolerances},
    rollout::{
        Phase, Rollout,
        canary::{Reading, StepJudge},
    },
};

/// The tolerances `rollout`'s current step is judged with: none when its plan names none, or
/// when no other group takes new flows at this step (the last one, 100%).
pub(crate) fn judged_step(rollout: &Rollout) -> Option<&Tolerances> {
    rollout
        .plan
        .judge
        .as_ref()
        .filter(|_| rollout.is_judged_step())
}

/// What `canary` and the other groups of `service` did so far, as absolute counters.
pub(super) fn reading<R: Readings>(
    readings: &R,
    health: &Health,
    state: &DesiredState,
    service: &str,
    canary: &str,
) -> Result<Reading, ControlError> {
    let protocol = state.service(service).map_or(Protocol::Tcp, |s| s.protocol);
    let mut out = Reading::default();
    for ((s, g, _), id) in &readings.ids().backends {
        if s != service {
            continue;
        }
        let side = if g == canary {
            &mut out.canary
        } else {
            &mut out.baseline
        };
        let c = readings.backend_counters(*id)?;
        let k = judged(protocol, &c, health.unanswered(*id));
        side.attempts += k.attempted;
        side.failed += k.failed;
        side.established += c.answered_flows;
        if let Some(sig) = readings.backend_signals(*id)? {
            side.reset += sig.resets;
            side.connect += &sig.histograms.connect;
            side.first_byte += &sig.histograms.first_byte;
        }
    }
    Ok(out)
}

/// Looks at every running rollout's judged step (the looks that are due), keeping one
/// `StepJudge` per step in `judges`; judges of steps no rollout is at any more are dropped.
pub(super) fn look_all<R: Readings>(
    judges: &mut BTreeMap<GateKey, StepJudge>,
    head: &Head,
    readings: &R,
    health: &Health,
    now: SystemTime,
) -> Result<(), ControlError> {
    let mut current = Vec::new();
    for r in head.rollouts.iter().filter(|r| r.phase == Phase::Running) {
        let Some(tolerances) = judged_step(r) else {
            continue;
        };
        let key = gate_key(r);
        current.push(key.clone());
        let now_reading = reading(readings, health, &head.state, &r.service, &r.plan.to)?;
        // A pause skipped by `rollout promote` is over.
        let pause_over = r.pause_skipped
            || now.duration_since(r.step_started).unwrap_or_default() >= r.plan.pause;
        judges
            .entry(key)
            .or_insert_with(|| StepJudge::new(r.step + 1, now_reading.clone()))
            .look(tolerances, &now_reading, pause_over);
    }
    judges.retain(|k, _| current.contains(k));
    Ok(())
}
