//! Prometheus metrics (`veer_` prefix), encoded by `prometheus-client` at each scrape from the
//! maps and the live revision, and served over HTTP on a loopback address by default. Active
//! flows and conntrack entries come from the last upkeep pass: a scrape never scans conntrack.
//!
//! Conventions: base units and ratios (weights and shares are 0–1 ratios, times are seconds),
//! counters end in `_total`. A scrape gets the classic Prometheus text format (0.0.4) unless its
//! `Accept` asks for `OpenMetrics` (`negotiate`): `prometheus-client` writes `OpenMetrics`, and
//! `classic` rewrites it (the `_total` and `_info` names in `# TYPE`, no `# EOF`), so that
//! `promtool check metrics` and every scraper read it.

use std::{
    net::SocketAddr,
    sync::{Arc, Mutex},
};

use http_body_util::Full;
use hyper::{
    Request, Response, StatusCode, body::Incoming, server::conn::http1, service::service_fn,
};
use hyper_util::rt::TokioIo;
use prometheus_client::{
    encoding::{EncodeLabelSet, text::encode},
    metrics::{counter::Counter, family::Family, gauge::Gauge, info::Info},
    registry::Registry,
};

use veer_common::counters::ServiceCounters;

mod signals;

use crate::{
    control::{
        ControlError, Controller, Effects, Readings,
        views::{ConfigView, FilesView, StatusView},
    },
    error::chain,
};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BackendLabels {
    service: String,
    group: String,
    backend: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct GroupLabels {
    service: String,
    group: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ServiceLabels {
    service: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RolloutLabels {
    service: String,
    target: String,
    state: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct InterfaceLabels {
    interface: String,
    kind: String,
    hook: String,
    mode: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    reason: String,
    verdict: String,
}

/// The text exposition of every metric now.
pub fn render<N: Effects + Readings>(ctl: &Controller<N>) -> Result<String, ControlError> {
    let status = ctl.metrics_status()?;
    let mut reg = Registry::with_prefix("veer");
    reg.register(
        "build",
        "veer build",
        Info::new(vec![("version", env!("CARGO_PKG_VERSION"))]),
    );
    let revision: Gauge = Gauge::default();
    revision.set(status.revision.as_ref().map_or(0, |r| r.number as i64));
    reg.register("revision", "Live revision number", revision);

    state_file_metrics(&mut reg, &status.files);
    config_metrics(&mut reg, &status.config);
    if let Some(source) = &status.source {
        source_metrics(&mut reg, source);
    }
    backend_metrics(&mut reg, &status);
    rollout_metrics(&mut reg, ctl);
    signals::register(&mut reg, &ctl.backend_signals()?);
    dataplane_metrics(&mut reg, ctl, &status)?;

    let mut out = String::new();
    // Infallible: writing into a String cannot fail.
    encode(&mut out, &reg).unwrap_or_else(|_| unreachable!("fmt::Write to a String"));
    Ok(out)
}

/// Revision files that cannot be used, and whether the newest is one of them (changes held).
fn state_file_metrics(reg: &mut Registry, f: &FilesView) {
    let held: Gauge = Gauge::default();
    held.set(i64::from(f.held.is_some()));
    reg.register(
        "state_held",
        "1 while the newest revision file cannot be used: the maps are kept as pinned and no change is made until an operator chooses the state (veer status says how)",
        held,
    );
    let unusable: Gauge = Gauge::default();
    unusable.set(i64::try_from(f.unusable.len()).unwrap_or(i64::MAX));
    reg.register(
        "state_unusable_revision_files",
        "Files named like revisions that cannot be used (damaged, foreign, not regular files): reported, never used, never overwritten",
        unusable,
    );
}

/// The exposition formats a scrape may get.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// Prometheus text format 0.0.4 (the default).
    Classic,
    /// `OpenMetrics` 1.0.0 text.
    OpenMetrics,
}

impl Format {
    /// The `Content-Type` of an answer in this format.
    pub fn content_type(self) -> &'static str {
        match self {
            Format::Classic => "text/plain; version=0.0.4; charset=utf-8",
            Format::OpenMetrics => "application/openmetrics-text; version=1.0.0; charset=utf-8",
        }
    }
}

/// The format an `Accept` header asks for: `OpenMetrics` when it names
/// `application/openmetrics-text` (with a non-zero `q`), the classic format otherwise.
pub fn negotiate(accept: Option<&str>) -> Format {
    let wants_openmetrics = accept.is_some_and(|a| {
        a.split(',').any(|range| {
            let mut parts = range.split(';').map(str::trim);
            let media = parts.next().unwrap_or_default();
            let zero = parts.any(|p| {
                p.strip_prefix("q=")
                    .and_then(|q| q.parse::<f32>().ok())
                    .is_some_and(|q| q <= 0.0)
            });
            media.eq_ignore_ascii_case("application/openmetrics-text") && !zero
        })
    });
    if wants_openmetrics {
        Format::OpenMetrics
    } else {
        Format::Classic
    }
}

/// `OpenMetrics` text (as `prometheus-client` writes it) in the classic Prometheus text format:
/// a counter family `x` is `x_total` in its `# HELP` and `# TYPE`, an info family `x` is the gauge
/// `x_info`, `# UNIT` and `# EOF` are dropped; samples are the same.
pub fn classic(openmetrics: &str) -> String {
    let mut out = String::with_capacity(openmetrics.len());
    let mut classic_types: std::collections::HashMap<String, String> =
        std::collections::HashMap::new();
    // `# TYPE` follows `# HELP` in prometheus-client's output: read the types first.
    for line in openmetrics.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, ty) = rest.split_once(' ').unwrap_or((rest, "untyped"));
            let family = match ty {
                "counter" => format!("{name}_total counter"),
                "info" => format!("{name}_info gauge"),
                "unknown" => format!("{name} untyped"),
                other => format!("{name} {other}"),
            };
            classic_types.insert(name.to_owned(), family);
        }
    }
    for line in openmetrics.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let name = rest.split(' ').next().unwrap_or(rest);
            out.push_str("# TYPE ");
            out.push_str(classic_types.get(name).map_or(rest, String::as_str));
        } else if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, help) = rest.split_once(' ').unwrap_or((rest, ""));
            let classic_name = classic_types
                .get(name)
                .and_then(|r| r.split(' ').next())
                .unwrap_or(name);
            out.push_str("# HELP ");
            out.push_str(classic_name);
            out.push(' ');
            out.push_str(help);
        } else {
            out.push_str(line);
        }
        out.push('\n');
    }
    out
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReloadErrorLabels {
    file: String,
    line: String,
    column: String,
    message: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SettingLabels {
    setting: String,
}

/// The config file: when it was last applied, whether the last reload was refused (and where),
/// and the `[node]` settings that wait for a restart.
fn config_metrics(reg: &mut Registry, c: &ConfigView) {
    let when: Gauge<f64, std::sync::atomic::AtomicU64> = Gauge::default();
    when.set(
        c.last_good
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map_or(0.0, |d| d.as_secs_f64()),
    );
    reg.register(
        "config_last_reload_success_timestamp_seconds",
        "When the config file was last applied or found in force (start, SIGHUP, change); 0 before",
        when,
    );
    let ok: Gauge = Gauge::default();
    ok.set(i64::from(c.last_error.is_none()));
    reg.register(
        "config_last_reload_successful",
        "0 while the last reload of the config file was refused, 1 otherwise",
        ok,
    );
    let error = Family::<ReloadErrorLabels, Gauge>::default();
    if let Some(e) = &c.last_error {
        let (file, line, column) = e.location.as_ref().map_or_else(
            || (c.path.display().to_string(), String::new(), String::new()),
            |l| {
                (
                    l.file.display().to_string(),
                    l.line.to_string(),
                    l.column.to_string(),
                )
            },
        );
        error
            .get_or_create(&ReloadErrorLabels {
                file,
                line,
                column,
                message: e.message.clone(),
            })
            .set(1);
    }
    reg.register(
        "config_last_reload_error_info",
        "1 for the refused reload of the config file, with where and why, while it stands",
        error,
    );
    let pending = Family::<SettingLabels, Gauge>::default();
    for change in &c.pending_restart {
        pending
            .get_or_create(&SettingLabels {
                setting: change.setting.clone(),
            })
            .set(1);
    }
    reg.register(
        "config_pending_restart",
        "1 for each [node] setting asked for that waits for a daemon restart",
        pending,
    );
    let attempt: Gauge<f64, std::sync::atomic::AtomicU64> = Gauge::default();
    attempt.set(
        c.last_attempt
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map_or(0.0, |d| d.as_secs_f64()),
    );
    reg.register(
        "config_last_reload_timestamp_seconds",
        "When the config file was last read to be applied (start, SIGHUP, change), whatever came of it; 0 before",
        attempt,
    );
    let reloads = Family::<ResultLabels, Counter>::default();
    for (result, n) in [("ok", c.reloads_ok), ("failed", c.reloads_failed)] {
        reloads
            .get_or_create(&ResultLabels {
                result: result.to_owned(),
            })
            .inc_by(n);
    }
    reg.register(
        "config_reloads",
        "Readings of the config file to apply it (start, SIGHUP, change), by result: ok (applied or found in force) or failed (refused)",
        reloads,
    );
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabels {
    result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct GateLabels {
    service: String,
    result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StepLabels {
    service: String,
    step: String,
    outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RefusedLabels {
    key: String,
    mod_revision: String,
    message: String,
}

fn seconds(t: Option<std::time::SystemTime>) -> f64 {
    t.and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0.0, |d| d.as_secs_f64())
}

/// The etcd source: ready, stale since when, the document in force, a refused one, local
/// changes over it.
fn source_metrics(reg: &mut Registry, s: &crate::control::SourceView) {
    let gauge = |reg: &mut Registry, name: &str, help: &str, v: i64| {
        let g: Gauge = Gauge::default();
        g.set(v);
        reg.register(name, help, g);
    };
    let time = |reg: &mut Registry, name: &str, help: &str, t| {
        let g: Gauge<f64, std::sync::atomic::AtomicU64> = Gauge::default();
        g.set(seconds(t));
        reg.register(name, help, g);
    };
    gauge(
        reg,
        "source_ready",
        "1 once the node synced with etcd since it started (it serves its last local revision before)",
        i64::from(s.ready),
    );
    gauge(
        reg,
        "source_stale",
        "1 while etcd is unreachable (the last applied state stays in force)",
        i64::from(s.stale_since.is_some()),
    );
    time(
        reg,
        "source_stale_since_timestamp_seconds",
        "Since when etcd has been unreachable; 0 while connected",
        s.stale_since,
    );
    time(
        reg,
        "source_last_sync_timestamp_seconds",
        "When the node last listed etcd or reconnected to it; 0 before",
        s.last_sync,
    );
    gauge(
        reg,
        "source_etcd_revision",
        "The etcd revision the node has heard of",
        s.revision,
    );
    gauge(
        reg,
        "source_config_mod_revision",
        "Mod revision of the config document in force; 0 before one applied",
        s.applied.as_ref().map_or(0, |a| a.mod_revision),
    );
    let refused = Family::<RefusedLabels, Gauge>::default();
    if let Some(r) = &s.refused {
        refused
            .get_or_create(&RefusedLabels {
                key: r.key.clone(),
                mod_revision: r.mod_revision.to_string(),
                message: r.message.clone(),
            })
            .set(1);
    }
    reg.register(
        "source_config_refused_info",
        "1 for the config document in etcd the node refused, with why, until a newer one applies",
        refused,
    );
    gauge(
        reg,
        "source_local_changes",
        "Local changes in force over the config document until its next change in etcd",
        i64::try_from(s.local_changes.len()).unwrap_or(i64::MAX),
    );
}

/// Per backend and per group series.
fn backend_metrics(reg: &mut Registry, status: &StatusView) {
    let packets = Family::<BackendLabels, Counter>::default();
    let bytes = Family::<BackendLabels, Counter>::default();
    let new_flows = Family::<BackendLabels, Counter>::default();
    let failed = Family::<BackendLabels, Counter>::default();
    let active = Family::<BackendLabels, Gauge>::default();
    let healthy = Family::<BackendLabels, Gauge>::default();
    let weight = Family::<GroupLabels, Gauge<f64, std::sync::atomic::AtomicU64>>::default();
    for s in &status.services {
        for g in &s.groups {
            weight
                .get_or_create(&GroupLabels {
                    service: s.name.clone(),
                    group: g.name.clone(),
                })
                .set(f64::from(g.weight.basis_points()) / 10_000.0);
            for b in &g.backends {
                let l = BackendLabels {
                    service: s.name.clone(),
                    group: g.name.clone(),
                    backend: b.addr.to_string(),
                };
                packets.get_or_create(&l).inc_by(b.packets);
                bytes.get_or_create(&l).inc_by(b.bytes);
                new_flows.get_or_create(&l).inc_by(b.new_flows);
                failed.get_or_create(&l).inc_by(b.failed_flows);
                active.get_or_create(&l).set(b.active_flows as i64);
                healthy.get_or_create(&l).set(i64::from(b.healthy));
            }
        }
    }
    reg.register(
        "backend_packets",
        "Packets steered to a backend or reverse-NATed from it",
        packets,
    );
    reg.register("backend_bytes", "Bytes of those packets", bytes);
    reg.register("backend_new_flows", "Flows given to a backend", new_flows);
    reg.register(
        "backend_failed_flows",
        "Connection attempts a backend refused (RST answering the SYN) or left unanswered for 3 s",
        failed,
    );
    reg.register(
        "backend_active_flows",
        "Flows of a backend that are not closing, in either flow table, plus socket flows of clients on the node",
        active,
    );
    reg.register("backend_healthy", "1 when a backend passes its health checks (or has none), 0 when it is out of its group's table", healthy);
    reg.register(
        "group_weight_ratio",
        "Weight of a group, 0 to 1 (1 is 100%); groups split new flows in proportion to it",
        weight,
    );
}

/// Per service rollout series.
fn rollout_metrics<N: Effects + Readings>(reg: &mut Registry, ctl: &Controller<N>) {
    let step = Family::<ServiceLabels, Gauge>::default();
    let share = Family::<ServiceLabels, Gauge<f64, std::sync::atomic::AtomicU64>>::default();
    let state = Family::<RolloutLabels, Gauge>::default();
    let durations = Family::<StepLabels, Gauge<f64, std::sync::atomic::AtomicU64>>::default();
    for r in ctl.rollouts() {
        let s = ServiceLabels {
            service: r.service.clone(),
        };
        step.get_or_create(&s)
            .set(i64::try_from(r.step + 1).unwrap_or(i64::MAX));
        share
            .get_or_create(&s)
            .set(f64::from(r.share().basis_points()) / 10_000.0);
        for h in &r.history {
            let outcome = serde_json::to_value(h.outcome)
                .ok()
                .and_then(|v| v.as_str().map(str::to_owned))
                .unwrap_or_default();
            durations
                .get_or_create(&StepLabels {
                    service: r.service.clone(),
                    step: (h.step + 1).to_string(),
                    outcome,
                })
                .set(
                    h.ended
                        .duration_since(h.started)
                        .unwrap_or_default()
                        .as_secs_f64(),
                );
        }
        for phase in ["running", "paused", "completed", "rolled_back", "aborted"] {
            let current = serde_json::to_value(r.phase)
                .ok()
                .and_then(|v| v.as_str().map(str::to_owned));
            state
                .get_or_create(&RolloutLabels {
                    service: r.service.clone(),
                    target: r.plan.to.clone(),
                    state: phase.to_owned(),
                })
                .set(i64::from(current.as_deref() == Some(phase)));
        }
    }
    reg.register(
        "rollout_step",
        "Current step (1-based) of a service's latest rollout",
        step,
    );
    reg.register(
        "rollout_target_share_ratio",
        "Share of new flows the rollout's target group has now, 0 to 1",
        share,
    );
    reg.register(
        "rollout_step_duration_seconds",
        "How long each ended step of a service's latest rollout ran, by how it ended (passed, skipped, breached, aborted)",
        durations,
    );
    let checks = Family::<GateLabels, Counter>::default();
    for ((service, passed), n) in ctl.gate_checks() {
        checks
            .get_or_create(&GateLabels {
                service: service.clone(),
                result: if *passed { "pass" } else { "fail" }.to_owned(),
            })
            .inc_by(*n);
    }
    reg.register(
        "rollout_gate_checks",
        "Checks of a rollout step's extra gates (exec:, http:, prometheus:) since the daemon started, by result",
        checks,
    );
    reg.register(
        "rollout_state",
        "1 for the state a service's latest rollout is in",
        state,
    );
}

/// Reason counters and conntrack use.
fn dataplane_metrics<N: Effects + Readings>(
    reg: &mut Registry,
    ctl: &Controller<N>,
    status: &StatusView,
) -> Result<(), ControlError> {
    let reasons = Family::<ReasonLabels, Counter>::default();
    for (r, n) in ctl.reasons()? {
        let verdict = if r.is_drop() { "drop" } else { "pass" };
        reasons
            .get_or_create(&ReasonLabels {
                reason: r.as_str().to_owned(),
                verdict: verdict.to_owned(),
            })
            .inc_by(n);
    }
    reg.register(
        "packets_not_steered",
        "Packets that left the steering path, by reason and verdict",
        reasons,
    );

    let hooks = Family::<InterfaceLabels, Gauge>::default();
    let targets = Family::<InterfaceLabels, Gauge>::default();
    for i in &status.dataplane.interfaces {
        let labels = InterfaceLabels {
            interface: i.name.clone(),
            kind: i.kind.clone(),
            hook: i.hook.clone(),
            mode: i.mode.clone(),
        };
        hooks.get_or_create(&labels).set(1);
        targets
            .get_or_create(&labels)
            .set(i64::from(i.xdp_redirect_target));
    }
    reg.register(
        "interface_hook",
        "1 for each interface veer is attached to, with the hook and mode that steer it",
        hooks,
    );
    reg.register(
        "interface_xdp_redirect_target",
        "1 where veer_xdp redirects into the interface, 0 where packets routed there go through the kernel",
        targets,
    );

    let entries: Gauge = Gauge::default();
    entries.set(i64::try_from(status.conntrack_entries).unwrap_or(i64::MAX));
    reg.register(
        "conntrack_entries",
        "Entries in the table of confirmed flows (VEER_FLOWS)",
        entries,
    );
    let capacity: Gauge = Gauge::default();
    capacity.set(i64::from(status.conntrack_capacity));
    reg.register(
        "conntrack_capacity",
        "Capacity of the table of confirmed flows (conntrack_max)",
        capacity,
    );
    let new_entries: Gauge = Gauge::default();
    new_entries.set(i64::try_from(status.conntrack_new_entries).unwrap_or(i64::MAX));
    reg.register(
        "conntrack_new_entries",
        "Entries in the table of new flows (VEER_NEWFLOWS: handshakes, mid-flow misses, UDP)",
        new_entries,
    );
    let new_capacity: Gauge = Gauge::default();
    new_capacity.set(i64::from(status.conntrack_new_capacity));
    reg.register(
        "conntrack_new_capacity",
        "Capacity of the table of new flows (conntrack_new_max)",
        new_capacity,
    );
    service_flow_metrics(reg, status);

    Ok(())
}

/// A per-service counter series: name, help, and how to read it from a service's status.
type ServiceSeries = (&'static str, &'static str, fn(&ServiceCounters) -> u64);

/// What new flows and floods cost each service.
fn service_flow_metrics(reg: &mut Registry, status: &StatusView) {
    let families: [ServiceSeries; 4] = [
        (
            "service_new_flows",
            "Entries created in the table of new flows (SYNs, mid-flow misses, UDP flows)",
            |s| s.new_flows,
        ),
        (
            "service_promotions",
            "Flows confirmed and moved into the table of confirmed flows",
            |s| s.promotions,
        ),
        (
            "service_promotions_refused",
            "Confirmed flows the full table of confirmed flows had no room for (each attempt)",
            |s| s.promotions_refused,
        ),
        (
            "service_invalid_tcp",
            "TCP segments with an invalid flag combination (never an entry or a state change)",
            |s| s.invalid_tcp,
        ),
    ];
    for (name, help, value) in families {
        let family = Family::<ServiceLabels, Counter>::default();
        for s in &status.services {
            family
                .get_or_create(&ServiceLabels {
                    service: s.name.clone(),
                })
                .inc_by(value(&s.counters));
        }
        reg.register(name, help, family);
    }
}

/// Serves `GET /metrics` on `listener` until `shutdown` resolves.
/// How long a metrics connection may live (a scrape takes milliseconds).
pub const LIFETIME: std::time::Duration = std::time::Duration::from_secs(30);

static CONNECTION_ERROR: crate::throttle::Throttle =
    crate::throttle::Throttle::new(std::time::Duration::from_secs(10));

/// Serves `GET /metrics` on `listener` until `shutdown` resolves, with at most `max`
/// connections open: beyond them new ones wait in the kernel's backlog, costing no descriptor
/// (the control socket's budget is separate). Headers must arrive within
/// `api::server::HEADER_TIMEOUT` (an idle connection is closed after as long), and a
/// connection lives at most `LIFETIME`.
pub async fn serve(
    listener: tokio::net::TcpListener,
    ctl: Arc<Mutex<Controller>>,
    max: usize,
    shutdown: impl std::future::Future<Output = ()>,
) {
    let slots = Arc::new(tokio::sync::Semaphore::new(max));
    let accept = || async { listener.accept().await.map(|(s, _)| s) };
    crate::api::server::accept_until("metrics", Some(slots), accept, shutdown, |stream, permit| {
        let ctl = Arc::clone(&ctl);
        tokio::spawn(async move {
            let _permit = permit;
            let service = service_fn(move |req: Request<Incoming>| {
                let ctl = Arc::clone(&ctl);
                async move { Ok::<_, std::convert::Infallible>(respond(&req, &ctl)) }
            });
            let conn = http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(crate::api::server::HEADER_TIMEOUT)
                .serve_connection(TokioIo::new(stream), service);
            match tokio::time::timeout(LIFETIME, conn).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    crate::throttled!(CONNECTION_ERROR, debug, error = %e, "metrics connection ended with an error");
                }
                Err(_) => {
                    crate::throttled!(CONNECTION_ERROR, debug, "metrics connection closed: open too long");
                }
            }
        });
    })
    .await;
}

fn respond(req: &Request<Incoming>, ctl: &Mutex<Controller>) -> Response<Full<bytes::Bytes>> {
    let format = negotiate(
        req.headers()
            .get(hyper::header::ACCEPT)
            .and_then(|v| v.to_str().ok()),
    );
    let (status, body, content_type) = if req.uri().path() == "/metrics" {
        match render(
            &ctl.lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        ) {
            Ok(text) if format == Format::OpenMetrics => {
                (StatusCode::OK, text, format.content_type())
            }
            Ok(text) => (StatusCode::OK, classic(&text), format.content_type()),
            Err(e) => (
                StatusCode::INTERNAL_SERVER_ERROR,
                chain(&e),
                "text/plain; charset=utf-8",
            ),
        }
    } else {
        (
            StatusCode::NOT_FOUND,
            "veer serves /metrics\n".to_owned(),
            "text/plain; charset=utf-8",
        )
    };
    let mut r = Response::new(Full::new(bytes::Bytes::from(body)));
    *r.status_mut() = status;
    r.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static(content_type),
    );
    r
}

/// Binds the metrics listener.
pub async fn bind(addr: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(addr).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn openmetrics_only_when_asked_for() {
        assert_eq!(negotiate(None), Format::Classic);
        assert_eq!(negotiate(Some("*/*")), Format::Classic);
        assert_eq!(
            negotiate(Some("text/plain;version=0.0.4;q=0.3,*/*;q=0.2")),
            Format::Classic
        );
        // What Prometheus sends when it prefers OpenMetrics.
        assert_eq!(
            negotiate(Some(
                "application/openmetrics-text;version=1.0.0;q=0.5,text/plain;version=0.0.4;q=0.4,*/*;q=0.1"
            )),
            Format::OpenMetrics
        );
        assert_eq!(
            negotiate(Some("application/openmetrics-text; q=0, text/plain")),
            Format::Classic
        );
    }

    #[test]
    fn the_classic_format_names_counters_and_infos_as_their_samples() {
        let om = "# HELP veer_build veer build.\n# TYPE veer_build info\nveer_build_info{version=\"1\"} 1\n\
                  # HELP veer_backend_packets Packets.\n# TYPE veer_backend_packets counter\n\
                  veer_backend_packets_total{service=\"web\"} 3\n# HELP veer_revision Live revision.\n\
                  # TYPE veer_revision gauge\nveer_revision 1\n# EOF\n";
        assert_eq!(
            classic(om),
            "# HELP veer_build_info veer build.\n# TYPE veer_build_info gauge\nveer_build_info{version=\"1\"} 1\n\
             # HELP veer_backend_packets_total Packets.\n# TYPE veer_backend_packets_total counter\n\
             veer_backend_packets_total{service=\"web\"} 3\n# HELP veer_revision Live revision.\n\
             # TYPE veer_revision gauge\nveer_revision 1\n"
        );
    }
}
