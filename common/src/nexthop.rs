//! The next-hop cache: what a backend's last successful route lookup answered (output interface
//! and MACs), so a packet of any flow to that backend skips `bpf_fib_lookup`.
//!
//! The kernel programs fill the cache (`VEER_NEXTHOPS`, per CPU, by backend id) from their own
//! route lookups; nothing else writes it. Whether an entry may be used is decided by the clock
//! (`VEER_NH_CLOCK`), one 64-bit word the daemon writes: a generation and a lease.
//!
//! - **Generation.** The daemon bumps it on every route, neighbour, link, address, rule or
//!   forwarding-setting event of the node's network namespace (rtnetlink). An entry filled
//!   under another generation is a miss, so no cached next hop outlives the event that changed
//!   it by more than the time the event takes to reach the daemon.
//! - **Lease.** The clock is valid until a tick (`flow::TICK_SHIFT`, the flow tables' coarse
//!   clock); the daemon renews it several times a lease. A daemon that stops or dies stops
//!   watching, and within one lease every packet goes back to a route lookup of its own.
//! - Generation 0 means the cache is off (no daemon watching, or a node whose route to a backend
//!   may depend on more than its address: policy-routing rules).

use crate::pod;

/// The clock word: generation in the low 32 bits, the lease's last tick in the high 32.
#[must_use]
pub const fn clock(generation: u32, valid_until: u32) -> u64 {
    (valid_until as u64) << 32 | generation as u64
}

/// The generation cached entries must carry at tick `now` under `clock`, or `None` when the
/// cache is off (generation 0) or the lease ran out (its last tick is before `now`; compared with
/// wrapping arithmetic, as ticks wrap).
#[expect(
    clippy::inline_always,
    reason = "the kernel build must inline this into the program for the verifier"
)]
#[inline(always)]
#[must_use]
pub const fn generation_at(clock: u64, now: u32) -> Option<u32> {
    let generation = clock as u32;
    let valid_until = (clock >> 32) as u32;
    if generation == 0 || (valid_until.wrapping_sub(now) as i32) < 0 {
        None
    } else {
        Some(generation)
    }
}

/// The next generation after `generation` (0 is skipped: it means off).
#[must_use]
pub const fn next_generation(generation: u32) -> u32 {
    match generation.wrapping_add(1) {
        0 => 1,
        g => g,
    }
}

/// A backend's next hop as one CPU's last successful route lookup found it.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NextHop {
    /// The clock's generation when the lookup was made (0: empty).
    pub generation: u32,
    /// Interface the packet came in on: the lookup's input (a packet from another interface
    /// looks up its own route).
    pub in_ifindex: u32,
    /// Interface the route leaves through.
    pub out_ifindex: u32,
    /// Largest IP length (IPv4 total length, IPv6 payload + 40) the route's MTU was checked
    /// against; a longer packet looks its route up again (XDP). `u16::MAX` where the kernel
    /// checks the length itself after the program (TC).
    pub max_len: u16,
    /// Destination MAC (the next hop's).
    pub dmac: [u8; 6],
    /// Source MAC (the output interface's).
    pub smac: [u8; 6],
    /// Zero.
    pub _pad: [u8; 6],
}
const _: () = assert!(size_of::<NextHop>() == 32);

pod!(NextHop, ReplyPath);

/// `ReplyPath::arrival` of a backend that is an address of the node: its replies are sent by the
/// node itself, so they come in on no interface (the kernel's `skb_iif` is 0).
pub const ARRIVAL_LOCAL: u32 = 0;
/// `ReplyPath::arrival` of a backend the node has no route to: nothing is its reply.
pub const ARRIVAL_NONE: u32 = u32::MAX;

/// Where a backend's replies come in, as one CPU's last route lookup toward the backend found
/// it (`veer_tc_reply`'s reverse-path check): the interface the node's route to the backend
/// leaves through. Used under the same clock as `NextHop`, so a route, link or address change
/// makes it a miss.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ReplyPath {
    /// The clock's generation when the lookup was made (0: empty).
    pub generation: u32,
    /// The interface the backend's replies come in on (the route's output interface), or
    /// `ARRIVAL_LOCAL`, or `ARRIVAL_NONE`.
    pub arrival: u32,
    /// The backend address looked up (a backend id may name another address later). Network
    /// byte order; IPv4 uses word 0.
    pub addr: [u32; 4],
}
const _: () = assert!(size_of::<ReplyPath>() == 24);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_clock_packs_generation_and_lease() {
        let c = clock(7, 1000);
        assert_eq!(generation_at(c, 999), Some(7));
        assert_eq!(generation_at(c, 1000), Some(7));
        assert_eq!(generation_at(c, 1001), None, "lease ran out");
        assert_eq!(
            generation_at(clock(0, 1000), 10),
            None,
            "generation 0 is off"
        );
    }

    #[test]
    fn the_lease_compares_across_the_tick_wrap() {
        let c = clock(3, 5);
        assert_eq!(generation_at(c, u32::MAX - 10), Some(3));
        assert_eq!(generation_at(c, 6), None);
        assert_eq!(generation_at(clock(3, u32::MAX), 2), None);
    }

    #[test]
    fn generations_skip_zero() {
        assert_eq!(next_generation(1), 2);
        assert_eq!(next_generation(u32::MAX), 1);
    }
}
