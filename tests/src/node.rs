//! veer's dataplane running in a topology's node namespace, driven directly (no daemon): loads the
//! kernel object with private maps, attaches it to every node interface with the hook the kernel's
//! report calls for (or the one a test asks for), optionally the socket hooks for clients on the
//! node, and applies desired states (node settings first, as the daemon does).

use veer::{
    dataplane::{Dataplane, InterfaceReport},
    model::{DesiredState, Down, HookChoice, XdpAttachMode},
};

use crate::netns::{EnteredNetns, Topology};

/// How a [`SteeredNode`] attaches.
#[derive(Clone, Debug, Default)]
pub struct NodeOptions {
    /// `[node] xdp_mode`.
    pub xdp_mode: XdpAttachMode,
    /// `[node.hooks]`: interfaces not named are `auto`.
    pub hooks: Vec<(String, HookChoice)>,
    /// Attach the socket hooks for clients on the node (on the root cgroup, acting on the node
    /// namespace only).
    pub local_clients: bool,
}

/// A dataplane attached to a topology's node. Keep it alive while traffic should be steered;
/// dropping it detaches the programs. Lives on the thread that created it (it entered the node
/// namespace on that thread).
pub struct SteeredNode {
    /// The dataplane, for `apply` and for reading maps.
    pub dataplane: Dataplane,
    /// What attaching did on each interface (hook, mode, why).
    pub interfaces: Vec<InterfaceReport>,
    // Dropped after the dataplane: the thread leaves the node namespace last.
    _entered: EnteredNetns,
}

impl SteeredNode {
    /// Loads and attaches veer on every node interface of `topo` with the hooks the kernel's
    /// report calls for, then applies `state`. Panics with the reason on failure.
    pub fn start(topo: &Topology, state: &DesiredState) -> Self {
        Self::start_with(topo, &NodeOptions::default(), state)
    }

    /// Like [`SteeredNode::start`], attaching as `opts` says.
    pub fn start_with(topo: &Topology, opts: &NodeOptions, state: &DesiredState) -> Self {
        let entered = topo
            .node()
            .enter_current_thread()
            .unwrap_or_else(|e| panic!("entering the node netns: {e}"));
        let mut dataplane = Dataplane::load(&crate::TEST_LOAD)
            .unwrap_or_else(|e| panic!("loading veer: {}", crate::prog::error_chain(&e)));
        let mut interfaces = Vec::new();
        for ifname in topo.node_ifnames() {
            let choice = opts
                .hooks
                .iter()
                .find(|(name, _)| *name == ifname)
                .map_or(HookChoice::Auto, |(_, c)| *c);
            let report = dataplane
                .attach_interface(&ifname, opts.xdp_mode, choice, None)
                .unwrap_or_else(|e| {
                    panic!(
                        "attaching veer to {ifname}: {}",
                        crate::prog::error_chain(&e)
                    )
                });
            interfaces.push(report);
        }
        if opts.local_clients {
            let lc = dataplane
                .attach_local_clients(None)
                .unwrap_or_else(|e| panic!("socket hooks: {}", crate::prog::error_chain(&e)));
            assert!(lc.steered, "socket hooks not attached: {}", lc.why);
        }
        let mut node = Self {
            dataplane,
            interfaces,
            _entered: entered,
        };
        node.apply(state);
        node
    }

    /// The report of interface `name`.
    ///
    /// # Panics
    /// If veer is not attached to it.
    pub fn interface(&self, name: &str) -> &InterfaceReport {
        self.interfaces
            .iter()
            .find(|i| i.name == name)
            .unwrap_or_else(|| panic!("veer is not attached to {name}"))
    }

    /// Applies `state` (node settings first), panicking with the reason if it fails.
    pub fn apply(&mut self, state: &DesiredState) {
        self.dataplane.prepare_node(state).unwrap_or_else(|e| {
            panic!(
                "node settings for {state:?}: {}",
                crate::prog::error_chain(&e)
            )
        });
        self.dataplane
            .apply(state, &Down::new())
            .unwrap_or_else(|e| panic!("applying {state:?}: {}", crate::prog::error_chain(&e)));
    }

    /// Re-reads the interfaces after a link change (what the daemon does on a link event), and
    /// refreshes [`SteeredNode::interfaces`].
    pub fn refresh(&mut self) {
        self.dataplane
            .refresh_interfaces()
            .unwrap_or_else(|e| panic!("refreshing interfaces: {}", crate::prog::error_chain(&e)));
        self.interfaces = self.dataplane.interfaces();
    }
}
