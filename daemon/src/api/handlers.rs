//! Request -> controller call -> response. Nothing else lives here.

use std::{net::SocketAddr, path::Path, sync::Mutex, time::SystemTime};

use http_body_util::{BodyExt as _, Full};
use hyper::{Method, Request, Response, StatusCode, body::Incoming};
use serde::{Serialize, de::DeserializeOwned};

use super::protocol::{
    ApplyRequest, ApplyResponse, ChangeOptions, DrainRequest, DryRunResponse, ErrorBody,
    ErrorDetail, FlowsResponse, HistoryEntry, HistoryResponse, PinRequest, RevisionInfo,
    RollbackRequest, RolloutActionRequest, RolloutStartRequest, RolloutStatus, ShiftRequest,
    Status, UnpinRequest, VersionResponse,
};
use crate::{
    config,
    control::{self, Answer, ControlError, Controller},
    dataplane::sync::SyncError,
    error::chain,
    model::{Plan, gate::Gate},
    state::{Audit, Author, MAX_REASON, Origin},
};

/// Who is on the other end of a connection, as `SO_PEERCRED` said.
#[derive(Clone, Copy, Debug)]
pub(super) struct Peer {
    /// The peer's user id (none: the kernel did not say; such a peer is refused before).
    pub(super) uid: Option<u32>,
}

impl Peer {
    /// Whether the peer is root: group members (`--socket-group`) may operate veer, but not
    /// make the daemon run commands (`exec:` gates run as the daemon's user).
    fn is_root(self) -> bool {
        self.uid == Some(0)
    }

    /// What a change by this peer records: its uid and user name, and its reason.
    fn audit(self, options: &ChangeOptions) -> Result<Audit, Response<Body>> {
        if let Some(reason) = &options.reason
            && (reason.len() > MAX_REASON || reason.chars().any(char::is_control))
        {
            return Err(error(
                StatusCode::BAD_REQUEST,
                "bad_request",
                format!(
                    "reason: one line of at most {MAX_REASON} bytes, without control characters"
                ),
            ));
        }
        Ok(Audit {
            author: self.uid.map_or(Author::Unknown, Author::user),
            reason: options.reason.clone(),
        })
    }
}

/// Largest request body accepted (a config file).
const MAX_BODY: usize = 4 << 20;
/// How long a client has to send a control request's body (its headers: `server`).
pub(super) const BODY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);
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
    error_with(status, kind, message, serde_json::Map::new())
}

fn error_with(
    status: StatusCode,
    kind: &str,
    message: String,
    details: serde_json::Map<String, serde_json::Value>,
) -> Response<Body> {
    json(
        status,
        &ErrorBody {
            error: ErrorDetail {
                kind: kind.to_owned(),
                message,
                details,
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
        ControlError::Config(_) | ControlError::ServicesInLocalFile { .. } => {
            (StatusCode::BAD_REQUEST, "invalid_config")
        }
        ControlError::DrainLastGroup { .. }
        | ControlError::ShiftToNothing { .. }
        | ControlError::FromEtcd
        | ControlError::RolloutInProgress { .. }
        | ControlError::RolloutPaused { .. }
        | ControlError::NothingToRetry { .. } => (StatusCode::CONFLICT, "conflict"),
        ControlError::Held { .. } => (StatusCode::CONFLICT, "held"),
        ControlError::Sync(_) | ControlError::Dataplane(_) => {
            (StatusCode::INTERNAL_SERVER_ERROR, "dataplane")
        }
        ControlError::Store(_) | ControlError::ConfigFile(_) | ControlError::Lock(_) => {
            (StatusCode::INTERNAL_SERVER_ERROR, "store")
        }
    };
    let mut details = serde_json::Map::new();
    if let ControlError::Config(errors) = e {
        details.insert("diagnostics".to_owned(), errors.to_json());
    }
    error_with(status, kind, chain(e), details)
}

fn applied(r: Result<Answer, ControlError>) -> Response<Body> {
    match r {
        Ok(a) => json(StatusCode::OK, &ApplyResponse::from(&a)),
        Err(e) => control_error(&e),
    }
}

/// Carries `request` out now for `peer`, or with `dry_run` answers what it would do.
fn execute(
    ctl: &Mutex<Controller>,
    request: &control::Request,
    options: &ChangeOptions,
    peer: Peer,
) -> Response<Body> {
    let audit = match peer.audit(options) {
        Ok(a) => a,
        Err(resp) => return resp,
    };
    let now = SystemTime::now();
    if options.dry_run {
        return match lock(ctl).preview(request, now) {
            Ok(p) => json(StatusCode::OK, &DryRunResponse::from(&p)),
            Err(e) => control_error(&e),
        };
    }
    let mut ctl = lock(ctl);
    if matches!(request, control::Request::Apply { .. }) {
        applied(ctl.apply_by(request, &audit, now))
    } else {
        applied(ctl.execute_by(request, &audit, now))
    }
}

fn lock(ctl: &Mutex<Controller>) -> std::sync::MutexGuard<'_, Controller> {
    ctl.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The body as `T`, an empty body being `T::default()` (actions that take no argument).
async fn body_or_empty<T: DeserializeOwned + Default>(
    req: Request<Incoming>,
) -> Result<T, Response<Body>> {
    let bytes = read_body(req).await?;
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    decode(&bytes)
}

async fn body<T: DeserializeOwned>(req: Request<Incoming>) -> Result<T, Response<Body>> {
    decode(&read_body(req).await?)
}

fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, Response<Body>> {
    serde_json::from_slice(bytes).map_err(|e| {
        error(
            StatusCode::BAD_REQUEST,
            "bad_request",
            format!("request body: {e}"),
        )
    })
}

async fn read_body(req: Request<Incoming>) -> Result<bytes::Bytes, Response<Body>> {
    let limited = http_body_util::Limited::new(req.into_body(), MAX_BODY);
    let collected = tokio::time::timeout(BODY_TIMEOUT, limited.collect())
        .await
        .map_err(|_| {
            error(
                StatusCode::REQUEST_TIMEOUT,
                "timeout",
                format!(
                    "the request body did not arrive within {}s",
                    BODY_TIMEOUT.as_secs()
                ),
            )
        })?;
    let bytes = collected
        .map_err(|e| {
            error(
                StatusCode::BAD_REQUEST,
                "bad_request",
                format!("reading the request body: {e}"),
            )
        })?
        .to_bytes();
    Ok(bytes)
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

/// `GET /v1/rollouts/SERVICE`, `POST /v1/rollouts/SERVICE/{pause,resume,abort,promote,retry}`.
async fn rollout_route(
    req: Request<Incoming>,
    rest: &str,
    ctl: &Mutex<Controller>,
    peer: Peer,
) -> Response<Body> {
    let (service, action) = rest.split_once('/').unwrap_or((rest, ""));
    let service = percent_decode(service);
    let action = action.to_owned();
    let method = req.method().clone();
    if method == Method::GET && action.is_empty() {
        return match lock(ctl).rollout_status(&service, SystemTime::now()) {
            Ok(v) => json(StatusCode::OK, &RolloutStatus::from(&v)),
            Err(e) => control_error(&e),
        };
    }
    let request = match action.as_str() {
        "pause" => control::Request::RolloutPause { service },
        "resume" => control::Request::RolloutResume { service },
        "abort" => control::Request::RolloutAbort { service },
        "retry" => control::Request::RolloutRetry { service },
        "promote" => control::Request::RolloutPromote {
            service,
            full: false,
        },
        _ => {
            return error(
                StatusCode::NOT_FOUND,
                "not_found",
                format!("no endpoint {method} /v1/rollouts/{rest}"),
            );
        }
    };
    if method != Method::POST {
        return error(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no endpoint {method} /v1/rollouts/{rest} (it takes POST)"),
        );
    }
    let body = match body_or_empty::<RolloutActionRequest>(req).await {
        Ok(b) => b,
        Err(refused) => return refused,
    };
    let request = match request {
        control::Request::RolloutPromote { service, .. } => control::Request::RolloutPromote {
            service,
            full: body.full,
        },
        other => other,
    };
    execute(ctl, &request, &body.options, peer)
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
fn apply(r: &ApplyRequest, ctl: &Mutex<Controller>, peer: Peer) -> Response<Body> {
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
    if runs && !peer.is_root() {
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
    execute(ctl, &request, &r.options, peer)
}

/// `POST` of a change: decodes the body into a control request and carries it out.
async fn change(
    path: &str,
    req: Request<Incoming>,
    ctl: &Mutex<Controller>,
    peer: Peer,
) -> Response<Body> {
    match path {
        "/v1/apply" => match body::<ApplyRequest>(req).await {
            Ok(r) => apply(&r, ctl, peer),
            Err(resp) => resp,
        },
        "/v1/shift" => match body::<ShiftRequest>(req).await {
            Ok(r) => execute(
                ctl,
                &control::Request::Shift {
                    services: r.services,
                    weights: r.weights.into_iter().map(|w| (w.group, w.weight)).collect(),
                    force: r.force,
                },
                &r.options,
                peer,
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
                &r.options,
                peer,
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
                &r.options,
                peer,
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
                &r.options,
                peer,
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
                &r.options,
                peer,
            ),
            Err(resp) => resp,
        },
        "/v1/rollouts" => match body::<RolloutStartRequest>(req).await {
            Ok(r) if !peer.is_root() && runs_commands(&r.plan) => error(
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
                &r.options,
                peer,
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

/// Routes one request from `peer`.
pub(super) async fn handle(
    req: Request<Incoming>,
    ctl: &Mutex<Controller>,
    peer: Peer,
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
        (Method::POST, p) if !p.starts_with("/v1/rollouts/") => change(p, req, ctl, peer).await,
        (_, p) if p.starts_with("/v1/rollouts/") => {
            let rest = p["/v1/rollouts/".len()..].to_owned();
            rollout_route(req, &rest, ctl, peer).await
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
