//! `veer completions SHELL`.

use clap::CommandFactory as _;

/// Arguments of `veer completions`.
#[derive(Debug, clap::Args)]
pub(super) struct Args {
    /// The shell to write completions for.
    shell: clap_complete::Shell,
}

/// Prints the completion script.
pub(super) fn run(args: &Args) {
    clap_complete::generate(
        args.shell,
        &mut super::Cli::command(),
        "veer",
        &mut std::io::stdout(),
    );
}
