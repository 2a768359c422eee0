//! `veer apply -f FILE`.

use std::path::PathBuf;

use super::{Global, block_on, exit::Failure, output};
use crate::{
    api::protocol::{ApplyRequest, ApplyResponse},
    config,
};

/// Arguments of `veer apply`.
#[derive(Debug, clap::Args)]
pub(super) struct Args {
    /// Config file to apply.
    #[arg(long = "file", short = 'f')]
    file: PathBuf,
    #[command(flatten)]
    fleet: super::fleet::FleetArgs,
}

/// Validates locally (exact messages even against an older daemon), then applies.
pub(super) fn run(args: &Args, g: &Global) -> Result<(), Failure> {
    if args.fleet.on() {
        return super::fleet::apply(&args.fleet, &args.file, g);
    }
    let (_, text) = config::load(&args.file).map_err(|e| Failure::error(&e))?;
    let path = std::fs::canonicalize(&args.file).unwrap_or_else(|_| args.file.clone());
    let req = ApplyRequest {
        config: text,
        path: path.display().to_string(),
    };
    let r: ApplyResponse =
        block_on(g.client().post("/v1/apply", &req))?.map_err(|e| output::client_failure(&e))?;
    output::applied(g.output, &r, &format!("applied {}", args.file.display()))
}
