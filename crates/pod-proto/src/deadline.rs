//! Deadlines for client calls, kept by one watchdog thread instead of a
//! timer per call.
//!
//! Why: a client waits for its reply parked in `epoll_wait`. With a tokio
//! timer pending (`tokio::time::timeout` around the read), the runtime parks
//! with a finite timeout, so the kernel arms a timer for every park and
//! cancels it on every wake-up. On the virtual machines we run on, that
//! costs 25-30 us per round trip (measured: a registry `check` went from
//! 15-20 us to 45 us with the timeouts, and a raw round trip rose the same
//! way with any pending timer), more than the request itself. Here a call
//! registers its deadline with a process-wide thread that wakes at the
//! earliest deadline, and at least every [`TICK`]; a call that finishes in
//! time just removes its deadline. Registering wakes the thread only for a
//! deadline earlier than the one it sleeps towards, so a stream of calls
//! with the usual limits (seconds) never wakes it: waking a thread costs as
//! much as the timer did. A call past its deadline gets its socket shut
//! down, so the pending read or write ends at once, and reports `Timeout`.
//!
//! The watchdog holds a duplicate of the socket's descriptor, so shutting it
//! down can never hit an unrelated file that reused the number.

use std::collections::BTreeMap;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock, PoisonError};
use std::time::{Duration, Instant};

struct Watch {
    socket: OwnedFd,
    fired: Arc<AtomicBool>,
}

/// The longest the watchdog sleeps.
pub const TICK: Duration = Duration::from_secs(1);

#[derive(Default)]
struct Watches {
    /// Keyed by deadline, then a number that makes keys unique.
    by_deadline: BTreeMap<(Instant, u64), Watch>,
    next_id: u64,
    /// When the watchdog will wake up next, if it sleeps.
    sleeping_until: Option<Instant>,
}

#[derive(Default)]
struct Watchdog {
    watches: Mutex<Watches>,
    /// Signalled when a deadline earlier than `sleeping_until` is added.
    earlier: Condvar,
}

/// A deadline in force; dropping it withdraws the deadline.
pub struct Armed {
    key: (Instant, u64),
    fired: Arc<AtomicBool>,
}

impl Armed {
    /// Whether the deadline passed and the socket was shut down.
    pub fn fired(&self) -> bool {
        self.fired.load(Ordering::Acquire)
    }
}

impl Drop for Armed {
    fn drop(&mut self) {
        watchdog().lock().by_deadline.remove(&self.key);
    }
}

impl Watchdog {
    fn lock(&self) -> MutexGuard<'_, Watches> {
        self.watches.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn run(&self) {
        let mut g = self.lock();
        loop {
            let now = Instant::now();
            while let Some(entry) = g.by_deadline.first_entry().filter(|e| e.key().0 <= now) {
                let watch = entry.remove();
                watch.fired.store(true, Ordering::Release);
                // The peer may have closed already; nothing to do then.
                let _ = rustix::net::shutdown(&watch.socket, rustix::net::Shutdown::Both);
            }
            let wake = g.by_deadline.keys().next().map_or(now + TICK, |k| k.0.min(now + TICK));
            g.sleeping_until = Some(wake);
            g = self.earlier.wait_timeout(g, wake - now).unwrap_or_else(PoisonError::into_inner).0;
            g.sleeping_until = None;
        }
    }
}

fn watchdog() -> &'static Watchdog {
    static WATCHDOG: OnceLock<&'static Watchdog> = OnceLock::new();
    WATCHDOG.get_or_init(|| {
        let dog: &'static Watchdog = Box::leak(Box::default());
        // If the thread cannot start, deadlines are not enforced; calls
        // still complete or fail on their own. Said once, in the log.
        if let Err(e) = std::thread::Builder::new().name("pod-deadlines".into()).spawn(|| dog.run()) {
            tracing::error!(error = %e, "cannot start the deadline thread; client calls will not time out");
        }
        dog
    })
}

/// Shuts `socket` down if `timeout` passes before the returned guard is
/// dropped.
pub fn arm(socket: impl AsFd, timeout: Duration) -> std::io::Result<Armed> {
    let socket = socket.as_fd().try_clone_to_owned()?;
    let deadline = Instant::now() + timeout;
    let fired = Arc::new(AtomicBool::new(false));
    let dog = watchdog();
    let mut g = dog.lock();
    let key = (deadline, g.next_id);
    g.next_id += 1;
    g.by_deadline.insert(key, Watch { socket, fired: Arc::clone(&fired) });
    if g.sleeping_until.is_some_and(|wake| deadline < wake) {
        dog.earlier.notify_one();
    }
    Ok(Armed { key, fired })
}

#[cfg(test)]
mod tests {
    use std::io::Read;
    use std::os::unix::net::UnixStream;

    use super::*;

    #[test]
    fn a_passed_deadline_shuts_the_socket_down() {
        let (mut mine, _theirs) = UnixStream::pair().expect("pair");
        // Taken before arming: the deadline is 50 ms after a moment later
        // than this, so the read cannot end sooner than 50 ms from here.
        let started = Instant::now();
        let armed = arm(&mine, Duration::from_millis(50)).expect("arm");
        // Blocks until the watchdog shuts the socket: then reads EOF.
        let mut buf = [0u8; 8];
        assert_eq!(mine.read(&mut buf).expect("read"), 0);
        assert!(armed.fired());
        assert!(started.elapsed() >= Duration::from_millis(50));
    }

    #[test]
    fn a_withdrawn_deadline_never_fires() {
        let (mine, mut theirs) = UnixStream::pair().expect("pair");
        let armed = arm(&mine, Duration::from_millis(20)).expect("arm");
        drop(armed);
        // A later deadline on another socket fires; by then the first one
        // would have too, had it not been withdrawn.
        let (other, _keep) = UnixStream::pair().expect("pair");
        let later = arm(&other, Duration::from_millis(60)).expect("arm");
        let mut buf = [0u8; 1];
        (&other).read_exact(&mut buf).expect_err("shut down");
        assert!(later.fired());
        std::io::Write::write_all(&mut theirs, b"x").expect("the first socket still works");
        (&mine).read_exact(&mut buf).expect("read");
        assert_eq!(&buf, b"x");
    }
}
