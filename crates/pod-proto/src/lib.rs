//! The wire protocol every Pod runtime daemon speaks (the registry now, the
//! Pods themselves later): length-prefixed rmp-serde frames over a local
//! socket, a version handshake, peer credentials taken from the kernel, and
//! the on-disk layout of runtime and data directories.
//!
//! Architecture invariant: identity comes from [`peer::PeerCred`] (the
//! kernel's answer about the other end of the socket), never from anything a
//! frame claims. Every reply frame is a `Result<T, WireError>`, so a failure
//! reads the same on every server.

pub mod connection;
pub mod deadline;
pub mod error;
pub mod failpoints;
pub mod frame;
pub mod paths;
pub mod peer;
pub mod server;

use std::time::Duration;

pub use connection::{Connection, Hello, Welcome};
pub use error::{ProtoError, WireError};
pub use paths::RuntimeDirs;
pub use peer::PeerCred;

/// Bumped on every incompatible change of any message carried over a
/// [`Connection`]; the handshake refuses a peer with another number.
pub const PROTOCOL_VERSION: u32 = 3;

/// Largest frame body accepted or sent, in bytes: the coordination
/// store's largest value (1 MiB) plus 64 KiB for everything else in its
/// frame (a 512-byte key and the encoding, about 600 bytes; one value, one
/// frame, one commit, no chunking). A frame announcing more is refused
/// before any of its body is read.
pub const MAX_FRAME_BYTES: usize = (1 << 20) + (64 << 10);

/// Longest wait for the first byte of the next frame before the connection
/// is considered idle and closed (servers) or the call failed (clients).
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(300);

/// Longest wait for the rest of a frame once its first byte arrived, and for
/// each step of the handshake. Bounds how long a slow or stuck peer can hold
/// a connection task.
pub const FRAME_TIMEOUT: Duration = Duration::from_secs(5);

/// Most connections one server serves at once (handshake done); one more
/// is answered `proto.busy` and closed. Every Pod holds two registry
/// connections (its calls and the watch of its allocation), so this bounds
/// a machine's Pods at about half of it.
pub const MAX_CONNECTIONS: usize = 16_384;

/// Longest a connection may take from accept to the end of its handshake;
/// short, so connections that never finish it cost others nothing.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(1);

/// Most connections between accept and the end of their handshake; one
/// more closes the oldest of them.
pub const MAX_PENDING_HANDSHAKES: usize = 1024;

/// Longest accepted client description in [`Hello`].
pub const MAX_CLIENT_NAME_BYTES: usize = 256;
