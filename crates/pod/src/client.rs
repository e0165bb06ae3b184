//! Talking to a running Pod: connect to its socket, shake hands, call.

use std::path::Path;
use std::time::Duration;

use pod_proto::{Connection, ProtoError, WireError};

use crate::protocol::{PodReply, PodRequest};

/// Longest a caller waits to connect and shake hands with a Pod.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

pub struct PodClient {
    conn: Connection,
}

impl PodClient {
    pub async fn connect(socket: &Path) -> Result<PodClient, ProtoError> {
        let connect = async {
            let mut conn = Connection::connect(socket).await?;
            conn.client_handshake("pod").await?;
            Ok::<_, ProtoError>(conn)
        };
        let conn = tokio::time::timeout(CONNECT_TIMEOUT, connect)
            .await
            .map_err(|_| ProtoError::Timeout(CONNECT_TIMEOUT))??;
        Ok(PodClient { conn })
    }

    pub async fn call(&mut self, request: &PodRequest) -> Result<PodReply, ProtoError> {
        self.conn.call(request).await
    }

    /// One request on a fresh connection, errors as `WireError`.
    pub async fn call_at(socket: &str, request: &PodRequest) -> Result<PodReply, WireError> {
        PodClient::call_once(socket, request).await.map_err(|e| e.to_wire())
    }

    /// One request on a fresh connection. `ProtoError::Remote` is the Pod's
    /// own answer; every other error means the Pod could not be reached.
    pub async fn call_once(socket: &str, request: &PodRequest) -> Result<PodReply, ProtoError> {
        let mut client = PodClient::connect(Path::new(socket)).await?;
        client.call(request).await
    }

    /// A bounded liveness probe: does a Pod named `expected` answer here?
    pub async fn ping(socket: &Path, limit: Duration) -> Option<(scope::PodName, u32)> {
        let probe = async {
            let mut client = PodClient::connect(socket).await.ok()?;
            match client.call(&PodRequest::Ping).await.ok()? {
                PodReply::Pong { name, pid } => Some((name, pid)),
                _ => None,
            }
        };
        tokio::time::timeout(limit, probe).await.ok().flatten()
    }
}
