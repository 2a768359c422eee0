//! Typed handles over the kernel maps, named after what they hold. The only code that writes the
//! maps; `sync` (issue #3/#4) decides what to write and in which order.
//!
//! Map writes follow one rule: a value a packet may be reading is never rewritten in place in an
//! `ARRAY`. Services and backends live in `BPF_F_NO_PREALLOC` hashes (an update swaps the element
//! under RCU), and a Maglev table is replaced by swapping the inner map in one outer update.

use std::net::IpAddr;

use aya::{
    Ebpf,
    maps::{
        Array, ArrayOfMaps, DevMapHash, HashMap, Map, MapData, MapError, PerCpuArray,
        lpm_trie::{Key, LpmTrie},
    },
};
use veer_common::{
    addr::{addr_words, words_addr},
    backend::BackendValue,
    counters::{BackendCounters, Reason, ServiceCounters},
    flow::{BackendKey, BackendVips, FlowEntry, FlowKey, MAX_VIPS_PER_BACKEND, RevNatValue},
    maps::{self, LAYOUT_VERSION, MAGLEV_TABLE_SIZE, MAX_SIGNAL_BACKENDS},
    pin::PinKey,
    service::{ServiceKey, ServiceValue},
    signals::{BackendSignals, FlowTimes},
};

use super::DataplaneError;

/// Handles to every map of a loaded kernel object.
pub struct Maps {
    services: HashMap<MapData, ServiceKey, ServiceValue>,
    backends: HashMap<MapData, u32, BackendValue>,
    maglev: ArrayOfMaps<MapData, Array<MapData, u32>>,
    pins: LpmTrie<MapData, PinKey, u32>,
    flows: HashMap<MapData, FlowKey, FlowEntry>,
    newflows: HashMap<MapData, FlowKey, FlowEntry>,
    be_vips: HashMap<MapData, BackendKey, BackendVips>,
    backend_stats: PerCpuArray<MapData, BackendCounters>,
    service_stats: PerCpuArray<MapData, ServiceCounters>,
    reasons: PerCpuArray<MapData, u64>,
    layout: Array<MapData, u32>,
    tx_ports: DevMapHash<MapData>,
    /// `None` only in maps pinned by a daemon older than the signals (`open_pinned`).
    signals: Option<PerCpuArray<MapData, BackendSignals>>,
    flow_times: Option<HashMap<MapData, FlowKey, FlowTimes>>,
}

/// Takes map `name` out of a loaded object, as a `T`.
pub(super) fn take<T>(ebpf: &mut Ebpf, name: &'static str) -> Result<T, DataplaneError>
where
    T: TryFrom<Map, Error = MapError>,
{
    let map = ebpf
        .take_map(name)
        .ok_or(DataplaneError::MapMissing { name, source: None })?;
    T::try_from(map).map_err(|source| DataplaneError::MapMissing {
        name,
        source: Some(source),
    })
}

/// Map `name` as pinned in `dir` by a daemon.
fn pinned<T>(dir: &std::path::Path, name: &'static str) -> Result<T, DataplaneError>
where
    T: TryFrom<Map, Error = MapError>,
{
    let missing = |source| DataplaneError::MapMissing {
        name,
        source: Some(source),
    };
    let data = MapData::from_pin(dir.join(name)).map_err(missing)?;
    T::try_from(Map::from_map_data(data).map_err(missing)?).map_err(missing)
}

fn op(op: &'static str, map: &'static str) -> impl FnOnce(MapError) -> DataplaneError {
    move |source| DataplaneError::Map { op, map, source }
}

/// The two flow tables.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FlowTable {
    /// `VEER_FLOWS`: confirmed TCP flows, never evicted.
    Flows,
    /// `VEER_NEWFLOWS`: handshakes, mid-flow misses, UDP, refused promotions (LRU).
    New,
}

impl FlowTable {
    /// The map's name.
    pub const fn name(self) -> &'static str {
        match self {
            FlowTable::Flows => maps::FLOWS,
            FlowTable::New => maps::NEWFLOWS,
        }
    }
}

/// What `Maps::expire_flow` did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Expiry {
    /// The entry was still as seen by the scan, and is deleted.
    Deleted,
    /// The entry changed since the scan (a packet refreshed it): kept, as it is now.
    Kept(FlowEntry),
    /// The entry was gone already.
    Gone,
}

/// A per-CPU value of zeros for every possible CPU.
fn zeros<T: aya::Pod + Default + Clone>(
    map: &'static str,
) -> Result<aya::maps::PerCpuValues<T>, DataplaneError> {
    let io = |call: &'static str| {
        move |io_error| DataplaneError::Map {
            op: "reset",
            map,
            source: MapError::SyscallError(aya::sys::SyscallError { call, io_error }),
        }
    };
    let cpus = aya::util::nr_cpus().map_err(|(_, e)| io("nr_cpus")(e))?;
    aya::maps::PerCpuValues::try_from(vec![T::default(); cpus]).map_err(io("per-cpu values"))
}

/// Sums per-CPU values.
fn sum_cpus<T: aya::Pod + Copy + Default + std::ops::AddAssign>(values: &[T]) -> T {
    values.iter().fold(T::default(), |mut acc, v| {
        acc += *v;
        acc
    })
}

impl Maps {
    /// Takes the maps out of a loaded object.
    pub fn take(ebpf: &mut Ebpf) -> Result<Self, DataplaneError> {
        Ok(Self {
            services: take(ebpf, maps::SERVICES)?,
            backends: take(ebpf, maps::BACKENDS)?,
            maglev: take(ebpf, maps::MAGLEV)?,
            pins: take(ebpf, maps::PINS)?,
            flows: take(ebpf, maps::FLOWS)?,
            newflows: take(ebpf, maps::NEWFLOWS)?,
            be_vips: take(ebpf, maps::BE_VIPS)?,
            backend_stats: take(ebpf, maps::BE_STATS)?,
            service_stats: take(ebpf, maps::SVC_STATS)?,
            reasons: take(ebpf, maps::REASONS)?,
            layout: take(ebpf, maps::LAYOUT)?,
            tx_ports: take(ebpf, maps::TX_PORTS)?,
            signals: Some(take(ebpf, maps::BE_SIGNALS)?),
            flow_times: Some(take(ebpf, maps::FLOW_TIMES)?),
        })
    }

    /// The maps a daemon pinned in `dir` (running or not), opened without loading anything,
    /// after their layout is checked: for reading what the kernel holds (`veer status
    /// --offline`).
    pub fn open_pinned(dir: &std::path::Path) -> Result<Self, DataplaneError> {
        super::loader::check_pinned(dir)?;
        Ok(Self {
            services: pinned(dir, maps::SERVICES)?,
            backends: pinned(dir, maps::BACKENDS)?,
            maglev: pinned(dir, maps::MAGLEV)?,
            pins: pinned(dir, maps::PINS)?,
            flows: pinned(dir, maps::FLOWS)?,
            newflows: pinned(dir, maps::NEWFLOWS)?,
            be_vips: pinned(dir, maps::BE_VIPS)?,
            backend_stats: pinned(dir, maps::BE_STATS)?,
            service_stats: pinned(dir, maps::SVC_STATS)?,
            reasons: pinned(dir, maps::REASONS)?,
            layout: pinned(dir, maps::LAYOUT)?,
            tx_ports: pinned(dir, maps::TX_PORTS)?,
            // Pins of a daemon older than the signals have none: nothing to read.
            signals: pinned(dir, maps::BE_SIGNALS).ok(),
            flow_times: pinned(dir, maps::FLOW_TIMES).ok(),
        })
    }

    /// The backend `id`, if the map has it.
    pub fn backend(&self, id: u32) -> Result<Option<BackendValue>, DataplaneError> {
        match self.backends.get(&id, 0) {
            Ok(v) => Ok(Some(v)),
            Err(MapError::KeyNotFound) => Ok(None),
            Err(e) => Err(op("lookup", maps::BACKENDS)(e)),
        }
    }

    /// Every backend id in group `group`'s Maglev table: the backends that take its new flows
    /// (empty: the group has no table).
    pub fn table_backends(
        &self,
        group: u32,
    ) -> Result<std::collections::BTreeSet<u32>, DataplaneError> {
        let inner = match self.maglev.get(&group, 0) {
            Ok(inner) => inner,
            Err(MapError::KeyNotFound) => return Ok(std::collections::BTreeSet::new()),
            Err(e) => return Err(op("lookup", maps::MAGLEV)(e)),
        };
        let mut ids = std::collections::BTreeSet::new();
        for slot in 0..MAGLEV_TABLE_SIZE {
            match inner.get(&slot, 0) {
                Ok(0) | Err(MapError::KeyNotFound) => {}
                Ok(id) => {
                    ids.insert(id);
                }
                Err(e) => return Err(op("lookup inner table", maps::MAGLEV)(e)),
            }
        }
        Ok(ids)
    }

    /// The group service `service_id`'s clients of `prefix/len` are pinned to, if any.
    pub fn pin_group(
        &self,
        service_id: u32,
        prefix: IpAddr,
        len: u8,
    ) -> Result<Option<u32>, DataplaneError> {
        match self.pins.get(&pin_key(service_id, prefix, len), 0) {
            Ok(g) => Ok(Some(g)),
            Err(MapError::KeyNotFound) => Ok(None),
            Err(e) => Err(op("lookup", maps::PINS)(e)),
        }
    }

    /// Lets `veer_xdp` redirect to interface `ifindex` (one veer is attached to).
    pub fn add_tx_port(&mut self, ifindex: u32) -> Result<(), DataplaneError> {
        self.tx_ports
            .insert(ifindex, ifindex, None, 0)
            .map_err(|e| DataplaneError::TxPort {
                ifindex,
                source: Box::new(e),
            })
    }

    /// Stops `veer_xdp` redirecting to interface `ifindex`. Missing is fine.
    pub fn remove_tx_port(&mut self, ifindex: u32) -> Result<(), DataplaneError> {
        match self.tx_ports.remove(ifindex) {
            Ok(()) => Ok(()),
            Err(e) if is_missing(&e) => Ok(()),
            Err(source) => Err(op("delete", maps::TX_PORTS)(source)),
        }
    }

    /// Records this build's `LAYOUT_VERSION` next to the maps.
    pub fn write_layout_version(&mut self) -> Result<(), DataplaneError> {
        self.layout
            .set(0, LAYOUT_VERSION, 0)
            .map_err(op("update", maps::LAYOUT))
    }

    /// Creates or replaces a service's split (one atomic element swap).
    pub fn set_service(
        &mut self,
        key: ServiceKey,
        value: ServiceValue,
    ) -> Result<(), DataplaneError> {
        self.services
            .insert(key, value, 0)
            .map_err(op("update", maps::SERVICES))
    }

    /// Removes a service. New packets to it pass untouched; its flows' entries stay until they
    /// expire, but no longer match a service.
    pub fn remove_service(&mut self, key: &ServiceKey) -> Result<(), DataplaneError> {
        self.services
            .remove(key)
            .map_err(op("delete", maps::SERVICES))
    }

    /// Every service in the map.
    pub fn services(&self) -> Result<Vec<(ServiceKey, ServiceValue)>, DataplaneError> {
        self.services
            .iter()
            .collect::<Result<_, _>>()
            .map_err(op("iterate", maps::SERVICES))
    }

    /// Creates or replaces a backend.
    pub fn set_backend(&mut self, id: u32, value: BackendValue) -> Result<(), DataplaneError> {
        self.backends
            .insert(id, value, 0)
            .map_err(op("update", maps::BACKENDS))
    }

    /// Removes a backend id (only once no table names it).
    pub fn remove_backend(&mut self, id: u32) -> Result<(), DataplaneError> {
        self.backends
            .remove(&id)
            .map_err(op("delete", maps::BACKENDS))
    }

    /// Replaces group `group`'s Maglev table: a new inner map is filled, then swapped in with one
    /// outer-map update, so a packet sees the old table or the new one, never a mix.
    pub fn set_maglev_table(&mut self, group: u32, table: &[u32]) -> Result<(), DataplaneError> {
        let mut inner = Array::<MapData, u32>::create(MAGLEV_TABLE_SIZE, 0)
            .map_err(op("create inner table", maps::MAGLEV))?;
        for (slot, id) in table.iter().enumerate().take(MAGLEV_TABLE_SIZE as usize) {
            if *id != 0 {
                inner
                    .set(slot as u32, *id, 0)
                    .map_err(op("fill inner table", maps::MAGLEV))?;
            }
        }
        self.maglev
            .set(group, &inner, 0)
            .map_err(op("swap table", maps::MAGLEV))
    }

    /// Pins `prefix/len` of service `service_id`'s clients to `group`.
    pub fn set_pin(
        &mut self,
        service_id: u32,
        prefix: IpAddr,
        len: u8,
        group: u32,
    ) -> Result<(), DataplaneError> {
        self.pins
            .insert(&pin_key(service_id, prefix, len), group, 0)
            .map_err(op("update", maps::PINS))
    }

    /// Removes a pin.
    pub fn remove_pin(
        &mut self,
        service_id: u32,
        prefix: IpAddr,
        len: u8,
    ) -> Result<(), DataplaneError> {
        self.pins
            .remove(&pin_key(service_id, prefix, len))
            .map_err(op("delete", maps::PINS))
    }

    /// Every pin in the map: (service id, prefix, length).
    pub fn pins(&self) -> Result<Vec<(u32, IpAddr, u8)>, DataplaneError> {
        let mut out = Vec::new();
        for key in self.pins.keys() {
            let key = key.map_err(op("iterate", maps::PINS))?;
            let data = key.data();
            let len = key.prefix_len().saturating_sub(PinKey::SERVICE_BITS);
            // The family is not in the key; IPv4 pins never exceed 32 bits and use word 0 only.
            let v4 = len <= 32 && data.addr[1..].iter().all(|w| *w == 0);
            let family = if v4 {
                veer_common::FAMILY_V4
            } else {
                veer_common::FAMILY_V6
            };
            out.push((
                u32::from_be(data.service_id_be),
                words_addr(data.addr, family),
                len as u8,
            ));
        }
        Ok(out)
    }

    /// Every backend id in the map.
    pub fn backend_ids(&self) -> Result<Vec<u32>, DataplaneError> {
        self.backends
            .keys()
            .collect::<Result<_, _>>()
            .map_err(op("iterate", maps::BACKENDS))
    }

    fn table(&self, table: FlowTable) -> &HashMap<MapData, FlowKey, FlowEntry> {
        match table {
            FlowTable::Flows => &self.flows,
            FlowTable::New => &self.newflows,
        }
    }

    fn table_mut(&mut self, table: FlowTable) -> &mut HashMap<MapData, FlowKey, FlowEntry> {
        match table {
            FlowTable::Flows => &mut self.flows,
            FlowTable::New => &mut self.newflows,
        }
    }

    /// Calls `f` on every entry of `table` (the kernel keeps changing the map meanwhile: each
    /// bucket is read consistently, not the whole map at one instant). Reads in batches; entry by
    /// entry only where the kernel refuses batches.
    pub fn for_each_in(
        &self,
        table: FlowTable,
        mut f: impl FnMut(&FlowKey, &FlowEntry),
    ) -> Result<(), DataplaneError> {
        use aya::maps::IterableMap as _;
        let map = self.table(table);
        match super::batch::for_each(super::batch::fd_of(map.map()), &mut f) {
            Ok(()) => return Ok(()),
            Err(e) => {
                tracing::debug!(error = %e.0, map = table.name(), "batch read refused; iterating");
            }
        }
        for item in map {
            match item {
                Ok((k, v)) => f(&k, &v),
                // An entry deleted between get_next_key and lookup: skip it.
                Err(MapError::KeyNotFound) => {}
                Err(e) => return Err(op("iterate", table.name())(e)),
            }
        }
        Ok(())
    }

    /// Calls `f` on every flow entry of both tables: `VEER_NEWFLOWS` first, then `VEER_FLOWS`.
    /// In that order a flow promoted during the scan (inserted into `VEER_FLOWS`, then deleted
    /// from `VEER_NEWFLOWS`) is seen at least once, possibly twice (once per table).
    pub fn for_each_flow(
        &self,
        mut f: impl FnMut(FlowTable, &FlowKey, &FlowEntry),
    ) -> Result<(), DataplaneError> {
        for table in [FlowTable::New, FlowTable::Flows] {
            self.for_each_in(table, |k, e| f(table, k, e))?;
        }
        Ok(())
    }

    /// Every flow entry of both tables, collected (bounded callers should use
    /// `for_each_flow`); a flow caught in both tables mid-promotion is listed once, from
    /// `VEER_FLOWS`.
    pub fn flows(&self) -> Result<Vec<(FlowKey, FlowEntry)>, DataplaneError> {
        let mut out: std::collections::HashMap<FlowKey, FlowEntry> =
            std::collections::HashMap::new();
        self.for_each_flow(|_, k, e| {
            out.insert(*k, *e);
        })?;
        Ok(out.into_iter().collect())
    }

    /// The entry of a flow (client-side key) and its table, `VEER_FLOWS` first.
    pub fn flow(&self, key: &FlowKey) -> Result<Option<(FlowTable, FlowEntry)>, DataplaneError> {
        for table in [FlowTable::Flows, FlowTable::New] {
            match self.table(table).get(key, 0) {
                Ok(e) => return Ok(Some((table, e))),
                Err(MapError::KeyNotFound) => {}
                Err(e) => return Err(op("lookup", table.name())(e)),
            }
        }
        Ok(None)
    }

    /// Writes a flow entry (migration, tests, benchmarks). `flags` are `BPF_ANY`,
    /// `BPF_NOEXIST` ...; the kernel's answer is returned as is (`E2BIG` when the table is full).
    pub fn insert_flow(
        &mut self,
        table: FlowTable,
        key: FlowKey,
        entry: FlowEntry,
        flags: u64,
    ) -> Result<(), MapError> {
        self.table_mut(table).insert(key, entry, flags)
    }

    /// Deletes a flow's entry from `table`. Missing is fine.
    pub fn remove_flow(&mut self, table: FlowTable, key: &FlowKey) -> Result<(), DataplaneError> {
        match self.table_mut(table).remove(key) {
            Ok(()) => Ok(()),
            Err(e) if is_missing(&e) => Ok(()),
            Err(e) => Err(op("delete", table.name())(e)),
        }
    }

    /// Deletes a flow whose entry a scan saw as `seen` and found expired, unless it changed
    /// since: it is read again right before the delete, and a packet that refreshed it (or moved
    /// it to another state) in between keeps it. What is left is the window between that read
    /// and the delete, two system calls apart (README, "Conntrack upkeep").
    pub fn expire_flow(
        &mut self,
        table: FlowTable,
        key: &FlowKey,
        seen: &FlowEntry,
    ) -> Result<Expiry, DataplaneError> {
        let map = self.table_mut(table);
        let now = match map.get(key, 0) {
            Ok(e) => e,
            Err(MapError::KeyNotFound) => return Ok(Expiry::Gone),
            Err(e) => return Err(op("lookup", table.name())(e)),
        };
        if now.last_seen != seen.last_seen || now.state != seen.state {
            return Ok(Expiry::Kept(now));
        }
        match map.remove(key) {
            Ok(()) => Ok(Expiry::Deleted),
            Err(e) if is_missing(&e) => Ok(Expiry::Gone),
            Err(e) => Err(op("delete", table.name())(e)),
        }
    }

    /// Merges `desired` (in order) into backend `key`'s VIPs: the desired ones first, then those
    /// the map holds already and `keep` accepts (a removed service's flows may still need them),
    /// at most `MAX_VIPS_PER_BACKEND`; written only when it changes, and deleted when nothing
    /// is left. Returns the VIPs that did not fit.
    pub fn merge_backend_vips(
        &mut self,
        key: BackendKey,
        desired: &[(RevNatValue, u32)],
        keep: impl Fn(&RevNatValue) -> bool,
    ) -> Result<Vec<RevNatValue>, DataplaneError> {
        let current = match self.be_vips.get(&key, 0) {
            Ok(v) => Some(v),
            Err(MapError::KeyNotFound) => None,
            Err(e) => return Err(op("lookup", maps::BE_VIPS)(e)),
        };
        let mut list: Vec<(RevNatValue, u32)> = Vec::new();
        for d in desired {
            if !list.iter().any(|(v, _)| v == &d.0) {
                list.push(*d);
            }
        }
        if let Some(c) = &current {
            let n = (c.count as usize).min(MAX_VIPS_PER_BACKEND);
            for (v, sid) in c.vips[..n].iter().zip(&c.service_ids[..n]) {
                if keep(v) && !list.iter().any(|(l, _)| l == v) {
                    list.push((*v, *sid));
                }
            }
        }
        let overflow = list
            .iter()
            .skip(MAX_VIPS_PER_BACKEND)
            .map(|(v, _)| *v)
            .collect();
        list.truncate(MAX_VIPS_PER_BACKEND);
        if list.is_empty() {
            if current.is_some() {
                match self.be_vips.remove(&key) {
                    Ok(()) => {}
                    Err(e) if is_missing(&e) => {}
                    Err(e) => return Err(op("delete", maps::BE_VIPS)(e)),
                }
            }
            return Ok(overflow);
        }
        let mut value = BackendVips {
            count: list.len() as u32,
            ..BackendVips::default()
        };
        for (i, (v, sid)) in list.iter().enumerate() {
            value.vips[i] = *v;
            value.service_ids[i] = *sid;
        }
        if current != Some(value) {
            self.be_vips
                .insert(key, value, 0)
                .map_err(op("update", maps::BE_VIPS))?;
        }
        Ok(overflow)
    }

    /// Every backend's VIPs.
    pub fn backend_vips(&self) -> Result<Vec<(BackendKey, BackendVips)>, DataplaneError> {
        self.be_vips
            .iter()
            .collect::<Result<_, _>>()
            .map_err(op("iterate", maps::BE_VIPS))
    }

    /// Per-backend counters, for a migration to carry them over.
    pub(super) fn backend_stats_mut(&mut self) -> &mut PerCpuArray<MapData, BackendCounters> {
        &mut self.backend_stats
    }

    /// Per-service counters, for a migration to carry them over.
    pub(super) fn service_stats_mut(&mut self) -> &mut PerCpuArray<MapData, ServiceCounters> {
        &mut self.service_stats
    }

    /// Reason counters, for a migration to carry them over.
    pub(super) fn reasons_mut(&mut self) -> &mut PerCpuArray<MapData, u64> {
        &mut self.reasons
    }

    /// Zeroes a backend id's counters and signals (before the id is given to a new backend).
    pub fn reset_backend_counters(&mut self, id: u32) -> Result<(), DataplaneError> {
        self.backend_stats
            .set(id, zeros(maps::BE_STATS)?, 0)
            .map_err(op("reset", maps::BE_STATS))?;
        if let Some(signals) = &mut self.signals
            && id < MAX_SIGNAL_BACKENDS
        {
            signals
                .set(id, zeros(maps::BE_SIGNALS)?, 0)
                .map_err(op("reset", maps::BE_SIGNALS))?;
        }
        Ok(())
    }

    /// A backend's signals summed over CPUs: `None` for an id past `MAX_SIGNAL_BACKENDS`
    /// (the kernel keeps none for it).
    pub fn backend_signals(&self, id: u32) -> Result<Option<BackendSignals>, DataplaneError> {
        let Some(signals) = self.signals.as_ref().filter(|_| id < MAX_SIGNAL_BACKENDS) else {
            return Ok(None);
        };
        let v = signals
            .get(&id, 0)
            .map_err(op("lookup", maps::BE_SIGNALS))?;
        let mut sum = BackendSignals::default();
        for cpu in v.iter() {
            sum += cpu;
        }
        Ok(Some(sum))
    }

    /// Measurements pending in the kernel (flows between their SYN and SYN-ACK, or between
    /// their first request and response payloads).
    pub fn pending_measurements(&self) -> Result<usize, DataplaneError> {
        let mut n = 0;
        let Some(times) = &self.flow_times else {
            return Ok(0);
        };
        for k in times.keys() {
            k.map_err(op("iterate", maps::FLOW_TIMES))?;
            n += 1;
        }
        Ok(n)
    }

    /// A backend's counters summed over CPUs.
    pub fn backend_counters(&self, id: u32) -> Result<BackendCounters, DataplaneError> {
        let v = self
            .backend_stats
            .get(&id, 0)
            .map_err(op("lookup", maps::BE_STATS))?;
        Ok(sum_cpus(&v))
    }

    /// A service's counters summed over CPUs.
    pub fn service_counters(&self, id: u32) -> Result<ServiceCounters, DataplaneError> {
        let v = self
            .service_stats
            .get(&id, 0)
            .map_err(op("lookup", maps::SVC_STATS))?;
        Ok(sum_cpus(&v))
    }

    /// How many packets left with `reason`, summed over CPUs.
    pub fn reason_count(&self, reason: Reason) -> Result<u64, DataplaneError> {
        let v = self
            .reasons
            .get(&(reason as u32), 0)
            .map_err(op("lookup", maps::REASONS))?;
        Ok(v.iter().sum())
    }
}

/// Whether a map operation failed only because the key was not there: aya reports a missing key
/// as `KeyNotFound` on lookups but as the system call's `ENOENT` on deletes.
pub(super) fn is_missing(e: &MapError) -> bool {
    match e {
        MapError::KeyNotFound => true,
        MapError::SyscallError(aya::sys::SyscallError { io_error, .. }) => {
            io_error.raw_os_error() == Some(libc::ENOENT)
        }
        _ => false,
    }
}

fn pin_key(service_id: u32, prefix: IpAddr, len: u8) -> Key<PinKey> {
    Key::new(
        PinKey::SERVICE_BITS + u32::from(len),
        PinKey {
            service_id_be: service_id.to_be(),
            addr: addr_words(prefix),
        },
    )
}
