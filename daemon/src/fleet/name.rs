//! Node names (`--node NAME`): a path segment of etcd keys (`status/<node>`) and part of an etcd
//! role name (`veer-node-<node>`), so they are checked once, here.

use std::{fmt, str::FromStr};

/// The rule a node name follows (the same alphabet as service and group names).
pub const NODE_NAME_RULE: &str = "1 to 64 characters of A-Z a-z 0-9 _ - . (not `.` or `..`)";

/// A node's name in the fleet, unique per node (the host name is a good choice).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
#[serde(transparent)]
pub struct NodeName(String);

/// Why a node name is refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum NameError {
    /// Outside the rule.
    #[error("node name `{name}` is not valid: {NODE_NAME_RULE}")]
    Invalid {
        /// What was given.
        name: String,
    },
}

impl NodeName {
    /// Checks `name` against [`NODE_NAME_RULE`].
    pub fn new(name: &str) -> Result<NodeName, NameError> {
        let ok = (1..=64).contains(&name.len())
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"_-.".contains(&b))
            && name != "."
            && name != "..";
        if ok {
            Ok(NodeName(name.to_owned()))
        } else {
            Err(NameError::Invalid {
                name: name.to_owned(),
            })
        }
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for NodeName {
    type Err = NameError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        NodeName::new(s)
    }
}

impl fmt::Display for NodeName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Documents from other nodes are checked too: a name that breaks the rule does not deserialize.
impl<'de> serde::Deserialize<'de> for NodeName {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        NodeName::new(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_rule() {
        for good in ["edge-1", "a", "fra1.example.net", "N_2", &"x".repeat(64)] {
            assert_eq!(NodeName::new(good).unwrap().as_str(), good);
        }
        for bad in ["", ".", "..", "a/b", "a b", "é", &"x".repeat(65), "a\0"] {
            assert_eq!(
                NodeName::new(bad),
                Err(NameError::Invalid { name: bad.into() }),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn deserializing_checks_the_rule() {
        let n: NodeName = serde_json::from_str("\"edge-1\"").unwrap();
        assert_eq!(n.to_string(), "edge-1");
        let e = serde_json::from_str::<NodeName>("\"../x\"").unwrap_err();
        assert!(e.to_string().contains("not valid"), "{e}");
    }
}
