//! Active checks: a TCP connect, or an HTTP/1.1 `GET` (through the daemon's one client,
//! `crate::http`) whose status must match. Run from the daemon's network namespace, each
//! bounded by the check's timeout.

use std::{net::SocketAddr, time::Duration};

use tokio::net::TcpStream;

use crate::{
    http::{self, HttpError},
    model::CheckKind,
};

/// Why a check failed.
#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    /// No answer in time.
    #[error("no answer within {}", humantime::format_duration(*timeout))]
    Timeout {
        /// The check's timeout.
        timeout: Duration,
    },
    /// The TCP connection was refused or failed.
    #[error("connecting to {addr} failed")]
    Connect {
        /// The backend.
        addr: SocketAddr,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The HTTP request got no answer.
    #[error(transparent)]
    Http(#[from] HttpError),
    /// The HTTP answer was not the expected status.
    #[error("HTTP status {found}, expected {expected}")]
    Status {
        /// What came back.
        found: u16,
        /// What was expected.
        expected: u16,
    },
}

/// Runs one check of `addr`.
pub async fn run(kind: &CheckKind, addr: SocketAddr, timeout: Duration) -> Result<(), CheckError> {
    tokio::time::timeout(timeout, once(kind, addr))
        .await
        .map_err(|_| CheckError::Timeout { timeout })?
}

async fn once(kind: &CheckKind, addr: SocketAddr) -> Result<(), CheckError> {
    match kind {
        CheckKind::Tcp => {
            TcpStream::connect(addr)
                .await
                .map_err(|source| CheckError::Connect { addr, source })?;
            Ok(())
        }
        CheckKind::Http {
            path,
            expect_status,
        } => {
            let answer = http::get(&format!("http://{addr}{path}"), "veer-health", 0).await?;
            if answer.status == *expect_status {
                Ok(())
            } else {
                Err(CheckError::Status {
                    found: answer.status,
                    expected: *expect_status,
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn answering(status: u16) -> SocketAddr {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                let mut buf = [0u8; 1024];
                // A client gone early only ends this answer.
                drop(s.read(&mut buf).await);
                let answer = format!("HTTP/1.1 {status} X\r\nContent-Length: 0\r\n\r\n");
                drop(s.write_all(answer.as_bytes()).await);
            }
        });
        addr
    }

    fn http(path: &str, expect_status: u16) -> CheckKind {
        CheckKind::Http {
            path: path.into(),
            expect_status,
        }
    }

    #[tokio::test]
    async fn checks_pass_and_fail_with_the_reason() {
        let t = Duration::from_secs(5);
        let up = answering(200).await;
        assert!(run(&CheckKind::Tcp, up, t).await.is_ok());
        assert!(run(&http("/healthz", 200), up, t).await.is_ok());
        let e = run(&http("/healthz", 204), up, t).await.unwrap_err();
        assert_eq!(e.to_string(), "HTTP status 200, expected 204");
        let closed = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap()
        };
        assert!(matches!(
            run(&CheckKind::Tcp, closed, t).await,
            Err(CheckError::Connect { .. })
        ));
        assert!(matches!(
            run(&http("/", 200), closed, t).await,
            Err(CheckError::Http(HttpError::Connect { .. }))
        ));
    }
}
