//! Forwarding of a `DNATed` packet: `bpf_fib_lookup` for the new destination (shared), then the
//! hook's own way out.
//!
//! - XDP: MAC rewrite and `bpf_redirect_map` into `VEER_TX_PORTS` (or `XDP_TX` out of the same
//!   interface). The packet goes to the kernel (`XDP_PASS`) when the neighbour is not resolved
//!   yet, when the route leaves through an interface that cannot take a redirected XDP frame.
//! - TC: MAC rewrite and `bpf_redirect` to the route's interface; an unresolved neighbour is
//!   resolved by the kernel through `bpf_redirect_neigh`, so the packet still leaves from here.
//!
//! Both hand the packet to the kernel when the backend is an address of the node (local
//! delivery), for VLAN-tagged frames (the kernel's VLAN devices own tag handling), when the TTL /
//! hop limit would expire, and when the route says no; each of those exits is a `Reason`
//! (`Kernel*`, `FibFailed`), so an operator sees why packets took the slow path.

use core::{
    ffi::c_void,
    mem::{size_of, zeroed},
};

use aya_ebpf::{
    EbpfContext as _,
    bindings::{
        BPF_FIB_LKUP_RET_FWD_DISABLED, BPF_FIB_LKUP_RET_NO_NEIGH, BPF_FIB_LKUP_RET_NOT_FWDED,
        BPF_FIB_LKUP_RET_SUCCESS, bpf_fib_lookup as FibParams, bpf_redir_neigh, xdp_action,
    },
    helpers::{bpf_fib_lookup, bpf_redirect, bpf_redirect_neigh},
    programs::{TcContext, XdpContext},
};
use veer_common::{
    FAMILY_V4,
    counters::{Reason, tc_action},
};

use crate::{csum, maps::VEER_TX_PORTS, parse};

/// Offset of the IP header in an untagged frame.
const UNTAGGED_L3_OFF: usize = 14;

/// What the route lookup found, besides the answer it wrote into the caller's `FibParams` (next
/// hop, output interface and MACs): kept apart so no copy of the 64-byte parameters lands on the
/// verifier's 512-byte stack.
struct Route {
    /// Whether the neighbour (MAC) of the next hop is known (`BPF_FIB_LKUP_RET_SUCCESS`), or must
    /// still be resolved (`BPF_FIB_LKUP_RET_NO_NEIGH`).
    resolved: bool,
    /// Offset of the TTL / hop-limit byte.
    ttl_off: usize,
    /// The TTL / hop limit now.
    ttl: u8,
}

/// Looks up the route of the packet whose destination is now `dst` (its headers, already
/// rewritten, lie between `start` and `end`), as received on `ifindex`. With `check_len`, the
/// lookup checks the IP length against the route's MTU (XDP: a frame is never GSO); without it,
/// the kernel checks the skb itself, GSO included (TC).
///
/// Returns: the route, or why the packet goes to the kernel instead: `KernelLocal` (the backend
/// is an address of the node), `KernelFwdDisabled`, `FibFailed` (no route, blackhole, prohibit,
/// MTU), `KernelVlan`, `KernelTtl`; `Truncated` only if a header moved, which `parse` excluded.
#[inline(always)]
fn route(
    ctx: *mut c_void,
    (start, end): (usize, usize),
    h: &parse::Headers,
    dst: &[u32; 4],
    (ifindex, check_len): (u32, bool),
    p: &mut FibParams,
) -> Result<Route, Reason> {
    p.family = h.key.family;
    p.l4_protocol = h.key.proto;
    p.sport = h.key.src_port;
    p.dport = h.key.dst_port;
    p.ifindex = ifindex;
    let ttl_off;
    if h.key.family == FAMILY_V4 {
        if check_len {
            p.__bindgen_anon_1.tot_len = u16::from_be(parse::read_raw(start, end, h.l3_off + 2)?);
        }
        p.__bindgen_anon_2.tos = parse::read_raw(start, end, h.l3_off + 1)?;
        p.__bindgen_anon_3.ipv4_src = h.key.src_addr[0];
        p.__bindgen_anon_4.ipv4_dst = dst[0];
        ttl_off = h.l3_off + 8;
    } else {
        if check_len {
            let payload_len = u16::from_be(parse::read_raw(start, end, h.l3_off + 4)?);
            p.__bindgen_anon_1.tot_len = payload_len.wrapping_add(40);
        }
        p.__bindgen_anon_3.ipv6_src = h.key.src_addr;
        p.__bindgen_anon_4.ipv6_dst = *dst;
        ttl_off = h.l3_off + 7;
    }
    // SAFETY: `p` is a valid, writable `bpf_fib_lookup` of the size passed.
    let rc = unsafe { bpf_fib_lookup(ctx, p, size_of::<FibParams>() as i32, 0) };
    let resolved = match rc as u32 {
        BPF_FIB_LKUP_RET_SUCCESS => true,
        BPF_FIB_LKUP_RET_NO_NEIGH => false,
        BPF_FIB_LKUP_RET_NOT_FWDED => return Err(Reason::KernelLocal),
        BPF_FIB_LKUP_RET_FWD_DISABLED => return Err(Reason::KernelFwdDisabled),
        _ => return Err(Reason::FibFailed),
    };
    if h.l3_off != UNTAGGED_L3_OFF {
        return Err(Reason::KernelVlan);
    }
    // Forwarding is routing: the TTL / hop limit is decremented as the kernel would, and a
    // packet that would expire here goes to the kernel so it can answer (ICMP time exceeded).
    let ttl: u8 = parse::read_raw(start, end, ttl_off)?;
    if ttl <= 1 {
        return Err(Reason::KernelTtl);
    }
    Ok(Route {
        resolved,
        ttl_off,
        ttl,
    })
}

/// Routes an XDP packet whose destination is now `dst`.
///
/// Returns: `XDP_REDIRECT` or `XDP_TX`, or why the packet goes to the kernel (see `route`, and
/// `KernelNoNeigh`, `KernelNoXdpXmit`).
#[inline(always)]
pub(crate) fn xdp(ctx: &XdpContext, h: &parse::Headers, dst: &[u32; 4]) -> Result<u32, Reason> {
    let (start, end) = (ctx.data(), ctx.data_end());
    let in_ifindex = ctx.ingress_ifindex() as u32;
    // SAFETY: `bpf_fib_lookup` is a plain C struct for which all-zero is valid.
    let mut p: FibParams = unsafe { zeroed() };
    let r = route(
        ctx.as_ptr(),
        (start, end),
        h,
        dst,
        (in_ifindex, true),
        &mut p,
    )?;
    if !r.resolved {
        return Err(Reason::KernelNoNeigh);
    }
    // Out of the ingress interface again, or into a port that can take an XDP frame (the daemon
    // keeps `VEER_TX_PORTS` to those). `bpf_redirect_map` only records the target (the frame
    // leaves after the program returns), so the rewrite below may follow it.
    let verdict = if p.ifindex == in_ifindex {
        xdp_action::XDP_TX
    } else {
        VEER_TX_PORTS
            .redirect(p.ifindex, 0)
            .map_err(|_| Reason::KernelNoXdpXmit)?
    };
    if h.key.family == FAMILY_V4 {
        // TTL shares a 16-bit checksum word with the protocol byte.
        let old: u16 = parse::read_raw(start, end, r.ttl_off)?;
        parse::write(start, end, r.ttl_off, r.ttl - 1)?;
        let new: u16 = parse::read_raw(start, end, r.ttl_off)?;
        let csum_off = h.l3_off + 10;
        let c: u16 = parse::read_raw(start, end, csum_off)?;
        parse::write(start, end, csum_off, csum::replace16(c, old, new))?;
    } else {
        parse::write(start, end, r.ttl_off, r.ttl - 1)?;
    }
    parse::write(start, end, 0, p.dmac)?;
    parse::write(start, end, 6, p.smac)?;
    Ok(verdict)
}

/// Routes a TC packet (an skb) whose destination is now `dst`: `bpf_redirect` to the route's
/// interface with the MACs rewritten, or `bpf_redirect_neigh` when the next hop's MAC is not
/// known yet (the kernel resolves it and sends the packet when it is).
///
/// Returns: `TC_ACT_REDIRECT`, or why the packet goes to the kernel (see `route`), or
/// `RewriteFailed` when a helper fails midway (the packet is dropped).
#[inline(always)]
pub(crate) fn tc(ctx: &TcContext, h: &parse::Headers, dst: &[u32; 4]) -> Result<i32, Reason> {
    // SAFETY: the context's skb pointer is valid for the program run.
    let (in_ifindex, vlan_present) =
        unsafe { ((*ctx.skb.skb).ifindex, (*ctx.skb.skb).vlan_present) };
    if vlan_present != 0 {
        // The tag was taken off into the skb's metadata (hardware or `skb_vlan_untag`) before
        // TC ran; a redirect would send it out tagged. The kernel's VLAN device owns it.
        return Err(Reason::KernelVlan);
    }
    // SAFETY: `bpf_fib_lookup` is a plain C struct for which all-zero is valid.
    let mut p: FibParams = unsafe { zeroed() };
    let r = route(
        ctx.as_ptr(),
        (ctx.data(), ctx.data_end()),
        h,
        dst,
        (in_ifindex, false),
        &mut p,
    )?;
    let fail = |_| Reason::RewriteFailed;
    if h.key.family == FAMILY_V4 {
        let old = u16::from_ne_bytes([r.ttl, h.key.proto]);
        let new = u16::from_ne_bytes([r.ttl - 1, h.key.proto]);
        ctx.l3_csum_replace(h.l3_off + 10, u64::from(old), u64::from(new), 2)
            .map_err(fail)?;
    }
    ctx.store(r.ttl_off, &(r.ttl - 1), 0).map_err(fail)?;
    let out = p.ifindex;
    if r.resolved {
        ctx.store(0, &p.dmac, 0).map_err(fail)?;
        ctx.store(6, &p.smac, 0).map_err(fail)?;
        // SAFETY: plain helper call; the verdict it returns is the program's.
        return Ok(unsafe { bpf_redirect(out, 0) } as i32);
    }
    // SAFETY: `bpf_redir_neigh` is a plain C struct for which all-zero is valid.
    let mut nh: bpf_redir_neigh = unsafe { zeroed() };
    nh.nh_family = u32::from(h.key.family);
    // After a lookup that found no neighbour, the destination field holds the next hop (the
    // gateway, or the destination itself when it is on-link).
    // SAFETY: reading the union members the lookup filled for this family.
    unsafe {
        if h.key.family == FAMILY_V4 {
            nh.__bindgen_anon_1.ipv4_nh = p.__bindgen_anon_4.ipv4_dst;
        } else {
            nh.__bindgen_anon_1.ipv6_nh = p.__bindgen_anon_4.ipv6_dst;
        }
    }
    // SAFETY: `nh` is a valid `bpf_redir_neigh` of the size passed.
    let rc =
        unsafe { bpf_redirect_neigh(out, &raw mut nh, size_of::<bpf_redir_neigh>() as i32, 0) };
    if rc as i32 == tc_action::REDIRECT {
        Ok(tc_action::REDIRECT)
    } else {
        Err(Reason::RewriteFailed)
    }
}
