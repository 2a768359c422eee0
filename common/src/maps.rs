//! Names, capacities and the layout version of every pinned map, and the names of the programs.
//! Their shapes, which need the key and value types sized by these capacities, are `specs`.
//!
//! Kernel object names are cut to 15 bytes (`BPF_OBJ_NAME_LEN - 1`) silently, so every name here
//! is checked against that limit at compile time.

/// Directory under the bpffs mount (`/sys/fs/bpf`) holding veer's pinned maps and links.
pub const PIN_DIR: &str = "veer";

/// Version of the layout of every pinned map. Bump it whenever a key, a value, a map type or a
/// capacity changes; the daemon migrates pins of an older version it knows and refuses others.
///
/// - 1: one LRU `VEER_CONNTRACK` for every flow, and `VEER_REVNAT` beside it.
/// - 2 (later additions, created empty when missing, so no migration): `VEER_BE_SIGNALS` and
///   `VEER_FLOW_TIMES`, and the `FLAG_*` bits of `FlowEntry::flags` (older programs leave them
///   alone).
/// - 2: `VEER_FLOWS` (confirmed TCP flows, never evicted) and `VEER_NEWFLOWS` (LRU), replies
///   found through `VEER_BE_VIPS`; TCP validation state in the entry; counters of answered and
///   refused connection attempts and of what floods cost; `InvalidTcp`; the socket flows of
///   clients on the node (`VEER_SOCK_FLOWS`, `VEER_SOCK_REV`) and the `Kernel*` reasons. A
///   migration from layout 1 creates the socket maps empty.
pub const LAYOUT_VERSION: u32 = 2;

/// Services: `ServiceKey` -> `ServiceValue`.
pub const SERVICES: &str = "VEER_SERVICES";
/// Backends: `BackendId` -> `BackendValue`.
pub const BACKENDS: &str = "VEER_BACKENDS";
/// Maglev tables: array of maps, group id -> inner array (slot -> `BackendId`).
pub const MAGLEV: &str = "VEER_MAGLEV";
/// Confirmed TCP flows: client-side `FlowKey` -> `FlowEntry` (plain hash: nothing evicts an
/// entry; only the daemon's expiry removes one).
pub const FLOWS: &str = "VEER_FLOWS";
/// Everything else: TCP flows in their handshake, mid-flow misses awaiting confirmation, UDP
/// flows, and confirmed flows `VEER_FLOWS` had no room for (LRU hash: a flood evicts only these).
pub const NEWFLOWS: &str = "VEER_NEWFLOWS";
/// The VIPs a backend's replies may belong to: `BackendKey` -> `BackendVips` (desired state).
pub const BE_VIPS: &str = "VEER_BE_VIPS";
/// Source-prefix pins: LPM trie of `PinKey` -> group id.
pub const PINS: &str = "VEER_PINS";
/// Per-CPU counters per backend: `BackendId` -> `BackendCounters`.
pub const BE_STATS: &str = "VEER_BE_STATS";
/// Per-CPU counters per service: `ServiceId` -> `ServiceCounters`.
pub const SVC_STATS: &str = "VEER_SVC_STATS";
/// Per-CPU counters per `Reason`: reason index -> count.
pub const REASONS: &str = "VEER_REASONS";
/// One-entry array holding `LAYOUT_VERSION` of the maps pinned next to it.
pub const LAYOUT: &str = "VEER_LAYOUT";
/// The interfaces veer is attached to (ifindex -> devmap value): the only ones `veer_xdp`
/// redirects to, since a device without XDP transmit support would drop a redirected frame.
pub const TX_PORTS: &str = "VEER_TX_PORTS";

/// The next-hop cache's clock: one `u64` (`nexthop::clock`: generation and lease), written by
/// the daemon on every route, neighbour or link event and to renew the lease.
pub const NH_CLOCK: &str = "VEER_NH_CLOCK";
/// The next-hop cache: per CPU, backend id -> `nexthop::NextHop`, filled by the programs from
/// their route lookups. Not pinned: a cache, which a new program starts empty.
pub const NEXTHOPS: &str = "VEER_NEXTHOPS";
/// The reply-path cache: per CPU, backend id -> `nexthop::ReplyPath` (the interface a backend's
/// replies come in on), filled by `veer_tc_reply` from its route lookups under the next-hop
/// clock. Not pinned: a cache.
pub const REPLY_PATHS: &str = "VEER_REPLY_PATH";

/// Socket-level flows of clients on the node: `SockKey` (cookie, VIP) -> `SockFlow` (hash).
pub const SOCK_FLOWS: &str = "VEER_SOCK_FLOWS";
/// Their reverse mapping: `SockKey` (cookie, backend) -> `SockPeer` (the VIP) (hash).
pub const SOCK_REV: &str = "VEER_SOCK_REV";

/// Per-CPU signals per backend (`signals::BackendSignals`: latency and duration histograms,
/// resets, flows ended by a paced drain), indexed by backend id below `MAX_SIGNAL_BACKENDS`.
pub const BE_SIGNALS: &str = "VEER_BE_SIGNALS";
/// Starts of pending measurements: client-side `FlowKey` -> `signals::FlowTimes` (LRU hash; an
/// entry lives from a flow's SYN to its SYN-ACK, and from its first request payload to its
/// first response payload).
pub const FLOW_TIMES: &str = "VEER_FLOW_TIMES";

/// Every pinned map name, for layout checks and teardown.
pub const ALL: [&str; 17] = [
    SERVICES, BACKENDS, MAGLEV, FLOWS, NEWFLOWS, BE_VIPS, PINS, BE_STATS, SVC_STATS, REASONS,
    LAYOUT, TX_PORTS, SOCK_FLOWS, SOCK_REV, BE_SIGNALS, FLOW_TIMES, NH_CLOCK,
];

/// Names of layout 1 that layout 2 no longer has (pins a migration reads, then removes).
pub mod v1 {
    /// Layout 1's conntrack: client-side `FlowKey` -> `flow::v1::FlowEntry` (LRU hash).
    pub const CONNTRACK: &str = "VEER_CONNTRACK";
    /// Layout 1's reverse NAT: reply `FlowKey` -> `RevNatValue` (LRU hash).
    pub const REVNAT: &str = "VEER_REVNAT";
    /// Suffix a migration gives the pins of layout 1 whose names layout 2 reuses with another
    /// shape (`VEER_BE_STATS_V1` ...), so the new maps can be pinned under the names (bpffs
    /// refuses names with a dot).
    pub const SET_ASIDE_SUFFIX: &str = "_V1";
}

/// Program names.
pub mod progs {
    /// XDP program on the client-facing interfaces.
    pub const XDP_INGRESS: &str = "veer_xdp";
    /// TC program that reverse-NATs backend replies (ingress) and local-backend replies (egress).
    pub const TC_REPLY: &str = "veer_tc_reply";
    /// TC program that steers client packets on skb-backed interfaces (veth, bridge, VLAN,
    /// bond without native XDP ...): the data path of `veer_xdp`, with the kernel's checksum
    /// helpers and `bpf_redirect`/`bpf_redirect_neigh`.
    pub const TC_STEER: &str = "veer_tc_steer";
    /// Socket hooks steering clients on the node itself (cgroup `connect4`/`connect6`: TCP and
    /// connected UDP; `sendmsg4`/`sendmsg6`: unconnected UDP).
    pub const SOCK_CONNECT4: &str = "veer_sk_conn4";
    /// See `SOCK_CONNECT4`.
    pub const SOCK_CONNECT6: &str = "veer_sk_conn6";
    /// See `SOCK_CONNECT4`.
    pub const SOCK_SENDMSG4: &str = "veer_sk_send4";
    /// See `SOCK_CONNECT4`.
    pub const SOCK_SENDMSG6: &str = "veer_sk_send6";
    /// Socket hooks showing the VIP again as the source of UDP replies (`recvmsg4`/`recvmsg6`).
    pub const SOCK_RECVMSG4: &str = "veer_sk_recv4";
    /// See `SOCK_RECVMSG4`.
    pub const SOCK_RECVMSG6: &str = "veer_sk_recv6";
    /// Socket hooks showing the VIP again as the peer (`getpeername4`/`getpeername6`).
    pub const SOCK_PEER4: &str = "veer_sk_peer4";
    /// See `SOCK_PEER4`.
    pub const SOCK_PEER6: &str = "veer_sk_peer6";
    /// Socket hook forgetting a socket's flow when it is closed (`sock_release`).
    pub const SOCK_RELEASE: &str = "veer_sk_release";

    /// Every socket hook program, in the order the daemon attaches them.
    pub const SOCK: [&str; 9] = [
        SOCK_CONNECT4,
        SOCK_CONNECT6,
        SOCK_SENDMSG4,
        SOCK_SENDMSG6,
        SOCK_RECVMSG4,
        SOCK_RECVMSG6,
        SOCK_PEER4,
        SOCK_PEER6,
        SOCK_RELEASE,
    ];
}

/// Name of the read-only global holding the network-namespace cookie of the daemon that loaded
/// the programs (set at load). The socket hooks act only on sockets of that namespace: other
/// namespaces on the machine (containers, other daemons) are never touched.
pub const NETNS_COOKIE_GLOBAL: &str = "VEER_NETNS_COOKIE";

/// Services a node can hold.
pub const MAX_SERVICES: u32 = 1024;
/// Groups a service can have.
pub const MAX_GROUPS_PER_SERVICE: usize = 8;
/// Group ids across all services (Maglev outer-map entries). Id 0 is reserved.
pub const MAX_GROUPS: u32 = 4096;
/// Backend ids across all services. Id 0 is reserved.
pub const MAX_BACKENDS: u32 = 65536;
/// Source-prefix pins across all services.
pub const MAX_PINS: u32 = 16384;
/// Interfaces veer can attach to on one node.
pub const MAX_TX_PORTS: u32 = 64;
/// Default capacity of `VEER_FLOWS` (confirmed flows); `conntrack_max` in `[node]`.
pub const DEFAULT_CONNTRACK_MAX: u32 = 1 << 20;
/// Default capacity of `VEER_NEWFLOWS` (handshakes, mid-flow misses, UDP, refused promotions);
/// `conntrack_new_max` in `[node]`.
pub const DEFAULT_NEWFLOWS_MAX: u32 = 1 << 16;
/// Socket-level flows of clients on the node (entries in each of the two socket maps).
pub const MAX_SOCK_FLOWS: u32 = 1 << 16;

/// Backend ids that get signals (`VEER_BE_SIGNALS`): ids below this. The daemon gives the
/// lowest free id to a new backend, so a node's first 511 backends have signals; 5272 bytes per
/// backend and CPU (2.6 MiB per CPU).
pub const MAX_SIGNAL_BACKENDS: u32 = 512;
/// Measurements pending at once (`VEER_FLOW_TIMES`): flows between their SYN and SYN-ACK, or
/// between their first request and response payloads. LRU: under a flood the oldest pending
/// measurement is dropped (that flow has no sample), never a flow.
pub const MAX_FLOW_TIMES: u32 = 1 << 16;

/// Slots in a group's Maglev table: a prime.
///
/// Maglev gives every backend of a group either `floor(M/N)` or `ceil(M/N)` slots, so the share
/// of the largest and smallest backend differs by at most `1/(M/N)`. With 16381 that stays
/// under 1% up to 163 backends per group, for 64 KiB per group (vs 256 KiB for katran's 65537,
/// which keeps 1% up to 655 backends). Edge groups are small and a node holds many groups, so the
/// smaller table is the better trade; `LAYOUT_VERSION` guards any change.
pub const MAGLEV_TABLE_SIZE: u32 = 16381;

const fn fits_kernel_name(name: &str) -> bool {
    name.len() <= 15
}
const _: () = {
    let mut i = 0;
    while i < ALL.len() {
        assert!(fits_kernel_name(ALL[i]));
        i += 1;
    }
    assert!(fits_kernel_name(v1::CONNTRACK) && fits_kernel_name(v1::REVNAT));
    assert!(fits_kernel_name(NEXTHOPS));
    assert!(fits_kernel_name(REPLY_PATHS));
    assert!(fits_kernel_name(progs::XDP_INGRESS));
    assert!(fits_kernel_name(progs::TC_REPLY));
    assert!(fits_kernel_name(progs::TC_STEER));
    let mut i = 0;
    while i < progs::SOCK.len() {
        assert!(fits_kernel_name(progs::SOCK[i]));
        i += 1;
    }
};
