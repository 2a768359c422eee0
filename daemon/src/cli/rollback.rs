//! `veer rollback [SERVICE] [--to REVISION]`.

use super::{Global, block_on, exit::Failure, output};
use crate::api::protocol::{ApplyResponse, RollbackRequest};

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
    fleet: super::fleet::FleetArgs,
}

/// Rolls back.
pub(super) fn run(args: &Args, g: &Global) -> Result<(), Failure> {
    if args.fleet.on() {
        return super::fleet::rollback(&args.fleet, args.service.as_deref(), args.to, g);
    }
    let req = RollbackRequest {
        service: args.service.clone(),
        to: args.to,
    };
    let r: ApplyResponse =
        block_on(g.client().post("/v1/rollback", &req))?.map_err(|e| output::client_failure(&e))?;
    output::applied(g.output, &r, "rollback")
}
