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
    /// Longest idle timeout (a week; Linux conntrack keeps an idle established flow 5 days).
    pub const MAX: Duration = Duration::from_hours(7 * 24);
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

/// A node setting whose new value waits for a daemon restart.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct NodeChange {
    /// The key, as in the config file (`conntrack_max`, `timeouts.udp`).
    pub setting: String,
    /// The value in force.
    pub running: String,
    /// The value asked for.
    pub wanted: String,
}

impl NodeConfig {
    /// The settings `wanted` changes from these, each with both values, in file order.
    pub fn changes(&self, wanted: &NodeConfig) -> Vec<NodeChange> {
        let d = |d: Duration| humantime::format_duration(d).to_string();
        let (r, w) = (&self.timeouts, &wanted.timeouts);
        [
            (
                "interfaces",
                format!("{:?}", self.interfaces),
                format!("{:?}", wanted.interfaces),
            ),
            (
                "xdp_mode",
                format!("{:?}", self.xdp_mode).to_lowercase(),
                format!("{:?}", wanted.xdp_mode).to_lowercase(),
            ),
            (
                "conntrack_max",
                self.conntrack_max.to_string(),
                wanted.conntrack_max.to_string(),
            ),
            ("timeouts.tcp_syn", d(r.tcp_syn), d(w.tcp_syn)),
            (
                "timeouts.tcp_established",
                d(r.tcp_established),
                d(w.tcp_established),
            ),
            ("timeouts.tcp_closing", d(r.tcp_closing), d(w.tcp_closing)),
            ("timeouts.udp", d(r.udp), d(w.udp)),
        ]
        .into_iter()
        .filter(|(_, running, wanted)| running != wanted)
        .map(|(setting, running, wanted)| NodeChange {
            setting: setting.to_owned(),
            running,
            wanted,
        })
        .collect()
    }

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
