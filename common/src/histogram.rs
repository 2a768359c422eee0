//! Log-linear histograms of latencies and durations, shared by the kernel programs (which record
//! into them) and the daemon (which sums, exports and judges them).
//!
//! # Layout
//!
//! Values are unsigned integers in a unit fixed per histogram (nanoseconds for latencies, see
//! [`LATENCY_UNIT_SHIFT`] and [`DURATION_UNIT_SHIFT`]). The range `[2^10, 2^37)` units is cut
//! into one block per power of two (27 blocks), each split into [`SUB_BUCKETS`] = 8 buckets of
//! equal width (HDR-histogram style; about the resolution of a Prometheus native histogram at
//! schema 3, which also has 8 buckets per power of two). Below the range is one underflow
//! bucket, above it one overflow bucket:
//!
//! | index | bucket (units) |
//! |---|---|
//! | 0 | `[0, 1024)` |
//! | `1 + 8*(e-10) + s` | `[2^e + s*2^(e-3), 2^e + (s+1)*2^(e-3))`, `e` in `10..=36`, `s` in `0..8` |
//! | 217 | `[2^37, ∞)` |
//!
//! For latencies in nanoseconds that is 1.024 µs to 137.4 s; for flow durations (unit 1.024 µs)
//! 1.05 ms to 39 h.
//!
//! # Error bound
//!
//! Inside the range, a bucket `[lo, hi)` has `(hi - lo) / lo <= 1/8`
//! ([`MAX_RELATIVE_WIDTH`]): a quantile known only to its bucket is known to within 12.5%, and
//! the bucket's midpoint is within 6.25% of any value in it ([`MAX_MIDPOINT_ERROR`]). The
//! underflow bucket only says "below 1024 units", the overflow bucket "at least 2^37 units".
//!
//! # Size
//!
//! A [`Histogram`] is 1752 bytes (218 `u64` counts and a `u64` sum); [`BackendHistograms`], the
//! three histograms of one backend, 5256 bytes per backend and CPU when kept per-CPU (for
//! example 1024 backends on 16 CPUs: 82 MiB). Counts are `u64` so that readers never deal with
//! wrap-around.
//!
//! # Kernel use
//!
//! BPF has no count-leading-zeros instruction (LLVM would expand `u64::leading_zeros` into a
//! long bit-twiddling sequence), so [`bucket_index`] finds the exponent with a fixed six-step
//! binary search: six compare-and-shift steps, no loop, no division. [`Histogram::record`]
//! compiles to about 75 BPF instructions that the verifier accepts as they are; it is meant to
//! run per flow event (SYN-ACK, first reply byte, close), not per packet.

use crate::pod;

/// Sub-buckets per power of two, as a bit count.
pub const SUB_BUCKET_BITS: u32 = 3;
/// Sub-buckets per power of two.
pub const SUB_BUCKETS: u32 = 1 << SUB_BUCKET_BITS;
/// The range starts at `2^MIN_EXPONENT` units; smaller values go to the underflow bucket.
pub const MIN_EXPONENT: u32 = 10;
/// The range ends at `2^MAX_EXPONENT` units (exclusive); larger values go to the overflow
/// bucket.
pub const MAX_EXPONENT: u32 = 37;
/// First value inside the range (1024 units).
pub const RANGE_START: u64 = 1 << MIN_EXPONENT;
/// First value of the overflow bucket (2^37 units).
pub const RANGE_END: u64 = 1 << MAX_EXPONENT;
/// Number of buckets: underflow, `SUB_BUCKETS` per power of two in the range, overflow.
pub const BUCKETS: usize = (2 + (MAX_EXPONENT - MIN_EXPONENT) * SUB_BUCKETS) as usize;
/// Index of the underflow bucket `[0, RANGE_START)`.
pub const UNDERFLOW: u32 = 0;
/// Index of the overflow bucket `[RANGE_END, ∞)`.
pub const OVERFLOW: u32 = BUCKETS as u32 - 1;
/// Largest `(hi - lo) / lo` of a bucket inside the range.
pub const MAX_RELATIVE_WIDTH: f64 = 1.0 / SUB_BUCKETS as f64;
/// Largest relative error of a bucket's midpoint as an estimate of a value in the bucket,
/// `|mid - v| / v`, inside the range.
pub const MAX_MIDPOINT_ERROR: f64 = 0.5 / SUB_BUCKETS as f64;

/// Latency histograms count nanoseconds: `value = ns >> LATENCY_UNIT_SHIFT`.
pub const LATENCY_UNIT_SHIFT: u32 = 0;
/// Flow-duration histograms count units of 1024 ns: `value = ns >> DURATION_UNIT_SHIFT`, so the
/// range covers 1.05 ms to 39 h.
pub const DURATION_UNIT_SHIFT: u32 = 10;

const _: () = assert!(BUCKETS == 218);
const _: () = assert!(MAX_EXPONENT < 64 && MIN_EXPONENT > SUB_BUCKET_BITS);

/// The bucket `value` falls in: `0..BUCKETS`.
///
/// No loop and no division, for the verifier (see the module doc): the exponent
/// `e = floor(log2(value))` comes from six halving steps, then the three bits below the leading
/// one pick the sub-bucket.
#[expect(
    clippy::inline_always,
    reason = "the kernel build must inline this into the program for the verifier"
)]
#[inline(always)]
pub const fn bucket_index(value: u64) -> u32 {
    index_u64(value) as u32
}

/// [`bucket_index`] in 64-bit arithmetic throughout. `Histogram::record` indexes with this
/// value directly: a `u32` result would be zero-extended into a second register after the
/// bounds check, and the verifier does not carry the check over to the copy ("unbounded
/// memory access", seen with LLVM 22).
#[expect(
    clippy::inline_always,
    reason = "the kernel build must inline this into the program for the verifier"
)]
#[inline(always)]
const fn index_u64(value: u64) -> u64 {
    if value < RANGE_START {
        return UNDERFLOW as u64;
    }
    if value >= RANGE_END {
        return OVERFLOW as u64;
    }
    // floor(log2(value)): value < 2^37, so 32 + 16 + 8 + 4 + 2 + 1 covers every exponent.
    let mut x = value;
    let mut e = 0u64;
    if x >= 1 << 32 {
        x >>= 32;
        e += 32;
    }
    if x >= 1 << 16 {
        x >>= 16;
        e += 16;
    }
    if x >= 1 << 8 {
        x >>= 8;
        e += 8;
    }
    if x >= 1 << 4 {
        x >>= 4;
        e += 4;
    }
    if x >= 1 << 2 {
        x >>= 2;
        e += 2;
    }
    if x >= 1 << 1 {
        e += 1;
    }
    // MIN_EXPONENT <= e < MAX_EXPONENT here, so the shift is in 7..=33 and the subtractions do
    // not wrap; `wrapping_*` keeps overflow-check code out of the kernel build.
    let sub = value.wrapping_shr(e.wrapping_sub(SUB_BUCKET_BITS as u64) as u32)
        & (SUB_BUCKETS as u64 - 1);
    1 + e.wrapping_sub(MIN_EXPONENT as u64) * SUB_BUCKETS as u64 + sub
}

/// The bounds `[lo, hi)` of bucket `index`, in the histogram's unit. The overflow bucket (and
/// any index past it) is `[RANGE_END, u64::MAX)`, where `u64::MAX` stands for "unbounded".
pub const fn bucket_bounds(index: u32) -> (u64, u64) {
    if index == UNDERFLOW {
        return (0, RANGE_START);
    }
    if index >= OVERFLOW {
        return (RANGE_END, u64::MAX);
    }
    let i = index - 1;
    let e = MIN_EXPONENT + i / SUB_BUCKETS;
    let sub = (i % SUB_BUCKETS) as u64;
    let width = 1u64 << (e - SUB_BUCKET_BITS);
    let lo = (1u64 << e) + sub * width;
    (lo, lo + width)
}

/// One histogram: a count per bucket and the sum of the recorded values. Per-CPU in the kernel;
/// user space sums the CPUs (and backends, for a group) with `+=`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Histogram {
    /// Values recorded in each bucket (see [`bucket_bounds`]).
    pub counts: [u64; BUCKETS],
    /// Sum of the recorded values, in the histogram's unit (wraps after 2^64, i.e. 584 years
    /// of nanoseconds).
    pub sum: u64,
}
const _: () = assert!(size_of::<Histogram>() == 1752);

/// The histograms of one backend (one per-CPU map value, so one lookup serves every event of a
/// flow).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BackendHistograms {
    /// Connect latency, nanoseconds: the client's first SYN forwarded to the backend's SYN-ACK.
    pub connect: Histogram,
    /// Time to first byte, nanoseconds: the client's first payload packet to the backend's
    /// first payload packet.
    pub first_byte: Histogram,
    /// Flow duration, units of 1024 ns ([`DURATION_UNIT_SHIFT`]): the first SYN (or first
    /// packet) to the first FIN or RST.
    pub duration: Histogram,
}
/// 5256 bytes per backend and CPU.
const _: () = assert!(size_of::<BackendHistograms>() == 3 * 1752);

pod!(Histogram, BackendHistograms);

impl Histogram {
    /// A histogram with nothing recorded.
    pub const EMPTY: Histogram = Histogram {
        counts: [0; BUCKETS],
        sum: 0,
    };

    /// Records one value (in the histogram's unit).
    #[expect(
        clippy::inline_always,
        reason = "the kernel build must inline this into the program for the verifier"
    )]
    #[inline(always)]
    pub fn record(&mut self, value: u64) {
        // `get_mut` is the bounds check the verifier needs for the variable index.
        if let Some(c) = self.counts.get_mut(index_u64(value) as usize) {
            *c += 1;
        }
        self.sum = self.sum.wrapping_add(value);
    }

    /// Number of values recorded.
    pub fn count(&self) -> u64 {
        self.counts.iter().fold(0u64, |a, &c| a.wrapping_add(c))
    }

    /// What was recorded since `earlier`, a snapshot of the same counters: the counts of a
    /// window. When a bucket went backwards the counters were reset in between (the map was
    /// recreated, or the slot given to another backend), and everything now in them was
    /// recorded since: the result is `self`, as Prometheus treats a counter reset.
    #[must_use]
    pub fn since(&self, earlier: &Histogram) -> Histogram {
        let mut out = Histogram::EMPTY;
        for ((o, now), then) in out.counts.iter_mut().zip(&self.counts).zip(&earlier.counts) {
            match now.checked_sub(*then) {
                Some(d) => *o = d,
                None => return *self,
            }
        }
        out.sum = self.sum.wrapping_sub(earlier.sum);
        out
    }
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram::EMPTY
    }
}

impl core::ops::AddAssign<&Histogram> for Histogram {
    /// Adds another CPU's (or backend's) histogram.
    fn add_assign(&mut self, o: &Histogram) {
        for (a, b) in self.counts.iter_mut().zip(&o.counts) {
            *a = a.wrapping_add(*b);
        }
        self.sum = self.sum.wrapping_add(o.sum);
    }
}

impl core::ops::AddAssign<&BackendHistograms> for BackendHistograms {
    /// Adds another CPU's (or backend's) histograms.
    fn add_assign(&mut self, o: &BackendHistograms) {
        self.connect += &o.connect;
        self.first_byte += &o.first_byte;
        self.duration += &o.duration;
    }
}

#[cfg(test)]
mod tests {
    extern crate std;

    use std::vec::Vec;

    use super::*;

    /// Every value worth checking: bucket edges and their neighbours, powers of two and their
    /// neighbours, and the ends of u64.
    fn probes() -> impl Iterator<Item = u64> {
        let edges = (0..BUCKETS as u32).flat_map(|i| {
            let (lo, hi) = bucket_bounds(i);
            [
                lo,
                lo.saturating_sub(1),
                lo + 1,
                hi,
                hi - 1,
                lo / 2 + hi / 2,
            ]
        });
        let powers = (0..64).flat_map(|e| {
            let p = 1u64 << e;
            [p - 1, p, p + 1, p + p / 3]
        });
        edges.chain(powers).chain([0, 1, u64::MAX - 1, u64::MAX])
    }

    #[test]
    fn every_value_lands_in_the_bucket_whose_bounds_contain_it() {
        for v in probes() {
            let i = bucket_index(v);
            assert!((i as usize) < BUCKETS, "{v} -> {i}");
            let (lo, hi) = bucket_bounds(i);
            assert!(
                lo <= v && (v < hi || i == OVERFLOW),
                "{v} -> bucket {i} = [{lo}, {hi})"
            );
        }
    }

    /// The same index computed with `ilog2` (count leading zeros, which BPF lacks).
    fn reference_index(v: u64) -> u32 {
        if v < RANGE_START {
            return UNDERFLOW;
        }
        if v >= RANGE_END {
            return OVERFLOW;
        }
        let e = v.ilog2();
        1 + (e - MIN_EXPONENT) * SUB_BUCKETS + ((v >> (e - SUB_BUCKET_BITS)) as u32 & 7)
    }

    #[test]
    fn the_binary_search_agrees_with_count_leading_zeros() {
        // splitmix64 over the whole u64 range, and again scaled into the histogram's range.
        let mut s = 0x5eed_u64;
        for _ in 0..200_000 {
            s = s.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = s;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^= z >> 31;
            for v in [z, z >> (z % 64), z % (RANGE_END * 2)] {
                assert_eq!(bucket_index(v), reference_index(v), "{v}");
            }
        }
        for v in probes() {
            assert_eq!(bucket_index(v), reference_index(v), "{v}");
        }
    }

    #[test]
    fn bucket_index_is_monotonic() {
        let mut values: Vec<u64> = probes().collect();
        values.sort_unstable();
        for w in values.windows(2) {
            assert!(
                bucket_index(w[0]) <= bucket_index(w[1]),
                "{} {}",
                w[0],
                w[1]
            );
        }
    }

    #[test]
    fn buckets_tile_the_whole_u64_range_without_gaps() {
        let mut expect_lo = 0;
        for i in 0..BUCKETS as u32 {
            let (lo, hi) = bucket_bounds(i);
            assert_eq!(lo, expect_lo, "bucket {i}");
            assert!(hi > lo);
            assert_eq!(bucket_index(lo), i);
            expect_lo = hi;
        }
        assert_eq!(expect_lo, u64::MAX);
        assert_eq!(bucket_bounds(OVERFLOW + 5), bucket_bounds(OVERFLOW));
    }

    #[test]
    fn covers_one_microsecond_to_one_hundred_seconds_of_nanoseconds() {
        assert_eq!(bucket_index(1_023), UNDERFLOW);
        assert!(bucket_index(1_024) > UNDERFLOW);
        assert!(bucket_index(100_000_000_000) < OVERFLOW, "100 s is inside");
        assert_eq!(bucket_index(137_438_953_472), OVERFLOW, "2^37 ns = 137.4 s");
        // Flow durations in 1024 ns units: 1.05 ms .. 39 h.
        let hours_39 = (39 * 3_600 * 1_000_000_000u64) >> DURATION_UNIT_SHIFT;
        assert!(bucket_index(hours_39) < OVERFLOW);
        assert_eq!(bucket_index(1_000_000 >> DURATION_UNIT_SHIFT), UNDERFLOW);
        assert!(bucket_index(1_100_000 >> DURATION_UNIT_SHIFT) > UNDERFLOW);
    }

    #[test]
    fn relative_error_is_bounded_inside_the_range() {
        let mut widest = 0.0f64;
        for i in 1..OVERFLOW {
            let (lo, hi) = bucket_bounds(i);
            let rel = (hi - lo) as f64 / lo as f64;
            assert!(rel <= MAX_RELATIVE_WIDTH + 1e-12, "bucket {i}: {rel}");
            widest = widest.max(rel);
            // The midpoint, against the worst value of the bucket (its low edge).
            let mid = (lo + hi) as f64 / 2.0;
            for v in [lo, hi - 1] {
                let err = (mid - v as f64).abs() / v as f64;
                assert!(err <= MAX_MIDPOINT_ERROR + 1e-12, "bucket {i}, {v}: {err}");
            }
        }
        assert!(
            (widest - MAX_RELATIVE_WIDTH).abs() < 1e-12,
            "the bound is tight"
        );
    }

    #[test]
    fn record_counts_sums_and_merges() {
        let mut h = Histogram::EMPTY;
        for v in [0, 1_500, 1_500, 2_000_000, u64::MAX] {
            h.record(v);
        }
        assert_eq!(h.count(), 5);
        assert_eq!(h.counts[0], 1);
        assert_eq!(h.counts[bucket_index(1_500) as usize], 2);
        assert_eq!(h.counts[OVERFLOW as usize], 1);
        assert_eq!(h.sum, 2_003_000u64.wrapping_add(u64::MAX));

        let earlier = h;
        h.record(1_500);
        let window = h.since(&earlier);
        assert_eq!(window.count(), 1);
        assert_eq!(window.sum, 1_500);
        let mut reset = Histogram::EMPTY;
        reset.record(7_000);
        assert_eq!(
            reset.since(&h),
            reset,
            "after a reset, everything counted was counted since"
        );

        let mut all = BackendHistograms::default();
        let cpu = BackendHistograms {
            connect: h,
            first_byte: window,
            duration: Histogram::EMPTY,
        };
        all += &cpu;
        all += &cpu;
        assert_eq!(all.connect.count(), 12);
        assert_eq!(all.first_byte.sum, 3_000);
    }
}
