//! Extra gates a plan can name, as written and parsed. `rollout::gate` checks them, at the end
//! of every step, each within the plan's `gate_timeout`:
//!
//! - `exec:COMMAND`: `sh -c COMMAND` must exit 0 (site-specific checks);
//! - `http:URL` (or a plain `http://...`): `GET URL` must answer 2xx;
//! - `prometheus:BASE_URL QUERY OP NUMBER` (OP one of `<`, `<=`, `>`, `>=`): the instant query
//!   `QUERY` against the Prometheus server at `BASE_URL` must return a value that holds, e.g.
//!   `prometheus:http://127.0.0.1:9090 sum(rate(veer_backend_failed_flows_total[1m])) < 0.1`.

use std::{fmt, str::FromStr};

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
    /// Whether `a OP b` holds.
    pub fn holds(self, a: f64, b: f64) -> bool {
        match self {
            Op::Lt => a < b,
            Op::Le => a <= b,
            Op::Gt => a > b,
            Op::Ge => a >= b,
        }
    }

    /// `<`, `<=`, `>` or `>=`.
    pub fn as_str(self) -> &'static str {
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
        /// How the value is compared with the threshold.
        op: Op,
        /// What the value is compared with.
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
}
