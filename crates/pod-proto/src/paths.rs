//! Where the runtime keeps its sockets, locks and data.
//!
//! Sockets and lock files live under a per-user runtime directory (`run/`)
//! and durable state under a per-user data directory (`data/`). Both must be
//! private (mode 0700, owned by us): the socket's permissions alone would not
//! stop another user from replacing it, and the peer check alone would not
//! stop them from reading files next to it. The folder that holds them
//! (`POD_HOME`, or the XDG parent) must not be writable by anyone else
//! either, or they could swap `run/` for their own.
//!
//! Pods and the runtime's own files never share a name space: Pods live
//! under `run/pods/<name>` and `data/pods/<name>`, the registry under
//! `run/registry/` and `data/registry/`, so no Pod name (`registry`,
//! `registry.sock`, ...) can reach a file of the registry. The layout before
//! this one put Pods directly under `run/` and `data/`; [`RuntimeDirs::ensure`]
//! refuses it, naming what it found, and the `pod` binary moves it (see
//! `crates/pod-client/src/layout.rs`).

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
    #[error("{path} (mode {mode:o}, uid {owner}) can be written by other users, who could replace the runtime's directories in it; chmod go-w it or choose another POD_HOME")]
    ParentWritable { path: PathBuf, mode: u32, owner: u32 },
    #[error("{path} exists and is not a directory")]
    NotADirectory { path: PathBuf },
    #[error("{run} and {data} are in the old layout (Pods directly under run/ and data/; found {found}); this build keeps Pods under run/pods/ and data/pods/ and the registry under run/registry/: once nothing of the old layout runs, any `pod` command of this build moves them")]
    OldLayout { run: PathBuf, data: PathBuf, found: PathBuf },
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
            DirError::ParentWritable { .. } => "dirs.parent_writable",
            DirError::NotADirectory { .. } => "dirs.not_a_directory",
            DirError::OldLayout { .. } => "dirs.old_layout",
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

/// The folder of Pods in both roots, and of the registry in both.
pub const PODS_DIR: &str = "pods";
pub const REGISTRY_DIR: &str = "registry";

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

    /// Creates the layout (every directory mode 0700) or checks the existing
    /// one: every directory ours and private, the folders holding `run/` and
    /// `data/` writable by nobody else, and not the old layout.
    pub fn ensure(&self) -> Result<(), DirError> {
        ensure_private_dir(&self.run)?;
        ensure_durable_private_dir(&self.data)?;
        for root in [&self.run, &self.data] {
            if let Some(parent) = root.parent() {
                check_parent(parent)?;
            }
        }
        if let Some(found) = self.old_layout() {
            return Err(DirError::OldLayout { run: self.run.clone(), data: self.data.clone(), found });
        }
        for dir in [self.pods_run(), self.registry_run()] {
            ensure_private_dir(&dir)?;
        }
        for dir in [self.pods_data(), self.registry_data()] {
            ensure_durable_private_dir(&dir)?;
        }
        Ok(())
    }

    /// Where Pods keep their runtime files: `run/pods/`.
    pub fn pods_run(&self) -> PathBuf {
        self.run.join(PODS_DIR)
    }

    /// Where Pods keep their session logs: `data/pods/`.
    pub fn pods_data(&self) -> PathBuf {
        self.data.join(PODS_DIR)
    }

    /// The registry daemon's runtime folder: `run/registry/`.
    pub fn registry_run(&self) -> PathBuf {
        self.run.join(REGISTRY_DIR)
    }

    pub fn registry_socket(&self) -> PathBuf {
        self.registry_run().join("sock")
    }

    pub fn registry_lock(&self) -> PathBuf {
        self.registry_run().join("lock")
    }

    pub fn registry_log(&self) -> PathBuf {
        self.registry_run().join("log")
    }

    pub fn registry_data(&self) -> PathBuf {
        self.data.join(REGISTRY_DIR)
    }

    /// Something only the old layout has, if there is any: the registry's
    /// files directly in `run/`, or a Pod's folder directly in `run/` or
    /// `data/` (also one named `pods` or `registry`, which the old layout
    /// mixed with the runtime's own).
    pub fn old_layout(&self) -> Option<PathBuf> {
        let run = &self.run;
        let data = &self.data;
        // (path, whether it is a folder): a Pod of this layout may be named
        // `pod.log` or `log`, but its entry is then a folder.
        let mut signs = vec![
            (run.join("registry.sock"), false),
            (run.join("registry.lock"), false),
            (run.join("registry.log"), false),
            // An old Pod named `registry` or `pods`: its files where the
            // runtime's own folders are now.
            (run.join(REGISTRY_DIR).join("pod.log"), false),
            (run.join(PODS_DIR).join("pod.log"), false),
            (data.join(REGISTRY_DIR).join("log"), true),
            (data.join(PODS_DIR).join("log").join("conf"), false),
        ];
        signs.extend(old_pod_dirs(run, "lock").into_iter().map(|p| (p, false)));
        signs.extend(old_pod_dirs(data, "log").into_iter().map(|p| (p, true)));
        signs.into_iter().find(|(p, dir)| p.symlink_metadata().is_ok_and(|m| m.is_dir() == *dir)).map(|(p, _)| p)
    }
}

/// Entries `<root>/<x>/<marker>` for every `x` other than the runtime's
/// own folders: where the old layout kept a Pod's lock or log.
fn old_pod_dirs(root: &Path, marker: &str) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(root) else { return Vec::new() };
    entries
        .flatten()
        .filter(|e| e.file_name() != PODS_DIR && e.file_name() != REGISTRY_DIR)
        .map(|e| e.path().join(marker))
        .filter(|p| p.symlink_metadata().is_ok())
        .collect()
}

/// Makes every file and directory this process creates from now on
/// owner-only (umask 077), including those made by libraries that take
/// no mode (sled's files, its blobs, the write-ahead logs' temporaries).
/// Every binary of the runtime calls this first thing; places that create
/// files also give the mode explicitly.
pub fn private_umask() {
    rustix::process::umask(rustix::fs::Mode::from_raw_mode(0o077));
}

/// [`ensure_private_dir`] for a folder that holds durable stores (under
/// `data/`): when it creates `path`, it also makes the new name durable (an
/// fsync of the folder holding it; that one must exist already). Without
/// it a power loss could lose the new folder with every store in it, on a
/// filesystem that does not persist a name with the first fsync of a file
/// below it: POSIX does not promise that it does (ext4, xfs and btrfs do;
/// ext2 does not), so this costs a cache flush where it is not needed.
pub fn ensure_durable_private_dir(path: &Path) -> Result<(), DirError> {
    let created = std::fs::symlink_metadata(path).is_err();
    ensure_private_dir(path)?;
    match path.parent().filter(|p| created && !p.as_os_str().is_empty()) {
        Some(parent) => std::fs::File::open(parent)
            .and_then(|d| d.sync_all())
            .map_err(|source| DirError::Io { path: parent.to_path_buf(), source }),
        None => Ok(()),
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

/// The folder holding `run/` or `data/` (POD_HOME, `$XDG_RUNTIME_DIR`,
/// `/tmp`): owned by us or by root, and writable by no one else unless it
/// is sticky (as `/tmp` is: others may add entries but not rename ours).
fn check_parent(path: &Path) -> Result<(), DirError> {
    let meta = std::fs::metadata(path).map_err(|source| DirError::Io { path: path.to_path_buf(), source })?;
    let mode = meta.mode() & 0o7777;
    let owner = meta.uid();
    let sticky = mode & 0o1000 != 0;
    if (owner != own_uid() && owner != 0) || (mode & 0o022 != 0 && !sticky) {
        return Err(DirError::ParentWritable { path: path.to_path_buf(), mode, owner });
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
        assert_eq!(dirs.registry_socket(), PathBuf::from("/h/run/registry/sock"));
        assert_eq!(dirs.pods_run(), PathBuf::from("/h/run/pods"));
        assert_eq!(dirs.pods_data(), PathBuf::from("/h/data/pods"));
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

    #[test]
    fn a_home_others_can_write_is_refused() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let home = tmp.path().join("home");
        std::fs::create_dir(&home).expect("home");
        std::fs::set_permissions(&home, std::fs::Permissions::from_mode(0o777)).expect("chmod");
        let dirs = RuntimeDirs::from_vars(&DirEnv { pod_home: Some(home.clone()), ..env() }).expect("dirs");
        assert_eq!(dirs.ensure().expect_err("world-writable home").code(), "dirs.parent_writable");
        std::fs::set_permissions(&home, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        dirs.ensure().expect("a home others may only read is fine");
    }

    #[test]
    fn the_old_layout_is_recognized_and_refused() {
        for (sign, dir) in [
            ("run/registry.sock", false),
            ("run/lead/lock", false),
            ("data/lead/log", true),
            ("data/registry/log", true),
            ("run/pods/pod.log", false),
        ] {
            let tmp = tempfile::tempdir().expect("tempdir");
            let dirs = RuntimeDirs::from_vars(&DirEnv { pod_home: Some(tmp.path().into()), ..env() }).expect("dirs");
            dirs.ensure().expect("a new layout");
            assert_eq!(dirs.old_layout(), None);
            let path = tmp.path().join(sign);
            std::fs::create_dir_all(path.parent().expect("parent")).expect("dirs");
            if dir {
                std::fs::create_dir(&path).expect("sign");
            } else {
                std::fs::write(&path, b"").expect("sign");
            }
            assert_eq!(dirs.old_layout(), Some(path), "{sign}");
            assert_eq!(dirs.ensure().expect_err("old layout").code(), "dirs.old_layout", "{sign}");
        }
    }

    #[test]
    fn pods_named_like_old_files_are_not_the_old_layout() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dirs = RuntimeDirs::from_vars(&DirEnv { pod_home: Some(tmp.path().into()), ..env() }).expect("dirs");
        dirs.ensure().expect("a new layout");
        for pod in ["pod.log", "log", "registry", "registry.sock", "lock"] {
            std::fs::create_dir_all(dirs.pods_run().join(pod)).expect("run dir");
            std::fs::write(dirs.pods_run().join(pod).join("lock"), b"").expect("lock");
            std::fs::create_dir_all(dirs.pods_data().join(pod).join("log")).expect("data dir");
            std::fs::write(dirs.pods_data().join(pod).join("log").join("conf"), b"").expect("conf");
        }
        std::fs::write(dirs.registry_lock(), b"1\n").expect("daemon lock");
        assert_eq!(dirs.old_layout(), None);
    }
}
