//! The config file (`/etc/veer/veer.toml`): parsed strictly, turned into a `Config` (node
//! settings and a `DesiredState`) and checked by the model's rules. A rejected file changes
//! nothing and says exactly what is wrong and where, every problem at once, each with its line
//! and a caret under the value, the key it is about and what that key expects, as rustc does:
//!
//! ```text
//! error: veer.toml:12:10: service `web`, group `v2`, `weight`: 120 is out of range 0..=100
//!    |
//! 12 | weight = 120
//!    |          ^^^ `weight`: a percentage from 0 to 100 with at most two decimals
//! ```
//!
//! `read` turns the parsed TOML into `schema` (the file as written: unknown keys, missing keys
//! and wrong types reported, with the nearest known key for a typo from `suggest`), `convert`
//! turns that into the model (parsing values) and runs the model's rules, `spans` locates a
//! broken rule in the file, and `render` writes a `Config` back as a file.

mod convert;
mod read;
mod render;
mod schema;
mod source;
mod spans;
mod suggest;
#[cfg(test)]
mod tests;

use std::{
    fmt::{self, Write as _},
    path::{Path, PathBuf},
};

use crate::model::{
    DesiredState, GroupField, HealthField, NodeConfig, PinField, Place, PlanError, RolloutField,
    ServiceField, StateError, Violation, WeightError, tolerance::ToleranceError,
};

pub use render::{services_to_toml, to_toml};
pub use source::{MIN_LEASE_TTL, SourceConfig, SourceKind};

/// A validated config file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// `[node]`.
    pub node: NodeConfig,
    /// The services.
    pub state: DesiredState,
}

/// Where in the file a problem is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Location {
    /// The file (as given).
    pub file: PathBuf,
    /// 1-based line.
    pub line: usize,
    /// 1-based column.
    pub column: usize,
}

/// One problem of a config file: where, and what.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{}:{}:{}: {kind}", location.file.display(), location.line, location.column)]
pub struct ConfigError {
    /// Where in the file.
    pub location: Location,
    /// How many characters of its line the problem spans (the caret's width, at least 1).
    pub width: usize,
    /// What is wrong.
    #[source]
    pub kind: ConfigErrorKind,
}

/// Every problem of a rejected config file, in the order of the file (never empty), and its
/// text, to show each problem's line.
#[derive(Debug, PartialEq, Eq)]
pub struct ConfigErrors {
    /// The problems.
    pub errors: Vec<ConfigError>,
    /// The file's text.
    pub text: String,
}

/// What is wrong with a config file.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigErrorKind {
    /// Not valid TOML (the parser's words).
    #[error("{message}")]
    Syntax {
        /// The TOML parser's message.
        message: String,
    },
    /// A key veer does not know.
    #[error("unknown key `{key}` in {table}{}", suggestion.map(|s| format!("; did you mean `{s}`?")).unwrap_or_default())]
    UnknownKey {
        /// The table it is in, as the file writes it (`[[service.group]]`).
        table: &'static str,
        /// The key, as written.
        key: String,
        /// The known key nearest to it, when one is near.
        suggestion: Option<&'static str>,
        /// The keys the table takes.
        known: &'static [&'static str],
    },
    /// A key a table must have.
    #[error("{table} has no `{key}`")]
    MissingKey {
        /// The table, as the file writes it.
        table: &'static str,
        /// The key.
        key: &'static str,
        /// What its value must be.
        expected: &'static str,
    },
    /// A value of the wrong TOML type.
    #[error("`{key}`: expected {expected}, found {found}{}", hint.as_ref().map(|h| format!("; {h}")).unwrap_or_default())]
    WrongType {
        /// The key.
        key: &'static str,
        /// What its value must be.
        expected: &'static str,
        /// What it is.
        found: String,
        /// How to write it, when that is clear.
        hint: Option<String>,
    },
    /// An integer its field's type cannot hold.
    #[error("`{field}`: {value} is out of range {range}")]
    OutOfRange {
        /// The key, as written in the file.
        field: &'static str,
        /// Value given.
        value: String,
        /// Allowed range.
        range: String,
    },
    /// A value not among the choices.
    #[error("`{field}`: `{value}` is not one of {choices}{}", suggestion.map(|s| format!("; did you mean `{s}`?")).unwrap_or_default())]
    BadChoice {
        /// The key, as written in the file.
        field: &'static str,
        /// Value given.
        value: String,
        /// Allowed values.
        choices: &'static str,
        /// The choice nearest to it, when one is near.
        suggestion: Option<&'static str>,
    },
    /// A malformed address, prefix or duration.
    #[error("`{field}`: `{value}` is not {expected}")]
    BadValue {
        /// The key, as written in the file.
        field: &'static str,
        /// Value given.
        value: String,
        /// What was expected.
        expected: &'static str,
    },
    /// A weight that is not a percentage.
    #[error("service `{service}`, group `{group}`, `weight`: {source}")]
    BadWeight {
        /// Name of the service.
        service: String,
        /// Name of the group, in its service.
        group: String,
        /// Why the text is not a weight.
        source: WeightError,
    },
    /// A value of `[service.rollout]` that does not parse.
    #[error("service `{service}`, rollout `{field}`: {reason}")]
    BadRollout {
        /// Name of the service.
        service: String,
        /// The key, as written in the file.
        field: &'static str,
        /// What is wrong, in words.
        reason: String,
    },
    /// A table that does not belong in this document (`[node]` in a fleet's config in etcd,
    /// services in a file whose source is etcd).
    #[error("{what} does not belong here: {why}")]
    Misplaced {
        /// The table, as written (`[node]`).
        what: &'static str,
        /// Why, and where it belongs.
        why: &'static str,
    },
    /// A rule of the model is broken (the location is the part of the file it names).
    #[error("{source}{}", first_line.map(|l| format!(" (first on line {l})")).unwrap_or_default())]
    Invalid {
        /// The rule and where in the state.
        source: Violation,
        /// For a name or an address used twice: the line it is first used on.
        first_line: Option<usize>,
    },
}

impl ConfigErrorKind {
    /// The key the problem is about, as the file writes it (`weight`, `[[service]]`).
    pub fn key(&self) -> String {
        match self {
            Self::Syntax { .. } => String::new(),
            Self::UnknownKey { key, .. } => key.clone(),
            Self::MissingKey { key, .. } | Self::WrongType { key, .. } => (*key).to_owned(),
            Self::OutOfRange { field, .. }
            | Self::BadChoice { field, .. }
            | Self::BadValue { field, .. }
            | Self::BadRollout { field, .. } => (*field).to_owned(),
            Self::BadWeight { .. } => "weight".to_owned(),
            Self::Misplaced { what, .. } => what.trim_matches('`').to_owned(),
            Self::Invalid { source, .. } => place_key(&source.at).to_owned(),
        }
    }

    /// What the key expects, in words.
    pub fn expected(&self) -> String {
        match self {
            Self::Syntax { message } => message
                .find("expected")
                .map_or_else(|| "valid TOML".to_owned(), |i| message[i..].to_owned()),
            Self::UnknownKey { known, .. } => format!("one of {}", quoted(known)),
            Self::MissingKey { expected, .. }
            | Self::WrongType { expected, .. }
            | Self::BadValue { expected, .. } => (*expected).to_owned(),
            Self::OutOfRange { range, .. } => format!("a value in {range}"),
            Self::BadChoice { choices, .. } => format!("one of {choices}"),
            Self::BadWeight { .. } => {
                "a percentage from 0 to 100 with at most two decimals (e.g. 90, 12.5)".to_owned()
            }
            Self::BadRollout { field, .. } => match *field {
                "steps" => "percentages increasing to 100, e.g. [1, 5, 25, 50, 100]".to_owned(),
                "max_failure_rate" => "a percentage, e.g. \"1%\" or 0.5".to_owned(),
                "max_latency_increase" | "max_failure_increase" => {
                    "a percentage, e.g. \"20%\" or 20".to_owned()
                }
                "confidence" => "a percentage from 50 to 99.99, e.g. \"95%\"".to_owned(),
                "drain_pace" => {
                    "flows per second or per minute in quotes, e.g. \"50/s\" or \"600/m\""
                        .to_owned()
                }
                "judge" | "drain_deadline" => {
                    "the judge's options with `judge` not false, `drain_pace` with `drain_deadline`"
                        .to_owned()
                }
                _ => "\"exec:CMD\", \"http://URL\" or \"prometheus:BASE_URL QUERY OP NUMBER\""
                    .to_owned(),
            },
            Self::Misplaced { why, .. } => (*why).to_owned(),
            Self::Invalid { source, .. } => rule_expects(&source.error),
        }
    }
}

/// `` `a`, `b`, `c` ``.
fn quoted(words: &[&str]) -> String {
    words
        .iter()
        .map(|w| format!("`{w}`"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The key a place of the model is written under in the file.
fn place_key(place: &Place) -> &'static str {
    match *place {
        Place::Service { field, .. } => match field {
            ServiceField::Table => "[[service]]",
            ServiceField::Name => "name",
            ServiceField::Vip => "vip",
            ServiceField::Port => "port",
        },
        Place::Group { field, .. } => match field {
            GroupField::Table => "[[service.group]]",
            GroupField::Name => "name",
            GroupField::Weight => "weight",
        },
        Place::Backend { .. } => "backends",
        Place::Pin { field, .. } => match field {
            PinField::Prefix => "prefix",
            PinField::Group => "group",
        },
        Place::Health { field, .. } => match field {
            HealthField::Table => "[service.health]",
            HealthField::Path => "path",
            HealthField::ExpectStatus => "expect_status",
            HealthField::Interval => "interval",
            HealthField::Timeout => "timeout",
            HealthField::Rise => "rise",
            HealthField::Fall => "fall",
        },
        Place::Rollout { field, .. } => match field {
            RolloutField::Table => "[service.rollout]",
            RolloutField::To => "to",
            RolloutField::Steps => "steps",
            RolloutField::Pause => "pause",
            RolloutField::GateTimeout => "gate_timeout",
            RolloutField::MaxLatencyIncrease => "max_latency_increase",
            RolloutField::LatencySlack => "latency_slack",
            RolloutField::MaxFailureIncrease => "max_failure_increase",
            RolloutField::Confidence => "confidence",
            RolloutField::MinSample => "min_sample",
            RolloutField::DrainDeadline => "drain_deadline",
        },
        Place::Interface(_) => "interfaces",
        Place::Hook(_) => "hooks",
        Place::ConntrackMax => "conntrack_max",
        Place::ConntrackNewMax => "conntrack_new_max",
        Place::Timeout(f) => f.as_str(),
    }
}

/// What a rule of the model asks of the key it names.
fn rule_expects(e: &StateError) -> String {
    match e {
        StateError::BadName { .. } => {
            format!("a name of {}", crate::model::NAME_RULE)
        }
        StateError::DuplicateService { .. } => "a name no other service has".to_owned(),
        StateError::DuplicateEndpoint { .. } => {
            "a vip, port and protocol no other service uses".to_owned()
        }
        StateError::BadVip { .. } => "a unicast address".to_owned(),
        StateError::PortZero { .. } => "a port from 1 to 65535".to_owned(),
        StateError::NoGroups { .. } => "at least one [[service.group]]".to_owned(),
        StateError::TooManyGroups { max, .. } => format!("at most {max} [[service.group]] tables"),
        StateError::DuplicateGroup { .. } => "a name no other group of the service has".to_owned(),
        StateError::BackendPortZero { .. } => "an address with a port from 1 to 65535".to_owned(),
        StateError::FamilyMismatch { vip, .. } => format!(
            "{} backends, as the VIP {vip} is",
            if vip.is_ipv4() { "IPv4" } else { "IPv6" }
        ),
        StateError::DuplicateBackend { .. } => "each backend once in its group".to_owned(),
        StateError::WeightWithoutBackends { .. } => {
            "weight 0 for a group without backends".to_owned()
        }
        StateError::PinFamilyMismatch { vip, .. } => format!(
            "an {} prefix, as the VIP {vip} is",
            if vip.is_ipv4() { "IPv4" } else { "IPv6" }
        ),
        StateError::BadPin { .. } => {
            "a network prefix with its host bits zero (e.g. \"203.0.113.0/24\")".to_owned()
        }
        StateError::PinUnknownGroup { .. } => "the name of one of the service's groups".to_owned(),
        StateError::DuplicatePin { .. } => "each prefix pinned once".to_owned(),
        StateError::BadHealthCheck { reason, .. } => {
            if reason.contains("at most the interval") {
                "a timeout no longer than the interval".to_owned()
            } else if reason.contains("path") {
                "an absolute path without spaces, e.g. \"/healthz\"".to_owned()
            } else if reason.contains("minimum") {
                "a longer duration (see the minimum above)".to_owned()
            } else if reason.contains("maximum") {
                "a shorter duration (see the maximum above)".to_owned()
            } else {
                "a value in the range above".to_owned()
            }
        }
        StateError::BadRollout { source, .. } => match source {
            PlanError::UnknownGroup { .. } => "the name of one of the service's groups".to_owned(),
            PlanError::BadSteps { .. } => {
                "percentages increasing strictly to 100, e.g. [1, 5, 25, 50, 100]".to_owned()
            }
            PlanError::PauseTooShort { min, .. } => format!("a pause of at least {min}"),
            PlanError::GateTimeoutTooShort { min, .. } => {
                format!("a gate timeout of at least {min}")
            }
            PlanError::PauseTooLong { max, .. } => format!("a pause of at most {max}"),
            PlanError::GateTimeoutTooLong { max, .. } => {
                format!("a gate timeout of at most {max}")
            }
            PlanError::EmptyTarget { .. } => "a target group with backends".to_owned(),
            PlanError::AlreadyThere { .. } => {
                "a target that does not have every new flow yet".to_owned()
            }
            PlanError::Tolerance { source } => match source {
                ToleranceError::Range { min, max, .. } => format!("a percentage in {min}..={max}"),
                ToleranceError::MinSample { .. } => "a number of samples of at least 1".to_owned(),
                ToleranceError::Slack { max, .. } => format!("a duration of at most {max}"),
                ToleranceError::Syntax { .. } => {
                    "a percentage with at most two decimals".to_owned()
                }
            },
            PlanError::DrainDeadlineTooLong { max, .. } => {
                format!("a drain deadline of at most {max}")
            }
            PlanError::DrainDeadlineTooShort { min, .. } => {
                format!("a drain deadline of at least {min}")
            }
        },
        StateError::BadInterface { .. } => {
            "interface names of 1 to 15 bytes, without '/' or spaces".to_owned()
        }
        StateError::DuplicateInterface { .. } => "each interface once".to_owned(),
        StateError::HookForUnknownInterface { .. } => {
            "an interface named in `interfaces` (a hook is chosen only for those)".to_owned()
        }
        StateError::FlowTableSize { .. } => format!(
            "a value in {}..={}",
            NodeConfig::MIN_CONNTRACK,
            NodeConfig::MAX_CONNTRACK
        ),
        StateError::TimeoutTooShort { min, .. } => format!("a duration of at least {min}"),
        StateError::TimeoutTooLong { max, .. } => format!("a duration of at most {max}"),
        StateError::TooMany { what, max, map, .. } => {
            format!("at most {max} {what} in all (what the {map} map holds)")
        }
        StateError::BackendInTooManyServices { max, .. } => {
            format!("a backend address and port shared by at most {max} services")
        }
    }
}

impl fmt::Display for ConfigErrors {
    /// One line per problem: `file:line:column: reason`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.errors.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

impl ConfigErrors {
    /// The first problem (the file's first, in its order).
    pub fn first(&self) -> Option<&ConfigError> {
        self.errors.first()
    }

    /// Every problem as rustc shows one: the headline, the line of the file with a caret under
    /// the value, the key and what it expects; then how many there were.
    pub fn render(&self) -> String {
        let lines: Vec<&str> = self.text.lines().collect();
        let mut out = String::new();
        for e in &self.errors {
            let line = e.location.line;
            let gutter = line.to_string().len();
            let pad = " ".repeat(gutter);
            // Infallible: writing into a String cannot fail.
            let _ = writeln!(out, "error: {e}");
            let source = lines.get(line.saturating_sub(1)).copied().unwrap_or("");
            let key = e.kind.key();
            let what = match &e.kind {
                // The headline says what was expected; the caret says what is there.
                ConfigErrorKind::WrongType { found, .. } => format!("found {found}"),
                k => format!("expected {}", k.expected()),
            };
            let label = if key.is_empty() || key.starts_with('[') || key.contains(' ') {
                what
            } else {
                format!("`{key}`: {what}")
            };
            let caret_at = e.location.column.saturating_sub(1);
            let prefix: String = source
                .chars()
                .take(caret_at)
                .map(|c| if c == '\t' { '\t' } else { ' ' })
                .collect();
            let _ = writeln!(out, "{pad} |");
            let _ = writeln!(out, "{line} | {source}");
            let _ = writeln!(
                out,
                "{pad} | {prefix}{} {label}",
                "^".repeat(e.width.max(1))
            );
            if let ConfigErrorKind::WrongType { hint: Some(h), .. } = &e.kind {
                let _ = writeln!(out, "{pad} = help: {h}");
            }
            out.push('\n');
        }
        let n = self.errors.len();
        let _ = write!(
            out,
            "{n} error{} in {}; nothing was applied",
            if n == 1 { "" } else { "s" },
            self.errors
                .first()
                .map_or_else(String::new, |e| e.location.file.display().to_string())
        );
        out
    }

    /// Every problem as data, for `--output json`: file, line, column, key, message, expected.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::Value::Array(
            self.errors
                .iter()
                .map(|e| {
                    serde_json::json!({
                        "file": e.location.file,
                        "line": e.location.line,
                        "column": e.location.column,
                        "key": e.kind.key(),
                        "message": e.kind.to_string(),
                        "expected": e.kind.expected(),
                    })
                })
                .collect(),
        )
    }
}

/// Reading the file failed.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The file could not be read.
    #[error("cannot read config file {}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The file is invalid.
    #[error(transparent)]
    Invalid(#[from] ConfigErrors),
}

/// Largest config file read.
pub const MAX_FILE: u64 = 16 << 20;

/// Reads the config file's text: a regular file (a link to one is followed), read without
/// blocking, so a FIFO or a device at the path is an error, never a hang.
pub fn read(path: &Path) -> Result<String, LoadError> {
    use crate::files::{Links, ReadError, read_regular};
    let err = |source| LoadError::Read {
        path: path.to_owned(),
        source,
    };
    let bytes = read_regular(path, Links::Follow, MAX_FILE).map_err(|e| {
        err(match e {
            ReadError::Missing { .. } => std::io::ErrorKind::NotFound.into(),
            ReadError::Io { source, .. } => source,
            other => std::io::Error::other(other),
        })
    })?;
    String::from_utf8(bytes)
        .map_err(|e| err(std::io::Error::new(std::io::ErrorKind::InvalidData, e)))
}

/// Reads and validates a config file.
pub fn load(path: &Path) -> Result<(Config, String), LoadError> {
    let text = read(path)?;
    let config = parse(path, &text)?;
    Ok((config, text))
}

/// Validates config `text` (`file` only names it in errors); every problem is reported.
pub fn parse(file: &Path, text: &str) -> Result<Config, ConfigErrors> {
    convert::parse(file, text)
}

/// Validates a whole config file's `text` and returns its `[source]`, if it has one.
pub fn parse_source(file: &Path, text: &str) -> Result<Option<SourceConfig>, ConfigErrors> {
    convert::parse_scoped(file, text, convert::Scope::File).map(|(_, source)| source)
}

/// Reads and validates a config file; returns its `[source]`, if it has one.
pub fn load_source(path: &Path) -> Result<Option<SourceConfig>, LoadError> {
    let text = read(path)?;
    Ok(parse_source(path, &text)?)
}

/// Validates a fleet's config document (`<prefix>/config` or `<prefix>/nodes/<node>/config` in
/// etcd): the same schema and rules as a file, services only. Errors name `key` as the file
/// (`/veer/config:12:9: ...`), and every problem is reported, as for a file.
pub fn parse_fleet(key: &str, text: &str) -> Result<DesiredState, ConfigErrors> {
    convert::parse_scoped(Path::new(key), text, convert::Scope::Fleet)
        .map(|(config, _)| config.state)
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.file.display(), self.line, self.column)
    }
}
