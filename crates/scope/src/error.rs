//! Typed errors of the scope model. Each has a stable `code()` so that the
//! same failure reads the same across IPC, logs and the command line.

use crate::echo::Echoed;
use crate::{PodName, ScopeRule};

/// Why a string is not an acceptable scope path.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    #[error("path is empty")]
    Empty,
    #[error("path {0} is not absolute (scope paths must start with '/')")]
    NotAbsolute(Echoed),
    #[error("path {0} contains a NUL byte, which no file name can hold")]
    Nul(Echoed),
    #[error("path {path} is {len} bytes long; the limit is {max}")]
    TooLong { path: Echoed, len: usize, max: usize },
    #[error("path {0} is not valid UTF-8; scope paths must be UTF-8")]
    NotUtf8(Echoed),
    #[error("path {0} holds a control character (newline, tab, escape, ...); scope paths may not")]
    ControlChar(Echoed),
}

impl PathError {
    pub fn code(&self) -> &'static str {
        match self {
            PathError::Empty => "path.empty",
            PathError::NotAbsolute(_) => "path.not_absolute",
            PathError::Nul(_) => "path.nul",
            PathError::TooLong { .. } => "path.too_long",
            PathError::NotUtf8(_) => "path.not_utf8",
            PathError::ControlChar(_) => "path.control_char",
        }
    }
}

/// Why a string is not an acceptable Pod name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error("pod name is empty")]
    Empty,
    #[error("pod name {name} is {len} bytes long; the limit is {max}")]
    TooLong { name: Echoed, len: usize, max: usize },
    #[error("pod name {name} has {ch:?} at position {pos}; only a-z, 0-9, '.', '_' and '-' are allowed")]
    BadChar { name: Echoed, ch: char, pos: usize },
    #[error("pod name {0} must start with a letter or a digit")]
    BadStart(Echoed),
    #[error("pod name {name:?} is reserved ({why}); choose another")]
    Reserved { name: &'static str, why: &'static str },
}

impl NameError {
    pub fn code(&self) -> &'static str {
        match self {
            NameError::Empty => "name.empty",
            NameError::TooLong { .. } => "name.too_long",
            NameError::BadChar { .. } => "name.bad_char",
            NameError::BadStart(_) => "name.bad_start",
            NameError::Reserved { .. } => "name.reserved",
        }
    }
}

/// Why a path could not be resolved against the filesystem.
#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    #[error(transparent)]
    Path(#[from] PathError),
    #[error("too many symbolic links while resolving {path} (limit {max})")]
    SymlinkLoop { path: Echoed, max: usize },
    #[error("cannot resolve {path}: {source}")]
    Io {
        path: Echoed,
        #[source]
        source: std::io::Error,
    },
}

impl ResolveError {
    pub fn code(&self) -> &'static str {
        match self {
            ResolveError::Path(e) => e.code(),
            ResolveError::SymlinkLoop { .. } => "path.symlink_loop",
            ResolveError::Io { .. } => "path.io",
        }
    }
}

/// Why a scope operation was refused. The scope is unchanged whenever one of
/// these is returned.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScopeError {
    #[error("child {0} already holds a delegation layer; names of live children are unique")]
    DuplicateChild(PodName),
    #[error("cannot delegate {rule}: it is not inside any write rule of the parent's base scope")]
    WriteOutsideScope { rule: ScopeRule },
    #[error("cannot delegate {rule}: it overlaps the parent's deny rule {deny}")]
    OverlapsDeny { rule: ScopeRule, deny: ScopeRule },
    #[error("cannot delegate {rule}: it overlaps {other}, already delegated to child {child}")]
    OverlapsLayer { rule: ScopeRule, child: PodName, other: ScopeRule },
    #[error("cannot delegate {rule}: it is not inside any rule of the parent's base scope")]
    ReadOutsideScope { rule: ScopeRule },
    #[error("cannot delegate {rule}: the parent's read-deny rule {deny} forbids reading there")]
    ReadDenied { rule: ScopeRule, deny: ScopeRule },
    #[error("delegation to {0} names no rule; a child needs at least one")]
    EmptyDelegation(PodName),
    #[error("{what} holds {count} rules; the limit is {max}")]
    TooManyRules { what: &'static str, count: usize, max: usize },
    #[error("the pod already has {max} live children, the limit")]
    TooManyLayers { max: usize },
    #[error("layers of {a} and {b} overlap ({rule_a} and {rule_b}); a snapshot with overlapping layers is corrupt")]
    LayersOverlap { a: PodName, rule_a: ScopeRule, b: PodName, rule_b: ScopeRule },
}

impl ScopeError {
    pub fn code(&self) -> &'static str {
        match self {
            ScopeError::DuplicateChild(_) => "scope.duplicate_child",
            ScopeError::WriteOutsideScope { .. } => "scope.write_outside",
            ScopeError::OverlapsDeny { .. } => "scope.overlaps_deny",
            ScopeError::OverlapsLayer { .. } => "scope.overlaps_layer",
            ScopeError::ReadOutsideScope { .. } => "scope.read_outside",
            ScopeError::ReadDenied { .. } => "scope.read_denied",
            ScopeError::EmptyDelegation(_) => "scope.empty_delegation",
            ScopeError::TooManyRules { .. } => "scope.too_many_rules",
            ScopeError::TooManyLayers { .. } => "scope.too_many_layers",
            ScopeError::LayersOverlap { .. } => "scope.layers_overlap",
        }
    }
}
