//! Per-CPU counters. The only writer of the stats maps.

use veer_common::counters::{BackendCounters, Reason, ServiceCounters};

use crate::maps::{VEER_BE_STATS, VEER_REASONS, VEER_SVC_STATS};

/// Counts one packet leaving with `reason`.
#[inline(always)]
pub(crate) fn reason(reason: Reason) {
    if let Some(n) = VEER_REASONS.get_ptr_mut(reason as u32) {
        // SAFETY: per-CPU array slot, only this CPU writes it while the program runs.
        unsafe { *n += 1 };
    }
}

/// Counts a steered packet for its backend. `new_flow` when it created the flow, `refused` when
/// it is the backend's RST answering the flow's SYN.
#[inline(always)]
pub(crate) fn backend(id: u32, bytes: u64, new_flow: bool, refused: bool) {
    if let Some(c) = VEER_BE_STATS.get_ptr_mut(id) {
        // SAFETY: per-CPU array slot, only this CPU writes it while the program runs.
        let c: &mut BackendCounters = unsafe { &mut *c };
        c.packets += 1;
        c.bytes += bytes;
        c.new_flows += u64::from(new_flow);
        c.failed_flows += u64::from(refused);
    }
}

/// Counts a packet to a service. `new_flow` when it created a flow, `midflow` when that flow was
/// a TCP non-SYN with no conntrack entry.
#[inline(always)]
pub(crate) fn service(id: u32, bytes: u64, new_flow: bool, midflow: bool) {
    if let Some(c) = VEER_SVC_STATS.get_ptr_mut(id) {
        // SAFETY: per-CPU array slot, only this CPU writes it while the program runs.
        let c: &mut ServiceCounters = unsafe { &mut *c };
        c.packets += 1;
        c.bytes += bytes;
        c.new_flows += u64::from(new_flow);
        c.midflow_misses += u64::from(midflow);
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
