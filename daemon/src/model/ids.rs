//! Identities of the named things of a state, and the numeric ids the kernel knows them by.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::SocketAddr,
};

/// Identity of a group: (service name, group name).
pub type GroupRef = (String, String);
/// Identity of a backend: (service name, group name, address).
pub type BackendRef = (String, String, SocketAddr);

/// Numeric ids given to the named things of a state. Stable for as long as a thing exists, so
/// counters and conntrack entries keep meaning the same thing across applies.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Ids {
    /// Service name -> service id.
    #[serde(with = "as_pairs")]
    pub services: BTreeMap<String, u32>,
    /// Group -> group id (Maglev outer index).
    #[serde(with = "as_pairs")]
    pub groups: BTreeMap<GroupRef, u32>,
    /// Backend -> backend id.
    #[serde(with = "as_pairs")]
    pub backends: BTreeMap<BackendRef, u32>,
}

/// Maps with composite keys as JSON lists of `[key, value]` pairs.
mod as_pairs {
    use std::collections::BTreeMap;

    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub(super) fn serialize<K: Serialize, V: Serialize, S: Serializer>(
        m: &BTreeMap<K, V>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        s.collect_seq(m.iter())
    }

    pub(super) fn deserialize<'de, K, V, D>(d: D) -> Result<BTreeMap<K, V>, D::Error>
    where
        K: Deserialize<'de> + Ord,
        V: Deserialize<'de>,
        D: Deserializer<'de>,
    {
        Ok(Vec::<(K, V)>::deserialize(d)?.into_iter().collect())
    }
}

/// Backends that must get no new flows (failing health checks): left out of their group's
/// Maglev table, their established flows untouched, their ids and counters kept.
pub type Down = BTreeSet<BackendRef>;
