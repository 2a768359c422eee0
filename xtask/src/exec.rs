//! Running commands with their names in every error.

use std::process::Command;

use anyhow::{Context as _, bail};

/// Runs `cmd`, inheriting stdio; fails if it cannot start or exits non-zero.
pub(crate) fn run(cmd: &mut Command) -> anyhow::Result<()> {
    let shown = format!("{cmd:?}");
    println!("xtask: running {shown}");
    let status = cmd.status().with_context(|| format!("starting {shown}"))?;
    if !status.success() {
        bail!("{shown} failed: {status}");
    }
    Ok(())
}

/// Runs `cargo ARGS` with the cargo that runs xtask, at the workspace root.
pub(crate) fn cargo(args: &[&str]) -> anyhow::Result<()> {
    run(Command::new(cargo_bin())
        .args(args)
        .current_dir(workspace_root()))
}

/// The cargo that runs xtask (`$CARGO`), or `cargo` from PATH.
pub(crate) fn cargo_bin() -> String {
    std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned())
}

/// The workspace root (xtask's parent directory).
pub(crate) fn workspace_root() -> std::path::PathBuf {
    let manifest = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().unwrap_or(manifest).to_owned()
}

/// Whether `cmd` runs and exits 0 (output discarded).
pub(crate) fn succeeds(cmd: &mut Command) -> bool {
    cmd.stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// The effective user id.
pub(crate) fn euid() -> anyhow::Result<u32> {
    let out = Command::new("id")
        .arg("-u")
        .output()
        .context("running `id -u`")?;
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .context("parsing `id -u`")
}

/// Fails unless root: `what` (the demo, the benchmarks) builds namespaces and loads BPF.
pub(crate) fn require_root(what: &str, command: &str) -> anyhow::Result<()> {
    if euid()? != 0 {
        anyhow::bail!(
            "{what} build network namespaces and load BPF programs: run `sudo -E cargo xtask {command}`"
        );
    }
    Ok(())
}

/// Release-builds `veer` and the `veer-tests` program `bin` (the demo, the benchmarks), and
/// returns the program's path.
pub(crate) fn build_test_program(bin: &str) -> anyhow::Result<std::path::PathBuf> {
    cargo(&[
        "build",
        "--release",
        "--locked",
        "--package",
        "veer",
        "--bin",
        "veer",
        "--package",
        "veer-tests",
        "--bin",
        bin,
    ])?;
    Ok(target_dir().join("release").join(bin))
}

/// Cargo's target directory: `$CARGO_TARGET_DIR` (relative to the workspace root when relative),
/// else `target/` at the workspace root.
pub(crate) fn target_dir() -> std::path::PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) if !dir.is_empty() => workspace_root().join(dir),
        _ => workspace_root().join("target"),
    }
}
