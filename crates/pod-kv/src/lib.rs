//! pod-kv: the coordination store of a layer (a lead and its direct
//! children), as a pure core.
//!
//! Why it exists: a lead and its helpers need a small, safe surface to
//! coordinate (a task list the lead publishes, a result slot per helper
//! that only the helper and the lead can see, shared counters, mutual
//! exclusion), and every rule of it must be decided in one place that can
//! be tested exhaustively, without sockets, disks or clocks. The store (its
//! durable commit path, the IPC over the Pod socket, the timers) is the
//! imperative shell around this crate; it lives with the Pod.
//!
//! Layout:
//! - [`key`], [`pattern`]: parsing is validation; `/peer/self` resolved to
//!   the caller before anything is authorized; nothing normalized.
//! - [`caller`]: who calls ([`caller::role`], from the kernel's identity and
//!   the lead's children) and which lead a call goes to
//!   ([`caller::address`]).
//! - [`rights`]: who may read and write which namespace.
//! - [`state`]: the durable [`Layer`] and the [`Commit`]s that change it;
//!   replay is a fold of commits.
//! - [`waits`]: who waits (volatile).
//! - [`ops`]: every request and event as a pure plan ([`Core::plan`],
//!   [`Core::plan_event`]).
//! - [`clock`]: "now" as the shell hands it in, deadlines that survive a
//!   restart and a reboot.
//! - [`error`], [`limits`]: typed refusals with stable codes, the exit-code
//!   table, every limit.
//!
//! - [`store`]: the one module with I/O, kept apart from the rest: the
//!   durable store of a layer on the shared commit path (`crates/durable`),
//!   the shell's clocks. Nothing outside it reads a disk or a clock.
//!
//! Deliberately absent outside [`store`]: I/O, clocks, threads; everywhere:
//! the wire format of requests, and any knowledge of the Pod tree beyond
//! what the shell supplies.

pub mod caller;
pub mod clock;
pub mod error;
pub mod key;
pub mod limits;
pub mod ops;
pub mod pattern;
pub mod rights;
pub mod state;
pub mod store;
pub mod waits;

pub use caller::{address, role, Asker, Caller, Identity, Incarnation, Lineage, PodRef, Reach, Relation, Route};
pub use clock::{BootId, Deadline, Now};
pub use error::{Access, Awaited, Kind, KvError, Spelling, CODES, EXIT_OK};
pub use key::{Key, LeaseName, Namespace, Partition};
pub use ops::{Core, Event, Expect, Found, LeaseView, Listed, Listing, Op, Outcome, Plan, Wake};
pub use pattern::Pattern;
pub use state::{Change, Commit, Entry, Grant, Holder, Layer, Record, Records, Writer};
pub use waits::{Ticket, Waiter, Waits, Wanted};
