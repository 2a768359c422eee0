//! Attaching the programs to an interface, with links pinned under `<pin dir>/links/` so they stay
//! attached while no daemon runs (or owned by the loaded object, for tests and tools).
//!
//! Every interface gets `veer_tc_reply` on TC ingress and egress, and one steering program:
//! `veer_xdp` or `veer_tc_steer` (before `veer_tc_reply` on ingress), as `ifaces::decide` chose.
//!
//! On attach, a link already pinned gets the newly loaded program swapped onto it
//! (`bpf_link_update`, atomic: every packet sees the old program or the new one). That is how a
//! restarted daemon adopts a running node and how a new build of the kernel programs is rolled
//! out: the maps (conntrack included) are reused through their pins, and no packet ever meets an
//! interface without veer. A missing link is created and pinned. When the steering hook of an
//! interface changes (a new build decides differently, or `[node.hooks]` changed), the new one is
//! attached before the old one is removed: for a moment both run, which is harmless (the second
//! sees a packet already rewritten for its backend, not addressed to a service).

use std::path::{Path, PathBuf};

use aya::{
    Ebpf,
    programs::{
        LinkOrder, SchedClassifier, TcAttachType, XdpMode,
        links::{FdLink, LinkError, PinnedLink},
        tc::{self, NlOptions, SchedClassifierLink, TcAttachOptions},
        xdp::XdpLink,
    },
};
use veer_common::maps::progs;

use super::{
    DataplaneError,
    ifaces::{Decision, Hook, has_tcx},
    loader::{tc_mut, tc_steer_mut, xdp_mut},
};

/// What attaching to one interface did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Attached {
    /// The steering hook now in place.
    pub hook: Hook,
    /// Whether the steering link was already pinned and now runs the new program.
    pub adopted: bool,
    /// Why the hook differs from the decision (native XDP refused by the driver).
    pub fallback: Option<String>,
}

/// The pin of one hook's link.
fn link_path(dir: &Path, hook: &str, interface: &str) -> PathBuf {
    dir.join(format!("{hook}_{interface}"))
}

const XDP_HOOK: &str = progs::XDP_INGRESS;
const TC_STEER_HOOK: &str = progs::TC_STEER;
const TC_INGRESS_HOOK: &str = "veer_tc_ingress";
const TC_EGRESS_HOOK: &str = "veer_tc_egress";
/// Every hook veer pins a link for per interface: a link pin is named `<hook>_<interface>`.
const HOOKS: [&str; 4] = [XDP_HOOK, TC_STEER_HOOK, TC_INGRESS_HOOK, TC_EGRESS_HOOK];

/// clsact priorities (kernels before 6.6): the steering filter runs before the reply filter.
const CLSACT_STEER_PRIORITY: u16 = 1;

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
        program: match hook {
            XDP_HOOK => progs::XDP_INGRESS,
            TC_STEER_HOOK => progs::TC_STEER,
            _ => progs::TC_REPLY,
        },
        interface: interface.clone(),
        hook,
        source: Box::new(e),
    }
}

/// Opens a pinned link, if `dir` is given and the pin exists.
fn pinned(
    dir: Option<&Path>,
    hook: &'static str,
    interface: &str,
) -> Result<Option<FdLink>, DataplaneError> {
    let Some(path) = dir.map(|d| link_path(d, hook, interface)) else {
        return Ok(None);
    };
    if !path.exists() {
        return Ok(None);
    }
    Ok(Some(
        PinnedLink::from_pin(&path)
            .map_err(link_err(interface, hook))?
            .into(),
    ))
}

/// Pins a freshly attached link under `dir`.
fn pin(
    dir: &Path,
    hook: &'static str,
    interface: &str,
    link: FdLink,
) -> Result<(), DataplaneError> {
    link.pin(link_path(dir, hook, interface))
        .map_err(pin_err(interface, hook))?;
    Ok(())
}

/// Attaches (or adopts) `veer_tc_reply` on TC ingress and egress of `interface`.
fn attach_reply(
    ebpf: &mut Ebpf,
    interface: &str,
    dir: Option<&Path>,
) -> Result<(), DataplaneError> {
    if !has_tcx()
        && let Err(e) = tc::qdisc_add_clsact(interface)
    {
        // One that exists already is fine; a real failure shows up as an attach error below.
        tracing::debug!(interface, error = %e, "clsact qdisc not added");
    }
    for (hook, attach_type) in [
        (TC_INGRESS_HOOK, TcAttachType::Ingress),
        (TC_EGRESS_HOOK, TcAttachType::Egress),
    ] {
        let tc = tc_mut(ebpf)?;
        if let Some(link) = pinned(dir, hook, interface)? {
            let link = SchedClassifierLink::try_from(link).map_err(link_err(interface, hook))?;
            tc.attach_to_link(link)
                .map_err(attach_err(interface, hook))?;
            continue;
        }
        let id = tc
            .attach(interface, attach_type)
            .map_err(attach_err(interface, hook))?;
        if let Some(dir) = dir {
            let link = tc.take_link(id).map_err(attach_err(interface, hook))?;
            let link = FdLink::try_from(link).map_err(link_err(interface, hook))?;
            pin(dir, hook, interface, link)?;
        }
    }
    Ok(())
}

/// Attaches (or adopts) `veer_tc_steer` on TC ingress of `interface`, ahead of `veer_tc_reply`.
/// Returns whether it was adopted.
fn attach_tc_steer(
    ebpf: &mut Ebpf,
    interface: &str,
    dir: Option<&Path>,
) -> Result<bool, DataplaneError> {
    const HOOK: &str = TC_STEER_HOOK;
    if let Some(link) = pinned(dir, HOOK, interface)? {
        let link = SchedClassifierLink::try_from(link).map_err(link_err(interface, HOOK))?;
        tc_steer_mut(ebpf)?
            .attach_to_link(link)
            .map_err(attach_err(interface, HOOK))?;
        return Ok(true);
    }
    let options = if has_tcx() {
        let reply: &SchedClassifier = tc_mut(ebpf)?;
        TcAttachOptions::TcxOrder(
            LinkOrder::before_program(reply).map_err(attach_err(interface, HOOK))?,
        )
    } else {
        TcAttachOptions::Netlink(NlOptions {
            priority: CLSACT_STEER_PRIORITY,
            ..NlOptions::default()
        })
    };
    let steer = tc_steer_mut(ebpf)?;
    let id = steer
        .attach_with_options(interface, TcAttachType::Ingress, options)
        .map_err(attach_err(interface, HOOK))?;
    if let Some(dir) = dir {
        let link = steer.take_link(id).map_err(attach_err(interface, HOOK))?;
        let link = FdLink::try_from(link).map_err(link_err(interface, HOOK))?;
        pin(dir, HOOK, interface, link)?;
    }
    Ok(false)
}

/// Attaches (or adopts) `veer_xdp` on `interface` in `mode`. Returns whether it was adopted.
fn attach_xdp(
    ebpf: &mut Ebpf,
    interface: &str,
    mode: XdpMode,
    dir: Option<&Path>,
) -> Result<bool, DataplaneError> {
    const HOOK: &str = XDP_HOOK;
    let xdp = xdp_mut(ebpf)?;
    if let Some(link) = pinned(dir, HOOK, interface)? {
        let link = XdpLink::try_from(link).map_err(link_err(interface, HOOK))?;
        xdp.attach_to_link(link)
            .map_err(attach_err(interface, HOOK))?;
        return Ok(true);
    }
    let id = xdp
        .attach(interface, mode)
        .map_err(attach_err(interface, HOOK))?;
    if let Some(dir) = dir {
        let link = xdp.take_link(id).map_err(attach_err(interface, HOOK))?;
        let link = FdLink::try_from(link).map_err(link_err(interface, HOOK))?;
        pin(dir, HOOK, interface, link)?;
    }
    Ok(false)
}

/// Attaches (or adopts) the programs on `interface` as `decision` says, pinning links under
/// `dir` (none: the links live as long as `ebpf`). Falls back from native XDP to TC when the
/// decision allows it and the driver refuses.
pub fn attach(
    ebpf: &mut Ebpf,
    interface: &str,
    decision: &Decision,
    dir: Option<&Path>,
) -> Result<Attached, DataplaneError> {
    if let Some(dir) = dir {
        std::fs::create_dir_all(dir).map_err(|source| DataplaneError::PinDir {
            path: dir.to_owned(),
            source,
        })?;
    }
    attach_reply(ebpf, interface, dir)?;
    let mut fallback = None;
    let (hook, adopted) = match decision.hook {
        Hook::Tc => (Hook::Tc, attach_tc_steer(ebpf, interface, dir)?),
        Hook::XdpGeneric => (
            Hook::XdpGeneric,
            attach_xdp(ebpf, interface, XdpMode::Skb, dir)?,
        ),
        Hook::XdpNative => match attach_xdp(ebpf, interface, XdpMode::Driver, dir) {
            Ok(adopted) => (Hook::XdpNative, adopted),
            Err(e) if decision.try_native => {
                let why = format!(
                    "the driver refused native XDP ({}); TC instead",
                    crate::error::chain(&e)
                );
                tracing::warn!(interface, "{why}");
                fallback = Some(why);
                (Hook::Tc, attach_tc_steer(ebpf, interface, dir)?)
            }
            Err(e) => return Err(e),
        },
    };
    // The other steering hook, if a previous run left it pinned, goes only now.
    let other = if hook.is_xdp() {
        TC_STEER_HOOK
    } else {
        XDP_HOOK
    };
    if let Some(dir) = dir {
        unpin(&link_path(dir, other, interface));
    }
    Ok(Attached {
        hook,
        adopted,
        fallback,
    })
}

/// Unpins (and so detaches) one link. A missing pin is fine.
fn unpin(path: &Path) {
    if !path.exists() {
        return;
    }
    match PinnedLink::from_pin(path).map(PinnedLink::unpin) {
        Ok(Ok(_link)) => {}
        Ok(Err(e)) => {
            tracing::warn!(path = %path.display(), error = %e, "could not unpin link");
        }
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "could not open pinned link");
        }
    }
}

/// Unpins (and so detaches) every link of `interface` under `dir`. Missing pins are fine.
pub fn detach_interface(dir: &Path, interface: &str) {
    for hook in HOOKS {
        unpin(&link_path(dir, hook, interface));
    }
}

/// Interfaces with pinned links under `dir`.
pub fn pinned_interfaces(dir: &Path) -> Vec<String> {
    let prefixes: Vec<String> = HOOKS.iter().map(|h| format!("{h}_")).collect();
    let mut out: Vec<String> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_str()?.to_owned();
            prefixes
                .iter()
                .find_map(|p| name.strip_prefix(p.as_str()).map(str::to_owned))
        })
        .collect();
    out.sort();
    out.dedup();
    out
}
