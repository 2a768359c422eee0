//! `veer drain SERVICE GROUP [--wait] [--timeout DURATION] [--force] [--dry-run]
//! [--reason TEXT] [--fleet]`.

use std::time::{Duration, Instant};

use super::{
    Global, block_on,
    change::{ChangeArgs, submit},
    exit::Failure,
    output, status,
};
use crate::api::protocol::{ApplyResponse, DrainRequest};

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
    #[command(flatten)]
    change: ChangeArgs,
    #[command(flatten)]
    fleet: super::fleet::FleetArgs,
}

/// Drains, and waits if asked.
pub(super) fn run(args: &Args, g: &Global) -> Result<(), Failure> {
    let options = args.change.options();
    if args.fleet.on() {
        if args.wait {
            return Err(Failure::usage(
                "--wait watches one node's flows: drain --fleet, then `veer drain SERVICE GROUP --wait` on each node".to_owned(),
            ));
        }
        let request = crate::control::Request::Drain {
            service: args.service.clone(),
            group: args.group.clone(),
            force: args.force,
        };
        let what = format!("drain {}/{}", args.service, args.group);
        return super::fleet::edit(&args.fleet, &options, &request, &what, g);
    }
    let dry_run = options.dry_run;
    let req = DrainRequest {
        service: args.service.clone(),
        group: args.group.clone(),
        force: args.force,
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
    if g.output == output::Format::Human {
        eprintln!(
            "drain {}/{}: revision {}; waiting for its flows to end",
            args.service, args.group, r.revision
        );
    }
    // Infallible in practice: `drain_wait` bounds the timeout to a week.
    let deadline = Instant::now()
        .checked_add(args.timeout)
        .unwrap_or_else(|| Instant::now() + crate::model::MAX_DRAIN_WAIT);
    let mut last = u64::MAX;
    loop {
        let s = status::fetch(g, Some(&args.service))?;
        let active = s
            .services
            .iter()
            .flat_map(|svc| &svc.groups)
            .find(|grp| grp.name == args.group)
            .map_or(0, |grp| grp.active_flows);
        if active == 0 {
            return output::print(
                g.output,
                &serde_json::json!({ "revision": r.revision, "drained": true, "active_flows": 0 }),
                || {
                    format!(
                        "drain {}/{}: drained (revision {})",
                        args.service, args.group, r.revision
                    )
                },
            );
        }
        if Instant::now() >= deadline {
            return Err(Failure::timeout(format!(
                "drain {}/{}: {active} flows still active after {}",
                args.service,
                args.group,
                humantime::format_duration(args.timeout)
            ))
            .with_details(serde_json::json!({
                "revision": r.revision, "drained": false, "active_flows": active,
            })));
        }
        if active != last && g.output == output::Format::Human {
            eprintln!("{active} active flows");
            last = active;
        }
        std::thread::sleep(POLL);
    }
}
