//! `veer diff -f FILE`: what applying a config file would change, as a diff of the desired state
//! in force (the daemon decides it exactly as `apply` would, declared rollouts included), with
//! nothing applied. Exit 0 whether or not anything would change; the JSON's `changed` says.

use std::path::PathBuf;

use super::{Global, apply, change::submit, exit::Failure};
use crate::api::protocol::ChangeOptions;

/// Arguments of `veer diff`.
#[derive(Debug, clap::Args)]
pub(super) struct Args {
    /// Config file to compare with the desired state in force.
    #[arg(long = "file", short = 'f')]
    file: PathBuf,
}

/// Shows the diff.
pub(super) fn run(args: &Args, g: &Global) -> Result<(), Failure> {
    let req = apply::request(
        &args.file,
        ChangeOptions {
            reason: None,
            dry_run: true,
        },
    )?;
    submit(
        g,
        "/v1/apply",
        &req,
        true,
        &format!("diff {}", args.file.display()),
    )
}
