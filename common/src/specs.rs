//! The shape of every pinned map of this layout (`SPECS`): what the loader checks pinned maps
//! against. The kernel programs declare the same shapes in `ebpf/src/maps.rs`, and a test loads
//! the object and compares the two. Names and capacities are `maps`'.

use crate::{
    backend::BackendValue,
    counters::{BackendCounters, Reason, ServiceCounters},
    flow::{BackendKey, BackendVips, FlowEntry, FlowKey},
    maps::{
        ALL, BACKENDS, BE_SIGNALS, BE_STATS, BE_VIPS, FLOW_TIMES, FLOWS, LAYOUT, MAGLEV,
        MAX_BACKENDS, MAX_FLOW_TIMES, MAX_GROUPS, MAX_PINS, MAX_SERVICES, MAX_SIGNAL_BACKENDS,
        MAX_SOCK_FLOWS, MAX_TX_PORTS, NEWFLOWS, NH_CLOCK, PINS, REASONS, SERVICES, SOCK_FLOWS,
        SOCK_REV, SVC_STATS, TX_PORTS,
    },
    pin::PinKey,
    service::{ServiceKey, ServiceValue},
    signals::{BackendSignals, FlowTimes},
    sock::{SockFlow, SockKey, SockPeer},
};

/// Kinds of map veer pins (`BPF_MAP_TYPE_*`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MapKind {
    /// `BPF_MAP_TYPE_HASH`.
    Hash,
    /// `BPF_MAP_TYPE_LRU_HASH`.
    LruHash,
    /// `BPF_MAP_TYPE_ARRAY`.
    Array,
    /// `BPF_MAP_TYPE_PERCPU_ARRAY`.
    PerCpuArray,
    /// `BPF_MAP_TYPE_ARRAY_OF_MAPS`.
    ArrayOfMaps,
    /// `BPF_MAP_TYPE_LPM_TRIE`.
    LpmTrie,
    /// `BPF_MAP_TYPE_DEVMAP_HASH`.
    DevMapHash,
}

/// How many entries a map holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Capacity {
    /// Fixed by this layout.
    Fixed(u32),
    /// `conntrack_max`, set at load.
    Flows,
    /// `conntrack_new_max`, set at load.
    NewFlows,
}

/// The shape of a pinned map.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MapSpec {
    /// Name (pin file and kernel object name).
    pub name: &'static str,
    /// Kind.
    pub kind: MapKind,
    /// Key size in bytes.
    pub key_size: u32,
    /// Value size in bytes.
    pub value_size: u32,
    /// Capacity.
    pub capacity: Capacity,
}

const fn spec(
    name: &'static str,
    kind: MapKind,
    key_size: usize,
    value_size: usize,
    capacity: Capacity,
) -> MapSpec {
    MapSpec {
        name,
        kind,
        key_size: key_size as u32,
        value_size: value_size as u32,
        capacity,
    }
}

/// The shape of every pinned map of this layout, in `ALL`'s order.
pub const SPECS: [MapSpec; 17] = [
    spec(
        SERVICES,
        MapKind::Hash,
        size_of::<ServiceKey>(),
        size_of::<ServiceValue>(),
        Capacity::Fixed(MAX_SERVICES),
    ),
    spec(
        BACKENDS,
        MapKind::Hash,
        4,
        size_of::<BackendValue>(),
        Capacity::Fixed(MAX_BACKENDS),
    ),
    spec(
        MAGLEV,
        MapKind::ArrayOfMaps,
        4,
        4,
        Capacity::Fixed(MAX_GROUPS),
    ),
    spec(
        FLOWS,
        MapKind::Hash,
        size_of::<FlowKey>(),
        size_of::<FlowEntry>(),
        Capacity::Flows,
    ),
    spec(
        NEWFLOWS,
        MapKind::LruHash,
        size_of::<FlowKey>(),
        size_of::<FlowEntry>(),
        Capacity::NewFlows,
    ),
    spec(
        BE_VIPS,
        MapKind::Hash,
        size_of::<BackendKey>(),
        size_of::<BackendVips>(),
        Capacity::Fixed(MAX_BACKENDS),
    ),
    // The LPM trie's key is the prefix length (u32) and the data.
    spec(
        PINS,
        MapKind::LpmTrie,
        4 + size_of::<PinKey>(),
        4,
        Capacity::Fixed(MAX_PINS),
    ),
    spec(
        BE_STATS,
        MapKind::PerCpuArray,
        4,
        size_of::<BackendCounters>(),
        Capacity::Fixed(MAX_BACKENDS),
    ),
    spec(
        SVC_STATS,
        MapKind::PerCpuArray,
        4,
        size_of::<ServiceCounters>(),
        Capacity::Fixed(MAX_SERVICES),
    ),
    spec(
        REASONS,
        MapKind::PerCpuArray,
        4,
        8,
        Capacity::Fixed(Reason::COUNT),
    ),
    spec(LAYOUT, MapKind::Array, 4, 4, Capacity::Fixed(1)),
    // A devmap value is the ifindex and a program fd (`struct bpf_devmap_val`).
    spec(
        TX_PORTS,
        MapKind::DevMapHash,
        4,
        8,
        Capacity::Fixed(MAX_TX_PORTS),
    ),
    spec(
        SOCK_FLOWS,
        MapKind::Hash,
        size_of::<SockKey>(),
        size_of::<SockFlow>(),
        Capacity::Fixed(MAX_SOCK_FLOWS),
    ),
    spec(
        SOCK_REV,
        MapKind::Hash,
        size_of::<SockKey>(),
        size_of::<SockPeer>(),
        Capacity::Fixed(MAX_SOCK_FLOWS),
    ),
    spec(
        BE_SIGNALS,
        MapKind::PerCpuArray,
        4,
        size_of::<BackendSignals>(),
        Capacity::Fixed(MAX_SIGNAL_BACKENDS),
    ),
    spec(
        FLOW_TIMES,
        MapKind::LruHash,
        size_of::<FlowKey>(),
        size_of::<FlowTimes>(),
        Capacity::Fixed(MAX_FLOW_TIMES),
    ),
    spec(NH_CLOCK, MapKind::Array, 4, 8, Capacity::Fixed(1)),
];

const fn same_name(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    if a.len() != b.len() {
        return false;
    }
    let mut i = 0;
    while i < a.len() {
        if a[i] != b[i] {
            return false;
        }
        i += 1;
    }
    true
}

const _: () = {
    assert!(SPECS.len() == ALL.len());
    let mut i = 0;
    while i < SPECS.len() {
        assert!(same_name(SPECS[i].name, ALL[i]));
        i += 1;
    }
};
