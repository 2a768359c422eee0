//! `veer drain SERVICE GROUP [--deadline DURATION [--pace N/s]] [--wait] [--timeout DURATION]
//! [--force] [--dry-run] [--reason TEXT] [--fleet]`.

use std::{
    collections::VecDeque,
    fmt::Write as _,
    time::{Duration, Instant},
};

use super::{
    Global, block_on,
    change::{ChangeArgs, submit},
    exit::Failure,
    output, status,
};
use crate::{
    api::protocol::{ApplyResponse, DrainRequest},
    model::drain::{DrainEnd, Pace},
};

/// How often `--wait` looks at the flow count.
const POLL: Duration = Duration::from_millis(250);

/// Arguments of `veer drain`.
#[derive(Debug, clap::Args)]
pub(super) struct Args {
    /// Name of the service.
    service: String,
    /// Group to drain.
    group: String,
    /// Wait until the group has no active flow left (exit 3 on timeout).
    #[arg(long)]
    wait: bool,
    /// Longest wait (e.g. 30s, 5m).
    #[arg(long, default_value = "5m", value_parser = crate::model::drain_wait)]
    timeout: Duration,
    /// Drain even when no other group takes new connections (they will be dropped).
    #[arg(long)]
    force: bool,
    /// After this long (1s to 7 days), end the group's flows still active (a reset to both ends;
    /// a UDP flow is forgotten), at --pace. Kept in the revision: a restarted daemon continues it.
    #[arg(long, value_parser = humantime::parse_duration)]
    deadline: Option<Duration>,
    /// How fast flows are ended after the deadline (e.g. 50/s, 600/m).
    #[arg(long, requires = "deadline", default_value = "50/s")]
    pace: Pace,
    #[command(flatten)]
    change: ChangeArgs,
    #[command(flatten)]
    fleet: super::fleet::FleetArgs,
}

/// The group's active flows and flows ended by drains, from `status`.
fn group_flows(g: &Global, service: &str, group: &str) -> Result<(u64, u64), Failure> {
    let s = status::fetch(g, Some(service))?;
    Ok(s.services
        .iter()
        .flat_map(|svc| &svc.groups)
        .find(|grp| grp.name == group)
        .map_or((0, 0), |grp| (grp.active_flows, grp.ended_flows)))
}

/// Drains, and waits if asked.
pub(super) fn run(args: &Args, g: &Global) -> Result<(), Failure> {
    let options = args.change.options();
    let end = args.deadline.map(|deadline| DrainEnd {
        deadline,
        pace: args.pace,
    });
    if args.fleet.on() {
        if args.wait || end.is_some() {
            return Err(Failure::usage(
                "--wait and --deadline act on one node's flows: drain --fleet, then `veer drain SERVICE GROUP [--deadline D] --wait` on each node".to_owned(),
            ));
        }
        let request = crate::control::Request::Drain {
            service: args.service.clone(),
            group: args.group.clone(),
            force: args.force,
            end: None,
        };
        let what = format!("drain {}/{}", args.service, args.group);
        return super::fleet::edit(&args.fleet, &options, &request, &what, g);
    }
    let dry_run = options.dry_run;
    let ended_before = if args.wait && !dry_run {
        group_flows(g, &args.service, &args.group)?.1
    } else {
        0
    };
    let req = DrainRequest {
        service: args.service.clone(),
        group: args.group.clone(),
        force: args.force,
        end,
        options,
    };
    let what = format!("drain {}/{}", args.service, args.group);
    if dry_run {
        return submit(g, "/v1/drain", &req, true, &what);
    }
    let r: ApplyResponse =
        block_on(g.client().post("/v1/drain", &req))?.map_err(|e| Failure::from(&e))?;
    if !args.wait {
        return output::applied(g.output, &r, &what);
    }
    wait(args, g, r.revision, end, ended_before)
}

/// Waits for the group's last flow, showing flows left, their rate of decrease and flows ended.
fn wait(
    args: &Args,
    g: &Global,
    revision: u64,
    end: Option<DrainEnd>,
    ended_before: u64,
) -> Result<(), Failure> {
    if g.output == output::Format::Human {
        let paced = end.map_or(String::new(), |e| {
            format!(
                " (deadline in {}, then {})",
                humantime::format_duration(e.deadline),
                e.pace
            )
        });
        eprintln!(
            "drain {}/{}: revision {}; waiting for its flows to end{paced}",
            args.service, args.group, revision
        );
    }
    // Infallible in practice: `drain_wait` bounds the timeout to a week.
    let deadline = Instant::now()
        .checked_add(args.timeout)
        .unwrap_or_else(|| Instant::now() + crate::model::MAX_DRAIN_WAIT);
    let mut last = (u64::MAX, u64::MAX);
    // Flows left over the last second, for the rate of decrease.
    let mut window: VecDeque<(Instant, u64)> = VecDeque::new();
    loop {
        let (active, ended_now) = group_flows(g, &args.service, &args.group)?;
        let ended = ended_now.saturating_sub(ended_before);
        let now = Instant::now();
        window.push_back((now, active));
        while window
            .front()
            .is_some_and(|(t, _)| now.duration_since(*t) > Duration::from_secs(1))
        {
            window.pop_front();
        }
        if active == 0 {
            let ended_text = if ended > 0 {
                format!(", {ended} flows ended")
            } else {
                String::new()
            };
            return output::print(
                g.output,
                &serde_json::json!({ "revision": revision, "drained": true, "active_flows": 0, "ended_flows": ended }),
                || {
                    format!(
                        "drain {}/{}: drained (revision {}){ended_text}",
                        args.service, args.group, revision
                    )
                },
            );
        }
        if Instant::now() >= deadline {
            let ended_text = if ended > 0 {
                format!(" ({ended} ended)")
            } else {
                String::new()
            };
            return Err(Failure::timeout(format!(
                "drain {}/{}: {active} flows still active after {}{ended_text}",
                args.service,
                args.group,
                humantime::format_duration(args.timeout)
            ))
            .with_details(serde_json::json!({
                "revision": revision, "drained": false, "active_flows": active,
                "ended_flows": ended,
            })));
        }
        if (active, ended) != last && g.output == output::Format::Human {
            eprintln!("{}", progress(active, ended, &window));
            last = (active, ended);
        }
        std::thread::sleep(POLL);
    }
}

/// A progress line: flows left, their rate of decrease over the last second (of `window`:
/// when and how many were left), and flows ended.
fn progress(active: u64, ended: u64, window: &VecDeque<(Instant, u64)>) -> String {
    let mut line = format!("{active} active flows");
    if let (Some((t0, n0)), Some((t1, n1))) = (window.front(), window.back()) {
        let dt = t1.duration_since(*t0).as_secs_f64();
        if dt >= 0.2 && n0 > n1 {
            let _ = write!(line, ", -{:.0}/s", (n0 - n1) as f64 / dt);
        }
    }
    if ended > 0 {
        let _ = write!(line, ", {ended} flows ended");
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress_says_flows_left_their_rate_and_flows_ended() {
        let t = Instant::now();
        let mut w = VecDeque::new();
        w.push_back((t, 200));
        assert_eq!(progress(200, 0, &w), "200 active flows");
        w.push_back((t + Duration::from_millis(500), 150));
        assert_eq!(
            progress(150, 50, &w),
            "150 active flows, -100/s, 50 flows ended"
        );
    }
}
