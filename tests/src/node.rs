//! veer's dataplane running in a topology's node namespace, driven directly (no daemon): loads the
//! kernel object with private maps, attaches it to every node interface, applies desired states.

use veer::{
    dataplane::Dataplane,
    model::{DesiredState, Down, XdpAttachMode},
};

use crate::netns::{EnteredNetns, Topology};

/// A dataplane attached to a topology's node. Keep it alive while traffic should be steered;
/// dropping it detaches the programs. Lives on the thread that created it (it entered the node
/// namespace on that thread).
pub struct SteeredNode {
    /// The dataplane, for `apply` and for reading maps.
    pub dataplane: Dataplane,
    /// XDP mode used on each interface.
    pub modes: Vec<(String, aya::programs::XdpMode)>,
    // Dropped after the dataplane: the thread leaves the node namespace last.
    _entered: EnteredNetns,
}

impl SteeredNode {
    /// Loads and attaches veer on every node interface of `topo` (XDP `mode`), then applies
    /// `state`. Panics with the reason on failure.
    pub fn start(topo: &Topology, mode: XdpAttachMode, state: &DesiredState) -> Self {
        let entered = topo
            .node()
            .enter_current_thread()
            .unwrap_or_else(|e| panic!("entering the node netns: {e}"));
        let mut dataplane = Dataplane::load(&crate::TEST_LOAD)
            .unwrap_or_else(|e| panic!("loading veer: {}", crate::prog::error_chain(&e)));
        let mut modes = Vec::new();
        for ifname in topo.node_ifnames() {
            let used = dataplane.attach(&ifname, mode).unwrap_or_else(|e| {
                panic!(
                    "attaching veer to {ifname}: {}",
                    crate::prog::error_chain(&e)
                )
            });
            modes.push((ifname, used));
        }
        let mut node = Self {
            dataplane,
            modes,
            _entered: entered,
        };
        node.apply(state);
        node
    }

    /// Applies `state`, panicking with the reason if it fails.
    pub fn apply(&mut self, state: &DesiredState) {
        self.dataplane
            .apply(state, &Down::new())
            .unwrap_or_else(|e| panic!("applying {state:?}: {}", crate::prog::error_chain(&e)));
    }
}
