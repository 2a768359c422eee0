//! veer's kernel programs: `veer_xdp` (frames off a wire) and `veer_tc_steer` (skbs: veth, bridge,
//! VLAN ...) steer client packets to backends, `veer_tc_reply` gives backend replies their VIP
//! back, and the `veer_sk_*` socket hooks steer clients on the node itself. Entry points only;
//! the data path is in `ingress`, `reply` and `sock`.
#![no_std]
#![no_main]
#![cfg_attr(target_arch = "bpf", feature(asm_experimental_arch))]
#![expect(
    clippy::inline_always,
    reason = "every helper is inlined into its program so the verifier sees one function with known \
              packet-pointer ranges (BPF-to-BPF calls lose them)"
)]

mod conntrack;
mod counters;
mod csum;
mod forward;
mod ingress;
mod maps;
mod nat;
mod nexthop;
mod packet;
mod parse;
mod reply;
mod replypath;
mod select;
mod service;
mod signals;
mod sock;

use aya_ebpf::{
    macros::{cgroup_sock, cgroup_sock_addr, classifier, xdp},
    programs::{SockAddrContext, SockContext, TcContext, XdpContext},
};

/// XDP program on client-facing interfaces.
#[expect(
    clippy::needless_pass_by_value,
    reason = "the #[xdp] macro fixes the signature"
)]
#[xdp]
fn veer_xdp(ctx: XdpContext) -> u32 {
    match ingress::run(&ctx) {
        Ok(verdict) => verdict,
        Err(reason) => {
            counters::reason(reason);
            reason.xdp_action()
        }
    }
}

/// TC program steering client packets on skb-backed interfaces (ingress), ahead of
/// `veer_tc_reply`: a packet that is not for a service goes on to it untouched.
#[expect(
    clippy::needless_pass_by_value,
    reason = "the #[classifier] macro fixes the signature"
)]
#[classifier]
fn veer_tc_steer(ctx: TcContext) -> i32 {
    match ingress::run(&ctx) {
        Ok(verdict) => verdict,
        Err(reason) => {
            counters::reason(reason);
            reason.tc_steer_action()
        }
    }
}

/// TC program for replies (ingress of backend-facing, egress of client-facing interfaces).
#[expect(
    clippy::needless_pass_by_value,
    reason = "the #[classifier] macro fixes the signature"
)]
#[classifier]
fn veer_tc_reply(ctx: TcContext) -> i32 {
    match reply::run(&ctx) {
        Ok(verdict) => verdict,
        Err(reason) => {
            counters::reason(reason);
            reason.tc_action()
        }
    }
}

/// A cgroup socket-address hook's verdict: 1 lets the operation go on, 0 refuses it (`EPERM`).
#[inline(always)]
fn sock_verdict(r: Result<(), veer_common::counters::Reason>) -> i32 {
    match r {
        Ok(()) => 1,
        Err(reason) => {
            counters::reason(reason);
            0
        }
    }
}

/// `connect()` of IPv4 sockets on the node: steers TCP and connected UDP.
#[expect(
    clippy::needless_pass_by_value,
    reason = "the #[cgroup_sock_addr] macro fixes the signature"
)]
#[cgroup_sock_addr(connect4)]
fn veer_sk_conn4(ctx: SockAddrContext) -> i32 {
    sock_verdict(sock::steer(&ctx, false))
}

/// `connect()` of IPv6 sockets on the node (IPv4-mapped addresses included).
#[expect(
    clippy::needless_pass_by_value,
    reason = "the #[cgroup_sock_addr] macro fixes the signature"
)]
#[cgroup_sock_addr(connect6)]
fn veer_sk_conn6(ctx: SockAddrContext) -> i32 {
    sock_verdict(sock::steer(&ctx, true))
}

/// `sendmsg()` with a destination on unconnected IPv4 UDP sockets.
#[expect(
    clippy::needless_pass_by_value,
    reason = "the #[cgroup_sock_addr] macro fixes the signature"
)]
#[cgroup_sock_addr(sendmsg4)]
fn veer_sk_send4(ctx: SockAddrContext) -> i32 {
    sock_verdict(sock::steer(&ctx, false))
}

/// `sendmsg()` with a destination on unconnected IPv6 UDP sockets.
#[expect(
    clippy::needless_pass_by_value,
    reason = "the #[cgroup_sock_addr] macro fixes the signature"
)]
#[cgroup_sock_addr(sendmsg6)]
fn veer_sk_send6(ctx: SockAddrContext) -> i32 {
    sock_verdict(sock::steer(&ctx, true))
}

/// `recvmsg()` on IPv4 UDP sockets: a reply from a backend shows the VIP as its source.
#[expect(
    clippy::needless_pass_by_value,
    reason = "the #[cgroup_sock_addr] macro fixes the signature"
)]
#[cgroup_sock_addr(recvmsg4)]
fn veer_sk_recv4(ctx: SockAddrContext) -> i32 {
    sock::unsteer(&ctx, false);
    1
}

/// `recvmsg()` on IPv6 UDP sockets.
#[expect(
    clippy::needless_pass_by_value,
    reason = "the #[cgroup_sock_addr] macro fixes the signature"
)]
#[cgroup_sock_addr(recvmsg6)]
fn veer_sk_recv6(ctx: SockAddrContext) -> i32 {
    sock::unsteer(&ctx, true);
    1
}

/// `getpeername()` on IPv4 sockets: the peer shows as the VIP.
#[expect(
    clippy::needless_pass_by_value,
    reason = "the #[cgroup_sock_addr] macro fixes the signature"
)]
#[cgroup_sock_addr(getpeername4)]
fn veer_sk_peer4(ctx: SockAddrContext) -> i32 {
    sock::unsteer(&ctx, false);
    1
}

/// `getpeername()` on IPv6 sockets.
#[expect(
    clippy::needless_pass_by_value,
    reason = "the #[cgroup_sock_addr] macro fixes the signature"
)]
#[cgroup_sock_addr(getpeername6)]
fn veer_sk_peer6(ctx: SockAddrContext) -> i32 {
    sock::unsteer(&ctx, true);
    1
}

/// A socket of the node is closed: its flow ends.
#[expect(
    clippy::needless_pass_by_value,
    reason = "the #[cgroup_sock] macro fixes the signature"
)]
#[cgroup_sock(sock_release)]
fn veer_sk_release(ctx: SockContext) -> i32 {
    sock::release(&ctx);
    1
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
