//! The etcd source in the controller. What the node follows in etcd (its config document in
//! force, the fleet rollouts; `sources::etcd::Watcher` keeps them) becomes requests of the same
//! core and commit path as the file and the CLI: `Request::Apply` for a config document,
//! `Request::FleetRollout` for the node's part of each fleet rollout. Nothing here writes a map.
//!
//! - **A config document** is parsed with the file's schema and rules, services only, with its
//!   key as the file name (`/veer/config:12:9: ...`). A refused document changes nothing and
//!   stays in the node's status until a newer one applies; one refused for a reason of the moment
//!   (a local rollout owns the weights) is tried again at every pass.
//! - **Order within one pass**: rollouts the fleet rolled back, paused or left are restored or
//!   held first, then the config applies, then rollouts the fleet runs start or resume, so a
//!   rollout's completion (config and progress in one etcd transaction) never meets a rollout
//!   that still owns the weights.
//! - **Local changes** (`veer shift`, `drain`, `pin`, `unpin`, `rollback` on the node) stay as
//!   overrides until the next change of the config document in etcd, which replaces them; the
//!   status lists them. `veer apply` is refused: the services come from etcd.
//! - **The status document** ([`NodeStatus`]) says what the node runs and how far it synced.

use std::{collections::BTreeMap, fmt::Write as _, time::SystemTime};

use super::{
    controller::Controller,
    core,
    effects::{Effects, Readings},
    error::ControlError,
    request::Request,
    source::{EtcdSource, Following, Seen, SourceView},
};
use crate::{
    config,
    error::chain,
    fleet::{
        self, AppliedConfig, Document, FleetRollout, GroupStatus, NodeRollout, NodeStatus,
        Progress, RolloutPhase, STATUS_SCHEMA, ServiceStatus, StatusError,
    },
    rollout::{Phase, Rollout},
    sources::etcd::SourceState,
    state::Origin,
};

/// A fleet rollout's documents as this node reads them.
struct FleetDocs {
    plan: FleetRollout,
    progress: Progress,
    plan_key: String,
    plan_revision: i64,
}

/// Reads one rollout's plan and progress; an unreadable one is an error to report.
fn fleet_docs(docs: &fleet::RolloutDocuments) -> Result<Option<FleetDocs>, StatusError> {
    let (Some(plan), Some(progress)) = (&docs.plan, &docs.progress) else {
        return Ok(None);
    };
    let bad = |d: &Document, what: &str, e: &serde_json::Error| StatusError {
        key: d.key.clone(),
        mod_revision: d.mod_revision,
        message: format!(
            "{} (mod revision {}) is not a valid {what}: {e}",
            d.key, d.mod_revision
        ),
    };
    let p =
        FleetRollout::from_json(&plan.value).map_err(|e| bad(plan, "fleet rollout plan", &e))?;
    let g = Progress::from_json(&progress.value)
        .map_err(|e| bad(progress, "fleet rollout progress", &e))?;
    Ok(Some(FleetDocs {
        plan: p,
        progress: g,
        plan_key: plan.key.clone(),
        plan_revision: plan.mod_revision,
    }))
}

/// Whether a directive is carried out before the config applies (it may give weights back)
/// rather than after (it may take them).
fn before_config(d: &fleet::Directive) -> bool {
    !matches!(d, fleet::Directive::Run | fleet::Directive::Complete)
}

/// One request for a node's part of a fleet rollout, and where to report its failure.
struct Part {
    service: String,
    request: Request,
    key: String,
    mod_revision: i64,
    early: bool,
}

impl<N: Effects + Readings> Controller<N> {
    /// Makes this controller follow the etcd source `source`: services come from etcd, the
    /// config file keeps `[node]` (and `[source]`), and `veer apply` is refused.
    pub fn follow_etcd(&mut self, source: EtcdSource) {
        self.etcd = Some(Following::new(source));
    }

    /// Whether the node is ready: always with the config file; with etcd, once a pass ran
    /// after the first full sync.
    pub fn is_ready(&self) -> bool {
        self.etcd.as_ref().is_none_or(|f| f.ready)
    }

    /// One pass over what the etcd source holds now: rollouts the fleet ends or holds, the
    /// config document, rollouts the fleet runs. Returns whether the node's status may have
    /// changed. Before the first full sync only the source's health is recorded: the node keeps
    /// serving its last local revision.
    pub fn follow(&mut self, state: &SourceState, now: SystemTime) -> bool {
        let Some(f) = self.etcd.as_mut() else {
            return false;
        };
        f.seen = Seen {
            revision: state.revision,
            stale_since: state.stale_since,
            error: state.error.clone(),
            last_sync: state.last_sync,
        };
        if !state.synced {
            return false;
        }
        let node = f.source.node.clone();
        let was_ready = f.ready;
        let config_before = (f.applied.clone(), f.refused.clone());
        let before = self.head().number;

        let mut errors = BTreeMap::new();
        let mut parts = Vec::new();
        for (service, docs) in &state.rollouts {
            match fleet_docs(docs) {
                Err(e) => {
                    errors.insert(service.clone(), e);
                }
                Ok(None) => {}
                Ok(Some(d)) => {
                    let directive = fleet::directive(&d.plan, &d.progress, &node);
                    parts.push(Part {
                        service: service.clone(),
                        early: before_config(&directive),
                        request: Request::FleetRollout {
                            service: service.clone(),
                            id: d.plan.id.clone(),
                            plan: d.plan.node_plan.clone(),
                            directive,
                        },
                        key: d.plan_key,
                        mod_revision: d.plan_revision,
                    });
                }
            }
        }
        // Rollouts of this node that belong to a fleet rollout etcd no longer has (its keys
        // deleted, or replaced by another one): the node is no longer part of them. One whose
        // documents are there but unreadable is left as it is (the error is reported).
        for r in self.head().rollouts.iter().filter(|r| !r.phase.is_final()) {
            let Some(id) = &r.fleet else { continue };
            let listed = parts.iter().any(|p| {
                matches!(&p.request, Request::FleetRollout { service, id: pid, .. }
                    if *service == r.service && pid == id)
            });
            if !listed && !errors.contains_key(&r.service) {
                parts.push(Part {
                    service: r.service.clone(),
                    early: true,
                    request: Request::FleetRollout {
                        service: r.service.clone(),
                        id: id.clone(),
                        plan: r.plan.clone(),
                        directive: fleet::Directive::NotInvolved,
                    },
                    key: String::new(),
                    mod_revision: 0,
                });
            }
        }

        for p in parts.iter().filter(|p| p.early) {
            self.run_part(p, now, &mut errors);
        }
        self.apply_config(state, now);
        for p in parts.iter().filter(|p| !p.early) {
            self.run_part(p, now, &mut errors);
        }

        let Some(f) = self.etcd.as_mut() else {
            return false;
        };
        let changed =
            f.rollout_errors != errors || (f.applied.clone(), f.refused.clone()) != config_before;
        f.rollout_errors = errors;
        f.ready = true;
        !was_ready || changed || self.head().number != before
    }

    /// Carries out one fleet rollout request; a failure is reported under the plan's key.
    fn run_part(&mut self, p: &Part, now: SystemTime, errors: &mut BTreeMap<String, StatusError>) {
        if let Err(e) = self.execute(&p.request, now) {
            let Request::FleetRollout { id, .. } = &p.request else {
                return;
            };
            let message = format!("fleet rollout {id}: {}", chain(&e));
            let known = self
                .etcd
                .as_ref()
                .and_then(|f| f.rollout_errors.get(&p.service))
                .is_some_and(|old| old.message == message);
            if !known {
                tracing::warn!(service = %p.service, "{message}");
            }
            errors.insert(
                p.service.clone(),
                StatusError {
                    key: p.key.clone(),
                    mod_revision: p.mod_revision,
                    message,
                },
            );
        }
    }

    /// Applies the config document in force, unless it was applied or refused for good.
    fn apply_config(&mut self, state: &SourceState, now: SystemTime) {
        let Some(doc) = &state.config else {
            return;
        };
        let this = (doc.key.clone(), doc.mod_revision);
        let Some(f) = self.etcd.as_ref() else { return };
        if f.handled.as_ref() == Some(&this) {
            return;
        }
        let refusal = |message: String| StatusError {
            key: doc.key.clone(),
            mod_revision: doc.mod_revision,
            message,
        };
        // Every problem of a document that is not a valid config, each with its line, as
        // `veer validate` lists a file's.
        let parsed = doc
            .text()
            .map_err(|e| vec![e.to_string()])
            .and_then(|text| {
                config::parse_fleet(&doc.key, text)
                    .map_err(|e| e.errors.iter().map(ToString::to_string).collect())
            });
        let state_now = match parsed {
            Ok(s) => s,
            Err(messages) => {
                tracing::error!(key = %doc.key, mod_revision = doc.mod_revision, "config in etcd refused; nothing changed: {}", messages.join("; "));
                let refused = messages.into_iter().map(refusal).collect();
                self.record_config(this, None, refused, state.revision, true);
                return;
            }
        };
        let request = Request::Apply {
            node: self.running.clone(),
            mark: Some(core::meaning(&state_now)),
            state: state_now,
            origin: Origin::Etcd {
                key: doc.key.clone(),
                mod_revision: doc.mod_revision,
            },
        };
        match self.execute(&request, now) {
            Ok(a) => {
                if a.changed {
                    tracing::info!(key = %doc.key, mod_revision = doc.mod_revision, revision = a.revision, "config from etcd applied");
                } else {
                    tracing::info!(key = %doc.key, mod_revision = doc.mod_revision, "config from etcd already in force");
                }
                let applied = AppliedConfig {
                    key: doc.key.clone(),
                    mod_revision: doc.mod_revision,
                };
                self.record_config(this, Some(applied), Vec::new(), state.revision, true);
            }
            Err(e) => {
                let message = format!("{}:{}: {}", doc.key, doc.mod_revision, chain(&e));
                let permanent = matches!(e, ControlError::Invalid(_) | ControlError::Config(_));
                let known = self
                    .etcd
                    .as_ref()
                    .and_then(|f| f.refused.first())
                    .is_some_and(|r| r.message == message);
                if !known {
                    tracing::error!(key = %doc.key, mod_revision = doc.mod_revision, "config in etcd not applied; nothing changed: {}", chain(&e));
                }
                self.record_config(
                    this,
                    None,
                    vec![refusal(message)],
                    state.revision,
                    permanent,
                );
            }
        }
    }

    fn record_config(
        &mut self,
        doc: (String, i64),
        applied: Option<AppliedConfig>,
        refused: Vec<StatusError>,
        revision: i64,
        done: bool,
    ) {
        let Some(f) = self.etcd.as_mut() else { return };
        if done {
            f.handled = Some(doc);
        }
        if applied.is_some() {
            f.applied = applied;
        }
        f.refused = refused;
        f.applied_revision = revision;
    }

    /// Local changes in force over the config document: operator revisions since the last
    /// revision the etcd source made, newest first.
    fn local_changes(&self) -> Vec<String> {
        let mut out = Vec::new();
        for r in self.node.revisions().iter().rev() {
            match r.origin {
                Origin::Etcd { .. } => break,
                Origin::Rollout | Origin::Config { .. } => {}
                Origin::Apply { .. }
                | Origin::Shift
                | Origin::Drain
                | Origin::Pin
                | Origin::Unpin
                | Origin::Rollback { .. } => {
                    out.push(format!("revision {}: {}", r.number, r.summary));
                }
            }
        }
        out
    }

    /// The etcd source as `veer status` shows it; `None` without one.
    pub fn source_view(&self) -> Option<SourceView> {
        let f = self.etcd.as_ref()?;
        let mut errors: Vec<StatusError> = f.rollout_errors.values().cloned().collect();
        errors.sort_by(|a, b| a.key.cmp(&b.key));
        Some(SourceView {
            source: f.source.clone(),
            ready: f.ready,
            revision: f.seen.revision,
            applied: f.applied.clone(),
            stale_since: f.seen.stale_since,
            error: f.seen.error.as_deref().map(|e| chain(e)),
            refused: f.refused.first().map(|first| {
                let more = f.refused.len() - 1;
                let mut r = first.clone();
                if more > 0 {
                    // Infallible: writing into a String cannot fail.
                    let _ = write!(
                        r.message,
                        " (and {more} more problem{}: veer fleet status lists them)",
                        if more == 1 { "" } else { "s" }
                    );
                }
                r
            }),
            errors,
            last_sync: f.seen.last_sync,
            local_changes: self.local_changes(),
        })
    }

    /// The node's status document for the fleet; `None` without an etcd source. While held (the
    /// newest revision file cannot be used) the state in force is not known: no services and no
    /// state hash are reported, as `veer status` shows none, and the refusal says why.
    pub fn node_status(&self) -> Option<NodeStatus> {
        let f = self.etcd.as_ref()?;
        let mut head = self.head();
        let known = head.held.is_none();
        if !known {
            head.state = crate::model::DesiredState::default();
        }
        let down = self.health.down(&head.state);
        let services = head
            .state
            .services
            .iter()
            .map(|s| ServiceStatus {
                name: s.name.clone(),
                groups: s
                    .groups
                    .iter()
                    .map(|g| {
                        let out: Vec<std::net::SocketAddr> = g
                            .backends
                            .iter()
                            .filter(|b| down.contains(&(s.name.clone(), g.name.clone(), b.addr)))
                            .map(|b| b.addr)
                            .collect();
                        let total = u32::try_from(g.backends.len()).unwrap_or(u32::MAX);
                        GroupStatus {
                            name: g.name.clone(),
                            weight: g.weight,
                            backends: total,
                            up: total.saturating_sub(u32::try_from(out.len()).unwrap_or(u32::MAX)),
                            down: out,
                        }
                    })
                    .collect(),
                rollout: head.latest_rollout(&s.name).map(node_rollout),
            })
            .collect();
        let mut errors: Vec<StatusError> = f.refused.clone();
        errors.extend(f.rollout_errors.values().cloned());
        Some(NodeStatus {
            schema: STATUS_SCHEMA,
            node: f.source.node.clone(),
            veer_version: env!("CARGO_PKG_VERSION").to_owned(),
            ready: f.ready,
            etcd_revision: f.applied_revision,
            config: f.applied.clone(),
            local_revision: head.number,
            state_hash: if known {
                fleet::state_hash(&head.state)
            } else {
                String::new()
            },
            errors,
            services,
            last_sync: fleet::whole_millis(f.seen.last_sync.unwrap_or(SystemTime::UNIX_EPOCH)),
            local_changes: self.local_changes(),
        })
    }
}

/// A rollout of this node as its status shows it.
fn node_rollout(r: &Rollout) -> NodeRollout {
    NodeRollout {
        fleet_id: r.fleet.clone(),
        to: r.plan.to.clone(),
        phase: match r.phase {
            Phase::Running => RolloutPhase::Running,
            Phase::Paused => RolloutPhase::Paused,
            Phase::Completed => RolloutPhase::Completed,
            Phase::RolledBack => RolloutPhase::RolledBack,
            Phase::Aborted => RolloutPhase::Aborted,
        },
        step: r.step,
        steps: r.plan.steps.len(),
        gate: r.gate.clone(),
        reason: r.reason.clone(),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::{
        config::services_to_toml,
        control::{MemoryNode, Request},
        fleet::{FleetState, MissingNode, NodeName, RolloutDocuments, StartRequest, WaveSpec},
        model::{DesiredState, NodeConfig, Plan, Weight, fixtures},
    };

    const T0: Duration = Duration::from_secs(1_700_000_000);

    fn at(secs: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + T0 + Duration::from_secs(secs)
    }

    fn w(s: &str) -> Weight {
        Weight::from_percent_str(s).unwrap()
    }

    fn node() -> Controller<MemoryNode> {
        let mut c = Controller::new(
            MemoryNode::new(),
            NodeConfig::default(),
            "/etc/veer/veer.toml".into(),
        );
        c.follow_etcd(EtcdSource {
            endpoints: "http://127.0.0.1:2379".into(),
            prefix: "/veer".into(),
            node: NodeName::new("edge-1").unwrap(),
        });
        c
    }

    fn doc(key: &str, text: &str, rev: i64) -> Document {
        Document {
            key: key.into(),
            value: text.as_bytes().to_vec(),
            mod_revision: rev,
        }
    }

    fn synced(config: Option<Document>) -> SourceState {
        SourceState {
            synced: true,
            revision: config.as_ref().map_or(1, |d| d.mod_revision),
            config,
            lists: 1,
            last_sync: Some(at(0)),
            ..SourceState::default()
        }
    }

    fn web(v1: &str, v2: &str) -> DesiredState {
        let mut s = fixtures::web();
        s.services[0].groups[0].weight = w(v1);
        s.services[0].groups[1].weight = w(v2);
        s
    }

    fn weights(c: &Controller<MemoryNode>) -> Vec<Weight> {
        c.head().state.services[0]
            .groups
            .iter()
            .map(|g| g.weight)
            .collect()
    }

    #[test]
    fn nothing_applies_before_the_first_sync_and_the_node_is_not_ready() {
        let mut c = node();
        let state = SourceState {
            synced: false,
            stale_since: Some(at(1)),
            ..SourceState::default()
        };
        assert!(!c.follow(&state, at(1)));
        assert!(!c.is_ready());
        let v = c.source_view().unwrap();
        assert_eq!(v.stale_since, Some(at(1)));
        assert!(!c.node_status().unwrap().ready);
        assert_eq!(c.head().number, 0);
    }

    #[test]
    fn a_config_document_applies_through_the_core_and_its_status_says_so() {
        let mut c = node();
        let text = services_to_toml(&web("90", "10"));
        assert!(c.follow(&synced(Some(doc("/veer/config", &text, 5))), at(1)));
        assert!(c.is_ready());
        assert_eq!(weights(&c), [w("90"), w("10")]);
        let rev = c.node.revisions().last().unwrap();
        assert_eq!(
            rev.origin,
            Origin::Etcd {
                key: "/veer/config".into(),
                mod_revision: 5
            }
        );
        let s = c.node_status().unwrap();
        assert!(s.ready && s.errors.is_empty());
        assert_eq!(s.config.unwrap().mod_revision, 5);
        assert_eq!(s.local_revision, 1);
        assert_eq!(s.state_hash, fleet::state_hash(&web("90", "10")));
        assert_eq!(s.services[0].groups[1].weight, w("10"));
        // The same document again (a reconnection, a tick): nothing new.
        assert!(!c.follow(&synced(Some(doc("/veer/config", &text, 5))), at(2)));
        assert_eq!(c.head().number, 1);
    }

    #[test]
    fn a_bad_document_is_refused_with_its_key_as_the_file_and_changes_nothing() {
        let mut c = node();
        let good = services_to_toml(&web("100", "0"));
        c.follow(&synced(Some(doc("/veer/config", &good, 5))), at(1));
        let bad = good.replace("weight = 0", "weight = 120");
        assert!(c.follow(&synced(Some(doc("/veer/config", &bad, 6))), at(2)));
        assert_eq!(c.head().number, 1, "nothing changed");
        let s = c.node_status().unwrap();
        assert_eq!(
            s.config.as_ref().unwrap().mod_revision,
            5,
            "5 stays in force"
        );
        assert_eq!(s.errors.len(), 1);
        let e = &s.errors[0];
        assert_eq!((e.key.as_str(), e.mod_revision), ("/veer/config", 6));
        assert!(
            e.message.starts_with("/veer/config:") && e.message.contains("120"),
            "{}",
            e.message
        );
        // `[node]` is local: a document with one is refused at its line.
        let with_node = format!("[node]\nconntrack_max = 1000000\n\n{good}");
        c.follow(&synced(Some(doc("/veer/config", &with_node, 7))), at(3));
        let s = c.node_status().unwrap();
        assert!(
            s.errors[0]
                .message
                .starts_with("/veer/config:1:1: `[node]`"),
            "{}",
            s.errors[0].message
        );
        // A good one clears the error.
        let next = services_to_toml(&web("50", "50"));
        c.follow(&synced(Some(doc("/veer/config", &next, 8))), at(4));
        assert!(c.node_status().unwrap().errors.is_empty());
        assert_eq!(weights(&c), [w("50"), w("50")]);
    }

    #[test]
    fn every_problem_of_a_bad_document_is_in_the_status_each_at_its_line() {
        let mut c = node();
        let good = services_to_toml(&web("100", "0"));
        c.follow(&synced(Some(doc("/veer/config", &good, 5))), at(1));
        let bad = good.replacen("weight = 0", "weight = 120", 1).replacen(
            "protocol = \"tcp\"",
            "protocol = \"tpc\"",
            1,
        );
        c.follow(&synced(Some(doc("/veer/config", &bad, 6))), at(2));
        let s = c.node_status().unwrap();
        assert_eq!(s.errors.len(), 2, "{:?}", s.errors);
        for e in &s.errors {
            assert_eq!((e.key.as_str(), e.mod_revision), ("/veer/config", 6));
        }
        assert!(s.errors[0].message.contains("`tpc`"), "{:?}", s.errors);
        assert!(s.errors[1].message.contains("120"), "{:?}", s.errors);
        // `veer status` and the metrics show the first, with how many more there are.
        let refused = c.source_view().unwrap().refused.unwrap();
        assert!(
            refused.message.starts_with(&s.errors[0].message)
                && refused
                    .message
                    .ends_with("(and 1 more problem: veer fleet status lists them)"),
            "{}",
            refused.message
        );
        assert_eq!(c.head().number, 1, "nothing changed");
    }

    #[test]
    fn local_changes_stay_until_the_next_change_of_the_document() {
        let mut c = node();
        let text = services_to_toml(&web("100", "0"));
        c.follow(&synced(Some(doc("/veer/config", &text, 5))), at(1));
        c.execute(
            &Request::Drain {
                service: "web".into(),
                group: "v1".into(),
                force: true,
                end: None,
            },
            at(2),
        )
        .unwrap();
        assert_eq!(weights(&c), [w("0"), w("0")]);
        let s = c.node_status().unwrap();
        assert_eq!(s.local_changes.len(), 1, "{:?}", s.local_changes);
        // The same document (a resync, a restart) keeps the local change...
        c.follow(&synced(Some(doc("/veer/config", &text, 5))), at(3));
        assert_eq!(weights(&c), [w("0"), w("0")]);
        // ... a rewrite of it that means the same too ...
        c.follow(
            &synced(Some(doc("/veer/config", &format!("# x\n{text}"), 6))),
            at(4),
        );
        assert_eq!(weights(&c), [w("0"), w("0")]);
        // ... the next change replaces it.
        let next = services_to_toml(&web("80", "20"));
        c.follow(&synced(Some(doc("/veer/config", &next, 7))), at(5));
        assert_eq!(weights(&c), [w("80"), w("20")]);
        assert!(c.node_status().unwrap().local_changes.is_empty());
        // `veer apply` is refused: the services come from etcd.
        let apply = Request::Apply {
            node: NodeConfig::default(),
            state: web("1", "99"),
            origin: Origin::Apply {
                path: "x.toml".into(),
            },
            mark: None,
        };
        assert!(matches!(
            c.execute(&apply, at(6)),
            Err(ControlError::FromEtcd)
        ));
    }

    fn node_plan() -> Plan {
        Plan {
            steps: vec![w("50"), Weight::FULL],
            pause: Duration::from_secs(1),
            min_flows: 0,
            ..Plan::to("v2")
        }
    }

    /// A fleet rollout of web to v2 over edge-1 (canary) and edge-2, as its documents.
    fn fleet_rollout(state: FleetState, wave: usize) -> (RolloutDocuments, String) {
        let statuses: Vec<NodeStatus> = ["edge-1", "edge-2"]
            .iter()
            .map(|n| {
                let mut c = node();
                if let Some(f) = c.etcd.as_mut() {
                    f.source.node = NodeName::new(n).unwrap();
                }
                let text = services_to_toml(&web("100", "0"));
                c.follow(&synced(Some(doc("/veer/config", &text, 5))), at(0));
                c.node_status().unwrap()
            })
            .collect();
        let (plan, mut progress) = fleet::start(
            StartRequest {
                service: "web",
                to: "v2",
                spec: "1,100%".parse::<WaveSpec>().unwrap(),
                canary: None,
                node_plan: node_plan(),
                missing: MissingNode::RollBack,
                node_timeout: Duration::from_mins(1),
            },
            &statuses,
            at(10),
        )
        .unwrap();
        progress.state = state;
        progress.wave = wave;
        let id = plan.id.clone();
        (
            RolloutDocuments {
                plan: Some(doc(
                    "/veer/rollouts/web/plan",
                    &String::from_utf8(plan.to_json()).unwrap(),
                    20,
                )),
                progress: Some(doc(
                    "/veer/rollouts/web/progress",
                    &String::from_utf8(progress.to_json()).unwrap(),
                    21,
                )),
            },
            id,
        )
    }

    fn with_rollout(config: &str, rollout: RolloutDocuments) -> SourceState {
        let mut s = synced(Some(doc("/veer/config", config, 5)));
        s.rollouts.insert("web".into(), rollout);
        s
    }

    #[test]
    fn the_canary_runs_its_part_holds_with_the_fleet_and_restores_after_it_passed() {
        let mut c = node();
        let text = services_to_toml(&web("100", "0"));
        c.follow(&synced(Some(doc("/veer/config", &text, 5))), at(1));

        let (docs, id) = fleet_rollout(FleetState::Running, 0);
        c.follow(&with_rollout(&text, docs), at(11));
        assert_eq!(weights(&c), [w("50"), w("50")], "first step");
        let s = c.node_status().unwrap();
        let r = s.services[0].rollout.as_ref().unwrap();
        assert_eq!(
            (r.fleet_id.as_deref(), r.phase),
            (Some(id.as_str()), RolloutPhase::Running)
        );

        // The fleet pauses: the node holds; it resumes: the node goes on.
        let (docs, _) = fleet_rollout(
            FleetState::Paused {
                reason: "lunch".into(),
            },
            0,
        );
        c.follow(&with_rollout(&text, docs), at(12));
        assert_eq!(c.head().rollouts[0].phase, Phase::Paused);
        let (docs, _) = fleet_rollout(FleetState::Running, 0);
        c.follow(&with_rollout(&text, docs.clone()), at(13));
        assert_eq!(c.head().rollouts[0].phase, Phase::Running);

        // The node's own steps run to completion.
        c.rollout_tick(at(15)).unwrap();
        c.rollout_tick(at(17)).unwrap();
        assert_eq!(c.head().rollouts[0].phase, Phase::Completed);
        assert_eq!(weights(&c), [w("0"), w("100")]);
        // Running it again never starts it over.
        c.follow(&with_rollout(&text, docs), at(18));
        assert_eq!(c.head().rollouts[0].phase, Phase::Completed);

        // Another node breaks in wave 2: the fleet rolls back, and so does this node.
        let (docs, _) = fleet_rollout(
            FleetState::RolledBack {
                node: NodeName::new("edge-2").unwrap(),
                gate: "failure_rate".into(),
                reason: "3 of 10 new flows failed".into(),
            },
            1,
        );
        c.follow(&with_rollout(&text, docs), at(19));
        assert_eq!(weights(&c), [w("100"), w("0")]);
        let r = &c.head().rollouts[0];
        assert_eq!(r.phase, Phase::RolledBack);
        assert!(r.reason.as_deref().unwrap().contains("edge-2"), "{r:?}");
    }

    #[test]
    fn a_config_change_during_the_part_keeps_the_rollout_weights_and_applies_the_rest() {
        let mut c = node();
        let text = services_to_toml(&web("100", "0"));
        c.follow(&synced(Some(doc("/veer/config", &text, 5))), at(1));
        let (docs, _) = fleet_rollout(FleetState::Running, 0);
        c.follow(&with_rollout(&text, docs.clone()), at(11));
        let mut more = web("100", "0");
        let mut api = more.services[0].clone();
        api.name = "api".into();
        api.port = 81;
        more.services.push(api);
        let text2 = services_to_toml(&more);
        let mut state = with_rollout(&text2, docs);
        state.config = Some(doc("/veer/config", &text2, 30));
        c.follow(&state, at(12));
        assert_eq!(c.head().state.services.len(), 2, "the new service applied");
        assert_eq!(
            weights(&c),
            [w("50"), w("50")],
            "the rollout keeps its step"
        );
        assert!(c.node_status().unwrap().errors.is_empty());
    }

    #[test]
    fn a_node_whose_rollout_disappeared_from_etcd_restores() {
        let mut c = node();
        let text = services_to_toml(&web("100", "0"));
        let (docs, _) = fleet_rollout(FleetState::Running, 0);
        c.follow(&with_rollout(&text, docs.clone()), at(11));
        assert_eq!(weights(&c), [w("50"), w("50")]);
        // Its progress unreadable for a while: the node keeps its part and says why.
        let mut broken = docs;
        broken.progress = Some(doc("/veer/rollouts/web/progress", "{\"id\":", 22));
        c.follow(&with_rollout(&text, broken), at(12));
        assert_eq!(weights(&c), [w("50"), w("50")]);
        assert_eq!(c.node_status().unwrap().errors.len(), 1);
        // Gone from etcd: the node restores.
        c.follow(&synced(Some(doc("/veer/config", &text, 5))), at(13));
        assert_eq!(weights(&c), [w("100"), w("0")]);
        assert_eq!(c.head().rollouts[0].phase, Phase::RolledBack);
    }

    #[test]
    fn a_node_of_a_later_wave_waits_and_an_unreadable_plan_is_reported() {
        let mut c = node();
        if let Some(f) = c.etcd.as_mut() {
            f.source.node = NodeName::new("edge-2").unwrap();
        }
        let text = services_to_toml(&web("100", "0"));
        let (docs, _) = fleet_rollout(FleetState::Running, 0);
        c.follow(&with_rollout(&text, docs), at(11));
        assert!(c.head().rollouts.is_empty(), "wave 2 has not started");
        let broken = RolloutDocuments {
            plan: Some(doc("/veer/rollouts/web/plan", "{", 40)),
            progress: Some(doc("/veer/rollouts/web/progress", "{}", 41)),
        };
        c.follow(&with_rollout(&text, broken), at(12));
        let s = c.node_status().unwrap();
        assert_eq!(s.errors.len(), 1);
        assert!(
            s.errors[0]
                .message
                .contains("not a valid fleet rollout plan"),
            "{}",
            s.errors[0].message
        );
    }
}
