//! Typed errors of the sandbox, each with a stable `code()` so that the same
//! failure reads the same across the helper's control channel, the Pod's IPC
//! and the command line.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    /// A system call or file operation failed; `what` says which, on what.
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    /// The machine lacks a feature the request needs (the line names it and why).
    #[error("{0}")]
    Unsupported(String),
    /// The requested level cannot express a rule (the line names the rule).
    #[error("{0}")]
    Refused(String),
    /// A process of the workload holds the region: narrowing would leave it a
    /// writer there. Nothing was changed.
    #[error("process {pid} of the workload holds {path} ({how}); the region cannot be taken from it while it does")]
    Busy { pid: u32, path: PathBuf, how: &'static str },
    /// A path the enforcement must bind over does not exist.
    #[error("{path} does not exist; {why}")]
    Missing { path: PathBuf, why: &'static str },
    /// The workload's processes could not be shown gone; its regions stay held.
    #[error("the workload could not be ended: {0}")]
    Held(String),
    /// The helper reported a failure, or went away without a word.
    #[error("sandbox helper: {0}")]
    Helper(String),
    /// The workload's program could not be executed: the OS's reason
    /// alone (it crosses the helper stages as is; the caller names the
    /// program in its own words).
    #[error("{0}")]
    Exec(String),
    /// A malformed or oversized frame on the helper's control channel.
    #[error("sandbox control channel: {0}")]
    Protocol(String),
    /// A request that is wrong in itself (bad name, relative path, ...).
    #[error("{0}")]
    BadRequest(String),
}

impl SandboxError {
    pub fn code(&self) -> &'static str {
        match self {
            SandboxError::Io { .. } => "sandbox.io",
            SandboxError::Unsupported(_) => "enforce.unsupported",
            SandboxError::Refused(_) => "enforce.refused",
            SandboxError::Busy { .. } => "enforce.busy",
            SandboxError::Missing { .. } => "enforce.missing",
            SandboxError::Held(_) => "containment.held",
            SandboxError::Helper(_) => "sandbox.helper",
            SandboxError::Exec(_) => "sandbox.exec",
            SandboxError::Protocol(_) => "sandbox.protocol",
            SandboxError::BadRequest(_) => "sandbox.bad_request",
        }
    }

    pub(crate) fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> SandboxError {
        let what = what.into();
        move |source| SandboxError::Io { what, source }
    }

    pub(crate) fn errno(what: impl Into<String>) -> impl FnOnce(rustix::io::Errno) -> SandboxError {
        let what = what.into();
        move |e| SandboxError::Io { what, source: e.into() }
    }
}
