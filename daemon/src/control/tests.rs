//! Control decisions, checked without root: a fake node stands in for the kernel and the store
//! (`Effects` and `Readings`), so what the core decides and what the controller carries out are
//! observed directly.

use std::{
    collections::{BTreeSet, HashMap},
    net::SocketAddr,
    path::PathBuf,
    time::{Duration, SystemTime},
};

use veer_common::{
    counters::{BackendCounters, Reason, ServiceCounters},
    flow::FlowKey,
    signals::BackendSignals,
};

use super::{
    Answer, ControlError, Controller, Request,
    change::{Change, Head},
    core::{self, Live},
    effects::{Census, DataplaneReport, Effects, FlowTable, InterfaceReport, Readings},
    observed::Observations,
};
use crate::{
    dataplane::{DataplaneError, flows::Upkeep},
    health::check::CheckError,
    model::{
        DesiredState, Down, HealthCheck, Ids, NodeConfig, OnFailure, Plan, StateError, Timeouts,
        Weight,
        fixtures::{dual_stack, group, w},
    },
    rollout::{GateFailure, Phase},
    state::{Origin, Problem, Revision, StoreError, Unusable},
};

/// The kernel and the store, in memory.
#[derive(Default)]
struct FakeNode {
    revisions: Vec<Revision>,
    /// Every state the kernel was made to hold, with the backends kept out, in order.
    applied: Vec<(DesiredState, Down)>,
    ids: Ids,
    counters: HashMap<u32, BackendCounters>,
    signals: HashMap<u32, BackendSignals>,
    /// Flows a paced drain ended, in order.
    ended: Vec<FlowKey>,
    service_counters: HashMap<u32, ServiceCounters>,
    census: Census,
    flows: FlowTable,
    /// How the interfaces are steered, as the kernel side reports it.
    report: DataplaneReport,
    /// The live state each link event was handled with, in order.
    refreshed: Vec<DesiredState>,
    fail_apply: bool,
    fail_commit: bool,
    /// Files named like revisions that cannot be used.
    unusable: Vec<Unusable>,
    /// Scans of conntrack (`census`).
    scans: std::cell::Cell<usize>,
}

impl FakeNode {
    fn kernel(&self) -> &DesiredState {
        &self.applied.last().expect("something was applied").0
    }
}

impl Effects for FakeNode {
    fn apply(&mut self, state: &DesiredState, down: &Down) -> Result<(), ControlError> {
        if self.fail_apply {
            return Err(DataplaneError::UnknownInterface {
                name: "fake0".into(),
            }
            .into());
        }
        for s in &state.services {
            let next = self.ids.services.len() as u32 + 1;
            self.ids.services.entry(s.name.clone()).or_insert(next);
            for g in &s.groups {
                for b in &g.backends {
                    let next = self.ids.backends.len() as u32 + 1;
                    self.ids
                        .backends
                        .entry((s.name.clone(), g.name.clone(), b.addr))
                        .or_insert(next);
                }
            }
        }
        self.applied.push((state.clone(), down.clone()));
        Ok(())
    }

    fn commit(&mut self, change: &Change) -> Result<u64, ControlError> {
        if self.fail_commit {
            return Err(StoreError::Io {
                op: "writing",
                path: "/fake/revisions".into(),
                source: std::io::Error::other("disk full"),
            }
            .into());
        }
        let number = self
            .revisions
            .iter()
            .map(|r| r.number)
            .chain(self.unusable.iter().map(|u| u.number))
            .max()
            .map_or(1, |n| n + 1);
        self.revisions.push(change.revision(
            number,
            SystemTime::UNIX_EPOCH + Duration::from_secs(number),
            self.ids.clone(),
        ));
        Ok(number)
    }

    fn revisions(&self) -> &[Revision] {
        &self.revisions
    }

    fn unusable(&self) -> &[Unusable] {
        &self.unusable
    }

    fn upkeep(&mut self, _: &Timeouts) -> Result<Upkeep, ControlError> {
        Ok(Upkeep {
            census: Census {
                active: [(1, 7)].into_iter().collect(),
                flows: 9,
                new_flows: 2,
            },
            ..Upkeep::default()
        })
    }

    fn refresh_links(&mut self, live: &DesiredState) -> Result<bool, ControlError> {
        self.refreshed.push(live.clone());
        Ok(true)
    }

    fn end_flow(&mut self, key: &FlowKey) -> Result<bool, ControlError> {
        let before = self.flows.entries.len();
        self.flows.entries.retain(|(k, _)| k != key);
        self.ended.push(*key);
        Ok(self.flows.entries.len() < before)
    }
}

impl Readings for FakeNode {
    fn ids(&self) -> &Ids {
        &self.ids
    }

    fn backend_counters(&self, id: u32) -> Result<BackendCounters, ControlError> {
        Ok(self.counters.get(&id).copied().unwrap_or_default())
    }

    fn service_counters(&self, id: u32) -> Result<ServiceCounters, ControlError> {
        Ok(self.service_counters.get(&id).copied().unwrap_or_default())
    }

    fn backend_signals(&self, id: u32) -> Result<Option<BackendSignals>, ControlError> {
        Ok(Some(self.signals.get(&id).copied().unwrap_or_default()))
    }

    fn active_flows_of(&self, ids: &BTreeSet<u32>) -> Result<Vec<FlowKey>, ControlError> {
        Ok(self
            .flows
            .entries
            .iter()
            .filter(|(_, e)| e.is_active() && ids.contains(&e.backend_id))
            .map(|(k, _)| *k)
            .collect())
    }

    fn census(&self) -> Result<Census, ControlError> {
        self.scans.set(self.scans.get() + 1);
        Ok(self.census.clone())
    }

    fn reasons(&self) -> Result<Vec<(Reason, u64)>, ControlError> {
        Ok(Reason::ALL.iter().map(|r| (*r, 0)).collect())
    }

    fn flows(&self) -> Result<FlowTable, ControlError> {
        Ok(self.flows.clone())
    }

    fn dataplane(&self) -> DataplaneReport {
        self.report.clone()
    }
}

fn at(secs: u64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000 + secs)
}

fn apply_request(state: DesiredState, origin: Origin, mark: Option<&str>) -> Request {
    Request::Apply {
        node: NodeConfig::default(),
        state,
        origin,
        mark: mark.map(str::to_owned),
    }
}

fn file() -> Origin {
    Origin::Config {
        path: "/etc/veer/veer.toml".into(),
    }
}

/// A controller whose node holds `state` as revision 1 (from the config file).
fn controller(state: DesiredState) -> Controller<FakeNode> {
    let mut ctl = Controller::new(
        FakeNode::default(),
        NodeConfig::default(),
        PathBuf::from("/etc/veer/veer.toml"),
    );
    let a = ctl
        .execute(&apply_request(state, file(), Some("file-1")), at(0))
        .unwrap();
    assert_eq!((a.revision, a.changed), (1, true));
    ctl
}

fn shift(services: &[&str], weights: &[(&str, &str)]) -> Request {
    Request::Shift {
        services: services.iter().map(|s| (*s).to_owned()).collect(),
        weights: weights
            .iter()
            .map(|(g, v)| ((*g).to_owned(), w(v)))
            .collect(),
        force: false,
    }
}

fn weights(ctl: &Controller<FakeNode>, service: &str) -> Vec<(String, Weight)> {
    ctl.head()
        .state
        .service(service)
        .unwrap()
        .groups
        .iter()
        .map(|g| (g.name.clone(), g.weight))
        .collect()
}

fn pair(v1: &str, v2: &str) -> Vec<(String, Weight)> {
    vec![("v1".into(), w(v1)), ("v2".into(), w(v2))]
}

fn plan(steps: &[&str]) -> Plan {
    Plan {
        to: "v2".into(),
        steps: steps.iter().map(|s| w(s)).collect(),
        pause: Duration::from_secs(10),
        max_failure_rate: w("1"),
        min_flows: 20,
        gates: vec![],
        gate_timeout: Duration::from_secs(5),
        on_failure: OnFailure::Rollback,
        hold_on_restart: false,
        judge: None,
        drain: None,
    }
}

fn failed(gate: &str, why: &str) -> GateFailure {
    GateFailure {
        gate: gate.into(),
        why: why.into(),
    }
}

fn changed(a: &Answer, revision: u64) {
    assert_eq!((a.revision, a.changed), (revision, true), "{a:?}");
}

mod operator_changes {
    use super::*;

    #[test]
    fn a_shift_sets_the_named_groups_and_keeps_the_others() {
        let mut ctl = controller(dual_stack());
        changed(
            &ctl.execute(&shift(&["web"], &[("v2", "10")]), at(1))
                .unwrap(),
            2,
        );
        assert_eq!(weights(&ctl, "web"), pair("100", "10"));
        assert_eq!(
            weights(&ctl, "web6"),
            pair("100", "0"),
            "other services untouched"
        );
        assert_eq!(
            ctl.node().kernel(),
            &ctl.head().state,
            "the kernel holds it"
        );
        assert_eq!(ctl.history(None)[0].summary, "shift web: v1=100 v2=10");
    }

    #[test]
    fn a_dual_stack_shift_is_one_revision_and_one_kernel_update() {
        let mut ctl = controller(dual_stack());
        let applies = ctl.node().applied.len();
        let a = ctl
            .execute(
                &shift(&["web", "web6"], &[("v1", "0"), ("v2", "100")]),
                at(1),
            )
            .unwrap();
        changed(&a, 2);
        assert_eq!(ctl.node().applied.len(), applies + 1, "one atomic apply");
        assert_eq!(ctl.node().revisions.len(), 2, "one revision");
        for s in ["web", "web6"] {
            assert_eq!(weights(&ctl, s), pair("0", "100"), "{s}");
        }
        assert_eq!(
            ctl.history(Some("web6"))[0].summary,
            "shift web: v1=0 v2=100; web6: v1=0 v2=100"
        );
    }

    #[test]
    fn a_dual_stack_shift_naming_a_group_one_side_lacks_changes_neither() {
        let mut state = dual_stack();
        state.services[0]
            .groups
            .push(group("v3", "0", &["198.51.100.31:8080"]));
        let mut ctl = controller(state);
        let applies = ctl.node().applied.len();
        let e = ctl
            .execute(&shift(&["web", "web6"], &[("v3", "10")]), at(1))
            .unwrap_err();
        assert_eq!(e.to_string(), "service `web6` has no group `v3`");
        assert_eq!(
            ctl.node().applied.len(),
            applies,
            "nothing reached the kernel"
        );
        assert_eq!(ctl.head().number, 1);
    }

    #[test]
    fn an_unknown_group_or_service_is_refused_by_name() {
        let mut ctl = controller(dual_stack());
        let e = ctl
            .execute(&shift(&["web"], &[("v9", "10")]), at(1))
            .unwrap_err();
        assert!(
            matches!(&e, ControlError::UnknownGroup { service, group } if service == "web" && group == "v9")
        );
        let e = ctl
            .execute(&shift(&["shop"], &[("v1", "10")]), at(1))
            .unwrap_err();
        assert_eq!(e.to_string(), "no service `shop`");
        let drain = Request::Drain {
            service: "web".into(),
            group: "v9".into(),
            force: false,
            end: None,
        };
        assert!(matches!(
            ctl.execute(&drain, at(1)),
            Err(ControlError::UnknownGroup { .. })
        ));
        assert_eq!(ctl.head().number, 1);
    }

    #[test]
    fn a_shift_of_every_group_to_zero_is_refused_unless_forced_and_then_says_so() {
        let mut ctl = controller(dual_stack());
        let all_zero = |force| Request::Shift {
            services: vec!["web".into()],
            weights: vec![("v1".into(), w("0")), ("v2".into(), w("0"))],
            force,
        };
        let e = ctl.execute(&all_zero(false), at(1)).unwrap_err();
        assert!(
            matches!(&e, ControlError::ShiftToNothing { service } if service == "web"),
            "{e}"
        );
        assert_eq!(
            e.to_string(),
            "these weights would leave service `web` with no group taking new connections (every group at weight 0 or without backends); give a group weight, or pass --force to drop new connections"
        );
        assert_eq!(ctl.head().number, 1);
        // A dual-stack shift is refused whole when one side would drop.
        let pair_zero = Request::Shift {
            services: vec!["web6".into(), "web".into()],
            weights: vec![("v1".into(), w("0"))],
            force: false,
        };
        assert!(matches!(
            ctl.execute(&pair_zero, at(1)),
            Err(ControlError::ShiftToNothing { .. })
        ));
        assert_eq!(ctl.node().revisions.len(), 1);
        let a = ctl.execute(&all_zero(true), at(2)).unwrap();
        changed(&a, 2);
        assert_eq!(
            a.note.as_deref(),
            Some(
                "no group of `web` takes new connections now: they are dropped until a group gets weight"
            )
        );
        assert_eq!(weights(&ctl, "web"), pair("0", "0"));
        // Already dropping: the same weights again change nothing and need no force.
        let a = ctl.execute(&all_zero(false), at(3)).unwrap();
        assert!(!a.changed && a.note.is_none());
    }

    #[test]
    fn draining_the_last_group_taking_flows_is_refused_unless_forced() {
        let mut ctl = controller(dual_stack());
        let drain = |force| Request::Drain {
            service: "web".into(),
            group: "v1".into(),
            force,
            end: None,
        };
        assert!(matches!(
            ctl.execute(&drain(false), at(1)),
            Err(ControlError::DrainLastGroup { .. })
        ));
        assert_eq!(ctl.head().number, 1);
        changed(&ctl.execute(&drain(true), at(2)).unwrap(), 2);
        assert_eq!(weights(&ctl, "web"), pair("0", "0"));
        // Once v2 takes flows, draining v1 needs no force; draining it again changes nothing.
        let mut ctl = controller(dual_stack());
        ctl.execute(&shift(&["web"], &[("v2", "50")]), at(1))
            .unwrap();
        changed(&ctl.execute(&drain(false), at(2)).unwrap(), 3);
        let again = ctl.execute(&drain(false), at(3)).unwrap();
        assert_eq!((again.revision, again.changed), (3, false));
    }

    #[test]
    fn weight_for_a_group_without_backends_breaks_the_model_rule() {
        let mut state = dual_stack();
        state.services[0].groups.push(group("v3", "0", &[]));
        let mut ctl = controller(state);
        let e = ctl
            .execute(&shift(&["web"], &[("v3", "10")]), at(1))
            .unwrap_err();
        assert!(
            matches!(
                &e,
                ControlError::Invalid(v) if matches!(v.error, StateError::WeightWithoutBackends { .. })
            ),
            "{e}"
        );
        assert_eq!(ctl.head().number, 1);
    }

    #[test]
    fn a_pin_replaces_the_pin_of_its_prefix_and_checks_family_and_prefix() {
        let mut ctl = controller(dual_stack());
        let pin = |prefix: &str, group: &str| Request::Pin {
            service: "web".into(),
            prefix: prefix.into(),
            group: group.into(),
        };
        changed(
            &ctl.execute(&pin("203.0.113.0/24", "v2"), at(1)).unwrap(),
            2,
        );
        changed(
            &ctl.execute(&pin("203.0.113.0/24", "v1"), at(2)).unwrap(),
            3,
        );
        let pins = &ctl.head().state.services[0].pins;
        assert_eq!(pins.len(), 1);
        assert_eq!(pins[0].group, "v1");
        assert_eq!(
            ctl.execute(&pin("203.0.113.1/24", "v1"), at(3))
                .unwrap_err()
                .to_string(),
            "prefix `203.0.113.1/24`: not a network prefix with its host bits zero (e.g. 203.0.113.0/24)"
        );
        assert_eq!(
            ctl.execute(&pin("2001:db8::/32", "v1"), at(3))
                .unwrap_err()
                .to_string(),
            "prefix 2001:db8::/32: not of the VIP's address family (192.0.2.10)"
        );
        let unpin = |prefix: &str| Request::Unpin {
            service: "web".into(),
            prefix: prefix.into(),
        };
        assert!(matches!(
            ctl.execute(&unpin("198.51.100.0/24"), at(3)),
            Err(ControlError::UnknownPin { .. })
        ));
        changed(&ctl.execute(&unpin("203.0.113.0/24"), at(4)).unwrap(), 4);
        assert!(ctl.head().state.services[0].pins.is_empty());
    }
}

mod rollbacks {
    use super::*;

    #[test]
    fn a_rollback_goes_to_the_previous_revision_by_default() {
        let mut ctl = controller(dual_stack());
        let back = Request::Rollback {
            service: None,
            to: None,
        };
        assert!(matches!(
            ctl.execute(&back, at(1)),
            Err(ControlError::NothingToRollBack { current: 1 })
        ));
        ctl.execute(&shift(&["web"], &[("v2", "10")]), at(1))
            .unwrap();
        changed(&ctl.execute(&back, at(2)).unwrap(), 3);
        assert_eq!(weights(&ctl, "web"), pair("100", "0"));
        assert!(matches!(
            ctl.history(None)[0].origin,
            Origin::Rollback { to: 1 }
        ));
    }

    #[test]
    fn rolling_back_one_service_keeps_the_others_as_they_are() {
        let mut ctl = controller(dual_stack());
        ctl.execute(
            &shift(&["web", "web6"], &[("v1", "50"), ("v2", "50")]),
            at(1),
        )
        .unwrap();
        let back = Request::Rollback {
            service: Some("web6".into()),
            to: Some(1),
        };
        changed(&ctl.execute(&back, at(2)).unwrap(), 3);
        assert_eq!(
            weights(&ctl, "web6"),
            pair("100", "0"),
            "taken from revision 1"
        );
        assert_eq!(weights(&ctl, "web"), pair("50", "50"), "left as it is");
        assert_eq!(ctl.history(None)[0].summary, "rollback web6 to revision 1");
    }

    #[test]
    fn a_rollback_to_a_revision_or_service_that_is_not_there_is_refused() {
        let mut ctl = controller(dual_stack());
        let back = |service: Option<&str>, to| Request::Rollback {
            service: service.map(str::to_owned),
            to: Some(to),
        };
        assert_eq!(
            ctl.execute(&back(None, 7), at(1)).unwrap_err().to_string(),
            "no revision 7 (see `veer history`)"
        );
        let mut state = dual_stack();
        state.services.pop();
        ctl.execute(&apply_request(state, file(), Some("file-2")), at(1))
            .unwrap();
        let mut ctl2 = controller(DesiredState::default());
        ctl2.execute(&apply_request(dual_stack(), file(), Some("file-2")), at(1))
            .unwrap();
        assert!(matches!(
            ctl2.execute(&back(Some("web6"), 1), at(2)),
            Err(ControlError::ServiceNotAtRevision { number: 1, .. })
        ));
        // A service removed since comes back with a whole-service rollback.
        changed(&ctl.execute(&back(Some("web6"), 1), at(2)).unwrap(), 3);
        assert!(ctl.head().state.service("web6").is_some());
    }
}

mod sources {
    use super::*;

    #[test]
    fn the_same_file_content_applied_again_changes_nothing() {
        let mut ctl = controller(dual_stack());
        ctl.execute(&shift(&["web"], &[("v2", "50")]), at(1))
            .unwrap();
        let a = ctl
            .execute(&apply_request(dual_stack(), file(), Some("file-1")), at(2))
            .unwrap();
        assert_eq!((a.revision, a.changed), (2, false));
        assert_eq!(
            weights(&ctl, "web"),
            pair("100", "50"),
            "the live shift stays"
        );
        // New content from the file is applied whole, and becomes the file's mark.
        changed(
            &ctl.execute(&apply_request(dual_stack(), file(), Some("file-2")), at(3))
                .unwrap(),
            3,
        );
        assert_eq!(weights(&ctl, "web"), pair("100", "0"));
        assert_eq!(ctl.head().config.as_deref(), Some("file-2"));
    }

    #[test]
    fn the_file_is_compared_by_meaning_not_text() {
        let cfg = |state: DesiredState| crate::config::Config {
            node: NodeConfig::default(),
            state,
        };
        let mut ctl = Controller::new(
            FakeNode::default(),
            NodeConfig::default(),
            PathBuf::from("/etc/veer/veer.toml"),
        );
        changed(&ctl.apply_file(cfg(dual_stack()), "# one text").unwrap(), 1);
        ctl.execute(&shift(&["web"], &[("v2", "50")]), at(1))
            .unwrap();
        // Another text, services in another order: the same meaning, the shift stays.
        let mut reordered = dual_stack();
        reordered.services.reverse();
        let a = ctl.apply_file(cfg(reordered), "# another text").unwrap();
        assert_eq!((a.revision, a.changed), (2, false));
        assert_eq!(weights(&ctl, "web"), pair("100", "50"));
        // A change of meaning is applied whole.
        let mut more = dual_stack();
        more.services[1].groups[1].weight = w("1");
        changed(&ctl.apply_file(cfg(more), "# another text").unwrap(), 3);
        assert_eq!(weights(&ctl, "web"), pair("100", "0"));
    }

    #[test]
    fn a_revision_marked_by_the_text_of_the_file_keeps_that_text_applied() {
        let text = "# the file as an older veer applied it";
        let mut ctl = controller(dual_stack());
        ctl.node_mut().revisions[0].config_digest = Some(core::digest(text.as_bytes()));
        ctl.execute(&shift(&["web"], &[("v2", "50")]), at(1))
            .unwrap();
        let cfg = crate::config::Config {
            node: NodeConfig::default(),
            state: dual_stack(),
        };
        assert!(!ctl.apply_file(cfg.clone(), text).unwrap().changed);
        assert_eq!(weights(&ctl, "web"), pair("100", "50"));
        changed(&ctl.apply_file(cfg, "# edited").unwrap(), 3);
        assert_eq!(ctl.head().config, Some(core::meaning(&dual_stack())));
    }

    #[test]
    fn another_source_goes_through_the_same_rules() {
        let mut ctl = controller(dual_stack());
        let mut bad = dual_stack();
        bad.services[1].groups[0].backends[0].addr = "198.51.100.99:80".parse().unwrap();
        let e = ctl
            .execute(
                &apply_request(bad, Origin::Apply { path: "x".into() }, None),
                at(1),
            )
            .unwrap_err();
        assert!(
            matches!(&e, ControlError::Invalid(v) if matches!(v.error, StateError::FamilyMismatch { .. })),
            "{e}"
        );
        assert_eq!(ctl.head().number, 1);
        assert_eq!(ctl.node().applied.len(), 1);
    }

    #[test]
    fn an_apply_that_touches_weights_a_rollout_owns_is_refused_whole() {
        let mut ctl = controller(dual_stack());
        let start = Request::RolloutStart {
            service: "web".into(),
            plan: plan(&["10", "50", "100"]),
        };
        changed(&ctl.execute(&start, at(1)).unwrap(), 2);
        let mut other = dual_stack();
        other.services[0].groups[1].weight = w("50");
        other.services[1].groups[1].weight = w("50");
        let e = ctl
            .execute(
                &apply_request(other, Origin::Apply { path: "x".into() }, None),
                at(2),
            )
            .unwrap_err();
        assert!(
            matches!(&e, ControlError::RolloutInProgress { service, .. } if service == "web"),
            "{e}"
        );
        assert_eq!(
            weights(&ctl, "web6"),
            pair("100", "0"),
            "not even the other service"
        );
        assert_eq!(ctl.head().number, 2);
        // A file that leaves the rollout's weights alone is applied.
        let mut fine = dual_stack();
        fine.services[0].groups[0].weight = w("90");
        fine.services[0].groups[1].weight = w("10");
        fine.services[1].groups[1].weight = w("50");
        changed(
            &ctl.execute(
                &apply_request(fine, Origin::Apply { path: "x".into() }, None),
                at(3),
            )
            .unwrap(),
            3,
        );
        assert_eq!(weights(&ctl, "web6"), pair("100", "50"));
    }

    #[test]
    fn a_declared_rollout_starts_once_and_keeps_the_weights_it_set() {
        let mut declared = dual_stack();
        declared.services[0].rollout = Some(plan(&["50", "100"]));
        let mut ctl = controller(DesiredState::default());
        let a = ctl
            .execute(&apply_request(declared.clone(), file(), Some("d1")), at(1))
            .unwrap();
        changed(&a, 3);
        assert_eq!(ctl.history(None)[1].origin, file(), "the file first");
        assert_eq!(
            ctl.history(None)[0].origin,
            Origin::Rollout,
            "then its rollout"
        );
        assert_eq!(weights(&ctl, "web"), pair("50", "50"));
        // The same plan again (another edit of the file) neither restarts it nor resets the
        // weights it owns.
        let mut edited = declared;
        edited.services[1].groups[1].weight = w("5");
        changed(
            &ctl.execute(&apply_request(edited, file(), Some("d2")), at(2))
                .unwrap(),
            4,
        );
        assert_eq!(weights(&ctl, "web"), pair("50", "50"));
        assert_eq!(weights(&ctl, "web6"), pair("100", "5"));
        assert_eq!(ctl.head().rollouts.len(), 1);
    }
}

mod rollouts {
    use super::*;

    fn started() -> Controller<FakeNode> {
        let mut ctl = controller(dual_stack());
        let start = Request::RolloutStart {
            service: "web".into(),
            plan: plan(&["10", "50", "100"]),
        };
        changed(&ctl.execute(&start, at(0)).unwrap(), 2);
        ctl
    }

    /// The id of `web`'s v2 backend.
    fn v2(ctl: &Controller<FakeNode>) -> u32 {
        ctl.node().ids.backends[&(
            "web".to_owned(),
            "v2".to_owned(),
            "198.51.100.21:8080".parse::<SocketAddr>().unwrap(),
        )]
    }

    /// Sets the counters of `web`'s v2 backend: `attempted` connection attempts it answered or
    /// refused, `refused` of them refused.
    fn v2_counts(ctl: &mut Controller<FakeNode>, attempted: u64, refused: u64) {
        let id = v2(ctl);
        ctl.node_mut().counters.insert(
            id,
            BackendCounters {
                new_flows: attempted,
                answered_flows: attempted - refused,
                refused_flows: refused,
                ..BackendCounters::default()
            },
        );
    }

    #[test]
    fn only_attempts_the_backend_answered_or_failed_are_judged() {
        use crate::{model::Protocol, rollout::engine::Counts};

        let mut ctl = started();
        // 10,000 spoofed SYNs: new flows the backend never had to answer, since no client
        // completes them. They are neither attempts nor failures.
        let id = v2(&ctl);
        ctl.node_mut().counters.insert(
            id,
            BackendCounters {
                new_flows: 10_000,
                ..BackendCounters::default()
            },
        );
        ctl.rollout_tick(at(11)).unwrap();
        let r = &ctl.head().rollouts[0];
        assert_eq!((r.phase, r.step), (Phase::Running, 0), "{r:?}");
        assert_eq!(
            ctl.rollout_status("web", at(12)).unwrap().waiting,
            Some(super::super::views::Waiting::MinFlows {
                seen: 0,
                needed: 20
            })
        );
        // A TCP attempt counts once the backend answered it either way; left unanswered for
        // the connect timeout it is a failure too. UDP's new flows are its attempts.
        let c = BackendCounters {
            new_flows: 100,
            answered_flows: 5,
            refused_flows: 2,
            ..BackendCounters::default()
        };
        assert_eq!(
            super::super::observed::judged(Protocol::Tcp, &c, 3),
            Counts {
                attempted: 10,
                failed: 5
            }
        );
        assert_eq!(
            super::super::observed::judged(Protocol::Udp, &c, 3),
            Counts {
                attempted: 100,
                failed: 0
            }
        );
    }

    #[test]
    fn a_start_takes_the_first_step_at_once_and_blocks_manual_weight_changes() {
        let mut ctl = started();
        assert_eq!(weights(&ctl, "web"), pair("90", "10"));
        let e = ctl
            .execute(&shift(&["web"], &[("v2", "50")]), at(1))
            .unwrap_err();
        assert!(matches!(e, ControlError::RolloutInProgress { .. }), "{e}");
        // Other services are free.
        changed(
            &ctl.execute(&shift(&["web6"], &[("v2", "50")]), at(1))
                .unwrap(),
            3,
        );
        let again = Request::RolloutStart {
            service: "web".into(),
            plan: plan(&["100"]),
        };
        assert!(matches!(
            ctl.execute(&again, at(1)),
            Err(ControlError::RolloutInProgress { .. })
        ));
    }

    #[test]
    fn the_tick_advances_after_the_pause_and_enough_flows_then_completes() {
        let mut ctl = started();
        v2_counts(&mut ctl, 50, 0);
        assert!(ctl.rollout_tick(at(5)).unwrap().is_empty());
        assert_eq!(ctl.head().number, 2, "the pause is not over");
        ctl.rollout_tick(at(11)).unwrap();
        assert_eq!(weights(&ctl, "web"), pair("50", "50"));
        assert_eq!(ctl.head().rollouts[0].step, 1);
        v2_counts(&mut ctl, 100, 0);
        ctl.rollout_tick(at(22)).unwrap();
        v2_counts(&mut ctl, 150, 0);
        ctl.rollout_tick(at(33)).unwrap();
        assert_eq!(ctl.head().rollouts[0].phase, Phase::Completed);
        assert_eq!(weights(&ctl, "web"), pair("0", "100"));
        assert!(ctl.history(None)[0].summary.ends_with("completed"));
    }

    #[test]
    fn a_failure_rate_breach_restores_the_weights_from_before() {
        let mut ctl = started();
        v2_counts(&mut ctl, 30, 3);
        ctl.rollout_tick(at(1)).unwrap();
        let r = &ctl.head().rollouts[0];
        assert_eq!(r.phase, Phase::RolledBack);
        assert!(
            r.reason
                .as_deref()
                .unwrap()
                .starts_with("failure-rate: 3 of 30")
        );
        assert_eq!(weights(&ctl, "web"), pair("100", "0"));
    }

    #[test]
    fn pause_and_resume_are_idempotent_and_a_resumed_step_starts_over() {
        let mut ctl = started();
        let pause = Request::RolloutPause {
            service: "web".into(),
        };
        let resume = Request::RolloutResume {
            service: "web".into(),
        };
        changed(&ctl.execute(&pause, at(1)).unwrap(), 3);
        assert!(!ctl.execute(&pause, at(2)).unwrap().changed);
        v2_counts(&mut ctl, 50, 0);
        ctl.rollout_tick(at(30)).unwrap();
        assert_eq!(ctl.head().number, 3, "a paused rollout does not step");
        changed(&ctl.execute(&resume, at(40)).unwrap(), 4);
        assert!(!ctl.execute(&resume, at(41)).unwrap().changed);
        let r = &ctl.head().rollouts[0];
        assert_eq!((r.step_started, r.baseline.attempted), (at(40), 50));
        ctl.rollout_tick(at(45)).unwrap();
        assert_eq!(
            ctl.head().number,
            4,
            "the resumed step waits its pause again"
        );
    }

    #[test]
    fn an_abort_restores_the_weights_from_before_the_rollout() {
        let mut ctl = started();
        let abort = Request::RolloutAbort {
            service: "web".into(),
        };
        changed(&ctl.execute(&abort, at(1)).unwrap(), 3);
        assert_eq!(weights(&ctl, "web"), pair("100", "0"));
        assert_eq!(ctl.head().rollouts[0].phase, Phase::Aborted);
        // Manual changes are free again.
        changed(
            &ctl.execute(&shift(&["web"], &[("v2", "5")]), at(2))
                .unwrap(),
            4,
        );
    }

    #[test]
    fn a_paused_rollout_refuses_manual_weights_with_a_hint_that_works_when_paused() {
        let mut ctl = started();
        let running = ctl
            .execute(&shift(&["web"], &[("v2", "50")]), at(1))
            .unwrap_err();
        assert!(
            running
                .to_string()
                .contains("wait for it to finish, or abort it first"),
            "{running}"
        );
        let pause = Request::RolloutPause {
            service: "web".into(),
        };
        ctl.execute(&pause, at(1)).unwrap();
        let paused = ctl
            .execute(&shift(&["web"], &[("v2", "50")]), at(2))
            .unwrap_err();
        assert!(
            matches!(&paused, ControlError::RolloutPaused { to, step: 1, steps: 3, .. } if to == "v2"),
            "{paused}"
        );
        assert!(
            paused.to_string().ends_with(
                "abort it (veer rollout abort web), or resume it and let it finish (veer rollout resume web)"
            ),
            "{paused}"
        );
    }

    #[test]
    fn an_abort_with_nothing_running_changes_nothing_and_says_so() {
        let mut ctl = controller(dual_stack());
        let abort = |service: &str| Request::RolloutAbort {
            service: service.into(),
        };
        let a = ctl.execute(&abort("web"), at(0)).unwrap();
        assert_eq!(
            (a.changed, a.note.as_deref()),
            (
                false,
                Some("rollout web: nothing to abort (it has had none)")
            )
        );
        ctl.execute(
            &Request::RolloutStart {
                service: "web".into(),
                plan: plan(&["100"]),
            },
            at(1),
        )
        .unwrap();
        changed(&ctl.execute(&abort("web"), at(2)).unwrap(), 3);
        let again = ctl.execute(&abort("web"), at(3)).unwrap();
        assert_eq!(
            (again.revision, again.changed, again.note.as_deref()),
            (
                3,
                false,
                Some("rollout web: nothing to abort (the latest rollout was aborted)")
            )
        );
        assert!(matches!(
            ctl.execute(&abort("shop"), at(4)),
            Err(ControlError::UnknownService { .. })
        ));
        // Pause and resume of nothing cannot be done: errors.
        assert!(matches!(
            ctl.execute(
                &Request::RolloutPause {
                    service: "web".into()
                },
                at(4)
            ),
            Err(ControlError::NoRollout { .. })
        ));
    }

    #[test]
    fn gates_are_handed_out_once_per_step_and_their_outcome_decides() {
        let mut ctl = controller(dual_stack());
        let mut p = plan(&["50", "100"]);
        p.gates = vec!["exec:true".parse().unwrap()];
        p.min_flows = 0;
        let start = Request::RolloutStart {
            service: "web".into(),
            plan: p,
        };
        ctl.execute(&start, at(0)).unwrap();
        let jobs = ctl.rollout_tick(at(11)).unwrap();
        assert_eq!(jobs.len(), 1);
        assert!(
            ctl.rollout_tick(at(12)).unwrap().is_empty(),
            "already being checked"
        );
        // An outcome for another watch of the step does not count.
        let mut stale = jobs[0].key.clone();
        stale.2 = at(3);
        ctl.gate_result(stale, Err(failed("exec:true", "exit status: 1")));
        ctl.rollout_tick(at(13)).unwrap();
        assert_eq!(ctl.head().rollouts[0].phase, Phase::Running);
        ctl.gate_result(jobs[0].key.clone(), Ok(()));
        ctl.rollout_tick(at(14)).unwrap();
        assert_eq!(weights(&ctl, "web"), pair("0", "100"));
        let jobs = ctl.rollout_tick(at(25)).unwrap();
        ctl.gate_result(
            jobs[0].key.clone(),
            Err(failed("exec:true", "exit status: 1")),
        );
        ctl.rollout_tick(at(26)).unwrap();
        let r = &ctl.head().rollouts[0];
        assert_eq!(r.phase, Phase::RolledBack);
        assert_eq!(r.reason.as_deref(), Some("exec:true: exit status: 1"));
        assert_eq!(weights(&ctl, "web"), pair("100", "0"));
    }

    #[test]
    fn a_plan_that_asks_to_hold_after_a_restart_holds() {
        let mut ctl = controller(dual_stack());
        let mut p = plan(&["10", "100"]);
        p.hold_on_restart = true;
        ctl.execute(
            &Request::RolloutStart {
                service: "web".into(),
                plan: p,
            },
            at(0),
        )
        .unwrap();
        ctl.hold_rollouts_after_restart().unwrap();
        let r = &ctl.head().rollouts[0];
        assert_eq!(r.phase, Phase::Paused);
        assert_eq!(weights(&ctl, "web"), pair("90", "10"), "held at its step");
    }
}

mod effects {
    use super::*;

    #[test]
    fn a_failed_commit_puts_the_previous_state_back_in_the_kernel() {
        let mut ctl = controller(dual_stack());
        ctl.node_mut().fail_commit = true;
        let e = ctl
            .execute(&shift(&["web"], &[("v2", "10")]), at(1))
            .unwrap_err();
        assert_eq!(
            crate::error::chain(&e),
            "recording the revision failed; the previous state was put back: writing /fake/revisions failed: disk full"
        );
        let applied = &ctl.node().applied;
        assert_eq!(applied.len(), 3, "the change, then the undo");
        assert_eq!(applied[1].0.services[0].groups[1].weight, w("10"));
        assert_eq!(ctl.node().kernel(), &dual_stack(), "back to revision 1");
        assert_eq!(ctl.head().number, 1);
    }

    #[test]
    fn a_failed_apply_commits_nothing() {
        let mut ctl = controller(dual_stack());
        ctl.node_mut().fail_apply = true;
        assert!(matches!(
            ctl.execute(&shift(&["web"], &[("v2", "10")]), at(1)),
            Err(ControlError::Dataplane(_))
        ));
        assert_eq!(ctl.head().number, 1);
    }

    #[test]
    fn a_backend_failing_its_checks_leaves_the_table_after_fall_and_comes_back_after_rise() {
        let mut state = dual_stack();
        state.services[0].health = Some(HealthCheck {
            kind: crate::model::CheckKind::Tcp,
            interval: Duration::from_secs(1),
            timeout: Duration::from_millis(500),
            rise: 2,
            fall: 2,
        });
        let mut ctl = controller(state);
        let jobs = ctl.health_jobs();
        assert_eq!(jobs.len(), 2, "web's two backends; web6 has no check");
        let v1 = jobs[0].backend.clone();
        let refused = || {
            Err(CheckError::Timeout {
                timeout: Duration::from_millis(500),
            })
        };
        ctl.health_result(&v1, &refused()).unwrap();
        assert!(
            ctl.node().applied.last().unwrap().1.is_empty(),
            "one failure is not enough"
        );
        ctl.health_result(&v1, &refused()).unwrap();
        assert!(ctl.node().applied.last().unwrap().1.contains(&v1));
        let status = ctl.status(Some("web")).unwrap();
        assert!(!status.services[0].groups[0].backends[0].healthy);
        assert_eq!(ctl.head().number, 1, "health is no revision");
        for _ in 0..2 {
            ctl.health_result(&v1, &Ok(())).unwrap();
        }
        assert!(ctl.node().applied.last().unwrap().1.is_empty());
    }
}

mod views {
    use super::*;

    #[test]
    fn status_counts_per_backend_and_refuses_an_unknown_service() {
        let mut ctl = controller(dual_stack());
        let id = ctl.node_mut().ids.backends[&(
            "web".to_owned(),
            "v1".to_owned(),
            "198.51.100.11:8080".parse::<SocketAddr>().unwrap(),
        )];
        ctl.node_mut().counters.insert(
            id,
            BackendCounters {
                packets: 12,
                bytes: 3400,
                new_flows: 3,
                answered_flows: 2,
                refused_flows: 1,
            },
        );
        ctl.node_mut().census = Census {
            active: HashMap::from([(id, 2)]),
            flows: 7,
            new_flows: 5,
        };
        let s = ctl.status(None).unwrap();
        assert_eq!(s.revision.as_ref().unwrap().number, 1);
        let b = &s.services[0].groups[0].backends[0];
        assert_eq!(
            (
                b.packets,
                b.bytes,
                b.new_flows,
                b.answered_flows,
                b.refused_flows,
                b.failed_flows,
                b.active_flows
            ),
            (12, 3400, 3, 2, 1, 1, 2)
        );
        assert_eq!(
            (
                s.conntrack_entries,
                s.conntrack_capacity,
                s.conntrack_new_entries,
                s.conntrack_new_capacity
            ),
            (
                7,
                veer_common::maps::DEFAULT_CONNTRACK_MAX,
                5,
                veer_common::maps::DEFAULT_NEWFLOWS_MAX
            )
        );
        assert_eq!(s.services.len(), 2);
        assert_eq!(s.dataplane, DataplaneReport::default());
        ctl.node_mut().report.interfaces.push(client_veth());
        assert_eq!(
            ctl.status(None).unwrap().dataplane.interfaces,
            [client_veth()]
        );
        assert!(matches!(
            ctl.status(Some("shop")),
            Err(ControlError::UnknownService { .. })
        ));
    }

    #[test]
    fn rollout_status_says_what_the_step_waits_for() {
        let mut ctl = controller(dual_stack());
        ctl.execute(
            &Request::RolloutStart {
                service: "web".into(),
                plan: plan(&["10", "100"]),
            },
            at(0),
        )
        .unwrap();
        let v = ctl.rollout_status("web", at(4)).unwrap();
        assert_eq!(
            v.waiting,
            Some(super::super::views::Waiting::Pause {
                left: Duration::from_secs(6)
            })
        );
        let v = ctl.rollout_status("web", at(11)).unwrap();
        assert_eq!(
            v.waiting,
            Some(super::super::views::Waiting::MinFlows {
                seen: 0,
                needed: 20
            })
        );
        assert!(matches!(
            ctl.rollout_status("web6", at(1)),
            Err(ControlError::NoRollout { .. })
        ));
    }

    fn sock(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    /// Three entries on `web`'s VIP and port: one of `web`'s TCP flows on v2, idle 5000 ticks
    /// of 2^20 ns (5.24 s); a UDP flow (no service has that endpoint over UDP); a TCP flow whose
    /// backend id now names another service's backend.
    fn three_flows(ctl: &mut Controller<FakeNode>) {
        use veer_common::{
            FAMILY_V4, PROTO_TCP, PROTO_UDP,
            addr::addr_words,
            flow::{FlowEntry, FlowKey, STATE_ESTABLISHED, STATE_SYN_ACKED, STATE_UDP},
        };

        let id = |s: &str, g: &str, b: &str| {
            ctl.node().ids.backends[&(s.to_owned(), g.to_owned(), sock(b))]
        };
        let (web_v2, web6_v1) = (
            id("web", "v2", "198.51.100.21:8080"),
            id("web6", "v1", "[2001:db8:b::11]:8080"),
        );
        let key = |client: &str, proto| FlowKey {
            src_addr: addr_words(sock(client).ip()),
            dst_addr: addr_words(sock("192.0.2.10:80").ip()),
            src_port: sock(client).port().to_be(),
            dst_port: 80u16.to_be(),
            proto,
            family: FAMILY_V4,
            _pad: [0; 2],
        };
        let entry = |backend: &str, backend_id, state, last_seen| FlowEntry {
            backend_addr: addr_words(sock(backend).ip()),
            backend_port: sock(backend).port().to_be(),
            state,
            backend_id,
            last_seen,
            ..FlowEntry::default()
        };
        let now = 100_000;
        ctl.node_mut().flows = FlowTable {
            entries: vec![
                (
                    key("203.0.113.2:40000", PROTO_TCP),
                    entry("198.51.100.21:8080", web_v2, STATE_ESTABLISHED, now - 5000),
                ),
                (
                    key("203.0.113.2:40001", PROTO_UDP),
                    entry("198.51.100.11:8080", web_v2, STATE_UDP, now),
                ),
                (
                    key("203.0.113.3:40002", PROTO_TCP),
                    entry("198.51.100.11:8080", web6_v1, STATE_SYN_ACKED, now),
                ),
            ],
            now,
        };
    }

    #[test]
    fn flows_name_their_service_by_vip_and_their_group_by_backend_id() {
        let mut ctl = controller(dual_stack());
        three_flows(&mut ctl);
        let all = ctl.flows(None, None, 10).unwrap();
        assert_eq!((all.matched, all.flows.len()), (3, 3));
        let web = ctl.flows(Some("web"), None, 10).unwrap();
        assert_eq!(web.matched, 2);
        let f = web
            .flows
            .iter()
            .find(|f| f.client == sock("203.0.113.2:40000"))
            .unwrap();
        assert_eq!(
            (
                f.service.as_deref(),
                f.group.as_deref(),
                f.backend,
                f.vip,
                f.state.as_str(),
                f.idle.as_secs()
            ),
            (
                Some("web"),
                Some("v2"),
                sock("198.51.100.21:8080"),
                sock("192.0.2.10:80"),
                "established",
                5
            )
        );
        let other = web
            .flows
            .iter()
            .find(|f| f.client == sock("203.0.113.3:40002"))
            .unwrap();
        assert_eq!(
            (
                other.service.as_deref(),
                other.group.as_deref(),
                other.state.as_str()
            ),
            (Some("web"), None, "syn_acked")
        );
        let udp = all
            .flows
            .iter()
            .find(|f| f.client == sock("203.0.113.2:40001"))
            .unwrap();
        assert_eq!((udp.service.as_deref(), udp.group.as_deref()), (None, None));
        let one = ctl.flows(Some("web"), None, 1).unwrap();
        assert_eq!((one.matched, one.flows.len()), (2, 1));
        let v2 = ctl
            .flows(None, Some(sock("198.51.100.21:8080")), 10)
            .unwrap();
        assert_eq!(v2.matched, 1);
        assert!(matches!(
            ctl.flows(Some("shop"), None, 10),
            Err(ControlError::UnknownService { .. })
        ));
    }

    /// A client veth steered by TC, not an XDP redirect target.
    fn client_veth() -> InterfaceReport {
        InterfaceReport {
            name: "n-client".into(),
            ifindex: 7,
            kind: "veth".into(),
            hook: "tc".into(),
            mode: "tcx".into(),
            why: "veth: local senders hand it CHECKSUM_PARTIAL skbs".into(),
            xdp_redirect_target: false,
            xdp_redirect_why: "its peer has neither GRO nor an XDP program".into(),
        }
    }

    #[test]
    fn a_link_event_is_handled_with_the_live_state() {
        let mut ctl = controller(dual_stack());
        assert!(ctl.links_changed().unwrap());
        assert_eq!(ctl.node().refreshed, [dual_stack()]);
    }

    #[test]
    fn a_scrape_reads_the_census_of_the_last_upkeep_pass_and_status_scans() {
        let mut ctl = controller(dual_stack());
        crate::metrics::render(&ctl).unwrap();
        assert_eq!(ctl.node().scans.get(), 1, "before the first pass, one scan");
        ctl.upkeep().unwrap();
        for _ in 0..3 {
            let text = crate::metrics::render(&ctl).unwrap();
            assert!(text.contains("veer_conntrack_entries 9"), "{text}");
            assert!(text.contains("veer_conntrack_new_entries 2"), "{text}");
            assert!(
                text.contains(
                    r#"veer_backend_active_flows{service="web",group="v1",backend="198.51.100.11:8080"} 7"#
                ),
                "{text}"
            );
        }
        assert_eq!(ctl.node().scans.get(), 1, "no scan per scrape");
        ctl.status(None).unwrap();
        assert_eq!(ctl.node().scans.get(), 2, "status is exact");
    }

    #[test]
    fn metrics_render_from_the_views() {
        let mut ctl = controller(dual_stack());
        ctl.node_mut().report.interfaces.push(client_veth());
        let web = ctl.node().ids.services["web"];
        ctl.node_mut().service_counters.insert(
            web,
            ServiceCounters {
                promotions: 4,
                promotions_refused: 1,
                invalid_tcp: 9,
                ..ServiceCounters::default()
            },
        );
        ctl.node_mut().census.new_flows = 3;
        let text = crate::metrics::render(&ctl).unwrap();
        for series in [
            r#"veer_service_promotions_total{service="web"} 4"#,
            r#"veer_service_promotions_refused_total{service="web"} 1"#,
            r#"veer_service_invalid_tcp_total{service="web"} 9"#,
            r#"veer_service_invalid_tcp_total{service="web6"} 0"#,
            "veer_conntrack_new_entries 3",
            "veer_conntrack_new_capacity 65536",
            r#"veer_interface_hook{interface="n-client",kind="veth",hook="tc",mode="tcx"} 1"#,
            r#"veer_interface_xdp_redirect_target{interface="n-client",kind="veth",hook="tc",mode="tcx"} 0"#,
            r#"veer_packets_not_steered_total{reason="kernel_no_xdp_xmit",verdict="pass"} 0"#,
            r#"veer_packets_not_steered_total{reason="invalid_tcp",verdict="drop"} 0"#,
        ] {
            assert!(text.contains(series), "{series} in {text}");
        }
        assert!(text.contains("veer_revision 1"), "{text}");
        assert!(
            text.contains(r#"veer_group_weight_ratio{service="web6",group="v1"} 1.0"#),
            "{text}"
        );
        assert!(
            text.contains(
                r#"veer_packets_not_steered_total{reason="no_backend",verdict="drop"} 0"#
            )
        );
    }
}

mod file {
    use super::*;

    /// A directory removed when dropped, pass or fail.
    struct TempDir(PathBuf);

    impl Drop for TempDir {
        fn drop(&mut self) {
            drop(std::fs::remove_dir_all(&self.0));
        }
    }

    #[test]
    fn reloads_record_the_last_good_one_the_refusal_and_settings_waiting_for_a_restart() {
        let dir = std::env::temp_dir().join(format!("veer-control-file-{}", std::process::id()));
        drop(std::fs::remove_dir_all(&dir));
        std::fs::create_dir_all(&dir).unwrap();
        let _cleanup = TempDir(dir.clone());
        let path = dir.join("veer.toml");
        let file = |node: NodeConfig| crate::config::Config {
            node,
            state: dual_stack(),
        };
        std::fs::write(&path, crate::config::to_toml(&file(NodeConfig::default()))).unwrap();
        let mut ctl = Controller::new(FakeNode::default(), NodeConfig::default(), path.clone());
        changed(&ctl.reload().unwrap(), 1);
        let good = ctl.config_view();
        assert!(good.last_good.is_some() && good.last_error.is_none());
        assert!(good.pending_restart.is_empty());

        let bigger = NodeConfig {
            conntrack_max: 2 << 20,
            ..NodeConfig::default()
        };
        std::fs::write(&path, crate::config::to_toml(&file(bigger))).unwrap();
        let a = ctl.reload().unwrap();
        assert!(!a.changed, "[node] alone applies nothing");
        assert_eq!(a.pending_restart.len(), 1);
        assert_eq!(
            (
                a.pending_restart[0].setting.as_str(),
                a.pending_restart[0].wanted.as_str()
            ),
            ("conntrack_max", "2097152")
        );
        assert_eq!(ctl.config_view().pending_restart, a.pending_restart);

        let last_good = ctl.config_view().last_good;
        assert!(
            last_good > good.last_good,
            "a reload that applies nothing is a good one"
        );
        std::fs::write(&path, "[node]\nconntrack_max = -1\n").unwrap();
        assert!(ctl.reload().is_err());
        let refused = ctl.config_view();
        let e = refused.last_error.unwrap();
        let at = e.location.unwrap();
        assert_eq!((at.file, at.line, at.column), (path.clone(), 2, 17));
        assert_eq!(
            e.message,
            "`conntrack_max`: -1 is out of range 1024..=67108864"
        );
        assert_eq!(refused.last_good, last_good, "the good reload stands");
        assert_eq!(ctl.head().number, 1);

        std::fs::remove_file(&path).unwrap();
        let e = ctl.reload().unwrap_err();
        let missing = ctl.config_view().last_error.unwrap();
        assert!(missing.location.is_none());
        assert_eq!(missing.message, crate::error::chain(&e));
    }
}

mod held {
    use super::*;

    /// A controller at revision 2 (web shifted to v2=100) whose revision file 2 turned out
    /// damaged: what the node knows is revision 1 (v1=100), and revision 2 cannot be used.
    fn damaged() -> Controller<FakeNode> {
        let mut ctl = controller(dual_stack());
        ctl.execute(&shift(&["web"], &[("v1", "0"), ("v2", "100")]), at(1))
            .unwrap();
        let node = ctl.node_mut();
        let two = node.revisions.pop().unwrap();
        assert_eq!(two.number, 2);
        node.unusable.push(Unusable {
            number: 2,
            path: "/var/lib/veer/revisions/000002.json".into(),
            problem: Problem::Damaged {
                error: "EOF while parsing an object at line 40 column 3".into(),
            },
        });
        ctl
    }

    #[test]
    fn nothing_changes_until_an_operator_chooses_and_the_refusal_says_how() {
        let mut ctl = damaged();
        let kernel_updates = ctl.node().applied.len();
        assert!(ctl.is_held());
        for request in [
            shift(&["web"], &[("v1", "100"), ("v2", "0")]),
            Request::Drain {
                service: "web".into(),
                group: "v2".into(),
                force: true,
                end: None,
            },
            Request::Rollback {
                service: None,
                to: None,
            },
            Request::Rollback {
                service: Some("web".into()),
                to: Some(1),
            },
            apply_request(dual_stack(), file(), Some("file-2")),
        ] {
            let e = ctl.execute(&request, at(2)).unwrap_err();
            assert!(matches!(e, ControlError::Held { number: 2, .. }), "{e}");
            assert_eq!(
                e.to_string(),
                "revision 2 (/var/lib/veer/revisions/000002.json) cannot be used: it is damaged (not complete JSON: EOF while parsing an object at line 40 column 3); the maps are kept as they are and nothing changes until you choose the state to put in force: `veer rollback --to 1` (the newest revision that can be used; `veer history` lists them) or `veer apply -f FILE`"
            );
        }
        // Nor does the config file (at start or on reload): it is a source, not a choice.
        let cfg = crate::config::Config {
            node: NodeConfig::default(),
            state: dual_stack(),
        };
        assert!(matches!(
            ctl.apply_file(cfg, "text"),
            Err(ControlError::Held { .. })
        ));
        assert_eq!(
            ctl.node().applied.len(),
            kernel_updates,
            "the kernel was not touched"
        );
        assert_eq!(ctl.node().revisions.len(), 1);
        // Nothing else runs on a state nobody knows: no health checks, no rollout steps.
        assert!(ctl.rollout_tick(at(3)).unwrap().is_empty());
        let status = ctl.status(None).unwrap();
        assert!(status.revision.is_none() && status.services.is_empty());
        assert_eq!(status.files.held.as_ref().map(|h| h.number), Some(2));
        assert_eq!(status.files.newest_usable, Some(1));
    }

    #[test]
    fn a_whole_rollback_to_a_named_revision_ends_the_hold_under_a_new_number() {
        let mut ctl = damaged();
        let back = Request::Rollback {
            service: None,
            to: Some(1),
        };
        // Revision 1 is what the head says, yet it is committed: the maps may hold anything.
        let a = ctl.execute(&back, at(2)).unwrap();
        changed(&a, 3);
        assert!(!ctl.is_held());
        assert_eq!(ctl.node().kernel(), &dual_stack());
        assert_eq!(
            ctl.node().revisions.last().unwrap().summary,
            "rollback to revision 1 (revision 2 could not be used)"
        );
        // Back to normal: verbs work again, numbered after the damaged file.
        changed(
            &ctl.execute(&shift(&["web"], &[("v2", "10")]), at(3))
                .unwrap(),
            4,
        );
    }

    #[test]
    fn an_operator_apply_ends_the_hold_even_when_it_equals_the_newest_usable_revision() {
        let mut ctl = damaged();
        let a = ctl
            .apply(
                &apply_request(
                    dual_stack(),
                    Origin::Apply {
                        path: "/root/veer.toml".into(),
                    },
                    Some("file-1"),
                ),
                at(2),
            )
            .unwrap();
        changed(&a, 3);
        assert!(!ctl.is_held());
        assert_eq!(ctl.node().kernel(), &dual_stack());
    }

    /// A dry run decides exactly as the change would: while held, a verb is refused with the
    /// same words, and an operator's whole choice shows its diff against the newest usable
    /// revision; nothing is applied or committed either way.
    #[test]
    fn dry_runs_decide_as_the_change_would_while_held() {
        let ctl = damaged();
        let kernel_updates = ctl.node().applied.len();
        let shift_back = shift(&["web"], &[("v1", "100"), ("v2", "0")]);
        let refused = ctl.preview(&shift_back, at(2)).unwrap_err();
        assert!(
            matches!(refused, ControlError::Held { number: 2, .. }),
            "{refused}"
        );
        let mut chosen = dual_stack();
        chosen.services[0].groups[0].weight = w("50");
        chosen.services[0].groups[1].weight = w("50");
        let apply = apply_request(
            chosen,
            Origin::Apply {
                path: "/root/veer.toml".into(),
            },
            None,
        );
        let p = ctl.preview(&apply, at(2)).unwrap();
        assert_eq!(
            p.revision, 1,
            "the diff is against the newest usable revision"
        );
        assert!(!p.diff.is_empty());
        assert!(
            p.summaries[0].ends_with("(revision 2 could not be used)"),
            "{:?}",
            p.summaries
        );
        let back = Request::Rollback {
            service: None,
            to: Some(1),
        };
        let p = ctl.preview(&back, at(2)).unwrap();
        assert!(p.diff.is_empty() && p.summaries.len() == 1, "{p:?}");
        assert_eq!(ctl.node().applied.len(), kernel_updates);
        assert_eq!(ctl.node().revisions.len(), 1);
        assert!(ctl.is_held());
    }

    /// The etcd source is a source like the file: while held, its config is not applied, and
    /// the node's status document (and `veer status`) carries the refusal with what to do. On
    /// a node following etcd, `veer apply -f FILE` (otherwise refused there) is one of the two
    /// ways out; the fleet's config then applies at the next pass, made by `fleet`.
    #[test]
    fn a_node_following_etcd_applies_nothing_while_held_and_reports_the_hold() {
        use crate::{
            control::EtcdSource,
            fleet::{Document, NodeName},
            sources::etcd::SourceState,
            state::Author,
        };
        let mut ctl = damaged();
        ctl.follow_etcd(EtcdSource {
            endpoints: "http://127.0.0.1:2379".into(),
            prefix: "/veer".into(),
            node: NodeName::new("edge-1").unwrap(),
        });
        let kernel_updates = ctl.node().applied.len();
        let mut fleet_state = dual_stack();
        fleet_state.services[0].groups[0].weight = w("20");
        fleet_state.services[0].groups[1].weight = w("80");
        let source = SourceState {
            synced: true,
            revision: 7,
            config: Some(Document {
                key: "/veer/config".into(),
                value: crate::config::services_to_toml(&fleet_state).into_bytes(),
                mod_revision: 7,
            }),
            lists: 1,
            last_sync: Some(at(2)),
            ..SourceState::default()
        };
        ctl.follow(&source, at(2));
        ctl.follow(&source, at(3));
        assert_eq!(ctl.node().applied.len(), kernel_updates, "nothing applied");
        assert!(ctl.is_held());
        let status = ctl.node_status().unwrap();
        assert!(status.config.is_none(), "no config from etcd in force");
        assert!(
            status.services.is_empty() && status.state_hash.is_empty(),
            "the state in force is not known: {status:?}"
        );
        assert_eq!(status.errors.len(), 1, "{:?}", status.errors);
        let e = &status.errors[0];
        assert_eq!((e.key.as_str(), e.mod_revision), ("/veer/config", 7));
        assert!(
            e.message
                .contains("revision 2 (/var/lib/veer/revisions/000002.json) cannot be used")
                && e.message.contains("`veer rollback --to 1`")
                && e.message
                    .contains("the config in etcd is not applied while held"),
            "{}",
            e.message
        );
        assert!(ctl.source_view().unwrap().refused.is_some());
        // The operator's file ends the hold (a plain `veer apply` stays refused on this node).
        let file = apply_request(
            dual_stack(),
            Origin::Apply {
                path: "/root/veer.toml".into(),
            },
            None,
        );
        changed(&ctl.execute(&file, at(4)).unwrap(), 3);
        assert!(!ctl.is_held());
        assert!(matches!(
            ctl.execute(&file, at(5)),
            Err(ControlError::FromEtcd)
        ));
        // The next pass applies the fleet's config, never applied while held.
        ctl.follow(&source, at(6));
        assert_eq!(ctl.node().kernel(), &fleet_state);
        let last = ctl.node().revisions.last().unwrap();
        assert_eq!(last.number, 4);
        assert_eq!(last.audit.author, Author::Fleet);
        let status = ctl.node_status().unwrap();
        assert!(status.errors.is_empty(), "{:?}", status.errors);
        assert_eq!(status.config.unwrap().mod_revision, 7);
    }
}

mod core_alone {
    use super::*;

    #[test]
    fn decide_reads_only_its_inputs() {
        let head = Head {
            number: 4,
            state: dual_stack(),
            rollouts: vec![],
            config: None,
            drains: vec![],
            held: None,
        };
        let live = Live {
            head: &head,
            history: &[],
            observed: &Observations::default(),
            now: at(0),
        };
        let outcome = core::decide(&shift(&["web6"], &[("v2", "25")]), &live).unwrap();
        assert_eq!(outcome.changes.len(), 1);
        let c = &outcome.changes[0];
        assert_eq!(c.origin, Origin::Shift);
        assert_eq!(c.state.services[1].groups[1].weight, w("25"));
        assert_eq!(head.after(c).number, 5);
        // Deciding twice gives the same answer: nothing was changed by the first.
        assert_eq!(
            core::decide(&shift(&["web6"], &[("v2", "25")]), &live).unwrap(),
            outcome
        );
        assert!(
            core::decide(&shift(&["web6"], &[("v2", "0")]), &live)
                .unwrap()
                .changes
                .is_empty(),
            "already in force"
        );
    }
}

mod judged {
    //! The canary judge in the control layer: a judged step waits for a pass at the end of its
    //! pause, a failing verdict rolls back with its numbers kept in the rollout; and paced
    //! drains end flows after their deadline at their pace.

    use veer_common::{
        flow::{FlowEntry, STATE_ESTABLISHED},
        histogram::Histogram,
    };

    use super::*;
    use crate::{
        model::{
            drain::{DrainEnd, Pace},
            tolerance::Tolerances,
        },
        rollout::judge::Outcome,
    };

    fn id(ctl: &Controller<FakeNode>, group: &str, addr: &str) -> u32 {
        ctl.node().ids.backends[&("web".to_owned(), group.to_owned(), addr.parse().unwrap())]
    }

    /// `n` answered attempts and first bytes of `ns` each, on `group`'s backend of web.
    fn traffic(ctl: &mut Controller<FakeNode>, group: &str, addr: &str, n: u64, ns: u64) {
        let id = id(ctl, group, addr);
        let node = ctl.node_mut();
        node.counters.insert(
            id,
            BackendCounters {
                new_flows: n,
                answered_flows: n,
                ..BackendCounters::default()
            },
        );
        let mut h = Histogram::EMPTY;
        for _ in 0..n {
            h.record(ns);
        }
        let mut connect = Histogram::EMPTY;
        for _ in 0..n {
            connect.record(50_000);
        }
        let sig = node.signals.entry(id).or_default();
        sig.histograms.first_byte = h;
        sig.histograms.connect = connect;
    }

    fn judged_rollout() -> Controller<FakeNode> {
        let mut ctl = controller(dual_stack());
        let mut p = plan(&["10", "50", "100"]);
        p.judge = Some(Tolerances::DEFAULT);
        let start = Request::RolloutStart {
            service: "web".into(),
            plan: p,
        };
        changed(&ctl.execute(&start, at(0)).unwrap(), 2);
        // The first tick opens the step's window.
        ctl.rollout_tick(at(1)).unwrap();
        ctl
    }

    #[test]
    fn a_canary_100ms_slower_rolls_back_at_the_first_look_with_its_verdict() {
        let mut ctl = judged_rollout();
        traffic(&mut ctl, "v1", "198.51.100.11:8080", 2_000, 2_000_000);
        traffic(&mut ctl, "v2", "198.51.100.21:8080", 200, 102_000_000);
        ctl.rollout_tick(at(2)).unwrap();
        let r = &ctl.head().rollouts[0];
        assert_eq!(r.phase, Phase::RolledBack, "{r:?}");
        let reason = r.reason.as_deref().unwrap();
        assert!(
            reason.starts_with("judge: time to first byte p50: canary at least"),
            "{reason}"
        );
        let v = r
            .verdict
            .as_ref()
            .expect("the verdict is kept in the revision");
        assert_eq!((v.step, v.at_end), (1, false));
        assert_eq!(v.verdict.outcome, Outcome::Fail);
        assert!(v.verdict.first_byte.p50.canary.estimate_ns > 90_000_000);
        assert!(v.verdict.first_byte.p50.baseline.estimate_ns < 3_000_000);
        assert_eq!(weights(&ctl, "web"), pair("100", "0"));
    }

    #[test]
    fn a_judged_step_ends_only_after_a_pass_at_the_end_of_its_pause() {
        let mut ctl = judged_rollout();
        traffic(&mut ctl, "v1", "198.51.100.11:8080", 2_000, 2_000_000);
        traffic(&mut ctl, "v2", "198.51.100.21:8080", 200, 2_000_000);
        ctl.rollout_tick(at(5)).unwrap();
        let r = &ctl.head().rollouts[0];
        assert_eq!((r.phase, r.step), (Phase::Running, 0));
        let live = ctl.rollout_status("web", at(5)).unwrap();
        let v = live.judge.expect("the live verdict");
        assert_eq!((v.verdict.outcome, v.at_end), (Outcome::Pass, false));
        // The pause is over: the end look passes and the step ends.
        ctl.rollout_tick(at(11)).unwrap();
        let r = &ctl.head().rollouts[0];
        assert_eq!((r.phase, r.step), (Phase::Running, 1), "{r:?}");
        let kept = r.verdict.as_ref().unwrap();
        assert_eq!((kept.step, kept.at_end), (1, true));
        assert_eq!(kept.verdict.outcome, Outcome::Pass);
        // The next step judges a window of its own, opened at its first tick: 30 canary
        // attempts in it are enough new flows, not enough to judge.
        ctl.rollout_tick(at(12)).unwrap();
        traffic(&mut ctl, "v2", "198.51.100.21:8080", 230, 2_000_000);
        ctl.rollout_tick(at(22)).unwrap();
        assert_eq!(ctl.head().rollouts[0].step, 1);
        let status = ctl.rollout_status("web", at(22)).unwrap();
        assert_eq!(status.waiting, Some(super::super::views::Waiting::Judge));
        assert_eq!(
            status.judge.map(|v| (v.step, v.verdict.outcome)),
            Some((2, Outcome::NotEnoughData))
        );
    }

    #[test]
    fn a_rollout_with_a_drain_ends_the_old_groups_flows_once_it_completes() {
        let mut ctl = controller(dual_stack());
        let v1 = id(&ctl, "v1", "198.51.100.11:8080");
        ctl.node_mut().flows.entries = (0..5)
            .map(|p| {
                (
                    FlowKey {
                        src_port: p,
                        ..FlowKey::default()
                    },
                    FlowEntry {
                        backend_id: v1,
                        state: STATE_ESTABLISHED,
                        ..FlowEntry::default()
                    },
                )
            })
            .collect();
        let mut p = plan(&["100"]);
        p.min_flows = 0;
        p.drain = Some(DrainEnd {
            deadline: Duration::from_secs(5),
            pace: Pace::per_second(100),
        });
        let start = Request::RolloutStart {
            service: "web".into(),
            plan: p,
        };
        changed(&ctl.execute(&start, at(0)).unwrap(), 2);
        ctl.rollout_tick(at(11)).unwrap();
        assert_eq!(ctl.head().rollouts[0].phase, Phase::Completed);
        assert_eq!(ctl.paced_drains(), 1, "v1, taken to 0 by the rollout");
        ctl.drain_tick(at(15)).unwrap();
        assert!(
            ctl.node().ended.is_empty(),
            "its deadline runs from the completion"
        );
        ctl.drain_tick(at(16)).unwrap();
        ctl.drain_tick(at(17)).unwrap();
        assert_eq!(ctl.node().ended.len(), 5);
    }

    #[test]
    fn a_paced_drain_ends_flows_after_its_deadline_at_its_pace() {
        let mut ctl = controller(dual_stack());
        let v1 = id(&ctl, "v1", "198.51.100.11:8080");
        let v2 = id(&ctl, "v2", "198.51.100.21:8080");
        let flow = |port: u16, backend_id| {
            (
                FlowKey {
                    src_port: port,
                    ..FlowKey::default()
                },
                FlowEntry {
                    backend_id,
                    state: STATE_ESTABLISHED,
                    ..FlowEntry::default()
                },
            )
        };
        ctl.node_mut().flows.entries = (0..30)
            .map(|p| flow(p, v1))
            .chain((100..105).map(|p| flow(p, v2)))
            .collect();
        ctl.execute(&shift(&["web"], &[("v2", "100")]), at(0))
            .unwrap();
        let drain = Request::Drain {
            service: "web".into(),
            group: "v1".into(),
            force: false,
            end: Some(DrainEnd {
                deadline: Duration::from_secs(2),
                pace: Pace::per_second(10),
            }),
        };
        ctl.execute(&drain, at(0)).unwrap();
        let ms = |ms: u64| at(0) + Duration::from_millis(ms);
        ctl.drain_tick(ms(1_900)).unwrap();
        assert!(ctl.node().ended.is_empty(), "nothing before the deadline");
        let mut t = 2_000;
        while t <= 3_000 {
            ctl.drain_tick(ms(t)).unwrap();
            t += 200;
        }
        let n = ctl.node().ended.len();
        assert!(
            (10..=12).contains(&n),
            "about 10 flows in the first second: {n}"
        );
        while t <= 6_000 {
            ctl.drain_tick(ms(t)).unwrap();
            t += 200;
        }
        assert_eq!(ctl.node().ended.len(), 30, "every v1 flow, none of v2's");
        assert!(ctl.node().ended.iter().all(|k| k.src_port < 30));
        assert_eq!(ctl.paced_drains(), 0, "done once no flow is left");
    }

    #[test]
    fn a_paced_drain_is_called_off_when_its_group_takes_new_flows_again() {
        let mut ctl = controller(dual_stack());
        let v1 = id(&ctl, "v1", "198.51.100.11:8080");
        ctl.node_mut().flows.entries = vec![(
            FlowKey::default(),
            FlowEntry {
                backend_id: v1,
                state: STATE_ESTABLISHED,
                ..FlowEntry::default()
            },
        )];
        ctl.execute(&shift(&["web"], &[("v2", "100")]), at(0))
            .unwrap();
        let drain = Request::Drain {
            service: "web".into(),
            group: "v1".into(),
            force: false,
            end: Some(DrainEnd {
                deadline: Duration::from_secs(2),
                pace: Pace::per_second(10),
            }),
        };
        ctl.execute(&drain, at(0)).unwrap();
        ctl.execute(&shift(&["web"], &[("v1", "100")]), at(1))
            .unwrap();
        ctl.drain_tick(at(3)).unwrap();
        assert!(ctl.node().ended.is_empty(), "v1 takes new flows again");
        assert_eq!(ctl.paced_drains(), 0);
        assert!(
            ctl.head().drains.is_empty(),
            "called off in the revision too"
        );
    }

    /// A controller whose v1 (drained at 0 with a 10 s deadline at 10/s) holds 30 flows.
    fn drained_with_flows() -> Controller<FakeNode> {
        let mut ctl = controller(dual_stack());
        let v1 = id(&ctl, "v1", "198.51.100.11:8080");
        ctl.node_mut().flows.entries = (0..30)
            .map(|p| {
                (
                    FlowKey {
                        src_port: p,
                        ..FlowKey::default()
                    },
                    FlowEntry {
                        backend_id: v1,
                        state: STATE_ESTABLISHED,
                        ..FlowEntry::default()
                    },
                )
            })
            .collect();
        ctl.execute(&shift(&["web"], &[("v2", "100")]), at(0))
            .unwrap();
        let drain = Request::Drain {
            service: "web".into(),
            group: "v1".into(),
            force: false,
            end: Some(DrainEnd {
                deadline: Duration::from_secs(10),
                pace: Pace::per_second(10),
            }),
        };
        ctl.execute(&drain, at(0) + Duration::from_micros(1_500))
            .unwrap();
        ctl
    }

    /// The same node under a new controller: a daemon restart.
    fn restarted(ctl: Controller<FakeNode>) -> Controller<FakeNode> {
        Controller::new(
            ctl.node,
            NodeConfig::default(),
            PathBuf::from("/etc/veer/veer.toml"),
        )
    }

    #[test]
    fn a_paced_drain_is_kept_in_its_revision_with_its_deadline_as_a_moment() {
        let ctl = drained_with_flows();
        let head = ctl.head();
        assert_eq!(head.drains.len(), 1);
        let d = &head.drains[0];
        assert_eq!((d.service.as_str(), d.group.as_str()), ("web", "v1"));
        // Rounded up to the millisecond: a restarted daemon waits as long, never less.
        assert_eq!(d.ends_from, at(10) + Duration::from_millis(2));
        assert_eq!(d.pace, Pace::per_second(10));
        let last = ctl.node().revisions.last().unwrap();
        assert!(
            last.summary.contains("after 10s at 10/s"),
            "{}",
            last.summary
        );
        // Other changes carry it; draining again replaces it.
        let mut ctl = ctl;
        ctl.execute(
            &Request::Drain {
                service: "web".into(),
                group: "v1".into(),
                force: false,
                end: Some(DrainEnd {
                    deadline: Duration::from_mins(1),
                    pace: Pace::per_second(5),
                }),
            },
            at(1),
        )
        .unwrap();
        assert_eq!(ctl.head().drains.len(), 1);
        assert_eq!(ctl.head().drains[0].ends_from, at(61));
    }

    #[test]
    fn a_restarted_daemon_waits_out_the_rest_of_a_drains_deadline_then_keeps_its_pace() {
        let mut ctl = drained_with_flows();
        ctl.drain_tick(at(5)).unwrap();
        assert!(ctl.node().ended.is_empty());
        let mut ctl = restarted(ctl);
        // Not ten seconds from the restart: the moment the revision holds.
        ctl.drain_tick(at(6)).unwrap();
        ctl.drain_tick(at(10)).unwrap();
        assert!(ctl.node().ended.is_empty(), "nothing before the deadline");
        let mut t = 10_100;
        while t <= 11_000 {
            ctl.drain_tick(at(0) + Duration::from_millis(t)).unwrap();
            t += 100;
        }
        let n = ctl.node().ended.len();
        assert!((9..=11).contains(&n), "about 10 in the first second: {n}");
    }

    #[test]
    fn a_restarted_daemon_past_a_drains_deadline_ends_at_the_pace_not_all_at_once() {
        let ctl = drained_with_flows();
        let mut ctl = restarted(ctl);
        // An hour after the deadline: half a second of pace at most, then the pace.
        ctl.drain_tick(at(3_600)).unwrap();
        assert_eq!(ctl.node().ended.len(), 5, "half a second at 10/s");
        ctl.drain_tick(at(3_601)).unwrap();
        assert!(ctl.node().ended.len() <= 10, "{}", ctl.node().ended.len());
        for s in 3_602..3_610 {
            ctl.drain_tick(at(s)).unwrap();
        }
        assert_eq!(ctl.node().ended.len(), 30);
        assert_eq!(ctl.paced_drains(), 0, "done: no flow left");
        // Done is done, until the revision says otherwise.
        ctl.drain_tick(at(3_700)).unwrap();
        assert_eq!(ctl.node().ended.len(), 30);
    }

    #[test]
    fn a_damaged_newest_revision_holds_every_paced_drain() {
        let mut ctl = drained_with_flows();
        // The revision of the drain turns out damaged: what is in force is not known.
        let node = ctl.node_mut();
        let newest = node.revisions.pop().unwrap();
        node.unusable.push(Unusable {
            number: newest.number,
            path: "/var/lib/veer/revisions/000003.json".into(),
            problem: Problem::Damaged {
                error: "EOF while parsing an object at line 40 column 3".into(),
            },
        });
        // Keep a usable revision that still names the drain: held, it must not run either.
        node.revisions.last_mut().unwrap().drains = newest.drains.clone();
        let mut ctl = restarted(ctl);
        assert!(ctl.is_held());
        for s in [11, 20, 100, 3_600] {
            ctl.drain_tick(at(s)).unwrap();
        }
        assert!(ctl.node().ended.is_empty(), "no flow ended while held");
    }

    #[test]
    fn a_drain_deadline_of_zero_or_past_a_week_is_refused_and_changes_nothing() {
        let mut ctl = controller(dual_stack());
        ctl.execute(&shift(&["web"], &[("v2", "100")]), at(0))
            .unwrap();
        let before = ctl.head();
        for (deadline, message) in [
            (
                Duration::ZERO,
                "drain deadline 0s is shorter than the 1s minimum",
            ),
            (
                Duration::from_hours(24 * 7 + 1),
                "drain deadline 7days 1h is longer than the 7days maximum",
            ),
            (
                Duration::from_secs(u64::MAX),
                "drain deadline 584542046090years 7months 15days 17h 5m 3s is longer than the 7days maximum",
            ),
        ] {
            let e = ctl
                .execute(
                    &Request::Drain {
                        service: "web".into(),
                        group: "v1".into(),
                        force: false,
                        end: Some(DrainEnd {
                            deadline,
                            pace: Pace::per_second(10),
                        }),
                    },
                    at(1),
                )
                .unwrap_err();
            assert_eq!(e.to_string(), message);
        }
        assert_eq!(ctl.head(), before);
    }

    #[test]
    fn a_revision_with_a_foreign_drain_cannot_be_read() {
        let ctl = drained_with_flows();
        let revision = ctl.node().revisions.last().unwrap().clone();
        let mut json = serde_json::to_value(&revision).unwrap();
        assert_eq!(json["drains"][0]["ends_from"], "1970-01-12T13:46:50.002Z");
        assert_eq!(
            serde_json::from_value::<Revision>(json.clone()).unwrap(),
            revision
        );
        for (field, value) in [
            ("pace", serde_json::json!("0/s")),
            ("pace", serde_json::json!(50)),
            ("ends_from", serde_json::json!("soon")),
            ("ends_from", serde_json::json!(12)),
            ("surprise", serde_json::json!(true)),
        ] {
            let mut bad = json.clone();
            bad["drains"][0][field] = value.clone();
            assert!(
                serde_json::from_value::<Revision>(bad).is_err(),
                "{field} = {value} was read"
            );
        }
        json["drains"][0].as_object_mut().unwrap().remove("pace");
        assert!(serde_json::from_value::<Revision>(json).is_err());
    }
}

mod operator;
