//! `cargo xtask run -- ARGS`: release-build veer (kernel programs included) and run
//! `veer ARGS` as the current user, forwarding its exit code.

use std::process::Command;

use anyhow::Context as _;

use crate::exec;

/// Options for `cargo xtask run`.
#[derive(clap::Args)]
pub(crate) struct Options {
    /// Arguments for `veer` (e.g. `daemon --interface eth0`).
    #[arg(last = true)]
    args: Vec<String>,
}

/// Builds and runs veer; exits with veer's exit code.
pub(crate) fn run(opts: &Options) -> anyhow::Result<()> {
    exec::cargo(&["build", "--release", "--locked", "--package", "veer"])?;
    let veer = exec::target_dir().join("release/veer");
    let status = Command::new(&veer)
        .args(&opts.args)
        .status()
        .with_context(|| format!("starting {}", veer.display()))?;
    std::process::exit(status.code().unwrap_or(1));
}
