//! Checking the extra gates of a rollout step (`exec:`, `http:`, `prometheus:`; see
//! `model::gate` for what each means), each within the plan's `gate_timeout`. HTTP goes through
//! the daemon's one client (`crate::http`).

use std::{fmt, process::ExitStatus, time::Duration};

use crate::{
    http::{self, HttpError},
    model::gate::{Gate, Op},
};

/// Largest answer a gate reads (a Prometheus query result).
const BODY_LIMIT: usize = 4 << 20;

/// Why a gate failed.
#[derive(Debug, thiserror::Error)]
pub enum GateError {
    /// No outcome within the plan's gate timeout.
    #[error("no answer within {}", humantime::format_duration(*timeout))]
    Timeout {
        /// The timeout.
        timeout: Duration,
    },
    /// The command could not be started.
    #[error("cannot run `sh -c {command}`")]
    Spawn {
        /// The command.
        command: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The command exited with another status than 0.
    #[error("{status}")]
    Exit {
        /// Its exit status.
        status: ExitStatus,
    },
    /// The request got no answer.
    #[error(transparent)]
    Http(#[from] HttpError),
    /// The URL answered, not with 2xx.
    #[error("HTTP status {status}")]
    Status {
        /// The status.
        status: u16,
    },
    /// Prometheus answered, not with 200.
    #[error("Prometheus answered HTTP {status}")]
    PrometheusStatus {
        /// The status.
        status: u16,
    },
    /// Prometheus's answer is not the instant-query result expected.
    #[error(transparent)]
    Answer(#[from] AnswerError),
    /// The query's value does not satisfy the condition.
    #[error("{query} = {value}, not {} {threshold}", op.as_str())]
    Condition {
        /// The query.
        query: String,
        /// Its value.
        value: f64,
        /// The comparison.
        op: Op,
        /// The threshold.
        threshold: f64,
    },
}

/// What is wrong with a Prometheus answer.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum AnswerError {
    /// Not JSON.
    #[error("Prometheus answer is not JSON: {reason}")]
    NotJson {
        /// The parser's words.
        reason: String,
    },
    /// A vector with no series.
    #[error("the query returned no series")]
    NoSeries,
    /// A vector with several series.
    #[error("the query returned {count} series; want one (aggregate it)")]
    ManySeries {
        /// How many.
        count: usize,
    },
    /// A result type other than vector or scalar.
    #[error("unsupported result type {kind}")]
    ResultType {
        /// What the answer says.
        kind: String,
    },
    /// No number where the value should be.
    #[error("no numeric value")]
    NoValue,
}

/// Checks one gate within `timeout`.
pub async fn check(gate: &Gate, timeout: Duration) -> Result<(), GateError> {
    tokio::time::timeout(timeout, run(gate))
        .await
        .map_err(|_| GateError::Timeout { timeout })?
}

async fn run(gate: &Gate) -> Result<(), GateError> {
    match gate {
        Gate::Exec(command) => {
            let status = tokio::process::Command::new("sh")
                .args(["-c", command])
                .stdin(std::process::Stdio::null())
                .kill_on_drop(true)
                .status()
                .await
                .map_err(|source| GateError::Spawn {
                    command: command.clone(),
                    source,
                })?;
            if status.success() {
                Ok(())
            } else {
                Err(GateError::Exit { status })
            }
        }
        Gate::Http(url) => {
            let answer = http::get(url, "veer-gate", 0).await?;
            if (200..300).contains(&answer.status) {
                Ok(())
            } else {
                Err(GateError::Status {
                    status: answer.status,
                })
            }
        }
        Gate::Prometheus {
            base,
            query,
            op,
            value,
        } => {
            let url = format!("{base}/api/v1/query?query={}", encode(query));
            let answer = http::get(&url, "veer-gate", BODY_LIMIT).await?;
            if answer.status != 200 {
                return Err(GateError::PrometheusStatus {
                    status: answer.status,
                });
            }
            let v = prometheus_value(&answer.body)?;
            if op.holds(v, *value) {
                Ok(())
            } else {
                Err(GateError::Condition {
                    query: query.clone(),
                    value: v,
                    op: *op,
                    threshold: *value,
                })
            }
        }
    }
}

/// The single value of an instant-query answer.
fn prometheus_value(body: &[u8]) -> Result<f64, AnswerError> {
    let json: serde_json::Value =
        serde_json::from_slice(body).map_err(|e| AnswerError::NotJson {
            reason: e.to_string(),
        })?;
    let result = &json["data"]["result"];
    let value = match json["data"]["resultType"].as_str() {
        Some("scalar") => &result[1],
        Some("vector") => match result.as_array().map(Vec::as_slice) {
            Some([one]) => &one["value"][1],
            Some([]) | None => return Err(AnswerError::NoSeries),
            Some(items) => return Err(AnswerError::ManySeries { count: items.len() }),
        },
        other => {
            return Err(AnswerError::ResultType {
                kind: format!("{other:?}"),
            });
        }
    };
    value
        .as_str()
        .and_then(|s| s.parse().ok())
        .ok_or(AnswerError::NoValue)
}

/// Percent-encodes a query parameter.
fn encode(s: &str) -> String {
    use fmt::Write as _;
    s.bytes().fold(String::new(), |mut out, b| {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            let _ = write!(out, "%{b:02X}");
        }
        out
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prometheus_answers_are_read() {
        let vector = br#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{},"value":[1700000000.1,"0.25"]}]}}"#;
        assert_eq!(prometheus_value(vector), Ok(0.25));
        let empty = br#"{"status":"success","data":{"resultType":"vector","result":[]}}"#;
        assert_eq!(prometheus_value(empty), Err(AnswerError::NoSeries));
        let two = br#"{"status":"success","data":{"resultType":"vector","result":[{"value":[1,"1"]},{"value":[1,"2"]}]}}"#;
        assert_eq!(
            prometheus_value(two),
            Err(AnswerError::ManySeries { count: 2 })
        );
        let scalar =
            br#"{"status":"success","data":{"resultType":"scalar","result":[1700000000.1,"3"]}}"#;
        assert_eq!(prometheus_value(scalar), Ok(3.0));
        assert!(matches!(
            prometheus_value(b"<html>"),
            Err(AnswerError::NotJson { .. })
        ));
    }

    #[tokio::test]
    async fn exec_gates_follow_the_exit_status() {
        assert!(
            check(&Gate::Exec("true".into()), Duration::from_secs(5))
                .await
                .is_ok()
        );
        let e = check(&Gate::Exec("exit 3".into()), Duration::from_secs(5))
            .await
            .unwrap_err();
        assert!(matches!(&e, GateError::Exit { status } if status.code() == Some(3)));
        assert_eq!(e.to_string(), "exit status: 3");
        let e = check(&Gate::Exec("sleep 5".into()), Duration::from_millis(100))
            .await
            .unwrap_err();
        assert!(matches!(e, GateError::Timeout { .. }));
        assert_eq!(e.to_string(), "no answer within 100ms");
    }

    /// One HTTP/1.1 answer on a loopback listener: `status` and a chunked `body`.
    async fn serve_once(status: u16, body: &'static str) -> String {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut buf = [0u8; 1024];
            let _ = s.read(&mut buf).await.unwrap();
            let answer = format!(
                "HTTP/1.1 {status} X\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n{:x}\r\n{body}\r\n0\r\n\r\n",
                body.len()
            );
            s.write_all(answer.as_bytes()).await.unwrap();
        });
        format!("http://{addr}")
    }

    #[tokio::test]
    async fn http_and_prometheus_gates_read_real_answers() {
        let ok = serve_once(204, "").await;
        assert!(
            check(&Gate::Http(format!("{ok}/ready")), Duration::from_secs(5))
                .await
                .is_ok()
        );
        let down = serve_once(503, "no").await;
        let e = check(&Gate::Http(format!("{down}/ready")), Duration::from_secs(5))
            .await
            .unwrap_err();
        assert_eq!(e.to_string(), "HTTP status 503");
        let prometheus = serve_once(
            200,
            r#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{},"value":[1,"2"]}]}}"#,
        )
        .await;
        let gate: Gate = format!("prometheus:{prometheus} up < 1").parse().unwrap();
        let e = check(&gate, Duration::from_secs(5)).await.unwrap_err();
        assert_eq!(e.to_string(), "up = 2, not < 1");
        let closed = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap()
        };
        let e = check(
            &Gate::Http(format!("http://{closed}/")),
            Duration::from_secs(5),
        )
        .await
        .unwrap_err();
        assert!(
            matches!(e, GateError::Http(HttpError::Connect { .. })),
            "{e}"
        );
    }
}
