//! Extra gates a plan can name, checked at the end of every step, each within the plan's
//! `gate_timeout`:
//!
//! - `exec:COMMAND`: `sh -c COMMAND` must exit 0 (site-specific checks);
//! - `http:URL` (or a plain `http://...`): `GET URL` must answer 2xx;
//! - `prometheus:BASE_URL QUERY OP NUMBER` (OP one of `<`, `<=`, `>`, `>=`): the instant query
//!   `QUERY` against the Prometheus server at `BASE_URL` must return a value that holds, e.g.
//!   `prometheus:http://127.0.0.1:9090 sum(rate(veer_backend_failed_flows_total[1m])) < 0.1`.

use std::{fmt, str::FromStr, time::Duration};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Comparison of a Prometheus gate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    /// `<`
    Lt,
    /// `<=`
    Le,
    /// `>`
    Gt,
    /// `>=`
    Ge,
}

impl Op {
    fn holds(self, a: f64, b: f64) -> bool {
        match self {
            Op::Lt => a < b,
            Op::Le => a <= b,
            Op::Gt => a > b,
            Op::Ge => a >= b,
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            Op::Lt => "<",
            Op::Le => "<=",
            Op::Gt => ">",
            Op::Ge => ">=",
        }
    }
}

/// One extra gate.
#[derive(Clone, Debug, PartialEq)]
pub enum Gate {
    /// A command.
    Exec(String),
    /// A URL that must answer 2xx.
    Http(String),
    /// A Prometheus instant query and a condition on its value.
    Prometheus {
        /// Server base URL (`http://127.0.0.1:9090`).
        base: String,
        /// `PromQL`.
        query: String,
        /// Comparison.
        op: Op,
        /// Threshold.
        value: f64,
    },
}

impl Eq for Gate {}

/// Why a gate does not parse.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error(
    "gate `{text}`: {reason} (want exec:COMMAND, http://URL, or prometheus:BASE_URL QUERY OP NUMBER)"
)]
pub struct GateParseError {
    text: String,
    reason: &'static str,
}

impl FromStr for Gate {
    type Err = GateParseError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let err = |reason| GateParseError {
            text: text.to_owned(),
            reason,
        };
        if let Some(cmd) = text.strip_prefix("exec:") {
            return if cmd.trim().is_empty() {
                Err(err("empty command"))
            } else {
                Ok(Gate::Exec(cmd.to_owned()))
            };
        }
        if let Some(rest) = text.strip_prefix("prometheus:") {
            let (base, rest) = rest
                .trim()
                .split_once(' ')
                .ok_or_else(|| err("no query after the server URL"))?;
            if !base.starts_with("http://") {
                return Err(err("the Prometheus URL must start with http://"));
            }
            let (pos, op, len) = [("<=", Op::Le), (">=", Op::Ge), ("<", Op::Lt), (">", Op::Gt)]
                .iter()
                .filter_map(|(s, op)| rest.rfind(s).map(|i| (i, *op, s.len())))
                .max_by_key(|(i, _, len)| (*i, *len))
                .ok_or_else(|| err("no comparison (<, <=, >, >=)"))?;
            let query = rest[..pos].trim();
            let value: f64 = rest[pos + len..]
                .trim()
                .parse()
                .map_err(|_| err("the threshold is not a number"))?;
            if query.is_empty() {
                return Err(err("empty query"));
            }
            return Ok(Gate::Prometheus {
                base: base.trim_end_matches('/').to_owned(),
                query: query.to_owned(),
                op,
                value,
            });
        }
        // `http:http://host/path` and a bare `http://host/path` mean the same.
        let url = match text.strip_prefix("http:") {
            Some(rest) if rest.starts_with("http://") => rest,
            _ => text,
        };
        if url.starts_with("http://") {
            return Ok(Gate::Http(url.to_owned()));
        }
        Err(err("unknown kind"))
    }
}

impl fmt::Display for Gate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Gate::Exec(c) => write!(f, "exec:{c}"),
            Gate::Http(u) => write!(f, "{u}"),
            Gate::Prometheus {
                base,
                query,
                op,
                value,
            } => write!(f, "prometheus:{base} {query} {} {value}", op.as_str()),
        }
    }
}

impl Serialize for Gate {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

impl<'de> Deserialize<'de> for Gate {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

/// Checks one gate; `Err(why)` when it fails.
pub async fn check(gate: &Gate, timeout: Duration) -> Result<(), String> {
    match tokio::time::timeout(timeout, run(gate)).await {
        Ok(r) => r,
        Err(_) => Err(format!(
            "no answer within {}",
            humantime::format_duration(timeout)
        )),
    }
}

async fn run(gate: &Gate) -> Result<(), String> {
    match gate {
        Gate::Exec(cmd) => {
            let status = tokio::process::Command::new("sh")
                .args(["-c", cmd])
                .stdin(std::process::Stdio::null())
                .kill_on_drop(true)
                .status()
                .await
                .map_err(|e| format!("cannot run: {e}"))?;
            if status.success() {
                Ok(())
            } else {
                Err(format!("{status}"))
            }
        }
        Gate::Http(url) => {
            let (status, _) = http_get(url).await?;
            if (200..300).contains(&status) {
                Ok(())
            } else {
                Err(format!("HTTP status {status}"))
            }
        }
        Gate::Prometheus {
            base,
            query,
            op,
            value,
        } => {
            let url = format!("{base}/api/v1/query?query={}", encode(query));
            let (status, body) = http_get(&url).await?;
            if status != 200 {
                return Err(format!("Prometheus answered HTTP {status}"));
            }
            let v = prometheus_value(&body)?;
            if op.holds(v, *value) {
                Ok(())
            } else {
                Err(format!("{query} = {v}, not {} {value}", op.as_str()))
            }
        }
    }
}

/// The single value of an instant-query answer.
fn prometheus_value(body: &[u8]) -> Result<f64, String> {
    let json: serde_json::Value =
        serde_json::from_slice(body).map_err(|e| format!("Prometheus answer is not JSON: {e}"))?;
    let result = &json["data"]["result"];
    let value = match json["data"]["resultType"].as_str() {
        Some("scalar") => &json["data"]["result"][1],
        Some("vector") => {
            let items = result.as_array().ok_or("no result")?;
            match items.as_slice() {
                [one] => &one["value"][1],
                [] => return Err("the query returned no series".to_owned()),
                _ => {
                    return Err(format!(
                        "the query returned {} series; want one (aggregate it)",
                        items.len()
                    ));
                }
            }
        }
        other => return Err(format!("unsupported result type {other:?}")),
    };
    value
        .as_str()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| "no numeric value".to_owned())
}

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

/// A minimal HTTP/1.1 GET over TCP (gates target loopback or the node's own network).
async fn http_get(url: &str) -> Result<(u16, Vec<u8>), String> {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let rest = url
        .strip_prefix("http://")
        .ok_or("only http:// URLs are supported")?;
    let (authority, path) = rest
        .find('/')
        .map_or((rest, "/"), |i| (&rest[..i], &rest[i..]));
    let mut stream = tokio::net::TcpStream::connect(authority)
        .await
        .map_err(|e| format!("connect {authority}: {e}"))?;
    let req = format!(
        "GET {path} HTTP/1.1\r\nHost: {authority}\r\nUser-Agent: veer-gate\r\nConnection: close\r\n\r\n"
    );
    stream
        .write_all(req.as_bytes())
        .await
        .map_err(|e| e.to_string())?;
    let mut buf = Vec::new();
    stream
        .take(4 << 20)
        .read_to_end(&mut buf)
        .await
        .map_err(|e| e.to_string())?;
    let head_end = buf
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or("no HTTP header")?;
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let status: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or("no HTTP status")?;
    let mut body = buf[head_end + 4..].to_vec();
    if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        body = dechunk(&body);
    }
    Ok((status, body))
}

fn dechunk(mut b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(i) = b.windows(2).position(|w| w == b"\r\n") {
        let size = usize::from_str_radix(String::from_utf8_lossy(&b[..i]).trim(), 16).unwrap_or(0);
        if size == 0 || b.len() < i + 2 + size {
            break;
        }
        out.extend_from_slice(&b[i + 2..i + 2 + size]);
        b = &b[(i + 4 + size).min(b.len())..];
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gates_parse_and_print_back() {
        for text in [
            "exec:/usr/local/bin/check --fast",
            "http://127.0.0.1:8080/ready",
            "prometheus:http://127.0.0.1:9090 sum(rate(veer_backend_failed_flows_total[1m])) < 0.1",
            "prometheus:http://127.0.0.1:9090 up >= 1",
        ] {
            let g: Gate = text.parse().unwrap();
            assert_eq!(g.to_string(), text);
        }
        assert_eq!(
            "http:http://x/".parse::<Gate>().unwrap(),
            Gate::Http("http://x/".into())
        );
        assert!("ftp://x".parse::<Gate>().is_err());
        assert!(
            "prometheus:http://p up"
                .parse::<Gate>()
                .unwrap_err()
                .to_string()
                .contains("no comparison")
        );
    }

    #[test]
    fn prometheus_answers_are_read() {
        let vector = br#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{},"value":[1700000000.1,"0.25"]}]}}"#;
        assert_eq!(prometheus_value(vector), Ok(0.25));
        let empty = br#"{"status":"success","data":{"resultType":"vector","result":[]}}"#;
        assert!(prometheus_value(empty).is_err());
        let scalar =
            br#"{"status":"success","data":{"resultType":"scalar","result":[1700000000.1,"3"]}}"#;
        assert_eq!(prometheus_value(scalar), Ok(3.0));
        assert_eq!(dechunk(b"4\r\nabcd\r\n2\r\nef\r\n0\r\n\r\n"), b"abcdef");
    }

    #[tokio::test]
    async fn exec_gates_follow_the_exit_status() {
        assert_eq!(
            check(&Gate::Exec("true".into()), Duration::from_secs(5)).await,
            Ok(())
        );
        assert!(
            check(&Gate::Exec("exit 3".into()), Duration::from_secs(5))
                .await
                .unwrap_err()
                .contains("exit status: 3")
        );
        assert!(
            check(&Gate::Exec("sleep 5".into()), Duration::from_millis(100))
                .await
                .unwrap_err()
                .starts_with("no answer")
        );
    }
}
