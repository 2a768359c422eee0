//! The daemon's fleet tasks, when its services come from etcd (`veer daemon --source etcd`):
//!
//! - **follow**: the etcd watcher's state goes to `Controller::follow` on every change and every
//!   `FOLLOW_TICK` (a refusal of the moment is tried again, a fleet rollout's next step is
//!   seen), and the node's status document is built after each pass and written by the status
//!   writer, under the node's lease, whenever it differs from the one last written;
//! - **drive** (unless `--fleet-driver off`): the daemon campaigns in etcd's election; while it
//!   leads it follows every node's status (`StatusMirror`: listed once, then watched), reads the
//!   fleet rollouts every `DRIVE_TICK`, decides each running one with `fleet::decide`, and
//!   writes the progress (next wave, skipped nodes, roll back, completion with the final weights
//!   in the config documents) fenced by its election key. If it dies, its lease expires and the
//!   next candidate leads.
//!
//! Generic over the node, so the fleet benchmark runs the very same tasks over in-memory nodes.

use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex},
    time::{Duration, SystemTime},
};

use tokio::sync::watch;

use crate::{
    control::{Controller, Effects, Readings, edit},
    error::chain,
    fleet::{self, Decision, FleetKey, FleetRollout, FleetState, NodeName, Progress, Tracker},
    sources::etcd::{
        Backoff, CasWrite, EtcdError, Expect, Fleet, Leadership, StatusMirror, StatusWriter,
        Watcher, WatcherOptions,
    },
};

/// How often the node looks at the source even when nothing changed in it.
pub const FOLLOW_TICK: Duration = Duration::from_millis(200);
/// How often the driver decides the fleet rollouts.
pub const DRIVE_TICK: Duration = Duration::from_millis(500);
/// How long a clean stop waits for etcd to revoke the status lease.
const SHUTDOWN_WAIT: Duration = Duration::from_secs(2);

/// A node of a fleet.
#[derive(Clone, Debug)]
pub struct FleetOptions {
    /// The fleet's keys in etcd.
    pub fleet: Fleet,
    /// This node's name.
    pub node: NodeName,
    /// TTL of the status lease and of the election lease.
    pub lease_ttl: Duration,
    /// Whether this daemon campaigns to drive fleet rollouts.
    pub driver: bool,
    /// The watcher's retry delays.
    pub watcher: WatcherOptions,
}

fn lock<N>(ctl: &Mutex<Controller<N>>) -> std::sync::MutexGuard<'_, Controller<N>> {
    ctl.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Runs the fleet tasks until `stop`; `ready` turns true once the node synced with etcd.
pub async fn run<N>(
    ctl: Arc<Mutex<Controller<N>>>,
    opts: FleetOptions,
    stop: watch::Receiver<bool>,
    ready: watch::Sender<bool>,
) where
    N: Effects + Readings + Send + 'static,
{
    let driver = opts.driver.then(|| {
        tokio::spawn(drive(
            opts.fleet.clone(),
            opts.node.clone(),
            opts.lease_ttl,
            stop.clone(),
        ))
    });
    follow(&ctl, &opts, stop, &ready).await;
    if let Some(d) = driver {
        // The driver stops on the same signal; it never panics.
        drop(d.await);
    }
}

/// Follows the source and keeps the status written, until `stop`.
async fn follow<N: Effects + Readings>(
    ctl: &Mutex<Controller<N>>,
    opts: &FleetOptions,
    mut stop: watch::Receiver<bool>,
    ready: &watch::Sender<bool>,
) {
    let watcher = Watcher::spawn(opts.fleet.clone(), opts.node.clone(), opts.watcher);
    let mut source = watcher.subscribe();
    let writer = StatusWriter::spawn(
        opts.fleet.clone(),
        opts.node.clone(),
        opts.lease_ttl,
        opts.watcher.max_backoff,
    );
    let mut tick = tokio::time::interval(FOLLOW_TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut written: Option<Vec<u8>> = None;
    loop {
        tokio::select! {
            _ = stop.wait_for(|s| *s) => break,
            changed = source.changed() => if changed.is_err() { break },
            _ = tick.tick() => {}
        }
        let state = source.borrow_and_update().clone();
        let status = {
            let mut c = lock(ctl);
            c.follow(&state, SystemTime::now());
            if c.is_ready() && !*ready.borrow() {
                tracing::info!(
                    revision = state.revision,
                    "synced with etcd at revision {}; ready",
                    state.revision
                );
                ready.send_replace(true);
            }
            c.node_status()
        };
        if let Some(status) = status {
            let json = status.to_json();
            if written.as_ref() != Some(&json) {
                if let Err(e) = writer.publish(&status) {
                    tracing::error!(error = %chain(&e), "status not published");
                }
                written = Some(json);
            }
        }
    }
    drop(watcher);
    // A clean stop: the status goes now rather than when its lease expires.
    match tokio::time::timeout(SHUTDOWN_WAIT, writer.shutdown()).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => {
            tracing::warn!(error = %chain(&e), "status lease not revoked; it expires by itself");
        }
        Err(_) => tracing::warn!("status lease not revoked in time; it expires by itself"),
    }
}

/// Campaigns to drive fleet rollouts and drives them while it leads, until `stop`.
async fn drive(fleet: Fleet, node: NodeName, ttl: Duration, mut stop: watch::Receiver<bool>) {
    let mut backoff = Backoff::new(
        Duration::from_millis(200),
        Duration::from_secs(10),
        node.as_str(),
    );
    let mut last_error = String::new();
    loop {
        let campaign = crate::sources::etcd::Candidate::new(fleet.clone(), node.clone(), ttl);
        let won = tokio::select! {
            _ = stop.wait_for(|s| *s) => return,
            won = campaign.campaign() => won,
        };
        let leadership = match won {
            Ok(l) => l,
            Err(e @ EtcdError::PermissionDenied { .. }) => {
                tracing::info!(
                    "not campaigning to drive fleet rollouts: {} (a node without the veer-driver role follows rollouts only)",
                    chain(&e)
                );
                drop(stop.wait_for(|s| *s).await);
                return;
            }
            Err(e) => {
                let text = chain(&e);
                if text != last_error {
                    tracing::warn!("campaign to drive fleet rollouts failed: {text}; retrying");
                    last_error = text;
                }
                tokio::select! {
                    _ = stop.wait_for(|s| *s) => return,
                    () = tokio::time::sleep(backoff.next_delay()) => continue,
                }
            }
        };
        backoff.reset();
        last_error.clear();
        tracing::info!(
            key = leadership.key(),
            "leading: this daemon drives the fleet rollouts"
        );
        let mut driver = Driver::new(fleet.clone(), node.clone());
        let mut tick = tokio::time::interval(DRIVE_TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let stopping = tokio::select! {
                _ = stop.wait_for(|s| *s) => true,
                _ = tick.tick() => false,
            };
            if stopping {
                // Hand over at once rather than after the lease's TTL.
                drop(tokio::time::timeout(SHUTDOWN_WAIT, leadership.resign()).await);
                return;
            }
            if leadership.is_lost() {
                break;
            }
            match driver.step(&leadership).await {
                Ok(()) => last_error.clear(),
                Err(e @ EtcdError::LeadershipLost { .. }) => {
                    tracing::warn!("{}", chain(&e));
                    break;
                }
                Err(e) => {
                    let text = chain(&e);
                    if text != last_error {
                        tracing::warn!("driving fleet rollouts: {text}; retrying");
                        last_error = text;
                    }
                }
            }
        }
        tracing::warn!("no longer leading; campaigning again");
    }
}

/// What the leading daemon remembers between its decisions.
struct Driver {
    fleet: Fleet,
    node: NodeName,
    /// Every node's status, followed while this daemon leads.
    statuses: StatusMirror,
    /// When it took over: silence clocks never start before.
    since: SystemTime,
    trackers: BTreeMap<String, Tracker>,
    /// What was last said about each rollout that cannot go on, so it is said once.
    said: BTreeMap<String, String>,
}

impl Driver {
    fn new(fleet: Fleet, node: NodeName) -> Self {
        Self {
            statuses: StatusMirror::spawn(fleet.clone()),
            fleet,
            node,
            since: SystemTime::now(),
            trackers: BTreeMap::new(),
            said: BTreeMap::new(),
        }
    }

    /// Says `what` about `service` once (until it changes).
    fn say(&mut self, service: &str, what: String) {
        if self.said.get(service) != Some(&what) {
            tracing::warn!(service, "{what}");
            self.said.insert(service.to_owned(), what);
        }
    }

    /// Decides every running fleet rollout once and writes what it decided.
    async fn step(&mut self, leadership: &Leadership) -> Result<(), EtcdError> {
        let layout = self.fleet.layout().clone();
        let (docs, _) = self.fleet.get_prefix(&layout.rollouts_prefix()).await?;
        let mut by_service: BTreeMap<String, (Option<fleet::Document>, Option<fleet::Document>)> =
            BTreeMap::new();
        for d in docs {
            match layout.parse(&d.key) {
                Some(FleetKey::RolloutPlan(s)) => by_service.entry(s).or_default().0 = Some(d),
                Some(FleetKey::RolloutProgress(s)) => {
                    by_service.entry(s).or_default().1 = Some(d);
                }
                _ => {}
            }
        }
        self.trackers.retain(|s, _| by_service.contains_key(s));
        for (service, docs) in by_service {
            let (Some(plan_doc), Some(progress_doc)) = docs else {
                continue;
            };
            let (plan, progress) = match (
                FleetRollout::from_json(&plan_doc.value),
                Progress::from_json(&progress_doc.value),
            ) {
                (Ok(p), Ok(g)) => (p, g),
                (Err(e), _) | (_, Err(e)) => {
                    self.say(
                        &service,
                        format!("fleet rollout of {service} is unreadable: {e}"),
                    );
                    continue;
                }
            };
            if progress.state != FleetState::Running {
                self.trackers.remove(&service);
                continue;
            }
            // Not in sync with the statuses (etcd was unreachable): decide once it is again.
            let Some(nodes) = self.statuses.current() else {
                continue;
            };
            let now = SystemTime::now();
            let since = self.since;
            let tracker = self
                .trackers
                .entry(service.clone())
                .or_insert_with(|| Tracker::new(since));
            let decision = fleet::decide(&plan, &progress, &nodes, tracker, now);
            self.carry_out(
                leadership,
                &plan,
                progress,
                progress_doc.mod_revision,
                decision,
            )
            .await?;
        }
        Ok(())
    }

    /// The config documents a completed rollout rewrites with its final weights; `None` when it
    /// cannot complete yet (said once).
    async fn completion(
        &mut self,
        plan: &FleetRollout,
    ) -> Result<Option<Vec<CasWrite>>, EtcdError> {
        let config = self.fleet.config().await?;
        let Some(config) = config.doc else {
            self.say(
                &plan.service,
                format!(
                    "fleet rollout {} cannot complete: the fleet's config is gone",
                    plan.id
                ),
            );
            return Ok(None);
        };
        let layout = self.fleet.layout().clone();
        let (own, _) = self.fleet.get_prefix(&layout.nodes_prefix()).await?;
        let own: Vec<fleet::Document> = own
            .into_iter()
            .filter(|d| matches!(layout.parse(&d.key), Some(FleetKey::NodeConfig(_))))
            .collect();
        match edit::completed(&plan.service, &plan.to, &config, &own) {
            Ok(rewrites) => Ok(Some(
                rewrites
                    .into_iter()
                    .map(|r| CasWrite {
                        key: r.key,
                        expect: Expect::ModRevision(r.mod_revision),
                        value: Some(r.text.into_bytes()),
                    })
                    .collect(),
            )),
            Err(e) => {
                self.say(
                    &plan.service,
                    format!("fleet rollout {} cannot complete: {}", plan.id, chain(&e)),
                );
                Ok(None)
            }
        }
    }

    /// Writes what the driver decided for one rollout (fenced by its election key).
    async fn carry_out(
        &mut self,
        leadership: &Leadership,
        plan: &FleetRollout,
        mut progress: Progress,
        progress_revision: i64,
        decision: Decision,
    ) -> Result<(), EtcdError> {
        let now = fleet::whole_millis(SystemTime::now());
        let key = self.fleet.layout().rollout_progress(&plan.service);
        let mut writes = Vec::new();
        match decision {
            Decision::Wait { .. } | Decision::Idle => return Ok(()),
            Decision::Inconsistent { why } => {
                self.say(
                    &plan.service,
                    format!(
                        "fleet rollout {} cannot go on: {why}; abort it (veer fleet rollout abort {})",
                        plan.id, plan.service
                    ),
                );
                return Ok(());
            }
            Decision::StartWave { wave, nodes } => {
                let names: Vec<&str> = nodes.iter().map(NodeName::as_str).collect();
                tracing::info!(
                    "fleet rollout {}: wave {}/{} starts: {}",
                    plan.id,
                    wave + 1,
                    plan.waves.len(),
                    names.join(", ")
                );
                progress.wave = wave;
                progress.wave_started = now;
            }
            Decision::Skip { nodes } => {
                for s in &nodes {
                    tracing::warn!(
                        "fleet rollout {}: node {} skipped: {}",
                        plan.id,
                        s.node,
                        s.reason
                    );
                }
                progress.skipped.extend(nodes);
            }
            Decision::RollBack { node, gate, reason } => {
                tracing::warn!(
                    "fleet rollout {} rolled back: node {node}, gate {gate}: {reason}",
                    plan.id
                );
                progress.state = FleetState::RolledBack { node, gate, reason };
            }
            Decision::Complete => {
                let Some(rewrites) = self.completion(plan).await? else {
                    return Ok(());
                };
                writes.extend(rewrites);
                tracing::info!(
                    "fleet rollout {} completed: {} -> {} on every node",
                    plan.id,
                    plan.service,
                    plan.to
                );
                progress.state = FleetState::Completed;
            }
        }
        progress.driver = Some(self.node.clone());
        progress.updated = now;
        writes.push(CasWrite {
            key,
            expect: Expect::ModRevision(progress_revision),
            value: Some(progress.to_json()),
        });
        match leadership.cas(&writes).await {
            // Someone else wrote meanwhile (an operator's pause or abort, a config edit): the
            // next step decides again from what is there now.
            Ok(_) | Err(EtcdError::Conflict { .. }) => Ok(()),
            Err(e) => Err(e),
        }
    }
}
