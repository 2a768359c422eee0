//! Rollouts in the control core, pure: start, pause, resume, abort, and the tick that turns the
//! engine's decisions into changes. Gates are checked off the core (`GateJob`), and their
//! outcomes come back through `Observations`.

use std::time::{Duration, SystemTime};

use super::{
    change::{Change, Head, Outcome, finish},
    error::ControlError,
    observed::{GateKey, Observations, gate_key},
};
use crate::{
    model::{DesiredState, Plan, Weight, gate::Gate},
    rollout::{Decision, Phase, Rollout, canary::StepJudge},
    state::Origin,
};

/// Extra gates to check for a step (run by the supervisor, off the lock).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GateJob {
    /// The step they are for.
    pub key: GateKey,
    /// The gates.
    pub gates: Vec<Gate>,
    /// Timeout of each.
    pub timeout: Duration,
}

/// `state` with the weights of `service`'s groups set.
fn with_weights(
    mut state: DesiredState,
    service: &str,
    weights: &[(String, Weight)],
) -> DesiredState {
    if let Some(s) = state.services.iter_mut().find(|s| s.name == service) {
        for g in &mut s.groups {
            if let Some((_, w)) = weights.iter().find(|(n, _)| *n == g.name) {
                g.weight = *w;
            }
        }
    }
    state
}

/// `v1=90 v2=10`.
pub(super) fn weights_text(weights: &[(String, Weight)]) -> String {
    weights
        .iter()
        .map(|(g, w)| format!("{g}={w}"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// A change made by the rollout engine: `rollouts` with `service`'s weights set (if any).
fn rollout_change(
    head: &Head,
    rollouts: Vec<Rollout>,
    service: &str,
    weights: Option<&[(String, Weight)]>,
    summary: String,
) -> Change {
    let state = match weights {
        Some(w) => with_weights(head.state.clone(), service, w),
        None => head.state.clone(),
    };
    Change {
        state,
        rollouts,
        origin: Origin::Rollout,
        summary,
        config: head.config.clone(),
    }
}

/// The index of `service`'s rollout that is not over.
fn active_index(head: &Head, service: &str) -> Result<usize, ControlError> {
    head.rollouts
        .iter()
        .position(|r| r.service == service && !r.phase.is_final())
        .ok_or_else(|| ControlError::NoRollout {
            service: service.to_owned(),
        })
}

/// Starts a rollout of `service` to `plan.to`: the first step's weights take effect at once.
pub(super) fn start(
    head: &Head,
    service: &str,
    plan: &Plan,
    observed: &Observations,
    now: SystemTime,
) -> Result<Option<Change>, ControlError> {
    let svc = head.service(service)?;
    plan.validate(svc)?;
    if let Some(r) = head.active_rollout(service) {
        return Err(ControlError::in_the_way(r));
    }
    let original: Vec<(String, Weight)> = svc
        .groups
        .iter()
        .map(|g| (g.name.clone(), g.weight))
        .collect();
    let counts = observed
        .counts
        .get(&(service.to_owned(), plan.to.clone()))
        .copied()
        .unwrap_or_default();
    let r = Rollout::start(service, plan.clone(), original, counts, now);
    let weights = r.weights_at_step(0);
    let summary = format!(
        "rollout {service} -> {} started: step 1/{} ({})",
        r.plan.to,
        r.plan.steps.len(),
        weights_text(&weights)
    );
    let mut rollouts = head.rollouts.clone();
    rollouts.retain(|o| o.service != service);
    rollouts.push(r);
    finish(
        head,
        rollout_change(head, rollouts, service, Some(&weights), summary),
    )
}

/// Holds a running rollout at its current weights (a paused one stays paused).
pub(super) fn pause(head: &Head, service: &str) -> Result<Option<Change>, ControlError> {
    let i = active_index(head, service)?;
    if head.rollouts[i].phase == Phase::Paused {
        return Ok(None);
    }
    let mut rollouts = head.rollouts.clone();
    rollouts[i].phase = Phase::Paused;
    rollouts[i].reason = Some("paused by an operator".to_owned());
    let summary = format!("rollout {service} paused");
    finish(head, rollout_change(head, rollouts, service, None, summary))
}

/// Resumes a paused rollout: the current step is watched afresh from `now` (a running one goes
/// on as it was).
pub(super) fn resume(
    head: &Head,
    service: &str,
    observed: &Observations,
    now: SystemTime,
) -> Result<Option<Change>, ControlError> {
    let i = active_index(head, service)?;
    if head.rollouts[i].phase == Phase::Running {
        return Ok(None);
    }
    let mut rollouts = head.rollouts.clone();
    let counts = observed.of(&rollouts[i]).counts;
    let r = &mut rollouts[i];
    r.phase = Phase::Running;
    r.reason = None;
    r.step_started = now;
    r.baseline = counts;
    let summary = format!("rollout {service} resumed");
    finish(head, rollout_change(head, rollouts, service, None, summary))
}

/// Stops a rollout and restores the weights from before it. With no rollout running or paused
/// there is nothing to stop: what the abort asks for is already so, and the outcome says so.
pub(super) fn abort(head: &Head, service: &str) -> Result<Outcome, ControlError> {
    head.service(service)?;
    let Ok(i) = active_index(head, service) else {
        let latest = match head.latest_rollout(service).map(|r| r.phase) {
            Some(Phase::Completed) => "the latest rollout completed",
            Some(Phase::RolledBack) => "the latest rollout was rolled back",
            Some(Phase::Aborted) => "the latest rollout was aborted",
            _ => "it has had none",
        };
        return Ok(Outcome {
            changes: Vec::new(),
            note: Some(format!("rollout {service}: nothing to abort ({latest})")),
        });
    };
    let mut rollouts = head.rollouts.clone();
    rollouts[i].phase = Phase::Aborted;
    rollouts[i].reason = Some("aborted by an operator".to_owned());
    let weights = rollouts[i].original.clone();
    let summary = format!("rollout {service} aborted: {}", weights_text(&weights));
    Ok(finish(
        head,
        rollout_change(head, rollouts, service, Some(&weights), summary),
    )?
    .into())
}

/// After a restart: rollouts whose plan says so hold (paused) instead of resuming.
pub(super) fn hold_after_restart(head: &Head) -> Result<Option<Change>, ControlError> {
    let mut rollouts = head.rollouts.clone();
    let mut holding = Vec::new();
    for r in rollouts
        .iter_mut()
        .filter(|r| r.phase == Phase::Running && r.plan.hold_on_restart)
    {
        r.phase = Phase::Paused;
        r.reason = Some(
            "held after a daemon restart (the plan asks for it); veer rollout resume continues"
                .to_owned(),
        );
        holding.push(r.service.clone());
    }
    if holding.is_empty() {
        return Ok(None);
    }
    let summary = format!("rollout {} held after restart", holding.join(","));
    let change = Change {
        state: head.state.clone(),
        rollouts,
        origin: Origin::Rollout,
        summary,
        config: head.config.clone(),
    };
    finish(head, change)
}

/// Keeps the verdict of the step that ends in the rollout (a step that was not judged leaves
/// the previous one).
fn keep_verdict(x: &mut Rollout, obs: &crate::rollout::Observation) {
    if let Some(v) = obs.judge.as_ref().and_then(StepJudge::latest) {
        x.verdict = Some(v.clone());
    }
}

/// What one tick of the rollout engine comes to.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(super) struct Tick {
    /// Advances, completions and breaches, each a revision, in order.
    pub changes: Vec<Change>,
    /// Extra gates to check now.
    pub gate_jobs: Vec<GateJob>,
}

/// Decides every running rollout.
pub(super) fn tick(
    head: &Head,
    observed: &Observations,
    now: SystemTime,
) -> Result<Tick, ControlError> {
    let mut out = Tick::default();
    let mut next = head.clone();
    for r in head.rollouts.iter().filter(|r| r.phase == Phase::Running) {
        let obs = observed.of(r);
        let update = |next: &Head,
                      f: &dyn Fn(&mut Rollout),
                      weights: Option<&[(String, Weight)]>,
                      summary: String| {
            let mut rollouts = next.rollouts.clone();
            if let Some(x) = rollouts
                .iter_mut()
                .find(|x| x.service == r.service && !x.phase.is_final())
            {
                f(x);
            }
            finish(
                next,
                rollout_change(next, rollouts, &r.service, weights, summary),
            )
        };
        let change = match r.decide(&obs, now) {
            Decision::Wait(_) => None,
            Decision::EvaluateGates => {
                let key = gate_key(r);
                if !observed.gates.contains_key(&key) {
                    out.gate_jobs.push(GateJob {
                        key,
                        gates: r.plan.gates.clone(),
                        timeout: r.plan.gate_timeout,
                    });
                }
                None
            }
            Decision::Advance {
                next: step,
                weights,
            } => {
                let summary = format!(
                    "rollout {} -> {}: step {}/{} ({})",
                    r.service,
                    r.plan.to,
                    step + 1,
                    r.plan.steps.len(),
                    weights_text(&weights)
                );
                update(
                    &next,
                    &|x| {
                        keep_verdict(x, &obs);
                        x.step = step;
                        x.step_started = now;
                        x.baseline = obs.counts;
                    },
                    Some(&weights),
                    summary,
                )?
            }
            Decision::Complete => {
                let summary = format!("rollout {} -> {} completed", r.service, r.plan.to);
                update(&next, &|x| x.phase = Phase::Completed, None, summary)?
            }
            Decision::Breach {
                gate,
                why,
                weights,
                phase,
            } => {
                let reason = format!("{gate}: {why}");
                let word = if phase == Phase::Paused {
                    "stepped back and paused"
                } else {
                    "rolled back"
                };
                let summary = format!("rollout {} -> {} {word}: {reason}", r.service, r.plan.to);
                update(
                    &next,
                    &|x| {
                        keep_verdict(x, &obs);
                        x.phase = phase;
                        x.reason = Some(reason.clone());
                        x.step = x.step.saturating_sub(usize::from(phase == Phase::Paused));
                    },
                    Some(&weights),
                    summary,
                )?
            }
        };
        if let Some(change) = change {
            next = next.after(&change);
            out.changes.push(change);
        }
    }
    Ok(out)
}
