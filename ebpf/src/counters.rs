//! Per-CPU counters, and the flow events they count (`event`, set by `conntrack`). The only
//! writer of the stats maps.

use veer_common::counters::{BackendCounters, Reason, ServiceCounters};

use crate::maps::{VEER_BE_STATS, VEER_REASONS, VEER_SVC_STATS};

/// What happened to a flow on one packet (set by `conntrack`), for `request` and `reply`.
pub(crate) mod event {
    /// An entry was created.
    pub(crate) const NEW_FLOW: u8 = 1 << 0;
    /// A TCP segment with ACK met no entry.
    pub(crate) const MIDFLOW_MISS: u8 = 1 << 1;
    /// The flow moved into `VEER_FLOWS`.
    pub(crate) const PROMOTED: u8 = 1 << 2;
    /// The flow was confirmed but `VEER_FLOWS` had no room.
    pub(crate) const PROMOTION_REFUSED: u8 = 1 << 3;
    /// An invalid TCP segment on a flow (forwarded unchanged).
    pub(crate) const INVALID: u8 = 1 << 4;
    /// The backend answered the flow's SYN with a SYN-ACK.
    pub(crate) const ANSWERED: u8 = 1 << 5;
    /// The backend answered the flow's SYN with an RST.
    pub(crate) const REFUSED: u8 = 1 << 6;
    /// A paced drain ended the flow: this backend segment becomes the client's RST.
    pub(crate) const ENDED: u8 = 1 << 7;
}

/// Counts one packet leaving with `reason`.
#[inline(always)]
pub(crate) fn reason(reason: Reason) {
    if let Some(n) = VEER_REASONS.get_ptr_mut(reason as u32) {
        // SAFETY: per-CPU array slot, only this CPU writes it while the program runs.
        unsafe { *n += 1 };
    }
}

/// Counts a steered client packet for its service and backend, with what happened to its flow
/// (`event` bits).
#[inline(always)]
pub(crate) fn request(service_id: u32, backend_id: u32, bytes: u64, events: u8) {
    service(service_id, 1, bytes, events);
    backend(backend_id, bytes, events);
}

/// Counts a reverse-NATed reply for its backend, and what happened to its flow for its service.
#[inline(always)]
pub(crate) fn reply(service_id: u32, backend_id: u32, bytes: u64, events: u8) {
    if events & (event::PROMOTED | event::PROMOTION_REFUSED) != 0 {
        service(service_id, 0, 0, events);
    }
    backend(backend_id, bytes, events);
}

/// Counts flow events of a packet that was not steered (an invalid segment dropped).
#[inline(always)]
pub(crate) fn service_events(service_id: u32, events: u8) {
    service(service_id, 0, 0, events);
}

#[inline(always)]
fn backend(id: u32, bytes: u64, events: u8) {
    if let Some(c) = VEER_BE_STATS.get_ptr_mut(id) {
        // SAFETY: per-CPU array slot, only this CPU writes it while the program runs.
        let c: &mut BackendCounters = unsafe { &mut *c };
        c.packets += 1;
        c.bytes += bytes;
        c.new_flows += u64::from(events & event::NEW_FLOW != 0);
        c.answered_flows += u64::from(events & event::ANSWERED != 0);
        c.refused_flows += u64::from(events & event::REFUSED != 0);
    }
}

#[inline(always)]
fn service(id: u32, packets: u64, bytes: u64, events: u8) {
    if let Some(c) = VEER_SVC_STATS.get_ptr_mut(id) {
        // SAFETY: per-CPU array slot, only this CPU writes it while the program runs.
        let c: &mut ServiceCounters = unsafe { &mut *c };
        c.packets += packets;
        c.bytes += bytes;
        c.new_flows += u64::from(events & event::NEW_FLOW != 0);
        c.midflow_misses += u64::from(events & event::MIDFLOW_MISS != 0);
        c.promotions += u64::from(events & event::PROMOTED != 0);
        c.promotions_refused += u64::from(events & event::PROMOTION_REFUSED != 0);
        c.invalid_tcp += u64::from(events & event::INVALID != 0);
    }
}

/// Counts a flow a socket hook gave a backend (a client on the node): a new flow of the service
/// and of the backend, without packets or bytes (they do not pass the packet programs).
#[inline(always)]
pub(crate) fn new_socket_flow(service_id: u32, backend_id: u32) {
    if let Some(c) = VEER_SVC_STATS.get_ptr_mut(service_id) {
        // SAFETY: per-CPU array slot, only this CPU writes it while the program runs.
        unsafe { (*c).new_flows += 1 };
    }
    if let Some(c) = VEER_BE_STATS.get_ptr_mut(backend_id) {
        // SAFETY: as above.
        unsafe { (*c).new_flows += 1 };
    }
}
