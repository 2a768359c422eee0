//! Links pinned under `<pin dir>/links/`, so programs stay attached while no daemon runs.
//!
//! On attach, an interface whose link is already pinned gets the newly loaded program swapped
//! onto that link (`bpf_link_update`, atomic: every packet sees the old program or the new one).
//! That is how a restarted daemon adopts a running node and how a new build of the kernel
//! programs is rolled out: the maps (conntrack included) are reused through their pins, and no
//! packet ever meets an interface without veer. A missing link is created and pinned.

use std::path::{Path, PathBuf};

use aya::{
    Ebpf,
    programs::{
        TcAttachType, XdpMode,
        links::{FdLink, LinkError, PinnedLink},
        tc::{self, SchedClassifierLink},
        xdp::XdpLink,
    },
};
use veer_common::maps::progs;

use super::{
    DataplaneError,
    loader::{tc_mut, xdp_mut},
};
use crate::model::XdpAttachMode;

/// What attaching to one interface did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Attached {
    /// Fresh links, pinned; the XDP mode used.
    New(XdpMode),
    /// Existing pinned links now run the newly loaded programs.
    Adopted,
}

/// The pin of one hook's link.
fn link_path(dir: &Path, hook: &str, interface: &str) -> PathBuf {
    dir.join(format!("{hook}_{interface}"))
}

const XDP_HOOK: &str = progs::XDP_INGRESS;
const TC_INGRESS_HOOK: &str = "veer_tc_ingress";
const TC_EGRESS_HOOK: &str = "veer_tc_egress";
/// Every hook veer pins a link for: a link pin is named `<hook>_<interface>`.
const HOOKS: [&str; 3] = [XDP_HOOK, TC_INGRESS_HOOK, TC_EGRESS_HOOK];

/// Whether `name` is the name veer gives a pinned link (`<hook>_<interface>`).
pub fn is_link_pin(name: &str) -> bool {
    HOOKS.iter().any(|hook| {
        name.strip_prefix(hook)
            .and_then(|rest| rest.strip_prefix('_'))
            .is_some_and(|ifname| !ifname.is_empty() && ifname.len() <= 15)
    })
}

fn link_err(interface: &str, hook: &'static str) -> impl Fn(LinkError) -> DataplaneError {
    let interface = interface.to_owned();
    move |e| DataplaneError::Link {
        interface: interface.clone(),
        hook,
        source: Box::new(e),
    }
}

fn pin_err(interface: &str, hook: &'static str) -> impl Fn(aya::pin::PinError) -> DataplaneError {
    let interface = interface.to_owned();
    move |e| DataplaneError::LinkPin {
        interface: interface.clone(),
        hook,
        source: Box::new(e),
    }
}

fn attach_err(
    interface: &str,
    hook: &'static str,
) -> impl Fn(aya::programs::ProgramError) -> DataplaneError {
    let interface = interface.to_owned();
    move |e| DataplaneError::Attach {
        program: if hook == XDP_HOOK {
            progs::XDP_INGRESS
        } else {
            progs::TC_REPLY
        },
        interface: interface.clone(),
        hook,
        source: Box::new(e),
    }
}

/// Attaches (or adopts) XDP and both TC hooks on `interface`, pinning links under `dir`.
pub fn attach_pinned(
    ebpf: &mut Ebpf,
    interface: &str,
    mode: XdpAttachMode,
    dir: &Path,
) -> Result<Attached, DataplaneError> {
    std::fs::create_dir_all(dir).map_err(|source| DataplaneError::PinDir {
        path: dir.to_owned(),
        source,
    })?;
    let xdp_pin = link_path(dir, XDP_HOOK, interface);
    let ingress_pin = link_path(dir, TC_INGRESS_HOOK, interface);
    let egress_pin = link_path(dir, TC_EGRESS_HOOK, interface);
    if xdp_pin.exists() && ingress_pin.exists() && egress_pin.exists() {
        let open = |path: &Path, hook| -> Result<FdLink, DataplaneError> {
            Ok(PinnedLink::from_pin(path)
                .map_err(link_err(interface, hook))?
                .into())
        };
        let xdp_link =
            XdpLink::try_from(open(&xdp_pin, XDP_HOOK)?).map_err(link_err(interface, XDP_HOOK))?;
        xdp_mut(ebpf)?
            .attach_to_link(xdp_link)
            .map_err(attach_err(interface, XDP_HOOK))?;
        for (path, hook) in [
            (&ingress_pin, TC_INGRESS_HOOK),
            (&egress_pin, TC_EGRESS_HOOK),
        ] {
            let link = SchedClassifierLink::try_from(open(path, hook)?)
                .map_err(link_err(interface, hook))?;
            tc_mut(ebpf)?
                .attach_to_link(link)
                .map_err(attach_err(interface, hook))?;
        }
        return Ok(Attached::Adopted);
    }
    // Partly pinned (a crash mid-attach): start that interface over.
    detach_interface(dir, interface);
    let used = super::loader::attach_xdp(ebpf, interface, mode)?;
    let xdp = xdp_mut(ebpf)?;
    let link = xdp
        .take_link(used.1)
        .map_err(attach_err(interface, XDP_HOOK))?;
    FdLink::try_from(link)
        .map_err(link_err(interface, XDP_HOOK))?
        .pin(&xdp_pin)
        .map_err(pin_err(interface, XDP_HOOK))?;
    if let Err(e) = tc::qdisc_add_clsact(interface) {
        tracing::debug!(interface, error = %e, "clsact qdisc not added");
    }
    for (path, hook, attach_type) in [
        (&ingress_pin, TC_INGRESS_HOOK, TcAttachType::Ingress),
        (&egress_pin, TC_EGRESS_HOOK, TcAttachType::Egress),
    ] {
        let tc = tc_mut(ebpf)?;
        let id = tc
            .attach(interface, attach_type)
            .map_err(attach_err(interface, hook))?;
        let link = tc.take_link(id).map_err(attach_err(interface, hook))?;
        FdLink::try_from(link)
            .map_err(link_err(interface, hook))?
            .pin(path)
            .map_err(pin_err(interface, hook))?;
    }
    Ok(Attached::New(used.0))
}

/// Unpins (and so detaches) every link of `interface` under `dir`. Missing pins are fine.
pub fn detach_interface(dir: &Path, interface: &str) {
    for hook in HOOKS {
        let path = link_path(dir, hook, interface);
        if path.exists() {
            match PinnedLink::from_pin(&path).map(PinnedLink::unpin) {
                Ok(Ok(_link)) => {}
                Ok(Err(e)) => {
                    tracing::warn!(path = %path.display(), error = %e, "could not unpin link");
                }
                Err(e) => {
                    tracing::warn!(path = %path.display(), error = %e, "could not open pinned link");
                }
            }
        }
    }
}

/// Interfaces with pinned links under `dir`.
pub fn pinned_interfaces(dir: &Path) -> Vec<String> {
    let prefix = format!("{XDP_HOOK}_");
    let mut out: Vec<String> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            e.file_name()
                .to_str()?
                .strip_prefix(&prefix)
                .map(str::to_owned)
        })
        .collect();
    out.sort();
    out
}
