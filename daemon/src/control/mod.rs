//! The control layer: every operation an operator or a script can ask for, on the dataplane and
//! the revision store together. The socket API and the CLI are thin adapters over it.
//!
//! Each change is validated, applied to the maps, then committed as a revision; if the commit
//! fails the maps are put back, so the maps and the store never disagree for long (and a crash in
//! between is repaired at the next start, which reconciles the maps with the last revision).

use std::{
    collections::HashMap,
    net::{IpAddr, SocketAddr},
    path::{Path, PathBuf},
};

use sha2::{Digest as _, Sha256};

mod health;
mod rollouts;

pub use rollouts::GateJob;

use crate::{
    api::protocol::{
        BackendStatus, FlowInfo, GroupStatus, HistoryEntry, PinStatus, RevisionInfo, ServiceStatus,
        Status,
    },
    config::{self, NodeConfig},
    dataplane::{
        Dataplane, DataplaneError, flows,
        loader::LoadOptions,
        maps::words_addr,
        sync::{self, SyncError},
    },
    model::{DesiredState, Pin, Weight},
    paths,
    rollout::Rollout,
    state::{Origin, Store, StoreError},
};

/// Why an operation was refused or failed.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    /// The request names a service that does not exist.
    #[error("no service `{service}`")]
    UnknownService {
        /// Name.
        service: String,
    },
    /// The request names a group the service does not have.
    #[error("service `{service}` has no group `{group}`")]
    UnknownGroup {
        /// Service.
        service: String,
        /// Group.
        group: String,
    },
    /// No such revision.
    #[error("no revision {number} (see `veer history`)")]
    UnknownRevision {
        /// Number.
        number: u64,
    },
    /// Nothing to roll back to.
    #[error("there is no revision before {current} to roll back to")]
    NothingToRollBack {
        /// The live revision.
        current: u64,
    },
    /// The service did not exist at the revision rolled back to.
    #[error("service `{service}` did not exist at revision {number}")]
    ServiceNotAtRevision {
        /// Service.
        service: String,
        /// Revision.
        number: u64,
    },
    /// A bad weight, prefix or similar in a request.
    #[error("{what}: {reason}")]
    BadRequest {
        /// What was wrong (`weight for v2`).
        what: String,
        /// Why.
        reason: String,
    },
    /// No pin with that prefix.
    #[error("service `{service}` has no pin for {prefix}")]
    UnknownPin {
        /// Service.
        service: String,
        /// Prefix.
        prefix: String,
    },
    /// A drain that would leave the service with no group taking new flows.
    #[error(
        "draining `{group}` would leave service `{service}` with no group taking new connections; shift weight to another group first, or pass --force to drop new connections"
    )]
    DrainLastGroup {
        /// Service.
        service: String,
        /// Group.
        group: String,
    },
    /// The config file is invalid.
    #[error(transparent)]
    Config(#[from] config::ConfigError),
    /// Applying to the maps failed (the previous state is in force).
    #[error(transparent)]
    Sync(#[from] SyncError),
    /// The dataplane failed.
    #[error(transparent)]
    Dataplane(#[from] DataplaneError),
    /// The store failed.
    #[error("recording the revision failed; the previous state was put back")]
    Store(#[from] StoreError),
    /// The config file could not be used at start (and there is no revision to fall back on).
    #[error(transparent)]
    Start(Box<config::LoadError>),
    /// A manual change to a service whose rollout is in progress.
    #[error(
        "service `{service}` has a rollout in progress; pause or abort it first (veer rollout abort {service})"
    )]
    RolloutInProgress {
        /// Service.
        service: String,
    },
    /// A rollout that cannot start.
    #[error(transparent)]
    RolloutPlan(#[from] crate::rollout::PlanError),
    /// A rollout request for a service without one.
    #[error("service `{service}` has no rollout in progress")]
    NoRollout {
        /// Service.
        service: String,
    },
}

/// What an apply did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Applied {
    /// The revision in force afterwards.
    pub revision: u64,
    /// Whether a new revision was made (false: the state was already in force).
    pub changed: bool,
}

/// Where the control layer keeps things.
#[derive(Clone, Debug)]
pub struct Options {
    /// Config file.
    pub config: PathBuf,
    /// State directory.
    pub state_dir: PathBuf,
    /// Pin directory.
    pub pin_dir: PathBuf,
}

/// The daemon's state: the dataplane, the revisions, the node settings, backend health and
/// what rollouts are waiting for.
pub struct Controller {
    dataplane: Dataplane,
    store: Store,
    node: NodeConfig,
    opts: Options,
    health: health::Health,
    gates: rollouts::GateResults,
}

/// SHA-256 of a config file's text, hex.
pub fn digest(text: &str) -> String {
    Sha256::digest(text.as_bytes())
        .iter()
        .fold(String::with_capacity(64), |mut s, b| {
            use std::fmt::Write as _;
            let _ = write!(s, "{b:02x}");
            s
        })
}

impl Controller {
    /// Starts: loads (or adopts) the pinned programs and maps, attaches (or adopts) the links,
    /// reconciles the maps with the last committed revision, then applies the config file if its
    /// content differs from the content last applied.
    pub fn start(opts: Options) -> Result<Self, ControlError> {
        let store = Store::open(&opts.state_dir)?;
        let (node, config_text) = match config::load(&opts.config) {
            Ok((c, text)) => (c.node, Some(text)),
            Err(config::LoadError::Read { source, .. })
                if source.kind() == std::io::ErrorKind::NotFound =>
            {
                tracing::warn!(config = %opts.config.display(), "no config file; starting with no services");
                (NodeConfig::default(), None)
            }
            Err(e) if store.latest().is_some() => {
                tracing::error!(error = %crate::cli::exit::chain(&e), "config file rejected; keeping the last committed revision");
                (NodeConfig::default(), None)
            }
            Err(e) => return Err(ControlError::Start(Box::new(e))),
        };
        let mut dataplane = Dataplane::load(&LoadOptions {
            pin_dir: Some(opts.pin_dir.clone()),
            conntrack_max: node.conntrack_max,
        })?;
        let links_dir = opts.pin_dir.join(paths::LINKS_SUBDIR);
        let mut interfaces = node.interfaces.clone();
        for pinned in crate::dataplane::links::pinned_interfaces(&links_dir) {
            if !interfaces.contains(&pinned) {
                tracing::warn!(interface = %pinned, "links pinned for an interface the config does not name; adopting them (veer teardown removes them)");
                interfaces.push(pinned);
            }
        }
        for ifname in &interfaces {
            dataplane.attach_interface(
                ifname,
                node.xdp_mode,
                node.hook_choice(ifname),
                Some(&links_dir),
            )?;
        }
        dataplane.attach_local_clients(Some(&links_dir))?;
        let mut this = Self {
            dataplane,
            store,
            node,
            opts,
            health: health::Health::default(),
            gates: rollouts::GateResults::default(),
        };
        if let Some(rev) = this.store.latest() {
            let (state, ids, number) = (rev.state.clone(), rev.ids.clone(), rev.number);
            this.dataplane.prepare_node(&state)?;
            let written = this.dataplane.reconcile(&state, ids, &sync::Down::new())?;
            tracing::info!(
                revision = number,
                ops = written,
                "maps reconciled with the last committed revision"
            );
        }
        this.hold_rollouts_after_restart()?;
        if let Some(text) = config_text {
            this.apply_config_if_changed(&text)?;
        }
        Ok(this)
    }

    /// Re-reads the config file (SIGHUP, file change) and applies it if its content differs
    /// from the content last applied. A broken file is an error and changes nothing.
    pub fn reload(&mut self) -> Result<Applied, ControlError> {
        let (_, text) =
            config::load(&self.opts.config).map_err(|e| ControlError::Start(Box::new(e)))?;
        self.apply_config_if_changed(&text)
    }

    fn apply_config_if_changed(&mut self, text: &str) -> Result<Applied, ControlError> {
        if self.last_config_digest().as_deref() == Some(digest(text).as_str()) {
            tracing::info!(
                "config file unchanged since it was last applied; the live revision stays in force"
            );
            return Ok(Applied {
                revision: self.current_number(),
                changed: false,
            });
        }
        let path = self.opts.config.clone();
        self.apply_config(text, &path, Origin::Config { path: path.clone() })
    }

    /// The node settings in force.
    pub fn node(&self) -> &NodeConfig {
        &self.node
    }

    /// The config file path.
    pub fn config_path(&self) -> &Path {
        &self.opts.config
    }

    /// The dataplane (read-only).
    pub fn dataplane(&self) -> &Dataplane {
        &self.dataplane
    }

    fn last_config_digest(&self) -> Option<String> {
        self.store.latest().and_then(|r| r.config_digest.clone())
    }

    /// The live desired state, borrowed (none before the first revision).
    fn live(&self) -> Option<&DesiredState> {
        self.store.latest().map(|r| &r.state)
    }

    fn current(&self) -> DesiredState {
        self.store
            .latest()
            .map(|r| r.state.clone())
            .unwrap_or_default()
    }

    fn current_number(&self) -> u64 {
        self.store.latest().map_or(0, |r| r.number)
    }

    /// The rollouts recorded in the live revision.
    pub fn rollouts(&self) -> Vec<Rollout> {
        self.store
            .latest()
            .map(|r| r.rollouts.clone())
            .unwrap_or_default()
    }

    /// Applies `desired` as a new revision (unless it is already in force and the config digest
    /// is unchanged). Operator changes to the weights of a service whose rollout is in progress
    /// are refused: the next step would overwrite them.
    fn commit(
        &mut self,
        desired: DesiredState,
        origin: Origin,
        summary: String,
        config_digest: Option<String>,
    ) -> Result<Applied, ControlError> {
        let rollouts = self.rollouts();
        self.commit_with(desired, rollouts, origin, summary, config_digest)
    }

    fn commit_with(
        &mut self,
        desired: DesiredState,
        rollouts: Vec<Rollout>,
        origin: Origin,
        summary: String,
        config_digest: Option<String>,
    ) -> Result<Applied, ControlError> {
        let digest = config_digest.or_else(|| self.last_config_digest());
        let current = self.current();
        if desired == current && digest == self.last_config_digest() && rollouts == self.rollouts()
        {
            return Ok(Applied {
                revision: self.current_number(),
                changed: false,
            });
        }
        if origin != Origin::Rollout {
            rollouts::refuse_weight_changes(&rollouts, &current, &desired)?;
        }
        let down = self.health.down(&desired);
        self.dataplane.prepare_node(&desired)?;
        self.dataplane.apply(&desired, &down)?;
        let ids = self.dataplane.applied().ids.clone();
        let word = origin.word();
        tracing::debug!(origin = word, summary = %summary, "committing");
        match self
            .store
            .commit(origin, summary, desired, ids, digest, rollouts)
        {
            Ok(rev) => {
                tracing::info!(revision = rev.number, origin = word, summary = %rev.summary, "applied");
                Ok(Applied {
                    revision: rev.number,
                    changed: true,
                })
            }
            Err(e) => {
                if let Err(undo) = self.dataplane.apply(&current, &self.health.down(&current)) {
                    tracing::error!(error = %crate::cli::exit::chain(&undo), "putting the previous state back failed");
                }
                Err(e.into())
            }
        }
    }

    /// Validates and applies config text (from the file, `veer apply`, or a reload).
    pub fn apply_config(
        &mut self,
        text: &str,
        path: &Path,
        origin: Origin,
    ) -> Result<Applied, ControlError> {
        let cfg = config::parse(path, text)?;
        if cfg.node != self.node {
            tracing::warn!("[node] settings changed; they take effect at the next daemon start");
        }
        let mut state = cfg.state;
        // A service whose latest rollout is the one the file declares keeps the weights that
        // rollout set (in progress, completed or rolled back): the rollout owns them.
        let current = self.current();
        for r in &self.rollouts() {
            let Some(s) = state.services.iter_mut().find(|s| s.name == r.service) else {
                continue;
            };
            if s.rollout.as_ref() == Some(&r.plan)
                && let Some(live) = current.service(&r.service)
            {
                for g in &mut s.groups {
                    if let Some(l) = live.group(&g.name) {
                        g.weight = l.weight;
                    }
                }
            }
        }
        let summary = summarize(&current, &state);
        let d = if matches!(origin, Origin::Config { .. }) {
            Some(digest(text))
        } else {
            None
        };
        let declared: Vec<(String, crate::rollout::Plan)> = state
            .services
            .iter()
            .filter_map(|s| Some((s.name.clone(), s.rollout.clone()?)))
            .collect();
        let mut applied = self.commit(state, origin, summary, d)?;
        for (service, plan) in declared {
            let seen = self
                .rollouts()
                .iter()
                .any(|r| r.service == service && (r.plan == plan || !r.phase.is_final()));
            if seen {
                continue;
            }
            match self.rollout_start(&service, plan, std::time::SystemTime::now()) {
                Ok(a) => {
                    tracing::info!(%service, revision = a.revision, "rollout declared in the config started");
                    applied = a;
                }
                Err(ControlError::RolloutPlan(crate::rollout::PlanError::AlreadyThere {
                    ..
                })) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(applied)
    }

    fn service_mut<'a>(
        state: &'a mut DesiredState,
        service: &str,
    ) -> Result<&'a mut crate::model::Service, ControlError> {
        state
            .services
            .iter_mut()
            .find(|s| s.name == service)
            .ok_or_else(|| ControlError::UnknownService {
                service: service.to_owned(),
            })
    }

    /// Sets the weights of some groups of one or more services (a dual-stack pair, say) in one
    /// revision; groups not named keep theirs. Every named group must exist in every service.
    pub fn shift(
        &mut self,
        services: &[String],
        weights: &[(String, Weight)],
    ) -> Result<Applied, ControlError> {
        if services.is_empty() {
            return Err(ControlError::BadRequest {
                what: "shift".to_owned(),
                reason: "no service named".to_owned(),
            });
        }
        let mut state = self.current();
        let mut summary = Vec::new();
        for service in services {
            let s = Self::service_mut(&mut state, service)?;
            for (group, weight) in weights {
                let g = s
                    .groups
                    .iter_mut()
                    .find(|g| &g.name == group)
                    .ok_or_else(|| ControlError::UnknownGroup {
                        service: service.clone(),
                        group: group.clone(),
                    })?;
                if g.backends.is_empty() && !weight.is_zero() {
                    return Err(ControlError::BadRequest {
                        what: format!("weight for `{group}`"),
                        reason: format!("group `{group}` has no backends, so it can only weigh 0"),
                    });
                }
                g.weight = *weight;
            }
            let groups: Vec<String> = s
                .groups
                .iter()
                .map(|g| format!("{}={}", g.name, g.weight))
                .collect();
            summary.push(format!("{service}: {}", groups.join(" ")));
        }
        self.commit(
            state,
            Origin::Shift,
            format!("shift {}", summary.join("; ")),
            None,
        )
    }

    /// Sets a group's weight to 0 (its flows stay; `drain --wait` watches them end).
    pub fn drain(
        &mut self,
        service: &str,
        group: &str,
        force: bool,
    ) -> Result<Applied, ControlError> {
        let mut state = self.current();
        let s = Self::service_mut(&mut state, service)?;
        if s.group(group).is_none() {
            return Err(ControlError::UnknownGroup {
                service: service.to_owned(),
                group: group.to_owned(),
            });
        }
        let others_take_flows = s
            .groups
            .iter()
            .any(|g| g.name != group && !g.weight.is_zero() && !g.backends.is_empty());
        let this_takes_flows = s.group(group).is_some_and(|g| !g.weight.is_zero());
        if this_takes_flows && !others_take_flows && !force {
            return Err(ControlError::DrainLastGroup {
                service: service.to_owned(),
                group: group.to_owned(),
            });
        }
        for g in &mut s.groups {
            if g.name == group {
                g.weight = Weight::ZERO;
            }
        }
        self.commit(
            state,
            Origin::Drain,
            format!("drain {service}/{group}"),
            None,
        )
    }

    /// Pins a client prefix of a service to a group (replacing an existing pin of the prefix).
    pub fn pin(
        &mut self,
        service: &str,
        prefix: &str,
        group: &str,
    ) -> Result<Applied, ControlError> {
        let (addr, len) = parse_prefix(prefix)?;
        let mut state = self.current();
        let s = Self::service_mut(&mut state, service)?;
        if s.group(group).is_none() {
            return Err(ControlError::UnknownGroup {
                service: service.to_owned(),
                group: group.to_owned(),
            });
        }
        if addr.is_ipv4() != s.vip.is_ipv4() {
            return Err(ControlError::BadRequest {
                what: format!("prefix {prefix}"),
                reason: format!("not of the VIP's address family ({})", s.vip),
            });
        }
        s.pins.retain(|p| (p.prefix, p.len) != (addr, len));
        s.pins.push(Pin {
            prefix: addr,
            len,
            group: group.to_owned(),
        });
        self.commit(
            state,
            Origin::Pin,
            format!("pin {service} {addr}/{len} -> {group}"),
            None,
        )
    }

    /// Removes a pin.
    pub fn unpin(&mut self, service: &str, prefix: &str) -> Result<Applied, ControlError> {
        let (addr, len) = parse_prefix(prefix)?;
        let mut state = self.current();
        let s = Self::service_mut(&mut state, service)?;
        let before = s.pins.len();
        s.pins.retain(|p| (p.prefix, p.len) != (addr, len));
        if s.pins.len() == before {
            return Err(ControlError::UnknownPin {
                service: service.to_owned(),
                prefix: prefix.to_owned(),
            });
        }
        self.commit(
            state,
            Origin::Unpin,
            format!("unpin {service} {addr}/{len}"),
            None,
        )
    }

    /// Re-applies revision `to` (default: the one before the live one) as a new revision; with a
    /// service, only that service is taken from `to`.
    pub fn rollback(
        &mut self,
        service: Option<&str>,
        to: Option<u64>,
    ) -> Result<Applied, ControlError> {
        let current = self.current_number();
        let to = match to {
            Some(n) => n,
            None => current
                .checked_sub(1)
                .filter(|n| *n > 0)
                .ok_or(ControlError::NothingToRollBack { current })?,
        };
        let target = self
            .store
            .get(to)
            .ok_or(ControlError::UnknownRevision { number: to })?
            .state
            .clone();
        let (state, summary) = match service {
            None => (target, format!("rollback to revision {to}")),
            Some(name) => {
                let old = target.service(name).cloned().ok_or_else(|| {
                    ControlError::ServiceNotAtRevision {
                        service: name.to_owned(),
                        number: to,
                    }
                })?;
                let mut state = self.current();
                match state.services.iter_mut().find(|s| s.name == name) {
                    Some(s) => *s = old,
                    None => state.services.push(old),
                }
                (state, format!("rollback {name} to revision {to}"))
            }
        };
        self.commit(state, Origin::Rollback { to }, summary, None)
    }

    /// Revisions, newest first, optionally only those naming `service`.
    pub fn history(&self, service: Option<&str>) -> Vec<HistoryEntry> {
        self.store
            .all()
            .iter()
            .rev()
            .filter(|r| service.is_none_or(|s| r.services.iter().any(|n| n == s)))
            .map(|r| HistoryEntry {
                revision: revision_info(r),
            })
            .collect()
    }

    /// The live revision, services, weights, backends, flows and counters.
    pub fn status(&self, service: Option<&str>) -> Result<Status, ControlError> {
        let state = self.current();
        if let Some(name) = service
            && state.service(name).is_none()
        {
            return Err(ControlError::UnknownService {
                service: name.to_owned(),
            });
        }
        let ids = &self.dataplane.applied().ids;
        let (active, entries) = self.dataplane.census()?;
        let maps = self.dataplane.maps();
        let mut services = Vec::new();
        for s in state
            .services
            .iter()
            .filter(|s| service.is_none_or(|n| n == s.name))
        {
            let mut groups = Vec::new();
            for g in &s.groups {
                let mut backends = Vec::new();
                for b in &g.backends {
                    let id = ids
                        .backends
                        .get(&(s.name.clone(), g.name.clone(), b.addr))
                        .copied()
                        .unwrap_or(0);
                    let c = maps.backend_counters(id)?;
                    backends.push(BackendStatus {
                        address: b.addr,
                        healthy: self.health.is_up(&(s.name.clone(), g.name.clone(), b.addr)),
                        active_flows: active.get(&id).copied().unwrap_or(0),
                        new_flows: c.new_flows,
                        failed_flows: c.failed_flows + self.health.unanswered(id),
                        packets: c.packets,
                        bytes: c.bytes,
                    });
                }
                groups.push(GroupStatus {
                    name: g.name.clone(),
                    weight: g.weight,
                    active_flows: backends.iter().map(|b| b.active_flows).sum(),
                    backends,
                });
            }
            let sid = ids.services.get(&s.name).copied().unwrap_or(0);
            let sc = maps.service_counters(sid)?;
            services.push(ServiceStatus {
                name: s.name.clone(),
                vip: s.vip,
                port: s.port,
                protocol: s.protocol,
                groups,
                pins: s
                    .pins
                    .iter()
                    .map(|p| PinStatus {
                        prefix: format!("{}/{}", p.prefix, p.len),
                        group: p.group.clone(),
                    })
                    .collect(),
                packets: sc.packets,
                bytes: sc.bytes,
                new_flows: sc.new_flows,
                midflow_misses: sc.midflow_misses,
            });
        }
        Ok(Status {
            revision: self.store.latest().map(revision_info),
            interfaces: self.node.interfaces.clone(),
            dataplane: self.dataplane.report(),
            conntrack: crate::api::protocol::ConntrackStatus {
                entries,
                capacity: self.node.conntrack_max,
            },
            services,
        })
    }

    /// Conntrack entries, optionally of one service and/or one backend, at most `limit`.
    /// Returns the entries and how many matched in all.
    pub fn flows(
        &self,
        service: Option<&str>,
        backend: Option<SocketAddr>,
        limit: usize,
    ) -> Result<(Vec<FlowInfo>, usize), ControlError> {
        let state = self.current();
        let ids = &self.dataplane.applied().ids;
        let service_id = match service {
            Some(name) => {
                state
                    .service(name)
                    .ok_or_else(|| ControlError::UnknownService {
                        service: name.to_owned(),
                    })?;
                ids.services.get(name).copied()
            }
            None => None,
        };
        let names: HashMap<u32, &str> = ids
            .services
            .iter()
            .map(|(n, id)| (*id, n.as_str()))
            .collect();
        let groups: HashMap<u32, &str> = ids
            .groups
            .iter()
            .map(|((_, g), id)| (*id, g.as_str()))
            .collect();
        let now = flows::monotonic_ns();
        let mut out = Vec::new();
        let mut matched = 0;
        for (key, e) in self.dataplane.maps().flows()? {
            if service_id.is_some_and(|id| id != e.service_id) {
                continue;
            }
            let backend_addr = SocketAddr::new(
                words_addr(e.backend_addr, key.family),
                u16::from_be(e.backend_port),
            );
            if backend.is_some_and(|b| b != backend_addr) {
                continue;
            }
            matched += 1;
            if out.len() < limit {
                out.push(FlowInfo {
                    client: SocketAddr::new(
                        words_addr(key.src_addr, key.family),
                        u16::from_be(key.src_port),
                    ),
                    vip: SocketAddr::new(
                        words_addr(key.dst_addr, key.family),
                        u16::from_be(key.dst_port),
                    ),
                    protocol: if key.proto == veer_common::PROTO_TCP {
                        "tcp"
                    } else {
                        "udp"
                    }
                    .to_owned(),
                    service: names.get(&e.service_id).map(|s| (*s).to_owned()),
                    group: groups.get(&e.group_id).map(|s| (*s).to_owned()),
                    backend: backend_addr,
                    state: state_name(e.state).to_owned(),
                    idle_seconds: now.saturating_sub(e.last_seen_ns) / 1_000_000_000,
                });
            }
        }
        Ok((out, matched))
    }

    /// After a link or address event: attaches again to interfaces that came back, updates the
    /// XDP redirect targets, and checks the node settings of the live state again.
    pub fn links_changed(&mut self) -> Result<bool, ControlError> {
        let changed = self.dataplane.refresh_interfaces()?;
        if let Some(state) = self.live().cloned() {
            self.dataplane.prepare_node(&state)?;
        }
        Ok(changed)
    }

    /// One conntrack upkeep pass (expiry by the configured timeouts).
    pub fn upkeep(&mut self) -> Result<flows::Upkeep, ControlError> {
        let timeouts = self.node.timeouts;
        self.dataplane.expire_socket_flows(timeouts.udp)?;
        let u = flows::upkeep(self.dataplane.maps_mut(), &timeouts, flows::monotonic_ns())?;
        self.health.record_unanswered(&u.unanswered, &u.syn);
        Ok(u)
    }
}

fn state_name(state: u8) -> &'static str {
    use veer_common::flow::{STATE_CLOSING, STATE_ESTABLISHED, STATE_SYN, STATE_UDP};
    match state {
        STATE_SYN => "syn",
        STATE_ESTABLISHED => "established",
        STATE_CLOSING => "closing",
        STATE_UDP => "udp",
        _ => "unknown",
    }
}

fn parse_prefix(prefix: &str) -> Result<(IpAddr, u8), ControlError> {
    config::parse_prefix(prefix).ok_or_else(|| ControlError::BadRequest {
        what: format!("prefix `{prefix}`"),
        reason: "not a network prefix with its host bits zero (e.g. 203.0.113.0/24)".to_owned(),
    })
}

fn revision_info(r: &crate::state::Revision) -> RevisionInfo {
    RevisionInfo {
        number: r.number,
        time: humantime::format_rfc3339_seconds(r.time).to_string(),
        origin: r.origin.word().to_owned(),
        summary: r.summary.clone(),
    }
}

/// One line saying what differs between two states.
pub fn summarize(old: &DesiredState, new: &DesiredState) -> String {
    let mut parts = Vec::new();
    for s in &new.services {
        match old.service(&s.name) {
            None => parts.push(format!("+{}", s.name)),
            Some(o) if o != s => {
                let weights = s
                    .groups
                    .iter()
                    .map(|g| format!("{}={}", g.name, g.weight))
                    .collect::<Vec<_>>()
                    .join(" ");
                parts.push(format!("~{} ({weights})", s.name));
            }
            Some(_) => {}
        }
    }
    for s in &old.services {
        if new.service(&s.name).is_none() {
            parts.push(format!("-{}", s.name));
        }
    }
    if parts.is_empty() {
        "no change".to_owned()
    } else {
        parts.join(", ")
    }
}
