//! `spawned_pods.json`: a plain-file mirror of a Pod's durable children, for
//! operators and tools that do not speak the IPC protocol.
//!
//! The session log is the truth; this file is rewritten after every durable
//! change of the children and must equal them (invariant 6). It is replaced
//! atomically (temp file, then rename), so a reader or a killed process sees
//! the old or the new list, never a torn one. It is deliberately not
//! fsynced: the log batch before it already was, and every resume rewrites
//! the mirror from the log, which also covers a power loss between the two.

use std::collections::BTreeMap;
use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use scope::{PodName, ScopeRule};
use serde::{Deserialize, Serialize};

pub const MIRROR_FILE: &str = "spawned_pods.json";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MirroredChild {
    pub name: PodName,
    pub socket: String,
    pub rules: Vec<ScopeRule>,
}

/// Replaces `<dir>/spawned_pods.json` with `children`, durably.
pub fn write(dir: &Path, children: &BTreeMap<PodName, MirroredChild>) -> std::io::Result<()> {
    let list: Vec<&MirroredChild> = children.values().collect();
    let body = serde_json::to_vec_pretty(&list).map_err(std::io::Error::other)?;
    let tmp = dir.join(format!(".{MIRROR_FILE}.tmp"));
    let mut file = OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(&tmp)?;
    file.write_all(&body)?;
    file.write_all(b"\n")?;
    drop(file);
    std::fs::rename(&tmp, dir.join(MIRROR_FILE))
}

/// Reads the mirror back; a missing file is an empty list.
pub fn read(dir: &Path) -> std::io::Result<Vec<MirroredChild>> {
    match std::fs::read(dir.join(MIRROR_FILE)) {
        Ok(bytes) => serde_json::from_slice(&bytes).map_err(std::io::Error::other),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use scope::ScopePath;

    #[test]
    fn round_trip_and_replace() {
        let dir = tempfile::tempdir().unwrap();
        assert!(read(dir.path()).unwrap().is_empty());
        let child = MirroredChild {
            name: PodName::new("a").unwrap(),
            socket: "/run/a/sock".into(),
            rules: vec![ScopeRule::write(ScopePath::new("/repo/a").unwrap())],
        };
        let mut children = BTreeMap::from([(child.name.clone(), child.clone())]);
        write(dir.path(), &children).unwrap();
        assert_eq!(read(dir.path()).unwrap(), vec![child]);
        children.clear();
        write(dir.path(), &children).unwrap();
        assert!(read(dir.path()).unwrap().is_empty());
        assert!(!dir.path().join(format!(".{MIRROR_FILE}.tmp")).exists());
    }
}
