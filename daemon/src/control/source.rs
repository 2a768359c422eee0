//! The etcd source as the controller keeps it (`Following`) and shows it (`SourceView`); what
//! it does with it is `follow`'s. Data only: nothing here reads the controller.

use std::{collections::BTreeMap, sync::Arc, time::SystemTime};

use crate::{
    fleet::{AppliedConfig, NodeName, StatusError},
    sources::etcd::EtcdError,
};

/// The etcd source a daemon follows, as shown in `veer status`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EtcdSource {
    /// The endpoints, comma-separated.
    pub endpoints: String,
    /// The key prefix.
    pub prefix: String,
    /// This node's name in the fleet.
    pub node: NodeName,
}

/// What the controller keeps of the etcd source.
#[derive(Debug)]
pub(super) struct Following {
    /// Where.
    pub(super) source: EtcdSource,
    /// The watcher's state at the last pass (documents left out).
    pub(super) seen: Seen,
    /// The config document last applied or refused for good (a parse or rule error).
    pub(super) handled: Option<(String, i64)>,
    /// The config document in force (applied, or found already in force).
    pub(super) applied: Option<AppliedConfig>,
    /// The etcd revision the watcher was at when a config was last applied or refused.
    pub(super) applied_revision: i64,
    /// The config document refused, and why (every problem of a document that is not a valid
    /// config, each with its line), until a newer one applies.
    pub(super) refused: Vec<StatusError>,
    /// Per service: why the node's part of its fleet rollout cannot be done.
    pub(super) rollout_errors: BTreeMap<String, StatusError>,
    /// Whether a pass ran after the first full sync.
    pub(super) ready: bool,
}

/// The watcher's state without its documents.
#[derive(Clone, Debug, Default)]
pub(super) struct Seen {
    /// The etcd revision the watcher has heard of.
    pub(super) revision: i64,
    /// Since when etcd has been unreachable.
    pub(super) stale_since: Option<SystemTime>,
    /// The last etcd error.
    pub(super) error: Option<Arc<EtcdError>>,
    /// When the watcher last listed or reconnected.
    pub(super) last_sync: Option<SystemTime>,
}

/// The etcd source as `veer status` and the metrics show it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SourceView {
    /// Endpoints, prefix and node name.
    pub source: EtcdSource,
    /// Whether the node synced with etcd since it started (it serves its last local revision
    /// until then).
    pub ready: bool,
    /// The etcd revision the watcher has heard of.
    pub revision: i64,
    /// The config document in force.
    pub applied: Option<AppliedConfig>,
    /// Since when etcd has been unreachable; `None` while connected.
    pub stale_since: Option<SystemTime>,
    /// The last etcd error (kept after a reconnection until the next one).
    pub error: Option<String>,
    /// The config document refused, and why: its first problem, with how many more there are
    /// (the node's status document lists every one).
    pub refused: Option<StatusError>,
    /// Other errors (the node's part of fleet rollouts).
    pub errors: Vec<StatusError>,
    /// When the watcher last listed or reconnected.
    pub last_sync: Option<SystemTime>,
    /// Local changes in force over the config document, newest first.
    pub local_changes: Vec<String>,
}

impl Following {
    pub(super) fn new(source: EtcdSource) -> Self {
        Self {
            source,
            seen: Seen::default(),
            handled: None,
            applied: None,
            applied_revision: 0,
            refused: Vec::new(),
            rollout_errors: BTreeMap::new(),
            ready: false,
        }
    }
}
