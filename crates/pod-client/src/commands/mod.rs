//! One typed call per command of the `pod` command line, on a [`Client`]
//! for one set of runtime directories. Each returns what happened as data
//! (`Started`, `Stopped`, `PodSummary`, ...) or a `WireError` with its
//! stable code; nothing here prints or exits, so the CLI renders these
//! results and an agent integration serves them as they are.
//!
//! Inputs are already validated (`PodName`, resolved `ScopeRule`s and
//! `ScopePath`s): parsing what a user typed is the caller's edge.

pub mod inspect;
pub mod kv;
pub mod lifecycle;
pub mod logs;
pub mod registry;
pub mod wait;

use pod_proto::{RuntimeDirs, WireError};
use pod_registry::Allocation;
use scope::PodName;

use crate::layout::{migrate_old_layout, Migrated, PodPaths};
use crate::registry::RegistryClient;

/// The runtime's clients for one set of runtime directories.
#[derive(Debug, Clone)]
pub struct Client {
    dirs: RuntimeDirs,
    /// The socket of the Pod this process runs in (`POD_SOCKET`), asked
    /// who the kernel says this process is before a store call (see
    /// `kv.rs`); `None`: the operator.
    own_socket: Option<std::path::PathBuf>,
}

impl Client {
    /// The runtime directories of this process's environment (`POD_HOME`
    /// or XDG), created or checked, with a home of the old layout moved
    /// into this one first; what was moved is returned for the caller to
    /// tell. Inside a workload, its Pod's socket is `POD_SOCKET`.
    pub fn from_env() -> Result<(Client, Option<Migrated>), WireError> {
        let dirs = RuntimeDirs::from_env().map_err(|e| WireError::new(e.code(), e.to_string()))?;
        let own_socket = std::env::var_os("POD_SOCKET").filter(|s| !s.is_empty()).map(std::path::PathBuf::from);
        // Inside a workload its Pod made the directories ready; an enforced
        // workload may not write them (and at `full` sees `data/` as an
        // empty read-only directory), so it neither moves nor creates them.
        if own_socket.is_some() {
            return Ok((Client { dirs, own_socket }, None));
        }
        let moved = migrate_old_layout(&dirs)?;
        dirs.ensure().map_err(|e| WireError::new(e.code(), e.to_string()))?;
        Ok((Client { dirs, own_socket }, moved))
    }

    /// A client of directories already made ready (`RuntimeDirs::ensure`),
    /// calling the store as the operator (see [`Client::with_own_socket`]).
    pub fn new(dirs: RuntimeDirs) -> Client {
        Client { dirs, own_socket: None }
    }

    pub fn dirs(&self) -> &RuntimeDirs {
        &self.dirs
    }

    pub fn paths(&self, name: &PodName) -> PodPaths {
        PodPaths::new(&self.dirs, name)
    }

    /// The registry; from inside a workload the running daemon only (its
    /// Pod started it and made the directories ready).
    pub async fn registry(&self) -> Result<RegistryClient, WireError> {
        match self.own_socket {
            Some(_) => RegistryClient::connect_running(&self.dirs).await,
            None => RegistryClient::connect(&self.dirs).await,
        }
    }

    /// `pod registry ls`: every allocation, in name order.
    pub async fn registry_list(&self) -> Result<Vec<Allocation>, WireError> {
        self.registry().await?.list().await
    }
}
