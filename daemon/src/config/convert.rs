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
    Config, ConfigError, ConfigErrorKind, ConfigErrors, read, schema,
    source::{self, SourceConfig, SourceKind},
    spans::{Fields, GroupSpans, Locator, NodeSpans, ServiceSpans, Spans},
    suggest,
};
use crate::model::{
    Backend, CheckKind, DesiredState, Group, HealthCheck, HealthField, HookChoice, NodeConfig,
    OnFailure, Pin, Plan, Protocol, RolloutField, Service, TimeoutField, Timeouts, Violation,
    Weight, XdpAttachMode,
    drain::{DrainEnd, Pace},
    gate::Gate,
    parse_prefix,
    tolerance::{Percent, Tolerances},
};

/// What a document is: a node's config file, or a fleet's config in etcd (services only).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Scope {
    /// A node's config file: `[node]`, `[source]` and services.
    File,
    /// A fleet's config document in etcd: services only (`[node]` and `[source]` are local).
    Fleet,
}

/// Parses and checks the whole file, reporting every problem (see `parse_scoped`).
pub(super) fn parse(file: &Path, text: &str) -> Result<Config, ConfigErrors> {
    parse_scoped(file, text, Scope::File).map(|(config, _)| config)
}

/// Parses and checks a document of `scope`, reporting every problem: all TOML syntax errors;
/// else every unknown key, missing key, wrong type, bad value and table out of its place; and
/// the model's rules on every part of the file that was read without a problem. Returns the
/// document's `[source]` too.
pub(super) fn parse_scoped(
    file: &Path,
    text: &str,
    scope: Scope,
) -> Result<(Config, Option<SourceConfig>), ConfigErrors> {
    let loc = Locator { file, text };
    let (root, syntax) = toml::de::DeTable::parse_recoverable(text);
    if !syntax.is_empty() {
        let failed = syntax
            .iter()
            .map(|e| {
                (
                    e.span().unwrap_or(0..0),
                    ConfigErrorKind::Syntax {
                        message: e.message().trim().replace('\n', "; "),
                    },
                )
            })
            .collect();
        return Err(errors(&loc, failed));
    }
    let mut failed = Vec::new();
    let raw = read::file(&root, &mut failed);
    let source = source_of(&raw, scope, &mut failed);
    let mut spans = Spans::default();
    let before = failed.len();
    let (node, node_spans) = node(raw.node.as_ref(), &mut failed);
    spans.node = node_spans;
    let node_clean = failed.len() == before && raw.node.as_ref().is_none_or(|n| n.get_ref().clean);
    // The model's rules run on the services read and converted without a problem; `clean[i]`
    // is the index in the file of the `i`th of them.
    let mut services = Vec::new();
    let mut clean = Vec::new();
    for (i, s) in raw.service.iter().enumerate() {
        let before = failed.len();
        let (service, service_spans) = service(s, &mut failed);
        if s.get_ref().clean && failed.len() == before {
            services.push(service);
            spans.services.push(service_spans);
            clean.push(i);
        }
    }
    let state = DesiredState { services };
    let broken = |v: Violation| -> read::Failed {
        let first_line = v.first.map(|f| loc.at(&spans.of(&f)).line);
        (
            spans.of(&v.at),
            ConfigErrorKind::Invalid {
                first_line,
                source: v,
            },
        )
    };
    if node_clean && let Err(v) = node.validate() {
        failed.push(broken(v));
    }
    failed.extend(state.violations().into_iter().map(broken));
    if failed.is_empty() {
        Ok((Config { node, state }, source))
    } else {
        Err(errors(&loc, failed))
    }
}

/// The document's `[source]` (a node's file) after checking that each table is in its place:
/// `[node]` and `[source]` are a node's own, never in a fleet's document, and a file whose
/// source is etcd holds no services. Every problem is added to `failed`.
fn source_of(
    raw: &schema::File,
    scope: Scope,
    failed: &mut Vec<read::Failed>,
) -> Option<SourceConfig> {
    match scope {
        Scope::Fleet => {
            let local = "it is local to each node: it belongs in the node's own config file, not in the fleet's config";
            if let Some(n) = &raw.node {
                failed.push((
                    n.span(),
                    ConfigErrorKind::Misplaced {
                        what: "`[node]`",
                        why: local,
                    },
                ));
            }
            if let Some(s) = &raw.source {
                failed.push((
                    s.span(),
                    ConfigErrorKind::Misplaced {
                        what: "`[source]`",
                        why: local,
                    },
                ));
            }
            None
        }
        Scope::File => {
            let source = raw.source.as_ref().and_then(|s| source::convert(s, failed));
            if let (
                Some(SourceConfig {
                    kind: SourceKind::Etcd,
                    ..
                }),
                Some(first),
            ) = (&source, raw.service.first())
            {
                failed.push((
                    first.span(),
                    ConfigErrorKind::Misplaced {
                        what: "`[[service]]`",
                        why: "with `[source] kind = \"etcd\"` the services come from etcd; this file holds `[node]` and `[source]` only",
                    },
                ));
            }
            source
        }
    }
}

/// The problems at their places in the file, in its order.
fn errors(loc: &Locator<'_>, mut failed: Vec<read::Failed>) -> ConfigErrors {
    failed.sort_by_key(|(span, _)| span.start);
    ConfigErrors {
        errors: failed
            .into_iter()
            .map(|(span, kind)| ConfigError {
                location: loc.at(&span),
                width: loc.width(&span),
                kind,
            })
            .collect(),
        text: loc.text.to_owned(),
    }
}

/// A conversion failure: where, and what.
type Failed = read::Failed;

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
    choices: &[(&'static str, T)],
    names: &'static str,
) -> Result<T, Failed> {
    choices
        .iter()
        .find(|(name, _)| name == raw.get_ref())
        .map(|(_, v)| *v)
        .ok_or_else(|| {
            let known: Vec<&'static str> = choices.iter().map(|(n, _)| *n).collect();
            (
                raw.span(),
                ConfigErrorKind::BadChoice {
                    field,
                    value: raw.get_ref().clone(),
                    choices: names,
                    suggestion: suggest::nearest(raw.get_ref(), &known),
                },
            )
        })
}

/// `result`'s value, or `fallback` with its error added to `failed`.
fn or<T>(result: Result<T, Failed>, fallback: T, failed: &mut Vec<Failed>) -> T {
    result.unwrap_or_else(|e| {
        failed.push(e);
        fallback
    })
}

fn node(raw: Option<&Spanned<schema::Node>>, failed: &mut Vec<Failed>) -> (NodeConfig, NodeSpans) {
    let mut node = NodeConfig::default();
    let mut spans = NodeSpans::default();
    let Some(raw) = raw else {
        return (node, spans);
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
        let mode = choice(
            mode,
            "xdp_mode",
            &[
                ("auto", XdpAttachMode::Auto),
                ("native", XdpAttachMode::Native),
                ("generic", XdpAttachMode::Generic),
            ],
            "auto, native, generic",
        );
        node.xdp_mode = or(mode, node.xdp_mode, failed);
    }
    if let Some(hooks) = &raw.hooks {
        for (name, raw) in hooks.get_ref() {
            let c = choice(
                raw,
                "hooks",
                &[
                    ("auto", HookChoice::Auto),
                    ("xdp", HookChoice::Xdp),
                    ("tc", HookChoice::Tc),
                ],
                "auto, xdp, tc",
            );
            let c = or(c, HookChoice::Auto, failed);
            node.hooks.insert(name.clone(), c);
            spans.hooks.push(raw.span());
        }
    }
    for (field, raw, value, span) in [
        (
            "conntrack_max",
            &raw.conntrack_max,
            &mut node.conntrack_max,
            &mut spans.conntrack_max,
        ),
        (
            "conntrack_new_max",
            &raw.conntrack_new_max,
            &mut node.conntrack_new_max,
            &mut spans.conntrack_new_max,
        ),
    ] {
        if let Some(max) = raw {
            let range = format!(
                "{}..={}",
                NodeConfig::MIN_CONNTRACK,
                NodeConfig::MAX_CONNTRACK
            );
            *value = or(integer(max, field, range), *value, failed);
            *span = Some(max.span());
        }
    }
    if let Some(t) = &raw.timeouts {
        spans.timeouts_table = Some(t.span());
        let t = t.get_ref();
        let d = Timeouts::default();
        let mut timeout = |field: TimeoutField, raw: Option<&Spanned<String>>, default| {
            if let Some(r) = raw {
                spans.timeouts.push((field, r.span()));
            }
            or(duration(raw, field.as_str(), default), default, failed)
        };
        node.timeouts = Timeouts {
            tcp_syn: timeout(TimeoutField::TcpSyn, t.tcp_syn.as_ref(), d.tcp_syn),
            tcp_established: timeout(
                TimeoutField::TcpEstablished,
                t.tcp_established.as_ref(),
                d.tcp_established,
            ),
            tcp_closing: timeout(
                TimeoutField::TcpClosing,
                t.tcp_closing.as_ref(),
                d.tcp_closing,
            ),
            udp: timeout(TimeoutField::Udp, t.udp.as_ref(), d.udp),
        };
    }
    (node, spans)
}

fn service(raw: &Spanned<schema::Service>, failed: &mut Vec<Failed>) -> (Service, ServiceSpans) {
    let mut spans = ServiceSpans {
        table: raw.span(),
        ..ServiceSpans::default()
    };
    let raw = raw.get_ref();
    let name = raw.name.get_ref().clone();
    spans.name = raw.name.span();
    // A missing value was reported when the file was read: the service is not clean, and its
    // placeholder never reaches the model's rules.
    let mut vip = IpAddr::from([0, 0, 0, 0]);
    if let Some(v) = &raw.vip {
        vip = or(
            v.get_ref()
                .parse()
                .map_err(|_| bad_value(v, "vip", "an IPv4 or IPv6 address")),
            vip,
            failed,
        );
        spans.vip = v.span();
    }
    let mut port = 0;
    if let Some(p) = &raw.port {
        port = or(integer(p, "port", "1..=65535".to_owned()), 0, failed);
        spans.port = p.span();
    }
    let mut protocol = Protocol::Tcp;
    if let Some(p) = &raw.protocol {
        protocol = or(
            choice(
                p,
                "protocol",
                &[("tcp", Protocol::Tcp), ("udp", Protocol::Udp)],
                "tcp, udp",
            ),
            Protocol::Tcp,
            failed,
        );
    }
    let mut groups = Vec::new();
    for g in &raw.group {
        let (group, group_spans) = group(&name, g, failed);
        groups.push(group);
        spans.groups.push(group_spans);
    }
    let mut pins = Vec::new();
    for p in &raw.pin {
        let p = p.get_ref();
        let Some((prefix, len)) = parse_prefix(p.prefix.get_ref()) else {
            failed.push(bad_value(
                &p.prefix,
                "prefix",
                "a network prefix with its host bits zero (e.g. \"203.0.113.0/24\"), or one address",
            ));
            continue;
        };
        pins.push(Pin {
            prefix,
            len,
            group: p.group.get_ref().clone(),
        });
        spans.pins.push((p.prefix.span(), p.group.span()));
    }
    let health = raw.health.as_ref().and_then(|h| {
        let (check, fields) = health(h.get_ref(), failed)?;
        spans.health = Some((h.span(), fields));
        Some(check)
    });
    let rollout = raw.rollout.as_ref().map(|r| {
        let (plan, fields) = rollout(&name, r.get_ref(), failed);
        spans.rollout = Some((r.span(), fields));
        plan
    });
    (
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
    )
}

fn group(
    service: &str,
    raw: &Spanned<schema::Group>,
    failed: &mut Vec<Failed>,
) -> (Group, GroupSpans) {
    let table = raw.span();
    let raw = raw.get_ref();
    let name = raw.name.get_ref().clone();
    let mut weight = Weight::ZERO;
    if let Some(raw_weight) = &raw.weight {
        let parsed = Weight::from_percent_str(&raw_weight.get_ref().text()).map_err(|source| {
            (
                raw_weight.span(),
                ConfigErrorKind::BadWeight {
                    service: service.to_owned(),
                    group: name.clone(),
                    source,
                },
            )
        });
        weight = or(parsed, Weight::ZERO, failed);
    }
    let mut backends = Vec::new();
    for b in &raw.backends {
        match b.get_ref().parse::<SocketAddr>() {
            Ok(addr) => backends.push(Backend { addr }),
            Err(_) => failed.push(bad_value(
                b,
                "backends",
                "an address and a port, e.g. \"198.51.100.11:8080\" or \"[2001:db8::11]:8080\"",
            )),
        }
    }
    let spans = GroupSpans {
        weight: raw
            .weight
            .as_ref()
            .map_or_else(|| table.clone(), Spanned::span),
        table,
        name: raw.name.span(),
        backends: raw.backends.iter().map(Spanned::span).collect(),
    };
    (
        Group {
            name,
            weight,
            backends,
        },
        spans,
    )
}

fn health(
    h: &schema::Health,
    failed: &mut Vec<Failed>,
) -> Option<(HealthCheck, Fields<HealthField>)> {
    let mut fields = Vec::new();
    let http = or(
        choice(
            &h.kind,
            "kind",
            &[("tcp", false), ("http", true)],
            "tcp, http",
        )
        .map(Some),
        None,
        failed,
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
                or(
                    integer(
                        s,
                        "expect_status",
                        format!("{}..={}", range.start(), range.end()),
                    ),
                    HealthCheck::DEFAULT_EXPECT_STATUS,
                    failed,
                )
            }
        };
        CheckKind::Http {
            path,
            expect_status,
        }
    } else {
        if let Some(p) = &h.path {
            failed.push(bad_value(p, "path", "absent for a tcp check"));
        }
        CheckKind::Tcp
    };
    let mut check = HealthCheck::new(kind);
    check.interval = or(
        duration(h.interval.as_ref(), "interval", check.interval),
        check.interval,
        failed,
    );
    check.timeout = or(
        duration(h.timeout.as_ref(), "timeout", check.timeout),
        check.timeout,
        failed,
    );
    let counts = HealthCheck::COUNTS;
    let range = format!("{}..={}", counts.start(), counts.end());
    if let Some(r) = &h.rise {
        check.rise = or(integer(r, "rise", range.clone()), check.rise, failed);
    }
    if let Some(f) = &h.fall {
        check.fall = or(integer(f, "fall", range), check.fall, failed);
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
    Some((check, fields))
}

fn rollout(
    service: &str,
    r: &schema::Rollout,
    failed: &mut Vec<Failed>,
) -> (Plan, Fields<RolloutField>) {
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
        Weight::from_percent_str(text.trim().trim_end_matches('%').trim())
            .map_err(|source| bad(span, field, source.to_string()))
    };
    let mut plan = Plan::to(r.to.get_ref());
    let mut fields = vec![(RolloutField::To, r.to.span())];
    if let Some(list) = &r.steps {
        let mut steps = Vec::new();
        for n in list.get_ref() {
            match percent("steps", &n.get_ref().text(), n.span()) {
                Ok(w) => steps.push(w),
                Err(e) => failed.push(e),
            }
        }
        if steps.len() == list.get_ref().len() {
            plan.steps = steps;
        }
        fields.push((RolloutField::Steps, list.span()));
    }
    plan.pause = or(
        duration(r.pause.as_ref(), "pause", plan.pause),
        plan.pause,
        failed,
    );
    if let Some(p) = &r.pause {
        fields.push((RolloutField::Pause, p.span()));
    }
    if let Some(m) = &r.max_failure_rate {
        plan.max_failure_rate = or(
            percent("max_failure_rate", &m.get_ref().text(), m.span()),
            plan.max_failure_rate,
            failed,
        );
    }
    if let Some(n) = &r.min_flows {
        plan.min_flows = or(
            integer(n, "min_flows", format!("0..={}", i64::MAX)),
            plan.min_flows,
            failed,
        );
    }
    for g in &r.gates {
        match g.get_ref().parse::<Gate>() {
            Ok(gate) => plan.gates.push(gate),
            Err(e) => failed.push(bad(g.span(), "gates", e.to_string())),
        }
    }
    plan.gate_timeout = or(
        duration(r.gate_timeout.as_ref(), "gate_timeout", plan.gate_timeout),
        plan.gate_timeout,
        failed,
    );
    if let Some(t) = &r.gate_timeout {
        fields.push((RolloutField::GateTimeout, t.span()));
    }
    if let Some(f) = &r.on_failure {
        plan.on_failure = or(
            choice(
                f,
                "on_failure",
                &[
                    ("rollback", OnFailure::Rollback),
                    ("step-back", OnFailure::StepBack),
                ],
                "rollback, step-back",
            ),
            plan.on_failure,
            failed,
        );
    }
    plan.hold_on_restart = r.hold_on_restart.unwrap_or(false);
    plan.judge = judge(r, &bad, &mut fields, failed);
    plan.drain = drain_end(r, &bad, &mut fields, failed);
    (plan, fields)
}

/// The canary judge's tolerances the rollout table asks for: none unless `judge = true` or one
/// of its options is written (as `veer rollout start --judge` or one of its options), each
/// option not written at its default. `judge = false` with an option is refused.
fn judge(
    r: &schema::Rollout,
    bad: &impl Fn(Range<usize>, &'static str, String) -> Failed,
    fields: &mut Fields<RolloutField>,
    failed: &mut Vec<Failed>,
) -> Option<Tolerances> {
    let options = [
        (
            "max_latency_increase",
            r.max_latency_increase.as_ref().map(Spanned::span),
        ),
        ("latency_slack", r.latency_slack.as_ref().map(Spanned::span)),
        (
            "max_failure_increase",
            r.max_failure_increase.as_ref().map(Spanned::span),
        ),
        ("confidence", r.confidence.as_ref().map(Spanned::span)),
        ("min_sample", r.min_sample.as_ref().map(Spanned::span)),
    ];
    let written: Vec<&'static str> = options
        .iter()
        .filter(|(_, span)| span.is_some())
        .map(|(key, _)| *key)
        .collect();
    match &r.judge {
        Some(j) if !*j.get_ref() && !written.is_empty() => {
            failed.push(bad(
                j.span(),
                "judge",
                format!(
                    "`judge = false` contradicts {}: remove them, or the `judge` line (any of them turns the judge on)",
                    written
                        .iter()
                        .map(|k| format!("`{k}`"))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            ));
            return None;
        }
        Some(j) if !*j.get_ref() => return None,
        None if written.is_empty() => return None,
        _ => {}
    }
    let mut t = Tolerances::DEFAULT;
    let mut percent = |raw: Option<&Spanned<schema::Number>>,
                       key: &'static str,
                       field: RolloutField,
                       into: &mut Percent| {
        let Some(raw) = raw else { return };
        fields.push((field, raw.span()));
        match Percent::parse(&raw.get_ref().text()) {
            Ok(p) => *into = p,
            Err(e) => failed.push(bad(raw.span(), key, e.to_string())),
        }
    };
    percent(
        r.max_latency_increase.as_ref(),
        "max_latency_increase",
        RolloutField::MaxLatencyIncrease,
        &mut t.max_latency_increase,
    );
    percent(
        r.max_failure_increase.as_ref(),
        "max_failure_increase",
        RolloutField::MaxFailureIncrease,
        &mut t.max_failure_increase,
    );
    percent(
        r.confidence.as_ref(),
        "confidence",
        RolloutField::Confidence,
        &mut t.confidence,
    );
    if let Some(s) = &r.latency_slack {
        fields.push((RolloutField::LatencySlack, s.span()));
        t.latency_slack = or(
            duration(Some(s), "latency_slack", t.latency_slack),
            t.latency_slack,
            failed,
        );
    }
    if let Some(n) = &r.min_sample {
        fields.push((RolloutField::MinSample, n.span()));
        t.min_sample = or(
            integer(n, "min_sample", format!("1..={}", i64::MAX)),
            t.min_sample,
            failed,
        );
    }
    Some(t)
}

/// Ending the flows left on the groups a completed rollout took to 0: `drain_deadline`, at
/// `drain_pace` (default 50/s, as `--drain-pace`); a pace without a deadline is refused.
fn drain_end(
    r: &schema::Rollout,
    bad: &impl Fn(Range<usize>, &'static str, String) -> Failed,
    fields: &mut Fields<RolloutField>,
    failed: &mut Vec<Failed>,
) -> Option<DrainEnd> {
    let pace = match &r.drain_pace {
        None => Some(DrainEnd::DEFAULT_PACE),
        Some(p) => match p.get_ref().parse::<Pace>() {
            Ok(pace) => Some(pace),
            Err(e) => {
                failed.push(bad(p.span(), "drain_pace", e.to_string()));
                None
            }
        },
    };
    let Some(d) = &r.drain_deadline else {
        if let Some(p) = &r.drain_pace {
            failed.push(bad(
                p.span(),
                "drain_deadline",
                "`drain_pace` needs `drain_deadline`: how long the flows are left to end by themselves before they are ended at the pace".to_owned(),
            ));
        }
        return None;
    };
    fields.push((RolloutField::DrainDeadline, d.span()));
    let deadline = or(
        duration(Some(d), "drain_deadline", Duration::ZERO).map(Some),
        None,
        failed,
    )?;
    Some(DrainEnd {
        deadline,
        pace: pace?,
    })
}
