//! Formatting and clippy, for user space and for the eBPF crate on its own target.

use std::process::Command;

use crate::exec;

/// `cargo fmt --check`, clippy `-D warnings` on the host crates, clippy on `ebpf/` for
/// `bpfel-unknown-none` with the nightly toolchain (ebpf/.cargo/config.toml sets the target and
/// `build-std`).
pub(crate) fn run() -> anyhow::Result<()> {
    exec::cargo(&["fmt", "--all", "--check"])?;
    exec::cargo(&[
        "clippy",
        "--locked",
        "--workspace",
        "--exclude",
        "veer-ebpf",
        "--all-targets",
        "--",
        "-D",
        "warnings",
    ])?;
    exec::run(
        Command::new("cargo")
            .args(["+nightly", "clippy", "--locked", "--", "-D", "warnings"])
            .current_dir(exec::workspace_root().join("ebpf"))
            // The host cargo's variables would pin the stable toolchain for the nested call.
            .env_remove("RUSTUP_TOOLCHAIN")
            .env_remove("CARGO")
            .env_remove("RUSTC"),
    )
}
