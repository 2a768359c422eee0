//! Flow keys and conntrack entries.

use crate::pod;

/// A flow's 5-tuple plus address family, as seen on the wire in one direction.
///
/// The conntrack map is keyed by the client-side tuple (client -> VIP); the reverse-NAT map by the
/// backend-side tuple of replies (backend -> client). IPv4 addresses use word 0 and leave words
/// 1..=3 zero.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct FlowKey {
    /// Source address. Network byte order.
    pub src_addr: [u32; 4],
    /// Destination address. Network byte order.
    pub dst_addr: [u32; 4],
    /// Source port. Network byte order.
    pub src_port: u16,
    /// Destination port. Network byte order.
    pub dst_port: u16,
    /// IP protocol (`PROTO_TCP`, `PROTO_UDP`).
    pub proto: u8,
    /// Address family (`FAMILY_V4`, `FAMILY_V6`).
    pub family: u8,
    /// Zero.
    pub _pad: [u8; 2],
}
const _: () = assert!(size_of::<FlowKey>() == 40);

/// TCP flow that has sent a SYN and not yet seen its handshake complete.
pub const STATE_SYN: u8 = 1;
/// TCP flow with a completed handshake (a non-SYN packet seen from the client).
pub const STATE_ESTABLISHED: u8 = 2;
/// TCP flow that has seen a FIN or an RST from either side.
pub const STATE_CLOSING: u8 = 3;
/// UDP flow (tracked by last-seen only).
pub const STATE_UDP: u8 = 4;

/// A conntrack entry: the backend a flow was given, for the flow's whole life.
///
/// The backend address is stored in the entry, so an established flow keeps reaching its backend
/// even after the backend left the desired state (that is what a drain relies on).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FlowEntry {
    /// Backend address. Network byte order.
    pub backend_addr: [u32; 4],
    /// Backend port. Network byte order.
    pub backend_port: u16,
    /// `STATE_*`.
    pub state: u8,
    /// Zero.
    pub _pad: u8,
    /// Backend id the flow was given (for per-backend counters and active-flow counts).
    pub backend_id: u32,
    /// Group id the backend was picked from.
    pub group_id: u32,
    /// Service id of the VIP.
    pub service_id: u32,
    /// `bpf_ktime_get_ns()` of the last packet in either direction. Host byte order.
    pub last_seen_ns: u64,
}
const _: () = assert!(size_of::<FlowEntry>() == 40);

/// What a reply's source is rewritten to: the VIP and port the client talked to.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RevNatValue {
    /// VIP. Network byte order.
    pub vip: [u32; 4],
    /// Service port. Network byte order.
    pub port: u16,
    /// Zero.
    pub _pad: [u8; 2],
}
const _: () = assert!(size_of::<RevNatValue>() == 20);

impl FlowEntry {
    /// Whether a FIN or RST has been seen on the flow.
    pub const fn is_closing(&self) -> bool {
        self.state == STATE_CLOSING
    }
}

pod!(FlowKey, FlowEntry, RevNatValue);
