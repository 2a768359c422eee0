//! Config files of the test bed, built as values and written by veer's own writer
//! (`veer::config::to_toml`, which reads back to the same values): no test pastes TOML.
//!
//! `Family` names the bed's documentation addresses in IPv4 and IPv6, so a test written once
//! runs for both.

use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    time::Duration,
};

use veer::{
    config::{Config, to_toml},
    model::{
        Backend, DesiredState, Group, HealthCheck, HookChoice, NodeConfig, Plan, Protocol, Service,
        Weight,
    },
};

/// An address family of the bed, with its documentation addresses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Family {
    /// VIP `192.0.2.10`, backends `198.51.100.11` (v1) and `198.51.100.21` (v2).
    V4,
    /// VIP `2001:db8::10`, backends `2001:db8:b::11` (v1) and `2001:db8:b::21` (v2).
    V6,
}

impl Family {
    /// Both.
    pub const ALL: [Self; 2] = [Self::V4, Self::V6];

    /// The service of the bed in this family: `web`, or `web6` beside it.
    pub fn service(self) -> &'static str {
        match self {
            Self::V4 => "web",
            Self::V6 => "web6",
        }
    }

    /// The VIP and port of that service.
    pub fn vip(self) -> SocketAddr {
        match self {
            Self::V4 => SocketAddr::new(Ipv4Addr::new(192, 0, 2, 10).into(), 80),
            Self::V6 => {
                SocketAddr::new(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0x10).into(), 80)
            }
        }
    }

    /// The address of group `group`'s backend (`v1` or `v2`).
    pub fn backend(self, group: &str) -> IpAddr {
        // .11 and .21 in IPv4, ::11 and ::21 in IPv6: the same digits.
        let (v4, v6) = match group {
            "v1" => (11, 0x11),
            "v2" => (21, 0x21),
            other => panic!("the bed has backends for v1 and v2, not {other}"),
        };
        match self {
            Self::V4 => Ipv4Addr::new(198, 51, 100, v4).into(),
            Self::V6 => Ipv6Addr::new(0x2001, 0xdb8, 0xb, 0, 0, 0, 0, v6).into(),
        }
    }
}

/// A group: weight in percent (`"12.5"`), backends by address.
pub fn group(name: &str, weight: &str, backends: &[SocketAddr]) -> Group {
    Group {
        name: name.to_owned(),
        weight: Weight::from_percent_str(weight).unwrap_or_else(|e| panic!("weight {weight}: {e}")),
        backends: backends.iter().map(|&addr| Backend { addr }).collect(),
    }
}

/// A TCP service.
pub fn service(name: &str, vip: SocketAddr, groups: Vec<Group>) -> Service {
    Service {
        name: name.to_owned(),
        vip: vip.ip(),
        port: vip.port(),
        protocol: Protocol::Tcp,
        groups,
        pins: Vec::new(),
        health: None,
        rollout: None,
    }
}

/// The bed's service in `family`: `v1` and `v2`, one backend each on port 8080, at `v1` and
/// `v2` percent.
pub fn web(family: Family, v1: &str, v2: &str) -> Service {
    let backend = |g| [SocketAddr::new(family.backend(g), 8080)];
    service(
        family.service(),
        family.vip(),
        vec![
            group("v1", v1, &backend("v1")),
            group("v2", v2, &backend("v2")),
        ],
    )
}

/// The bed's UDP service in `family`: `dns` (`dns6` in IPv6) on the VIP's port 53, `v1` and
/// `v2`, one backend each on port 5353, at `v1` and `v2` percent.
pub fn dns(family: Family, v1: &str, v2: &str) -> Service {
    let backend = |g| [SocketAddr::new(family.backend(g), 5353)];
    let name = match family {
        Family::V4 => "dns",
        Family::V6 => "dns6",
    };
    Service {
        protocol: Protocol::Udp,
        ..service(
            name,
            SocketAddr::new(family.vip().ip(), 53),
            vec![
                group("v1", v1, &backend("v1")),
                group("v2", v2, &backend("v2")),
            ],
        )
    }
}

/// A config file being built: node settings at veer's defaults, no services.
#[derive(Clone, Debug)]
pub struct ConfigBuilder {
    config: Config,
}

impl ConfigBuilder {
    /// Attached to `interfaces`.
    pub fn new<I: Into<String>>(interfaces: impl IntoIterator<Item = I>) -> Self {
        Self {
            config: Config {
                node: NodeConfig {
                    interfaces: interfaces.into_iter().map(Into::into).collect(),
                    ..NodeConfig::default()
                },
                state: DesiredState::default(),
            },
        }
    }

    /// Conntrack capacity.
    #[must_use]
    pub fn conntrack_max(mut self, entries: u32) -> Self {
        self.config.node.conntrack_max = entries;
        self
    }

    /// Overrides the hook of `interface` (`[node.hooks]`).
    #[must_use]
    pub fn hook(mut self, interface: &str, choice: HookChoice) -> Self {
        self.config.node.hooks.insert(interface.to_owned(), choice);
        self
    }

    /// How long a TCP flow that saw FIN or RST stays in conntrack.
    #[must_use]
    pub fn tcp_closing(mut self, idle: Duration) -> Self {
        self.config.node.timeouts.tcp_closing = idle;
        self
    }

    /// Adds a service.
    #[must_use]
    pub fn service(mut self, service: Service) -> Self {
        self.config.state.services.push(service);
        self
    }

    /// Gives service `name` an active health check.
    #[must_use]
    pub fn health(mut self, name: &str, check: HealthCheck) -> Self {
        self.service_mut(name).health = Some(check);
        self
    }

    /// Declares a rollout of service `name`.
    #[must_use]
    pub fn rollout(mut self, name: &str, plan: Plan) -> Self {
        self.service_mut(name).rollout = Some(plan);
        self
    }

    fn service_mut(&mut self, name: &str) -> &mut Service {
        self.config
            .state
            .services
            .iter_mut()
            .find(|s| s.name == name)
            .unwrap_or_else(|| panic!("no service {name} in the config being built"))
    }

    /// The config.
    pub fn build(self) -> Config {
        self.config
    }

    /// The config file's text.
    pub fn to_toml(&self) -> String {
        to_toml(&self.config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_built_config_is_a_valid_file() {
        let built = ConfigBuilder::new(["n-client", "n-v1"])
            .conntrack_max(65_536)
            .hook("n-client", HookChoice::Tc)
            .tcp_closing(Duration::from_hours(1))
            .service(web(Family::V4, "90", "10"))
            .service(web(Family::V6, "100", "0"))
            .service(dns(Family::V4, "100", "0"))
            .rollout("web", Plan::to("v2"));
        let text = built.to_toml();
        let parsed = veer::config::parse(std::path::Path::new("veer.toml"), &text)
            .unwrap_or_else(|e| panic!("{e}\n{text}"));
        assert_eq!(parsed, built.build());
        assert!(
            text.contains("backends = [\"[2001:db8:b::21]:8080\"]"),
            "{text}"
        );
        assert!(
            text.contains("[node.hooks]\n\"n-client\" = \"tc\""),
            "{text}"
        );
        assert!(
            text.contains("name = \"dns\"\nvip = \"192.0.2.10\"\nport = 53\nprotocol = \"udp\""),
            "{text}"
        );
    }
}
