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
    backend::BackendValue,
    counters::{BackendCounters, Reason, ServiceCounters},
    flow::{FlowEntry, FlowKey, RevNatValue},
    maps::{self, LAYOUT_VERSION, MAGLEV_TABLE_SIZE},
    pin::PinKey,
    service::{ServiceKey, ServiceValue},
};

use super::DataplaneError;

/// Handles to every map of a loaded kernel object.
pub struct Maps {
    services: HashMap<MapData, ServiceKey, ServiceValue>,
    backends: HashMap<MapData, u32, BackendValue>,
    maglev: ArrayOfMaps<MapData, Array<MapData, u32>>,
    pins: LpmTrie<MapData, PinKey, u32>,
    conntrack: HashMap<MapData, FlowKey, FlowEntry>,
    revnat: HashMap<MapData, FlowKey, RevNatValue>,
    backend_stats: PerCpuArray<MapData, BackendCounters>,
    service_stats: PerCpuArray<MapData, ServiceCounters>,
    reasons: PerCpuArray<MapData, u64>,
    layout: Array<MapData, u32>,
    tx_ports: DevMapHash<MapData>,
}

fn take<T>(ebpf: &mut Ebpf, name: &'static str) -> Result<T, DataplaneError>
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

/// Converts an address to the key layout: network byte order, IPv4 in word 0.
pub fn addr_words(addr: IpAddr) -> [u32; 4] {
    match addr {
        IpAddr::V4(a) => [u32::from_ne_bytes(a.octets()), 0, 0, 0],
        IpAddr::V6(a) => {
            let o = a.octets();
            let w = |i: usize| u32::from_ne_bytes([o[i], o[i + 1], o[i + 2], o[i + 3]]);
            [w(0), w(4), w(8), w(12)]
        }
    }
}

/// Converts key-layout words back to an address of `family`.
pub fn words_addr(words: [u32; 4], family: u8) -> IpAddr {
    if family == veer_common::FAMILY_V4 {
        IpAddr::from(words[0].to_ne_bytes())
    } else {
        let mut o = [0u8; 16];
        for (i, w) in words.iter().enumerate() {
            o[i * 4..i * 4 + 4].copy_from_slice(&w.to_ne_bytes());
        }
        IpAddr::from(o)
    }
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
            conntrack: take(ebpf, maps::CONNTRACK)?,
            revnat: take(ebpf, maps::REVNAT)?,
            backend_stats: take(ebpf, maps::BE_STATS)?,
            service_stats: take(ebpf, maps::SVC_STATS)?,
            reasons: take(ebpf, maps::REASONS)?,
            layout: take(ebpf, maps::LAYOUT)?,
            tx_ports: take(ebpf, maps::TX_PORTS)?,
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
            conntrack: pinned(dir, maps::CONNTRACK)?,
            revnat: pinned(dir, maps::REVNAT)?,
            backend_stats: pinned(dir, maps::BE_STATS)?,
            service_stats: pinned(dir, maps::SVC_STATS)?,
            reasons: pinned(dir, maps::REASONS)?,
            layout: pinned(dir, maps::LAYOUT)?,
            tx_ports: pinned(dir, maps::TX_PORTS)?,
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
            Ok(()) | Err(MapError::KeyNotFound) => Ok(()),
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

    /// Calls `f` on every conntrack entry (the kernel keeps changing the map meanwhile: each
    /// bucket is read consistently, not the whole map at one instant). Reads in batches; entry
    /// by entry only where the kernel refuses batches.
    pub fn for_each_flow(
        &self,
        mut f: impl FnMut(&FlowKey, &FlowEntry),
    ) -> Result<(), DataplaneError> {
        use aya::maps::IterableMap as _;
        match super::batch::for_each(super::batch::fd_of(self.conntrack.map()), &mut f) {
            Ok(()) => return Ok(()),
            Err(e) => tracing::debug!(error = %e.0, "batch read of conntrack refused; iterating"),
        }
        for item in &self.conntrack {
            match item {
                Ok((k, v)) => f(&k, &v),
                // An entry deleted between get_next_key and lookup: skip it.
                Err(MapError::KeyNotFound) => {}
                Err(e) => return Err(op("iterate", maps::CONNTRACK)(e)),
            }
        }
        Ok(())
    }

    /// Every conntrack entry, collected (bounded callers should use `for_each_flow`).
    pub fn flows(&self) -> Result<Vec<(FlowKey, FlowEntry)>, DataplaneError> {
        let mut out = Vec::new();
        self.for_each_flow(|k, v| out.push((*k, *v)))?;
        Ok(out)
    }

    /// Removes a flow and its reverse-NAT entry (expiry). Missing entries are not an error.
    pub fn remove_flow(&mut self, key: &FlowKey, entry: &FlowEntry) -> Result<(), DataplaneError> {
        let reply = FlowKey {
            src_addr: entry.backend_addr,
            dst_addr: key.src_addr,
            src_port: entry.backend_port,
            dst_port: key.src_port,
            proto: key.proto,
            family: key.family,
            _pad: [0; 2],
        };
        for (map, name, k) in [
            (&mut self.revnat as &mut dyn RemoveKey, maps::REVNAT, &reply),
            (
                &mut self.conntrack as &mut dyn RemoveKey,
                maps::CONNTRACK,
                key,
            ),
        ] {
            match map.remove_key(k) {
                Ok(()) | Err(MapError::KeyNotFound) => {}
                Err(e) => return Err(op("delete", name)(e)),
            }
        }
        Ok(())
    }

    /// Zeroes a backend id's counters (before the id is given to a new backend).
    pub fn reset_backend_counters(&mut self, id: u32) -> Result<(), DataplaneError> {
        let cpus = aya::util::nr_cpus().map_err(|(_, e)| DataplaneError::Map {
            op: "count cpus",
            map: maps::BE_STATS,
            source: MapError::SyscallError(aya::sys::SyscallError {
                call: "nr_cpus",
                io_error: e,
            }),
        })?;
        let zeros = aya::maps::PerCpuValues::try_from(vec![BackendCounters::default(); cpus])
            .map_err(|e| DataplaneError::Map {
                op: "reset",
                map: maps::BE_STATS,
                source: MapError::SyscallError(aya::sys::SyscallError {
                    call: "per-cpu values",
                    io_error: e,
                }),
            })?;
        self.backend_stats
            .set(id, zeros, 0)
            .map_err(op("reset", maps::BE_STATS))
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

/// Removal through one interface for the two flow maps.
trait RemoveKey {
    fn remove_key(&mut self, key: &FlowKey) -> Result<(), MapError>;
}
impl<V: aya::Pod> RemoveKey for HashMap<MapData, FlowKey, V> {
    fn remove_key(&mut self, key: &FlowKey) -> Result<(), MapError> {
        self.remove(key)
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

#[cfg(test)]
mod tests {
    use std::net::IpAddr;

    use super::*;

    #[test]
    fn addresses_round_trip_through_key_words() {
        for a in ["192.0.2.10", "2001:db8::10", "0.0.0.0", "::1"] {
            let ip: IpAddr = a.parse().unwrap();
            let family = if ip.is_ipv4() {
                veer_common::FAMILY_V4
            } else {
                veer_common::FAMILY_V6
            };
            assert_eq!(words_addr(addr_words(ip), family), ip);
        }
        // Word 0 holds the address bytes in wire order.
        let w = addr_words("192.0.2.10".parse().unwrap());
        assert_eq!(w[0].to_ne_bytes(), [192, 0, 2, 10]);
    }
}
