//! Request -> controller call -> response. Nothing else lives here.

use std::{net::SocketAddr, path::Path, sync::Mutex, time::SystemTime};

use http_body_util::{BodyExt as _, Full};
use hyper::{Method, Request, Response, StatusCode, body::Incoming};
use serde::{Serialize, de::DeserializeOwned};

use super::protocol::{
    ApplyRequest, ApplyResponse, DrainRequest, ErrorBody, ErrorDetail, FlowsResponse,
    HistoryResponse, PinRequest, RollbackRequest, RolloutStartRequest, ShiftRequest, UnpinRequest,
    VersionResponse,
};
use crate::{
    control::{Applied, ControlError, Controller},
    error::chain,
    state::Origin,
};

/// Largest request body accepted (a config file).
const MAX_BODY: usize = 4 << 20;
/// Most flows one request may list.
const MAX_FLOWS: usize = 10_000;

type Body = Full<bytes::Bytes>;

pub(super) fn json<T: Serialize>(status: StatusCode, value: &T) -> Response<Body> {
    let bytes = serde_json::to_vec_pretty(value).unwrap_or_else(|e| {
        format!("{{\"error\":{{\"kind\":\"encode\",\"message\":\"{e}\"}}}}").into_bytes()
    });
    let mut r = Response::new(Full::new(bytes::Bytes::from(bytes)));
    *r.status_mut() = status;
    r.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    r
}

pub(super) fn error(status: StatusCode, kind: &str, message: String) -> Response<Body> {
    json(
        status,
        &ErrorBody {
            error: ErrorDetail {
                kind: kind.to_owned(),
                message,
            },
        },
    )
}

fn control_error(e: &ControlError) -> Response<Body> {
    let (status, kind) = match e {
        ControlError::UnknownService { .. }
        | ControlError::UnknownGroup { .. }
        | ControlError::UnknownRevision { .. }
        | ControlError::UnknownPin { .. }
        | ControlError::ServiceNotAtRevision { .. }
        | ControlError::NoRollout { .. } => (StatusCode::NOT_FOUND, "not_found"),
        ControlError::BadRequest { .. }
        | ControlError::NothingToRollBack { .. }
        | ControlError::RolloutPlan(_)
        | ControlError::Sync(crate::dataplane::sync::SyncError::Plan(_)) => {
            (StatusCode::BAD_REQUEST, "bad_request")
        }
        ControlError::Config(_) => (StatusCode::BAD_REQUEST, "invalid_config"),
        ControlError::DrainLastGroup { .. } | ControlError::RolloutInProgress { .. } => {
            (StatusCode::CONFLICT, "conflict")
        }
        ControlError::Sync(_) | ControlError::Dataplane(_) => {
            (StatusCode::INTERNAL_SERVER_ERROR, "dataplane")
        }
        ControlError::Store(_) | ControlError::Start(_) => {
            (StatusCode::INTERNAL_SERVER_ERROR, "store")
        }
    };
    error(status, kind, chain(e))
}

fn applied(r: Result<Applied, ControlError>) -> Response<Body> {
    match r {
        Ok(a) => json(
            StatusCode::OK,
            &ApplyResponse {
                revision: a.revision,
                changed: a.changed,
            },
        ),
        Err(e) => control_error(&e),
    }
}

async fn body<T: DeserializeOwned>(req: Request<Incoming>) -> Result<T, Response<Body>> {
    let limited = http_body_util::Limited::new(req.into_body(), MAX_BODY);
    let bytes = limited
        .collect()
        .await
        .map_err(|e| {
            error(
                StatusCode::BAD_REQUEST,
                "bad_request",
                format!("reading the request body: {e}"),
            )
        })?
        .to_bytes();
    serde_json::from_slice(&bytes).map_err(|e| {
        error(
            StatusCode::BAD_REQUEST,
            "bad_request",
            format!("request body: {e}"),
        )
    })
}

/// Whether config text declares a rollout with an `exec:` gate (invalid text: no, the apply
/// itself will refuse it with the exact error).
fn declares_exec_gates(text: &str) -> bool {
    crate::config::parse(Path::new("-"), text).is_ok_and(|c| {
        c.state
            .services
            .iter()
            .filter_map(|s| s.rollout.as_ref())
            .any(|p| {
                p.gates
                    .iter()
                    .any(|g| matches!(g, crate::model::gate::Gate::Exec(_)))
            })
    })
}

/// `key=value&...` of a query string (values percent-decoded).
fn query(req: &Request<Incoming>) -> Vec<(String, String)> {
    req.uri()
        .query()
        .unwrap_or("")
        .split('&')
        .filter(|kv| !kv.is_empty())
        .map(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            (k.to_owned(), percent_decode(v))
        })
        .collect()
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match (b[i], b.get(i + 1..i + 3)) {
            (b'%', Some(hex))
                if std::str::from_utf8(hex)
                    .ok()
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                    .is_some() =>
            {
                out.push(
                    u8::from_str_radix(std::str::from_utf8(hex).unwrap_or("00"), 16).unwrap_or(0),
                );
                i += 3;
            }
            (b'+', _) => {
                out.push(b' ');
                i += 1;
            }
            (c, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn param<'a>(q: &'a [(String, String)], key: &str) -> Option<&'a str> {
    q.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
}

/// `GET /v1/rollouts/SERVICE`, `POST /v1/rollouts/SERVICE/{pause,resume,abort}`.
fn rollout_route(method: &Method, rest: &str, ctl: &Mutex<Controller>) -> Response<Body> {
    let mut ctl = ctl
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let (service, action) = rest.split_once('/').unwrap_or((rest, ""));
    let service = percent_decode(service);
    match (method, action) {
        (&Method::GET, "") => match ctl.rollout_status(&service, SystemTime::now()) {
            Ok(s) => json(StatusCode::OK, &s),
            Err(e) => control_error(&e),
        },
        (&Method::POST, "pause") => applied(ctl.rollout_pause(&service)),
        (&Method::POST, "resume") => applied(ctl.rollout_resume(&service, SystemTime::now())),
        (&Method::POST, "abort") => applied(ctl.rollout_abort(&service)),
        (m, a) => error(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no endpoint {m} /v1/rollouts/{service}/{a}"),
        ),
    }
}

/// `GET /v1/flows?service=&backend=&limit=`.
fn flows(q: &[(String, String)], ctl: &Mutex<Controller>) -> Response<Body> {
    let backend = match param(q, "backend")
        .map(str::parse::<SocketAddr>)
        .transpose()
    {
        Ok(b) => b,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                "bad_request",
                format!("backend: {e} (want ip:port or [ipv6]:port)"),
            );
        }
    };
    let limit = match param(q, "limit").map(str::parse::<usize>).transpose() {
        Ok(l) => l.unwrap_or(100).min(MAX_FLOWS),
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                "bad_request",
                format!("limit: {e}"),
            );
        }
    };
    match ctl
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .flows(param(q, "service"), backend, limit)
    {
        Ok((flows, matched)) => json(StatusCode::OK, &FlowsResponse { flows, matched }),
        Err(e) => control_error(&e),
    }
}

/// Whether a rollout plan runs commands.
fn runs_commands(plan: &crate::model::Plan) -> bool {
    plan.gates
        .iter()
        .any(|g| matches!(g, crate::model::gate::Gate::Exec(_)))
}

/// Routes one request.
///
/// `root` says whether the peer is root: group members (`--socket-group`) may operate veer, but
/// not make the daemon run commands (`exec:` gates run as the daemon's user).
pub(super) async fn handle(
    req: Request<Incoming>,
    ctl: &Mutex<Controller>,
    root: bool,
) -> Response<Body> {
    let path = req.uri().path().to_owned();
    let method = req.method().clone();
    let q = query(&req);
    let lock = || {
        ctl.lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    };
    match (method, path.as_str()) {
        (Method::GET, "/v1/status") => match lock().status(param(&q, "service")) {
            Ok(s) => json(StatusCode::OK, &s),
            Err(e) => control_error(&e),
        },
        (Method::GET, "/v1/history") => json(
            StatusCode::OK,
            &HistoryResponse {
                revisions: lock().history(param(&q, "service")),
            },
        ),
        (Method::GET, "/v1/version") => json(
            StatusCode::OK,
            &VersionResponse {
                version: env!("CARGO_PKG_VERSION").to_owned(),
            },
        ),
        (Method::GET, "/v1/flows") => flows(&q, ctl),
        (Method::POST, "/v1/apply") => match body::<ApplyRequest>(req).await {
            Ok(r) if !root && declares_exec_gates(&r.config) => error(
                StatusCode::FORBIDDEN,
                "forbidden",
                "only root may apply a config whose rollouts have exec: gates (they run commands as the daemon's user)".to_owned(),
            ),
            Ok(r) => {
                let path = Path::new(&r.path).to_owned();
                applied(lock().apply_config(&r.config, &path, Origin::Apply { path: path.clone() }))
            }
            Err(resp) => resp,
        },
        (Method::POST, "/v1/shift") => match body::<ShiftRequest>(req).await {
            Ok(r) => {
                let weights: Vec<_> = r.weights.into_iter().map(|w| (w.group, w.weight)).collect();
                applied(lock().shift(&r.services, &weights))
            }
            Err(resp) => resp,
        },
        (Method::POST, "/v1/drain") => match body::<DrainRequest>(req).await {
            Ok(r) => applied(lock().drain(&r.service, &r.group, r.force)),
            Err(resp) => resp,
        },
        (Method::POST, "/v1/pin") => match body::<PinRequest>(req).await {
            Ok(r) => applied(lock().pin(&r.service, &r.prefix, &r.group)),
            Err(resp) => resp,
        },
        (Method::POST, "/v1/unpin") => match body::<UnpinRequest>(req).await {
            Ok(r) => applied(lock().unpin(&r.service, &r.prefix)),
            Err(resp) => resp,
        },
        (Method::POST, "/v1/rollback") => match body::<RollbackRequest>(req).await {
            Ok(r) => applied(lock().rollback(r.service.as_deref(), r.to)),
            Err(resp) => resp,
        },
        (Method::POST, "/v1/rollouts") => match body::<RolloutStartRequest>(req).await {
            Ok(r) if !root && runs_commands(&r.plan) => error(
                StatusCode::FORBIDDEN,
                "forbidden",
                "only root may start a rollout with exec: gates (they run commands as the daemon's user)".to_owned(),
            ),
            Ok(r) => applied(lock().rollout_start(&r.service, r.plan, SystemTime::now())),
            Err(resp) => resp,
        },
        (m, p) if p.starts_with("/v1/rollouts/") => {
            rollout_route(&m, &p["/v1/rollouts/".len()..], ctl)
        }
        (m, p) => error(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no endpoint {m} {p} (see the API table in `veer --help`)"),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::percent_decode;

    #[test]
    fn queries_are_percent_decoded() {
        assert_eq!(
            percent_decode("%5B2001%3Adb8%3A%3A11%5D%3A80"),
            "[2001:db8::11]:80"
        );
        assert_eq!(percent_decode("a+b%zz"), "a b%zz");
    }
}
