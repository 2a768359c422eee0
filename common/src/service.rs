//! Service keys and values.

use crate::{maps::MAX_GROUPS_PER_SERVICE, pod};

/// A service as packets name it: VIP, port and protocol.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct ServiceKey {
    /// VIP. Network byte order; IPv4 uses word 0, the rest zero.
    pub addr: [u32; 4],
    /// Service port. Network byte order.
    pub port: u16,
    /// IP protocol (`PROTO_TCP`, `PROTO_UDP`).
    pub proto: u8,
    /// Address family (`FAMILY_V4`, `FAMILY_V6`).
    pub family: u8,
}
const _: () = assert!(size_of::<ServiceKey>() == 20);

/// A service's groups and how new flows are split between them.
///
/// Replaced whole (the map is a `BPF_F_NO_PREALLOC` hash, so an update swaps the element under
/// RCU): a packet reads either the old or the new split, never a mix.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ServiceValue {
    /// Service id (index into per-service counters). Never 0.
    pub service_id: u32,
    /// Number of used entries in `groups` and `cumulative`.
    pub group_count: u32,
    /// Group ids (index into the Maglev outer map). Host byte order.
    pub groups: [u32; MAX_GROUPS_PER_SERVICE],
    /// Running sum of the groups' effective weights in basis points (1/10000); entry `i` is the
    /// sum of the weights of groups `0..=i`. A group that must get no new flows (weight 0, no
    /// backend) adds nothing. Host byte order.
    pub cumulative: [u32; MAX_GROUPS_PER_SERVICE],
}
const _: () = assert!(size_of::<ServiceValue>() == 72);

impl ServiceValue {
    /// Sum of the effective weights: 0 means no group can take a new flow (also for a corrupt
    /// `group_count`).
    #[expect(
        clippy::inline_always,
        reason = "the kernel build must inline this into the program for the verifier"
    )]
    #[inline(always)]
    pub fn total_weight(&self) -> u32 {
        // Constant indices only (the loop unrolls): the verifier rejects a map-value index it
        // cannot bound, and the kernel build has no panic path to take.
        let mut total = 0;
        let mut i = 0;
        while i < MAX_GROUPS_PER_SERVICE {
            if i + 1 == self.group_count as usize {
                total = self.cumulative[i];
            }
            i += 1;
        }
        total
    }
}

pod!(ServiceKey, ServiceValue);
