//! The config file as written: serde types with `deny_unknown_fields` and a span on every field,
//! so each later complaint can name its line. Nothing is checked here beyond TOML types.

use serde::Deserialize;
use toml::Spanned;

/// The whole file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct File {
    /// Node settings.
    #[serde(default)]
    pub(super) node: Option<Spanned<Node>>,
    /// `[[service]]` tables, in order.
    #[serde(default)]
    pub(super) service: Vec<Spanned<Service>>,
    /// Where the services come from (this file, or etcd).
    #[serde(default)]
    pub(super) source: Option<Spanned<Source>>,
}

/// `[source]`: the file itself (the default), or a fleet's etcd.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Source {
    pub(super) kind: Spanned<String>,
    pub(super) endpoints: Option<Spanned<Vec<Spanned<String>>>>,
    pub(super) prefix: Option<Spanned<String>>,
    pub(super) node: Option<Spanned<String>>,
    pub(super) cacert: Option<Spanned<String>>,
    pub(super) cert: Option<Spanned<String>>,
    pub(super) key: Option<Spanned<String>>,
    pub(super) user: Option<Spanned<String>>,
    pub(super) password_file: Option<Spanned<String>>,
    pub(super) lease_ttl: Option<Spanned<String>>,
    pub(super) driver: Option<bool>,
}

/// `[node]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Node {
    /// Interfaces to attach to.
    #[serde(default)]
    pub(super) interfaces: Option<Spanned<Vec<Spanned<String>>>>,
    /// `auto`, `native` or `generic`.
    #[serde(default)]
    pub(super) xdp_mode: Option<Spanned<String>>,
    /// Conntrack capacity.
    #[serde(default)]
    pub(super) conntrack_max: Option<Spanned<i64>>,
    /// Idle timeouts.
    #[serde(default)]
    pub(super) timeouts: Option<Spanned<Timeouts>>,
}

/// `[node.timeouts]`: durations like `"1h"`, `"30s"`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Timeouts {
    pub(super) tcp_syn: Option<Spanned<String>>,
    pub(super) tcp_established: Option<Spanned<String>>,
    pub(super) tcp_closing: Option<Spanned<String>>,
    pub(super) udp: Option<Spanned<String>>,
}

/// `[[service]]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Service {
    pub(super) name: Spanned<String>,
    pub(super) vip: Spanned<String>,
    pub(super) port: Spanned<i64>,
    pub(super) protocol: Spanned<String>,
    #[serde(default)]
    pub(super) group: Vec<Spanned<Group>>,
    #[serde(default)]
    pub(super) pin: Vec<Spanned<Pin>>,
    #[serde(default)]
    pub(super) health: Option<Spanned<Health>>,
    #[serde(default)]
    pub(super) rollout: Option<Spanned<Rollout>>,
}

/// `[service.rollout]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Rollout {
    pub(super) to: Spanned<String>,
    pub(super) steps: Option<Spanned<Vec<Spanned<Number>>>>,
    pub(super) pause: Option<Spanned<String>>,
    pub(super) max_failure_rate: Option<Spanned<String>>,
    pub(super) min_flows: Option<Spanned<i64>>,
    #[serde(default)]
    pub(super) gates: Vec<Spanned<String>>,
    pub(super) gate_timeout: Option<Spanned<String>>,
    pub(super) on_failure: Option<Spanned<String>>,
    pub(super) hold_on_restart: Option<bool>,
}

/// `[service.health]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Health {
    pub(super) kind: Spanned<String>,
    pub(super) path: Option<Spanned<String>>,
    pub(super) expect_status: Option<Spanned<i64>>,
    pub(super) interval: Option<Spanned<String>>,
    pub(super) timeout: Option<Spanned<String>>,
    pub(super) rise: Option<Spanned<i64>>,
    pub(super) fall: Option<Spanned<i64>>,
}

/// `[[service.group]]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Group {
    pub(super) name: Spanned<String>,
    pub(super) weight: Spanned<Number>,
    #[serde(default)]
    pub(super) backends: Vec<Spanned<String>>,
}

/// `[[service.pin]]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Pin {
    pub(super) prefix: Spanned<String>,
    pub(super) group: Spanned<String>,
}

/// A weight as written: an integer or a float.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub(super) enum Number {
    Int(i64),
    Float(f64),
}

impl Number {
    /// The text a person would read: `90`, `12.5`.
    pub(super) fn text(&self) -> String {
        match self {
            Number::Int(i) => i.to_string(),
            Number::Float(f) => f.to_string(),
        }
    }
}
