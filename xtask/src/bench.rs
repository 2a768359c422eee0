//! `cargo xtask bench`: installs what the benchmarks drive (`wrk`, `haproxy`, `nginx`, `nft`,
//! `bpftool`, from Debian), release-builds veer and `tests/src/bin/veer-bench/`, runs it, and leaves its report
//! in `BENCHMARKS.md` at the workspace root. About eight minutes; needs root.

use std::{path::Path, process::Command};

use anyhow::Context as _;

use crate::exec;

/// Options for `cargo xtask bench`.
#[derive(clap::Args)]
pub(crate) struct Options {
    /// Passed to `veer-bench` (`--quick`, `--only 1,3`, `--out FILE`).
    #[arg(last = true)]
    args: Vec<String>,
}

/// Debian packages the benchmarks run, with the command that shows each is present.
const TOOLS: [(&str, &str); 5] = [
    ("wrk", "wrk"),
    ("haproxy", "haproxy"),
    ("nginx", "nginx"),
    ("nft", "nftables"),
    ("bpftool", "bpftool"),
];

/// Where Debian's maintainer scripts ask whether they may start a service.
const POLICY_RC_D: &str = "/usr/sbin/policy-rc.d";

/// Installs the missing tools, builds, runs the benchmarks; exits with their exit code.
pub(crate) fn run(opts: &Options) -> anyhow::Result<()> {
    exec::require_root("the benchmarks", "bench")?;
    install_tools()?;
    let bench = exec::build_test_program("veer-bench")?;
    let out = exec::workspace_root().join("BENCHMARKS.md");
    let mut cmd = Command::new(&bench);
    cmd.arg("--out")
        .arg(&out)
        .args(&opts.args)
        .current_dir(exec::workspace_root());
    println!("xtask: running {cmd:?}");
    let status = cmd
        .status()
        .with_context(|| format!("starting {}", bench.display()))?;
    std::process::exit(status.code().unwrap_or(1));
}

/// `apt-get install` of the tools that are missing. Installing nginx or `HAProxy` would start
/// them as system services on machines with an init system; a temporary `policy-rc.d` that
/// denies starts (the Debian mechanism for this) prevents it, and is removed afterwards.
fn install_tools() -> anyhow::Result<()> {
    let missing: Vec<&str> = TOOLS
        .iter()
        .filter(|(cmd, _)| {
            let present =
                exec::succeeds(Command::new("sh").args(["-c", &format!("command -v {cmd}")]));
            if present {
                println!("bench: {cmd} is installed");
            }
            !present
        })
        .map(|(_, pkg)| *pkg)
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    println!("bench: installing {} with apt-get", missing.join(", "));
    let policy = Path::new(POLICY_RC_D);
    let ours = !policy.exists();
    if ours {
        std::fs::write(
            policy,
            "#!/bin/sh\n# cargo xtask bench: no service starts during install\nexit 101\n",
        )
        .and_then(|()| {
            std::fs::set_permissions(policy, std::os::unix::fs::PermissionsExt::from_mode(0o755))
        })
        .with_context(|| format!("writing {POLICY_RC_D}"))?;
    }
    let result = exec::run(Command::new("apt-get").args(["update", "-q"])).and_then(|()| {
        exec::run(
            Command::new("apt-get")
                .args(["install", "-y", "-q", "--no-install-recommends"])
                .args(&missing)
                .env("DEBIAN_FRONTEND", "noninteractive"),
        )
    });
    if ours {
        std::fs::remove_file(policy).with_context(|| format!("removing {POLICY_RC_D}"))?;
    }
    result
}
