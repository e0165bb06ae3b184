//! `logs`: a workload's captured stdout and stderr (format and limits:
//! `output.rs`), read from the Pod's data folder, where it stays after the
//! Pod stops until `pod rm`. Inside a workload (which cannot read `data/`)
//! the Pod it runs in reads it and answers page by page.

use std::time::Duration;

use pod_proto::WireError;
use scope::PodName;

use crate::commands::Client;
use crate::layout::PodPaths;
use crate::output::{self, Follower, OutputLine};
use crate::pod::OwnPod;
use crate::protocol::OutputCursor;

/// How often a follower through the Pod asks for new lines (as the
/// follower of the file looks).
const FOLLOW_POLL: Duration = Duration::from_millis(50);

/// A Pod's output: what is there, then (following) what is written next.
pub struct LogsReader {
    from: Source,
}

enum Source {
    File { paths: PodPaths, follower: Follower },
    OwnPod { socket: std::path::PathBuf, name: PodName, next: Option<OutputCursor> },
}

impl Client {
    /// The output so far (its last `tail` lines if given), and a reader of
    /// what comes next.
    pub async fn logs(&self, name: &PodName, tail: Option<usize>) -> Result<(Vec<OutputLine>, LogsReader), WireError> {
        let (mut lines, reader) = match self.own_socket() {
            Some(socket) => {
                let mut from = Source::OwnPod { socket: socket.to_path_buf(), name: name.clone(), next: None };
                let mut lines = Vec::new();
                // Every page there is now; `tail` keeps the last ones.
                while let Some(page) = from.page().await? {
                    lines.extend(page);
                    if let Some(n) = tail {
                        let skip = lines.len().saturating_sub(n);
                        lines.drain(..skip);
                    }
                }
                (lines, LogsReader { from })
            }
            None => {
                let paths = self.paths(name);
                if !paths.data_dir.exists() {
                    return Err(WireError::new("pod.unknown", format!("no pod named {name} here")));
                }
                // Opened first, read after the older file: no line is missed.
                let mut follower = Follower::at_start(&paths);
                let mut lines = output::read_file(&output::rotated(&paths))?;
                lines.extend(follower.read_new()?);
                (lines, LogsReader { from: Source::File { paths, follower } })
            }
        };
        if let Some(n) = tail {
            let skip = lines.len().saturating_sub(n);
            lines.drain(..skip);
        }
        Ok((lines, reader))
    }
}

impl Source {
    /// The next page through the Pod, `None` when nothing new is there
    /// now. (Reading a file: never called.)
    async fn page(&mut self) -> Result<Option<Vec<OutputLine>>, WireError> {
        let Source::OwnPod { socket, name, next } = self else { return Ok(None) };
        let page = OwnPod { socket }.output(name, *next).await?;
        let moved = page.next != *next;
        *next = page.next;
        Ok((moved || !page.lines.is_empty()).then_some(page.lines))
    }
}

impl LogsReader {
    /// The next lines, `None` once the Pod is not running and all it wrote
    /// has been returned.
    pub async fn next(&mut self) -> Result<Option<Vec<OutputLine>>, WireError> {
        loop {
            match &mut self.from {
                Source::File { paths, follower } => {
                    // Looked at before reading: what a Pod wrote before it
                    // let go of its lock is all read below.
                    let running = paths.lock_held();
                    let lines = if running { follower.poll().await? } else { follower.read_new()? };
                    if !lines.is_empty() {
                        return Ok(Some(lines));
                    }
                    if !running {
                        return Ok(None);
                    }
                }
                Source::OwnPod { socket, name, next } => {
                    // `running` is the Pod's look before it read the page.
                    let page = OwnPod { socket }.output(name, *next).await?;
                    let moved = page.next != *next;
                    *next = page.next;
                    if !page.lines.is_empty() {
                        return Ok(Some(page.lines));
                    }
                    if !moved {
                        if !page.running {
                            return Ok(None);
                        }
                        tokio::time::sleep(FOLLOW_POLL).await;
                    }
                }
            }
        }
    }
}
