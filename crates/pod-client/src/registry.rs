//! The registry as a client sees it: one [`Link`] (the one call path, which
//! reconnects, starts the daemon on demand and resends what is safe to
//! resend; see `pod_registry::client`), its errors in the runtime's codes,
//! and one typed method per call. The Pod's own side of the registry
//! (delegate, adopt, reclaim, the watch) is `crates/pod/src/registry_link.rs`,
//! built on the same [`to_wire`], [`daemon_command`], [`get_on`] and
//! [`list_on`].

use pod_proto::{ProtoError, RuntimeDirs, WireError};
use pod_registry::client::{DaemonCommand, Link};
use pod_registry::{Allocation, ClientError, Reclaimed, Reply, Request};
use scope::PodName;

/// Code of an error whose outcome is unknown: the request reached the
/// registry and every answer to it was lost.
pub const CONNECTION_LOST: &str = "registry.connection_lost";
/// The registry could not be reached (nothing was done).
pub const UNREACHABLE: &str = "registry.unreachable";
/// The registry speaks another protocol version.
pub const VERSION_MISMATCH: &str = "registry.version_mismatch";
/// A call did not complete within its deadline.
pub const TIMEOUT: &str = "registry.timeout";

/// A registry client error in the runtime's codes.
pub fn to_wire(e: ClientError) -> WireError {
    match e {
        ClientError::Refused(w) => w,
        ClientError::OutcomeUnknown(p) => WireError::new(
            CONNECTION_LOST,
            format!("the registry's answer was lost ({p}); whether the request took effect is unknown"),
        ),
        ClientError::Proto(p @ ProtoError::VersionMismatch { .. }) => {
            WireError::new(VERSION_MISMATCH, format!("the registry cannot be used: {p}"))
        }
        ClientError::Proto(p @ ProtoError::Timeout(_)) => {
            WireError::new(TIMEOUT, format!("the registry did not answer in time: {p}"))
        }
        ClientError::Proto(p) => WireError::new(UNREACHABLE, format!("the registry cannot be reached: {p}")),
        other => WireError::new(other.code(), format!("registry: {other}")),
    }
}

/// The error for an answer of the wrong kind.
pub fn unexpected(request: &str) -> WireError {
    WireError::new(
        "registry.unexpected_reply",
        format!("the registry answered a {request} request with an unexpected reply"),
    )
}

/// The daemon, started from this very binary (`pod registry serve`) if none
/// answers: one binary is all a user needs.
pub fn daemon_command() -> Result<DaemonCommand, WireError> {
    let program = std::env::current_exe()
        .map_err(|e| WireError::new("registry.start_failed", format!("cannot find the pod binary: {e}")))?;
    Ok(DaemonCommand { program, args: vec!["registry".into(), "serve".into()] })
}

/// `name`'s allocation, asked on `link` (a client's, or the Pod's own).
pub async fn get_on(link: &mut Link, name: &PodName) -> Result<Option<Allocation>, WireError> {
    match link.call(Request::Get { name: name.to_string() }).await.map_err(to_wire)? {
        Reply::Found(a) => Ok(a),
        _ => Err(unexpected("get")),
    }
}

/// Every allocation, page by page, in name order, asked on `link`.
pub async fn list_on(link: &mut Link) -> Result<Vec<Allocation>, WireError> {
    let mut all: Vec<Allocation> = Vec::new();
    loop {
        let after = all.last().map(|a| a.name.to_string());
        match link.call(Request::List { after }).await.map_err(to_wire)? {
            Reply::Page { allocations, more } => {
                all.extend(allocations);
                if !more {
                    return Ok(all);
                }
            }
            _ => return Err(unexpected("list")),
        }
    }
}

/// A client's link to the registry (starting the daemon if none answers).
pub struct RegistryClient {
    link: Link,
}

impl RegistryClient {
    pub async fn connect(dirs: &RuntimeDirs) -> Result<RegistryClient, WireError> {
        let mut link = Link::new(dirs, daemon_command()?).map_err(to_wire)?;
        link.connect().await.map_err(to_wire)?;
        Ok(RegistryClient { link })
    }

    /// From inside a workload: to the running daemon, never starting one
    /// (see `Link::running_only`).
    pub async fn connect_running(dirs: &RuntimeDirs) -> Result<RegistryClient, WireError> {
        let mut link = Link::running_only(dirs).map_err(to_wire)?;
        link.connect().await.map_err(to_wire)?;
        Ok(RegistryClient { link })
    }

    async fn call(&mut self, request: Request) -> Result<Reply, WireError> {
        self.link.call(request).await.map_err(to_wire)
    }

    pub async fn get(&mut self, name: &PodName) -> Result<Option<Allocation>, WireError> {
        get_on(&mut self.link, name).await
    }

    /// Every allocation, page by page, in name order.
    pub async fn list(&mut self) -> Result<Vec<Allocation>, WireError> {
        list_on(&mut self.link).await
    }

    /// Gives up `name`'s allocation; its live children become top-level.
    pub async fn release(&mut self, name: &PodName) -> Result<Reclaimed, WireError> {
        match self.call(Request::Release { id: None, name: name.to_string() }).await? {
            Reply::Reclaimed(r) => Ok(r),
            _ => Err(unexpected("release")),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn failures_of_the_call_path_have_their_own_codes() {
        let cases: Vec<(ClientError, &str)> = vec![
            (ClientError::Proto(ProtoError::VersionMismatch { ours: 2, theirs: 1 }), VERSION_MISMATCH),
            (ClientError::Proto(ProtoError::Timeout(Duration::from_secs(300))), TIMEOUT),
            (ClientError::OutcomeUnknown(ProtoError::Closed), CONNECTION_LOST),
            (ClientError::Proto(ProtoError::Io(std::io::Error::other("refused"))), UNREACHABLE),
            (ClientError::Refused(WireError::new("registry.not_parent", "x")), "registry.not_parent"),
        ];
        for (error, code) in cases {
            assert_eq!(to_wire(error).code, code);
        }
        let e = to_wire(ClientError::Proto(ProtoError::VersionMismatch { ours: 2, theirs: 1 }));
        assert_eq!(
            e.message,
            "the registry cannot be used: protocol version mismatch: this side speaks 2, the peer speaks 1"
        );
    }
}
