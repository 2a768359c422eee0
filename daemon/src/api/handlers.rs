//! Request -> controller call -> response. Nothing else lives here.

use std::{net::SocketAddr, path::Path, sync::Mutex, time::SystemTime};

use http_body_util::{BodyExt as _, Full};
use hyper::{Method, Request, Response, StatusCode, body::Incoming};
use serde::{Serialize, de::DeserializeOwned};

use super::protocol::{
    ApplyRequest, ApplyResponse, DrainRequest, ErrorBody, ErrorDetail, FlowsResponse, HistoryEntry,
    HistoryResponse, PinRequest, RevisionInfo, RollbackRequest, RolloutStartRequest, RolloutStatus,
    ShiftRequest, Status, UnpinRequest, VersionResponse,
};
use crate::{
    config,
    control::{self, Answer, ControlError, Controller},
    dataplane::sync::SyncError,
    error::chain,
    model::{Plan, gate::Gate},
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
        | ControlError::Invalid(_)
        | ControlError::Sync(SyncError::Plan(_)) => (StatusCode::BAD_REQUEST, "bad_request"),
        ControlError::Config(_) => (StatusCode::BAD_REQUEST, "invalid_config"),
        ControlError::DrainLastGroup { .. }
        | ControlError::RolloutInProgress { .. }
        | ControlError::RolloutPaused { .. } => (StatusCode::CONFLICT, "conflict"),
        ControlError::Sync(_) | ControlError::Dataplane(_) => {
            (StatusCode::INTERNAL_SERVER_ERROR, "dataplane")
        }
        ControlError::Store(_) | ControlError::ConfigFile(_) | ControlError::Lock(_) => {
            (StatusCode::INTERNAL_SERVER_ERROR, "store")
        }
    };
    error(status, kind, chain(e))
}

fn applied(r: Result<Answer, ControlError>) -> Response<Body> {
    match r {
        Ok(a) => json(StatusCode::OK, &ApplyResponse::from(&a)),
        Err(e) => control_error(&e),
    }
}

/// Carries `request` out now.
fn execute(ctl: &Mutex<Controller>, request: &control::Request) -> Response<Body> {
    applied(lock(ctl).execute(request, SystemTime::now()))
}

fn lock(ctl: &Mutex<Controller>) -> std::sync::MutexGuard<'_, Controller> {
    ctl.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
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
    let (service, action) = rest.split_once('/').unwrap_or((rest, ""));
    let service = percent_decode(service);
    match (method, action) {
        (&Method::GET, "") => match lock(ctl).rollout_status(&service, SystemTime::now()) {
            Ok(v) => json(StatusCode::OK, &RolloutStatus::from(&v)),
            Err(e) => control_error(&e),
        },
        (&Method::POST, "pause") => execute(ctl, &control::Request::RolloutPause { service }),
        (&Method::POST, "resume") => execute(ctl, &control::Request::RolloutResume { service }),
        (&Method::POST, "abort") => execute(ctl, &control::Request::RolloutAbort { service }),
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
    match lock(ctl).flows(param(q, "service"), backend, limit) {
        Ok(f) => json(StatusCode::OK, &FlowsResponse::from(&f)),
        Err(e) => control_error(&e),
    }
}

/// Whether a rollout plan runs commands.
fn runs_commands(plan: &Plan) -> bool {
    plan.gates.iter().any(|g| matches!(g, Gate::Exec(_)))
}

/// `POST /v1/apply`: the text is parsed here (an invalid file answers `invalid_config` with its
/// location), then applied like any other source's desired state.
fn apply(r: &ApplyRequest, ctl: &Mutex<Controller>, root: bool) -> Response<Body> {
    let path = Path::new(&r.path).to_owned();
    let cfg = match config::parse(&path, &r.config) {
        Ok(c) => c,
        Err(e) => return control_error(&ControlError::Config(e)),
    };
    let runs = cfg
        .state
        .services
        .iter()
        .filter_map(|s| s.rollout.as_ref())
        .any(runs_commands);
    if runs && !root {
        return error(
            StatusCode::FORBIDDEN,
            "forbidden",
            "only root may apply a config whose rollouts have exec: gates (they run commands as the daemon's user)".to_owned(),
        );
    }
    let request = control::Request::Apply {
        node: cfg.node,
        state: cfg.state,
        origin: Origin::Apply { path },
        mark: None,
    };
    applied(lock(ctl).apply(&request, SystemTime::now()))
}

/// `POST` of a change: decodes the body into a control request and carries it out.
async fn change(
    path: &str,
    req: Request<Incoming>,
    ctl: &Mutex<Controller>,
    root: bool,
) -> Response<Body> {
    match path {
        "/v1/apply" => match body::<ApplyRequest>(req).await {
            Ok(r) => apply(&r, ctl, root),
            Err(resp) => resp,
        },
        "/v1/shift" => match body::<ShiftRequest>(req).await {
            Ok(r) => execute(
                ctl,
                &control::Request::Shift {
                    services: r.services,
                    weights: r.weights.into_iter().map(|w| (w.group, w.weight)).collect(),
                },
            ),
            Err(resp) => resp,
        },
        "/v1/drain" => match body::<DrainRequest>(req).await {
            Ok(r) => execute(
                ctl,
                &control::Request::Drain {
                    service: r.service,
                    group: r.group,
                    force: r.force,
                    end: r.end,
                },
            ),
            Err(resp) => resp,
        },
        "/v1/pin" => match body::<PinRequest>(req).await {
            Ok(r) => execute(
                ctl,
                &control::Request::Pin {
                    service: r.service,
                    prefix: r.prefix,
                    group: r.group,
                },
            ),
            Err(resp) => resp,
        },
        "/v1/unpin" => match body::<UnpinRequest>(req).await {
            Ok(r) => execute(
                ctl,
                &control::Request::Unpin {
                    service: r.service,
                    prefix: r.prefix,
                },
            ),
            Err(resp) => resp,
        },
        "/v1/rollback" => match body::<RollbackRequest>(req).await {
            Ok(r) => execute(
                ctl,
                &control::Request::Rollback {
                    service: r.service,
                    to: r.to,
                },
            ),
            Err(resp) => resp,
        },
        "/v1/rollouts" => match body::<RolloutStartRequest>(req).await {
            Ok(r) if !root && runs_commands(&r.plan) => error(
                StatusCode::FORBIDDEN,
                "forbidden",
                "only root may start a rollout with exec: gates (they run commands as the daemon's user)".to_owned(),
            ),
            Ok(r) => execute(
                ctl,
                &control::Request::RolloutStart {
                    service: r.service,
                    plan: r.plan,
                },
            ),
            Err(resp) => resp,
        },
        p => error(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no endpoint POST {p} (see the API table in `veer --help`)"),
        ),
    }
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
    match (method, path.as_str()) {
        (Method::GET, "/v1/status") => match lock(ctl).status(param(&q, "service")) {
            Ok(s) => json(StatusCode::OK, &Status::from(&s)),
            Err(e) => control_error(&e),
        },
        (Method::GET, "/v1/history") => json(
            StatusCode::OK,
            &HistoryResponse {
                revisions: lock(ctl)
                    .history(param(&q, "service"))
                    .iter()
                    .map(|r| HistoryEntry {
                        revision: RevisionInfo::from(r),
                    })
                    .collect(),
            },
        ),
        (Method::GET, "/v1/version") => json(
            StatusCode::OK,
            &VersionResponse {
                version: env!("CARGO_PKG_VERSION").to_owned(),
            },
        ),
        (Method::GET, "/v1/flows") => flows(&q, ctl),
        (Method::POST, p) if !p.starts_with("/v1/rollouts/") => change(p, req, ctl, root).await,
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
