//! Active checks: a TCP connect, or an HTTP/1.1 `GET` whose status must match. Run from the
//! daemon's network namespace, each bounded by the check's timeout.

use std::{net::SocketAddr, time::Duration};

use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::TcpStream,
};

use crate::model::CheckKind;

/// Why a check failed.
#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    /// No answer in time.
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    /// Connecting, writing or reading failed.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// The HTTP answer was not the expected status.
    #[error("HTTP status {found}, expected {expected}")]
    Status {
        /// What came back (0: no status line).
        found: u16,
        /// What was expected.
        expected: u16,
    },
}

/// Runs one check of `addr`.
pub async fn run(kind: &CheckKind, addr: SocketAddr, timeout: Duration) -> Result<(), CheckError> {
    tokio::time::timeout(timeout, once(kind, addr))
        .await
        .map_err(|_| CheckError::Timeout(timeout))?
}

async fn once(kind: &CheckKind, addr: SocketAddr) -> Result<(), CheckError> {
    let mut stream = TcpStream::connect(addr).await?;
    let CheckKind::Http {
        path,
        expect_status,
    } = kind
    else {
        return Ok(());
    };
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUser-Agent: veer-health\r\nConnection: close\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await?;
    let mut buf = vec![0u8; 1024];
    let mut len = 0;
    while len < buf.len() && !buf[..len].contains(&b'\n') {
        let n = stream.read(&mut buf[len..]).await?;
        if n == 0 {
            break;
        }
        len += n;
    }
    let found = status(&buf[..len]).unwrap_or(0);
    if found == *expect_status {
        Ok(())
    } else {
        Err(CheckError::Status {
            found,
            expected: *expect_status,
        })
    }
}

/// The status code of an HTTP/1.x status line.
fn status(head: &[u8]) -> Option<u16> {
    let line = head.split(|b| *b == b'\n').next()?;
    let text = std::str::from_utf8(line).ok()?;
    let mut parts = text.split_whitespace();
    parts.next().filter(|v| v.starts_with("HTTP/1."))?;
    parts.next()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::status;

    #[test]
    fn status_lines_parse() {
        assert_eq!(
            status(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n"),
            Some(200)
        );
        assert_eq!(status(b"HTTP/1.0 503 Service Unavailable\r\n"), Some(503));
        assert_eq!(status(b"SSH-2.0-OpenSSH\r\n"), None);
        assert_eq!(status(b""), None);
    }
}
