//! Landlock at exec: the last thing the helper does before it becomes the
//! workload. After `restrict_self` the process (and everything it starts)
//! can create, write, truncate, rename, link and delete only beneath the
//! granted trees, can no longer mount or unmount (so the mount mechanism
//! stays in force), cannot ptrace or open `/proc/<pid>/root` of processes
//! outside its domain (the Pod's own view of the filesystem), and from ABI 6
//! cannot signal them. `no_new_privs` is set with it, so a setuid program
//! cannot lift any of this.
//!
//! Reads are not restricted, except where the plan hides a tree at level
//! `landlock` (the stores' `data/`): then file reads are granted beneath
//! every entry next to each directory on the way down to it, so the whole
//! filesystem stays readable but that tree. Entries created later in those
//! directories are not readable (stated in docs/security.md).

use std::collections::BTreeSet;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use landlock::{
    make_bitflags, AccessFs, BitFlags, PathBeneath, Ruleset, RulesetAttr, RulesetCreatedAttr, RulesetStatus, Scope,
};
use rustix::fs::{Mode, OFlags};

use crate::policy::LandlockPlan;
use crate::SandboxError;

/// Device files every program writes (`> /dev/null`, a terminal), granted
/// write (no create, no delete) whatever the scope. `/dev/shm` is not among
/// them: it is shared with every other process of the machine.
pub const DEVICE_WRITES: &[&str] = &["/dev/null", "/dev/zero", "/dev/full", "/dev/tty", "/dev/ptmx", "/dev/pts"];

/// Most read grants the hiding of trees may add.
pub const MAX_READ_GRANTS: usize = 16_384;

fn write_rights() -> BitFlags<AccessFs> {
    make_bitflags!(AccessFs::{
        WriteFile | RemoveDir | RemoveFile | MakeChar | MakeDir | MakeReg | MakeSock | MakeFifo | MakeBlock
            | MakeSym | Refer | Truncate
    })
}

fn file_rights() -> BitFlags<AccessFs> {
    make_bitflags!(AccessFs::{ WriteFile | Truncate | ReadFile })
}

fn landlock_err(e: impl std::fmt::Display) -> SandboxError {
    SandboxError::Helper(format!("Landlock: {e}"))
}

fn open_path(path: &Path, follow: bool) -> Result<OwnedFd, SandboxError> {
    let mut flags = OFlags::PATH | OFlags::CLOEXEC;
    if !follow {
        flags |= OFlags::NOFOLLOW;
    }
    rustix::fs::open(path, flags, Mode::empty()).map_err(|_| SandboxError::Missing {
        path: path.to_path_buf(),
        why: "Landlock grants write to existing paths only; create it before the workload starts",
    })
}

/// `(path, is_dir)` for every entry that must stay readable when `hidden`
/// trees are not: every entry of every directory strictly above a hidden
/// tree, except the ones on the way down (and the hidden trees themselves).
/// Symlinks are skipped (a read through one is checked where it points).
pub fn read_grants(hidden: &[PathBuf]) -> Result<Vec<(PathBuf, bool)>, SandboxError> {
    let mut blocked: BTreeSet<PathBuf> = BTreeSet::new();
    for h in hidden {
        for a in h.ancestors() {
            blocked.insert(a.to_path_buf());
        }
    }
    let mut out = Vec::new();
    let dirs: BTreeSet<&Path> = hidden.iter().flat_map(|h| h.ancestors().skip(1)).collect();
    for dir in dirs {
        let entries = std::fs::read_dir(dir).map_err(SandboxError::io(format!("cannot list {}", dir.display())))?;
        for entry in entries.flatten() {
            let path = entry.path();
            if blocked.contains(&path) {
                continue;
            }
            let Ok(kind) = entry.file_type() else { continue };
            if kind.is_symlink() {
                continue;
            }
            out.push((path, kind.is_dir()));
            if out.len() > MAX_READ_GRANTS {
                return Err(SandboxError::BadRequest(format!(
                    "hiding {} needs more than {MAX_READ_GRANTS} read grants (directories on the way are too crowded); move POD_HOME or use level full",
                    hidden.iter().map(|h| h.display().to_string()).collect::<Vec<_>>().join(", ")
                )));
            }
        }
    }
    Ok(out)
}

/// Restricts the calling process (and its future children) to `plan`.
pub fn restrict(plan: &LandlockPlan) -> Result<RulesetStatus, SandboxError> {
    let hidden: Vec<PathBuf> = plan.hide.iter().map(|p| PathBuf::from(p.as_str())).collect();
    let read = if hidden.is_empty() { BitFlags::EMPTY } else { BitFlags::from(AccessFs::ReadFile) };
    let handled = write_rights() | read;
    let mut ruleset = Ruleset::default()
        .handle_access(handled)
        .map_err(landlock_err)?
        .scope(Scope::Signal)
        .map_err(landlock_err)?
        .create()
        .map_err(landlock_err)?;
    for path in &plan.write {
        let path = Path::new(path.as_str());
        let fd = open_path(path, true)?;
        let is_dir = std::fs::metadata(path).is_ok_and(|m| m.is_dir());
        let access = if is_dir { handled } else { file_rights() & handled };
        ruleset = ruleset.add_rule(PathBeneath::new(fd, access)).map_err(landlock_err)?;
    }
    for device in DEVICE_WRITES {
        // A machine without one has nothing to grant there.
        let Ok(fd) = open_path(Path::new(device), true) else { continue };
        ruleset = ruleset.add_rule(PathBeneath::new(fd, file_rights() & handled)).map_err(landlock_err)?;
    }
    if !hidden.is_empty() {
        for (path, _is_dir) in read_grants(&hidden)? {
            // Gone since it was listed: nothing to grant.
            let Ok(fd) = open_path(&path, false) else { continue };
            ruleset = ruleset.add_rule(PathBeneath::new(fd, AccessFs::ReadFile)).map_err(landlock_err)?;
        }
    }
    let status = ruleset.restrict_self().map_err(landlock_err)?;
    if status.ruleset == RulesetStatus::NotEnforced || !status.no_new_privs {
        return Err(SandboxError::Unsupported(format!(
            "Landlock did not enforce the ruleset (status {:?}, no_new_privs {})",
            status.ruleset, status.no_new_privs
        )));
    }
    Ok(status.ruleset)
}
