//! `veer fleet rollout start|status|pause|resume|abort SERVICE`: rollouts across the fleet, in
//! waves of nodes. `start` plans the waves from the nodes' statuses and writes the plan and its
//! progress; the daemon elected to drive fleet rollouts advances them, and each node of a wave
//! that started runs the per-node plan (the options of `veer rollout start`). `pause`, `resume`
//! and `abort` change the progress (compare-and-swap, retried on conflicts with the driver).

use std::{
    collections::BTreeMap,
    fmt::Write as _,
    io::{IsTerminal as _, Write as _},
    time::{Duration, SystemTime},
};

use serde::Serialize;

use super::{super::block_on, EtcdArgs, status::part};
use crate::{
    cli::{Global, examples, exit::Failure, output, rollout as local},
    config,
    fleet::{
        self, DEFAULT_WAVES, Directive, ExcludeReason, FleetRollout, FleetState, MissingNode,
        NodeName, NodeRollout, NodeStatus, Progress, StartRequest, WaveSpec,
    },
    model::OnFailure,
    sources::etcd::{CasWrite, EtcdError, Expect, Fleet, UpdateError},
};

/// How often `--wait` looks.
const POLL: Duration = Duration::from_millis(500);
/// Reads and writes of one change of the progress before it gives up.
const ATTEMPTS: u32 = 20;

/// `veer fleet rollout ...`.
#[derive(Debug, clap::Subcommand)]
#[expect(
    clippy::large_enum_variant,
    reason = "parsed once per command; boxing would only complicate clap's derive"
)]
pub(in crate::cli) enum Args {
    /// Start a rollout of SERVICE to a group across the fleet, in waves of nodes.
    #[command(after_help = examples::FLEET_ROLLOUT_START)]
    Start(FleetStartArgs),
    /// Show a fleet rollout: its waves and every node's part.
    #[command(after_help = examples::FLEET_ROLLOUT_STATUS)]
    Status(ServiceArgs),
    /// Hold: no wave starts, nodes hold their steps.
    #[command(after_help = examples::FLEET_ROLLOUT_PAUSE)]
    Pause(ReasonArgs),
    /// Continue a paused fleet rollout.
    #[command(after_help = examples::FLEET_ROLLOUT_RESUME)]
    Resume(ServiceArgs),
    /// Stop: every node that started restores its weights from before the rollout.
    #[command(after_help = examples::FLEET_ROLLOUT_ABORT)]
    Abort(ReasonArgs),
}

/// What happens to a node of a started wave that stops reporting.
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
enum MissingArg {
    /// Roll the whole fleet back (gate `node_missing`).
    RollBack,
    /// Leave it out and go on; it restores its weights when it comes back.
    Skip,
}

/// `veer fleet rollout start`.
#[derive(Debug, clap::Args)]
pub(in crate::cli) struct FleetStartArgs {
    #[command(flatten)]
    node: local::StartArgs,
    /// How many nodes have been reached once each wave starts: a number or a share of the
    /// fleet (rounded up), ending at 100%; the first wave is the canary.
    #[arg(long, default_value = DEFAULT_WAVES)]
    waves: String,
    /// The canary node (default: the first by name).
    #[arg(long, value_name = "NODE")]
    canary: Option<String>,
    /// How long a node of a started wave that does not report is waited for.
    #[arg(long, default_value = "5m")]
    node_timeout: humantime::Duration,
    /// What happens to such a node then.
    #[arg(long, value_enum, default_value_t = MissingArg::RollBack)]
    on_missing_node: MissingArg,
    #[command(flatten)]
    etcd: EtcdArgs,
}

/// A service name.
#[derive(Debug, clap::Args)]
pub(in crate::cli) struct ServiceArgs {
    /// Name of the service.
    service: String,
    #[command(flatten)]
    etcd: EtcdArgs,
}

/// A service name and why.
#[derive(Debug, clap::Args)]
pub(in crate::cli) struct ReasonArgs {
    /// Name of the service.
    service: String,
    /// Why (recorded in the progress, shown by status).
    #[arg(long, default_value = "by an operator")]
    reason: String,
    #[command(flatten)]
    etcd: EtcdArgs,
}

/// A node's part, in `status`.
#[derive(Debug, Serialize)]
struct NodeRow {
    node: String,
    /// 1-based wave.
    wave: usize,
    /// `waiting` (its wave has not started), `not_reporting` (no status, or not this
    /// rollout), `skipped`, or the node's own phase (`running`, `completed`, ...).
    state: String,
    /// Its part as it reports it.
    rollout: Option<NodeRollout>,
}

/// `status` in `--output json`.
#[derive(Debug, Serialize)]
struct Shown {
    plan: FleetRollout,
    progress: Progress,
    nodes: Vec<NodeRow>,
}

/// A failure from an etcd error.
fn etcd(e: &EtcdError) -> Failure {
    Failure::of("etcd", e)
}

fn other(message: String) -> Failure {
    Failure::error(&std::io::Error::other(message))
}

/// The rollout of `service`: its plan and progress with their mod revisions.
async fn read(
    fleet: &Fleet,
    service: &str,
) -> Result<(Option<(FleetRollout, i64)>, Option<(Progress, i64)>), Failure> {
    let r = fleet.rollout(service).await.map_err(|e| etcd(&e))?;
    Ok((r.plan, r.progress))
}

/// Every node's part in `plan`, from their statuses.
fn nodes(
    plan: &FleetRollout,
    progress: &Progress,
    statuses: &BTreeMap<NodeName, NodeStatus>,
) -> Vec<NodeRow> {
    let mut out = Vec::new();
    for (i, wave) in plan.waves.iter().enumerate() {
        for n in wave {
            let reported = statuses
                .get(n)
                .and_then(|s| s.service(&plan.service))
                .and_then(|s| s.rollout.clone())
                .filter(|r| r.fleet_id.as_deref() == Some(plan.id.as_str()));
            let state = if progress.is_skipped(n) {
                "skipped".to_owned()
            } else if let Some(r) = &reported {
                serde_json::to_value(r.phase)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_owned))
                    .unwrap_or_default()
            } else if matches!(
                fleet::directive(plan, progress, n),
                Directive::Waiting { .. }
            ) {
                "waiting".to_owned()
            } else {
                "not_reporting".to_owned()
            };
            out.push(NodeRow {
                node: n.to_string(),
                wave: i + 1,
                state,
                rollout: reported,
            });
        }
    }
    out
}

/// `running, wave 2/3` and the like.
fn state_text(plan: &FleetRollout, progress: &Progress) -> String {
    let wave = format!("wave {}/{}", progress.wave + 1, plan.waves.len());
    match &progress.state {
        FleetState::Running => format!("running, {wave}"),
        FleetState::Paused { reason } => format!("PAUSED at {wave}: {reason}"),
        FleetState::Completed => "completed".to_owned(),
        FleetState::RolledBack { node, gate, reason } => {
            format!("ROLLED BACK at {wave}: node {node}, gate {gate}: {reason}")
        }
        FleetState::Aborted { reason } => format!("ABORTED at {wave}: {reason}"),
    }
}

fn human(s: &Shown) -> String {
    let p = &s.plan;
    let mut out = format!(
        "fleet rollout {} ({} -> {}, waves {}): {}\n",
        p.id,
        p.service,
        p.to,
        p.spec,
        state_text(p, &s.progress)
    );
    let rows: Vec<Vec<String>> = s
        .nodes
        .iter()
        .map(|n| {
            vec![
                n.node.clone(),
                n.wave.to_string(),
                n.rollout
                    .as_ref()
                    .map_or_else(|| n.state.clone(), |r| part(&p.service, r)),
                n.rollout
                    .as_ref()
                    .and_then(|r| {
                        Some(match (&r.gate, &r.reason) {
                            (Some(g), Some(why)) => format!("{g}: {why}"),
                            (None, Some(why)) => why.clone(),
                            (Some(g), None) => g.clone(),
                            (None, None) => return None,
                        })
                    })
                    .unwrap_or_default(),
            ]
        })
        .collect();
    out.push_str(&output::table(&["NODE", "WAVE", "PART", "WHY"], &rows));
    out.push('\n');
    for e in &p.excluded {
        let _ = writeln!(out, "excluded: {} ({})", e.node, why_excluded(&e.reason));
    }
    for sk in &s.progress.skipped {
        let _ = writeln!(
            out,
            "skipped: {} in wave {}: {}",
            sk.node,
            sk.wave + 1,
            sk.reason
        );
    }
    out
}

/// Why a node does not take part, in words.
fn why_excluded(reason: &ExcludeReason) -> String {
    match reason {
        ExcludeReason::NotReady => "not synced with etcd".to_owned(),
        ExcludeReason::NoService => "its config has no such service".to_owned(),
        ExcludeReason::NoTarget => "no such group, or a group without backends".to_owned(),
        ExcludeReason::Busy { to } => format!("runs another rollout of the service, to {to}"),
    }
}

/// Reads a rollout and every node's part.
async fn show(fleet: &Fleet, service: &str) -> Result<Shown, Failure> {
    let (plan, progress) = read(fleet, service).await?;
    let (Some((plan, _)), Some((progress, _))) = (plan, progress) else {
        return Err(other(format!(
            "no fleet rollout of {service} under {}",
            fleet.layout().prefix()
        )));
    };
    let statuses = fleet.statuses().await.map_err(|e| etcd(&e))?;
    Ok(Shown {
        nodes: nodes(&plan, &progress, &statuses.nodes),
        plan,
        progress,
    })
}

/// Starts a fleet rollout.
fn start(a: &FleetStartArgs, g: &Global) -> Result<(), Failure> {
    let node_plan = local::plan(&a.node)?;
    if node_plan.on_failure == OnFailure::StepBack {
        return Err(Failure::usage(
            "--on-failure step-back is for a rollout of one node; a breach in a fleet rollout rolls the whole fleet back".to_owned(),
        ));
    }
    let spec: WaveSpec = a
        .waves
        .parse()
        .map_err(|e: fleet::WavesError| Failure::usage(e.to_string()))?;
    let canary = a
        .canary
        .as_deref()
        .map(NodeName::new)
        .transpose()
        .map_err(|e| Failure::usage(format!("--canary: {e}")))?;
    let service = a.node.service.as_str();
    let fleet = a.etcd.connect()?;
    block_on(async {
        let shown = begin(a, &fleet, service, node_plan, spec, canary).await?;
        if a.node.wait {
            if g.output == output::Format::Human {
                println!("{}", started(&shown.plan));
            }
            return follow(&fleet, service, g).await;
        }
        output::print(g.output, &shown, || started(&shown.plan))
    })?
}

/// Plans the rollout from the nodes' statuses and writes its plan and progress.
async fn begin(
    a: &FleetStartArgs,
    fleet: &Fleet,
    service: &str,
    node_plan: crate::model::Plan,
    spec: WaveSpec,
    canary: Option<NodeName>,
) -> Result<Shown, Failure> {
    {
        let config = fleet.config().await.map_err(|e| etcd(&e))?;
        let Some(doc) = config.doc else {
            return Err(other(format!(
                "{} does not exist: put the fleet's services there first (veer apply --fleet -f FILE)",
                fleet.layout().config()
            )));
        };
        let text = doc.text().map_err(|e| Failure::error(&e))?;
        let state = config::parse_fleet(&doc.key, text).map_err(|e| Failure::error(&e))?;
        let svc = state.service(service).ok_or_else(|| {
            other(format!(
                "the fleet's config ({}) has no service `{service}`",
                doc.key
            ))
        })?;
        node_plan.validate(svc).map_err(|e| Failure::error(&e))?;
        let (old_plan, old_progress) = read(fleet, service).await?;
        if let Some((p, _)) = &old_progress
            && !p.state.is_final()
        {
            return Err(other(format!(
                "fleet rollout {} of {service} is {}; abort it first (veer fleet rollout abort {service})",
                p.id,
                if matches!(p.state, FleetState::Paused { .. }) {
                    "paused"
                } else {
                    "running"
                }
            )));
        }
        let statuses = fleet.statuses().await.map_err(|e| etcd(&e))?;
        let (plan, progress) = fleet::start(
            StartRequest {
                service,
                to: &a.node.to,
                spec,
                canary: canary.as_ref(),
                node_plan,
                missing: match a.on_missing_node {
                    MissingArg::RollBack => MissingNode::RollBack,
                    MissingArg::Skip => MissingNode::Skip,
                },
                node_timeout: a.node_timeout.into(),
            },
            statuses.nodes.values(),
            SystemTime::now(),
        )
        .map_err(|e| Failure::error(&e))?;
        let layout = fleet.layout();
        let expect = |old: Option<i64>| old.map_or(Expect::Absent, Expect::ModRevision);
        fleet
            .cas(&[
                CasWrite {
                    key: layout.rollout_plan(service),
                    expect: expect(old_plan.map(|(_, r)| r)),
                    value: Some(plan.to_json()),
                },
                CasWrite {
                    key: layout.rollout_progress(service),
                    expect: expect(old_progress.map(|(_, r)| r)),
                    value: Some(progress.to_json()),
                },
            ])
            .await
            .map_err(|e| match e {
                EtcdError::Conflict { .. } => other(format!(
                    "another fleet rollout of {service} was started meanwhile (veer fleet rollout status {service})"
                )),
                e => etcd(&e),
            })?;
        Ok(Shown {
            nodes: nodes(&plan, &progress, &statuses.nodes),
            plan,
            progress,
        })
    }
}

/// `fleet rollout web-1 started: web -> v2 in 2 waves: [a] [b c]; excluded: d (NotReady)`.
fn started(p: &FleetRollout) -> String {
    let waves: Vec<String> = p
        .waves
        .iter()
        .map(|w| {
            format!(
                "[{}]",
                w.iter().map(NodeName::as_str).collect::<Vec<_>>().join(" ")
            )
        })
        .collect();
    let mut out = format!(
        "fleet rollout {} started: {} -> {} in {} waves: {}",
        p.id,
        p.service,
        p.to,
        p.waves.len(),
        waves.join(" ")
    );
    if !p.excluded.is_empty() {
        let ex: Vec<String> = p
            .excluded
            .iter()
            .map(|e| format!("{} ({})", e.node, why_excluded(&e.reason)))
            .collect();
        let _ = write!(out, "; excluded: {}", ex.join(", "));
    }
    out
}

/// Follows a fleet rollout to its end: exit 0 when it completes, 1 when it is rolled back or
/// aborted.
async fn follow(fleet: &Fleet, service: &str, g: &Global) -> Result<(), Failure> {
    let tty = std::io::stdout().is_terminal() && g.output == output::Format::Human;
    let mut last = String::new();
    loop {
        let s = show(fleet, service).await?;
        if g.output == output::Format::Human {
            let parts: Vec<String> = s
                .nodes
                .iter()
                .map(|n| {
                    format!(
                        "{}: {}",
                        n.node,
                        n.rollout
                            .as_ref()
                            .map_or_else(|| n.state.clone(), |r| part(service, r))
                    )
                })
                .collect();
            let line = format!(
                "{} | {}",
                state_text(&s.plan, &s.progress),
                parts.join(" | ")
            );
            if tty {
                print!("\r\x1b[2K{line}");
                drop(std::io::stdout().flush());
            } else if line != last {
                println!("{line}");
            }
            last = line;
        }
        match &s.progress.state {
            FleetState::Completed => {
                if tty {
                    println!();
                }
                return output::print(g.output, &s, String::new);
            }
            FleetState::RolledBack { .. } | FleetState::Aborted { .. } => {
                if tty {
                    println!();
                }
                output::print(g.output, &s, String::new)?;
                return Err(other(format!(
                    "fleet rollout {}: {}",
                    s.plan.id,
                    state_text(&s.plan, &s.progress)
                )));
            }
            FleetState::Running | FleetState::Paused { .. } => tokio::time::sleep(POLL).await,
        }
    }
}

/// What an operator's change of the progress found.
enum Found {
    /// Written.
    Changed,
    /// Already so.
    Already,
    /// Nothing to act on (a rollout that is over), with a note.
    Over(String),
}

/// Why the progress could not be changed.
#[derive(Debug, thiserror::Error)]
enum Refused {
    #[error("no fleet rollout of {0}")]
    None(String),
    #[error("the fleet rollout of {service} is {state}: there is nothing to {verb}")]
    Over {
        service: String,
        state: String,
        verb: &'static str,
    },
    #[error("{0}")]
    Unreadable(String),
}

/// Pause, resume or abort: a compare-and-swap on the progress, retried on conflicts.
fn change(
    a_service: &str,
    etcd_args: &EtcdArgs,
    verb: &'static str,
    edit: impl Fn(&mut Progress) -> Result<bool, Refused>,
    g: &Global,
) -> Result<(), Failure> {
    let fleet = etcd_args.connect()?;
    let key = fleet.layout().rollout_progress(a_service);
    let mut found = Found::Already;
    let updated = block_on(fleet.update(&key, ATTEMPTS, |doc| {
        let Some(doc) = doc else {
            return Err(Refused::None(a_service.to_owned()));
        };
        let mut p = Progress::from_json(&doc.value)
            .map_err(|e| Refused::Unreadable(format!("{key} is unreadable: {e}")))?;
        match edit(&mut p) {
            Ok(true) => {
                p.driver = None;
                p.updated = fleet::whole_millis(SystemTime::now());
                found = Found::Changed;
                Ok(Some(p.to_json()))
            }
            Ok(false) => {
                found = Found::Already;
                Ok(None)
            }
            Err(Refused::Over { state, .. }) if verb == "abort" => {
                found = Found::Over(format!(
                    "fleet rollout of {a_service}: nothing to abort (it is {state})"
                ));
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }))?
    .map_err(|e| match e {
        UpdateError::Edit(inner) => other(inner.to_string()),
        e => Failure::error(&e),
    })?;
    let note = match &found {
        Found::Over(n) => Some(n.clone()),
        _ => None,
    };
    let json = serde_json::json!({
        "key": key,
        "mod_revision": updated.mod_revision,
        "changed": updated.changed,
        "note": note,
    });
    output::print(g.output, &json, || match found {
        Found::Changed => format!(
            "fleet rollout of {a_service}: {verb} written ({key} mod revision {})",
            updated.mod_revision
        ),
        Found::Already => format!("fleet rollout of {a_service}: already so, no change"),
        Found::Over(n) => n,
    })
}

fn final_word(state: &FleetState) -> String {
    match state {
        FleetState::Completed => "completed".to_owned(),
        FleetState::RolledBack { .. } => "rolled back".to_owned(),
        FleetState::Aborted { .. } => "aborted".to_owned(),
        FleetState::Running => "running".to_owned(),
        FleetState::Paused { .. } => "paused".to_owned(),
    }
}

/// Runs `veer fleet rollout ...`.
pub(super) fn run(args: &Args, g: &Global) -> Result<(), Failure> {
    match args {
        Args::Start(a) => start(a, g),
        Args::Status(a) => {
            let fleet = a.etcd.connect()?;
            let s = block_on(show(&fleet, &a.service))??;
            output::print(g.output, &s, || human(&s))
        }
        Args::Pause(a) => change(
            &a.service,
            &a.etcd,
            "pause",
            |p| match &p.state {
                FleetState::Running => {
                    p.state = FleetState::Paused {
                        reason: a.reason.clone(),
                    };
                    Ok(true)
                }
                FleetState::Paused { .. } => Ok(false),
                s => Err(Refused::Over {
                    service: a.service.clone(),
                    state: final_word(s),
                    verb: "pause",
                }),
            },
            g,
        ),
        Args::Resume(a) => change(
            &a.service,
            &a.etcd,
            "resume",
            |p| match &p.state {
                FleetState::Paused { .. } => {
                    p.state = FleetState::Running;
                    Ok(true)
                }
                FleetState::Running => Ok(false),
                s => Err(Refused::Over {
                    service: a.service.clone(),
                    state: final_word(s),
                    verb: "resume",
                }),
            },
            g,
        ),
        Args::Abort(a) => change(
            &a.service,
            &a.etcd,
            "abort",
            |p| match &p.state {
                FleetState::Running | FleetState::Paused { .. } => {
                    p.state = FleetState::Aborted {
                        reason: a.reason.clone(),
                    };
                    Ok(true)
                }
                s => Err(Refused::Over {
                    service: a.service.clone(),
                    state: final_word(s),
                    verb: "abort",
                }),
            },
            g,
        ),
    }
}
