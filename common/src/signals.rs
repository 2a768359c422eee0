//! What the kernel measures per backend for the canary judge and the metrics: connect latency,
//! time to first byte and flow duration as histograms (`histogram`), resets from the backend on
//! established flows, and flows a paced drain ended. Failed attempts are `counters`'
//! (`refused_flows`, plus the daemon's unanswered count).
//!
//! # Where the times come from
//!
//! - connect latency: the client's first SYN forwarded (the flow's entry created) to the
//!   backend's SYN-ACK. A retransmitted SYN does not restart it, so a lost SYN shows as the
//!   retransmission delay the client really waited.
//! - time to first byte: the client's first payload segment to the backend's first payload
//!   segment. A backend that speaks first (SMTP, SSH) has none for that flow.
//! - flow duration: the entry's creation to its close (the backend's FIN or RST, or a client RST
//!   the backend accepts), in the entry's ticks (about a millisecond).
//!
//! The start of the two latencies waits in `VEER_FLOW_TIMES`, keyed by the flow, only until its
//! answer: the flow entry keeps its size and the established path reads nothing more than a bit
//! of the entry it already holds. A flow whose start was not seen (a mid-flow miss) measures
//! nothing.

use crate::{histogram::BackendHistograms, pod};

/// When a flow's pending measurement started: the first SYN (until the SYN-ACK) or the first
/// request payload (until the first response payload). `VEER_FLOW_TIMES`' value.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FlowTimes {
    /// `bpf_ktime_get_ns()` at the start. Host byte order.
    pub start_ns: u64,
}
const _: () = assert!(size_of::<FlowTimes>() == 8);

/// One backend's signals (a per-CPU value of `VEER_BE_SIGNALS`, indexed by backend id).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BackendSignals {
    /// RSTs from the backend on established flows.
    pub resets: u64,
    /// Flows a paced drain ended (the backend's answer to the daemon's probe turned into the
    /// client's RST).
    pub ended: u64,
    /// Connect latency, time to first byte and flow duration.
    pub histograms: BackendHistograms,
}
/// 5272 bytes per backend and CPU.
const _: () = assert!(size_of::<BackendSignals>() == 16 + 3 * 1752);

pod!(FlowTimes, BackendSignals);

impl core::ops::AddAssign<&BackendSignals> for BackendSignals {
    /// Adds another CPU's (or backend's) signals.
    fn add_assign(&mut self, o: &BackendSignals) {
        self.resets = self.resets.wrapping_add(o.resets);
        self.ended = self.ended.wrapping_add(o.ended);
        self.histograms += &o.histograms;
    }
}

impl BackendSignals {
    /// What was recorded since `earlier`, a snapshot of the same counters (see
    /// `Histogram::since` for a reset in between).
    #[must_use]
    pub fn since(&self, earlier: &BackendSignals) -> BackendSignals {
        let reset = self.resets < earlier.resets || self.ended < earlier.ended;
        let counter = |now: u64, then: u64| if reset { now } else { now - then };
        BackendSignals {
            resets: counter(self.resets, earlier.resets),
            ended: counter(self.ended, earlier.ended),
            histograms: BackendHistograms {
                connect: self.histograms.connect.since(&earlier.histograms.connect),
                first_byte: self
                    .histograms
                    .first_byte
                    .since(&earlier.histograms.first_byte),
                duration: self.histograms.duration.since(&earlier.histograms.duration),
            },
        }
    }
}
