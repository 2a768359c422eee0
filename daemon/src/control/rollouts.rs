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
    fleet::Directive,
    model::{DesiredState, Plan, Weight, gate::Gate},
    rollout::{Decision, Phase, Rollout, StepOutcome, canary::StepJudge},
    state::{Audit, Origin},
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
        drains: head.drains.clone(),
        audit: Audit::default(),
    }
}

/// The names of `service`'s groups.
fn group_names(head: &Head, service: &str) -> Vec<String> {
    head.state
        .service(service)
        .map(|s| s.groups.iter().map(|g| g.name.clone()).collect())
        .unwrap_or_default()
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
    let mut r = Rollout::start(service, plan.clone(), original, counts, now);
    r.group_baselines = observed.group_counts(service, &group_names(head, service));
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

/// Runs `r` from `now`, its current step watched afresh: the pause starts over, and the new
/// flows and failures of the step are counted from the counters observed now.
fn watch_afresh(r: &mut Rollout, head: &Head, observed: &Observations, now: SystemTime) {
    r.phase = Phase::Running;
    r.reason = None;
    r.gate = None;
    r.step_started = now;
    r.baseline = observed.of(r).counts;
    r.group_baselines = observed.group_counts(&r.service, &group_names(head, &r.service));
    r.pause_skipped = false;
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
    watch_afresh(&mut rollouts[i], head, observed, now);
    let summary = format!("rollout {service} resumed");
    finish(head, rollout_change(head, rollouts, service, None, summary))
}

/// Stops a rollout and restores the weights from before it. With no rollout running or paused
/// there is nothing to stop: what the abort asks for is already so, and the outcome says so.
pub(super) fn abort(
    head: &Head,
    service: &str,
    observed: &Observations,
    now: SystemTime,
) -> Result<Outcome, ControlError> {
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
    let counts = observed.of(&rollouts[i]).counts;
    let record = rollouts[i].record(StepOutcome::Aborted, counts, now);
    rollouts[i].history.push(record);
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

/// Promotes `service`'s rollout: ends the current step's pause now (its new flows and gates
/// still count), or with `full` goes straight to the last step (the steps in between recorded
/// as skipped), whose new flows and gates are still checked before it completes. A paused
/// rollout is resumed. Idempotent: a promotion that holds already changes nothing.
pub(super) fn promote(
    head: &Head,
    service: &str,
    full: bool,
    observed: &Observations,
    now: SystemTime,
) -> Result<Outcome, ControlError> {
    head.service(service)?;
    let Ok(i) = active_index(head, service) else {
        return match head.latest_rollout(service).map(|r| r.phase) {
            Some(Phase::Completed) => Ok(Outcome {
                changes: Vec::new(),
                note: Some(format!(
                    "rollout {service}: nothing to promote (the latest rollout completed)"
                )),
            }),
            _ => Err(ControlError::NoRollout {
                service: service.to_owned(),
            }),
        };
    };
    let mut rollouts = head.rollouts.clone();
    let r = &mut rollouts[i];
    let last = r.plan.steps.len().saturating_sub(1);
    let already = r.phase == Phase::Running && r.pause_skipped && (!full || r.step == last);
    if already {
        let what = if full { "at its last step" } else { "promoted" };
        return Ok(Outcome {
            changes: Vec::new(),
            note: Some(format!(
                "rollout {service} is already {what} (step {}/{}, pause skipped)",
                r.step + 1,
                r.plan.steps.len()
            )),
        });
    }
    if r.phase == Phase::Paused {
        watch_afresh(r, head, observed, now);
    }
    let counts = observed.of(r).counts;
    let mut weights = None;
    if full && r.step < last {
        r.history.push(r.record(StepOutcome::Skipped, counts, now));
        for step in r.step + 1..last {
            r.history.push(crate::rollout::StepRecord {
                step,
                started: now,
                ended: now,
                outcome: StepOutcome::Skipped,
                counts: crate::rollout::engine::Counts::default(),
            });
        }
        r.step = last;
        r.step_started = now;
        r.baseline = counts;
        r.group_baselines = observed.group_counts(service, &group_names(head, service));
        weights = Some(r.weights_at_step(last));
    }
    r.pause_skipped = true;
    let summary = match &weights {
        Some(w) => format!(
            "rollout {service} -> {} promoted to step {}/{} ({}); its gates are checked before it completes",
            r.plan.to,
            r.step + 1,
            r.plan.steps.len(),
            weights_text(w)
        ),
        None => format!(
            "rollout {service} -> {} promoted: the pause of step {}/{} is skipped",
            r.plan.to,
            r.step + 1,
            r.plan.steps.len()
        ),
    };
    Ok(finish(
        head,
        rollout_change(head, rollouts, service, weights.as_deref(), summary),
    )?
    .into())
}

/// Starts `service`'s rolled-back or aborted rollout again, with its plan, from the weights in
/// force (those it restored). A running one is already what a retry asks for.
pub(super) fn retry(
    head: &Head,
    service: &str,
    observed: &Observations,
    now: SystemTime,
) -> Result<Outcome, ControlError> {
    head.service(service)?;
    let latest = head
        .latest_rollout(service)
        .ok_or_else(|| ControlError::NoRollout {
            service: service.to_owned(),
        })?;
    match latest.phase {
        Phase::RolledBack | Phase::Aborted => {
            let plan = latest.plan.clone();
            let change = start(head, service, &plan, observed, now)?;
            Ok(change
                .map(|mut c| {
                    c.summary = c.summary.replacen(" started:", " retried:", 1);
                    c
                })
                .into())
        }
        Phase::Running => Ok(Outcome {
            changes: Vec::new(),
            note: Some(format!(
                "rollout {service} -> {} is already running (step {}/{})",
                latest.plan.to,
                latest.step + 1,
                latest.plan.steps.len()
            )),
        }),
        Phase::Paused => Err(ControlError::in_the_way(latest)),
        Phase::Completed => Err(ControlError::NothingToRetry {
            service: service.to_owned(),
            to: latest.plan.to.clone(),
        }),
    }
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
        drains: head.drains.clone(),
        audit: Audit::default(),
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

/// `service`'s rollout that is not over changed by `f`, with its weights set (if any), as a
/// change on top of `next`.
fn update_rollout(
    next: &Head,
    service: &str,
    f: &dyn Fn(&mut Rollout),
    weights: Option<&[(String, Weight)]>,
    summary: String,
) -> Result<Option<Change>, ControlError> {
    let mut rollouts = next.rollouts.clone();
    if let Some(x) = rollouts
        .iter_mut()
        .find(|x| x.service == service && !x.phase.is_final())
    {
        f(x);
    }
    finish(
        next,
        rollout_change(next, rollouts, service, weights, summary),
    )
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
        let update =
            |next: &Head,
             f: &dyn Fn(&mut Rollout),
             weights: Option<&[(String, Weight)]>,
             summary: String| { update_rollout(next, &r.service, f, weights, summary) };
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
                let baselines = observed.group_counts(&r.service, &group_names(head, &r.service));
                update(
                    &next,
                    &|x| {
                        x.history
                            .push(x.record(StepOutcome::Passed, obs.counts, now));
                        keep_verdict(x, &obs);
                        x.step = step;
                        x.step_started = now;
                        x.baseline = obs.counts;
                        x.group_baselines.clone_from(&baselines);
                        x.pause_skipped = false;
                    },
                    Some(&weights),
                    summary,
                )?
            }
            Decision::Complete => {
                let summary = format!("rollout {} -> {} completed", r.service, r.plan.to);
                update(
                    &next,
                    &|x| {
                        x.history
                            .push(x.record(StepOutcome::Passed, obs.counts, now));
                        x.phase = Phase::Completed;
                    },
                    None,
                    summary,
                )?
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
                        x.history
                            .push(x.record(StepOutcome::Breached, obs.counts, now));
                        keep_verdict(x, &obs);
                        x.phase = phase;
                        x.reason = Some(reason.clone());
                        x.gate = Some(gate.clone());
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

/// A node's part of a fleet rollout, as `Request::FleetRollout` asks for it.
#[derive(Clone, Copy, Debug)]
pub(super) struct FleetPart<'a> {
    /// Name of the service.
    pub service: &'a str,
    /// The fleet rollout.
    pub id: &'a str,
    /// The per-node plan.
    pub plan: &'a Plan,
    /// What the fleet's progress says the node does.
    pub directive: &'a Directive,
}

/// Why a node's part of a fleet rollout is paused when the fleet is: a resume of the fleet
/// resumes only a rollout paused for this reason (not one an operator of the node paused, or
/// one the plan holds after a restart).
fn fleet_pause_reason(id: &str) -> String {
    format!("paused with fleet rollout {id}")
}

/// Carries out a fleet rollout's directive on this node: its own rollout of the service (the
/// one tagged with the fleet rollout's id) is started, held, resumed or restored; anything else
/// is already so. Restoring also undoes a completed part (the fleet rolled back after this node
/// passed), and a node that is no longer part of a rollout it still runs restores too.
pub(super) fn fleet(
    head: &Head,
    part: &FleetPart<'_>,
    observed: &Observations,
    now: SystemTime,
) -> Result<Option<Change>, ControlError> {
    let service = part.service;
    let ours = head
        .rollouts
        .iter()
        .rposition(|r| r.service == service && r.fleet.as_deref() == Some(part.id));
    let phase = ours.map(|i| head.rollouts[i].phase);
    match part.directive {
        Directive::Run => match phase {
            None => start_fleet(head, part, observed, now),
            Some(Phase::Paused)
                if ours.and_then(|i| head.rollouts[i].reason.clone())
                    == Some(fleet_pause_reason(part.id)) =>
            {
                resume(head, service, observed, now)
            }
            Some(_) => Ok(None),
        },
        Directive::Pause => match ours {
            Some(i) if phase == Some(Phase::Running) => {
                let mut rollouts = head.rollouts.clone();
                rollouts[i].phase = Phase::Paused;
                rollouts[i].reason = Some(fleet_pause_reason(part.id));
                let summary = format!("rollout {service} paused with fleet rollout {}", part.id);
                finish(head, rollout_change(head, rollouts, service, None, summary))
            }
            _ => Ok(None),
        },
        Directive::Restore { why } => restore(head, ours, why),
        Directive::NotInvolved | Directive::Waiting { .. } => match phase {
            Some(p) if !p.is_final() => restore(
                head,
                ours,
                &format!("no longer part of fleet rollout {}", part.id),
            ),
            _ => Ok(None),
        },
        Directive::Complete => Ok(None),
    }
}

/// Starts this node's part of a fleet rollout: a rollout of the per-node plan, tagged with the
/// fleet rollout's id.
fn start_fleet(
    head: &Head,
    part: &FleetPart<'_>,
    observed: &Observations,
    now: SystemTime,
) -> Result<Option<Change>, ControlError> {
    let Some(mut change) = start(head, part.service, part.plan, observed, now)? else {
        return Ok(None);
    };
    for r in change
        .rollouts
        .iter_mut()
        .filter(|r| r.service == part.service && !r.phase.is_final())
    {
        r.fleet = Some(part.id.to_owned());
    }
    change.summary = format!("{} (fleet rollout {})", change.summary, part.id);
    Ok(Some(change))
}

/// Ends rollout `i` (running, paused or completed) with the weights from before it, as rolled
/// back, saying `why`. One already rolled back or aborted is left as it is.
fn restore(head: &Head, i: Option<usize>, why: &str) -> Result<Option<Change>, ControlError> {
    let Some(i) = i else { return Ok(None) };
    let r = &head.rollouts[i];
    if matches!(r.phase, Phase::RolledBack | Phase::Aborted) {
        return Ok(None);
    }
    let service = r.service.clone();
    let weights = r.original.clone();
    let mut rollouts = head.rollouts.clone();
    rollouts[i].phase = Phase::RolledBack;
    rollouts[i].reason = Some(why.to_owned());
    let summary = format!(
        "rollout {service} -> {} rolled back: {why}: {}",
        r.plan.to,
        weights_text(&weights)
    );
    finish(
        head,
        rollout_change(head, rollouts, &service, Some(&weights), summary),
    )
}
