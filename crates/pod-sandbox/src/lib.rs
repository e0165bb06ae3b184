//! Containment and kernel enforcement of a Pod's workload: the only code
//! of the runtime that touches cgroups, Landlock and namespaces.
//!
//! A Pod's scope is only worth what enforces it. This crate makes two
//! promises true in the kernel:
//! - **no process outlives its Pod**: every process a workload starts
//!   (setsid, double-forked, fork bombs) is in its [`Containment`] (a cgroup
//!   where one can be had, else a supervisor) and `terminate` ends them all;
//! - **a workload writes only where its Pod may**: Landlock at exec bounds
//!   it to its write scope, and at level `full` a private mount namespace,
//!   changed by the keeper that lives in it, takes a delegated region away
//!   from the running workload and gives it back.
//!
//! Functional core: [`detect`] (what the machine offers, pure parsing),
//! [`policy`] (what to grant and bind for a scope), [`level`] (which level
//! and containment). Imperative shell, one file per mechanism: `cgroup`,
//! `containment`, `enforce` (Landlock), `mounts`, `busy`, `helper` (the
//! re-exec stages), `launch` (the Pod's side), `identity`.
//!
//! Deliberately absent: network restrictions, seccomp, chmod/chown/xattr
//! control (Landlock does not cover them), integration with the Pod
//! process (the `pod` crate calls this one).

pub mod busy;
pub mod cgroup;
pub mod containment;
pub mod detect;
mod enforce;
mod error;
mod frame;
pub mod helper;
pub mod identity;
pub mod launch;
pub mod level;
mod mounts;
pub mod policy;
pub mod proc;
mod sys;

pub use containment::{Containment, ContainmentKey, ContainmentRecord, ProcessId};
pub use detect::{Feature, Support};
pub use error::SandboxError;
pub use helper::{helper_main, ExitReport, HelperCommand, Program};
pub use identity::{workload_of, WorkloadId};
pub use launch::{launch, LaunchSpec, Parked, Workload};
pub use level::{choose_containment, choose_level, Choice, ContainmentChoice, Limits, Mechanism};
pub use policy::{Level, MountOp, Plan, Policy};
