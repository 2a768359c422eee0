//! `veer daemon`.

use std::{net::SocketAddr, path::PathBuf};

use super::{Global, exit::Failure};
use crate::{api::server::Access, control, paths, supervisor};

/// Arguments of `veer daemon`.
#[derive(Debug, clap::Args)]
pub(super) struct Args {
    /// Config file (TOML). Applied at start and on SIGHUP or change, when its content differs
    /// from the content last applied.
    #[arg(long, short = 'c', default_value = paths::CONFIG)]
    config: PathBuf,
    /// State directory (revisions).
    #[arg(long, default_value = paths::STATE_DIR)]
    state_dir: PathBuf,
    /// Where maps and links are pinned (bpffs is mounted at its parent when missing).
    #[arg(long, default_value = paths::PIN_DIR)]
    pin_dir: PathBuf,
    /// Prometheus metrics address; `off` disables it.
    #[arg(long, default_value = paths::METRICS)]
    metrics: String,
    /// Group (name or gid) whose members may use the control socket besides root.
    #[arg(long)]
    socket_group: Option<String>,
}

/// Resolves a group name or number to a gid.
fn gid(group: &str) -> Result<u32, Failure> {
    if let Ok(n) = group.parse() {
        return Ok(n);
    }
    let name = std::ffi::CString::new(group)
        .map_err(|_| Failure::usage(format!("--socket-group {group:?}: not a group name")))?;
    // SAFETY: getgrnam reads a NUL-terminated name; the result is read at once, before any
    // other call could reuse its static buffer.
    let gr = unsafe { libc::getgrnam(name.as_ptr()) };
    if gr.is_null() {
        return Err(Failure::usage(format!(
            "--socket-group {group}: no such group"
        )));
    }
    // SAFETY: non-null pointer to the group entry getgrnam just returned.
    Ok(unsafe { (*gr).gr_gid })
}

/// Runs the daemon in the foreground.
pub(super) fn run(args: &Args, g: &Global) -> Result<(), Failure> {
    let metrics = match args.metrics.as_str() {
        "off" => None,
        a => Some(
            a.parse::<SocketAddr>()
                .map_err(|e| Failure::usage(format!("--metrics {a}: {e} (want ip:port or off)")))?,
        ),
    };
    supervisor::run(supervisor::DaemonOptions {
        control: control::Options {
            config: args.config.clone(),
            state_dir: args.state_dir.clone(),
            pin_dir: args.pin_dir.clone(),
            etcd: None,
        },
        socket: g.socket.clone(),
        access: Access {
            gid: args.socket_group.as_deref().map(gid).transpose()?,
        },
        metrics,
    })
    .map_err(|e| Failure::error(&e))
}
