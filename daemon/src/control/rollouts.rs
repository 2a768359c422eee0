//! Rollouts in the control layer: start, pause, resume, abort, and the tick that turns the
//! engine's decisions into revisions.

use std::{
    collections::HashMap,
    time::{Duration, SystemTime},
};

use super::{Applied, ControlError, Controller};
use crate::{
    api::protocol::{RolloutStatus, StepCounts},
    model::{DesiredState, Weight},
    rollout::{
        Decision, Observation, Phase, Plan, Rollout,
        engine::{Counts, WaitReason},
        gate::Gate,
    },
    state::Origin,
};

/// Outcome of a step's extra gates: pending, or done (`Err((gate, why))` on the first failure).
#[derive(Clone, Debug)]
pub(super) enum GateState {
    Pending,
    Done(Result<(), (String, String)>),
}

/// Gate outcomes by (service, step).
pub(super) type GateResults = HashMap<(String, usize), GateState>;

/// Extra gates to check for a step (run by the supervisor, off the lock).
#[derive(Clone, Debug)]
pub struct GateJob {
    /// Service.
    pub service: String,
    /// Step index.
    pub step: usize,
    /// The gates.
    pub gates: Vec<Gate>,
    /// Timeout of each.
    pub timeout: Duration,
}

/// Refuses operator changes to the group weights of services with a rollout in progress.
pub(super) fn refuse_weight_changes(
    rollouts: &[Rollout],
    current: &DesiredState,
    desired: &DesiredState,
) -> Result<(), ControlError> {
    for r in rollouts.iter().filter(|r| !r.phase.is_final()) {
        let weights = |s: &DesiredState| {
            s.service(&r.service).map(|s| {
                s.groups
                    .iter()
                    .map(|g| (g.name.clone(), g.weight))
                    .collect::<Vec<_>>()
            })
        };
        if weights(current) != weights(desired) {
            return Err(ControlError::RolloutInProgress {
                service: r.service.clone(),
            });
        }
    }
    Ok(())
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

fn weights_text(weights: &[(String, Weight)]) -> String {
    weights
        .iter()
        .map(|(g, w)| format!("{g}={w}"))
        .collect::<Vec<_>>()
        .join(" ")
}

impl Controller {
    /// Judged connection attempts and failures of `group`'s backends, as counters. A failure is
    /// the backend's: an RST answering the SYN, or no answer within the connect timeout. An
    /// attempt is judged once the backend answered it either way, so a client that never
    /// completes its handshake (a spoofed SYN) is neither. UDP has no such signal: its new
    /// flows are its attempts, and none fails.
    fn group_counts(&self, service: &str, group: &str) -> Result<Counts, ControlError> {
        let ids = &self.dataplane.applied().ids;
        let udp = self
            .live()
            .and_then(|st| st.service(service))
            .is_some_and(|s| s.protocol == crate::model::Protocol::Udp);
        let mut c = Counts::default();
        for ((s, g, _), id) in &ids.backends {
            if s == service && g == group {
                let k = self.dataplane.maps().backend_counters(*id)?;
                if udp {
                    c.attempted += k.new_flows;
                } else {
                    let failed = k.refused_flows + self.health.unanswered(*id);
                    c.attempted += k.answered_flows + failed;
                    c.failed += failed;
                }
            }
        }
        Ok(c)
    }

    fn group_up(&self, state: &DesiredState, service: &str, group: &str) -> usize {
        state
            .service(service)
            .and_then(|s| s.group(group))
            .map_or(0, |g| {
                g.backends
                    .iter()
                    .filter(|b| {
                        self.health
                            .is_up(&(service.to_owned(), group.to_owned(), b.addr))
                    })
                    .count()
            })
    }

    fn active_rollout(&self, service: &str) -> Result<(usize, Vec<Rollout>), ControlError> {
        let rollouts = self.rollouts();
        let i = rollouts
            .iter()
            .position(|r| r.service == service && !r.phase.is_final())
            .ok_or_else(|| ControlError::NoRollout {
                service: service.to_owned(),
            })?;
        Ok((i, rollouts))
    }

    /// Starts a rollout of `service` to `plan.to`: the first step's weights take effect at once.
    pub fn rollout_start(
        &mut self,
        service: &str,
        plan: Plan,
        now: SystemTime,
    ) -> Result<Applied, ControlError> {
        let state = self.current();
        let svc = state
            .service(service)
            .ok_or_else(|| ControlError::UnknownService {
                service: service.to_owned(),
            })?;
        plan.validate(svc)?;
        let mut rollouts = self.rollouts();
        if rollouts
            .iter()
            .any(|r| r.service == service && !r.phase.is_final())
        {
            return Err(ControlError::RolloutInProgress {
                service: service.to_owned(),
            });
        }
        let original: Vec<(String, Weight)> = svc
            .groups
            .iter()
            .map(|g| (g.name.clone(), g.weight))
            .collect();
        let counts = self.group_counts(service, &plan.to)?;
        let r = Rollout::start(service, plan, original, counts, now);
        let weights = r.weights_at_step(0);
        let summary = format!(
            "rollout {service} -> {} started: step 1/{} ({})",
            r.plan.to,
            r.plan.steps.len(),
            weights_text(&weights)
        );
        rollouts.retain(|o| o.service != service);
        rollouts.push(r);
        // Gate outcomes of an earlier rollout of the service must not count for this one.
        self.gates.retain(|(s, _), _| s != service);
        self.commit_with(
            with_weights(state, service, &weights),
            rollouts,
            Origin::Rollout,
            summary,
            None,
        )
    }

    /// Holds a running rollout at its current weights.
    pub fn rollout_pause(&mut self, service: &str) -> Result<Applied, ControlError> {
        let (i, mut rollouts) = self.active_rollout(service)?;
        if rollouts[i].phase == Phase::Paused {
            return Ok(Applied {
                revision: self.current_number(),
                changed: false,
            });
        }
        rollouts[i].phase = Phase::Paused;
        rollouts[i].reason = Some("paused by an operator".to_owned());
        self.commit_with(
            self.current(),
            rollouts,
            Origin::Rollout,
            format!("rollout {service} paused"),
            None,
        )
    }

    /// Resumes a paused rollout: the current step is watched afresh from now.
    pub fn rollout_resume(
        &mut self,
        service: &str,
        now: SystemTime,
    ) -> Result<Applied, ControlError> {
        let (i, mut rollouts) = self.active_rollout(service)?;
        if rollouts[i].phase == Phase::Running {
            return Ok(Applied {
                revision: self.current_number(),
                changed: false,
            });
        }
        let counts = self.group_counts(service, &rollouts[i].plan.to)?;
        let r = &mut rollouts[i];
        r.phase = Phase::Running;
        r.reason = None;
        r.step_started = now;
        r.baseline = counts;
        self.gates.remove(&(service.to_owned(), r.step));
        self.commit_with(
            self.current(),
            rollouts,
            Origin::Rollout,
            format!("rollout {service} resumed"),
            None,
        )
    }

    /// Stops a rollout and restores the weights from before it.
    pub fn rollout_abort(&mut self, service: &str) -> Result<Applied, ControlError> {
        let (i, mut rollouts) = self.active_rollout(service)?;
        rollouts[i].phase = Phase::Aborted;
        rollouts[i].reason = Some("aborted by an operator".to_owned());
        let weights = rollouts[i].original.clone();
        let state = with_weights(self.current(), service, &weights);
        let summary = format!("rollout {service} aborted: {}", weights_text(&weights));
        self.commit_with(state, rollouts, Origin::Rollout, summary, None)
    }

    /// After a restart: rollouts whose plan says so hold (paused) instead of resuming.
    pub(super) fn hold_rollouts_after_restart(&mut self) -> Result<(), ControlError> {
        let mut rollouts = self.rollouts();
        let mut held = Vec::new();
        for r in rollouts
            .iter_mut()
            .filter(|r| r.phase == Phase::Running && r.plan.hold_on_restart)
        {
            r.phase = Phase::Paused;
            r.reason = Some(
                "held after a daemon restart (the plan asks for it); veer rollout resume continues"
                    .to_owned(),
            );
            held.push(r.service.clone());
        }
        if !held.is_empty() {
            self.commit_with(
                self.current(),
                rollouts,
                Origin::Rollout,
                format!("rollout {} held after restart", held.join(",")),
                None,
            )?;
        }
        Ok(())
    }

    /// Records the outcome of a step's extra gates.
    pub fn gate_result(
        &mut self,
        service: &str,
        step: usize,
        result: Result<(), (String, String)>,
    ) {
        self.gates
            .insert((service.to_owned(), step), GateState::Done(result));
    }

    /// Decides every running rollout; applies advances, completions and breaches as revisions.
    /// Returns the gate checks to run.
    pub fn rollout_tick(&mut self, now: SystemTime) -> Result<Vec<GateJob>, ControlError> {
        let mut jobs = Vec::new();
        let running = |r: &Rollout| r.phase == Phase::Running;
        if !self
            .store
            .latest()
            .is_some_and(|rev| rev.rollouts.iter().any(running))
        {
            return Ok(jobs);
        }
        let state = self.current();
        for r in self
            .rollouts()
            .into_iter()
            .filter(|r| r.phase == Phase::Running)
        {
            let key = (r.service.clone(), r.step);
            let obs = Observation {
                counts: self.group_counts(&r.service, &r.plan.to)?,
                target_up: self.group_up(&state, &r.service, &r.plan.to),
                gates: match self.gates.get(&key) {
                    Some(GateState::Done(result)) => Some(result.clone()),
                    _ => None,
                },
            };
            match r.decide(&obs, now) {
                Decision::Wait(_) => {}
                Decision::EvaluateGates => {
                    if !matches!(self.gates.get(&key), Some(GateState::Pending)) {
                        self.gates.insert(key, GateState::Pending);
                        jobs.push(GateJob {
                            service: r.service.clone(),
                            step: r.step,
                            gates: r.plan.gates.clone(),
                            timeout: r.plan.gate_timeout,
                        });
                    }
                }
                Decision::Advance { next, weights } => {
                    self.update(
                        &r.service,
                        |x| {
                            x.step = next;
                            x.step_started = now;
                            x.baseline = obs.counts;
                        },
                        Some(&weights),
                        format!(
                            "rollout {} -> {}: step {}/{} ({})",
                            r.service,
                            r.plan.to,
                            next + 1,
                            r.plan.steps.len(),
                            weights_text(&weights)
                        ),
                    )?;
                }
                Decision::Complete => {
                    self.update(
                        &r.service,
                        |x| x.phase = Phase::Completed,
                        None,
                        format!("rollout {} -> {} completed", r.service, r.plan.to),
                    )?;
                }
                Decision::Breach {
                    gate,
                    why,
                    weights,
                    phase,
                } => {
                    let reason = format!("{gate}: {why}");
                    tracing::warn!(service = %r.service, %reason, "rollout gate failed");
                    let word = if phase == Phase::Paused {
                        "stepped back and paused"
                    } else {
                        "rolled back"
                    };
                    let summary =
                        format!("rollout {} -> {} {word}: {reason}", r.service, r.plan.to);
                    self.update(
                        &r.service,
                        |x| {
                            x.phase = phase;
                            x.reason = Some(reason.clone());
                            x.step = x.step.saturating_sub(usize::from(phase == Phase::Paused));
                        },
                        Some(&weights),
                        summary,
                    )?;
                }
            }
        }
        Ok(jobs)
    }

    fn update(
        &mut self,
        service: &str,
        f: impl FnOnce(&mut Rollout),
        weights: Option<&[(String, Weight)]>,
        summary: String,
    ) -> Result<(), ControlError> {
        let mut rollouts = self.rollouts();
        if let Some(r) = rollouts
            .iter_mut()
            .find(|r| r.service == service && !r.phase.is_final())
        {
            f(r);
        }
        let state = match weights {
            Some(w) => with_weights(self.current(), service, w),
            None => self.current(),
        };
        self.commit_with(state, rollouts, Origin::Rollout, summary, None)
            .map(drop)
    }

    /// The latest rollout of `service` and where it stands.
    pub fn rollout_status(
        &self,
        service: &str,
        now: SystemTime,
    ) -> Result<RolloutStatus, ControlError> {
        let r = self
            .rollouts()
            .into_iter()
            .rev()
            .find(|r| r.service == service)
            .ok_or_else(|| ControlError::NoRollout {
                service: service.to_owned(),
            })?;
        let counts = self.group_counts(service, &r.plan.to)?;
        let step = r.in_step(counts);
        let state = self.current();
        let waiting = match r.decide(
            &Observation {
                counts,
                target_up: self.group_up(&state, service, &r.plan.to),
                gates: None,
            },
            now,
        ) {
            Decision::Wait(WaitReason::Pause { left }) => {
                Some(format!("next step in {}s", left.as_secs()))
            }
            Decision::Wait(WaitReason::MinFlows { seen }) => Some(format!(
                "waiting for {} of {} new flows",
                seen, r.plan.min_flows
            )),
            Decision::EvaluateGates => Some("checking gates".to_owned()),
            _ => None,
        };
        let weights = state
            .service(service)
            .map(|s| {
                s.groups
                    .iter()
                    .map(|g| (g.name.clone(), g.weight))
                    .collect()
            })
            .unwrap_or_default();
        Ok(RolloutStatus {
            service: r.service.clone(),
            to: r.plan.to.clone(),
            phase: r.phase,
            step: r.step + 1,
            steps: r.plan.steps.clone(),
            share: r.share(),
            weights,
            in_step: StepCounts {
                attempted: step.attempted,
                failed: step.failed,
            },
            waiting,
            reason: r.reason.clone(),
            plan: r.plan,
        })
    }
}
