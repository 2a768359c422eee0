//! Forwarding of a `DNATed` packet: the backend's next hop from the next-hop cache (`nexthop`),
//! else `bpf_fib_lookup` for the new destination (shared), then the hook's own way out.
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

use crate::{csum, maps::VEER_TX_PORTS, nexthop::Slot, parse};

/// Offset of the IP header in an untagged frame.
const UNTAGGED_L3_OFF: usize = 14;

/// What the route lookup found, besides the answer it wrote into the caller's `FibParams` (next
/// hop, output interface and MACs): kept apart so no copy of the 64-byte parameters lands on the
/// verifier's 512-byte stack.
struct Route {
    /// Whether the neighbour (MAC) of the next hop is known (`BPF_FIB_LKUP_RET_SUCCESS`), or must
    /// still be resolved (`BPF_FIB_LKUP_RET_NO_NEIGH`).
    resolved: bool,
    /// Where the TTL / hop limit is, and what it is now.
    hop: HopLimit,
}

/// The TTL / hop-limit byte of a packet veer forwards itself.
struct HopLimit {
    /// Offset of the TTL / hop-limit byte.
    off: usize,
    /// The TTL / hop limit now (at least 2).
    ttl: u8,
}

/// Checks that veer may forward the packet itself (untagged, TTL / hop limit left).
///
/// Returns: where its TTL / hop limit is; `KernelVlan` for a tagged frame (the kernel's VLAN
/// devices own tag handling), `KernelTtl` for a packet that would expire here (the kernel
/// answers it with ICMP time exceeded).
#[inline(always)]
fn hop_limit((start, end): (usize, usize), h: &parse::Headers) -> Result<HopLimit, Reason> {
    if h.l3_off != UNTAGGED_L3_OFF {
        return Err(Reason::KernelVlan);
    }
    let off = if h.key.family == FAMILY_V4 {
        h.l3_off + 8
    } else {
        h.l3_off + 7
    };
    // Forwarding is routing: the TTL / hop limit is decremented as the kernel would.
    let ttl: u8 = parse::read_raw(start, end, off)?;
    if ttl <= 1 {
        return Err(Reason::KernelTtl);
    }
    Ok(HopLimit { off, ttl })
}

/// The IP length of a packet as `bpf_fib_lookup` checks it against the route's MTU (IPv4 total
/// length, IPv6 payload length + 40).
#[inline(always)]
fn ip_len((start, end): (usize, usize), h: &parse::Headers) -> Result<u16, Reason> {
    if h.key.family == FAMILY_V4 {
        Ok(u16::from_be(parse::read_raw(start, end, h.l3_off + 2)?))
    } else {
        let payload_len = u16::from_be(parse::read_raw(start, end, h.l3_off + 4)?);
        Ok(payload_len.wrapping_add(40))
    }
}

/// Looks up the route of the packet whose destination is now `dst` (its headers, already
/// rewritten, lie between `start` and `end`), as received on `ifindex`. With a `tot_len`, the
/// lookup checks it against the route's MTU (XDP: a frame is never GSO); with 0, the kernel
/// checks the skb itself, GSO included (TC).
///
/// Returns: the route, or why the packet goes to the kernel instead: `KernelLocal` (the backend
/// is an address of the node), `KernelFwdDisabled`, `FibFailed` (no route, blackhole, prohibit,
/// MTU), and those of `hop_limit`; `Truncated` only if a header moved, which `parse` excluded.
#[inline(always)]
fn route(
    ctx: *mut c_void,
    (start, end): (usize, usize),
    h: &parse::Headers,
    dst: &[u32; 4],
    (ifindex, tot_len): (u32, u16),
    p: &mut FibParams,
) -> Result<Route, Reason> {
    p.family = h.key.family;
    p.l4_protocol = h.key.proto;
    p.sport = h.key.src_port;
    p.dport = h.key.dst_port;
    p.ifindex = ifindex;
    p.__bindgen_anon_1.tot_len = tot_len;
    if h.key.family == FAMILY_V4 {
        p.__bindgen_anon_2.tos = parse::read_raw(start, end, h.l3_off + 1)?;
        p.__bindgen_anon_3.ipv4_src = h.key.src_addr[0];
        p.__bindgen_anon_4.ipv4_dst = dst[0];
    } else {
        p.__bindgen_anon_3.ipv6_src = h.key.src_addr;
        p.__bindgen_anon_4.ipv6_dst = *dst;
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
    Ok(Route {
        resolved,
        hop: hop_limit((start, end), h)?,
    })
}

/// Where a packet veer forwards itself leaves: output interface and MACs.
struct Hop {
    ifindex: u32,
    dmac: [u8; 6],
    smac: [u8; 6],
}

/// Routes an XDP packet whose destination is now `dst`: from the next-hop cache (`nh`, when it
/// has the backend's route for this input interface and a packet this long), else with
/// `bpf_fib_lookup`, whose answer then fills the cache.
///
/// Returns: `XDP_REDIRECT` or `XDP_TX`, or why the packet goes to the kernel (see `route`, and
/// `KernelNoNeigh`, `KernelNoXdpXmit`).
#[inline(always)]
pub(crate) fn xdp(
    ctx: &XdpContext,
    h: &parse::Headers,
    dst: &[u32; 4],
    nh: Option<&Slot>,
) -> Result<u32, Reason> {
    let (start, end) = (ctx.data(), ctx.data_end());
    let in_ifindex = ctx.ingress_ifindex() as u32;
    let len = ip_len((start, end), h)?;
    let (out, limit) = if let Some(c) = nh.and_then(|s| s.get(in_ifindex, len)) {
        (
            Hop {
                ifindex: c.out_ifindex,
                dmac: c.dmac,
                smac: c.smac,
            },
            hop_limit((start, end), h)?,
        )
    } else {
        // SAFETY: `bpf_fib_lookup` is a plain C struct for which all-zero is valid.
        let mut p: FibParams = unsafe { zeroed() };
        let r = route(
            ctx.as_ptr(),
            (start, end),
            h,
            dst,
            (in_ifindex, len),
            &mut p,
        )?;
        if !r.resolved {
            return Err(Reason::KernelNoNeigh);
        }
        if let Some(s) = nh {
            s.fill(in_ifindex, p.ifindex, len, p.dmac, p.smac);
        }
        (
            Hop {
                ifindex: p.ifindex,
                dmac: p.dmac,
                smac: p.smac,
            },
            r.hop,
        )
    };
    // Out of the ingress interface again, or into a port that can take an XDP frame (the daemon
    // keeps `VEER_TX_PORTS` to those). `bpf_redirect_map` only records the target (the frame
    // leaves after the program returns), so the rewrite below may follow it.
    let verdict = if out.ifindex == in_ifindex {
        xdp_action::XDP_TX
    } else {
        VEER_TX_PORTS
            .redirect(out.ifindex, 0)
            .map_err(|_| Reason::KernelNoXdpXmit)?
    };
    if h.key.family == FAMILY_V4 {
        // TTL shares a 16-bit checksum word with the protocol byte.
        let old: u16 = parse::read_raw(start, end, limit.off)?;
        parse::write(start, end, limit.off, limit.ttl - 1)?;
        let new: u16 = parse::read_raw(start, end, limit.off)?;
        let csum_off = h.l3_off + 10;
        let c: u16 = parse::read_raw(start, end, csum_off)?;
        parse::write(start, end, csum_off, csum::replace16(c, old, new))?;
    } else {
        parse::write(start, end, limit.off, limit.ttl - 1)?;
    }
    parse::write(start, end, 0, out.dmac)?;
    parse::write(start, end, 6, out.smac)?;
    Ok(verdict)
}

/// Decrements an skb's TTL / hop limit (IPv4: with its header checksum, always complete), with
/// direct writes.
///
/// Returns: `RewriteFailed` only if a header moved, which `parse` excluded.
#[inline(always)]
fn decrement_ttl(ctx: &TcContext, h: &parse::Headers, limit: &HopLimit) -> Result<(), Reason> {
    let (start, end) = (ctx.data(), ctx.data_end());
    let torn = |_| Reason::RewriteFailed;
    if h.key.family == FAMILY_V4 {
        // TTL shares a 16-bit checksum word with the protocol byte.
        let old = u16::from_ne_bytes([limit.ttl, h.key.proto]);
        let new = u16::from_ne_bytes([limit.ttl - 1, h.key.proto]);
        let csum_off = h.l3_off + 10;
        let c: u16 = parse::read_raw(start, end, csum_off).map_err(torn)?;
        parse::write(start, end, csum_off, csum::replace16(c, old, new)).map_err(torn)?;
    }
    parse::write(start, end, limit.off, limit.ttl - 1).map_err(torn)
}

/// Sends an skb out of `out` with the MACs rewritten (direct writes).
///
/// Returns: `TC_ACT_REDIRECT`; `RewriteFailed` only if the frame moved, which `parse` excluded.
#[inline(always)]
fn redirect(ctx: &TcContext, out: &Hop) -> Result<i32, Reason> {
    let (start, end) = (ctx.data(), ctx.data_end());
    let torn = |_| Reason::RewriteFailed;
    parse::write(start, end, 0, out.dmac).map_err(torn)?;
    parse::write(start, end, 6, out.smac).map_err(torn)?;
    // SAFETY: plain helper call; the verdict it returns is the program's.
    Ok(unsafe { bpf_redirect(out.ifindex, 0) } as i32)
}

/// Routes a TC packet (an skb) whose destination is now `dst`: from the next-hop cache (`nh`)
/// or with `bpf_fib_lookup` (whose resolved answer fills the cache), then `bpf_redirect` to the
/// route's interface with the MACs rewritten, or `bpf_redirect_neigh` when the next hop's MAC is
/// not known yet (the kernel resolves it and sends the packet when it is).
///
/// Returns: `TC_ACT_REDIRECT`, or why the packet goes to the kernel (see `route`), or
/// `RewriteFailed` when a helper fails midway (the packet is dropped).
#[inline(always)]
pub(crate) fn tc(
    ctx: &TcContext,
    h: &parse::Headers,
    dst: &[u32; 4],
    nh: Option<&Slot>,
) -> Result<i32, Reason> {
    // SAFETY: the context's skb pointer is valid for the program run.
    let (in_ifindex, vlan_present) =
        unsafe { ((*ctx.skb.skb).ifindex, (*ctx.skb.skb).vlan_present) };
    if vlan_present != 0 {
        // The tag was taken off into the skb's metadata (hardware or `skb_vlan_untag`) before
        // TC ran; a redirect would send it out tagged. The kernel's VLAN device owns it.
        return Err(Reason::KernelVlan);
    }
    // The kernel checks an skb's length against the output's MTU after the program (GSO
    // included): a cached route serves packets of any length.
    if let Some(c) = nh.and_then(|s| s.get(in_ifindex, 0)) {
        let limit = hop_limit((ctx.data(), ctx.data_end()), h)?;
        decrement_ttl(ctx, h, &limit)?;
        return redirect(
            ctx,
            &Hop {
                ifindex: c.out_ifindex,
                dmac: c.dmac,
                smac: c.smac,
            },
        );
    }
    // SAFETY: `bpf_fib_lookup` is a plain C struct for which all-zero is valid.
    let mut p: FibParams = unsafe { zeroed() };
    let r = route(
        ctx.as_ptr(),
        (ctx.data(), ctx.data_end()),
        h,
        dst,
        (in_ifindex, 0),
        &mut p,
    )?;
    decrement_ttl(ctx, h, &r.hop)?;
    let out = p.ifindex;
    if r.resolved {
        if let Some(s) = nh {
            s.fill(in_ifindex, out, u16::MAX, p.dmac, p.smac);
        }
        return redirect(
            ctx,
            &Hop {
                ifindex: out,
                dmac: p.dmac,
                smac: p.smac,
            },
        );
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
