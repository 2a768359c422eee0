//! `veer rollout start|status|pause|resume|abort|promote|retry SERVICE`, and following a
//! rollout live (`start --wait`, `status --watch`): the redrawn block of `live` on a terminal,
//! one plain line per change otherwise, one JSON object per line with `--output json`.

use std::{
    io::IsTerminal as _,
    time::{Duration, Instant},
};

use super::{
    Global, block_on,
    change::ReasonArg,
    examples,
    exit::Failure,
    live::{self, Screen},
    output, status,
};
use crate::{
    api::protocol::{
        ApplyResponse, ChangeOptions, RolloutActionRequest, RolloutStartRequest, RolloutStatus,
    },
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

/// How long a watch keeps asking a daemon that does not answer (a restart) before it gives up.
const UNREACHABLE_FOR: Duration = Duration::from_secs(30);

/// `veer rollout ...`.
#[derive(Debug, clap::Subcommand)]
#[expect(
    clippy::large_enum_variant,
    reason = "parsed once per command; boxing would only complicate clap's derive"
)]
pub(super) enum Args {
    /// Start moving SERVICE's new flows to a group in steps, watching each step.
    #[command(after_help = examples::ROLLOUT_START)]
    Start(StartArgs),
    /// Show the service's latest rollout; with --watch, follow it live until it ends.
    #[command(after_help = examples::ROLLOUT_STATUS)]
    Status(StatusArgs),
    /// Hold at the current step.
    #[command(after_help = examples::ROLLOUT_PAUSE)]
    Pause(ServiceArg),
    /// Continue a paused rollout (the current step is watched afresh).
    #[command(after_help = examples::ROLLOUT_RESUME)]
    Resume(ServiceArg),
    /// Stop and restore the weights from before the rollout.
    #[command(after_help = examples::ROLLOUT_ABORT)]
    Abort(ServiceArg),
    /// End the current step's pause now, or with --full go straight to 100% (the step still
    /// needs its new flows, and its gates are still checked before the rollout completes).
    #[command(after_help = examples::ROLLOUT_PROMOTE)]
    Promote(PromoteArgs),
    /// Start a rolled-back (or aborted) rollout again with its plan.
    #[command(after_help = examples::ROLLOUT_RETRY)]
    Retry(ServiceArg),
}

/// A service name.
#[derive(Debug, clap::Args)]
pub(super) struct ServiceArg {
    /// Name of the service.
    service: String,
    #[command(flatten)]
    reason: ReasonArg,
}

/// `veer rollout status`.
#[derive(Debug, clap::Args)]
pub(super) struct StatusArgs {
    /// Name of the service.
    service: String,
    /// Follow the rollout until it ends (from any terminal, any number of times): exit 0 when
    /// it completes, 1 when it is rolled back or aborted.
    #[arg(long)]
    watch: bool,
}

/// `veer rollout promote`.
#[derive(Debug, clap::Args)]
pub(super) struct PromoteArgs {
    /// Name of the service.
    service: String,
    /// Go straight to the last step (100%).
    #[arg(long)]
    full: bool,
    #[command(flatten)]
    reason: ReasonArg,
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
    pub(super) service: String,
    /// Group that ends with all new flows.
    #[arg(long)]
    pub(super) to: String,
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
    /// Judge: an increase of the canary's p50 or p99 latency smaller than this never fails it,
    /// whatever its ratio (e.g. 1ms, the default; 0s judges by the ratio alone).
    #[arg(long, value_parser = humantime::parse_duration)]
    latency_slack: Option<Duration>,
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
    /// long (1s to 7 days; a reset to both ends), at --drain-pace.
    #[arg(long, value_parser = humantime::parse_duration)]
    drain_deadline: Option<Duration>,
    /// How fast those flows are ended (e.g. 50/s).
    #[arg(long, requires = "drain_deadline", default_value = "50/s")]
    drain_pace: Pace,
    /// Follow the rollout to its end: exit 0 when it completes, 1 when it is rolled back or
    /// aborted.
    #[arg(long)]
    pub(super) wait: bool,
    #[command(flatten)]
    reason: ReasonArg,
}

fn percent(flag: &str, text: &str) -> Result<Weight, Failure> {
    Weight::from_percent_str(text.trim_end_matches('%'))
        .map_err(|e| Failure::usage(format!("--{flag} {text}: {e}")))
}

/// Runs `veer rollout ...`.
pub(super) fn run(args: &Args, g: &Global) -> Result<(), Failure> {
    let action = |service: &str, verb: &str, done: &str, full: bool, reason: &ReasonArg| {
        let body = RolloutActionRequest {
            full,
            options: ChangeOptions {
                reason: reason.reason.clone(),
                dry_run: false,
            },
        };
        let path = format!("/v1/rollouts/{}/{verb}", status::encode(service));
        let r: ApplyResponse =
            block_on(g.client().post(&path, &body))?.map_err(|e| Failure::from(&e))?;
        output::applied(g.output, &r, &format!("rollout {service} {done}"))
    };
    match args {
        Args::Start(a) => start(a, g),
        Args::Status(s) if s.watch => follow(&s.service, g),
        Args::Status(s) => {
            let r = fetch(g, &s.service)?;
            let width = live::terminal_width().unwrap_or(live::DEFAULT_WIDTH);
            output::print(g.output, &r, || {
                let mut text = live::frame(&r, width).join("\n");
                if let Some(v) = &r.judge {
                    text.push('\n');
                    text.push_str(&verdict_text(v));
                }
                text
            })
        }
        Args::Pause(s) => action(&s.service, "pause", "paused", false, &s.reason),
        Args::Resume(s) => action(&s.service, "resume", "resumed", false, &s.reason),
        Args::Abort(s) => action(&s.service, "abort", "aborted", false, &s.reason),
        Args::Promote(p) => action(
            &p.service,
            "promote",
            if p.full {
                "promoted to its last step"
            } else {
                "promoted"
            },
            p.full,
            &p.reason,
        ),
        Args::Retry(s) => action(&s.service, "retry", "retried", false, &s.reason),
    }
}

/// The per-node plan the options say.
pub(super) fn plan(a: &StartArgs) -> Result<Plan, Failure> {
    Ok(Plan {
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
    })
}

/// The judge's tolerances the options ask for: none unless `--judge` or one of its options.
fn tolerances(a: &StartArgs) -> Option<Tolerances> {
    let any = a.judge
        || a.max_latency_increase.is_some()
        || a.latency_slack.is_some()
        || a.max_failure_increase.is_some()
        || a.confidence.is_some()
        || a.min_sample.is_some();
    any.then(|| {
        let d = Tolerances::DEFAULT;
        Tolerances {
            max_latency_increase: a.max_latency_increase.unwrap_or(d.max_latency_increase),
            latency_slack: a.latency_slack.unwrap_or(d.latency_slack),
            max_failure_increase: a.max_failure_increase.unwrap_or(d.max_failure_increase),
            confidence: a.confidence.unwrap_or(d.confidence),
            min_sample: a.min_sample.unwrap_or(d.min_sample),
        }
    })
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

fn start(a: &StartArgs, g: &Global) -> Result<(), Failure> {
    let plan = plan(a)?;
    let req = RolloutStartRequest {
        service: a.service.clone(),
        plan,
        options: ChangeOptions {
            reason: a.reason.reason.clone(),
            dry_run: false,
        },
    };
    let r: ApplyResponse =
        block_on(g.client().post("/v1/rollouts", &req))?.map_err(|e| Failure::from(&e))?;
    if !a.wait {
        return output::applied(
            g.output,
            &r,
            &format!("rollout {} -> {} started", a.service, a.to),
        );
    }
    follow(&a.service, g)
}

fn fetch(g: &Global, service: &str) -> Result<RolloutStatus, Failure> {
    block_on(
        g.client()
            .get(&format!("/v1/rollouts/{}", status::encode(service))),
    )?
    .map_err(|e| Failure::from(&e))
}

/// How a rollout that is over ends the command: 0 completed, 1 rolled back or aborted.
fn outcome(r: &RolloutStatus) -> Result<(), Failure> {
    let why = r.reason.clone().unwrap_or_default();
    match r.phase {
        Phase::Completed | Phase::Running | Phase::Paused => Ok(()),
        Phase::RolledBack => Err(Failure::new(
            "rolled_back",
            format!("rollout {} -> {} rolled back: {why}", r.service, r.to),
        )),
        Phase::Aborted => Err(Failure::new(
            "aborted",
            format!("rollout {} -> {} was aborted: {why}", r.service, r.to),
        )),
    }
}

/// Follows a rollout until it is over: on a terminal the live block, redrawn in place; without
/// one a plain line per change; with `--output json` one object per line whenever it changes.
/// A daemon that stops answering (a restart) is asked again for a while.
fn follow(service: &str, g: &Global) -> Result<(), Failure> {
    let json = g.output == output::Format::Json;
    let tty = !json && std::io::stdout().is_terminal();
    let mut screen = Screen::default();
    let mut last = String::new();
    let mut unreachable_since: Option<Instant> = None;
    loop {
        let r = match fetch(g, service) {
            Ok(r) => {
                unreachable_since = None;
                r
            }
            Err(f) if f.kind == "unreachable" => {
                let since = *unreachable_since.get_or_insert_with(Instant::now);
                if since.elapsed() > UNREACHABLE_FOR {
                    return Err(f);
                }
                std::thread::sleep(live::POLL);
                continue;
            }
            Err(f) => return Err(f),
        };
        if json {
            let text = serde_json::to_string(&r).map_err(|e| Failure::error(&e))?;
            if text != last {
                output::json_line(&r)?;
                last = text;
            }
        } else if tty {
            let (width, height) = live::terminal_size().unwrap_or((live::DEFAULT_WIDTH, 24));
            screen.draw(&live::frame_sized(&r, width, height));
        } else {
            let key = live::change_key(&r);
            if key != last {
                println!("{}", live::line(&r));
                last = key;
            }
        }
        if r.phase.is_final() {
            if !json && let Some(v) = &r.judge {
                println!("{}", verdict_text(v));
            }
            return outcome(&r);
        }
        std::thread::sleep(live::POLL);
    }
}
