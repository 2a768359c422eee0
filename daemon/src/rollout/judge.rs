//! The canary judge: compares what the canary group (the rollout's target) and the baseline group
//! (every other group of the service) did over the same window, and says pass, fail or not
//! enough data, with the numbers behind it. Pure: no I/O, no clock; the rollout engine feeds it
//! counter and histogram deltas and keeps the verdict in the revision.
//!
//! # Checks
//!
//! - **Failed attempts** (refused or unanswered connection attempts, per attempt) and **backend
//!   resets** (resets from the backend, per established flow): is the canary's failure odds
//!   ratio against the baseline above `1 + max_failure_increase`? The exact conditional test
//!   (Fisher's exact test, generalised to a null odds ratio other than 1 through Fisher's
//!   noncentral hypergeometric distribution) gives a p-value that is exact at any count, so one
//!   failure in 100 attempts is weighed as what it is. The tolerance is relative because
//!   failure rates are small and move with the time of day: "twice as many failures as the old
//!   version" is the regression, whatever the base rate (an absolute ceiling is what
//!   `--max-failure-rate` is for). The odds ratio is within 11% of the ratio of the rates
//!   while both rates are under 10%, and within 1% under 1%.
//! - **Latency** (connect latency and time to first byte, p50 and p99): is the canary's quantile
//!   above `1 + max_latency_increase` times the baseline's? Order statistics give
//!   distribution-free confidence bounds for a quantile (the rank comes from the binomial
//!   distribution); on a histogram the rank's bucket gives the bound, its low edge from below
//!   and its high edge from above, so bucketing can only widen the bounds. The check fails when
//!   the canary's lower bound exceeds the allowed multiple of the baseline's upper bound: if both
//!   bounds hold, the canary's quantile really is that much higher. Bucket resolution (12.5%)
//!   costs power, never validity: with enough data, at a 20% tolerance, an increase of
//!   1.2 × 1.125² = 1.52× is always caught, and one between 1.2× and 1.52× is caught or not
//!   depending on where the two quantiles fall within their buckets.
//!
//! # Sample and repeated looks
//!
//! A check needs `min_sample` trials (or histogram samples) in each group; below that it says
//! not enough data, whatever the counts look like. The rollout looks at the data while a step
//! runs, not once at its end, so the false-failure rate is accounted for across looks by alpha
//! spending: look `k` (0, 1, 2, ...) may spend `alpha / 2^(k+1)` (so all looks of a step
//! together spend at most `alpha = 1 - confidence`), split equally between the six checks
//! (Bonferroni), and the two bounds of a latency check take half each. Looks are due when the
//! canary's attempts reach `min_sample * 2^k`, and once more when the step's pause is over
//! (that look takes the next index). A look that tested nothing (not enough data anywhere)
//! spends nothing. Because looks are set by traffic volume and the clock, not by the outcomes
//! being tested, the union bound holds: under "canary within tolerance", the chance that any
//! look of the step fails it is at most `alpha`. Doubling the sample between looks keeps the
//! cost of the shrinking alpha small: the detectable effect still shrinks, like
//! `sqrt(log(n) / n)`.

mod stats;

use serde::{Deserialize, Serialize};
use veer_common::histogram::{self, Histogram};

pub use crate::model::tolerance::{CHECKS, Percent, ToleranceError, Tolerances};

use self::stats::Table;

/// What one group did in the window being judged: counter and histogram deltas, summed over the
/// group's backends and the CPUs.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GroupSignals {
    /// New flows given to the group (connection attempts).
    pub attempts: u64,
    /// Of those, refused (RST answering the SYN) or left unanswered.
    pub failed: u64,
    /// Flows that completed their handshake.
    pub established: u64,
    /// Established flows reset by the backend.
    pub reset: u64,
    /// Connect latency, nanoseconds.
    pub connect: Histogram,
    /// Time to first byte, nanoseconds.
    pub first_byte: Histogram,
}

/// The judge's answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Every check that has data passed (and at least one has).
    Pass,
    /// A check found the canary worse than the tolerance allows.
    Fail,
    /// Some check lacks data and none failed.
    NotEnoughData,
}

/// The answer of one check.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CheckOutcome {
    /// Within tolerance (or not shown to be outside it).
    Pass,
    /// Outside tolerance, at the look's confidence.
    Fail,
    /// A group has fewer than `min_sample`, or too few for the quantile at this confidence.
    NotEnoughData,
    /// Neither group produced the signal in the window (a UDP service has no connect latency):
    /// left out of the verdict.
    NotMeasured,
}

impl CheckOutcome {
    fn tested(self) -> bool {
        matches!(self, CheckOutcome::Pass | CheckOutcome::Fail)
    }
}

/// A group's events among its trials.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Proportion {
    /// Trials (attempts, or established flows).
    pub trials: u64,
    /// Events among them (failures, or resets).
    pub events: u64,
    /// `events / trials` (0 without trials).
    pub rate: f64,
}

/// The comparison of one failure proportion.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct ProportionCheck {
    /// Outcome.
    pub outcome: CheckOutcome,
    /// The canary's events and trials.
    pub canary: Proportion,
    /// The baseline's events and trials.
    pub baseline: Proportion,
    /// The test statistic: the lower confidence bound of the canary's failure odds ratio
    /// against the baseline's (at `1 - alpha`).
    pub odds_ratio_lower: f64,
    /// The largest odds ratio allowed: `1 + max_failure_increase`.
    pub threshold: f64,
    /// One-sided p-value of "odds ratio <= threshold".
    pub p_value: f64,
    /// The check fails when `p_value <= alpha`, i.e. when `odds_ratio_lower >= threshold`.
    pub alpha: f64,
}

/// One group's quantile: an estimate and confidence bounds, in nanoseconds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct QuantileValue {
    /// Estimate (linear within its bucket; within 12.5% of the sample quantile).
    pub estimate_ns: u64,
    /// Lower confidence bound (a bucket's low edge; 0 when the sample cannot bound it).
    pub lower_ns: u64,
    /// Upper confidence bound (a bucket's high edge); `None` when the sample cannot bound it
    /// (too few samples for this quantile and confidence, or the overflow bucket).
    pub upper_ns: Option<u64>,
}

/// The comparison of one latency quantile.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct QuantileCheck {
    /// Outcome.
    pub outcome: CheckOutcome,
    /// The quantile (0.5, 0.99).
    pub quantile: f64,
    /// The canary's value.
    pub canary: QuantileValue,
    /// The baseline's value.
    pub baseline: QuantileValue,
    /// The test statistic: the canary's lower bound over the baseline's upper bound, the
    /// smallest increase the data prove (0 when not bounded).
    pub ratio_lower: f64,
    /// The largest ratio allowed: `1 + max_latency_increase`.
    pub threshold: f64,
    /// The increase in time allowed whatever the ratio (`latency_slack`), nanoseconds (0 in
    /// verdicts kept before it existed).
    #[serde(default)]
    pub slack_ns: u64,
    /// Each of the two bounds holds with probability at least `1 - alpha`.
    pub alpha: f64,
}

/// The comparison of one latency signal.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct LatencyCheck {
    /// Outcome (the worse of p50's and p99's).
    pub outcome: CheckOutcome,
    /// The canary's samples.
    pub canary_sample: u64,
    /// The baseline's samples.
    pub baseline_sample: u64,
    /// Medians.
    pub p50: QuantileCheck,
    /// 99th percentiles.
    pub p99: QuantileCheck,
}

/// A verdict and the numbers behind it, as kept in a revision and shown by `rollout status`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Verdict {
    /// Pass, fail, or not enough data.
    pub outcome: Outcome,
    /// One line for humans: what failed and by how much, what lacks data, or the key numbers.
    pub reason: String,
    /// Index of the look within the step (0-based).
    pub look: u32,
    /// Whether the look tested anything (and so spent its alpha).
    pub tested: bool,
    /// The confidence of the plan.
    pub confidence: Percent,
    /// What each check was held to at this look (see the module doc).
    pub check_alpha: f64,
    /// Failed attempts per attempt.
    pub failed_attempts: ProportionCheck,
    /// Backend resets per established flow.
    pub backend_resets: ProportionCheck,
    /// Connect latency.
    pub connect: LatencyCheck,
    /// Time to first byte.
    pub first_byte: LatencyCheck,
}

// Every `f64` of a verdict is finite by construction (`finite` below), so equality is
// reflexive and `Eq` is sound; the rollout state that keeps verdicts derives `Eq`.
impl Eq for Proportion {}
impl Eq for ProportionCheck {}
impl Eq for QuantileCheck {}
impl Eq for LatencyCheck {}
impl Eq for Verdict {}

/// Maps NaN to 0 and infinities to the largest finite values (see the `Eq` impls).
fn finite(x: f64) -> f64 {
    if x.is_nan() {
        0.0
    } else {
        x.clamp(f64::MIN, f64::MAX)
    }
}

/// Judges the canary against the baseline over one window, at look `look` of the step (see the
/// module doc for when looks are due and what they spend). `tolerances` are assumed valid
/// ([`Tolerances::validate`]).
pub fn judge(
    tolerances: &Tolerances,
    canary: &GroupSignals,
    baseline: &GroupSignals,
    look: u32,
) -> Verdict {
    let alpha = tolerances.check_alpha(look);
    let failed_attempts = proportion_check(
        tolerances,
        alpha,
        (canary.attempts, canary.failed),
        (baseline.attempts, baseline.failed),
    );
    let backend_resets = proportion_check(
        tolerances,
        alpha,
        (canary.established, canary.reset),
        (baseline.established, baseline.reset),
    );
    let connect = latency_check(tolerances, alpha, &canary.connect, &baseline.connect);
    let first_byte = latency_check(tolerances, alpha, &canary.first_byte, &baseline.first_byte);

    let all = [
        failed_attempts.outcome,
        backend_resets.outcome,
        connect.p50.outcome,
        connect.p99.outcome,
        first_byte.p50.outcome,
        first_byte.p99.outcome,
    ];
    let tested = all.iter().any(|o| o.tested());
    let mut verdict = Verdict {
        outcome: Outcome::NotEnoughData,
        reason: String::new(),
        look,
        tested,
        confidence: tolerances.confidence,
        check_alpha: alpha,
        failed_attempts,
        backend_resets,
        connect,
        first_byte,
    };
    let (outcome, reason) = if all.contains(&CheckOutcome::Fail) {
        (Outcome::Fail, failure_reason(&verdict))
    } else if all.contains(&CheckOutcome::NotEnoughData) || !tested {
        (
            Outcome::NotEnoughData,
            shortage_reason(tolerances, canary, baseline, &verdict),
        )
    } else {
        (Outcome::Pass, pass_reason(&verdict))
    };
    verdict.outcome = outcome;
    verdict.reason = reason;
    verdict
}

fn proportion(trials: u64, events: u64) -> Proportion {
    // A window's counters are read at slightly different moments: a failure of an attempt made
    // just before the window can land in it. Never more events than trials.
    let events = events.min(trials);
    Proportion {
        trials,
        events,
        rate: if trials == 0 {
            0.0
        } else {
            events as f64 / trials as f64
        },
    }
}

fn proportion_check(
    tolerances: &Tolerances,
    alpha: f64,
    (canary_trials, canary_events): (u64, u64),
    (baseline_trials, baseline_events): (u64, u64),
) -> ProportionCheck {
    let canary = proportion(canary_trials, canary_events);
    let baseline = proportion(baseline_trials, baseline_events);
    let threshold = 1.0 + tolerances.max_failure_increase.fraction();
    let mut check = ProportionCheck {
        outcome: CheckOutcome::NotMeasured,
        canary,
        baseline,
        odds_ratio_lower: 0.0,
        threshold,
        p_value: 1.0,
        alpha,
    };
    if canary.trials == 0 && baseline.trials == 0 {
        return check;
    }
    if canary.trials < tolerances.min_sample || baseline.trials < tolerances.min_sample {
        check.outcome = CheckOutcome::NotEnoughData;
        return check;
    }
    let table = Table {
        events: canary.events,
        trials: canary.trials,
        other_events: baseline.events,
        other_trials: baseline.trials,
    };
    check.p_value = finite(table.upper_tail(threshold));
    check.odds_ratio_lower = finite(table.odds_ratio_lower_bound(alpha));
    check.outcome = if check.p_value <= alpha {
        CheckOutcome::Fail
    } else {
        CheckOutcome::Pass
    };
    check
}

/// The 1-based rank `r`'s bucket in `h` (`r <= h.count()`).
fn bucket_of_rank(h: &Histogram, rank: u64) -> (u32, u64, u64) {
    let mut before = 0u64;
    for (i, &c) in h.counts.iter().enumerate() {
        if before + c >= rank && c > 0 {
            return (i as u32, before, c);
        }
        before += c;
    }
    (histogram::OVERFLOW, before, 0)
}

/// The nearest-rank `p`-quantile of `h`, placed linearly within its bucket.
fn estimate(h: &Histogram, n: u64, p: f64) -> u64 {
    let rank = ((p * n as f64).ceil() as u64).clamp(1, n);
    let (i, before, count) = bucket_of_rank(h, rank);
    let (lo, hi) = histogram::bucket_bounds(i);
    if i == histogram::OVERFLOW || count == 0 {
        return lo;
    }
    let within = ((rank - before) as f64 - 0.5) / count as f64;
    lo + ((hi - lo) as f64 * within) as u64
}

fn quantile_value(h: &Histogram, n: u64, p: f64, alpha: f64) -> QuantileValue {
    let lower_ns = stats::lower_bound_rank(n, p, alpha)
        .map_or(0, |r| histogram::bucket_bounds(bucket_of_rank(h, r).0).0);
    let upper_ns = stats::upper_bound_rank(n, p, alpha)
        .map(|r| bucket_of_rank(h, r).0)
        .filter(|&i| i != histogram::OVERFLOW)
        .map(|i| histogram::bucket_bounds(i).1);
    QuantileValue {
        estimate_ns: estimate(h, n, p),
        lower_ns,
        upper_ns,
    }
}

fn quantile_check(
    tolerances: &Tolerances,
    alpha: f64,
    canary: &Histogram,
    baseline: &Histogram,
    p: f64,
) -> QuantileCheck {
    let (nc, nb) = (canary.count(), baseline.count());
    let threshold = 1.0 + tolerances.max_latency_increase.fraction();
    // Two bounds per check: each gets half the check's alpha.
    let side = alpha / 2.0;
    let mut check = QuantileCheck {
        outcome: CheckOutcome::NotMeasured,
        quantile: p,
        canary: QuantileValue::default(),
        baseline: QuantileValue::default(),
        ratio_lower: 0.0,
        threshold,
        slack_ns: u64::try_from(tolerances.latency_slack.as_nanos()).unwrap_or(u64::MAX),
        alpha: side,
    };
    if nc == 0 && nb == 0 {
        return check;
    }
    if nc > 0 {
        check.canary = quantile_value(canary, nc, p, side);
    }
    if nb > 0 {
        check.baseline = quantile_value(baseline, nb, p, side);
    }
    if nc < tolerances.min_sample || nb < tolerances.min_sample {
        check.outcome = CheckOutcome::NotEnoughData;
        return check;
    }
    let Some(upper) = check.baseline.upper_ns else {
        check.outcome = CheckOutcome::NotEnoughData;
        return check;
    };
    let lower = check.canary.lower_ns;
    check.ratio_lower = finite(lower as f64 / upper as f64);
    // lower > (1 + increase) * upper, exactly in basis points, and lower > upper + slack: the
    // canary is proven slower by more than both tolerances.
    let allowed =
        u128::from(upper) * u128::from(10_000 + tolerances.max_latency_increase.basis_points());
    let beyond_ratio = u128::from(lower) * 10_000 > allowed;
    let beyond_slack = lower > upper.saturating_add(check.slack_ns);
    check.outcome = if beyond_ratio && beyond_slack {
        CheckOutcome::Fail
    } else {
        CheckOutcome::Pass
    };
    check
}

fn latency_check(
    tolerances: &Tolerances,
    alpha: f64,
    canary: &Histogram,
    baseline: &Histogram,
) -> LatencyCheck {
    let p50 = quantile_check(tolerances, alpha, canary, baseline, 0.5);
    let p99 = quantile_check(tolerances, alpha, canary, baseline, 0.99);
    let rank = |o: CheckOutcome| match o {
        CheckOutcome::Fail => 3,
        CheckOutcome::NotEnoughData => 2,
        CheckOutcome::Pass => 1,
        CheckOutcome::NotMeasured => 0,
    };
    LatencyCheck {
        outcome: if rank(p50.outcome) >= rank(p99.outcome) {
            p50.outcome
        } else {
            p99.outcome
        },
        canary_sample: canary.count(),
        baseline_sample: baseline.count(),
        p50,
        p99,
    }
}

/// A duration in nanoseconds with three significant digits: `850 µs`, `1.21 ms`, `98.3 ms`.
pub fn format_ns(ns: u64) -> String {
    // Units switch where three digits would round up to 1000 of the smaller one.
    let (value, unit) = match ns {
        0..1_000 => return format!("{ns} ns"),
        1_000..999_500 => (ns as f64 / 1e3, "µs"),
        999_500..999_500_000 => (ns as f64 / 1e6, "ms"),
        _ => (ns as f64 / 1e9, "s"),
    };
    if value >= 100.0 {
        format!("{value:.0} {unit}")
    } else if value >= 10.0 {
        format!("{value:.1} {unit}")
    } else {
        format!("{value:.2} {unit}")
    }
}

/// A rate as a percentage with three significant digits (`2.00%`, `0.150%`, `0.00420%`).
fn format_percent(rate: f64) -> String {
    let pct = rate * 100.0;
    if pct == 0.0 || pct >= 1.0 {
        format!("{pct:.2}%")
    } else {
        let decimals = (2.0 - pct.log10().floor()).clamp(2.0, 12.0) as usize;
        format!("{pct:.decimals$}%")
    }
}

/// The verdict as the rows of a table (check, canary, baseline, statistic, threshold,
/// outcome), as `rollout status` prints it and the README's worked example shows it.
pub fn rows(v: &Verdict) -> Vec<[String; 6]> {
    let outcome = |o: CheckOutcome| {
        match o {
            CheckOutcome::Pass => "pass",
            CheckOutcome::Fail => "FAIL",
            CheckOutcome::NotEnoughData => "not enough data",
            CheckOutcome::NotMeasured => "not measured",
        }
        .to_owned()
    };
    let mut out = Vec::new();
    for (name, c) in [
        ("failed attempts", &v.failed_attempts),
        ("backend resets", &v.backend_resets),
    ] {
        out.push([
            name.to_owned(),
            format_rate(&c.canary),
            format_rate(&c.baseline),
            if c.outcome.tested() {
                format!(
                    "odds ratio >= {:.3} (p = {:.3})",
                    c.odds_ratio_lower, c.p_value
                )
            } else {
                "-".to_owned()
            },
            format!("{:.2} (p <= {:.2e})", c.threshold, c.alpha),
            outcome(c.outcome),
        ]);
    }
    for (name, l) in [("connect", &v.connect), ("first byte", &v.first_byte)] {
        for q in [&l.p50, &l.p99] {
            let upper = q
                .baseline
                .upper_ns
                .map_or("unbounded".to_owned(), format_ns);
            out.push([
                format!("{name} {}", quantile_name(q)),
                format!(
                    "{}, >= {} (n {})",
                    format_ns(q.canary.estimate_ns),
                    format_ns(q.canary.lower_ns),
                    l.canary_sample
                ),
                format!(
                    "{}, <= {upper} (n {})",
                    format_ns(q.baseline.estimate_ns),
                    l.baseline_sample
                ),
                if q.outcome.tested() {
                    format!("{:.2}x", q.ratio_lower)
                } else {
                    "-".to_owned()
                },
                format!("{:.2}x, +{}", q.threshold, format_ns(q.slack_ns)),
                outcome(q.outcome),
            ]);
        }
    }
    out
}

fn format_rate(p: &Proportion) -> String {
    format!("{}/{} ({})", p.events, p.trials, format_percent(p.rate))
}

const LATENCY_NAMES: [&str; 2] = ["connect latency", "time to first byte"];

fn quantile_name(q: &QuantileCheck) -> &'static str {
    if q.quantile < 0.9 { "p50" } else { "p99" }
}

fn failure_reason(v: &Verdict) -> String {
    for (name, c) in [
        ("failed attempts", &v.failed_attempts),
        ("backend resets", &v.backend_resets),
    ] {
        if c.outcome == CheckOutcome::Fail {
            return format!(
                "{name}: canary {} vs baseline {}, odds ratio at least {:.2} > {:.2} allowed \
                 (p = {:.2e} <= {:.2e})",
                format_rate(&c.canary),
                format_rate(&c.baseline),
                c.odds_ratio_lower,
                c.threshold,
                c.p_value,
                c.alpha
            );
        }
    }
    for (name, l) in LATENCY_NAMES.iter().zip([&v.connect, &v.first_byte]) {
        for q in [&l.p50, &l.p99] {
            if q.outcome == CheckOutcome::Fail {
                return format!(
                    "{name} {}: canary at least {} vs baseline at most {} (estimates {} vs \
                     {}), {:.2}x > {:.2}x and +{} > +{} allowed at {} confidence",
                    quantile_name(q),
                    format_ns(q.canary.lower_ns),
                    format_ns(q.baseline.upper_ns.unwrap_or(u64::MAX)),
                    format_ns(q.canary.estimate_ns),
                    format_ns(q.baseline.estimate_ns),
                    q.ratio_lower,
                    q.threshold,
                    format_ns(
                        q.canary
                            .lower_ns
                            .saturating_sub(q.baseline.upper_ns.unwrap_or(u64::MAX))
                    ),
                    format_ns(q.slack_ns),
                    v.confidence
                );
            }
        }
    }
    String::from("a check failed")
}

fn shortage_reason(
    tolerances: &Tolerances,
    canary: &GroupSignals,
    baseline: &GroupSignals,
    v: &Verdict,
) -> String {
    if baseline.attempts == 0 && baseline.established == 0 && baseline.connect.count() == 0 {
        return String::from("not enough data: the baseline had no traffic in the window");
    }
    if canary.attempts == 0 && canary.established == 0 && canary.connect.count() == 0 {
        return String::from("not enough data: the canary had no traffic in the window");
    }
    let min = tolerances.min_sample;
    for (name, c) in [
        ("failed attempts", &v.failed_attempts),
        ("backend resets", &v.backend_resets),
    ] {
        if c.outcome == CheckOutcome::NotEnoughData {
            return format!(
                "not enough data: {name} has {} canary and {} baseline trials (at least {min} \
                 each)",
                c.canary.trials, c.baseline.trials
            );
        }
    }
    for (name, l) in LATENCY_NAMES.iter().zip([&v.connect, &v.first_byte]) {
        if l.canary_sample < min || l.baseline_sample < min {
            if l.outcome == CheckOutcome::NotEnoughData {
                return format!(
                    "not enough data: {name} has {} canary and {} baseline samples (at least \
                     {min} each)",
                    l.canary_sample, l.baseline_sample
                );
            }
            continue;
        }
        for q in [&l.p50, &l.p99] {
            if q.outcome == CheckOutcome::NotEnoughData {
                return format!(
                    "not enough data: {} baseline samples cannot bound the {name} {} at {} \
                     confidence yet",
                    l.baseline_sample,
                    quantile_name(q),
                    v.confidence
                );
            }
        }
    }
    String::from("not enough data: no signal was measured in either group")
}

fn pass_reason(v: &Verdict) -> String {
    let mut parts = Vec::new();
    for (name, c) in [
        ("failed attempts", &v.failed_attempts),
        ("backend resets", &v.backend_resets),
    ] {
        if c.outcome == CheckOutcome::Pass {
            parts.push(format!(
                "{name} {} vs {}",
                format_percent(c.canary.rate),
                format_percent(c.baseline.rate)
            ));
        }
    }
    for (name, l) in LATENCY_NAMES.iter().zip([&v.connect, &v.first_byte]) {
        for q in [&l.p50, &l.p99] {
            if q.outcome == CheckOutcome::Pass {
                parts.push(format!(
                    "{name} {} {} vs {}",
                    quantile_name(q),
                    format_ns(q.canary.estimate_ns),
                    format_ns(q.baseline.estimate_ns)
                ));
            }
        }
    }
    format!("canary within tolerances: {}", parts.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A histogram of `n` values spread evenly over `[center - spread, center + spread]` ns.
    fn around(center: u64, spread: u64, n: u64) -> Histogram {
        let mut h = Histogram::EMPTY;
        for i in 0..n {
            let offset = if n > 1 { 2 * spread * i / (n - 1) } else { 0 };
            h.record(center - spread + offset);
        }
        h
    }

    /// A healthy group: ~1 ms connect latency, ~3 ms to first byte.
    fn healthy(attempts: u64, failed: u64) -> GroupSignals {
        let ok = attempts - failed;
        GroupSignals {
            attempts,
            failed,
            established: ok,
            reset: 0,
            connect: around(1_000_000, 200_000, ok),
            first_byte: around(3_000_000, 500_000, ok),
        }
    }

    #[test]
    fn percentages_parse_exactly_and_print_back() {
        for (text, bp, shown) in [
            ("20%", 2_000, "20%"),
            ("20", 2_000, "20%"),
            ("12.5%", 1_250, "12.5%"),
            ("0.01%", 1, "0.01%"),
            ("99.99", 9_999, "99.99%"),
            ("250%", 25_000, "250%"),
        ] {
            let p: Percent = text.parse().unwrap();
            assert_eq!(p.basis_points(), bp, "{text}");
            assert_eq!(p.to_string(), shown);
        }
        for bad in ["", "%", "-1", "0.001", "1e2", "5.", ".5", "abc", "1234567"] {
            assert_eq!(
                Percent::parse(bad),
                Err(ToleranceError::Syntax { text: bad.into() })
            );
        }
    }

    #[test]
    fn tolerances_default_validate_and_round_trip() {
        let t = Tolerances::default();
        assert_eq!(t.validate(), Ok(()));
        let json = serde_json::to_string(&t).unwrap();
        assert_eq!(
            json,
            r#"{"max_latency_increase":20,"latency_slack":"1ms","max_failure_increase":25,"confidence":95,"min_sample":100}"#
        );
        assert_eq!(serde_json::from_str::<Tolerances>(&json).unwrap(), t);
        assert_eq!(
            serde_json::from_str::<Tolerances>(r#"{"confidence": 99.5}"#).unwrap(),
            Tolerances {
                confidence: Percent::from_basis_points(9_950),
                ..t
            }
        );
    }

    #[test]
    fn bad_tolerances_say_which_and_why() {
        let t = Tolerances {
            confidence: Percent::from_basis_points(10_000),
            ..Tolerances::default()
        };
        let err = t.validate().unwrap_err();
        assert_eq!(
            err.to_string(),
            "confidence 100% is out of range 50%..=99.99%"
        );
        let t = Tolerances {
            max_latency_increase: Percent::from_basis_points(100_001),
            ..Tolerances::default()
        };
        assert!(matches!(
            t.validate(),
            Err(ToleranceError::Range {
                field: "max_latency_increase",
                ..
            })
        ));
        let t = Tolerances {
            min_sample: 0,
            ..Tolerances::default()
        };
        assert_eq!(t.validate(), Err(ToleranceError::MinSample { value: 0 }));
        let t = Tolerances {
            latency_slack: std::time::Duration::from_secs(61),
            ..Tolerances::default()
        };
        assert_eq!(
            t.validate().unwrap_err().to_string(),
            "latency_slack 1m 1s is out of range 0s..=1m"
        );
    }

    #[test]
    fn looks_spend_at_most_alpha_and_fall_due_as_the_sample_doubles() {
        let t = Tolerances::default();
        let spent: f64 = (0..200).map(|k| t.look_alpha(k)).sum();
        assert!(
            spent <= t.alpha() && spent > t.alpha() * 0.999_999,
            "{spent}"
        );
        assert!((t.check_alpha(0) - 0.05 / 2.0 / 6.0).abs() < 1e-15);
        assert_eq!(t.look_due_at(0), 100);
        assert_eq!(t.look_due_at(3), 800);
        assert_eq!(t.look_due_at(64), u64::MAX);
        assert!(t.look_alpha(u32::MAX) >= 0.0);
    }

    #[test]
    fn one_canary_failure_below_the_minimum_sample_is_not_enough_data() {
        let t = Tolerances::default();
        let v = judge(&t, &healthy(20, 1), &healthy(5_000, 10), 0);
        assert_eq!(v.outcome, Outcome::NotEnoughData, "{}", v.reason);
        assert_eq!(v.failed_attempts.outcome, CheckOutcome::NotEnoughData);
        assert_eq!(
            v.reason,
            "not enough data: failed attempts has 20 canary and 5000 baseline trials (at least \
             100 each)"
        );
        assert!(!v.tested, "nothing tested, nothing spent");
    }

    #[test]
    fn one_canary_failure_at_the_minimum_sample_does_not_fail() {
        let t = Tolerances::default();
        // 1 of 100 against a baseline with none in 9,900 (a 1% step): exact p = 125/10025
        // = 0.0125, above the first look's 0.0042. (Its 99 established flows are one short of
        // judging resets, so the verdict waits for more data.)
        let v = judge(&t, &healthy(100, 1), &healthy(9_900, 0), 0);
        assert_eq!(v.failed_attempts.outcome, CheckOutcome::Pass);
        assert!((v.failed_attempts.p_value - 125.0 / 10_025.0).abs() < 1e-12);
        assert_eq!(v.outcome, Outcome::NotEnoughData, "{}", v.reason);
        // 1 of 200: p = 250/10150 = 0.0246.
        let v = judge(&t, &healthy(200, 1), &healthy(9_900, 0), 0);
        assert_eq!(v.outcome, Outcome::Pass, "{}", v.reason);
        // Against a baseline that also fails sometimes, even less so.
        let v = judge(&t, &healthy(200, 1), &healthy(10_000, 20), 0);
        assert_eq!(v.outcome, Outcome::Pass, "{}", v.reason);
    }

    #[test]
    fn a_doubled_failure_rate_fails_once_the_sample_suffices() {
        let t = Tolerances::default();
        // Baseline 1%, canary 2%. With 2,000 canary attempts (40 failures) the evidence is
        // not yet enough at the first look's alpha; with 4,000 (80 failures) it is.
        let baseline = healthy(10_000, 100);
        let early = judge(&t, &healthy(2_000, 40), &baseline, 0);
        assert_eq!(early.failed_attempts.outcome, CheckOutcome::Pass);
        assert!(early.failed_attempts.p_value > early.check_alpha);
        let v = judge(&t, &healthy(4_000, 80), &baseline, 0);
        assert_eq!(v.outcome, Outcome::Fail);
        assert_eq!(v.failed_attempts.outcome, CheckOutcome::Fail);
        assert!(v.failed_attempts.odds_ratio_lower > 1.25);
        assert!(
            v.reason.starts_with(
                "failed attempts: canary 80/4000 (2.00%) vs baseline 100/10000 (1.00%), odds \
                 ratio at least"
            ),
            "{}",
            v.reason
        );
        // Later looks hold each check to a smaller alpha, and a larger sample still fails it.
        let late = judge(&t, &healthy(16_000, 320), &healthy(40_000, 400), 4);
        assert_eq!(late.outcome, Outcome::Fail, "{}", late.reason);
    }

    #[test]
    fn equal_groups_pass() {
        let t = Tolerances::default();
        let v = judge(&t, &healthy(5_000, 10), &healthy(5_000, 10), 0);
        assert_eq!(v.outcome, Outcome::Pass, "{}", v.reason);
        assert!(v.tested);
        for l in [&v.connect, &v.first_byte] {
            for q in [&l.p50, &l.p99] {
                assert_eq!(q.outcome, CheckOutcome::Pass);
                assert_eq!(q.canary.estimate_ns, q.baseline.estimate_ns);
                assert!(q.ratio_lower <= 1.0);
            }
        }
        assert!(
            v.reason.starts_with(
                "canary within tolerances: failed attempts 0.200% vs 0.200%, backend resets \
                 0.00% vs 0.00%, connect latency p50"
            ),
            "{}",
            v.reason
        );
    }

    #[test]
    fn a_canary_100ms_slower_to_answer_fails_with_both_groups_quantiles() {
        let t = Tolerances::default();
        let baseline = healthy(2_000, 0);
        // The same connect latency (the backend's kernel answers the SYN), but the server
        // waits 100 ms before it answers each request.
        let mut canary = healthy(400, 0);
        canary.first_byte = around(103_000_000, 500_000, 400);
        let v = judge(&t, &canary, &baseline, 0);
        assert_eq!(v.outcome, Outcome::Fail);
        assert_eq!(v.connect.outcome, CheckOutcome::Pass);
        assert_eq!(v.first_byte.p50.outcome, CheckOutcome::Fail);
        assert_eq!(v.first_byte.p99.outcome, CheckOutcome::Fail);
        let (p50, p99) = (&v.first_byte.p50, &v.first_byte.p99);
        // Both groups' p50 and p99, within the bucket resolution of the true values.
        for (got, want) in [
            (p50.canary.estimate_ns, 103_000_000.0),
            (p99.canary.estimate_ns, 103_490_000.0),
            (p50.baseline.estimate_ns, 3_000_000.0),
            (p99.baseline.estimate_ns, 3_490_000.0),
        ] {
            let err = (got as f64 - want).abs() / want;
            assert!(err <= histogram::MAX_RELATIVE_WIDTH, "{got} vs {want}");
        }
        assert!(p50.ratio_lower > 20.0, "{}", p50.ratio_lower);
        assert!(
            v.reason
                .starts_with("time to first byte p50: canary at least "),
            "{}",
            v.reason
        );
    }

    #[test]
    fn a_canary_slower_by_less_than_the_slack_passes_whatever_the_ratio() {
        // First byte in 50 µs against 25 µs: twice as slow, 25 µs more. Scheduling noise on a
        // busy node makes such gaps; the default slack (1 ms) lets them pass, no slack fails
        // them, and a canary slower by more than both tolerances fails with the default.
        let mut baseline = healthy(2_000, 0);
        baseline.first_byte = around(25_000, 2_000, 2_000);
        let mut canary = healthy(1_000, 0);
        canary.first_byte = around(50_000, 2_000, 1_000);
        let t = Tolerances::default();
        let v = judge(&t, &canary, &baseline, 0);
        assert_eq!(v.first_byte.p50.outcome, CheckOutcome::Pass);
        assert!(v.first_byte.p50.ratio_lower > 1.5, "{}", v.reason);
        assert_eq!(v.first_byte.p50.slack_ns, 1_000_000);
        assert_eq!(v.outcome, Outcome::Pass, "{}", v.reason);
        let strict = Tolerances {
            latency_slack: std::time::Duration::ZERO,
            ..t
        };
        let v = judge(&strict, &canary, &baseline, 0);
        assert_eq!(v.first_byte.p50.outcome, CheckOutcome::Fail);
        assert!(
            v.reason.contains("x > 1.20x and +")
                && v.reason.ends_with(" > +0 ns allowed at 95% confidence"),
            "{}",
            v.reason
        );
        // 2.5 ms against 25 µs: beyond both.
        canary.first_byte = around(2_500_000, 2_000, 1_000);
        let v = judge(&t, &canary, &baseline, 0);
        assert_eq!(v.first_byte.p50.outcome, CheckOutcome::Fail, "{}", v.reason);
        // Beyond the slack but within the ratio passes: 15 ms against 13.5 ms, 1.5 ms more, 1.1x.
        baseline.first_byte = around(13_500_000, 100_000, 2_000);
        canary.first_byte = around(15_000_000, 100_000, 1_000);
        let v = judge(&t, &canary, &baseline, 0);
        assert_eq!(v.first_byte.p50.outcome, CheckOutcome::Pass, "{}", v.reason);
    }

    #[test]
    fn a_small_sample_cannot_fail_on_one_slow_request() {
        let t = Tolerances::default();
        let baseline = healthy(2_000, 0);
        let mut canary = healthy(100, 0);
        // One request in 100 took 5 s: the p99 lower bound cannot rest on a single value.
        canary.first_byte = around(3_000_000, 500_000, 99);
        canary.first_byte.record(5_000_000_000);
        let v = judge(&t, &canary, &baseline, 0);
        assert_eq!(v.first_byte.p99.outcome, CheckOutcome::Pass);
        assert_eq!(v.outcome, Outcome::Pass, "{}", v.reason);
    }

    #[test]
    fn a_baseline_without_traffic_is_not_enough_data() {
        let t = Tolerances::default();
        let v = judge(&t, &healthy(1_000, 0), &GroupSignals::default(), 0);
        assert_eq!(v.outcome, Outcome::NotEnoughData);
        assert_eq!(
            v.reason,
            "not enough data: the baseline had no traffic in the window"
        );
        assert_eq!(v.first_byte.p50.baseline.upper_ns, None);
    }

    #[test]
    fn p99_waits_for_a_baseline_sample_that_can_bound_it() {
        let t = Tolerances::default();
        // Each bound at the first look is held to 0.05 / 2 / 6 / 2 = 0.00208: the baseline's
        // maximum bounds its p99 from 615 samples on (0.99^n <= 0.00208, n >= 614.3).
        let v = judge(&t, &healthy(300, 0), &healthy(614, 0), 0);
        assert_eq!(v.connect.p50.outcome, CheckOutcome::Pass);
        assert_eq!(v.connect.p99.outcome, CheckOutcome::NotEnoughData);
        assert_eq!(v.outcome, Outcome::NotEnoughData);
        assert_eq!(
            v.reason,
            "not enough data: 614 baseline samples cannot bound the connect latency p99 at 95% \
             confidence yet"
        );
        let v = judge(&t, &healthy(300, 0), &healthy(615, 0), 0);
        assert_eq!(v.outcome, Outcome::Pass, "{}", v.reason);
    }

    #[test]
    fn signals_neither_group_produced_are_left_out() {
        // A UDP service: no handshake, so no attempts, connect latency or first byte.
        let t = Tolerances::default();
        let udp = GroupSignals {
            established: 500,
            ..GroupSignals::default()
        };
        let v = judge(&t, &udp, &udp, 0);
        assert_eq!(v.failed_attempts.outcome, CheckOutcome::NotMeasured);
        assert_eq!(v.connect.outcome, CheckOutcome::NotMeasured);
        assert_eq!(v.backend_resets.outcome, CheckOutcome::Pass);
        assert_eq!(v.outcome, Outcome::Pass, "{}", v.reason);
        let nothing = judge(&t, &GroupSignals::default(), &GroupSignals::default(), 0);
        assert_eq!(nothing.outcome, Outcome::NotEnoughData);
    }

    #[test]
    fn resets_on_established_flows_are_judged_like_failures() {
        let t = Tolerances::default();
        let mut canary = healthy(3_000, 0);
        canary.reset = 150;
        let mut baseline = healthy(20_000, 0);
        baseline.reset = 100;
        let v = judge(&t, &canary, &baseline, 0);
        assert_eq!(v.backend_resets.outcome, CheckOutcome::Fail);
        assert_eq!(v.outcome, Outcome::Fail);
        assert!(
            v.reason
                .starts_with("backend resets: canary 150/3000 (5.00%)")
        );
    }

    /// The inputs of the worked example in `docs-judge.md`: a 5% step where `v2` answers
    /// every request 100 ms late.
    fn worked_example() -> (GroupSignals, GroupSignals) {
        let baseline = GroupSignals {
            attempts: 19_000,
            failed: 19,
            established: 18_981,
            reset: 4,
            connect: around(400_000, 100_000, 18_981),
            first_byte: around(2_000_000, 1_000_000, 18_981),
        };
        let canary = GroupSignals {
            attempts: 1_000,
            failed: 3,
            established: 997,
            reset: 0,
            connect: around(400_000, 100_000, 997),
            first_byte: around(102_000_000, 1_000_000, 997),
        };
        (canary, baseline)
    }

    #[test]
    fn the_table_of_the_worked_example_is_the_readmes() {
        let (canary, baseline) = worked_example();
        let v = judge(&Tolerances::default(), &canary, &baseline, 0);
        let rows = rows(&v);
        assert_eq!(rows.len(), 6);
        assert_eq!(
            rows[0],
            [
                "failed attempts",
                "3/1000 (0.300%)",
                "19/19000 (0.100%)",
                "odds ratio >= 0.289 (p = 0.151)",
                "1.25 (p <= 4.17e-3)",
                "pass"
            ]
            .map(str::to_owned)
        );
        assert_eq!(rows[4][0], "first byte p50");
        assert_eq!(rows[4][3], "48.00x");
        assert_eq!(rows[4][5], "FAIL");
    }

    #[test]
    fn the_documented_worked_example_holds() {
        let t = Tolerances::default();
        let (canary, baseline) = worked_example();
        let v = judge(&t, &canary, &baseline, 0);
        assert_eq!(v.outcome, Outcome::Fail);
        assert_eq!(
            v.reason,
            "time to first byte p50: canary at least 101 ms vs baseline at most 2.10 ms \
             (estimates 105 ms vs 2.00 ms), 48.00x > 1.20x and +98.6 ms > +1.00 ms allowed at \
             95% confidence"
        );
        let f = &v.failed_attempts;
        assert_eq!(f.outcome, CheckOutcome::Pass);
        assert!((f.p_value - 0.1512).abs() < 5e-5, "{}", f.p_value);
        assert!(
            (f.odds_ratio_lower - 0.2886).abs() < 5e-5,
            "{}",
            f.odds_ratio_lower
        );
        assert!((v.check_alpha - 0.05 / 2.0 / 6.0).abs() < 1e-15);
        let (p50, p99) = (&v.first_byte.p50, &v.first_byte.p99);
        assert_eq!(
            (p50.canary.lower_ns, p50.baseline.upper_ns),
            (100_663_296, Some(2_097_152))
        );
        assert_eq!(
            (p99.canary.lower_ns, p99.baseline.upper_ns),
            (100_663_296, Some(3_145_728))
        );
        assert!((p99.ratio_lower - 32.0).abs() < 1e-12);
        assert_eq!(v.connect.outcome, CheckOutcome::Pass);
        assert!((v.connect.p99.ratio_lower - 0.9375).abs() < 1e-12);

        // The same step with v2 as fast as v1.
        let mut fast = canary;
        fast.first_byte = around(2_100_000, 1_000_000, 997);
        let v = judge(&t, &fast, &baseline, 0);
        assert_eq!(v.outcome, Outcome::Pass);
        assert_eq!(
            v.reason,
            "canary within tolerances: failed attempts 0.300% vs 0.100%, backend resets 0.00% \
             vs 0.0211%, connect latency p50 400 µs vs 400 µs, connect latency p99 517 µs vs \
             517 µs, time to first byte p50 2.10 ms vs 2.00 ms, time to first byte p99 3.12 ms \
             vs 3.10 ms"
        );
    }

    #[test]
    fn verdicts_round_trip_through_json() {
        let t = Tolerances::default();
        let (canary, baseline) = worked_example();
        for v in [
            judge(&t, &canary, &baseline, 1),
            judge(&t, &canary, &GroupSignals::default(), 0),
        ] {
            let json = serde_json::to_string(&v).unwrap();
            assert_eq!(serde_json::from_str::<Verdict>(&json).unwrap(), v);
        }
        let json = serde_json::to_string(&judge(&t, &canary, &baseline, 1)).unwrap();
        assert!(json.starts_with(r#"{"outcome":"fail","reason":"time to first byte p50"#));
        assert!(
            json.contains(r#""look":1,"tested":true,"confidence":95,"#),
            "{json}"
        );
    }

    #[test]
    fn rates_print_with_three_significant_digits() {
        for (rate, text) in [
            (0.0, "0.00%"),
            (0.02, "2.00%"),
            (0.5, "50.00%"),
            (0.0015, "0.150%"),
            (0.000_042, "0.00420%"),
        ] {
            assert_eq!(format_percent(rate), text);
        }
    }

    #[test]
    fn durations_print_with_three_significant_digits() {
        for (ns, text) in [
            (850, "850 ns"),
            (1_210, "1.21 µs"),
            (850_000, "850 µs"),
            (1_210_000, "1.21 ms"),
            (98_300_000, "98.3 ms"),
            (999_499, "999 µs"),
            (999_500, "1.00 ms"),
            (999_600_000, "1.00 s"),
            (2_500_000_000, "2.50 s"),
        ] {
            assert_eq!(format_ns(ns), text);
        }
    }

    /// splitmix64: a small, seeded generator for the simulations below.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^ (z >> 31)
        }
        fn uniform(&mut self) -> f64 {
            (self.next() >> 11) as f64 / (1u64 << 53) as f64
        }
        /// A log-normal latency around `median` ns (sigma 0.5).
        fn latency(&mut self, median: f64) -> u64 {
            let (u1, u2) = (self.uniform().max(1e-300), self.uniform());
            let z = (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos();
            (median * (0.5 * z).exp()) as u64
        }
    }

    /// Simulates one step: the canary and the baseline (four times the canary's traffic) add
    /// attempts, looked at whenever the canary reaches `min_sample * 2^k`, for `looks` looks.
    /// Returns whether any look failed the canary.
    fn simulate_step(
        rng: &mut Rng,
        t: &Tolerances,
        looks: u32,
        canary_failure: f64,
        canary_slowdown: f64,
    ) -> bool {
        let (mut canary, mut baseline) = (GroupSignals::default(), GroupSignals::default());
        let add = |g: &mut GroupSignals, rng: &mut Rng, failure: f64, slow: f64| {
            g.attempts += 1;
            if rng.uniform() < failure {
                g.failed += 1;
            } else {
                g.established += 1;
                g.connect.record(rng.latency(1e6 * slow));
                g.first_byte.record(rng.latency(3e6 * slow));
            }
        };
        for look in 0..looks {
            while canary.attempts < t.look_due_at(look) {
                add(&mut canary, rng, canary_failure, canary_slowdown);
                for _ in 0..4 {
                    add(&mut baseline, rng, 0.01, 1.0);
                }
            }
            if judge(t, &canary, &baseline, look).outcome == Outcome::Fail {
                return true;
            }
        }
        false
    }

    #[test]
    fn repeated_looks_keep_false_failures_under_alpha() {
        // 400 steps of a canary exactly at the edge of the tolerances (failure odds 1.25 times
        // the baseline's 1%, every latency 1.2 times), each looked at six times (100 to 3,200
        // canary attempts): at most alpha = 5% may fail, with a margin of three standard
        // errors.
        let t = Tolerances::default();
        let mut rng = Rng(0x7665_6572);
        let runs = 400;
        let odds = 1.25 * 0.01 / 0.99;
        let failed = (0..runs)
            .filter(|_| simulate_step(&mut rng, &t, 6, odds / (1.0 + odds), 1.2))
            .count();
        let limit = 0.05 + 3.0 * (0.05f64 * 0.95 / f64::from(runs)).sqrt();
        assert!(
            (failed as f64 / f64::from(runs)) <= limit,
            "{failed} of {runs} steps failed a healthy canary"
        );
    }

    #[test]
    fn real_regressions_are_caught_within_a_step() {
        let t = Tolerances::default();
        let mut rng = Rng(0x0bad_cafe);
        let runs = 40;
        // Eight looks: up to 12,800 canary attempts (256 failures at 2%).
        let doubled = (0..runs)
            .filter(|_| simulate_step(&mut rng, &t, 8, 0.02, 1.0))
            .count();
        let slower = (0..runs)
            .filter(|_| simulate_step(&mut rng, &t, 8, 0.01, 1.5))
            .count();
        assert!(
            doubled >= runs * 9 / 10,
            "doubled failures caught {doubled}/{runs}"
        );
        assert!(
            slower >= runs * 9 / 10,
            "+50% latency caught {slower}/{runs}"
        );
    }
}
