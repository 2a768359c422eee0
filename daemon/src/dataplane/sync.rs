//! Making the maps match a `DesiredState`.
//!
//! `plan` is pure: from what is applied and what is desired it computes the ids and an ordered
//! list of map operations. `apply` runs them in the order that keeps every packet consistent:
//!
//! 1. backends (new ids only; an id is never rewritten to another address), and the VIPs each
//!    backend serves (`VEER_BE_VIPS`, merged with what the map holds: a VIP is dropped only by
//!    conntrack upkeep, once no flow needs it), so a backend's first reply finds its flow,
//! 2. Maglev tables (a fresh inner map swapped in whole),
//! 3. removals of pins and services the state no longer has (before anything is added, so a
//!    map never holds more than the larger of the two states: validation bounds each state by
//!    the map's capacity),
//! 4. services (weights and group ids, one element swap each),
//! 5. pins,
//! 6. backend ids no table names any more are retired, and deleted from the map only after a
//!    grace period, as a packet may have read an old table just before its swap.
//!
//! Established flows are never touched: their flow entries carry the backend address.
//! If an operation fails, the operations that ran (and the failed one) are undone in reverse
//! order, each by its exact inverse computed from the state in force (`undo`): a new backend id
//! is deleted, a swapped table or a rewritten service or pin gets its old value back, a removed
//! one is written again. Then the error is returned, and the previous state is in force.
//! Removals are idempotent (a key already gone is not an error), so an undo, or a retirement
//! that runs again after one, never fails on what is already done.

use std::{
    collections::{BTreeMap, BTreeSet, btree_map::Entry},
    net::{IpAddr, SocketAddr},
    time::{Duration, Instant},
};

use veer_common::{
    FAMILY_V4, FAMILY_V6,
    addr::addr_words,
    backend::BackendValue,
    flow::{BackendKey, RevNatValue},
    maps::{MAGLEV_TABLE_SIZE, MAX_BACKENDS, MAX_GROUPS, MAX_GROUPS_PER_SERVICE, MAX_SERVICES},
    select::cumulative_weights,
    service::{ServiceKey, ServiceValue},
};

use super::{DataplaneError, maglev, maps::Maps, vips};
use crate::model::{DesiredState, Down, Ids, Service};

/// How long a retired backend id stays in the backends map after the last table naming it was
/// swapped out. A packet's program run is microseconds; this is generous.
pub const RETIRE_GRACE: Duration = Duration::from_secs(2);

/// What the maps hold now.
#[derive(Clone, Debug, Default)]
pub struct Applied {
    /// The state last applied.
    pub state: DesiredState,
    /// The backends left out of the tables.
    pub down: Down,
    /// Its ids.
    pub ids: Ids,
    /// Backend ids waiting for their grace period before deletion, and when they were retired.
    pub retiring: Vec<(u32, Instant)>,
}

/// One map operation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Op {
    /// Write a backend.
    SetBackend {
        /// Id.
        id: u32,
        /// Address.
        addr: SocketAddr,
        /// Zero the id's counters first (a new backend; not when reconciling a restart).
        reset_counters: bool,
    },
    /// Make a backend's replies find flows to these VIPs (desired ones first; VIPs the map holds
    /// already stay while flows need them).
    SetBackendVips {
        /// The backend as replies name it.
        key: BackendKey,
        /// VIPs and service ids, in order.
        vips: Vec<(RevNatValue, u32)>,
    },
    /// Swap in a group's Maglev table built over these backends.
    SetTable {
        /// Group id.
        group: u32,
        /// (backend id, address).
        backends: Vec<(u32, SocketAddr)>,
    },
    /// Write a service's split.
    SetService {
        /// Key.
        key: ServiceKey,
        /// Value.
        value: ServiceValue,
    },
    /// Write a pin.
    SetPin {
        /// Service id.
        service: u32,
        /// Prefix.
        prefix: IpAddr,
        /// Length.
        len: u8,
        /// Group id.
        group: u32,
    },
    /// Remove a pin.
    RemovePin {
        /// Service id.
        service: u32,
        /// Prefix.
        prefix: IpAddr,
        /// Length.
        len: u8,
    },
    /// Remove a service.
    RemoveService {
        /// Key.
        key: ServiceKey,
    },
    /// Delete a backend id from the map (grace period over).
    RemoveBackend {
        /// Id.
        id: u32,
    },
}

/// The result of planning.
#[derive(Clone, Debug)]
pub struct Plan {
    /// Operations in the order they must run.
    pub ops: Vec<Op>,
    /// What the maps will hold once they ran.
    pub next: Applied,
}

/// Why a state cannot be planned.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PlanError {
    /// The state breaks a rule of the model.
    #[error(transparent)]
    Invalid(#[from] crate::model::Violation),
    /// Out of ids of a kind.
    #[error("no free {kind} id: at most {max} are supported")]
    IdsExhausted {
        /// `service`, `group` or `backend`.
        kind: &'static str,
        /// The limit.
        max: u32,
    },
}

/// The map key of a service.
pub fn service_key(s: &Service) -> ServiceKey {
    ServiceKey {
        addr: addr_words(s.vip),
        port: s.port.to_be(),
        proto: s.protocol.number(),
        family: if s.vip.is_ipv4() {
            FAMILY_V4
        } else {
            FAMILY_V6
        },
    }
}

/// Smallest id in `1..max` not in `used`.
fn allocate(used: &BTreeSet<u32>, max: u32, kind: &'static str) -> Result<u32, PlanError> {
    (1..max)
        .find(|id| !used.contains(id))
        .ok_or(PlanError::IdsExhausted { kind, max: max - 1 })
}

/// Keeps the ids of things that still exist and gives new ones to new things.
fn assign_ids(current: &Applied, desired: &DesiredState) -> Result<Ids, PlanError> {
    let mut ids = Ids::default();
    for s in &desired.services {
        if let Some(id) = current.ids.services.get(&s.name) {
            ids.services.insert(s.name.clone(), *id);
        }
        for g in &s.groups {
            let gref = (s.name.clone(), g.name.clone());
            if let Some(id) = current.ids.groups.get(&gref) {
                ids.groups.insert(gref.clone(), *id);
            }
            for b in &g.backends {
                let bref = (s.name.clone(), g.name.clone(), b.addr);
                if let Some(id) = current.ids.backends.get(&bref) {
                    ids.backends.insert(bref, *id);
                }
            }
        }
    }
    // Ids of things that go away are free again, except backends still retiring (the map may
    // still hold them) and groups (an inner table may still be read; reuse gets a new table).
    let mut used_s: BTreeSet<u32> = ids.services.values().copied().collect();
    let mut used_g: BTreeSet<u32> = ids.groups.values().copied().collect();
    let mut used_b: BTreeSet<u32> = ids.backends.values().copied().collect();
    used_b.extend(current.retiring.iter().map(|(id, _)| *id));
    used_b.extend(current.ids.backends.values().copied());
    for s in &desired.services {
        if let Entry::Vacant(e) = ids.services.entry(s.name.clone()) {
            let id = allocate(&used_s, MAX_SERVICES, "service")?;
            used_s.insert(id);
            e.insert(id);
        }
        for g in &s.groups {
            if let Entry::Vacant(e) = ids.groups.entry((s.name.clone(), g.name.clone())) {
                let id = allocate(&used_g, MAX_GROUPS, "group")?;
                used_g.insert(id);
                e.insert(id);
            }
            for b in &g.backends {
                if let Entry::Vacant(e) =
                    ids.backends.entry((s.name.clone(), g.name.clone(), b.addr))
                {
                    let id = allocate(&used_b, MAX_BACKENDS, "backend")?;
                    used_b.insert(id);
                    e.insert(id);
                }
            }
        }
    }
    Ok(ids)
}

/// The backends of every group: group id -> sorted (backend id, address).
fn tables(state: &DesiredState, ids: &Ids, down: &Down) -> BTreeMap<u32, Vec<(u32, SocketAddr)>> {
    let mut out = BTreeMap::new();
    for s in &state.services {
        for g in &s.groups {
            let gid = ids.groups[&(s.name.clone(), g.name.clone())];
            let mut backends: Vec<(u32, SocketAddr)> = g
                .backends
                .iter()
                .filter(|b| !down.contains(&(s.name.clone(), g.name.clone(), b.addr)))
                .map(|b| {
                    (
                        ids.backends[&(s.name.clone(), g.name.clone(), b.addr)],
                        b.addr,
                    )
                })
                .collect();
            backends.sort_unstable();
            out.insert(gid, backends);
        }
    }
    out
}

/// The map value of a service. A group with no backend up gets no new flows whatever its weight.
fn service_value(s: &Service, ids: &Ids, down: &Down) -> ServiceValue {
    let mut groups = [0u32; MAX_GROUPS_PER_SERVICE];
    let mut weights = Vec::with_capacity(s.groups.len());
    for (slot, g) in groups.iter_mut().zip(&s.groups) {
        *slot = ids.groups[&(s.name.clone(), g.name.clone())];
        let up = g
            .backends
            .iter()
            .any(|b| !down.contains(&(s.name.clone(), g.name.clone(), b.addr)));
        weights.push(if up { g.weight.basis_points() } else { 0 });
    }
    ServiceValue {
        service_id: ids.services[&s.name],
        group_count: s.groups.len() as u32,
        groups,
        // Infallible: validation bounds the group count and `Weight` bounds each weight.
        cumulative: cumulative_weights(&weights).unwrap_or([0; MAX_GROUPS_PER_SERVICE]),
    }
}

/// Every pin of a state: (service id, prefix, len) -> group id.
pub(super) fn pins(state: &DesiredState, ids: &Ids) -> BTreeMap<(u32, IpAddr, u8), u32> {
    let mut out = BTreeMap::new();
    for s in &state.services {
        for p in &s.pins {
            out.insert(
                (ids.services[&s.name], p.prefix, p.len),
                ids.groups[&(s.name.clone(), p.group.clone())],
            );
        }
    }
    out
}

/// Computes the operations that take the maps from `current` to `desired`, at time `now`.
pub fn plan(
    current: &Applied,
    desired: &DesiredState,
    down: &Down,
    now: Instant,
) -> Result<Plan, PlanError> {
    desired.validate()?;
    let ids = assign_ids(current, desired)?;
    Ok(plan_with_ids(current, desired, down, ids, now, true))
}

/// The operations that write all of `desired` with the given `ids` over maps whose content is
/// unknown (a daemon adopting pinned maps after a restart or a crash). Counters are kept.
/// Entries the maps hold beyond `desired` are removed by `Dataplane::reconcile`.
pub fn reconcile_plan(
    desired: &DesiredState,
    ids: Ids,
    down: &Down,
    now: Instant,
) -> Result<Plan, PlanError> {
    desired.validate()?;
    // Ids the state names are kept; anything missing gets a fresh id.
    let seeded = Applied {
        state: DesiredState::default(),
        down: Down::new(),
        ids,
        retiring: Vec::new(),
    };
    let ids = assign_ids(&seeded, desired)?;
    Ok(plan_with_ids(
        &Applied::default(),
        desired,
        down,
        ids,
        now,
        false,
    ))
}

fn plan_with_ids(
    current: &Applied,
    desired: &DesiredState,
    down: &Down,
    ids: Ids,
    now: Instant,
    reset_counters: bool,
) -> Plan {
    let mut ops = Vec::new();

    // 1. New backends.
    let old_backend_ids: BTreeSet<u32> = current.ids.backends.values().copied().collect();
    for (bref, id) in &ids.backends {
        if !old_backend_ids.contains(id) {
            ops.push(Op::SetBackend {
                id: *id,
                addr: bref.2,
                reset_counters,
            });
        }
    }
    // ... and the VIPs of backends whose services changed (before any table names them).
    let old_vips = vips::desired(&current.state, &current.ids);
    for (key, list) in vips::desired(desired, &ids) {
        if old_vips.get(&key) != Some(&list) {
            ops.push(Op::SetBackendVips { key, vips: list });
        }
    }
    // 2. Tables whose backend set changed (or new groups).
    let old_tables = tables(&current.state, &current.ids, &current.down);
    for (gid, backends) in tables(desired, &ids, down) {
        if old_tables.get(&gid) != Some(&backends) {
            ops.push(Op::SetTable {
                group: gid,
                backends,
            });
        }
    }
    let old_services: BTreeMap<&str, (ServiceKey, ServiceValue)> = current
        .state
        .services
        .iter()
        .map(|s| {
            (
                s.name.as_str(),
                (
                    service_key(s),
                    service_value(s, &current.ids, &current.down),
                ),
            )
        })
        .collect();
    let old_pins = pins(&current.state, &current.ids);
    let new_pins = pins(desired, &ids);
    // 3. Removals first: pins, then services whose key is no longer used.
    for (service, prefix, len) in old_pins.keys() {
        if !new_pins.contains_key(&(*service, *prefix, *len)) {
            ops.push(Op::RemovePin {
                service: *service,
                prefix: *prefix,
                len: *len,
            });
        }
    }
    let new_keys: BTreeSet<_> = desired
        .services
        .iter()
        .map(|s| key_bytes(&service_key(s)))
        .collect();
    for (key, _) in old_services.values() {
        if !new_keys.contains(&key_bytes(key)) {
            ops.push(Op::RemoveService { key: *key });
        }
    }
    // 4. Services whose key or value changed.
    for s in &desired.services {
        let (key, value) = (service_key(s), service_value(s, &ids, down));
        if old_services.get(s.name.as_str()) != Some(&(key, value)) {
            ops.push(Op::SetService { key, value });
        }
    }
    // 5. Pins.
    for ((service, prefix, len), group) in &new_pins {
        if old_pins.get(&(*service, *prefix, *len)) != Some(group) {
            ops.push(Op::SetPin {
                service: *service,
                prefix: *prefix,
                len: *len,
                group: *group,
            });
        }
    }
    // 6. Retirement.
    let new_backend_ids: BTreeSet<u32> = ids.backends.values().copied().collect();
    let mut retiring: Vec<(u32, Instant)> = Vec::new();
    for (id, since) in &current.retiring {
        if now.duration_since(*since) >= RETIRE_GRACE {
            ops.push(Op::RemoveBackend { id: *id });
        } else {
            retiring.push((*id, *since));
        }
    }
    for id in old_backend_ids.difference(&new_backend_ids) {
        retiring.push((*id, now));
    }
    Plan {
        ops,
        next: Applied {
            state: desired.clone(),
            down: down.clone(),
            ids,
            retiring,
        },
    }
}

/// `ServiceKey` as comparable bytes (it has no `Ord`).
pub(super) fn key_bytes(k: &ServiceKey) -> ([u32; 4], u16, u8, u8) {
    (k.addr, k.port, k.proto, k.family)
}

/// Where operations run: the maps, or a model of them in tests.
pub trait Writer {
    /// Runs one operation.
    fn run(&mut self, op: &Op) -> Result<(), DataplaneError>;
}

impl Writer for Maps {
    fn run(&mut self, op: &Op) -> Result<(), DataplaneError> {
        run(self, op)
    }
}

/// Whether a map operation failed because its key is not there (`ENOENT`).
fn is_missing(e: &DataplaneError) -> bool {
    match e {
        DataplaneError::Map { source, .. } => match source {
            aya::maps::MapError::KeyNotFound => true,
            aya::maps::MapError::SyscallError(s) => s.io_error.raw_os_error() == Some(libc::ENOENT),
            _ => false,
        },
        _ => false,
    }
}

/// A removal whose key is already gone has done its work.
fn removed(r: Result<(), DataplaneError>) -> Result<(), DataplaneError> {
    match r {
        Err(e) if is_missing(&e) => Ok(()),
        other => other,
    }
}

/// Runs one operation.
pub(super) fn run(maps: &mut Maps, op: &Op) -> Result<(), DataplaneError> {
    match op {
        Op::SetBackend {
            id,
            addr,
            reset_counters,
        } => {
            if *reset_counters {
                maps.reset_backend_counters(*id)?;
            }
            maps.set_backend(
                *id,
                BackendValue {
                    addr: addr_words(addr.ip()),
                    port: addr.port().to_be(),
                    family: if addr.is_ipv4() { FAMILY_V4 } else { FAMILY_V6 },
                    _pad: 0,
                },
            )
        }
        Op::SetBackendVips { key, vips } => {
            let overflow = maps.merge_backend_vips(*key, vips, |_| true)?;
            if !overflow.is_empty() {
                tracing::warn!(
                    backend = ?veer_common::addr::words_addr(key.addr, key.family),
                    port = u16::from_be(key.port),
                    dropped = overflow.len(),
                    "a backend serves more VIPs than replies can try; flows of the oldest lose their VIP on replies"
                );
            }
            Ok(())
        }
        Op::SetTable { group, backends } => {
            maps.set_maglev_table(*group, &maglev::build(backends, MAGLEV_TABLE_SIZE))
        }
        Op::SetService { key, value } => maps.set_service(*key, *value),
        Op::SetPin {
            service,
            prefix,
            len,
            group,
        } => maps.set_pin(*service, *prefix, *len, *group),
        Op::RemovePin {
            service,
            prefix,
            len,
        } => removed(maps.remove_pin(*service, *prefix, *len)),
        Op::RemoveService { key } => removed(maps.remove_service(key)),
        Op::RemoveBackend { id } => removed(maps.remove_backend(*id)),
    }
}

/// Applies `desired` over `current`; on success returns what is now applied and how many
/// operations ran. On failure, undoes what ran (`undo`) and returns the error: `current` is
/// what the maps hold again.
pub fn apply(
    maps: &mut impl Writer,
    current: &Applied,
    desired: &DesiredState,
    down: &Down,
    now: Instant,
) -> Result<(Applied, usize), SyncError> {
    let plan = plan(current, desired, down, now)?;
    for (i, op) in plan.ops.iter().enumerate() {
        if let Err(error) = maps.run(op) {
            // The failed operation may have done part of its work: it is undone too.
            let Undo { ops: back, retire } = undo(current, &plan.ops[..=i]);
            let failures: Vec<String> = back
                .iter()
                .filter_map(|op| maps.run(op).err().map(|e| format!("{op:?}: {e}")))
                .collect();
            if failures.is_empty() {
                tracing::error!(op = ?op, index = i, %error, undone = back.len(), "applying a state failed; the previous state is restored");
            } else {
                tracing::error!(op = ?op, index = i, %error, ?failures, "applying a state failed, and so did part of putting the previous state back; the next change or restart rewrites the maps");
            }
            return Err(SyncError::Apply {
                op: format!("{op:?}"),
                source: Box::new(error),
                retire,
            });
        }
    }
    Ok((plan.next.clone(), plan.ops.len()))
}

/// How to take the maps back to the state in force.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Undo {
    /// Operations to run, in order.
    pub ops: Vec<Op>,
    /// Backend ids written and no longer named by any table once `ops` ran: they are retired
    /// like any backend leaving its table (deleted after `RETIRE_GRACE`, as a packet may have
    /// read a table naming them just before it was swapped back).
    pub retire: Vec<u32>,
}

/// What takes maps holding `current` with `done` run over them back to `current`: the exact
/// inverse of each operation, last first. A table or a service or pin written gets its old
/// value back or is deleted when it is new, a service or pin removed is written again, and a
/// backend id written (a plan writes only new ids) is retired. Deleting a retired backend id
/// needs no inverse: no table names it, and `current` retiring it again finds it gone, which is
/// fine.
pub fn undo(current: &Applied, done: &[Op]) -> Undo {
    let old_tables = tables(&current.state, &current.ids, &current.down);
    let old_services: BTreeMap<_, (ServiceKey, ServiceValue)> = current
        .state
        .services
        .iter()
        .map(|s| {
            let key = service_key(s);
            (
                key_bytes(&key),
                (key, service_value(s, &current.ids, &current.down)),
            )
        })
        .collect();
    let old_pins = pins(&current.state, &current.ids);
    let old_vips = vips::desired(&current.state, &current.ids);
    let mut back = Vec::new();
    let mut retire = Vec::new();
    for op in done.iter().rev() {
        match op {
            Op::SetBackend { id, .. } => retire.push(*id),
            // The VIPs in force go back in front; VIPs the failed plan added stay behind them
            // until upkeep prunes those no live flow needs, as after any removal (a merge never
            // drops a VIP a reply may still need).
            Op::SetBackendVips { key, .. } => back.push(Op::SetBackendVips {
                key: *key,
                vips: old_vips.get(key).cloned().unwrap_or_default(),
            }),
            Op::SetTable { group, .. } => {
                // A new group's table stays: nothing names it once the services are back, and
                // whoever gets the id next swaps its own table in.
                if let Some(backends) = old_tables.get(group) {
                    back.push(Op::SetTable {
                        group: *group,
                        backends: backends.clone(),
                    });
                }
            }
            Op::SetService { key, .. } | Op::RemoveService { key } => {
                back.push(match old_services.get(&key_bytes(key)) {
                    Some((key, value)) => Op::SetService {
                        key: *key,
                        value: *value,
                    },
                    None => Op::RemoveService { key: *key },
                });
            }
            Op::SetPin {
                service,
                prefix,
                len,
                ..
            }
            | Op::RemovePin {
                service,
                prefix,
                len,
            } => back.push(match old_pins.get(&(*service, *prefix, *len)) {
                Some(group) => Op::SetPin {
                    service: *service,
                    prefix: *prefix,
                    len: *len,
                    group: *group,
                },
                None => Op::RemovePin {
                    service: *service,
                    prefix: *prefix,
                    len: *len,
                },
            }),
            Op::RemoveBackend { .. } => {}
        }
    }
    Undo { ops: back, retire }
}

/// Why an apply failed.
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    /// The state could not be planned (invalid, out of ids). Nothing was written.
    #[error(transparent)]
    Plan(#[from] PlanError),
    /// A map write failed; the previous state was put back.
    #[error("map operation {op} failed; the previous state was restored")]
    Apply {
        /// The operation.
        op: String,
        /// The failure.
        #[source]
        source: Box<DataplaneError>,
        /// Backend ids written before the failure, to retire (see `Undo::retire`).
        retire: Vec<u32>,
    },
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Backend, Group, Pin, Protocol, Weight};

    fn state(v1: &str, v2: &str, v2_backends: &[&str]) -> DesiredState {
        DesiredState {
            services: vec![Service {
                name: "web".into(),
                vip: "192.0.2.10".parse().unwrap(),
                port: 80,
                protocol: Protocol::Tcp,
                groups: vec![
                    Group {
                        name: "v1".into(),
                        weight: v1.parse().unwrap(),
                        backends: vec![Backend {
                            addr: "198.51.100.11:8080".parse().unwrap(),
                        }],
                    },
                    Group {
                        name: "v2".into(),
                        weight: v2.parse().unwrap(),
                        backends: v2_backends
                            .iter()
                            .map(|a| Backend {
                                addr: a.parse().unwrap(),
                            })
                            .collect(),
                    },
                ],
                pins: vec![],
                health: None,
                rollout: None,
            }],
        }
    }

    #[test]
    fn first_apply_writes_backends_then_tables_then_services() {
        let p = plan(
            &Applied::default(),
            &state("100", "0", &["198.51.100.21:8080"]),
            &Down::new(),
            Instant::now(),
        )
        .unwrap();
        let kinds: Vec<&str> = p
            .ops
            .iter()
            .map(|o| match o {
                Op::SetBackend { .. } => "backend",
                Op::SetTable { .. } => "table",
                Op::SetService { .. } => "service",
                _ => "other",
            })
            .collect();
        assert_eq!(
            kinds,
            [
                "backend", "backend", "other", "other", "table", "table", "service"
            ],
            "backends and their VIPs, then tables, then services"
        );
        assert!(
            p.ops
                .iter()
                .filter(|o| matches!(o, Op::SetBackendVips { .. }))
                .count()
                == 2
        );
    }

    #[test]
    fn a_shift_is_one_service_write_and_keeps_ids() {
        let now = Instant::now();
        let a = plan(
            &Applied::default(),
            &state("100", "0", &["198.51.100.21:8080"]),
            &Down::new(),
            now,
        )
        .unwrap()
        .next;
        let b = plan(
            &a,
            &state("90", "10", &["198.51.100.21:8080"]),
            &Down::new(),
            now,
        )
        .unwrap();
        assert_eq!(b.ops.len(), 1, "{:?}", b.ops);
        let Op::SetService { value, .. } = &b.ops[0] else {
            panic!("{:?}", b.ops)
        };
        assert_eq!(value.cumulative[..2], [9_000, 10_000]);
        assert_eq!(a.ids, b.next.ids);
        // Re-applying the same state does nothing.
        assert!(
            plan(
                &b.next,
                &state("90", "10", &["198.51.100.21:8080"]),
                &Down::new(),
                now
            )
            .unwrap()
            .ops
            .is_empty()
        );
    }

    #[test]
    fn a_removed_backend_retires_after_the_grace_period_and_its_id_waits() {
        let t0 = Instant::now();
        let a = plan(
            &Applied::default(),
            &state("50", "50", &["198.51.100.21:8080", "198.51.100.22:8080"]),
            &Down::new(),
            t0,
        )
        .unwrap()
        .next;
        let gone = a.ids.backends[&(
            "web".into(),
            "v2".into(),
            "198.51.100.22:8080".parse().unwrap(),
        )];
        let b = plan(
            &a,
            &state("50", "50", &["198.51.100.21:8080"]),
            &Down::new(),
            t0,
        )
        .unwrap();
        assert!(
            matches!(b.ops.as_slice(), [Op::SetTable { .. }]),
            "{:?}",
            b.ops
        );
        assert_eq!(b.next.retiring.len(), 1);
        // A new backend does not get the retiring id.
        let c = plan(
            &b.next,
            &state("50", "50", &["198.51.100.21:8080", "198.51.100.23:8080"]),
            &Down::new(),
            t0,
        )
        .unwrap();
        assert!(!c.next.ids.backends.values().any(|id| *id == gone));
        // After the grace period the id is deleted.
        let d = plan(
            &c.next,
            &c.next.state.clone(),
            &Down::new(),
            t0 + RETIRE_GRACE,
        )
        .unwrap();
        assert!(
            d.ops.contains(&Op::RemoveBackend { id: gone }),
            "{:?}",
            d.ops
        );
    }

    #[test]
    fn a_group_without_backends_gets_no_flows_whatever_its_weight() {
        let mut s = state("100", "0", &[]);
        // Validation refuses weight without backends; with weight 0 it is accepted and stays 0.
        let p = plan(&Applied::default(), &s, &Down::new(), Instant::now()).unwrap();
        let Some(Op::SetService { value, .. }) =
            p.ops.iter().find(|o| matches!(o, Op::SetService { .. }))
        else {
            panic!()
        };
        assert_eq!(value.cumulative[..2], [10_000, 10_000]);
        s.services[0].groups[1].weight = Weight::from_percent_str("10").unwrap();
        assert!(matches!(
            plan(&Applied::default(), &s, &Down::new(), Instant::now()),
            Err(PlanError::Invalid(_))
        ));
    }

    #[test]
    fn pins_are_added_and_removed() {
        let now = Instant::now();
        let mut s = state("100", "0", &["198.51.100.21:8080"]);
        let a = plan(&Applied::default(), &s, &Down::new(), now)
            .unwrap()
            .next;
        s.services[0].pins.push(Pin {
            prefix: "203.0.113.0".parse().unwrap(),
            len: 24,
            group: "v2".into(),
        });
        let b = plan(&a, &s, &Down::new(), now).unwrap();
        assert!(
            matches!(b.ops.as_slice(), [Op::SetPin { len: 24, .. }]),
            "{:?}",
            b.ops
        );
        s.services[0].pins.clear();
        let c = plan(&b.next, &s, &Down::new(), now).unwrap();
        assert!(
            matches!(c.ops.as_slice(), [Op::RemovePin { len: 24, .. }]),
            "{:?}",
            c.ops
        );
    }

    #[test]
    fn removing_a_service_removes_its_key() {
        let now = Instant::now();
        let a = plan(
            &Applied::default(),
            &state("100", "0", &["198.51.100.21:8080"]),
            &Down::new(),
            now,
        )
        .unwrap()
        .next;
        let b = plan(&a, &DesiredState::default(), &Down::new(), now).unwrap();
        assert!(b.ops.iter().any(|o| matches!(o, Op::RemoveService { .. })));
        assert_eq!(b.next.retiring.len(), 2);
    }

    /// The maps as plain data, with their capacities, failing the `fail_at`-th operation.
    #[derive(Clone, Debug, Default, PartialEq)]
    struct Model {
        backends: BTreeMap<u32, SocketAddr>,
        tables: BTreeMap<u32, Vec<(u32, SocketAddr)>>,
        services: BTreeMap<([u32; 4], u16, u8, u8), ServiceValue>,
        pins: BTreeMap<(u32, IpAddr, u8), u32>,
    }

    struct FakeMaps {
        maps: Model,
        ran: usize,
        fail_at: Option<usize>,
    }

    fn map_error(map: &'static str, errno: i32) -> DataplaneError {
        DataplaneError::Map {
            op: "update",
            map,
            source: aya::maps::MapError::SyscallError(aya::sys::SyscallError {
                call: "bpf_map_update_elem",
                io_error: std::io::Error::from_raw_os_error(errno),
            }),
        }
    }

    impl Writer for FakeMaps {
        fn run(&mut self, op: &Op) -> Result<(), DataplaneError> {
            self.ran += 1;
            if self.fail_at == Some(self.ran - 1) {
                return Err(map_error("VEER_FAKE", libc::EIO));
            }
            let m = &mut self.maps;
            let full = |len: usize, max: u32, map| {
                if len > max as usize {
                    Err(map_error(map, libc::E2BIG))
                } else {
                    Ok(())
                }
            };
            let gone = |found: bool, map| {
                if found {
                    Ok(())
                } else {
                    Err(map_error(map, libc::ENOENT))
                }
            };
            match op {
                Op::SetBackend { id, addr, .. } => {
                    m.backends.insert(*id, *addr);
                    full(m.backends.len(), MAX_BACKENDS, "VEER_BACKENDS")
                }
                Op::SetTable { group, backends } => {
                    m.tables.insert(*group, backends.clone());
                    full(m.tables.len(), MAX_GROUPS, "VEER_MAGLEV")
                }
                Op::SetService { key, value } => {
                    m.services.insert(key_bytes(key), *value);
                    full(m.services.len(), MAX_SERVICES, "VEER_SERVICES")
                }
                Op::SetPin {
                    service,
                    prefix,
                    len,
                    group,
                } => {
                    m.pins.insert((*service, *prefix, *len), *group);
                    full(m.pins.len(), veer_common::maps::MAX_PINS, "VEER_PINS")
                }
                Op::RemovePin {
                    service,
                    prefix,
                    len,
                } => removed(gone(
                    m.pins.remove(&(*service, *prefix, *len)).is_some(),
                    "VEER_PINS",
                )),
                Op::RemoveService { key } => removed(gone(
                    m.services.remove(&key_bytes(key)).is_some(),
                    "VEER_SERVICES",
                )),
                Op::RemoveBackend { id } => {
                    removed(gone(m.backends.remove(id).is_some(), "VEER_BACKENDS"))
                }
                // Merged, never replaced (see `undo`): not part of what an undo restores.
                Op::SetBackendVips { .. } => Ok(()),
            }
        }
    }

    /// A state with two services, pins and several backends.
    fn big(web_v2: &[&str], extra: bool, pin_group: &str) -> DesiredState {
        let mut s = state("60", "40", web_v2);
        s.services[0].pins.push(Pin {
            prefix: "203.0.113.0".parse().unwrap(),
            len: 24,
            group: pin_group.into(),
        });
        if extra {
            let mut other = state("100", "0", &["198.51.100.31:8080"]);
            other.services[0].name = "api".into();
            other.services[0].port = 443;
            other.services[0].pins.push(Pin {
                prefix: "203.0.113.128".parse().unwrap(),
                len: 25,
                group: "v1".into(),
            });
            s.services.extend(other.services);
        }
        s
    }

    /// A failure at any operation of a plan leaves the maps as they were: backend ids written
    /// are retired (not left as strays), tables, services and pins get their old values back,
    /// removed ones come back.
    #[test]
    fn a_failure_at_any_operation_is_undone_completely() {
        let t0 = Instant::now();
        let before = big(&["198.51.100.21:8080", "198.51.100.22:8080"], true, "v2");
        let after = big(
            &[
                "198.51.100.22:8080",
                "198.51.100.23:8080",
                "198.51.100.24:8080",
            ],
            false,
            "v1",
        );
        let mut fake = FakeMaps {
            maps: Model::default(),
            ran: 0,
            fail_at: None,
        };
        let (current, _) =
            apply(&mut fake, &Applied::default(), &before, &Down::new(), t0).unwrap();
        let held = fake.maps.clone();
        let ops = plan(&current, &after, &Down::new(), t0).unwrap().ops;
        assert!(ops.len() >= 6, "{ops:?}");
        for fail_at in 0..ops.len() {
            let mut f = FakeMaps {
                maps: held.clone(),
                ran: 0,
                fail_at: Some(fail_at),
            };
            let Err(SyncError::Apply { retire, .. }) =
                apply(&mut f, &current, &after, &Down::new(), t0)
            else {
                panic!("failure at {fail_at} not reported");
            };
            // Everything is back; backend ids written wait for their grace period (the one
            // whose write failed may or may not be there).
            let mut back = f.maps.clone();
            for id in &retire {
                let Some(Op::SetBackend { addr, .. }) = ops
                    .iter()
                    .find(|o| matches!(o, Op::SetBackend { id: i, .. } if i == id))
                else {
                    panic!("retired {id}, which the plan did not write");
                };
                if let Some(a) = back.backends.remove(id) {
                    assert_eq!(a, *addr);
                }
            }
            assert_eq!(
                back, held,
                "failure at operation {fail_at}: {:?}",
                ops[fail_at]
            );
            let written: Vec<u32> = ops[..fail_at]
                .iter()
                .filter_map(|o| match o {
                    Op::SetBackend { id, .. } => Some(*id),
                    _ => None,
                })
                .collect();
            assert!(
                written.iter().all(|id| retire.contains(id)),
                "failure at {fail_at}: written {written:?}, retired {retire:?}"
            );
        }
    }

    /// Backend ids an undo retires leave the map after the grace period, and a retirement that
    /// runs again over an id already gone is no error.
    #[test]
    fn retired_ids_of_an_undo_leave_after_the_grace_period() {
        let t0 = Instant::now();
        let mut fake = FakeMaps {
            maps: Model::default(),
            ran: 0,
            fail_at: None,
        };
        let before = state("100", "0", &["198.51.100.21:8080"]);
        let (mut current, _) =
            apply(&mut fake, &Applied::default(), &before, &Down::new(), t0).unwrap();
        let after = state("100", "0", &["198.51.100.21:8080", "198.51.100.22:8080"]);
        fake.fail_at = Some(fake.ran + 1);
        let Err(SyncError::Apply { retire, .. }) =
            apply(&mut fake, &current, &after, &Down::new(), t0)
        else {
            panic!()
        };
        assert_eq!(retire.len(), 1);
        current.retiring.extend(retire.iter().map(|id| (*id, t0)));
        // Someone removed it meanwhile: the retirement still succeeds.
        fake.maps.backends.remove(&retire[0]);
        fake.fail_at = None;
        let (next, _) = apply(
            &mut fake,
            &current,
            &before,
            &Down::new(),
            t0 + RETIRE_GRACE,
        )
        .unwrap();
        assert!(next.retiring.is_empty());
        assert_eq!(fake.maps.backends.len(), 2);
    }

    /// A state at a map's capacity replaced by another as large never overflows the map: what
    /// goes is removed before what comes is added.
    #[test]
    fn replacing_a_full_map_never_overflows_it() {
        let t0 = Instant::now();
        let services = |first_port: u16| DesiredState {
            services: (0..MAX_SERVICES as u16 - 1)
                .map(|i| {
                    let mut s = state("100", "0", &[]).services.remove(0);
                    s.name = format!("s{}", first_port + i);
                    s.port = first_port + i;
                    s.groups.truncate(1);
                    // A backend of its own: one backend serves at most four services.
                    s.groups[0].backends[0].addr = SocketAddr::new(
                        std::net::Ipv4Addr::from(0xC633_6400 + u32::from(first_port + i)).into(),
                        8080,
                    );
                    s
                })
                .collect(),
        };
        let (one, two) = (services(1), services(2000));
        assert_eq!(one.validate(), Ok(()));
        let mut fake = FakeMaps {
            maps: Model::default(),
            ran: 0,
            fail_at: None,
        };
        let (current, _) = apply(&mut fake, &Applied::default(), &one, &Down::new(), t0).unwrap();
        apply(&mut fake, &current, &two, &Down::new(), t0)
            .unwrap_or_else(|e| panic!("{}", crate::error::chain(&e)));
        assert_eq!(fake.maps.services.len(), MAX_SERVICES as usize - 1);
    }
}
