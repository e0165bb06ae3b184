//! The Pod's connection to the machine-wide registry: one client shared by
//! the owner task, reconnecting (and starting the daemon) after the daemon
//! restarted. Only idempotent calls are retried on a broken connection; a
//! mutation whose fate is unknown is reported, never replayed blindly.

use std::sync::Arc;

use pod_proto::{RuntimeDirs, WireError};
use pod_registry::client::{DaemonCommand, Registration};
use pod_registry::{Allocation, Client, ClientError};
use scope::{PodName, ScopeRule, ScopeSnapshot};
use tokio::sync::Mutex;

/// A grandchild the registry reparented to us when its parent was
/// reclaimed: what we need to take it in as a child.
#[derive(Debug, Clone)]
pub struct Orphan {
    pub name: PodName,
    pub rules: Vec<ScopeRule>,
    pub socket: String,
    pub pid: u32,
    pub start_time: u64,
}

/// Most registry connections one batch of reclaims uses at once.
pub const RECLAIM_CONNECTIONS: usize = 16;

#[derive(Clone)]
pub struct Registry {
    dirs: RuntimeDirs,
    client: Arc<Mutex<Option<Client>>>,
}

/// Code of an error whose outcome is unknown: the connection to the
/// registry broke before its answer arrived.
pub const CONNECTION_LOST: &str = "registry.connection_lost";

fn to_wire(e: ClientError) -> WireError {
    match e {
        ClientError::Refused(w) => w,
        ClientError::Proto(p) => WireError::new(CONNECTION_LOST, format!("the registry did not answer: {p}")),
        other => WireError::new(other.code(), format!("registry: {other}")),
    }
}

fn is_connection(e: &ClientError) -> bool {
    matches!(e, ClientError::Proto(_))
}

/// Connects, starting the daemon from this very binary (`pod registry
/// serve`) if none answers: one binary is all a user needs.
async fn connect_client(dirs: &RuntimeDirs) -> Result<Client, WireError> {
    let program = std::env::current_exe()
        .map_err(|e| WireError::new("registry.start_failed", format!("cannot find the pod binary: {e}")))?;
    let daemon = DaemonCommand { program, args: vec!["registry".into(), "serve".into()] };
    Client::connect_starting(dirs, &daemon).await.map_err(to_wire)
}

impl Registry {
    pub async fn connect(dirs: &RuntimeDirs) -> Result<Registry, WireError> {
        let client = connect_client(dirs).await?;
        Ok(Registry { dirs: dirs.clone(), client: Arc::new(Mutex::new(Some(client))) })
    }

    /// Runs `op` on the shared client; with `retry`, once more on a fresh
    /// connection when the first attempt failed at the connection level.
    async fn with<T, F>(&self, retry: bool, op: F) -> Result<T, WireError>
    where
        F: for<'c> Fn(
            &'c mut Client,
        )
            -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<T, ClientError>> + Send + 'c>>,
    {
        let mut guard = self.client.lock().await;
        for attempt in 0..2 {
            if guard.is_none() {
                *guard = Some(connect_client(&self.dirs).await?);
            }
            let Some(client) = guard.as_mut() else { continue };
            match op(client).await {
                Ok(v) => return Ok(v),
                Err(e) if is_connection(&e) => {
                    *guard = None;
                    if !retry || attempt == 1 {
                        return Err(to_wire(e));
                    }
                    tracing::info!(error = %e, "registry connection lost; reconnecting");
                }
                Err(e) => return Err(to_wire(e)),
            }
        }
        Err(WireError::new("registry.unreachable", "the registry did not answer after a reconnect"))
    }

    /// Registers a top-level Pod; on resume `snapshot.layers` are the
    /// children it believes alive, so their regions stay excluded.
    pub async fn register(
        &self,
        name: &PodName,
        pid: u32,
        socket: &str,
        session: &str,
        snapshot: &ScopeSnapshot,
    ) -> Result<(), WireError> {
        let registration = Registration {
            name: Some(name.clone()),
            pid,
            start_time: None,
            socket: socket.to_string(),
            session: session.to_string(),
            allow: snapshot.allow.clone(),
            deny: snapshot.deny.clone(),
            layers: snapshot.layers.clone(),
        };
        self.with(false, |c| {
            let r = registration.clone();
            Box::pin(async move { c.register(&r).await.map(drop) })
        })
        .await
    }

    pub async fn delegate(&self, parent: &PodName, child: &PodName, rules: &[ScopeRule]) -> Result<(), WireError> {
        self.with(false, |c| {
            let (parent, child, rules) = (parent.clone(), child.clone(), rules.to_vec());
            Box::pin(async move { c.delegate(&parent, &child, &rules, &[]).await.map(drop) })
        })
        .await
    }

    pub async fn adopt(&self, name: &PodName, pid: u32, session: &str, socket: &str) -> Result<(), WireError> {
        self.with(false, |c| {
            let (name, session, socket) = (name.clone(), session.to_string(), socket.to_string());
            Box::pin(async move { c.adopt(&name, pid, None, &session, &socket).await.map(drop) })
        })
        .await
    }

    /// Reclaims every child of `children` (each idempotent) and returns,
    /// per child, the grandchildren the registry reparented to `parent`. A
    /// single child uses the shared connection; many are spread over up to
    /// [`RECLAIM_CONNECTIONS`] connections so the registry can commit them
    /// in groups.
    pub async fn reclaim_many(
        &self,
        parent: &PodName,
        children: &[PodName],
    ) -> Result<Vec<(PodName, Vec<Orphan>)>, WireError> {
        let mut reparented: Vec<(PodName, Vec<PodName>)> = Vec::with_capacity(children.len());
        if let [child] = children {
            let reclaimed = self
                .with(true, |c| {
                    let (parent, child) = (parent.clone(), child.clone());
                    Box::pin(async move { c.reclaim(&parent, &child).await })
                })
                .await?;
            reparented.push((child.clone(), reclaimed.reparented));
        } else {
            let per = children.len().div_ceil(RECLAIM_CONNECTIONS).max(1);
            let mut tasks = tokio::task::JoinSet::new();
            for chunk in children.chunks(per) {
                let (dirs, parent, chunk) = (self.dirs.clone(), parent.clone(), chunk.to_vec());
                tasks.spawn(async move {
                    let mut client = Client::connect_running(&dirs).await.map_err(to_wire)?;
                    let mut out = Vec::with_capacity(chunk.len());
                    for child in chunk {
                        let reclaimed = client.reclaim(&parent, &child).await.map_err(to_wire)?;
                        out.push((child, reclaimed.reparented));
                    }
                    Ok::<_, WireError>(out)
                });
            }
            while let Some(done) = tasks.join_next().await {
                let part = done.map_err(|e| WireError::new("pod.internal", format!("reclaim task failed: {e}")))??;
                reparented.extend(part);
            }
        }
        let mut out = Vec::with_capacity(reparented.len());
        let mut layers = None;
        for (child, names) in reparented {
            let mut orphans = Vec::with_capacity(names.len());
            if !names.is_empty() && layers.is_none() {
                // The rules an orphan holds are the layer the registry gave us for it.
                layers = Some(self.get(parent).await?.map(|p| p.layers).unwrap_or_default());
            }
            for name in names {
                let rules = layers.as_ref().and_then(|l| l.get(&name)).cloned().unwrap_or_default();
                let Some(alloc) = self.get(&name).await? else { continue };
                orphans.push(Orphan {
                    name,
                    rules,
                    socket: alloc.socket,
                    pid: alloc.pid,
                    start_time: alloc.start_time,
                });
            }
            out.push((child, orphans));
        }
        Ok(out)
    }

    pub async fn release(&self, name: &PodName) -> Result<(), WireError> {
        self.with(true, |c| {
            let name = name.clone();
            Box::pin(async move { c.release(&name).await.map(drop) })
        })
        .await
    }

    /// Like `release`, for undoing a failed start: errors are only logged.
    pub async fn release_quietly(&self, name: &PodName) {
        if let Err(e) = self.release(name).await {
            tracing::warn!(%name, error = %e, "could not release a half-started pod's allocation");
        }
    }

    pub async fn get(&self, name: &PodName) -> Result<Option<Allocation>, WireError> {
        self.with(true, |c| {
            let name = name.clone();
            Box::pin(async move { c.get(&name).await })
        })
        .await
    }

    /// Forgets allocations whose process is gone (a crashed Pod's own old
    /// record, before it registers again); their live children become
    /// top-level until their parent re-registers with its layers.
    pub async fn sweep(&self) -> Result<Vec<PodName>, WireError> {
        self.with(true, |c| Box::pin(async move { c.sweep().await })).await
    }

    pub async fn list(&self) -> Result<Vec<Allocation>, WireError> {
        self.with(true, |c| Box::pin(async move { c.list().await })).await
    }
}
