//! The single builder of veer's kernel object: builds `veer-ebpf` for the BPF target through
//! aya-build and leaves it at `$OUT_DIR/veer-ebpf`, which `veer::EBPF_OBJECT` embeds.
//!
//! `AYA_BUILD_SKIP=1` skips the eBPF build (for clippy or docs where bpf-linker is absent); aya-build
//! then writes nothing, so a zero-length stub is written instead and loading it fails clearly at
//! run time.

use std::{env, fs, path::PathBuf};

use anyhow::{Context as _, anyhow};

const EBPF_PACKAGE: &str = "veer-ebpf";
/// The second binary of `veer-ebpf`: baseline programs for `cargo xtask bench`.
const BENCH_BIN: &str = "veer-bench";

fn main() -> anyhow::Result<()> {
    let out_dir = PathBuf::from(env::var_os("OUT_DIR").context("OUT_DIR is not set")?);
    let skip = env::var("AYA_BUILD_SKIP").is_ok_and(|v| v == "1" || v.eq_ignore_ascii_case("true"));
    if skip {
        for bin in [EBPF_PACKAGE, BENCH_BIN] {
            let stub = out_dir.join(bin);
            fs::write(&stub, [])
                .with_context(|| format!("writing eBPF stub {}", stub.display()))?;
        }
        println!("cargo:rerun-if-env-changed=AYA_BUILD_SKIP");
        return Ok(());
    }
    let manifest_dir =
        PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").context("CARGO_MANIFEST_DIR is not set")?);
    let root_dir = manifest_dir
        .parent()
        .ok_or_else(|| anyhow!("{} has no parent", manifest_dir.display()))?
        .join("ebpf");
    let root_dir = root_dir
        .to_str()
        .ok_or_else(|| anyhow!("{} is not UTF-8", root_dir.display()))?;
    println!("cargo:rerun-if-changed=../common/src");
    aya_build::build_ebpf(
        [aya_build::Package {
            name: EBPF_PACKAGE,
            root_dir,
            ..Default::default()
        }],
        aya_build::Toolchain::Nightly,
    )
    .context(
        "building the eBPF programs (run `cargo xtask setup` if bpf-linker or rust-src is missing)",
    )
}
