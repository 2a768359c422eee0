//! A node whose kernel maps are in memory: the controller's `Effects` and `Readings` over the
//! same planning of map operations as the real dataplane (`dataplane::sync::plan`: ids, Maglev
//! tables built, services, pins, retirements), run into plain maps instead of BPF maps, and
//! revisions encoded as the store encodes them but kept in memory. Counters and conntrack are
//! empty (no packet ever crosses it).
//!
//! `cargo xtask bench -- fleet` runs a fleet of these on one machine, each with the real etcd
//! source, control core and status writer, to measure what etcd carries; nothing else uses it.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::{IpAddr, SocketAddr},
    time::{Instant, SystemTime},
};

use veer_common::{
    counters::{BackendCounters, Reason, ServiceCounters},
    flow::FlowKey,
    maps::MAGLEV_TABLE_SIZE,
    service::{ServiceKey, ServiceValue},
    signals::BackendSignals,
};

use super::{
    change::Change,
    effects::{Census, DataplaneReport, Effects, FlowTable, Readings},
    error::ControlError,
};
use crate::{
    dataplane::{
        flows::Upkeep,
        maglev,
        sync::{self, Applied, Op, SyncError},
    },
    model::{DesiredState, Down, Ids, Timeouts},
    state::{Revision, StoreError, Unusable},
};

/// Revisions kept, as the store keeps them.
const KEEP: usize = 1000;

/// The maps of an in-memory node.
#[derive(Clone, Debug, Default)]
struct Maps {
    backends: BTreeMap<u32, SocketAddr>,
    tables: BTreeMap<u32, Vec<u32>>,
    services: BTreeMap<[u32; 6], ServiceValue>,
    pins: BTreeMap<(u32, IpAddr, u8), u32>,
}

fn key_words(k: &ServiceKey) -> [u32; 6] {
    [
        k.addr[0],
        k.addr[1],
        k.addr[2],
        k.addr[3],
        u32::from(k.port),
        u32::from(k.proto) << 8 | u32::from(k.family),
    ]
}

impl Maps {
    fn run(&mut self, op: &Op) {
        match op {
            Op::SetBackend { id, addr, .. } => {
                self.backends.insert(*id, *addr);
            }
            Op::SetTable { group, backends } => {
                self.tables
                    .insert(*group, maglev::build(backends, MAGLEV_TABLE_SIZE));
            }
            Op::SetService { key, value } => {
                self.services.insert(key_words(key), *value);
            }
            Op::SetPin {
                service,
                prefix,
                len,
                group,
            } => {
                self.pins.insert((*service, *prefix, *len), *group);
            }
            Op::RemovePin {
                service,
                prefix,
                len,
            } => {
                self.pins.remove(&(*service, *prefix, *len));
            }
            Op::RemoveService { key } => {
                self.services.remove(&key_words(key));
            }
            Op::RemoveBackend { id } => {
                self.backends.remove(id);
            }
            // No replies in memory to restore.
            Op::SetBackendVips { .. } => {}
        }
    }
}

/// A node with in-memory maps and revisions (see the module docs).
#[derive(Debug, Default)]
pub struct MemoryNode {
    applied: Applied,
    maps: Maps,
    revisions: Vec<Revision>,
    ops: u64,
}

impl MemoryNode {
    /// An empty node: no revision, empty maps.
    pub fn new() -> Self {
        Self::default()
    }

    /// Map operations run so far.
    pub fn ops(&self) -> u64 {
        self.ops
    }

    /// Services in the maps.
    pub fn services(&self) -> usize {
        self.maps.services.len()
    }
}

impl Effects for MemoryNode {
    fn apply(&mut self, state: &DesiredState, down: &Down) -> Result<(), ControlError> {
        let plan = sync::plan(&self.applied, state, down, Instant::now())
            .map_err(|e| ControlError::Sync(SyncError::Plan(e)))?;
        for op in &plan.ops {
            self.maps.run(op);
        }
        self.ops += plan.ops.len() as u64;
        self.applied = plan.next;
        Ok(())
    }

    fn commit(&mut self, change: &Change) -> Result<u64, ControlError> {
        let number = self.revisions.last().map_or(1, |r| r.number + 1);
        let revision = change.revision(number, SystemTime::now(), self.applied.ids.clone());
        // Encoded as the store encodes it (the CPU a real node spends), kept in memory.
        serde_json::to_vec_pretty(&revision)
            .map_err(|source| StoreError::Encode { number, source })?;
        self.revisions.push(revision);
        if self.revisions.len() > KEEP {
            self.revisions.remove(0);
        }
        Ok(number)
    }

    fn revisions(&self) -> &[Revision] {
        &self.revisions
    }

    /// None: a node in memory has no files to find damaged.
    fn unusable(&self) -> &[Unusable] {
        &[]
    }

    fn upkeep(&mut self, _: &Timeouts) -> Result<Upkeep, ControlError> {
        Ok(Upkeep::default())
    }

    /// No interfaces in memory.
    fn refresh_links(&mut self, _: &DesiredState) -> Result<bool, ControlError> {
        Ok(false)
    }

    /// No flows in memory.
    fn end_flow(&mut self, _: &FlowKey) -> Result<bool, ControlError> {
        Ok(false)
    }
}

impl Readings for MemoryNode {
    fn ids(&self) -> &Ids {
        &self.applied.ids
    }

    fn backend_counters(&self, _: u32) -> Result<BackendCounters, ControlError> {
        Ok(BackendCounters::default())
    }

    fn service_counters(&self, _: u32) -> Result<ServiceCounters, ControlError> {
        Ok(ServiceCounters::default())
    }

    fn backend_signals(&self, _: u32) -> Result<Option<BackendSignals>, ControlError> {
        Ok(None)
    }

    fn active_flows_of(&self, _: &BTreeSet<u32>) -> Result<Vec<FlowKey>, ControlError> {
        Ok(Vec::new())
    }

    fn census(&self) -> Result<Census, ControlError> {
        Ok(Census::default())
    }

    fn reasons(&self) -> Result<Vec<(Reason, u64)>, ControlError> {
        Ok(Reason::ALL.iter().map(|r| (*r, 0)).collect())
    }

    fn flows(&self) -> Result<FlowTable, ControlError> {
        Ok(FlowTable::default())
    }

    fn dataplane(&self) -> DataplaneReport {
        DataplaneReport::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        control::{Controller, Request},
        model::fixtures,
        state::Origin,
    };

    #[test]
    fn the_in_memory_node_runs_the_real_plan() {
        let mut ctl = Controller::new(
            MemoryNode::new(),
            crate::model::NodeConfig::default(),
            "/nonexistent/veer.toml".into(),
        );
        let state = fixtures::web();
        let apply = Request::Apply {
            node: crate::model::NodeConfig::default(),
            mark: None,
            state: state.clone(),
            origin: Origin::Shift,
        };
        let a = ctl.execute(&apply, SystemTime::now()).unwrap();
        assert!(a.changed);
        assert_eq!(ctl.head().state, state);
        let status = ctl.status(None).unwrap();
        assert_eq!(status.services.len(), state.services.len());
        // The same state again: nothing planned, nothing committed.
        let again = ctl.execute(&apply, SystemTime::now()).unwrap();
        assert!(!again.changed);
        assert_eq!(again.revision, a.revision);
    }
}
