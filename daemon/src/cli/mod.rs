//! The `veer` command line: one file per subcommand, each a thin adapter over the library (the
//! daemon's control API for live operations, `config` for offline validation).

mod apply;
mod completions;
mod daemon;
mod drain;
pub mod exit;
mod fleet;
mod flows;
mod history;
pub mod output;
mod pin;
mod rollback;
mod rollout;
mod shift;
mod status;
mod teardown;
mod validate;

use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::{api::client::Client, paths};

/// Structured logs on stderr, plain text (journald and log files read them); `RUST_LOG` filters
/// them (default `info`).
pub fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}

/// veer: shift live traffic between versions of a service inside the kernel.
///
/// Exit codes: 0 success, 1 error, 2 usage, 3 timeout.
#[derive(Debug, Parser)]
#[command(name = "veer", version, propagate_version = true)]
pub struct Cli {
    #[command(flatten)]
    global: Global,
    #[command(subcommand)]
    command: Command,
}

/// Options every command takes.
#[derive(Debug, clap::Args)]
pub struct Global {
    /// Output format.
    #[arg(long, short = 'o', global = true, value_enum, default_value_t = output::Format::Human)]
    pub output: output::Format,
    /// Control socket of the daemon.
    #[arg(long, global = true, default_value = paths::SOCKET, env = "VEER_SOCKET")]
    pub socket: PathBuf,
}

impl Global {
    fn client(&self) -> Client {
        Client::new(self.socket.clone())
    }
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the daemon: load or adopt the programs, apply the config, serve the control socket.
    Daemon(daemon::Args),
    /// Check a config file without a daemon.
    Validate(validate::Args),
    /// Apply a config file as the desired state (a no-op when already in force).
    Apply(apply::Args),
    /// Show services, groups, weights, backends, flows and counters.
    Status(status::Args),
    /// Change weights: `veer shift web v1=90 v2=10`.
    Shift(shift::Args),
    /// Give a group weight 0 and, with --wait, wait until its flows end.
    Drain(drain::Args),
    /// Send a client prefix to a group whatever the weights.
    Pin(pin::PinArgs),
    /// Remove a source-prefix pin.
    Unpin(pin::UnpinArgs),
    /// List revisions, newest first.
    History(history::Args),
    /// Re-apply an earlier revision (whole, or one service of it) as a new revision.
    Rollback(rollback::Args),
    /// List conntrack entries.
    Flows(flows::Args),
    /// Progressive rollouts with health gates and automatic rollback.
    #[command(subcommand)]
    Rollout(rollout::Args),
    /// A fleet of nodes following etcd: status, history, rollouts in waves.
    #[command(subcommand)]
    Fleet(fleet::Args),
    /// Remove veer from the node: detach the programs, unpin links and maps.
    Teardown(teardown::Args),
    /// Print a shell completion script.
    Completions(completions::Args),
    /// Print the version.
    Version,
}

/// Runs `f` on a small runtime (for commands that talk to the daemon).
fn block_on<T>(f: impl std::future::Future<Output = T>) -> Result<T, exit::Failure> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| exit::Failure::error(&e))?;
    Ok(rt.block_on(f))
}

impl Cli {
    /// Runs the command; the error says what failed and what to do.
    pub fn run(self) -> Result<(), exit::Failure> {
        let g = &self.global;
        match self.command {
            Command::Daemon(args) => daemon::run(&args, g),
            Command::Validate(args) => validate::run(&args, g),
            Command::Apply(args) => apply::run(&args, g),
            Command::Status(args) => status::run(&args, g),
            Command::Shift(args) => shift::run(&args, g),
            Command::Drain(args) => drain::run(&args, g),
            Command::Pin(args) => pin::run_pin(&args, g),
            Command::Unpin(args) => pin::run_unpin(&args, g),
            Command::History(args) => history::run(&args, g),
            Command::Rollback(args) => rollback::run(&args, g),
            Command::Flows(args) => flows::run(&args, g),
            Command::Rollout(args) => rollout::run(&args, g),
            Command::Fleet(args) => fleet::run(&args, g),
            Command::Teardown(args) => teardown::run(&args, g),
            Command::Completions(args) => {
                completions::run(&args);
                Ok(())
            }
            Command::Version => output::print(
                g.output,
                &serde_json::json!({ "version": env!("CARGO_PKG_VERSION") }),
                || format!("veer {}", env!("CARGO_PKG_VERSION")),
            ),
        }
    }
}
