//! The system calls this crate makes that Rust cannot call safely, each
//! sound for the arguments used here. Everything else goes through rustix's
//! safe wrappers; there is no `unsafe` in `pre_exec` anywhere: the helper
//! is a fresh, single-threaded process when it calls `unshare` and `kill`,
//! and [`spawn`] is a spawn primitive (posix_spawn's shape), not a hook
//! for arbitrary code between fork and exec.
#![allow(unsafe_code)]

use std::ffi::{c_char, CString};
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

use rustix::thread::UnshareFlags;

/// `clone3`'s argument (`struct clone_args`, the kernel's ABI; this is its
/// size-88 version, the one that has `cgroup`).
#[repr(C)]
#[derive(Default)]
struct CloneArgs {
    flags: u64,
    pidfd: u64,
    child_tid: u64,
    parent_tid: u64,
    exit_signal: u64,
    stack: u64,
    stack_size: u64,
    tls: u64,
    set_tid: u64,
    set_tid_size: u64,
    cgroup: u64,
}

const CLONE_PIDFD: u64 = 0x1000;
const CLONE_INTO_CGROUP: u64 = 0x2_0000_0000;
/// Exit code of a [`spawn`]ed child whose exec failed.
pub const SPAWN_EXEC_FAILED: i32 = 127;

/// A process [`spawn`] started: its pid, and a pidfd bound to it.
pub struct Spawned {
    pub pid: u32,
    pub pidfd: OwnedFd,
}

/// Starts `program` with `argv` and an empty environment, its stdin,
/// stdout and stderr the three `stdio` descriptors, and, with `cgroup` (a
/// directory of cgroup v2), born inside that cgroup
/// (`clone3(CLONE_INTO_CGROUP)`): never moved there by a write to
/// `cgroup.procs`, which waits for an RCU grace period (tens of
/// milliseconds on a busy machine). The pidfd comes from the same call
/// (`CLONE_PIDFD`), so it can never name another process.
///
/// Sound from a multithreaded process: everything the child touches is
/// prepared before the clone, and the child only makes async-signal-safe
/// calls (`dup2`, `sigaction`, `signal`, `sigprocmask`, `execve`,
/// `_exit`) before its exec, as `posix_spawn` does; it never returns into
/// Rust code. Signals stay blocked from before the clone until the child
/// has put this process's handlers back to default, so none of them runs
/// in the child.
pub fn spawn(
    program: &CString,
    argv: &[CString],
    stdio: [BorrowedFd<'_>; 3],
    cgroup: Option<BorrowedFd<'_>>,
) -> std::io::Result<Spawned> {
    // Copies at 3 and above: the child's dup2 onto 0, 1 and 2 then never
    // overwrites a descriptor it has yet to copy. Close-on-exec, so the
    // copies themselves do not reach the program.
    let sources = stdio
        .iter()
        .map(|fd| rustix::io::fcntl_dupfd_cloexec(fd, 3).map_err(std::io::Error::from))
        .collect::<std::io::Result<Vec<OwnedFd>>>()?;
    let source_fds: [i32; 3] = [sources[0].as_raw_fd(), sources[1].as_raw_fd(), sources[2].as_raw_fd()];
    let mut argv_ptrs: Vec<*const c_char> = argv.iter().map(|a| a.as_ptr()).collect();
    argv_ptrs.push(std::ptr::null());
    let envp: [*const c_char; 1] = [std::ptr::null()];
    let mut pidfd: i32 = -1;
    let mut args = CloneArgs {
        flags: CLONE_PIDFD,
        pidfd: std::ptr::addr_of_mut!(pidfd) as u64,
        exit_signal: libc::SIGCHLD as u64,
        ..CloneArgs::default()
    };
    if let Some(cgroup) = cgroup {
        args.flags |= CLONE_INTO_CGROUP;
        args.cgroup = cgroup.as_raw_fd() as u64;
    }
    // Blocked across the clone, so that none of this process's handlers
    // (tokio's write to a pipe this process reads) runs in the child before
    // `exec_child` has put them back to default.
    let blocked = SignalsBlocked::all();
    // SAFETY: `args` is a valid clone_args of the size passed; without
    // CLONE_VM the child runs on a copy of this thread's memory, and all it
    // reads (`program`, the pointer arrays, the descriptor numbers) was
    // built above and stays alive across the call.
    let ret =
        unsafe { libc::syscall(libc::SYS_clone3, std::ptr::addr_of_mut!(args), std::mem::size_of::<CloneArgs>()) };
    if ret == 0 {
        // SAFETY: in the child; see `exec_child`.
        unsafe { exec_child(program.as_ptr(), argv_ptrs.as_ptr(), envp.as_ptr(), source_fds) }
    }
    let clone_error = (ret < 0).then(std::io::Error::last_os_error);
    drop(blocked);
    if let Some(e) = clone_error {
        return Err(e);
    }
    drop(sources);
    let pid = u32::try_from(ret).map_err(|_| std::io::Error::other(format!("clone3 returned pid {ret}")))?;
    if pidfd < 0 {
        return Err(std::io::Error::other("clone3 returned no pidfd"));
    }
    // SAFETY: CLONE_PIDFD stored a new descriptor that nothing else owns.
    let pidfd = unsafe { OwnedFd::from_raw_fd(pidfd) };
    Ok(Spawned { pid, pidfd })
}

/// Every signal blocked in the calling thread until this is dropped, which
/// puts the thread's mask back as it was. A child cloned or forked
/// meanwhile starts with everything blocked.
struct SignalsBlocked {
    before: libc::sigset_t,
}

impl SignalsBlocked {
    fn all() -> SignalsBlocked {
        // SAFETY: sigset_t is plain data, filled by sigfillset;
        // pthread_sigmask only reads and writes the two sets given.
        let mut all: libc::sigset_t = unsafe { std::mem::zeroed() };
        let mut before: libc::sigset_t = unsafe { std::mem::zeroed() };
        unsafe {
            libc::sigfillset(&mut all);
            libc::pthread_sigmask(libc::SIG_BLOCK, &all, &mut before);
        }
        SignalsBlocked { before }
    }
}

impl Drop for SignalsBlocked {
    fn drop(&mut self) {
        // SAFETY: restores the mask saved by `all`.
        unsafe { libc::pthread_sigmask(libc::SIG_SETMASK, &self.before, std::ptr::null_mut()) };
    }
}

/// Linux's highest signal number (the last real-time one; `SIGRTMAX`).
const MAX_SIGNAL: i32 = 64;

/// The child's side of [`spawn`]: async-signal-safe calls only, no
/// allocation, no return.
///
/// # Safety
/// Only in the child of `spawn`'s clone, with pointers `spawn` built.
unsafe fn exec_child(
    program: *const c_char,
    argv: *const *const c_char,
    envp: *const *const c_char,
    stdio: [i32; 3],
) -> ! {
    for (target, source) in stdio.iter().enumerate() {
        if libc::dup2(*source, target as i32) < 0 {
            libc::_exit(SPAWN_EXEC_FAILED);
        }
    }
    // What the exec'd program must not inherit from this process: a
    // blocked signal mask (`spawn` blocked all of them), an ignored SIGPIPE
    // (Rust's runtime ignores it), and, until the exec, this process's
    // handlers: each is put back to default before any signal is let in.
    // Signals ignored for other reasons stay ignored, as across any exec.
    for signal in 1..=MAX_SIGNAL {
        let mut current: libc::sigaction = std::mem::zeroed();
        if libc::sigaction(signal, std::ptr::null(), &mut current) == 0
            && current.sa_sigaction != libc::SIG_DFL
            && current.sa_sigaction != libc::SIG_IGN
        {
            libc::signal(signal, libc::SIG_DFL);
        }
    }
    libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    let mut empty: libc::sigset_t = std::mem::zeroed();
    libc::sigemptyset(&mut empty);
    libc::sigprocmask(libc::SIG_SETMASK, &empty, std::ptr::null_mut());
    libc::execve(program, argv, envp);
    libc::_exit(SPAWN_EXEC_FAILED)
}

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

/// `fork(2)` of this process, which must be single-threaded (asserted: a
/// fork of a multithreaded process leaves the child with locks that other
/// threads held). The child gets `Ok(None)`, with each of `signals` back to
/// its default action; the parent gets the child's pid. Signals are
/// blocked across the fork, so no handler of this process runs in the
/// child before its reset.
pub fn fork_with_default_signals(signals: &[i32]) -> std::io::Result<Option<u32>> {
    assert_eq!(thread_count(), Some(1), "fork_with_default_signals from a multithreaded process");
    let blocked = SignalsBlocked::all();
    // SAFETY: this process is single-threaded (asserted above), so the
    // child is a whole copy of it, free to run any code.
    let pid = unsafe { libc::fork() };
    let error = (pid < 0).then(std::io::Error::last_os_error);
    if pid == 0 {
        for &signal in signals {
            // SAFETY: setting a signal's default action touches no memory.
            unsafe { libc::signal(signal, libc::SIG_DFL) };
        }
    }
    drop(blocked);
    match (pid, error) {
        (_, Some(e)) => Err(e),
        (0, None) => Ok(None),
        (pid, None) => {
            let pid = u32::try_from(pid).map_err(|_| std::io::Error::other(format!("fork returned pid {pid}")))?;
            assert!(pid > 0, "a forked child has a positive pid");
            Ok(Some(pid))
        }
    }
}

/// Threads of this process (`/proc/self/status`), if it can be read.
fn thread_count() -> Option<u32> {
    let status = crate::proc::read_small(std::path::Path::new("/proc/self/status"))?;
    status.lines().find_map(|l| l.strip_prefix("Threads:")).and_then(|n| n.trim().parse().ok())
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;
    use std::os::fd::AsFd;

    /// The `SigBlk` and `SigIgn` lines of a `/proc/.../status`.
    fn blocked_and_ignored(status: &str) -> Vec<String> {
        status.lines().filter(|l| l.starts_with("SigBlk:") || l.starts_with("SigIgn:")).map(str::to_string).collect()
    }

    #[test]
    fn a_spawned_program_starts_with_no_signal_blocked_and_sigpipe_at_its_default() {
        // This thread blocks SIGUSR2 (tokio's threads block some); the test
        // process ignores SIGPIPE (Rust's runtime does).
        // SAFETY: plain sigset_t data; pthread_sigmask reads the set given.
        let mut usr2: libc::sigset_t = unsafe { std::mem::zeroed() };
        unsafe {
            libc::sigemptyset(&mut usr2);
            libc::sigaddset(&mut usr2, libc::SIGUSR2);
            libc::pthread_sigmask(libc::SIG_BLOCK, &usr2, std::ptr::null_mut());
        }
        let own = std::fs::read_to_string("/proc/thread-self/status").expect("this thread's status");
        let ignored_here = own
            .lines()
            .find_map(|l| l.strip_prefix("SigIgn:"))
            .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
            .expect("SigIgn of this thread");
        let sigpipe = 1u64 << (libc::SIGPIPE - 1);
        assert_ne!(ignored_here & sigpipe, 0, "the test process ignores SIGPIPE, as Rust's runtime does");

        let (mut reader, writer) = std::io::pipe().expect("pipe");
        let null = std::fs::OpenOptions::new().read(true).write(true).open("/dev/null").expect("/dev/null");
        let program = CString::new("/bin/cat").expect("program");
        let argv = [program.clone(), CString::new("/proc/self/status").expect("arg")];
        let spawned = spawn(&program, &argv, [null.as_fd(), writer.as_fd(), null.as_fd()], None).expect("spawn");
        drop(writer);
        let mut out = String::new();
        reader.read_to_string(&mut out).expect("cat's output");
        let mut status = 0;
        // SAFETY: waits for the child just spawned; writes only `status`.
        let waited = unsafe { libc::waitpid(spawned.pid as i32, &mut status, 0) };
        // SAFETY: takes back the mask change made above.
        unsafe { libc::pthread_sigmask(libc::SIG_UNBLOCK, &usr2, std::ptr::null_mut()) };
        assert_eq!((waited, libc::WIFEXITED(status), libc::WEXITSTATUS(status)), (spawned.pid as i32, true, 0));
        assert_eq!(
            blocked_and_ignored(&out),
            vec!["SigBlk:\t0000000000000000".to_string(), format!("SigIgn:\t{:016x}", ignored_here & !sigpipe)]
        );
    }
}
