//! The controller: carries out what the core decides. It asks `core::decide` what a request
//! comes to, applies each change to the kernel, commits it, and puts the previous state back
//! if the commit fails; it keeps what lives only in memory (backend health, gate outcomes) and
//! builds the views.

use std::{
    collections::BTreeMap,
    net::SocketAddr,
    path::{Path, PathBuf},
    time::SystemTime,
};

use veer_common::{counters::Reason, signals::BackendSignals};

use super::{
    change::{Change, Head},
    core::{self, Live},
    drains::{self, PacedDrain},
    effects::{Effects, Readings},
    error::ControlError,
    health::{self, CheckJob, Health},
    judging,
    node::{FileAtStart, Node, Options},
    observed::{self, GateKey, GateState, Observations},
    request::Request,
    rollouts::{self, GateJob},
    views::{
        self, ConfigView, FlowsView, ReloadError, RevisionView, RolloutView, StatusView, Waiting,
    },
};
use crate::{
    config,
    dataplane::flows::Upkeep,
    error::chain,
    health::check::CheckError,
    model::{BackendRef, DesiredState, NodeChange, NodeConfig},
    rollout::{Decision, GateFailure, Rollout, canary::StepJudge, engine::WaitReason},
    state::Origin,
};

/// What a request did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Answer {
    /// The revision in force afterwards.
    pub revision: u64,
    /// Whether a new revision was made (false: the state was already in force).
    pub changed: bool,
    /// Why nothing changed, when it deserves a word.
    pub note: Option<String>,
    /// Node settings the request asked for that wait for a daemon restart.
    pub pending_restart: Vec<NodeChange>,
}

/// What the controller knows of the config file and of the node settings sources ask for.
#[derive(Clone, Debug, Default)]
struct FileState {
    /// When the file was last applied or found in force (at start or on reload).
    last_good: Option<SystemTime>,
    /// The last reload (or start) that rejected it, when no good one came after.
    last_error: Option<ReloadError>,
    /// The node settings the latest applied source asked for.
    wanted: Option<NodeConfig>,
}

/// The daemon's control state: the node it acts on, the node settings it runs with, backend
/// health, and the outcomes of rollout gates.
pub struct Controller<N = Node> {
    node: N,
    running: NodeConfig,
    config_path: PathBuf,
    health: Health,
    gates: BTreeMap<GateKey, GateState>,
    /// The canary judge of every judged step being watched.
    judges: BTreeMap<GateKey, StepJudge>,
    /// Drains with a deadline and a pace, until their last flow ended.
    drains: Vec<PacedDrain>,
    file: FileState,
}

impl<N: Effects + Readings> Controller<N> {
    /// A controller over `node`, running with the node settings `running`; `config_path` is
    /// the file `reload` reads.
    pub fn new(node: N, running: NodeConfig, config_path: PathBuf) -> Self {
        Self {
            node,
            running,
            config_path,
            health: Health::default(),
            gates: BTreeMap::new(),
            judges: BTreeMap::new(),
            drains: Vec::new(),
            file: FileState::default(),
        }
    }

    /// The config file `reload` reads.
    pub fn config_path(&self) -> &Path {
        &self.config_path
    }

    /// The node, as a test reads it.
    #[cfg(test)]
    pub(super) fn node(&self) -> &N {
        &self.node
    }

    /// The node, to set up what a test needs.
    #[cfg(test)]
    pub(super) fn node_mut(&mut self) -> &mut N {
        &mut self.node
    }

    /// The live revision, as the core reads it.
    pub fn head(&self) -> Head {
        Head::of(self.node.revisions().last())
    }

    /// The rollouts recorded in the live revision.
    pub fn rollouts(&self) -> Vec<Rollout> {
        self.node
            .revisions()
            .last()
            .map(|r| r.rollouts.clone())
            .unwrap_or_default()
    }

    /// Counters, health and gate outcomes of the groups `request` (or a tick) may read.
    fn observe(
        &self,
        head: &Head,
        request: Option<&Request>,
    ) -> Result<Observations, ControlError> {
        let mut observed = Observations {
            gates: self.gates.clone(),
            judges: self.judges.clone(),
            ..Observations::default()
        };
        for (service, group) in observed::wanted_groups(request, head) {
            let counts =
                observed::group_counts(&self.node, &self.health, &head.state, &service, &group)?;
            let up = self.health.up_in(&head.state, &service, &group);
            observed
                .counts
                .insert((service.clone(), group.clone()), counts);
            observed.up.insert((service, group), up);
        }
        Ok(observed)
    }

    /// Decides `request` at `now` and carries it out.
    pub fn execute(&mut self, request: &Request, now: SystemTime) -> Result<Answer, ControlError> {
        let head = self.head();
        let observed = self.observe(&head, Some(request))?;
        let outcome = core::decide(
            request,
            &Live {
                head: &head,
                history: self.node.revisions(),
                observed: &observed,
                now,
            },
        )?;
        let changed = !outcome.changes.is_empty();
        let revision = self.commit_all(&head, outcome.changes)?;
        if let Request::Drain {
            service,
            group,
            end: Some(end),
            ..
        } = request
        {
            // Again on a drained group: the new deadline and pace replace the old.
            self.drains
                .retain(|d| !(d.service == *service && d.group == *group));
            self.drains.push(PacedDrain::new(service, group, *end, now));
        }
        Ok(Answer {
            revision,
            changed,
            note: outcome.note,
            pending_restart: Vec::new(),
        })
    }

    /// Commits `changes` in order; returns the revision in force afterwards. A failure stops
    /// there: the changes before it stay committed, the failed one is undone.
    fn commit_all(&mut self, head: &Head, changes: Vec<Change>) -> Result<u64, ControlError> {
        let mut current = head.clone();
        for change in changes {
            current.number = self.commit(&current.state, &change)?;
            current.state = change.state;
        }
        Ok(current.number)
    }

    /// Applies one change to the kernel and commits it; puts `previous` back if the commit
    /// fails, so the maps and the store never disagree for long (a crash in between is repaired
    /// at the next start, which reconciles the maps with the last revision).
    fn commit(&mut self, previous: &DesiredState, change: &Change) -> Result<u64, ControlError> {
        self.node
            .apply(&change.state, &self.health.down(&change.state))?;
        match self.node.commit(change) {
            Ok(number) => {
                tracing::info!(revision = number, origin = change.origin.word(), summary = %change.summary, "applied");
                Ok(number)
            }
            Err(e) => {
                if let Err(undo) = self.node.apply(previous, &self.health.down(previous)) {
                    tracing::error!(error = %chain(&undo), "putting the previous state back failed");
                }
                Err(e)
            }
        }
    }

    /// After a restart: rollouts whose plan says so hold (paused) instead of resuming.
    pub fn hold_rollouts_after_restart(&mut self) -> Result<(), ControlError> {
        let head = self.head();
        if let Some(change) = rollouts::hold_after_restart(&head)? {
            self.commit_all(&head, vec![change])?;
        }
        Ok(())
    }

    /// Reads the config file and applies it, unless what it holds is what was last applied from
    /// it. A broken file is an error and changes nothing.
    pub fn reload(&mut self) -> Result<Answer, ControlError> {
        let now = SystemTime::now();
        let result = config::load(&self.config_path)
            .map_err(ControlError::from)
            .and_then(|(cfg, text)| self.apply_file(cfg, &text));
        self.record_reload(result.as_ref().map(drop), now);
        result
    }

    /// Remembers how a reload of the file (or the start's reading of it) went.
    fn record_reload(&mut self, result: Result<(), &ControlError>, now: SystemTime) {
        match result {
            Ok(()) => {
                self.file.last_good = Some(now);
                self.file.last_error = None;
            }
            Err(e) => self.file.last_error = Some(ReloadError::of(e, now)),
        }
    }

    /// Applies config file content that was read and parsed, unless it means what the file
    /// meant when it was last applied: comments, layout and key order never change traffic.
    pub(super) fn apply_file(
        &mut self,
        cfg: config::Config,
        text: &str,
    ) -> Result<Answer, ControlError> {
        let head = self.head();
        // Revisions written before the file was compared by meaning hold the digest of its
        // text: that same text is still what was last applied.
        if head.config.is_some() && head.config == Some(core::digest(text.as_bytes())) {
            return Ok(self.unchanged(&cfg.node));
        }
        let request = Request::Apply {
            mark: Some(core::meaning(&cfg.state)),
            node: cfg.node,
            state: cfg.state,
            origin: Origin::Config {
                path: self.config_path.clone(),
            },
        };
        self.apply(&request, SystemTime::now())
    }

    /// The answer to a source whose desired state is already in force.
    fn unchanged(&mut self, node: &NodeConfig) -> Answer {
        tracing::info!(
            "config unchanged since it was last applied; the live revision stays in force"
        );
        Answer {
            revision: self.head().number,
            changed: false,
            note: None,
            pending_restart: self.want(node),
        }
    }

    /// Records the node settings a source asks for; returns those waiting for a restart.
    fn want(&mut self, node: &NodeConfig) -> Vec<NodeChange> {
        let pending = self.running.changes(node);
        if !pending.is_empty() {
            let settings: Vec<&str> = pending.iter().map(|c| c.setting.as_str()).collect();
            tracing::warn!(
                settings = %settings.join(", "),
                "[node] settings changed; they take effect at the next daemon start"
            );
        }
        self.file.wanted = Some(node.clone());
        pending
    }

    /// Applies a source's desired state (`Request::Apply`): as `execute`, and says when its node
    /// settings differ from those in force (they wait for a restart).
    pub fn apply(&mut self, request: &Request, now: SystemTime) -> Result<Answer, ControlError> {
        let mut answer = self.execute(request, now)?;
        if !answer.changed {
            tracing::info!(
                "config unchanged since it was last applied; the live revision stays in force"
            );
        }
        if let Request::Apply { node, .. } = request {
            answer.pending_restart = self.want(node);
        }
        Ok(answer)
    }

    /// Records the outcome of a step's extra gates.
    pub fn gate_result(&mut self, key: GateKey, result: Result<(), GateFailure>) {
        self.gates.insert(key, GateState::Done(result));
    }

    /// Decides every running rollout; commits advances, completions and breaches as revisions.
    /// Returns the gate checks to run.
    pub fn rollout_tick(&mut self, now: SystemTime) -> Result<Vec<GateJob>, ControlError> {
        let running = |r: &Rollout| r.phase == crate::rollout::Phase::Running;
        if !self
            .node
            .revisions()
            .last()
            .is_some_and(|rev| rev.rollouts.iter().any(running))
        {
            return Ok(Vec::new());
        }
        let head = self.head();
        judging::look_all(&mut self.judges, &head, &self.node, &self.health, now)?;
        let observed = self.observe(&head, None)?;
        let tick = rollouts::tick(&head, &observed, now)?;
        for job in &tick.gate_jobs {
            self.gates.insert(job.key.clone(), GateState::Pending);
        }
        let completed = drains::after_rollouts(&head, &tick.changes, now);
        self.commit_all(&head, tick.changes)?;
        for d in completed {
            self.drains
                .retain(|o| !(o.service == d.service && o.group == d.group));
            self.drains.push(d);
        }
        // Outcomes of steps no running rollout is at any more are of no use.
        let current: Vec<GateKey> = self
            .head()
            .rollouts
            .iter()
            .filter(|r| !r.phase.is_final())
            .map(observed::gate_key)
            .collect();
        self.gates.retain(|k, _| current.contains(k));
        Ok(tick.gate_jobs)
    }

    /// Ends what paced drains may end now (`drains`); a drain whose group has no flow left after
    /// its deadline is done.
    pub fn drain_tick(&mut self, now: SystemTime) -> Result<(), ControlError> {
        if self.drains.is_empty() {
            return Ok(());
        }
        drains::tick(&mut self.drains, &mut self.node, now)?;
        Ok(())
    }

    /// Paced drains still ending flows (or waiting for their deadline).
    #[cfg(test)]
    pub(super) fn paced_drains(&self) -> usize {
        self.drains.len()
    }

    /// Every active check the live state asks for.
    pub fn health_jobs(&self) -> Vec<CheckJob> {
        self.node
            .revisions()
            .last()
            .map(|r| health::jobs(&r.state))
            .unwrap_or_default()
    }

    /// Records one check result; when the backend goes down or comes back, the tables change
    /// (no revision: health is not an operator change, but it is logged).
    pub fn health_result(
        &mut self,
        backend: &BackendRef,
        outcome: &Result<(), CheckError>,
    ) -> Result<(), ControlError> {
        let head = self.head();
        let Some(check) = head
            .state
            .service(&backend.0)
            .and_then(|s| s.health.clone())
        else {
            return Ok(());
        };
        if !self
            .health
            .observe(&head.state, backend, &check, outcome.is_ok())
        {
            return Ok(());
        }
        match outcome {
            Ok(()) => {
                tracing::info!(service = %backend.0, group = %backend.1, backend = %backend.2, "backend up: back in its group's table");
            }
            Err(e) => {
                tracing::warn!(service = %backend.0, group = %backend.1, backend = %backend.2, reason = %chain(e), "backend down: out of its group's table for new flows");
            }
        }
        self.node.apply(&head.state, &self.health.down(&head.state))
    }

    /// After a link or address event: interfaces created again are attached again, XDP
    /// redirect targets follow what each interface can take, and the node settings the live
    /// state needs are checked again. Returns whether anything changed.
    pub fn links_changed(&mut self) -> Result<bool, ControlError> {
        let head = self.head();
        self.node.refresh_links(&head.state)
    }

    /// One conntrack upkeep pass (expiry by the configured timeouts).
    pub fn upkeep(&mut self) -> Result<Upkeep, ControlError> {
        let u = self.node.upkeep(&self.running.timeouts)?;
        self.health.record_unanswered(&u.unanswered, &u.syn);
        Ok(u)
    }

    /// Revisions, newest first, optionally only those naming `service`.
    pub fn history(&self, service: Option<&str>) -> Vec<RevisionView> {
        self.node
            .revisions()
            .iter()
            .rev()
            .filter(|r| service.is_none_or(|s| r.services.iter().any(|n| n == s)))
            .map(RevisionView::from)
            .collect()
    }

    /// The live revision, services, weights, backends, flows and counters.
    pub fn status(&self, service: Option<&str>) -> Result<StatusView, ControlError> {
        let latest = self.node.revisions().last();
        let empty = DesiredState::default();
        let state = latest.map_or(&empty, |r| &r.state);
        if let Some(name) = service
            && state.service(name).is_none()
        {
            return Err(ControlError::UnknownService {
                service: name.to_owned(),
            });
        }
        let census = self.node.census()?;
        Ok(StatusView {
            config: self.config_view(),
            revision: latest.map(RevisionView::from),
            interfaces: self.running.interfaces.clone(),
            dataplane: self.node.dataplane(),
            conntrack_entries: census.flows,
            conntrack_capacity: self.running.conntrack_max,
            conntrack_new_entries: census.new_flows,
            conntrack_new_capacity: self.running.conntrack_new_max,
            services: views::services(state, service, &self.node, &self.health, &census.active)?,
        })
    }

    /// The config file: last good reload, last rejection, node settings waiting for a restart.
    pub fn config_view(&self) -> ConfigView {
        ConfigView {
            path: self.config_path.clone(),
            last_good: self.file.last_good,
            last_error: self.file.last_error.clone(),
            pending_restart: self
                .file
                .wanted
                .as_ref()
                .map(|w| self.running.changes(w))
                .unwrap_or_default(),
        }
    }

    /// Every exit of the fast path that did not steer, counted.
    pub fn reasons(&self) -> Result<Vec<(Reason, u64)>, ControlError> {
        self.node.reasons()
    }

    /// Conntrack entries, optionally of one service and/or one backend, at most `limit`.
    pub fn flows(
        &self,
        service: Option<&str>,
        backend: Option<SocketAddr>,
        limit: usize,
    ) -> Result<FlowsView, ControlError> {
        let head = self.head();
        if let Some(name) = service {
            head.service(name)?;
        }
        let table = self.node.flows()?;
        Ok(views::flows(
            table,
            &head.state,
            &self.node,
            service,
            backend,
            limit,
        ))
    }

    /// The signals of every backend of the live state the kernel keeps them for: (service,
    /// group, backend address, signals), in the live state's order.
    pub fn backend_signals(
        &self,
    ) -> Result<Vec<(String, String, std::net::SocketAddr, BackendSignals)>, ControlError> {
        let head = self.head();
        let ids = self.node.ids();
        let mut out = Vec::new();
        for s in &head.state.services {
            for g in &s.groups {
                for b in &g.backends {
                    let key = (s.name.clone(), g.name.clone(), b.addr);
                    if let Some(id) = ids.backends.get(&key)
                        && let Some(sig) = self.node.backend_signals(*id)?
                    {
                        out.push((key.0, key.1, key.2, sig));
                    }
                }
            }
        }
        Ok(out)
    }

    /// The latest rollout of `service` and where it stands at `now`.
    pub fn rollout_status(
        &self,
        service: &str,
        now: SystemTime,
    ) -> Result<RolloutView, ControlError> {
        let head = self.head();
        let r = head
            .latest_rollout(service)
            .ok_or_else(|| ControlError::NoRollout {
                service: service.to_owned(),
            })?;
        let counts =
            observed::group_counts(&self.node, &self.health, &head.state, service, &r.plan.to)?;
        let judge = self.judges.get(&observed::gate_key(r)).cloned();
        let verdict = judge
            .as_ref()
            .and_then(|j| j.latest().cloned())
            .or_else(|| r.verdict.clone());
        let obs = crate::rollout::Observation {
            counts,
            target_up: self.health.up_in(&head.state, service, &r.plan.to),
            gates: None,
            judge,
        };
        let waiting = match r.decide(&obs, now) {
            Decision::Wait(WaitReason::Pause { left }) => Some(Waiting::Pause { left }),
            Decision::Wait(WaitReason::MinFlows { seen }) => Some(Waiting::MinFlows {
                seen,
                needed: r.plan.min_flows,
            }),
            Decision::EvaluateGates => Some(Waiting::Gates),
            Decision::Wait(WaitReason::Judge) => Some(Waiting::Judge),
            _ => None,
        };
        let weights = head
            .state
            .service(service)
            .map(|s| {
                s.groups
                    .iter()
                    .map(|g| (g.name.clone(), g.weight))
                    .collect()
            })
            .unwrap_or_default();
        Ok(RolloutView {
            rollout: r.clone(),
            weights,
            in_step: r.in_step(counts),
            waiting,
            verdict,
        })
    }
}

impl Controller<Node> {
    /// Starts the daemon's control layer: the node (programs, links, maps reconciled with the
    /// last revision), rollouts held that ask for it, then the config file applied unless what
    /// it holds was the last thing applied from it.
    pub fn start(opts: Options) -> Result<Self, ControlError> {
        let (node, settings, file) = Node::start(&opts)?;
        let mut this = Self::new(node, settings, opts.config);
        this.hold_rollouts_after_restart()?;
        let now = SystemTime::now();
        match file {
            FileAtStart::Read(cfg, text) => {
                this.apply_file(cfg, &text)?;
                this.record_reload(Ok(()), now);
            }
            FileAtStart::Missing => {}
            FileAtStart::Rejected(e) => this.record_reload(Err(&e.into()), now),
        }
        Ok(this)
    }
}
