//! The runtime's clients, as a library: the Pod socket (`pod.rs`, the
//! messages in `protocol.rs`), the registry (`registry.rs`), starting a Pod
//! process (`launch.rs`), where a Pod's files are (`layout.rs`), and one
//! typed call per command of the command line (`commands/`, on a
//! [`Client`]). The `pod` command line renders what these return; an agent
//! integration (the MCP server) serves the same results.
//!
//! What it never does: print, exit the process, or decide what the Pod or
//! the registry decides (authorization, conflicts, reclaim): it asks them
//! and reports their answers, in their codes.

pub mod commands;
pub mod launch;
pub mod layout;
pub mod output;
pub mod pod;
pub mod process;
pub mod protocol;
pub mod registry;

pub use commands::inspect::{CheckView, LogReader, PodSummary, ScopeView, TreeNode};
pub use commands::kv::{KvList, KvListed, KvRoute, KvValue, KvVersion, Lease, Released};
pub use commands::lifecycle::{Removed, SpawnSpec, Spawned, StartSpec, Started, Stopped};
pub use commands::logs::LogsReader;
pub use commands::wait::{Ended, WaitOutcome, Waited};
pub use commands::Client;
