//! The whole test suite. Refuses, with the reason, where it cannot run for real: veer's kernel
//! and namespace tests never skip silently.

use std::{path::Path, process::Command};

use anyhow::bail;

use crate::exec;

/// Options for `cargo xtask test`.
#[derive(clap::Args)]
pub(crate) struct Options {
    /// Passed to the test binaries (a test name filter, `--nocapture` ...).
    #[arg(last = true)]
    test_args: Vec<String>,
}

/// Checks the prerequisites, then runs every test of every crate.
pub(crate) fn run(opts: &Options) -> anyhow::Result<()> {
    if exec::euid()? != 0 {
        bail!(
            "veer's tests load BPF programs and build network namespaces: they need root. \
             Run `sudo -E cargo xtask test` (nothing is skipped, so nothing runs without it)"
        );
    }
    if !Path::new("/sys/kernel/btf/vmlinux").exists() {
        bail!(
            "this kernel has no BTF (/sys/kernel/btf/vmlinux is missing); veer needs Linux >= 5.15 built with CONFIG_DEBUG_INFO_BTF"
        );
    }
    if !exec::succeeds(Command::new("ip").args(["netns", "list"])) {
        bail!("`ip netns list` fails: network namespaces are unavailable");
    }
    // The daemon tests run the real `veer` binary; `cargo test` builds only what it tests.
    exec::cargo(&["build", "--locked", "--package", "veer", "--bin", "veer"])?;
    let mut args = vec![
        "test",
        "--locked",
        "--workspace",
        "--exclude",
        "veer-ebpf",
        "--all-targets",
    ];
    if !opts.test_args.is_empty() {
        args.push("--");
        args.extend(opts.test_args.iter().map(String::as_str));
    }
    exec::cargo(&args)
}
