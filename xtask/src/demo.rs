//! `cargo xtask demo`: release-build veer and the demo (`tests/src/bin/veer-demo.rs`), then run
//! it: a live cutover v1 → v2 under load on a namespace test bed, about a minute, cleaned up at
//! the end and on Ctrl-C. Needs root.

use std::{os::unix::process::CommandExt as _, process::Command};

use anyhow::bail;

use crate::exec;

/// Builds and runs the demo in place of this process (so Ctrl-C reaches the demo alone, which
/// then removes what it created); returns only if it cannot start.
pub(crate) fn run() -> anyhow::Result<()> {
    exec::require_root("the demo", "demo")?;
    let demo = exec::build_test_program("veer-demo")?;
    let err = Command::new(&demo).exec();
    bail!("starting {}: {err}", demo.display())
}
