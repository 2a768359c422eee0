//! The socket: created mode 0600 (0660 and owned by the allowed group, when one is configured),
//! each connection's peer checked with `SO_PEERCRED` and `SO_PEERGROUPS` before any request is
//! read (`Access` says who is let in, and why so).
//!
//! No local user can take it down: connections are capped (`Budget`: root's share is its own,
//! whatever other peers open, and the metrics listener has a separate one), every request must
//! send its headers within `HEADER_TIMEOUT` and its body within `handlers::BODY_TIMEOUT` (at
//! most 4 MiB), a connection lives at most `CONTROL_LIFETIME`, and failed accepts neither spin
//! nor flood the log.

use std::{
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    time::Duration,
};

use hyper::{StatusCode, server::conn::http1, service::service_fn};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::{
    net::{UnixListener, UnixStream},
    sync::{OwnedSemaphorePermit, Semaphore},
};

use super::handlers;
use crate::control::Controller;

/// Who may use the socket besides root.
///
/// A peer is a member of the group when it held the group, as its primary group or a
/// supplementary one, at the moment it connected: the kernel records both then
/// (`SO_PEERCRED`, `SO_PEERGROUPS`), nothing the peer does later changes them, and they are
/// the credentials the socket file's mode (0660, group-owned) already let in. Two other ways
/// were rejected: reading `/proc/<pid>/status` of the peer races with the pid being reused or
/// the process changing its groups after connecting; asking the group database
/// (`getgrouplist` for the peer's user) would let in a process that dropped the group on
/// purpose (a sandboxed service, `setpriv --clear-groups`), and its NSS lookups can block.
#[derive(Clone, Copy, Debug, Default)]
pub struct Access {
    /// Members of this group (primary or supplementary, when they connected).
    pub gid: Option<u32>,
}

impl Access {
    /// Whether a peer with user `uid`, primary group `gid` and supplementary `groups` (as the
    /// kernel recorded them when it connected) may make requests.
    pub fn allows(&self, uid: u32, gid: u32, groups: &[u32]) -> bool {
        uid == 0 || self.gid.is_some_and(|g| g == gid || groups.contains(&g))
    }
}

/// `SO_PEERGROUPS` (Linux 4.13) in `include/uapi/asm-generic/socket.h`, the value on x86 and
/// arm (not exported by the `libc` crate).
const SO_PEERGROUPS: libc::c_int = 59;

/// The supplementary groups the peer of `stream` held when it connected (`SO_PEERGROUPS`).
fn peer_groups(stream: &UnixStream) -> std::io::Result<Vec<u32>> {
    use std::os::fd::AsRawFd as _;
    // NGROUPS_MAX.
    const MAX: usize = 65_536;
    let mut groups: Vec<libc::gid_t> = vec![0; 32];
    loop {
        let mut len = libc::socklen_t::try_from(groups.len() * size_of::<libc::gid_t>())
            .unwrap_or(libc::socklen_t::MAX);
        // SAFETY: the kernel writes at most `len` bytes into `groups`, which holds that many,
        // and writes the size it needs into `len`.
        let rc = unsafe {
            libc::getsockopt(
                stream.as_raw_fd(),
                libc::SOL_SOCKET,
                SO_PEERGROUPS,
                groups.as_mut_ptr().cast(),
                &raw mut len,
            )
        };
        let needed = len as usize / size_of::<libc::gid_t>();
        if rc == 0 {
            groups.truncate(needed);
            return Ok(groups);
        }
        let e = std::io::Error::last_os_error();
        if e.raw_os_error() == Some(libc::ERANGE) && needed > groups.len() && needed <= MAX {
            groups.resize(needed, 0);
            continue;
        }
        return Err(e);
    }
}

/// Why the socket could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum SocketError {
    /// Another daemon answers on the path.
    #[error(
        "control socket {}: another veer daemon answers on it; stop it first (systemctl stop veer), or give this one another --socket",
        path.display()
    )]
    InUse {
        /// The socket path.
        path: PathBuf,
    },
    /// Something that is not a stale socket is at the path: it is left as it is.
    #[error(
        "control socket {}: a {kind} is there, not a socket; veer replaces only a socket nobody answers on: move it away, or pass another --socket",
        path.display()
    )]
    NotASocket {
        /// The path.
        path: PathBuf,
        /// What is there (`regular file`, `directory`, `symbolic link` ...).
        kind: &'static str,
    },
    /// A system call failed.
    #[error("setting up the control socket {}: {op}", path.display())]
    Io {
        /// The socket path.
        path: PathBuf,
        /// What failed.
        op: &'static str,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
}

/// Whether `path` holds a socket nobody answers on (`true`: it may be replaced), nothing
/// (`false`), or something that must stay: a socket another daemon answers on, or anything that
/// is not a socket (never followed: a symbolic link is refused as such).
fn stale(path: &Path) -> Result<bool, SocketError> {
    use std::os::unix::fs::FileTypeExt as _;
    let meta = match std::fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
        Err(source) => {
            return Err(SocketError::Io {
                path: path.to_owned(),
                op: "looking at what is there",
                source,
            });
        }
    };
    if !meta.file_type().is_socket() {
        return Err(SocketError::NotASocket {
            path: path.to_owned(),
            kind: crate::files::kind_of(meta.file_type()),
        });
    }
    match std::os::unix::net::UnixStream::connect(path) {
        Ok(_) => Err(SocketError::InUse {
            path: path.to_owned(),
        }),
        // Nobody listens: the socket of a daemon that is gone.
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => Ok(true),
        Err(source) => Err(SocketError::Io {
            path: path.to_owned(),
            op: "checking whether a daemon answers on it",
            source,
        }),
    }
}

/// Fails when anything but a stale socket is at `path`: another daemon answering, or a file
/// that is not a socket (checked again when binding; a daemon checks early so that it gives up
/// before it touches anything).
pub fn ensure_unused(path: &Path) -> Result<(), SocketError> {
    stale(path).map(drop)
}

/// Binds the socket: creates its directory, replaces a stale socket (and nothing else), sets
/// permissions.
pub fn bind(path: &Path, access: Access) -> Result<UnixListener, SocketError> {
    let err = |op| {
        let path = path.to_owned();
        move |source| SocketError::Io { path, op, source }
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(err("creating its directory"))?;
    }
    if stale(path)? {
        std::fs::remove_file(path).map_err(err("removing a stale socket"))?;
    }
    // Bind with a umask that never lets the socket be wider than 0600 for an instant.
    // SAFETY: umask only swaps the process file-mode mask; restored right after bind.
    let old = unsafe { libc::umask(0o177) };
    let listener = UnixListener::bind(path);
    // SAFETY: as above.
    unsafe { libc::umask(old) };
    let listener = listener.map_err(err("binding"))?;
    if let Some(gid) = access.gid {
        std::os::unix::fs::chown(path, None, Some(gid))
            .map_err(err("giving it to the allowed group"))?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660))
            .map_err(err("setting its mode"))?;
    }
    Ok(listener)
}

/// Removes the daemon's socket at stop, if a socket is still what is there.
pub fn remove(path: &Path) {
    use std::os::unix::fs::FileTypeExt as _;
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_socket() => {
            if let Err(e) = std::fs::remove_file(path) {
                tracing::warn!(socket = %path.display(), error = %e, "could not remove the control socket");
            }
        }
        Ok(m) => {
            tracing::warn!(socket = %path.display(), kind = crate::files::kind_of(m.file_type()), "the control socket was replaced; leaving what is there");
        }
        Err(_) => {}
    }
}

/// How long a client has to send a request's headers; an idle connection (kept alive, or
/// opened and silent) is closed after as long.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a control connection may live (the CLI makes one request per connection).
pub const CONTROL_LIFETIME: Duration = Duration::from_mins(1);
/// How long after a failed accept (out of descriptors, say) the next one is tried.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// How many connections each listener may hold, from the daemon's descriptor limit: the
/// control socket's share is reserved whatever the metrics listener gets, and within it root's
/// share is reserved whatever other peers (members of `--socket-group`) open.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Budget {
    /// Control connections from root.
    pub control_root: usize,
    /// Control connections from any other peer, all together.
    pub control_others: usize,
    /// Metrics connections (beyond them, new ones wait in the kernel's backlog, costing the
    /// daemon no descriptor).
    pub metrics: usize,
}

impl Budget {
    /// Descriptors kept for everything but the listeners' connections: maps, programs, links,
    /// the state directory, health checks and gates, the runtime.
    pub const RESERVED: u64 = 128;

    /// The budget under a limit of `nofile` descriptors.
    pub fn for_limit(nofile: u64) -> Self {
        let spare = usize::try_from(nofile.saturating_sub(Self::RESERVED)).unwrap_or(usize::MAX);
        Self {
            control_root: (spare / 4).clamp(1, 64),
            control_others: (spare / 8).clamp(1, 32),
            metrics: (spare / 4).clamp(1, 64),
        }
    }
}

static ACCEPT_FAILED: crate::throttle::Throttle =
    crate::throttle::Throttle::new(Duration::from_secs(10));

/// Accepts connections with `accept` and hands each to `handle` until `shutdown` resolves. With
/// `slots`, a connection is accepted only once a slot is free (the others wait in the kernel's
/// backlog) and its permit goes with it. A failed accept (out of descriptors, say) is logged at
/// most every 10 s, with the count of those not logged, and the next is tried after a pause:
/// the loop never spins.
pub(crate) async fn accept_until<S, Fut>(
    what: &'static str,
    slots: Option<Arc<Semaphore>>,
    mut accept: impl FnMut() -> Fut,
    shutdown: impl std::future::Future<Output = ()>,
    mut handle: impl FnMut(S, Option<OwnedSemaphorePermit>),
) where
    Fut: std::future::Future<Output = std::io::Result<S>>,
{
    tokio::pin!(shutdown);
    loop {
        let permit = match &slots {
            Some(slots) => tokio::select! {
                () = &mut shutdown => return,
                permit = Arc::clone(slots).acquire_owned() => match permit {
                    Ok(p) => Some(p),
                    // Closed: never, the daemon owns it; stop serving all the same.
                    Err(_) => return,
                },
            },
            None => None,
        };
        tokio::select! {
            () = &mut shutdown => return,
            accepted = accept() => match accepted {
                Ok(stream) => handle(stream, permit),
                Err(e) => {
                    crate::throttled!(ACCEPT_FAILED, warn, error = %e, listener = what, "accept failed");
                    tokio::select! {
                        () = &mut shutdown => return,
                        () = tokio::time::sleep(ACCEPT_BACKOFF) => {}
                    }
                }
            },
        }
    }
}

static BUSY: crate::throttle::Throttle = crate::throttle::Throttle::new(Duration::from_secs(10));
static REFUSED_PEER: crate::throttle::Throttle =
    crate::throttle::Throttle::new(Duration::from_secs(10));
static CONNECTION_ERROR: crate::throttle::Throttle =
    crate::throttle::Throttle::new(Duration::from_secs(10));

/// Serves requests until `shutdown` resolves, at most `budget`'s connections at once.
pub async fn serve(
    listener: UnixListener,
    ctl: Arc<Mutex<Controller>>,
    access: Access,
    budget: Budget,
    shutdown: impl std::future::Future<Output = ()>,
) {
    let root = Arc::new(Semaphore::new(budget.control_root));
    let others = Arc::new(Semaphore::new(budget.control_others));
    let accept = || async { listener.accept().await.map(|(s, _)| s) };
    accept_until("control socket", None, accept, shutdown, |stream, _| {
        let uid = stream.peer_cred().map(|c| c.uid()).ok();
        let (pool, max) = if uid == Some(0) {
            (&root, budget.control_root)
        } else {
            (&others, budget.control_others)
        };
        match Arc::clone(pool).try_acquire_owned() {
            Ok(permit) => {
                tokio::spawn(connection(stream, Arc::clone(&ctl), access, permit));
            }
            Err(_) => busy(&stream, uid, max),
        }
    })
    .await;
}

/// Answers a connection over its class's budget with 503 at once, without reading it, and
/// closes it: it costs a descriptor for no longer than that.
fn busy(stream: &UnixStream, uid: Option<u32>, max: usize) {
    let who = if uid == Some(0) {
        "root"
    } else {
        "peers other than root"
    };
    let message = format!(
        "{max} control connections from {who} are open already; try again once they are done (idle ones close after {}s)",
        HEADER_TIMEOUT.as_secs()
    );
    crate::throttled!(
        BUSY,
        warn,
        ?uid,
        max,
        "control connection refused: too many open"
    );
    let body = serde_json::json!({ "error": { "kind": "busy", "message": message } }).to_string();
    let response = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    // Best effort: a fresh socket's buffer takes this whole; if not, the peer sees a close.
    drop(stream.try_write(response.as_bytes()));
}

async fn connection(
    stream: UnixStream,
    ctl: Arc<Mutex<Controller>>,
    access: Access,
    _permit: OwnedSemaphorePermit,
) {
    let peer_uid = stream.peer_cred().map(|c| c.uid()).ok();
    let groups = match (access.gid, peer_uid) {
        (Some(_), Some(uid)) if uid != 0 => peer_groups(&stream).unwrap_or_else(|e| {
            tracing::debug!(error = %e, "no supplementary groups of the peer");
            Vec::new()
        }),
        _ => Vec::new(),
    };
    let allowed = match stream.peer_cred() {
        Ok(cred) if access.allows(cred.uid(), cred.gid(), &groups) => true,
        Ok(cred) => {
            crate::throttled!(REFUSED_PEER, warn, uid = cred.uid(), gid = cred.gid(), pid = ?cred.pid(), "refused a control request from a peer that is not root nor in the allowed group");
            false
        }
        Err(e) => {
            crate::throttled!(REFUSED_PEER, warn, error = %e, "refused a control connection: no peer credentials");
            false
        }
    };
    let service = service_fn(move |req| {
        let ctl = Arc::clone(&ctl);
        async move {
            Ok::<_, std::convert::Infallible>(if allowed {
                handlers::handle(req, &ctl, handlers::Peer { uid: peer_uid }).await
            } else {
                handlers::error(
                    StatusCode::FORBIDDEN,
                    "forbidden",
                    "only root (or the group given with --socket-group) may use veer's control socket".to_owned(),
                )
            })
        }
    });
    let conn = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT)
        .serve_connection(TokioIo::new(stream), service);
    match tokio::time::timeout(CONTROL_LIFETIME, conn).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => {
            crate::throttled!(CONNECTION_ERROR, debug, error = %e, "control connection ended with an error");
        }
        Err(_) => {
            crate::throttled!(CONNECTION_ERROR, debug, lifetime = ?CONTROL_LIFETIME, "control connection closed: open too long");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{Access, Budget};

    #[test]
    fn members_are_let_in_by_their_primary_or_supplementary_group() {
        let none = Access::default();
        assert!(none.allows(0, 0, &[]));
        assert!(!none.allows(1000, 1000, &[1000]));
        let group = Access { gid: Some(600) };
        assert!(group.allows(0, 0, &[]), "root");
        assert!(group.allows(1000, 600, &[]), "primary group");
        assert!(group.allows(1000, 1000, &[27, 600]), "supplementary group");
        assert!(!group.allows(1000, 1000, &[27, 601]), "not a member");
    }

    #[test]
    fn the_budget_keeps_descriptors_for_the_daemon_and_shares_for_each_listener() {
        let b = |control_root, control_others, metrics| Budget {
            control_root,
            control_others,
            metrics,
        };
        assert_eq!(Budget::for_limit(65_536), b(64, 32, 64));
        assert_eq!(Budget::for_limit(1024), b(64, 32, 64));
        assert_eq!(Budget::for_limit(256), b(32, 16, 32));
        assert_eq!(Budget::for_limit(0), b(1, 1, 1));
        for nofile in [160, 256, 512, 1024] {
            let x = Budget::for_limit(nofile);
            let used = Budget::RESERVED as usize + x.control_root + x.control_others + x.metrics;
            assert!(used <= nofile as usize, "{nofile}: {x:?}");
        }
    }
}
