//! Baseline XDP programs for `cargo xtask bench` (BENCHMARKS.md, section 1): what a packet costs
//! with nothing veer-specific in the way, measured side by side with `veer_xdp` through
//! `BPF_PROG_TEST_RUN`. Never attached to an interface.
//!
//! - `bench_pass`: `XDP_PASS` and nothing else (the cost of running any program at all).
//! - `bench_floor`: the least a DNAT load balancer does: parse Ethernet/IPv4 (IHL-aware)/TCP,
//!   rewrite destination address and port, update the IP and TCP checksums incrementally (veer's
//!   own `csum` module), swap the MACs, `XDP_TX`.
//! - `bench_floor_ct`: `bench_floor` plus one lookup in a hash shaped like veer's table of
//!   confirmed flows (`VEER_FLOWS`: `FlowKey` -> `FlowEntry`, same type and capacity); the entry's
//!   backend is the rewrite target, a miss passes the packet.
//! - `bench_ct_fib`: `bench_floor_ct` plus `bpf_fib_lookup` for the new destination and the MAC
//!   rewrite from its answer (`XDP_TX`): the forwarding step veer does and the floor does not.
//!
//! These are not veer's data path and carry none of its checks (VLAN, IPv6, fragments, TTL):
//! they only bound from below what such a path can cost.
#![no_std]
#![no_main]
#![expect(
    clippy::inline_always,
    reason = "helpers are inlined into each program, as in veer's own programs"
)]

#[expect(
    dead_code,
    reason = "the baselines rewrite as XDP does; `diff_addr` is for TC"
)]
#[path = "csum.rs"]
mod csum;

use core::mem::{size_of, zeroed};

use aya_ebpf::{
    EbpfContext as _,
    bindings::{BPF_FIB_LKUP_RET_SUCCESS, bpf_fib_lookup as FibParams, xdp_action},
    btf_maps::HashMap,
    helpers::bpf_fib_lookup,
    macros::{btf_map, xdp},
    programs::XdpContext,
};
use veer_common::{
    FAMILY_V4, PROTO_TCP,
    flow::{FlowEntry, FlowKey},
    maps::DEFAULT_CONNTRACK_MAX,
};

/// Stand-in for veer's `VEER_FLOWS`: same key, value, type and default capacity.
#[btf_map]
static BENCH_CT: HashMap<FlowKey, FlowEntry, { DEFAULT_CONNTRACK_MAX as usize }> = HashMap::new();

const ETH_HLEN: usize = 14;
const ETH_P_IP: u16 = 0x0800;
const IPV4_MIN_HLEN: usize = 20;
const TCP_MIN_HLEN: usize = 20;
/// `bench_floor`'s fixed rewrite target: 198.51.100.11:8080 (network byte order as loaded).
const FLOOR_ADDR: [u32; 4] = [u32::from_ne_bytes([198, 51, 100, 11]), 0, 0, 0];
const FLOOR_PORT: u16 = 8080_u16.to_be();

/// Where an IPv4/TCP packet's headers are.
struct Parsed {
    l4_off: usize,
    key: FlowKey,
}

/// Returns a pointer to a `T` at `off`, or `None` if it does not fit in the packet.
#[inline(always)]
fn ptr_at<T>(ctx: &XdpContext, off: usize) -> Option<*mut T> {
    let (start, end) = (ctx.data(), ctx.data_end());
    if start + off + size_of::<T>() > end {
        return None;
    }
    Some((start + off) as *mut T)
}

/// Reads a `T` at `off` as it lies in memory.
#[inline(always)]
fn read<T: Copy>(ctx: &XdpContext, off: usize) -> Option<T> {
    // SAFETY: `ptr_at` checked that the bytes lie inside the packet.
    ptr_at::<T>(ctx, off).map(|p| unsafe { p.read_unaligned() })
}

/// Writes a `T` at `off`.
#[inline(always)]
fn write<T>(ctx: &XdpContext, off: usize, v: T) -> Option<()> {
    // SAFETY: `ptr_at` checked that the bytes lie inside the packet.
    ptr_at::<T>(ctx, off).map(|p| unsafe { p.write_unaligned(v) })
}

/// Parses Ethernet + IPv4 (IHL-aware, no fragment check) + TCP; `None` for anything else.
#[inline(always)]
fn parse(ctx: &XdpContext) -> Option<Parsed> {
    if u16::from_be(read::<u16>(ctx, 12)?) != ETH_P_IP {
        return None;
    }
    let ip = read::<[u8; IPV4_MIN_HLEN]>(ctx, ETH_HLEN)?;
    if ip[0] >> 4 != 4 || ip[9] != PROTO_TCP {
        return None;
    }
    let hlen = ((ip[0] & 0x0F) as usize) * 4;
    if hlen < IPV4_MIN_HLEN {
        return None;
    }
    let l4_off = ETH_HLEN + hlen;
    let tcp = read::<[u8; TCP_MIN_HLEN]>(ctx, l4_off)?;
    let word = |i: usize| u32::from_ne_bytes([ip[i], ip[i + 1], ip[i + 2], ip[i + 3]]);
    Some(Parsed {
        l4_off,
        key: FlowKey {
            src_addr: [word(12), 0, 0, 0],
            dst_addr: [word(16), 0, 0, 0],
            src_port: u16::from_ne_bytes([tcp[0], tcp[1]]),
            dst_port: u16::from_ne_bytes([tcp[2], tcp[3]]),
            proto: PROTO_TCP,
            family: FAMILY_V4,
            _pad: [0; 2],
        },
    })
}

/// Rewrites the destination to `addr`:`port` with incremental IP and TCP checksum updates.
#[inline(always)]
fn dnat(ctx: &XdpContext, p: &Parsed, addr: &[u32; 4], port: u16) -> Option<()> {
    let old = &p.key.dst_addr;
    write(ctx, ETH_HLEN + 16, addr[0])?;
    let ip_csum: u16 = read(ctx, ETH_HLEN + 10)?;
    write(ctx, ETH_HLEN + 10, csum::replace_addr(ip_csum, old, addr))?;
    write(ctx, p.l4_off + 2, port)?;
    let tcp_csum: u16 = read(ctx, p.l4_off + 16)?;
    let tcp_csum = csum::replace16(
        csum::replace_addr(tcp_csum, old, addr),
        p.key.dst_port,
        port,
    );
    write(ctx, p.l4_off + 16, tcp_csum)
}

/// Swaps source and destination MACs (what `XDP_TX` back out of the same port needs).
#[inline(always)]
fn swap_macs(ctx: &XdpContext) -> Option<()> {
    let macs = read::<[[u8; 6]; 2]>(ctx, 0)?;
    write(ctx, 0, [macs[1], macs[0]])
}

#[inline(always)]
fn floor(ctx: &XdpContext) -> Option<u32> {
    let p = parse(ctx)?;
    dnat(ctx, &p, &FLOOR_ADDR, FLOOR_PORT)?;
    swap_macs(ctx)?;
    Some(xdp_action::XDP_TX)
}

#[inline(always)]
fn floor_ct(ctx: &XdpContext) -> Option<u32> {
    let p = parse(ctx)?;
    // SAFETY: the value is copied out at once.
    let entry = unsafe { BENCH_CT.get(p.key) }.copied()?;
    dnat(ctx, &p, &entry.backend_addr, entry.backend_port)?;
    swap_macs(ctx)?;
    Some(xdp_action::XDP_TX)
}

#[inline(always)]
fn ct_fib(ctx: &XdpContext) -> Option<u32> {
    let p = parse(ctx)?;
    // SAFETY: the value is copied out at once.
    let entry = unsafe { BENCH_CT.get(p.key) }.copied()?;
    dnat(ctx, &p, &entry.backend_addr, entry.backend_port)?;
    // SAFETY: `bpf_fib_lookup` is a plain C struct for which all-zero is valid.
    let mut f: FibParams = unsafe { zeroed() };
    f.family = FAMILY_V4;
    f.l4_protocol = PROTO_TCP;
    f.sport = p.key.src_port;
    f.dport = entry.backend_port;
    f.ifindex = ctx.ingress_ifindex() as u32;
    f.__bindgen_anon_1.tot_len = u16::from_be(read(ctx, ETH_HLEN + 2)?);
    f.__bindgen_anon_3.ipv4_src = p.key.src_addr[0];
    f.__bindgen_anon_4.ipv4_dst = entry.backend_addr[0];
    // SAFETY: `f` is a valid, writable `bpf_fib_lookup` of the size passed.
    let rc = unsafe { bpf_fib_lookup(ctx.as_ptr(), &raw mut f, size_of::<FibParams>() as i32, 0) };
    if rc as u32 != BPF_FIB_LKUP_RET_SUCCESS {
        return Some(xdp_action::XDP_PASS);
    }
    write(ctx, 0, [f.dmac, f.smac])?;
    Some(xdp_action::XDP_TX)
}

/// `XDP_PASS`, nothing else.
#[xdp]
fn bench_pass(_ctx: XdpContext) -> u32 {
    xdp_action::XDP_PASS
}

/// Parse, DNAT with incremental checksums, `XDP_TX`.
#[expect(
    clippy::needless_pass_by_value,
    reason = "the #[xdp] macro fixes the signature"
)]
#[xdp]
fn bench_floor(ctx: XdpContext) -> u32 {
    floor(&ctx).unwrap_or(xdp_action::XDP_PASS)
}

/// `bench_floor` plus one conntrack-shaped LRU lookup.
#[expect(
    clippy::needless_pass_by_value,
    reason = "the #[xdp] macro fixes the signature"
)]
#[xdp]
fn bench_floor_ct(ctx: XdpContext) -> u32 {
    floor_ct(&ctx).unwrap_or(xdp_action::XDP_PASS)
}

/// `bench_floor_ct` plus `bpf_fib_lookup` and the MAC rewrite from its answer.
#[expect(
    clippy::needless_pass_by_value,
    reason = "the #[xdp] macro fixes the signature"
)]
#[xdp]
fn bench_ct_fib(ctx: XdpContext) -> u32 {
    ct_fib(&ctx).unwrap_or(xdp_action::XDP_PASS)
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

/// `bpf_fib_lookup` is a GPL-only helper; "Dual MIT/GPL" is GPL-compatible for the kernel.
#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
