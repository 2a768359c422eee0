//! Forwarding of a `DNATed` packet from XDP: `bpf_fib_lookup` for the new destination, then MAC
//! rewrite and redirect (or `XDP_TX` out of the same interface). The packet goes to the kernel
//! with `XDP_PASS` instead when the neighbour is not resolved yet, when the destination is an
//! address of the node itself (a local backend), when the route leaves through an interface veer
//! is not attached to (it may not support XDP transmit, e.g. a VLAN device: the redirect would
//! drop the frame), and for VLAN-tagged frames (the kernel's VLAN devices own tag handling).

use core::mem::{size_of, zeroed};

use aya_ebpf::{
    EbpfContext as _,
    bindings::{
        BPF_FIB_LKUP_RET_NO_NEIGH, BPF_FIB_LKUP_RET_NOT_FWDED, BPF_FIB_LKUP_RET_SUCCESS,
        bpf_fib_lookup as FibParams, xdp_action,
    },
    helpers::bpf_fib_lookup,
    programs::XdpContext,
};
use veer_common::{FAMILY_V4, counters::Reason};

use crate::{csum, maps::VEER_TX_PORTS, parse};

/// Offset of the IP header in an untagged frame.
const UNTAGGED_L3_OFF: usize = 14;

/// Routes the packet whose destination is now `dst`:`dport`.
///
/// Returns: the XDP verdict (`XDP_REDIRECT`, `XDP_TX`, or `XDP_PASS` for a local backend, an
/// unresolved neighbour or a TTL about to expire), or `FibFailed` when the route says no.
#[inline(always)]
pub(crate) fn forward(ctx: &XdpContext, h: &parse::Headers, dst: &[u32; 4]) -> Result<u32, Reason> {
    let (start, end) = (ctx.data(), ctx.data_end());
    // SAFETY: `bpf_fib_lookup` is a plain C struct for which all-zero is valid.
    let mut p: FibParams = unsafe { zeroed() };
    p.family = h.key.family;
    p.l4_protocol = h.key.proto;
    p.sport = h.key.src_port;
    p.dport = h.key.dst_port;
    p.ifindex = ctx.ingress_ifindex() as u32;
    let ttl_off;
    if h.key.family == FAMILY_V4 {
        p.__bindgen_anon_1.tot_len = u16::from_be(parse::read_raw(start, end, h.l3_off + 2)?);
        p.__bindgen_anon_2.tos = parse::read_raw(start, end, h.l3_off + 1)?;
        p.__bindgen_anon_3.ipv4_src = h.key.src_addr[0];
        p.__bindgen_anon_4.ipv4_dst = dst[0];
        ttl_off = h.l3_off + 8;
    } else {
        let payload_len = u16::from_be(parse::read_raw(start, end, h.l3_off + 4)?);
        p.__bindgen_anon_1.tot_len = payload_len.wrapping_add(40);
        p.__bindgen_anon_3.ipv6_src = h.key.src_addr;
        p.__bindgen_anon_4.ipv6_dst = *dst;
        ttl_off = h.l3_off + 7;
    }
    // SAFETY: `p` is a valid, writable `bpf_fib_lookup` of the size passed.
    let rc = unsafe { bpf_fib_lookup(ctx.as_ptr(), &raw mut p, size_of::<FibParams>() as i32, 0) };
    match rc as u32 {
        BPF_FIB_LKUP_RET_SUCCESS => {}
        BPF_FIB_LKUP_RET_NO_NEIGH | BPF_FIB_LKUP_RET_NOT_FWDED => return Ok(xdp_action::XDP_PASS),
        _ => return Err(Reason::FibFailed),
    }
    if h.l3_off != UNTAGGED_L3_OFF {
        return Ok(xdp_action::XDP_PASS);
    }
    // Forwarding is routing: decrement the TTL / hop limit as the kernel would, and let the
    // kernel answer a packet that would expire here (ICMP time exceeded).
    let ttl: u8 = parse::read_raw(start, end, ttl_off)?;
    if ttl <= 1 {
        return Ok(xdp_action::XDP_PASS);
    }
    // Out of the ingress interface again, or into one of veer's ports. `bpf_redirect_map` only
    // records the target (the frame leaves after the program returns), so the rewrite below
    // may follow it; a route through any other device goes to the kernel untouched.
    let verdict = if p.ifindex == ctx.ingress_ifindex() as u32 {
        xdp_action::XDP_TX
    } else {
        match VEER_TX_PORTS.redirect(p.ifindex, 0) {
            Ok(redirect) => redirect,
            Err(_) => return Ok(xdp_action::XDP_PASS),
        }
    };
    if h.key.family == FAMILY_V4 {
        // TTL shares a 16-bit checksum word with the protocol byte.
        let old: u16 = parse::read_raw(start, end, ttl_off)?;
        parse::write(start, end, ttl_off, ttl - 1)?;
        let new: u16 = parse::read_raw(start, end, ttl_off)?;
        let csum_off = h.l3_off + 10;
        let c: u16 = parse::read_raw(start, end, csum_off)?;
        parse::write(start, end, csum_off, csum::replace16(c, old, new))?;
    } else {
        parse::write(start, end, ttl_off, ttl - 1)?;
    }
    parse::write(start, end, 0, p.dmac)?;
    parse::write(start, end, 6, p.smac)?;
    Ok(verdict)
}
