//! Man pages, generated from the same clap definitions as `--help` (`clap_mangen`): `veer.1`,
//! and `veer-SUBCOMMAND.1` for each subcommand (`veer-rollout-start.1` ...), each with its
//! examples, exit status, environment, files and see-also. `veer man --dir DIR` writes them;
//! `cargo xtask install` puts them under `PREFIX/share/man/man1`.

use std::path::{Path, PathBuf};

use clap::CommandFactory as _;
use clap_mangen::Man;

use super::{Global, exit::Failure, output};

/// Arguments of `veer man`.
#[derive(Debug, clap::Args)]
pub(super) struct Args {
    /// Directory to write the pages to (created if missing).
    #[arg(long)]
    dir: PathBuf,
}

/// One man page: its file name and its roff text.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Page {
    /// `veer-rollout-start.1`.
    pub file: String,
    /// The page.
    pub roff: String,
}

/// Every page: `veer` first, then every visible subcommand, depth first.
pub fn pages() -> Result<Vec<Page>, std::io::Error> {
    let mut root = super::Cli::command().disable_help_subcommand(true);
    root.build();
    let mut out = Vec::new();
    let mut all = Vec::new();
    collect(&root, &mut all);
    let names: Vec<String> = all.iter().map(|c| page_name(c)).collect();
    for cmd in all {
        out.push(page(cmd, &names)?);
    }
    Ok(out)
}

/// `cmd` and every visible subcommand below it.
fn collect<'a>(cmd: &'a clap::Command, out: &mut Vec<&'a clap::Command>) {
    out.push(cmd);
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        collect(sub, out);
    }
}

/// `veer-rollout-start` (clap's display name of a built subcommand).
fn page_name(cmd: &clap::Command) -> String {
    cmd.get_display_name()
        .unwrap_or_else(|| cmd.get_name())
        .to_owned()
}

fn page(cmd: &clap::Command, all: &[String]) -> Result<Page, std::io::Error> {
    let name = page_name(cmd);
    // The examples get a section of their own (preformatted), not clap_mangen's EXTRA.
    let examples = cmd.get_after_help().map(ToString::to_string);
    let man = Man::new(
        cmd.clone()
            .after_help(None::<&str>)
            .after_long_help(None::<&str>),
    )
    .title(name.to_uppercase())
    .manual("veer manual")
    .source(format!("veer {}", env!("CARGO_PKG_VERSION")));
    let mut buf = Vec::new();
    man.render_title(&mut buf)?;
    man.render_name_section(&mut buf)?;
    man.render_synopsis_section(&mut buf)?;
    man.render_description_section(&mut buf)?;
    if cmd.get_arguments().any(|a| !a.is_hide_set()) {
        man.render_options_section(&mut buf)?;
    }
    if cmd.has_subcommands() {
        man.render_subcommands_section(&mut buf)?;
    }
    let mut roff = String::from_utf8_lossy(&buf).into_owned();
    if let Some(text) = examples {
        roff.push_str(".SH EXAMPLES\n.nf\n");
        for line in text.lines().skip_while(|l| l.trim_end() == "Examples:") {
            roff.push_str(&escape(line));
            roff.push('\n');
        }
        roff.push_str(".fi\n");
    }
    roff.push_str(&escape_block(EXIT_STATUS));
    if name == "veer" {
        roff.push_str(&escape_block(ENVIRONMENT));
        roff.push_str(&escape_block(FILES));
    }
    roff.push_str(".SH SEE ALSO\n");
    let see: Vec<String> = all
        .iter()
        .filter(|n| **n != name && (name == "veer" || **n == "veer" || is_family(&name, n)))
        .map(|n| format!("\\fB{n}\\fR(1)"))
        .collect();
    roff.push_str(&see.join(", "));
    roff.push_str(", \\fBsystemd.service\\fR(5)\n");
    Ok(Page {
        file: format!("{name}.1"),
        roff,
    })
}

/// Whether `other` is a parent, child or sibling page of `name` (`veer-rollout` and
/// `veer-rollout-start`).
fn is_family(name: &str, other: &str) -> bool {
    let parent = |n: &str| n.rsplit_once('-').map(|(p, _)| p.to_owned());
    other.starts_with(&format!("{name}-"))
        || name.starts_with(&format!("{other}-"))
        || (parent(name) == parent(other) && parent(name).as_deref() != Some("veer"))
}

/// A line of text as roff shows it: backslashes escaped, a leading `.` or `'` protected.
fn escape(line: &str) -> String {
    let line = line.replace('\\', "\\e");
    if line.starts_with('.') || line.starts_with('\'') {
        format!("\\&{line}")
    } else {
        line
    }
}

/// A section (`NAME\ntext...`) as roff: `.SH NAME`, then its paragraphs.
fn escape_block(block: &str) -> String {
    let mut lines = block.lines();
    let mut out = format!(".SH {}\n", lines.next().unwrap_or_default());
    for l in lines {
        if l.is_empty() {
            out.push_str(".PP\n");
        } else {
            out.push_str(&escape(l));
            out.push('\n');
        }
    }
    out
}

const EXIT_STATUS: &str = "\
EXIT STATUS
0 success (or the end state already held: nothing to change);
1 error (the message says what, where and what to do);
2 usage (bad flags or arguments);
3 timeout (drain --wait).

With --output json a failure is also one JSON object on stdout:
{\"error\": {\"kind\": \"...\", \"message\": \"...\", \"exit_code\": N}}.";

const ENVIRONMENT: &str = "\
ENVIRONMENT
VEER_SOCKET: the control socket (as --socket).

RUST_LOG: what the daemon logs (default info).

NOTIFY_SOCKET: set by systemd for Type=notify; the daemon sends READY=1 once its programs are attached and the socket serves, STOPPING=1 when it stops.";

const FILES: &str = "\
FILES
/etc/veer/veer.toml: the config file.

/var/lib/veer/revisions/: every revision (who made it, why, what).

/run/veer/veer.sock: the control socket.

/sys/fs/bpf/veer/: pinned maps and links.";

/// Writes every page to `args.dir`.
pub(super) fn run(args: &Args, g: &Global) -> Result<(), Failure> {
    let written = write_all(&args.dir).map_err(|e| Failure::of("io", &e))?;
    output::print(
        g.output,
        &serde_json::json!({ "dir": args.dir, "pages": written }),
        || {
            format!(
                "{} man pages written to {}",
                written.len(),
                args.dir.display()
            )
        },
    )
}

/// Writes every page to `dir`; returns their file names.
pub fn write_all(dir: &Path) -> Result<Vec<String>, std::io::Error> {
    std::fs::create_dir_all(dir)?;
    let mut written = Vec::new();
    for p in pages()? {
        std::fs::write(dir.join(&p.file), &p.roff)?;
        written.push(p.file);
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_visible_command_has_a_page_with_examples() {
        let pages = pages().unwrap();
        let names: Vec<&str> = pages.iter().map(|p| p.file.as_str()).collect();
        for expected in [
            "veer.1",
            "veer-apply.1",
            "veer-diff.1",
            "veer-status.1",
            "veer-rollout.1",
            "veer-rollout-start.1",
            "veer-rollout-promote.1",
            "veer-rollout-retry.1",
        ] {
            assert!(
                names.contains(&expected),
                "{expected} missing from {names:?}"
            );
        }
        assert!(
            !names.contains(&"veer-man.1"),
            "a hidden command has no page"
        );
        for p in &pages {
            let title = p.file.trim_end_matches(".1").to_uppercase();
            assert!(
                p.roff.contains(&format!("\n.TH {title} 1")),
                "{}: {}",
                p.file,
                p.roff
            );
            assert!(p.roff.contains(".SH EXAMPLES\n.nf\n"), "{}", p.file);
            assert!(p.roff.contains(".SH EXIT STATUS"), "{}", p.file);
            assert!(p.roff.contains(".SH SEE ALSO"), "{}", p.file);
        }
        let start = pages
            .iter()
            .find(|p| p.file == "veer-rollout-start.1")
            .unwrap();
        assert!(
            start.roff.contains("veer rollout start web \\-\\-to v2")
                || start.roff.contains("veer rollout start web --to v2"),
            "{}",
            start.roff
        );
    }

    #[test]
    fn every_subcommand_help_ends_with_examples() {
        fn check(cmd: &clap::Command, path: &str) {
            let help = cmd
                .get_after_help()
                .map(ToString::to_string)
                .unwrap_or_default();
            assert!(
                help.starts_with("Examples:\n")
                    && help.lines().any(|l| l.trim_start().starts_with("veer ")),
                "`{path} --help` has no Examples section"
            );
            for sub in cmd.get_subcommands().filter(|s| s.get_name() != "help") {
                check(sub, &format!("{path} {}", sub.get_name()));
            }
        }
        check(&super::super::Cli::command(), "veer");
    }
}
