//! A workload's captured output: what the Pod process writes and `pod
//! logs` reads. One JSON object per line, `{"timestamp_ms", "stream", "line"}`,
//! in `data/pods/NAME/output.log` (0600), kept after the Pod stops and
//! removed by `pod rm`. When the file would pass [`MAX_FILE_BYTES`] it is
//! renamed to `output.log.1` (replacing the one before) and a new one is
//! begun, so a Pod keeps at most twice that. A line longer than
//! [`MAX_LINE_BYTES`] is stored in pieces of that size.

use std::io::{BufRead, BufReader, Read};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use pod_proto::WireError;
use serde::{Deserialize, Serialize};

use crate::layout::PodPaths;

/// Largest output file before it is rotated.
pub const MAX_FILE_BYTES: u64 = 4 << 20;
/// Longest piece of a line stored as one line.
pub const MAX_LINE_BYTES: usize = 16 << 10;
/// How often a follower looks for new lines.
const FOLLOW_POLL: Duration = Duration::from_millis(50);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Stream {
    Stdout,
    Stderr,
}

impl Stream {
    pub fn as_str(self) -> &'static str {
        match self {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
        }
    }
}

/// One line a workload wrote (without its newline; invalid UTF-8 replaced).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutputLine {
    /// When the Pod read it, in milliseconds since the epoch (named as the
    /// session log's records name their time; files written before the
    /// rename say `ts_ms`).
    #[serde(alias = "ts_ms")]
    pub timestamp_ms: u64,
    pub stream: Stream,
    pub line: String,
}

pub fn current(paths: &PodPaths) -> PathBuf {
    paths.data_dir.join("output.log")
}

pub fn rotated(paths: &PodPaths) -> PathBuf {
    paths.data_dir.join("output.log.1")
}

/// The lines of one output file (none if it does not exist). A line that
/// does not parse (a torn last write) is skipped.
pub fn read_file(file: &Path) -> Result<Vec<OutputLine>, WireError> {
    match std::fs::File::open(file) {
        Ok(f) => Ok(parse(BufReader::new(f.take(MAX_FILE_BYTES + MAX_LINE_BYTES as u64))).collect()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(io_error(file, e)),
    }
}

fn parse(reader: impl BufRead) -> impl Iterator<Item = OutputLine> {
    reader.split(b'\n').map_while(Result::ok).filter_map(|l| serde_json::from_slice(&l).ok())
}

fn io_error(file: &Path, e: std::io::Error) -> WireError {
    WireError::new("pod.io", format!("cannot read {}: {e}", file.display()))
}

/// Follows `output.log` from its current end: each call returns the lines
/// written since the last, following a rotation (the file it holds open
/// is read to its end before the new one is taken).
pub struct Follower {
    path: PathBuf,
    file: Option<std::fs::File>,
    pending: Vec<u8>,
}

impl Follower {
    /// Starts at the beginning of the current output file.
    pub fn at_start(paths: &PodPaths) -> Follower {
        let path = current(paths);
        let file = std::fs::File::open(&path).ok();
        Follower { path, file, pending: Vec::new() }
    }

    /// New lines, waiting up to one poll interval when there are none.
    pub async fn poll(&mut self) -> Result<Vec<OutputLine>, WireError> {
        let lines = self.read_new()?;
        if lines.is_empty() {
            tokio::time::sleep(FOLLOW_POLL).await;
        }
        Ok(lines)
    }

    /// What is there now, without waiting.
    pub fn read_new(&mut self) -> Result<Vec<OutputLine>, WireError> {
        let mut out = self.drain_file()?;
        // Rotated (or created): the open file is read to its end; go on
        // with the new one from its start.
        let now = std::fs::metadata(&self.path).ok().map(|m| (m.dev(), m.ino()));
        let held = self.file.as_ref().and_then(|f| f.metadata().ok()).map(|m| (m.dev(), m.ino()));
        if now.is_some() && now != held {
            self.file = std::fs::File::open(&self.path).ok();
            self.pending.clear();
            out.extend(self.drain_file()?);
        }
        Ok(out)
    }

    fn drain_file(&mut self) -> Result<Vec<OutputLine>, WireError> {
        let Some(file) = self.file.as_mut() else { return Ok(Vec::new()) };
        let mut bytes = Vec::new();
        // Bounded: one call reads at most one file's worth.
        file.take(MAX_FILE_BYTES + MAX_LINE_BYTES as u64)
            .read_to_end(&mut bytes)
            .map_err(|e| io_error(&self.path, e))?;
        self.pending.extend_from_slice(&bytes);
        let Some(last) = self.pending.iter().rposition(|b| *b == b'\n') else { return Ok(Vec::new()) };
        let whole: Vec<u8> = self.pending.drain(..=last).collect();
        Ok(parse(whole.as_slice()).collect())
    }
}
