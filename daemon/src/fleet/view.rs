//! What one node follows under the prefix, kept up to date from a list and then from watch
//! events: the fleet's `config`, its own `nodes/<node>/config`, and the fleet rollouts. The
//! config document in force is the node's own when it exists, else the fleet's: deleting the
//! node's own falls back to the fleet's.
//!
//! A node never follows other nodes' statuses or configs, so a fleet of N nodes writing statuses
//! costs each node nothing (watching the whole prefix would cost N² events).

use std::collections::BTreeMap;

use super::{
    keys::{FleetKey, KeyLayout},
    name::NodeName,
};

/// One key's value, as etcd had it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Document {
    /// Full key.
    pub key: String,
    /// Value, as stored.
    pub value: Vec<u8>,
    /// etcd revision of the last change of this key.
    pub mod_revision: i64,
}

/// Why a document's value cannot be read.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DocumentError {
    /// Not UTF-8 (configs are TOML text, the others JSON).
    #[error(
        "{key} (mod revision {mod_revision}) is not UTF-8 text (invalid byte at offset {offset}); write the value as UTF-8"
    )]
    NotUtf8 {
        /// Key.
        key: String,
        /// Its mod revision.
        mod_revision: i64,
        /// Offset of the first invalid byte.
        offset: usize,
    },
}

impl Document {
    /// The value as text.
    pub fn text(&self) -> Result<&str, DocumentError> {
        std::str::from_utf8(&self.value).map_err(|e| DocumentError::NotUtf8 {
            key: self.key.clone(),
            mod_revision: self.mod_revision,
            offset: e.valid_up_to(),
        })
    }
}

/// A fleet rollout's two keys.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RolloutDocuments {
    /// `rollouts/<service>/plan`.
    pub plan: Option<Document>,
    /// `rollouts/<service>/progress`.
    pub progress: Option<Document>,
}

/// The keys one node follows.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeView {
    layout: KeyLayout,
    node: NodeName,
    config: Option<Document>,
    node_config: Option<Document>,
    rollouts: BTreeMap<String, RolloutDocuments>,
    revision: i64,
}

/// A range a node reads and watches: one key, or every key under a prefix.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Range {
    /// The key or the prefix.
    pub key: String,
    /// Whether `key` is a prefix.
    pub prefix: bool,
}

impl NodeView {
    /// An empty view (nothing listed yet, revision 0).
    pub fn new(layout: KeyLayout, node: NodeName) -> NodeView {
        NodeView {
            layout,
            node,
            config: None,
            node_config: None,
            rollouts: BTreeMap::new(),
            revision: 0,
        }
    }

    /// The node.
    pub fn node(&self) -> &NodeName {
        &self.node
    }

    /// The layout.
    pub fn layout(&self) -> &KeyLayout {
        &self.layout
    }

    /// What to list and watch: the fleet's config, the node's own, the rollouts.
    pub fn ranges(&self) -> [Range; 3] {
        [
            Range {
                key: self.layout.config(),
                prefix: false,
            },
            Range {
                key: self.layout.node_config(&self.node),
                prefix: false,
            },
            Range {
                key: self.layout.rollouts_prefix(),
                prefix: true,
            },
        ]
    }

    /// Replaces everything with a full list taken at `revision`.
    pub fn reset(&mut self, docs: impl IntoIterator<Item = Document>, revision: i64) {
        self.config = None;
        self.node_config = None;
        self.rollouts.clear();
        for doc in docs {
            self.put(doc);
        }
        self.revision = revision;
    }

    /// A key was written. Returns whether the view changed (keys it does not follow are
    /// ignored, and so is an older write than the one it has).
    pub fn put(&mut self, doc: Document) -> bool {
        let Some(slot) = self.slot(&doc.key) else {
            return false;
        };
        if slot
            .as_ref()
            .is_some_and(|d| d.mod_revision >= doc.mod_revision)
        {
            return false;
        }
        *slot = Some(doc);
        self.prune();
        true
    }

    /// A key was deleted. Returns whether the view changed.
    pub fn delete(&mut self, key: &str) -> bool {
        let changed = self.slot(key).is_some_and(|slot| slot.take().is_some());
        self.prune();
        changed
    }

    /// Moves the view to `revision` (the header of a watch response): every change up to it has
    /// been applied.
    pub fn advance(&mut self, revision: i64) {
        self.revision = self.revision.max(revision);
    }

    /// The etcd revision the view is at.
    pub fn revision(&self) -> i64 {
        self.revision
    }

    /// The config document in force for the node: its own when it exists, else the fleet's.
    pub fn in_force(&self) -> Option<&Document> {
        self.node_config.as_ref().or(self.config.as_ref())
    }

    /// Fleet rollouts by service.
    pub fn rollouts(&self) -> &BTreeMap<String, RolloutDocuments> {
        &self.rollouts
    }

    fn slot(&mut self, key: &str) -> Option<&mut Option<Document>> {
        match self.layout.parse(key)? {
            FleetKey::Config => Some(&mut self.config),
            FleetKey::NodeConfig(n) if n == self.node => Some(&mut self.node_config),
            FleetKey::RolloutPlan(s) => Some(&mut self.rollouts.entry(s).or_default().plan),
            FleetKey::RolloutProgress(s) => Some(&mut self.rollouts.entry(s).or_default().progress),
            FleetKey::NodeConfig(_) | FleetKey::Status(_) | FleetKey::Driver | FleetKey::Other => {
                None
            }
        }
    }

    fn prune(&mut self) {
        self.rollouts
            .retain(|_, r| r.plan.is_some() || r.progress.is_some());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view() -> NodeView {
        NodeView::new(
            KeyLayout::new("/veer").unwrap(),
            NodeName::new("edge-1").unwrap(),
        )
    }

    fn doc(key: &str, value: &str, rev: i64) -> Document {
        Document {
            key: key.into(),
            value: value.into(),
            mod_revision: rev,
        }
    }

    #[test]
    fn the_node_config_replaces_the_fleet_config_and_its_deletion_falls_back() {
        let mut v = view();
        v.reset([doc("/veer/config", "fleet", 5)], 7);
        assert_eq!(v.revision(), 7);
        assert_eq!(v.in_force().unwrap().value, b"fleet");

        assert!(v.put(doc("/veer/nodes/edge-1/config", "own", 8)));
        assert_eq!(v.in_force().unwrap().key, "/veer/nodes/edge-1/config");

        // A fleet change does not override the node's own.
        assert!(v.put(doc("/veer/config", "fleet2", 9)));
        assert_eq!(v.in_force().unwrap().value, b"own");

        assert!(v.delete("/veer/nodes/edge-1/config"));
        let in_force = v.in_force().unwrap();
        assert_eq!(
            (in_force.key.as_str(), in_force.mod_revision),
            ("/veer/config", 9)
        );

        assert!(v.delete("/veer/config"));
        assert_eq!(v.in_force(), None);
    }

    #[test]
    fn other_nodes_and_statuses_are_ignored() {
        let mut v = view();
        assert!(!v.put(doc("/veer/nodes/edge-2/config", "x", 3)));
        assert!(!v.put(doc("/veer/status/edge-1", "{}", 4)));
        assert!(!v.put(doc("/veer/driver/abc", "edge-2", 4)));
        assert!(!v.put(doc("/other/config", "x", 4)));
        assert!(!v.delete("/veer/status/edge-2"));
        assert_eq!(v.in_force(), None);
    }

    #[test]
    fn an_older_write_never_replaces_a_newer_one() {
        let mut v = view();
        assert!(v.put(doc("/veer/config", "new", 10)));
        assert!(!v.put(doc("/veer/config", "old", 9)));
        assert_eq!(v.in_force().unwrap().value, b"new");
    }

    #[test]
    fn rollouts_are_kept_by_service_until_both_keys_are_gone() {
        let mut v = view();
        v.put(doc("/veer/rollouts/web/plan", "{}", 3));
        v.put(doc("/veer/rollouts/web/progress", "{}", 4));
        v.put(doc("/veer/rollouts/api/plan", "{}", 5));
        assert_eq!(
            v.rollouts().keys().collect::<Vec<_>>(),
            [&"api".to_owned(), &"web".to_owned()]
        );
        v.delete("/veer/rollouts/web/plan");
        assert!(v.rollouts()["web"].progress.is_some());
        v.delete("/veer/rollouts/web/progress");
        assert!(!v.rollouts().contains_key("web"));
    }

    #[test]
    fn a_reset_forgets_what_the_list_no_longer_has() {
        let mut v = view();
        v.put(doc("/veer/nodes/edge-1/config", "own", 3));
        v.put(doc("/veer/rollouts/web/plan", "{}", 4));
        v.reset([doc("/veer/config", "fleet", 9)], 12);
        assert_eq!(v.in_force().unwrap().value, b"fleet");
        assert!(v.rollouts().is_empty());
        assert_eq!(v.revision(), 12);
    }

    #[test]
    fn a_value_that_is_not_utf8_names_its_key() {
        let d = Document {
            key: "/veer/config".into(),
            value: vec![b'a', 0xff],
            mod_revision: 4,
        };
        assert_eq!(
            d.text(),
            Err(DocumentError::NotUtf8 {
                key: "/veer/config".into(),
                mod_revision: 4,
                offset: 1
            })
        );
    }
}
