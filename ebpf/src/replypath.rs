//! The reverse-path check of backend replies: a segment with a backend's address changes its
//! flow or counts in a signal only when it came from the backend's side: in on the interface the
//! node's route to the backend leaves through, or sent by the node itself (a local backend's
//! reply, on egress), or in on an interface that is not the one the node reaches the flow's
//! client through (a return path of its own), never in from the clients' side
//! (`from_backend_side`). `veer_tc_reply` runs on every interface
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
//! - Replies on a return path of their own (asymmetric routing, a route to the backend moved to
//!   another link while the backend still answers over the first) stay replies: only the
//!   interface the client is reached through is refused, and that second lookup is made only
//!   when the first did not match (forgeries and asymmetric paths).
//!
//! Limits: a sender behind the interface the backend is reached through is indistinguishable
//! from the backend at this layer, and so is one behind a third interface, neither the backend's
//! nor the flow's client's (another client segment forging for this client's flows).

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

/// Whether the reply `h` (from backend `backend_id`, at tick `now`) came from the backend's side.
/// The interface it arrived on (`skb_iif`) decides:
///
/// - none: the node sent it itself (a local backend's reply, on egress). That is the node's own:
///   sending with another host's address takes a raw socket or `IP_TRANSPARENT` (`CAP_NET_RAW`
///   or `CAP_NET_ADMIN`), and `IP_FREEBIND` binds to such an address but cannot send from it.
/// - the one the node's route to the backend leaves through: the backend's side.
/// - another one, for a backend that is an address of the node: never (the kernel itself drops
///   a packet from outside with a local source).
/// - another one, which the node's route to the flow's client does not leave through either: the
///   backend's replies on a return path of their own (asymmetric routing, a route moved to
///   another link while the backend still answers over the first).
/// - the one the node reaches the client through (and not the backend): the clients' side, so a
///   forgery. Also when that route cannot be found (forwarding off there, no route): nothing
///   there proves the backend's side.
#[inline(always)]
pub(crate) fn from_backend_side(ctx: &TcContext, h: &Headers, backend_id: u32, now: u32) -> bool {
    // SAFETY: the context's skb pointer is valid for the program run.
    let arrived = unsafe { (*ctx.skb.skb).ingress_ifindex };
    if arrived == ARRIVAL_LOCAL {
        return true;
    }
    match arrival(ctx, h, backend_id, arrived, now) {
        a if a == arrived => true,
        ARRIVAL_LOCAL => false,
        _ => {
            let to_client = route_oif(
                ctx,
                h,
                Direction {
                    src: &h.key.src_addr,
                    dst: &h.key.dst_addr,
                    sport: h.key.src_port,
                    dport: h.key.dst_port,
                },
                arrived,
            );
            to_client != ARRIVAL_NONE && to_client != ARRIVAL_LOCAL && to_client != arrived
        }
    }
}

/// Where the replies of the backend at `h`'s source come in: from this CPU's cache when it holds
/// the backend under the clock's generation, else from a route lookup (which fills it when it
/// found a route).
#[inline(always)]
fn arrival(ctx: &TcContext, h: &Headers, backend_id: u32, arrived: u32, now: u32) -> u32 {
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
    let arrival = route_oif(
        ctx,
        h,
        Direction {
            src: &h.key.dst_addr,
            dst: &h.key.src_addr,
            sport: h.key.dst_port,
            dport: h.key.src_port,
        },
        arrived,
    );
    // Only a route is cached: "no usable route" may come from the input interface (forwarding
    // off there), so a forged segment on such an interface must not make the backend's real
    // replies miss until the next generation.
    if let (Some(g), Some(slot), true) = (generation, slot, arrival != ARRIVAL_NONE) {
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

/// A direction to look a route up for: addresses and ports (network byte order).
#[derive(Clone, Copy)]
struct Direction<'a> {
    src: &'a [u32; 4],
    dst: &'a [u32; 4],
    sport: u16,
    dport: u16,
}

/// Looks up the node's route for a packet of `h`'s protocol going `dir`, as received on
/// `arrived` (the reply's own input interface: the kernel forwards the reply from there only
/// where forwarding is on, so a real reply never meets "forwarding disabled" here). Toward the
/// backend: from the client, the way the client's packets are routed there.
///
/// Returns: the route's output interface; `ARRIVAL_LOCAL` when the destination is an address of
/// the node; `ARRIVAL_NONE` when there is no usable route (unreachable, blackhole, prohibit,
/// forwarding off on `arrived`).
#[inline(always)]
fn route_oif(ctx: &TcContext, h: &Headers, dir: Direction<'_>, arrived: u32) -> u32 {
    // SAFETY: `bpf_fib_lookup` is a plain C struct for which all-zero is valid.
    let mut p: FibParams = unsafe { zeroed() };
    p.family = h.key.family;
    p.l4_protocol = h.key.proto;
    p.sport = dir.sport;
    p.dport = dir.dport;
    p.ifindex = arrived;
    if h.key.family == FAMILY_V4 {
        p.__bindgen_anon_3.ipv4_src = dir.src[0];
        p.__bindgen_anon_4.ipv4_dst = dir.dst[0];
    } else {
        p.__bindgen_anon_3.ipv6_src = *dir.src;
        p.__bindgen_anon_4.ipv6_dst = *dir.dst;
    }
    // SAFETY: `p` is a valid, writable `bpf_fib_lookup` of the size passed.
    let rc = unsafe { bpf_fib_lookup(ctx.as_ptr(), &raw mut p, size_of::<FibParams>() as i32, 0) };
    match rc as u32 {
        BPF_FIB_LKUP_RET_SUCCESS | BPF_FIB_LKUP_RET_NO_NEIGH => p.ifindex,
        BPF_FIB_LKUP_RET_NOT_FWDED => ARRIVAL_LOCAL,
        _ => ARRIVAL_NONE,
    }
}
