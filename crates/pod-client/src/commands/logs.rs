//! `logs`: a workload's captured stdout and stderr (format and limits:
//! `output.rs`), read from the Pod's data folder, where it stays after the
//! Pod stops until `pod rm`.

use pod_proto::WireError;
use scope::PodName;

use crate::commands::Client;
use crate::layout::PodPaths;
use crate::output::{self, Follower, OutputLine};

/// A Pod's output: what is there, then (following) what is written next.
pub struct LogsReader {
    paths: PodPaths,
    follower: Follower,
}

impl Client {
    /// The output so far (its last `tail` lines if given), and a reader of
    /// what comes next.
    pub fn logs(&self, name: &PodName, tail: Option<usize>) -> Result<(Vec<OutputLine>, LogsReader), WireError> {
        let paths = self.paths(name);
        if !paths.data_dir.exists() {
            return Err(WireError::new("pod.unknown", format!("no pod named {name} here")));
        }
        // Opened first, read after the older file: no line is missed.
        let mut follower = Follower::at_start(&paths);
        let mut lines = output::read_file(&output::rotated(&paths))?;
        lines.extend(follower.read_new()?);
        if let Some(n) = tail {
            let skip = lines.len().saturating_sub(n);
            lines.drain(..skip);
        }
        Ok((lines, LogsReader { paths, follower }))
    }
}

impl LogsReader {
    /// The next lines, `None` once the Pod is not running and all it wrote
    /// has been returned.
    pub async fn next(&mut self) -> Result<Option<Vec<OutputLine>>, WireError> {
        loop {
            // Looked at before reading: what a Pod wrote before it let go
            // of its lock is all read below.
            let running = self.paths.lock_held();
            let lines = if running { self.follower.poll().await? } else { self.follower.read_new()? };
            if !lines.is_empty() {
                return Ok(Some(lines));
            }
            if !running {
                return Ok(None);
            }
        }
    }
}
