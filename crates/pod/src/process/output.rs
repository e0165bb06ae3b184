//! Capturing a workload's stdout and stderr: one task per pipe reads
//! lines (bounded, see `pod_client::output`), one writer task stamps each
//! with the time and its stream and appends it to the Pod's output file,
//! rotating it at its size bound. The format and the limits are
//! `pod_client::output`'s, which `pod logs` reads.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use pod_client::output::{self, OutputLine, Stream, MAX_FILE_BYTES, MAX_LINE_BYTES};
use pod_proto::WireError;
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::layout::PodPaths;

/// Lines queued between the readers and the writer.
const QUEUE: usize = 1024;
/// Longest the Pod waits, after its workload exited, for the pipes to
/// close (a process the workload left behind may hold them open).
pub const DRAIN_WAIT: Duration = Duration::from_secs(2);

/// The Pod's output file, opened (created if new) before its workload runs:
/// a new file's creation can be slow (on ext4 without a journal it passes
/// over every inode freed in the last minutes), so a launch opens it while
/// the keeper starts, not after the release.
pub struct OutputFile(Writer);

impl OutputFile {
    pub fn open(paths: &PodPaths) -> Result<OutputFile, WireError> {
        Writer::open(output::current(paths), output::rotated(paths)).map(OutputFile)
    }
}

/// Starts capturing `stdout` and `stderr` into `file`; the handle finishes
/// when both pipes are closed and every line is written.
pub fn capture(
    file: OutputFile,
    stdout: impl AsyncRead + Unpin + Send + 'static,
    stderr: impl AsyncRead + Unpin + Send + 'static,
) -> JoinHandle<()> {
    let OutputFile(mut writer) = file;
    let (tx, mut rx) = mpsc::channel::<(Stream, Vec<u8>)>(QUEUE);
    tokio::spawn(read_lines(stdout, Stream::Stdout, tx.clone()));
    tokio::spawn(read_lines(stderr, Stream::Stderr, tx));
    tokio::spawn(async move {
        while let Some((stream, bytes)) = rx.recv().await {
            if let Err(e) = writer.write(stream, &bytes) {
                tracing::error!(error = %e, "cannot write the workload's output; the rest is dropped");
                return;
            }
        }
    })
}

/// Sends each line of `pipe` (pieces of at most `MAX_LINE_BYTES`).
async fn read_lines(pipe: impl AsyncRead + Unpin, stream: Stream, tx: mpsc::Sender<(Stream, Vec<u8>)>) {
    let mut reader = BufReader::new(pipe);
    loop {
        let mut line = Vec::new();
        let piece = loop {
            let available = match reader.fill_buf().await {
                Ok(b) => b,
                Err(e) => {
                    tracing::warn!(error = %e, stream = stream.as_str(), "cannot read the workload's output");
                    break None;
                }
            };
            if available.is_empty() {
                break (!line.is_empty()).then_some(());
            }
            let room = MAX_LINE_BYTES - line.len();
            match available.iter().position(|b| *b == b'\n') {
                Some(i) if i <= room => {
                    line.extend_from_slice(&available[..i]);
                    reader.consume(i + 1);
                    break Some(());
                }
                _ => {
                    let n = available.len().min(room);
                    line.extend_from_slice(&available[..n]);
                    reader.consume(n);
                    if line.len() == MAX_LINE_BYTES {
                        break Some(());
                    }
                }
            }
        };
        if piece.is_none() {
            return;
        }
        if tx.send((stream, line)).await.is_err() {
            return;
        }
    }
}

struct Writer {
    path: PathBuf,
    rotated: PathBuf,
    file: std::fs::File,
    size: u64,
}

fn open(path: &PathBuf) -> Result<std::fs::File, WireError> {
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| WireError::new("pod.io", format!("cannot open {}: {e}", path.display())))
}

impl Writer {
    fn open(path: PathBuf, rotated: PathBuf) -> Result<Writer, WireError> {
        let file = open(&path)?;
        let size = file.metadata().map(|m| m.len()).unwrap_or(0);
        Ok(Writer { path, rotated, file, size })
    }

    fn write(&mut self, stream: Stream, bytes: &[u8]) -> Result<(), WireError> {
        let timestamp_ms = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
        let line = OutputLine { timestamp_ms, stream, line: String::from_utf8_lossy(bytes).into_owned() };
        let mut text = serde_json::to_vec(&line).map_err(|e| WireError::new("pod.io", e.to_string()))?;
        text.push(b'\n');
        if self.size > 0 && self.size + text.len() as u64 > MAX_FILE_BYTES {
            std::fs::rename(&self.path, &self.rotated)
                .map_err(|e| WireError::new("pod.io", format!("cannot rotate {}: {e}", self.path.display())))?;
            self.file = open(&self.path)?;
            self.size = 0;
        }
        self.file.write_all(&text).map_err(|e| WireError::new("pod.io", format!("{}: {e}", self.path.display())))?;
        self.size += text.len() as u64;
        Ok(())
    }
}
