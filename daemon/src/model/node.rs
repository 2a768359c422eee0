//! Node settings: where the programs attach and with which hook, how large conntrack is, when
//! idle flows expire. They take effect when the daemon starts (the maps are sized and the links
//! made then).

use std::{collections::BTreeMap, time::Duration};

/// XDP attach mode, as the config file names it. It applies to the interfaces that get XDP
/// (see `dataplane::ifaces::decide`): skb-backed interfaces (veth, bridge ...) get TC whatever it
/// says.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum XdpAttachMode {
    /// Native where the driver supports it, TC on a NIC whose driver does not.
    #[default]
    Auto,
    /// Native (driver) mode only: a NIC without native XDP is refused.
    Native,
    /// Generic (skb) mode wherever XDP is chosen.
    Generic,
}

/// An operator's override of the hook of one interface (`[node.hooks]`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HookChoice {
    /// Decided from what the kernel reports (the default).
    #[default]
    Auto,
    /// XDP whatever the interface (native where the driver has it); the operator vouches that
    /// frames arrive with complete checksums.
    Xdp,
    /// TC whatever the interface.
    Tc,
}

impl HookChoice {
    /// `auto`, `xdp` or `tc`, as the config file writes it.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Auto => "auto",
            Self::Xdp => "xdp",
            Self::Tc => "tc",
        }
    }
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
    /// Longest idle timeout: flow entries keep time in 32-bit ticks of about a millisecond,
    /// whose ages are exact up to 24.8 days (`veer_common::flow::ticks_since`).
    pub const MAX: Duration = Duration::from_hours(24 * 20);
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
    /// XDP attach mode (where XDP is chosen).
    pub xdp_mode: XdpAttachMode,
    /// Per-interface overrides of the hook choice (`[node.hooks]`); interfaces not named are
    /// `auto`. Each names an interface of `interfaces`.
    #[serde(default)]
    pub hooks: BTreeMap<String, HookChoice>,
    /// Capacity of the table of confirmed flows, `VEER_FLOWS` (entries).
    pub conntrack_max: u32,
    /// Capacity of the table of new flows, `VEER_NEWFLOWS` (entries): handshakes, mid-flow
    /// misses, UDP flows.
    pub conntrack_new_max: u32,
    /// Idle timeouts.
    pub timeouts: Timeouts,
}

/// `[node.hooks]` in one line, for `NodeChange`: `{eth0 = "tc"}`.
fn hooks_text(hooks: &BTreeMap<String, HookChoice>) -> String {
    let entries: Vec<String> = hooks
        .iter()
        .map(|(name, choice)| format!("{name} = \"{}\"", choice.as_str()))
        .collect();
    format!("{{{}}}", entries.join(", "))
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
            ("hooks", hooks_text(&self.hooks), hooks_text(&wanted.hooks)),
            (
                "conntrack_max",
                self.conntrack_max.to_string(),
                wanted.conntrack_max.to_string(),
            ),
            (
                "conntrack_new_max",
                self.conntrack_new_max.to_string(),
                wanted.conntrack_new_max.to_string(),
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

    /// The hook choice of `interface` (`auto` unless `[node.hooks]` names it).
    pub fn hook_choice(&self, interface: &str) -> HookChoice {
        self.hooks.get(interface).copied().unwrap_or_default()
    }

    /// Smallest flow table (`conntrack_max`, `conntrack_new_max`).
    pub const MIN_CONNTRACK: u32 = 1024;
    /// Largest flow table (`conntrack_max`, `conntrack_new_max`).
    pub const MAX_CONNTRACK: u32 = 1 << 26;
}

impl Default for NodeConfig {
    fn default() -> Self {
        Self {
            interfaces: Vec::new(),
            xdp_mode: XdpAttachMode::Auto,
            hooks: BTreeMap::new(),
            conntrack_max: veer_common::maps::DEFAULT_CONNTRACK_MAX,
            conntrack_new_max: veer_common::maps::DEFAULT_NEWFLOWS_MAX,
            timeouts: Timeouts::default(),
        }
    }
}
