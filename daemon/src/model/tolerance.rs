//! A rollout plan's tolerances for the canary judge (`rollout::judge`): how much worse than the
//! baseline the canary may be, and how sure the judge must be before it fails it. Plain data
//! with its own rules, so a plan carries it; the statistics are the judge's.

use std::{fmt, str::FromStr, time::Duration};

use serde::{Deserialize, Serialize};

/// Checks made at every look: failed attempts, backend resets, and p50 and p99 of connect
/// latency and of time to first byte. Each gets an equal share of a look's alpha.
pub const CHECKS: u32 = 6;

/// A percentage, exact to two decimals (basis points), written `20`, `20%` or `12.5%`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Percent(u32);

impl Percent {
    /// From basis points (1/100 of a percent).
    pub const fn from_basis_points(bp: u32) -> Percent {
        Percent(bp)
    }

    /// Basis points.
    pub const fn basis_points(self) -> u32 {
        self.0
    }

    /// As a fraction (`20%` is 0.2).
    pub fn fraction(self) -> f64 {
        f64::from(self.0) / 10_000.0
    }

    /// Parses `20`, `20%`, `12.5%`, `0.01%` exactly, without floating point.
    pub fn parse(text: &str) -> Result<Percent, ToleranceError> {
        let syntax = || ToleranceError::Syntax {
            text: text.to_owned(),
        };
        let number = text.trim().strip_suffix('%').unwrap_or(text.trim());
        let (int, frac) = number.split_once('.').unwrap_or((number, ""));
        if int.is_empty()
            || int.len() > 6
            || frac.len() > 2
            || !int.bytes().all(|b| b.is_ascii_digit())
            || !frac.bytes().all(|b| b.is_ascii_digit())
            || (number.contains('.') && frac.is_empty())
        {
            return Err(syntax());
        }
        let int: u32 = int.parse().map_err(|_| syntax())?;
        let frac: u32 = if frac.is_empty() {
            0
        } else {
            format!("{frac:0<2}").parse().map_err(|_| syntax())?
        };
        Ok(Percent(int * 100 + frac))
    }
}

impl FromStr for Percent {
    type Err = ToleranceError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Percent::parse(s)
    }
}

impl fmt::Display for Percent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (int, frac) = (self.0 / 100, self.0 % 100);
        if frac == 0 {
            write!(f, "{int}%")
        } else if frac % 10 == 0 {
            write!(f, "{int}.{}%", frac / 10)
        } else {
            write!(f, "{int}.{frac:02}%")
        }
    }
}

/// A percentage is a JSON number in percent (`20`, `12.5`), as weights are.
impl Serialize for Percent {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if self.0.is_multiple_of(100) {
            s.serialize_u32(self.0 / 100)
        } else {
            s.serialize_f64(f64::from(self.0) / 100.0)
        }
    }
}

impl<'de> Deserialize<'de> for Percent {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let n = serde_json::Number::deserialize(d)?;
        Percent::parse(&n.to_string()).map_err(serde::de::Error::custom)
    }
}

/// Why a plan's tolerances are not valid.
#[derive(Clone, Debug, thiserror::Error, PartialEq, Eq)]
pub enum ToleranceError {
    /// Not a percentage.
    #[error("`{text}` is not a percentage with at most two decimals (e.g. 20%, 12.5%, 99.9%)")]
    Syntax {
        /// What was given.
        text: String,
    },
    /// A percentage outside its range.
    #[error("{field} {value} is out of range {min}..={max}")]
    Range {
        /// The tolerance (`max_latency_increase`, `max_failure_increase`, `confidence`).
        field: &'static str,
        /// What was given.
        value: Percent,
        /// Smallest allowed.
        min: Percent,
        /// Largest allowed.
        max: Percent,
    },
    /// A latency slack above its maximum.
    #[error("latency_slack {value} is out of range 0s..={max}")]
    Slack {
        /// What was given (humantime).
        value: String,
        /// Largest allowed (humantime).
        max: String,
    },
    /// No minimum sample.
    #[error("min_sample must be at least 1 (got {value})")]
    MinSample {
        /// What was given.
        value: u64,
    },
}

/// What a rollout plan allows the canary, and how sure the judge must be before it fails it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Tolerances {
    /// Largest increase of the canary's p50 and p99 (connect latency, time to first byte) over
    /// the baseline's, relative (`20%`: up to 1.2 times).
    pub max_latency_increase: Percent,
    /// Increase of the canary's p50 and p99 over the baseline's, in time, that never fails a
    /// canary whatever its ratio (`1ms`: 60 µs against 50 µs is scheduling noise, not a
    /// regression). A latency check fails only when the canary is slower by more than both
    /// `max_latency_increase` and this.
    #[serde(with = "super::human::duration")]
    pub latency_slack: Duration,
    /// Largest increase of the canary's failure odds (failed attempts, backend resets) over the
    /// baseline's, relative (`25%`: up to 1.25 times).
    pub max_failure_increase: Percent,
    /// Confidence the judge needs to fail a canary: `1 - confidence` bounds the chance that a
    /// step fails a canary that is within tolerance.
    pub confidence: Percent,
    /// Trials (or latency samples) each group needs before a check is made.
    pub min_sample: u64,
}

impl Tolerances {
    /// Default `max_latency_increase`: 20%.
    pub const DEFAULT_MAX_LATENCY_INCREASE: Percent = Percent(2_000);
    /// Default `latency_slack`: 1 ms.
    pub const DEFAULT_LATENCY_SLACK: Duration = Duration::from_millis(1);
    /// Largest `latency_slack`: 1 minute (a connect or first-byte latency beyond is a timeout).
    pub const MAX_LATENCY_SLACK: Duration = Duration::from_mins(1);
    /// Default `max_failure_increase`: 25%.
    pub const DEFAULT_MAX_FAILURE_INCREASE: Percent = Percent(2_500);
    /// Default `confidence`: 95%.
    pub const DEFAULT_CONFIDENCE: Percent = Percent(9_500);
    /// Default `min_sample`: 100.
    pub const DEFAULT_MIN_SAMPLE: u64 = 100;
    /// The defaults.
    pub const DEFAULT: Tolerances = Tolerances {
        max_latency_increase: Self::DEFAULT_MAX_LATENCY_INCREASE,
        latency_slack: Self::DEFAULT_LATENCY_SLACK,
        max_failure_increase: Self::DEFAULT_MAX_FAILURE_INCREASE,
        confidence: Self::DEFAULT_CONFIDENCE,
        min_sample: Self::DEFAULT_MIN_SAMPLE,
    };

    /// Range of `max_latency_increase` and `max_failure_increase`.
    pub const INCREASE_RANGE: (Percent, Percent) = (Percent(0), Percent(100_000));
    /// Range of `confidence`.
    pub const CONFIDENCE_RANGE: (Percent, Percent) = (Percent(5_000), Percent(9_999));

    /// Checks every tolerance against its range.
    pub fn validate(&self) -> Result<(), ToleranceError> {
        let check = |field, value: Percent, (min, max): (Percent, Percent)| {
            if value < min || value > max {
                Err(ToleranceError::Range {
                    field,
                    value,
                    min,
                    max,
                })
            } else {
                Ok(())
            }
        };
        check(
            "max_latency_increase",
            self.max_latency_increase,
            Self::INCREASE_RANGE,
        )?;
        check(
            "max_failure_increase",
            self.max_failure_increase,
            Self::INCREASE_RANGE,
        )?;
        check("confidence", self.confidence, Self::CONFIDENCE_RANGE)?;
        if self.latency_slack > Self::MAX_LATENCY_SLACK {
            return Err(ToleranceError::Slack {
                value: humantime::format_duration(self.latency_slack).to_string(),
                max: humantime::format_duration(Self::MAX_LATENCY_SLACK).to_string(),
            });
        }
        if self.min_sample == 0 {
            return Err(ToleranceError::MinSample {
                value: self.min_sample,
            });
        }
        Ok(())
    }

    /// The false-failure rate a whole step may spend: `1 - confidence`.
    pub fn alpha(&self) -> f64 {
        f64::from(10_000u32.saturating_sub(self.confidence.basis_points())) / 10_000.0
    }

    /// What look `look` (0-based within a step) may spend: `alpha / 2^(look + 1)`.
    pub fn look_alpha(&self, look: u32) -> f64 {
        self.alpha() * 0.5f64.powi(look.saturating_add(1).min(1_000) as i32)
    }

    /// What each check is held to at look `look`: the look's alpha over [`CHECKS`].
    pub fn check_alpha(&self, look: u32) -> f64 {
        self.look_alpha(look) / f64::from(CHECKS)
    }

    /// The canary's attempts at which look `look` falls due: `min_sample * 2^look`.
    pub fn look_due_at(&self, look: u32) -> u64 {
        1u64.checked_shl(look)
            .and_then(|f| self.min_sample.checked_mul(f))
            .unwrap_or(u64::MAX)
    }
}

impl Default for Tolerances {
    fn default() -> Self {
        Tolerances::DEFAULT
    }
}
