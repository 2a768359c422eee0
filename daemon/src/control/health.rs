//! Backend health in the control layer: the rise/fall state of every checked backend, the set
//! of backends kept out of the tables, and passive failure signals from conntrack upkeep.

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    net::SocketAddr,
};

use veer_common::flow::FlowKey;

use super::{ControlError, Controller};
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

    /// Unanswered connection attempts of backend `id`.
    pub(super) fn unanswered(&self, id: u32) -> u64 {
        self.unanswered.get(&id).copied().unwrap_or(0)
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

/// One active check to run.
#[derive(Clone, Debug)]
pub struct CheckJob {
    /// The backend.
    pub backend: BackendRef,
    /// Where to connect.
    pub addr: SocketAddr,
    /// How.
    pub check: HealthCheck,
}

impl Controller {
    /// Every active check the live state asks for.
    pub fn health_jobs(&self) -> Vec<CheckJob> {
        let mut jobs = Vec::new();
        let Some(state) = self.live() else {
            return jobs;
        };
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

    /// Records one check result; when the backend goes down or comes back, the tables change
    /// (no revision: health is not an operator change, but it is logged).
    pub fn health_result(
        &mut self,
        backend: &BackendRef,
        ok: bool,
        why: Option<&str>,
    ) -> Result<(), ControlError> {
        let state = self.current();
        let Some(check) = state.service(&backend.0).and_then(|s| s.health.clone()) else {
            return Ok(());
        };
        let tracker = self.health.trackers.entry(backend.clone()).or_default();
        if !tracker.observe(ok, check.rise, check.fall) {
            return Ok(());
        }
        if tracker.is_up() {
            tracing::info!(service = %backend.0, group = %backend.1, backend = %backend.2, "backend up: back in its group's table");
        } else {
            tracing::warn!(service = %backend.0, group = %backend.1, backend = %backend.2, reason = why.unwrap_or("check failed"), "backend down: out of its group's table for new flows");
        }
        // Forget backends that left the state.
        let known: HashSet<BackendRef> =
            self.health_jobs().into_iter().map(|j| j.backend).collect();
        self.health.trackers.retain(|r, _| known.contains(r));
        let down = self.health.down(&state);
        self.dataplane.apply(&state, &down)?;
        Ok(())
    }
}
