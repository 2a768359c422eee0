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
    GroupField, HealthField, NAME_RULE, PinField, Place, RolloutField, ServiceField, StateError,
    TimeoutField, Violation, host_bits_zero, parse_prefix, valid_name,
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
