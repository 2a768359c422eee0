//! Conntrack: which backend a flow was given, and the flow's state. No selection logic here.
//!
//! Entries are written from several CPUs without locks: two packets of one flow on two CPUs may
//! both store `last_seen_ns` or a state. Both stores carry values that are correct for that
//! moment, so whichever lands last is fine (same reasoning as cilium's `__ct_update_timeout`).

use veer_common::{
    PROTO_TCP,
    counters::Reason,
    flow::{
        FlowEntry, FlowKey, RevNatValue, STATE_CLOSING, STATE_ESTABLISHED, STATE_SYN, STATE_UDP,
    },
};

use crate::{
    counters,
    maps::{VEER_CONNTRACK, VEER_REVNAT},
    parse::Headers,
};

/// `last_seen_ns` is refreshed at most this often, to keep conntrack cache lines from bouncing
/// between CPUs on every packet. Idle timeouts are seconds, so this costs no precision.
const TOUCH_INTERVAL_NS: u64 = 1_000_000_000;

/// Returns the entry of a flow (client-side key), if any.
#[inline(always)]
pub(crate) fn lookup(key: &FlowKey) -> Option<*mut FlowEntry> {
    VEER_CONNTRACK.get_ptr_mut(key)
}

/// Whether a SYN meets the entry of a flow that already got past its handshake: the client
/// reuses the 5-tuple for a new connection, which must be selected afresh (with today's
/// weights), not glued to the old flow's backend. A SYN on an entry still in SYN state is a
/// retransmit and keeps its backend.
#[inline(always)]
pub(crate) fn is_reused(entry: *mut FlowEntry, h: &Headers) -> bool {
    // SAFETY: `entry` came from a conntrack lookup in this program run (see `touch_request`).
    h.is_syn() && unsafe { (*entry).state } != STATE_SYN
}

/// The state a new entry starts in for the packet that created it.
#[inline(always)]
fn initial_state(h: &Headers) -> u8 {
    if h.key.proto != PROTO_TCP {
        STATE_UDP
    } else if h.is_fin_or_rst() {
        STATE_CLOSING
    } else if h.is_syn() {
        STATE_SYN
    } else {
        // A mid-flow packet whose entry was evicted or never seen (e.g. flows older than the
        // programs): the flow is live, so it is established from now on.
        STATE_ESTABLISHED
    }
}

/// Records a new flow and its reverse-NAT entry. A failed insert is counted
/// (`ConntrackFull`) but does not stop the packet: the flow hash picks the same backend for the
/// next packet while weights are unchanged.
#[inline(always)]
pub(crate) fn create(h: &Headers, mut entry: FlowEntry, now: u64) -> FlowEntry {
    entry.state = initial_state(h);
    entry.last_seen_ns = now;
    let reply_key = FlowKey {
        src_addr: entry.backend_addr,
        dst_addr: h.key.src_addr,
        src_port: entry.backend_port,
        dst_port: h.key.src_port,
        proto: h.key.proto,
        family: h.key.family,
        _pad: [0; 2],
    };
    let rev = RevNatValue {
        vip: h.key.dst_addr,
        port: h.key.dst_port,
        _pad: [0; 2],
    };
    if VEER_REVNAT.insert(reply_key, rev, 0).is_err()
        || VEER_CONNTRACK.insert(h.key, entry, 0).is_err()
    {
        counters::reason(Reason::ConntrackFull);
    }
    entry
}

/// Updates a flow's state for a packet from the client.
#[inline(always)]
pub(crate) fn touch_request(entry: *mut FlowEntry, h: &Headers, now: u64) {
    // SAFETY: `entry` came from a conntrack lookup in this program run; LRU elements stay valid
    // under RCU until the program returns. Racing writers are benign (module doc).
    let e = unsafe { &mut *entry };
    if h.is_fin_or_rst() {
        if e.state != STATE_CLOSING {
            e.state = STATE_CLOSING;
        }
    } else if e.state == STATE_SYN && !h.is_syn() {
        e.state = STATE_ESTABLISHED;
    }
    refresh(e, now);
}

/// Updates a flow's state for a reply from its backend. Returns whether the reply refused the
/// connection attempt (an RST answering a SYN).
#[inline(always)]
pub(crate) fn touch_reply(entry: *mut FlowEntry, h: &Headers, now: u64) -> bool {
    // SAFETY: as in `touch_request`.
    let e = unsafe { &mut *entry };
    let refused = e.state == STATE_SYN && h.is_rst();
    if h.is_fin_or_rst() && e.state != STATE_CLOSING {
        e.state = STATE_CLOSING;
    }
    refresh(e, now);
    refused
}

#[inline(always)]
fn refresh(e: &mut FlowEntry, now: u64) {
    if now.wrapping_sub(e.last_seen_ns) >= TOUCH_INTERVAL_NS {
        e.last_seen_ns = now;
    }
}

/// Returns the VIP and port to restore on a reply (backend-side key), if it is one.
#[inline(always)]
pub(crate) fn revnat_lookup(key: &FlowKey) -> Option<RevNatValue> {
    // SAFETY: the value is copied out at once.
    unsafe { VEER_REVNAT.get(key) }.copied()
}
