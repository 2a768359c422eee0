//! The control core's operator requests without root: promote, retry, dry runs, who made each
//! revision and why, and the live view's steps and groups.

use super::*;
use crate::{
    control::views::StepState,
    rollout::StepOutcome,
    state::{Audit, Author},
};

fn start(ctl: &mut Controller<FakeNode>, p: Plan) {
    let start = Request::RolloutStart {
        service: "web".into(),
        plan: p,
    };
    ctl.execute(&start, at(0)).unwrap();
}

/// Sets the counters of `web`'s backend of `group` at `addr`: `new_flows` attempts, `failed`
/// of them refused.
fn counts(ctl: &mut Controller<FakeNode>, group: &str, addr: &str, new_flows: u64, failed: u64) {
    let id = ctl.node_mut().ids.backends[&(
        "web".to_owned(),
        group.to_owned(),
        addr.parse::<SocketAddr>().unwrap(),
    )];
    ctl.node_mut().counters.insert(
        id,
        BackendCounters {
            new_flows,
            // Judged attempts are those the backend answered or refused.
            answered_flows: new_flows.saturating_sub(failed),
            refused_flows: failed,
            ..BackendCounters::default()
        },
    );
}

fn v2(ctl: &mut Controller<FakeNode>, new_flows: u64, failed: u64) {
    counts(ctl, "v2", "198.51.100.21:8080", new_flows, failed);
}

fn promote(full: bool) -> Request {
    Request::RolloutPromote {
        service: "web".into(),
        full,
    }
}

fn retry() -> Request {
    Request::RolloutRetry {
        service: "web".into(),
    }
}

#[test]
fn a_promotion_skips_the_pause_but_the_step_still_needs_its_flows() {
    let mut ctl = controller(dual_stack());
    start(&mut ctl, plan(&["10", "50", "100"]));
    changed(&ctl.execute(&promote(false), at(1)).unwrap(), 3);
    assert!(ctl.head().rollouts[0].pause_skipped);
    let again = ctl.execute(&promote(false), at(1)).unwrap();
    assert!(!again.changed, "promoting a promoted step changes nothing");
    assert!(again.note.unwrap().contains("already promoted"));
    v2(&mut ctl, 5, 0);
    ctl.rollout_tick(at(2)).unwrap();
    assert_eq!(ctl.head().rollouts[0].step, 0, "5 of 20 new flows: not yet");
    v2(&mut ctl, 25, 0);
    ctl.rollout_tick(at(3)).unwrap();
    let r = &ctl.head().rollouts[0];
    assert_eq!(r.step, 1, "ended before its 10 s pause");
    assert!(!r.pause_skipped, "the next step has its pause");
    assert_eq!(weights(&ctl, "web"), pair("50", "50"));
    assert_eq!(r.history.len(), 1);
    assert_eq!(r.history[0].outcome, StepOutcome::Passed);
    assert_eq!(r.history[0].counts.attempted, 25);
}

#[test]
fn a_full_promotion_goes_to_100_and_the_last_step_gates_still_decide() {
    let mut ctl = controller(dual_stack());
    let mut p = plan(&["10", "50", "100"]);
    p.gates = vec!["exec:true".parse().unwrap()];
    start(&mut ctl, p);
    changed(&ctl.execute(&promote(true), at(1)).unwrap(), 3);
    assert_eq!(weights(&ctl, "web"), pair("0", "100"), "at once");
    let r = &ctl.head().rollouts[0];
    assert_eq!((r.step, r.phase), (2, Phase::Running));
    assert_eq!(
        r.history.iter().map(|h| h.outcome).collect::<Vec<_>>(),
        [StepOutcome::Skipped, StepOutcome::Skipped]
    );
    let again = ctl.execute(&promote(true), at(1)).unwrap();
    assert!(!again.changed && again.note.unwrap().contains("at its last step"));
    v2(&mut ctl, 30, 0);
    let jobs = ctl.rollout_tick(at(2)).unwrap();
    assert_eq!(jobs.len(), 1, "the last step's gates are checked");
    assert_eq!(ctl.head().rollouts[0].phase, Phase::Running);
    ctl.gate_result(
        jobs[0].key.clone(),
        Err(failed("exec:true", "exit status 1")),
    );
    ctl.rollout_tick(at(3)).unwrap();
    assert_eq!(ctl.head().rollouts[0].phase, Phase::RolledBack);
    assert_eq!(
        weights(&ctl, "web"),
        pair("100", "0"),
        "weights from before"
    );
}

#[test]
fn a_paused_rollout_is_resumed_by_a_promotion_and_a_completed_one_needs_none() {
    let mut ctl = controller(dual_stack());
    start(&mut ctl, plan(&["100"]));
    let pause = Request::RolloutPause {
        service: "web".into(),
    };
    ctl.execute(&pause, at(1)).unwrap();
    ctl.execute(&promote(false), at(2)).unwrap();
    let r = &ctl.head().rollouts[0];
    assert_eq!((r.phase, r.pause_skipped), (Phase::Running, true));
    v2(&mut ctl, 20, 0);
    ctl.rollout_tick(at(3)).unwrap();
    assert_eq!(ctl.head().rollouts[0].phase, Phase::Completed);
    let done = ctl.execute(&promote(true), at(4)).unwrap();
    assert!(!done.changed);
    assert!(done.note.unwrap().contains("completed"));
    let none = Request::RolloutPromote {
        service: "web6".into(),
        full: false,
    };
    assert!(matches!(
        ctl.execute(&none, at(4)),
        Err(ControlError::NoRollout { .. })
    ));
}

#[test]
fn a_retry_restarts_a_rolled_back_rollout_with_its_plan() {
    let mut ctl = controller(dual_stack());
    assert!(matches!(
        ctl.execute(&retry(), at(0)),
        Err(ControlError::NoRollout { .. })
    ));
    start(&mut ctl, plan(&["10", "100"]));
    let running = ctl.execute(&retry(), at(1)).unwrap();
    assert!(!running.changed && running.note.unwrap().contains("already running"));
    v2(&mut ctl, 30, 3);
    ctl.rollout_tick(at(1)).unwrap();
    assert_eq!(ctl.head().rollouts[0].phase, Phase::RolledBack);
    assert_eq!(weights(&ctl, "web"), pair("100", "0"));
    let a = ctl.execute(&retry(), at(2)).unwrap();
    assert!(a.changed);
    let r = &ctl.head().rollouts[0];
    assert_eq!((r.phase, r.step), (Phase::Running, 0));
    assert_eq!(r.plan, plan(&["10", "100"]), "the same plan");
    assert_eq!(
        r.baseline.attempted, 30,
        "failures before the retry do not count"
    );
    assert_eq!(weights(&ctl, "web"), pair("90", "10"));
    assert!(ctl.history(None)[0].summary.contains("retried"));
    v2(&mut ctl, 60, 3);
    ctl.rollout_tick(at(13)).unwrap();
    v2(&mut ctl, 90, 3);
    ctl.rollout_tick(at(25)).unwrap();
    assert_eq!(ctl.head().rollouts[0].phase, Phase::Completed);
    assert!(matches!(
        ctl.execute(&retry(), at(26)),
        Err(ControlError::NothingToRetry { .. })
    ));
}

#[test]
fn a_dry_run_decides_as_the_change_would_and_changes_nothing() {
    let mut ctl = controller(dual_stack());
    let applies = ctl.node().applied.len();
    let p = ctl
        .preview(&shift(&["web"], &[("v1", "90"), ("v2", "10")]), at(1))
        .unwrap();
    assert_eq!(p.revision, 1);
    assert_eq!(p.summaries, ["shift web: v1=90 v2=10"]);
    assert_eq!(
        p.diff,
        [
            crate::control::diff::Difference::WeightChanged {
                service: "web".into(),
                group: "v1".into(),
                from: w("100"),
                to: w("90"),
            },
            crate::control::diff::Difference::WeightChanged {
                service: "web".into(),
                group: "v2".into(),
                from: w("0"),
                to: w("10"),
            },
        ]
    );
    assert_eq!(
        ctl.node().applied.len(),
        applies,
        "nothing reached the kernel"
    );
    assert_eq!(ctl.node().revisions.len(), 1, "no revision");
    let same = ctl
        .preview(&shift(&["web"], &[("v1", "100")]), at(1))
        .unwrap();
    assert!(same.diff.is_empty() && same.summaries.is_empty());
    assert!(matches!(
        ctl.preview(&shift(&["web"], &[("v9", "1")]), at(1)),
        Err(ControlError::UnknownGroup { .. })
    ));
    // A file whose declared rollout would start shows both revisions and the first step.
    let mut declared = dual_stack();
    declared.services[0].rollout = Some(plan(&["10", "100"]));
    let p = ctl
        .preview(&apply_request(declared, file(), Some("file-2")), at(1))
        .unwrap();
    assert_eq!(p.summaries.len(), 2, "{:?}", p.summaries);
    assert!(p.summaries[1].starts_with("rollout web -> v2 started"));
    assert!(
        p.diff
            .contains(&crate::control::diff::Difference::WeightChanged {
                service: "web".into(),
                group: "v2".into(),
                from: w("0"),
                to: w("10"),
            })
    );
    ctl.execute(&shift(&["web"], &[("v2", "1")]), at(2))
        .unwrap();
    assert_eq!(ctl.head().number, 2);
}

#[test]
fn every_revision_records_who_made_it_and_why() {
    let mut ctl = controller(dual_stack());
    let alice = Audit {
        author: Author::User {
            uid: 1000,
            name: Some("alice".into()),
        },
        reason: Some("ticket 42".into()),
    };
    ctl.execute_by(&shift(&["web"], &[("v2", "10")]), &alice, at(1))
        .unwrap();
    let start = Request::RolloutStart {
        service: "web".into(),
        plan: plan(&["50", "100"]),
    };
    ctl.execute_by(&start, &alice, at(2)).unwrap();
    v2(&mut ctl, 30, 0);
    ctl.rollout_tick(at(13)).unwrap();
    let history = ctl.history(None);
    let authors: Vec<(u64, Author, Option<String>)> = history
        .iter()
        .map(|r| (r.number, r.audit.author.clone(), r.audit.reason.clone()))
        .collect();
    assert_eq!(
        authors,
        [
            (4, Author::Rollout, None),
            (3, alice.author.clone(), alice.reason.clone()),
            (2, alice.author.clone(), alice.reason.clone()),
            (1, Author::ConfigFile, None),
        ]
    );
}

#[test]
fn the_live_view_shows_every_step_and_every_group_in_the_step() {
    let mut ctl = controller(dual_stack());
    counts(&mut ctl, "v1", "198.51.100.11:8080", 1000, 7);
    start(&mut ctl, plan(&["10", "50", "100"]));
    counts(&mut ctl, "v1", "198.51.100.11:8080", 1090, 7);
    v2(&mut ctl, 25, 0);
    ctl.rollout_tick(at(11)).unwrap();
    counts(&mut ctl, "v1", "198.51.100.11:8080", 1100, 9);
    v2(&mut ctl, 35, 0);
    let v = ctl.rollout_status("web", at(16)).unwrap();
    assert_eq!(
        v.steps.iter().map(|s| s.state).collect::<Vec<_>>(),
        [StepState::Done, StepState::Running, StepState::Pending]
    );
    assert_eq!(v.steps[0].duration, Some(Duration::from_secs(11)));
    assert_eq!(v.steps[0].counts.unwrap().attempted, 25);
    assert_eq!(v.steps[1].counts.unwrap().attempted, 10);
    let group = |name: &str| v.groups.iter().find(|g| g.name == name).unwrap();
    let v1 = group("v1").in_step.unwrap();
    assert_eq!(
        (v1.attempted, v1.failed),
        (10, 2),
        "v1 in this step, not its lifetime"
    );
    assert_eq!(group("v2").in_step.unwrap().attempted, 10);
    assert_eq!(group("v1").new_per_second, Some(2.0));
    assert_eq!(v.elapsed, Duration::from_secs(5));
    assert_eq!(v.verdict.counts.attempted, 10);
    assert!(!v.verdict.is_judged(), "10 of 20 new flows: not judged yet");
}
