//! From TOML text to a validated `Config`, rule by rule, each failure located in the file.

use std::{
    collections::HashMap,
    net::{IpAddr, SocketAddr},
    ops::Range,
    path::Path,
    time::Duration,
};

use toml::Spanned;
use veer_common::maps::MAX_GROUPS_PER_SERVICE;

use super::{Config, ConfigError, Location, NodeConfig, Timeouts, schema};
use crate::{
    dataplane::{ifaces::HookChoice, loader::XdpAttachMode},
    model::{
        Backend, CheckKind, DesiredState, Group, HealthCheck, Pin, Protocol, Service, Weight,
        WeightError, host_bits_zero,
    },
    rollout::{
        Plan,
        gate::Gate,
        plan::{DEFAULT_STEPS, OnFailure},
    },
};

/// What is wrong with a config file.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigErrorKind {
    /// Not valid TOML, a wrong type, or an unknown key (the parser's words).
    #[error("{message}")]
    Syntax {
        /// The TOML parser's message.
        message: String,
    },
    /// A value outside its range.
    #[error("`{field}`: {value} is out of range {range}")]
    OutOfRange {
        /// Field.
        field: &'static str,
        /// Value given.
        value: String,
        /// Allowed range.
        range: &'static str,
    },
    /// A value not among the choices.
    #[error("`{field}`: `{value}` is not one of {choices}")]
    BadChoice {
        /// Field.
        field: &'static str,
        /// Value given.
        value: String,
        /// Allowed values.
        choices: &'static str,
    },
    /// A malformed name.
    #[error("`{field}`: `{value}` is not a valid name ({rule})")]
    BadName {
        /// Field.
        field: &'static str,
        /// Value given.
        value: String,
        /// The rule.
        rule: &'static str,
    },
    /// A malformed address, prefix or duration.
    #[error("`{field}`: `{value}` is not {expected}")]
    BadValue {
        /// Field.
        field: &'static str,
        /// Value given.
        value: String,
        /// What was expected.
        expected: &'static str,
    },
    /// A weight that is not a percentage.
    #[error("service `{service}`, group `{group}`, `weight`: {source}")]
    BadWeight {
        /// Service.
        service: String,
        /// Group.
        group: String,
        /// Why.
        source: WeightError,
    },
    /// A name used twice.
    #[error("{what} `{name}` is already defined on line {first_line}")]
    Duplicate {
        /// `service`, `group`, `backend`, `pin`, `interface`.
        what: &'static str,
        /// The name.
        name: String,
        /// Where it was first defined.
        first_line: usize,
    },
    /// Two services on one VIP, port and protocol.
    #[error("service `{service}` uses {endpoint}, already used by service `{first}`")]
    DuplicateEndpoint {
        /// This service.
        service: String,
        /// `vip:port/proto`.
        endpoint: String,
        /// The first service using it.
        first: String,
    },
    /// A backend of the other address family.
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
    /// A pin prefix of the other address family.
    #[error("service `{service}`: pin prefix {prefix} is not of the VIP's address family ({vip})")]
    PinFamilyMismatch {
        /// Service.
        service: String,
        /// Prefix.
        prefix: String,
        /// VIP.
        vip: IpAddr,
    },
    /// A group with weight and no backends.
    #[error(
        "service `{service}`, group `{group}` has weight {weight} but no backends; give it backends or weight 0"
    )]
    WeightWithoutBackends {
        /// Service.
        service: String,
        /// Group.
        group: String,
        /// Weight.
        weight: Weight,
    },
    /// A pin to a group the service does not have.
    #[error("service `{service}`: pin names group `{group}`, which the service does not have")]
    UnknownGroup {
        /// Service.
        service: String,
        /// Group.
        group: String,
    },
    /// A bad `[service.rollout]`.
    #[error("service `{service}`, rollout `{field}`: {reason}")]
    BadRollout {
        /// Service.
        service: String,
        /// Field.
        field: &'static str,
        /// Why.
        reason: String,
    },
    /// A service without groups.
    #[error("service `{service}` has no `[[service.group]]`")]
    NoGroups {
        /// Service.
        service: String,
    },
    /// Too many groups.
    #[error("service `{service}` has {count} groups; at most {max} are supported")]
    TooManyGroups {
        /// Service.
        service: String,
        /// Count.
        count: usize,
        /// Limit.
        max: usize,
    },
}

/// Turns byte spans into line/column locations.
struct Locator<'a> {
    file: &'a Path,
    text: &'a str,
}

impl Locator<'_> {
    fn at(&self, span: Range<usize>) -> Location {
        let before = &self.text[..span.start.min(self.text.len())];
        let line = before.matches('\n').count() + 1;
        let column = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
        Location {
            file: self.file.to_owned(),
            line,
            column,
        }
    }

    fn line(&self, span: Range<usize>) -> usize {
        self.at(span).line
    }

    fn err<T>(&self, span: Range<usize>, kind: ConfigErrorKind) -> Result<T, ConfigError> {
        Err(ConfigError {
            location: self.at(span),
            kind,
        })
    }
}

/// Shortest conntrack timeout.
const SEC: Duration = Duration::from_secs(1);

const NAME_RULE: &str = "1 to 64 characters of A-Z a-z 0-9 _ - .";

/// A service or group name, checked against `NAME_RULE`.
fn checked_name(loc: &Locator<'_>, raw: &Spanned<String>) -> Result<String, ConfigError> {
    let name = raw.get_ref().clone();
    if valid_name(&name) {
        Ok(name)
    } else {
        loc.err(
            raw.span(),
            ConfigErrorKind::BadName {
                field: "name",
                value: name,
                rule: NAME_RULE,
            },
        )
    }
}

fn valid_name(s: &str) -> bool {
    (1..=64).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_-.".contains(&b))
}

/// Parses and validates the whole file.
pub(super) fn parse(file: &Path, text: &str) -> Result<Config, ConfigError> {
    let loc = Locator { file, text };
    let raw: schema::File = toml::from_str(text).map_err(|e| ConfigError {
        location: loc.at(e.span().unwrap_or(0..0)),
        kind: ConfigErrorKind::Syntax {
            message: e.message().trim().to_owned(),
        },
    })?;
    let node = node(&loc, &raw.node)?;
    let mut services: Vec<Service> = Vec::new();
    let mut names: HashMap<String, usize> = HashMap::new();
    let mut endpoints: HashMap<String, String> = HashMap::new();
    for s in &raw.service {
        let service = service(&loc, s.get_ref())?;
        let name_span = s.get_ref().name.span();
        if let Some(first) = names.insert(service.name.clone(), loc.line(name_span.clone())) {
            return loc.err(
                name_span,
                ConfigErrorKind::Duplicate {
                    what: "service",
                    name: service.name,
                    first_line: first,
                },
            );
        }
        let endpoint = service.endpoint();
        if let Some(first) = endpoints.insert(endpoint.clone(), service.name.clone()) {
            return loc.err(
                s.span(),
                ConfigErrorKind::DuplicateEndpoint {
                    service: service.name,
                    endpoint,
                    first,
                },
            );
        }
        services.push(service);
    }
    let state = DesiredState { services };
    // The model's own rules are all checked above with locations; this is a backstop.
    if let Err(e) = state.validate() {
        return loc.err(
            0..0,
            ConfigErrorKind::Syntax {
                message: e.to_string(),
            },
        );
    }
    Ok(Config { node, state })
}

fn node(loc: &Locator<'_>, raw: &schema::Node) -> Result<NodeConfig, ConfigError> {
    let mut node = NodeConfig::default();
    if let Some(ifaces) = &raw.interfaces {
        let mut seen: HashMap<&str, usize> = HashMap::new();
        for i in ifaces.get_ref() {
            let name = i.get_ref().as_str();
            if name.is_empty() || name.len() > 15 || name.contains(['/', ' ', '\0']) {
                return loc.err(
                    i.span(),
                    ConfigErrorKind::BadName {
                        field: "interfaces",
                        value: name.to_owned(),
                        rule: "1 to 15 bytes, no '/' or spaces (IFNAMSIZ)",
                    },
                );
            }
            if let Some(first) = seen.insert(name, loc.line(i.span())) {
                return loc.err(
                    i.span(),
                    ConfigErrorKind::Duplicate {
                        what: "interface",
                        name: name.to_owned(),
                        first_line: first,
                    },
                );
            }
            node.interfaces.push(name.to_owned());
        }
    }
    if let Some(mode) = &raw.xdp_mode {
        node.xdp_mode = match mode.get_ref().as_str() {
            "auto" => XdpAttachMode::Auto,
            "native" => XdpAttachMode::Native,
            "generic" => XdpAttachMode::Generic,
            other => {
                return loc.err(
                    mode.span(),
                    ConfigErrorKind::BadChoice {
                        field: "xdp_mode",
                        value: other.to_owned(),
                        choices: "auto, native, generic",
                    },
                );
            }
        };
    }
    if let Some(hooks) = &raw.hooks {
        node.hooks = node_hooks(loc, hooks.get_ref(), &node.interfaces)?;
    }
    if let Some(max) = &raw.conntrack_max {
        let v = *max.get_ref();
        node.conntrack_max = u32::try_from(v)
            .ok()
            .filter(|v| (1024..=1 << 26).contains(v))
            .map_or_else(
                || {
                    loc.err(
                        max.span(),
                        ConfigErrorKind::OutOfRange {
                            field: "conntrack_max",
                            value: v.to_string(),
                            range: "1024..=67108864",
                        },
                    )
                },
                Ok,
            )?;
    }
    if let Some(t) = &raw.timeouts {
        let t = t.get_ref();
        let d = Timeouts::default();
        node.timeouts = Timeouts {
            tcp_syn: duration(loc, "tcp_syn", t.tcp_syn.as_ref(), d.tcp_syn, SEC)?,
            tcp_established: duration(
                loc,
                "tcp_established",
                t.tcp_established.as_ref(),
                d.tcp_established,
                Duration::from_secs(1),
            )?,
            tcp_closing: duration(
                loc,
                "tcp_closing",
                t.tcp_closing.as_ref(),
                d.tcp_closing,
                SEC,
            )?,
            udp: duration(loc, "udp", t.udp.as_ref(), d.udp, SEC)?,
        };
    }
    Ok(node)
}

/// `[node.hooks]`: each named interface must be in `interfaces`.
fn node_hooks(
    loc: &Locator<'_>,
    raw: &std::collections::BTreeMap<String, toml::Spanned<String>>,
    interfaces: &[String],
) -> Result<std::collections::BTreeMap<String, HookChoice>, ConfigError> {
    let mut out = std::collections::BTreeMap::new();
    for (name, choice) in raw {
        let c = match choice.get_ref().as_str() {
            "auto" => HookChoice::Auto,
            "xdp" => HookChoice::Xdp,
            "tc" => HookChoice::Tc,
            other => {
                return loc.err(
                    choice.span(),
                    ConfigErrorKind::BadChoice {
                        field: "hooks",
                        value: other.to_owned(),
                        choices: "auto, xdp, tc",
                    },
                );
            }
        };
        if !interfaces.contains(name) {
            return loc.err(
                choice.span(),
                ConfigErrorKind::Syntax {
                    message: format!("`hooks`: interface `{name}` is not in `interfaces`"),
                },
            );
        }
        out.insert(name.clone(), c);
    }
    Ok(out)
}

fn duration(
    loc: &Locator<'_>,
    field: &'static str,
    raw: Option<&Spanned<String>>,
    default: Duration,
    min: Duration,
) -> Result<Duration, ConfigError> {
    let Some(raw) = raw else { return Ok(default) };
    match humantime::parse_duration(raw.get_ref()) {
        Ok(d) if d >= min => Ok(d),
        _ => loc.err(
            raw.span(),
            ConfigErrorKind::BadValue {
                field,
                value: raw.get_ref().clone(),
                expected: "a long enough duration (timeouts at least 1s, checks at least 100ms; e.g. \"30s\", \"1h\")",
            },
        ),
    }
}

fn service(loc: &Locator<'_>, raw: &schema::Service) -> Result<Service, ConfigError> {
    let name = checked_name(loc, &raw.name)?;
    let vip: IpAddr = raw.vip.get_ref().parse().map_err(|_| ConfigError {
        location: loc.at(raw.vip.span()),
        kind: ConfigErrorKind::BadValue {
            field: "vip",
            value: raw.vip.get_ref().clone(),
            expected: "an IPv4 or IPv6 address",
        },
    })?;
    if vip.is_unspecified() || vip.is_multicast() {
        return loc.err(
            raw.vip.span(),
            ConfigErrorKind::BadValue {
                field: "vip",
                value: vip.to_string(),
                expected: "a unicast address",
            },
        );
    }
    let port = u16::try_from(*raw.port.get_ref())
        .ok()
        .filter(|p| *p != 0)
        .map_or_else(
            || {
                loc.err(
                    raw.port.span(),
                    ConfigErrorKind::OutOfRange {
                        field: "port",
                        value: raw.port.get_ref().to_string(),
                        range: "1..=65535",
                    },
                )
            },
            Ok,
        )?;
    let protocol = match raw.protocol.get_ref().as_str() {
        "tcp" => Protocol::Tcp,
        "udp" => Protocol::Udp,
        other => {
            return loc.err(
                raw.protocol.span(),
                ConfigErrorKind::BadChoice {
                    field: "protocol",
                    value: other.to_owned(),
                    choices: "tcp, udp",
                },
            );
        }
    };
    if raw.group.is_empty() {
        return loc.err(raw.name.span(), ConfigErrorKind::NoGroups { service: name });
    }
    if raw.group.len() > MAX_GROUPS_PER_SERVICE {
        return loc.err(
            raw.group[MAX_GROUPS_PER_SERVICE].span(),
            ConfigErrorKind::TooManyGroups {
                service: name,
                count: raw.group.len(),
                max: MAX_GROUPS_PER_SERVICE,
            },
        );
    }
    let (groups, group_lines) = groups(loc, &name, vip, &raw.group)?;
    let pins = pins(loc, &name, vip, &raw.pin, &group_lines)?;
    let health = raw.health.as_ref().map(|h| health(loc, h)).transpose()?;
    let mut service = Service {
        name,
        vip,
        port,
        protocol,
        groups,
        pins,
        health,
        rollout: None,
    };
    if let Some(r) = &raw.rollout {
        service.rollout = Some(rollout(loc, r, &service)?);
    }
    Ok(service)
}

fn rollout(
    loc: &Locator<'_>,
    raw: &Spanned<schema::Rollout>,
    service: &Service,
) -> Result<Plan, ConfigError> {
    let r = raw.get_ref();
    let percent = |field: &'static str, text: &str, span: std::ops::Range<usize>| {
        Weight::from_percent_str(text.trim_end_matches('%')).map_err(|source| ConfigError {
            location: loc.at(span),
            kind: ConfigErrorKind::BadRollout {
                service: service.name.clone(),
                field,
                reason: source.to_string(),
            },
        })
    };
    let steps = match &r.steps {
        None => DEFAULT_STEPS
            .iter()
            .map(|s| Weight::from_basis_points(s * 100).unwrap_or(Weight::FULL))
            .collect(),
        Some(list) => list
            .get_ref()
            .iter()
            .map(|n| percent("steps", &n.get_ref().text(), n.span()))
            .collect::<Result<Vec<_>, _>>()?,
    };
    let gates = r
        .gates
        .iter()
        .map(|g| {
            g.get_ref().parse::<Gate>().map_err(|e| ConfigError {
                location: loc.at(g.span()),
                kind: ConfigErrorKind::BadRollout {
                    service: service.name.clone(),
                    field: "gates",
                    reason: e.to_string(),
                },
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let on_failure = match r.on_failure.as_ref().map(|s| s.get_ref().as_str()) {
        None | Some("rollback") => OnFailure::Rollback,
        Some("step-back") => OnFailure::StepBack,
        Some(other) => {
            let span = r.on_failure.as_ref().map_or(raw.span(), Spanned::span);
            return loc.err(
                span,
                ConfigErrorKind::BadChoice {
                    field: "on_failure",
                    value: other.to_owned(),
                    choices: "rollback, step-back",
                },
            );
        }
    };
    let min_flows = match &r.min_flows {
        None => 10,
        Some(n) => u64::try_from(*n.get_ref()).map_or_else(
            |_| {
                loc.err(
                    n.span(),
                    ConfigErrorKind::OutOfRange {
                        field: "min_flows",
                        value: n.get_ref().to_string(),
                        range: "0..=2^63",
                    },
                )
            },
            Ok,
        )?,
    };
    let plan = Plan {
        to: r.to.get_ref().clone(),
        steps,
        pause: duration(loc, "pause", r.pause.as_ref(), Duration::from_secs(30), SEC)?,
        max_failure_rate: match &r.max_failure_rate {
            None => Weight::from_basis_points(100).unwrap_or(Weight::ZERO),
            Some(m) => percent("max_failure_rate", m.get_ref(), m.span())?,
        },
        min_flows,
        gates,
        gate_timeout: duration(
            loc,
            "gate_timeout",
            r.gate_timeout.as_ref(),
            Duration::from_secs(10),
            Duration::from_millis(100),
        )?,
        on_failure,
        hold_on_restart: r.hold_on_restart.unwrap_or(false),
    };
    // The plan's own rules, except "already there": a declared rollout that completed stays
    // in the file.
    match plan.validate(service) {
        Ok(()) | Err(crate::rollout::PlanError::AlreadyThere { .. }) => Ok(plan),
        Err(e) => loc.err(
            raw.span(),
            ConfigErrorKind::BadRollout {
                service: service.name.clone(),
                field: "rollout",
                reason: e.to_string(),
            },
        ),
    }
}

fn check_kind(loc: &Locator<'_>, h: &schema::Health) -> Result<CheckKind, ConfigError> {
    Ok(match h.kind.get_ref().as_str() {
        "tcp" => {
            if let Some(p) = &h.path {
                return loc.err(
                    p.span(),
                    ConfigErrorKind::BadValue {
                        field: "path",
                        value: p.get_ref().clone(),
                        expected: "absent for a tcp check",
                    },
                );
            }
            CheckKind::Tcp
        }
        "http" => {
            let path = h
                .path
                .as_ref()
                .map_or_else(|| "/".to_owned(), |p| p.get_ref().clone());
            if !path.starts_with('/') || path.contains(char::is_whitespace) {
                let span = h.path.as_ref().map_or(h.kind.span(), Spanned::span);
                return loc.err(
                    span,
                    ConfigErrorKind::BadValue {
                        field: "path",
                        value: path,
                        expected: "an absolute path without spaces (e.g. \"/healthz\")",
                    },
                );
            }
            let expect_status = match &h.expect_status {
                None => 200,
                Some(s) => u16::try_from(*s.get_ref())
                    .ok()
                    .filter(|c| (100..=599).contains(c))
                    .map_or_else(
                        || {
                            loc.err(
                                s.span(),
                                ConfigErrorKind::OutOfRange {
                                    field: "expect_status",
                                    value: s.get_ref().to_string(),
                                    range: "100..=599",
                                },
                            )
                        },
                        Ok,
                    )?,
            };
            CheckKind::Http {
                path,
                expect_status,
            }
        }
        other => {
            return loc.err(
                h.kind.span(),
                ConfigErrorKind::BadChoice {
                    field: "kind",
                    value: other.to_owned(),
                    choices: "tcp, http",
                },
            );
        }
    })
}

fn health(loc: &Locator<'_>, raw: &Spanned<schema::Health>) -> Result<HealthCheck, ConfigError> {
    let h = raw.get_ref();
    let kind = check_kind(loc, h)?;
    let interval = duration(
        loc,
        "interval",
        h.interval.as_ref(),
        Duration::from_secs(2),
        Duration::from_millis(100),
    )?;
    let timeout = duration(
        loc,
        "timeout",
        h.timeout.as_ref(),
        Duration::from_secs(1),
        Duration::from_millis(10),
    )?;
    if timeout > interval {
        let span = h.timeout.as_ref().map_or(raw.span(), Spanned::span);
        return loc.err(
            span,
            ConfigErrorKind::BadValue {
                field: "timeout",
                value: humantime::format_duration(timeout).to_string(),
                expected: "at most the interval",
            },
        );
    }
    let count =
        |field: &'static str, v: Option<&Spanned<i64>>, default: u32| -> Result<u32, ConfigError> {
            match v {
                None => Ok(default),
                Some(v) => u32::try_from(*v.get_ref())
                    .ok()
                    .filter(|n| (1..=100).contains(n))
                    .map_or_else(
                        || {
                            loc.err(
                                v.span(),
                                ConfigErrorKind::OutOfRange {
                                    field,
                                    value: v.get_ref().to_string(),
                                    range: "1..=100",
                                },
                            )
                        },
                        Ok,
                    ),
            }
        };
    Ok(HealthCheck {
        kind,
        interval,
        timeout,
        rise: count("rise", h.rise.as_ref(), 2)?,
        fall: count("fall", h.fall.as_ref(), 3)?,
    })
}

fn groups(
    loc: &Locator<'_>,
    name: &str,
    vip: IpAddr,
    raw: &[Spanned<schema::Group>],
) -> Result<(Vec<Group>, HashMap<String, usize>), ConfigError> {
    let mut groups: Vec<Group> = Vec::new();
    let mut group_lines: HashMap<String, usize> = HashMap::new();
    for g in raw {
        let group = group(loc, name, vip, g.get_ref())?;
        let span = g.get_ref().name.span();
        if let Some(first) = group_lines.insert(group.name.clone(), loc.line(span.clone())) {
            return loc.err(
                span,
                ConfigErrorKind::Duplicate {
                    what: "group",
                    name: group.name,
                    first_line: first,
                },
            );
        }
        groups.push(group);
    }
    Ok((groups, group_lines))
}

fn pins(
    loc: &Locator<'_>,
    name: &str,
    vip: IpAddr,
    raw: &[Spanned<schema::Pin>],
    groups: &HashMap<String, usize>,
) -> Result<Vec<Pin>, ConfigError> {
    let mut pins: Vec<Pin> = Vec::new();
    let mut pin_lines: HashMap<(IpAddr, u8), usize> = HashMap::new();
    for p in raw {
        let p = p.get_ref();
        let (prefix, len) = parse_prefix(p.prefix.get_ref()).ok_or_else(|| ConfigError {
            location: loc.at(p.prefix.span()),
            kind: ConfigErrorKind::BadValue {
                field: "prefix",
                value: p.prefix.get_ref().clone(),
                expected: "a network prefix with its host bits zero (e.g. \"203.0.113.0/24\")",
            },
        })?;
        if prefix.is_ipv4() != vip.is_ipv4() {
            return loc.err(
                p.prefix.span(),
                ConfigErrorKind::PinFamilyMismatch {
                    service: name.to_owned(),
                    prefix: p.prefix.get_ref().clone(),
                    vip,
                },
            );
        }
        if !groups.contains_key(p.group.get_ref()) {
            return loc.err(
                p.group.span(),
                ConfigErrorKind::UnknownGroup {
                    service: name.to_owned(),
                    group: p.group.get_ref().clone(),
                },
            );
        }
        if let Some(first) = pin_lines.insert((prefix, len), loc.line(p.prefix.span())) {
            return loc.err(
                p.prefix.span(),
                ConfigErrorKind::Duplicate {
                    what: "pin",
                    name: format!("{prefix}/{len}"),
                    first_line: first,
                },
            );
        }
        pins.push(Pin {
            prefix,
            len,
            group: p.group.get_ref().clone(),
        });
    }
    Ok(pins)
}

fn group(
    loc: &Locator<'_>,
    service: &str,
    vip: IpAddr,
    raw: &schema::Group,
) -> Result<Group, ConfigError> {
    let name = checked_name(loc, &raw.name)?;
    let weight =
        Weight::from_percent_str(&raw.weight.get_ref().text()).map_err(|source| ConfigError {
            location: loc.at(raw.weight.span()),
            kind: ConfigErrorKind::BadWeight {
                service: service.to_owned(),
                group: name.clone(),
                source,
            },
        })?;
    let mut backends = Vec::new();
    let mut seen: HashMap<SocketAddr, usize> = HashMap::new();
    for b in &raw.backends {
        let addr: SocketAddr = b.get_ref().parse().ok().filter(|a: &SocketAddr| a.port() != 0).ok_or_else(|| ConfigError {
            location: loc.at(b.span()),
            kind: ConfigErrorKind::BadValue {
                field: "backends",
                value: b.get_ref().clone(),
                expected: "an address and a port, e.g. \"198.51.100.11:8080\" or \"[2001:db8::11]:8080\"",
            },
        })?;
        if addr.is_ipv4() != vip.is_ipv4() {
            return loc.err(
                b.span(),
                ConfigErrorKind::FamilyMismatch {
                    service: service.to_owned(),
                    group: name,
                    backend: addr,
                    vip,
                },
            );
        }
        if let Some(first) = seen.insert(addr, loc.line(b.span())) {
            return loc.err(
                b.span(),
                ConfigErrorKind::Duplicate {
                    what: "backend",
                    name: addr.to_string(),
                    first_line: first,
                },
            );
        }
        backends.push(Backend { addr });
    }
    if backends.is_empty() && !weight.is_zero() {
        return loc.err(
            raw.weight.span(),
            ConfigErrorKind::WeightWithoutBackends {
                service: service.to_owned(),
                group: name,
                weight,
            },
        );
    }
    Ok(Group {
        name,
        weight,
        backends,
    })
}

/// Parses `"203.0.113.0/24"`; `None` unless the host bits are zero.
pub fn parse_prefix(s: &str) -> Option<(IpAddr, u8)> {
    let (addr, len) = s.split_once('/')?;
    let addr: IpAddr = addr.parse().ok()?;
    let len: u8 = len.parse().ok()?;
    let max = if addr.is_ipv4() { 32 } else { 128 };
    (len <= max && host_bits_zero(addr, len)).then_some((addr, len))
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
[node]
interfaces = ["eth0"]
xdp_mode = "auto"
conntrack_max = 1048576

[[service]]
name = "web"
vip = "192.0.2.10"
port = 80
protocol = "tcp"

[[service.group]]
name = "v1"
weight = 100
backends = ["198.51.100.11:8080", "198.51.100.12:8080"]

[[service.group]]
name = "v2"
weight = 0
backends = ["198.51.100.21:8080"]
"#;

    fn error(text: &str) -> String {
        parse(Path::new("veer.toml"), text).unwrap_err().to_string()
    }

    #[test]
    fn the_shipped_example_is_valid() {
        let c = parse(
            Path::new("examples/veer.toml"),
            include_str!("../../../examples/veer.toml"),
        )
        .unwrap();
        assert_eq!(c.state.services[0].pins.len(), 1);
        assert_eq!(c.node.timeouts, Timeouts::default());
    }

    #[test]
    fn node_hooks_override_interfaces_named_in_interfaces() {
        let text = GOOD.replace(
            "conntrack_max = 1048576",
            "conntrack_max = 1048576\n\n[node.hooks]\neth0 = \"tc\"",
        );
        let c = parse(Path::new("veer.toml"), &text).unwrap();
        assert_eq!(c.node.hook_choice("eth0"), HookChoice::Tc);
        assert_eq!(c.node.hook_choice("eth1"), HookChoice::Auto);
        let bad = GOOD.replace(
            "conntrack_max = 1048576",
            "conntrack_max = 1048576\n\n[node.hooks]\neth0 = \"fast\"",
        );
        assert_eq!(
            error(&bad),
            "veer.toml:8:8: `hooks`: `fast` is not one of auto, xdp, tc"
        );
        let unknown = GOOD.replace(
            "conntrack_max = 1048576",
            "conntrack_max = 1048576\n\n[node.hooks]\neth9 = \"xdp\"",
        );
        assert_eq!(
            error(&unknown),
            "veer.toml:8:8: `hooks`: interface `eth9` is not in `interfaces`"
        );
    }

    #[test]
    fn the_documented_example_is_valid() {
        let c = parse(Path::new("veer.toml"), GOOD).unwrap();
        assert_eq!(c.node.interfaces, ["eth0"]);
        assert_eq!(c.state.services[0].groups[0].weight, Weight::FULL);
        assert_eq!(c.state.services[0].groups[1].backends.len(), 1);
    }

    #[test]
    fn each_mistake_names_file_line_field_and_reason() {
        let cases: &[(&str, &str, &str)] = &[
            (
                "weight = 100",
                "weight = 120",
                "veer.toml:15:10: service `web`, group `v1`, `weight`: 120 is out of range 0..=100",
            ),
            (
                "weight = 0\n",
                "weight = 0.001\n",
                "veer.toml:20:10: service `web`, group `v2`, `weight`: `0.001` is not a percentage with at most two decimals (e.g. 90, 12.5, 0.01)",
            ),
            (
                "port = 80",
                "port = 80\ncolour = \"red\"",
                "veer.toml:11:1: unknown field `colour`, expected one of `name`, `vip`, `port`, `protocol`, `group`, `pin`, `health`, `rollout`",
            ),
            (
                "vip = \"192.0.2.10\"",
                "vip = \"192.0.2.300\"",
                "veer.toml:9:7: `vip`: `192.0.2.300` is not an IPv4 or IPv6 address",
            ),
            (
                "protocol = \"tcp\"",
                "protocol = \"sctp\"",
                "veer.toml:11:12: `protocol`: `sctp` is not one of tcp, udp",
            ),
            (
                "\"198.51.100.21:8080\"]",
                "\"[2001:db8::21]:8080\"]",
                "veer.toml:21:13: service `web`, group `v2`: backend [2001:db8::21]:8080 is not of the VIP's address family (192.0.2.10); veer does not translate between IPv4 and IPv6",
            ),
            (
                "name = \"v2\"",
                "name = \"v1\"",
                "veer.toml:19:8: group `v1` is already defined on line 14",
            ),
            (
                "\"198.51.100.12:8080\"]",
                "\"198.51.100.11:8080\"]",
                "veer.toml:16:35: backend `198.51.100.11:8080` is already defined on line 16",
            ),
            (
                "backends = [\"198.51.100.11:8080\", \"198.51.100.12:8080\"]",
                "backends = []",
                "veer.toml:15:10: service `web`, group `v1` has weight 100 but no backends; give it backends or weight 0",
            ),
            (
                "xdp_mode = \"auto\"",
                "xdp_mode = \"fast\"",
                "veer.toml:4:12: `xdp_mode`: `fast` is not one of auto, native, generic",
            ),
            (
                "port = 80",
                "port = 0",
                "veer.toml:10:8: `port`: 0 is out of range 1..=65535",
            ),
        ];
        for (from, to, expected) in cases {
            assert!(GOOD.contains(from), "{from}");
            assert_eq!(&error(&GOOD.replacen(from, to, 1)), expected);
        }
    }

    #[test]
    fn two_services_on_one_endpoint_are_refused() {
        let twice = format!(
            "{GOOD}\n{}",
            &GOOD[GOOD.find("[[service]]").unwrap()..].replace("\"web\"", "\"web2\"")
        );
        assert_eq!(
            error(&twice),
            "veer.toml:23:1: service `web2` uses 192.0.2.10:80/tcp, already used by service `web`"
        );
        let same_name = format!(
            "{GOOD}\n{}",
            &GOOD[GOOD.find("[[service]]").unwrap()..].replace("port = 80", "port = 81")
        );
        assert_eq!(
            error(&same_name),
            "veer.toml:24:8: service `web` is already defined on line 8"
        );
    }

    #[test]
    fn pins_are_checked() {
        let pin = |p: &str, g: &str| {
            format!("{GOOD}\n[[service.pin]]\nprefix = \"{p}\"\ngroup = \"{g}\"\n")
        };
        assert!(parse(Path::new("veer.toml"), &pin("203.0.113.0/24", "v2")).is_ok());
        assert_eq!(
            error(&pin("203.0.113.1/24", "v2")),
            "veer.toml:24:10: `prefix`: `203.0.113.1/24` is not a network prefix with its host bits zero (e.g. \"203.0.113.0/24\")"
        );
        assert_eq!(
            error(&pin("203.0.113.0/24", "v9")),
            "veer.toml:25:9: service `web`: pin names group `v9`, which the service does not have"
        );
        assert_eq!(
            error(&pin("2001:db8::/32", "v2")),
            "veer.toml:24:10: service `web`: pin prefix 2001:db8::/32 is not of the VIP's address family (192.0.2.10)"
        );
    }

    #[test]
    fn syntax_errors_are_located() {
        assert!(
            error("[node\n").starts_with("veer.toml:1:"),
            "{}",
            error("[node\n")
        );
        assert!(
            error("[[service]]\nname = \"web\"\n").contains("missing field"),
            "{}",
            error("[[service]]\nname = \"web\"\n")
        );
    }

    #[test]
    fn a_declared_rollout_and_a_health_check_parse_and_are_checked() {
        let with = |extra: &str| {
            GOOD.replacen(
                "protocol = \"tcp\"\n",
                &format!("protocol = \"tcp\"\n{extra}"),
                1,
            )
        };
        let c = parse(
            Path::new("veer.toml"),
            &with("[service.rollout]\nto = \"v2\"\nsteps = [10, 50, 100]\npause = \"5s\"\nmax_failure_rate = \"0.5%\"\ngates = [\"exec:true\"]\n[service.health]\nkind = \"http\"\npath = \"/ready\"\n"),
        )
        .unwrap();
        let plan = c.state.services[0].rollout.clone().unwrap();
        assert_eq!(
            plan.steps
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>(),
            ["10", "50", "100"]
        );
        assert_eq!(plan.max_failure_rate.basis_points(), 50);
        assert_eq!(plan.pause, Duration::from_secs(5));
        let h = c.state.services[0].health.clone().unwrap();
        assert_eq!((h.rise, h.fall, h.interval), (2, 3, Duration::from_secs(2)));
        assert_eq!(
            error(&with("[service.rollout]\nto = \"v3\"\n")),
            "veer.toml:12:1: service `web`, rollout `rollout`: service `web` has no group `v3`"
        );
        assert_eq!(
            error(&with("[service.rollout]\nto = \"v2\"\nsteps = [50, 10]\n")),
            "veer.toml:12:1: service `web`, rollout `rollout`: steps must increase strictly and end at 100 (got 50,10)"
        );
        assert!(
            error(&with("[service.health]\nkind = \"icmp\"\n"))
                .contains("`kind`: `icmp` is not one of tcp, http")
        );
        assert!(
            error(&with(
                "[service.health]\nkind = \"tcp\"\ninterval = \"1s\"\ntimeout = \"2s\"\n"
            ))
            .contains("at most the interval")
        );
    }

    #[test]
    fn timeouts_parse_and_refuse_nonsense() {
        let t = GOOD.replacen(
            "conntrack_max = 1048576",
            "conntrack_max = 1048576\n[node.timeouts]\nudp = \"30s\"\ntcp_established = \"2h\"",
            1,
        );
        let c = parse(Path::new("veer.toml"), &t).unwrap();
        assert_eq!(c.node.timeouts.udp, Duration::from_secs(30));
        assert_eq!(c.node.timeouts.tcp_established, Duration::from_hours(2));
        assert!(
            error(&t.replace("\"30s\"", "\"soon\""))
                .contains("`udp`: `soon` is not a long enough duration")
        );
    }
}
