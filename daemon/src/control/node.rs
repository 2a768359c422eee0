//! The real node: veer's dataplane (programs, links, maps, the node settings it needs) and the
//! revision store, behind `Effects` and `Readings`, and the daemon's start, which loads or adopts
//! them.
//!
//! At start the node settings come from the config file. When it cannot be read or is
//! rejected, or is missing, the node runs as it ran: the settings recorded at its last start,
//! with the capacities of the maps pinned (a conntrack of another size would need a teardown,
//! which breaks every flow), and it reports the file's error. When the newest revision file
//! cannot be used, the maps are not reconciled with an older revision: they are kept as pinned
//! until an operator chooses a state, which is then written over them whole (`reconcile`).

use std::{collections::BTreeSet, path::PathBuf};

use veer_common::{
    counters::{BackendCounters, Reason, ServiceCounters},
    flow::FlowKey,
    signals::BackendSignals,
};

use super::{
    change::Change,
    effects::{Census, DataplaneReport, Effects, FlowTable, Readings},
    error::ControlError,
};
use crate::{
    config,
    dataplane::{Dataplane, ending, flows, flows::Upkeep, links, loader, loader::LoadOptions},
    error::chain,
    lock::{self, Locks},
    model::{DesiredState, Down, Ids, NodeConfig, Timeouts},
    paths,
    state::{Revision, Store, Unusable},
};

/// Where the control layer keeps things.
#[derive(Clone, Debug)]
pub struct Options {
    /// Config file.
    pub config: PathBuf,
    /// State directory.
    pub state_dir: PathBuf,
    /// Pin directory.
    pub pin_dir: PathBuf,
    /// The fleet's etcd, when the services come from there (the config file then holds
    /// `[node]` only).
    pub etcd: Option<super::source::EtcdSource>,
}

/// The dataplane and the revision store of this node, and the locks that make them this
/// daemon's alone.
pub struct Node {
    dataplane: Dataplane,
    store: Store,
    /// While the maps hold a state no usable revision records (the newest revision file cannot
    /// be used): the ids to start from when an operator's choice is written over them whole.
    adopt: Option<Ids>,
    _locks: Locks,
}

impl Effects for Node {
    fn apply(&mut self, state: &DesiredState, down: &Down) -> Result<(), ControlError> {
        self.dataplane.prepare_node(state)?;
        match self.adopt.take() {
            Some(ids) => {
                // What the maps hold is unknown: write the whole state and remove the rest.
                if let Err(e) = self.dataplane.reconcile(state, ids.clone(), down) {
                    self.adopt = Some(ids);
                    return Err(e.into());
                }
            }
            None => {
                self.dataplane.apply(state, down)?;
            }
        }
        Ok(())
    }

    fn commit(&mut self, change: &Change) -> Result<u64, ControlError> {
        let ids = self.dataplane.applied().ids.clone();
        let revision = self.store.commit(
            change.origin.clone(),
            change.summary.clone(),
            change.state.clone(),
            ids,
            change.config.clone(),
            change.rollouts.clone(),
            change.drains.clone(),
            change.audit.clone(),
        )?;
        Ok(revision.number)
    }

    fn revisions(&self) -> &[Revision] {
        self.store.all()
    }

    fn unusable(&self) -> &[Unusable] {
        self.store.unusable()
    }

    fn upkeep(&mut self, timeouts: &Timeouts) -> Result<Upkeep, ControlError> {
        Ok(self.dataplane.upkeep(timeouts, flows::now_tick())?)
    }

    fn end_flow(&mut self, key: &FlowKey) -> Result<bool, ControlError> {
        Ok(self.dataplane.end_flow(key)? != ending::Ended::Gone)
    }

    fn refresh_links(&mut self, live: &DesiredState) -> Result<bool, ControlError> {
        let changed = self.dataplane.refresh_interfaces()?;
        self.dataplane.prepare_node(live)?;
        Ok(changed)
    }
}

impl Readings for Node {
    fn ids(&self) -> &Ids {
        &self.dataplane.applied().ids
    }

    fn backend_counters(&self, id: u32) -> Result<BackendCounters, ControlError> {
        Ok(self.dataplane.maps().backend_counters(id)?)
    }

    fn service_counters(&self, id: u32) -> Result<ServiceCounters, ControlError> {
        Ok(self.dataplane.maps().service_counters(id)?)
    }

    fn backend_signals(&self, id: u32) -> Result<Option<BackendSignals>, ControlError> {
        Ok(self.dataplane.maps().backend_signals(id)?)
    }

    fn active_flows_of(&self, ids: &BTreeSet<u32>) -> Result<Vec<FlowKey>, ControlError> {
        Ok(self.dataplane.active_flows_of(ids)?)
    }

    fn census(&self) -> Result<Census, ControlError> {
        Ok(self.dataplane.census()?)
    }

    fn reasons(&self) -> Result<Vec<(Reason, u64)>, ControlError> {
        Reason::ALL
            .iter()
            .map(|r| Ok((*r, self.dataplane.maps().reason_count(*r)?)))
            .collect()
    }

    fn flows(&self) -> Result<FlowTable, ControlError> {
        Ok(FlowTable {
            entries: self.dataplane.maps().flows()?,
            now: flows::now_tick(),
        })
    }

    fn dataplane(&self) -> DataplaneReport {
        self.dataplane.report()
    }
}

/// The config file as the start found it.
pub(super) enum FileAtStart {
    /// Read and valid: its content and text, to apply.
    Read(config::Config, String),
    /// There is none: no services until one is applied.
    Missing,
    /// Rejected, with a revision to keep in force: why.
    Rejected(config::LoadError),
}

/// What a started node runs with: its node settings, and the config file as the start found it.
pub(super) type Started = (Node, NodeConfig, FileAtStart);

/// The node settings to run with when the config file gives none: those of the last start
/// (defaults when none were recorded), with the capacity of the conntrack map pinned, if any.
fn settings_without_file(store: &Store, pin_dir: &std::path::Path) -> NodeConfig {
    let mut node = match store.node_settings() {
        Ok(Some(n)) => n,
        Ok(None) => NodeConfig::default(),
        Err(problem) => {
            tracing::warn!(%problem, "the node settings of the last start cannot be used; defaults apply");
            NodeConfig::default()
        }
    };
    // The pinned tables keep their sizes (layout 1 had one table, `VEER_CONNTRACK`).
    let flows = loader::pinned_capacity(pin_dir, veer_common::maps::FLOWS)
        .or_else(|| loader::pinned_capacity(pin_dir, veer_common::maps::v1::CONNTRACK));
    if let Some(max) = flows {
        node.conntrack_max = max;
    }
    if let Some(max) = loader::pinned_capacity(pin_dir, veer_common::maps::NEWFLOWS) {
        node.conntrack_new_max = max;
    }
    node
}

impl Node {
    /// Loads (or adopts) the pinned programs and maps (migrating pins of an older layout),
    /// reconciles the maps with the last committed revision (unless the newest revision file
    /// cannot be used: then they stay as pinned), attaches (or adopts) the links of every
    /// interface with the hook the kernel's report of it calls for and the socket hooks for
    /// clients on the node, checks the node settings the last revision needs, and ends a
    /// migration once this build's programs run on every link.
    pub(super) fn start(opts: &Options) -> Result<Started, ControlError> {
        // Before anything is read or touched: another daemon on the same state or pins wins.
        let locks = lock::acquire(&opts.state_dir, &opts.pin_dir)?;
        let store = Store::open(&opts.state_dir)?;
        let held = store.hold().cloned();
        let has_state = store.latest().is_some() || held.is_some();
        let (node, file) = match config::load(&opts.config) {
            Ok((c, text)) => (c.node.clone(), FileAtStart::Read(c, text)),
            Err(config::LoadError::Read { source, .. })
                if source.kind() == std::io::ErrorKind::NotFound =>
            {
                let node = settings_without_file(&store, &opts.pin_dir);
                tracing::warn!(config = %opts.config.display(), conntrack_max = node.conntrack_max, "no config file; running with the node settings of the last start and the pinned maps");
                (node, FileAtStart::Missing)
            }
            Err(e) if has_state => {
                let node = settings_without_file(&store, &opts.pin_dir);
                tracing::error!(error = %chain(&e), conntrack_max = node.conntrack_max, "config file not usable; running on the pinned maps and the last committed revision with the node settings of the last start; fix the file, then reload (SIGHUP) or `veer apply -f FILE`");
                (node, FileAtStart::Rejected(e))
            }
            Err(e) => return Err(e.into()),
        };
        let mut dataplane = Dataplane::load(&LoadOptions {
            pin_dir: Some(opts.pin_dir.clone()),
            conntrack_max: node.conntrack_max,
            conntrack_new_max: node.conntrack_new_max,
        })?;
        // The maps match the last revision before this build's programs run on the links (a
        // backend's replies need its VIPs from the first packet on), unless the newest revision
        // file cannot be used: then they stay as pinned.
        let mut adopt = None;
        if let Some(h) = &held {
            tracing::error!(
                revision = h.number,
                path = %h.path.display(),
                problem = %h.problem,
                "the newest revision file cannot be used: the maps are kept as pinned (traffic flows as it did) and no change is made until an operator chooses the state: {}",
                super::error::held_advice(store.latest().map(|r| r.number), opts.etcd.is_some())
            );
            adopt = Some(store.latest().map(|r| r.ids.clone()).unwrap_or_default());
        } else if let Some(rev) = store.latest() {
            let written = dataplane.reconcile(&rev.state, rev.ids.clone(), &Down::new())?;
            tracing::info!(
                revision = rev.number,
                ops = written,
                "maps reconciled with the last committed revision"
            );
        }
        let links_dir = opts.pin_dir.join(paths::LINKS_SUBDIR);
        let mut interfaces = node.interfaces.clone();
        for pinned in links::pinned_interfaces(&links_dir) {
            if !interfaces.contains(&pinned) {
                tracing::warn!(interface = %pinned, "links pinned for an interface the config does not name; adopting them (veer teardown removes them)");
                interfaces.push(pinned);
            }
        }
        for ifname in &interfaces {
            dataplane.attach_interface(
                ifname,
                node.xdp_mode,
                node.hook_choice(ifname),
                Some(&links_dir),
            )?;
        }
        dataplane.attach_local_clients(Some(&links_dir))?;
        if let Some(rev) = store.latest() {
            dataplane.prepare_node(&rev.state)?;
        }
        dataplane.finish_migration()?;
        if let Err(e) = store.record_node_settings(&node) {
            tracing::warn!(error = %chain(&e), "could not record the node settings for the next start");
        }
        Ok((
            Self {
                dataplane,
                store,
                adopt,
                _locks: locks,
            },
            node,
            file,
        ))
    }
}
