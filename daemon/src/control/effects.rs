//! What the controller does to the world, behind two narrow interfaces: `Effects` changes it
//! (the maps and the node settings they need, the revision store, conntrack upkeep, the links
//! after the node's interfaces change) and `Readings` reads the kernel's counters and flows and
//! how each interface is steered. `Node` is the real node; the control tests use a fake, so
//! control decisions are checked without root.

use std::collections::BTreeSet;

use veer_common::{
    counters::{BackendCounters, Reason, ServiceCounters},
    flow::{FlowEntry, FlowKey},
    signals::BackendSignals,
};

use super::{change::Change, error::ControlError};
pub use crate::dataplane::{DataplaneReport, InterfaceReport, flows::Census};
use crate::{
    dataplane::flows::Upkeep,
    model::{DesiredState, Down, Ids, Timeouts},
    state::{Revision, Unusable},
};

/// Changes to the node.
pub trait Effects {
    /// Makes the kernel hold `state`, the backends in `down` out of their tables, without
    /// touching established flows, once the node settings `state` needs are right (set where
    /// they are veer's to set). All or nothing: on error, a setting refused included, the
    /// previous state is in force.
    fn apply(&mut self, state: &DesiredState, down: &Down) -> Result<(), ControlError>;

    /// Records `change` durably as the next revision, with the ids the kernel now uses, and
    /// returns its number.
    fn commit(&mut self, change: &Change) -> Result<u64, ControlError>;

    /// Every revision kept, oldest first.
    fn revisions(&self) -> &[Revision];

    /// Files named like revisions that cannot be used, by number (reported, never used).
    fn unusable(&self) -> &[Unusable];

    /// One conntrack upkeep pass: idle flows expire by the timeouts of their state.
    fn upkeep(&mut self, timeouts: &Timeouts) -> Result<Upkeep, ControlError>;

    /// After a link or address event: attaches again to interfaces that came back, makes the
    /// XDP redirect targets follow what each interface can take now, and checks the node
    /// settings `live` needs again. Returns whether anything changed.
    fn refresh_links(&mut self, live: &DesiredState) -> Result<bool, ControlError>;

    /// Ends flow `key` for a paced drain (a reset to both ends of a TCP flow, the entry of a
    /// UDP one). Returns whether there was an active flow to end.
    fn end_flow(&mut self, key: &FlowKey) -> Result<bool, ControlError>;
}

/// Conntrack entries of both flow tables and the clock they are measured against.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FlowTable {
    /// Every entry (a flow caught in both tables mid-promotion, once).
    pub entries: Vec<(FlowKey, FlowEntry)>,
    /// The tick of the entries' clock now (`veer_common::flow::TICK_SHIFT`, the clock of
    /// `last_seen`).
    pub now: u32,
}

/// What the kernel counts.
pub trait Readings {
    /// The ids the state in force was applied with.
    fn ids(&self) -> &Ids;

    /// A backend's counters, summed over CPUs.
    fn backend_counters(&self, id: u32) -> Result<BackendCounters, ControlError>;

    /// A backend's signals (latency and duration histograms, resets, flows a drain ended),
    /// summed over CPUs; `None` for an id the kernel keeps none for.
    fn backend_signals(&self, id: u32) -> Result<Option<BackendSignals>, ControlError>;

    /// The active flows of backends `ids` in the flow tables, oldest first.
    fn active_flows_of(&self, ids: &BTreeSet<u32>) -> Result<Vec<FlowKey>, ControlError>;

    /// A service's counters, summed over CPUs.
    fn service_counters(&self, id: u32) -> Result<ServiceCounters, ControlError>;

    /// Active flows per backend and the entries of each flow table, from one scan.
    fn census(&self) -> Result<Census, ControlError>;

    /// Every exit of the fast path that did not steer, counted.
    fn reasons(&self) -> Result<Vec<(Reason, u64)>, ControlError>;

    /// Every conntrack entry.
    fn flows(&self) -> Result<FlowTable, ControlError>;

    /// How each interface is steered, the node settings as last checked, and whether clients
    /// on the node are steered.
    fn dataplane(&self) -> DataplaneReport;
}
