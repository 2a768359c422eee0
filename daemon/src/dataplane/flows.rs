//! Conntrack upkeep: idle flows expire by state (TCP SYN / established / closing, UDP), and the
//! active flows of each backend are counted from one scan of the map.
//!
//! "Active" is SYN, established or UDP: a TCP flow that has seen FIN or RST is ending, so a
//! drain is over as soon as its last flow closes, not when the closing entry expires.

use std::collections::HashMap;

use veer_common::flow::{FlowEntry, FlowKey, STATE_CLOSING, STATE_ESTABLISHED, STATE_SYN};

use super::{DataplaneError, maps::Maps};
use crate::model::Timeouts;

/// `CLOCK_MONOTONIC` in nanoseconds: the clock of `bpf_ktime_get_ns`.
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into the timespec we own; CLOCK_MONOTONIC always exists.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &raw mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// Whether an entry counts as an active flow.
pub fn is_active(e: &FlowEntry) -> bool {
    e.state != STATE_CLOSING
}

/// How long an entry in `state` may stay idle.
fn timeout_ns(state: u8, t: &Timeouts) -> u64 {
    let d = match state {
        STATE_SYN => t.tcp_syn,
        STATE_ESTABLISHED => t.tcp_established,
        STATE_CLOSING => t.tcp_closing,
        _ => t.udp,
    };
    d.as_nanos().try_into().unwrap_or(u64::MAX)
}

/// Whether an entry has been idle past its state's timeout at `now_ns`.
pub fn is_expired(e: &FlowEntry, now_ns: u64, t: &Timeouts) -> bool {
    now_ns.saturating_sub(e.last_seen_ns) > timeout_ns(e.state, t)
}

/// A SYN entry idle this long is a connection attempt the backend did not answer.
pub const CONNECT_TIMEOUT_NS: u64 = 3_000_000_000;

/// What one upkeep pass did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Upkeep {
    /// SYN entries idle past `CONNECT_TIMEOUT_NS`: (flow, backend id).
    pub unanswered: Vec<(FlowKey, u32)>,
    /// Every flow key left in the map in SYN state (to forget unanswered flows that moved on).
    pub syn: std::collections::HashSet<FlowKey>,
    /// Entries removed.
    pub expired: u64,
    /// Active flows per backend id after the pass.
    pub active: HashMap<u32, u64>,
    /// Entries left in the map.
    pub entries: u64,
}

/// Active flows per backend id and the number of entries, from one streaming scan.
pub fn census(maps: &Maps) -> Result<(HashMap<u32, u64>, u64), DataplaneError> {
    let mut active: HashMap<u32, u64> = HashMap::new();
    let mut entries = 0;
    maps.for_each_flow(|_, e| {
        entries += 1;
        if is_active(e) {
            *active.entry(e.backend_id).or_default() += 1;
        }
    })?;
    Ok((active, entries))
}

/// Removes expired entries (and their reverse-NAT entries) and counts what is left. One
/// streaming scan; only the expired entries and the SYN-state keys are kept in memory.
pub fn upkeep(maps: &mut Maps, t: &Timeouts, now_ns: u64) -> Result<Upkeep, DataplaneError> {
    let mut out = Upkeep::default();
    let mut expired: Vec<(FlowKey, FlowEntry)> = Vec::new();
    maps.for_each_flow(|key, entry| {
        if is_expired(entry, now_ns, t) {
            expired.push((*key, *entry));
            return;
        }
        out.entries += 1;
        if entry.state == STATE_SYN {
            out.syn.insert(*key);
            if now_ns.saturating_sub(entry.last_seen_ns) > CONNECT_TIMEOUT_NS {
                out.unanswered.push((*key, entry.backend_id));
            }
        }
        if is_active(entry) {
            *out.active.entry(entry.backend_id).or_default() += 1;
        }
    })?;
    for (key, entry) in &expired {
        maps.remove_flow(key, entry)?;
    }
    out.expired = expired.len() as u64;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use veer_common::flow::STATE_UDP;

    use super::*;

    #[test]
    fn each_state_has_its_own_timeout() {
        let t = Timeouts {
            tcp_syn: Duration::from_secs(5),
            tcp_established: Duration::from_secs(100),
            tcp_closing: Duration::from_secs(2),
            udp: Duration::from_secs(30),
        };
        let s = 1_000_000_000;
        let e = |state| FlowEntry {
            state,
            last_seen_ns: 1_000 * s,
            ..FlowEntry::default()
        };
        for (state, limit) in [
            (STATE_SYN, 5),
            (STATE_ESTABLISHED, 100),
            (STATE_CLOSING, 2),
            (STATE_UDP, 30),
        ] {
            assert!(
                !is_expired(&e(state), (1_000 + limit) * s, &t),
                "state {state} at its limit"
            );
            assert!(
                is_expired(&e(state), (1_000 + limit) * s + 1, &t),
                "state {state} past its limit"
            );
        }
        assert!(
            !is_expired(&e(STATE_SYN), 10, &t),
            "a clock before last_seen is not expiry"
        );
        assert!(!is_active(&e(STATE_CLOSING)));
        assert!(
            is_active(&e(STATE_UDP))
                && is_active(&e(STATE_SYN))
                && is_active(&e(STATE_ESTABLISHED))
        );
    }
}
