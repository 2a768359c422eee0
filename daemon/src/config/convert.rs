//! From the file's TOML to a `Config`: every value parsed into its model type (addresses,
//! weights, durations, choices), each failure located at the value; then the model's own rules
//! (`NodeConfig::validate`, `DesiredState::validate`), each broken rule located at the part of
//! the file it names. No rule of the model is checked here a second time.

use std::{
    net::{IpAddr, SocketAddr},
    ops::Range,
    path::Path,
    time::Duration,
};

use toml::Spanned;

use super::{
    Config, ConfigError, ConfigErrorKind, schema,
    source::{self, SourceConfig, SourceKind},
    spans::{Fields, GroupSpans, Locator, NodeSpans, ServiceSpans, Spans},
};
use crate::model::{
    Backend, CheckKind, DesiredState, Group, HealthCheck, HealthField, NodeConfig, OnFailure, Pin,
    Plan, Protocol, RolloutField, Service, TimeoutField, Timeouts, Violation, Weight,
    XdpAttachMode, gate::Gate, parse_prefix,
};

/// What a document is: a node's config file, or a fleet's config in etcd (services only).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Scope {
    /// A node's config file: `[node]`, `[source]` and services.
    File,
    /// A fleet's config document in etcd: services only (`[node]` and `[source]` are local).
    Fleet,
}

/// Parses and checks the whole file.
pub(super) fn parse(file: &Path, text: &str) -> Result<Config, ConfigError> {
    parse_scoped(file, text, Scope::File).map(|(config, _)| config)
}

/// Parses and checks a document of `scope`; returns its `[source]` too.
pub(super) fn parse_scoped(
    file: &Path,
    text: &str,
    scope: Scope,
) -> Result<(Config, Option<SourceConfig>), ConfigError> {
    let loc = Locator { file, text };
    let err = |span: &Range<usize>, kind| ConfigError {
        location: loc.at(span),
        kind,
    };
    let raw: schema::File = toml::from_str(text).map_err(|e| {
        err(
            &e.span().unwrap_or(0..0),
            ConfigErrorKind::Syntax {
                message: e.message().trim().to_owned(),
            },
        )
    })?;
    let source = match scope {
        Scope::Fleet => {
            let local = "it is local to each node: it belongs in the node's own config file, not in the fleet's config";
            if let Some(n) = &raw.node {
                return Err(err(
                    &n.span(),
                    ConfigErrorKind::Misplaced {
                        what: "`[node]`",
                        why: local,
                    },
                ));
            }
            if let Some(s) = &raw.source {
                return Err(err(
                    &s.span(),
                    ConfigErrorKind::Misplaced {
                        what: "`[source]`",
                        why: local,
                    },
                ));
            }
            None
        }
        Scope::File => {
            let source = raw
                .source
                .as_ref()
                .map(source::convert)
                .transpose()
                .map_err(|(span, kind)| err(&span, kind))?;
            if let (
                Some(SourceConfig {
                    kind: SourceKind::Etcd,
                    ..
                }),
                Some(first),
            ) = (&source, raw.service.first())
            {
                return Err(err(
                    &first.span(),
                    ConfigErrorKind::Misplaced {
                        what: "`[[service]]`",
                        why: "with `[source] kind = \"etcd\"` the services come from etcd; this file holds `[node]` and `[source]` only",
                    },
                ));
            }
            source
        }
    };
    let mut spans = Spans::default();
    let (node, node_spans) = node(raw.node.as_ref()).map_err(|(span, kind)| err(&span, kind))?;
    spans.node = node_spans;
    let mut services = Vec::new();
    for s in &raw.service {
        let (service, service_spans) = service(s).map_err(|(span, kind)| err(&span, kind))?;
        services.push(service);
        spans.services.push(service_spans);
    }
    let state = DesiredState { services };
    let broken = |v: Violation| ConfigError {
        location: loc.at(&spans.of(&v.at)),
        kind: ConfigErrorKind::Invalid {
            first_line: v.first.map(|f| loc.at(&spans.of(&f)).line),
            source: v,
        },
    };
    node.validate().map_err(broken)?;
    state.validate().map_err(broken)?;
    Ok((Config { node, state }, source))
}

/// A conversion failure: where, and what.
type Failed = (Range<usize>, ConfigErrorKind);

fn bad_value(raw: &Spanned<String>, field: &'static str, expected: &'static str) -> Failed {
    (
        raw.span(),
        ConfigErrorKind::BadValue {
            field,
            value: raw.get_ref().clone(),
            expected,
        },
    )
}

/// An integer of the file as `T`; `range` says what the field allows.
fn integer<T: TryFrom<i64>>(
    raw: &Spanned<i64>,
    field: &'static str,
    range: String,
) -> Result<T, Failed> {
    T::try_from(*raw.get_ref()).map_err(|_| {
        (
            raw.span(),
            ConfigErrorKind::OutOfRange {
                field,
                value: raw.get_ref().to_string(),
                range,
            },
        )
    })
}

/// A duration (`"30s"`, `"1h"`), or `default` when the field is not written.
fn duration(
    raw: Option<&Spanned<String>>,
    field: &'static str,
    default: Duration,
) -> Result<Duration, Failed> {
    let Some(raw) = raw else { return Ok(default) };
    humantime::parse_duration(raw.get_ref())
        .map_err(|_| bad_value(raw, field, "a duration (e.g. \"30s\", \"1h\", \"500ms\")"))
}

/// One of `choices`.
fn choice<T: Copy>(
    raw: &Spanned<String>,
    field: &'static str,
    choices: &[(&str, T)],
    names: &'static str,
) -> Result<T, Failed> {
    choices
        .iter()
        .find(|(name, _)| name == raw.get_ref())
        .map(|(_, v)| *v)
        .ok_or_else(|| {
            (
                raw.span(),
                ConfigErrorKind::BadChoice {
                    field,
                    value: raw.get_ref().clone(),
                    choices: names,
                },
            )
        })
}

fn node(raw: Option<&Spanned<schema::Node>>) -> Result<(NodeConfig, NodeSpans), Failed> {
    let mut node = NodeConfig::default();
    let mut spans = NodeSpans::default();
    let Some(raw) = raw else {
        return Ok((node, spans));
    };
    spans.table = raw.span();
    let raw = raw.get_ref();
    if let Some(ifaces) = &raw.interfaces {
        for i in ifaces.get_ref() {
            node.interfaces.push(i.get_ref().clone());
            spans.interfaces.push(i.span());
        }
    }
    if let Some(mode) = &raw.xdp_mode {
        node.xdp_mode = choice(
            mode,
            "xdp_mode",
            &[
                ("auto", XdpAttachMode::Auto),
                ("native", XdpAttachMode::Native),
                ("generic", XdpAttachMode::Generic),
            ],
            "auto, native, generic",
        )?;
    }
    if let Some(max) = &raw.conntrack_max {
        let range = format!(
            "{}..={}",
            NodeConfig::MIN_CONNTRACK,
            NodeConfig::MAX_CONNTRACK
        );
        node.conntrack_max = integer(max, "conntrack_max", range)?;
        spans.conntrack_max = Some(max.span());
    }
    if let Some(t) = &raw.timeouts {
        spans.timeouts_table = Some(t.span());
        let t = t.get_ref();
        let d = Timeouts::default();
        let mut timeout = |field: TimeoutField, raw: Option<&Spanned<String>>, default| {
            if let Some(r) = raw {
                spans.timeouts.push((field, r.span()));
            }
            duration(raw, field.as_str(), default)
        };
        node.timeouts = Timeouts {
            tcp_syn: timeout(TimeoutField::TcpSyn, t.tcp_syn.as_ref(), d.tcp_syn)?,
            tcp_established: timeout(
                TimeoutField::TcpEstablished,
                t.tcp_established.as_ref(),
                d.tcp_established,
            )?,
            tcp_closing: timeout(
                TimeoutField::TcpClosing,
                t.tcp_closing.as_ref(),
                d.tcp_closing,
            )?,
            udp: timeout(TimeoutField::Udp, t.udp.as_ref(), d.udp)?,
        };
    }
    Ok((node, spans))
}

fn service(raw: &Spanned<schema::Service>) -> Result<(Service, ServiceSpans), Failed> {
    let mut spans = ServiceSpans {
        table: raw.span(),
        ..ServiceSpans::default()
    };
    let raw = raw.get_ref();
    let name = raw.name.get_ref().clone();
    spans.name = raw.name.span();
    let vip: IpAddr = raw
        .vip
        .get_ref()
        .parse()
        .map_err(|_| bad_value(&raw.vip, "vip", "an IPv4 or IPv6 address"))?;
    spans.vip = raw.vip.span();
    let port = integer(&raw.port, "port", "1..=65535".to_owned())?;
    spans.port = raw.port.span();
    let protocol = choice(
        &raw.protocol,
        "protocol",
        &[("tcp", Protocol::Tcp), ("udp", Protocol::Udp)],
        "tcp, udp",
    )?;
    let mut groups = Vec::new();
    for g in &raw.group {
        let (group, group_spans) = group(&name, g)?;
        groups.push(group);
        spans.groups.push(group_spans);
    }
    let mut pins = Vec::new();
    for p in &raw.pin {
        let p = p.get_ref();
        let (prefix, len) = parse_prefix(p.prefix.get_ref()).ok_or_else(|| {
            bad_value(
                &p.prefix,
                "prefix",
                "a network prefix with its host bits zero (e.g. \"203.0.113.0/24\")",
            )
        })?;
        pins.push(Pin {
            prefix,
            len,
            group: p.group.get_ref().clone(),
        });
        spans.pins.push((p.prefix.span(), p.group.span()));
    }
    let health = match &raw.health {
        None => None,
        Some(h) => {
            let (check, fields) = health(h.get_ref())?;
            spans.health = Some((h.span(), fields));
            Some(check)
        }
    };
    let rollout = match &raw.rollout {
        None => None,
        Some(r) => {
            let (plan, fields) = rollout(&name, r.get_ref())?;
            spans.rollout = Some((r.span(), fields));
            Some(plan)
        }
    };
    Ok((
        Service {
            name,
            vip,
            port,
            protocol,
            groups,
            pins,
            health,
            rollout,
        },
        spans,
    ))
}

fn group(service: &str, raw: &Spanned<schema::Group>) -> Result<(Group, GroupSpans), Failed> {
    let table = raw.span();
    let raw = raw.get_ref();
    let name = raw.name.get_ref().clone();
    let weight = Weight::from_percent_str(&raw.weight.get_ref().text()).map_err(|source| {
        (
            raw.weight.span(),
            ConfigErrorKind::BadWeight {
                service: service.to_owned(),
                group: name.clone(),
                source,
            },
        )
    })?;
    let mut backends = Vec::new();
    for b in &raw.backends {
        let addr: SocketAddr = b.get_ref().parse().map_err(|_| {
            bad_value(
                b,
                "backends",
                "an address and a port, e.g. \"198.51.100.11:8080\" or \"[2001:db8::11]:8080\"",
            )
        })?;
        backends.push(Backend { addr });
    }
    let spans = GroupSpans {
        table,
        name: raw.name.span(),
        weight: raw.weight.span(),
        backends: raw.backends.iter().map(Spanned::span).collect(),
    };
    Ok((
        Group {
            name,
            weight,
            backends,
        },
        spans,
    ))
}

fn health(h: &schema::Health) -> Result<(HealthCheck, Fields<HealthField>), Failed> {
    let mut fields = Vec::new();
    let http = choice(
        &h.kind,
        "kind",
        &[("tcp", false), ("http", true)],
        "tcp, http",
    )?;
    let kind = if http {
        let path = h.path.as_ref().map_or_else(
            || HealthCheck::DEFAULT_PATH.to_owned(),
            |p| {
                fields.push((HealthField::Path, p.span()));
                p.get_ref().clone()
            },
        );
        let expect_status = match &h.expect_status {
            None => HealthCheck::DEFAULT_EXPECT_STATUS,
            Some(s) => {
                fields.push((HealthField::ExpectStatus, s.span()));
                let range = HealthCheck::STATUSES;
                integer(
                    s,
                    "expect_status",
                    format!("{}..={}", range.start(), range.end()),
                )?
            }
        };
        CheckKind::Http {
            path,
            expect_status,
        }
    } else {
        if let Some(p) = &h.path {
            return Err(bad_value(p, "path", "absent for a tcp check"));
        }
        CheckKind::Tcp
    };
    let mut check = HealthCheck::new(kind);
    check.interval = duration(h.interval.as_ref(), "interval", check.interval)?;
    check.timeout = duration(h.timeout.as_ref(), "timeout", check.timeout)?;
    let counts = HealthCheck::COUNTS;
    let range = format!("{}..={}", counts.start(), counts.end());
    if let Some(r) = &h.rise {
        check.rise = integer(r, "rise", range.clone())?;
    }
    if let Some(f) = &h.fall {
        check.fall = integer(f, "fall", range)?;
    }
    for (field, span) in [
        (
            HealthField::Interval,
            h.interval.as_ref().map(Spanned::span),
        ),
        (HealthField::Timeout, h.timeout.as_ref().map(Spanned::span)),
        (HealthField::Rise, h.rise.as_ref().map(Spanned::span)),
        (HealthField::Fall, h.fall.as_ref().map(Spanned::span)),
    ] {
        if let Some(span) = span {
            fields.push((field, span));
        }
    }
    Ok((check, fields))
}

fn rollout(service: &str, r: &schema::Rollout) -> Result<(Plan, Fields<RolloutField>), Failed> {
    let bad = |span: Range<usize>, field: &'static str, reason: String| {
        (
            span,
            ConfigErrorKind::BadRollout {
                service: service.to_owned(),
                field,
                reason,
            },
        )
    };
    let percent = |field: &'static str, text: &str, span: Range<usize>| {
        Weight::from_percent_str(text.trim_end_matches('%'))
            .map_err(|source| bad(span, field, source.to_string()))
    };
    let mut plan = Plan::to(r.to.get_ref());
    let mut fields = vec![(RolloutField::To, r.to.span())];
    if let Some(list) = &r.steps {
        plan.steps = list
            .get_ref()
            .iter()
            .map(|n| percent("steps", &n.get_ref().text(), n.span()))
            .collect::<Result<_, _>>()?;
        fields.push((RolloutField::Steps, list.span()));
    }
    plan.pause = duration(r.pause.as_ref(), "pause", plan.pause)?;
    if let Some(p) = &r.pause {
        fields.push((RolloutField::Pause, p.span()));
    }
    if let Some(m) = &r.max_failure_rate {
        plan.max_failure_rate = percent("max_failure_rate", m.get_ref(), m.span())?;
    }
    if let Some(n) = &r.min_flows {
        plan.min_flows = integer(n, "min_flows", "0..=2^63".to_owned())?;
    }
    plan.gates = r
        .gates
        .iter()
        .map(|g| {
            g.get_ref()
                .parse::<Gate>()
                .map_err(|e| bad(g.span(), "gates", e.to_string()))
        })
        .collect::<Result<_, _>>()?;
    plan.gate_timeout = duration(r.gate_timeout.as_ref(), "gate_timeout", plan.gate_timeout)?;
    if let Some(t) = &r.gate_timeout {
        fields.push((RolloutField::GateTimeout, t.span()));
    }
    if let Some(f) = &r.on_failure {
        plan.on_failure = choice(
            f,
            "on_failure",
            &[
                ("rollback", OnFailure::Rollback),
                ("step-back", OnFailure::StepBack),
            ],
            "rollback, step-back",
        )?;
    }
    plan.hold_on_restart = r.hold_on_restart.unwrap_or(false);
    Ok((plan, fields))
}
