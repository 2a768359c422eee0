//! How one desired state differs from another, as an operator reads a change before making it
//! (`--dry-run`, `veer diff`): services, groups, weights, backends, pins, health checks and
//! declared rollouts added, removed or changed. Pure.

use std::{fmt::Write as _, net::SocketAddr};

use crate::model::{CheckKind, DesiredState, Group, HealthCheck, Pin, Plan, Service, Weight};

/// One difference between two desired states. A service added or removed lists its groups,
/// backends and pins as added or removed too, so the diff shows everything that changes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Difference {
    /// A new service.
    ServiceAdded {
        /// Name of the service.
        service: String,
        /// `vip:port/proto`.
        endpoint: String,
    },
    /// A service that goes away.
    ServiceRemoved {
        /// Name of the service.
        service: String,
        /// `vip:port/proto`.
        endpoint: String,
    },
    /// A service that moves to another VIP, port or protocol.
    EndpointChanged {
        /// Name of the service.
        service: String,
        /// `vip:port/proto` before.
        from: String,
        /// `vip:port/proto` after.
        to: String,
    },
    /// A new group.
    GroupAdded {
        /// Name of the service.
        service: String,
        /// Name of the group.
        group: String,
        /// Its weight.
        weight: Weight,
    },
    /// A group that goes away.
    GroupRemoved {
        /// Name of the service.
        service: String,
        /// Name of the group.
        group: String,
        /// Its weight before.
        weight: Weight,
    },
    /// A group's weight changes.
    WeightChanged {
        /// Name of the service.
        service: String,
        /// Name of the group.
        group: String,
        /// Before.
        from: Weight,
        /// After.
        to: Weight,
    },
    /// A backend joins a group.
    BackendAdded {
        /// Name of the service.
        service: String,
        /// Name of the group.
        group: String,
        /// Its address.
        backend: SocketAddr,
    },
    /// A backend leaves a group.
    BackendRemoved {
        /// Name of the service.
        service: String,
        /// Name of the group.
        group: String,
        /// Its address.
        backend: SocketAddr,
    },
    /// A new source-prefix pin.
    PinAdded {
        /// Name of the service.
        service: String,
        /// `203.0.113.0/24`.
        prefix: String,
        /// The group it sends to.
        group: String,
    },
    /// A pin that goes away.
    PinRemoved {
        /// Name of the service.
        service: String,
        /// `203.0.113.0/24`.
        prefix: String,
        /// The group it sent to.
        group: String,
    },
    /// A pin that sends its prefix to another group.
    PinChanged {
        /// Name of the service.
        service: String,
        /// `203.0.113.0/24`.
        prefix: String,
        /// The group before.
        from: String,
        /// The group after.
        to: String,
    },
    /// The service's health check is added, removed or changed.
    HealthChanged {
        /// Name of the service.
        service: String,
        /// The check before, in words (none: no check).
        from: Option<String>,
        /// The check after, in words (none: no check).
        to: Option<String>,
    },
    /// The rollout the config file declares for the service is added, removed or changed.
    DeclaredRolloutChanged {
        /// Name of the service.
        service: String,
        /// The plan before, in words (none: no declared rollout).
        from: Option<String>,
        /// The plan after, in words (none: no declared rollout).
        to: Option<String>,
    },
}

/// Every difference between `old` and `new`, services in the order of `new` (then those only
/// `old` has), and within a service: endpoint, groups (weights, backends), pins, health check,
/// declared rollout.
pub fn between(old: &DesiredState, new: &DesiredState) -> Vec<Difference> {
    let mut out = Vec::new();
    for s in &new.services {
        match old.service(&s.name) {
            None => added(&mut out, s),
            Some(o) => changed(&mut out, o, s),
        }
    }
    for s in &old.services {
        if new.service(&s.name).is_none() {
            removed(&mut out, s);
        }
    }
    out
}

fn added(out: &mut Vec<Difference>, s: &Service) {
    let service = || s.name.clone();
    out.push(Difference::ServiceAdded {
        service: service(),
        endpoint: s.endpoint(),
    });
    for g in &s.groups {
        group_added(out, &s.name, g);
    }
    for p in &s.pins {
        out.push(Difference::PinAdded {
            service: service(),
            prefix: prefix(p),
            group: p.group.clone(),
        });
    }
    if let Some(h) = &s.health {
        out.push(Difference::HealthChanged {
            service: service(),
            from: None,
            to: Some(health(h)),
        });
    }
    if let Some(p) = &s.rollout {
        out.push(Difference::DeclaredRolloutChanged {
            service: service(),
            from: None,
            to: Some(plan(p)),
        });
    }
}

fn removed(out: &mut Vec<Difference>, s: &Service) {
    out.push(Difference::ServiceRemoved {
        service: s.name.clone(),
        endpoint: s.endpoint(),
    });
    for g in &s.groups {
        group_removed(out, &s.name, g);
    }
    for p in &s.pins {
        out.push(Difference::PinRemoved {
            service: s.name.clone(),
            prefix: prefix(p),
            group: p.group.clone(),
        });
    }
}

fn group_added(out: &mut Vec<Difference>, service: &str, g: &Group) {
    out.push(Difference::GroupAdded {
        service: service.to_owned(),
        group: g.name.clone(),
        weight: g.weight,
    });
    for b in &g.backends {
        out.push(Difference::BackendAdded {
            service: service.to_owned(),
            group: g.name.clone(),
            backend: b.addr,
        });
    }
}

fn group_removed(out: &mut Vec<Difference>, service: &str, g: &Group) {
    out.push(Difference::GroupRemoved {
        service: service.to_owned(),
        group: g.name.clone(),
        weight: g.weight,
    });
    for b in &g.backends {
        out.push(Difference::BackendRemoved {
            service: service.to_owned(),
            group: g.name.clone(),
            backend: b.addr,
        });
    }
}

fn changed(out: &mut Vec<Difference>, old: &Service, new: &Service) {
    let service = || new.name.clone();
    if old.endpoint() != new.endpoint() {
        out.push(Difference::EndpointChanged {
            service: service(),
            from: old.endpoint(),
            to: new.endpoint(),
        });
    }
    for g in &new.groups {
        let Some(o) = old.group(&g.name) else {
            group_added(out, &new.name, g);
            continue;
        };
        if o.weight != g.weight {
            out.push(Difference::WeightChanged {
                service: service(),
                group: g.name.clone(),
                from: o.weight,
                to: g.weight,
            });
        }
        for b in g.backends.iter().filter(|b| !o.backends.contains(b)) {
            out.push(Difference::BackendAdded {
                service: service(),
                group: g.name.clone(),
                backend: b.addr,
            });
        }
        for b in o.backends.iter().filter(|b| !g.backends.contains(b)) {
            out.push(Difference::BackendRemoved {
                service: service(),
                group: g.name.clone(),
                backend: b.addr,
            });
        }
    }
    for g in old.groups.iter().filter(|g| new.group(&g.name).is_none()) {
        group_removed(out, &new.name, g);
    }
    let same_prefix = |a: &Pin, b: &Pin| (a.prefix, a.len) == (b.prefix, b.len);
    for p in &new.pins {
        match old.pins.iter().find(|o| same_prefix(o, p)) {
            None => out.push(Difference::PinAdded {
                service: service(),
                prefix: prefix(p),
                group: p.group.clone(),
            }),
            Some(o) if o.group != p.group => out.push(Difference::PinChanged {
                service: service(),
                prefix: prefix(p),
                from: o.group.clone(),
                to: p.group.clone(),
            }),
            Some(_) => {}
        }
    }
    for o in old
        .pins
        .iter()
        .filter(|o| !new.pins.iter().any(|p| same_prefix(o, p)))
    {
        out.push(Difference::PinRemoved {
            service: service(),
            prefix: prefix(o),
            group: o.group.clone(),
        });
    }
    if old.health != new.health {
        out.push(Difference::HealthChanged {
            service: service(),
            from: old.health.as_ref().map(health),
            to: new.health.as_ref().map(health),
        });
    }
    if old.rollout != new.rollout {
        out.push(Difference::DeclaredRolloutChanged {
            service: service(),
            from: old.rollout.as_ref().map(plan),
            to: new.rollout.as_ref().map(plan),
        });
    }
}

fn prefix(p: &Pin) -> String {
    format!("{}/{}", p.prefix, p.len)
}

/// `http /healthz (expect 200) every 2s, timeout 1s, rise 2, fall 3`.
fn health(h: &HealthCheck) -> String {
    let kind = match &h.kind {
        CheckKind::Tcp => "tcp".to_owned(),
        CheckKind::Http {
            path,
            expect_status,
        } => format!("http {path} (expect {expect_status})"),
    };
    format!(
        "{kind} every {}, timeout {}, rise {}, fall {}",
        humantime::format_duration(h.interval),
        humantime::format_duration(h.timeout),
        h.rise,
        h.fall
    )
}

/// `to v2, steps 1,5,25,50,100, pause 30s, max failure rate 1%, min flows 10`.
fn plan(p: &Plan) -> String {
    let steps: Vec<String> = p.steps.iter().map(ToString::to_string).collect();
    let mut text = format!(
        "to {}, steps {}, pause {}, max failure rate {}%, min flows {}",
        p.to,
        steps.join(","),
        humantime::format_duration(p.pause),
        p.max_failure_rate,
        p.min_flows
    );
    for g in &p.gates {
        // Infallible: writing into a String cannot fail.
        let _ = write!(text, ", gate {g}");
    }
    if let Some(t) = &p.judge {
        let _ = write!(
            text,
            ", judge (max latency increase {}, latency slack {}, max failure increase {}, confidence {}, min sample {})",
            t.max_latency_increase,
            humantime::format_duration(t.latency_slack),
            t.max_failure_increase,
            t.confidence,
            t.min_sample
        );
    }
    if let Some(d) = &p.drain {
        let _ = write!(
            text,
            ", drain deadline {} at {}",
            humantime::format_duration(d.deadline),
            d.pace
        );
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{
        CheckKind, HealthCheck, Pin,
        fixtures::{group, w, web},
    };

    #[test]
    fn weights_backends_pins_and_checks_are_each_one_difference() {
        let old = web();
        let mut new = web();
        let s = &mut new.services[0];
        s.groups[0].weight = w("90");
        s.groups[1].weight = w("10");
        s.groups[1].backends.push(crate::model::Backend {
            addr: "198.51.100.22:8080".parse().unwrap(),
        });
        s.pins.push(Pin {
            prefix: "203.0.113.0".parse().unwrap(),
            len: 24,
            group: "v2".into(),
        });
        s.health = Some(HealthCheck::new(CheckKind::Tcp));
        let d = between(&old, &new);
        assert_eq!(
            d,
            [
                Difference::WeightChanged {
                    service: "web".into(),
                    group: "v1".into(),
                    from: w("100"),
                    to: w("90")
                },
                Difference::WeightChanged {
                    service: "web".into(),
                    group: "v2".into(),
                    from: w("0"),
                    to: w("10")
                },
                Difference::BackendAdded {
                    service: "web".into(),
                    group: "v2".into(),
                    backend: "198.51.100.22:8080".parse().unwrap()
                },
                Difference::PinAdded {
                    service: "web".into(),
                    prefix: "203.0.113.0/24".into(),
                    group: "v2".into()
                },
                Difference::HealthChanged {
                    service: "web".into(),
                    from: None,
                    to: Some("tcp every 2s, timeout 1s, rise 2, fall 3".into())
                },
            ]
        );
        assert!(between(&new, &new).is_empty());
    }

    #[test]
    fn a_service_added_or_removed_lists_what_it_holds() {
        let mut new = web();
        new.services[0].groups.push(group("v3", "0", &[]));
        let d = between(&DesiredState::default(), &new);
        assert_eq!(
            d[0],
            Difference::ServiceAdded {
                service: "web".into(),
                endpoint: "192.0.2.10:80/tcp".into()
            }
        );
        assert_eq!(
            d.iter()
                .filter(|x| matches!(x, Difference::GroupAdded { .. }))
                .count(),
            3
        );
        let back = between(&new, &DesiredState::default());
        assert!(matches!(back[0], Difference::ServiceRemoved { .. }));
        assert_eq!(back.len(), d.len());
    }

    #[test]
    fn a_declared_rollouts_judge_and_drain_show_in_the_difference() {
        use crate::model::{
            Plan,
            drain::{DrainEnd, Pace},
            tolerance::Tolerances,
        };
        let mut old = web();
        old.services[0].rollout = Some(Plan::to("v2"));
        let mut new = old.clone();
        let plan = new.services[0].rollout.as_mut().unwrap();
        plan.judge = Some(Tolerances::DEFAULT);
        plan.drain = Some(DrainEnd {
            deadline: std::time::Duration::from_mins(10),
            pace: Pace::per_second(20),
        });
        assert_eq!(
            between(&old, &new),
            [Difference::DeclaredRolloutChanged {
                service: "web".into(),
                from: Some(
                    "to v2, steps 1,5,25,50,100, pause 30s, max failure rate 1%, min flows 10"
                        .into()
                ),
                to: Some(
                    "to v2, steps 1,5,25,50,100, pause 30s, max failure rate 1%, min flows 10, \
                     judge (max latency increase 20%, latency slack 1ms, max failure increase \
                     25%, confidence 95%, min sample 100), drain deadline 10m at 20/s"
                        .into()
                ),
            }]
        );
    }
}
