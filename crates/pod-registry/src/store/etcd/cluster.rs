//! A throwaway etcd cluster on loopback, for the tests and the benches
//! (three members; the kv bench's one): real `etcd` processes, ports
//! picked free, data in a directory the caller owns, every member stopped
//! when dropped.
//!
//! The `etcd` binary is `$POD_ETCD_BIN`, else `etcd` on `PATH` (Debian:
//! `apt-get install etcd-server`; its packaged service is not used).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Members of a test cluster.
pub const MEMBERS: usize = 3;
/// The most members `Cluster::start_members` starts.
const MAX_MEMBERS: usize = 7;
/// Operations etcd takes in one transaction; the default (128) is too few
/// for a Pod with several deep write rules (see docs/operations.md).
pub const MAX_TXN_OPS: usize = 2048;
/// How long a cluster may take to elect a leader.
const START_WAIT: Duration = Duration::from_secs(30);

/// The etcd binary, or why there is none.
pub fn binary() -> Result<PathBuf, String> {
    if let Some(bin) = std::env::var_os("POD_ETCD_BIN").filter(|v| !v.is_empty()) {
        return Ok(PathBuf::from(bin));
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|dir| dir.join("etcd"))
        .find(|p| p.is_file())
        .ok_or_else(|| "no etcd binary on PATH (install etcd-server, or set POD_ETCD_BIN)".to_string())
}

struct Member {
    name: String,
    client_port: u16,
    peer_port: u16,
    data: PathBuf,
    log: PathBuf,
    child: Option<Child>,
}

pub struct Cluster {
    bin: PathBuf,
    members: Vec<Member>,
    initial: String,
    token: String,
}

/// Where members' ports are picked: below Linux's default ephemeral range
/// (32768-60999), from which the kernel takes the local port of every
/// outgoing connection and of a bind to port 0. A port picked there and
/// let go could be some connection's (the other clusters' peers, their
/// clients) before the member binds it; here only another picker could
/// take it.
const PORTS: std::ops::Range<u16> = 20_000..32_000;
/// How much of a member's log a failed start quotes.
const LOG_TAIL_BYTES: u64 = 600;

/// A port nobody listens on now: the next free one in [`PORTS`], from a
/// start that differs between processes, never the same twice in one.
fn free_port() -> Result<u16, String> {
    static PICKED: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let span = u32::from(PORTS.end - PORTS.start);
    let start = std::process::id().wrapping_mul(7919);
    for _ in 0..span {
        let n = PICKED.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let port = PORTS.start + (start.wrapping_add(n) % span) as u16;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return Ok(port);
        }
    }
    Err(format!("cannot pick a port: none free in {}..{}", PORTS.start, PORTS.end))
}

/// The last bytes of `path`, on one line (a member's log, for an error).
fn tail(path: &Path) -> String {
    use std::io::{Read, Seek, SeekFrom};
    let Ok(mut file) = std::fs::File::open(path) else { return "no log".into() };
    let len = file.metadata().map_or(0, |m| m.len());
    let mut text = String::new();
    let read = file
        .seek(SeekFrom::Start(len.saturating_sub(LOG_TAIL_BYTES)))
        .and_then(|_| file.take(LOG_TAIL_BYTES).read_to_string(&mut text));
    match read {
        Ok(_) => text.split_whitespace().collect::<Vec<_>>().join(" "),
        Err(e) => format!("unreadable log: {e}"),
    }
}

impl Cluster {
    /// Starts three members with data under `dir` and waits until they
    /// have a leader.
    pub fn start(dir: &Path) -> Result<Cluster, String> {
        Self::start_members(dir, MEMBERS)
    }

    /// Starts `count` members (1..=7) with data under `dir` and waits
    /// until they have a leader.
    pub fn start_members(dir: &Path, count: usize) -> Result<Cluster, String> {
        if !(1..=MAX_MEMBERS).contains(&count) {
            return Err(format!("an etcd cluster of {count} members; it takes 1 to {MAX_MEMBERS}"));
        }
        let bin = binary()?;
        let mut members = Vec::new();
        for i in 0..count {
            let name = format!("m{i}");
            members.push(Member {
                data: dir.join(&name),
                log: dir.join(format!("{name}.log")),
                name,
                client_port: free_port()?,
                peer_port: free_port()?,
                child: None,
            });
        }
        let initial = members
            .iter()
            .map(|m| format!("{}=http://127.0.0.1:{}", m.name, m.peer_port))
            .collect::<Vec<_>>()
            .join(",");
        let token = format!("pod-test-{}-{}", std::process::id(), members[0].client_port);
        let mut cluster = Cluster { bin, members, initial, token };
        for i in 0..count {
            cluster.spawn(i, "new")?;
        }
        cluster.wait_leader()?;
        Ok(cluster)
    }

    fn spawn(&mut self, i: usize, state: &str) -> Result<(), String> {
        let (bin, initial, token) = (self.bin.clone(), self.initial.clone(), self.token.clone());
        let m = &mut self.members[i];
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&m.log)
            .map_err(|e| format!("{}: {e}", m.log.display()))?;
        let client = format!("http://127.0.0.1:{}", m.client_port);
        let peer = format!("http://127.0.0.1:{}", m.peer_port);
        let child = Command::new(&bin)
            .args(["--name", &m.name])
            .arg("--data-dir")
            .arg(&m.data)
            .args(["--listen-client-urls", &client, "--advertise-client-urls", &client])
            .args(["--listen-peer-urls", &peer, "--initial-advertise-peer-urls", &peer])
            .args(["--initial-cluster", &initial, "--initial-cluster-state", state])
            .args(["--initial-cluster-token", &token])
            .args(["--max-txn-ops", &MAX_TXN_OPS.to_string()])
            .args(["--logger", "zap", "--log-outputs", "stderr"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .map_err(|e| format!("cannot run {}: {e}", bin.display()))?;
        m.child = Some(child);
        Ok(())
    }

    /// Every member's client URL.
    pub fn endpoints(&self) -> Vec<String> {
        (0..self.members.len()).map(|i| self.endpoint(i)).collect()
    }

    pub fn endpoint(&self, i: usize) -> String {
        format!("http://127.0.0.1:{}", self.members[i].client_port)
    }

    /// The member that leads now, asking each running member in turn (on
    /// a thread of its own, so callers may be async or not).
    pub fn leader(&self) -> Result<usize, String> {
        std::thread::scope(|scope| {
            scope.spawn(|| self.ask_leader()).join().unwrap_or_else(|_| Err("the leader query panicked".into()))
        })
    }

    fn ask_leader(&self) -> Result<usize, String> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| format!("cannot start tokio: {e}"))?;
        let ids = runtime.block_on(async {
            let mut ids = Vec::new();
            for i in 0..self.members.len() {
                if self.members[i].child.is_none() {
                    ids.push(None);
                    continue;
                }
                let status = async {
                    let mut c = super::connect(&[self.endpoint(i)]).await.ok()?;
                    let s = c.status().await.ok()?;
                    Some((s.header().map(|h| h.member_id())?, s.leader()))
                };
                ids.push(tokio::time::timeout(Duration::from_secs(2), status).await.ok().flatten());
            }
            ids
        });
        let leader = ids.iter().flatten().map(|(_, l)| *l).find(|l| *l != 0).ok_or("no member knows a leader")?;
        ids.iter()
            .position(|s| s.is_some_and(|(me, _)| me == leader))
            .ok_or_else(|| "the leader is not a running member".to_string())
    }

    /// Waits (bounded) until the running members agree on a leader.
    pub fn wait_leader(&self) -> Result<usize, String> {
        let deadline = Instant::now() + START_WAIT;
        loop {
            match self.leader() {
                Ok(i) => return Ok(i),
                Err(e) if Instant::now() > deadline => {
                    return Err(format!(
                        "etcd did not elect a leader within {START_WAIT:?}: {e}; see {}; {}",
                        self.log_dir(),
                        self.members_now()
                    ))
                }
                Err(_) => std::thread::sleep(Duration::from_millis(50)),
            }
        }
    }

    /// Each member's state and the end of its log, for a failed start
    /// (the directory holding the logs goes when the test ends).
    fn members_now(&self) -> String {
        let mut now = Vec::new();
        for m in &self.members {
            // An exited member stays a zombie until it is reaped.
            let running = |pid: u32| {
                std::fs::read_to_string(format!("/proc/{pid}/stat"))
                    .is_ok_and(|stat| stat.rsplit(')').next().is_some_and(|rest| !rest.trim_start().starts_with('Z')))
            };
            let state = match m.child.as_ref().map(Child::id) {
                Some(pid) if running(pid) => format!("pid {pid} running"),
                Some(pid) => format!("pid {pid} exited"),
                None => "not started".into(),
            };
            now.push(format!("{} (ports {}/{}, {state}): ...{}", m.name, m.client_port, m.peer_port, tail(&m.log)));
        }
        now.join("; ")
    }

    fn log_dir(&self) -> String {
        self.members[0].log.parent().map_or_else(String::new, |d| d.display().to_string())
    }

    /// SIGKILL of member `i` (reaped).
    pub fn kill9(&mut self, i: usize) {
        if let Some(mut child) = self.members[i].child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts member `i` again on its data directory.
    pub fn restart(&mut self, i: usize) -> Result<(), String> {
        self.kill9(i);
        self.spawn(i, "existing")
    }

    /// The pid of member `i`, while it runs.
    pub fn pid(&self, i: usize) -> Option<u32> {
        self.members[i].child.as_ref().map(Child::id)
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for i in 0..self.members.len() {
            self.kill9(i);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn picked_ports_are_free_below_the_ephemeral_range_and_never_the_same_twice() {
        let ports: Vec<u16> = (0..64).map(|_| free_port().expect("a free port")).collect();
        assert!(ports.iter().all(|p| PORTS.contains(p)), "{ports:?}");
        let distinct: std::collections::BTreeSet<u16> = ports.iter().copied().collect();
        assert_eq!(distinct.len(), ports.len(), "{ports:?}");
    }

    #[test]
    fn a_failed_start_quotes_the_end_of_each_members_log_on_one_line() {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = dir.path().join("m0.log");
        let long = format!("{}\nbind: address already in use\n", "x".repeat(2 * LOG_TAIL_BYTES as usize));
        std::fs::write(&log, long).expect("log");
        let last = "\nbind: address already in use\n";
        let xs = "x".repeat(LOG_TAIL_BYTES as usize - last.len());
        assert_eq!(tail(&log), format!("{xs} bind: address already in use"));
        assert_eq!(tail(&dir.path().join("m1.log")), "no log");
    }
}
