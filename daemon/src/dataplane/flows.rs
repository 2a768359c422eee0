//! Conntrack upkeep: idle flows of both tables expire by state, connection attempts the backend
//! left unanswered are found, and the active flows of each backend are counted, exactly, from one
//! scan of the tables.
//!
//! "Active" is anything but closing: a TCP flow the backend ended (or a client RST it accepts)
//! is over, so a drain is over as soon as its last flow closes, not when the closing entry
//! expires.
//!
//! # Expiry and live flows
//!
//! A scan is not one instant: a packet may refresh an entry after the scan read it. Deleting
//! what the scan saw as expired would then delete a live flow (its next packet becomes a mid-flow
//! miss, steered by today's weights). So every expired entry is read again right before it is
//! deleted, and kept if it changed (`Maps::expire_flow`); the window left is between that read
//! and the delete.
//!
//! # Exact counts across two tables
//!
//! `VEER_NEWFLOWS` is read before `VEER_FLOWS`. A promotion inserts into `VEER_FLOWS` before it
//! deletes from `VEER_NEWFLOWS`, so a flow promoted during the scan is seen in one table or both,
//! never in neither; the keys of `VEER_NEWFLOWS`' TCP entries are remembered so a flow seen twice
//! is counted once.

use std::collections::{BTreeSet, HashMap, HashSet};

use veer_common::flow::{
    BackendKey, FlowEntry, FlowKey, RevNatValue, STATE_CLOSING, STATE_ESTABLISHED, STATE_MIDFLOW,
    STATE_SYN, STATE_SYN_ACKED, tick, ticks_ceil, ticks_since,
};

use super::{
    DataplaneError,
    maps::{Expiry, FlowTable, Maps},
};
use crate::model::Timeouts;

/// `CLOCK_MONOTONIC` in nanoseconds: the clock of `bpf_ktime_get_ns` (and, a tick coarser, of
/// `bpf_ktime_get_coarse_ns`).
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into the timespec we own; CLOCK_MONOTONIC always exists.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &raw mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// The current tick of the flow entries' clock.
pub fn now_tick() -> u32 {
    tick(monotonic_ns())
}

/// How long an entry in `state` may stay idle, in ticks.
fn timeout_ticks(state: u8, t: &Timeouts) -> u64 {
    let d = match state {
        STATE_SYN | STATE_SYN_ACKED => t.tcp_syn,
        // A mid-flow miss may be a live flow whose entry was lost: it idles like one.
        STATE_ESTABLISHED | STATE_MIDFLOW => t.tcp_established,
        STATE_CLOSING => t.tcp_closing,
        _ => t.udp,
    };
    ticks_ceil(d.as_nanos().try_into().unwrap_or(u64::MAX))
}

/// Whether an entry has been idle past its state's timeout at tick `now`.
pub fn is_expired(e: &FlowEntry, now: u32, t: &Timeouts) -> bool {
    u64::from(ticks_since(now, e.last_seen)) > timeout_ticks(e.state, t)
}

/// A connection attempt the backend has not answered within this long (no SYN-ACK, no RST)
/// counts as a failed attempt of the backend.
pub const CONNECT_TIMEOUT_NS: u64 = 3_000_000_000;

/// Whether an entry is a connection attempt its backend left unanswered at tick `now`.
pub fn is_unanswered(e: &FlowEntry, now: u32) -> bool {
    e.state == STATE_SYN && u64::from(ticks_since(now, e.created)) > ticks_ceil(CONNECT_TIMEOUT_NS)
}

/// Entries and active flows counted from one scan of both tables.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Census {
    /// Active flows per backend id (each flow once).
    pub active: HashMap<u32, u64>,
    /// Entries in `VEER_FLOWS`.
    pub flows: u64,
    /// Entries in `VEER_NEWFLOWS`.
    pub new_flows: u64,
}

/// Counts one flow seen by a scan into `census`, once even when it is seen in both tables.
struct Counter {
    census: Census,
    new_tcp: HashSet<FlowKey>,
}

impl Counter {
    fn new() -> Self {
        Self {
            census: Census::default(),
            new_tcp: HashSet::new(),
        }
    }

    /// Counts an entry left in `table` (scans read `VEER_NEWFLOWS` first).
    fn count(&mut self, table: FlowTable, key: &FlowKey, e: &FlowEntry) {
        let twice = match table {
            FlowTable::New => {
                self.census.new_flows += 1;
                // Only TCP entries can be promoted while the scan runs.
                if key.proto == veer_common::PROTO_TCP && e.state != STATE_CLOSING {
                    self.new_tcp.insert(*key);
                }
                false
            }
            FlowTable::Flows => {
                self.census.flows += 1;
                self.new_tcp.contains(key)
            }
        };
        if e.is_active() && !twice {
            *self.census.active.entry(e.backend_id).or_default() += 1;
        }
    }
}

/// Active flows per backend id and the entries of each table, from one streaming scan.
pub fn census(maps: &Maps) -> Result<Census, DataplaneError> {
    let mut c = Counter::new();
    maps.for_each_flow(|table, k, e| c.count(table, k, e))?;
    Ok(c.census)
}

/// VIPs (and port) that live flows of each backend were addressed to.
pub type LiveVips = HashMap<BackendKey, BTreeSet<([u32; 4], u16)>>;

/// The VIP a flow was addressed to, as a reply restores it.
pub fn vip_of(key: &FlowKey) -> RevNatValue {
    RevNatValue {
        vip: key.dst_addr,
        port: key.dst_port,
        _pad: [0; 2],
    }
}

/// What one upkeep pass did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Upkeep {
    /// SYN entries whose backend has not answered within `CONNECT_TIMEOUT_NS`: (flow, backend).
    pub unanswered: Vec<(FlowKey, u32)>,
    /// Every flow key left in SYN state (to forget unanswered flows that moved on).
    pub syn: HashSet<FlowKey>,
    /// Entries removed.
    pub expired: u64,
    /// Entries the scan saw expired that a packet refreshed before their deletion: kept.
    pub refreshed: u64,
    /// Entries and active flows after the pass.
    pub census: Census,
    /// The VIPs live flows need their backends' replies to restore.
    pub live_vips: LiveVips,
    /// Socket flows of clients on the node expired (unconnected UDP sockets gone idle).
    pub socket_flows_expired: u64,
}

/// Removes expired entries of both tables and counts what is left. One streaming scan; only the
/// expired entries, the SYN-state keys and the TCP keys of `VEER_NEWFLOWS` are kept in memory.
pub fn upkeep(maps: &mut Maps, t: &Timeouts, now: u32) -> Result<Upkeep, DataplaneError> {
    let mut out = Upkeep::default();
    let mut counter = Counter::new();
    let mut expired: Vec<(FlowTable, FlowKey, FlowEntry)> = Vec::new();
    let mut left = |out: &mut Upkeep, table, key: &FlowKey, e: &FlowEntry| {
        counter.count(table, key, e);
        if e.state == STATE_SYN {
            out.syn.insert(*key);
            if is_unanswered(e, now) {
                out.unanswered.push((*key, e.backend_id));
            }
        }
        out.live_vips
            .entry(BackendKey::of_flow(key, e))
            .or_default()
            .insert((key.dst_addr, key.dst_port));
    };
    maps.for_each_flow(|table, key, e| {
        if is_expired(e, now, t) {
            expired.push((table, *key, *e));
        } else {
            left(&mut out, table, key, e);
        }
    })?;
    for (table, key, seen) in &expired {
        match maps.expire_flow(*table, key, seen)? {
            Expiry::Deleted => out.expired += 1,
            Expiry::Kept(now_entry) => {
                out.refreshed += 1;
                left(&mut out, *table, key, &now_entry);
            }
            Expiry::Gone => {}
        }
    }
    out.census = counter.census;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use veer_common::flow::STATE_UDP;

    use super::*;

    fn secs(s: u64) -> u32 {
        tick(s * 1_000_000_000)
    }

    #[test]
    fn each_state_has_its_own_timeout() {
        let t = Timeouts {
            tcp_syn: Duration::from_secs(5),
            tcp_established: Duration::from_secs(100),
            tcp_closing: Duration::from_secs(2),
            udp: Duration::from_secs(30),
        };
        let start = secs(1_000);
        let e = |state| FlowEntry {
            state,
            last_seen: start,
            ..FlowEntry::default()
        };
        for (state, limit) in [
            (STATE_SYN, 5),
            (STATE_SYN_ACKED, 5),
            (STATE_ESTABLISHED, 100),
            (STATE_MIDFLOW, 100),
            (STATE_CLOSING, 2),
            (STATE_UDP, 30),
        ] {
            let at_limit = start + ticks_ceil(limit * 1_000_000_000) as u32;
            assert!(
                !is_expired(&e(state), at_limit, &t),
                "state {state} at its limit"
            );
            assert!(
                is_expired(&e(state), at_limit + 1, &t),
                "state {state} past its limit"
            );
        }
        assert!(
            !is_expired(&e(STATE_SYN), start - 10, &t),
            "an entry touched after `now` was read is not expired"
        );
        assert!(!e(STATE_CLOSING).is_active());
        for state in [
            STATE_UDP,
            STATE_SYN,
            STATE_SYN_ACKED,
            STATE_MIDFLOW,
            STATE_ESTABLISHED,
        ] {
            assert!(e(state).is_active(), "state {state}");
        }
    }

    #[test]
    fn an_attempt_is_unanswered_three_seconds_after_its_first_syn() {
        let e = |state| FlowEntry {
            state,
            created: secs(100),
            // Retransmits refresh last-seen; the attempt's age counts from the first SYN.
            last_seen: secs(103),
            ..FlowEntry::default()
        };
        assert!(!is_unanswered(&e(STATE_SYN), secs(102)));
        assert!(is_unanswered(&e(STATE_SYN), secs(104)));
        assert!(
            !is_unanswered(&e(STATE_SYN_ACKED), secs(104)),
            "a SYN-ACK is an answer"
        );
    }

    #[test]
    fn a_flow_in_both_tables_mid_promotion_counts_once() {
        let key = FlowKey {
            proto: veer_common::PROTO_TCP,
            src_port: 7,
            ..FlowKey::default()
        };
        let e = FlowEntry {
            state: STATE_SYN_ACKED,
            backend_id: 3,
            ..FlowEntry::default()
        };
        let mut c = Counter::new();
        c.count(FlowTable::New, &key, &e);
        c.count(
            FlowTable::Flows,
            &key,
            &FlowEntry {
                state: STATE_ESTABLISHED,
                ..e
            },
        );
        let other = FlowKey { src_port: 8, ..key };
        c.count(FlowTable::Flows, &other, &e);
        assert_eq!(c.census.active.get(&3), Some(&2));
        assert_eq!((c.census.flows, c.census.new_flows), (2, 1));
    }
}
