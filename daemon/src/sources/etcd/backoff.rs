//! Retry delays: exponential from `min` to `max`, each delay jittered into its upper half so that
//! a fleet that lost etcd at the same moment does not come back at the same moment. The jitter
//! comes from a seed (the node name), so it needs no random source and is reproducible.

use std::time::Duration;

/// Retry delays.
#[derive(Clone, Debug)]
pub struct Backoff {
    min: Duration,
    max: Duration,
    seed: u64,
    attempt: u32,
}

impl Backoff {
    /// Delays from `min` to `max`, jittered by `seed`.
    pub fn new(min: Duration, max: Duration, seed: &str) -> Backoff {
        // FNV-1a: a stable, dependency-free hash of the seed text.
        let seed = seed.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
        });
        Backoff {
            min,
            max: max.max(min),
            seed,
            attempt: 0,
        }
    }

    /// The next delay: half the current step plus a jitter of up to the other half.
    pub fn next_delay(&mut self) -> Duration {
        let step = self
            .min
            .saturating_mul(1_u32 << self.attempt.min(20))
            .min(self.max);
        self.attempt = self.attempt.saturating_add(1);
        let half = step / 2;
        let jitter_ns = u64::try_from(half.as_nanos()).unwrap_or(u64::MAX);
        let r = splitmix64(self.seed ^ u64::from(self.attempt));
        half + Duration::from_nanos(if jitter_ns == 0 {
            0
        } else {
            r % (jitter_ns + 1)
        })
    }

    /// Back to `min` (after a success).
    pub fn reset(&mut self) {
        self.attempt = 0;
    }
}

fn splitmix64(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn delays_grow_to_the_cap_within_their_jitter_band() {
        let mut b = Backoff::new(100 * MS, 2000 * MS, "edge-1");
        let steps = [100, 200, 400, 800, 1600, 2000, 2000, 2000];
        for step in steps {
            let d = b.next_delay();
            let step = step * MS;
            assert!(
                d >= step / 2 && d <= step,
                "{d:?} outside {:?}..={step:?}",
                step / 2
            );
        }
        b.reset();
        assert!(b.next_delay() <= 100 * MS);
    }

    #[test]
    fn nodes_spread_out() {
        let delays: std::collections::BTreeSet<Duration> = (0..50)
            .map(|i| Backoff::new(MS * 1000, MS * 1000, &format!("edge-{i}")).next_delay())
            .collect();
        assert!(delays.len() > 40, "only {} distinct delays", delays.len());
    }

    #[test]
    fn huge_attempt_counts_do_not_overflow() {
        let mut b = Backoff::new(Duration::from_secs(1), Duration::from_secs(30), "x");
        for _ in 0..200 {
            assert!(b.next_delay() <= Duration::from_secs(30));
        }
    }
}
