//! Every bound of the MCP server, in one place (docs/agents.md states them).

use std::time::Duration;

/// Largest JSON-RPC message read from the client, in bytes (one line of
/// stdio). A longer request is refused with [`MESSAGE_TOO_LARGE`], by its
/// id when the id is within its first [`ID_SCAN_BYTES`].
pub const MAX_MESSAGE_BYTES: usize = 1024 * 1024;

/// How much of an oversized line is kept to find its JSON-RPC id.
pub const ID_SCAN_BYTES: usize = 512;

/// Tool calls served at once; one past it is refused with `mcp.busy`.
pub const MAX_CONCURRENT_CALLS: usize = 8;

/// Longest any tool call runs before it is given up (`mcp.timeout`).
pub const CALL_TIMEOUT: Duration = Duration::from_secs(120);

/// Most paths one `pod_spawn` may name (write and read together), and most
/// words of its command.
pub const MAX_SPAWN_PATHS: usize = 64;
pub const MAX_COMMAND_WORDS: usize = 256;
/// Longest word of a `pod_spawn` command, in bytes.
pub const MAX_WORD_BYTES: usize = 32 << 10;
/// Longest path argument (`pod_spawn`, `pod_check`), in bytes.
pub const MAX_PATH_BYTES: usize = 4096;

/// JSON-RPC error code of a refused oversized request (the "invalid
/// request" code of JSON-RPC 2.0).
pub const MESSAGE_TOO_LARGE: i32 = -32600;

/// `pod_wait`: its timeout when none is given, the longest one may ask,
/// and most Pods one call waits for.
pub const DEFAULT_WAIT: Duration = Duration::from_secs(60);
pub const MAX_WAIT: Duration = Duration::from_secs(3600);
pub const MAX_WAIT_NAMES: usize = 64;

/// `pod_logs`: how many of the last lines it returns when `tail` is not
/// given, the most one call may ask for, and the most bytes of line text
/// one answer carries (the newest lines that fit; the rest are counted in
/// `earlier`), so an answer stays well inside a client's message limit.
pub const DEFAULT_LOG_LINES: usize = 100;
pub const MAX_LOG_LINES: usize = 1000;
pub const MAX_LOG_BYTES: usize = 256 << 10;

/// `kv_wait`: its timeout when none is given (its longest is
/// [`MAX_WAIT`], the store's own bound). `lease_acquire`: the longest TTL
/// (the store's 24 hours; the shortest one here is 1 s).
pub const DEFAULT_KV_WAIT: Duration = Duration::from_secs(60);
pub const MAX_LEASE_TTL_SECONDS: u64 = pod_kv::limits::MAX_TTL_MS / 1000;

// The store bounds its waits itself; this server's bound is the same.
const _: () = assert!(MAX_WAIT.as_secs() * 1000 == pod_kv::limits::MAX_WAIT_MS);
