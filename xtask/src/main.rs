//! veer's developer tasks. Every command first runs `setup`, so a fresh machine needs nothing
//! installed by hand: `cargo xtask test` is the whole suite.

mod bench;
mod demo;
mod exec;
mod install;
mod lint;
mod run;
mod setup;
mod test;

use clap::{Parser, Subcommand};

/// veer's developer tasks.
#[derive(Parser)]
#[command(name = "cargo xtask")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Install what the eBPF build and the tests need (idempotent; the other commands run it).
    Setup,
    /// Release build of every crate, kernel programs included.
    Build,
    /// Install veer, its man pages, shell completions and systemd unit under a prefix
    /// (`--prefix /usr/local`, `--destdir` or `DESTDIR` to stage).
    Install(install::Options),
    /// The whole test suite as root: unit, kernel-program (`BPF_PROG_TEST_RUN`) and namespace tests.
    Test(test::Options),
    /// rustfmt check and clippy -D warnings, for user space and for the eBPF crate on its target.
    Lint,
    /// Release-build veer and run it with the given arguments (`cargo xtask run -- daemon ...`).
    Run(run::Options),
    /// A live cutover v1 → v2 under load on a namespace test bed, about a minute (root).
    Demo,
    /// Benchmarks against baselines, plain forwarding, `HAProxy` and nginx; writes BENCHMARKS.md (root).
    Bench(bench::Options),
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    setup::run()?;
    match cli.command {
        Command::Setup => Ok(()),
        Command::Build => exec::cargo(&[
            "build",
            "--release",
            "--locked",
            "--workspace",
            "--exclude",
            "veer-ebpf",
        ]),
        Command::Install(opts) => install::run(&opts),
        Command::Test(opts) => test::run(&opts),
        Command::Lint => lint::run(),
        Command::Run(opts) => run::run(&opts),
        Command::Demo => demo::run(),
        Command::Bench(opts) => bench::run(&opts),
    }
}
