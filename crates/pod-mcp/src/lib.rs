//! `pod mcp`: the Pod runtime as tools for any agent client that speaks the
//! Model Context Protocol, over stdio, built with rmcp (the official Rust
//! SDK). An agent running as (or under) a Pod's workload starts this server
//! as its child; each tool is one typed call of `pod-client`, so the Pod it
//! asks decides from the kernel's peer credentials of this server process
//! who is calling, exactly as for the `pod` command line. Nothing a tool
//! argument says is taken as identity.
//!
//! Where things are: `limits.rs` (every bound, stated once), `framing.rs`
//! (stdin read in bounded lines; an oversized request is refused by id),
//! `tools.rs` (names, schemas and model-facing descriptions), `args.rs`
//! (each tool's arguments and the limits checked at the edge), `logs.rs`
//! (pod_logs' bounded answer), `store.rs` (the coordination store's
//! `kv_*` and `lease_*` tools), `server.rs`
//! (the rmcp handler: dispatch, the concurrency cap, cancellation),
//! `config.rs` (the client snippet of `pod mcp config`).
//!
//! What it never does: write anything but MCP messages to stdout (logs go
//! to stderr), decide authorization itself, or offer a tool whose feature
//! is not built (absent, not stubbed).

pub mod args;
pub mod config;
pub mod framing;
pub mod limits;
pub mod logs;
pub mod server;
pub mod store;
pub mod tools;

pub use config::config_snippet;
pub use server::serve_stdio;
