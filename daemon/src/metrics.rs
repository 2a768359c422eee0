//! Prometheus metrics (`veer_` prefix), encoded by `prometheus-client` at each scrape from the
//! maps and the live revision, and served over HTTP on a loopback address by default.

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

use crate::{
    control::{
        ControlError, Controller, Effects, Readings,
        views::{ConfigView, StatusView},
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
struct ReasonLabels {
    reason: String,
    verdict: String,
}

/// The text exposition of every metric now.
pub fn render<N: Effects + Readings>(ctl: &Controller<N>) -> Result<String, ControlError> {
    let status = ctl.status(None)?;
    let mut reg = Registry::with_prefix("veer");
    reg.register(
        "build",
        "veer build",
        Info::new(vec![("version", env!("CARGO_PKG_VERSION"))]),
    );
    let revision: Gauge = Gauge::default();
    revision.set(status.revision.as_ref().map_or(0, |r| r.number as i64));
    reg.register("revision", "Live revision number", revision);

    config_metrics(&mut reg, &status.config);
    if let Some(source) = &status.source {
        source_metrics(&mut reg, source);
    }
    backend_metrics(&mut reg, &status);
    rollout_metrics(&mut reg, ctl);
    dataplane_metrics(&mut reg, ctl, &status)?;

    let mut out = String::new();
    // Infallible: writing into a String cannot fail.
    encode(&mut out, &reg).unwrap_or_else(|_| unreachable!("fmt::Write to a String"));
    Ok(out)
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
                .set(f64::from(g.weight.basis_points()) / 100.0);
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
        "Connection attempts a backend refused (RST answering the SYN)",
        failed,
    );
    reg.register(
        "backend_active_flows",
        "Conntrack entries of a backend in SYN, established or UDP state",
        active,
    );
    reg.register("backend_healthy", "1 when a backend passes its health checks (or has none), 0 when it is out of its group's table", healthy);
    reg.register("group_weight_percent", "Weight of a group", weight);
}

/// Per service rollout series.
fn rollout_metrics<N: Effects + Readings>(reg: &mut Registry, ctl: &Controller<N>) {
    let step = Family::<ServiceLabels, Gauge>::default();
    let share = Family::<ServiceLabels, Gauge<f64, std::sync::atomic::AtomicU64>>::default();
    let state = Family::<RolloutLabels, Gauge>::default();
    for r in ctl.rollouts() {
        let s = ServiceLabels {
            service: r.service.clone(),
        };
        step.get_or_create(&s)
            .set(i64::try_from(r.step + 1).unwrap_or(i64::MAX));
        share
            .get_or_create(&s)
            .set(f64::from(r.share().basis_points()) / 100.0);
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
        "rollout_target_share_percent",
        "Share of new flows the rollout's target group has now",
        share,
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

    let entries: Gauge = Gauge::default();
    entries.set(i64::try_from(status.conntrack_entries).unwrap_or(i64::MAX));
    reg.register("conntrack_entries", "Entries in the conntrack map", entries);
    let capacity: Gauge = Gauge::default();
    capacity.set(i64::from(status.conntrack_capacity));
    reg.register(
        "conntrack_capacity",
        "Capacity of the conntrack map",
        capacity,
    );

    Ok(())
}

/// Serves `GET /metrics` on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: tokio::net::TcpListener,
    ctl: Arc<Mutex<Controller>>,
    shutdown: impl std::future::Future<Output = ()>,
) {
    let accept = || async { listener.accept().await.map(|(s, _)| s) };
    crate::api::server::accept_until("metrics", accept, shutdown, |stream| {
        let ctl = Arc::clone(&ctl);
        tokio::spawn(async move {
            let service = service_fn(move |req: Request<Incoming>| {
                let ctl = Arc::clone(&ctl);
                async move { Ok::<_, std::convert::Infallible>(respond(&req, &ctl)) }
            });
            if let Err(e) = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await
            {
                tracing::debug!(error = %e, "metrics connection ended with an error");
            }
        });
    })
    .await;
}

fn respond(req: &Request<Incoming>, ctl: &Mutex<Controller>) -> Response<Full<bytes::Bytes>> {
    let (status, body) = if req.uri().path() == "/metrics" {
        match render(
            &ctl.lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        ) {
            Ok(text) => (StatusCode::OK, text),
            Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, chain(&e)),
        }
    } else {
        (StatusCode::NOT_FOUND, "veer serves /metrics\n".to_owned())
    };
    let mut r = Response::new(Full::new(bytes::Bytes::from(body)));
    *r.status_mut() = status;
    r.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static(
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        ),
    );
    r
}

/// Binds the metrics listener.
pub async fn bind(addr: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(addr).await
}
