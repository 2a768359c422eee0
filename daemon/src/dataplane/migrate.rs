//! Carrying pinned maps of an older layout over, so an upgrade breaks no established flow
//! (DESIGN invariant 1). Layout 1 had one LRU conntrack (`VEER_CONNTRACK`) and a reverse-NAT LRU
//! (`VEER_REVNAT`); layout 2 has `VEER_FLOWS`, `VEER_NEWFLOWS` and `VEER_BE_VIPS`, and counters of
//! another shape under the same names.
//!
//! 1. `prepare`, before the object is loaded: the layout-1 pins whose names layout 2 reuses
//!    with another shape (`VEER_BE_STATS`, `VEER_SVC_STATS`, `VEER_REASONS`) are set aside
//!    (renamed `NAME_V1`; bpffs renames atomically), so the loader pins new maps under the names.
//!    The old programs keep running on the old maps meanwhile.
//! 2. `copy`, once the new maps exist: counters are copied into the maps this load created,
//!    every flow into the new tables (established flows into `VEER_FLOWS`), and the VIP of every
//!    flow into `VEER_BE_VIPS`, so its replies find it.
//! 3. `finish`, once this build's programs run on every link: the flows the old programs created
//!    or confirmed since step 2 are copied too, then the old pins are removed.
//!
//! Every step can be run again after a crash: pins already set aside stay so, flows are inserted
//! only where missing, and counters are copied only into maps this load created. The packets
//! the old programs counted between step 2 and the swap of the programs (milliseconds) are not
//! carried over.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
};

use aya::maps::{HashMap, IterableMap as _, Map, MapData, MapError, PerCpuArray, PerCpuValues};
use veer_common::{
    counters::{BackendCounters, ServiceCounters},
    flow::{
        self, BackendKey, FlowEntry, FlowKey, RevNatValue, STATE_CLOSING, STATE_ESTABLISHED,
        STATE_MIDFLOW, STATE_UDP, tick,
    },
    maps::{self, LAYOUT_VERSION},
};

use super::{
    DataplaneError, batch,
    loader::pinned_layout_version,
    maps::{FlowTable, Maps},
};

/// `BPF_NOEXIST`.
const NOEXIST: u64 = 1;

/// Pins of layout 1 whose names layout 2 reuses for maps of another shape.
const RESHAPED: [&str; 3] = [maps::BE_STATS, maps::SVC_STATS, maps::REASONS];

/// Pinned maps of an older layout, open, being carried over.
pub struct Legacy {
    dir: PathBuf,
    version: u32,
    conntrack: Option<HashMap<MapData, FlowKey, flow::v1::FlowEntry>>,
    be_stats: Option<PerCpuArray<MapData, flow::v1::BackendCounters>>,
    svc_stats: Option<PerCpuArray<MapData, flow::v1::ServiceCounters>>,
    reasons: Option<PerCpuArray<MapData, u64>>,
    /// Counter maps this load creates (their old counters are copied into them).
    fresh: Vec<&'static str>,
}

impl Legacy {
    /// The layout version migrated from.
    pub fn version(&self) -> u32 {
        self.version
    }
}

/// What a copy did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Copied {
    /// Flows written into `VEER_FLOWS`.
    pub flows: u64,
    /// Flows written into `VEER_NEWFLOWS`.
    pub new_flows: u64,
    /// Entries not carried over (an unknown state, or already there).
    pub skipped: u64,
}

fn set_aside_path(dir: &Path, name: &str) -> PathBuf {
    dir.join(format!("{name}{}", maps::v1::SET_ASIDE_SUFFIX))
}

fn pin_error(op: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> DataplaneError {
    let path = path.to_owned();
    move |source| DataplaneError::MigrationPin { op, path, source }
}

fn map_error(op: &'static str, map: &'static str) -> impl FnOnce(MapError) -> DataplaneError {
    move |source| DataplaneError::Map { op, map, source }
}

/// Whether the pin at `path` is a layout-1 map of `name` (its value or capacity gives it away).
fn is_v1_shape(path: &Path, name: &str) -> bool {
    let Ok(info) = aya::maps::MapInfo::from_pin(path) else {
        return false;
    };
    match name {
        maps::BE_STATS => info.value_size() as usize == size_of::<flow::v1::BackendCounters>(),
        maps::SVC_STATS => info.value_size() as usize == size_of::<flow::v1::ServiceCounters>(),
        maps::REASONS => info.max_entries() == flow::v1::REASONS,
        _ => false,
    }
}

fn open(path: &Path, name: &'static str) -> Result<Option<Map>, DataplaneError> {
    if !path.exists() {
        return Ok(None);
    }
    let data = MapData::from_pin(path).map_err(map_error("open pinned", name))?;
    let info = aya::maps::MapInfo::from_pin(path).map_err(map_error("open pinned", name))?;
    let map = match info.map_type().map_err(map_error("open pinned", name))? {
        aya::maps::MapType::LruHash => Map::LruHashMap(data),
        aya::maps::MapType::PerCpuArray => Map::PerCpuArray(data),
        _ => return Ok(None),
    };
    Ok(Some(map))
}

/// Detects pins of an older layout under `dir` and sets aside those whose names this layout
/// reuses. Returns `None` when there is nothing to migrate.
pub fn prepare(dir: &Path) -> Result<Option<Legacy>, DataplaneError> {
    let version = pinned_layout_version(dir)?;
    let conntrack = dir.join(maps::v1::CONNTRACK);
    let pending = conntrack.exists()
        || RESHAPED
            .iter()
            .any(|n| set_aside_path(dir, n).exists() || is_v1_shape(&dir.join(n), n))
        || (version != 0 && version < LAYOUT_VERSION);
    if !pending || version > LAYOUT_VERSION {
        return Ok(None);
    }
    let mut fresh = Vec::new();
    for name in RESHAPED {
        let pin = dir.join(name);
        if is_v1_shape(&pin, name) {
            let aside = set_aside_path(dir, name);
            std::fs::rename(&pin, &aside).map_err(pin_error("set aside", &pin))?;
        }
        if !pin.exists() {
            fresh.push(name);
        }
    }
    let conntrack = match open(&conntrack, maps::v1::CONNTRACK)? {
        Some(m) => Some(HashMap::try_from(m).map_err(map_error("open", maps::v1::CONNTRACK))?),
        None => None,
    };
    let per_cpu = |name: &'static str| open(&set_aside_path(dir, name), name);
    let be_stats = match per_cpu(maps::BE_STATS)? {
        Some(m) => Some(PerCpuArray::try_from(m).map_err(map_error("open", maps::BE_STATS))?),
        None => None,
    };
    let svc_stats = match per_cpu(maps::SVC_STATS)? {
        Some(m) => Some(PerCpuArray::try_from(m).map_err(map_error("open", maps::SVC_STATS))?),
        None => None,
    };
    let reasons = match per_cpu(maps::REASONS)? {
        Some(m) => Some(PerCpuArray::try_from(m).map_err(map_error("open", maps::REASONS))?),
        None => None,
    };
    Ok(Some(Legacy {
        dir: dir.to_owned(),
        version,
        conntrack,
        be_stats,
        svc_stats,
        reasons,
        fresh,
    }))
}

/// A layout-1 entry as a layout-2 entry, and the table it belongs in (`None`: not carried).
///
/// Layout 1 did not record whether a SYN was answered, so its SYN entries become mid-flow
/// entries: the backend's next answer confirms them, and a SYN-ACK moves them on.
fn convert(old: &flow::v1::FlowEntry) -> Option<(FlowTable, FlowEntry)> {
    let (table, state) = match old.state {
        1 => (FlowTable::New, STATE_MIDFLOW),
        2 => (FlowTable::Flows, STATE_ESTABLISHED),
        3 => (FlowTable::New, STATE_CLOSING),
        4 => (FlowTable::New, STATE_UDP),
        _ => return None,
    };
    let seen = tick(old.last_seen_ns);
    Some((
        table,
        FlowEntry {
            backend_addr: old.backend_addr,
            backend_port: old.backend_port,
            state,
            flags: 0,
            backend_id: old.backend_id,
            last_seen: seen,
            created: seen,
            backend_isn: 0,
            backend_ack: 0,
        },
    ))
}

/// Writes one converted flow where it is missing; an established flow `VEER_FLOWS` has no room
/// for goes to `VEER_NEWFLOWS` (it keeps working there). With `upgrade`, an unconfirmed entry
/// already in `VEER_NEWFLOWS` gives way to an established one (the old programs confirmed the
/// flow meanwhile).
fn write_flow(
    maps: &mut Maps,
    key: FlowKey,
    table: FlowTable,
    entry: FlowEntry,
    upgrade: bool,
    copied: &mut Copied,
) -> Result<(), DataplaneError> {
    let existing = maps.flow(&key)?;
    match existing {
        None => {}
        Some((FlowTable::New, e)) if upgrade && e.is_unconfirmed() && table == FlowTable::Flows => {
        }
        Some(_) => {
            copied.skipped += 1;
            return Ok(());
        }
    }
    if table == FlowTable::Flows {
        if maps
            .insert_flow(FlowTable::Flows, key, entry, NOEXIST)
            .is_ok()
        {
            copied.flows += 1;
            if existing.is_some() {
                maps.remove_flow(FlowTable::New, &key)?;
            }
            return Ok(());
        }
        if existing.is_some() || maps.flow(&key)?.is_some() {
            copied.skipped += 1;
            return Ok(());
        }
        // VEER_FLOWS is full: the flow keeps working from VEER_NEWFLOWS.
    }
    match maps.insert_flow(FlowTable::New, key, entry, NOEXIST) {
        Ok(()) => copied.new_flows += 1,
        // Created meanwhile by this build's programs: theirs is newer.
        Err(_) if maps.flow(&key)?.is_some() => copied.skipped += 1,
        Err(e) => return Err(map_error("insert", maps::NEWFLOWS)(e)),
    }
    Ok(())
}

/// Copies every layout-1 flow into the new tables. Returns the VIPs they need.
fn copy_flows(
    legacy: &Legacy,
    maps: &mut Maps,
    upgrade: bool,
    copied: &mut Copied,
) -> Result<BTreeMap<BackendKey, Vec<(RevNatValue, u32)>>, DataplaneError> {
    let mut vips: BTreeMap<BackendKey, Vec<(RevNatValue, u32)>> = BTreeMap::new();
    let Some(ct) = &legacy.conntrack else {
        return Ok(vips);
    };
    let mut old: Vec<(FlowKey, flow::v1::FlowEntry)> = Vec::new();
    batch::for_each(
        batch::fd_of(ct.map()),
        |k: &FlowKey, v: &flow::v1::FlowEntry| {
            old.push((*k, *v));
        },
    )
    .map_err(|e| DataplaneError::MigrationPin {
        op: "read",
        path: legacy.dir.join(maps::v1::CONNTRACK),
        source: e.0,
    })?;
    for (key, v) in old {
        let Some((table, entry)) = convert(&v) else {
            copied.skipped += 1;
            continue;
        };
        write_flow(maps, key, table, entry, upgrade, copied)?;
        let vip = RevNatValue {
            vip: key.dst_addr,
            port: key.dst_port,
            _pad: [0; 2],
        };
        let list = vips.entry(BackendKey::of_flow(&key, &entry)).or_default();
        if !list.iter().any(|(l, _)| *l == vip) {
            list.push((vip, v.service_id));
        }
    }
    Ok(vips)
}

/// Copies per-CPU counters of one map, index by index, converting each value.
fn copy_counters<O: aya::Pod, N: aya::Pod + Default>(
    old: &PerCpuArray<MapData, O>,
    new: &mut PerCpuArray<MapData, N>,
    name: &'static str,
    convert: impl Fn(&O) -> N,
) -> Result<(), DataplaneError> {
    let n = old.len().min(new.len());
    for i in 0..n {
        let values = old.get(&i, 0).map_err(map_error("read old", name))?;
        let converted: Vec<N> = values.iter().map(&convert).collect();
        if converted
            .iter()
            .all(|c| bytes_of(c).iter().all(|b| *b == 0))
        {
            continue;
        }
        let values = PerCpuValues::try_from(converted)
            .map_err(|e| map_error("convert", name)(MapError::IoError(e)))?;
        new.set(i, values, 0).map_err(map_error("write", name))?;
    }
    Ok(())
}

/// The bytes of a plain value.
fn bytes_of<T: aya::Pod>(v: &T) -> &[u8] {
    // SAFETY: `Pod` values are plain integers and byte arrays with no padding (see the size
    // asserts in `veer_common`); reading them as bytes is sound.
    unsafe { std::slice::from_raw_parts(std::ptr::from_ref(v).cast::<u8>(), size_of::<T>()) }
}

/// Step 2: copies counters (into the maps this load created), flows and their VIPs.
pub fn copy(legacy: &Legacy, maps: &mut Maps) -> Result<Copied, DataplaneError> {
    if legacy.fresh.contains(&maps::BE_STATS)
        && let Some(old) = &legacy.be_stats
    {
        copy_counters(old, maps.backend_stats_mut(), maps::BE_STATS, |o| {
            BackendCounters {
                packets: o.packets,
                bytes: o.bytes,
                new_flows: o.new_flows,
                answered_flows: 0,
                refused_flows: o.failed_flows,
            }
        })?;
    }
    if legacy.fresh.contains(&maps::SVC_STATS)
        && let Some(old) = &legacy.svc_stats
    {
        copy_counters(old, maps.service_stats_mut(), maps::SVC_STATS, |o| {
            ServiceCounters {
                packets: o.packets,
                bytes: o.bytes,
                new_flows: o.new_flows,
                midflow_misses: o.midflow_misses,
                ..ServiceCounters::default()
            }
        })?;
    }
    if legacy.fresh.contains(&maps::REASONS)
        && let Some(old) = &legacy.reasons
    {
        // Reasons keep their indices; later layouts only append.
        copy_counters(old, maps.reasons_mut(), maps::REASONS, |o| *o)?;
    }
    let mut copied = Copied::default();
    let vips = copy_flows(legacy, maps, false, &mut copied)?;
    for (key, list) in vips {
        maps.merge_backend_vips(key, &list, |_| true)?;
    }
    Ok(copied)
}

/// Step 3: copies what the old programs did since `copy`, then removes the old pins.
pub fn finish(legacy: Legacy, maps: &mut Maps) -> Result<Copied, DataplaneError> {
    let mut copied = Copied::default();
    let vips = copy_flows(&legacy, maps, true, &mut copied)?;
    for (key, list) in vips {
        maps.merge_backend_vips(key, &list, |_| true)?;
    }
    let dir = legacy.dir.clone();
    drop(legacy);
    let mut pins = vec![dir.join(maps::v1::CONNTRACK), dir.join(maps::v1::REVNAT)];
    pins.extend(RESHAPED.iter().map(|n| set_aside_path(&dir, n)));
    for pin in pins {
        match std::fs::remove_file(&pin) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(pin_error("remove", &pin)(e)),
        }
    }
    Ok(copied)
}
