//! Address translation. `dnat` rewrites a client's packet to its backend in XDP (checksums
//! updated by hand through `csum`: a frame off a wire carries complete checksums); `dnat_skb`
//! does the same for TC steering and `reverse` rewrites a backend's reply to come from the VIP,
//! both through the kernel's checksum helpers, which know the skb's checksum state and so also
//! handle the `CHECKSUM_PARTIAL` skbs of local senders (containers, local backends).

use aya_ebpf::programs::TcContext;
use veer_common::{FAMILY_V4, PROTO_UDP, counters::Reason, flow::RevNatValue};

use crate::{
    csum,
    parse::{self, Headers},
};

/// `BPF_F_PSEUDO_HDR`: the changed field is part of the L4 pseudo-header.
const BPF_F_PSEUDO_HDR: u64 = 1 << 4;
/// `BPF_F_MARK_MANGLED_0`: a UDP checksum that becomes 0 is written as 0xffff.
const BPF_F_MARK_MANGLED_0: u64 = 1 << 5;

/// Offset of the source address inside the IP header.
#[inline(always)]
fn src_addr_off(family: u8) -> usize {
    if family == FAMILY_V4 { 12 } else { 8 }
}

/// Offset of the destination address inside the IP header.
#[inline(always)]
fn dst_addr_off(family: u8) -> usize {
    if family == FAMILY_V4 { 16 } else { 24 }
}

/// Rewrites destination address and port to `addr`:`port` (network byte order).
///
/// Returns: `Truncated` only if a header moved out of bounds, which `parse` already excluded.
#[inline(always)]
pub(crate) fn dnat(
    start: usize,
    end: usize,
    h: &Headers,
    addr: &[u32; 4],
    port: u16,
) -> Result<(), Reason> {
    let old = &h.key.dst_addr;
    let addr_off = h.l3_off + dst_addr_off(h.key.family);
    if h.key.family == FAMILY_V4 {
        parse::write(start, end, addr_off, addr[0])?;
        let ip_csum_off = h.l3_off + 10;
        let ip_csum = parse::read_raw::<u16>(start, end, ip_csum_off)?;
        parse::write(
            start,
            end,
            ip_csum_off,
            csum::replace_addr(ip_csum, old, addr),
        )?;
    } else {
        parse::write(start, end, addr_off, *addr)?;
    }
    parse::write(start, end, h.l4_off + 2, port)?;
    if h.l4_csum_present {
        let off = h.l4_csum_off();
        let l4 = parse::read_raw::<u16>(start, end, off)?;
        let mut l4 = csum::replace16(csum::replace_addr(l4, old, addr), h.key.dst_port, port);
        if h.key.proto == PROTO_UDP && l4 == 0 {
            l4 = 0xFFFF;
        }
        parse::write(start, end, off, l4)?;
    }
    Ok(())
}

/// Rewrites a client's skb to its backend (TC steering): destination address and port become
/// `addr`:`port` (network byte order), through the kernel's checksum helpers, which update a
/// complete checksum incrementally and leave a `CHECKSUM_PARTIAL` one (a local sender's, the
/// default on a veth) as the pseudo-header sum the stack or the NIC finishes later.
///
/// Returns: `RewriteFailed` if a helper fails (the packet may be half rewritten: drop it).
#[inline(always)]
pub(crate) fn dnat_skb(
    ctx: &TcContext,
    h: &Headers,
    addr: &[u32; 4],
    port: u16,
) -> Result<(), Reason> {
    rewrite_skb(
        ctx,
        h,
        Endpoint {
            addr_off: h.l3_off + dst_addr_off(h.key.family),
            old_addr: &h.key.dst_addr,
            port_off: h.l4_off + 2,
            old_port: h.key.dst_port,
        },
        addr,
        port,
    )
}

/// Rewrites a reply's source address and port to the VIP and service port.
///
/// Returns: `RewriteFailed` if a helper fails (the packet may be half rewritten: drop it).
#[inline(always)]
pub(crate) fn reverse(ctx: &TcContext, h: &Headers, rev: &RevNatValue) -> Result<(), Reason> {
    rewrite_skb(
        ctx,
        h,
        Endpoint {
            addr_off: h.l3_off + src_addr_off(h.key.family),
            old_addr: &h.key.src_addr,
            port_off: h.l4_off,
            old_port: h.key.src_port,
        },
        &rev.vip,
        rev.port,
    )
}

/// One side (source or destination) of a packet: where its address and port are, and what they
/// hold now.
#[derive(Clone, Copy)]
struct Endpoint<'a> {
    addr_off: usize,
    old_addr: &'a [u32; 4],
    port_off: usize,
    old_port: u16,
}

/// Rewrites one side of an skb to `new_addr`:`new_port`: the bytes and the IPv4 header checksum
/// directly (the header checksum is always complete), the L4 checksum through the kernel's helper,
/// which knows the skb's checksum state: the address change (part of the pseudo-header) in one
/// call with its precomputed difference (`BPF_F_PSEUDO_HDR`), the port in another
/// (`BPF_F_MARK_MANGLED_0` for UDP, whose 0 means "no checksum").
///
/// Returns: `RewriteFailed` if a helper fails or a header moved out of the linear data (which
/// `parse` excluded): the packet may be half rewritten, so it is dropped.
#[inline(always)]
fn rewrite_skb(
    ctx: &TcContext,
    h: &Headers,
    side: Endpoint<'_>,
    new_addr: &[u32; 4],
    new_port: u16,
) -> Result<(), Reason> {
    let (start, end) = (ctx.data(), ctx.data_end());
    let torn = |_| Reason::RewriteFailed;
    if h.key.family == FAMILY_V4 {
        parse::write(start, end, side.addr_off, new_addr[0]).map_err(torn)?;
        let ip_csum_off = h.l3_off + 10;
        let ip_csum = parse::read_raw::<u16>(start, end, ip_csum_off).map_err(torn)?;
        parse::write(
            start,
            end,
            ip_csum_off,
            csum::replace_addr(ip_csum, side.old_addr, new_addr),
        )
        .map_err(torn)?;
    } else {
        parse::write(start, end, side.addr_off, *new_addr).map_err(torn)?;
    }
    parse::write(start, end, side.port_off, new_port).map_err(torn)?;
    if h.l4_csum_present {
        let fail = |_| Reason::RewriteFailed;
        let l4_csum_off = h.l4_csum_off();
        let udp_flag = if h.key.proto == PROTO_UDP {
            BPF_F_MARK_MANGLED_0
        } else {
            0
        };
        ctx.l4_csum_replace(
            l4_csum_off,
            0,
            u64::from(csum::diff_addr(side.old_addr, new_addr)),
            BPF_F_PSEUDO_HDR | udp_flag,
        )
        .map_err(fail)?;
        ctx.l4_csum_replace(
            l4_csum_off,
            u64::from(side.old_port),
            u64::from(new_port),
            udp_flag | 2,
        )
        .map_err(fail)?;
    }
    Ok(())
}
