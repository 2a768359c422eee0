//! The `status/<node>` document: what a node runs, how far it has synced, what is wrong, and
//! where its part of a fleet rollout is. Each daemon writes its own under its lease, so a dead
//! node's status disappears; `veer fleet status` and the rollout driver read them all.
//!
//! It is a wire format between daemons of possibly different versions (a fleet upgrades node by
//! node), so it carries a schema number, ignores fields it does not know, and reads a rollout
//! phase it does not know as `unknown` rather than refusing the whole document.

use std::{fmt::Write as _, net::SocketAddr, time::SystemTime};

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use super::name::NodeName;
use crate::model::{DesiredState, Weight};

/// The schema this build writes. A reader accepts any; fields added later have defaults.
pub const STATUS_SCHEMA: u32 = 1;

/// One node's status.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeStatus {
    /// [`STATUS_SCHEMA`] of the writer.
    pub schema: u32,
    /// The node.
    pub node: NodeName,
    /// The writer's veer version (`CARGO_PKG_VERSION`).
    pub veer_version: String,
    /// Whether the node completed its first full sync since it started.
    pub ready: bool,
    /// The etcd revision the node had synced to when it last applied (or refused) a config.
    pub etcd_revision: i64,
    /// The config document in force, when there is one.
    pub config: Option<AppliedConfig>,
    /// The node's local revision number (`veer history`).
    pub local_revision: u64,
    /// [`state_hash`] of the desired state in force.
    pub state_hash: String,
    /// What is wrong, newest first (a refused config, an unreachable backend check ...).
    #[serde(default)]
    pub errors: Vec<StatusError>,
    /// Services in force, with their weights, backend health and rollout.
    #[serde(default)]
    pub services: Vec<ServiceStatus>,
    /// When the node last completed a sync with etcd.
    #[serde(with = "super::rfc3339_millis")]
    pub last_sync: SystemTime,
    /// Local changes (`veer shift` ... on the node) in force over the config document until
    /// its next change, newest first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub local_changes: Vec<String>,
}

/// The config document a node applied.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppliedConfig {
    /// `…/config` or `…/nodes/<node>/config`.
    pub key: String,
    /// Its mod revision (compare with the key's current one for the lag).
    pub mod_revision: i64,
}

/// Something wrong on a node, with where it comes from.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusError {
    /// The key it is about (a refused config names its key, like a file), or empty.
    #[serde(default)]
    pub key: String,
    /// The key's mod revision it is about, or 0.
    #[serde(default)]
    pub mod_revision: i64,
    /// The full message (`/veer/config:12:9: weight 120 is out of range 0..=100`).
    pub message: String,
}

/// One service on a node.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceStatus {
    /// Name.
    pub name: String,
    /// Groups with weight and backend health.
    pub groups: Vec<GroupStatus>,
    /// The service's rollout on this node, if one ran or runs.
    #[serde(default)]
    pub rollout: Option<NodeRollout>,
}

/// One group on a node.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupStatus {
    /// Name.
    pub name: String,
    /// Weight in force.
    pub weight: Weight,
    /// Backends in the group.
    pub backends: u32,
    /// Backends that are up (health checks).
    pub up: u32,
    /// The ones that are down.
    #[serde(default)]
    pub down: Vec<SocketAddr>,
}

/// A rollout as a node runs it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeRollout {
    /// The fleet rollout it is part of ([`FleetRollout::id`](super::FleetRollout::id)), or
    /// none for a rollout started on this node alone.
    #[serde(default)]
    pub fleet_id: Option<String>,
    /// Target group.
    pub to: String,
    /// Phase.
    pub phase: RolloutPhase,
    /// Index of the current step.
    pub step: usize,
    /// Number of steps.
    pub steps: usize,
    /// The gate that failed (rolled back), or the reason of a pause or abort.
    #[serde(default)]
    pub gate: Option<String>,
    /// Why.
    #[serde(default)]
    pub reason: Option<String>,
}

/// Where a node's rollout is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RolloutPhase {
    /// Watching a step.
    Running,
    /// Held.
    Paused,
    /// Every step passed: all new flows go to the target.
    Completed,
    /// A gate failed and the node restored its weights from before the rollout.
    RolledBack,
    /// Aborted on the node.
    Aborted,
    /// A phase a newer veer writes.
    #[serde(other)]
    Unknown,
}

impl NodeStatus {
    /// The service named `name`.
    pub fn service(&self, name: &str) -> Option<&ServiceStatus> {
        self.services.iter().find(|s| s.name == name)
    }

    /// The JSON written to etcd.
    pub fn to_json(&self) -> Vec<u8> {
        // Infallible: every field serializes (strings, integers, weights, addresses, times).
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// Reads a status written by any version of veer.
    pub fn from_json(bytes: &[u8]) -> Result<NodeStatus, serde_json::Error> {
        serde_json::from_slice(bytes)
    }
}

/// SHA-256 (hex) of a desired state's canonical JSON: two nodes with the same hash run the same
/// services, weights, backends and pins, whatever document they came from.
pub fn state_hash(state: &DesiredState) -> String {
    // Infallible: `DesiredState` is plain data that always serializes.
    let json = serde_json::to_vec(state).unwrap_or_default();
    Sha256::digest(&json)
        .iter()
        .fold(String::with_capacity(64), |mut hex, b| {
            // Infallible: writing to a String cannot fail.
            let _ok = write!(hex, "{b:02x}");
            hex
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status() -> NodeStatus {
        NodeStatus {
            schema: STATUS_SCHEMA,
            node: NodeName::new("edge-1").unwrap(),
            veer_version: "0.1.0".into(),
            ready: true,
            etcd_revision: 42,
            config: Some(AppliedConfig {
                key: "/veer/config".into(),
                mod_revision: 40,
            }),
            local_revision: 7,
            state_hash: state_hash(&crate::model::fixtures::web()),
            errors: vec![StatusError {
                key: "/veer/config".into(),
                mod_revision: 41,
                message: "/veer/config:3:10: weight 120 is out of range 0..=100".into(),
            }],
            services: vec![ServiceStatus {
                name: "web".into(),
                groups: vec![GroupStatus {
                    name: "v2".into(),
                    weight: Weight::from_percent_str("12.5").unwrap(),
                    backends: 2,
                    up: 1,
                    down: vec!["198.51.100.22:8080".parse().unwrap()],
                }],
                rollout: Some(NodeRollout {
                    fleet_id: Some("web-1".into()),
                    to: "v2".into(),
                    phase: RolloutPhase::Running,
                    step: 1,
                    steps: 5,
                    gate: None,
                    reason: None,
                }),
            }],
            last_sync: SystemTime::UNIX_EPOCH + std::time::Duration::from_millis(1_700_000_000_123),
            local_changes: vec!["revision 8: drain web/v2".into()],
        }
    }

    #[test]
    fn the_document_round_trips_with_millisecond_times() {
        let s = status();
        let json = String::from_utf8(s.to_json()).unwrap();
        assert!(
            json.contains("\"last_sync\":\"2023-11-14T22:13:20.123Z\""),
            "{json}"
        );
        assert!(json.contains("\"weight\":12.5"), "{json}");
        assert_eq!(NodeStatus::from_json(json.as_bytes()).unwrap(), s);
    }

    #[test]
    fn a_newer_writer_is_still_read() {
        let mut v: serde_json::Value = serde_json::from_slice(&status().to_json()).unwrap();
        v["schema"] = 2.into();
        v["a_field_from_the_future"] = "x".into();
        v["services"][0]["rollout"]["phase"] = "verifying".into();
        let s = NodeStatus::from_json(v.to_string().as_bytes()).unwrap();
        assert_eq!(s.schema, 2);
        assert_eq!(
            s.service("web").unwrap().rollout.as_ref().unwrap().phase,
            RolloutPhase::Unknown
        );
    }

    #[test]
    fn an_older_writer_without_optional_fields_is_read() {
        let json = r#"{"schema":1,"node":"edge-2","veer_version":"0.1.0","ready":false,
            "etcd_revision":0,"config":null,"local_revision":0,"state_hash":"",
            "last_sync":"2024-01-01T00:00:00Z"}"#;
        let s = NodeStatus::from_json(json.as_bytes()).unwrap();
        assert!(s.errors.is_empty() && s.services.is_empty() && !s.ready);
    }

    #[test]
    fn a_forged_node_name_is_refused() {
        let mut v: serde_json::Value = serde_json::from_slice(&status().to_json()).unwrap();
        v["node"] = "../edge-2".into();
        assert!(NodeStatus::from_json(v.to_string().as_bytes()).is_err());
    }

    #[test]
    fn the_state_hash_follows_the_state() {
        let a = crate::model::fixtures::web();
        let mut b = a.clone();
        assert_eq!(state_hash(&a), state_hash(&b));
        assert_eq!(state_hash(&a).len(), 64);
        b.services[0].groups[1].weight = Weight::from_percent_str("1").unwrap();
        assert_ne!(state_hash(&a), state_hash(&b));
    }
}
