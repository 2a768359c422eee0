//! `veer rollout start|status|pause|resume|abort SERVICE`.

use std::{
    io::{IsTerminal as _, Write as _},
    time::Duration,
};

use super::{Global, block_on, exit::Failure, output, status};
use crate::{
    api::protocol::{ApplyResponse, RolloutStartRequest, RolloutStatus, Status},
    model::{
        OnFailure, Plan, Weight,
        drain::{DrainEnd, Pace},
        gate::Gate,
        tolerance::{Percent, Tolerances},
    },
    rollout::{
        Phase,
        canary::StepVerdict,
        judge::{self, Outcome},
    },
};

/// How often `--wait` looks.
const POLL: Duration = Duration::from_millis(250);

/// `veer rollout ...`.
#[derive(Debug, clap::Subcommand)]
pub(super) enum Args {
    /// Start moving SERVICE's new flows to a group in steps, watching each step.
    Start(StartArgs),
    /// Show the service's latest rollout.
    Status(ServiceArg),
    /// Hold at the current step.
    Pause(ServiceArg),
    /// Continue a paused rollout (the current step is watched afresh).
    Resume(ServiceArg),
    /// Stop and restore the weights from before the rollout.
    Abort(ServiceArg),
}

/// A service name.
#[derive(Debug, clap::Args)]
pub(super) struct ServiceArg {
    /// Name of the service.
    service: String,
}

/// What a failed gate does.
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
enum FailureMode {
    /// Restore the pre-rollout weights at once.
    Rollback,
    /// Go back one step and pause there.
    StepBack,
}

/// `veer rollout start`.
#[derive(Debug, clap::Args)]
pub(super) struct StartArgs {
    /// Name of the service.
    service: String,
    /// Group that ends with all new flows.
    #[arg(long)]
    to: String,
    /// The group's share (percent) at each step, ending at 100.
    #[arg(long, value_delimiter = ',', default_values_t = Plan::DEFAULT_STEPS.map(|s| s.to_string()))]
    steps: Vec<String>,
    /// How long each step is watched.
    #[arg(long, default_value_t = Plan::DEFAULT_PAUSE.into())]
    pause: humantime::Duration,
    /// Largest failed/attempted share of the group's new flows in a step (e.g. 1%).
    #[arg(long, default_value_t = format!("{}%", Plan::DEFAULT_MAX_FAILURE_RATE))]
    max_failure_rate: String,
    /// New flows a step needs before it is judged and may end.
    #[arg(long, default_value_t = Plan::DEFAULT_MIN_FLOWS)]
    min_flows: u64,
    /// Extra gate checked at the end of each step: `exec:CMD`, `http://URL`, or
    /// `prometheus:BASE_URL QUERY OP NUMBER` (repeat for several).
    #[arg(long = "gate")]
    gates: Vec<String>,
    /// How long one gate may take.
    #[arg(long, default_value_t = Plan::DEFAULT_GATE_TIMEOUT.into())]
    gate_timeout: humantime::Duration,
    /// What a breach does.
    #[arg(long, value_enum, default_value_t = FailureMode::Rollback)]
    on_failure: FailureMode,
    /// After a daemon restart, hold (paused) instead of resuming.
    #[arg(long)]
    hold_on_restart: bool,
    /// Judge every step that still has a baseline against the other groups (the canary judge;
    /// implied by any of the judge's options below).
    #[arg(long)]
    judge: bool,
    /// Judge: largest increase of the canary's p50 and p99 latency over the baseline's (e.g.
    /// 20%).
    #[arg(long, value_parser = Percent::parse)]
    max_latency_increase: Option<Percent>,
    /// Judge: largest increase of the canary's failure odds over the baseline's (e.g. 25%).
    #[arg(long, value_parser = Percent::parse)]
    max_failure_increase: Option<Percent>,
    /// Judge: confidence needed to fail a canary (e.g. 95%).
    #[arg(long, value_parser = Percent::parse)]
    confidence: Option<Percent>,
    /// Judge: samples each group needs of a signal before it is judged.
    #[arg(long)]
    min_sample: Option<u64>,
    /// Once the rollout completes, end the flows still on the groups it took to 0 after this
    /// long (a reset to both ends), at --drain-pace.
    #[arg(long, value_parser = humantime::parse_duration)]
    drain_deadline: Option<Duration>,
    /// How fast those flows are ended (e.g. 50/s).
    #[arg(long, requires = "drain_deadline", default_value = "50/s")]
    drain_pace: Pace,
    /// Follow the rollout to its end: exit 0 when it completes, 1 when it is rolled back or
    /// aborted.
    #[arg(long)]
    wait: bool,
}

fn percent(flag: &str, text: &str) -> Result<Weight, Failure> {
    Weight::from_percent_str(text.trim_end_matches('%'))
        .map_err(|e| Failure::usage(format!("--{flag} {text}: {e}")))
}

/// Runs `veer rollout ...`.
pub(super) fn run(args: &Args, g: &Global) -> Result<(), Failure> {
    let client = g.client();
    let post = |path: String, what: String| -> Result<(), Failure> {
        let r: ApplyResponse = block_on(client.post(&path, &serde_json::json!({})))?
            .map_err(|e| output::client_failure(&e))?;
        output::applied(g.output, &r, &what)
    };
    match args {
        Args::Start(a) => start(a, g),
        Args::Status(s) => {
            let r = fetch(g, &s.service)?;
            output::print(g.output, &r, || {
                let mut text = line(&r, None);
                if let Some(v) = &r.verdict {
                    text.push('\n');
                    text.push_str(&verdict_text(v));
                }
                text
            })
        }
        Args::Pause(s) => post(
            format!("/v1/rollouts/{}/pause", status::encode(&s.service)),
            format!("rollout {} paused", s.service),
        ),
        Args::Resume(s) => post(
            format!("/v1/rollouts/{}/resume", status::encode(&s.service)),
            format!("rollout {} resumed", s.service),
        ),
        Args::Abort(s) => post(
            format!("/v1/rollouts/{}/abort", status::encode(&s.service)),
            format!("rollout {} aborted", s.service),
        ),
    }
}

fn start(a: &StartArgs, g: &Global) -> Result<(), Failure> {
    let plan = Plan {
        to: a.to.clone(),
        steps: a
            .steps
            .iter()
            .map(|s| percent("steps", s))
            .collect::<Result<_, _>>()?,
        pause: a.pause.into(),
        max_failure_rate: percent("max-failure-rate", &a.max_failure_rate)?,
        min_flows: a.min_flows,
        gates: a
            .gates
            .iter()
            .map(|s| s.parse::<Gate>())
            .collect::<Result<_, _>>()
            .map_err(|e| Failure::usage(e.to_string()))?,
        gate_timeout: a.gate_timeout.into(),
        on_failure: match a.on_failure {
            FailureMode::Rollback => OnFailure::Rollback,
            FailureMode::StepBack => OnFailure::StepBack,
        },
        hold_on_restart: a.hold_on_restart,
        judge: tolerances(a),
        drain: a.drain_deadline.map(|deadline| DrainEnd {
            deadline,
            pace: a.drain_pace,
        }),
    };
    let req = RolloutStartRequest {
        service: a.service.clone(),
        plan,
    };
    let r: ApplyResponse =
        block_on(g.client().post("/v1/rollouts", &req))?.map_err(|e| output::client_failure(&e))?;
    if !a.wait {
        return output::applied(
            g.output,
            &r,
            &format!("rollout {} -> {} started", a.service, a.to),
        );
    }
    follow(&a.service, g)
}

/// The judge's tolerances the options ask for: none unless `--judge` or one of its options.
fn tolerances(a: &StartArgs) -> Option<Tolerances> {
    let any = a.judge
        || a.max_latency_increase.is_some()
        || a.max_failure_increase.is_some()
        || a.confidence.is_some()
        || a.min_sample.is_some();
    any.then(|| {
        let d = Tolerances::DEFAULT;
        Tolerances {
            max_latency_increase: a.max_latency_increase.unwrap_or(d.max_latency_increase),
            max_failure_increase: a.max_failure_increase.unwrap_or(d.max_failure_increase),
            confidence: a.confidence.unwrap_or(d.confidence),
            min_sample: a.min_sample.unwrap_or(d.min_sample),
        }
    })
}

fn fetch(g: &Global, service: &str) -> Result<RolloutStatus, Failure> {
    block_on(
        g.client()
            .get(&format!("/v1/rollouts/{}", status::encode(service))),
    )?
    .map_err(|e| output::client_failure(&e))
}

/// The canary judge's verdict: a headline with its reason, and a table of the checks (canary,
/// baseline, statistic, threshold, outcome).
fn verdict_text(v: &StepVerdict) -> String {
    let outcome = match v.verdict.outcome {
        Outcome::Pass => "pass",
        Outcome::Fail => "fail",
        Outcome::NotEnoughData => "not enough data",
    };
    let when = if v.at_end {
        "at the end of its pause"
    } else {
        "during it"
    };
    let mut rows = vec![[
        "check".to_owned(),
        "canary".to_owned(),
        "baseline".to_owned(),
        "statistic".to_owned(),
        "threshold".to_owned(),
        "outcome".to_owned(),
    ]];
    rows.extend(judge::rows(&v.verdict));
    let mut widths = [0usize; 6];
    for r in &rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let mut out = format!(
        "judge: {outcome} at step {} (look {}, {when}, {} confidence): {}",
        v.step, v.verdict.look, v.verdict.confidence, v.verdict.reason
    );
    for r in &rows {
        out.push_str("\n ");
        for (w, c) in widths.iter().zip(r) {
            let pad = w.saturating_sub(c.chars().count());
            out.push_str("  ");
            out.push_str(c);
            out.push_str(&" ".repeat(pad));
        }
        let trimmed = out.trim_end().len();
        out.truncate(trimmed);
    }
    out
}

/// One progress line: step, weights, flows and failures of each group, what the step waits for.
fn line(r: &RolloutStatus, s: Option<&Status>) -> String {
    let groups: Vec<String> = r
        .weights
        .iter()
        .map(|(name, w)| {
            let flows = s
                .and_then(|s| s.services.iter().find(|x| x.name == r.service))
                .and_then(|svc| svc.groups.iter().find(|x| &x.name == name))
                .map(|grp| {
                    let failed: u64 = grp.backends.iter().map(|b| b.failed_flows).sum();
                    format!(" flows {} failed {failed}", grp.active_flows)
                })
                .unwrap_or_default();
            format!("{name} {w}%{flows}")
        })
        .collect();
    let phase = match r.phase {
        Phase::Running => r.waiting.clone().unwrap_or_else(|| "stepping".to_owned()),
        Phase::Paused => format!("paused: {}", r.reason.as_deref().unwrap_or("")),
        Phase::Completed => "completed".to_owned(),
        Phase::RolledBack => format!("rolled back: {}", r.reason.as_deref().unwrap_or("")),
        Phase::Aborted => "aborted".to_owned(),
    };
    format!(
        "rollout {} -> {}: step {}/{} ({}%) | {} | step: {} new, {} failed | {phase}",
        r.service,
        r.to,
        r.step,
        r.steps.len(),
        r.share,
        groups.join(" | "),
        r.in_step.attempted,
        r.in_step.failed
    )
}

/// Follows a rollout to its end.
fn follow(service: &str, g: &Global) -> Result<(), Failure> {
    let tty = std::io::stdout().is_terminal() && g.output == output::Format::Human;
    let mut last = String::new();
    loop {
        let r = fetch(g, service)?;
        let s: Option<Status> = status::fetch(g, Some(service)).ok();
        let text = line(&r, s.as_ref());
        if tty {
            print!("\r\x1b[2K{text}");
            // A progress line that fails to flush shows at the next one.
            drop(std::io::stdout().flush());
        } else if g.output == output::Format::Human {
            // One line per change of step or phase, not per poll.
            let key = format!("{}{:?}", r.step, r.phase);
            if key != last {
                println!("{text}");
                last = key;
            }
        }
        match r.phase {
            Phase::Completed => {
                if tty {
                    println!();
                }
                return output::print(g.output, &r, || {
                    r.verdict.as_ref().map(verdict_text).unwrap_or_default()
                });
            }
            Phase::RolledBack | Phase::Aborted => {
                if tty {
                    println!();
                }
                output::print(g.output, &r, || {
                    r.verdict.as_ref().map(verdict_text).unwrap_or_default()
                })?;
                let why = r.reason.clone().unwrap_or_default();
                return Err(Failure::error(&std::io::Error::other(format!(
                    "rollout {} -> {} {}: {why}",
                    r.service,
                    r.to,
                    if r.phase == Phase::Aborted {
                        "was aborted"
                    } else {
                        "rolled back"
                    }
                ))));
            }
            Phase::Running | Phase::Paused => std::thread::sleep(POLL),
        }
    }
}
