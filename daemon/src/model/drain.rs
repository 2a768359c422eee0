//! A paced drain: after its deadline, the flows still on a drained group are ended at most at a
//! pace (`veer drain SERVICE GROUP --deadline 10m --pace 50/s`). Pure: the schedule says how many
//! flows may be ended at a moment; the control layer picks them and ends them.

use std::{
    fmt,
    str::FromStr,
    time::{Duration, SystemTime},
};

use serde::{Deserialize, Serialize};

/// Flows ended per second, written `50/s`, `50` (per second) or `600/m`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Pace {
    per_minute: u32,
}

impl Pace {
    /// Fastest pace: 100,000 flows a second.
    pub const MAX_PER_SECOND: u32 = 100_000;

    /// `n` flows a second.
    pub const fn per_second(n: u32) -> Pace {
        Pace {
            per_minute: n.saturating_mul(60),
        }
    }

    /// Flows a second (fractional for a pace given per minute).
    pub fn flows_per_second(self) -> f64 {
        f64::from(self.per_minute) / 60.0
    }
}

/// Why a pace does not parse.
#[derive(Clone, Debug, thiserror::Error, PartialEq, Eq)]
pub enum PaceError {
    /// Not `N/s` or `N/m`.
    #[error("`{text}` is not a pace: write flows per second or per minute, e.g. 50/s or 600/m")]
    Syntax {
        /// What was given.
        text: String,
    },
    /// Zero, or faster than `Pace::MAX_PER_SECOND`.
    #[error("pace {text} is out of range: at least 1/m, at most {max}/s", max = Pace::MAX_PER_SECOND)]
    Range {
        /// What was given.
        text: String,
    },
}

impl FromStr for Pace {
    type Err = PaceError;

    fn from_str(text: &str) -> Result<Pace, PaceError> {
        let t = text.trim();
        let (n, per) = match t.split_once('/') {
            Some((n, "s")) => (n, 60u64),
            Some((n, "m")) => (n, 1),
            None => (t, 60),
            Some(_) => {
                return Err(PaceError::Syntax {
                    text: text.to_owned(),
                });
            }
        };
        let n: u64 = n.trim().parse().map_err(|_| PaceError::Syntax {
            text: text.to_owned(),
        })?;
        let per_minute = n.saturating_mul(per);
        if per_minute == 0 || per_minute > u64::from(Pace::MAX_PER_SECOND) * 60 {
            return Err(PaceError::Range {
                text: text.to_owned(),
            });
        }
        Ok(Pace {
            per_minute: u32::try_from(per_minute).unwrap_or(u32::MAX),
        })
    }
}

impl fmt::Display for Pace {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.per_minute.is_multiple_of(60) {
            write!(f, "{}/s", self.per_minute / 60)
        } else {
            write!(f, "{}/m", self.per_minute)
        }
    }
}

impl Serialize for Pace {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Pace {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// Ending what is left of a drained group: after `deadline`, at most `pace`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DrainEnd {
    /// How long after the drain its flows are left to end by themselves.
    #[serde(with = "super::human::duration")]
    pub deadline: Duration,
    /// How fast the rest are ended.
    pub pace: Pace,
}

impl DrainEnd {
    /// Longest deadline: a week.
    pub const MAX_DEADLINE: Duration = Duration::from_hours(7 * 24);
    /// Pace when none is said: 50 flows a second.
    pub const DEFAULT_PACE: Pace = Pace::per_second(50);
    /// Shortest deadline: a second (flows get at least that long to end by themselves).
    pub const MIN_DEADLINE: Duration = Duration::from_secs(1);

    /// Checks the deadline against its bounds (the pace is checked when it is parsed).
    pub fn validate(&self) -> Result<(), super::PlanError> {
        let text = |d| humantime::format_duration(d).to_string();
        if self.deadline < Self::MIN_DEADLINE {
            return Err(super::PlanError::DrainDeadlineTooShort {
                deadline: text(self.deadline),
                min: text(Self::MIN_DEADLINE),
            });
        }
        if self.deadline > Self::MAX_DEADLINE {
            return Err(super::PlanError::DrainDeadlineTooLong {
                deadline: text(self.deadline),
                max: text(Self::MAX_DEADLINE),
            });
        }
        Ok(())
    }
}

/// A paced drain in force, as a revision keeps it so a restarted daemon continues it: the group,
/// the moment ending begins (absolute, so a restart neither restarts nor shortens the wait) and
/// the pace.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PacedDrain {
    /// Name of the service.
    pub service: String,
    /// Name of the group, in its service.
    pub group: String,
    /// When its flows still active begin to be ended (RFC 3339, UTC, milliseconds).
    #[serde(with = "rfc3339_millis")]
    pub ends_from: SystemTime,
    /// How fast they are ended.
    pub pace: Pace,
}

impl PacedDrain {
    /// The drain of `service`/`group` asked for at `now` with `end`: ending begins at
    /// `now + deadline`, rounded up to the millisecond (what the revision records, so a restarted
    /// daemon waits exactly as long, never less). `None` when that moment cannot be represented
    /// (a deadline `DrainEnd::validate` refuses).
    pub fn starting(service: &str, group: &str, end: DrainEnd, now: SystemTime) -> Option<Self> {
        let at = now.checked_add(end.deadline)?;
        let since = at.duration_since(SystemTime::UNIX_EPOCH).ok()?;
        let millis = since.as_nanos().div_ceil(1_000_000);
        let ends_from = SystemTime::UNIX_EPOCH
            .checked_add(Duration::from_millis(u64::try_from(millis).ok()?))?;
        Some(Self {
            service: service.to_owned(),
            group: group.to_owned(),
            ends_from,
            pace: end.pace,
        })
    }

    /// Its schedule (nothing ended yet).
    pub fn schedule(&self) -> Schedule {
        Schedule {
            ends_from: self.ends_from,
            pace: self.pace,
            credit: 0.0,
            last: None,
        }
    }
}

/// RFC 3339 with milliseconds: a drain's moment is kept to the millisecond.
mod rfc3339_millis {
    use std::time::SystemTime;

    use serde::{Deserialize as _, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(t: &SystemTime, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&humantime::format_rfc3339_millis(*t).to_string())
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<SystemTime, D::Error> {
        let text = String::deserialize(d)?;
        humantime::parse_rfc3339(&text).map_err(|e| {
            serde::de::Error::custom(format!(
                "a paced drain's `ends_from` `{text}` is not an RFC 3339 time in UTC ({e})"
            ))
        })
    }
}

/// A drain's schedule, from the moment it began: a token bucket that fills at the pace from the
/// deadline on, and holds at most half a second of it (a stalled daemon does not then end a
/// burst).
#[derive(Clone, Debug, PartialEq)]
pub struct Schedule {
    /// When ending begins.
    pub ends_from: SystemTime,
    /// The pace.
    pub pace: Pace,
    credit: f64,
    last: Option<SystemTime>,
}

impl Schedule {
    /// A drain that began at `began` with `end`.
    pub fn new(began: SystemTime, end: DrainEnd) -> Self {
        Self {
            ends_from: began + end.deadline,
            pace: end.pace,
            credit: 0.0,
            last: None,
        }
    }

    /// Whether ending has begun at `now`.
    pub fn ending(&self, now: SystemTime) -> bool {
        now >= self.ends_from
    }

    /// How many flows may be ended at `now` (call `spent` with how many were).
    pub fn budget(&mut self, now: SystemTime) -> u64 {
        if !self.ending(now) {
            return 0;
        }
        let from = self.last.unwrap_or(self.ends_from).max(self.ends_from);
        let dt = now.duration_since(from).unwrap_or_default().as_secs_f64();
        let rate = self.pace.flows_per_second();
        // The first flow may go at the deadline itself.
        let floor = if self.last.is_none() { 1.0 } else { 0.0 };
        self.credit = (self.credit + dt * rate + floor).min((rate / 2.0).max(1.0));
        self.last = Some(now);
        self.credit.floor() as u64
    }

    /// `n` flows were ended.
    pub fn spent(&mut self, n: u64) {
        self.credit = (self.credit - n as f64).max(0.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paces_parse_and_print() {
        assert_eq!("50/s".parse(), Ok(Pace::per_second(50)));
        assert_eq!("50".parse(), Ok(Pace::per_second(50)));
        assert_eq!("600/m".parse::<Pace>().unwrap(), Pace::per_second(10));
        assert_eq!("30/m".parse::<Pace>().unwrap().to_string(), "30/m");
        assert_eq!(Pace::per_second(100).to_string(), "100/s");
        assert!(matches!(
            "0/s".parse::<Pace>(),
            Err(PaceError::Range { .. })
        ));
        assert!(matches!(
            "100001/s".parse::<Pace>(),
            Err(PaceError::Range { .. })
        ));
        assert!(matches!(
            "fast".parse::<Pace>(),
            Err(PaceError::Syntax { .. })
        ));
        assert!(matches!(
            "5/h".parse::<Pace>(),
            Err(PaceError::Syntax { .. })
        ));
    }

    #[test]
    fn nothing_ends_before_the_deadline_then_the_pace_holds() {
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000);
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        let mut s = Schedule::new(
            t0,
            DrainEnd {
                deadline: Duration::from_secs(2),
                pace: Pace::per_second(100),
            },
        );
        assert_eq!(s.budget(at(1_999)), 0);
        let mut ended = 0;
        // Ticks every 100 ms for 2 s after the deadline: about 200 flows, 10 a tick.
        for ms in (2_000..=4_000).step_by(100) {
            let b = s.budget(at(ms));
            assert!(b <= 11, "{b} at {ms} ms");
            s.spent(b);
            ended += b;
        }
        assert!((199..=202).contains(&ended), "{ended}");
        // A stalled daemon does not burst: at most half a second of pace.
        assert_eq!(s.budget(at(60_000)), 50);
    }
}
