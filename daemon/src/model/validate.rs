//! The rules a desired state and node settings keep, checked once, here, for every producer:
//! the config file, `veer apply`, the operator's verbs and rollouts. A broken rule is a
//! `Violation`: the rule (`StateError`, whose message names the service, group, backend ...) and
//! its `Place` in the state, so a producer that has a location for that place (the config file's
//! line and column, a key in a config center) can point at it.

use std::{
    collections::{BTreeMap, HashMap},
    net::{IpAddr, SocketAddr},
    time::Duration,
};

use veer_common::maps::{self, MAX_GROUPS_PER_SERVICE};

use super::{
    CheckKind, DesiredState, HealthCheck, NodeConfig, PlanError, Protocol, Service, Timeouts,
    Weight, tolerance::ToleranceError,
};

/// Which field of a `[[service]]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ServiceField {
    /// The service as a whole.
    Table,
    /// `name`.
    Name,
    /// `vip`.
    Vip,
    /// `port`.
    Port,
}

/// Which field of a group.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GroupField {
    /// The group as a whole.
    Table,
    /// `name`.
    Name,
    /// `weight`.
    Weight,
}

/// Which field of a pin.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PinField {
    /// `prefix`.
    Prefix,
    /// `group`.
    Group,
}

/// Which field of a health check.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HealthField {
    /// The check as a whole.
    Table,
    /// `path`.
    Path,
    /// `expect_status`.
    ExpectStatus,
    /// `interval`.
    Interval,
    /// `timeout`.
    Timeout,
    /// `rise`.
    Rise,
    /// `fall`.
    Fall,
}

/// Which field of a rollout plan.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RolloutField {
    /// The plan as a whole.
    Table,
    /// `to`.
    To,
    /// `steps`.
    Steps,
    /// `pause`.
    Pause,
    /// `gate_timeout`.
    GateTimeout,
    /// `max_latency_increase`.
    MaxLatencyIncrease,
    /// `latency_slack`.
    LatencySlack,
    /// `max_failure_increase`.
    MaxFailureIncrease,
    /// `confidence`.
    Confidence,
    /// `min_sample`.
    MinSample,
    /// `drain_deadline`.
    DrainDeadline,
}

/// Which idle timeout.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TimeoutField {
    /// `tcp_syn`.
    TcpSyn,
    /// `tcp_established`.
    TcpEstablished,
    /// `tcp_closing`.
    TcpClosing,
    /// `udp`.
    Udp,
}

impl TimeoutField {
    /// The key's name.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::TcpSyn => "tcp_syn",
            Self::TcpEstablished => "tcp_established",
            Self::TcpClosing => "tcp_closing",
            Self::Udp => "udp",
        }
    }
}

/// Where in a desired state (services by index, in order) or in node settings a rule is broken.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Place {
    /// A field of a service.
    Service {
        /// Service index.
        service: usize,
        /// Which field of the service.
        field: ServiceField,
    },
    /// A field of a group.
    Group {
        /// Service index.
        service: usize,
        /// Group index.
        group: usize,
        /// Which field of the group.
        field: GroupField,
    },
    /// A backend.
    Backend {
        /// Service index.
        service: usize,
        /// Group index.
        group: usize,
        /// Backend index.
        backend: usize,
    },
    /// A field of a pin.
    Pin {
        /// Service index.
        service: usize,
        /// Pin index.
        pin: usize,
        /// Which field of the pin.
        field: PinField,
    },
    /// A field of a service's health check.
    Health {
        /// Service index.
        service: usize,
        /// Which field of the health check.
        field: HealthField,
    },
    /// A field of a service's declared rollout.
    Rollout {
        /// Service index.
        service: usize,
        /// Which field of the plan.
        field: RolloutField,
    },
    /// One of the node's interfaces.
    Interface(usize),
    /// An entry of `[node.hooks]`, by index in interface-name order.
    Hook(usize),
    /// The capacity of the table of confirmed flows.
    ConntrackMax,
    /// The capacity of the table of new flows.
    ConntrackNewMax,
    /// An idle timeout.
    Timeout(TimeoutField),
}

/// A broken rule and where it is broken.
#[derive(Clone, Debug, thiserror::Error, PartialEq, Eq)]
#[error("{error}")]
pub struct Violation {
    /// Where in the state.
    pub at: Place,
    /// For a name or an address used twice: where it was first used.
    pub first: Option<Place>,
    /// The rule.
    #[source]
    pub error: StateError,
}

/// The rules.
#[derive(Clone, Debug, thiserror::Error, PartialEq, Eq)]
pub enum StateError {
    /// A malformed service or group name.
    #[error("{what} name `{name}` is not valid ({NAME_RULE})")]
    BadName {
        /// `service` or `group`.
        what: &'static str,
        /// The name.
        name: String,
    },
    /// Two services share a name.
    #[error("service `{name}` is defined twice")]
    DuplicateService {
        /// The name, as given.
        name: String,
    },
    /// Two services share VIP, port and protocol.
    #[error("service `{service}` uses {endpoint}, already used by service `{first}`")]
    DuplicateEndpoint {
        /// The later service.
        service: String,
        /// `vip:port/proto`.
        endpoint: String,
        /// The service using it first.
        first: String,
    },
    /// A VIP that is not a unicast address.
    #[error("service `{service}`: VIP {vip} is not a unicast address")]
    BadVip {
        /// Name of the service.
        service: String,
        /// The service's virtual IP.
        vip: IpAddr,
    },
    /// Port 0.
    #[error("service `{service}`: port 0 is not a valid service port")]
    PortZero {
        /// Name of the service.
        service: String,
    },
    /// A service without groups.
    #[error("service `{service}` has no groups")]
    NoGroups {
        /// Name of the service.
        service: String,
    },
    /// Too many groups.
    #[error("service `{service}` has {count} groups; at most {max} are supported")]
    TooManyGroups {
        /// Name of the service.
        service: String,
        /// Groups given.
        count: usize,
        /// The limit.
        max: usize,
    },
    /// More of something than its kernel map holds.
    #[error("{count} {what} in all; the {map} map holds at most {max}")]
    TooMany {
        /// `services`, `groups`, `backends` or `pins`.
        what: &'static str,
        /// How many the state has, counting up to the first one over the limit.
        count: usize,
        /// The limit.
        max: usize,
        /// The map (`VEER_SERVICES` ...).
        map: &'static str,
    },
    /// Two groups of a service share a name.
    #[error("service `{service}`: group `{group}` is defined twice")]
    DuplicateGroup {
        /// Name of the service.
        service: String,
        /// Name of the group, in its service.
        group: String,
    },
    /// A backend on port 0.
    #[error("service `{service}`, group `{group}`: backend {backend} has port 0")]
    BackendPortZero {
        /// Name of the service.
        service: String,
        /// Name of the group, in its service.
        group: String,
        /// Address and port of the backend.
        backend: SocketAddr,
    },
    /// A backend of another address family than the VIP.
    #[error(
        "service `{service}`, group `{group}`: backend {backend} is not of the VIP's address family ({vip}); veer does not translate between IPv4 and IPv6"
    )]
    FamilyMismatch {
        /// Name of the service.
        service: String,
        /// Name of the group, in its service.
        group: String,
        /// Address and port of the backend.
        backend: SocketAddr,
        /// The service's virtual IP.
        vip: IpAddr,
    },
    /// A backend appears twice in a group.
    #[error("service `{service}`, group `{group}`: backend {backend} is listed twice")]
    DuplicateBackend {
        /// Name of the service.
        service: String,
        /// Name of the group, in its service.
        group: String,
        /// Address and port of the backend.
        backend: SocketAddr,
    },
    /// A group with weight and no backend.
    #[error(
        "service `{service}`, group `{group}` has weight {weight} but no backends; give it backends or weight 0"
    )]
    WeightWithoutBackends {
        /// Name of the service.
        service: String,
        /// Name of the group, in its service.
        group: String,
        /// Its weight, in percent.
        weight: Weight,
    },
    /// A pin's prefix of the other address family.
    #[error(
        "service `{service}`: pin prefix {prefix}/{len} is not of the VIP's address family ({vip})"
    )]
    PinFamilyMismatch {
        /// Name of the service.
        service: String,
        /// Network address of the prefix.
        prefix: IpAddr,
        /// Prefix length, in bits.
        len: u8,
        /// The service's virtual IP.
        vip: IpAddr,
    },
    /// A pin's prefix is malformed (length, host bits).
    #[error(
        "service `{service}`: pin {prefix}/{len} is not a network prefix with its host bits zero"
    )]
    BadPin {
        /// Name of the service.
        service: String,
        /// Network address of the prefix.
        prefix: IpAddr,
        /// Prefix length, in bits.
        len: u8,
    },
    /// A pin names a group the service does not have.
    #[error(
        "service `{service}`: pin {prefix}/{len} names group `{group}`, which the service does not have"
    )]
    PinUnknownGroup {
        /// Name of the service.
        service: String,
        /// Network address of the prefix.
        prefix: IpAddr,
        /// Prefix length, in bits.
        len: u8,
        /// Name of the group, in its service.
        group: String,
    },
    /// Two pins of one prefix.
    #[error("service `{service}`: prefix {prefix}/{len} is pinned twice")]
    DuplicatePin {
        /// Name of the service.
        service: String,
        /// Network address of the prefix.
        prefix: IpAddr,
        /// Prefix length, in bits.
        len: u8,
    },
    /// A health check that cannot work as written.
    #[error("service `{service}`, health check: {reason}")]
    BadHealthCheck {
        /// Name of the service.
        service: String,
        /// What is wrong, in words.
        reason: String,
    },
    /// A declared rollout that cannot run (the plan's error names what is wrong).
    #[error("{source}")]
    BadRollout {
        /// Name of the service.
        service: String,
        /// The plan's own error.
        #[source]
        source: PlanError,
    },
    /// An interface name the kernel cannot have.
    #[error("interface name `{name}` is not valid (1 to 15 bytes, no '/' or spaces: IFNAMSIZ)")]
    BadInterface {
        /// The name, as given.
        name: String,
    },
    /// An interface named twice.
    #[error("interface `{name}` is named twice")]
    DuplicateInterface {
        /// The name, as given.
        name: String,
    },
    /// A hook override for an interface the node does not attach to.
    #[error("`hooks`: interface `{name}` is not in `interfaces`")]
    HookForUnknownInterface {
        /// The interface, as given.
        name: String,
    },
    /// A flow table's capacity out of range.
    #[error(
        "{field} {value} is out of range {}..={}",
        NodeConfig::MIN_CONNTRACK,
        NodeConfig::MAX_CONNTRACK
    )]
    FlowTableSize {
        /// Which table's key (`conntrack_max`, `conntrack_new_max`).
        field: &'static str,
        /// The value.
        value: u32,
    },
    /// An idle timeout below the minimum.
    #[error("[node.timeouts] {field} {value} is shorter than the {min} minimum")]
    TimeoutTooShort {
        /// Which timeout (`tcp_syn`, `udp` ...).
        field: &'static str,
        /// The value.
        value: String,
        /// The minimum.
        min: String,
    },
    /// An idle timeout longer than the flow clock can measure.
    #[error(
        "[node.timeouts] {field} {value} is longer than the {max} maximum (flow entries keep time in 32-bit ticks of about a millisecond)"
    )]
    TimeoutTooLong {
        /// Which timeout (`tcp_syn`, `udp` ...).
        field: &'static str,
        /// The value.
        value: String,
        /// The maximum.
        max: String,
    },
    /// A backend serves more services than its replies can be matched against.
    #[error(
        "backend {backend}/{protocol} serves {} services ({}); at most {max} services can share a backend address and port",
        services.len(),
        services.join(", ")
    )]
    BackendInTooManyServices {
        /// Address and port of the backend.
        backend: SocketAddr,
        /// The protocol of the services.
        protocol: Protocol,
        /// Names of the services it serves, in the order of the state.
        services: Vec<String>,
        /// The limit (`veer_common::flow::MAX_VIPS_PER_BACKEND`).
        max: usize,
    },
}

/// Longest `veer drain --wait --timeout`.
pub const MAX_DRAIN_WAIT: Duration = Duration::from_hours(7 * 24);

/// Parses a `veer drain --timeout` (`5m`, `2h`), at most `MAX_DRAIN_WAIT`.
pub fn drain_wait(arg: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(arg).map_err(|e| e.to_string())?;
    if d > MAX_DRAIN_WAIT {
        return Err(format!(
            "{} is longer than the {} maximum",
            text(d),
            text(MAX_DRAIN_WAIT)
        ));
    }
    Ok(d)
}

/// What a service or group name may be.
pub const NAME_RULE: &str = "1 to 64 characters of A-Z a-z 0-9 _ - .";

/// Whether `s` keeps `NAME_RULE`.
pub fn valid_name(s: &str) -> bool {
    (1..=64).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_-.".contains(&b))
}

fn text(d: Duration) -> String {
    humantime::format_duration(d).to_string()
}

/// A violation at `at`.
fn at(at: Place, error: StateError) -> Violation {
    Violation {
        at,
        first: None,
        error,
    }
}

/// A name or address used twice: at `at`, first at `first`.
fn twice(at: Place, first: Place, error: StateError) -> Violation {
    Violation {
        at,
        first: Some(first),
        error,
    }
}

impl DesiredState {
    /// Checks every rule a state must keep to be applied. Returns the first one broken, in the
    /// order of the services, and within a service in the order of its fields.
    pub fn validate(&self) -> Result<(), Violation> {
        self.violations().into_iter().next().map_or(Ok(()), Err)
    }

    /// Every rule broken, in the order of the services: the rules between services (names,
    /// endpoints) for each, and each service's own rules up to the first it breaks (a later rule
    /// of a service often breaks only because of its first).
    pub fn violations(&self) -> Vec<Violation> {
        let mut out = Vec::new();
        let mut names: HashMap<&str, usize> = HashMap::new();
        let mut endpoints: HashMap<String, usize> = HashMap::new();
        for (i, s) in self.services.iter().enumerate() {
            let name = Place::Service {
                service: i,
                field: ServiceField::Name,
            };
            if !valid_name(&s.name) {
                out.push(at(
                    name,
                    StateError::BadName {
                        what: "service",
                        name: s.name.clone(),
                    },
                ));
                continue;
            }
            if let Some(&first) = names.get(s.name.as_str()) {
                out.push(twice(
                    name,
                    Place::Service {
                        service: first,
                        field: ServiceField::Name,
                    },
                    StateError::DuplicateService {
                        name: s.name.clone(),
                    },
                ));
                continue;
            }
            names.insert(&s.name, i);
            let endpoint = s.endpoint();
            if let Some(&first) = endpoints.get(&endpoint) {
                out.push(twice(
                    Place::Service {
                        service: i,
                        field: ServiceField::Table,
                    },
                    Place::Service {
                        service: first,
                        field: ServiceField::Table,
                    },
                    StateError::DuplicateEndpoint {
                        service: s.name.clone(),
                        endpoint,
                        first: self.services[first].name.clone(),
                    },
                ));
                continue;
            }
            endpoints.insert(endpoint, i);
            if let Err(v) = s.validate(i) {
                out.push(v);
            }
        }
        // The maps' capacities last: a state that breaks no other rule still has to fit.
        if let Err(v) = self.validate_capacity() {
            out.push(v);
        }
        out
    }

    /// Checks that the state fits the kernel's maps, so that applying it never fails halfway
    /// through the writes. Ids start at 1 (0 is "unset"), so a map of `N` entries indexed or
    /// keyed by id holds `N - 1` things; the pins trie holds `MAX_PINS` prefixes.
    fn validate_capacity(&self) -> Result<(), Violation> {
        let limit = |what, max: u32, map| (what, max as usize, map);
        let (services, groups, backends, pins) = (
            limit("services", maps::MAX_SERVICES - 1, maps::SERVICES),
            limit("groups", maps::MAX_GROUPS - 1, maps::MAGLEV),
            limit("backends", maps::MAX_BACKENDS - 1, maps::BACKENDS),
            limit("pins", maps::MAX_PINS, maps::PINS),
        );
        let over = |(what, max, map): (&'static str, usize, &'static str), at_place: Place| {
            at(
                at_place,
                StateError::TooMany {
                    what,
                    count: max + 1,
                    max,
                    map,
                },
            )
        };
        let (mut g, mut b, mut p) = (0, 0, 0);
        for (i, s) in self.services.iter().enumerate() {
            if i >= services.1 {
                return Err(over(
                    services,
                    Place::Service {
                        service: i,
                        field: ServiceField::Table,
                    },
                ));
            }
            for (j, group) in s.groups.iter().enumerate() {
                g += 1;
                if g > groups.1 {
                    return Err(over(
                        groups,
                        Place::Group {
                            service: i,
                            group: j,
                            field: GroupField::Table,
                        },
                    ));
                }
                for k in 0..group.backends.len() {
                    b += 1;
                    if b > backends.1 {
                        return Err(over(
                            backends,
                            Place::Backend {
                                service: i,
                                group: j,
                                backend: k,
                            },
                        ));
                    }
                }
            }
            for k in 0..s.pins.len() {
                p += 1;
                if p > pins.1 {
                    return Err(over(
                        pins,
                        Place::Pin {
                            service: i,
                            pin: k,
                            field: PinField::Prefix,
                        },
                    ));
                }
            }
        }
        self.validate_shared_backends()
    }

    /// A reply finds its flow by trying each service its backend serves
    /// (`veer_common::flow::MAX_VIPS_PER_BACKEND` at most). The violation is at the service
    /// that went over the limit.
    fn validate_shared_backends(&self) -> Result<(), Violation> {
        let max = veer_common::flow::MAX_VIPS_PER_BACKEND;
        let mut by_backend: BTreeMap<(SocketAddr, Protocol), Vec<usize>> = BTreeMap::new();
        for (i, s) in self.services.iter().enumerate() {
            for b in s.groups.iter().flat_map(|g| &g.backends) {
                let services = by_backend.entry((b.addr, s.protocol)).or_default();
                if !services.contains(&i) {
                    services.push(i);
                }
            }
        }
        // The first service (in the state's order) that takes a backend over the limit.
        let over = by_backend
            .into_iter()
            .filter(|(_, services)| services.len() > max)
            .min_by_key(|(_, services)| services[max]);
        match over {
            Some(((backend, protocol), services)) => Err(at(
                Place::Service {
                    service: services[max],
                    field: ServiceField::Table,
                },
                StateError::BackendInTooManyServices {
                    backend,
                    protocol,
                    services: services
                        .iter()
                        .map(|&i| self.services[i].name.clone())
                        .collect(),
                    max,
                },
            )),
            None => Ok(()),
        }
    }
}

impl Service {
    fn validate(&self, i: usize) -> Result<(), Violation> {
        let service = || self.name.clone();
        let field = |field| Place::Service { service: i, field };
        if self.vip.is_unspecified() || self.vip.is_multicast() {
            return Err(at(
                field(ServiceField::Vip),
                StateError::BadVip {
                    service: service(),
                    vip: self.vip,
                },
            ));
        }
        if self.port == 0 {
            return Err(at(
                field(ServiceField::Port),
                StateError::PortZero { service: service() },
            ));
        }
        if self.groups.is_empty() {
            return Err(at(
                field(ServiceField::Name),
                StateError::NoGroups { service: service() },
            ));
        }
        if self.groups.len() > MAX_GROUPS_PER_SERVICE {
            return Err(at(
                Place::Group {
                    service: i,
                    group: MAX_GROUPS_PER_SERVICE,
                    field: GroupField::Table,
                },
                StateError::TooManyGroups {
                    service: service(),
                    count: self.groups.len(),
                    max: MAX_GROUPS_PER_SERVICE,
                },
            ));
        }
        self.validate_groups(i)?;
        self.validate_pins(i)?;
        if let Some(h) = &self.health {
            h.validate().map_err(|(field, reason)| {
                at(
                    Place::Health { service: i, field },
                    StateError::BadHealthCheck {
                        service: service(),
                        reason,
                    },
                )
            })?;
        }
        if let Some(plan) = &self.rollout {
            // A declared rollout that completed stays in the file: "already there" is fine.
            match plan.validate(self) {
                Ok(()) | Err(PlanError::AlreadyThere { .. }) => {}
                Err(source) => {
                    let field = match source {
                        PlanError::UnknownGroup { .. } | PlanError::EmptyTarget { .. } => {
                            RolloutField::To
                        }
                        PlanError::BadSteps { .. } => RolloutField::Steps,
                        PlanError::PauseTooShort { .. } | PlanError::PauseTooLong { .. } => {
                            RolloutField::Pause
                        }
                        PlanError::GateTimeoutTooShort { .. }
                        | PlanError::GateTimeoutTooLong { .. } => RolloutField::GateTimeout,
                        PlanError::Tolerance { ref source } => match source {
                            ToleranceError::Range { field, .. } => match *field {
                                "max_latency_increase" => RolloutField::MaxLatencyIncrease,
                                "max_failure_increase" => RolloutField::MaxFailureIncrease,
                                _ => RolloutField::Confidence,
                            },
                            ToleranceError::MinSample { .. } => RolloutField::MinSample,
                            ToleranceError::Slack { .. } => RolloutField::LatencySlack,
                            ToleranceError::Syntax { .. } => RolloutField::Table,
                        },
                        PlanError::DrainDeadlineTooLong { .. }
                        | PlanError::DrainDeadlineTooShort { .. } => RolloutField::DrainDeadline,
                        PlanError::AlreadyThere { .. } => RolloutField::Table,
                    };
                    return Err(at(
                        Place::Rollout { service: i, field },
                        StateError::BadRollout {
                            service: service(),
                            source,
                        },
                    ));
                }
            }
        }
        Ok(())
    }

    fn validate_groups(&self, i: usize) -> Result<(), Violation> {
        let service = || self.name.clone();
        let mut groups: HashMap<&str, usize> = HashMap::new();
        for (j, g) in self.groups.iter().enumerate() {
            let place = |field| Place::Group {
                service: i,
                group: j,
                field,
            };
            if !valid_name(&g.name) {
                return Err(at(
                    place(GroupField::Name),
                    StateError::BadName {
                        what: "group",
                        name: g.name.clone(),
                    },
                ));
            }
            if let Some(&first) = groups.get(g.name.as_str()) {
                return Err(twice(
                    place(GroupField::Name),
                    Place::Group {
                        service: i,
                        group: first,
                        field: GroupField::Name,
                    },
                    StateError::DuplicateGroup {
                        service: service(),
                        group: g.name.clone(),
                    },
                ));
            }
            groups.insert(&g.name, j);
            let mut seen: HashMap<SocketAddr, usize> = HashMap::new();
            for (k, b) in g.backends.iter().enumerate() {
                let backend = Place::Backend {
                    service: i,
                    group: j,
                    backend: k,
                };
                let error = if b.addr.port() == 0 {
                    Some(StateError::BackendPortZero {
                        service: service(),
                        group: g.name.clone(),
                        backend: b.addr,
                    })
                } else if b.addr.is_ipv4() != self.vip.is_ipv4() {
                    Some(StateError::FamilyMismatch {
                        service: service(),
                        group: g.name.clone(),
                        backend: b.addr,
                        vip: self.vip,
                    })
                } else {
                    None
                };
                if let Some(error) = error {
                    return Err(at(backend, error));
                }
                if let Some(&first) = seen.get(&b.addr) {
                    return Err(twice(
                        backend,
                        Place::Backend {
                            service: i,
                            group: j,
                            backend: first,
                        },
                        StateError::DuplicateBackend {
                            service: service(),
                            group: g.name.clone(),
                            backend: b.addr,
                        },
                    ));
                }
                seen.insert(b.addr, k);
            }
            if g.backends.is_empty() && !g.weight.is_zero() {
                return Err(at(
                    place(GroupField::Weight),
                    StateError::WeightWithoutBackends {
                        service: service(),
                        group: g.name.clone(),
                        weight: g.weight,
                    },
                ));
            }
        }
        Ok(())
    }

    fn validate_pins(&self, i: usize) -> Result<(), Violation> {
        let service = || self.name.clone();
        let mut pins: HashMap<(IpAddr, u8), usize> = HashMap::new();
        for (p, pin) in self.pins.iter().enumerate() {
            let place = |field| Place::Pin {
                service: i,
                pin: p,
                field,
            };
            let max = if self.vip.is_ipv4() { 32 } else { 128 };
            if pin.prefix.is_ipv4() != self.vip.is_ipv4() {
                return Err(at(
                    place(PinField::Prefix),
                    StateError::PinFamilyMismatch {
                        service: service(),
                        prefix: pin.prefix,
                        len: pin.len,
                        vip: self.vip,
                    },
                ));
            }
            if pin.len > max || !host_bits_zero(pin.prefix, pin.len) {
                return Err(at(
                    place(PinField::Prefix),
                    StateError::BadPin {
                        service: service(),
                        prefix: pin.prefix,
                        len: pin.len,
                    },
                ));
            }
            if self.group(&pin.group).is_none() {
                return Err(at(
                    place(PinField::Group),
                    StateError::PinUnknownGroup {
                        service: service(),
                        prefix: pin.prefix,
                        len: pin.len,
                        group: pin.group.clone(),
                    },
                ));
            }
            if let Some(&first) = pins.get(&(pin.prefix, pin.len)) {
                return Err(twice(
                    place(PinField::Prefix),
                    Place::Pin {
                        service: i,
                        pin: first,
                        field: PinField::Prefix,
                    },
                    StateError::DuplicatePin {
                        service: service(),
                        prefix: pin.prefix,
                        len: pin.len,
                    },
                ));
            }
            pins.insert((pin.prefix, pin.len), p);
        }
        Ok(())
    }
}

impl HealthCheck {
    /// Checks the bounds of the check; on failure, the field and why.
    fn validate(&self) -> Result<(), (HealthField, String)> {
        if self.interval < Self::MIN_INTERVAL {
            return Err((
                HealthField::Interval,
                format!(
                    "interval {} is shorter than the {} minimum",
                    text(self.interval),
                    text(Self::MIN_INTERVAL)
                ),
            ));
        }
        if self.interval > Self::MAX_INTERVAL {
            return Err((
                HealthField::Interval,
                format!(
                    "interval {} is longer than the {} maximum",
                    text(self.interval),
                    text(Self::MAX_INTERVAL)
                ),
            ));
        }
        if self.timeout < Self::MIN_TIMEOUT {
            return Err((
                HealthField::Timeout,
                format!(
                    "timeout {} is shorter than the {} minimum",
                    text(self.timeout),
                    text(Self::MIN_TIMEOUT)
                ),
            ));
        }
        if self.timeout > self.interval {
            return Err((
                HealthField::Timeout,
                format!(
                    "timeout {} must be at most the interval ({})",
                    text(self.timeout),
                    text(self.interval)
                ),
            ));
        }
        for (field, name, n) in [
            (HealthField::Rise, "rise", self.rise),
            (HealthField::Fall, "fall", self.fall),
        ] {
            if !Self::COUNTS.contains(&n) {
                return Err((
                    field,
                    format!(
                        "{name} {n} is out of range {}..={}",
                        Self::COUNTS.start(),
                        Self::COUNTS.end()
                    ),
                ));
            }
        }
        if let CheckKind::Http {
            path,
            expect_status,
        } = &self.kind
        {
            if !path.starts_with('/') || path.contains(char::is_whitespace) {
                return Err((
                    HealthField::Path,
                    format!(
                        "path `{path}` is not an absolute path without spaces (e.g. \"/healthz\")"
                    ),
                ));
            }
            if !Self::STATUSES.contains(expect_status) {
                return Err((
                    HealthField::ExpectStatus,
                    format!(
                        "expect_status {expect_status} is out of range {}..={}",
                        Self::STATUSES.start(),
                        Self::STATUSES.end()
                    ),
                ));
            }
        }
        Ok(())
    }
}

impl NodeConfig {
    /// Checks the node settings.
    pub fn validate(&self) -> Result<(), Violation> {
        let mut seen: HashMap<&str, usize> = HashMap::new();
        for (k, name) in self.interfaces.iter().enumerate() {
            if name.is_empty() || name.len() > 15 || name.contains(['/', ' ', '\0']) {
                return Err(at(
                    Place::Interface(k),
                    StateError::BadInterface { name: name.clone() },
                ));
            }
            if let Some(&first) = seen.get(name.as_str()) {
                return Err(twice(
                    Place::Interface(k),
                    Place::Interface(first),
                    StateError::DuplicateInterface { name: name.clone() },
                ));
            }
            seen.insert(name, k);
        }
        if let Some((k, name)) = self
            .hooks
            .keys()
            .enumerate()
            .find(|(_, name)| !seen.contains_key(name.as_str()))
        {
            return Err(at(
                Place::Hook(k),
                StateError::HookForUnknownInterface { name: name.clone() },
            ));
        }
        for (place, field, value) in [
            (Place::ConntrackMax, "conntrack_max", self.conntrack_max),
            (
                Place::ConntrackNewMax,
                "conntrack_new_max",
                self.conntrack_new_max,
            ),
        ] {
            if !(Self::MIN_CONNTRACK..=Self::MAX_CONNTRACK).contains(&value) {
                return Err(at(place, StateError::FlowTableSize { field, value }));
            }
        }
        let t = &self.timeouts;
        for (field, value) in [
            (TimeoutField::TcpSyn, t.tcp_syn),
            (TimeoutField::TcpEstablished, t.tcp_established),
            (TimeoutField::TcpClosing, t.tcp_closing),
            (TimeoutField::Udp, t.udp),
        ] {
            if value < Timeouts::MIN {
                return Err(at(
                    Place::Timeout(field),
                    StateError::TimeoutTooShort {
                        field: field.as_str(),
                        value: text(value),
                        min: text(Timeouts::MIN),
                    },
                ));
            }
            if value > Timeouts::MAX {
                return Err(at(
                    Place::Timeout(field),
                    StateError::TimeoutTooLong {
                        field: field.as_str(),
                        value: text(value),
                        max: text(Timeouts::MAX),
                    },
                ));
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

/// Parses a network prefix (`"203.0.113.0/24"`, `"2001:db8::/32"`); `None` unless it is one,
/// with its host bits zero. A bare address is the prefix of that one host: /32 or /128.
pub fn parse_prefix(s: &str) -> Option<(IpAddr, u8)> {
    let Some((addr, len)) = s.split_once('/') else {
        let addr: IpAddr = s.parse().ok()?;
        return Some((addr, if addr.is_ipv4() { 32 } else { 128 }));
    };
    let addr: IpAddr = addr.parse().ok()?;
    let len: u8 = len.parse().ok()?;
    let max = if addr.is_ipv4() { 32 } else { 128 };
    (len <= max && host_bits_zero(addr, len)).then_some((addr, len))
}
