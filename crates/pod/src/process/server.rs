//! The Pod's socket: each connection reads requests and forwards them to the
//! owner task, except log reads, which only read the durable log and so are
//! served here without holding up mutations.

use std::sync::Arc;
use std::time::Duration;

use pod_proto::{Connection, PeerCred, WireError};
use session_log::SessionLog;
use tokio::sync::{mpsc, oneshot, watch};

use crate::process::owner::OwnerMsg;
use crate::protocol::{PodReply, PodRequest, MAX_LOG_PAGE};

/// Longest a `Log` request may wait for new records.
pub const MAX_LOG_WAIT: Duration = Duration::from_secs(30);

/// What every connection task holds: the way to the owner, the log, and
/// the shutdown protocol (a flag to stop reading new requests, and a token
/// whose drop tells the process this task is done).
#[derive(Clone)]
pub struct ConnectionContext {
    pub owner: mpsc::Sender<OwnerMsg>,
    pub log: Arc<SessionLog>,
    pub closing: watch::Receiver<bool>,
    pub done: mpsc::Sender<()>,
}

/// Serves one connection until the peer closes it or the Pod shuts down.
/// A request already read is always answered, even during shutdown, so a
/// caller of `Shutdown` or `StopChild` gets its reply before the exit.
pub async fn handle_connection(mut conn: Connection, peer: PeerCred, ctx: ConnectionContext) {
    let ConnectionContext { owner, log, mut closing, done: _done } = ctx;
    loop {
        let next = tokio::select! {
            next = conn.read_frame::<PodRequest>() => next,
            _ = closing.wait_for(|c| *c) => return,
        };
        let request = match next {
            Ok(Some(r)) => r,
            Ok(None) => return,
            Err(e) => {
                tracing::info!(error = %e, code = e.code(), "bad request frame; closing");
                conn.refuse(&e).await;
                return;
            }
        };
        let answer = match request {
            // A long-poll must not hold the Pod's exit: on shutdown it ends
            // early with what is there (the caller then reads the rest from
            // the log itself).
            PodRequest::Log { from_seq, wait_ms } => tokio::select! {
                answer = read_log(&log, from_seq, wait_ms) => answer,
                _ = closing.wait_for(|c| *c) => Ok(PodReply::Log { records: Vec::new(), next_seq: from_seq.max(1) }),
            },
            request => {
                let (tx, rx) = oneshot::channel();
                if owner.send(OwnerMsg::Request { request, peer, reply: tx }).await.is_err() {
                    Err(WireError::new("pod.shutting_down", "the pod is shutting down"))
                } else {
                    rx.await.unwrap_or_else(|_| Err(WireError::new("pod.shutting_down", "the pod is shutting down")))
                }
            }
        };
        if let Err(e) = conn.write_frame(&answer).await {
            tracing::debug!(error = %e, "reply not delivered");
            return;
        }
    }
}

/// Most `Log` long-polls waiting at once; more wait for a slot (without
/// holding a thread).
pub const MAX_LOG_WAITERS: usize = 64;

/// Slots for log long-polls. A long-poll blocks a thread for up to
/// [`MAX_LOG_WAIT`]; it gets a thread of its own, never one of tokio's
/// blocking pool, which the log appends of spawns and reclaims need.
fn log_waiters() -> &'static Arc<tokio::sync::Semaphore> {
    static SLOTS: std::sync::OnceLock<Arc<tokio::sync::Semaphore>> = std::sync::OnceLock::new();
    SLOTS.get_or_init(|| Arc::new(tokio::sync::Semaphore::new(MAX_LOG_WAITERS)))
}

async fn read_log(log: &Arc<SessionLog>, from_seq: u64, wait_ms: u64) -> Result<PodReply, WireError> {
    let log = Arc::clone(log);
    let wait = Duration::from_millis(wait_ms).min(MAX_LOG_WAIT);
    let read = move || {
        let from = from_seq.max(1);
        if wait > Duration::ZERO {
            log.wait_for_seq(from.saturating_sub(1), wait).map_err(|e| WireError::new(e.code(), e.to_string()))?;
        }
        let mut records = Vec::new();
        for record in log.read_from(from).take(MAX_LOG_PAGE) {
            records.push(record.map_err(|e| WireError::new(e.code(), e.to_string()))?);
        }
        let next_seq = records.last().map_or(from, |r| r.seq + 1);
        Ok(PodReply::Log { records, next_seq })
    };
    let failed = |e: &dyn std::fmt::Display| WireError::new("pod.internal", format!("log reader failed: {e}"));
    if wait == Duration::ZERO {
        return tokio::task::spawn_blocking(read).await.map_err(|e| failed(&e))?;
    }
    let slot = Arc::clone(log_waiters()).acquire_owned().await.map_err(|e| failed(&e))?;
    let (tx, rx) = oneshot::channel();
    std::thread::Builder::new()
        .name("pod-log-wait".into())
        .spawn(move || {
            let _slot = slot;
            // The connection may be gone by now; nothing to tell it then.
            let _ = tx.send(read());
        })
        .map_err(|e| failed(&e))?;
    rx.await.map_err(|e| failed(&e))?
}
