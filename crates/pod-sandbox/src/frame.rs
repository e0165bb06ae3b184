//! Frames on the helper's sockets: a u32 big-endian length, then a JSON
//! body, at most [`MAX_FRAME`] bytes. The Pod and its helpers speak this over
//! socketpairs they create themselves, so nobody else can write into them;
//! the size bound keeps a confused peer from making us allocate without
//! end.

use std::io::{Read, Write};

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::SandboxError;

/// Largest frame either side accepts.
pub const MAX_FRAME: usize = 1 << 20;

pub fn write_frame<T: Serialize>(out: &mut impl Write, value: &T) -> Result<(), SandboxError> {
    let body = serde_json::to_vec(value).map_err(|e| SandboxError::Protocol(format!("cannot encode a frame: {e}")))?;
    if body.len() > MAX_FRAME {
        return Err(SandboxError::Protocol(format!(
            "a frame of {} bytes is over the {MAX_FRAME}-byte limit",
            body.len()
        )));
    }
    let mut buf = Vec::with_capacity(body.len() + 4);
    buf.extend_from_slice(&(body.len() as u32).to_be_bytes());
    buf.extend_from_slice(&body);
    out.write_all(&buf).and_then(|()| out.flush()).map_err(SandboxError::io("writing to the sandbox helper"))
}

/// Reads one frame; `Ok(None)` on a clean end of stream before a frame.
pub fn read_frame<T: DeserializeOwned>(input: &mut impl Read) -> Result<Option<T>, SandboxError> {
    let mut len = [0u8; 4];
    let mut got = 0;
    while got < 4 {
        match input.read(&mut len[got..]) {
            Ok(0) if got == 0 => return Ok(None),
            Ok(0) => return Err(SandboxError::Protocol("the stream ended inside a frame's length".into())),
            Ok(n) => got += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(SandboxError::Io { what: "reading from the sandbox helper".into(), source: e }),
        }
    }
    let len = u32::from_be_bytes(len) as usize;
    if len > MAX_FRAME {
        return Err(SandboxError::Protocol(format!("a frame of {len} bytes is over the {MAX_FRAME}-byte limit")));
    }
    let mut body = vec![0u8; len];
    input.read_exact(&mut body).map_err(|e| SandboxError::Protocol(format!("the stream ended inside a frame: {e}")))?;
    serde_json::from_slice(&body).map(Some).map_err(|e| SandboxError::Protocol(format!("a frame does not decode: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_limits() {
        let mut buf = Vec::new();
        write_frame(&mut buf, &vec!["a", "b"]).expect("write");
        let back: Option<Vec<String>> = read_frame(&mut buf.as_slice()).expect("read");
        assert_eq!(back, Some(vec!["a".to_string(), "b".to_string()]));
        let empty: Option<Vec<String>> = read_frame(&mut [].as_slice()).expect("eof");
        assert_eq!(empty, None);
        let huge = ((MAX_FRAME + 1) as u32).to_be_bytes();
        let err = read_frame::<Vec<String>>(&mut huge.as_slice()).expect_err("too big");
        assert_eq!(err.to_string(), "sandbox control channel: a frame of 1048577 bytes is over the 1048576-byte limit");
        let cut = [0u8, 0, 0, 9, b'{'];
        assert_eq!(read_frame::<Vec<String>>(&mut cut.as_slice()).expect_err("cut").code(), "sandbox.protocol");
    }
}
