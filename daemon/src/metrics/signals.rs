//! The kernel's signals per backend and per group as Prometheus histograms and counters:
//! connect latency, time to first byte and flow duration (seconds), resets from backends on
//! established flows, and flows a paced drain ended.
//!
//! The kernel keeps 8 buckets per power of two (`veer_common::histogram`); a scrape gets one
//! bucket per power of two (`le` = 2^k units, where the kernel's buckets have an exact edge), so
//! a backend's three histograms are 3 × 29 bucket series, not 3 × 218. The judge works on the
//! full resolution.

use std::{collections::BTreeMap, net::SocketAddr, sync::OnceLock};

use prometheus_client::{
    encoding::{EncodeMetric, MetricEncoder, NoLabelSet},
    metrics::{MetricType, TypedMetric, counter::Counter, family::Family},
    registry::Registry,
};
use veer_common::{
    histogram::{
        DURATION_UNIT_SHIFT, Histogram, LATENCY_UNIT_SHIFT, MAX_EXPONENT, MIN_EXPONENT, SUB_BUCKETS,
    },
    signals::BackendSignals,
};

use super::{BackendLabels, GroupLabels};

/// A histogram read from the kernel, encoded at scrape time.
#[derive(Debug, Default)]
struct Snapshot(OnceLock<Encoded>);

#[derive(Debug)]
struct Encoded {
    sum: f64,
    count: u64,
    /// (upper bound in seconds, count in this bucket alone); `f64::MAX` is `+Inf`.
    buckets: Vec<(f64, u64)>,
}

impl TypedMetric for Snapshot {
    const TYPE: MetricType = MetricType::Histogram;
}

impl EncodeMetric for Snapshot {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        match self.0.get() {
            Some(e) => encoder.encode_histogram::<NoLabelSet>(e.sum, e.count, &e.buckets, None),
            None => Ok(()),
        }
    }

    fn metric_type(&self) -> MetricType {
        Self::TYPE
    }
}

/// A kernel histogram (unit `2^unit_shift` ns) as Prometheus buckets: one per power of two,
/// `le` in seconds.
fn encoded(h: &Histogram, unit_shift: u32) -> Encoded {
    let unit = f64::from(1u32 << unit_shift) / 1e9;
    let mut buckets = Vec::with_capacity((MAX_EXPONENT - MIN_EXPONENT + 2) as usize);
    // The underflow bucket ends at 2^MIN_EXPONENT units.
    buckets.push(((1u64 << MIN_EXPONENT) as f64 * unit, h.counts[0]));
    for (i, block) in h.counts[1..h.counts.len() - 1]
        .chunks(SUB_BUCKETS as usize)
        .enumerate()
    {
        let le = (1u64 << (MIN_EXPONENT + 1 + i as u32)) as f64 * unit;
        buckets.push((le, block.iter().sum()));
    }
    buckets.push((f64::MAX, h.counts[h.counts.len() - 1]));
    Encoded {
        sum: h.sum as f64 * unit,
        count: h.count(),
        buckets,
    }
}

/// Registers the signals of every backend (`(service, group, backend, signals)`), and of every
/// group (its backends summed).
pub(super) fn register(
    reg: &mut Registry,
    backends: &[(String, String, SocketAddr, BackendSignals)],
) {
    let mut groups: BTreeMap<(String, String), BackendSignals> = BTreeMap::new();
    for (s, g, _, sig) in backends {
        *groups.entry((s.clone(), g.clone())).or_default() += sig;
    }

    let by_backend = backends.iter().map(|(s, g, b, sig)| {
        (
            BackendLabels {
                service: s.clone(),
                group: g.clone(),
                backend: b.to_string(),
            },
            sig,
        )
    });
    family(reg, "backend", "a backend", by_backend);
    let by_group = groups.iter().map(|((s, g), sig)| {
        (
            GroupLabels {
                service: s.clone(),
                group: g.clone(),
            },
            sig,
        )
    });
    family(reg, "group", "a group's backends", by_group);
}

fn family<'a, L>(
    reg: &mut Registry,
    prefix: &str,
    whose: &str,
    series: impl Iterator<Item = (L, &'a BackendSignals)>,
) where
    L: Clone + std::hash::Hash + Eq + std::fmt::Debug + Send + Sync + 'static,
    L: prometheus_client::encoding::EncodeLabelSet,
{
    let connect = Family::<L, Snapshot>::default();
    let first_byte = Family::<L, Snapshot>::default();
    let duration = Family::<L, Snapshot>::default();
    let resets = Family::<L, Counter>::default();
    let ended = Family::<L, Counter>::default();
    for (l, sig) in series {
        let h = &sig.histograms;
        // Each label set comes once: the snapshot is filled here, never replaced.
        connect
            .get_or_create(&l)
            .0
            .get_or_init(|| encoded(&h.connect, LATENCY_UNIT_SHIFT));
        first_byte
            .get_or_create(&l)
            .0
            .get_or_init(|| encoded(&h.first_byte, LATENCY_UNIT_SHIFT));
        duration
            .get_or_create(&l)
            .0
            .get_or_init(|| encoded(&h.duration, DURATION_UNIT_SHIFT));
        resets.get_or_create(&l).inc_by(sig.resets);
        ended.get_or_create(&l).inc_by(sig.ended);
    }
    reg.register(
        format!("{prefix}_connect_latency_seconds"),
        format!(
            "Connect latency of {whose}: the client's first SYN forwarded to the backend's SYN-ACK"
        ),
        connect,
    );
    reg.register(
        format!("{prefix}_first_byte_seconds"),
        format!("Time to first byte of {whose}: the client's first payload to the backend's first payload"),
        first_byte,
    );
    reg.register(
        format!("{prefix}_flow_duration_seconds"),
        format!("Duration of {whose} established flows, from the first SYN to the close (about 1 ms resolution)"),
        duration,
    );
    reg.register(
        format!("{prefix}_resets"),
        format!("RSTs from {whose} on established flows"),
        resets,
    );
    reg.register(
        format!("{prefix}_drain_ended_flows"),
        format!("Flows of {whose} a paced drain ended with a reset to both ends"),
        ended,
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_powers_of_two_in_seconds_and_add_up() {
        let mut h = Histogram::EMPTY;
        for v in [500, 1_024, 1_500, 2_047, 2_048, 1_000_000, u64::MAX] {
            h.record(v);
        }
        let e = encoded(&h, LATENCY_UNIT_SHIFT);
        assert_eq!(e.count, 7);
        assert_eq!(e.buckets.len(), 29);
        assert_eq!(e.buckets.iter().map(|b| b.1).sum::<u64>(), 7);
        assert_eq!(e.buckets[0], (1_024e-9, 1), "500 ns");
        assert_eq!(e.buckets[1], (2_048e-9, 3), "1024, 1500 and 2047 ns");
        assert_eq!(e.buckets[2], (4_096e-9, 1), "2048 ns");
        assert_eq!(e.buckets[28], (f64::MAX, 1), "past 2^37 ns");
        let d = encoded(&h, DURATION_UNIT_SHIFT);
        assert!(
            (d.buckets[0].0 - 1_048_576e-9).abs() < 1e-15,
            "2^10 units of 1024 ns"
        );
    }
}
