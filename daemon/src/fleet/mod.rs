//! Fleets: the pure side of running many nodes from one etcd prefix.
//!
//! - `name`: node names (`--node`), checked once.
//! - `keys`: the key layout under the prefix (`config`, `nodes/<node>/config`, `status/<node>`,
//!   `rollouts/<service>/{plan,progress}`, the `driver` election) and the etcd permissions each
//!   role needs.
//! - `view`: the keys a node follows, and which config document is in force for it (its own
//!   `nodes/<node>/config` over the fleet's `config`).
//! - `status`: the `status/<node>` document each daemon writes under its lease.
//! - `waves`: `--waves 1,25%,100%` and how it splits a fleet into waves.
//! - `rollout`: a fleet rollout's plan and progress as stored in etcd, the driver's decision
//!   (`decide`), and what each node does about it (`directive`).
//!
//! Everything here is data and functions of data: no etcd, no clock, no I/O. It sits at the
//! model layer: it imports `model` (and the per-node rollout `Plan` the model already carries),
//! never `sources`, `control`, `api` or `cli`. `sources::etcd` moves these documents in and out
//! of etcd; the control core decides with them.

pub mod keys;
pub mod name;
pub mod rollout;
pub mod status;
pub mod view;
pub mod waves;

pub use keys::{Access, FleetKey, Grant, KeyError, KeyLayout, Role};
pub use name::{NameError, NodeName};
pub use rollout::{
    Decision, Directive, ExcludeReason, Excluded, FleetRollout, FleetState, MissingNode, Progress,
    Skipped, StartRequest, Tracker, candidates, decide, directive, start,
};
pub use status::{
    AppliedConfig, GroupStatus, NodeRollout, NodeStatus, RolloutPhase, STATUS_SCHEMA,
    ServiceStatus, StatusError, state_hash,
};
pub use view::{Document, DocumentError, NodeView, Range, RolloutDocuments};
pub use waves::{DEFAULT_WAVES, WaveSize, WaveSpec, WavesError, plan_waves};

/// `t` without its sub-millisecond part: what a document's timestamp keeps of it.
pub fn whole_millis(t: std::time::SystemTime) -> std::time::SystemTime {
    let since = t
        .duration_since(std::time::SystemTime::UNIX_EPOCH)
        .unwrap_or_default();
    let ms = since.as_millis();
    std::time::SystemTime::UNIX_EPOCH
        + std::time::Duration::from_millis(u64::try_from(ms).unwrap_or(u64::MAX))
}

/// RFC 3339 timestamps with milliseconds in the documents (`2025-01-02T03:04:05.678Z`), so
/// propagation lag can be read off two of them.
pub(crate) mod rfc3339_millis {
    use std::time::SystemTime;

    use serde::{Deserialize as _, Deserializer, Serializer};

    pub(crate) fn serialize<S: Serializer>(t: &SystemTime, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&humantime::format_rfc3339_millis(*t).to_string())
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<SystemTime, D::Error> {
        humantime::parse_rfc3339_weak(&String::deserialize(d)?).map_err(serde::de::Error::custom)
    }
}

/// Durations as humantime text in the documents (`"5m"`).
pub(crate) mod duration_text {
    use std::time::Duration;

    use serde::{Deserialize as _, Deserializer, Serializer};

    pub(crate) fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&humantime::format_duration(*d).to_string())
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        humantime::parse_duration(&String::deserialize(d)?).map_err(serde::de::Error::custom)
    }
}
