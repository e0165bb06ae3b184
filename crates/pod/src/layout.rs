//! Where a Pod's files live. `$POD_HOME/run/<name>/` holds what dies with a
//! boot (socket, pid, lock, the children mirror, daemon logs);
//! `$POD_HOME/data/<name>/` holds the session log. Without POD_HOME, the XDG
//! runtime and state locations (see `pod_proto::RuntimeDirs`).

use std::path::PathBuf;

use pod_proto::paths::{ensure_private_dir, DirError};
use pod_proto::RuntimeDirs;
use scope::PodName;

#[derive(Debug, Clone)]
pub struct PodPaths {
    pub dirs: RuntimeDirs,
    pub run_dir: PathBuf,
    pub data_dir: PathBuf,
}

impl PodPaths {
    pub fn new(dirs: &RuntimeDirs, name: &PodName) -> PodPaths {
        PodPaths { dirs: dirs.clone(), run_dir: dirs.run.join(name.as_str()), data_dir: dirs.data.join(name.as_str()) }
    }

    pub fn ensure(&self) -> Result<(), DirError> {
        ensure_private_dir(&self.run_dir)?;
        ensure_private_dir(&self.data_dir)
    }

    pub fn socket(&self) -> PathBuf {
        self.run_dir.join("sock")
    }

    pub fn pid_file(&self) -> PathBuf {
        self.run_dir.join("pid")
    }

    pub fn lock_file(&self) -> PathBuf {
        self.run_dir.join("lock")
    }

    /// The Pod process's own diagnostics (tracing output).
    pub fn pod_log(&self) -> PathBuf {
        self.run_dir.join("pod.log")
    }

    /// The workload's stdout and stderr.
    pub fn workload_log(&self) -> PathBuf {
        self.run_dir.join("workload.log")
    }

    /// The session log's sled directory.
    pub fn session_log(&self) -> PathBuf {
        self.data_dir.join("log")
    }

    /// The identity of this Pod's session in the registry: its log's path,
    /// unique on the machine.
    pub fn session_id(&self) -> String {
        self.session_log().to_string_lossy().into_owned()
    }
}
