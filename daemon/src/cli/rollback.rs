//! `veer rollback [SERVICE] [--to REVISION] [--dry-run] [--reason TEXT] [--fleet]`.

use super::{
    Global,
    change::{ChangeArgs, submit},
    exit::Failure,
};
use crate::api::protocol::RollbackRequest;

/// Arguments of `veer rollback`.
#[derive(Debug, clap::Args)]
pub(super) struct Args {
    /// Only this service (the others stay as they are).
    service: Option<String>,
    /// Revision to go back to (default: the one before the live one); with --fleet, a mod
    /// revision of the fleet's config (`veer fleet history`).
    #[arg(long)]
    to: Option<u64>,
    #[command(flatten)]
    change: ChangeArgs,
    #[command(flatten)]
    fleet: super::fleet::FleetArgs,
}

/// Rolls back.
pub(super) fn run(args: &Args, g: &Global) -> Result<(), Failure> {
    let options = args.change.options();
    if args.fleet.on() {
        return super::fleet::rollback(&args.fleet, &options, args.service.as_deref(), args.to, g);
    }
    let dry_run = options.dry_run;
    let req = RollbackRequest {
        service: args.service.clone(),
        to: args.to,
        options,
    };
    submit(g, "/v1/rollback", &req, dry_run, "rollback")
}
