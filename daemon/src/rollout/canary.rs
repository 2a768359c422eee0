//! The canary judge inside a rollout step: the window it judges (from the step's first reading
//! to now), when its looks fall due, and whether the step may end. Pure; the control layer keeps
//! one `StepJudge` per running step and feeds it readings.
//!
//! A step is judged when its plan names tolerances and the other groups still take new flows
//! (the last step, 100%, has no baseline): the move to 100% is gated by the step before it.
//! Looks fall due when the canary's attempts in the window reach `min_sample * 2^look`, and once
//! when the step's pause is over; a step ends only after a look at or after the end of its pause
//! passed. A fail rolls the rollout back like any breach.

use serde::{Deserialize, Serialize};

use super::judge::{GroupSignals, Outcome, Tolerances, Verdict, judge};

/// The canary's and the baseline's signals, as absolute counters read at one moment.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Reading {
    /// The rollout's target group.
    pub canary: GroupSignals,
    /// Every other group of the service, summed.
    pub baseline: GroupSignals,
}

/// What was counted since `earlier` (a counter that went backwards was reset: everything in it
/// is new).
fn since(now: &GroupSignals, earlier: &GroupSignals) -> GroupSignals {
    let d = |a: u64, b: u64| a.checked_sub(b).unwrap_or(a);
    GroupSignals {
        attempts: d(now.attempts, earlier.attempts),
        failed: d(now.failed, earlier.failed),
        established: d(now.established, earlier.established),
        reset: d(now.reset, earlier.reset),
        connect: now.connect.since(&earlier.connect),
        first_byte: now.first_byte.since(&earlier.first_byte),
    }
}

/// A verdict with where in the rollout it was taken: what a revision keeps and `rollout status`
/// shows.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepVerdict {
    /// The step judged, 1-based (as `rollout status` numbers steps).
    pub step: usize,
    /// Whether the step's pause was over when it was taken (only such a pass ends a step).
    pub at_end: bool,
    /// The verdict, with its numbers (its fields inline in JSON).
    #[serde(flatten)]
    pub verdict: Verdict,
}

/// One step's judging.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StepJudge {
    step: usize,
    start: Reading,
    /// Looks that tested something (each spends its share of alpha).
    looks: u32,
    /// The latest verdict.
    latest: Option<StepVerdict>,
}

impl StepJudge {
    /// Judging of step `step` (1-based), whose window starts at `start`.
    pub fn new(step: usize, start: Reading) -> Self {
        Self {
            step,
            start,
            looks: 0,
            latest: None,
        }
    }

    /// Takes the look due now, if one is, with the readings `now` and whether the step's pause
    /// is over. Returns whether a verdict was taken.
    pub fn look(&mut self, tolerances: &Tolerances, now: &Reading, pause_over: bool) -> bool {
        let canary = since(&now.canary, &self.start.canary);
        let baseline = since(&now.baseline, &self.start.baseline);
        let end_look_due = pause_over && !self.latest.as_ref().is_some_and(|v| v.at_end);
        let volume_due = canary.attempts >= tolerances.look_due_at(self.looks);
        // After the end of the pause, a step that lacked data looks again at every volume look.
        if !(end_look_due || volume_due) {
            return false;
        }
        let verdict = judge(tolerances, &canary, &baseline, self.looks);
        if verdict.tested {
            self.looks += 1;
        }
        // A volume look that tested nothing changes nothing; one at the end of the pause is
        // kept, so the step shows why it waits.
        if verdict.tested || end_look_due {
            self.latest = Some(StepVerdict {
                step: self.step,
                at_end: pause_over,
                verdict,
            });
        }
        true
    }

    /// The latest verdict.
    pub fn latest(&self) -> Option<&StepVerdict> {
        self.latest.as_ref()
    }

    /// The failing verdict, if the latest is one.
    pub fn failed(&self) -> Option<&StepVerdict> {
        self.latest
            .as_ref()
            .filter(|v| v.verdict.outcome == Outcome::Fail)
    }

    /// Whether the step may end: a look at or after the end of its pause passed.
    pub fn passed(&self) -> bool {
        self.latest
            .as_ref()
            .is_some_and(|v| v.at_end && v.verdict.outcome == Outcome::Pass)
    }
}

#[cfg(test)]
mod tests {
    use veer_common::histogram::Histogram;

    use super::*;

    /// `n` attempts with `failed` failures, every latency `ns`.
    fn group(n: u64, failed: u64, ns: u64) -> GroupSignals {
        let mut h = Histogram::EMPTY;
        for _ in 0..n - failed {
            h.record(ns);
        }
        GroupSignals {
            attempts: n,
            failed,
            established: n - failed,
            reset: 0,
            connect: h,
            first_byte: h,
        }
    }

    fn reading(canary: GroupSignals, baseline: GroupSignals) -> Reading {
        Reading { canary, baseline }
    }

    #[test]
    fn looks_fall_due_by_volume_and_at_the_end_of_the_pause() {
        let t = Tolerances::default();
        let start = reading(group(10, 0, 1_000_000), group(10, 0, 1_000_000));
        let mut j = StepJudge::new(1, start.clone());
        // 50 canary attempts in the window: below the first look (100), pause running.
        let r = reading(group(60, 0, 1_000_000), group(1_010, 0, 1_000_000));
        assert!(!j.look(&t, &r, false));
        assert!(j.latest().is_none());
        // 100 in the window: look 0.
        let r = reading(group(110, 0, 1_000_000), group(2_010, 0, 1_000_000));
        assert!(j.look(&t, &r, false));
        assert_eq!(j.latest().unwrap().verdict.outcome, Outcome::Pass);
        assert!(
            !j.passed(),
            "a pass before the end of the pause does not end the step"
        );
        assert!(!j.look(&t, &r, false), "look 1 is due at 200");
        // The pause is over: the end look, then none until the next volume look.
        assert!(j.look(&t, &r, true));
        assert!(j.passed());
        assert_eq!(j.latest().unwrap().verdict.look, 1);
        assert!(!j.look(&t, &r, true));
    }

    #[test]
    fn a_slow_canary_fails_at_the_first_look_and_a_sparse_one_waits() {
        let t = Tolerances::default();
        let mut j = StepJudge::new(2, Reading::default());
        let r = reading(group(100, 0, 101_000_000), group(2_000, 0, 2_000_000));
        assert!(j.look(&t, &r, false));
        let v = j.failed().expect("100 ms against 2 ms fails");
        assert_eq!(v.step, 2);
        assert!(v.verdict.reason.contains("p50"), "{}", v.verdict.reason);

        // Below the minimum sample at the end of the pause: not enough data, kept, no pass.
        let mut j = StepJudge::new(0, Reading::default());
        let r = reading(group(40, 1, 1_000_000), group(2_000, 0, 1_000_000));
        assert!(j.look(&t, &r, true));
        assert_eq!(j.latest().unwrap().verdict.outcome, Outcome::NotEnoughData);
        assert!(!j.passed() && j.failed().is_none());
    }

    /// `n` attempts, all established, `resets` of them reset by the backend.
    fn resets(n: u64, resets: u64) -> GroupSignals {
        GroupSignals {
            reset: resets,
            ..group(n, 0, 1_000_000)
        }
    }

    #[test]
    fn a_doubled_reset_rate_fails_only_once_the_sample_carries_it() {
        let t = Tolerances::default();
        // 20% against 10%: in 100 attempts each, not evidence of more than a 25% increase.
        let mut j = StepJudge::new(1, Reading::default());
        assert!(j.look(&t, &reading(resets(100, 20), resets(100, 10)), false));
        assert_ne!(j.latest().unwrap().verdict.outcome, Outcome::Fail);
        // The same rates in 800 attempts each, at the looks of 200 and 400 first.
        assert!(j.look(&t, &reading(resets(200, 40), resets(200, 20)), false));
        assert!(j.look(&t, &reading(resets(400, 80), resets(400, 40)), false));
        assert!(j.look(&t, &reading(resets(800, 160), resets(800, 80)), false));
        let v = j.failed().expect("a doubled rate in 800 attempts fails");
        assert!(
            v.verdict.reason.starts_with("backend resets"),
            "{}",
            v.verdict.reason
        );
    }

    #[test]
    fn the_window_starts_at_the_steps_first_reading() {
        let t = Tolerances::default();
        // Before the step, the canary was slow; in the step it is as fast as the baseline.
        let mut slow = group(1_000, 0, 100_000_000);
        let start = reading(slow.clone(), group(5_000, 0, 1_000_000));
        let mut j = StepJudge::new(1, start);
        for _ in 0..200 {
            slow.connect.record(1_000_000);
            slow.first_byte.record(1_000_000);
        }
        slow.attempts += 200;
        slow.established += 200;
        let r = reading(slow, group(7_000, 0, 1_000_000));
        assert!(j.look(&t, &r, true));
        assert!(j.passed(), "{:?}", j.latest().unwrap().verdict.reason);
    }
}
