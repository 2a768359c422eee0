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

use veer_common::counters::ServiceCounters;

mod signals;

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
    backend_metrics(&mut reg, &status);
    rollout_metrics(&mut reg, ctl);
    signals::register(&mut reg, &ctl.backend_signals()?);
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
        "Connection attempts a backend refused (RST answering the SYN) or left unanswered for 3 s",
        failed,
    );
    reg.register(
        "backend_active_flows",
        "Flows of a backend that are not closing, in either flow table, plus socket flows of clients on the node",
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
