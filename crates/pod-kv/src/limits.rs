//! Every limit of the coordination store, in one place so that the docs,
//! the errors and the tests agree. Past a limit the call is refused with its
//! own code and nothing changes.

/// Longest key (as stored, after `/peer/self` is resolved), pattern or
/// `/leases/NAME`, in bytes.
pub const MAX_KEY_BYTES: usize = 512;

/// Largest value, in bytes.
pub const MAX_VALUE_BYTES: usize = 1 << 20;

/// Most keys one layer holds.
pub const MAX_KEYS: usize = 10_000;

/// Most bytes of keys and values one layer holds together.
pub const MAX_LAYER_BYTES: u64 = 64 << 20;

/// Most `/peer` slots a layer remembers a version counter for. A slot's
/// counter outlives its keys, so that a key deleted and written again (by a
/// helper of the same name, say) gets a higher version than it ever had.
pub const MAX_SLOTS: usize = 100_000;

/// Most entries in one list answer; more are reported as `truncated`.
pub const MAX_LIST: usize = 1_000;

/// Most segments in a list pattern. Matching `**` backtracks, so this bounds
/// the work of one list to `MAX_KEYS x MAX_PATTERN_SEGMENTS x 256` steps.
pub const MAX_PATTERN_SEGMENTS: usize = 32;

/// Most leases held at once in one layer.
pub const MAX_LEASES: usize = 1_000;

/// Most callers waiting at once in one layer, key waits and lease waits
/// together (a Pod's socket serves at most 1,024 connections).
pub const MAX_WAITERS: usize = 1_024;

/// Shortest lease TTL, in milliseconds.
pub const MIN_TTL_MS: u64 = 100;

/// Longest lease TTL, in milliseconds (24 hours; renew to hold longer).
pub const MAX_TTL_MS: u64 = 24 * 60 * 60 * 1000;

/// Longest wait for a key version or a lease, in milliseconds (1 hour).
pub const MAX_WAIT_MS: u64 = 60 * 60 * 1000;
