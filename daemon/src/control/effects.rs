//! What the controller does to the world, behind two narrow interfaces: `Effects` changes it
//! (the maps, the revision store, conntrack upkeep) and `Readings` reads the kernel's counters
//! and flows. `Node` is the real node; the control tests use a fake, so control decisions are
//! checked without root.

use std::collections::HashMap;

use veer_common::{
    counters::{BackendCounters, Reason, ServiceCounters},
    flow::{FlowEntry, FlowKey},
};

use super::{change::Change, error::ControlError};
use crate::{
    dataplane::flows::Upkeep,
    model::{DesiredState, Down, Ids, Timeouts},
    state::{Revision, Unusable},
};

/// Changes to the node.
pub trait Effects {
    /// Makes the kernel hold `state`, the backends in `down` out of their tables, without
    /// touching established flows. All or nothing: on error the previous state is in force.
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
}

/// Conntrack as counted by one scan.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Census {
    /// Active flows (SYN, established, UDP) per backend id.
    pub active: HashMap<u32, u64>,
    /// Entries in every state.
    pub entries: u64,
}

/// Conntrack entries and the clock they are measured against.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FlowTable {
    /// Every entry.
    pub entries: Vec<(FlowKey, FlowEntry)>,
    /// `CLOCK_MONOTONIC` now, in nanoseconds (the clock of `last_seen_ns`).
    pub now_ns: u64,
}

/// What the kernel counts.
pub trait Readings {
    /// The ids the state in force was applied with.
    fn ids(&self) -> &Ids;

    /// A backend's counters, summed over CPUs.
    fn backend_counters(&self, id: u32) -> Result<BackendCounters, ControlError>;

    /// A service's counters, summed over CPUs.
    fn service_counters(&self, id: u32) -> Result<ServiceCounters, ControlError>;

    /// Active flows per backend and entries, from one scan of conntrack.
    fn census(&self) -> Result<Census, ControlError>;

    /// Every exit of the fast path that did not steer, counted.
    fn reasons(&self) -> Result<Vec<(Reason, u64)>, ControlError>;

    /// Every conntrack entry.
    fn flows(&self) -> Result<FlowTable, ControlError>;
}
