//! The config file (`/etc/veer/veer.toml`): parsed strictly, validated completely, turned into a
//! `Config` (node settings and a `DesiredState`). A rejected file changes nothing and says
//! exactly what is wrong and where: `veer.toml:12:10: service "web", group "v2": weight 120 is
//! out of range 0..=100`.

mod schema;
mod validate;

use std::{
    fmt,
    path::{Path, PathBuf},
};

use crate::model::{DesiredState, NodeConfig};

pub use validate::ConfigErrorKind;

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
    /// Where.
    pub location: Location,
    /// What.
    #[source]
    pub kind: ConfigErrorKind,
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
    validate::parse(file, text)
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.file.display(), self.line, self.column)
    }
}
