//! A workload's captured output: what the Pod process writes and `pod
//! logs` reads. One JSON object per line, `{"timestamp_ms", "stream", "line"}`,
//! in `data/pods/NAME/output.log` (0600), kept after the Pod stops and
//! removed by `pod rm`. When the file would pass [`MAX_FILE_BYTES`] it is
//! renamed to `output.log.1` (replacing the one before) and a new one is
//! begun, so a Pod keeps at most twice that. A line longer than
//! [`MAX_LINE_BYTES`] is stored in pieces of that size.

use std::io::{BufRead, BufReader, Read, Seek};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use pod_proto::WireError;
use serde::{Deserialize, Serialize};

use crate::layout::PodPaths;
use crate::protocol::{OutputCursor, MAX_READ_BYTES, MAX_READ_RECORDS};

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

/// One page of a Pod's output from `from` (`None`: the oldest line kept),
/// as the Pod serves it to a workload that cannot read `data/`: at most
/// [`MAX_READ_RECORDS`] lines and [`MAX_READ_BYTES`] of their text (a file
/// line is its JSON), and where the next page begins. The end of the
/// rotated file leads on to the current one (a page of no lines that moves
/// the cursor); a cursor into a file rotated away twice starts the current
/// file again (the lines between are gone). The cursor is unchanged when
/// nothing new was there.
pub fn read_page(
    paths: &PodPaths,
    from: Option<OutputCursor>,
) -> Result<(Vec<OutputLine>, Option<OutputCursor>), WireError> {
    let (current, rotated) = (current(paths), rotated(paths));
    let ino = |p: &Path| std::fs::metadata(p).ok().map(|m| m.ino());
    let (current_ino, rotated_ino) = (ino(&current), ino(&rotated));
    let start = match from {
        Some(c) if Some(c.file) == current_ino => Some((&current, c)),
        Some(c) if Some(c.file) == rotated_ino => Some((&rotated, c)),
        None if rotated_ino.is_some() => rotated_ino.map(|file| (&rotated, OutputCursor { file, offset: 0 })),
        _ => current_ino.map(|file| (&current, OutputCursor { file, offset: 0 })),
    };
    let Some((path, at)) = start else { return Ok((Vec::new(), from)) };
    let mut file = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((Vec::new(), from)),
        Err(e) => return Err(io_error(path, e)),
    };
    // Renamed between the look and the open: the next call finds it.
    if file.metadata().map_err(|e| io_error(path, e))?.ino() != at.file {
        return Ok((Vec::new(), from));
    }
    file.seek(std::io::SeekFrom::Start(at.offset)).map_err(|e| io_error(path, e))?;
    let mut bytes = Vec::new();
    file.take(MAX_READ_BYTES as u64).read_to_end(&mut bytes).map_err(|e| io_error(path, e))?;
    let mut lines = Vec::new();
    let mut used = 0usize;
    for piece in bytes.split_inclusive(|b| *b == b'\n') {
        if lines.len() == MAX_READ_RECORDS || !piece.ends_with(b"\n") {
            break;
        }
        used += piece.len();
        // A line that does not parse (a torn write) is passed over.
        if let Ok(line) = serde_json::from_slice::<OutputLine>(&piece[..piece.len() - 1]) {
            lines.push(line);
        }
    }
    let next = OutputCursor { file: at.file, offset: at.offset + used as u64 };
    let at_end = used == bytes.len() && bytes.len() < MAX_READ_BYTES && lines.len() < MAX_READ_RECORDS;
    // The rotated file read to its end: the current file goes on from it.
    if at_end && path == &rotated {
        if let Some(file) = current_ino {
            return Ok((lines, Some(OutputCursor { file, offset: 0 })));
        }
    }
    Ok((lines, Some(next)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(from: usize, count: usize) -> String {
        (from..from + count)
            .map(|i| format!("{{\"timestamp_ms\":{i},\"stream\":\"stdout\",\"line\":\"l{i}\"}}\n"))
            .collect()
    }

    fn texts(got: &[OutputLine]) -> Vec<String> {
        got.iter().map(|l| l.line.clone()).collect()
    }

    #[test]
    fn pages_are_bounded_follow_a_rotation_and_stand_still_at_the_end() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dirs = pod_proto::RuntimeDirs { run: tmp.path().join("run"), data: tmp.path().join("data") };
        let paths = PodPaths::new(&dirs, &scope::PodName::new("p").expect("name"));
        std::fs::create_dir_all(&paths.data_dir).expect("dir");
        std::fs::write(rotated(&paths), lines(0, 2)).expect("rotated");
        std::fs::write(current(&paths), lines(2, 600)).expect("current");
        // The rotated file first, then on to the current one.
        let (got, next) = read_page(&paths, None).expect("page");
        assert_eq!(texts(&got), ["l0", "l1"]);
        let (got, next) = read_page(&paths, next).expect("page");
        assert_eq!((got.len(), got[0].line.as_str()), (MAX_READ_RECORDS, "l2"));
        let (got, next) = read_page(&paths, next).expect("page");
        assert_eq!((got.len(), got[0].line.as_str()), (600 - MAX_READ_RECORDS, "l514"));
        let (got, same) = read_page(&paths, next).expect("page");
        assert!(got.is_empty());
        assert_eq!(same, next);
        // Rotated under the reader: the rest of the old file, then the new.
        std::fs::rename(current(&paths), rotated(&paths)).expect("rotate");
        std::fs::write(current(&paths), lines(602, 1)).expect("new current");
        let (got, moved) = read_page(&paths, next).expect("page");
        assert!(got.is_empty());
        assert_ne!(moved, next);
        let (got, _) = read_page(&paths, moved).expect("page");
        assert_eq!(texts(&got), ["l602"]);
    }
}
