//! A framed, typed, timed connection over a local socket, and the handshake
//! that opens every conversation.
//!
//! Both ends exchange one frame before anything else (`Hello` from the
//! client, `Result<Welcome, WireError>` from the server) so that a client
//! built against another protocol version fails with a message naming both
//! versions instead of misreading frames.

use std::path::Path;
use std::time::Duration;

use interprocess::local_socket::tokio::prelude::*;
use interprocess::local_socket::tokio::Stream;
use interprocess::local_socket::GenericFilePath;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncWriteExt, BufReader};

use crate::{frame, ProtoError, WireError, FRAME_TIMEOUT, IDLE_TIMEOUT, MAX_CLIENT_NAME_BYTES, PROTOCOL_VERSION};

/// The client's first frame.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    pub protocol: u32,
    /// Free-form description for logs ("pod-registry ls", "pod lead"); never
    /// used for identity.
    pub client: String,
}

/// The server's answer to an accepted [`Hello`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Welcome {
    pub protocol: u32,
}

/// One end of a conversation: frames in, frames out, each bounded in time.
/// Reads are buffered so a frame usually costs one receive call, prefix and
/// body together; writes go straight to the socket, one call per frame.
pub struct Connection {
    stream: BufReader<Stream>,
    idle: Duration,
    frame: Duration,
}

impl Connection {
    pub fn new(stream: Stream) -> Connection {
        Connection { stream: BufReader::new(stream), idle: IDLE_TIMEOUT, frame: FRAME_TIMEOUT }
    }

    /// Connects to the filesystem socket at `path` (no handshake yet).
    pub async fn connect(path: &Path) -> Result<Connection, ProtoError> {
        let name = path.to_fs_name::<GenericFilePath>()?;
        Ok(Connection::new(Stream::connect(name).await?))
    }

    /// How long to wait for the first byte of the next frame (servers: before
    /// closing an idle connection).
    pub fn set_idle_timeout(&mut self, idle: Duration) {
        self.idle = idle;
    }

    pub fn stream(&self) -> &Stream {
        self.stream.get_ref()
    }

    /// Reads one frame; `Ok(None)` when the peer closed between frames.
    pub async fn read_frame<T: DeserializeOwned>(&mut self) -> Result<Option<T>, ProtoError> {
        match frame::read_body(&mut self.stream, self.idle, self.frame).await? {
            Some(body) => frame::decode(&body).map(Some),
            None => Ok(None),
        }
    }

    /// Resolves once the peer has closed the connection (or it failed)
    /// with nothing unread; bytes that arrive meanwhile stay buffered for
    /// the next `read_frame`, and then this never resolves (the peer is
    /// there). Cancel-safe: a server selects on it while it holds a call
    /// (a store wait), to give the waiter's place up when it goes away.
    pub async fn closed(&mut self) {
        use tokio::io::AsyncBufReadExt;
        match self.stream.fill_buf().await {
            Ok(buffered) if !buffered.is_empty() => std::future::pending().await,
            _ => {}
        }
    }

    /// Writes one frame in a single write call.
    pub async fn write_frame<T: Serialize>(&mut self, value: &T) -> Result<(), ProtoError> {
        let bytes = frame::encode(value)?;
        tokio::time::timeout(self.frame, self.stream.write_all(&bytes))
            .await
            .map_err(|_| ProtoError::Timeout(self.frame))??;
        Ok(())
    }

    /// Sends `request` and reads its `Result<T, WireError>` reply; an error
    /// frame becomes [`ProtoError::Remote`].
    ///
    /// The whole exchange is bounded by the idle timeout, kept by
    /// [`deadline`](crate::deadline) rather than by tokio timers: a pending
    /// timer makes every park of the runtime arm a kernel timer, which costs
    /// more than a local round trip on a virtual machine.
    pub async fn call<Req: Serialize, T: DeserializeOwned>(&mut self, request: &Req) -> Result<T, ProtoError> {
        self.call_within(request, self.idle).await
    }

    async fn call_within<Req: Serialize, T: DeserializeOwned>(
        &mut self,
        request: &Req,
        limit: Duration,
    ) -> Result<T, ProtoError> {
        let Stream::UdSocket(socket) = self.stream.get_ref();
        let armed = crate::deadline::arm(socket, limit)?;
        let exchanged = self.exchange(request).await;
        // Once fired, the socket is shut down: whatever came back, the
        // connection is over, and the cause is the deadline.
        if armed.fired() {
            return Err(ProtoError::Timeout(limit));
        }
        exchanged
    }

    async fn exchange<Req: Serialize, T: DeserializeOwned>(&mut self, request: &Req) -> Result<T, ProtoError> {
        let bytes = frame::encode(request)?;
        // A frame that was not written whole never reaches the server's
        // reader as a request (it sees a truncated frame or nothing).
        self.stream.write_all(&bytes).await.map_err(ProtoError::NotSent)?;
        let body = frame::read_body_untimed(&mut self.stream).await?;
        match body.map(|b| frame::decode::<Result<T, WireError>>(&b)).transpose()? {
            Some(Ok(reply)) => Ok(reply),
            Some(Err(wire)) => Err(ProtoError::Remote(wire)),
            None => Err(ProtoError::Closed),
        }
    }

    /// Client side of the handshake: returns the server's protocol version.
    pub async fn client_handshake(&mut self, client: &str) -> Result<u32, ProtoError> {
        let hello =
            Hello { protocol: PROTOCOL_VERSION, client: client.chars().take(MAX_CLIENT_NAME_BYTES / 4).collect() };
        let welcome: Welcome = self.call_within(&hello, self.frame).await?;
        if welcome.protocol != PROTOCOL_VERSION {
            return Err(ProtoError::VersionMismatch { ours: PROTOCOL_VERSION, theirs: welcome.protocol });
        }
        Ok(welcome.protocol)
    }

    /// Server side of the handshake. On error the caller sends
    /// [`Connection::refuse`] and closes.
    pub async fn server_handshake(&mut self) -> Result<Hello, ProtoError> {
        let saved = self.idle;
        self.idle = self.frame;
        // A Hello that does not come is a slow handshake, not an idle peer.
        let hello = self.read_frame::<Hello>().await.map_err(|e| match e {
            ProtoError::Idle(d) => ProtoError::Timeout(d),
            other => other,
        });
        self.idle = saved;
        let hello = hello?.ok_or(ProtoError::Closed)?;
        if hello.protocol != PROTOCOL_VERSION {
            return Err(ProtoError::VersionMismatch { ours: PROTOCOL_VERSION, theirs: hello.protocol });
        }
        if hello.client.len() > MAX_CLIENT_NAME_BYTES {
            return Err(ProtoError::bad_frame(format!(
                "client description is {} bytes; the limit is {MAX_CLIENT_NAME_BYTES}",
                hello.client.len()
            )));
        }
        self.write_frame(&Ok::<_, WireError>(Welcome { protocol: PROTOCOL_VERSION })).await?;
        Ok(hello)
    }

    /// Best-effort error frame before the server drops a connection it
    /// cannot continue (the peer may already be gone; nothing to do then).
    /// An idle connection is closed without one.
    pub async fn refuse(&mut self, error: &ProtoError) {
        if matches!(error, ProtoError::Idle(_)) {
            return;
        }
        let reply: Result<(), WireError> = Err(error.to_wire());
        if let Err(e) = self.write_frame(&reply).await {
            tracing::debug!(error = %e, "could not send the error frame");
        }
    }
}

#[cfg(test)]
mod tests {
    use interprocess::local_socket::traits::tokio::Listener as _;
    use interprocess::local_socket::ListenerOptions;

    use super::*;

    /// A server that reads the request and never answers: the call ends
    /// with `Timeout` once its limit passes, not when the server gives up.
    #[tokio::test]
    async fn a_call_without_an_answer_times_out() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("mute.sock");
        let name = path.as_path().to_fs_name::<GenericFilePath>().expect("name").into_owned();
        let listener = ListenerOptions::new().name(name).create_tokio().expect("listen");
        let server = tokio::spawn(async move {
            let mut conn = Connection::new(listener.accept().await.expect("accept"));
            let _request: Option<String> = conn.read_frame().await.expect("request");
            // Hold the connection open, silent, longer than the client waits.
            tokio::time::sleep(Duration::from_secs(30)).await;
        });
        let mut client = Connection::connect(&path).await.expect("connect");
        client.idle = Duration::from_millis(200);
        let started = std::time::Instant::now();
        let err = client.call::<_, String>(&"anyone there?".to_string()).await.expect_err("no answer");
        assert!(matches!(err, ProtoError::Timeout(d) if d == Duration::from_millis(200)), "{err:?}");
        assert!(started.elapsed() >= Duration::from_millis(200));
        assert!(started.elapsed() < Duration::from_secs(5), "took {:?}", started.elapsed());
        server.abort();
    }
}
