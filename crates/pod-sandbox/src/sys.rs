//! The two system calls this crate makes that Rust cannot call safely, each
//! sound for the arguments used here. Everything else goes through rustix's
//! safe wrappers; there is no `unsafe` in `pre_exec` anywhere: the helper
//! is a fresh, single-threaded process when it calls these.
#![allow(unsafe_code)]

use rustix::thread::UnshareFlags;

/// `unshare(2)` of namespaces only. rustix marks `unshare` unsafe because
/// `CLONE_FILES` would split the file table under other threads' feet; the
/// flags here never include it (asserted), and namespaces carry no such
/// hazard.
pub fn unshare_namespaces(flags: UnshareFlags) -> rustix::io::Result<()> {
    assert!(!flags.contains(UnshareFlags::FILES) && !flags.contains(UnshareFlags::FS), "namespaces only");
    // SAFETY: no CLONE_FILES / CLONE_FS, so no thread's view of file
    // descriptors or of the current directory changes under it.
    unsafe { rustix::thread::unshare_unsafe(flags) }
}

/// `kill(-1, signal)`: every process this one may signal except itself and
/// init. Only the init of a PID namespace calls it, where that means every
/// other process of the namespace. rustix's `Pid` cannot be -1.
pub fn kill_all_in_namespace(signal: i32) -> std::io::Result<()> {
    // SAFETY: kill(2) takes plain integers and touches no memory.
    let r = unsafe { libc::kill(-1, signal) };
    if r == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}
