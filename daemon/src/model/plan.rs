//! A rollout plan and the weights of its steps.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{Service, Weight, drain::DrainEnd, gate::Gate, tolerance::Tolerances};

/// What to do when a gate fails.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnFailure {
    /// Restore the weights from before the rollout at once.
    #[default]
    Rollback,
    /// Go back one step (to the pre-rollout weights from the first step) and hold there, paused.
    StepBack,
}

/// A rollout of one service to one group.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Plan {
    /// The group that ends with all new flows.
    pub to: String,
    /// The target group's share at each step, increasing, ending at 100.
    pub steps: Vec<Weight>,
    /// How long each step is watched before the next.
    #[serde(with = "super::human::duration")]
    pub pause: Duration,
    /// Largest failed/attempted share of the target group's new flows in a step (basis points).
    pub max_failure_rate: Weight,
    /// Attempts needed in a step before the failure rate is judged and the step may end.
    pub min_flows: u64,
    /// Extra gates checked at the end of every step.
    #[serde(default)]
    pub gates: Vec<Gate>,
    /// How long one extra gate may take.
    #[serde(with = "super::human::duration")]
    pub gate_timeout: Duration,
    /// What a breach does.
    #[serde(default)]
    pub on_failure: OnFailure,
    /// After a daemon restart, hold (paused) instead of resuming.
    #[serde(default)]
    pub hold_on_restart: bool,
    /// The canary judge's tolerances: every step that still has a baseline is judged
    /// (`rollout::canary`); none, no judge.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub judge: Option<Tolerances>,
    /// Once the rollout completes, the groups it took to 0 are drained with this deadline and
    /// pace (`model::drain`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drain: Option<DrainEnd>,
}

/// Why a plan cannot start.
#[derive(Clone, Debug, thiserror::Error, PartialEq, Eq)]
pub enum PlanError {
    /// The target group does not exist.
    #[error("service `{service}` has no group `{group}`")]
    UnknownGroup {
        /// Name of the service.
        service: String,
        /// Name of the group, in its service.
        group: String,
    },
    /// Steps must increase and end at 100.
    #[error("rollout steps must increase strictly and end at 100 (got {steps})")]
    BadSteps {
        /// The steps given.
        steps: String,
    },
    /// A step watched for less than `Plan::MIN_PAUSE`.
    #[error("rollout pause {pause} is shorter than the {min} minimum")]
    PauseTooShort {
        /// The pause given.
        pause: String,
        /// The minimum.
        min: String,
    },
    /// A step watched for more than `Plan::MAX_PAUSE`.
    #[error("rollout pause {pause} is longer than the {max} maximum")]
    PauseTooLong {
        /// The pause given.
        pause: String,
        /// The maximum.
        max: String,
    },
    /// A gate given more than `Plan::MAX_GATE_TIMEOUT`.
    #[error("rollout gate timeout {timeout} is longer than the {max} maximum")]
    GateTimeoutTooLong {
        /// The timeout given.
        timeout: String,
        /// The maximum.
        max: String,
    },
    /// A gate given less than `Plan::MIN_GATE_TIMEOUT`.
    #[error("rollout gate timeout {timeout} is shorter than the {min} minimum")]
    GateTimeoutTooShort {
        /// The timeout given.
        timeout: String,
        /// The minimum.
        min: String,
    },
    /// The target has no backend.
    #[error("group `{group}` has no backends to roll out to")]
    EmptyTarget {
        /// Name of the group, in its service.
        group: String,
    },
    /// A tolerance of the canary judge out of its range.
    #[error("rollout judge: {source}")]
    Tolerance {
        /// Which and why.
        #[source]
        source: super::tolerance::ToleranceError,
    },
    /// A drain deadline longer than `DrainEnd::MAX_DEADLINE`.
    #[error("drain deadline {deadline} is longer than the {max} maximum")]
    DrainDeadlineTooLong {
        /// The deadline given.
        deadline: String,
        /// The maximum.
        max: String,
    },
    /// A drain deadline shorter than `DrainEnd::MIN_DEADLINE`.
    #[error("drain deadline {deadline} is shorter than the {min} minimum")]
    DrainDeadlineTooShort {
        /// The deadline given.
        deadline: String,
        /// The minimum.
        min: String,
    },
    /// Nothing to move.
    #[error("service `{service}` already sends all new flows to `{group}`")]
    AlreadyThere {
        /// Name of the service.
        service: String,
        /// Name of the group, in its service.
        group: String,
    },
}

impl Plan {
    /// Steps when none are given, in percent of new flows to the target group.
    pub const DEFAULT_STEPS: [u32; 5] = [1, 5, 25, 50, 100];
    /// How long each step is watched when not said.
    pub const DEFAULT_PAUSE: Duration = Duration::from_secs(30);
    /// Largest failure rate of a step when not said: 1%.
    pub const DEFAULT_MAX_FAILURE_RATE: Weight = Weight::percent(1);
    /// New flows a step needs before it is judged, when not said.
    pub const DEFAULT_MIN_FLOWS: u64 = 10;
    /// How long one extra gate may take when not said.
    pub const DEFAULT_GATE_TIMEOUT: Duration = Duration::from_secs(10);
    /// Shortest pause: a step is watched at least this long.
    pub const MIN_PAUSE: Duration = Duration::from_secs(1);
    /// Shortest gate timeout.
    pub const MIN_GATE_TIMEOUT: Duration = Duration::from_millis(100);
    /// Longest pause: a step is watched at most a week.
    pub const MAX_PAUSE: Duration = Duration::from_hours(7 * 24);
    /// Longest gate timeout.
    pub const MAX_GATE_TIMEOUT: Duration = Duration::from_mins(10);

    /// A plan to `to` with every default: the default steps, pause, failure rate, flows and
    /// gate timeout, no extra gates, rollback on failure, resume after a restart.
    pub fn to(group: &str) -> Self {
        Self {
            to: group.to_owned(),
            steps: Self::DEFAULT_STEPS.map(Weight::percent).to_vec(),
            pause: Self::DEFAULT_PAUSE,
            max_failure_rate: Self::DEFAULT_MAX_FAILURE_RATE,
            min_flows: Self::DEFAULT_MIN_FLOWS,
            gates: Vec::new(),
            gate_timeout: Self::DEFAULT_GATE_TIMEOUT,
            on_failure: OnFailure::default(),
            hold_on_restart: false,
            judge: None,
            drain: None,
        }
    }

    /// Checks the plan against the service.
    pub fn validate(&self, service: &Service) -> Result<(), PlanError> {
        let target = service
            .group(&self.to)
            .ok_or_else(|| PlanError::UnknownGroup {
                service: service.name.clone(),
                group: self.to.clone(),
            })?;
        if target.backends.is_empty() {
            return Err(PlanError::EmptyTarget {
                group: self.to.clone(),
            });
        }
        let increasing = self.steps.windows(2).all(|w| w[0] < w[1]);
        if self.steps.is_empty()
            || !increasing
            || self.steps.last() != Some(&Weight::FULL)
            || self.steps[0].is_zero()
        {
            return Err(PlanError::BadSteps {
                steps: self
                    .steps
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(","),
            });
        }
        if self.pause < Self::MIN_PAUSE {
            return Err(PlanError::PauseTooShort {
                pause: humantime::format_duration(self.pause).to_string(),
                min: humantime::format_duration(Self::MIN_PAUSE).to_string(),
            });
        }
        if self.pause > Self::MAX_PAUSE {
            return Err(PlanError::PauseTooLong {
                pause: humantime::format_duration(self.pause).to_string(),
                max: humantime::format_duration(Self::MAX_PAUSE).to_string(),
            });
        }
        if self.gate_timeout < Self::MIN_GATE_TIMEOUT {
            return Err(PlanError::GateTimeoutTooShort {
                timeout: humantime::format_duration(self.gate_timeout).to_string(),
                min: humantime::format_duration(Self::MIN_GATE_TIMEOUT).to_string(),
            });
        }
        if self.gate_timeout > Self::MAX_GATE_TIMEOUT {
            return Err(PlanError::GateTimeoutTooLong {
                timeout: humantime::format_duration(self.gate_timeout).to_string(),
                max: humantime::format_duration(Self::MAX_GATE_TIMEOUT).to_string(),
            });
        }
        if let Some(t) = &self.judge {
            t.validate()
                .map_err(|source| PlanError::Tolerance { source })?;
        }
        if let Some(d) = &self.drain {
            d.validate()?;
        }
        let others = service
            .groups
            .iter()
            .any(|g| g.name != self.to && !g.weight.is_zero());
        if !others {
            return Err(PlanError::AlreadyThere {
                service: service.name.clone(),
                group: self.to.clone(),
            });
        }
        Ok(())
    }
}

/// The weights of every group when the target gets `share`: the other groups split the rest in
/// proportion to their pre-rollout weights. Exact in basis points (the rounding remainder goes
/// to the largest other group).
pub fn weights_at(original: &[(String, Weight)], to: &str, share: Weight) -> Vec<(String, Weight)> {
    let rest = Weight::FULL.basis_points() - share.basis_points();
    let others: u64 = original
        .iter()
        .filter(|(g, _)| g != to)
        .map(|(_, w)| u64::from(w.basis_points()))
        .sum();
    let mut out: Vec<(String, Weight)> = original
        .iter()
        .map(|(g, w)| {
            let bp = if g == to {
                share.basis_points()
            } else {
                // Infallible conversion: the share of `rest` (<= 10000) is at most `rest`.
                (u64::from(w.basis_points()) * u64::from(rest))
                    .checked_div(others)
                    .and_then(|v| u32::try_from(v).ok())
                    .unwrap_or(0)
            };
            (
                g.clone(),
                Weight::from_basis_points(bp).unwrap_or(Weight::ZERO),
            )
        })
        .collect();
    let given: u32 = out
        .iter()
        .filter(|(g, _)| g != to)
        .map(|(_, w)| w.basis_points())
        .sum();
    if others > 0
        && given < rest
        && let Some(largest) = out
            .iter_mut()
            .filter(|(g, _)| g != to)
            .max_by_key(|(g, _)| {
                original
                    .iter()
                    .find(|(o, _)| o == g)
                    .map_or(0, |(_, w)| w.basis_points())
            })
    {
        largest.1 =
            Weight::from_basis_points(largest.1.basis_points() + rest - given).unwrap_or(largest.1);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn w(s: &str) -> Weight {
        Weight::from_percent_str(s).unwrap()
    }

    #[test]
    fn others_keep_their_proportions_and_everything_sums_to_100() {
        let original = vec![
            ("a".to_owned(), w("60")),
            ("b".to_owned(), w("30")),
            ("new".to_owned(), w("10")),
        ];
        let at = |s| weights_at(&original, "new", w(s));
        assert_eq!(
            at("25"),
            [
                ("a".into(), w("50")),
                ("b".into(), w("25")),
                ("new".into(), w("25"))
            ]
        );
        assert_eq!(
            at("100"),
            [
                ("a".into(), w("0")),
                ("b".into(), w("0")),
                ("new".into(), w("100"))
            ]
        );
        let odd = at("33.33");
        assert_eq!(
            odd.iter().map(|(_, w)| w.basis_points()).sum::<u32>(),
            10_000
        );
        assert_eq!(odd[2].1, w("33.33"));
    }
}
