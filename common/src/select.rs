//! The selection math the kernel runs for a new flow, shared with user space.
//!
//! Pure and verifier-friendly: no loops without a constant bound, no allocation, 32-bit
//! arithmetic only. The daemon uses the same functions to explain which backend a flow gets.

use crate::{
    flow::FlowKey,
    maps::{MAGLEV_TABLE_SIZE, MAX_GROUPS_PER_SERVICE},
    service::ServiceValue,
};

/// Weights are in basis points: 10000 is the whole of a service's new flows.
pub const WEIGHT_SCALE: u32 = 10_000;

const SEED: u32 = 0x7665_6572; // "veer"

/// One round of murmur3's block mixing.
const fn mix(h: u32, word: u32) -> u32 {
    let k = word
        .wrapping_mul(0xcc9e_2d51)
        .rotate_left(15)
        .wrapping_mul(0x1b87_3593);
    (h ^ k)
        .rotate_left(13)
        .wrapping_mul(5)
        .wrapping_add(0xe654_6b64)
}

/// murmur3's finaliser: every input bit affects every output bit.
const fn fmix(mut h: u32) -> u32 {
    h ^= h >> 16;
    h = h.wrapping_mul(0x85eb_ca6b);
    h ^= h >> 13;
    h = h.wrapping_mul(0xc2b2_ae35);
    h ^= h >> 16;
    h
}

/// Hash of a flow's client-side 5-tuple. Stable across runs, CPUs and kernel/user space, so a SYN
/// retransmit or a flow whose conntrack entry was evicted gets the same group and backend while
/// the weights and tables are unchanged.
pub const fn flow_hash(key: &FlowKey) -> u32 {
    let mut h = SEED;
    h = mix(h, key.src_addr[0]);
    h = mix(h, key.src_addr[1]);
    h = mix(h, key.src_addr[2]);
    h = mix(h, key.src_addr[3]);
    h = mix(h, key.dst_addr[0]);
    h = mix(h, key.dst_addr[1]);
    h = mix(h, key.dst_addr[2]);
    h = mix(h, key.dst_addr[3]);
    h = mix(h, ((key.src_port as u32) << 16) | key.dst_port as u32);
    h = mix(h, ((key.proto as u32) << 8) | key.family as u32);
    // murmur3 mixes in the input length (bytes) before finalising.
    fmix(h ^ size_of::<FlowKey>() as u32)
}

/// The group a new flow with `hash` goes to, as (index into `ServiceValue::groups`, group id), or
/// `None` when no group takes new flows (total weight 0).
///
/// The flow's point `hash % total` falls in exactly one group's interval
/// `[cumulative[i-1], cumulative[i])`; a group of weight 0 has an empty interval.
#[expect(
    clippy::inline_always,
    reason = "the kernel build must inline this into the program for the verifier"
)]
#[inline(always)]
pub fn pick_group(service: &ServiceValue, hash: u32) -> Option<(usize, u32)> {
    let total = service.total_weight();
    if total == 0 {
        return None;
    }
    let point = hash % total;
    let count = service.group_count as usize;
    // Constant indices only (the loop unrolls), see `ServiceValue::total_weight`.
    let mut i = 0;
    while i < MAX_GROUPS_PER_SERVICE {
        if i < count && point < service.cumulative[i] {
            return Some((i, service.groups[i]));
        }
        i += 1;
    }
    None
}

/// Slot of a group's Maglev table a flow with `hash` reads. Derived from the flow hash through a
/// second mix so that the slot is independent of the group choice.
#[expect(
    clippy::inline_always,
    reason = "the kernel build must inline this into the program for the verifier"
)]
#[inline(always)]
pub const fn maglev_slot(hash: u32) -> u32 {
    fmix(hash ^ 0x9e37_79b9) % MAGLEV_TABLE_SIZE
}

/// Builds `ServiceValue::cumulative` from per-group effective weights (basis points). Returns
/// `None` if there are more than `MAX_GROUPS_PER_SERVICE` groups or a weight exceeds
/// `WEIGHT_SCALE`.
pub fn cumulative_weights(weights: &[u32]) -> Option<[u32; MAX_GROUPS_PER_SERVICE]> {
    if weights.len() > MAX_GROUPS_PER_SERVICE {
        return None;
    }
    let mut out = [0; MAX_GROUPS_PER_SERVICE];
    let mut sum = 0u32;
    for (slot, &w) in out.iter_mut().zip(weights) {
        if w > WEIGHT_SCALE {
            return None;
        }
        sum += w;
        *slot = sum;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn service(weights: &[u32]) -> ServiceValue {
        ServiceValue {
            service_id: 1,
            group_count: weights.len() as u32,
            groups: [0; MAX_GROUPS_PER_SERVICE],
            cumulative: cumulative_weights(weights).unwrap(),
        }
    }

    /// Counts, over every point of `0..total`, which group the point lands in. `pick_group`
    /// reduces any hash to such a point, so this is the exact split.
    fn exact_split(s: &ServiceValue) -> [u32; MAX_GROUPS_PER_SERVICE] {
        let mut n = [0; MAX_GROUPS_PER_SERVICE];
        for point in 0..s.total_weight() {
            n[pick_group(s, point).unwrap().0] += 1;
        }
        n
    }

    #[test]
    fn weight_zero_gets_nothing() {
        let s = service(&[10_000, 0]);
        assert_eq!(exact_split(&s)[..2], [10_000, 0]);
        let s = service(&[0, 10_000]);
        assert_eq!(exact_split(&s)[..2], [0, 10_000]);
    }

    #[test]
    fn one_basis_point_gets_exactly_one_in_ten_thousand() {
        let s = service(&[9_999, 1]);
        assert_eq!(exact_split(&s)[..2], [9_999, 1]);
        assert_eq!(pick_group(&s, 9_999).map(|g| g.0), Some(1));
        assert_eq!(pick_group(&s, 9_998).map(|g| g.0), Some(0));
        assert_eq!(
            pick_group(&s, 19_999).map(|g| g.0),
            Some(1),
            "hash wraps modulo the total"
        );
    }

    #[test]
    fn all_zero_or_no_group_takes_no_flow() {
        assert_eq!(pick_group(&service(&[0, 0]), 12345), None);
        assert_eq!(pick_group(&service(&[]), 12345), None);
        let mut bad = service(&[10_000]);
        bad.group_count = MAX_GROUPS_PER_SERVICE as u32 + 1;
        assert_eq!(
            pick_group(&bad, 1),
            None,
            "a corrupt group count is no group"
        );
    }

    #[test]
    fn weights_not_summing_to_scale_split_in_proportion() {
        let s = service(&[30, 10]);
        assert_eq!(exact_split(&s)[..2], [30, 10]);
    }

    #[test]
    fn cumulative_rejects_out_of_range() {
        assert!(cumulative_weights(&[10_001]).is_none());
        assert!(cumulative_weights(&[1; MAX_GROUPS_PER_SERVICE + 1]).is_none());
        assert_eq!(cumulative_weights(&[5, 0, 7]).unwrap()[..3], [5, 5, 12]);
    }

    #[test]
    fn hash_of_sequential_ports_splits_evenly() {
        // Clients open connections from consecutive ephemeral ports: a 90/10 split over 20,000
        // of them must land within half a point of 10%.
        let s = service(&[9_000, 1_000]);
        let mut v2 = 0;
        for port in 30_000u16..50_000 {
            let key = FlowKey {
                src_addr: [u32::from_be_bytes([203, 0, 113, 7]).to_be(), 0, 0, 0],
                dst_addr: [u32::from_be_bytes([192, 0, 2, 10]).to_be(), 0, 0, 0],
                src_port: port.to_be(),
                dst_port: 80u16.to_be(),
                proto: crate::PROTO_TCP,
                family: crate::FAMILY_V4,
                _pad: [0; 2],
            };
            if pick_group(&s, flow_hash(&key)).map(|g| g.0) == Some(1) {
                v2 += 1;
            }
        }
        let share = f64::from(v2) / 20_000.0;
        assert!((share - 0.10).abs() < 0.005, "v2 share {share}");
    }

    #[test]
    fn maglev_slot_is_in_range_and_spread() {
        let mut seen = [false; 64];
        for h in 0..100_000u32 {
            let slot = maglev_slot(h);
            assert!(slot < MAGLEV_TABLE_SIZE);
            seen[(slot % 64) as usize] = true;
        }
        assert!(seen.iter().all(|s| *s));
    }
}
