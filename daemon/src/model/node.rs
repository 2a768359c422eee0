//! Node settings: where the programs attach, how large conntrack is, when idle flows expire.
//! They take effect when the daemon starts (the maps are sized and the links made then).

use std::time::Duration;

/// XDP attach mode, as the config file names it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum XdpAttachMode {
    /// Native where the driver supports it, generic otherwise.
    #[default]
    Auto,
    /// Native (driver) mode only.
    Native,
    /// Generic (skb) mode only.
    Generic,
}

/// Idle timeouts of conntrack entries, by state.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Timeouts {
    /// TCP flow that has not completed its handshake.
    #[serde(with = "super::human::duration")]
    pub tcp_syn: Duration,
    /// Established TCP flow.
    #[serde(with = "super::human::duration")]
    pub tcp_established: Duration,
    /// TCP flow that has seen FIN or RST.
    #[serde(with = "super::human::duration")]
    pub tcp_closing: Duration,
    /// UDP flow.
    #[serde(with = "super::human::duration")]
    pub udp: Duration,
}

impl Timeouts {
    /// Shortest idle timeout.
    pub const MIN: Duration = Duration::from_secs(1);
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

/// Node settings.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct NodeConfig {
    /// Interfaces the programs attach to.
    pub interfaces: Vec<String>,
    /// XDP attach mode.
    pub xdp_mode: XdpAttachMode,
    /// Conntrack capacity (entries).
    pub conntrack_max: u32,
    /// Idle timeouts.
    pub timeouts: Timeouts,
}

impl NodeConfig {
    /// Smallest conntrack.
    pub const MIN_CONNTRACK: u32 = 1024;
    /// Largest conntrack.
    pub const MAX_CONNTRACK: u32 = 1 << 26;
}

impl Default for NodeConfig {
    fn default() -> Self {
        Self {
            interfaces: Vec::new(),
            xdp_mode: XdpAttachMode::Auto,
            conntrack_max: veer_common::maps::DEFAULT_CONNTRACK_MAX,
            timeouts: Timeouts::default(),
        }
    }
}
