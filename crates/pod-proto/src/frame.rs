//! Framing: a u32 big-endian body length, then an rmp-serde body.
//!
//! A length prefix lets a reader refuse an oversized frame before reading
//! (or allocating for) its body, and tells a truncated frame apart from a
//! cleanly closed connection. Bodies are encoded as maps with field names
//! so that fields can be added without breaking older readers.

use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::io::{AsyncRead, AsyncReadExt};

use crate::{ProtoError, MAX_FRAME_BYTES};

/// Bytes of the length prefix.
pub const HEADER_BYTES: usize = 4;

/// Encodes `value` as one complete frame (prefix and body), refusing a body
/// larger than [`MAX_FRAME_BYTES`] so a server never sends what its peer
/// must refuse.
pub fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, ProtoError> {
    let mut out = vec![0u8; HEADER_BYTES];
    rmp_serde::encode::write_named(&mut out, value).map_err(ProtoError::bad_frame)?;
    let len = out.len() - HEADER_BYTES;
    if len > MAX_FRAME_BYTES {
        return Err(ProtoError::FrameTooLarge { len: len as u64, max: MAX_FRAME_BYTES });
    }
    let prefix = u32::try_from(len).map_err(|_| ProtoError::FrameTooLarge { len: len as u64, max: MAX_FRAME_BYTES })?;
    out[..HEADER_BYTES].copy_from_slice(&prefix.to_be_bytes());
    Ok(out)
}

/// Decodes one frame body.
pub fn decode<T: DeserializeOwned>(body: &[u8]) -> Result<T, ProtoError> {
    rmp_serde::from_slice(body).map_err(ProtoError::bad_frame)
}

/// The body length announced by a prefix, if it is within the limit.
pub fn body_len(prefix: [u8; HEADER_BYTES]) -> Result<usize, ProtoError> {
    let len = u32::from_be_bytes(prefix);
    match usize::try_from(len) {
        Ok(n) if n <= MAX_FRAME_BYTES => Ok(n),
        _ => Err(ProtoError::FrameTooLarge { len: u64::from(len), max: MAX_FRAME_BYTES }),
    }
}

/// Reads one frame body. `Ok(None)` is a clean close between frames. The
/// first byte may take up to `idle`; the rest of the frame must follow
/// within `frame`, so a peer that stalls mid-frame cannot hold the reader.
pub async fn read_body<R: AsyncRead + Unpin>(
    reader: &mut R,
    idle: Duration,
    frame: Duration,
) -> Result<Option<Vec<u8>>, ProtoError> {
    let mut prefix = [0u8; HEADER_BYTES];
    let first = tokio::time::timeout(idle, reader.read(&mut prefix)).await.map_err(|_| ProtoError::Idle(idle))??;
    if first == 0 {
        return Ok(None);
    }
    tokio::time::timeout(frame, rest_of_body(reader, prefix, first))
        .await
        .map_err(|_| ProtoError::Timeout(frame))?
        .map(Some)
}

/// [`read_body`] without timers, for a caller that bounds the whole
/// exchange another way (see `deadline`).
pub async fn read_body_untimed<R: AsyncRead + Unpin>(reader: &mut R) -> Result<Option<Vec<u8>>, ProtoError> {
    let mut prefix = [0u8; HEADER_BYTES];
    let first = reader.read(&mut prefix).await?;
    if first == 0 {
        return Ok(None);
    }
    rest_of_body(reader, prefix, first).await.map(Some)
}

/// The rest of a frame whose first `have` prefix bytes were read.
async fn rest_of_body<R: AsyncRead + Unpin>(
    reader: &mut R,
    mut prefix: [u8; HEADER_BYTES],
    have: usize,
) -> Result<Vec<u8>, ProtoError> {
    fill(reader, &mut prefix, have).await?;
    let len = body_len(prefix)?;
    let mut body = vec![0u8; len];
    fill(reader, &mut body, 0).await?;
    Ok(body)
}

/// Fills `buf[have..]`, reporting how far it got if the peer closes first.
async fn fill<R: AsyncRead + Unpin>(reader: &mut R, buf: &mut [u8], have: usize) -> Result<(), ProtoError> {
    let mut got = have;
    while got < buf.len() {
        let n = reader.read(&mut buf[got..]).await?;
        if n == 0 {
            return Err(ProtoError::Truncated { got, expected: buf.len() });
        }
        got += n;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: Duration = Duration::from_secs(5);

    #[tokio::test]
    async fn round_trip() {
        let bytes = encode(&("hello", 7u32)).expect("encode");
        let mut reader = &bytes[..];
        let body = read_body(&mut reader, T, T).await.expect("read").expect("frame");
        let value: (String, u32) = decode(&body).expect("decode");
        assert_eq!(value, ("hello".to_string(), 7));
        assert!(read_body(&mut reader, T, T).await.expect("eof").is_none());
    }

    #[tokio::test]
    async fn oversized_prefix_is_refused_before_reading() {
        let bytes = [0xFFu8, 0xFF, 0xFF, 0xFF];
        let err = read_body(&mut &bytes[..], T, T).await.expect_err("too large");
        assert_eq!(err.code(), "proto.frame_too_large");
    }

    #[tokio::test]
    async fn truncated_frames_are_told_apart_from_a_clean_close() {
        let mut bytes = encode(&"a longer string").expect("encode");
        bytes.truncate(bytes.len() - 3);
        let err = read_body(&mut &bytes[..], T, T).await.expect_err("truncated");
        assert_eq!(err.code(), "proto.truncated");
        let err = read_body(&mut &[0u8, 0][..], T, T).await.expect_err("half prefix");
        assert_eq!(err.code(), "proto.truncated");
    }

    #[test]
    fn garbage_body_is_a_bad_frame() {
        let err = decode::<(String, u32)>(&[0xC1, 0x00, 0x13]).expect_err("garbage");
        assert_eq!(err.code(), "proto.bad_frame");
    }

    #[test]
    fn encoding_refuses_oversized_bodies() {
        let big = vec![0u8; MAX_FRAME_BYTES + 1];
        let err = encode(&serde_bytes_like(&big)).expect_err("too large");
        assert_eq!(err.code(), "proto.frame_too_large");
    }

    fn serde_bytes_like(v: &[u8]) -> String {
        String::from_utf8_lossy(v).into_owned()
    }
}
