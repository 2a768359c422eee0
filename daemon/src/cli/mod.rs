//! The `veer` command line: one file per subcommand, each a thin adapter over the library.

mod daemon;
pub mod exit;

use clap::{Parser, Subcommand};

/// Structured logs on stderr; `RUST_LOG` filters them (default `info`).
pub fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}

/// veer: shift live traffic between versions of a service inside the kernel.
#[derive(Debug, Parser)]
#[command(name = "veer", version, about, propagate_version = true)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Load and attach veer's kernel programs and keep them running.
    Daemon(daemon::Args),
    /// Print the version.
    Version,
}

impl Cli {
    /// Runs the command; the error says what failed and what to do.
    pub fn run(self) -> Result<(), exit::Failure> {
        match self.command {
            Command::Daemon(args) => daemon::run(&args),
            Command::Version => {
                println!("veer {}", env!("CARGO_PKG_VERSION"));
                Ok(())
            }
        }
    }
}
