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
    diff,
    drains::{self, Draining},
    effects::{Census, Effects, Readings},
    error::ControlError,
    health::{self, CheckJob, Health},
    judging,
    node::{FileAtStart, Node, Options},
    observed::{self, GateKey, GateState, Observations},
    request::Request,
    rollouts::{self, GateJob},
    source::Following,
    views::{
        self, ConfigView, FilesView, FlowsView, ReloadError, RevisionView, RolloutView, StatusView,
        Waiting,
    },
};
use crate::{
    config,
    dataplane::flows::Upkeep,
    error::chain,
    health::check::CheckError,
    model::{BackendRef, DesiredState, NodeChange, NodeConfig, drain::PacedDrain},
    rollout::{
        Decision, GateFailure, Rollout,
        canary::{StepJudge, StepVerdict},
        engine::WaitReason,
    },
    state::{Audit, Author, Origin},
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

/// What a request would do, decided but not carried out (`--dry-run`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Preview {
    /// The revision in force (it stays in force).
    pub revision: u64,
    /// How the desired state would differ afterwards.
    pub diff: Vec<diff::Difference>,
    /// The summary of every revision the request would make, in order (none: already so).
    pub summaries: Vec<String>,
    /// Why nothing would change, when it deserves a word.
    pub note: Option<String>,
    /// Node settings the request asks for that would wait for a daemon restart.
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
    /// When the file was last read to be applied (at start or on reload), whatever came of it.
    last_attempt: Option<SystemTime>,
    /// Reloads (and the start's reading) that applied the file or found it in force.
    reloads_ok: u64,
    /// Reloads (and the start's reading) that refused it.
    reloads_failed: u64,
}

/// The daemon's control state: the node it acts on, the node settings it runs with, backend
/// health, and the outcomes of rollout gates.
pub struct Controller<N = Node> {
    pub(super) node: N,
    pub(super) running: NodeConfig,
    config_path: PathBuf,
    pub(super) health: Health,
    gates: BTreeMap<GateKey, GateState>,
    /// The canary judge of every judged step being watched.
    judges: BTreeMap<GateKey, StepJudge>,
    /// The progress of the paced drains the live revision holds (`drain_tick` follows it).
    drains: Vec<Draining>,
    /// Drains of the live revision that found no flow left after their deadline: done, not
    /// started again while the revision holds them.
    drains_done: Vec<PacedDrain>,
    /// Step gate checks since start: (service, passed) -> count.
    gate_checks: BTreeMap<(String, bool), u64>,
    file: FileState,
    /// Conntrack as the last upkeep pass counted it: what metrics show, so a scrape never
    /// scans the table (`status` and `drain --wait` do, to be exact).
    census: Option<Census>,
    /// The fleet's etcd, when the services come from there.
    pub(super) etcd: Option<Following>,
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
            drains_done: Vec::new(),
            gate_checks: BTreeMap::new(),
            file: FileState::default(),
            census: None,
            etcd: None,
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

    /// The live revision, as the core reads it (held when the newest revision file cannot be
    /// used).
    pub fn head(&self) -> Head {
        let mut head = Head::of(self.node.revisions().last());
        head.held = crate::state::hold(self.node.revisions(), self.node.unusable()).cloned();
        head
    }

    /// Whether the newest revision file cannot be used: the maps hold a state no usable
    /// revision records, and only an operator's choice changes them.
    pub fn is_held(&self) -> bool {
        crate::state::hold(self.node.revisions(), self.node.unusable()).is_some()
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

    /// Decides `request` at `now` and carries it out; its revisions record the author its origin
    /// implies (`Request::implied_author`: the config file), see `execute_by`.
    pub fn execute(&mut self, request: &Request, now: SystemTime) -> Result<Answer, ControlError> {
        self.execute_by(request, &Audit::by(request.implied_author()), now)
    }

    /// Decides `request` at `now` and carries it out; every revision it makes records `audit`
    /// (who asked, and why).
    pub fn execute_by(
        &mut self,
        request: &Request,
        audit: &Audit,
        now: SystemTime,
    ) -> Result<Answer, ControlError> {
        let head = self.head();
        let outcome = self.decide(&head, request, now)?;
        let changed = !outcome.changes.is_empty();
        let revision = self.commit_all(&head, outcome.changes, audit)?;
        Ok(Answer {
            revision,
            changed,
            note: outcome.note,
            pending_restart: Vec::new(),
        })
    }

    /// What `request` would do at `now`, decided exactly as `execute_by` decides it, with
    /// nothing applied or committed (`--dry-run`, `veer diff`).
    pub fn preview(&self, request: &Request, now: SystemTime) -> Result<Preview, ControlError> {
        let head = self.head();
        let outcome = self.decide(&head, request, now)?;
        let after = outcome.changes.last().map_or(&head.state, |c| &c.state);
        let mut pending_restart = Vec::new();
        if let Request::Apply { node, .. } = request {
            pending_restart = self.running.changes(node);
        }
        Ok(Preview {
            revision: head.number,
            diff: diff::between(&head.state, after),
            summaries: outcome.changes.iter().map(|c| c.summary.clone()).collect(),
            note: outcome.note,
            pending_restart,
        })
    }

    /// The core's decision on `request` against `head`, with what it observes now. A node whose
    /// services come from etcd refuses `veer apply` (and its own config file's services), except
    /// while held, when `veer apply -f FILE` is one of the operator's two ways out.
    fn decide(
        &self,
        head: &Head,
        request: &Request,
        now: SystemTime,
    ) -> Result<super::change::Outcome, ControlError> {
        if self.etcd.is_some()
            && let Request::Apply { origin, .. } = request
            && match origin {
                Origin::Apply { .. } => head.held.is_none(),
                Origin::Config { .. } => true,
                _ => false,
            }
        {
            return Err(ControlError::FromEtcd);
        }
        let observed = self.observe(head, Some(request))?;
        core::decide(
            request,
            &Live {
                head,
                history: self.node.revisions(),
                observed: &observed,
                now,
            },
        )
        .map_err(|e| match e {
            // The way out says what a node following etcd does after it.
            ControlError::Held {
                number,
                path,
                problem,
                usable,
                ..
            } => ControlError::Held {
                number,
                path,
                problem,
                usable,
                etcd: self.etcd.is_some(),
            },
            e => e,
        })
    }

    /// Commits `changes` in order, each recording `audit`; returns the revision in force
    /// afterwards. A failure stops there: the changes before it stay committed, the failed one
    /// is undone.
    fn commit_all(
        &mut self,
        head: &Head,
        changes: Vec<Change>,
        audit: &Audit,
    ) -> Result<u64, ControlError> {
        let mut current = head.clone();
        for mut change in changes {
            change.audit = audit.clone();
            current.number = self.commit(&current.state, &change)?;
            current.state = change.state;
        }
        Ok(current.number)
    }

    /// Applies one change to the kernel and commits it; puts `previous` back if the commit
    /// fails, so the maps and the store never disagree for long (a crash in between is repaired
    /// at the next start, which reconciles the maps with the last revision). While held there
    /// is no previous state to put back: what the maps held is not known.
    fn commit(&mut self, previous: &DesiredState, change: &Change) -> Result<u64, ControlError> {
        let held = self.is_held();
        self.node
            .apply(&change.state, &self.health.down(&change.state))?;
        match self.node.commit(change) {
            Ok(number) => {
                tracing::info!(revision = number, origin = change.origin.word(), summary = %change.summary, "applied");
                Ok(number)
            }
            Err(e) if held => {
                tracing::error!(error = %chain(&e), "recording the operator's choice failed; the maps hold it, and the newest revision file still cannot be used");
                Err(e)
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
        if self.is_held() {
            return Ok(());
        }
        let head = self.head();
        if let Some(change) = rollouts::hold_after_restart(&head)? {
            self.commit_all(&head, vec![change], &Audit::by(Author::Rollout))?;
        }
        Ok(())
    }

    /// Reads the config file and applies it, unless what it holds is what was last applied from
    /// it. A broken file is an error and changes nothing.
    pub fn reload(&mut self) -> Result<Answer, ControlError> {
        let read = config::read(&self.config_path);
        self.reload_from(read)
    }

    /// Like `reload`, with the file's text as the caller read it (once it settled).
    pub fn reload_from(
        &mut self,
        read: Result<String, config::LoadError>,
    ) -> Result<Answer, ControlError> {
        let now = SystemTime::now();
        let result = read
            .and_then(|text| Ok((config::parse(&self.config_path, &text)?, text)))
            .map_err(ControlError::from)
            .and_then(|(cfg, text)| {
                if self.etcd.is_some() {
                    self.local_file(&cfg)
                } else {
                    self.apply_file(cfg, &text)
                }
            });
        self.record_reload(result.as_ref().map(drop), now);
        result
    }

    /// Remembers how a reload of the file (or the start's reading of it) went.
    fn record_reload(&mut self, result: Result<(), &ControlError>, now: SystemTime) {
        self.file.last_attempt = Some(now);
        match result {
            Ok(()) => {
                self.file.last_good = Some(now);
                self.file.last_error = None;
                self.file.reloads_ok += 1;
            }
            Err(e) => {
                self.file.last_error = Some(ReloadError::of(e, now));
                self.file.reloads_failed += 1;
            }
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

    /// The config file of a node whose services come from etcd: `[node]` only (read for the
    /// settings that wait for a restart); services in it are refused, never applied.
    fn local_file(&mut self, cfg: &config::Config) -> Result<Answer, ControlError> {
        if !cfg.state.services.is_empty() {
            return Err(ControlError::ServicesInLocalFile {
                path: self.config_path.clone(),
            });
        }
        Ok(Answer {
            revision: self.head().number,
            changed: false,
            note: None,
            pending_restart: self.want(&cfg.node),
        })
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
        self.apply_by(request, &Audit::by(request.implied_author()), now)
    }

    /// `apply`, its revisions recording `audit`.
    pub fn apply_by(
        &mut self,
        request: &Request,
        audit: &Audit,
        now: SystemTime,
    ) -> Result<Answer, ControlError> {
        let mut answer = self.execute_by(request, audit, now)?;
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
        *self
            .gate_checks
            .entry((key.0.clone(), result.is_ok()))
            .or_default() += 1;
        self.gates.insert(key, GateState::Done(result));
    }

    /// How many times each service's step gates were checked, by outcome (pass: true), since
    /// the daemon started.
    pub fn gate_checks(&self) -> &BTreeMap<(String, bool), u64> {
        &self.gate_checks
    }

    /// Decides every running rollout; commits advances, completions and breaches as revisions.
    /// Returns the gate checks to run.
    pub fn rollout_tick(&mut self, now: SystemTime) -> Result<Vec<GateJob>, ControlError> {
        let running = |r: &Rollout| r.phase == crate::rollout::Phase::Running;
        // While held, the rollouts of the newest usable revision are not in force either.
        if self.is_held()
            || !self
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
        let mut changes = tick.changes;
        drains::after_rollouts(&head, &mut changes, now);
        self.commit_all(&head, changes, &Audit::by(Author::Rollout))?;
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
    /// its deadline is done, and one whose group takes new flows again (shifted back, removed)
    /// is called off.
    ///
    /// The drains are the live revision's (`Head::drains`): one it no longer holds (replaced,
    /// or called off with its group's weight) stops before it ends another flow; one it holds
    /// and this daemon has not seen (after a restart) starts with its recorded moment and pace.
    /// While the newest revision file cannot be used, no drain ends anything: what is in force
    /// is not known.
    pub fn drain_tick(&mut self, now: SystemTime) -> Result<(), ControlError> {
        if self.is_held() {
            return Ok(());
        }
        let Some(latest) = self.node.revisions().last() else {
            return Ok(());
        };
        let wanted = &latest.drains;
        self.drains.retain(|d| {
            let kept = wanted.contains(&d.drain);
            if !kept {
                tracing::info!(
                    service = d.drain.service,
                    group = d.drain.group,
                    ended = d.ended,
                    "paced drain called off: the group takes new flows again, is gone, or was drained again"
                );
            }
            kept
        });
        self.drains_done.retain(|d| wanted.contains(d));
        for d in wanted {
            let known = self.drains.iter().any(|x| x.drain == *d) || self.drains_done.contains(d);
            if !known {
                tracing::info!(
                    service = d.service,
                    group = d.group,
                    ends_from = %humantime::format_rfc3339_millis(d.ends_from),
                    pace = %d.pace,
                    "paced drain in force"
                );
                self.drains.push(Draining::new(d));
            }
        }
        if self.drains.is_empty() {
            return Ok(());
        }
        let finished = drains::tick(&mut self.drains, &mut self.node, now)?;
        self.drains_done
            .extend(finished.into_iter().map(|d| d.drain));
        Ok(())
    }

    /// `services` with the paced drain in force on each group (how long until its deadline is
    /// counted from the moment the status is asked for).
    fn with_drains(&self, mut services: Vec<views::ServiceView>) -> Vec<views::ServiceView> {
        let now = SystemTime::now();
        for s in &mut services {
            for g in &mut s.groups {
                g.drain = self
                    .paced_drain(&s.name, &g.name)
                    .map(|(d, done)| views::DrainView {
                        ends_from: d.ends_from,
                        deadline_left: d.ends_from.duration_since(now).unwrap_or_default(),
                        pace: d.pace,
                        done,
                    });
            }
        }
        services
    }

    /// The paced drain of `service`/`group` the live revision holds, with whether it is done
    /// (no flow was left after its deadline).
    fn paced_drain(&self, service: &str, group: &str) -> Option<(PacedDrain, bool)> {
        let latest = self.node.revisions().last()?;
        let d = latest
            .drains
            .iter()
            .find(|d| d.service == service && d.group == group)?;
        Some((d.clone(), self.drains_done.contains(d)))
    }

    /// The judge of `r`'s current step, and the verdict `rollout status` shows: that judge's
    /// latest, or else the one kept in the rollout.
    fn judge_of(&self, r: &Rollout) -> (Option<StepJudge>, Option<StepVerdict>) {
        let judge = self.judges.get(&observed::gate_key(r)).cloned();
        let shown = judge
            .as_ref()
            .and_then(|j| j.latest().cloned())
            .or_else(|| r.verdict.clone());
        (judge, shown)
    }

    /// Paced drains still ending flows (or waiting for their deadline).
    #[cfg(test)]
    pub(super) fn paced_drains(&self) -> usize {
        self.node.revisions().last().map_or(0, |r| {
            r.drains
                .iter()
                .filter(|d| !self.drains_done.contains(d))
                .count()
        })
    }

    /// Every active check the live state asks for (none while held: the live state is not
    /// known).
    pub fn health_jobs(&self) -> Vec<CheckJob> {
        if self.is_held() {
            return Vec::new();
        }
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
        if head.held.is_some() {
            return Ok(());
        }
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
        self.census = Some(u.census.clone());
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

    /// The live revision, services, weights, backends, flows and counters. While held, no
    /// revision is in force and the services the maps hold are not known: only the files that
    /// cannot be used and the conntrack are shown.
    pub fn status(&self, service: Option<&str>) -> Result<StatusView, ControlError> {
        self.status_with(service, &self.node.census()?)
    }

    /// The status metrics render: active flows and conntrack entries as the last upkeep pass
    /// counted them (every second, or every tenth of the time a pass takes on a very large
    /// table), so that a scrape costs no scan of conntrack under the control lock. Before the
    /// first pass, one scan.
    pub fn metrics_status(&self) -> Result<StatusView, ControlError> {
        match &self.census {
            Some(c) => self.status_with(None, c),
            None => self.status_with(None, &self.node.census()?),
        }
    }

    fn status_with(
        &self,
        service: Option<&str>,
        census: &Census,
    ) -> Result<StatusView, ControlError> {
        let held = self.is_held();
        let latest = self.node.revisions().last().filter(|_| !held);
        let empty = DesiredState::default();
        let state = latest.map_or(&empty, |r| &r.state);
        if let Some(name) = service
            && state.service(name).is_none()
        {
            return Err(ControlError::UnknownService {
                service: name.to_owned(),
            });
        }
        Ok(StatusView {
            files: self.files_view(),
            config: self.config_view(),
            revision: latest.map(RevisionView::from),
            interfaces: self.running.interfaces.clone(),
            dataplane: self.node.dataplane(),
            conntrack_entries: census.flows,
            conntrack_capacity: self.running.conntrack_max,
            conntrack_new_entries: census.new_flows,
            conntrack_new_capacity: self.running.conntrack_new_max,
            services: self.with_drains(views::services(
                state,
                service,
                &self.node,
                &self.health,
                &census.active,
            )?),
            source: self.source_view(),
        })
    }

    /// Revision files that cannot be used, and the one that holds changes back, if any.
    pub fn files_view(&self) -> FilesView {
        let revisions = self.node.revisions();
        let unusable = self.node.unusable();
        FilesView {
            held: crate::state::hold(revisions, unusable).cloned(),
            newest_usable: revisions.last().map(|r| r.number),
            unusable: unusable.to_vec(),
        }
    }

    /// The config file: last good reload, last rejection, node settings waiting for a restart.
    pub fn config_view(&self) -> ConfigView {
        ConfigView {
            path: self.config_path.clone(),
            last_good: self.file.last_good,
            last_attempt: self.file.last_attempt,
            reloads_ok: self.file.reloads_ok,
            reloads_failed: self.file.reloads_failed,
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
        let (judge, judged) = self.judge_of(r);
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
        let weights: Vec<(String, crate::model::Weight)> = head
            .state
            .service(service)
            .map(|s| {
                s.groups
                    .iter()
                    .map(|g| (g.name.clone(), g.weight))
                    .collect()
            })
            .unwrap_or_default();
        let census = self.node.census()?;
        let elapsed = now.duration_since(r.step_started).unwrap_or_default();
        let mut groups = Vec::new();
        for (name, weight) in &weights {
            let active_flows = self
                .node
                .ids()
                .backends
                .iter()
                .filter(|((s, g, _), _)| s == service && g == name)
                .map(|(_, id)| census.active.get(id).copied().unwrap_or(0))
                .sum();
            let baseline = r.group_baselines.iter().find(|(g, _)| g == name);
            let in_step = match baseline {
                // A rollout that is over has no current step.
                _ if r.phase.is_final() => None,
                Some((_, base)) => {
                    let now_counts = observed::group_counts(
                        &self.node,
                        &self.health,
                        &head.state,
                        service,
                        name,
                    )?;
                    Some(crate::rollout::engine::Counts {
                        attempted: now_counts.attempted.saturating_sub(base.attempted),
                        failed: now_counts.failed.saturating_sub(base.failed),
                    })
                }
                None if *name == r.plan.to => Some(r.in_step(counts)),
                None => None,
            };
            let seconds = elapsed.as_secs_f64();
            groups.push(views::GroupInStep {
                name: name.clone(),
                weight: *weight,
                active_flows,
                in_step,
                new_per_second: in_step
                    .filter(|_| seconds > 0.0)
                    .map(|c| c.attempted as f64 / seconds),
            });
        }
        let in_step = if r.phase.is_final() {
            r.history
                .last()
                .map_or_else(|| r.in_step(counts), |h| h.counts)
        } else {
            r.in_step(counts)
        };
        Ok(RolloutView {
            rollout: r.clone(),
            weights,
            in_step,
            waiting,
            judge: judged,
            steps: views::steps(r, in_step, now),
            groups,
            elapsed,
            verdict: views::Verdict {
                counts: in_step,
                max_failure_rate: r.plan.max_failure_rate,
                min_flows: r.plan.min_flows,
            },
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
        if let Some(source) = opts.etcd {
            this.follow_etcd(source);
        }
        this.hold_rollouts_after_restart()?;
        let now = SystemTime::now();
        match file {
            FileAtStart::Read(cfg, _) if this.etcd.is_some() => {
                this.local_file(&cfg)?;
                this.record_reload(Ok(()), now);
            }
            // The file is no operator's choice over a state nobody knows: it waits (refused, and
            // reported as such) until the operator chooses.
            FileAtStart::Read(_, _) if this.is_held() => {
                let head = this.head();
                if let Some(held) = &head.held {
                    let e = ControlError::held(held, this.node.revisions().last());
                    tracing::error!(error = %chain(&e), "config file not applied");
                    this.record_reload(Err(&e), now);
                }
            }
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
