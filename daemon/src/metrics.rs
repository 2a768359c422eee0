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
use veer_common::counters::Reason;

use crate::control::Controller;

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
pub fn render(ctl: &Controller) -> Result<String, crate::control::ControlError> {
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

    backend_metrics(&mut reg, &status);
    rollout_metrics(&mut reg, ctl);
    dataplane_metrics(&mut reg, ctl, &status)?;

    let mut out = String::new();
    // Infallible: writing into a String cannot fail.
    encode(&mut out, &reg).unwrap_or_else(|_| unreachable!("fmt::Write to a String"));
    Ok(out)
}

/// Per backend and per group series.
fn backend_metrics(reg: &mut Registry, status: &crate::api::protocol::Status) {
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
                    backend: b.address.to_string(),
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
fn rollout_metrics(reg: &mut Registry, ctl: &Controller) {
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
fn dataplane_metrics(
    reg: &mut Registry,
    ctl: &Controller,
    status: &crate::api::protocol::Status,
) -> Result<(), crate::control::ControlError> {
    let reasons = Family::<ReasonLabels, Counter>::default();
    for r in Reason::ALL {
        let n = ctl.dataplane().maps().reason_count(r)?;
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
    entries.set(i64::try_from(status.conntrack.entries).unwrap_or(i64::MAX));
    reg.register("conntrack_entries", "Entries in the conntrack map", entries);
    let capacity: Gauge = Gauge::default();
    capacity.set(i64::from(status.conntrack.capacity));
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
            Err(e) => (
                StatusCode::INTERNAL_SERVER_ERROR,
                crate::cli::exit::chain(&e),
            ),
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
