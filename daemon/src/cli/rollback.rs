//! `veer rollback [SERVICE] [--to REVISION] [--dry-run] [--reason TEXT]`.

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
    /// Revision to go back to (default: the one before the live one).
    #[arg(long)]
    to: Option<u64>,
    #[command(flatten)]
    change: ChangeArgs,
}

/// Rolls back.
pub(super) fn run(args: &Args, g: &Global) -> Result<(), Failure> {
    let options = args.change.options();
    let dry_run = options.dry_run;
    let req = RollbackRequest {
        service: args.service.clone(),
        to: args.to,
        options,
    };
    submit(g, "/v1/rollback", &req, dry_run, "rollback")
}
