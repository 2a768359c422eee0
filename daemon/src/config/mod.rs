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
mod spans;
#[cfg(test)]
mod tests;

use std::{
    fmt,
    path::{Path, PathBuf},
};

use crate::model::{DesiredState, NodeConfig, Violation, WeightError};

pub use render::to_toml;

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

/// Validates config `text` (`file` only names it in errors).
pub fn parse(file: &Path, text: &str) -> Result<Config, ConfigError> {
    convert::parse(file, text)
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.file.display(), self.line, self.column)
    }
}
