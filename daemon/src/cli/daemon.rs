//! `veer daemon`: load (or adopt) the kernel programs and maps pinned under the pin directory,
//! attach them to the node's interfaces, and run until SIGINT or SIGTERM.

use std::path::PathBuf;

use crate::{
    cli::exit::Failure,
    dataplane::{
        Dataplane,
        loader::{LoadOptions, XdpAttachMode},
    },
};

/// XDP attach mode.
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
enum Mode {
    /// Native where the driver supports it, generic otherwise.
    Auto,
    /// Native (driver) mode only.
    Native,
    /// Generic (skb) mode only.
    Generic,
}

/// Arguments of `veer daemon`.
#[derive(Debug, clap::Args)]
pub(super) struct Args {
    /// Interface to attach to (repeat for several).
    #[arg(long = "interface", short = 'i', value_name = "IFNAME")]
    interfaces: Vec<String>,
    /// XDP attach mode.
    #[arg(long, value_enum, default_value_t = Mode::Auto)]
    xdp_mode: Mode,
    /// Where maps are pinned (bpffs is mounted at its parent when missing).
    #[arg(long, default_value = "/sys/fs/bpf/veer")]
    pin_dir: PathBuf,
    /// Conntrack capacity (entries).
    #[arg(long, default_value_t = veer_common::maps::DEFAULT_CONNTRACK_MAX)]
    conntrack_max: u32,
}

/// Runs the daemon in the foreground.
pub(super) fn run(args: &Args) -> Result<(), Failure> {
    let opts = LoadOptions {
        pin_dir: Some(args.pin_dir.clone()),
        conntrack_max: args.conntrack_max,
    };
    let mut dataplane = Dataplane::load(&opts).map_err(|e| Failure::error(&e))?;
    let mode = match args.xdp_mode {
        Mode::Auto => XdpAttachMode::Auto,
        Mode::Native => XdpAttachMode::Native,
        Mode::Generic => XdpAttachMode::Generic,
    };
    for ifname in &args.interfaces {
        let used = dataplane
            .attach(ifname, mode)
            .map_err(|e| Failure::error(&e))?;
        tracing::info!(interface = %ifname, xdp_mode = ?used, "attached");
    }
    tracing::info!(pin_dir = %args.pin_dir.display(), "veer daemon running; SIGINT or SIGTERM stops it");
    wait_for_stop_signal().map_err(|e| Failure::error(&e))?;
    tracing::info!("stopping");
    Ok(())
}

/// Blocks until SIGINT or SIGTERM.
fn wait_for_stop_signal() -> std::io::Result<()> {
    // SAFETY: plain libc signal-set calls on a local, fully initialised set; the signals are
    // blocked in this (the only) thread before waiting, as sigwait requires.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&raw mut set);
        libc::sigaddset(&raw mut set, libc::SIGINT);
        libc::sigaddset(&raw mut set, libc::SIGTERM);
        if libc::pthread_sigmask(libc::SIG_BLOCK, &raw const set, std::ptr::null_mut()) != 0 {
            return Err(std::io::Error::last_os_error());
        }
        let mut sig = 0;
        if libc::sigwait(&raw const set, &raw mut sig) != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}
