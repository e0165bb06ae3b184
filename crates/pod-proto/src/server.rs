//! The part every server shares: bind a private socket, accept, check the
//! peer, shake hands, and hand each connection to its own task.
//!
//! Keeping this in one place means no server can forget the uid check or
//! the handshake, and a misbehaving connection only ever ends its own task.

use std::future::Future;
use std::io;
use std::path::Path;
use std::sync::Arc;

use interprocess::local_socket::tokio::prelude::*;
use interprocess::local_socket::tokio::Listener;
use interprocess::local_socket::{GenericFilePath, ListenerOptions};
use interprocess::os::unix::local_socket::ListenerOptionsExt;
use tokio::sync::Semaphore;
use tracing::Instrument;

use crate::peer::{peer_cred, require_same_user};
use crate::{Connection, PeerCred, ProtoError, FRAME_TIMEOUT, MAX_CONNECTIONS};

/// Binds a listener at `path` with mode 0600. An existing socket file is
/// removed only when nobody answers on it (a server that died without
/// cleaning up); a live server makes this fail with `AddrInUse`. The
/// listener removes its socket file when dropped.
pub async fn bind(path: &Path) -> Result<Listener, ProtoError> {
    if path.exists() {
        let probe = tokio::time::timeout(FRAME_TIMEOUT, Connection::connect(path)).await;
        if let Ok(Ok(_)) = probe {
            return Err(ProtoError::Io(io::Error::new(
                io::ErrorKind::AddrInUse,
                format!("another server answers on {}", path.display()),
            )));
        }
        match std::fs::remove_file(path) {
            Ok(()) => tracing::info!(socket = %path.display(), "removed a stale socket file"),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e.into()),
        }
    }
    let name = path.to_fs_name::<GenericFilePath>()?;
    let listener = ListenerOptions::new().name(name).mode(0o600).create_tokio()?;
    Ok(listener)
}

/// Accepts connections until `shutdown` completes. Each accepted connection
/// is checked (same uid), handshaken, and then given to `handler` in its own
/// task; at most [`MAX_CONNECTIONS`] run at once.
pub async fn serve<H, Fut, S>(listener: Listener, shutdown: S, handler: H)
where
    H: Fn(Connection, PeerCred) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send + 'static,
    S: Future<Output = ()>,
{
    let handler = Arc::new(handler);
    let permits = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    tokio::pin!(shutdown);
    loop {
        let permit = tokio::select! {
            () = &mut shutdown => return,
            permit = permits.clone().acquire_owned() => match permit {
                Ok(p) => p,
                Err(_) => return,
            },
        };
        let stream = tokio::select! {
            () = &mut shutdown => return,
            accepted = listener.accept() => match accepted {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    continue;
                }
            },
        };
        let handler = Arc::clone(&handler);
        tokio::spawn(async move {
            let _permit = permit;
            let mut conn = Connection::new(stream);
            let peer = match peer_cred(conn.stream()).and_then(|p| require_same_user(&p).map(|()| p)) {
                Ok(p) => p,
                Err(e) => {
                    tracing::warn!(error = %e, "peer refused");
                    conn.refuse(&e).await;
                    return;
                }
            };
            let span = tracing::info_span!("conn", peer_pid = peer.pid);
            async move {
                match conn.server_handshake().await {
                    Ok(hello) => {
                        tracing::debug!(client = %hello.client, "handshake done");
                        handler(conn, peer).await;
                    }
                    Err(e) => {
                        tracing::info!(error = %e, code = e.code(), "handshake failed");
                        conn.refuse(&e).await;
                    }
                }
            }
            .instrument(span)
            .await;
        });
    }
}
