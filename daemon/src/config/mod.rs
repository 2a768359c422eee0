//! The config file (`/etc/veer/veer.toml`): parsed strictly, turned into a `Config` (node
//! settings and a `DesiredState`) and checked by the model's rules. A rejected file changes
//! nothing and says exactly what is wrong and where: `veer.toml:12:10: service "web", group
//! "v2", `weight`: 120 is out of range 0..=100`.
//!
//! `schema` is the file as written (serde, a span on every value), `convert` turns it into the
//! model (parsing values) and runs the model's rules, `spans` locates a broken rule in the file,
//! and `render` writes a `Config` back as a file.

mod convert;
mod render;
mod schema;
mod source;
mod spans;
#[cfg(test)]
mod tests;

use std::{
    fmt,
    path::{Path, PathBuf},
};

use crate::model::{DesiredState, NodeConfig, Violation, WeightError};

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

/// A rejected config file: where, and what.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{}:{}:{}: {kind}", location.file.display(), location.line, location.column)]
pub struct ConfigError {
    /// Where in the file.
    pub location: Location,
    /// What is wrong.
    #[source]
    pub kind: ConfigErrorKind,
}

/// What is wrong with a config file.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigErrorKind {
    /// Not valid TOML, a wrong type, or an unknown key (the parser's words).
    #[error("{message}")]
    Syntax {
        /// The TOML parser's message.
        message: String,
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
    #[error("`{field}`: `{value}` is not one of {choices}")]
    BadChoice {
        /// The key, as written in the file.
        field: &'static str,
        /// Value given.
        value: String,
        /// Allowed values.
        choices: &'static str,
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
    Invalid(#[from] ConfigError),
}

/// Reads and validates a config file.
pub fn load(path: &Path) -> Result<(Config, String), LoadError> {
    let text = std::fs::read_to_string(path).map_err(|source| LoadError::Read {
        path: path.to_owned(),
        source,
    })?;
    let config = parse(path, &text)?;
    Ok((config, text))
}

/// Validates config `text` (`file` only names it in errors).
pub fn parse(file: &Path, text: &str) -> Result<Config, ConfigError> {
    convert::parse(file, text)
}

/// Validates a whole config file's `text` and returns its `[source]`, if it has one.
pub fn parse_source(file: &Path, text: &str) -> Result<Option<SourceConfig>, ConfigError> {
    convert::parse_scoped(file, text, convert::Scope::File).map(|(_, source)| source)
}

/// Reads and validates a config file; returns its `[source]`, if it has one.
pub fn load_source(path: &Path) -> Result<Option<SourceConfig>, LoadError> {
    let text = std::fs::read_to_string(path).map_err(|source| LoadError::Read {
        path: path.to_owned(),
        source,
    })?;
    Ok(parse_source(path, &text)?)
}

/// Validates a fleet's config document (`<prefix>/config` or `<prefix>/nodes/<node>/config` in
/// etcd): the same schema and rules as a file, services only. Errors name `key` as the file
/// (`/veer/config:12:9: ...`).
pub fn parse_fleet(key: &str, text: &str) -> Result<DesiredState, ConfigError> {
    convert::parse_scoped(Path::new(key), text, convert::Scope::Fleet)
        .map(|(config, _)| config.state)
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.file.display(), self.line, self.column)
    }
}
