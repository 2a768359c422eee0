//! What can go wrong talking to etcd. Every variant names the endpoints or the key and says what
//! to do; statuses are classified by their gRPC code, never by their message.

use std::{path::PathBuf, time::Duration};

use tonic::Code;

/// A failure of the etcd source, the status writer, the election or a fleet write.
#[derive(Debug, thiserror::Error)]
pub enum EtcdError {
    /// `--etcd-endpoints` is empty or an endpoint is malformed.
    #[error(
        "etcd endpoint `{endpoint}` is not valid: {why} (expected `http://HOST:2379` or `https://HOST:2379`, several separated by commas)"
    )]
    BadEndpoint {
        /// The endpoint.
        endpoint: String,
        /// The rule it breaks.
        why: &'static str,
    },
    /// The TLS flags do not fit together or with the endpoints.
    #[error("etcd TLS options: {why}")]
    TlsOptions {
        /// What does not fit.
        why: &'static str,
    },
    /// A TLS file cannot be read.
    #[error("cannot read {flag} {}", path.display())]
    TlsFile {
        /// The flag that named it (`--etcd-cacert` ...).
        flag: &'static str,
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// `--etcd-user` without `--etcd-password-file`, or the reverse.
    #[error("etcd auth options: {why}")]
    AuthOptions {
        /// What is missing.
        why: &'static str,
    },
    /// The password file cannot be read.
    #[error("cannot read --etcd-password-file {}", path.display())]
    PasswordFile {
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The password file is empty.
    #[error("--etcd-password-file {} is empty", path.display())]
    EmptyPassword {
        /// The file.
        path: PathBuf,
    },
    /// The password file can be read or written by every local user.
    #[error(
        "--etcd-password-file {} is accessible to every local user (mode {mode:o}); run `chmod 600 {}`",
        path.display(),
        path.display()
    )]
    PasswordFileMode {
        /// The file.
        path: PathBuf,
        /// Its mode bits.
        mode: u32,
    },
    /// The prefix or the node name is not valid.
    #[error(transparent)]
    Key(#[from] crate::fleet::KeyError),
    /// Building the client failed before any request (bad URI, TLS material etcd-client refused).
    #[error("cannot set up an etcd client for {endpoints}")]
    Client {
        /// The endpoints.
        endpoints: String,
        /// The client's error.
        #[source]
        source: etcd_client::Error,
    },
    /// etcd refused the user name or password.
    #[error(
        "etcd at {endpoints} refused user `{user}`: check --etcd-user and the password in --etcd-password-file"
    )]
    AuthFailed {
        /// The endpoints.
        endpoints: String,
        /// The user.
        user: String,
        /// etcd's answer.
        #[source]
        source: etcd_client::Error,
    },
    /// No endpoint answered (down, unreachable, or the TLS handshake failed).
    #[error(
        "etcd at {endpoints} is unreachable ({op} {key}): check that etcd runs and the endpoints are right; with TLS, that --etcd-cacert signed etcd's certificate and that etcd accepts --etcd-cert"
    )]
    Unreachable {
        /// What was being done (`get`, `watch`, `put` ...).
        op: &'static str,
        /// The key.
        key: String,
        /// The endpoints.
        endpoints: String,
        /// The transport error.
        #[source]
        source: etcd_client::Error,
    },
    /// No answer in time.
    #[error("etcd at {endpoints} did not answer {op} {key} within {}", humantime::format_duration(*after))]
    Timeout {
        /// What was being done.
        op: &'static str,
        /// The key.
        key: String,
        /// The endpoints.
        endpoints: String,
        /// How long it waited.
        after: Duration,
    },
    /// The user lacks the permission.
    #[error(
        "etcd denied {op} {key} to {user}: grant the role the README's Fleet section lists (`veer-node-<node>`, `veer-driver` or `veer-operator`)"
    )]
    PermissionDenied {
        /// What was being done.
        op: &'static str,
        /// The key.
        key: String,
        /// `user NAME`, or `an unauthenticated client`.
        user: String,
        /// etcd's answer.
        #[source]
        source: etcd_client::Error,
    },
    /// A past revision is gone.
    #[error("{op} {key} at revision {revision}: etcd compacted that revision away")]
    Compacted {
        /// What was being done.
        op: &'static str,
        /// The key.
        key: String,
        /// The revision asked for.
        revision: i64,
        /// etcd's answer.
        #[source]
        source: etcd_client::Error,
    },
    /// A compare-and-swap found the key changed since it was read.
    #[error(
        "{key} changed since it was read (expected {expected}, now {}): read it again, redo the change and retry",
        revision_text(*current)
    )]
    Conflict {
        /// The key.
        key: String,
        /// What the write expected.
        expected: super::Expect,
        /// The key's mod revision now (0: absent).
        current: i64,
    },
    /// A fenced write found that this daemon no longer leads.
    #[error(
        "{key} not written: this daemon is no longer the rollout driver (its election key {leader_key} is gone); the new driver goes on from the recorded progress"
    )]
    LeadershipLost {
        /// The key it wanted to write.
        key: String,
        /// Its election key.
        leader_key: String,
    },
    /// A watch was canceled by etcd for another reason than compaction.
    #[error("etcd canceled the watch of {key}: {reason}")]
    WatchCanceled {
        /// The key or prefix.
        key: String,
        /// etcd's reason (`permission denied` ...).
        reason: String,
    },
    /// A stream (watch, lease keep-alive, election) ended.
    #[error("etcd at {endpoints} closed the {what} stream")]
    StreamEnded {
        /// Which stream.
        what: &'static str,
        /// The endpoints.
        endpoints: String,
    },
    /// The lease is gone (it expired while etcd could not be reached, or was revoked).
    #[error("lease {lease:x} for {key} expired or was revoked")]
    LeaseLost {
        /// The lease id.
        lease: i64,
        /// The key it holds.
        key: String,
    },
    /// A document under the prefix does not parse.
    #[error("{key} (mod revision {mod_revision}) is not a valid {what}")]
    BadDocument {
        /// The key.
        key: String,
        /// Its mod revision.
        mod_revision: i64,
        /// What it should be (`node status`, `rollout plan` ...).
        what: &'static str,
        /// The parse error.
        #[source]
        source: serde_json::Error,
    },
    /// A status stored under a key that is not its node's.
    #[error("{key} holds the status of node {node}: a status must be under its own node's key")]
    ForeignStatus {
        /// The key.
        key: String,
        /// The node the document names.
        node: String,
    },
    /// A status for another node was handed to this node's writer.
    #[error("the status writer of node {writer} was given the status of node {given}")]
    WrongNode {
        /// The writer's node.
        writer: String,
        /// The status's node.
        given: String,
    },
    /// Any other refusal, with etcd's answer.
    #[error("etcd at {endpoints} refused {op} {key}")]
    Request {
        /// What was being done.
        op: &'static str,
        /// The key.
        key: String,
        /// The endpoints.
        endpoints: String,
        /// etcd's answer.
        #[source]
        source: etcd_client::Error,
    },
}

fn revision_text(rev: i64) -> String {
    if rev == 0 {
        "absent".to_owned()
    } else {
        format!("mod revision {rev}")
    }
}

impl EtcdError {
    /// Whether the failure says nothing about the request itself: etcd could not be reached or
    /// did not answer in time (retrying later may work).
    pub fn is_unreachable(&self) -> bool {
        matches!(
            self,
            EtcdError::Unreachable { .. }
                | EtcdError::Timeout { .. }
                | EtcdError::StreamEnded { .. }
        )
    }

    /// Classifies an etcd-client error by its gRPC code.
    pub(super) fn from_client(
        op: &'static str,
        key: &str,
        endpoints: &str,
        user: Option<&str>,
        source: etcd_client::Error,
    ) -> EtcdError {
        let key = key.to_owned();
        let endpoints = endpoints.to_owned();
        let code = match &source {
            // A stream broken by the connection surfaces as `Unknown` or `Internal`, with the
            // failure as its source.
            etcd_client::Error::GRpcStatus(status) if from_transport(status) => {
                Some(Code::Unavailable)
            }
            etcd_client::Error::GRpcStatus(status) => Some(status.code()),
            etcd_client::Error::TransportError(_) => Some(Code::Unavailable),
            _ => None,
        };
        match code {
            Some(Code::Unavailable | Code::DeadlineExceeded | Code::Cancelled) => {
                EtcdError::Unreachable {
                    op,
                    key,
                    endpoints,
                    source,
                }
            }
            Some(Code::PermissionDenied | Code::Unauthenticated) => EtcdError::PermissionDenied {
                op,
                key,
                user: user.map_or_else(
                    || "an unauthenticated client (no --etcd-user)".to_owned(),
                    |u| format!("user {u}"),
                ),
                source,
            },
            _ => EtcdError::Request {
                op,
                key,
                endpoints,
                source,
            },
        }
    }
}

/// Whether a status was made on this side from a failure of the connection or stream (reset,
/// refused, TLS, HTTP/2 error) rather than sent by etcd: tonic keeps the failure as the
/// status's source, while a status etcd sent (decoded from its trailers) has none.
fn from_transport(status: &tonic::Status) -> bool {
    std::error::Error::source(status).is_some()
}

/// Whether an etcd-client error is etcd's "revision compacted" answer (`OutOfRange`).
pub(super) fn is_compacted(e: &etcd_client::Error) -> bool {
    matches!(e, etcd_client::Error::GRpcStatus(s) if s.code() == Code::OutOfRange)
}
