//! A small HTTP/1.1 client over hyper, for what the daemon asks of other services: the extra
//! gates of rollouts (`http:`, `prometheus:`) and HTTP health checks. Plain `http://` only;
//! callers bound each exchange in time.

use std::io;

use bytes::Bytes;
use http_body_util::{BodyExt as _, Empty, Limited};
use hyper::{Request, Uri, body::Incoming};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

/// An answer: its status and (up to the limit asked for) its body.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Answer {
    /// HTTP status code.
    pub status: u16,
    /// The body.
    pub body: Bytes,
}

/// Why a request got no answer.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    /// Not an `http://` URL with a host.
    #[error("`{url}` is not an http:// URL")]
    BadUrl {
        /// The URL.
        url: String,
    },
    /// The TCP connection failed.
    #[error("connecting to {authority} failed")]
    Connect {
        /// `host:port`.
        authority: String,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// The HTTP exchange failed (reset, not HTTP, malformed).
    #[error("HTTP exchange with {authority} failed")]
    Exchange {
        /// `host:port`.
        authority: String,
        /// Hyper's error.
        #[source]
        source: hyper::Error,
    },
    /// The body is larger than the limit.
    #[error("the answer of {authority} is larger than {limit} bytes")]
    TooLarge {
        /// `host:port`.
        authority: String,
        /// The limit.
        limit: usize,
    },
}

/// `GET url` as `agent`; the body is read up to `body_limit` bytes (0: not read at all).
pub async fn get(url: &str, agent: &str, body_limit: usize) -> Result<Answer, HttpError> {
    let bad = || HttpError::BadUrl {
        url: url.to_owned(),
    };
    let uri: Uri = url.parse().map_err(|_| bad())?;
    if uri.scheme_str() != Some("http") {
        return Err(bad());
    }
    let authority = uri.authority().ok_or_else(bad)?.clone();
    let target = if authority.port().is_some() {
        authority.to_string()
    } else {
        format!("{}:80", authority.host())
    };
    let stream = TcpStream::connect(&target)
        .await
        .map_err(|source| HttpError::Connect {
            authority: target.clone(),
            source,
        })?;
    let exchange = |source| HttpError::Exchange {
        authority: target.clone(),
        source,
    };
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(exchange)?;
    let connection = tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::debug!(error = %e, "HTTP connection ended with an error");
        }
    });
    let path = uri.path_and_query().map_or("/", |p| p.as_str());
    let request = Request::get(path)
        .header(hyper::header::HOST, authority.as_str())
        .header(hyper::header::USER_AGENT, agent)
        .body(Empty::<Bytes>::new())
        .map_err(|_| bad())?;
    let response = sender.send_request(request).await.map_err(exchange)?;
    let status = response.status().as_u16();
    let body = if body_limit == 0 {
        Bytes::new()
    } else {
        read(response.into_body(), body_limit, &target).await?
    };
    connection.abort();
    Ok(Answer { status, body })
}

async fn read(body: Incoming, limit: usize, authority: &str) -> Result<Bytes, HttpError> {
    match Limited::new(body, limit).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) => Err(match e.downcast::<hyper::Error>() {
            Ok(source) => HttpError::Exchange {
                authority: authority.to_owned(),
                source: *source,
            },
            Err(_) => HttpError::TooLarge {
                authority: authority.to_owned(),
                limit,
            },
        }),
    }
}
