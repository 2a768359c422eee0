//! The desired state of the node as plain data: services, their groups and weights, backends and
//! source-prefix pins. Pure: no maps, no I/O. The config file, the CLI and rollouts all produce a
//! `DesiredState`; `dataplane::sync` makes the kernel match it.

mod weight;

use std::{collections::HashSet, fmt, net::IpAddr, net::SocketAddr};

pub use weight::{Weight, WeightError};

use veer_common::maps::MAX_GROUPS_PER_SERVICE;

/// Transport protocol of a service.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// TCP.
    Tcp,
    /// UDP.
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
    /// Protocol.
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
    pub rollout: Option<crate::rollout::Plan>,
}

/// How a service's backends are checked.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct HealthCheck {
    /// TCP connect, or HTTP GET.
    pub kind: CheckKind,
    /// Time between checks of a backend.
    #[serde(with = "crate::config::duration_text")]
    pub interval: std::time::Duration,
    /// How long one check may take.
    #[serde(with = "crate::config::duration_text")]
    pub timeout: std::time::Duration,
    /// Consecutive successes that bring a down backend up.
    pub rise: u32,
    /// Consecutive failures that take an up backend down.
    pub fall: u32,
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

/// Why a desired state cannot be applied.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum StateError {
    /// Two services share a name.
    #[error("service name `{name}` is used twice")]
    DuplicateService {
        /// Name.
        name: String,
    },
    /// Two services share VIP, port and protocol.
    #[error("services `{first}` and `{second}` both use {endpoint}")]
    DuplicateEndpoint {
        /// First service.
        first: String,
        /// Second service.
        second: String,
        /// `vip:port/proto`.
        endpoint: String,
    },
    /// Two groups of a service share a name.
    #[error("service `{service}`: group name `{group}` is used twice")]
    DuplicateGroup {
        /// Service.
        service: String,
        /// Group.
        group: String,
    },
    /// A backend appears twice in a group.
    #[error("service `{service}`, group `{group}`: backend {backend} is listed twice")]
    DuplicateBackend {
        /// Service.
        service: String,
        /// Group.
        group: String,
        /// Backend.
        backend: SocketAddr,
    },
    /// Too many groups.
    #[error("service `{service}` has {count} groups; at most {max} are supported")]
    TooManyGroups {
        /// Service.
        service: String,
        /// Groups given.
        count: usize,
        /// The limit.
        max: usize,
    },
    /// A backend of another address family than the VIP.
    #[error(
        "service `{service}`, group `{group}`: backend {backend} is not of the VIP's address family ({vip}); veer does not translate between IPv4 and IPv6"
    )]
    FamilyMismatch {
        /// Service.
        service: String,
        /// Group.
        group: String,
        /// Backend.
        backend: SocketAddr,
        /// VIP.
        vip: IpAddr,
    },
    /// A group with weight and no backend.
    #[error("service `{service}`, group `{group}` has weight {weight} but no backends")]
    WeightWithoutBackends {
        /// Service.
        service: String,
        /// Group.
        group: String,
        /// Weight.
        weight: Weight,
    },
    /// A pin names a group the service does not have.
    #[error("service `{service}`: pin {prefix}/{len} names unknown group `{group}`")]
    PinUnknownGroup {
        /// Service.
        service: String,
        /// Prefix.
        prefix: IpAddr,
        /// Length.
        len: u8,
        /// Group.
        group: String,
    },
    /// A pin's prefix is malformed or of the wrong family.
    #[error(
        "service `{service}`: pin {prefix}/{len} is not a valid prefix of the VIP's address family"
    )]
    BadPin {
        /// Service.
        service: String,
        /// Prefix.
        prefix: IpAddr,
        /// Length.
        len: u8,
    },
    /// Port 0.
    #[error("service `{service}`: port 0 is not a valid service port")]
    PortZero {
        /// Service.
        service: String,
    },
    /// A backend serves more services than its replies can be matched against.
    #[error(
        "backend {backend}/{protocol} serves {} services ({}); at most {max} services can share a backend address and port",
        services.len(),
        services.join(", ")
    )]
    BackendInTooManyServices {
        /// Backend.
        backend: SocketAddr,
        /// Protocol.
        protocol: Protocol,
        /// The services, in order.
        services: Vec<String>,
        /// The limit.
        max: usize,
    },
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

    /// Checks every rule a state must keep to be applied. Returns the first broken one.
    pub fn validate(&self) -> Result<(), StateError> {
        let mut names = HashSet::new();
        let mut endpoints: Vec<(&str, String)> = Vec::new();
        for s in &self.services {
            if !names.insert(s.name.as_str()) {
                return Err(StateError::DuplicateService {
                    name: s.name.clone(),
                });
            }
            let ep = s.endpoint();
            if let Some((first, _)) = endpoints.iter().find(|(_, e)| *e == ep) {
                return Err(StateError::DuplicateEndpoint {
                    first: (*first).to_owned(),
                    second: s.name.clone(),
                    endpoint: ep,
                });
            }
            endpoints.push((&s.name, ep));
            s.validate()?;
        }
        self.validate_shared_backends()
    }

    /// A reply finds its flow by trying each service its backend serves
    /// (`veer_common::flow::MAX_VIPS_PER_BACKEND` at most).
    fn validate_shared_backends(&self) -> Result<(), StateError> {
        let max = veer_common::flow::MAX_VIPS_PER_BACKEND;
        let mut by_backend: std::collections::BTreeMap<(SocketAddr, Protocol), Vec<&str>> =
            std::collections::BTreeMap::new();
        for s in &self.services {
            for b in s.groups.iter().flat_map(|g| &g.backends) {
                let services = by_backend.entry((b.addr, s.protocol)).or_default();
                if !services.contains(&s.name.as_str()) {
                    services.push(&s.name);
                }
            }
        }
        match by_backend.into_iter().find(|(_, v)| v.len() > max) {
            Some(((backend, protocol), services)) => Err(StateError::BackendInTooManyServices {
                backend,
                protocol,
                services: services.into_iter().map(str::to_owned).collect(),
                max,
            }),
            None => Ok(()),
        }
    }
}

impl Service {
    fn validate(&self) -> Result<(), StateError> {
        let service = || self.name.clone();
        if self.port == 0 {
            return Err(StateError::PortZero { service: service() });
        }
        if self.groups.len() > MAX_GROUPS_PER_SERVICE {
            return Err(StateError::TooManyGroups {
                service: service(),
                count: self.groups.len(),
                max: MAX_GROUPS_PER_SERVICE,
            });
        }
        let mut groups = HashSet::new();
        for g in &self.groups {
            if !groups.insert(g.name.as_str()) {
                return Err(StateError::DuplicateGroup {
                    service: service(),
                    group: g.name.clone(),
                });
            }
            if g.backends.is_empty() && !g.weight.is_zero() {
                return Err(StateError::WeightWithoutBackends {
                    service: service(),
                    group: g.name.clone(),
                    weight: g.weight,
                });
            }
            let mut seen = HashSet::new();
            for b in &g.backends {
                if b.addr.is_ipv4() != self.vip.is_ipv4() {
                    return Err(StateError::FamilyMismatch {
                        service: service(),
                        group: g.name.clone(),
                        backend: b.addr,
                        vip: self.vip,
                    });
                }
                if !seen.insert(b.addr) {
                    return Err(StateError::DuplicateBackend {
                        service: service(),
                        group: g.name.clone(),
                        backend: b.addr,
                    });
                }
            }
        }
        for p in &self.pins {
            let max = if self.vip.is_ipv4() { 32 } else { 128 };
            if p.prefix.is_ipv4() != self.vip.is_ipv4()
                || p.len > max
                || !host_bits_zero(p.prefix, p.len)
            {
                return Err(StateError::BadPin {
                    service: service(),
                    prefix: p.prefix,
                    len: p.len,
                });
            }
            if self.group(&p.group).is_none() {
                return Err(StateError::PinUnknownGroup {
                    service: service(),
                    prefix: p.prefix,
                    len: p.len,
                    group: p.group.clone(),
                });
            }
        }
        Ok(())
    }
}

/// Whether every bit of `addr` past `len` is zero.
pub fn host_bits_zero(addr: IpAddr, len: u8) -> bool {
    match addr {
        IpAddr::V4(a) => {
            let v = u32::from(a);
            len >= 32 || v & (u32::MAX >> len) == 0
        }
        IpAddr::V6(a) => {
            let v = u128::from(a);
            len >= 128 || v & (u128::MAX >> len) == 0
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn web() -> DesiredState {
        DesiredState {
            services: vec![Service {
                name: "web".into(),
                vip: "192.0.2.10".parse().unwrap(),
                port: 80,
                protocol: Protocol::Tcp,
                groups: vec![
                    Group {
                        name: "v1".into(),
                        weight: Weight::from_percent_str("100").unwrap(),
                        backends: vec![Backend {
                            addr: "198.51.100.11:8080".parse().unwrap(),
                        }],
                    },
                    Group {
                        name: "v2".into(),
                        weight: Weight::ZERO,
                        backends: vec![Backend {
                            addr: "198.51.100.21:8080".parse().unwrap(),
                        }],
                    },
                ],
                pins: vec![],
                health: None,
                rollout: None,
            }],
        }
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
            s.validate(),
            Err(StateError::DuplicateService { .. })
        ));

        let mut s = web();
        let mut other = s.services[0].clone();
        other.name = "web2".into();
        s.services.push(other);
        assert_eq!(
            s.validate(),
            Err(StateError::DuplicateEndpoint {
                first: "web".into(),
                second: "web2".into(),
                endpoint: "192.0.2.10:80/tcp".into()
            })
        );

        let mut s = web();
        s.services[0].groups[1].backends[0].addr = "[2001:db8::1]:80".parse().unwrap();
        assert!(matches!(
            s.validate(),
            Err(StateError::FamilyMismatch { .. })
        ));

        let mut s = web();
        s.services[0].groups[0].backends.clear();
        assert!(matches!(
            s.validate(),
            Err(StateError::WeightWithoutBackends { .. })
        ));

        let mut s = web();
        s.services[0].pins.push(Pin {
            prefix: "203.0.113.1".parse().unwrap(),
            len: 24,
            group: "v2".into(),
        });
        assert!(
            matches!(s.validate(), Err(StateError::BadPin { .. })),
            "host bits set"
        );

        let mut s = web();
        s.services[0].pins.push(Pin {
            prefix: "203.0.113.0".parse().unwrap(),
            len: 24,
            group: "v9".into(),
        });
        assert!(matches!(
            s.validate(),
            Err(StateError::PinUnknownGroup { .. })
        ));

        let mut s = web();
        let g = s.services[0].groups[0].clone();
        s.services[0].groups = vec![g; MAX_GROUPS_PER_SERVICE + 1];
        assert!(matches!(
            s.validate(),
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
    }
}
