//! `veer validate`: offline. Every problem of the file is reported, each with its line.

use std::path::PathBuf;

use super::{Global, exit::Failure, output};
use crate::{config, paths};

/// Arguments of `veer validate`.
#[derive(Debug, clap::Args)]
pub(super) struct Args {
    /// Config file.
    #[arg(long = "file", short = 'f', default_value = paths::CONFIG)]
    file: PathBuf,
}

/// Validates the file; exit 1 with every problem if it is invalid (with `-o json`: the error
/// object lists them as `diagnostics`).
pub(super) fn run(args: &Args, g: &Global) -> Result<(), Failure> {
    match config::load(&args.file) {
        Ok((c, _)) => output::print(
            g.output,
            &serde_json::json!({ "valid": true, "file": args.file, "services": c.state.services.len() }),
            || {
                format!(
                    "{}: valid ({} services)",
                    args.file.display(),
                    c.state.services.len()
                )
            },
        ),
        Err(config::LoadError::Invalid(errors)) => Err(Failure::invalid_config(&errors)),
        Err(e @ config::LoadError::Read { .. }) => Err(Failure::of("io", &e)),
    }
}
