//! Which hook steers each interface's client packets, and which interfaces take redirected XDP
//! frames, decided from what the kernel reports, never from user tuning (DESIGN.md: XDP for
//! frames that come off a wire, TC for skb-backed interfaces). Pure: the facts come from
//! `netlink`, the effects happen in `links` and `Dataplane`.
//!
//! | interface | hook | why |
//! |---|---|---|
//! | physical NIC whose driver has native XDP (`xdp-features` has `basic`) | XDP, native | frames off a wire carry complete checksums; the fastest hook |
//! | physical NIC without native XDP | TC | generic XDP would cost an skb anyway and cannot see `CHECKSUM_PARTIAL`; TC can |
//! | bond | XDP native when the bond reports `basic` (every port has it), else TC | as a NIC |
//! | veth (either end: a container's or a namespace's) | TC | local senders hand it `CHECKSUM_PARTIAL` skbs, whose checksum an XDP rewrite corrupts; XDP on a veth also copies every skb into an XDP buffer |
//! | bridge, VLAN, macvlan, ipvlan, vxlan, tun, wireguard ... | TC | software devices: no native XDP, skbs from the stack |
//! | `lo` | refused | clients on the node are steered by the socket hooks |
//!
//! `[node] xdp_mode` applies where XDP is chosen (`native` refuses a NIC without native XDP
//! instead of using TC; `generic` uses generic XDP); `[node.hooks]` overrides the choice per
//! interface.
//!
//! A redirected XDP frame is dropped by a device that cannot transmit it: `veer_xdp` redirects
//! only into interfaces whose `xdp-features` have `ndo-xmit` (a veth has it only while its peer
//! has GRO or an XDP program, which can change at any time: the daemon re-evaluates on every
//! link event).

use super::netlink::{Link, xdp_act};
use crate::model::{HookChoice, XdpAttachMode};

/// How an interface's client packets are steered.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Hook {
    /// `veer_xdp`, native (driver) mode.
    XdpNative,
    /// `veer_xdp`, generic (skb) mode.
    XdpGeneric,
    /// `veer_tc_steer` on TC ingress (tcx, or clsact on kernels before 6.6).
    Tc,
}

impl Hook {
    /// `xdp` or `tc`.
    pub fn name(self) -> &'static str {
        match self {
            Hook::XdpNative | Hook::XdpGeneric => "xdp",
            Hook::Tc => "tc",
        }
    }

    /// `native`, `generic` or, for TC, `tcx`/`clsact` as the kernel has it.
    pub fn mode(self) -> &'static str {
        match self {
            Hook::XdpNative => "native",
            Hook::XdpGeneric => "generic",
            Hook::Tc if has_tcx() => "tcx",
            Hook::Tc => "clsact",
        }
    }

    /// Whether this is an XDP hook.
    pub fn is_xdp(self) -> bool {
        !matches!(self, Hook::Tc)
    }
}

/// Whether the kernel has tcx links (Linux 6.6).
pub fn has_tcx() -> bool {
    use aya::util::KernelVersion;
    KernelVersion::current().is_ok_and(|v| v >= KernelVersion::new(6, 6, 0))
}

/// The hook for one interface and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decision {
    /// The hook to attach.
    pub hook: Hook,
    /// Native XDP is to be tried without the kernel saying the driver has it (kernels before 6.3
    /// report no `xdp-features`); when the driver refuses, TC is used.
    pub try_native: bool,
    /// Why, for the log and `veer status`.
    pub why: String,
}

/// Why an interface cannot be attached as asked.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DecideError {
    /// `lo` was named.
    #[error(
        "`{name}` is the loopback device: clients on the node are steered by veer's socket hooks; remove it from `interfaces`"
    )]
    Loopback {
        /// Name.
        name: String,
    },
    /// `xdp_mode = "native"` on an interface whose driver has no native XDP.
    #[error(
        "`xdp_mode = \"native\"`, but the driver of `{name}` has no native XDP (xdp-features: {features}); use `xdp_mode = \"auto\"` (TC on such interfaces) or `generic`"
    )]
    NoNativeXdp {
        /// Name.
        name: String,
        /// The features the kernel reports.
        features: String,
    },
}

/// A link's kind for people: its `IFLA_INFO_KIND`, `loopback`, or `physical` (with its bus).
pub fn kind_name(link: &Link) -> String {
    match (&link.kind, link.is_loopback(), &link.parent_bus) {
        (Some(k), _, _) => k.clone(),
        (None, true, _) => "loopback".to_owned(),
        (None, false, Some(bus)) => format!("physical ({bus})"),
        (None, false, None) => "physical".to_owned(),
    }
}

/// `xdp-features` bits by name, for messages.
pub fn features_text(features: Option<u64>) -> String {
    let Some(f) = features else {
        return "not reported by this kernel".to_owned();
    };
    let names: Vec<&str> = [
        (xdp_act::BASIC, "basic"),
        (xdp_act::REDIRECT, "redirect"),
        (xdp_act::NDO_XMIT, "ndo-xmit"),
    ]
    .iter()
    .filter(|(bit, _)| f & bit != 0)
    .map(|(_, n)| *n)
    .collect();
    if names.is_empty() {
        "none".to_owned()
    } else {
        names.join(", ")
    }
}

/// Decides the hook of `link`, whose `xdp-features` are `features` (`None`: not reported).
pub fn decide(
    link: &Link,
    features: Option<u64>,
    xdp_mode: XdpAttachMode,
    choice: HookChoice,
) -> Result<Decision, DecideError> {
    if link.is_loopback() {
        return Err(DecideError::Loopback {
            name: link.name.clone(),
        });
    }
    let native = features.map(|f| f & xdp_act::BASIC != 0);
    let kind = kind_name(link);
    let xdp = |why: String| -> Result<Decision, DecideError> {
        match (xdp_mode, native) {
            (XdpAttachMode::Generic, _) => Ok(Decision {
                hook: Hook::XdpGeneric,
                try_native: false,
                why: format!("{why}; generic mode (`xdp_mode = \"generic\"`)"),
            }),
            (_, Some(true)) => Ok(Decision {
                hook: Hook::XdpNative,
                try_native: false,
                why,
            }),
            (XdpAttachMode::Native, Some(false)) => Err(DecideError::NoNativeXdp {
                name: link.name.clone(),
                features: features_text(features),
            }),
            (_, None) => Ok(Decision {
                hook: Hook::XdpNative,
                try_native: xdp_mode == XdpAttachMode::Auto,
                why: format!("{why}; native XDP tried (this kernel reports no xdp-features)"),
            }),
            (XdpAttachMode::Auto, Some(false)) => Ok(Decision {
                hook: Hook::XdpGeneric,
                try_native: false,
                why: format!(
                    "{why}; the driver has no native XDP (xdp-features: {}), so generic mode",
                    features_text(features)
                ),
            }),
        }
    };
    let tc = |why: String| Decision {
        hook: Hook::Tc,
        try_native: false,
        why,
    };
    match choice {
        HookChoice::Tc => return Ok(tc("configured in [node.hooks]".to_owned())),
        HookChoice::Xdp => {
            return xdp(format!(
                "configured in [node.hooks] ({kind}): frames here must carry complete checksums, \
                 XDP cannot see CHECKSUM_PARTIAL"
            ));
        }
        HookChoice::Auto => {}
    }
    match link.kind.as_deref() {
        Some("veth") => Ok(tc(
            "veth: local senders (containers, namespaces) hand it CHECKSUM_PARTIAL skbs, which XDP \
             cannot see and an XDP rewrite corrupts; TC's checksum helpers handle them, with no \
             copy into an XDP buffer"
                .to_owned(),
        )),
        Some("bond") if native != Some(false) => {
            xdp("bond whose ports have native XDP: frames off a wire carry complete checksums".to_owned())
        }
        Some("bond") => Ok(tc(format!(
            "bond with a port lacking native XDP (xdp-features: {}): TC knows the checksum state",
            features_text(features)
        ))),
        Some(other) => Ok(tc(format!(
            "{other}: a software device (no native XDP; skbs from the stack, whose checksum state \
             only TC can see)"
        ))),
        None => match native {
            Some(false) if xdp_mode == XdpAttachMode::Auto => Ok(tc(format!(
                "{kind}: the driver has no native XDP (xdp-features: {}); TC costs less than \
                 generic XDP and knows the checksum state",
                features_text(features)
            ))),
            _ => xdp(format!(
                "{kind}: frames off a wire carry complete checksums; native XDP is the cheapest hook"
            )),
        },
    }
}

/// Whether `veer_xdp` may redirect frames into an interface, and why. `features` are its
/// `xdp-features` (`None`: not reported); `hook` is what veer attached to it.
pub fn takes_xdp_frames(features: Option<u64>, hook: Hook) -> (bool, String) {
    match features {
        Some(f) if f & xdp_act::NDO_XMIT != 0 => (
            true,
            "takes redirected XDP frames (xdp-features: ndo-xmit)".to_owned(),
        ),
        Some(f) => (
            false,
            format!(
                "cannot take redirected XDP frames (xdp-features: {}; a veth has ndo-xmit only \
                 while its peer has GRO or an XDP program): XDP packets routed here go through \
                 the kernel",
                features_text(Some(f))
            ),
        ),
        None if hook == Hook::XdpNative => (
            true,
            "native XDP attached (this kernel reports no xdp-features)".to_owned(),
        ),
        None => (
            false,
            "no native XDP attached and no xdp-features reported: XDP packets routed here go \
             through the kernel"
                .to_owned(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn link(name: &str, kind: Option<&str>) -> Link {
        Link {
            index: 3,
            name: name.into(),
            kind: kind.map(str::to_owned),
            flags: libc::IFF_UP as u32,
            ..Link::default()
        }
    }

    const NIC: u64 = xdp_act::BASIC | xdp_act::REDIRECT | xdp_act::NDO_XMIT;

    fn hook(l: &Link, f: Option<u64>, mode: XdpAttachMode, choice: HookChoice) -> Hook {
        decide(l, f, mode, choice).unwrap().hook
    }

    #[test]
    fn wires_get_native_xdp_and_skb_backed_kinds_get_tc() {
        let auto = XdpAttachMode::Auto;
        let a = HookChoice::Auto;
        assert_eq!(
            hook(&link("eth0", None), Some(NIC), auto, a),
            Hook::XdpNative
        );
        for kind in [
            "veth",
            "bridge",
            "vlan",
            "macvlan",
            "ipvlan",
            "vxlan",
            "wireguard",
            "tun",
        ] {
            assert_eq!(
                hook(&link("x", Some(kind)), Some(NIC), auto, a),
                Hook::Tc,
                "{kind}"
            );
        }
        // A veth gets TC even when it could run native XDP (every veth reports `basic`).
        assert_eq!(
            hook(&link("veth0", Some("veth")), Some(xdp_act::BASIC), auto, a),
            Hook::Tc
        );
        assert_eq!(
            hook(&link("bond0", Some("bond")), Some(NIC), auto, a),
            Hook::XdpNative
        );
        assert_eq!(
            hook(&link("bond0", Some("bond")), Some(0), auto, a),
            Hook::Tc
        );
    }

    #[test]
    fn a_nic_without_native_xdp_gets_tc_unless_native_or_generic_is_asked() {
        let nic = link("eth1", None);
        assert_eq!(
            hook(&nic, Some(0), XdpAttachMode::Auto, HookChoice::Auto),
            Hook::Tc
        );
        assert_eq!(
            hook(&nic, Some(0), XdpAttachMode::Generic, HookChoice::Auto),
            Hook::XdpGeneric
        );
        let err = decide(&nic, Some(0), XdpAttachMode::Native, HookChoice::Auto).unwrap_err();
        assert_eq!(
            err.to_string(),
            "`xdp_mode = \"native\"`, but the driver of `eth1` has no native XDP (xdp-features: \
             none); use `xdp_mode = \"auto\"` (TC on such interfaces) or `generic`"
        );
    }

    #[test]
    fn without_xdp_features_native_is_tried_on_wires() {
        let d = decide(
            &link("eth0", None),
            None,
            XdpAttachMode::Auto,
            HookChoice::Auto,
        )
        .unwrap();
        assert_eq!(d.hook, Hook::XdpNative);
        assert!(d.try_native);
        let d = decide(
            &link("eth0", None),
            None,
            XdpAttachMode::Native,
            HookChoice::Auto,
        )
        .unwrap();
        assert!(!d.try_native, "native asked: no fallback");
        assert_eq!(
            hook(
                &link("v", Some("veth")),
                None,
                XdpAttachMode::Auto,
                HookChoice::Auto
            ),
            Hook::Tc
        );
    }

    #[test]
    fn overrides_win_and_loopback_is_refused() {
        let veth = link("veth0", Some("veth"));
        assert_eq!(
            hook(
                &veth,
                Some(xdp_act::BASIC),
                XdpAttachMode::Auto,
                HookChoice::Xdp
            ),
            Hook::XdpNative
        );
        assert_eq!(
            hook(
                &link("eth0", None),
                Some(NIC),
                XdpAttachMode::Auto,
                HookChoice::Tc
            ),
            Hook::Tc
        );
        let mut lo = link("lo", None);
        lo.flags |= libc::IFF_LOOPBACK as u32;
        assert!(matches!(
            decide(&lo, Some(0), XdpAttachMode::Auto, HookChoice::Auto),
            Err(DecideError::Loopback { .. })
        ));
    }

    #[test]
    fn redirect_targets_need_ndo_xmit() {
        assert!(takes_xdp_frames(Some(NIC), Hook::Tc).0);
        let (ok, why) = takes_xdp_frames(Some(xdp_act::BASIC | xdp_act::REDIRECT), Hook::Tc);
        assert!(!ok);
        assert!(why.contains("peer has GRO or an XDP program"), "{why}");
        assert!(takes_xdp_frames(None, Hook::XdpNative).0);
        assert!(!takes_xdp_frames(None, Hook::Tc).0);
    }

    #[test]
    fn kinds_read_well() {
        let mut nic = link("eth0", None);
        assert_eq!(kind_name(&nic), "physical");
        nic.parent_bus = Some("pci".into());
        assert_eq!(kind_name(&nic), "physical (pci)");
        assert_eq!(kind_name(&link("v", Some("veth"))), "veth");
        assert_eq!(features_text(Some(NIC)), "basic, redirect, ndo-xmit");
        assert_eq!(features_text(None), "not reported by this kernel");
    }
}
