//! The node settings veer's data path depends on, checked at start, on every apply and when
//! links change; veer makes each right itself, or refuses with what exactly to change.
//!
//! | setting | needed when | veer |
//! |---|---|---|
//! | `net.ipv4.conf.IF.forwarding` | an IPv4 service has a backend on another host: `bpf_fib_lookup` and the kernel route client packets only where forwarding is on (the interface they came in on) | sets 1 on every interface it is attached to (per interface: the rest of the node keeps its setting) |
//! | `net.ipv6.conf.IF.forwarding` | the same for IPv6 | sets 1 on every interface it is attached to; where that interface accepted router advertisements (`accept_ra` 1, which forwarding would turn off), first sets `accept_ra` 2 so the node keeps its RA-learned routes |
//! | `net.ipv6.conf.IF.force_forwarding` (Linux 6.17) | the same: the packets veer hands to the kernel (first packets to an unresolved neighbour from XDP, TTL expiry) are forwarded only with global forwarding or this | sets 1 on every interface it is attached to |
//! | `net.ipv6.conf.all.forwarding` (kernels without `force_forwarding`) | the same | refuses: turning it on would make every interface of the node a router |
//! | `net.ipv4.conf.IF.rp_filter` | replies of a backend come in on IF, where veer's reverse NAT gives them the VIP as source before the kernel's reverse-path check | sets 0 on IF when `all` is 0 |
//! | `net.ipv4.conf.all.rp_filter` | as above (the kernel uses the larger of `all` and the interface's) | accepts 2 (loose) when the VIP has a route; otherwise refuses: relaxing it is a node-wide security decision |
//! | `net.ipv4.conf.IF.accept_local` | the VIP is an address of the node: replies that come in on IF with the VIP as source look martian | sets 1 on IF |
//!
//! Nothing is turned back off: a setting veer made right stays so (`veer teardown` leaves it).

use std::{
    collections::{BTreeMap, HashMap},
    net::IpAddr,
    path::PathBuf,
};

use super::netlink::Route;

/// A sysctl under `/proc/sys/net`, named as `sysctl(8)` shows it (`net.ipv4.conf.eth0.forwarding`).
/// Interface names are kept verbatim (a VLAN device `eth0.100` keeps its dot).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Sysctl {
    /// `ipv4` or `ipv6`.
    pub family: &'static str,
    /// `all`, `default` or an interface name.
    pub scope: String,
    /// The setting (`forwarding`, `rp_filter` ...).
    pub name: &'static str,
}

impl Sysctl {
    fn new(family: &'static str, scope: &str, name: &'static str) -> Self {
        Self {
            family,
            scope: scope.to_owned(),
            name,
        }
    }

    /// Its file under `/proc/sys`.
    pub fn path(&self) -> PathBuf {
        PathBuf::from(format!(
            "/proc/sys/net/{}/conf/{}/{}",
            self.family, self.scope, self.name
        ))
    }
}

impl std::fmt::Display for Sysctl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "net.{}.conf.{}.{}", self.family, self.scope, self.name)
    }
}

/// What one setting is now and what veer did about it, for the log and `veer status`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Setting {
    /// `net.ipv4.conf.n-v1.forwarding`.
    pub key: String,
    /// Its value now.
    pub value: String,
    /// The value veer found before setting it (none: it was already right).
    pub was: Option<String>,
    /// Why veer needs it.
    pub why: String,
}

/// A setting veer will not change itself, and what to do.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{key} is {value}: {why}; {fix}")]
pub struct Refusal {
    /// The setting.
    pub key: String,
    /// Its value.
    pub value: String,
    /// What it breaks.
    pub why: String,
    /// What to change.
    pub fix: String,
}

/// What the node knows about one service, for working out what it needs.
#[derive(Clone, Debug)]
pub struct ServiceFacts {
    /// Name.
    pub name: String,
    /// VIP.
    pub vip: IpAddr,
    /// How the node reaches the VIP (local address, routed, or no route).
    pub vip_route: Option<Route>,
    /// Each backend address and how the node reaches it.
    pub backends: Vec<(IpAddr, Option<Route>)>,
}

/// One setting veer needs, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Need {
    /// Exactly `value`; veer sets it.
    Set { key: Sysctl, value: u8, why: String },
    /// `accept_ra` of an interface whose forwarding veer turns on: 1 becomes 2.
    KeepRa { iface: String },
    /// IPv6 kernel forwarding where `force_forwarding` is missing: `all.forwarding` 1, or refuse.
    Ipv6AllForwarding { why: String },
    /// Replies of `backend` come in on `iface` with `vip` as source: the reverse-path filter must
    /// let them through.
    RpFilter {
        iface: String,
        service: String,
        backend: IpAddr,
        vip: IpAddr,
        vip_routed: bool,
    },
}

/// Works out the settings `services` need, given the interfaces veer is attached to (index ->
/// name) and whether the kernel has per-interface `force_forwarding`.
fn needs(
    services: &[ServiceFacts],
    attached: &BTreeMap<u32, String>,
    has_force_forwarding: bool,
) -> Vec<Need> {
    let mut out = Vec::new();
    let mut forwarding = [None::<String>, None::<String>];
    for s in services {
        let v4 = s.vip.is_ipv4();
        let vip_local = s.vip_route.is_some_and(|r| r.is_local());
        for (addr, route) in &s.backends {
            if route.is_some_and(|r| r.is_local()) {
                continue;
            }
            let slot = &mut forwarding[usize::from(!v4)];
            if slot.is_none() {
                *slot = Some(format!(
                    "service `{}` has backends on other hosts ({addr}): client packets are routed \
                     to them only where forwarding is on",
                    s.name
                ));
            }
            let Some(iface) = route.and_then(|r| r.oif).and_then(|i| attached.get(&i)) else {
                continue;
            };
            if !v4 {
                continue;
            }
            out.push(Need::RpFilter {
                iface: iface.clone(),
                service: s.name.clone(),
                backend: *addr,
                vip: s.vip,
                vip_routed: s
                    .vip_route
                    .is_some_and(|r| r.kind == super::netlink::RTN_UNICAST),
            });
            if vip_local {
                out.push(Need::Set {
                    key: Sysctl::new("ipv4", iface, "accept_local"),
                    value: 1,
                    why: format!(
                        "the VIP {} of service `{}` is an address of the node: replies of {addr} \
                         come in on {iface} with it as source, which the kernel drops as martian \
                         unless accept_local is on",
                        s.vip, s.name
                    ),
                });
            }
        }
    }
    if let Some(why) = &forwarding[0] {
        for iface in attached.values() {
            out.push(Need::Set {
                key: Sysctl::new("ipv4", iface, "forwarding"),
                value: 1,
                why: why.clone(),
            });
        }
    }
    if let Some(why) = &forwarding[1] {
        for iface in attached.values() {
            out.push(Need::KeepRa {
                iface: iface.clone(),
            });
            out.push(Need::Set {
                key: Sysctl::new("ipv6", iface, "forwarding"),
                value: 1,
                why: why.clone(),
            });
            if has_force_forwarding {
                out.push(Need::Set {
                    key: Sysctl::new("ipv6", iface, "force_forwarding"),
                    value: 1,
                    why: format!(
                        "{why}; the packets veer hands to the kernel (first packets to an \
                         unresolved neighbour, TTL expiry) are forwarded only with it"
                    ),
                });
            }
        }
        if !has_force_forwarding && !attached.is_empty() {
            out.push(Need::Ipv6AllForwarding { why: why.clone() });
        }
    }
    out.sort_by_key(|n| match n {
        // accept_ra goes before the forwarding it protects.
        Need::KeepRa { .. } => 0,
        _ => 1,
    });
    out
}

/// One write veer will do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Write {
    /// The setting.
    pub key: Sysctl,
    /// Its value now.
    pub was: String,
    /// The value to write.
    pub value: u8,
    /// Why.
    pub why: String,
}

/// What checking the needs against the node's values gives: the writes to do, the settings
/// already right (key, value, why), or the first refusal.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Plan {
    /// Settings veer changes, in order.
    pub writes: Vec<Write>,
    /// Settings already as needed.
    pub ok: Vec<(Sysctl, String, String)>,
}

/// Checks `needs` against the values `read` gives (`None`: no such setting on this kernel).
fn evaluate(needs: &[Need], read: &dyn Fn(&Sysctl) -> Option<String>) -> Result<Plan, Refusal> {
    let mut plan = Plan::default();
    let mut seen = std::collections::HashSet::new();
    let num = |k: &Sysctl| read(k).and_then(|v| v.trim().parse::<i64>().ok());
    for need in needs {
        match need {
            Need::Set { key, value, why } => {
                if !seen.insert(key.clone()) {
                    continue;
                }
                let now = read(key).unwrap_or_default().trim().to_owned();
                if now == value.to_string() {
                    plan.ok.push((key.clone(), now, why.clone()));
                } else {
                    plan.writes.push(Write {
                        key: key.clone(),
                        was: now,
                        value: *value,
                        why: why.clone(),
                    });
                }
            }
            Need::KeepRa { iface } => {
                let fwd = Sysctl::new("ipv6", iface, "forwarding");
                let ra = Sysctl::new("ipv6", iface, "accept_ra");
                if num(&fwd) == Some(0) && num(&ra) == Some(1) && seen.insert(ra.clone()) {
                    plan.writes.push(Write {
                        key: ra,
                        was: "1".to_owned(),
                        value: 2,
                        why: format!(
                            "veer turns IPv6 forwarding on for {iface}, which would stop it from \
                             accepting router advertisements; 2 keeps them accepted"
                        ),
                    });
                }
            }
            Need::Ipv6AllForwarding { why } => {
                let key = Sysctl::new("ipv6", "all", "forwarding");
                let now = read(&key).unwrap_or_default().trim().to_owned();
                if now != "1" {
                    return Err(Refusal {
                        key: key.to_string(),
                        value: now,
                        why: format!(
                            "{why}, and this kernel has no per-interface \
                             net.ipv6.conf.IF.force_forwarding (Linux 6.17) for the packets veer \
                             hands to the kernel"
                        ),
                        fix: format!(
                            "turning it on makes every interface of the node an IPv6 router, so \
                             veer leaves that to you: `sysctl -w {key}=1`"
                        ),
                    });
                }
                if seen.insert(key.clone()) {
                    plan.ok.push((key, now, why.clone()));
                }
            }
            Need::RpFilter { .. } => rp_filter(need, &num, &mut seen, &mut plan)?,
        }
    }
    Ok(plan)
}

/// Checks one `Need::RpFilter` (see the module table).
fn rp_filter(
    need: &Need,
    num: &dyn Fn(&Sysctl) -> Option<i64>,
    seen: &mut std::collections::HashSet<Sysctl>,
    plan: &mut Plan,
) -> Result<(), Refusal> {
    let Need::RpFilter {
        iface,
        service,
        backend,
        vip,
        vip_routed,
    } = need
    else {
        return Ok(());
    };
    let all_key = Sysctl::new("ipv4", "all", "rp_filter");
    let if_key = Sysctl::new("ipv4", iface, "rp_filter");
    let all = num(&all_key).unwrap_or(0);
    let own = num(&if_key).unwrap_or(0);
    let why = format!(
        "replies of backend {backend} of service `{service}` come in on {iface} with the VIP \
         {vip} as source (veer's reverse NAT runs before the kernel's reverse-path check)"
    );
    if all == 0 {
        if !seen.insert(if_key.clone()) {
            return Ok(());
        }
        if own == 0 {
            plan.ok.push((if_key, "0".to_owned(), why));
        } else {
            plan.writes.push(Write {
                key: if_key,
                was: own.to_string(),
                value: 0,
                why,
            });
        }
        return Ok(());
    }
    if all == 2 && *vip_routed {
        if seen.insert(all_key.clone()) {
            plan.ok.push((
                all_key,
                "2".to_owned(),
                format!("{why}: loose mode passes them, the VIP has a route"),
            ));
        }
        return Ok(());
    }
    let mode = if all == 1 { "strict" } else { "loose" };
    Err(Refusal {
        key: all_key.to_string(),
        value: format!("{all} ({mode})"),
        why: format!(
            "the kernel would drop them: {why}{}",
            if all == 2 {
                ", and the VIP has no route for loose mode to find"
            } else {
                ""
            }
        ),
        fix: format!(
            "it is a node-wide anti-spoofing setting, so veer leaves it to you: `sysctl -w \
             {all_key}=0` (veer then keeps {iface} at 0){}",
            if all == 1 {
                format!(", or `=2` with a route to {vip}")
            } else {
                format!(", or add a route to {vip}")
            }
        ),
    })
}

/// Works out and checks what `services` need on the node, reading the current values with
/// `read`.
pub fn plan(
    services: &[ServiceFacts],
    attached: &BTreeMap<u32, String>,
    read: &dyn Fn(&Sysctl) -> Option<String>,
) -> Result<Plan, Refusal> {
    let any_v6 = attached
        .values()
        .next()
        .map(|i| Sysctl::new("ipv6", i, "force_forwarding"));
    let has_force_forwarding = any_v6.is_some_and(|k| read(&k).is_some());
    evaluate(&needs(services, attached, has_force_forwarding), read)
}

/// Reads a sysctl from `/proc/sys` (of the calling thread's network namespace).
pub fn read(key: &Sysctl) -> Option<String> {
    std::fs::read_to_string(key.path()).ok()
}

/// Writes a sysctl.
pub fn write(key: &Sysctl, value: u8) -> std::io::Result<()> {
    std::fs::write(key.path(), value.to_string())
}

/// The settings of a plan after its writes, for `veer status`.
pub fn report(plan: &Plan) -> Vec<Setting> {
    let mut out: HashMap<String, Setting> = HashMap::new();
    for (key, value, why) in &plan.ok {
        out.entry(key.to_string()).or_insert_with(|| Setting {
            key: key.to_string(),
            value: value.clone(),
            was: None,
            why: why.clone(),
        });
    }
    for w in &plan.writes {
        out.insert(
            w.key.to_string(),
            Setting {
                key: w.key.to_string(),
                value: w.value.to_string(),
                was: Some(w.was.clone()),
                why: w.why.clone(),
            },
        );
    }
    let mut v: Vec<Setting> = out.into_values().collect();
    v.sort_by(|a, b| a.key.cmp(&b.key));
    v
}

#[cfg(test)]
mod tests {
    use super::{super::netlink::RTN_LOCAL, *};
    use crate::dataplane::netlink::RTN_UNICAST;

    #[expect(clippy::unnecessary_wraps, reason = "reads as the facts it stands for")]
    fn routed(oif: u32) -> Option<Route> {
        Some(Route {
            kind: RTN_UNICAST,
            oif: Some(oif),
        })
    }

    #[expect(clippy::unnecessary_wraps, reason = "reads as the facts it stands for")]
    fn local() -> Option<Route> {
        Some(Route {
            kind: RTN_LOCAL,
            oif: Some(1),
        })
    }

    fn attached() -> BTreeMap<u32, String> {
        BTreeMap::from([(2, "n-client".to_owned()), (3, "n-v1".to_owned())])
    }

    fn web(
        vip: &str,
        vip_route: Option<Route>,
        backend: &str,
        route: Option<Route>,
    ) -> ServiceFacts {
        ServiceFacts {
            name: "web".into(),
            vip: vip.parse().unwrap(),
            vip_route,
            backends: vec![(backend.parse().unwrap(), route)],
        }
    }

    /// A node at kernel defaults: forwarding off, `rp_filter` 0, `accept_ra` 1.
    fn defaults(overrides: &[(&str, &str)]) -> impl Fn(&Sysctl) -> Option<String> {
        let mut values: HashMap<String, String> = HashMap::new();
        for iface in ["all", "default", "n-client", "n-v1"] {
            for (k, v) in [
                (format!("net.ipv4.conf.{iface}.forwarding"), "0"),
                (format!("net.ipv4.conf.{iface}.rp_filter"), "0"),
                (format!("net.ipv4.conf.{iface}.accept_local"), "0"),
                (format!("net.ipv6.conf.{iface}.forwarding"), "0"),
                (format!("net.ipv6.conf.{iface}.accept_ra"), "1"),
                (format!("net.ipv6.conf.{iface}.force_forwarding"), "0"),
            ] {
                values.insert(k, v.to_owned());
            }
        }
        for (k, v) in overrides {
            if v.is_empty() {
                values.remove(*k);
            } else {
                values.insert((*k).to_owned(), (*v).to_owned());
            }
        }
        move |k: &Sysctl| values.get(&k.to_string()).cloned()
    }

    fn written(plan: &Plan) -> Vec<String> {
        plan.writes
            .iter()
            .map(|w| format!("{}={} (was {})", w.key, w.value, w.was))
            .collect()
    }

    #[test]
    fn remote_ipv4_backends_get_forwarding_on_every_attached_interface() {
        let s = [web("192.0.2.10", None, "198.51.100.11", routed(3))];
        let p = plan(&s, &attached(), &defaults(&[])).unwrap();
        assert_eq!(
            written(&p),
            [
                "net.ipv4.conf.n-client.forwarding=1 (was 0)",
                "net.ipv4.conf.n-v1.forwarding=1 (was 0)",
            ]
        );
        // rp_filter 0 is fine and reported.
        assert!(
            p.ok.iter()
                .any(|(k, v, _)| k.to_string() == "net.ipv4.conf.n-v1.rp_filter" && v == "0")
        );
        // Once set, nothing more to write.
        let p = plan(
            &s,
            &attached(),
            &defaults(&[
                ("net.ipv4.conf.n-client.forwarding", "1"),
                ("net.ipv4.conf.n-v1.forwarding", "1"),
            ]),
        )
        .unwrap();
        assert!(p.writes.is_empty(), "{:?}", p.writes);
    }

    #[test]
    fn local_backends_need_no_forwarding() {
        let s = [web("192.0.2.1", local(), "192.0.2.1", local())];
        let p = plan(&s, &attached(), &defaults(&[])).unwrap();
        assert!(p.writes.is_empty(), "{:?}", p.writes);
    }

    #[test]
    fn ipv6_forwarding_keeps_router_advertisements_and_uses_force_forwarding() {
        let s = [web("2001:db8::10", None, "2001:db8:b::11", routed(3))];
        let p = plan(&s, &attached(), &defaults(&[])).unwrap();
        let w = written(&p);
        assert_eq!(
            w[..2],
            [
                "net.ipv6.conf.n-client.accept_ra=2 (was 1)",
                "net.ipv6.conf.n-v1.accept_ra=2 (was 1)",
            ],
            "accept_ra first: {w:?}"
        );
        assert!(w.contains(&"net.ipv6.conf.n-v1.forwarding=1 (was 0)".to_owned()));
        assert!(w.contains(&"net.ipv6.conf.n-v1.force_forwarding=1 (was 0)".to_owned()));
        assert!(
            !w.iter().any(|k| k.contains("rp_filter")),
            "no rp_filter for IPv6"
        );
    }

    #[test]
    fn without_force_forwarding_ipv6_needs_all_forwarding_from_the_operator() {
        let s = [web("2001:db8::10", None, "2001:db8:b::11", routed(3))];
        let no_force = defaults(&[
            ("net.ipv6.conf.n-client.force_forwarding", ""),
            ("net.ipv6.conf.n-v1.force_forwarding", ""),
        ]);
        let e = plan(&s, &attached(), &no_force).unwrap_err();
        assert_eq!(e.key, "net.ipv6.conf.all.forwarding");
        assert!(
            e.to_string()
                .contains("`sysctl -w net.ipv6.conf.all.forwarding=1`"),
            "{e}"
        );
        let with_all = defaults(&[
            ("net.ipv6.conf.n-client.force_forwarding", ""),
            ("net.ipv6.conf.n-v1.force_forwarding", ""),
            ("net.ipv6.conf.all.forwarding", "1"),
        ]);
        assert!(plan(&s, &attached(), &with_all).is_ok());
    }

    #[test]
    fn rp_filter_on_the_reply_interface_is_set_to_0_when_all_is_0() {
        let s = [web("192.0.2.10", None, "198.51.100.11", routed(3))];
        let p = plan(
            &s,
            &attached(),
            &defaults(&[("net.ipv4.conf.n-v1.rp_filter", "1")]),
        )
        .unwrap();
        assert!(written(&p).contains(&"net.ipv4.conf.n-v1.rp_filter=0 (was 1)".to_owned()));
        // An interface veer is not attached to (replies reverse-NATed on the way out) is left
        // alone.
        let s = [web("192.0.2.10", None, "198.51.100.11", routed(9))];
        let p = plan(
            &s,
            &attached(),
            &defaults(&[("net.ipv4.conf.n-v1.rp_filter", "1")]),
        )
        .unwrap();
        assert!(!written(&p).iter().any(|w| w.contains("rp_filter")));
    }

    #[test]
    fn a_strict_all_rp_filter_is_refused_with_what_to_change() {
        let s = [web("192.0.2.10", None, "198.51.100.11", routed(3))];
        let e = plan(
            &s,
            &attached(),
            &defaults(&[("net.ipv4.conf.all.rp_filter", "1")]),
        )
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "net.ipv4.conf.all.rp_filter is 1 (strict): the kernel would drop them: replies of \
             backend 198.51.100.11 of service `web` come in on n-v1 with the VIP 192.0.2.10 as \
             source (veer's reverse NAT runs before the kernel's reverse-path check); it is a \
             node-wide anti-spoofing setting, so veer leaves it to you: `sysctl -w \
             net.ipv4.conf.all.rp_filter=0` (veer then keeps n-v1 at 0), or `=2` with a route to \
             192.0.2.10"
        );
    }

    #[test]
    fn loose_rp_filter_passes_when_the_vip_has_a_route() {
        let loose = defaults(&[("net.ipv4.conf.all.rp_filter", "2")]);
        let routed_vip = [web("192.0.2.10", routed(2), "198.51.100.11", routed(3))];
        assert!(plan(&routed_vip, &attached(), &loose).is_ok());
        let no_route = [web("192.0.2.10", None, "198.51.100.11", routed(3))];
        let e = plan(&no_route, &attached(), &loose).unwrap_err();
        assert!(e.to_string().contains("the VIP has no route"), "{e}");
    }

    #[test]
    fn a_local_vip_needs_accept_local_on_the_reply_interface() {
        let s = [web("192.0.2.1", local(), "198.51.100.11", routed(3))];
        let p = plan(&s, &attached(), &defaults(&[])).unwrap();
        assert!(written(&p).contains(&"net.ipv4.conf.n-v1.accept_local=1 (was 0)".to_owned()));
        assert!(
            !written(&p)
                .iter()
                .any(|w| w.contains("n-client.accept_local"))
        );
        let r = report(&p);
        let s = r
            .iter()
            .find(|s| s.key == "net.ipv4.conf.n-v1.accept_local")
            .unwrap();
        assert_eq!(s.value, "1");
        assert_eq!(s.was.as_deref(), Some("0"));
        assert!(s.why.contains("martian"), "{}", s.why);
    }
}
