//! `veer shift SERVICE[,SERVICE...] GROUP=WEIGHT... [--force] [--dry-run] [--reason TEXT]
//! [--fleet]`.

use super::{
    Global,
    change::{ChangeArgs, submit},
    exit::Failure,
};
use crate::{
    api::protocol::{GroupWeight, ShiftRequest},
    model::Weight,
};

/// Arguments of `veer shift`.
#[derive(Debug, clap::Args)]
pub(super) struct Args {
    /// Service, or several separated by commas to shift together in one revision (a dual-stack
    /// pair: `web,web6`).
    service: String,
    /// New weights, `GROUP=PERCENT` (e.g. `v1=90 v2=10`); groups not named keep theirs.
    #[arg(required = true, value_name = "GROUP=WEIGHT")]
    weights: Vec<String>,
    /// Accept weights that leave a service with no group taking new connections (they are
    /// dropped).
    #[arg(long)]
    force: bool,
    #[command(flatten)]
    change: ChangeArgs,
    #[command(flatten)]
    fleet: super::fleet::FleetArgs,
}

/// Parses `v1=90`.
fn parse(arg: &str) -> Result<GroupWeight, Failure> {
    let (group, weight) = arg
        .split_once('=')
        .ok_or_else(|| Failure::usage(format!("`{arg}`: want GROUP=WEIGHT, e.g. v1=90")))?;
    let weight =
        Weight::from_percent_str(weight).map_err(|e| Failure::usage(format!("`{arg}`: {e}")))?;
    if group.is_empty() {
        return Err(Failure::usage(format!("`{arg}`: the group name is empty")));
    }
    Ok(GroupWeight {
        group: group.to_owned(),
        weight,
    })
}

/// Sends the shift.
pub(super) fn run(args: &Args, g: &Global) -> Result<(), Failure> {
    let weights = args
        .weights
        .iter()
        .map(|a| parse(a))
        .collect::<Result<Vec<_>, _>>()?;
    let services: Vec<String> = args.service.split(',').map(str::to_owned).collect();
    if services.iter().any(String::is_empty) {
        return Err(Failure::usage(format!(
            "`{}`: empty service name",
            args.service
        )));
    }
    let options = args.change.options();
    if args.fleet.on() {
        let request = crate::control::Request::Shift {
            services,
            weights: weights.into_iter().map(|w| (w.group, w.weight)).collect(),
            force: args.force,
        };
        return super::fleet::edit(
            &args.fleet,
            &options,
            &request,
            &format!("shift {}", args.service),
            g,
        );
    }
    let dry_run = options.dry_run;
    let req = ShiftRequest {
        services,
        weights,
        force: args.force,
        options,
    };
    submit(
        g,
        "/v1/shift",
        &req,
        dry_run,
        &format!("shift {}", args.service),
    )
}
