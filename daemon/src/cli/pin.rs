//! `veer pin SERVICE PREFIX GROUP` and `veer unpin SERVICE PREFIX` (with `--dry-run`, `--reason`
//! and `--fleet`).

use super::{
    Global,
    change::{ChangeArgs, submit},
    exit::Failure,
};
use crate::api::protocol::{PinRequest, UnpinRequest};

/// Arguments of `veer pin`.
#[derive(Debug, clap::Args)]
pub(super) struct PinArgs {
    /// Name of the service.
    service: String,
    /// Client prefix (e.g. 203.0.113.0/24; a bare address is one host, /32 or /128).
    prefix: String,
    /// Group those clients always get.
    group: String,
    #[command(flatten)]
    change: ChangeArgs,
    #[command(flatten)]
    fleet: super::fleet::FleetArgs,
}

/// Arguments of `veer unpin`.
#[derive(Debug, clap::Args)]
pub(super) struct UnpinArgs {
    /// Name of the service.
    service: String,
    /// Client prefix (a bare address is one host, /32 or /128).
    prefix: String,
    #[command(flatten)]
    change: ChangeArgs,
    #[command(flatten)]
    fleet: super::fleet::FleetArgs,
}

/// Sends the pin; prints the revision.
pub(super) fn run_pin(a: &PinArgs, g: &Global) -> Result<(), Failure> {
    let options = a.change.options();
    if a.fleet.on() {
        let request = crate::control::Request::Pin {
            service: a.service.clone(),
            prefix: a.prefix.clone(),
            group: a.group.clone(),
        };
        let what = format!("pin {} {} -> {}", a.service, a.prefix, a.group);
        return super::fleet::edit(&a.fleet, &options, &request, &what, g);
    }
    let dry_run = options.dry_run;
    let req = PinRequest {
        service: a.service.clone(),
        prefix: a.prefix.clone(),
        group: a.group.clone(),
        options,
    };
    submit(
        g,
        "/v1/pin",
        &req,
        dry_run,
        &format!("pin {} {} -> {}", a.service, a.prefix, a.group),
    )
}

/// Sends the unpin; prints the revision.
pub(super) fn run_unpin(a: &UnpinArgs, g: &Global) -> Result<(), Failure> {
    let options = a.change.options();
    if a.fleet.on() {
        let request = crate::control::Request::Unpin {
            service: a.service.clone(),
            prefix: a.prefix.clone(),
        };
        let what = format!("unpin {} {}", a.service, a.prefix);
        return super::fleet::edit(&a.fleet, &options, &request, &what, g);
    }
    let dry_run = options.dry_run;
    let req = UnpinRequest {
        service: a.service.clone(),
        prefix: a.prefix.clone(),
        options,
    };
    submit(
        g,
        "/v1/unpin",
        &req,
        dry_run,
        &format!("unpin {} {}", a.service, a.prefix),
    )
}
