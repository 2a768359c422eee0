//! The `veer` command line: one file per subcommand, each a thin adapter over the library (the
//! daemon's control API for live operations, `config` for offline validation, the pinned maps
//! for `status --offline`).
//!
//! Every subcommand's `--help` ends with examples (`examples`), which the man pages (`man`)
//! show too. With `--output json`, every command prints one JSON document on stdout (a stream
//! of one object per line for `--watch` and `rollout start --wait`), a failure included:
//! `{"error": {"kind", "message", "exit_code", ...}}` (`exit::Failure::to_json`).

mod apply;
mod change;
mod completions;
mod daemon;
mod diff;
mod drain;
pub mod examples;
pub mod exit;
mod fleet;
mod flows;
mod history;
mod live;
pub mod man;
pub mod output;
mod pin;
mod rollback;
mod rollout;
mod shift;
mod status;
mod teardown;
mod validate;

use std::{ffi::OsString, path::PathBuf, process::ExitCode};

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
#[command(
    name = "veer",
    version,
    propagate_version = true,
    after_help = examples::VEER
)]
pub struct Cli {
    #[command(flatten)]
    global: Global,
    #[command(subcommand)]
    command: Command,
}

/// Options every command takes.
#[derive(Debug, clap::Args)]
pub struct Global {
    /// Output format: `human`, or `json` for scripts (errors too, on stdout).
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
    #[command(after_help = examples::DAEMON)]
    Daemon(daemon::Args),
    /// Check a config file without a daemon: every problem, with its line.
    #[command(after_help = examples::VALIDATE)]
    Validate(validate::Args),
    /// Apply a config file as the desired state (a no-op when already in force).
    #[command(after_help = examples::APPLY)]
    Apply(apply::Args),
    /// Show what applying a config file would change, changing nothing.
    #[command(after_help = examples::DIFF)]
    Diff(diff::Args),
    /// Show services, groups, weights, backends, flows and counters.
    #[command(after_help = examples::STATUS)]
    Status(status::Args),
    /// Change weights: `veer shift web v1=90 v2=10`.
    #[command(after_help = examples::SHIFT)]
    Shift(shift::Args),
    /// Give a group weight 0 and, with --wait, wait until its flows end.
    #[command(after_help = examples::DRAIN)]
    Drain(drain::Args),
    /// Send a client prefix to a group whatever the weights.
    #[command(after_help = examples::PIN)]
    Pin(pin::PinArgs),
    /// Remove a source-prefix pin.
    #[command(after_help = examples::UNPIN)]
    Unpin(pin::UnpinArgs),
    /// List revisions, newest first: when, where from, who, why, what.
    #[command(after_help = examples::HISTORY)]
    History(history::Args),
    /// Re-apply an earlier revision (whole, or one service of it) as a new revision.
    #[command(after_help = examples::ROLLBACK)]
    Rollback(rollback::Args),
    /// List conntrack entries.
    #[command(after_help = examples::FLOWS)]
    Flows(flows::Args),
    /// Progressive rollouts with health gates and automatic rollback.
    #[command(subcommand, after_help = examples::ROLLOUT)]
    Rollout(rollout::Args),
    /// A fleet of nodes following etcd: status, history, rollouts in waves.
    #[command(subcommand, after_help = examples::FLEET)]
    Fleet(fleet::Args),
    /// Remove veer from the node: detach the programs, unpin links and maps.
    #[command(after_help = examples::TEARDOWN)]
    Teardown(teardown::Args),
    /// Print a shell completion script.
    #[command(after_help = examples::COMPLETIONS)]
    Completions(completions::Args),
    /// Write the man pages (veer.1 and one per subcommand) to a directory.
    #[command(hide = true, after_help = examples::MAN)]
    Man(man::Args),
    /// Print the version.
    #[command(after_help = examples::VERSION)]
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
            Command::Diff(args) => diff::run(&args, g),
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
            Command::Man(args) => man::run(&args, g),
            Command::Version => output::print(
                g.output,
                &serde_json::json!({ "version": env!("CARGO_PKG_VERSION") }),
                || format!("veer {}", env!("CARGO_PKG_VERSION")),
            ),
        }
    }
}

/// Whether the arguments ask for JSON output (read before clap parses them, so that a usage
/// error can be answered in JSON too).
fn json_requested(args: &[OsString]) -> bool {
    args.iter().enumerate().any(|(i, a)| {
        let a = a.to_string_lossy();
        a == "--output=json"
            || a == "-ojson"
            || a == "-o=json"
            || ((a == "--output" || a == "-o")
                && args
                    .get(i + 1)
                    .is_some_and(|v| v.to_string_lossy() == "json"))
    })
}

/// The `veer` binary: parses the command line, runs it, prints the failure (on stderr, and as
/// JSON on stdout with `--output json`) and returns the exit code.
pub fn main() -> ExitCode {
    let args: Vec<OsString> = std::env::args_os().collect();
    let json = json_requested(&args);
    let cli = match Cli::try_parse_from(&args) {
        Ok(cli) => cli,
        Err(e) => {
            use clap::error::ErrorKind;
            let shows_help = matches!(
                e.kind(),
                ErrorKind::DisplayHelp
                    | ErrorKind::DisplayVersion
                    | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
            );
            if json && !shows_help {
                // clap's first paragraph on one line, without its `error: ` prefix.
                let rendered = e.render().to_string();
                let first = rendered.split("\n\n").next().unwrap_or_default();
                let first = first.strip_prefix("error: ").unwrap_or(first);
                let message = first.split_whitespace().collect::<Vec<_>>().join(" ");
                println!("{}", exit::Failure::usage(message).to_json());
            }
            // clap prints the usage (stderr) or the help (stdout) and says how to exit.
            drop(e.print());
            return ExitCode::from(if e.use_stderr() {
                exit::USAGE
            } else {
                exit::OK
            });
        }
    };
    init_logging();
    match cli.run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => {
            if json {
                println!("{}", failure.to_json());
            }
            match &failure.report {
                Some(report) => eprintln!("{}", report.trim_end()),
                None => eprintln!("veer: {}", failure.message),
            }
            failure.exit_code()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_is_seen_before_parsing_in_every_spelling() {
        let args = |a: &[&str]| a.iter().map(OsString::from).collect::<Vec<_>>();
        for a in [
            &["veer", "-o", "json", "shift"][..],
            &["veer", "shift", "--output", "json"],
            &["veer", "--output=json"],
            &["veer", "-ojson"],
        ] {
            assert!(json_requested(&args(a)), "{a:?}");
        }
        assert!(!json_requested(&args(&["veer", "status", "json"])));
        assert!(!json_requested(&args(&["veer", "-o", "human"])));
    }
}
