//! veer's kernel programs: `veer_xdp` steers client packets to backends, `veer_tc_reply` gives
//! backend replies their VIP back. Entry points only; the data path is in `ingress` and `reply`.
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
mod parse;
mod reply;
mod select;
mod service;

use aya_ebpf::{
    macros::{classifier, xdp},
    programs::{TcContext, XdpContext},
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

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

/// `bpf_fib_lookup` is a GPL-only helper; "Dual MIT/GPL" is GPL-compatible for the kernel.
#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
