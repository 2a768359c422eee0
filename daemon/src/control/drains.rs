//! Paced drains: once a drained group's deadline has passed, its flows still active are ended
//! at the drain's pace, oldest first (`model::drain` says how many at a moment, the dataplane
//! ends each with a reset to both ends). What is in force is the revision's (`Head::drains`, so
//! a restarted daemon continues it); the controller keeps only the progress of each, in memory.

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
    model::drain::{PacedDrain, Schedule},
    rollout::Phase,
};

/// How often the flows left are listed again (a scan of both flow tables).
const RESCAN: Duration = Duration::from_secs(1);

/// The progress of one paced drain in force.
#[derive(Clone, Debug)]
pub(super) struct Draining {
    /// The drain, as the revision records it.
    pub(super) drain: PacedDrain,
    schedule: Schedule,
    /// Flows to end next, oldest first (from the latest scan).
    queue: VecDeque<FlowKey>,
    scanned: Option<SystemTime>,
    /// Flows ended so far by this daemon (TCP reset, UDP forgotten).
    pub(super) ended: u64,
}

impl Draining {
    /// The progress of `drain`, nothing ended yet.
    pub(super) fn new(drain: &PacedDrain) -> Self {
        Self {
            drain: drain.clone(),
            schedule: drain.schedule(),
            queue: VecDeque::new(),
            scanned: None,
            ended: 0,
        }
    }
}

/// Adds to `changes` the drains the rollouts they complete ask for (`--drain-deadline`): every
/// group the rollout took to 0, from `now`, recorded in the completing revision and those after
/// it in the same batch.
pub(super) fn after_rollouts(head: &Head, changes: &mut [Change], now: SystemTime) {
    let mut started: Vec<PacedDrain> = Vec::new();
    for change in changes.iter_mut() {
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
                let already = started
                    .iter()
                    .any(|d| d.service == r.service && d.group == g.name);
                if let Some(d) = PacedDrain::starting(&r.service, &g.name, end, now)
                    && !already
                {
                    started.push(d);
                }
            }
        }
        for d in &started {
            change.record_drain(d.clone());
        }
    }
}

/// Ends what each drain may end now. Returns the drains that finished (no flow left after the
/// deadline), removed from `drains`.
pub(super) fn tick<N: Effects + Readings>(
    drains: &mut Vec<Draining>,
    node: &mut N,
    now: SystemTime,
) -> Result<Vec<Draining>, ControlError> {
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
                .filter(|((s, g, _), _)| *s == d.drain.service && *g == d.drain.group)
                .map(|(_, id)| *id)
                .collect();
            d.queue = node.active_flows_of(&ids)?.into();
            d.scanned = Some(now);
        }
        if d.queue.is_empty() {
            tracing::info!(
                service = d.drain.service,
                group = d.drain.group,
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
