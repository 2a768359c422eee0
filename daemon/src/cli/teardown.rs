//! `veer teardown`: detach and remove everything veer pinned. Established flows through veer
//! break (their conntrack goes with the maps), so it refuses while a daemon runs, unless forced.

use std::path::PathBuf;

use super::{Global, block_on, exit::Failure, output};
use crate::{api::protocol::VersionResponse, dataplane::links, paths};

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
    let links_dir = args.pin_dir.join(paths::LINKS_SUBDIR);
    let interfaces = links::pinned_interfaces(&links_dir);
    for i in &interfaces {
        links::detach_interface(&links_dir, i);
    }
    let mut removed = Vec::new();
    for entry in std::fs::read_dir(&args.pin_dir)
        .into_iter()
        .flatten()
        .flatten()
    {
        let p = entry.path();
        if p.is_file() && std::fs::remove_file(&p).is_ok() {
            removed.push(p.display().to_string());
        }
    }
    // Directories that still hold something (pins veer did not make) stay.
    for dir in [&links_dir, &args.pin_dir] {
        if let Err(e) = std::fs::remove_dir(dir)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!(dir = %dir.display(), error = %e, "left in place");
        }
    }
    if let Some(dir) = &args.purge_state {
        std::fs::remove_dir_all(dir).map_err(|e| Failure::of("io", &e))?;
    }
    output::print(
        g.output,
        &serde_json::json!({ "detached": interfaces, "unpinned": removed }),
        || {
            format!(
                "detached {} interfaces, removed {} pinned maps",
                interfaces.len(),
                removed.len()
            )
        },
    )
}
