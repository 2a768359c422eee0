//! The reverse-path check of backend replies: a segment with a backend's address changes its
//! flow or counts in a signal only when it came in where the backend's replies come in, the
//! interface the node's route to the backend leaves through (or, for a backend that is an
//! address of the node, no interface: the node sent it). `veer_tc_reply` runs on every interface
//! veer hooks, client-facing ones included, so without this a host next to the clients could
//! forge the backend's side of a live flow (its RST, FIN, SYN-ACK, acknowledgment numbers,
//! first payload) and end flows, promote them, or feed the canary judge resets and refusals.
//!
//! The route is `bpf_fib_lookup`'s answer for the backend, cached per CPU and backend in
//! `VEER_REPLY_PATH` under the next-hop clock (`veer_common::nexthop`): any route, link,
//! address, neighbour or rule event makes the cache miss, and it is off while policy-routing
//! rules could make the route depend on more than the backend's address. `conntrack` asks only
//! for the segments that would change something, so the steady reply path of an established
//! flow never pays for it.
//!
//! Why the route, and not something else:
//! - Per-interface roles ("client-facing", "backend-facing") set by the daemon cannot be right in
//!   general: a backend and its clients may sit behind one interface or bridge, a local backend's
//!   replies come in on no interface at all, and a role would be user tuning or a guess. The
//!   route is what the kernel itself uses to reach the backend, and it follows every change.
//! - An output interface recorded in the flow entry would need a layout change (the entry's 40
//!   bytes are full) and would go stale when a route changes, refusing a live flow's replies; the
//!   clock makes the cache forget on any change instead.
//! - A segment that fails the check is passed, not dropped: it is not a reply of a steered flow,
//!   and not-for-us traffic passes untouched (veer is not a firewall; the kernel's own reverse-path
//!   filter and nftables see it as any other packet).
//!
//! Limits: a sender behind the interface the backend is reached through is indistinguishable
//! from the backend at this layer; replies that come back through another interface than the
//! route toward their backend (asymmetric routing, ECMP over several interfaces) fail the check.

use core::mem::{size_of, zeroed};

use aya_ebpf::{
    EbpfContext as _,
    bindings::{
        BPF_FIB_LKUP_RET_NO_NEIGH, BPF_FIB_LKUP_RET_NOT_FWDED, BPF_FIB_LKUP_RET_SUCCESS,
        bpf_fib_lookup as FibParams,
    },
    helpers::bpf_fib_lookup,
    programs::TcContext,
};
use veer_common::{
    FAMILY_V4,
    nexthop::{ARRIVAL_LOCAL, ARRIVAL_NONE, ReplyPath, generation_at},
};

use crate::{
    maps::{VEER_NH_CLOCK, VEER_REPLY_PATH},
    parse::Headers,
};

/// Whether the reply `h` (from backend `backend_id`, at tick `now`) came in where that backend's
/// replies come in: the interface it arrived on (`skb_iif`: 0 for a packet the node sent, on
/// egress) is the one the node's route to the backend leaves through, or 0 for a backend that is
/// an address of the node.
#[inline(always)]
pub(crate) fn from_backend_side(ctx: &TcContext, h: &Headers, backend_id: u32, now: u32) -> bool {
    // SAFETY: the context's skb pointer is valid for the program run.
    let arrived = unsafe { (*ctx.skb.skb).ingress_ifindex };
    arrival(ctx, h, backend_id, now) == arrived
}

/// Where the replies of the backend at `h`'s source come in: from this CPU's cache when it holds
/// the backend under the clock's generation, else from a route lookup (which fills it).
#[inline(always)]
fn arrival(ctx: &TcContext, h: &Headers, backend_id: u32, now: u32) -> u32 {
    let generation = VEER_NH_CLOCK.get(0).and_then(|c| generation_at(*c, now));
    let slot = match generation {
        Some(_) => VEER_REPLY_PATH.get_ptr_mut(backend_id),
        None => None,
    };
    if let (Some(g), Some(slot)) = (generation, slot) {
        // SAFETY: per-CPU array slot from a lookup in this program run; only this CPU writes it.
        let e = unsafe { &*slot };
        if e.generation == g && e.addr == h.key.src_addr {
            return e.arrival;
        }
    }
    let arrival = route_to_backend(ctx, h);
    if let (Some(g), Some(slot)) = (generation, slot) {
        // SAFETY: as above.
        unsafe {
            *slot = ReplyPath {
                generation: g,
                arrival,
                addr: h.key.src_addr,
            };
        }
    }
    arrival
}

/// Looks up the node's route toward the backend at `h`'s source, as a packet of the flow from
/// the client (`h`'s destination) would take it.
///
/// Returns: the route's output interface; `ARRIVAL_LOCAL` when the backend is an address of the
/// node; `ARRIVAL_NONE` when there is no usable route (unreachable, blackhole, prohibit,
/// forwarding off): then nothing is the backend's reply.
#[inline(always)]
fn route_to_backend(ctx: &TcContext, h: &Headers) -> u32 {
    // SAFETY: `bpf_fib_lookup` is a plain C struct for which all-zero is valid.
    let mut p: FibParams = unsafe { zeroed() };
    p.family = h.key.family;
    p.l4_protocol = h.key.proto;
    p.sport = h.key.dst_port;
    p.dport = h.key.src_port;
    // SAFETY: the context's skb pointer is valid for the program run.
    p.ifindex = unsafe { (*ctx.skb.skb).ifindex };
    if h.key.family == FAMILY_V4 {
        p.__bindgen_anon_3.ipv4_src = h.key.dst_addr[0];
        p.__bindgen_anon_4.ipv4_dst = h.key.src_addr[0];
    } else {
        p.__bindgen_anon_3.ipv6_src = h.key.dst_addr;
        p.__bindgen_anon_4.ipv6_dst = h.key.src_addr;
    }
    // SAFETY: `p` is a valid, writable `bpf_fib_lookup` of the size passed.
    let rc = unsafe { bpf_fib_lookup(ctx.as_ptr(), &raw mut p, size_of::<FibParams>() as i32, 0) };
    match rc as u32 {
        BPF_FIB_LKUP_RET_SUCCESS | BPF_FIB_LKUP_RET_NO_NEIGH => p.ifindex,
        BPF_FIB_LKUP_RET_NOT_FWDED => ARRIVAL_LOCAL,
        _ => ARRIVAL_NONE,
    }
}
