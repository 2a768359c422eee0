//! Checking the extra gates of a rollout step (`exec:`, `http:`, `prometheus:`; see
//! `model::gate` for what each means), each within the plan's `gate_timeout`.

use std::{fmt, time::Duration};

use crate::model::gate::Gate;

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
