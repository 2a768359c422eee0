//! `cargo xtask demo`: a live cutover from `v1` to `v2` under load, on a namespace test bed.
//!
//! Builds a client, the node and two backend namespaces (`v1`, `v2`, answering with their name),
//! starts `veer daemon` on the node with service `web` (`192.0.2.10:80`) at `v1=100 v2=0`, drives
//! new connections from the client (bounded) plus 20 long-lived connections, and runs a live
//! rollout to `v2` (`veer rollout start web --to v2`: 10 → 25 → 50 → 75 → 100 %, each step
//! watched by veer's failure-rate and health gates), showing every second the split of new
//! connections, the flows each group holds (`veer status`) and the failed requests.
//! Ends with a summary and removes everything, also on Ctrl-C. Exits 1 if any request failed or
//! a long-lived connection broke or moved.

// This binary links every dependency of `veer-tests`.
use tokio as _;
use {aya as _, rand as _, rcgen as _, veer as _, veer_common as _};

#[path = "veer-bench/bed.rs"]
#[expect(dead_code, reason = "shared with veer-bench, which uses all of it")]
mod bed;
#[path = "veer-bench/load.rs"]
mod load;

use std::{
    io::Write as _,
    process::ExitCode,
    time::{Duration, Instant},
};

use crate::bed::{Context as _, Result, VIP, Veer};

/// `v2`'s share at each rollout step.
const ROLLOUT_STEPS: &str = "10,25,50,75,100";
/// How long veer watches each step.
const PAUSE: &str = "6s";
/// At 100/0 before the rollout starts.
const WARM_UP: Duration = Duration::from_secs(4);
/// Held after the rollout ends, before the summary.
const FINAL_HOLD: Duration = Duration::from_secs(4);
/// Longest the rollout may take before the demo gives up on it.
const ROLLOUT_LIMIT: Duration = Duration::from_secs(75);
/// Long-lived connections opened at the start (they stay on `v1` all along).
const HELD: usize = 20;

/// One step as it ran.
struct StepReport {
    /// `warm-up`, or the rollout step (`2/5`).
    name: String,
    /// `v1`'s and `v2`'s weights.
    weights: (String, String),
    held_for: Duration,
    v1: u64,
    v2: u64,
    failed: u64,
}

fn main() -> ExitCode {
    match run() {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) if bed::interrupted() => {
            eprintln!("\nveer-demo: interrupted ({e}); everything it created is removed");
            ExitCode::from(130)
        }
        Err(e) => {
            eprintln!("\nveer-demo: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The live view: one line per second, redrawn in place on a terminal.
struct View {
    tty: bool,
}

impl View {
    fn line(&self, text: &str) {
        let mut out = std::io::stdout().lock();
        // A closed stdout only loses the display; the demo itself goes on.
        let written = if self.tty {
            write!(out, "\r\x1b[2K{text}")
        } else {
            writeln!(out, "{text}")
        };
        drop(written.and_then(|()| out.flush()));
    }

    fn event(&self, text: &str) {
        let mut out = std::io::stdout().lock();
        let written = if self.tty {
            writeln!(out, "\r\x1b[2K{text}")
        } else {
            writeln!(out, "{text}")
        };
        drop(written.and_then(|()| out.flush()));
    }
}

fn percent(part: u64, total: u64) -> u64 {
    (part * 100).checked_div(total).unwrap_or(0)
}

#[expect(
    clippy::too_many_lines,
    reason = "the demo's script reads top to bottom"
)]
fn run() -> Result<bool> {
    bed::handle_interrupts()?;
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bed::bail!(
            "the demo builds network namespaces and loads BPF programs: run it as root (`sudo -E cargo xtask demo`)"
        );
    }
    let view = View {
        tty: std::io::IsTerminal::is_terminal(&std::io::stdout()),
    };
    println!("veer demo: a live cutover v1 → v2 under load, in network namespaces\n");
    let topo = bed::two_group_topology()?;
    topo.client()
        .sysctl(&[("net.ipv4.ip_local_port_range", "1024 65000")])
        .context("client port range")?;
    let servers = bed::name_servers(&topo)?;
    let veer = Veer::start(
        topo.node(),
        &bed::config(&topo.node_ifnames(), "100", "0", 65536),
    )?;
    println!(
        "  namespaces  {}\n  client      203.0.113.2 → service web 192.0.2.10:80 (VIP)\n  \
         backends    v1 198.51.100.11:8080, v2 198.51.100.21:8080 (each answers with its name)\n  \
         veer        daemon in {} on {}, socket {}\n",
        topo.netns_names().join(", "),
        topo.node().name(),
        topo.node_ifnames().join(", "),
        veer.socket.display()
    );
    let load = load::Load::start(
        topo.client(),
        VIP,
        &load::Plan {
            workers: 2,
            pause: Duration::from_millis(2),
            max_requests: 200_000,
            max_time: Duration::from_secs(90),
            held: HELD,
            held_every: Duration::from_secs(1),
        },
    )?;
    println!(
        "  load        2 clients opening new connections back to back (HTTP GET, Connection: close),\n              \
         plus {HELD} long-lived keep-alive connections asked every second (they started on v1 and stay there)\n"
    );

    let start = Instant::now();
    let mut steps: Vec<StepReport> = Vec::new();
    let mut result: Result<()> = Ok(());
    let mut last = load.snapshot();
    let mut segment = (
        String::from("warm-up"),
        ("100".to_owned(), "0".to_owned()),
        Instant::now(),
        load.snapshot(),
    );
    let mut started = false;
    let mut ended: Option<Instant> = None;
    let mut tick = Instant::now();
    view.event("  warm-up at v1=100 v2=0");
    loop {
        tick += Duration::from_secs(1);
        if let Err(e) = bed::sleep(tick.saturating_duration_since(Instant::now())) {
            result = Err(e);
            break;
        }
        if !started && start.elapsed() >= WARM_UP {
            let cmd = [
                "rollout",
                "start",
                "web",
                "--to",
                "v2",
                "--steps",
                ROLLOUT_STEPS,
                "--pause",
                PAUSE,
                "--min-flows",
                "20",
                "--max-failure-rate",
                "1%",
            ];
            if let Err(e) = veer.ok(&cmd) {
                result = Err(e);
                break;
            }
            view.event(&format!("  `veer {}`", cmd.join(" ")));
            started = true;
        }
        let rollout = if started {
            veer.json(&["rollout", "status", "web"]).ok()
        } else {
            None
        };
        let weight = |g: &str| -> String {
            rollout
                .as_ref()
                .and_then(|r| {
                    r["weights"]
                        .as_array()?
                        .iter()
                        .find(|w| w[0] == g)
                        .map(|w| w[1].to_string())
                })
                .unwrap_or_else(|| {
                    if g == "v1" {
                        "100".to_owned()
                    } else {
                        "0".to_owned()
                    }
                })
        };
        let (w1, w2) = (weight("v1"), weight("v2"));
        let name = rollout.as_ref().map_or_else(
            || "warm-up".to_owned(),
            |r| {
                format!(
                    "{}/{}",
                    r["step"],
                    r["steps"].as_array().map_or(0, Vec::len)
                )
            },
        );
        if name != segment.0 {
            let now = load.snapshot();
            steps.push(StepReport {
                name: segment.0.clone(),
                weights: segment.1.clone(),
                held_for: segment.2.elapsed(),
                v1: now.answered_by("v1") - segment.3.answered_by("v1"),
                v2: now.answered_by("v2") - segment.3.answered_by("v2"),
                failed: now.failed() - segment.3.failed(),
            });
            view.event(&format!("  rollout step {name}: v1={w1} v2={w2}"));
            segment = (name.clone(), (w1.clone(), w2.clone()), Instant::now(), now);
        }
        let now = load.snapshot();
        let (d1, d2) = (
            now.answered_by("v1") - last.answered_by("v1"),
            now.answered_by("v2") - last.answered_by("v2"),
        );
        let flows = veer.active_flows().unwrap_or_default();
        let flows_of = |g: &str| flows.iter().find(|(n, _)| n == g).map_or(0, |(_, f)| *f);
        let waiting = rollout
            .as_ref()
            .and_then(|r| r["waiting"].as_str().map(str::to_owned))
            .unwrap_or_default();
        view.line(&format!(
            "  {:>3}s  v1={w1:>3} v2={w2:>3} │ new conn/s  v1 {d1:>5}  v2 {d2:>5}  ({:>3}% / {:>3}%) │ flows held  v1 {:>4}  v2 {:>4} │ failed {}{}{}",
            start.elapsed().as_secs(),
            percent(d1, d1 + d2),
            percent(d2, d1 + d2),
            flows_of("v1"),
            flows_of("v2"),
            now.failed(),
            if now.held_broken + now.held_moved > 0 {
                format!(", long-lived broken {} moved {}", now.held_broken, now.held_moved)
            } else {
                String::new()
            },
            if waiting.is_empty() { String::new() } else { format!(" │ {waiting}") }
        ));
        last = now;
        let phase = rollout
            .as_ref()
            .and_then(|r| r["phase"].as_str().map(str::to_owned))
            .unwrap_or_default();
        if ended.is_none() && matches!(phase.as_str(), "completed" | "rolled_back" | "aborted") {
            view.event(&format!(
                "  rollout {phase}{}",
                rollout
                    .as_ref()
                    .and_then(|r| r["reason"].as_str().map(|w| format!(": {w}")))
                    .unwrap_or_default()
            ));
            if phase != "completed" {
                result = Err(format!("the rollout {phase}").into());
            }
            ended = Some(Instant::now());
        }
        if ended.is_some_and(|t| t.elapsed() >= FINAL_HOLD) {
            break;
        }
        if start.elapsed() > WARM_UP + ROLLOUT_LIMIT {
            result = Err("the rollout did not finish in time".into());
            break;
        }
    }
    let now = load.snapshot();
    steps.push(StepReport {
        name: segment.0,
        weights: segment.1,
        held_for: segment.2.elapsed(),
        v1: now.answered_by("v1") - segment.3.answered_by("v1"),
        v2: now.answered_by("v2") - segment.3.answered_by("v2"),
        failed: now.failed() - segment.3.failed(),
    });
    view.event("");
    let total = load.finish();
    let flows = veer.active_flows().unwrap_or_default();

    println!("summary");
    println!(
        "  {:<8} {:<12} {:>8} {:>8} {:>12} {:>7}",
        "step", "v1/v2", "held s", "v1 new", "v2 new (%)", "failed"
    );
    for s in &steps {
        println!(
            "  {:<8} {:<12} {:>8.1} {:>8} {:>7} ({:>2}%) {:>7}",
            s.name,
            format!("{}/{}", s.weights.0, s.weights.1),
            s.held_for.as_secs_f64(),
            s.v1,
            s.v2,
            percent(s.v2, s.v1 + s.v2),
            s.failed
        );
    }
    println!(
        "\n  requests sent {} (answered {}), failed {} (refused {}, reset {}, timeout {}, bad answer {})",
        total.sent(),
        total.ok,
        total.failed(),
        total.refused,
        total.reset,
        total.timeout,
        total.bad
    );
    println!(
        "  long-lived connections: {} opened on v1, asked {} times, broken {}, moved {}",
        total.held_open, total.held_asked, total.held_broken, total.held_moved
    );
    println!(
        "  flows held at the end: {}",
        flows
            .iter()
            .map(|(g, f)| format!("{g} {f}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    if !total.errors.is_empty() {
        println!("  first failures: {:?}", total.errors);
    }
    drop(veer);
    drop(servers);
    drop(topo);
    result?;
    let clean = total.failed() == 0 && total.held_broken == 0 && total.held_moved == 0;
    println!(
        "\n{}",
        if clean {
            "no request failed and no connection broke or moved: cleaned up, done."
        } else {
            "FAILED: some requests failed or connections broke (see above); cleaned up."
        }
    );
    Ok(clean)
}
