//! The mount mechanism, run by the keeper inside the workload's private
//! mount namespace: read-only binds over deny rules and delegated regions,
//! empty read-only filesystems over hidden directories, and their removal.
//! Landlock cannot take a right from a running process; a mount changes
//! what every process of the namespace sees at once, so this is how a
//! running workload loses write on a region its Pod delegates (and gets it
//! back). The workload cannot undo any of it: Landlock refuses mount and
//! umount to sandboxed processes.
//!
//! A bind is made from a recursive clone (`open_tree`) of what is there, so
//! mounts already inside the region (a hidden `data/`, an earlier deny) are
//! carried along, and every mount of the copy is then made read-only.

use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};

use rustix::fs::{Mode, OFlags, StatVfsMountFlags, CWD};
use rustix::mount::{
    fsconfig_create, fsconfig_set_string, fsmount, fsopen, mount_change, mount_remount, move_mount, open_tree, unmount,
    FsMountFlags, FsOpenFlags, MountAttrFlags, MountFlags, MountPropagationFlags, MoveMountFlags, OpenTreeFlags,
    UnmountFlags,
};

use crate::policy::MountOp;
use crate::SandboxError;

/// Most subdirectories bound back under one non-recursive rule.
pub const MAX_RESTORED: usize = 4096;

/// Cuts the namespace off from the host's propagation both ways we care
/// about: our binds never show on the host; the host's later mounts still
/// appear here (slave, not private).
pub fn make_downstream() -> Result<(), SandboxError> {
    mount_change("/", MountPropagationFlags::DOWNSTREAM | MountPropagationFlags::REC)
        .map_err(SandboxError::errno("cannot make / a downstream mount in the new namespace"))
}

/// Flags a remount must keep: in a user namespace the host's nosuid, nodev,
/// noexec and atime flags are locked, and dropping one is EPERM.
fn kept_flags(path: &Path) -> MountFlags {
    let Ok(st) = rustix::fs::statvfs(path) else { return MountFlags::empty() };
    let f = st.f_flag;
    let mut out = MountFlags::empty();
    for (from, to) in [
        (StatVfsMountFlags::NOSUID, MountFlags::NOSUID),
        (StatVfsMountFlags::NODEV, MountFlags::NODEV),
        (StatVfsMountFlags::NOEXEC, MountFlags::NOEXEC),
        (StatVfsMountFlags::NOATIME, MountFlags::NOATIME),
        (StatVfsMountFlags::NODIRATIME, MountFlags::NODIRATIME),
        (StatVfsMountFlags::RELATIME, MountFlags::RELATIME),
    ] {
        if f.contains(from) {
            out |= to;
        }
    }
    out
}

/// Longest a read-only remount is retried while the kernel says EBUSY.
pub const REMOUNT_BUSY_WAIT: std::time::Duration = std::time::Duration::from_millis(100);

/// Makes the mount at `path` read-only. The kernel refuses (EBUSY) while
/// a write through that mount is in progress: a bind attached over a
/// region the workload is writing in (a `mkdir` running at that instant)
/// is such a mount. Those writes last microseconds, so the remount is
/// tried again at once, for at most [`REMOUNT_BUSY_WAIT`]; a file held
/// open for writing through the new mount keeps it busy, and the caller's
/// busy scan names it.
fn remount_read_only(path: &Path) -> Result<(), SandboxError> {
    let flags = MountFlags::BIND | MountFlags::RDONLY | kept_flags(path);
    let deadline = std::time::Instant::now() + REMOUNT_BUSY_WAIT;
    loop {
        match mount_remount(path, flags, "") {
            Err(rustix::io::Errno::BUSY) if std::time::Instant::now() < deadline => std::thread::yield_now(),
            done => return done.map_err(SandboxError::errno(format!("cannot make {} read-only", path.display()))),
        }
    }
}

/// Mount points at or below `target`, outermost first.
fn mounts_within(target: &Path) -> Vec<PathBuf> {
    let text = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mut out: Vec<PathBuf> = crate::detect::parse_mountinfo(&text)
        .into_iter()
        .map(|m| m.mount_point)
        .filter(|m| m.starts_with(target))
        .collect();
    out.sort_by_key(|p| p.components().count());
    out.dedup();
    out
}

fn clone_tree(path: &Path) -> Result<OwnedFd, SandboxError> {
    open_tree(
        CWD,
        path,
        OpenTreeFlags::OPEN_TREE_CLONE | OpenTreeFlags::OPEN_TREE_CLOEXEC | OpenTreeFlags::AT_RECURSIVE,
    )
    .map_err(SandboxError::errno(format!("cannot clone the mounts at {}", path.display())))
}

fn attach(tree: &OwnedFd, target: &Path) -> Result<(), SandboxError> {
    move_mount(tree.as_fd(), "", CWD, target, MoveMountFlags::MOVE_MOUNT_F_EMPTY_PATH)
        .map_err(SandboxError::errno(format!("cannot mount over {}", target.display())))
}

/// Clones of the existing subdirectories of `dir` (not symlinks), to bind
/// back after `dir` itself was covered.
fn subdirectory_clones(dir: &Path) -> Result<Vec<(PathBuf, OwnedFd)>, SandboxError> {
    let mut out = Vec::new();
    let entries = std::fs::read_dir(dir).map_err(SandboxError::io(format!("cannot list {}", dir.display())))?;
    for entry in entries.flatten() {
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            if out.len() >= MAX_RESTORED {
                return Err(SandboxError::BadRequest(format!(
                    "{} has more than {MAX_RESTORED} subdirectories; a non-recursive rule there cannot be enforced",
                    dir.display()
                )));
            }
            let path = entry.path();
            let tree = clone_tree(&path)?;
            out.push((path, tree));
        }
    }
    Ok(out)
}

fn exists(path: &Path, why: &'static str) -> Result<std::fs::Metadata, SandboxError> {
    std::fs::symlink_metadata(path).map_err(|_| SandboxError::Missing { path: path.to_path_buf(), why })
}

/// An empty tmpfs, detached, writable until remounted.
fn empty_fs(mode: &str) -> Result<OwnedFd, SandboxError> {
    let fs = fsopen("tmpfs", FsOpenFlags::FSOPEN_CLOEXEC).map_err(SandboxError::errno("cannot open a tmpfs"))?;
    fsconfig_set_string(fs.as_fd(), "size", "64k").map_err(SandboxError::errno("tmpfs size"))?;
    fsconfig_set_string(fs.as_fd(), "mode", mode).map_err(SandboxError::errno("tmpfs mode"))?;
    fsconfig_create(fs.as_fd()).map_err(SandboxError::errno("cannot create a tmpfs"))?;
    fsmount(
        fs.as_fd(),
        FsMountFlags::FSMOUNT_CLOEXEC,
        MountAttrFlags::MOUNT_ATTR_NOSUID | MountAttrFlags::MOUNT_ATTR_NODEV | MountAttrFlags::MOUNT_ATTR_NOEXEC,
    )
    .map_err(SandboxError::errno("cannot mount a tmpfs"))
}

/// Applies one operation. On error, what this call mounted is undone.
pub fn apply(op: &MountOp) -> Result<(), SandboxError> {
    let target = Path::new(op.target().as_str());
    let why = "enforcement binds over existing paths only; create it before the Pod starts or delegates it";
    let meta = exists(target, why)?;
    let result = match op {
        MountOp::ReadOnly { recursive, .. } => read_only(target, *recursive || !meta.is_dir()),
        MountOp::Hide { recursive, .. } => hide(target, meta.is_dir(), *recursive),
    };
    if result.is_err() {
        // Whatever part was attached goes again.
        let _ = unmount(target, UnmountFlags::DETACH);
    }
    result
}

fn read_only(target: &Path, recursive: bool) -> Result<(), SandboxError> {
    let restore = if recursive { Vec::new() } else { subdirectory_clones(target)? };
    let tree = clone_tree(target)?;
    attach(&tree, target)?;
    for mount_point in mounts_within(target) {
        remount_read_only(&mount_point)?;
    }
    for (path, tree) in &restore {
        attach(tree, path)?;
    }
    Ok(())
}

fn hide(target: &Path, is_dir: bool, recursive: bool) -> Result<(), SandboxError> {
    if !is_dir {
        let fs = empty_fs("0555")?;
        let file =
            rustix::fs::openat(fs.as_fd(), "hidden", OFlags::CREATE | OFlags::WRONLY | OFlags::CLOEXEC, Mode::empty())
                .map_err(SandboxError::errno("cannot create the empty file"))?;
        drop(file);
        let tree = open_tree(fs.as_fd(), "hidden", OpenTreeFlags::OPEN_TREE_CLONE | OpenTreeFlags::OPEN_TREE_CLOEXEC)
            .map_err(SandboxError::errno("cannot clone the empty file"))?;
        attach(&tree, target)?;
        return remount_read_only(target);
    }
    let restore = if recursive { Vec::new() } else { subdirectory_clones(target)? };
    let fs = empty_fs("0555")?;
    for (path, _) in &restore {
        if let Some(name) = path.file_name() {
            rustix::fs::mkdirat(fs.as_fd(), name, Mode::from_raw_mode(0o555))
                .map_err(SandboxError::errno(format!("cannot make a mount point for {}", path.display())))?;
        }
    }
    attach(&fs, target)?;
    mount_remount(target, MountFlags::RDONLY | MountFlags::NOSUID | MountFlags::NODEV | MountFlags::NOEXEC, "")
        .map_err(SandboxError::errno(format!("cannot make the cover of {} read-only", target.display())))?;
    for (path, tree) in &restore {
        attach(tree, path)?;
    }
    Ok(())
}

/// Undoes one applied operation (lazily: processes inside keep what they
/// hold, and the busy check made sure none held anything writable).
pub fn undo(op: &MountOp) -> Result<(), SandboxError> {
    let target = Path::new(op.target().as_str());
    match unmount(target, UnmountFlags::DETACH) {
        Ok(()) | Err(rustix::io::Errno::INVAL) | Err(rustix::io::Errno::NOENT) => Ok(()),
        Err(e) => Err(SandboxError::Io { what: format!("cannot unmount {}", target.display()), source: e.into() }),
    }
}

/// Applies `ops` in order; on the first failure undoes the ones applied.
pub fn apply_all(ops: &[MountOp]) -> Result<(), SandboxError> {
    for (i, op) in ops.iter().enumerate() {
        if let Err(e) = apply(op) {
            for done in ops[..i].iter().rev() {
                let _ = undo(done);
            }
            return Err(e);
        }
    }
    Ok(())
}

/// Undoes `ops` (given in application order), last first.
pub fn undo_all(ops: &[MountOp]) -> Result<(), SandboxError> {
    let mut first_err = None;
    for op in ops.iter().rev() {
        if let Err(e) = undo(op) {
            first_err.get_or_insert(e);
        }
    }
    first_err.map_or(Ok(()), Err)
}
