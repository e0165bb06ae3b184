//! start, spawn, stop, resume, rm: the calls that change what runs.

use std::time::Duration;

use pod_proto::{ProtoError, WireError};
use scope::{PodName, ScopeRule};
use serde::Serialize;

use crate::commands::Client;
use crate::launch::{launch, LaunchMode, LaunchRequest};
use crate::layout::PodPaths;
use crate::pod::{not_running, Pod, PodClient};
use crate::process::{start_time_of, PidFd};
use crate::protocol::{EnforceRequest, Enforcement, Env, PodRequest, SpawnRequest, StopGrace};

/// Longest `stop` waits for a top-level Pod's process to be gone.
const STOP_WAIT: Duration = Duration::from_secs(30);
/// Longest `resume` and `rm` wait for a Pod that is on its way out.
const EXIT_WAIT: Duration = Duration::from_secs(10);

/// A new top-level Pod.
#[derive(Debug, Clone)]
pub struct StartSpec {
    pub name: PodName,
    pub allow: Vec<ScopeRule>,
    pub deny: Vec<ScopeRule>,
    pub workload: Option<Vec<String>>,
    /// Directory the workload runs in.
    pub cwd: Option<String>,
    /// Variables for the workload, on top of what it inherits.
    pub env: Env,
    pub limits: pod_sandbox::Limits,
    pub enforce: EnforceRequest,
}

/// A child of a running Pod.
#[derive(Debug, Clone)]
pub struct SpawnSpec {
    pub parent: PodName,
    pub child: PodName,
    pub rules: Vec<ScopeRule>,
    pub workload: Option<Vec<String>>,
    pub cwd: Option<String>,
    pub env: Env,
    pub limits: pod_sandbox::Limits,
    pub enforce: EnforceRequest,
}

/// A Pod process that is ready to serve (`start`, `resume`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Started {
    pub name: PodName,
    pub pid: u32,
    /// `None` for a resumed Pod started before levels were recorded.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub enforcement: Option<Enforcement>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Spawned {
    pub child: PodName,
    pub pid: u32,
    pub parent: PodName,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub enforcement: Option<Enforcement>,
}

/// How a stop ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum Stopped {
    /// A child stopped now; its parent has its scope back.
    Reclaimed { name: PodName, parent: PodName },
    /// A child that had already stopped; its parent has its scope back.
    AlreadyStopped { name: PodName, parent: PodName },
    /// A child whose parent is not running: the parent takes the scope
    /// back when it is resumed.
    ParentDown { name: PodName, parent: PodName },
    /// A top-level Pod released its allocation.
    TopLevel { name: PodName },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Removed {
    pub name: PodName,
}

impl Client {
    /// Starts a top-level Pod; returns when it is ready to serve.
    pub async fn start(&self, spec: StartSpec) -> Result<Started, WireError> {
        let paths = self.paths(&spec.name);
        paths.ensure().map_err(|e| WireError::new(e.code(), e.to_string()))?;
        let request = LaunchRequest {
            name: spec.name.clone(),
            mode: LaunchMode::Start { allow: spec.allow, deny: spec.deny, workload: spec.workload },
            cwd: spec.cwd,
            env: spec.env,
            limits: spec.limits,
            enforce: spec.enforce,
        };
        let launched = launch(&request, &paths.pod_log()).await?;
        Ok(Started { name: spec.name, pid: launched.pid, enforcement: launched.enforcement })
    }

    /// Spawns a child of a running Pod; returns when the child is ready.
    pub async fn spawn(&self, spec: SpawnSpec) -> Result<Spawned, WireError> {
        let parent_paths = self.paths(&spec.parent);
        let request = SpawnRequest {
            child: spec.child,
            rules: spec.rules,
            workload: spec.workload,
            cwd: spec.cwd,
            env: spec.env,
            limits: spec.limits,
            enforce: spec.enforce,
        };
        let (child, pid, enforcement) = Pod { paths: &parent_paths, name: &spec.parent }.spawn(request).await?;
        Ok(Spawned { child, pid, parent: spec.parent, enforcement })
    }

    /// Stops a Pod, its children first. A child is stopped by its parent
    /// (StopPod), which reclaims its scope; a top-level Pod, or a child
    /// whose parent does not answer, is asked to shut down and waited for.
    /// Each workload of the tree gets `grace` between SIGTERM and SIGKILL.
    pub async fn stop(&self, name: &PodName, grace: StopGrace) -> Result<Stopped, WireError> {
        let paths = self.paths(name);
        let mut registry = self.registry().await?;
        let Some(alloc) = registry.get(name).await? else {
            return Err(not_running(&paths, name));
        };
        fail::fail_point!("stop.after_lookup");
        if let Some(parent) = &alloc.parent {
            let parent_paths = self.paths(parent);
            match PodClient::call_once(
                &parent_paths.socket().to_string_lossy(),
                &PodRequest::StopChild { child: name.clone(), grace },
            )
            .await
            {
                Ok(crate::protocol::PodReply::Stopped { reclaimed: true }) => {
                    return Ok(Stopped::Reclaimed { name: name.clone(), parent: parent.clone() })
                }
                Ok(crate::protocol::PodReply::Stopped { reclaimed: false }) => {
                    return Ok(Stopped::AlreadyStopped { name: name.clone(), parent: parent.clone() })
                }
                Ok(other) => return Err(crate::pod::unexpected(&other)),
                Err(ProtoError::Remote(e)) => return Err(e),
                Err(e) => {
                    tracing::info!(%parent, error = %e, "parent not reachable; stopping the child directly");
                }
            }
        }
        // Held before the request: after the exit its pid may be reused.
        let process = PidFd::open(alloc.pid, alloc.start_time);
        Pod { paths: &paths, name }.shutdown(grace).await?;
        if let Some(process) = process {
            if tokio::time::timeout(STOP_WAIT, process.wait_or_kill(STOP_WAIT)).await.is_err() {
                return Err(WireError::new("pod.stop_timeout", format!("{name} did not exit within {STOP_WAIT:?}")));
            }
        }
        Ok(match alloc.parent {
            Some(parent) => Stopped::ParentDown { name: name.clone(), parent },
            None => Stopped::TopLevel { name: name.clone() },
        })
    }

    /// Sends `signal` to `name`'s workload (the Pod stops when it exits).
    pub async fn kill(&self, name: &PodName, signal: i32) -> Result<(), WireError> {
        let paths = self.paths(name);
        Pod { paths: &paths, name }.signal(signal).await
    }

    /// Restarts a Pod from its session log.
    pub async fn resume(&self, name: &PodName) -> Result<Started, WireError> {
        let paths = self.paths(name);
        if !paths.session_log().exists() {
            return Err(WireError::new("pod.unknown", format!("no pod named {name} has a session log here")));
        }
        // Its runtime folder (a tmpfs) may be gone with a reboot.
        paths.ensure().map_err(|e| WireError::new(e.code(), e.to_string()))?;
        if paths.lock_held() && !exited(&paths).await {
            return Err(WireError::new("pod.running", format!("pod {name} is already running")));
        }
        let request = LaunchRequest {
            name: name.clone(),
            mode: LaunchMode::Resume,
            cwd: None,
            env: Env::default(),
            limits: Default::default(),
            enforce: EnforceRequest::default(),
        };
        let launched = launch(&request, &paths.pod_log()).await?;
        Ok(Started { name: name.clone(), pid: launched.pid, enforcement: launched.enforcement })
    }

    /// Forgets a stopped Pod: its session log and runtime directory.
    pub async fn rm(&self, name: &PodName) -> Result<Removed, WireError> {
        // Inside a workload its Pod removes it: an enforced workload may
        // not write the runtime's directories.
        if let Some(socket) = self.own_socket() {
            let request = PodRequest::Remove { name: name.clone() };
            return match PodClient::call_at(&socket.to_string_lossy(), &request).await? {
                crate::protocol::PodReply::Removed => Ok(Removed { name: name.clone() }),
                other => Err(crate::pod::unexpected(&other)),
            };
        }
        let paths = self.paths(name);
        if !paths.data_dir.exists() && !paths.run_dir.exists() {
            return Err(WireError::new("pod.unknown", format!("no pod named {name} here")));
        }
        if paths.lock_held() && !exited(&paths).await {
            return Err(WireError::new("pod.running", format!("pod {name} is running; `pod stop {name}` first")));
        }
        // A Pod that crashed still holds its allocation (its record keeps its
        // children's regions excluded until it resumes); forgetting the Pod
        // gives that up: its live children become top-level Pods.
        let mut registry = self.registry().await?;
        if let Some(alloc) = registry.get(name).await? {
            if start_time_of(alloc.pid) == Some(alloc.start_time) {
                return Err(WireError::new(
                    "pod.running",
                    format!("pod {name} is running (pid {}); `pod stop {name}` first", alloc.pid),
                ));
            }
            registry.release(name).await?;
        }
        for dir in [&paths.data_dir, &paths.run_dir, &paths.tmp_dir()] {
            match std::fs::remove_dir_all(dir) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(WireError::new("pod.io", format!("cannot remove {}: {e}", dir.display()))),
            }
        }
        Ok(Removed { name: name.clone() })
    }
}

/// For a Pod whose lock is held: false when it answers (it runs); else waits
/// (bounded) for the lock to go. A process killed with SIGKILL keeps its
/// files, and so its lock, until its last thread has exited, which can be
/// a moment after its main thread is already a zombie.
async fn exited(paths: &PodPaths) -> bool {
    if PodClient::ping(&paths.socket(), Duration::from_secs(1)).await.is_some() {
        return false;
    }
    let deadline = tokio::time::Instant::now() + EXIT_WAIT;
    while paths.lock_held() {
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    true
}
