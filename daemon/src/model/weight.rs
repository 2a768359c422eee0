//! Weights: a share of new flows, in basis points (1/10000), written as a percentage with up to
//! two decimals (`90`, `12.5`, `0.01`).

use std::{fmt, str::FromStr};

use veer_common::select::WEIGHT_SCALE;

/// A group's weight in basis points, `0..=10000`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Weight(u32);

/// Why a weight does not parse.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum WeightError {
    /// Not a number with at most two decimals.
    #[error("`{text}` is not a percentage with at most two decimals (e.g. 90, 12.5, 0.01)")]
    Syntax {
        /// What was given.
        text: String,
    },
    /// Above 100.
    #[error("{text} is out of range 0..=100")]
    Range {
        /// What was given.
        text: String,
    },
}

impl Weight {
    /// No new flows.
    pub const ZERO: Weight = Weight(0);
    /// Every new flow.
    pub const FULL: Weight = Weight(WEIGHT_SCALE);

    /// From basis points; `None` above 10000.
    pub const fn from_basis_points(bp: u32) -> Option<Weight> {
        if bp > WEIGHT_SCALE {
            None
        } else {
            Some(Weight(bp))
        }
    }

    /// `p` percent; 100 above 100.
    pub const fn percent(p: u32) -> Weight {
        if p >= 100 {
            Weight::FULL
        } else {
            Weight(p * 100)
        }
    }

    /// Basis points.
    pub const fn basis_points(self) -> u32 {
        self.0
    }

    /// Whether the weight is 0.
    pub const fn is_zero(self) -> bool {
        self.0 == 0
    }

    /// Parses a percentage (`"90"`, `"12.5"`, `"0.01"`) exactly, without floating point.
    pub fn from_percent_str(text: &str) -> Result<Weight, WeightError> {
        let syntax = || WeightError::Syntax {
            text: text.to_owned(),
        };
        let (int, frac) = text.split_once('.').unwrap_or((text, ""));
        if int.is_empty()
            || int.len() > 3
            || frac.len() > 2
            || !int.bytes().all(|b| b.is_ascii_digit())
            || !frac.bytes().all(|b| b.is_ascii_digit())
            || (text.contains('.') && frac.is_empty())
        {
            return Err(syntax());
        }
        let int: u32 = int.parse().map_err(|_| syntax())?;
        let frac: u32 = if frac.is_empty() {
            0
        } else {
            format!("{frac:0<2}").parse().map_err(|_| syntax())?
        };
        Weight::from_basis_points(int * 100 + frac).ok_or_else(|| WeightError::Range {
            text: text.to_owned(),
        })
    }
}

/// A weight is a JSON number in percent (`90`, `12.5`).
impl serde::Serialize for Weight {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if self.0.is_multiple_of(100) {
            s.serialize_u32(self.0 / 100)
        } else {
            s.serialize_f64(f64::from(self.0) / 100.0)
        }
    }
}

impl<'de> serde::Deserialize<'de> for Weight {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let n = serde_json::Number::deserialize(d)?;
        Weight::from_percent_str(&n.to_string()).map_err(serde::de::Error::custom)
    }
}

impl FromStr for Weight {
    type Err = WeightError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Weight::from_percent_str(s)
    }
}

impl fmt::Display for Weight {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (int, frac) = (self.0 / 100, self.0 % 100);
        if frac == 0 {
            write!(f, "{int}")
        } else if frac % 10 == 0 {
            write!(f, "{int}.{}", frac / 10)
        } else {
            write!(f, "{int}.{frac:02}")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentages_parse_exactly() {
        for (text, bp) in [
            ("0", 0),
            ("100", 10_000),
            ("90", 9_000),
            ("12.5", 1_250),
            ("0.01", 1),
            ("99.99", 9_999),
            ("7.05", 705),
        ] {
            assert_eq!(
                Weight::from_percent_str(text).unwrap().basis_points(),
                bp,
                "{text}"
            );
            assert_eq!(Weight::from_percent_str(text).unwrap().to_string(), text);
        }
    }

    #[test]
    fn json_is_a_percent_number() {
        for (w, json) in [("90", "90"), ("12.5", "12.5"), ("0.01", "0.01"), ("0", "0")] {
            let w = Weight::from_percent_str(w).unwrap();
            assert_eq!(serde_json::to_string(&w).unwrap(), json);
            assert_eq!(serde_json::from_str::<Weight>(json).unwrap(), w);
        }
        assert!(serde_json::from_str::<Weight>("101").is_err());
    }

    #[test]
    fn bad_percentages_say_why() {
        assert_eq!(
            Weight::from_percent_str("100.01"),
            Err(WeightError::Range {
                text: "100.01".into()
            })
        );
        assert_eq!(
            Weight::from_percent_str("120"),
            Err(WeightError::Range { text: "120".into() })
        );
        for bad in ["", "-1", "0.001", "1e2", "5.", ".5", "abc", "1000"] {
            assert!(
                matches!(
                    Weight::from_percent_str(bad),
                    Err(WeightError::Syntax { .. } | WeightError::Range { .. })
                ),
                "{bad}"
            );
        }
    }
}
