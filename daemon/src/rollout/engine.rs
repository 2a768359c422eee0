//! The rollout engine: from a rollout's state, what was observed in the current step and the
//! time, decide what happens next. Pure; the control layer carries the decisions out.

use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

use super::canary::{StepJudge, StepVerdict};
use crate::model::{OnFailure, Plan, Weight, plan::weights_at};

/// Where a rollout is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// Watching the current step.
    Running,
    /// Held by an operator (or by the plan after a restart, or a step-back); weights stay.
    Paused,
    /// All new flows go to the target.
    Completed,
    /// A gate failed; the pre-rollout weights were restored.
    RolledBack,
    /// An operator aborted; the pre-rollout weights were restored.
    Aborted,
}

impl Phase {
    /// Whether the rollout is over.
    pub fn is_final(self) -> bool {
        matches!(self, Phase::Completed | Phase::RolledBack | Phase::Aborted)
    }
}

/// Judged connection attempts to the target group and the failed ones, as absolute counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counts {
    /// Connection attempts the target group's backends answered (SYN-ACK) or failed; for UDP,
    /// the new flows given to them. A client that never completes its handshake makes none.
    pub attempted: u64,
    /// Of those, refused (RST answering the SYN) or left unanswered for the connect timeout.
    pub failed: u64,
}

/// A rollout and its progress (persisted with every revision).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rollout {
    /// Name of the service.
    pub service: String,
    /// The plan.
    pub plan: Plan,
    /// Index of the current step in `plan.steps`.
    pub step: usize,
    /// Running, paused, completed, rolled back or aborted.
    pub phase: Phase,
    /// Every group's weight before the rollout (what a rollback restores).
    pub original: Vec<(String, Weight)>,
    /// When the current step began.
    #[serde(with = "crate::model::human::rfc3339")]
    pub step_started: SystemTime,
    /// The target group's counters when the current step began.
    pub baseline: Counts,
    /// Why it was rolled back, aborted or paused.
    pub reason: Option<String>,
    /// The canary judge's verdict that ended the latest judged step (its advance, or the
    /// rollback), with its numbers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verdict: Option<StepVerdict>,
    /// The current step's pause was skipped (`veer rollout promote`): the step ends as soon as
    /// it has its new flows and its gates pass.
    #[serde(default)]
    pub pause_skipped: bool,
    /// Every group's counters when the current step began, so each group's new flows and
    /// failures in the step can be shown (empty in rollouts recorded before veer kept them).
    #[serde(default)]
    pub group_baselines: Vec<(String, Counts)>,
    /// The steps that ended, in order: when, how, and what the target group saw in each.
    #[serde(default)]
    pub history: Vec<StepRecord>,
    /// The gate that broke, when a gate rolled it back (or stepped it back).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gate: Option<String>,
    /// The fleet rollout (`fleet::FleetRollout::id`) this is the node's part of; none for a
    /// rollout of this node alone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fleet: Option<String>,
}

/// How a step ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StepOutcome {
    /// It held: its pause was over (or skipped), it had its new flows, its gates passed.
    Passed,
    /// Skipped by `veer rollout promote --full`.
    Skipped,
    /// A gate failed during it.
    Breached,
    /// An operator aborted the rollout during it.
    Aborted,
}

/// A step that ended.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepRecord {
    /// Index of the step in `plan.steps`.
    pub step: usize,
    /// When it began.
    #[serde(with = "crate::model::human::rfc3339")]
    pub started: SystemTime,
    /// When it ended.
    #[serde(with = "crate::model::human::rfc3339")]
    pub ended: SystemTime,
    /// How it ended.
    pub outcome: StepOutcome,
    /// The target group's new flows and failures during it.
    pub counts: Counts,
}

/// What was observed when deciding.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Observation {
    /// The target group's counters now.
    pub counts: Counts,
    /// Backends of the target group that are up.
    pub target_up: usize,
    /// Outcome of this step's extra gates, once evaluated: the first failure, if any.
    pub gates: Option<Result<(), GateFailure>>,
    /// The canary judge of this step, when it is judged (`control::judging`).
    pub judge: Option<StepJudge>,
}

/// The gate of a step that failed, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GateFailure {
    /// The gate, as written (`exec:check`, `http://...`).
    pub gate: String,
    /// Why it failed.
    pub why: String,
}

/// What to do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Nothing yet.
    Wait(WaitReason),
    /// Evaluate this step's extra gates (then decide again with the outcome).
    EvaluateGates,
    /// Go to step `next` with these weights.
    Advance {
        /// Next step index.
        next: usize,
        /// Weights of every group.
        weights: Vec<(String, Weight)>,
    },
    /// The last step held: done.
    Complete,
    /// A gate failed: restore (or step back to) these weights.
    Breach {
        /// Which gate.
        gate: String,
        /// Why it failed, in words.
        why: String,
        /// Weights to apply.
        weights: Vec<(String, Weight)>,
        /// The phase afterwards (`RolledBack`, or `Paused` for a step-back).
        phase: Phase,
    },
}

/// Why a step has not ended yet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WaitReason {
    /// Not running.
    NotRunning,
    /// The pause is not over.
    Pause {
        /// Time left.
        left: Duration,
    },
    /// Too few attempts to judge.
    MinFlows {
        /// Attempts so far in this step.
        seen: u64,
    },
    /// The canary judge has not passed the step yet (not enough data, or no look since the
    /// pause ended).
    Judge,
}

impl Rollout {
    /// A rollout starting at step 0 at `now`, with the service's current weights.
    pub fn start(
        service: &str,
        plan: Plan,
        original: Vec<(String, Weight)>,
        counts: Counts,
        now: SystemTime,
    ) -> Self {
        Self {
            service: service.to_owned(),
            plan,
            step: 0,
            phase: Phase::Running,
            original,
            step_started: now,
            baseline: counts,
            reason: None,
            verdict: None,
            pause_skipped: false,
            group_baselines: Vec::new(),
            history: Vec::new(),
            gate: None,
            fleet: None,
        }
    }

    /// The record of the current step, ending at `now` with `outcome`, the target group's
    /// counters being `counts`.
    pub fn record(&self, outcome: StepOutcome, counts: Counts, now: SystemTime) -> StepRecord {
        StepRecord {
            step: self.step,
            started: self.step_started,
            ended: now,
            outcome,
            counts: self.in_step(counts),
        }
    }

    /// Whether the current step is the plan's last.
    pub fn at_last_step(&self) -> bool {
        self.step + 1 >= self.plan.steps.len()
    }

    /// Whether the current step is judged: the plan names tolerances and another group still
    /// takes new flows (not at 100%).
    pub fn is_judged_step(&self) -> bool {
        self.plan.judge.is_some() && self.share() < Weight::FULL
    }

    /// The target's share at the current step.
    pub fn share(&self) -> Weight {
        self.plan
            .steps
            .get(self.step)
            .copied()
            .unwrap_or(Weight::FULL)
    }

    /// The weights of every group at step `i`.
    pub fn weights_at_step(&self, i: usize) -> Vec<(String, Weight)> {
        weights_at(
            &self.original,
            &self.plan.to,
            self.plan.steps.get(i).copied().unwrap_or(Weight::FULL),
        )
    }

    /// Attempts and failures in the current step.
    pub fn in_step(&self, now: Counts) -> Counts {
        Counts {
            attempted: now.attempted.saturating_sub(self.baseline.attempted),
            failed: now.failed.saturating_sub(self.baseline.failed),
        }
    }

    fn breach(&self, gate: &str, why: String) -> Decision {
        match self.plan.on_failure {
            OnFailure::Rollback => Decision::Breach {
                gate: gate.to_owned(),
                why,
                weights: self.original.clone(),
                phase: Phase::RolledBack,
            },
            OnFailure::StepBack => Decision::Breach {
                gate: gate.to_owned(),
                why,
                weights: if self.step == 0 {
                    self.original.clone()
                } else {
                    self.weights_at_step(self.step - 1)
                },
                phase: Phase::Paused,
            },
        }
    }

    /// Decides what happens now.
    pub fn decide(&self, obs: &Observation, now: SystemTime) -> Decision {
        if self.phase != Phase::Running {
            return Decision::Wait(WaitReason::NotRunning);
        }
        if obs.target_up == 0 {
            return self.breach(
                "health",
                format!("group `{}` has no healthy backend", self.plan.to),
            );
        }
        let step = self.in_step(obs.counts);
        let max = u64::from(self.plan.max_failure_rate.basis_points());
        if step.attempted >= self.plan.min_flows.max(1)
            && step.failed * 10_000 > max * step.attempted
        {
            return self.breach(
                "failure-rate",
                format!(
                    "{} of {} new flows to `{}` failed ({:.2}% > {}%)",
                    step.failed,
                    step.attempted,
                    self.plan.to,
                    step.failed as f64 * 100.0 / step.attempted as f64,
                    self.plan.max_failure_rate
                ),
            );
        }
        if let Some(failed) = obs.judge.as_ref().and_then(StepJudge::failed) {
            return self.breach("judge", failed.verdict.reason.clone());
        }
        let elapsed = now.duration_since(self.step_started).unwrap_or_default();
        if let Some(left) = self
            .plan
            .pause
            .checked_sub(elapsed)
            .filter(|l| !l.is_zero() && !self.pause_skipped)
        {
            return Decision::Wait(WaitReason::Pause { left });
        }
        if step.attempted < self.plan.min_flows {
            return Decision::Wait(WaitReason::MinFlows {
                seen: step.attempted,
            });
        }
        if self.is_judged_step() && !obs.judge.as_ref().is_some_and(StepJudge::passed) {
            return Decision::Wait(WaitReason::Judge);
        }
        match &obs.gates {
            None if !self.plan.gates.is_empty() => return Decision::EvaluateGates,
            Some(Err(failure)) => return self.breach(&failure.gate, failure.why.clone()),
            _ => {}
        }
        if self.at_last_step() {
            Decision::Complete
        } else {
            Decision::Advance {
                next: self.step + 1,
                weights: self.weights_at_step(self.step + 1),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn w(s: &str) -> Weight {
        Weight::from_percent_str(s).unwrap()
    }

    fn rollout(gates: bool) -> Rollout {
        let plan = Plan {
            to: "v2".into(),
            steps: vec![w("10"), w("50"), w("100")],
            pause: Duration::from_secs(10),
            max_failure_rate: w("1"),
            min_flows: 20,
            gates: if gates {
                vec!["exec:true".parse().unwrap()]
            } else {
                vec![]
            },
            gate_timeout: Duration::from_secs(5),
            on_failure: OnFailure::Rollback,
            hold_on_restart: false,
            judge: None,
            drain: None,
        };
        Rollout::start(
            "web",
            plan,
            vec![("v1".into(), w("100")), ("v2".into(), w("0"))],
            Counts {
                attempted: 1000,
                failed: 7,
            },
            SystemTime::UNIX_EPOCH,
        )
    }

    fn at(secs: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(secs)
    }

    fn obs(attempted: u64, failed: u64) -> Observation {
        Observation {
            counts: Counts {
                attempted: 1000 + attempted,
                failed: 7 + failed,
            },
            target_up: 1,
            gates: None,
            judge: None,
        }
    }

    #[test]
    fn a_step_ends_after_its_pause_and_enough_flows() {
        let r = rollout(false);
        assert_eq!(
            r.decide(&obs(50, 0), at(5)),
            Decision::Wait(WaitReason::Pause {
                left: Duration::from_secs(5)
            })
        );
        assert_eq!(
            r.decide(&obs(5, 0), at(11)),
            Decision::Wait(WaitReason::MinFlows { seen: 5 })
        );
        let Decision::Advance { next, weights } = r.decide(&obs(50, 0), at(11)) else {
            panic!()
        };
        assert_eq!(next, 1);
        assert_eq!(weights, [("v1".into(), w("50")), ("v2".into(), w("50"))]);
        let mut last = r.clone();
        last.step = 2;
        assert_eq!(last.decide(&obs(50, 0), at(11)), Decision::Complete);
    }

    #[test]
    fn a_failure_rate_above_the_limit_rolls_back_at_once_but_only_after_min_flows() {
        let r = rollout(false);
        assert!(
            matches!(r.decide(&obs(10, 10), at(1)), Decision::Wait(_)),
            "too few flows to judge"
        );
        let Decision::Breach {
            gate,
            why,
            weights,
            phase,
        } = r.decide(&obs(30, 1), at(1))
        else {
            panic!()
        };
        assert_eq!(gate, "failure-rate");
        assert_eq!(why, "1 of 30 new flows to `v2` failed (3.33% > 1%)");
        assert_eq!(weights, [("v1".into(), w("100")), ("v2".into(), w("0"))]);
        assert_eq!(phase, Phase::RolledBack);
        assert!(
            matches!(r.decide(&obs(200, 2), at(1)), Decision::Wait(_)),
            "exactly 1% is allowed"
        );
    }

    #[test]
    fn no_healthy_target_is_a_breach_and_step_back_holds_one_step_lower() {
        let mut r = rollout(false);
        r.step = 1;
        r.plan.on_failure = OnFailure::StepBack;
        let mut o = obs(0, 0);
        o.target_up = 0;
        let Decision::Breach {
            gate,
            weights,
            phase,
            ..
        } = r.decide(&o, at(1))
        else {
            panic!()
        };
        assert_eq!((gate.as_str(), phase), ("health", Phase::Paused));
        assert_eq!(weights, [("v1".into(), w("90")), ("v2".into(), w("10"))]);
    }

    #[test]
    fn extra_gates_are_evaluated_at_the_end_of_a_step() {
        let r = rollout(true);
        assert_eq!(r.decide(&obs(50, 0), at(11)), Decision::EvaluateGates);
        let mut o = obs(50, 0);
        o.gates = Some(Ok(()));
        assert!(matches!(
            r.decide(&o, at(11)),
            Decision::Advance { next: 1, .. }
        ));
        o.gates = Some(Err(GateFailure {
            gate: "exec:check".into(),
            why: "exit status 1".into(),
        }));
        assert!(matches!(r.decide(&o, at(11)), Decision::Breach { .. }));
    }

    #[test]
    fn a_skipped_pause_ends_the_step_once_it_has_its_flows() {
        let mut r = rollout(false);
        r.pause_skipped = true;
        assert_eq!(
            r.decide(&obs(5, 0), at(1)),
            Decision::Wait(WaitReason::MinFlows { seen: 5 })
        );
        assert!(matches!(
            r.decide(&obs(50, 0), at(1)),
            Decision::Advance { next: 1, .. }
        ));
        let rec = r.record(StepOutcome::Passed, obs(50, 3).counts, at(1));
        assert_eq!(
            (rec.step, rec.counts),
            (
                0,
                Counts {
                    attempted: 50,
                    failed: 3
                }
            )
        );
    }

    #[test]
    fn paused_and_final_rollouts_do_nothing() {
        let mut r = rollout(false);
        r.phase = Phase::Paused;
        assert_eq!(
            r.decide(&obs(50, 50), at(100)),
            Decision::Wait(WaitReason::NotRunning)
        );
    }
}
