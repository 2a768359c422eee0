//! The special functions the judge needs, in plain `f64`: the log-gamma function, the
//! regularized incomplete beta function, the binomial distribution function, distribution-free
//! confidence bounds for quantiles (order statistics), and the upper tail of Fisher's noncentral
//! hypergeometric distribution with its inversion (the exact conditional test and confidence
//! bound for an odds ratio).
//!
//! Pure and allocation-free. Every loop has a bound, so a corrupt input costs time, never a hang.
//! Each function is tested against published values (see the tests).

use std::f64::consts::PI;

/// Relative precision the continued fraction and the series stop at.
const EPS: f64 = 1e-15;
/// Smallest magnitude the continued fraction lets a denominator reach (Lentz's method).
const TINY: f64 = 1e-300;
/// Upper bound on continued-fraction terms. Convergence takes about `sqrt(max(a, b))` terms
/// (Numerical Recipes, §6.4), so this covers samples of 10^10.
const MAX_TERMS: u32 = 200_000;

/// `ln Γ(x)` for `x > 0`: the Lanczos approximation with `g = 7` and nine coefficients
/// (relative error below 1e-15 on the positive axis), with the reflection formula below 0.5.
pub(crate) fn ln_gamma(x: f64) -> f64 {
    const G: f64 = 7.0;
    const C: [f64; 9] = [
        0.999_999_999_999_809_9,
        676.520_368_121_885_1,
        -1_259.139_216_722_402_8,
        771.323_428_777_653_1,
        -176.615_029_162_140_6,
        12.507_343_278_686_905,
        -0.138_571_095_265_720_12,
        9.984_369_578_019_572e-6,
        1.505_632_735_149_311_6e-7,
    ];
    if x < 0.5 {
        // Γ(x) Γ(1 - x) = π / sin(πx)
        return (PI / (PI * x).sin()).ln() - ln_gamma(1.0 - x);
    }
    let x = x - 1.0;
    let mut a = C[0];
    for (i, c) in C.iter().enumerate().skip(1) {
        a += c / (x + i as f64);
    }
    let t = x + G + 0.5;
    0.5 * (2.0 * PI).ln() + (x + 0.5) * t.ln() - t + a.ln()
}

/// The continued fraction of the incomplete beta function (modified Lentz), valid for
/// `x < (a + 1) / (a + b + 2)`.
fn beta_continued_fraction(a: f64, b: f64, x: f64) -> f64 {
    let clamp = |v: f64| if v.abs() < TINY { TINY } else { v };
    let (qab, qap, qam) = (a + b, a + 1.0, a - 1.0);
    let mut numer = 1.0;
    let mut denom = 1.0 / clamp(1.0 - qab * x / qap);
    let mut fraction = denom;
    for step in 1..=MAX_TERMS {
        let m = f64::from(step);
        let m2 = 2.0 * m;
        // Even term d_{2m}, then odd term d_{2m+1} (Numerical Recipes eq. 6.4.6).
        let even = m * (b - m) * x / ((qam + m2) * (a + m2));
        denom = 1.0 / clamp(1.0 + even * denom);
        numer = clamp(1.0 + even / numer);
        fraction *= denom * numer;
        let odd = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2));
        denom = 1.0 / clamp(1.0 + odd * denom);
        numer = clamp(1.0 + odd / numer);
        let change = denom * numer;
        fraction *= change;
        if (change - 1.0).abs() < EPS {
            break;
        }
    }
    fraction
}

/// The regularized incomplete beta function `I_x(a, b)`, for `a, b > 0`.
pub(crate) fn beta_inc(a: f64, b: f64, x: f64) -> f64 {
    if x <= 0.0 {
        return 0.0;
    }
    if x >= 1.0 {
        return 1.0;
    }
    let front = (ln_gamma(a + b) - ln_gamma(a) - ln_gamma(b) + a * x.ln() + b * (-x).ln_1p()).exp();
    if x < (a + 1.0) / (a + b + 2.0) {
        front * beta_continued_fraction(a, b, x) / a
    } else {
        1.0 - front * beta_continued_fraction(b, a, 1.0 - x) / b
    }
}

/// `P(X <= k)` for `X ~ Binomial(n, p)`.
pub(crate) fn binomial_cdf(k: u64, n: u64, p: f64) -> f64 {
    if k >= n || p <= 0.0 {
        return 1.0;
    }
    if p >= 1.0 {
        return 0.0;
    }
    // P(X <= k) = I_{1-p}(n - k, k + 1), the complement of Abramowitz & Stegun 26.5.24.
    beta_inc((n - k) as f64, k as f64 + 1.0, 1.0 - p)
}

/// The rank `u` (1-based) of the smallest order statistic `X_(u)` of a sample of `n` that is an
/// upper confidence bound for the `p`-quantile at level `1 - alpha`:
/// `P(q_p <= X_(u)) >= P(Binomial(n, p) <= u - 1) >= 1 - alpha`, for any distribution.
/// `None` when even the sample maximum is not (the sample is too small).
pub(crate) fn upper_bound_rank(n: u64, p: f64, alpha: f64) -> Option<u64> {
    if n == 0 || binomial_cdf(n - 1, n, p) < 1.0 - alpha {
        return None;
    }
    // Smallest u in 1..=n with cdf(u - 1) >= 1 - alpha; cdf increases with u.
    let (mut lo, mut hi) = (1, n);
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        if binomial_cdf(mid - 1, n, p) >= 1.0 - alpha {
            hi = mid;
        } else {
            lo = mid + 1;
        }
    }
    Some(lo)
}

/// The rank `l` (1-based) of the largest order statistic `X_(l)` of a sample of `n` that is a
/// lower confidence bound for the `p`-quantile at level `1 - alpha`:
/// `P(X_(l) <= q_p) >= 1 - P(Binomial(n, p) <= l - 1) >= 1 - alpha`, for any distribution.
/// `None` when even the sample minimum is not.
pub(crate) fn lower_bound_rank(n: u64, p: f64, alpha: f64) -> Option<u64> {
    if n == 0 || binomial_cdf(0, n, p) > alpha {
        return None;
    }
    // Largest l in 1..=n with cdf(l - 1) <= alpha.
    let (mut lo, mut hi) = (1, n);
    while lo < hi {
        let mid = lo + (hi - lo).div_ceil(2);
        if binomial_cdf(mid - 1, n, p) <= alpha {
            lo = mid;
        } else {
            hi = mid - 1;
        }
    }
    Some(lo)
}

/// A 2×2 table of two groups' trials and events (for the judge: connection attempts and
/// failures), conditioned on its margins for the exact test.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Table {
    /// Events in the first group (the canary).
    pub(crate) events: u64,
    /// Trials in the first group.
    pub(crate) trials: u64,
    /// Events in the second group (the baseline).
    pub(crate) other_events: u64,
    /// Trials in the second group.
    pub(crate) other_trials: u64,
}

impl Table {
    /// The support `lo..=hi` of the first group's events given the margins.
    fn support(&self) -> (u64, u64) {
        let total = self.events + self.other_events;
        (
            total.saturating_sub(self.other_trials),
            total.min(self.trials),
        )
    }

    /// `P(X >= events)` under Fisher's noncentral hypergeometric distribution with odds ratio
    /// `psi`: the one-sided p-value of the exact conditional test of `H0: odds ratio <= psi`
    /// against `H1: odds ratio > psi` (Fisher's exact test when `psi == 1`).
    ///
    /// The probabilities are summed outward from the mode with the ratio of successive terms,
    /// so no factorial is ever formed; terms below 1e-20 of the mode's stop each walk.
    pub(crate) fn upper_tail(&self, psi: f64) -> f64 {
        let (lo, hi) = self.support();
        let x = self.events;
        if x <= lo {
            return 1.0;
        }
        if x > hi {
            return 0.0;
        }
        let m1 = self.trials as f64;
        let m2 = self.other_trials as f64;
        let t = (self.events + self.other_events) as f64;
        // f(k + 1) / f(k)
        let ratio = |k: u64| {
            let k = k as f64;
            psi * (m1 - k) * (t - k) / ((k + 1.0) * (m2 - t + k + 1.0))
        };
        let mode = self.mode(psi, &ratio);
        let (mut total, mut tail) = (1.0, if mode >= x { 1.0 } else { 0.0 });
        let mut term = 1.0;
        let mut k = mode;
        while k < hi {
            term *= ratio(k);
            k += 1;
            if term < 1e-20 {
                break;
            }
            total += term;
            if k >= x {
                tail += term;
            }
        }
        term = 1.0;
        k = mode;
        while k > lo {
            term /= ratio(k - 1);
            k -= 1;
            if term < 1e-20 {
                break;
            }
            total += term;
            if k >= x {
                tail += term;
            }
        }
        (tail / total).clamp(0.0, 1.0)
    }

    /// The mode of the noncentral hypergeometric distribution: the largest `k` with
    /// `f(k) / f(k - 1) >= 1`, the smaller root of the quadratic that ratio gives, computed in
    /// the form that does not cancel, then checked against the ratio itself.
    fn mode(&self, psi: f64, ratio: &impl Fn(u64) -> f64) -> u64 {
        let (lo, hi) = self.support();
        let m1 = self.trials as f64;
        let m2 = self.other_trials as f64;
        let t = (self.events + self.other_events) as f64;
        let a = psi - 1.0;
        let b = -(psi * (m1 + t + 2.0) + m2 - t);
        let c = psi * (m1 + 1.0) * (t + 1.0);
        let root = -2.0 * c / (b - (b * b - 4.0 * a * c).max(0.0).sqrt());
        let mut mode = if root.is_finite() && root > 0.0 {
            (root.floor() as u64).clamp(lo, hi)
        } else {
            lo
        };
        // Rounding can leave the root one off; the ratio decides.
        for _ in 0..4 {
            if mode < hi && ratio(mode) > 1.0 {
                mode += 1;
            } else if mode > lo && ratio(mode - 1) < 1.0 {
                mode -= 1;
            } else {
                break;
            }
        }
        mode
    }

    /// The exact conditional lower confidence bound of the odds ratio at level `1 - alpha`:
    /// the `psi` at which `upper_tail(psi) == alpha` (the tail grows with `psi`), found by
    /// bisection on `ln psi` within `[e^-40, e^40]`. 0 when the data put no lower bound on it
    /// (no first-group event beyond what the margins force).
    pub(crate) fn odds_ratio_lower_bound(&self, alpha: f64) -> f64 {
        let (lo, _) = self.support();
        if self.events <= lo {
            return 0.0;
        }
        let (mut a, mut b) = (-40.0f64, 40.0f64);
        if self.upper_tail(a.exp()) >= alpha {
            return 0.0;
        }
        if self.upper_tail(b.exp()) <= alpha {
            return b.exp();
        }
        for _ in 0..100 {
            let mid = 0.5 * (a + b);
            if self.upper_tail(mid.exp()) < alpha {
                a = mid;
            } else {
                b = mid;
            }
            if b - a < 1e-10 {
                break;
            }
        }
        (0.5 * (a + b)).exp()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `ln C(n, k)`.
    fn ln_choose(n: f64, k: f64) -> f64 {
        ln_gamma(n + 1.0) - ln_gamma(k + 1.0) - ln_gamma(n - k + 1.0)
    }

    fn close(got: f64, want: f64, rel: f64) -> bool {
        (got - want).abs() <= rel * want.abs().max(f64::MIN_POSITIVE)
    }

    #[test]
    fn ln_gamma_matches_abramowitz_and_stegun() {
        // Γ(1/2) = √π; Γ(1.5) = 0.88622 69255 (A&S Table 6.1); Γ(10) = 9!; Γ(101) = 100!;
        // Γ(0.1) = Γ(1.1) / 0.1 = 9.51350 7699 (A&S 6.1.15 with Γ(1.1) = 0.95135 07699 from
        // Table 6.1); Γ(10^6) against Stirling's series (A&S 6.1.40).
        for (x, want) in [
            (0.5, PI.sqrt().ln()),
            (1.0, 0.0),
            (1.5, 0.886_226_925_452_758_f64.ln()),
            (10.0, 362_880f64.ln()),
            (101.0, 363.739_375_555_563_5),
            (0.1, 9.513_507_698_668_732_f64.ln()),
            (1e6, 12_815_504.569_147_611),
        ] {
            let got = ln_gamma(x);
            assert!(
                (got - want).abs() <= 1e-13 * want.abs().max(1.0),
                "lnΓ({x}) = {got}, want {want}"
            );
        }
    }

    /// The exact binomial sum, for small n.
    fn binomial_cdf_by_sum(k: u64, n: u64, p: f64) -> f64 {
        (0..=k.min(n))
            .map(|i| {
                (ln_choose(n as f64, i as f64) + i as f64 * p.ln() + (n - i) as f64 * (-p).ln_1p())
                    .exp()
            })
            .sum()
    }

    #[test]
    fn incomplete_beta_identities() {
        for x in [0.01, 0.2, 0.5, 0.77, 0.999] {
            assert!(close(beta_inc(1.0, 1.0, x), x, 1e-13), "I_x(1,1) = x");
            assert!(
                close(beta_inc(3.0, 1.0, x), x.powi(3), 1e-13),
                "I_x(a,1) = x^a"
            );
            assert!(close(
                beta_inc(2.5, 4.0, x) + beta_inc(4.0, 2.5, 1.0 - x),
                1.0,
                1e-13
            ));
        }
        for a in [0.5, 7.0, 1000.0] {
            assert!(close(beta_inc(a, a, 0.5), 0.5, 1e-12), "I_0.5(a,a) = 1/2");
        }
    }

    #[test]
    fn binomial_cdf_matches_exact_sums_and_the_sign_test_table() {
        for (n, p) in [(10, 0.5), (37, 0.99), (200, 0.013), (1_000, 0.5)] {
            for k in [0, 1, n / 3, n / 2, n - 2, n - 1] {
                let (got, want) = (binomial_cdf(k, n, p), binomial_cdf_by_sum(k, n, p));
                assert!(
                    (got - want).abs() < 1e-12,
                    "n={n} p={p} k={k}: {got} {want}"
                );
            }
        }
        // The distribution-free confidence interval for the median of 10 observations:
        // (X_(2), X_(9)) has coverage 1 - 2 * 11/1024 = 0.978515625 and (X_(3), X_(8))
        // 1 - 2 * 56/1024 = 0.890625 (Conover, Practical Nonparametric Statistics, §3.2).
        let coverage = |l: u64, u: u64| binomial_cdf(u - 1, 10, 0.5) - binomial_cdf(l - 1, 10, 0.5);
        assert!(close(coverage(2, 9), 0.978_515_625, 1e-13));
        assert!(close(coverage(3, 8), 0.890_625, 1e-13));
        // Large samples stay accurate to what ln Γ of 10^7 leaves (about 1e-9): against an
        // independent computation (SciPy 1.17, `binom.cdf(5002000, 10**7, 0.5)`) and its
        // normal limit Φ(1.2652) = 0.8971.
        let big = binomial_cdf(5_000_000 + 2_000, 10_000_000, 0.5);
        assert!(close(big, 0.897_105_070_258_592_5, 1e-8), "{big}");
    }

    #[test]
    fn quantile_bound_ranks_follow_wilks_sample_sizes() {
        // Wilks (1941): the sample maximum is a one-sided upper bound of the p-quantile with
        // confidence 1 - alpha once 1 - p^n >= 1 - alpha: 59 samples for 95%/95%, 90 for
        // p95 at 99%, 299 for p99 at 95%, 459 for p99 at 99%.
        for (p, alpha, n) in [
            (0.95, 0.05, 59),
            (0.95, 0.01, 90),
            (0.99, 0.05, 299),
            (0.99, 0.01, 459),
        ] {
            assert_eq!(upper_bound_rank(n - 1, p, alpha), None, "{p} {alpha}");
            assert_eq!(upper_bound_rank(n, p, alpha), Some(n), "{p} {alpha}");
            // By symmetry, the sample minimum bounds the (1-p)-quantile from below.
            assert_eq!(lower_bound_rank(n - 1, 1.0 - p, alpha), None);
            assert_eq!(lower_bound_rank(n, 1.0 - p, alpha), Some(1));
        }
        // The median of 10 at 97.85%: X_(2) from below, X_(9) from above (one-sided 1.07%).
        assert_eq!(lower_bound_rank(10, 0.5, 0.011), Some(2));
        assert_eq!(upper_bound_rank(10, 0.5, 0.011), Some(9));
        assert_eq!(lower_bound_rank(10, 0.5, 0.0107), Some(1));
        assert_eq!(upper_bound_rank(0, 0.5, 0.05), None);
    }

    #[test]
    fn quantile_bound_ranks_are_the_extreme_valid_ones() {
        for (n, p, alpha) in [
            (1_000, 0.99, 0.002),
            (1_000, 0.5, 0.01),
            (123_457, 0.99, 1e-4),
        ] {
            let u = upper_bound_rank(n, p, alpha).unwrap();
            assert!(binomial_cdf(u - 1, n, p) >= 1.0 - alpha);
            assert!(binomial_cdf(u - 2, n, p) < 1.0 - alpha);
            let l = lower_bound_rank(n, p, alpha).unwrap();
            assert!(binomial_cdf(l - 1, n, p) <= alpha);
            assert!(binomial_cdf(l, n, p) > alpha);
            assert!(l < u);
        }
    }

    #[test]
    fn fisher_exact_test_matches_the_tea_tasting_example() {
        // Fisher (1935), The Design of Experiments: 3 of 4 milk-first cups named right.
        // One-sided p = 17/70 = 0.2429 (Agresti, Categorical Data Analysis, 2nd ed., §3.5.1).
        // The conditional 95% lower bound of the odds ratio, as R's
        // `fisher.test(TeaTasting, alternative = "greater")` prints it: 0.3135693 (R solves to
        // about 1e-4 relative; SciPy's `odds_ratio` gives 0.313574).
        let tea = Table {
            events: 3,
            trials: 4,
            other_events: 1,
            other_trials: 4,
        };
        assert!(close(tea.upper_tail(1.0), 17.0 / 70.0, 1e-12));
        assert!(close(tea.odds_ratio_lower_bound(0.05), 0.313_569_3, 1e-4));
    }

    #[test]
    fn fisher_exact_test_matches_the_dieting_example() {
        // Wikipedia, "Fisher's exact test", worked example: 9 of 12 women and 1 of 12 men
        // dieting; one-tailed p = 0.001379728.
        let diet = Table {
            events: 9,
            trials: 12,
            other_events: 1,
            other_trials: 12,
        };
        assert!(close(diet.upper_tail(1.0), 0.001_379_728, 1e-6));
    }

    /// The noncentral tail summed from its definition with `ln C(n, k)`.
    fn upper_tail_by_definition(t: &Table, psi: f64) -> f64 {
        let (lo, hi) = t.support();
        let total = t.events + t.other_events;
        let w = |k: u64| {
            ln_choose(t.trials as f64, k as f64)
                + ln_choose(t.other_trials as f64, (total - k) as f64)
                + k as f64 * psi.ln()
        };
        let peak = (lo..=hi).map(w).fold(f64::MIN, f64::max);
        let all: f64 = (lo..=hi).map(|k| (w(k) - peak).exp()).sum();
        let upper: f64 = (t.events..=hi).map(|k| (w(k) - peak).exp()).sum();
        upper / all
    }

    #[test]
    fn noncentral_tail_agrees_with_its_definition_and_inverts() {
        let tables = [
            Table {
                events: 12,
                trials: 400,
                other_events: 15,
                other_trials: 10_000,
            },
            Table {
                events: 40,
                trials: 2_000,
                other_events: 100,
                other_trials: 10_000,
            },
            Table {
                events: 1,
                trials: 100,
                other_events: 0,
                other_trials: 9_900,
            },
            Table {
                events: 300,
                trials: 600,
                other_events: 200,
                other_trials: 700,
            },
        ];
        for t in tables {
            for psi in [0.3, 1.0, 1.25, 2.0, 17.0] {
                let (got, want) = (t.upper_tail(psi), upper_tail_by_definition(&t, psi));
                assert!(
                    (got - want).abs() < 1e-12 + 1e-9 * want,
                    "{t:?} psi={psi}: {got} {want}"
                );
            }
            for alpha in [0.05, 0.004, 1e-6] {
                let bound = t.odds_ratio_lower_bound(alpha);
                if bound > 0.0 {
                    assert!(close(t.upper_tail(bound), alpha, 1e-6), "{t:?} {alpha}");
                }
            }
        }
        // One event among 100 trials against none among 9,900: P(X >= 1) = 1.25*100 /
        // (1.25*100 + 9900) when the total is one event.
        assert!(close(tables[2].upper_tail(1.25), 125.0 / 10_025.0, 1e-12));
    }

    #[test]
    fn degenerate_tables_carry_no_evidence() {
        let none = Table {
            events: 0,
            trials: 500,
            other_events: 0,
            other_trials: 500,
        };
        assert!(close(none.upper_tail(1.0), 1.0, 0.0));
        assert!(close(none.odds_ratio_lower_bound(0.05), 0.0, 0.0));
        // Every trial of both groups failed: the margins force the table.
        let all = Table {
            events: 5,
            trials: 5,
            other_events: 7,
            other_trials: 7,
        };
        assert!(close(all.upper_tail(3.0), 1.0, 0.0));
        // Huge counts stay finite and fast.
        let big = Table {
            events: 200_000,
            trials: 10_000_000,
            other_events: 1_000_000,
            other_trials: 100_000_000,
        };
        let p = big.upper_tail(1.25);
        assert!(p.is_finite() && p < 1e-12, "{p}");
        let bound = big.odds_ratio_lower_bound(1e-3);
        assert!(bound > 1.9 && bound < 2.1, "{bound}");
    }
}
