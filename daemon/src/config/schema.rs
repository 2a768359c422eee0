//! The config file as written: every table and key veer knows, with the span of each value, so
//! each later complaint can name its line. `read` fills these from the parsed TOML and reports
//! unknown keys, missing keys and values of the wrong TOML type; nothing else is checked here.

use toml::Spanned;

/// The whole file.
#[derive(Debug, Default)]
pub(super) struct File {
    /// Node settings.
    pub(super) node: Option<Spanned<Node>>,
    /// `[[service]]` tables, in order.
    pub(super) service: Vec<Spanned<Service>>,
    /// Where the services come from (this file, or etcd).
    pub(super) source: Option<Spanned<Source>>,
}

/// `[source]`: the file itself (the default), or a fleet's etcd.
#[derive(Debug)]
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
#[derive(Debug, Default)]
pub(super) struct Node {
    /// Interfaces to attach to.
    pub(super) interfaces: Option<Spanned<Vec<Spanned<String>>>>,
    /// `auto`, `native` or `generic`.
    pub(super) xdp_mode: Option<Spanned<String>>,
    /// `[node.hooks]`: interface -> `auto`, `xdp` or `tc`.
    pub(super) hooks: Option<Spanned<std::collections::BTreeMap<String, Spanned<String>>>>,
    /// Capacity of the table of confirmed flows.
    pub(super) conntrack_max: Option<Spanned<i64>>,
    /// Capacity of the table of new flows.
    pub(super) conntrack_new_max: Option<Spanned<i64>>,
    /// Idle timeouts.
    pub(super) timeouts: Option<Spanned<Timeouts>>,
    /// Read without a problem (the model's rules are checked only on clean parts, so one
    /// mistake does not show up again as the rule it breaks).
    pub(super) clean: bool,
}

/// `[node.timeouts]`: durations like `"1h"`, `"30s"`.
#[derive(Debug, Default)]
pub(super) struct Timeouts {
    pub(super) tcp_syn: Option<Spanned<String>>,
    pub(super) tcp_established: Option<Spanned<String>>,
    pub(super) tcp_closing: Option<Spanned<String>>,
    pub(super) udp: Option<Spanned<String>>,
}

/// `[[service]]`.
#[derive(Debug)]
pub(super) struct Service {
    pub(super) name: Spanned<String>,
    /// Required (a missing or mistyped one is reported, and the rest of the service is still
    /// read for its own problems).
    pub(super) vip: Option<Spanned<String>>,
    pub(super) port: Option<Spanned<i64>>,
    pub(super) protocol: Option<Spanned<String>>,
    pub(super) group: Vec<Spanned<Group>>,
    pub(super) pin: Vec<Spanned<Pin>>,
    pub(super) health: Option<Spanned<Health>>,
    pub(super) rollout: Option<Spanned<Rollout>>,
    /// Read without a problem.
    pub(super) clean: bool,
}

/// `[service.rollout]`.
#[derive(Debug)]
pub(super) struct Rollout {
    pub(super) to: Spanned<String>,
    pub(super) steps: Option<Spanned<Vec<Spanned<Number>>>>,
    pub(super) pause: Option<Spanned<String>>,
    pub(super) max_failure_rate: Option<Spanned<Number>>,
    pub(super) min_flows: Option<Spanned<i64>>,
    pub(super) gates: Vec<Spanned<String>>,
    pub(super) gate_timeout: Option<Spanned<String>>,
    pub(super) on_failure: Option<Spanned<String>>,
    pub(super) hold_on_restart: Option<bool>,
    /// `judge = true` (implied by any of the judge's options; `false` with one of them is an
    /// error, as the file would say two things).
    pub(super) judge: Option<Spanned<bool>>,
    pub(super) max_latency_increase: Option<Spanned<Number>>,
    pub(super) latency_slack: Option<Spanned<String>>,
    pub(super) max_failure_increase: Option<Spanned<Number>>,
    pub(super) confidence: Option<Spanned<Number>>,
    pub(super) min_sample: Option<Spanned<i64>>,
    pub(super) drain_deadline: Option<Spanned<String>>,
    pub(super) drain_pace: Option<Spanned<String>>,
}

/// `[service.health]`.
#[derive(Debug)]
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
#[derive(Debug)]
pub(super) struct Group {
    pub(super) name: Spanned<String>,
    /// Required (see `Service::vip`).
    pub(super) weight: Option<Spanned<Number>>,
    pub(super) backends: Vec<Spanned<String>>,
}

/// `[[service.pin]]`.
#[derive(Debug)]
pub(super) struct Pin {
    pub(super) prefix: Spanned<String>,
    pub(super) group: Spanned<String>,
}

/// A percentage as written: an integer, a float, or (for rates) a string like `"1%"`.
#[derive(Clone, Debug)]
pub(super) enum Number {
    /// `90`.
    Int(i64),
    /// `12.5`.
    Float(String),
    /// `"1%"` (accepted where a key documents it).
    Text(String),
}

impl Number {
    /// The text a person would read: `90`, `12.5`, `1%`.
    pub(super) fn text(&self) -> String {
        match self {
            Number::Int(i) => i.to_string(),
            Number::Float(f) | Number::Text(f) => f.clone(),
        }
    }
}

/// The keys of each table, in the order the example file writes them: what `read` accepts, and
/// what an unknown key is compared with to suggest the one meant.
pub(super) mod keys {
    /// The top level.
    pub(in super::super) const FILE: &[&str] = &["node", "source", "service"];
    /// `[node]`.
    pub(in super::super) const NODE: &[&str] = &[
        "interfaces",
        "xdp_mode",
        "hooks",
        "conntrack_max",
        "conntrack_new_max",
        "timeouts",
    ];
    /// `[node.timeouts]`.
    pub(in super::super) const TIMEOUTS: &[&str] =
        &["tcp_syn", "tcp_established", "tcp_closing", "udp"];
    /// `[source]`.
    pub(in super::super) const SOURCE: &[&str] = &[
        "kind",
        "endpoints",
        "prefix",
        "node",
        "cacert",
        "cert",
        "key",
        "user",
        "password_file",
        "lease_ttl",
        "driver",
    ];
    /// `[[service]]`.
    pub(in super::super) const SERVICE: &[&str] = &[
        "name", "vip", "port", "protocol", "group", "pin", "health", "rollout",
    ];
    /// `[[service.group]]`.
    pub(in super::super) const GROUP: &[&str] = &["name", "weight", "backends"];
    /// `[[service.pin]]`.
    pub(in super::super) const PIN: &[&str] = &["prefix", "group"];
    /// `[service.health]`.
    pub(in super::super) const HEALTH: &[&str] = &[
        "kind",
        "path",
        "expect_status",
        "interval",
        "timeout",
        "rise",
        "fall",
    ];
    /// `[service.rollout]`.
    pub(in super::super) const ROLLOUT: &[&str] = &[
        "to",
        "steps",
        "pause",
        "max_failure_rate",
        "min_flows",
        "gates",
        "gate_timeout",
        "on_failure",
        "hold_on_restart",
        "judge",
        "max_latency_increase",
        "latency_slack",
        "max_failure_increase",
        "confidence",
        "min_sample",
        "drain_deadline",
        "drain_pace",
    ];
}
