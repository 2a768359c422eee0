//! Waves of a fleet rollout (`--waves 1,25%,100%`).
//!
//! Each entry is how many nodes have been reached once that wave starts, either a number of
//! nodes or a share of the fleet. The first wave is the canary. Rules:
//!
//! - Order: the canary (`--canary NODE`, else the first name) then the other nodes by name
//!   (byte order). The order is fixed when the rollout starts and stored in its plan, so every
//!   driver computes the same waves.
//! - A share is rounded **up** (`25%` of 3 nodes is 1 node, of 5 nodes is 2), so a share never
//!   rounds down to no node and a wave reaches at least its share.
//! - A count larger than the fleet is the whole fleet.
//! - A wave that would add no node (2 nodes, `1,25%,100%`: 25% is 1 node, the canary) is
//!   dropped: the next wave follows the canary directly.
//! - The last entry must be `100%`: a rollout reaches every node it started with.

use std::{fmt, str::FromStr};

use serde::{Deserialize, Serialize};

use super::name::NodeName;
use crate::model::Weight;

/// The default: one canary node, then a quarter of the fleet, then all of it.
pub const DEFAULT_WAVES: &str = "1,25%,100%";

/// How many nodes a wave reaches (cumulative).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WaveSize {
    /// This many nodes.
    Nodes(usize),
    /// This share of the fleet (rounded up).
    Share(Weight),
}

/// A parsed `--waves` list.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WaveSpec(Vec<WaveSize>);

/// Why a `--waves` list or a wave plan is refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum WavesError {
    /// Nothing given.
    #[error("`--waves` is empty; give e.g. `{DEFAULT_WAVES}`")]
    Empty,
    /// An entry that is neither a count nor a percentage.
    #[error(
        "`--waves` entry `{entry}` is neither a number of nodes (`1`) nor a share of the fleet (`25%`, `12.5%`)"
    )]
    BadEntry {
        /// The entry.
        entry: String,
    },
    /// A count of 0 or a share of 0%.
    #[error("`--waves` entry `{entry}` reaches no node")]
    Zero {
        /// The entry.
        entry: String,
    },
    /// Entries of one kind must grow.
    #[error("`--waves` entries must grow: `{entry}` comes after `{previous}`")]
    NotIncreasing {
        /// The earlier entry.
        previous: String,
        /// The entry that does not grow.
        entry: String,
    },
    /// The last entry is not `100%`.
    #[error("`--waves` must end at `100%` so every node is reached (it ends at `{last}`)")]
    NotWholeFleet {
        /// The last entry.
        last: String,
    },
    /// No node to roll out to.
    #[error(
        "no node can take part in the rollout (none reports the service, see `veer fleet status`)"
    )]
    NoNodes,
    /// The canary is not one of the nodes.
    #[error("canary `{node}` is not one of the nodes that can take part in the rollout")]
    UnknownCanary {
        /// The node given.
        node: NodeName,
    },
}

impl fmt::Display for WaveSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WaveSize::Nodes(n) => write!(f, "{n}"),
            WaveSize::Share(w) => write!(f, "{w}%"),
        }
    }
}

impl FromStr for WaveSpec {
    type Err = WavesError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let mut sizes = Vec::new();
        for entry in text.split(',').map(str::trim) {
            if entry.is_empty() && text.trim().is_empty() {
                return Err(WavesError::Empty);
            }
            let bad = || WavesError::BadEntry {
                entry: entry.to_owned(),
            };
            let size = if let Some(share) = entry.strip_suffix('%') {
                WaveSize::Share(Weight::from_percent_str(share).map_err(|_| bad())?)
            } else {
                let all_digits = !entry.is_empty() && entry.bytes().all(|b| b.is_ascii_digit());
                if !all_digits {
                    return Err(bad());
                }
                WaveSize::Nodes(entry.parse().map_err(|_| bad())?)
            };
            if matches!(size, WaveSize::Nodes(0)) || size == WaveSize::Share(Weight::ZERO) {
                return Err(WavesError::Zero {
                    entry: entry.to_owned(),
                });
            }
            let previous = sizes.iter().rev().find(|p| same_kind(p, &size));
            if let Some(previous) = previous
                && !grows(previous, &size)
            {
                return Err(WavesError::NotIncreasing {
                    previous: previous.to_string(),
                    entry: entry.to_owned(),
                });
            }
            sizes.push(size);
        }
        match sizes.last() {
            None => Err(WavesError::Empty),
            Some(WaveSize::Share(w)) if *w == Weight::FULL => Ok(WaveSpec(sizes)),
            Some(last) => Err(WavesError::NotWholeFleet {
                last: last.to_string(),
            }),
        }
    }
}

fn same_kind(a: &WaveSize, b: &WaveSize) -> bool {
    matches!(
        (a, b),
        (WaveSize::Nodes(_), WaveSize::Nodes(_)) | (WaveSize::Share(_), WaveSize::Share(_))
    )
}

fn grows(a: &WaveSize, b: &WaveSize) -> bool {
    match (a, b) {
        (WaveSize::Nodes(x), WaveSize::Nodes(y)) => y > x,
        (WaveSize::Share(x), WaveSize::Share(y)) => y > x,
        _ => true,
    }
}

impl fmt::Display for WaveSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, s) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{s}")?;
        }
        Ok(())
    }
}

impl Serialize for WaveSpec {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for WaveSpec {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

impl Default for WaveSpec {
    fn default() -> Self {
        WaveSpec(vec![
            WaveSize::Nodes(1),
            WaveSize::Share(Weight::from_basis_points(2_500).unwrap_or(Weight::FULL)),
            WaveSize::Share(Weight::FULL),
        ])
    }
}

impl WaveSpec {
    /// The entries.
    pub fn sizes(&self) -> &[WaveSize] {
        &self.0
    }

    /// How many nodes are reached once each entry's wave has started, for a fleet of `total`
    /// (not deduplicated: see [`plan_waves`]).
    pub fn reach(&self, total: usize) -> Vec<usize> {
        let mut reached = 0;
        self.0
            .iter()
            .map(|size| {
                let n = match *size {
                    WaveSize::Nodes(n) => n.min(total),
                    WaveSize::Share(w) => {
                        let bp = w.basis_points() as usize;
                        (total * bp).div_ceil(Weight::FULL.basis_points() as usize)
                    }
                };
                reached = reached.max(n);
                reached
            })
            .collect()
    }
}

/// Splits `nodes` into waves: the canary (or the first name) first, then by name; each wave
/// adds the nodes up to its entry's reach; waves that add nobody are dropped.
pub fn plan_waves(
    spec: &WaveSpec,
    nodes: &[NodeName],
    canary: Option<&NodeName>,
) -> Result<Vec<Vec<NodeName>>, WavesError> {
    let mut order: Vec<NodeName> = nodes.to_vec();
    order.sort();
    order.dedup();
    if order.is_empty() {
        return Err(WavesError::NoNodes);
    }
    if let Some(canary) = canary {
        let at =
            order
                .iter()
                .position(|n| n == canary)
                .ok_or_else(|| WavesError::UnknownCanary {
                    node: canary.clone(),
                })?;
        let c = order.remove(at);
        order.insert(0, c);
    }
    let mut waves = Vec::new();
    let mut from = 0;
    for to in spec.reach(order.len()) {
        if to > from {
            waves.push(order[from..to].to_vec());
            from = to;
        }
    }
    Ok(waves)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nodes(n: usize) -> Vec<NodeName> {
        (1..=n)
            .map(|i| NodeName::new(&format!("edge-{i:03}")).unwrap())
            .collect()
    }

    fn sizes(waves: &[Vec<NodeName>]) -> Vec<usize> {
        waves.iter().map(Vec::len).collect()
    }

    fn plan(spec: &str, n: usize) -> Vec<usize> {
        sizes(&plan_waves(&spec.parse().unwrap(), &nodes(n), None).unwrap())
    }

    #[test]
    fn the_default_is_canary_quarter_all() {
        assert_eq!(WaveSpec::default().to_string(), DEFAULT_WAVES);
        assert_eq!(
            DEFAULT_WAVES.parse::<WaveSpec>().unwrap(),
            WaveSpec::default()
        );
    }

    #[test]
    fn small_fleets() {
        assert_eq!(
            plan("1,25%,100%", 1),
            [1],
            "one node: the canary is the fleet"
        );
        assert_eq!(
            plan("1,25%,100%", 2),
            [1, 1],
            "25% of 2 is the canary: dropped"
        );
        assert_eq!(
            plan("1,25%,100%", 3),
            [1, 2],
            "25% of 3 rounds up to the canary"
        );
        assert_eq!(plan("1,25%,100%", 4), [1, 3]);
        assert_eq!(plan("1,25%,100%", 5), [1, 1, 3], "25% of 5 rounds up to 2");
    }

    #[test]
    fn shares_round_up_and_counts_cap_at_the_fleet() {
        assert_eq!(plan("1,25%,100%", 200), [1, 49, 150]);
        assert_eq!(
            plan("1,25%,100%", 201),
            [1, 50, 150],
            "50.25 rounds up to 51"
        );
        assert_eq!(plan("10,100%", 3), [3], "10 nodes of 3 is the fleet");
        assert_eq!(plan("1,0.5%,100%", 1000), [1, 4, 995]);
        assert_eq!(plan("1,5,12.5%,100%", 16), [1, 4, 11]);
        assert_eq!(plan("100%", 7), [7], "no canary when asked for none");
    }

    #[test]
    fn the_order_is_by_name_with_the_canary_first() {
        let names: Vec<NodeName> = ["c", "a", "b", "a"]
            .iter()
            .map(|s| NodeName::new(s).unwrap())
            .collect();
        let spec: WaveSpec = "1,100%".parse().unwrap();
        let w = plan_waves(&spec, &names, None).unwrap();
        assert_eq!(w[0][0].as_str(), "a");
        assert_eq!(
            w[1].iter().map(NodeName::as_str).collect::<Vec<_>>(),
            ["b", "c"]
        );
        let c = NodeName::new("c").unwrap();
        let w = plan_waves(&spec, &names, Some(&c)).unwrap();
        assert_eq!(w[0][0].as_str(), "c");
        assert_eq!(
            w[1].iter().map(NodeName::as_str).collect::<Vec<_>>(),
            ["a", "b"]
        );
        let z = NodeName::new("z").unwrap();
        assert_eq!(
            plan_waves(&spec, &names, Some(&z)),
            Err(WavesError::UnknownCanary { node: z })
        );
        assert_eq!(plan_waves(&spec, &[], None), Err(WavesError::NoNodes));
    }

    #[test]
    fn every_node_is_in_exactly_one_wave() {
        for n in 1..=60 {
            for spec in ["1,25%,100%", "1,2,3,50%,100%", "33.33%,66.66%,100%"] {
                let all = nodes(n);
                let waves = plan_waves(&spec.parse().unwrap(), &all, None).unwrap();
                let flat: Vec<NodeName> = waves.concat();
                assert_eq!(flat, all, "{spec} over {n}");
                assert!(waves.iter().all(|w| !w.is_empty()));
            }
        }
    }

    #[test]
    fn bad_lists_say_what_is_wrong() {
        for (text, err) in [
            ("", WavesError::Empty),
            ("1,x,100%", WavesError::BadEntry { entry: "x".into() }),
            (
                "1,,100%",
                WavesError::BadEntry {
                    entry: String::new(),
                },
            ),
            ("-1,100%", WavesError::BadEntry { entry: "-1".into() }),
            (
                "1,101%",
                WavesError::BadEntry {
                    entry: "101%".into(),
                },
            ),
            ("0,100%", WavesError::Zero { entry: "0".into() }),
            (
                "5,3,100%",
                WavesError::NotIncreasing {
                    previous: "5".into(),
                    entry: "3".into(),
                },
            ),
            (
                "1,50%,50%,100%",
                WavesError::NotIncreasing {
                    previous: "50%".into(),
                    entry: "50%".into(),
                },
            ),
            ("1,50%", WavesError::NotWholeFleet { last: "50%".into() }),
            ("1,100%,10", WavesError::NotWholeFleet { last: "10".into() }),
        ] {
            assert_eq!(text.parse::<WaveSpec>(), Err(err), "{text:?}");
        }
    }

    #[test]
    fn a_spec_round_trips_as_json_text() {
        let s: WaveSpec = "1,12.5%,100%".parse().unwrap();
        let json = serde_json::to_string(&s).unwrap();
        assert_eq!(json, "\"1,12.5%,100%\"");
        assert_eq!(serde_json::from_str::<WaveSpec>(&json).unwrap(), s);
    }
}
