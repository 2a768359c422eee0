//! The `veer` binary: parses the command line, runs it, maps failures to exit codes.

use std::process::ExitCode;

use clap::Parser as _;
use tracing_subscriber::EnvFilter;
// Used by the library; linked here too.
use {aya as _, libc as _, thiserror as _, tracing as _, veer_common as _};

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    match veer::cli::Cli::parse().run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => {
            eprintln!("veer: {}", failure.message);
            failure.exit_code()
        }
    }
}
