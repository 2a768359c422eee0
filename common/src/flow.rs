//! Flow keys, flow entries and their states, the reverse-NAT view of a backend, and the
//! conversions between a flow's two directions.
//!
//! A flow is one element: its entry, keyed by the client-side tuple, lives in `VEER_FLOWS`
//! (confirmed TCP flows, never evicted) or `VEER_NEWFLOWS` (everything else, LRU). A reply finds
//! it from its own tuple through the backend's VIPs (`BackendVips`), so forward and reverse state
//! are the same element and live and die together.

use crate::pod;

/// A flow's 5-tuple plus address family, as seen on the wire in one direction.
///
/// The flow tables are keyed by the client-side tuple (client -> VIP). IPv4 addresses use word
/// 0 and leave words 1..=3 zero.
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

impl FlowKey {
    /// The client-side key of the flow a reply belongs to, if the client talked to `vip`: the
    /// reply's destination is the client, and the client's destination was the VIP.
    #[expect(
        clippy::inline_always,
        reason = "the kernel build must inline this into the program for the verifier"
    )]
    #[inline(always)]
    pub const fn client_of_reply(reply: &FlowKey, vip: &RevNatValue) -> FlowKey {
        FlowKey {
            src_addr: reply.dst_addr,
            dst_addr: vip.vip,
            src_port: reply.dst_port,
            dst_port: vip.port,
            proto: reply.proto,
            family: reply.family,
            _pad: [0; 2],
        }
    }

    /// The tuple of the flow's replies: from its backend to the client.
    #[must_use]
    pub const fn reply(&self, entry: &FlowEntry) -> FlowKey {
        FlowKey {
            src_addr: entry.backend_addr,
            dst_addr: self.src_addr,
            src_port: entry.backend_port,
            dst_port: self.src_port,
            proto: self.proto,
            family: self.family,
            _pad: [0; 2],
        }
    }
}

/// TCP: the client's SYN was forwarded and the backend has not answered it yet. `VEER_NEWFLOWS`.
pub const STATE_SYN: u8 = 1;
/// TCP flow that is confirmed: its handshake was proven (the client acknowledged the backend's
/// SYN-ACK) or its backend answered it as a live connection. Lives in `VEER_FLOWS`, or in
/// `VEER_NEWFLOWS` while `VEER_FLOWS` is full (promotion refused; retried).
pub const STATE_ESTABLISHED: u8 = 2;
/// TCP flow that ended: the backend sent FIN or RST, or the client an RST the backend accepts.
/// Stays in its table until its idle timeout.
pub const STATE_CLOSING: u8 = 3;
/// UDP flow, tracked by last-seen only. `VEER_NEWFLOWS`.
pub const STATE_UDP: u8 = 4;
/// TCP: the backend answered the SYN with a SYN-ACK (`backend_isn` recorded); the client's ACK
/// of it confirms the flow. `VEER_NEWFLOWS`.
pub const STATE_SYN_ACKED: u8 = 5;
/// TCP: a segment with ACK met no entry (evicted, or a flow older than the programs) and was
/// steered by the flow hash; the backend's answer (anything but RST) confirms it.
/// `VEER_NEWFLOWS`.
pub const STATE_MIDFLOW: u8 = 6;

/// `FlowEntry::flags`: the client's first payload was seen (time to first byte is being, or
/// was, measured).
pub const FLAG_REQUEST_SEEN: u8 = 0x02;
/// `FlowEntry::flags`: the backend's first payload was seen (time to first byte taken, or the
/// backend spoke first and the flow has none).
pub const FLAG_RESPONSE_SEEN: u8 = 0x04;
/// `FlowEntry::flags`: the flow's start was not seen (a mid-flow miss): none of its timings are
/// measured.
pub const FLAG_UNMEASURED: u8 = 0x08;
/// `FlowEntry::flags`, set by the daemon: a paced drain is ending the flow. The backend's next
/// segment that is neither SYN, FIN nor RST (the answer to the daemon's probe) is turned into
/// an RST to the client, carrying the backend's exact sequence number, and the flow closes.
pub const FLAG_ENDING: u8 = 0x10;

/// Timestamps in flow entries are ticks of `1 << TICK_SHIFT` ns (1.048576 ms) of the monotonic
/// clock (`bpf_ktime_get_coarse_ns`), cut to 32 bits: they wrap after 52 days, so ages are
/// compared with wrapping arithmetic and timeouts stay under half of that.
pub const TICK_SHIFT: u32 = 20;

/// The tick of a monotonic-clock time in ns.
#[expect(
    clippy::inline_always,
    reason = "the kernel build must inline this into the program for the verifier"
)]
#[inline(always)]
pub const fn tick(ns: u64) -> u32 {
    (ns >> TICK_SHIFT) as u32
}

/// Ticks in `ns` nanoseconds, rounded up (a timeout is never shortened).
pub const fn ticks_ceil(ns: u64) -> u64 {
    ns.div_ceil(1 << TICK_SHIFT)
}

/// How many ticks after `then` it is at `now`: 0 when `then` is later (an entry touched after
/// `now` was read). Correct while the true age is under 2^31 ticks (24.8 days).
pub const fn ticks_since(now: u32, then: u32) -> u32 {
    let age = now.wrapping_sub(then);
    if age > i32::MAX as u32 { 0 } else { age }
}

/// A flow entry: the backend a flow was given for its whole life, its state, and what the data
/// path needs to validate the flow's TCP segments.
///
/// The backend address is stored in the entry, so a flow keeps reaching its backend even after
/// the backend left the desired state (that is what a drain relies on). The backend id names its
/// service and group (ids are per service, group and address), so neither is stored.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FlowEntry {
    /// Backend address. Network byte order.
    pub backend_addr: [u32; 4],
    /// Backend port. Network byte order.
    pub backend_port: u16,
    /// `STATE_*`.
    pub state: u8,
    /// Per-flow bits: `FLAG_*` (which of the flow's signals were taken, whether a paced drain
    /// is ending it), and the kernel's own bit 0 (an acknowledgment number of the backend is
    /// stored). Zero at creation.
    pub flags: u8,
    /// Backend id the flow was given (per-backend counters, active-flow counts, and through the
    /// daemon's ids, the service and group).
    pub backend_id: u32,
    /// Tick (`TICK_SHIFT`) of the last packet that refreshed the flow: any valid segment of
    /// either side, at most about once a second. Host byte order.
    pub last_seen: u32,
    /// Tick the entry was created at (the client's first SYN for a new TCP flow). Host byte
    /// order.
    pub created: u32,
    /// The backend's initial sequence number, from its SYN-ACK (0 until seen). Host byte order.
    pub backend_isn: u32,
    /// The last acknowledgment number the backend sent: the sequence number a client RST must
    /// carry to end the flow (RFC 5961 section 3). 0 until the backend sent an ACK. Host byte
    /// order.
    pub backend_ack: u32,
}
const _: () = assert!(size_of::<FlowEntry>() == 40);

impl FlowEntry {
    /// Whether the flow counts as active (for drains and `status`): anything not closing.
    pub const fn is_active(&self) -> bool {
        self.state != STATE_CLOSING
    }

    /// Whether the flow is still unconfirmed TCP (handshake or mid-flow miss in progress).
    pub const fn is_unconfirmed(&self) -> bool {
        matches!(self.state, STATE_SYN | STATE_SYN_ACKED | STATE_MIDFLOW)
    }
}

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

/// A backend as its replies name it: their source address and port, protocol and family.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BackendKey {
    /// Address. Network byte order; IPv4 uses word 0, the rest zero.
    pub addr: [u32; 4],
    /// Port. Network byte order.
    pub port: u16,
    /// IP protocol (`PROTO_TCP`, `PROTO_UDP`).
    pub proto: u8,
    /// Address family (`FAMILY_V4`, `FAMILY_V6`).
    pub family: u8,
}
const _: () = assert!(size_of::<BackendKey>() == 20);

impl BackendKey {
    /// The backend a reply comes from.
    #[expect(
        clippy::inline_always,
        reason = "the kernel build must inline this into the program for the verifier"
    )]
    #[inline(always)]
    pub const fn of_reply(reply: &FlowKey) -> BackendKey {
        BackendKey {
            addr: reply.src_addr,
            port: reply.src_port,
            proto: reply.proto,
            family: reply.family,
        }
    }

    /// The backend of a flow (client-side key and its entry).
    pub const fn of_flow(key: &FlowKey, entry: &FlowEntry) -> BackendKey {
        BackendKey {
            addr: entry.backend_addr,
            port: entry.backend_port,
            proto: key.proto,
            family: key.family,
        }
    }
}

/// How many services (VIP and port) one backend address, port and protocol can serve: a reply
/// tries each in turn to find its flow.
pub const MAX_VIPS_PER_BACKEND: usize = 4;

/// The services a backend's replies may belong to, written by the daemon from the desired state
/// (and kept for removed services while their flows live). A reply builds the client-side key
/// for each in turn and takes the flow whose recorded backend is the reply's source: two live
/// flows cannot share a client address and port and a backend address and port, so at most one
/// matches.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BackendVips {
    /// Used entries of `vips` and `service_ids` (0..=`MAX_VIPS_PER_BACKEND`). Host byte order.
    pub count: u32,
    /// Service ids (per-service counters of replies; 0 for a removed service). Host byte order.
    pub service_ids: [u32; MAX_VIPS_PER_BACKEND],
    /// VIPs and ports, in the order replies try them.
    pub vips: [RevNatValue; MAX_VIPS_PER_BACKEND],
}
const _: () = assert!(size_of::<BackendVips>() == 100);

pod!(FlowKey, FlowEntry, RevNatValue, BackendKey, BackendVips);

/// The layout of the flow tables before `LAYOUT_VERSION` 2: one LRU (`VEER_CONNTRACK`) of these
/// entries, and a reverse-NAT LRU (`VEER_REVNAT`). Kept to migrate pinned maps of that layout.
pub mod v1 {
    use crate::pod;

    /// `VEER_CONNTRACK`'s value in layout 1.
    #[repr(C)]
    #[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
    pub struct FlowEntry {
        /// Backend address. Network byte order.
        pub backend_addr: [u32; 4],
        /// Backend port. Network byte order.
        pub backend_port: u16,
        /// 1 SYN, 2 established, 3 closing, 4 UDP.
        pub state: u8,
        /// Zero.
        pub _pad: u8,
        /// Backend id.
        pub backend_id: u32,
        /// Group id.
        pub group_id: u32,
        /// Service id.
        pub service_id: u32,
        /// `bpf_ktime_get_ns()` of the last packet. Host byte order.
        pub last_seen_ns: u64,
    }
    const _: () = assert!(size_of::<FlowEntry>() == 40);

    /// `VEER_BE_STATS`' value in layout 1.
    #[repr(C)]
    #[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
    pub struct BackendCounters {
        /// Packets.
        pub packets: u64,
        /// Bytes.
        pub bytes: u64,
        /// Flows given to the backend.
        pub new_flows: u64,
        /// RSTs answering a SYN.
        pub failed_flows: u64,
    }
    const _: () = assert!(size_of::<BackendCounters>() == 32);

    /// `VEER_SVC_STATS`' value in layout 1.
    #[repr(C)]
    #[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
    pub struct ServiceCounters {
        /// Packets.
        pub packets: u64,
        /// Bytes.
        pub bytes: u64,
        /// Flows created.
        pub new_flows: u64,
        /// Flows created by a TCP non-SYN.
        pub midflow_misses: u64,
    }
    const _: () = assert!(size_of::<ServiceCounters>() == 32);

    /// Reasons counted in layout 1 (`VEER_REASONS` entries).
    pub const REASONS: u32 = 10;

    pod!(FlowEntry, BackendCounters, ServiceCounters);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ages_wrap_and_a_later_touch_is_no_age() {
        assert_eq!(ticks_since(10, 4), 6);
        assert_eq!(ticks_since(3, u32::MAX - 2), 6, "across the 32-bit wrap");
        assert_eq!(ticks_since(4, 10), 0, "touched after now was read");
        assert_eq!(tick(3 << TICK_SHIFT), 3);
        assert_eq!(ticks_ceil(1), 1);
        assert_eq!(ticks_ceil(2 << TICK_SHIFT), 2);
    }

    #[test]
    fn a_reply_finds_its_client_side_key() {
        let client = FlowKey {
            src_addr: [7, 0, 0, 0],
            dst_addr: [10, 0, 0, 0],
            src_port: 4000,
            dst_port: 80,
            proto: crate::PROTO_TCP,
            family: crate::FAMILY_V4,
            _pad: [0; 2],
        };
        let entry = FlowEntry {
            backend_addr: [11, 0, 0, 0],
            backend_port: 8080,
            ..FlowEntry::default()
        };
        let reply = client.reply(&entry);
        assert_eq!(
            BackendKey::of_reply(&reply),
            BackendKey::of_flow(&client, &entry)
        );
        let vip = RevNatValue {
            vip: client.dst_addr,
            port: client.dst_port,
            _pad: [0; 2],
        };
        assert_eq!(FlowKey::client_of_reply(&reply, &vip), client);
    }
}
