//! `veer status --offline`: what the kernel holds, read from the pinned maps with no daemon (as
//! `ipvsadm -L` reads the kernel's tables): services, the weights of their groups, the backends
//! in each group's table, active flows and counters. The maps are the truth; names come from the
//! ids recorded with the last revision in the state directory, when it reads, else things are
//! shown by id (`#3`). Nothing is written: not the maps, not the state directory.

use std::{
    collections::HashMap,
    net::SocketAddr,
    path::{Path, PathBuf},
};

use veer_common::{PROTO_TCP, addr::words_addr, maps as names};

use super::views::{
    BackendView, ConfigView, FilesView, GroupView, RevisionView, ServiceView, StatusView,
};
use crate::{
    dataplane::{DataplaneError, flows, links, maps::Maps},
    model::{Ids, Pin, Protocol, Weight},
    paths,
    state::Store,
};

/// Why the pinned maps could not be read.
#[derive(Debug, thiserror::Error)]
pub enum OfflineError {
    /// Nothing is pinned there.
    #[error(
        "no veer maps are pinned in {}: veer is not loaded on this node (or pins elsewhere: --pin-dir)",
        dir.display()
    )]
    NoPins {
        /// The pin directory.
        dir: PathBuf,
    },
    /// The maps could not be opened or read.
    #[error("reading the maps pinned in {}", dir.display())]
    Maps {
        /// The pin directory.
        dir: PathBuf,
        /// Why.
        #[source]
        source: DataplaneError,
    },
}

/// Where the names of an offline view come from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Names {
    /// The ids recorded with this revision.
    Revision(u64),
    /// None: things are shown by id, for this reason.
    Ids(String),
}

/// What the pinned maps hold.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OfflineView {
    /// Where they were read.
    pub pin_dir: PathBuf,
    /// Where the names come from.
    pub names: Names,
    /// Services, groups, backends, flows and counters, as the maps hold them.
    pub status: StatusView,
}

/// The revisions of `state_dir`, read as the daemon reads them (regular files only, without
/// blocking, never through a link) but without writing anything: the store's own opening tidies
/// the directory; a reader must not.
fn revisions(state_dir: &Path) -> Result<Store, String> {
    Store::read_only(state_dir).map_err(|e| crate::error::chain(&e))
}

fn read<T>(dir: &Path, r: Result<T, DataplaneError>) -> Result<T, OfflineError> {
    r.map_err(|source| OfflineError::Maps {
        dir: dir.to_owned(),
        source,
    })
}

/// The maps pinned in `pin_dir`, named from the last revision in `state_dir` (only `only`'s
/// service when given).
pub fn status(
    pin_dir: &Path,
    state_dir: &Path,
    only: Option<&str>,
) -> Result<OfflineView, OfflineError> {
    if !pin_dir.join(names::SERVICES).exists() {
        return Err(OfflineError::NoPins {
            dir: pin_dir.to_owned(),
        });
    }
    let capacity = read(pin_dir, crate::dataplane::loader::check_pinned(pin_dir))?;
    let maps = read(pin_dir, Maps::open_pinned(pin_dir))?;
    let store = revisions(state_dir);
    let files = match &store {
        Ok(store) => FilesView {
            held: store.hold().cloned(),
            newest_usable: store.latest().map(|r| r.number),
            unusable: store.unusable().to_vec(),
        },
        Err(_) => FilesView::default(),
    };
    // Names come from the newest usable revision, also while the newest file cannot be used
    // (the ids of the maps rarely change; `files` says which file was skipped).
    let (revision, names) = match store.map(|s| s.latest().cloned()) {
        Ok(Some(r)) => {
            let n = Names::Revision(r.number);
            (Some(r), n)
        }
        Ok(None) => (
            None,
            Names::Ids(format!(
                "no usable revision in {}",
                state_dir.join("revisions").display()
            )),
        ),
        Err(why) => (None, Names::Ids(why)),
    };
    let ids = revision.as_ref().map(|r| r.ids.clone()).unwrap_or_default();
    let census = read(pin_dir, flows::census(&maps))?;
    let mut services = read(pin_dir, services(&maps, &ids, &census.active))?;
    if let Some(name) = only {
        services.retain(|s| s.name == name);
    }
    let status = StatusView {
        files,
        config: ConfigView {
            path: PathBuf::from(paths::CONFIG),
            last_good: None,
            last_attempt: None,
            reloads_ok: 0,
            reloads_failed: 0,
            last_error: None,
            pending_restart: Vec::new(),
        },
        revision: revision.as_ref().map(RevisionView::from),
        interfaces: links::pinned_interfaces(&pin_dir.join(paths::LINKS_SUBDIR)),
        // Hooks, node settings and clients on the node are what a running daemon checks.
        dataplane: super::DataplaneReport::default(),
        conntrack_entries: census.flows,
        conntrack_capacity: capacity.conntrack_max,
        conntrack_new_entries: census.new_flows,
        conntrack_new_capacity: capacity.conntrack_new_max,
        services,
        source: None,
    };
    Ok(OfflineView {
        pin_dir: pin_dir.to_owned(),
        names,
        status,
    })
}

/// Backend `id` at `addr` with its counters from the maps.
fn backend_view(
    maps: &Maps,
    id: u32,
    addr: SocketAddr,
    healthy: bool,
    active: &HashMap<u32, u64>,
) -> Result<BackendView, DataplaneError> {
    let c = maps.backend_counters(id)?;
    Ok(BackendView {
        addr,
        healthy,
        active_flows: active.get(&id).copied().unwrap_or(0),
        new_flows: c.new_flows,
        answered_flows: c.answered_flows,
        refused_flows: c.refused_flows,
        // Unanswered attempts are counted by a running daemon's upkeep: offline only the
        // refused ones are known.
        failed_flows: c.refused_flows,
        packets: c.packets,
        bytes: c.bytes,
    })
}

/// Every service in the maps, in the order of the revision's names, then by id.
fn services(
    maps: &Maps,
    ids: &Ids,
    active: &HashMap<u32, u64>,
) -> Result<Vec<ServiceView>, DataplaneError> {
    let service_names: HashMap<u32, &str> = ids
        .services
        .iter()
        .map(|(n, id)| (*id, n.as_str()))
        .collect();
    let group_names: HashMap<u32, &str> = ids
        .groups
        .iter()
        .map(|((_, g), id)| (*id, g.as_str()))
        .collect();
    let pins = maps.pins()?;
    let mut out = Vec::new();
    let mut listed = maps.services()?;
    listed.sort_by_key(|(_, v)| v.service_id);
    for (key, value) in listed {
        let sid = value.service_id;
        let name = service_names
            .get(&sid)
            .map_or_else(|| format!("#{sid}"), |n| (*n).to_owned());
        let mut groups = Vec::new();
        let mut below = 0;
        for i in 0..(value.group_count as usize).min(value.groups.len()) {
            let gid = value.groups[i];
            let weight = Weight::from_basis_points(value.cumulative[i].saturating_sub(below))
                .unwrap_or(Weight::ZERO);
            below = value.cumulative[i];
            let in_table = maps.table_backends(gid)?;
            let mut backends = Vec::new();
            let mut ended_flows = 0;
            let mut ended = |id: u32| -> Result<(), DataplaneError> {
                ended_flows += maps.backend_signals(id)?.map_or(0, |s| s.ended);
                Ok(())
            };
            for id in &in_table {
                ended(*id)?;
                let Some(b) = maps.backend(*id)? else {
                    continue;
                };
                let addr = SocketAddr::new(words_addr(b.addr, b.family), u16::from_be(b.port));
                backends.push(backend_view(maps, *id, addr, true, active)?);
            }
            // Backends of the group the revision names that are out of its table (down, or
            // draining their flows): shown, not taking new flows.
            for ((s, g, addr), id) in &ids.backends {
                let ours = Some(&s.as_str()) == service_names.get(&sid)
                    && Some(&g.as_str()) == group_names.get(&gid);
                if !ours || in_table.contains(id) || maps.backend(*id)?.is_none() {
                    continue;
                }
                ended(*id)?;
                backends.push(backend_view(maps, *id, *addr, false, active)?);
            }
            groups.push(GroupView {
                name: group_names
                    .get(&gid)
                    .map_or_else(|| format!("#{gid}"), |n| (*n).to_owned()),
                weight,
                active_flows: backends.iter().map(|b| b.active_flows).sum(),
                ended_flows,
                drain: None,
                backends,
            });
        }
        let mut service_pins = Vec::new();
        for (s, prefix, len) in pins.iter().filter(|(s, _, _)| *s == sid) {
            let group = maps.pin_group(*s, *prefix, *len)?.map_or_else(
                || "?".to_owned(),
                |g| {
                    group_names
                        .get(&g)
                        .map_or_else(|| format!("#{g}"), |n| (*n).to_owned())
                },
            );
            service_pins.push(Pin {
                prefix: *prefix,
                len: *len,
                group,
            });
        }
        out.push(ServiceView {
            name,
            vip: words_addr(key.addr, key.family),
            port: u16::from_be(key.port),
            protocol: if key.proto == PROTO_TCP {
                Protocol::Tcp
            } else {
                Protocol::Udp
            },
            groups,
            pins: service_pins,
            counters: maps.service_counters(sid)?,
        });
    }
    Ok(out)
}
