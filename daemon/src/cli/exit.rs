//! Exit codes, the only place they are defined, and the failure every command ends with when it
//! does not succeed.
//!
//! | code | meaning |
//! |---|---|
//! | 0 | success |
//! | 1 | error (the message says what and where) |
//! | 2 | usage (bad flags or arguments; clap prints the usage) |
//! | 3 | timeout (e.g. `drain --wait`) |
//!
//! With `--output json` a failure is also one JSON object on stdout (see `Failure::to_json`):
//! `{"error": {"kind": "...", "message": "...", "exit_code": N, ...}}`.

use std::process::ExitCode;

use crate::api::client::ClientError;

/// Exit code 0: the command did what was asked (or it was already so).
pub const OK: u8 = 0;
/// An error.
pub const ERROR: u8 = 1;
/// Bad usage.
pub const USAGE: u8 = 2;
/// A wait timed out.
pub const TIMEOUT: u8 = 3;

/// A failed command: the exit code, a stable kind for scripts, the message to print, and details
/// for `--output json`.
#[derive(Debug)]
pub struct Failure {
    /// Exit code.
    pub code: u8,
    /// Stable kind (`usage`, `not_found`, `invalid_config`, `unreachable` ... see the README).
    pub kind: &'static str,
    /// What went wrong, with its causes.
    pub message: String,
    /// More for scripts (`--output json`): the diagnostics of an invalid config file, what a
    /// wait saw last.
    pub details: Option<serde_json::Value>,
    /// A report for people that says more than the message (every problem of a config file,
    /// each with its line and a caret), printed on stderr instead of `veer: message`.
    pub report: Option<String>,
}

impl Failure {
    /// An error (exit 1) of `kind`, with `message`.
    pub fn new(kind: &'static str, message: String) -> Self {
        Self {
            code: ERROR,
            kind,
            message,
            details: None,
            report: None,
        }
    }

    /// An error (exit 1) from any error, with its chain of causes.
    pub fn error(e: &dyn std::error::Error) -> Self {
        Self::new("error", crate::error::chain(e))
    }

    /// An error (exit 1) of `kind` from `e`, with its chain of causes.
    pub fn of(kind: &'static str, e: &dyn std::error::Error) -> Self {
        Self::new(kind, crate::error::chain(e))
    }

    /// A usage error (exit 2).
    pub fn usage(message: String) -> Self {
        Self {
            code: USAGE,
            kind: "usage",
            message,
            details: None,
            report: None,
        }
    }

    /// A timeout (exit 3).
    pub fn timeout(message: String) -> Self {
        Self {
            code: TIMEOUT,
            kind: "timeout",
            message,
            details: None,
            report: None,
        }
    }

    /// The same failure, with `details` for scripts.
    #[must_use]
    pub fn with_details(mut self, details: serde_json::Value) -> Self {
        self.details = Some(details);
        self
    }

    /// The same failure, with a report for people.
    #[must_use]
    pub fn with_report(mut self, report: String) -> Self {
        self.report = Some(report);
        self
    }

    /// An invalid config file: every problem, rendered for people and listed for scripts.
    pub fn invalid_config(errors: &crate::config::ConfigErrors) -> Self {
        Self::of("invalid_config", errors)
            .with_details(serde_json::json!({ "diagnostics": errors.to_json() }))
            .with_report(errors.render())
    }

    /// The process exit code.
    pub fn exit_code(&self) -> ExitCode {
        ExitCode::from(self.code)
    }

    /// `{"error": {"kind", "message", "exit_code", ...details}}`: what `--output json` prints.
    pub fn to_json(&self) -> serde_json::Value {
        let mut error = serde_json::json!({
            "kind": self.kind,
            "message": self.message,
            "exit_code": self.code,
        });
        if let (Some(serde_json::Value::Object(extra)), Some(fields)) =
            (&self.details, error.as_object_mut())
        {
            for (k, v) in extra {
                fields.entry(k.clone()).or_insert_with(|| v.clone());
            }
        }
        serde_json::json!({ "error": error })
    }
}

impl From<&ClientError> for Failure {
    /// A failed exchange with the daemon: the daemon's own kind when it answered, else what
    /// kept it from answering.
    fn from(e: &ClientError) -> Self {
        let kind = match e {
            ClientError::Forbidden { .. } => "forbidden",
            ClientError::Connect { .. } => "unreachable",
            ClientError::Http { .. } | ClientError::Decode { .. } => "protocol",
            ClientError::Timeout { .. } => "no_answer",
            ClientError::Api { kind, .. } => api_kind(kind),
        };
        let mut failure = Self::of(kind, e);
        if let ClientError::Api {
            details: Some(details),
            ..
        } = e
        {
            failure.details = Some(details.clone());
        }
        failure
    }
}

/// The daemon's error kinds (`api::protocol::ErrorDetail`), as the static strings failures
/// carry; a kind this CLI does not know (a newer daemon) is `error`.
fn api_kind(kind: &str) -> &'static str {
    const KINDS: [&str; 10] = [
        "bad_request",
        "invalid_config",
        "forbidden",
        "not_found",
        "conflict",
        "held",
        "busy",
        "dataplane",
        "store",
        "encode",
    ];
    KINDS.into_iter().find(|k| *k == kind).unwrap_or("error")
}
