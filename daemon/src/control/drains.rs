//! Paced drains: once a drained group's deadline has passed, its flows still active are ended
//! at the drain's pace, oldest first (`model::drain` says how many at a moment, the dataplane
//! ends each with a reset to both ends). Kept by the controller, in memory.

use std::{
    collections::{BTreeSet, VecDeque},
    time::{Duration, SystemTime},
};

use veer_common::flow::FlowKey;

use super::{
    change::{Change, Head},
    effects::{Effects, Readings},
    error::ControlError,
};
use crate::{
    model::drain::{DrainEnd, Schedule},
    rollout::Phase,
};

/// How often the flows left are listed again (a scan of both flow tables).
const RESCAN: Duration = Duration::from_secs(1);

/// One group being drained with a deadline and a pace.
#[derive(Clone, Debug)]
pub(super) struct PacedDrain {
    /// The service.
    pub(super) service: String,
    /// The group.
    pub(super) group: String,
    schedule: Schedule,
    /// Flows to end next, oldest first (from the latest scan).
    queue: VecDeque<FlowKey>,
    scanned: Option<SystemTime>,
    /// Flows ended so far (TCP reset, UDP forgotten).
    pub(super) ended: u64,
}

impl PacedDrain {
    /// A drain of `service`/`group` that began at `began`.
    pub(super) fn new(service: &str, group: &str, end: DrainEnd, began: SystemTime) -> Self {
        Self {
            service: service.to_owned(),
            group: group.to_owned(),
            schedule: Schedule::new(began, end),
            queue: VecDeque::new(),
            scanned: None,
            ended: 0,
        }
    }
}

/// The drains rollouts that complete in `changes` ask for (`--drain-deadline`): every group
/// the rollout took to 0, from `now`.
pub(super) fn after_rollouts(head: &Head, changes: &[Change], now: SystemTime) -> Vec<PacedDrain> {
    let mut out = Vec::new();
    for change in changes {
        for r in &change.rollouts {
            let was_running = head
                .rollouts
                .iter()
                .any(|o| o.service == r.service && !o.phase.is_final());
            let Some(end) = r
                .plan
                .drain
                .filter(|_| r.phase == Phase::Completed && was_running)
            else {
                continue;
            };
            let Some(svc) = change.state.service(&r.service) else {
                continue;
            };
            for g in svc
                .groups
                .iter()
                .filter(|g| g.name != r.plan.to && g.weight.is_zero())
            {
                out.push(PacedDrain::new(&r.service, &g.name, end, now));
            }
        }
    }
    out
}

/// Ends what each drain may end now. Returns the drains that finished (no flow left after the
/// deadline), removed from `drains`.
pub(super) fn tick<N: Effects + Readings>(
    drains: &mut Vec<PacedDrain>,
    node: &mut N,
    now: SystemTime,
) -> Result<Vec<PacedDrain>, ControlError> {
    let mut finished = Vec::new();
    let mut i = 0;
    while i < drains.len() {
        let d = &mut drains[i];
        let budget = d.schedule.budget(now);
        if !d.schedule.ending(now) {
            i += 1;
            continue;
        }
        let stale = d
            .scanned
            .is_none_or(|t| now.duration_since(t).unwrap_or_default() >= RESCAN);
        if d.queue.is_empty() || stale {
            let ids: BTreeSet<u32> = node
                .ids()
                .backends
                .iter()
                .filter(|((s, g, _), _)| *s == d.service && *g == d.group)
                .map(|(_, id)| *id)
                .collect();
            d.queue = node.active_flows_of(&ids)?.into();
            d.scanned = Some(now);
        }
        if d.queue.is_empty() {
            tracing::info!(
                service = d.service,
                group = d.group,
                ended = d.ended,
                "paced drain done: no flow left"
            );
            finished.push(drains.remove(i));
            continue;
        }
        let mut spent = 0;
        while spent < budget {
            let Some(key) = d.queue.pop_front() else {
                break;
            };
            if node.end_flow(&key)? {
                spent += 1;
            }
        }
        d.schedule.spent(spent);
        d.ended += spent;
        i += 1;
    }
    Ok(finished)
}
