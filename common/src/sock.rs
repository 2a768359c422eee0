//! Socket-level steering of clients on the node itself (the cgroup `connect`/`sendmsg` hooks):
//! which backend each socket was given for each VIP it talks to, and the reverse mapping the
//! `recvmsg`/`getpeername` hooks use to show the VIP again.

use crate::pod;

/// One socket talking to one address: the key of both socket maps.
///
/// In `VEER_SOCK_FLOWS` the address is the VIP and port the application asked for; in
/// `VEER_SOCK_REV` it is the backend the socket was given. An unconnected UDP socket sending to
/// two VIPs has two flows.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct SockKey {
    /// `bpf_get_socket_cookie`: unique per socket for the life of the kernel. Host byte order.
    pub cookie: u64,
    /// Address. Network byte order; IPv4 uses word 0, the rest zero.
    pub addr: [u32; 4],
    /// Port. Network byte order.
    pub port: u16,
    /// IP protocol (`PROTO_TCP`, `PROTO_UDP`).
    pub proto: u8,
    /// Address family (`FAMILY_V4`, `FAMILY_V6`).
    pub family: u8,
    /// Zero.
    pub _pad: u32,
}
const _: () = assert!(size_of::<SockKey>() == 32);

/// The backend a socket was given for a VIP, for the socket's whole life.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SockFlow {
    /// Backend address. Network byte order.
    pub backend_addr: [u32; 4],
    /// Backend port. Network byte order.
    pub backend_port: u16,
    /// Zero.
    pub _pad: u16,
    /// Backend id (per-backend counters, active flows; its group follows from it, as for a
    /// `FlowEntry`).
    pub backend_id: u32,
    /// Service id of the VIP.
    pub service_id: u32,
    /// Zero.
    pub _pad2: u32,
    /// `bpf_ktime_get_ns()` of the last `connect`/`sendmsg` to the VIP, refreshed at most once
    /// a second. Host byte order. Unconnected UDP flows expire by it (the `udp` timeout).
    pub last_seen_ns: u64,
}
const _: () = assert!(size_of::<SockFlow>() == 40);

/// What a socket's peer address is shown as: the VIP and port it asked for.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SockPeer {
    /// VIP. Network byte order.
    pub addr: [u32; 4],
    /// Service port. Network byte order.
    pub port: u16,
    /// Zero.
    pub _pad: [u8; 2],
}
const _: () = assert!(size_of::<SockPeer>() == 20);

pod!(SockKey, SockFlow, SockPeer);
