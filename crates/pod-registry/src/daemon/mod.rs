//! The daemon: lock, load, listen, serve, shut down cleanly on SIGTERM.

mod lock;
mod session;
mod shared_commit;
mod writer;

use std::sync::Arc;

use pod_proto::paths::DirError;
use pod_proto::{ProtoError, RuntimeDirs};
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::RwLock;

pub use lock::holder_pid;
pub use session::Ctx;
use writer::{Backend, Writer};

pub use crate::config::Config;

use crate::limits::SWEEP_INTERVAL;
use crate::state::State;
use crate::store::{SledStore, Store};
use crate::RegistryError;

/// Why the daemon could not start or had to stop.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error(transparent)]
    Dirs(#[from] DirError),
    #[error(transparent)]
    Registry(#[from] RegistryError),
    #[error("cannot listen: {0}")]
    Listen(#[from] ProtoError),
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// Started inside a Pod workload's cgroup: it would end with that
    /// workload, and every Pod with it.
    #[error("{0}")]
    InsideWorkload(String),
}

impl DaemonError {
    /// The stable code of what stopped the daemon (`registry.corrupt` for
    /// a damaged store, the layout's own codes, ...).
    pub fn code(&self) -> &str {
        match self {
            DaemonError::Dirs(e) => e.code(),
            DaemonError::Registry(e) => e.code(),
            DaemonError::Listen(e) => e.code(),
            DaemonError::Io(_) => "registry.daemon",
            DaemonError::InsideWorkload(_) => "registry.inside_workload",
        }
    }
}

/// How `serve` ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Served {
    /// Another daemon holds the lock; nothing was done.
    AlreadyRunning,
    /// Stopped by a signal after finishing the writes in progress.
    Stopped,
}

/// Runs the daemon until SIGTERM or SIGINT, with the store `POD_ETCD`,
/// `POD_NODE` and `POD_LEASE_TTL` name (the embedded one without them).
pub fn run(dirs: &RuntimeDirs) -> Result<Served, DaemonError> {
    run_with(dirs, &Config::from_env()?)
}

/// Runs the daemon on a runtime of its own: two worker threads, which the
/// writer needs (a commit blocks the worker of the request that leads it,
/// and the other keeps serving).
pub fn run_with(dirs: &RuntimeDirs, config: &Config) -> Result<Served, DaemonError> {
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    runtime.block_on(serve(dirs, config))
}

async fn serve(dirs: &RuntimeDirs, config: &Config) -> Result<Served, DaemonError> {
    refuse_inside_a_workload()?;
    dirs.ensure()?;
    let Some(lock) = lock::try_lock(&dirs.registry_lock())? else {
        tracing::info!("another registry daemon holds the lock; exiting");
        return Ok(Served::AlreadyRunning);
    };
    let (state, backend, tasks) = match &config.shared {
        None => {
            let store = SledStore::open(&dirs.registry_data())?;
            let stored = store.load()?;
            let state = State::from_stored(stored.records, stored.answers, stored.next_fence)?;
            (Arc::new(RwLock::new(state)), Backend::Owned(Box::new(store)), None)
        }
        Some(shared) => open_shared(shared, dirs).await?,
    };
    tracing::info!(allocations = state.read().await.len(), "registry loaded");
    let writer = Arc::new(Writer::new(Arc::clone(&state), backend));
    let lease = tasks.map(|t| t.start(Arc::clone(&state), Arc::clone(&writer)));

    let listener = pod_proto::server::bind(&dirs.registry_socket()).await?;
    tracing::info!(socket = %dirs.registry_socket().display(), "serving");
    let ctx = Arc::new(Ctx { state, writer: Arc::clone(&writer), lease });
    let sweeper = tokio::spawn(sweep_periodically(Arc::clone(&ctx)));

    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let failing = Arc::clone(&writer);
    let shutdown = async move {
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM: shutting down"),
            _ = int.recv() => tracing::info!("SIGINT: shutting down"),
            _ = failing.failed() => tracing::error!("a commit failed: stopping"),
        }
    };
    let handler_ctx = Arc::clone(&ctx);
    pod_proto::server::serve(listener, shutdown, move |conn, peer| {
        session::handle(conn, peer, Arc::clone(&handler_ctx))
    })
    .await;
    sweeper.abort();
    // From here on requests are refused; jobs already queued are committed
    // and answered before the store closes and the lock is released.
    writer.close().await;
    drop(lock);
    match writer.failure() {
        Some(e) => Err(e.into()),
        None => Ok(Served::Stopped),
    }
}

/// Logging as the daemon does it: `RUST_LOG` (default `info`) to stderr,
/// which `serve --detach` callers point at `run/registry/log`. Shared with
/// anything that hosts the daemon (the bench), so it measures the same work.
pub fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Fails only when a subscriber is already installed; keep that one.
    let _ = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).try_init();
}

async fn sweep_periodically(ctx: Arc<Ctx>) {
    let mut tick = tokio::time::interval(SWEEP_INTERVAL);
    loop {
        tick.tick().await;
        if let Err(e) = ctx.sweep().await {
            tracing::warn!(error = %e, "periodic sweep failed");
        }
    }
}

/// The node's lease, as watchers report it.
#[cfg(feature = "etcd")]
pub type Lease = Arc<crate::store::etcd::LeaseCell>;
/// Without the `etcd` feature there is never a lease.
#[cfg(not(feature = "etcd"))]
pub type Lease = std::convert::Infallible;

/// The tasks a shared store runs beside the writer, started once the
/// writer exists (the feed wakes its watchers).
#[cfg(feature = "etcd")]
struct SharedTasks {
    feed: crate::store::etcd::Feed,
    keeper: crate::store::etcd::Keeper,
    lease: Lease,
}

#[cfg(not(feature = "etcd"))]
enum SharedTasks {}

#[cfg(feature = "etcd")]
impl SharedTasks {
    fn start(self, state: Arc<RwLock<State>>, writer: Arc<Writer>) -> Lease {
        tokio::spawn(self.keeper.run());
        tokio::spawn(self.feed.run(state, move |names| writer.watched().notify(names)));
        self.lease
    }
}

#[cfg(not(feature = "etcd"))]
impl SharedTasks {
    fn start(self, _: Arc<RwLock<State>>, _: Arc<Writer>) -> Lease {
        match self {}
    }
}

#[cfg(feature = "etcd")]
async fn open_shared(
    shared: &crate::config::Shared,
    dirs: &RuntimeDirs,
) -> Result<(Arc<RwLock<State>>, Backend, Option<SharedTasks>), DaemonError> {
    let opened = crate::store::etcd::EtcdStore::open(shared, &dirs.registry_data()).await?;
    let tasks = SharedTasks { feed: opened.feed, keeper: opened.keeper, lease: opened.lease };
    Ok((Arc::new(RwLock::new(opened.state)), Backend::Shared(Box::new(opened.store)), Some(tasks)))
}

#[cfg(not(feature = "etcd"))]
async fn open_shared(
    _: &crate::config::Shared,
    _: &RuntimeDirs,
) -> Result<(Arc<RwLock<State>>, Backend, Option<SharedTasks>), DaemonError> {
    Err(RegistryError::Config("this registry was built without etcd support (cargo feature `etcd`)".into()).into())
}

/// The daemon outlives every Pod, so it never runs inside a workload's
/// containment: a workload's end kills every process of its cgroup. (A
/// Pod connects to the registry before its workload starts, so a daemon
/// is normally running by then; this refuses the one started from inside
/// a workload after it stopped.)
fn refuse_inside_a_workload() -> Result<(), DaemonError> {
    let Some(path) = pod_sandbox::proc::cgroup_v2_path(std::process::id()) else { return Ok(()) };
    match pod_sandbox::cgroup::parse_workload_path(&path) {
        Some((_, pod, _)) => Err(DaemonError::InsideWorkload(format!(
            "the registry daemon refuses to start inside the cgroup of pod {pod}'s workload ({path}): it would end with that workload; start it from outside every workload (any pod command run there starts it)"
        ))),
        None => Ok(()),
    }
}
