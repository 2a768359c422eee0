//! Backend health in the control layer, pure: the rise/fall state of every checked backend, the
//! backends kept out of the tables, the checks the live state asks for, and passive failure
//! signals (connection attempts left unanswered) from conntrack upkeep.

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    net::SocketAddr,
};

use veer_common::flow::FlowKey;

use crate::{
    health::state::Tracker,
    model::{BackendRef, DesiredState, Down, HealthCheck},
};

/// Health state of the node's backends.
#[derive(Debug, Default)]
pub(super) struct Health {
    trackers: BTreeMap<BackendRef, Tracker>,
    /// Connection attempts that got no answer (SYN entries idle past the connect timeout),
    /// per backend id, counted once per flow.
    unanswered: HashMap<u32, u64>,
    counted: HashSet<FlowKey>,
}

/// One active check to run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CheckJob {
    /// The backend.
    pub backend: BackendRef,
    /// Where to connect.
    pub addr: SocketAddr,
    /// The check to run.
    pub check: HealthCheck,
}

/// Every active check `state` asks for.
pub(super) fn jobs(state: &DesiredState) -> Vec<CheckJob> {
    let mut jobs = Vec::new();
    for s in &state.services {
        let Some(check) = &s.health else { continue };
        for g in &s.groups {
            for b in &g.backends {
                jobs.push(CheckJob {
                    backend: (s.name.clone(), g.name.clone(), b.addr),
                    addr: b.addr,
                    check: check.clone(),
                });
            }
        }
    }
    jobs
}

impl Health {
    /// Backends of `state` that are down.
    pub(super) fn down(&self, state: &DesiredState) -> Down {
        let mut out = Down::new();
        for s in state.services.iter().filter(|s| s.health.is_some()) {
            for g in &s.groups {
                for b in &g.backends {
                    let r = (s.name.clone(), g.name.clone(), b.addr);
                    if self.trackers.get(&r).is_some_and(|t| !t.is_up()) {
                        out.insert(r);
                    }
                }
            }
        }
        out
    }

    /// Whether a backend takes new flows (unchecked backends always do).
    pub(super) fn is_up(&self, r: &BackendRef) -> bool {
        self.trackers.get(r).is_none_or(Tracker::is_up)
    }

    /// Backends of `service`'s group `group` in `state` that take new flows.
    pub(super) fn up_in(&self, state: &DesiredState, service: &str, group: &str) -> usize {
        state
            .service(service)
            .and_then(|s| s.group(group))
            .map_or(0, |g| {
                g.backends
                    .iter()
                    .filter(|b| self.is_up(&(service.to_owned(), group.to_owned(), b.addr)))
                    .count()
            })
    }

    /// Unanswered connection attempts of backend `id`.
    pub(super) fn unanswered(&self, id: u32) -> u64 {
        self.unanswered.get(&id).copied().unwrap_or(0)
    }

    /// Records one check result of a backend checked by `check`; returns whether the backend
    /// went down or came back. Backends `state` no longer names are forgotten.
    pub(super) fn observe(
        &mut self,
        state: &DesiredState,
        backend: &BackendRef,
        check: &HealthCheck,
        ok: bool,
    ) -> bool {
        let tracker = self.trackers.entry(backend.clone()).or_default();
        if !tracker.observe(ok, check.rise, check.fall) {
            return false;
        }
        let known: HashSet<BackendRef> = jobs(state).into_iter().map(|j| j.backend).collect();
        self.trackers.retain(|r, _| known.contains(r));
        true
    }

    /// Records the SYN entries stuck past the connect timeout (each flow once); `present` is
    /// every flow key still in conntrack, to forget the ones gone.
    pub(super) fn record_unanswered(
        &mut self,
        stuck: &[(FlowKey, u32)],
        present: &HashSet<FlowKey>,
    ) {
        for (key, backend) in stuck {
            if self.counted.insert(*key) {
                *self.unanswered.entry(*backend).or_default() += 1;
            }
        }
        self.counted.retain(|k| present.contains(k));
    }
}
