//! Reads a Pod serves for its own workload's tree: how a Pod ended
//! (`Ended`), its workload output (`Output`) and its session log
//! (`LogOf`). An enforced workload cannot read the stores' `data/` (the
//! kernel refuses it), so `pod wait`, `pod logs` and `pod log` run inside
//! a workload ask the Pod it runs in, which reads there for it.
//!
//! Who may read what: the caller the kernel names (`caller.rs`) may read
//! its own Pod and that Pod's descendants only (`authorize::decide_on_tree`);
//! the target's ancestry comes from the registry while it holds the
//! target, else from the target's own session log. Every answer is bounded
//! (`MAX_READ_RECORDS`, `MAX_READ_BYTES`, `MAX_READ_WAIT`).

use std::time::Duration;

use pod_client::protocol::{OutputPage, PodReply, MAX_READ_BYTES, MAX_READ_RECORDS, MAX_READ_WAIT};
use pod_client::Client;
use pod_proto::{RuntimeDirs, WireError};
use scope::PodName;
use session_log::Record;

use crate::layout::PodPaths;
use crate::registry_link::Registry;
use pod_client::pod::Pod;

/// `name`'s ancestors, nearest first: the registry's record while it has
/// one (a reparented Pod's adoptive parent included), else the parent its
/// session log names. At most `MAX_LAYERS` steps.
pub async fn lineage(registry: &Registry, dirs: &RuntimeDirs, name: &PodName) -> Result<Vec<PodName>, WireError> {
    let unknown = |e: WireError| {
        WireError::new(
            "auth.lineage_unknown",
            format!("cannot tell {name}'s ancestors to decide this read: {}", e.message),
        )
    };
    let mut out: Vec<PodName> = Vec::new();
    let mut current = name.clone();
    while out.len() < scope::limits::MAX_LAYERS {
        let parent = match registry.get(&current).await.map_err(unknown)? {
            Some(allocation) => allocation.parent,
            None => logged_parent(PodPaths::new(dirs, &current), current.clone()).await,
        };
        let Some(parent) = parent else { break };
        if parent == *name || out.contains(&parent) {
            break;
        }
        out.push(parent.clone());
        current = parent;
    }
    Ok(out)
}

/// The parent a stopped Pod's log names (none when it cannot be read:
/// then it is nobody's descendant here). A Pod the registry no longer
/// holds whose process still holds its log is exiting (a child just
/// reclaimed): its log is read once it let go (`open_log` bounds the wait).
async fn logged_parent(paths: PodPaths, name: PodName) -> Option<PodName> {
    let read = move || {
        let log = pod_client::commands::inspect::open_log(&paths, &name).ok()?;
        log.replay().ok()?.identity?.parent
    };
    tokio::task::spawn_blocking(read).await.ok().flatten()
}

/// `Ended`: how `name` ended, waiting up to `wait_ms` (bounded).
pub async fn ended(dirs: &RuntimeDirs, name: &PodName, wait_ms: u64) -> Result<PodReply, WireError> {
    let wait = Duration::from_millis(wait_ms).min(MAX_READ_WAIT);
    Ok(PodReply::Ended(Client::new(dirs.clone()).ended_within(name, wait).await?))
}

/// `Output`: a page of `name`'s workload output.
pub async fn output(
    dirs: &RuntimeDirs,
    name: &PodName,
    from: Option<pod_client::protocol::OutputCursor>,
) -> Result<PodReply, WireError> {
    let paths = PodPaths::new(dirs, name);
    if !paths.data_dir.exists() {
        return Err(WireError::new("pod.unknown", format!("no pod named {name} here")));
    }
    // Looked at before reading: a Pod found stopped wrote all it will.
    let running = paths.lock_held();
    let read = move || pod_client::output::read_page(&paths, from);
    let (lines, next) = tokio::task::spawn_blocking(read).await.map_err(failed)??;
    Ok(PodReply::Output(OutputPage { lines, next, running }))
}

/// `LogOf` for another Pod than this one: from the running Pod over its
/// socket, else from its log once nobody holds it.
pub async fn log_of(dirs: &RuntimeDirs, name: &PodName, from_seq: u64, wait_ms: u64) -> Result<PodReply, WireError> {
    let paths = PodPaths::new(dirs, name);
    let wait = Duration::from_millis(wait_ms).min(MAX_READ_WAIT);
    let from = from_seq.max(1);
    if paths.lock_held() {
        match (Pod { paths: &paths, name }).log(from, wait).await {
            Ok(page) if !page.records.is_empty() || paths.lock_held() => {
                let (records, next_seq) = bounded(page.records, from);
                return Ok(PodReply::LogOf { records, next_seq, running: true });
            }
            // It stopped while asked: its log is complete; read it there.
            Ok(_) => {}
            Err(e) if e.code == "pod.not_running" => {}
            Err(e) => return Err(e),
        }
    }
    let name = name.clone();
    let read = move || -> Result<(Vec<Record>, u64), WireError> {
        let log = pod_client::commands::inspect::open_log(&paths, &name)?;
        let mut records = Vec::new();
        for record in log.read_from(from).take(MAX_READ_RECORDS) {
            records.push(record.map_err(|e| WireError::new(e.code(), e.to_string()))?);
        }
        Ok(bounded(records, from))
    };
    let (records, next_seq) = tokio::task::spawn_blocking(read).await.map_err(failed)??;
    Ok(PodReply::LogOf { records, next_seq, running: false })
}

/// This Pod's own records as a `LogOf` answer: `page` is the `Log` answer.
pub fn own_log(page: PodReply, from_seq: u64) -> Result<PodReply, WireError> {
    match page {
        PodReply::Log { records, .. } => {
            let (records, next_seq) = bounded(records, from_seq.max(1));
            Ok(PodReply::LogOf { records, next_seq, running: true })
        }
        other => Err(WireError::new("pod.internal", format!("a log read answered {other:?}"))),
    }
}

/// At most [`MAX_READ_RECORDS`] records and [`MAX_READ_BYTES`] of their
/// JSON (one record at least, so a reader always moves on), and the seq
/// after the last one kept.
fn bounded(mut records: Vec<Record>, from: u64) -> (Vec<Record>, u64) {
    let mut bytes = 0usize;
    let mut keep = 0usize;
    for record in records.iter().take(MAX_READ_RECORDS) {
        bytes += serde_json::to_vec(record).map_or(MAX_READ_BYTES, |v| v.len());
        if keep > 0 && bytes > MAX_READ_BYTES {
            break;
        }
        keep += 1;
    }
    records.truncate(keep);
    let next_seq = records.last().map_or(from, |r| r.seq + 1);
    (records, next_seq)
}

fn failed(e: tokio::task::JoinError) -> WireError {
    WireError::new("pod.internal", format!("a read failed: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(seq: u64, text_bytes: usize) -> Record {
        Record { seq, timestamp_ms: 0, event: session_log::Event::PodFenced { reason: "x".repeat(text_bytes) } }
    }

    #[test]
    fn a_page_keeps_within_its_record_and_byte_bounds_and_always_moves_on() {
        let many: Vec<Record> = (1..=600).map(|s| record(s, 10)).collect();
        let (kept, next) = bounded(many, 1);
        assert_eq!((kept.len(), next), (MAX_READ_RECORDS, 513));
        let big: Vec<Record> = (5..=8).map(|s| record(s, 200 << 10)).collect();
        let (kept, next) = bounded(big, 5);
        assert_eq!((kept.len(), next), (2, 7));
        let huge = vec![record(9, 600 << 10)];
        assert_eq!(bounded(huge, 9).1, 10);
        assert_eq!(bounded(Vec::new(), 4).1, 4);
    }
}
