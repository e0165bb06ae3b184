//! Where the runtime keeps its sockets, locks and data.
//!
//! Sockets and lock files live under a per-user runtime directory and
//! durable state under a per-user data directory. Both must be private
//! (mode 0700, owned by us): the socket's permissions alone would not stop
//! another user from replacing it, and the peer check alone would not stop
//! them from reading files next to it.

use std::fs::DirBuilder;
use std::os::unix::fs::{DirBuilderExt, MetadataExt};
use std::path::{Path, PathBuf};

use crate::peer::own_uid;

/// Why the runtime directories cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum DirError {
    #[error("neither POD_HOME, XDG_STATE_HOME nor HOME is set, so there is no place for the data directory")]
    NoHome,
    #[error("{path} is owned by uid {owner}, not by us (uid {ours}); refusing to use it")]
    NotOurs { path: PathBuf, owner: u32, ours: u32 },
    #[error("{path} has mode {mode:o}; it must not be accessible to group or others (chmod 700 it)")]
    TooOpen { path: PathBuf, mode: u32 },
    #[error("{path} exists and is not a directory")]
    NotADirectory { path: PathBuf },
    #[error("cannot create {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl DirError {
    pub fn code(&self) -> &'static str {
        match self {
            DirError::NoHome => "dirs.no_home",
            DirError::NotOurs { .. } => "dirs.not_ours",
            DirError::TooOpen { .. } => "dirs.too_open",
            DirError::NotADirectory { .. } => "dirs.not_a_directory",
            DirError::Io { .. } => "dirs.io",
        }
    }
}

/// The two roots every process of the runtime agrees on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuntimeDirs {
    /// Sockets, lock files, daemon logs: things that may vanish on reboot.
    pub run: PathBuf,
    /// Durable state (sled databases).
    pub data: PathBuf,
}

/// The environment variables the layout depends on, read once so the choice
/// itself is a pure function.
#[derive(Debug, Clone, Default)]
pub struct DirEnv {
    pub pod_home: Option<PathBuf>,
    pub xdg_runtime_dir: Option<PathBuf>,
    pub xdg_state_home: Option<PathBuf>,
    pub home: Option<PathBuf>,
    pub uid: u32,
}

impl DirEnv {
    pub fn from_process() -> DirEnv {
        let var = |k: &str| std::env::var_os(k).filter(|v| !v.is_empty()).map(PathBuf::from);
        DirEnv {
            pod_home: var("POD_HOME"),
            xdg_runtime_dir: var("XDG_RUNTIME_DIR"),
            xdg_state_home: var("XDG_STATE_HOME"),
            home: var("HOME"),
            uid: own_uid(),
        }
    }
}

impl RuntimeDirs {
    /// The layout for this process's environment (nothing is created).
    pub fn from_env() -> Result<RuntimeDirs, DirError> {
        RuntimeDirs::from_vars(&DirEnv::from_process())
    }

    /// `POD_HOME` puts everything in one folder; otherwise XDG locations.
    pub fn from_vars(env: &DirEnv) -> Result<RuntimeDirs, DirError> {
        if let Some(home) = &env.pod_home {
            return Ok(RuntimeDirs { run: home.join("run"), data: home.join("data") });
        }
        let run = match &env.xdg_runtime_dir {
            Some(dir) => dir.join("pod"),
            None => PathBuf::from(format!("/tmp/pod-{}", env.uid)),
        };
        let data = match (&env.xdg_state_home, &env.home) {
            (Some(state), _) => state.join("pod"),
            (None, Some(home)) => home.join(".local/state/pod"),
            (None, None) => return Err(DirError::NoHome),
        };
        Ok(RuntimeDirs { run, data })
    }

    /// Creates both directories (mode 0700) or checks the existing ones are
    /// ours and private.
    pub fn ensure(&self) -> Result<(), DirError> {
        ensure_private_dir(&self.run)?;
        ensure_private_dir(&self.data)
    }

    pub fn registry_socket(&self) -> PathBuf {
        self.run.join("registry.sock")
    }

    pub fn registry_lock(&self) -> PathBuf {
        self.run.join("registry.lock")
    }

    pub fn registry_log(&self) -> PathBuf {
        self.run.join("registry.log")
    }

    pub fn registry_data(&self) -> PathBuf {
        self.data.join("registry")
    }
}

/// Creates `path` with mode 0700 (parents too), then checks ownership and
/// mode, which also catches a directory someone else created first.
pub fn ensure_private_dir(path: &Path) -> Result<(), DirError> {
    DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(path)
        .map_err(|source| DirError::Io { path: path.to_path_buf(), source })?;
    let meta = std::fs::symlink_metadata(path).map_err(|source| DirError::Io { path: path.to_path_buf(), source })?;
    if !meta.is_dir() {
        return Err(DirError::NotADirectory { path: path.to_path_buf() });
    }
    let ours = own_uid();
    if meta.uid() != ours {
        return Err(DirError::NotOurs { path: path.to_path_buf(), owner: meta.uid(), ours });
    }
    let mode = meta.mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(DirError::TooOpen { path: path.to_path_buf(), mode });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    fn env() -> DirEnv {
        DirEnv { uid: 1000, ..DirEnv::default() }
    }

    #[test]
    fn pod_home_holds_everything() {
        let dirs = RuntimeDirs::from_vars(&DirEnv { pod_home: Some("/h".into()), home: Some("/u".into()), ..env() })
            .expect("dirs");
        assert_eq!(dirs.registry_socket(), PathBuf::from("/h/run/registry.sock"));
        assert_eq!(dirs.registry_data(), PathBuf::from("/h/data/registry"));
    }

    #[test]
    fn xdg_locations_and_fallbacks() {
        let dirs = RuntimeDirs::from_vars(&DirEnv {
            xdg_runtime_dir: Some("/run/user/1000".into()),
            xdg_state_home: Some("/s".into()),
            ..env()
        })
        .expect("dirs");
        assert_eq!(dirs.run, PathBuf::from("/run/user/1000/pod"));
        assert_eq!(dirs.data, PathBuf::from("/s/pod"));
        let dirs = RuntimeDirs::from_vars(&DirEnv { home: Some("/u".into()), ..env() }).expect("dirs");
        assert_eq!(dirs.run, PathBuf::from("/tmp/pod-1000"));
        assert_eq!(dirs.data, PathBuf::from("/u/.local/state/pod"));
        assert_eq!(RuntimeDirs::from_vars(&env()).expect_err("no home").code(), "dirs.no_home");
    }

    #[test]
    fn creates_private_dirs_and_refuses_open_ones() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dirs = RuntimeDirs::from_vars(&DirEnv { pod_home: Some(tmp.path().into()), ..env() }).expect("dirs");
        dirs.ensure().expect("created");
        let mode = std::fs::metadata(&dirs.run).expect("meta").permissions().mode() & 0o777;
        assert_eq!(mode, 0o700);
        dirs.ensure().expect("existing private dirs are fine");
        std::fs::set_permissions(&dirs.data, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        assert_eq!(dirs.ensure().expect_err("too open").code(), "dirs.too_open");
    }
}
