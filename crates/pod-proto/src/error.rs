//! Errors of the wire layer, and the one error shape every server returns.
//!
//! `ProtoError` is what goes wrong locally (framing, timeouts, refused
//! peers); `WireError` is what crosses the socket. Codes are stable strings
//! so that scripts, logs and the command line can match on them.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// An error as it travels in a reply frame: a stable `code` ("area.reason")
/// and a one-line human message that says what was wrong and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{message} [{code}]")]
pub struct WireError {
    pub code: String,
    pub message: String,
}

impl WireError {
    pub fn new(code: impl Into<String>, message: impl Into<String>) -> WireError {
        WireError { code: code.into(), message: message.into() }
    }
}

/// Why a frame could not be exchanged.
#[derive(Debug, thiserror::Error)]
pub enum ProtoError {
    #[error("frame of {len} bytes is larger than the limit of {max} bytes")]
    FrameTooLarge { len: u64, max: usize },
    /// Made by [`ProtoError::bad_frame`], which bounds and escapes it.
    #[error("frame body cannot be decoded: {0}")]
    BadFrame(String),
    #[error("connection closed in the middle of a frame ({got} of {expected} bytes)")]
    Truncated { got: usize, expected: usize },
    #[error("protocol version mismatch: this side speaks {ours}, the peer speaks {theirs}")]
    VersionMismatch { ours: u32, theirs: u32 },
    #[error("peer refused: {0}")]
    PeerRefused(String),
    #[error("no frame within {0:?}")]
    Timeout(Duration),
    /// No request began within the idle timeout: the server closes the
    /// connection, silently (the peer did nothing wrong, and a frame left
    /// behind would be read as the answer to its next request).
    #[error("idle for {0:?}")]
    Idle(Duration),
    #[error("the server already serves {max} connections, its limit; try again when one closes")]
    Busy { max: usize },
    #[error("connection closed by the peer")]
    Closed,
    /// A request could not be written (the peer had closed, or the socket
    /// broke): the peer never read it, so sending it again is safe.
    #[error("request not sent: {0}")]
    NotSent(std::io::Error),
    #[error("i/o error: {0}")]
    Io(#[from] std::io::Error),
    /// The server answered with an error frame.
    #[error("{0}")]
    Remote(WireError),
}

/// Most characters of a decoder's words a `proto.bad_frame` message keeps
/// (a decoder quotes the frame: an unknown variant name of any length).
pub const MAX_BAD_FRAME_CHARS: usize = 200;

impl ProtoError {
    /// A frame that cannot be decoded, saying why in at most
    /// [`MAX_BAD_FRAME_CHARS`] characters, control characters escaped: what
    /// the peer sent is echoed to it, to logs and to terminals.
    pub fn bad_frame(why: impl std::fmt::Display) -> ProtoError {
        ProtoError::BadFrame(scope::sanitize(&why.to_string(), MAX_BAD_FRAME_CHARS))
    }

    pub fn code(&self) -> &str {
        match self {
            ProtoError::FrameTooLarge { .. } => "proto.frame_too_large",
            ProtoError::BadFrame(_) => "proto.bad_frame",
            ProtoError::Truncated { .. } => "proto.truncated",
            ProtoError::VersionMismatch { .. } => "proto.version_mismatch",
            ProtoError::PeerRefused(_) => "proto.peer_refused",
            ProtoError::Timeout(_) => "proto.timeout",
            ProtoError::Idle(_) => "proto.idle",
            ProtoError::Busy { .. } => "proto.busy",
            ProtoError::Closed | ProtoError::Io(_) => "proto.io",
            ProtoError::NotSent(_) => "proto.not_sent",
            ProtoError::Remote(w) => &w.code,
        }
    }

    /// The form sent to the peer before closing a connection.
    pub fn to_wire(&self) -> WireError {
        match self {
            ProtoError::Remote(w) => w.clone(),
            other => WireError::new(other.code(), other.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_stable() {
        let cases: Vec<(ProtoError, &str)> = vec![
            (ProtoError::FrameTooLarge { len: 9, max: 1 }, "proto.frame_too_large"),
            (ProtoError::BadFrame("x".into()), "proto.bad_frame"),
            (ProtoError::Truncated { got: 1, expected: 2 }, "proto.truncated"),
            (ProtoError::VersionMismatch { ours: 1, theirs: 2 }, "proto.version_mismatch"),
            (ProtoError::PeerRefused("uid".into()), "proto.peer_refused"),
            (ProtoError::Timeout(Duration::from_secs(1)), "proto.timeout"),
            (ProtoError::Busy { max: 2 }, "proto.busy"),
            (ProtoError::Idle(Duration::from_secs(1)), "proto.idle"),
            (ProtoError::Io(std::io::Error::other("x")), "proto.io"),
            (ProtoError::NotSent(std::io::Error::other("x")), "proto.not_sent"),
        ];
        for (e, code) in cases {
            assert_eq!(e.code(), code);
            assert_eq!(e.to_wire().code, code);
        }
    }

    #[test]
    fn a_bad_frame_echoes_bounded_and_escaped() {
        let why = format!("unknown variant `\u{1b}[2J{}`\n", "A".repeat(100_000));
        let shown = ProtoError::bad_frame(&why).to_string();
        let expected = format!("frame body cannot be decoded: unknown variant `\\u{{1b}}[2J{}...", "A".repeat(179));
        assert_eq!(shown, expected);
    }

    #[test]
    fn version_mismatch_names_both_versions() {
        let msg = ProtoError::VersionMismatch { ours: 1, theirs: 7 }.to_string();
        assert!(msg.contains('1') && msg.contains('7'), "{msg}");
    }
}
