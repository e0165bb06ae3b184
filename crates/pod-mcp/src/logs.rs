//! `pod_logs`' answer: the newest lines of a workload's output, at most the
//! `tail` asked and at most [`MAX_LOG_BYTES`] of text, so one answer stays
//! well inside a client's message limit however long the lines are; what
//! is left out is counted, so the model knows there is more.

use pod_client::output::OutputLine;
use serde_json::{json, Value};

use crate::limits::MAX_LOG_BYTES;

/// `{name, lines: [{timestamp_ms, stream, line}], earlier}` from all the lines
/// there are, oldest first; `earlier` counts the older lines left out.
pub fn newest(name: &str, mut lines: Vec<OutputLine>, tail: usize) -> Value {
    let mut kept = 0;
    let mut bytes = 0;
    for line in lines.iter().rev().take(tail) {
        bytes += line.line.len();
        if bytes > MAX_LOG_BYTES && kept > 0 {
            break;
        }
        kept += 1;
    }
    let earlier = lines.len() - kept;
    let shown: Vec<Value> = lines
        .drain(earlier..)
        .map(|l| json!({ "timestamp_ms": l.timestamp_ms, "stream": l.stream.as_str(), "line": l.line }))
        .collect();
    json!({ "name": name, "lines": shown, "earlier": earlier })
}

#[cfg(test)]
mod tests {
    use pod_client::output::Stream;

    use super::*;

    fn line(n: u64, len: usize) -> OutputLine {
        OutputLine { timestamp_ms: n, stream: Stream::Stdout, line: "x".repeat(len) }
    }

    #[test]
    fn the_newest_lines_within_tail_and_the_byte_budget() {
        let lines = (0..5).map(|n| line(n, 1)).collect();
        let got = newest("h", lines, 2);
        assert_eq!(got["earlier"], json!(3));
        assert_eq!(
            got["lines"].as_array().map(|l| l.iter().map(|l| l["timestamp_ms"].clone()).collect::<Vec<_>>()),
            Some(vec![json!(3), json!(4)])
        );
        // Three lines of a third of the budget and a bit: two fit.
        let lines = (0..3).map(|n| line(n, MAX_LOG_BYTES / 3 + 1)).collect();
        let got = newest("h", lines, 100);
        assert_eq!((got["earlier"].clone(), got["lines"].as_array().map(Vec::len)), (json!(1), Some(2)));
        assert_eq!(newest("h", Vec::new(), 10), json!({ "name": "h", "lines": [], "earlier": 0 }));
    }
}
