//! The signals the canary judge and the metrics read, per backend (`common::signals`): connect
//! latency, time to first byte, flow duration, resets from the backend on established flows,
//! and the end of flows a paced drain chose. The only writer of `VEER_BE_SIGNALS` and
//! `VEER_FLOW_TIMES`.
//!
//! Called by `conntrack` at a flow's events only: its first SYN, the backend's SYN-ACK, the first
//! payload of each side, a reset, the close. The fine clock (`bpf_ktime_get_ns`) is read at those
//! events and nowhere else; on the other segments of an established flow the cost is one test of
//! a bit of the entry `conntrack` already holds.

use aya_ebpf::{helpers::bpf_ktime_get_ns, programs::TcContext};
use veer_common::{
    counters::Reason,
    flow::{
        FLAG_ENDING, FLAG_REQUEST_SEEN, FLAG_RESPONSE_SEEN, FLAG_UNMEASURED, FlowEntry, FlowKey,
        STATE_CLOSING, STATE_ESTABLISHED, TICK_SHIFT, ticks_since,
    },
    histogram::DURATION_UNIT_SHIFT,
    signals::{BackendSignals, FlowTimes},
};

use crate::{
    maps::{VEER_BE_SIGNALS, VEER_FLOW_TIMES},
    parse::{Headers, tcp_flags},
};

#[inline(always)]
fn now_ns() -> u64 {
    // SAFETY: plain helper call with no arguments.
    unsafe { bpf_ktime_get_ns() }
}

/// The signals of backend `id` on this CPU (none for ids past `MAX_SIGNAL_BACKENDS`).
#[inline(always)]
fn backend(id: u32) -> Option<&'static mut BackendSignals> {
    // SAFETY: per-CPU array slot, only this CPU writes it while the program runs.
    VEER_BE_SIGNALS.get_ptr_mut(id).map(|p| unsafe { &mut *p })
}

/// Starts a pending measurement of flow `key` now.
#[inline(always)]
fn start(key: &FlowKey) {
    // A full LRU evicts the oldest pending measurement; an error loses only this sample.
    let _ = VEER_FLOW_TIMES.insert(key, FlowTimes { start_ns: now_ns() }, 0);
}

/// Ends flow `key`'s pending measurement: nanoseconds since it started (none when it was
/// evicted, or never started).
#[inline(always)]
fn finish(key: &FlowKey) -> Option<u64> {
    // SAFETY: LRU hash value read once, right away; a concurrent delete leaves it readable for
    // this program run (RCU).
    let start_ns = unsafe { VEER_FLOW_TIMES.get(key) }?.start_ns;
    // Gone already (another CPU finished it) is fine.
    let _ = VEER_FLOW_TIMES.remove(key);
    Some(now_ns().wrapping_sub(start_ns))
}

/// A client's SYN created flow `key`: connect latency starts.
#[inline(always)]
pub(crate) fn syn_forwarded(key: &FlowKey) {
    start(key);
}

/// The backend answered flow `key`'s SYN with a SYN-ACK: connect latency ends.
#[inline(always)]
pub(crate) fn syn_answered(key: &FlowKey, backend_id: u32) {
    if let Some(ns) = finish(key)
        && let Some(s) = backend(backend_id)
    {
        s.histograms.connect.record(ns);
    }
}

/// A client segment of flow `key` (entry `e`): its first payload starts time to first byte.
#[inline(always)]
pub(crate) fn client_segment(h: &Headers, key: &FlowKey, e: &mut FlowEntry) {
    if !h.tcp_payload || e.flags & (FLAG_REQUEST_SEEN | FLAG_UNMEASURED) != 0 {
        return;
    }
    e.flags |= FLAG_REQUEST_SEEN;
    if e.flags & FLAG_RESPONSE_SEEN == 0 {
        start(key);
    }
}

/// A backend segment of flow `key` (entry `e`): its first payload ends time to first byte (a
/// backend that speaks first has none).
#[inline(always)]
pub(crate) fn backend_segment(h: &Headers, key: &FlowKey, e: &mut FlowEntry) {
    if !h.tcp_payload || e.flags & (FLAG_RESPONSE_SEEN | FLAG_UNMEASURED) != 0 {
        return;
    }
    e.flags |= FLAG_RESPONSE_SEEN;
    if e.flags & FLAG_REQUEST_SEEN != 0
        && let Some(ns) = finish(key)
        && let Some(s) = backend(e.backend_id)
    {
        s.histograms.first_byte.record(ns);
    }
}

/// Flow `e` is closing now (tick `now`); called before its state changes. An established flow's
/// duration is recorded, and `reset` counts an RST from its backend.
#[inline(always)]
pub(crate) fn closing(e: &FlowEntry, now: u32, reset: bool) {
    if e.state != STATE_ESTABLISHED {
        return;
    }
    if let Some(s) = backend(e.backend_id) {
        if reset {
            s.resets += 1;
        }
        if e.flags & FLAG_UNMEASURED == 0 {
            // Ticks are 2^TICK_SHIFT ns; the histogram counts 2^DURATION_UNIT_SHIFT ns.
            let ticks = u64::from(ticks_since(now, e.created));
            s.histograms
                .duration
                .record(ticks << (TICK_SHIFT - DURATION_UNIT_SHIFT));
        }
    }
}

/// Whether a backend segment with `flags` ends flow `e`, which a paced drain marked: the first
/// one that is neither SYN, FIN nor RST (the answer to the daemon's probe) becomes the client's
/// RST (`end_with_rst`). The flow closes and is counted as ended.
#[inline(always)]
pub(crate) fn ends(e: &mut FlowEntry, flags: u8, now: u32) -> bool {
    if e.flags & FLAG_ENDING == 0
        || e.state == STATE_CLOSING
        || flags & (tcp_flags::SYN | tcp_flags::FIN | tcp_flags::RST) != 0
    {
        return false;
    }
    closing(e, now, false);
    e.state = STATE_CLOSING;
    e.last_seen = now;
    if let Some(s) = backend(e.backend_id) {
        s.ended += 1;
    }
    true
}

/// Turns a backend segment into an RST+ACK (its sequence number, the backend's next, is the one
/// the client expects: RFC 9293 section 3.10.7.4 and RFC 5961 section 3 make it the only one a
/// client accepts), through the kernel's checksum helper.
///
/// Returns: `RewriteFailed` if a helper fails.
#[inline(always)]
pub(crate) fn end_with_rst(ctx: &TcContext, h: &Headers) -> Result<(), Reason> {
    let fail = |_| Reason::RewriteFailed;
    // Data offset and flags share one 16-bit word: the checksum is updated over that word.
    let off = h.l4_off + 12;
    let old: u16 = ctx.load(off).map_err(fail)?;
    let mut bytes = old.to_ne_bytes();
    bytes[1] = tcp_flags::RST | tcp_flags::ACK;
    let new = u16::from_ne_bytes(bytes);
    ctx.l4_csum_replace(h.l4_csum_off(), u64::from(old), u64::from(new), 2)
        .map_err(fail)?;
    ctx.store(off, &new, 0).map_err(fail)?;
    Ok(())
}
