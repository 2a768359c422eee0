//! Every map of veer's kernel programs. Names and shapes are `common::specs::SPECS` (a test loads
//! the object and compares); capacities come from `common::maps`, and the daemon sizes the two
//! flow tables at load.

use aya_ebpf::{
    bindings::{BPF_F_NO_COMMON_LRU, BPF_F_NO_PREALLOC},
    btf_maps::{Array, ArrayOfMaps, DevMapHash, HashMap, LpmTrie, LruHashMap, PerCpuArray},
    macros::btf_map,
};
use veer_common::{
    backend::BackendValue,
    counters::{BackendCounters, Reason, ServiceCounters},
    flow::{BackendKey, BackendVips, FlowEntry, FlowKey},
    maps::{
        DEFAULT_CONNTRACK_MAX, DEFAULT_NEWFLOWS_MAX, MAGLEV_TABLE_SIZE, MAX_BACKENDS,
        MAX_FLOW_TIMES, MAX_GROUPS, MAX_PINS, MAX_SERVICES, MAX_SIGNAL_BACKENDS, MAX_SOCK_FLOWS,
        MAX_TX_PORTS,
    },
    nexthop::{NextHop, ReplyPath},
    pin::PinKey,
    service::{ServiceKey, ServiceValue},
    signals::{BackendSignals, FlowTimes},
    sock::{SockFlow, SockKey, SockPeer},
};

// ---- Desired state, written by the daemon ------------------------------------------------------

/// Services. `BPF_F_NO_PREALLOC` so that an update replaces the element under RCU: a packet
/// holding the old value keeps reading the old value, never a half-written one.
#[btf_map]
pub(crate) static VEER_SERVICES: HashMap<
    ServiceKey,
    ServiceValue,
    { MAX_SERVICES as usize },
    { BPF_F_NO_PREALLOC as usize },
> = HashMap::new();

/// Backends by id. Written before any table names the id; retired only after no table does.
#[btf_map]
pub(crate) static VEER_BACKENDS: HashMap<
    u32,
    BackendValue,
    { MAX_BACKENDS as usize },
    { BPF_F_NO_PREALLOC as usize },
> = HashMap::new();

/// Maglev tables: group id -> table of backend ids. A table is replaced whole by swapping the
/// inner map in one outer-map update.
#[btf_map]
pub(crate) static VEER_MAGLEV: ArrayOfMaps<
    Array<u32, { MAGLEV_TABLE_SIZE as usize }>,
    { MAX_GROUPS as usize },
> = ArrayOfMaps::new();

/// Source-prefix pins: (service, client prefix) -> group id.
#[btf_map]
pub(crate) static VEER_PINS: LpmTrie<PinKey, u32, { MAX_PINS as usize }> = LpmTrie::new();

/// The VIPs each backend serves, for replies to find their flow. `BPF_F_NO_PREALLOC`, as
/// `VEER_SERVICES`: an update swaps the element under RCU.
#[btf_map]
pub(crate) static VEER_BE_VIPS: HashMap<
    BackendKey,
    BackendVips,
    { MAX_BACKENDS as usize },
    { BPF_F_NO_PREALLOC as usize },
> = HashMap::new();

// ---- Flow state, written by the programs -------------------------------------------------------

/// Confirmed TCP flows: client-side tuple -> the flow. A plain preallocated hash: nothing evicts
/// an entry, so no flood can take a confirmed flow away; only the daemon's expiry removes one.
#[btf_map]
pub(crate) static VEER_FLOWS: HashMap<FlowKey, FlowEntry, { DEFAULT_CONNTRACK_MAX as usize }> =
    HashMap::new();

/// Every other flow (handshakes, mid-flow misses, UDP, confirmed flows `VEER_FLOWS` had no room
/// for): client-side tuple -> the flow. LRU: a flood evicts entries of this table only.
#[btf_map]
pub(crate) static VEER_NEWFLOWS: LruHashMap<FlowKey, FlowEntry, { DEFAULT_NEWFLOWS_MAX as usize }> =
    LruHashMap::new();

// ---- Counters ----------------------------------------------------------------------------------

/// Per-CPU counters by backend id.
#[btf_map]
pub(crate) static VEER_BE_STATS: PerCpuArray<BackendCounters, { MAX_BACKENDS as usize }> =
    PerCpuArray::new();

/// Per-CPU counters by service id.
#[btf_map]
pub(crate) static VEER_SVC_STATS: PerCpuArray<ServiceCounters, { MAX_SERVICES as usize }> =
    PerCpuArray::new();

/// Per-CPU counters by `Reason`.
#[btf_map]
pub(crate) static VEER_REASONS: PerCpuArray<u64, { Reason::COUNT as usize }> = PerCpuArray::new();

/// Per-CPU signals by backend id (ids below `MAX_SIGNAL_BACKENDS`): latency and duration
/// histograms, resets, flows ended by a paced drain. Written per flow event, never per packet.
#[btf_map]
pub(crate) static VEER_BE_SIGNALS: PerCpuArray<BackendSignals, { MAX_SIGNAL_BACKENDS as usize }> =
    PerCpuArray::new();

/// Starts of pending measurements (a flow's first SYN, or its first request payload), keyed by
/// the client-side tuple until the backend's answer. LRU: a flood drops measurements, not flows.
/// `BPF_F_NO_COMMON_LRU`: each CPU keeps its own LRU lists, so an insert takes no lock shared
/// by all CPUs (a measurement ends on whichever CPU its answer comes in).
#[btf_map]
pub(crate) static VEER_FLOW_TIMES: LruHashMap<
    FlowKey,
    FlowTimes,
    { MAX_FLOW_TIMES as usize },
    { BPF_F_NO_COMMON_LRU as usize },
> = LruHashMap::new();

/// `LAYOUT_VERSION` of the maps pinned next to it, written by the daemon; programs never read it.
#[btf_map]
pub(crate) static VEER_LAYOUT: Array<u32, 1> = Array::new();

/// Interfaces `veer_xdp` may redirect to, by ifindex: the ones veer is attached to that can take
/// a redirected XDP frame (the daemon keeps it so as links change).
#[btf_map]
pub(crate) static VEER_TX_PORTS: DevMapHash<{ MAX_TX_PORTS as usize }> = DevMapHash::new();

// ---- Next-hop cache (`veer_common::nexthop`) ----------------------------------------------------

/// The cache's clock: generation and lease, written by the daemon (pinned: a daemon that starts
/// again writes the clock of the programs running).
#[btf_map]
pub(crate) static VEER_NH_CLOCK: Array<u64, 1> = Array::new();

/// Per CPU, backend id -> the next hop this CPU's last route lookup for it found. Written only by
/// the programs, each CPU its own copy, so no reader ever sees a half-written entry.
#[btf_map]
pub(crate) static VEER_NEXTHOPS: PerCpuArray<NextHop, { MAX_BACKENDS as usize }> =
    PerCpuArray::new();

/// Per CPU, backend id -> the interface its replies come in on, from this CPU's last route
/// lookup toward it (`replypath`), under the next-hop clock. Written only by `veer_tc_reply`.
#[btf_map]
pub(crate) static VEER_REPLY_PATH: PerCpuArray<ReplyPath, { MAX_BACKENDS as usize }> =
    PerCpuArray::new();

// ---- Clients on the node (socket hooks) ----------------------------------------------------------

/// Socket flows: (socket cookie, VIP) -> the backend the socket was given. A plain hash, not an
/// LRU: many new sockets (a local user opening them by the thousand) never evict a live socket's
/// flow; when it is full, a new socket is still steered, untracked (`ConntrackFull`). Entries go
/// when their socket closes (`sock_release`) or, unconnected UDP, by the daemon's idle expiry.
#[btf_map]
pub(crate) static VEER_SOCK_FLOWS: HashMap<
    SockKey,
    SockFlow,
    { MAX_SOCK_FLOWS as usize },
    { BPF_F_NO_PREALLOC as usize },
> = HashMap::new();

/// Their reverse: (socket cookie, backend) -> the VIP to show the application.
#[btf_map]
pub(crate) static VEER_SOCK_REV: HashMap<
    SockKey,
    SockPeer,
    { MAX_SOCK_FLOWS as usize },
    { BPF_F_NO_PREALLOC as usize },
> = HashMap::new();

/// The network-namespace cookie of the daemon that loaded the programs (`NETNS_COOKIE_GLOBAL`,
/// written by the loader; 0 = none, and the socket hooks then touch nothing).
#[unsafe(no_mangle)]
pub(crate) static VEER_NETNS_COOKIE: u64 = 0;
