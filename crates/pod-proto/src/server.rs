//! The part every server shares: bind a private socket, accept, check the
//! peer, shake hands, and hand each connection to its own task.
//!
//! Keeping this in one place means no server can forget the uid check or
//! the handshake, and a misbehaving connection only ever ends its own task.

use std::collections::BTreeMap;
use std::future::Future;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use interprocess::local_socket::tokio::prelude::*;
use interprocess::local_socket::tokio::{Listener, Stream};
use interprocess::local_socket::{GenericFilePath, ListenerOptions};
use interprocess::os::unix::local_socket::ListenerOptionsExt;
use tokio::sync::Semaphore;
use tokio::task::AbortHandle;
use tracing::Instrument;

use crate::peer::{peer_cred, require_same_user};
use crate::{
    Connection, PeerCred, ProtoError, FRAME_TIMEOUT, HANDSHAKE_TIMEOUT, IDLE_TIMEOUT, MAX_CONNECTIONS,
    MAX_PENDING_HANDSHAKES,
};

/// A listener and the socket file it made. Dropped, it removes that file,
/// but only while the path still names that very file (device and inode):
/// if the folder was removed and another server bound the same path since,
/// that server's socket stays.
pub struct Bound {
    listener: Listener,
    path: PathBuf,
    file: (u64, u64),
}

impl Drop for Bound {
    fn drop(&mut self) {
        let ours = std::fs::symlink_metadata(&self.path).is_ok_and(|m| (m.dev(), m.ino()) == self.file);
        if ours {
            if let Err(e) = std::fs::remove_file(&self.path) {
                tracing::debug!(socket = %self.path.display(), error = %e, "cannot remove the socket file");
            }
        }
    }
}

/// Binds a listener at `path` with mode 0600. An existing socket file is
/// removed only when nobody answers on it (a server that died without
/// cleaning up); a live server makes this fail with `AddrInUse`. The
/// socket file goes when the [`Bound`] is dropped, if it is still its own.
pub async fn bind(path: &Path) -> Result<Bound, ProtoError> {
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
    let listener = ListenerOptions::new().name(name).mode(0o600).reclaim_name(false).create_tokio()?;
    let made = std::fs::symlink_metadata(path)?;
    Ok(Bound { listener, path: path.to_path_buf(), file: (made.dev(), made.ino()) })
}

/// Accepts connections until `shutdown` completes. Each accepted connection
/// is checked (same uid) and handshaken within [`HANDSHAKE_TIMEOUT`], and
/// then given to `handler` in its own task.
///
/// Fair under idle load: the accept loop never waits for a free slot, so a
/// client holding many connections open cannot keep others from being
/// accepted. At most [`MAX_PENDING_HANDSHAKES`] connections may be between
/// accept and the end of their handshake; one more closes the oldest of
/// them (as does running out of file descriptors), and each is closed when
/// its [`HANDSHAKE_TIMEOUT`] passes. At most [`MAX_CONNECTIONS`] are served
/// at once; past that a new one is answered `proto.busy` and closed.
pub async fn serve<H, Fut, S>(bound: Bound, shutdown: S, handler: H)
where
    H: Fn(Connection, PeerCred) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send + 'static,
    S: Future<Output = ()>,
{
    raise_fd_limit();
    let idle = idle_timeout();
    let handler = Arc::new(handler);
    let permits = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let pending: Arc<Mutex<Pending>> = Arc::default();
    tokio::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            () = &mut shutdown => return,
            accepted = bound.listener.accept() => accepted,
        };
        let stream = match accepted {
            Ok(s) => s,
            Err(e) if matches!(e.raw_os_error(), Some(EMFILE | ENFILE)) => {
                // Out of descriptors: the oldest unfinished handshake gives
                // its own back, so a real client is not locked out.
                if !lock(&pending).evict_oldest() {
                    tracing::warn!(error = %e, "accept failed: out of file descriptors");
                    tokio::time::sleep(ACCEPT_PAUSE).await;
                }
                continue;
            }
            Err(e) => {
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(ACCEPT_PAUSE).await;
                continue;
            }
        };
        let (handler, permits, tracked) = (Arc::clone(&handler), Arc::clone(&permits), Arc::clone(&pending));
        // Held across spawn and insert, so the task cannot remove its entry
        // before it is there.
        let mut table = lock(&pending);
        let id = table.next_id();
        let task = tokio::spawn(async move {
            let opened = tokio::time::timeout(HANDSHAKE_TIMEOUT, open(stream, idle)).await;
            lock(&tracked).remove(id);
            let (mut conn, peer) = match opened {
                Ok(Some(opened)) => opened,
                Ok(None) => return,
                Err(_) => {
                    tracing::debug!(?HANDSHAKE_TIMEOUT, "handshake not finished in time; closing");
                    return;
                }
            };
            let Ok(_permit) = permits.try_acquire_owned() else {
                tracing::warn!(max = MAX_CONNECTIONS, peer_pid = peer.pid, "connection cap reached; refusing");
                conn.refuse(&ProtoError::Busy { max: MAX_CONNECTIONS }).await;
                return;
            };
            let span = tracing::info_span!("conn", peer_pid = peer.pid);
            handler(conn, peer).instrument(span).await;
        });
        table.insert(id, task.abort_handle());
        if table.len() > MAX_PENDING_HANDSHAKES {
            table.evict_oldest();
        }
    }
}

/// Peer check and handshake; `None` (after an error frame where one can be
/// sent) when the connection is refused.
async fn open(stream: Stream, idle: Duration) -> Option<(Connection, PeerCred)> {
    let mut conn = Connection::new(stream);
    conn.set_idle_timeout(idle);
    let peer = match peer_cred(conn.stream()).and_then(|p| require_same_user(&p).map(|()| p)) {
        Ok(p) => p,
        Err(e) => {
            tracing::warn!(error = %e, "peer refused");
            conn.refuse(&e).await;
            return None;
        }
    };
    match conn.server_handshake().await {
        Ok(hello) => {
            tracing::debug!(client = %hello.client, peer_pid = peer.pid, "handshake done");
            Some((conn, peer))
        }
        Err(e) => {
            tracing::info!(error = %e, code = e.code(), peer_pid = peer.pid, "handshake failed");
            conn.refuse(&e).await;
            None
        }
    }
}

const EMFILE: i32 = 24;
const ENFILE: i32 = 23;
/// Pause after an accept error that closing a handshake did not cure.
const ACCEPT_PAUSE: Duration = Duration::from_millis(10);

/// Connections between accept and the end of their handshake, oldest first.
#[derive(Default)]
struct Pending {
    next: u64,
    tasks: BTreeMap<u64, AbortHandle>,
}

impl Pending {
    fn next_id(&mut self) -> u64 {
        self.next += 1;
        self.next
    }

    fn insert(&mut self, id: u64, task: AbortHandle) {
        self.tasks.insert(id, task);
    }

    fn remove(&mut self, id: u64) {
        self.tasks.remove(&id);
    }

    fn len(&self) -> usize {
        self.tasks.len()
    }

    /// Closes the oldest unfinished handshake; false when there is none.
    fn evict_oldest(&mut self) -> bool {
        match self.tasks.pop_first() {
            Some((_, task)) => {
                task.abort();
                true
            }
            None => false,
        }
    }
}

fn lock(pending: &Mutex<Pending>) -> MutexGuard<'_, Pending> {
    pending.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The test-only environment variable that shortens [`IDLE_TIMEOUT`] (in
/// milliseconds) for the servers of a process, so a test can make a daemon
/// close an idle connection without waiting five minutes.
pub const IDLE_TIMEOUT_ENV: &str = "POD_TEST_IDLE_TIMEOUT_MS";

fn idle_timeout() -> Duration {
    match std::env::var(IDLE_TIMEOUT_ENV).ok().and_then(|v| v.parse::<u64>().ok()) {
        Some(ms) => {
            tracing::warn!(ms, "{IDLE_TIMEOUT_ENV} shortens the idle timeout (a test-only setting)");
            Duration::from_millis(ms)
        }
        None => IDLE_TIMEOUT,
    }
}

/// Raises this process's soft limit of open files to its hard limit, so
/// that a server's connection bounds, not the default 1024 descriptors,
/// decide what happens under many connections.
pub fn raise_fd_limit() {
    use rustix::process::{getrlimit, setrlimit, Resource};
    let limit = getrlimit(Resource::Nofile);
    if limit.current < limit.maximum {
        if let Err(e) = setrlimit(Resource::Nofile, rustix::process::Rlimit { current: limit.maximum, ..limit }) {
            tracing::debug!(error = %e, "cannot raise the open-file limit");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_listener_removes_its_socket_file_but_never_a_newer_servers() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("server.sock");
        drop(bind(&path).await.expect("bind"));
        assert!(!path.exists(), "a listener's own socket file goes with it");

        // The file is removed under a running server (its folder cleaned
        // up) and another server binds the same path.
        let old = bind(&path).await.expect("bind");
        std::fs::remove_file(&path).expect("remove the socket file");
        let new = bind(&path).await.expect("bind the same path again");
        drop(old);
        assert!(path.exists(), "the older server's drop left the newer server's socket file");
        Connection::connect(&path).await.expect("the newer server is still reachable");
        drop(new);
        assert!(!path.exists(), "the newer server's own socket file goes with it");
    }
}
