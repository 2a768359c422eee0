//! `veer teardown`: detach and remove everything veer pinned. Established flows through veer
//! break (their conntrack goes with the maps), so it refuses while a daemon runs, unless forced.
//!
//! It removes only what veer itself pins, by name: the maps of `veer_common::maps::ALL` (and
//! those of layout 1 a migration may have left), the links `<hook>_<interface>` under `links/`
//! and the socket hooks' links there (veer pins no programs: its links hold them). And
//! only on bpffs: a pin directory on any other file system holds nothing of veer's (the kernel
//! pins only on bpffs), so teardown refuses it and deletes nothing. `--purge-state` removes
//! only the files the revision store writes.

use std::{
    fmt::Write as _,
    path::{Path, PathBuf},
};

use super::{Global, block_on, exit::Failure, output};
use crate::{
    api::protocol::VersionResponse,
    dataplane::{links, loader::is_bpffs},
    paths, state,
};

/// Arguments of `veer teardown`.
#[derive(Debug, clap::Args)]
pub(super) struct Args {
    /// Pin directory.
    #[arg(long, default_value = paths::PIN_DIR)]
    pin_dir: PathBuf,
    /// Also remove the state directory (every revision).
    #[arg(long)]
    purge_state: Option<PathBuf>,
    /// Tear down even while a daemon answers on the socket.
    #[arg(long)]
    force: bool,
}

/// Why teardown leaves a directory alone.
fn refuse(dir: &Path, why: &str) -> Failure {
    Failure::new(
        "io",
        format!("{}: {why}; nothing was removed", dir.display()),
    )
}

/// Whether `dir` is a directory of veer's to tear down: `Ok(false)` when there is nothing there,
/// an error (deleting nothing) when it is a symbolic link, not a directory, or not on bpffs.
fn on_bpffs(dir: &Path) -> Result<bool, Failure> {
    let meta = match std::fs::symlink_metadata(dir) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(refuse(dir, &format!("cannot look at it ({e})"))),
    };
    if meta.file_type().is_symlink() {
        return Err(refuse(
            dir,
            "is a symbolic link; give the pin directory itself (--pin-dir)",
        ));
    }
    if !meta.is_dir() {
        return Err(refuse(dir, "is not a directory"));
    }
    if !is_bpffs(dir) {
        return Err(refuse(
            dir,
            "is not on a BPF file system (bpffs), so it holds no pin of veer's: check --pin-dir",
        ));
    }
    Ok(true)
}

/// Removes the pin at `path` if there is one that is not a directory; says whether it did.
fn unpin(path: &Path) -> bool {
    match std::fs::symlink_metadata(path) {
        Ok(m) if !m.is_dir() => match std::fs::remove_file(path) {
            Ok(()) => true,
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "could not remove a pin");
                false
            }
        },
        _ => false,
    }
}

/// Every entry of `dir` by name (none when it cannot be listed).
fn names(dir: &Path) -> Vec<String> {
    let mut out: Vec<String> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    out.sort();
    out
}

/// Every map name veer pins: this layout's, layout 1's that layout 2 dropped, and the names a
/// migration from layout 1 sets pins aside under (left by a migration that did not finish).
fn pinned_map_names() -> Vec<String> {
    use veer_common::maps::{ALL, v1};
    let mut names: Vec<String> = ALL.iter().map(|n| (*n).to_owned()).collect();
    names.extend([v1::CONNTRACK, v1::REVNAT].map(str::to_owned));
    let set_aside: Vec<String> = names
        .iter()
        .map(|n| format!("{n}{}", v1::SET_ASIDE_SUFFIX))
        .collect();
    names.extend(set_aside);
    names
}

/// Removes links (detaching the programs), map pins and the pin directory.
pub(super) fn run(args: &Args, g: &Global) -> Result<(), Failure> {
    let running = block_on(g.client().get::<VersionResponse>("/v1/version"))?.is_ok();
    if running && !args.force {
        return Err(Failure::new(
            "conflict",
            format!(
                "a veer daemon answers on {}: stop it first (systemctl stop veer), or pass --force",
                g.socket.display()
            ),
        ));
    }
    let pin_dir = &args.pin_dir;
    let links_dir = pin_dir.join(paths::LINKS_SUBDIR);
    // Check everything before removing anything.
    let pins = on_bpffs(pin_dir)?;
    let has_links = pins && on_bpffs(&links_dir)?;
    let mut detached = Vec::new();
    let mut socket_hooks = 0;
    let mut removed = Vec::new();
    if has_links {
        detached = links::pinned_interfaces(&links_dir);
        for i in &detached {
            links::detach_interface(&links_dir, i);
        }
        socket_hooks = crate::dataplane::sockets::detach(&links_dir);
        // Links of an interface whose XDP link is gone (a crash mid-attach).
        for name in names(&links_dir) {
            if links::is_link_pin(&name) && unpin(&links_dir.join(&name)) {
                removed.push(format!("{}/{name}", paths::LINKS_SUBDIR));
            }
        }
    }
    if pins {
        for name in pinned_map_names() {
            if unpin(&pin_dir.join(&name)) {
                removed.push(name);
            }
        }
    }
    // Directories that still hold something (pins veer did not make) stay, and are named.
    let mut left = Vec::new();
    for dir in [&links_dir, pin_dir] {
        match std::fs::remove_dir(dir) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(_) => {
                for name in names(dir) {
                    if dir == pin_dir && name == paths::LINKS_SUBDIR {
                        continue;
                    }
                    left.push(dir.join(name).display().to_string());
                }
            }
        }
    }
    let purged = match &args.purge_state {
        Some(dir) => Some(state::purge(dir).map_err(|e| Failure::of("io", &e))?),
        None => None,
    };
    output::print(
        g.output,
        &serde_json::json!({
            "detached": detached,
            "socket_hooks": socket_hooks,
            "unpinned": removed,
            "left": left,
            "purged": purged.as_ref().map(|p| &p.removed),
            "left_in_state": purged.as_ref().map(|p| &p.left),
        }),
        || {
            let mut text = if pins {
                format!(
                    "detached {} interfaces and {socket_hooks} socket hooks, removed {} pins",
                    detached.len(),
                    removed.len()
                )
            } else {
                format!("nothing pinned at {}", pin_dir.display())
            };
            if !left.is_empty() {
                let _ = write!(text, "\nleft in place (not veer's): {}", left.join(", "));
            }
            if let Some(p) = &purged {
                let _ = write!(
                    text,
                    "\nremoved {} files of the state directory",
                    p.removed.len()
                );
                if !p.left.is_empty() {
                    let _ = write!(
                        text,
                        "\nleft in the state directory (not veer's): {}",
                        p.left.join(", ")
                    );
                }
            }
            text
        },
    )
}
