//! Conntrack: which backend a flow was given, the flow's state, and the TCP validation that
//! keeps forged segments from changing either. No selection logic here.
//!
//! # Tables
//!
//! One element per flow, keyed by the client-side tuple, in one of two tables: `VEER_FLOWS` (a
//! plain hash: confirmed TCP flows, never evicted) or `VEER_NEWFLOWS` (LRU: handshakes, mid-flow
//! misses, UDP, and confirmed flows `VEER_FLOWS` had no room for). A flood can only fill and
//! evict `VEER_NEWFLOWS`. Lookups try `VEER_FLOWS` first. Replies find their flow from their own
//! tuple through `VEER_BE_VIPS`, so there is no second element to lose.
//!
//! # TCP states (client segment / backend segment)
//!
//! - no entry: SYN creates `SYN`; a segment with ACK (and no FIN) creates `MIDFLOW`, steered by
//!   the flow hash; RST or FIN+ACK is steered by the flow hash and creates nothing; an invalid
//!   flag combination is dropped (`InvalidTcp`).
//! - `SYN`: client SYN is a retransmit (same backend). Backend SYN-ACK -> `SYN_ACKED` (its ISN
//!   recorded, counted answered); backend RST -> `CLOSING` (counted refused).
//! - `SYN_ACKED`: client ACK acknowledging the backend's ISN + 1 promotes the flow to
//!   `ESTABLISHED` in `VEER_FLOWS` (a blind sender never saw the ISN, so it cannot promote).
//! - `MIDFLOW`: the backend's answer other than RST promotes it; RST or FIN -> `CLOSING`;
//!   SYN-ACK -> `SYN_ACKED`.
//! - `ESTABLISHED`: a client SYN is forwarded to the same backend, nothing changes (the backend
//!   answers it with a challenge ACK, RFC 5961 section 4); a client RST ends the flow only if
//!   its sequence number is the last acknowledgment number the backend sent (what the backend
//!   itself accepts, RFC 5961 section 3), any other RST changes nothing, not even last-seen; a
//!   client FIN ends nothing by itself. The backend's FIN or RST -> `CLOSING`.
//! - `CLOSING`: a client SYN is a new connection on a reused tuple: the entry is replaced and
//!   the backend selected afresh.
//! - An invalid flag combination on a tuple with a flow is forwarded unchanged to the flow's
//!   backend (which discards it) and changes nothing.
//!
//! # Replies from the backend's side only
//!
//! A backend segment that would change its flow or a signal (`changes`) must pass the
//! reverse-path check the reply program gives `reply` (`replypath`): it came in where the
//! backend's replies come in. One that fails it is no reply (`NoReplyFlow`, passed untouched)
//! and changes nothing, so a host next to the clients cannot forge the backend's side (its RST,
//! FIN, SYN-ACK, acknowledgment numbers or first payload) of a live flow.
//!
//! # Races
//!
//! Entries are written from several CPUs without locks: two packets of one flow on two CPUs may
//! both store `last_seen` or a state. Both stores carry values that are correct for that moment,
//! so whichever lands last is fine (same reasoning as cilium's `__ct_update_timeout`). A
//! promotion inserts into `VEER_FLOWS` before it deletes from `VEER_NEWFLOWS`, and a segment that
//! misses both re-checks `VEER_FLOWS` before it creates a mid-flow entry, so a flow being
//! promoted on another CPU is never taken for a new one.

use aya_ebpf::{bindings::BPF_NOEXIST, helpers::bpf_ktime_get_coarse_ns};
use veer_common::{
    PROTO_TCP,
    counters::Reason,
    flow::{
        BackendKey, FLAG_ENDING, FLAG_RESPONSE_SEEN, FLAG_UNMEASURED, FlowEntry, FlowKey,
        MAX_VIPS_PER_BACKEND, RevNatValue, STATE_CLOSING, STATE_ESTABLISHED, STATE_MIDFLOW,
        STATE_SYN, STATE_SYN_ACKED, STATE_UDP, tick, ticks_since,
    },
};

use crate::{
    counters::{self, event},
    maps::{VEER_BE_VIPS, VEER_FLOWS, VEER_NEWFLOWS},
    parse::{Headers, tcp_flags},
    signals,
};

/// `last_seen` is refreshed at most this often (ticks, about a second), to keep entries' cache
/// lines from bouncing between CPUs on every packet. Idle timeouts are seconds, so this costs no
/// precision.
const REFRESH_TICKS: u32 = 1 << 10;

/// `-EEXIST`: the element is already there.
const EEXIST: i32 = -17;

/// `FlowEntry::flags` bit: `backend_ack` holds an acknowledgment number the backend sent.
pub(crate) const FLAG_BACKEND_ACK: u8 = 0x01;

/// The table an entry was found in.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Table {
    Flows,
    New,
}

/// An entry found in one of the tables, valid for this program run (hash elements are
/// preallocated and reused, never freed, while a program runs).
#[derive(Clone, Copy)]
pub(crate) struct Found {
    entry: *mut FlowEntry,
    table: Table,
}

/// A client segment as TCP validation sees it.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Segment {
    /// SYN without ACK, FIN or RST: a connection attempt.
    Syn,
    /// ACK without SYN, FIN or RST (with or without data).
    Ack,
    /// FIN+ACK.
    AckFin,
    /// RST (with or without ACK), without SYN or FIN.
    Rst,
    /// Any other combination (SYN+FIN, SYN+RST, SYN+ACK from a client, FIN or data without
    /// ACK, no flags, all flags ...): no TCP accepts it.
    Invalid,
    /// Not TCP.
    Udp,
}

/// Classifies a client segment by its flags (PSH, URG, ECE and CWR do not matter).
#[inline(always)]
fn classify(h: &Headers) -> Segment {
    if h.key.proto != PROTO_TCP {
        return Segment::Udp;
    }
    let f = h.tcp_flags & (tcp_flags::FIN | tcp_flags::SYN | tcp_flags::RST | tcp_flags::ACK);
    if f == tcp_flags::SYN {
        Segment::Syn
    } else if f == tcp_flags::ACK {
        Segment::Ack
    } else if f == tcp_flags::ACK | tcp_flags::FIN {
        Segment::AckFin
    } else if f == tcp_flags::RST || f == tcp_flags::RST | tcp_flags::ACK {
        Segment::Rst
    } else {
        Segment::Invalid
    }
}

/// The current tick of the coarse monotonic clock (`TICK_SHIFT`).
#[inline(always)]
pub(crate) fn now() -> u32 {
    // SAFETY: plain helper call with no arguments.
    tick(unsafe { bpf_ktime_get_coarse_ns() })
}

/// Returns the entry of a flow (client-side key), `VEER_FLOWS` first.
#[inline(always)]
fn lookup(key: &FlowKey) -> Option<Found> {
    if let Some(entry) = VEER_FLOWS.get_ptr_mut(key) {
        return Some(Found {
            entry,
            table: Table::Flows,
        });
    }
    VEER_NEWFLOWS.get_ptr_mut(key).map(|entry| Found {
        entry,
        table: Table::New,
    })
}

/// What the client path does with a packet.
pub(crate) enum Request {
    /// The flow's entry names the backend (a copy of it) and what happened.
    Known(FlowEntry, u8),
    /// No entry applies: select a backend, then `create`.
    Select(Create),
}

/// What `create` records for a packet that had no entry.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Create {
    /// A SYN: a `SYN` entry.
    Syn,
    /// A TCP segment with ACK: a `MIDFLOW` entry, confirmed by the backend's answer.
    Midflow,
    /// UDP: a `UDP` entry.
    Udp,
    /// RST or FIN+ACK of no known flow: steered by the flow hash, no entry.
    Nothing,
}

/// Looks up and updates the flow of a client packet to service `service_id`.
///
/// Returns: the flow's backend, or that a backend must be selected (and what to create); or
/// `InvalidTcp` for an invalid segment of no flow (counted for the service).
#[inline(always)]
pub(crate) fn request(h: &Headers, service_id: u32, now: u32) -> Result<Request, Reason> {
    let seg = classify(h);
    let Some(found) = lookup(&h.key) else {
        return match seg {
            Segment::Invalid => {
                counters::service_events(service_id, event::INVALID);
                Err(Reason::InvalidTcp)
            }
            Segment::Syn => Ok(Request::Select(Create::Syn)),
            Segment::Udp => Ok(Request::Select(Create::Udp)),
            Segment::AckFin | Segment::Rst => Ok(Request::Select(Create::Nothing)),
            Segment::Ack => match VEER_FLOWS.get_ptr_mut(h.key) {
                // Promoted on another CPU between the two lookups.
                Some(entry) => Ok(on_request(
                    Found {
                        entry,
                        table: Table::Flows,
                    },
                    &h.key,
                    seg,
                    h,
                    now,
                )),
                None => Ok(Request::Select(Create::Midflow)),
            },
        };
    };
    Ok(on_request(found, &h.key, seg, h, now))
}

/// Updates a found flow for a client segment.
#[inline(always)]
fn on_request(found: Found, key: &FlowKey, seg: Segment, h: &Headers, now: u32) -> Request {
    // SAFETY: `found.entry` came from a lookup in this program run (see `Found`). Racing
    // writers are benign (module doc).
    let e = unsafe { &mut *found.entry };
    let mut events = 0;
    match seg {
        Segment::Invalid => events |= event::INVALID,
        Segment::Syn => match e.state {
            STATE_CLOSING => {
                // A new connection on a reused tuple: it gets a backend of its own.
                if found.table == Table::Flows {
                    // Missing already (expired meanwhile) is fine.
                    let _ = VEER_FLOWS.remove(key);
                }
                return Request::Select(Create::Syn);
            }
            // A retransmit: same backend.
            STATE_SYN | STATE_SYN_ACKED => events |= touch(found, key, e, now),
            // Established (or a mid-flow flow the backend may hold): the backend answers with a
            // challenge ACK; nothing changes here.
            _ => {}
        },
        Segment::Rst => {
            if e.state != STATE_CLOSING
                && e.flags & FLAG_BACKEND_ACK != 0
                && h.tcp_seq == e.backend_ack
            {
                signals::closing(e, now, false);
                e.state = STATE_CLOSING;
                e.last_seen = now;
            }
            // Any other RST is the backend's to discard: no state, no refresh.
        }
        Segment::Ack | Segment::AckFin => {
            // Before a promotion copies the entry into VEER_FLOWS: a request riding on the
            // handshake's last ACK marks the copy that lives on.
            signals::client_segment(h, key, e);
            if e.state == STATE_SYN_ACKED && h.tcp_ack == e.backend_isn.wrapping_add(1) {
                events |= promote(key, e, found.table, now);
            } else {
                events |= touch(found, key, e, now);
            }
        }
        Segment::Udp => events |= touch(found, key, e, now),
    }
    Request::Known(*e, events)
}

/// Refreshes `last_seen` when due; a confirmed flow left in `VEER_NEWFLOWS` by a full
/// `VEER_FLOWS` tries its promotion again then. Returns events.
#[inline(always)]
fn touch(found: Found, key: &FlowKey, e: &mut FlowEntry, now: u32) -> u8 {
    if ticks_since(now, e.last_seen) < REFRESH_TICKS {
        return 0;
    }
    e.last_seen = now;
    if found.table == Table::New && e.state == STATE_ESTABLISHED {
        promote(key, e, found.table, now)
    } else {
        0
    }
}

/// Marks a flow confirmed and moves it into `VEER_FLOWS`: insert (`BPF_NOEXIST`), then delete
/// from `VEER_NEWFLOWS`. A full `VEER_FLOWS` leaves it where it is, established (it keeps
/// working and tries again on a later refresh). Returns events.
#[inline(always)]
fn promote(key: &FlowKey, e: &mut FlowEntry, table: Table, now: u32) -> u8 {
    e.state = STATE_ESTABLISHED;
    e.last_seen = now;
    if table == Table::Flows {
        return 0;
    }
    match VEER_FLOWS.insert(key, *e, u64::from(BPF_NOEXIST)) {
        Ok(()) => {
            // Already gone (evicted) is fine: the flow lives in VEER_FLOWS now.
            let _ = VEER_NEWFLOWS.remove(key);
            event::PROMOTED
        }
        Err(EEXIST) => {
            // Another CPU promoted it first.
            let _ = VEER_NEWFLOWS.remove(key);
            0
        }
        Err(_) => event::PROMOTION_REFUSED,
    }
}

/// Records a new flow for a packet that had no entry. A failed insert is counted
/// (`ConntrackFull`) but does not stop the packet: the flow hash picks the same backend for the
/// next packet while weights are unchanged.
///
/// Returns: the entry (its backend) and events.
#[inline(always)]
pub(crate) fn create(
    h: &Headers,
    create: Create,
    mut entry: FlowEntry,
    now: u32,
) -> (FlowEntry, u8) {
    let state = match create {
        Create::Syn => STATE_SYN,
        Create::Midflow => STATE_MIDFLOW,
        Create::Udp => STATE_UDP,
        Create::Nothing => return (entry, event::MIDFLOW_MISS),
    };
    entry.state = state;
    entry.last_seen = now;
    entry.created = now;
    if create == Create::Midflow {
        // Its start was not seen: no timing of it means anything.
        entry.flags |= FLAG_UNMEASURED;
    }
    if VEER_NEWFLOWS.insert(h.key, entry, 0).is_err() {
        counters::reason(Reason::ConntrackFull);
    } else if create == Create::Syn {
        signals::syn_forwarded(&h.key);
    }
    let midflow = if create == Create::Midflow {
        event::MIDFLOW_MISS
    } else {
        0
    };
    (entry, event::NEW_FLOW | midflow)
}

/// What a reply of a steered flow gets: the VIP to restore, and who to count it for.
pub(crate) struct Reply {
    /// VIP and port the reply's source becomes.
    pub(crate) vip: RevNatValue,
    /// Service id (per-service counters; 0 for a removed service).
    pub(crate) service_id: u32,
    /// The flow's backend id.
    pub(crate) backend_id: u32,
    /// What happened to the flow (`event` bits).
    pub(crate) events: u8,
}

/// Whether `entry` is a flow to the backend a reply comes from.
#[inline(always)]
fn is_from_backend(entry: *mut FlowEntry, h: &Headers) -> bool {
    // SAFETY: `entry` came from a lookup in this program run (see `Found`); read only.
    let e = unsafe { &*entry };
    e.backend_port == h.key.src_port && e.backend_addr == h.key.src_addr
}

/// Finds the flow a reply belongs to and updates it: for each VIP its backend serves, the
/// client-side key is built and looked up (`VEER_FLOWS`, then `VEER_NEWFLOWS`); the entry whose
/// backend is the reply's source is the one. A segment that would change the flow or a signal
/// must first pass `from_backend_side` (given the flow's backend id): the reverse-path check
/// (`replypath`), asked only then, so the segments that change nothing pay nothing for it.
///
/// Returns: the VIP to restore and what to count, or `NoReplyFlow` (not a reply of a steered
/// flow, or a segment claiming to be one that failed the reverse-path check: passed untouched).
#[inline(always)]
pub(crate) fn reply(
    h: &Headers,
    now: u32,
    from_backend_side: impl FnOnce(u32) -> bool,
) -> Result<Reply, Reason> {
    // SAFETY: `BPF_F_NO_PREALLOC` map: an update swaps the element under RCU, so the reference
    // stays valid (and whole) for this program run.
    let vips =
        unsafe { VEER_BE_VIPS.get(BackendKey::of_reply(&h.key)) }.ok_or(Reason::NoReplyFlow)?;
    let mut found: Option<Found> = None;
    let mut vip = RevNatValue::default();
    let mut service_id = 0;
    // Constant indices only (the loop unrolls): the verifier rejects a map-value index it
    // cannot bound.
    let mut i = 0;
    while i < MAX_VIPS_PER_BACKEND {
        if found.is_none() && (i as u32) < vips.count {
            let key = FlowKey::client_of_reply(&h.key, &vips.vips[i]);
            found = match VEER_FLOWS.get_ptr_mut(key) {
                Some(entry) if is_from_backend(entry, h) => Some(Found {
                    entry,
                    table: Table::Flows,
                }),
                _ => match VEER_NEWFLOWS.get_ptr_mut(key) {
                    Some(entry) if is_from_backend(entry, h) => Some(Found {
                        entry,
                        table: Table::New,
                    }),
                    _ => None,
                },
            };
            if found.is_some() {
                vip = vips.vips[i];
                service_id = vips.service_ids[i];
            }
        }
        i += 1;
    }
    let found = found.ok_or(Reason::NoReplyFlow)?;
    {
        // SAFETY: as in `on_request`; read only.
        let e = unsafe { &*found.entry };
        if changes(e, h, now) && !from_backend_side(e.backend_id) {
            return Err(Reason::NoReplyFlow);
        }
    }
    let key = FlowKey::client_of_reply(&h.key, &vip);
    let (backend_id, events) = on_reply(found, &key, h, now);
    Ok(Reply {
        vip,
        service_id,
        backend_id,
        events,
    })
}

/// Whether a segment from flow `e`'s backend would change the flow or a signal in `on_reply`:
/// a refresh due, any SYN, FIN or RST, a new acknowledgment number, a flow a drain is ending or
/// a mid-flow miss to confirm, the first payload. What is left (the established flow's segments
/// between refreshes that acknowledge nothing new) changes nothing, and goes back to the client
/// from the VIP whichever way it came: a sender who forges it could as well forge the VIP.
#[inline(always)]
fn changes(e: &FlowEntry, h: &Headers, now: u32) -> bool {
    if ticks_since(now, e.last_seen) >= REFRESH_TICKS {
        return true;
    }
    if h.key.proto != PROTO_TCP {
        return false;
    }
    let f = h.tcp_flags;
    f & (tcp_flags::SYN | tcp_flags::FIN | tcp_flags::RST) != 0
        || e.state == STATE_MIDFLOW
        || e.flags & FLAG_ENDING != 0
        || (f & tcp_flags::ACK != 0
            && (e.backend_ack != h.tcp_ack || e.flags & FLAG_BACKEND_ACK == 0))
        || (h.tcp_payload && e.flags & (FLAG_RESPONSE_SEEN | FLAG_UNMEASURED) == 0)
}

/// Updates a flow for a segment from its backend: the backend's side is authoritative.
///
/// Returns: the flow's backend id and events.
#[inline(always)]
fn on_reply(found: Found, key: &FlowKey, h: &Headers, now: u32) -> (u32, u8) {
    // SAFETY: as in `on_request`.
    let e = unsafe { &mut *found.entry };
    let backend_id = e.backend_id;
    if h.key.proto != PROTO_TCP {
        return (backend_id, touch(found, key, e, now));
    }
    let f = h.tcp_flags;
    if signals::ends(e, f, now) {
        // A paced drain's probe answered: this segment becomes the client's RST.
        return (backend_id, event::ENDED);
    }
    // The last acknowledgment number the backend sent, stored only when it changes (what a
    // client RST must match).
    if f & tcp_flags::ACK != 0 && (e.backend_ack != h.tcp_ack || e.flags & FLAG_BACKEND_ACK == 0) {
        e.backend_ack = h.tcp_ack;
        e.flags |= FLAG_BACKEND_ACK;
    }
    let mut events = 0;
    if f & tcp_flags::RST != 0 {
        if e.state == STATE_SYN {
            events |= event::REFUSED;
        }
        if e.state != STATE_CLOSING {
            signals::closing(e, now, true);
            e.state = STATE_CLOSING;
        }
    } else if f & tcp_flags::FIN != 0 {
        signals::backend_segment(h, key, e);
        if e.state != STATE_CLOSING {
            signals::closing(e, now, false);
            e.state = STATE_CLOSING;
        }
    } else if f & (tcp_flags::SYN | tcp_flags::ACK) == tcp_flags::SYN | tcp_flags::ACK {
        if e.state == STATE_SYN {
            events |= event::ANSWERED;
            signals::syn_answered(key, backend_id);
        }
        if matches!(e.state, STATE_SYN | STATE_SYN_ACKED | STATE_MIDFLOW) {
            e.state = STATE_SYN_ACKED;
            e.backend_isn = h.tcp_seq;
        }
    } else if e.state == STATE_MIDFLOW {
        // The backend answers a mid-flow segment as a live connection: confirmed.
        return (backend_id, events | promote(key, e, found.table, now));
    } else {
        signals::backend_segment(h, key, e);
    }
    (backend_id, events | touch(found, key, e, now))
}
