//! `veer apply -f FILE [--dry-run] [--reason TEXT] [--fleet]`.

use std::path::{Path, PathBuf};

use super::{
    Global,
    change::{ChangeArgs, submit},
    exit::Failure,
};
use crate::{
    api::protocol::{ApplyRequest, ChangeOptions},
    config,
};

/// Arguments of `veer apply`.
#[derive(Debug, clap::Args)]
pub(super) struct Args {
    /// Config file to apply.
    #[arg(long = "file", short = 'f')]
    file: PathBuf,
    #[command(flatten)]
    change: ChangeArgs,
    #[command(flatten)]
    fleet: super::fleet::FleetArgs,
}

/// Reads and validates `file` locally (every problem, with its line, even against an older
/// daemon) and builds the request that applies it.
pub(super) fn request(file: &Path, options: ChangeOptions) -> Result<ApplyRequest, Failure> {
    let text = match config::load(file) {
        Ok((_, text)) => text,
        Err(config::LoadError::Invalid(errors)) => return Err(Failure::invalid_config(&errors)),
        Err(e @ config::LoadError::Read { .. }) => return Err(Failure::of("io", &e)),
    };
    let path = std::fs::canonicalize(file).unwrap_or_else(|_| file.to_owned());
    Ok(ApplyRequest {
        config: text,
        path: path.display().to_string(),
        options,
    })
}

/// Validates locally, then applies (or, with `--dry-run`, shows what applying would change).
pub(super) fn run(args: &Args, g: &Global) -> Result<(), Failure> {
    let options = args.change.options();
    if args.fleet.on() {
        return super::fleet::apply(&args.fleet, &args.file, &options, g);
    }
    let dry_run = options.dry_run;
    let req = request(&args.file, options)?;
    let what = if dry_run { "apply" } else { "applied" };
    submit(
        g,
        "/v1/apply",
        &req,
        dry_run,
        &format!("{what} {}", args.file.display()),
    )
}
