//! The Pod's socket: each connection reads requests and forwards them to the
//! owner task, except log reads, which only read the durable log and so are
//! served here without holding up mutations.

use std::sync::Arc;
use std::time::Duration;

use pod_proto::{Connection, PeerCred, WireError};
use session_log::SessionLog;
use tokio::sync::{mpsc, oneshot};

use crate::process::owner::OwnerMsg;
use crate::protocol::{PodReply, PodRequest, MAX_LOG_PAGE};

/// Longest a `Log` request may wait for new records.
pub const MAX_LOG_WAIT: Duration = Duration::from_secs(30);

pub async fn handle_connection(
    mut conn: Connection,
    peer: PeerCred,
    owner: mpsc::Sender<OwnerMsg>,
    log: Arc<SessionLog>,
) {
    loop {
        let request = match conn.read_frame::<PodRequest>().await {
            Ok(Some(r)) => r,
            Ok(None) => return,
            Err(e) => {
                tracing::info!(error = %e, code = e.code(), "bad request frame; closing");
                conn.refuse(&e).await;
                return;
            }
        };
        let answer = match request {
            PodRequest::Log { from_seq, wait_ms } => read_log(&log, from_seq, wait_ms).await,
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

async fn read_log(log: &Arc<SessionLog>, from_seq: u64, wait_ms: u64) -> Result<PodReply, WireError> {
    let log = Arc::clone(log);
    let wait = Duration::from_millis(wait_ms).min(MAX_LOG_WAIT);
    tokio::task::spawn_blocking(move || {
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
    })
    .await
    .map_err(|e| WireError::new("pod.internal", format!("log reader failed: {e}")))?
}
