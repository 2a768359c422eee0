//! The socket: created mode 0600 (0660 and owned by the allowed group, when one is configured),
//! each connection's peer checked with `SO_PEERCRED` before any request is read.

use std::{
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
};

use hyper::{StatusCode, server::conn::http1, service::service_fn};
use hyper_util::rt::TokioIo;
use tokio::net::{UnixListener, UnixStream};

use super::handlers;
use crate::control::Controller;

/// Who may use the socket besides root.
#[derive(Clone, Copy, Debug, Default)]
pub struct Access {
    /// Members (by primary gid, as `SO_PEERCRED` reports it) of this group.
    pub gid: Option<u32>,
}

impl Access {
    /// Whether a peer may make requests.
    pub fn allows(&self, uid: u32, gid: u32) -> bool {
        uid == 0 || self.gid == Some(gid)
    }
}

/// Why the socket could not be set up.
#[derive(Debug, thiserror::Error)]
#[error("setting up the control socket {}: {op}", path.display())]
pub struct SocketError {
    /// The socket path.
    pub path: PathBuf,
    /// What failed.
    pub op: &'static str,
    /// The OS error.
    #[source]
    pub source: std::io::Error,
}

/// Fails when another daemon answers on `path` (checked again when binding; a daemon checks
/// early so that it gives up before it touches anything).
pub fn ensure_unused(path: &Path) -> Result<(), SocketError> {
    if path.exists() && std::os::unix::net::UnixStream::connect(path).is_ok() {
        return Err(SocketError {
            path: path.to_owned(),
            op: "another veer daemon answers on it",
            source: std::io::Error::from(std::io::ErrorKind::AddrInUse),
        });
    }
    Ok(())
}

/// Binds the socket: creates its directory, replaces a stale socket file, sets permissions.
pub fn bind(path: &Path, access: Access) -> Result<UnixListener, SocketError> {
    let err = |op| {
        let path = path.to_owned();
        move |source| SocketError { path, op, source }
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(err("creating its directory"))?;
    }
    if path.exists() {
        ensure_unused(path)?;
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

/// Accepts connections with `accept` and hands each to `handle` until `shutdown` resolves. A
/// failed accept (out of file descriptors, say) is logged and the loop goes on.
pub(crate) async fn accept_until<S, Fut>(
    what: &'static str,
    mut accept: impl FnMut() -> Fut,
    shutdown: impl std::future::Future<Output = ()>,
    mut handle: impl FnMut(S),
) where
    Fut: std::future::Future<Output = std::io::Result<S>>,
{
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => return,
            accepted = accept() => match accepted {
                Ok(stream) => handle(stream),
                Err(e) => tracing::warn!(error = %e, listener = what, "accept failed"),
            },
        }
    }
}

/// Serves requests until `shutdown` resolves.
pub async fn serve(
    listener: UnixListener,
    ctl: Arc<Mutex<Controller>>,
    access: Access,
    shutdown: impl std::future::Future<Output = ()>,
) {
    let accept = || async { listener.accept().await.map(|(s, _)| s) };
    accept_until("control socket", accept, shutdown, |stream| {
        tokio::spawn(connection(stream, Arc::clone(&ctl), access));
    })
    .await;
}

async fn connection(stream: UnixStream, ctl: Arc<Mutex<Controller>>, access: Access) {
    let peer_uid = stream.peer_cred().map(|c| c.uid()).ok();
    let allowed = match stream.peer_cred() {
        Ok(cred) if access.allows(cred.uid(), cred.gid()) => true,
        Ok(cred) => {
            tracing::warn!(uid = cred.uid(), gid = cred.gid(), pid = ?cred.pid(), "refused a control request from a peer that is not root nor in the allowed group");
            false
        }
        Err(e) => {
            tracing::warn!(error = %e, "refused a control connection: no peer credentials");
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
    if let Err(e) = http1::Builder::new()
        .serve_connection(TokioIo::new(stream), service)
        .await
    {
        tracing::debug!(error = %e, "control connection ended with an error");
    }
}
