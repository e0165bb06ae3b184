//! The scope algebra of the Pod runtime.
//!
//! A Pod's filesystem scope is a set of rules over absolute, normalized paths:
//! a *base* (the user's allow and deny rules) plus one *delegation layer* per
//! live child. A layer removes the parent's write on the delegated paths for
//! exactly as long as it exists; `reclaim` drops exactly that layer. The base is
//! never modified by delegation or reclaim, so a stopped child can never leave
//! its region write-denied in the parent, and reclaiming can never widen a deny
//! the user wrote.
//!
//! This crate is pure: no I/O, no clocks, no processes, with one deliberate
//! exception, [`resolve`], which follows symlinks so that a path is checked
//! where it really points. Every other function works on already normalized
//! [`ScopePath`]s.

mod echo;
mod error;
mod name;
mod path;
mod region;
mod resolve;
mod rule;
mod scope;

pub use echo::{has_control, sanitize, Echo, Echoed, MAX_ECHO_CHARS};
pub use error::{NameError, PathError, ResolveError, ScopeError};
pub use name::{PodName, RESERVED as RESERVED_NAMES};
pub use path::ScopePath;
pub use region::Region;
pub use resolve::resolve;
pub use rule::{Permission, ScopeRule};
pub use scope::{Decider, Scope, ScopeSnapshot, Verdict};

/// Every limit the scope model enforces, in one place so docs and errors agree.
pub mod limits {
    /// Longest accepted path, in bytes (Linux `PATH_MAX`).
    pub const MAX_PATH_BYTES: usize = 4096;
    /// Longest Pod name, in bytes.
    pub const MAX_NAME_BYTES: usize = 64;
    /// Most rules in a base allow or deny list.
    pub const MAX_BASE_RULES: usize = 1024;
    /// Most rules delegated to one child.
    pub const MAX_LAYER_RULES: usize = 256;
    /// Most live delegation layers (children) one Pod may hold.
    pub const MAX_LAYERS: usize = 4096;
}
