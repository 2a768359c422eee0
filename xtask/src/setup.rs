//! Idempotent installation of what a fresh Debian machine lacks for veer: the nightly `rust-src`
//! component and `bpf-linker` built against LLVM 22 (the eBPF build), `protoc` (the `etcd-client`
//! crate generates its gRPC code at build time), and the tools the tests drive (`ip`, `ethtool`,
//! `nsenter`, `sysctl`, `etcd`). Each step says what it found or did.

use std::{path::Path, process::Command};

use anyhow::{Context as _, bail};

use crate::exec;

/// LLVM major version bpf-linker is built against (the nightly's LLVM).
const LLVM_MAJOR: u32 = 22;
/// bpf-linker release known to build against LLVM 22 and to link aya-ebpf 0.2.
const BPF_LINKER_VERSION: &str = "0.13.0";
/// Debian packages the test bed uses, with the command that shows each is present.
/// (`setpriv`, for the non-root peer test, comes with util-linux.)
const TEST_TOOLS: [(&str, &str); 10] = [
    ("ip", "iproute2"),
    ("ethtool", "ethtool"),
    ("nsenter", "util-linux"),
    ("sysctl", "procps"),
    ("bpftool", "bpftool"),
    // The `prometheus:` rollout gate is tested against a real server; `promtool` (same package)
    // checks what /metrics answers.
    ("prometheus", "prometheus"),
    // The systemd unit's hardening is measured (`systemd-analyze security --offline=true`).
    ("systemd-analyze", "systemd"),
    // The fleet tests start a real etcd (Debian 12 ships 3.4); `etcdctl` is packaged apart and
    // is what an operator uses to set up the roles the README documents.
    ("etcd", "etcd-server"),
    ("etcdctl", "etcd-client"),
    // Build tool, not a test tool: `etcd-client`'s build script runs `protoc` (prost-build no
    // longer bundles it), and the etcd protos import `google/protobuf/*.proto`, which Debian
    // ships in `libprotobuf-dev` (only recommended by `protobuf-compiler`, and setup installs
    // without recommends).
    ("protoc", "protobuf-compiler"),
];
/// `google/protobuf/descriptor.proto`, imported by the etcd protos.
const PROTOBUF_INCLUDE: (&str, &str) = (
    "/usr/include/google/protobuf/descriptor.proto",
    "libprotobuf-dev",
);

/// Runs every setup step.
pub(crate) fn run() -> anyhow::Result<()> {
    rust_src()?;
    let mut missing: Vec<&str> = Vec::new();
    let llvm_dir = format!("/usr/lib/llvm-{LLVM_MAJOR}");
    if Path::new(&llvm_dir).join("bin/llvm-config").exists() {
        println!("setup: llvm-{LLVM_MAJOR}-dev is installed");
    } else {
        missing.push("llvm-22-dev");
    }
    for (cmd, pkg) in TEST_TOOLS {
        if which(cmd) {
            println!("setup: {cmd} is installed");
        } else {
            missing.push(pkg);
        }
    }
    let (proto, pkg) = PROTOBUF_INCLUDE;
    if Path::new(proto).exists() {
        println!("setup: {pkg} is installed");
    } else {
        missing.push(pkg);
    }
    apt_install(&missing)?;
    bpf_linker(&llvm_dir)
}

fn which(cmd: &str) -> bool {
    exec::succeeds(Command::new("sh").args(["-c", &format!("command -v {cmd}")]))
}

fn rust_src() -> anyhow::Result<()> {
    let installed = Command::new("rustup")
        .args(["component", "list", "--toolchain", "nightly", "--installed"])
        .output()
        .context("running rustup (veer builds its kernel programs with the nightly toolchain)")?;
    if !installed.status.success() {
        println!("setup: installing the nightly toolchain");
        exec::run(Command::new("rustup").args([
            "toolchain",
            "install",
            "nightly",
            "--profile",
            "minimal",
        ]))?;
    }
    let listed = String::from_utf8_lossy(&installed.stdout);
    if listed.lines().any(|l| l.starts_with("rust-src")) {
        println!("setup: nightly rust-src is installed");
        return Ok(());
    }
    println!("setup: adding rust-src to the nightly toolchain");
    exec::run(Command::new("rustup").args([
        "component",
        "add",
        "rust-src",
        "--toolchain",
        "nightly",
    ]))
}

fn apt_install(packages: &[&str]) -> anyhow::Result<()> {
    if packages.is_empty() {
        return Ok(());
    }
    if exec::euid()? != 0 {
        bail!(
            "missing Debian packages {}: run `cargo xtask setup` as root, or `apt-get install -y {}`",
            packages.join(", "),
            packages.join(" ")
        );
    }
    println!("setup: installing {} with apt-get", packages.join(", "));
    exec::run(Command::new("apt-get").args(["update", "-q"]))?;
    exec::run(
        Command::new("apt-get")
            .args(["install", "-y", "-q", "--no-install-recommends"])
            .args(packages)
            .env("DEBIAN_FRONTEND", "noninteractive"),
    )
}

fn bpf_linker(llvm_dir: &str) -> anyhow::Result<()> {
    let version = Command::new("bpf-linker").arg("--version").output();
    if let Ok(out) = &version
        && out.status.success()
    {
        println!(
            "setup: {} is installed",
            String::from_utf8_lossy(&out.stdout).trim()
        );
        return Ok(());
    }
    println!(
        "setup: building bpf-linker {BPF_LINKER_VERSION} against LLVM {LLVM_MAJOR} (a few minutes, once)"
    );
    let path = format!(
        "{llvm_dir}/bin:{}",
        std::env::var("PATH").unwrap_or_default()
    );
    exec::run(
        Command::new(exec::cargo_bin())
            .args([
                "install",
                "bpf-linker",
                "--version",
                BPF_LINKER_VERSION,
                "--no-default-features",
                "--features",
                &format!("llvm-{LLVM_MAJOR}"),
            ])
            .env("PATH", path),
    )
}
