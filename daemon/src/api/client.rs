//! The CLI's side of the control API.

use std::{path::PathBuf, time::Duration};

use http_body_util::{BodyExt as _, Full};
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use serde::{Serialize, de::DeserializeOwned};
use tokio::net::UnixStream;

use super::protocol::ErrorBody;

/// How long a request may take.
pub const TIMEOUT: Duration = Duration::from_secs(30);

/// Why a request failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The socket exists but this user may not use it.
    #[error("permission denied on {}: only root (or the daemon's --socket-group) may use veer's control socket", socket.display())]
    Forbidden {
        /// Path of the control socket.
        socket: PathBuf,
    },
    /// No daemon answers on the socket.
    #[error("cannot reach veer daemon at {}: is it running? (`systemctl status veer`, or `veer daemon`)", socket.display())]
    Connect {
        /// Path of the control socket.
        socket: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The HTTP exchange failed.
    #[error("talking to veer daemon at {} failed", socket.display())]
    Http {
        /// Path of the control socket.
        socket: PathBuf,
        /// The HTTP error.
        #[source]
        source: hyper::Error,
    },
    /// No answer in time.
    #[error("veer daemon at {} did not answer within {}s", socket.display(), TIMEOUT.as_secs())]
    Timeout {
        /// Path of the control socket.
        socket: PathBuf,
    },
    /// The daemon refused or failed the request.
    #[error("{message}")]
    Api {
        /// HTTP status.
        status: StatusCode,
        /// Stable kind (`not_found`, `invalid_config` ...).
        kind: String,
        /// The daemon's message.
        message: String,
        /// The rest of the daemon's error object (the diagnostics of an invalid config).
        details: Option<serde_json::Value>,
    },
    /// The answer was not what this CLI understands (a different daemon version?).
    #[error("unexpected answer from veer daemon ({status}): {source}")]
    Decode {
        /// HTTP status.
        status: StatusCode,
        /// The decoder's error.
        #[source]
        source: serde_json::Error,
    },
}

/// A client of one socket.
#[derive(Clone, Debug)]
pub struct Client {
    socket: PathBuf,
}

impl Client {
    /// A client for the daemon at `socket`.
    pub fn new(socket: PathBuf) -> Self {
        Self { socket }
    }

    /// `GET path` (with query), decoded.
    pub async fn get<T: DeserializeOwned>(&self, path_and_query: &str) -> Result<T, ClientError> {
        self.request(Method::GET, path_and_query, Vec::new()).await
    }

    /// `POST path` with a JSON body, decoded.
    pub async fn post<B: Serialize, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<T, ClientError> {
        let bytes = serde_json::to_vec(body).map_err(|source| ClientError::Decode {
            status: StatusCode::OK,
            source,
        })?;
        self.request(Method::POST, path, bytes).await
    }

    async fn request<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Vec<u8>,
    ) -> Result<T, ClientError> {
        tokio::time::timeout(TIMEOUT, self.exchange(method, path, body))
            .await
            .map_err(|_| ClientError::Timeout {
                socket: self.socket.clone(),
            })?
    }

    async fn exchange<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Vec<u8>,
    ) -> Result<T, ClientError> {
        let stream = UnixStream::connect(&self.socket).await.map_err(|source| {
            if source.kind() == std::io::ErrorKind::PermissionDenied {
                ClientError::Forbidden {
                    socket: self.socket.clone(),
                }
            } else {
                ClientError::Connect {
                    socket: self.socket.clone(),
                    source,
                }
            }
        })?;
        let http = |source| ClientError::Http {
            socket: self.socket.clone(),
            source,
        };
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(http)?;
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "control connection closed with an error");
            }
        });
        let req = Request::builder()
            .method(method)
            .uri(format!("http://veer{path}"))
            .header(hyper::header::HOST, "veer")
            .header(hyper::header::CONTENT_TYPE, "application/json")
            .body(Full::new(bytes::Bytes::from(body)))
            // Infallible: the method, a fixed host and a path we built make a valid request.
            .unwrap_or_else(|_| unreachable!("request built from valid parts"));
        let resp = sender.send_request(req).await.map_err(http)?;
        let status = resp.status();
        let bytes = resp.into_body().collect().await.map_err(http)?.to_bytes();
        if status.is_success() {
            serde_json::from_slice(&bytes).map_err(|source| ClientError::Decode { status, source })
        } else {
            let e: ErrorBody = serde_json::from_slice(&bytes)
                .map_err(|source| ClientError::Decode { status, source })?;
            Err(ClientError::Api {
                status,
                kind: e.error.kind,
                message: e.error.message,
                details: (!e.error.details.is_empty())
                    .then_some(serde_json::Value::Object(e.error.details)),
            })
        }
    }
}
