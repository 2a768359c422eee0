//! Maglev lookup tables (Eisenbud et al., NSDI 2016), built in user space and swapped into the
//! kernel whole. Pure: no maps, no I/O.
//!
//! Each backend's preference list is derived from a stable hash of its address and port (not of
//! its numeric id), so a table depends only on the set of backends: a daemon restart, or ids
//! being reassigned, rebuilds the same table, and adding or removing one backend of N moves about
//! 1/N of the slots.

use std::net::SocketAddr;

/// FNV-1a 64 over `bytes`, starting from `basis`.
fn fnv1a(basis: u64, bytes: &[u8]) -> u64 {
    bytes.iter().fold(basis, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01B3)
    })
}

fn addr_bytes(addr: &SocketAddr) -> Vec<u8> {
    let mut out = match addr.ip() {
        std::net::IpAddr::V4(ip) => ip.octets().to_vec(),
        std::net::IpAddr::V6(ip) => ip.octets().to_vec(),
    };
    out.extend_from_slice(&addr.port().to_be_bytes());
    out
}

/// Builds a table of `size` slots (`size` must be prime) over `backends` (id, address). Slot
/// values are backend ids; an empty `backends` gives a table of zeros (no backend).
pub fn build(backends: &[(u32, SocketAddr)], size: u32) -> Vec<u32> {
    let m = u64::from(size);
    let mut table = vec![0u32; size as usize];
    if backends.is_empty() {
        return table;
    }
    // Sort by address so the table is independent of the order backends are listed in.
    let mut sorted: Vec<_> = backends.to_vec();
    sorted.sort_by_key(|(_, a)| *a);
    let perms: Vec<(u64, u64)> = sorted
        .iter()
        .map(|(_, addr)| {
            let bytes = addr_bytes(addr);
            let offset = fnv1a(0xCBF2_9CE4_8422_2325, &bytes) % m;
            let skip = fnv1a(0x8422_2325_CBF2_9CE4, &bytes) % (m - 1) + 1;
            (offset, skip)
        })
        .collect();
    let mut next = vec![0u64; sorted.len()];
    let mut filled = 0u64;
    let mut taken = vec![false; size as usize];
    'fill: loop {
        for (i, (offset, skip)) in perms.iter().enumerate() {
            let mut slot = ((offset + next[i] * skip) % m) as usize;
            while taken[slot] {
                next[i] += 1;
                slot = ((offset + next[i] * skip) % m) as usize;
            }
            taken[slot] = true;
            table[slot] = sorted[i].0;
            next[i] += 1;
            filled += 1;
            if filled == m {
                break 'fill;
            }
        }
    }
    table
}

/// Number of slots whose backend differs between two tables of the same size.
pub fn moved_slots(old: &[u32], new: &[u32]) -> usize {
    old.iter().zip(new).filter(|(a, b)| a != b).count()
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use veer_common::maps::MAGLEV_TABLE_SIZE;

    use super::*;

    fn backends(n: u32) -> Vec<(u32, SocketAddr)> {
        (1..=n)
            .map(|i| (i, SocketAddr::from(([198, 51, 100, i as u8], 8080))))
            .collect()
    }

    fn shares(table: &[u32]) -> HashMap<u32, usize> {
        let mut m = HashMap::new();
        for id in table {
            *m.entry(*id).or_default() += 1;
        }
        m
    }

    #[test]
    fn every_slot_is_filled_and_balanced_within_one_percent() {
        for n in [1, 2, 3, 7, 10, 50, 100] {
            let t = build(&backends(n), MAGLEV_TABLE_SIZE);
            let s = shares(&t);
            assert_eq!(s.len(), n as usize, "{n} backends");
            assert!(!s.contains_key(&0), "no empty slot with {n} backends");
            let max = *s.values().max().unwrap() as f64;
            let min = *s.values().min().unwrap() as f64;
            assert!(
                (max - min) / min <= 0.01,
                "{n} backends: max {max} min {min}"
            );
        }
    }

    #[test]
    fn removing_one_of_n_moves_about_one_nth() {
        for n in [5u32, 10, 20] {
            let all = backends(n);
            let before = build(&all, MAGLEV_TABLE_SIZE);
            let after = build(&all[1..], MAGLEV_TABLE_SIZE);
            let moved = moved_slots(&before, &after) as f64 / f64::from(MAGLEV_TABLE_SIZE);
            let ideal = 1.0 / f64::from(n);
            // Slots of the removed backend must move; Maglev moves a few more.
            assert!(moved >= ideal * 0.99, "n={n}: moved {moved} < 1/n");
            assert!(moved <= ideal * 1.6, "n={n}: moved {moved}, ideal {ideal}");
            // And no slot that belonged to a remaining backend went to another remaining one
            // more than a small fraction of the time.
            let stolen = before
                .iter()
                .zip(&after)
                .filter(|(b, a)| **b != 1 && b != a)
                .count() as f64
                / f64::from(MAGLEV_TABLE_SIZE);
            assert!(
                stolen <= ideal * 0.6,
                "n={n}: {stolen} of slots moved between survivors"
            );
        }
    }

    #[test]
    fn table_ignores_listing_order_and_ids_follow_addresses() {
        let mut b = backends(4);
        let t1 = build(&b, MAGLEV_TABLE_SIZE);
        b.reverse();
        assert_eq!(t1, build(&b, MAGLEV_TABLE_SIZE));
    }

    #[test]
    fn no_backend_is_all_zero() {
        assert!(build(&[], 7).iter().all(|id| *id == 0));
    }
}
