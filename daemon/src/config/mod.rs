//! The config file (`/etc/veer/veer.toml`): parsed strictly, validated completely, turned into a
//! `Config` (node settings and a `DesiredState`). A rejected file changes nothing and says
//! exactly what is wrong and where: `veer.toml:12:10: service "web", group "v2": weight 120 is
//! out of range 0..=100`.

mod schema;
mod validate;

use std::{
    fmt,
    path::{Path, PathBuf},
    time::Duration,
};

use crate::{
    dataplane::{ifaces::HookChoice, loader::XdpAttachMode},
    model::DesiredState,
};

pub use validate::{ConfigErrorKind, parse_prefix};

/// Idle timeouts of conntrack entries, by state.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Timeouts {
    /// TCP flow that has not completed its handshake.
    #[serde(with = "humantime_serde_compat")]
    pub tcp_syn: Duration,
    /// Established TCP flow.
    #[serde(with = "humantime_serde_compat")]
    pub tcp_established: Duration,
    /// TCP flow that has seen FIN or RST.
    #[serde(with = "humantime_serde_compat")]
    pub tcp_closing: Duration,
    /// UDP flow.
    #[serde(with = "humantime_serde_compat")]
    pub udp: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Self {
            tcp_syn: Duration::from_secs(30),
            tcp_established: Duration::from_hours(1),
            tcp_closing: Duration::from_secs(10),
            udp: Duration::from_mins(1),
        }
    }
}

/// Durations as humantime strings in JSON (`"1h"`), for serde's `with`.
pub mod duration_text {
    use std::time::Duration;

    use serde::{Deserialize as _, Deserializer, Serializer};

    /// Serializes as `"1h 2m"`.
    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&humantime::format_duration(*d).to_string())
    }

    /// Parses `"500ms"`, `"1h"`.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let text = String::deserialize(d)?;
        humantime::parse_duration(&text).map_err(serde::de::Error::custom)
    }
}

/// Durations as humantime strings in JSON (`"1h"`).
mod humantime_serde_compat {
    use std::time::Duration;

    use serde::{Deserialize as _, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&humantime::format_duration(*d).to_string())
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let text = String::deserialize(d)?;
        humantime::parse_duration(&text).map_err(serde::de::Error::custom)
    }
}

/// Node settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeConfig {
    /// Interfaces the programs attach to.
    pub interfaces: Vec<String>,
    /// XDP attach mode (where XDP is chosen).
    pub xdp_mode: XdpAttachMode,
    /// Per-interface overrides of the hook choice (`[node.hooks]`); interfaces not named are
    /// `auto`.
    pub hooks: std::collections::BTreeMap<String, HookChoice>,
    /// Conntrack capacity (entries).
    pub conntrack_max: u32,
    /// Idle timeouts.
    pub timeouts: Timeouts,
}

impl NodeConfig {
    /// The hook choice of `interface` (`auto` unless `[node.hooks]` names it).
    pub fn hook_choice(&self, interface: &str) -> HookChoice {
        self.hooks.get(interface).copied().unwrap_or_default()
    }
}

impl Default for NodeConfig {
    fn default() -> Self {
        Self {
            interfaces: Vec::new(),
            xdp_mode: XdpAttachMode::Auto,
            hooks: std::collections::BTreeMap::new(),
            conntrack_max: veer_common::maps::DEFAULT_CONNTRACK_MAX,
            timeouts: Timeouts::default(),
        }
    }
}

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
