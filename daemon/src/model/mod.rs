//! The desired state of the node as plain data: services, their groups and weights, backends and
//! source-prefix pins, rollout plans and node settings, and the ids the kernel knows them by.
//! Pure: no maps, no I/O. The config file, the CLI and rollouts all produce a `DesiredState`;
//! `dataplane::sync` makes the kernel match it.

pub mod drain;
#[cfg(test)]
pub(crate) mod fixtures;
pub mod gate;
pub mod human;
mod ids;
mod node;
pub mod plan;
pub mod tolerance;
mod validate;
mod weight;

use std::{fmt, net::IpAddr, net::SocketAddr, time::Duration};

pub use ids::{BackendRef, Down, GroupRef, Ids};
pub use node::{HookChoice, NodeChange, NodeConfig, Timeouts, XdpAttachMode};
pub use plan::{OnFailure, Plan, PlanError};
pub use validate::{
    GroupField, HealthField, MAX_DRAIN_WAIT, NAME_RULE, PinField, Place, RolloutField,
    ServiceField, StateError, TimeoutField, Violation, drain_wait, host_bits_zero, parse_prefix,
    valid_name,
};
pub use weight::{Weight, WeightError};

/// Transport protocol of a service.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// TCP (IP protocol 6).
    Tcp,
    /// UDP (IP protocol 17).
    Udp,
}

impl Protocol {
    /// IP protocol number.
    pub const fn number(self) -> u8 {
        match self {
            Protocol::Tcp => veer_common::PROTO_TCP,
            Protocol::Udp => veer_common::PROTO_UDP,
        }
    }

    /// Lower-case name, as in the config file.
    pub const fn as_str(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
        }
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Everything the node should be doing.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct DesiredState {
    /// Services, each with a unique name and a unique (VIP, port, protocol).
    pub services: Vec<Service>,
}

/// A VIP, port and protocol with a name, split between groups.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Service {
    /// Unique name (`web`).
    pub name: String,
    /// Virtual IP.
    pub vip: IpAddr,
    /// Service port.
    pub port: u16,
    /// TCP or UDP.
    pub protocol: Protocol,
    /// Groups in order; new flows are split between them by weight.
    pub groups: Vec<Group>,
    /// Source-prefix pins, checked before the weights.
    pub pins: Vec<Pin>,
    /// Active health check of every backend (none: backends are always up).
    #[serde(default)]
    pub health: Option<HealthCheck>,
    /// A rollout the config file declares: started when the file is applied, unless the same
    /// plan already ran or runs for the service.
    #[serde(default)]
    pub rollout: Option<Plan>,
}

/// How a service's backends are checked.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct HealthCheck {
    /// TCP connect, or HTTP GET.
    pub kind: CheckKind,
    /// Time between checks of a backend.
    #[serde(with = "human::duration")]
    pub interval: Duration,
    /// How long one check may take.
    #[serde(with = "human::duration")]
    pub timeout: Duration,
    /// Consecutive successes that bring a down backend up.
    pub rise: u32,
    /// Consecutive failures that take an up backend down.
    pub fall: u32,
}

impl HealthCheck {
    /// Time between checks when not said.
    pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(2);
    /// How long one check may take when not said.
    pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(1);
    /// Successes that bring a backend up when not said.
    pub const DEFAULT_RISE: u32 = 2;
    /// Failures that take a backend down when not said.
    pub const DEFAULT_FALL: u32 = 3;
    /// Path an HTTP check asks for when not said.
    pub const DEFAULT_PATH: &str = "/";
    /// Status an HTTP check expects when not said.
    pub const DEFAULT_EXPECT_STATUS: u16 = 200;
    /// Shortest interval.
    pub const MIN_INTERVAL: Duration = Duration::from_millis(100);
    /// Longest interval: a backend is checked at least hourly.
    pub const MAX_INTERVAL: Duration = Duration::from_hours(1);
    /// Shortest timeout.
    pub const MIN_TIMEOUT: Duration = Duration::from_millis(10);
    /// What `rise` and `fall` may be.
    pub const COUNTS: std::ops::RangeInclusive<u32> = 1..=100;
    /// What `expect_status` may be.
    pub const STATUSES: std::ops::RangeInclusive<u16> = 100..=599;

    /// A check of `kind` with the default interval, timeout, rise and fall.
    pub fn new(kind: CheckKind) -> Self {
        Self {
            kind,
            interval: Self::DEFAULT_INTERVAL,
            timeout: Self::DEFAULT_TIMEOUT,
            rise: Self::DEFAULT_RISE,
            fall: Self::DEFAULT_FALL,
        }
    }
}

/// What a health check does.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case", tag = "type")]
pub enum CheckKind {
    /// A TCP connection is accepted.
    Tcp,
    /// `GET path` answers `expect_status`.
    Http {
        /// Request path.
        path: String,
        /// Expected status code.
        expect_status: u16,
    },
}

/// One version of a service's backends.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Group {
    /// Name, unique in its service (`v1`, `blue`, `canary`).
    pub name: String,
    /// Share of new flows.
    pub weight: Weight,
    /// Backends; new flows spread over them by Maglev.
    pub backends: Vec<Backend>,
}

/// One backend.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Backend {
    /// Address and port.
    pub addr: SocketAddr,
}

/// "This client prefix always gets that group."
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Pin {
    /// Network address of the prefix (host bits zero).
    pub prefix: IpAddr,
    /// Prefix length.
    pub len: u8,
    /// Name of a group of the service.
    pub group: String,
}

impl Service {
    /// `vip:port/proto`, IPv6 in brackets.
    pub fn endpoint(&self) -> String {
        format!("{}/{}", SocketAddr::new(self.vip, self.port), self.protocol)
    }

    /// The group named `name`.
    pub fn group(&self, name: &str) -> Option<&Group> {
        self.groups.iter().find(|g| g.name == name)
    }
}

impl DesiredState {
    /// The service named `name`.
    pub fn service(&self, name: &str) -> Option<&Service> {
        self.services.iter().find(|s| s.name == name)
    }
}

#[cfg(test)]
mod tests {
    use super::{fixtures::web, *};

    #[test]
    fn node_changes_name_each_setting_with_both_values() {
        let running = NodeConfig::default();
        assert!(running.changes(&running).is_empty());
        let mut wanted = running.clone();
        wanted.interfaces = vec!["eth1".into()];
        wanted.xdp_mode = XdpAttachMode::Native;
        wanted.hooks.insert("eth1".into(), HookChoice::Tc);
        wanted.conntrack_new_max = 1 << 17;
        wanted.timeouts.udp = Duration::from_secs(90);
        let changes = running.changes(&wanted);
        let text: Vec<String> = changes
            .iter()
            .map(|c| format!("{} {} -> {}", c.setting, c.running, c.wanted))
            .collect();
        assert_eq!(
            text,
            [
                "interfaces [] -> [\"eth1\"]",
                "xdp_mode auto -> native",
                "hooks {} -> {eth1 = \"tc\"}",
                "conntrack_new_max 65536 -> 131072",
                "timeouts.udp 1m -> 1m 30s"
            ]
        );
    }

    /// Every duration has an upper bound: a health interval of about 3e11 years used to pass
    /// and make `now + interval` panic in the health scheduler.
    #[test]
    fn every_duration_has_an_upper_bound() {
        let eons = humantime::parse_duration("300000000000years").unwrap();
        let mut s = web();
        let mut check = HealthCheck::new(CheckKind::Tcp);
        check.interval = eons;
        s.services[0].health = Some(check);
        let e = s.validate().unwrap_err();
        assert_eq!(
            e.at,
            Place::Health {
                service: 0,
                field: HealthField::Interval
            }
        );
        assert!(
            e.to_string().ends_with("is longer than the 1h maximum"),
            "{e}"
        );
        let mut s = web();
        let mut check = HealthCheck::new(CheckKind::Tcp);
        check.interval = HealthCheck::MAX_INTERVAL;
        check.timeout = HealthCheck::MAX_INTERVAL;
        s.services[0].health = Some(check);
        assert_eq!(s.validate(), Ok(()), "the bounds themselves are fine");

        let mut s = web();
        let mut plan = Plan::to("v2");
        plan.pause = eons;
        s.services[0].rollout = Some(plan.clone());
        assert!(matches!(
            s.validate().map_err(|v| v.error),
            Err(StateError::BadRollout {
                source: PlanError::PauseTooLong { .. },
                ..
            })
        ));
        plan.pause = Plan::DEFAULT_PAUSE;
        plan.gate_timeout = eons;
        assert!(matches!(
            plan.validate(&s.services[0]),
            Err(PlanError::GateTimeoutTooLong { .. })
        ));

        let mut node = NodeConfig::default();
        node.timeouts.tcp_established = eons;
        assert!(matches!(
            node.validate().map_err(|v| v.error),
            Err(StateError::TimeoutTooLong {
                field: "tcp_established",
                ..
            })
        ));
        assert!(drain_wait("300000000000years").is_err());
        assert_eq!(drain_wait("5m"), Ok(Duration::from_mins(5)));
    }

    /// Every map's capacity is checked at validation, naming the map and its limit, so that a
    /// state too large is refused before any write rather than failing halfway through them.
    #[test]
    fn a_state_just_over_a_map_capacity_is_refused_naming_the_map() {
        use veer_common::maps::{MAX_BACKENDS, MAX_GROUPS, MAX_PINS, MAX_SERVICES};
        let one = |name: String, port: u16, groups: Vec<Group>| Service {
            name,
            vip: "192.0.2.10".parse().unwrap(),
            port,
            protocol: Protocol::Tcp,
            groups,
            pins: vec![],
            health: None,
            rollout: None,
        };
        let empty = |n: usize| -> Vec<Group> {
            (0..n)
                .map(|g| Group {
                    name: format!("g{g}"),
                    weight: Weight::ZERO,
                    backends: vec![],
                })
                .collect()
        };
        let services = |n: usize, groups: usize| DesiredState {
            services: (0..n)
                .map(|i| one(format!("s{i}"), i as u16 + 1, empty(groups)))
                .collect(),
        };
        let too_many = |s: &DesiredState| match s.validate() {
            Err(Violation {
                error: StateError::TooMany { what, max, map, .. },
                ..
            }) => Some((what, max, map)),
            other => panic!("{other:?}"),
        };
        let max = MAX_SERVICES as usize - 1;
        assert_eq!(services(max, 1).validate(), Ok(()));
        assert_eq!(
            too_many(&services(max + 1, 1)),
            Some(("services", max, "VEER_SERVICES"))
        );
        let e = services(max + 1, 1).validate().unwrap_err();
        assert_eq!(
            e.to_string(),
            format!(
                "{} services in all; the VEER_SERVICES map holds at most {max}",
                max + 1
            )
        );
        // Groups: 8 per service.
        let max = MAX_GROUPS as usize - 1;
        let mut s = services(max / 8, 8);
        s.services.push(one("last".into(), 9999, empty(max % 8)));
        assert_eq!(s.validate(), Ok(()));
        s.services.last_mut().unwrap().groups.push(Group {
            name: "over".into(),
            weight: Weight::ZERO,
            backends: vec![],
        });
        assert_eq!(too_many(&s), Some(("groups", max, "VEER_MAGLEV")));
        // Backends: 8 groups of 8192 in one service.
        let max = MAX_BACKENDS as usize - 1;
        let backends = |g: usize, n: usize| -> Vec<Backend> {
            (0..n)
                .map(|k| Backend {
                    addr: SocketAddr::new(
                        format!("198.51.100.{}", 1 + g).parse().unwrap(),
                        k as u16 + 1,
                    ),
                })
                .collect()
        };
        let mut s = services(1, 8);
        for (g, group) in s.services[0].groups.iter_mut().enumerate() {
            group.backends = backends(g, if g == 7 { 8191 } else { 8192 });
        }
        assert_eq!(s.validate(), Ok(()));
        assert_eq!(
            s.services[0]
                .groups
                .iter()
                .map(|g| g.backends.len())
                .sum::<usize>(),
            max
        );
        s.services[0].groups[7].backends.push(Backend {
            addr: "198.51.100.99:1".parse().unwrap(),
        });
        assert_eq!(too_many(&s), Some(("backends", max, "VEER_BACKENDS")));
        // Pins: one service, one /48 each.
        let max = MAX_PINS as usize;
        let mut s = services(1, 1);
        s.services[0].vip = "2001:db8::10".parse().unwrap();
        s.services[0].pins = (0..=max)
            .map(|i| Pin {
                prefix: std::net::Ipv6Addr::new(0x2001, 0xdb8, i as u16, 0, 0, 0, 0, 0).into(),
                len: 48,
                group: "g0".into(),
            })
            .collect();
        assert_eq!(too_many(&s), Some(("pins", max, "VEER_PINS")));
        s.services[0].pins.pop();
        assert_eq!(s.validate(), Ok(()));
    }

    #[test]
    fn a_good_state_validates() {
        assert_eq!(web().validate(), Ok(()));
    }

    #[test]
    fn each_rule_is_enforced() {
        let mut s = web();
        s.services.push(s.services[0].clone());
        assert!(matches!(
            s.validate().map_err(|v| v.error),
            Err(StateError::DuplicateService { .. })
        ));

        let mut s = web();
        let mut other = s.services[0].clone();
        other.name = "web2".into();
        s.services.push(other);
        assert_eq!(
            s.validate(),
            Err(Violation {
                at: Place::Service {
                    service: 1,
                    field: ServiceField::Table
                },
                first: Some(Place::Service {
                    service: 0,
                    field: ServiceField::Table
                }),
                error: StateError::DuplicateEndpoint {
                    service: "web2".into(),
                    endpoint: "192.0.2.10:80/tcp".into(),
                    first: "web".into(),
                }
            })
        );

        let mut s = web();
        s.services[0].groups[1].backends[0].addr = "[2001:db8::1]:80".parse().unwrap();
        assert!(matches!(
            s.validate().map_err(|v| v.error),
            Err(StateError::FamilyMismatch { .. })
        ));

        let mut s = web();
        s.services[0].groups[0].backends.clear();
        assert!(matches!(
            s.validate().map_err(|v| v.error),
            Err(StateError::WeightWithoutBackends { .. })
        ));

        let mut s = web();
        s.services[0].pins.push(Pin {
            prefix: "203.0.113.1".parse().unwrap(),
            len: 24,
            group: "v2".into(),
        });
        assert!(
            matches!(
                s.validate().map_err(|v| v.error),
                Err(StateError::BadPin { .. })
            ),
            "host bits set"
        );

        let mut s = web();
        s.services[0].pins.push(Pin {
            prefix: "203.0.113.0".parse().unwrap(),
            len: 24,
            group: "v9".into(),
        });
        assert!(matches!(
            s.validate().map_err(|v| v.error),
            Err(StateError::PinUnknownGroup { .. })
        ));

        let mut s = web();
        let g = s.services[0].groups[0].clone();
        s.services[0].groups = vec![g; veer_common::maps::MAX_GROUPS_PER_SERVICE + 1];
        assert!(matches!(
            s.validate().map_err(|v| v.error),
            Err(StateError::TooManyGroups { .. })
        ));
    }

    #[test]
    fn a_backend_serves_at_most_four_services() {
        let mut s = web();
        for i in 1..4u8 {
            let mut other = s.services[0].clone();
            other.name = format!("web{i}");
            other.vip = IpAddr::from([192, 0, 2, 10 + i]);
            s.services.push(other);
        }
        assert_eq!(s.validate(), Ok(()), "four services share both backends");
        // The same backend address and port in a UDP service is another backend.
        let mut udp = s.services[0].clone();
        udp.name = "dns".into();
        udp.protocol = Protocol::Udp;
        s.services.push(udp);
        assert_eq!(s.validate(), Ok(()));
        let mut fifth = s.services[0].clone();
        fifth.name = "web5".into();
        fifth.vip = "192.0.2.20".parse().unwrap();
        s.services.push(fifth);
        let err = s.validate().unwrap_err();
        assert_eq!(
            err.to_string(),
            "backend 198.51.100.11:8080/tcp serves 5 services (web, web1, web2, web3, web5); \
             at most 4 services can share a backend address and port"
        );
        assert_eq!(
            err.at,
            Place::Service {
                service: 5,
                field: ServiceField::Table
            },
            "at the service that went over the limit"
        );
    }
}
