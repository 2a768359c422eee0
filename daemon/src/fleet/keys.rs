//! The keys of a fleet under its prefix (`--etcd-prefix /veer`), and the etcd permissions of
//! each role. Names only: reading and writing them is `sources::etcd`'s.
//!
//! | key | written by | holds |
//! |---|---|---|
//! | `<prefix>/config` | operators (`veer apply --fleet` ...), the rollout driver at completion | the fleet's services, TOML |
//! | `<prefix>/nodes/<node>/config` | operators | replaces `config` for that node, TOML |
//! | `<prefix>/status/<node>` | the node, under its own lease | [`NodeStatus`](super::NodeStatus), JSON |
//! | `<prefix>/rollouts/<service>/plan` | operators (`veer fleet rollout start`) | [`FleetRollout`](super::FleetRollout), JSON |
//! | `<prefix>/rollouts/<service>/progress` | operators (start, pause, resume, abort), the driver | [`Progress`](super::Progress), JSON |
//! | `<prefix>/driver/<lease>` | etcd's election service, for the campaigning daemons | the driver's node name |

use std::fmt;

use super::name::NodeName;

/// The key layout under one prefix.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyLayout {
    /// The prefix, with a leading `/` and without a trailing one (`/veer`).
    prefix: String,
}

/// Why a prefix is refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum KeyError {
    /// Not an absolute, clean key path.
    #[error(
        "etcd prefix `{prefix}` is not valid: {why} (expected something like `/veer` or `/prod/edge/veer`)"
    )]
    BadPrefix {
        /// What was given.
        prefix: String,
        /// The rule it breaks.
        why: &'static str,
    },
}

/// What a key under the prefix is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FleetKey {
    /// The fleet's config.
    Config,
    /// A node's own config.
    NodeConfig(NodeName),
    /// A node's status.
    Status(NodeName),
    /// A fleet rollout's plan.
    RolloutPlan(String),
    /// A fleet rollout's progress.
    RolloutProgress(String),
    /// A candidate's key in the driver election.
    Driver,
    /// Under the prefix, but none of the above (a newer veer's key, or a stray one).
    Other,
}

/// The roles the README documents, each a set of etcd permissions.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Role {
    /// One node: read the prefix, write its own status.
    Node(NodeName),
    /// A daemon that may drive fleet rollouts: campaign in the election, write rollout
    /// progress, and write the config when a rollout completes.
    Driver,
    /// A person or pipeline changing the fleet: write the configs and the rollout keys.
    Operator,
}

/// What a grant allows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// Get, range, watch.
    Read,
    /// Put, delete.
    Write,
    /// Both.
    ReadWrite,
}

/// One etcd permission: an access on a key or on every key under a prefix.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Grant {
    /// What it allows.
    pub access: Access,
    /// The key, or the prefix when `prefix` is set (then ending in `/`).
    pub key: String,
    /// Whether `key` is a prefix.
    pub prefix: bool,
}

impl KeyLayout {
    /// Checks and normalises a prefix: absolute, no empty segment, no whitespace; a trailing
    /// `/` is dropped.
    pub fn new(prefix: &str) -> Result<KeyLayout, KeyError> {
        let bad = |why| KeyError::BadPrefix {
            prefix: prefix.to_owned(),
            why,
        };
        let trimmed = prefix.trim_end_matches('/');
        if !prefix.starts_with('/') {
            return Err(bad("it must start with `/`"));
        }
        if trimmed.is_empty() {
            return Err(bad("the root is shared with everything else in etcd"));
        }
        if trimmed.contains("//") {
            return Err(bad("it has an empty segment (`//`)"));
        }
        if !trimmed.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(bad("only printable ASCII without spaces is allowed"));
        }
        Ok(KeyLayout {
            prefix: trimmed.to_owned(),
        })
    }

    /// The prefix (`/veer`).
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// Every key of the fleet starts with this (`/veer/`).
    pub fn root(&self) -> String {
        format!("{}/", self.prefix)
    }

    /// The fleet's config.
    pub fn config(&self) -> String {
        format!("{}/config", self.prefix)
    }

    /// Every node's own config starts with this.
    pub fn nodes_prefix(&self) -> String {
        format!("{}/nodes/", self.prefix)
    }

    /// `node`'s own config.
    pub fn node_config(&self, node: &NodeName) -> String {
        format!("{}/nodes/{node}/config", self.prefix)
    }

    /// Every status starts with this.
    pub fn status_prefix(&self) -> String {
        format!("{}/status/", self.prefix)
    }

    /// `node`'s status.
    pub fn status(&self, node: &NodeName) -> String {
        format!("{}/status/{node}", self.prefix)
    }

    /// Every rollout key starts with this.
    pub fn rollouts_prefix(&self) -> String {
        format!("{}/rollouts/", self.prefix)
    }

    /// The plan of `service`'s fleet rollout.
    pub fn rollout_plan(&self, service: &str) -> String {
        format!("{}/rollouts/{service}/plan", self.prefix)
    }

    /// The progress of `service`'s fleet rollout.
    pub fn rollout_progress(&self, service: &str) -> String {
        format!("{}/rollouts/{service}/progress", self.prefix)
    }

    /// The name of the election of the daemon that drives fleet rollouts; etcd keeps one key
    /// per candidate under `<name>/`.
    pub fn driver_election(&self) -> String {
        format!("{}/driver", self.prefix)
    }

    /// What `key` is; `None` when it is not under the prefix.
    pub fn parse(&self, key: &str) -> Option<FleetKey> {
        let rest = key.strip_prefix(&self.prefix)?.strip_prefix('/')?;
        let parts: Vec<&str> = rest.split('/').collect();
        let node = |s: &str| NodeName::new(s).ok();
        Some(match parts.as_slice() {
            ["config"] => FleetKey::Config,
            ["nodes", n, "config"] => node(n).map_or(FleetKey::Other, FleetKey::NodeConfig),
            ["status", n] => node(n).map_or(FleetKey::Other, FleetKey::Status),
            ["rollouts", s, "plan"] if !s.is_empty() => FleetKey::RolloutPlan((*s).to_owned()),
            ["rollouts", s, "progress"] if !s.is_empty() => {
                FleetKey::RolloutProgress((*s).to_owned())
            }
            ["driver", _] => FleetKey::Driver,
            _ => FleetKey::Other,
        })
    }

    /// The permissions `role` needs, and nothing more. etcd permissions only add up, so a user
    /// with several roles (a node that may drive rollouts: `Node` + `Driver`) gets the union.
    pub fn grants(&self, role: &Role) -> Vec<Grant> {
        let key = |access, key| Grant {
            access,
            key,
            prefix: false,
        };
        let prefix = |access, key| Grant {
            access,
            key,
            prefix: true,
        };
        match role {
            Role::Node(node) => vec![
                prefix(Access::Read, self.root()),
                key(Access::Write, self.status(node)),
            ],
            Role::Driver => vec![
                prefix(Access::Read, self.root()),
                prefix(Access::ReadWrite, self.driver_election() + "/"),
                prefix(Access::ReadWrite, self.rollouts_prefix()),
                key(Access::Write, self.config()),
                prefix(Access::Write, self.nodes_prefix()),
            ],
            Role::Operator => vec![
                prefix(Access::Read, self.root()),
                key(Access::ReadWrite, self.config()),
                prefix(Access::ReadWrite, self.nodes_prefix()),
                prefix(Access::ReadWrite, self.rollouts_prefix()),
            ],
        }
    }
}

impl Role {
    /// The etcd role name the README uses (`veer-node-edge-1`, `veer-driver`, `veer-operator`).
    pub fn name(&self) -> String {
        match self {
            Role::Node(node) => format!("veer-node-{node}"),
            Role::Driver => "veer-driver".to_owned(),
            Role::Operator => "veer-operator".to_owned(),
        }
    }
}

impl Access {
    /// etcdctl's word for it.
    pub fn as_str(self) -> &'static str {
        match self {
            Access::Read => "read",
            Access::Write => "write",
            Access::ReadWrite => "readwrite",
        }
    }
}

impl fmt::Display for Access {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Grant {
    /// The `etcdctl` arguments that grant it to `role` (after `etcdctl` and its connection
    /// flags).
    pub fn etcdctl_args(&self, role: &str) -> Vec<String> {
        let mut args = vec![
            "role".to_owned(),
            "grant-permission".to_owned(),
            role.to_owned(),
        ];
        if self.prefix {
            args.push("--prefix=true".to_owned());
        }
        args.push(self.access.as_str().to_owned());
        args.push(self.key.clone());
        args
    }

    /// The `etcdctl` command that grants it to `role`, as the README shows it.
    pub fn etcdctl(&self, role: &str) -> String {
        format!("etcdctl {}", self.etcdctl_args(role).join(" "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(s: &str) -> NodeName {
        NodeName::new(s).unwrap()
    }

    #[test]
    fn prefixes_are_checked_and_normalised() {
        assert_eq!(KeyLayout::new("/veer").unwrap().prefix(), "/veer");
        assert_eq!(
            KeyLayout::new("/prod/veer/").unwrap().prefix(),
            "/prod/veer"
        );
        for bad in ["veer", "/", "//", "/a//b", "/a b", "/é", ""] {
            assert!(
                matches!(KeyLayout::new(bad), Err(KeyError::BadPrefix { .. })),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn keys_and_their_meaning_round_trip() {
        let l = KeyLayout::new("/veer").unwrap();
        let a = n("edge-1");
        assert_eq!(l.config(), "/veer/config");
        assert_eq!(l.node_config(&a), "/veer/nodes/edge-1/config");
        assert_eq!(l.status(&a), "/veer/status/edge-1");
        assert_eq!(l.rollout_plan("web"), "/veer/rollouts/web/plan");
        assert_eq!(l.rollout_progress("web"), "/veer/rollouts/web/progress");
        for (key, what) in [
            (l.config(), Some(FleetKey::Config)),
            (l.node_config(&a), Some(FleetKey::NodeConfig(a.clone()))),
            (l.status(&a), Some(FleetKey::Status(a.clone()))),
            (
                l.rollout_plan("web"),
                Some(FleetKey::RolloutPlan("web".into())),
            ),
            (
                l.rollout_progress("web"),
                Some(FleetKey::RolloutProgress("web".into())),
            ),
            (
                "/veer/driver/694d7a1b2c3d4e5f".into(),
                Some(FleetKey::Driver),
            ),
            ("/veer/status/a/b".into(), Some(FleetKey::Other)),
            ("/veer/nodes/../config".into(), Some(FleetKey::Other)),
            ("/veer/rollouts//plan".into(), Some(FleetKey::Other)),
            ("/veerx/config".into(), None),
            ("/other/config".into(), None),
        ] {
            assert_eq!(l.parse(&key), what, "{key}");
        }
    }

    #[test]
    fn a_node_may_write_only_its_own_status() {
        let l = KeyLayout::new("/veer").unwrap();
        let grants = l.grants(&Role::Node(n("edge-1")));
        let writes: Vec<_> = grants.iter().filter(|g| g.access != Access::Read).collect();
        assert_eq!(
            writes,
            [&Grant {
                access: Access::Write,
                key: "/veer/status/edge-1".into(),
                prefix: false
            }]
        );
        assert_eq!(
            grants[0].etcdctl(&Role::Node(n("edge-1")).name()),
            "etcdctl role grant-permission veer-node-edge-1 --prefix=true read /veer/"
        );
    }

    #[test]
    fn the_readme_lists_exactly_these_grants() {
        let readme = include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md"));
        let listed: Vec<&str> = readme
            .lines()
            .filter(|l| l.starts_with("etcdctl role grant-permission"))
            .collect();
        let l = KeyLayout::new("/veer").unwrap();
        let expected: Vec<String> = [Role::Node(n("edge-1")), Role::Driver, Role::Operator]
            .iter()
            .flat_map(|r| l.grants(r).into_iter().map(|g| g.etcdctl(&r.name())))
            .collect();
        assert_eq!(listed, expected, "README.md's Fleet section is out of date");
    }

    #[test]
    fn operators_and_drivers_never_write_statuses() {
        let l = KeyLayout::new("/veer").unwrap();
        for role in [Role::Operator, Role::Driver] {
            for g in l.grants(&role) {
                if g.access != Access::Read {
                    let covers_statuses = g.prefix && l.status_prefix().starts_with(&g.key);
                    assert!(
                        !covers_statuses && !g.key.starts_with(&l.status_prefix()),
                        "{role:?} may write {}",
                        g.key
                    );
                }
            }
        }
    }
}
