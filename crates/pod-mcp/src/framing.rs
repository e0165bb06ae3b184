//! Stdio in bounded lines. rmcp's own stdio codec drops an overlong line
//! without a word, so the client's request would just hang; here stdin is
//! read line by line with [`MAX_MESSAGE_BYTES`] as the bound, lines within
//! it go on to rmcp unchanged, and an oversized one is answered at once
//! with a JSON-RPC error carrying its id. The server's answers and these
//! refusals share stdout line by line, so they never interleave mid-line.

use std::sync::Arc;

use serde_json::{json, Value};
use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::sync::Mutex;

use crate::limits::{ID_SCAN_BYTES, MAX_MESSAGE_BYTES, MESSAGE_TOO_LARGE};

/// One line read from the client.
#[derive(Debug, PartialEq, Eq)]
pub enum Line {
    /// A whole line (its newline included), within the bound.
    Whole(Vec<u8>),
    /// A line over the bound: its first [`ID_SCAN_BYTES`] and its length.
    TooLong { head: Vec<u8>, len: usize },
}

/// Reads one line of at most `max` bytes (newline excluded) without ever
/// holding more than that; `None` at the end of input.
pub async fn read_line_bounded<R: AsyncBufRead + Unpin>(reader: &mut R, max: usize) -> std::io::Result<Option<Line>> {
    let mut line = Vec::new();
    let mut len = 0usize;
    loop {
        let buf = reader.fill_buf().await?;
        if buf.is_empty() {
            break;
        }
        let (take, end) = match buf.iter().position(|b| *b == b'\n') {
            Some(at) => (at + 1, true),
            None => (buf.len(), false),
        };
        let content = if end { take - 1 } else { take };
        len = len.saturating_add(content);
        if len <= max {
            line.extend_from_slice(&buf[..take]);
        } else {
            // Over the bound: keep only the head, where the id is.
            line.truncate(ID_SCAN_BYTES);
            let room = ID_SCAN_BYTES - line.len();
            line.extend_from_slice(&buf[..take.min(room)]);
        }
        reader.consume(take);
        if end {
            break;
        }
    }
    if len == 0 && line.is_empty() {
        return Ok(None);
    }
    debug_assert!(len <= max || line.len() <= ID_SCAN_BYTES);
    Ok(Some(if len <= max { Line::Whole(line) } else { Line::TooLong { head: line, len } }))
}

/// The JSON-RPC id at the start of a message, if it is there: clients
/// write `jsonrpc` and `id` before `params`, so an oversized request can
/// still be answered by id. `null` when it cannot be found.
pub fn id_in_head(head: &[u8]) -> Value {
    let text = String::from_utf8_lossy(head);
    let Some(at) = text.find("\"id\"") else { return Value::Null };
    let rest = text[at + 4..].trim_start();
    let Some(rest) = rest.strip_prefix(':') else { return Value::Null };
    let rest = rest.trim_start();
    if let Some(quoted) = rest.strip_prefix('"') {
        return match quoted.find('"') {
            Some(end) if !quoted[..end].contains('\\') => Value::String(quoted[..end].to_string()),
            _ => Value::Null,
        };
    }
    let digits: String = rest.chars().take_while(|c| c.is_ascii_digit() || *c == '-').collect();
    digits.parse::<i64>().map(Value::from).unwrap_or(Value::Null)
}

/// The refusal of an oversized request, as one JSON-RPC error line.
pub fn too_large_reply(id: Value, len: usize) -> String {
    let message = format!(
        "request of {len} bytes is over the limit of {MAX_MESSAGE_BYTES} bytes per message; send less (fewer or shorter arguments) [mcp.message_too_large]"
    );
    let reply = json!({
        "jsonrpc": "2.0",
        "id": id,
        "error": { "code": MESSAGE_TOO_LARGE, "message": message, "data": { "code": "mcp.message_too_large" } },
    });
    format!("{reply}\n")
}

/// Copies the client's lines to rmcp (`to_server`) and rmcp's lines to
/// the client (`from_server` to `out`), refusing oversized requests on the
/// way in. Returns when the client closes its input.
pub async fn relay<I, O, R, W>(input: I, out: O, from_server: R, mut to_server: W) -> std::io::Result<()>
where
    I: AsyncRead + Unpin,
    O: AsyncWrite + Unpin + Send + 'static,
    R: AsyncRead + Unpin + Send + 'static,
    W: AsyncWrite + Unpin,
{
    let out = Arc::new(Mutex::new(out));
    let answers = {
        let out = out.clone();
        tokio::spawn(async move {
            let mut from_server = BufReader::new(from_server);
            let mut line = Vec::new();
            loop {
                line.clear();
                if from_server.read_until(b'\n', &mut line).await? == 0 {
                    return Ok::<(), std::io::Error>(());
                }
                let mut out = out.lock().await;
                out.write_all(&line).await?;
                out.flush().await?;
            }
        })
    };
    let mut input = BufReader::new(input);
    while let Some(line) = read_line_bounded(&mut input, MAX_MESSAGE_BYTES).await? {
        match line {
            Line::Whole(bytes) => {
                to_server.write_all(&bytes).await?;
                to_server.flush().await?;
            }
            Line::TooLong { head, len } => {
                let id = id_in_head(&head);
                tracing::warn!(len, %id, "refused a request over the message limit");
                let mut out = out.lock().await;
                out.write_all(too_large_reply(id, len).as_bytes()).await?;
                out.flush().await?;
            }
        }
    }
    // End of input: rmcp sees it too, finishes, and closes its side.
    to_server.shutdown().await?;
    drop(to_server);
    answers.await.map_err(std::io::Error::other)?
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn lines(input: &[u8], max: usize) -> Vec<Line> {
        let mut reader = BufReader::with_capacity(7, input);
        let mut got = Vec::new();
        while let Some(line) = read_line_bounded(&mut reader, max).await.expect("read") {
            got.push(line);
        }
        got
    }

    #[tokio::test]
    async fn lines_within_the_bound_pass_whole_and_longer_ones_keep_only_a_head() {
        let long = format!("{{\"id\":7,\"x\":\"{}\"}}\nnext\n", "a".repeat(2000));
        let got = lines(long.as_bytes(), 100).await;
        assert_eq!(got.len(), 2);
        match &got[0] {
            Line::TooLong { head, len } => {
                assert_eq!((head.len(), *len), (ID_SCAN_BYTES, long.find('\n').expect("newline")));
                assert_eq!(id_in_head(head), json!(7));
            }
            other => panic!("expected a refusal, got {other:?}"),
        }
        assert_eq!(got[1], Line::Whole(b"next\n".to_vec()));
    }

    #[tokio::test]
    async fn a_line_of_exactly_the_bound_passes() {
        assert_eq!(lines(b"abcd\n", 4).await, vec![Line::Whole(b"abcd\n".to_vec())]);
        assert!(matches!(&lines(b"abcde\n", 4).await[..], [Line::TooLong { len: 5, .. }]));
    }

    #[test]
    fn ids_are_found_as_numbers_or_strings_or_not_at_all() {
        assert_eq!(id_in_head(br#"{"jsonrpc":"2.0","id": "req-1","method""#), json!("req-1"));
        assert_eq!(id_in_head(br#"{"jsonrpc":"2.0","id":42,"#), json!(42));
        assert_eq!(id_in_head(br#"{"jsonrpc":"2.0","method":"x","params":{"requestId":3"#), Value::Null);
    }
}
