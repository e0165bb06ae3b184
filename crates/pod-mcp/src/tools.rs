//! The tools as a model sees them: name, a description saying what the
//! tool does, when to use it, what it returns and its limits, and the JSON
//! Schema of its arguments (draft 2020-12, declared by `$schema`): the
//! runtime's `pod_*` tools and the coordination store's `kv_*` and
//! `lease_*`. Every limit a schema states is checked again at the edge
//! (`args.rs`) or by the store (keys, values, patterns, lease names).

use std::sync::Arc;

use rmcp::model::{JsonObject, Tool, ToolAnnotations};
use serde_json::{json, Value};

use pod_client::env::{MAX_NAME_BYTES as MAX_VAR_NAME_BYTES, MAX_VALUE_BYTES as MAX_VAR_VALUE_BYTES, MAX_VARS};

use crate::limits::{
    DEFAULT_KV_WAIT, DEFAULT_LOG_LINES, DEFAULT_WAIT, MAX_COMMAND_WORDS, MAX_LEASE_TTL_SECONDS, MAX_LOG_LINES,
    MAX_PATH_BYTES, MAX_SPAWN_PATHS, MAX_WAIT, MAX_WAIT_NAMES, MAX_WORD_BYTES,
};

pub const SPAWN: &str = "pod_spawn";
pub const STOP: &str = "pod_stop";
pub const WAIT: &str = "pod_wait";
pub const STATUS: &str = "pod_status";
pub const CHECK: &str = "pod_check";
pub const LOGS: &str = "pod_logs";
pub const KV_GET: &str = "kv_get";
pub const KV_SET: &str = "kv_set";
pub const KV_CAS: &str = "kv_cas";
pub const KV_RM: &str = "kv_rm";
pub const KV_LIST: &str = "kv_list";
pub const KV_WAIT: &str = "kv_wait";
pub const LEASE_ACQUIRE: &str = "lease_acquire";
pub const LEASE_RENEW: &str = "lease_renew";
pub const LEASE_RELEASE: &str = "lease_release";
pub const LEASE_LIST: &str = "lease_list";

/// The tools whose calls wait on purpose (bounded by their own timeout,
/// at most `MAX_WAIT`).
pub const WAITING: [&str; 3] = [WAIT, KV_WAIT, LEASE_ACQUIRE];

const SCHEMA_DIALECT: &str = "https://json-schema.org/draft/2020-12/schema";

/// A Pod's name, as the runtime accepts it (checked again there).
fn name_schema(what: &str) -> Value {
    json!({ "type": "string", "minLength": 1, "maxLength": 64, "description": what })
}

fn paths_schema(what: &str) -> Value {
    json!({
        "type": "array",
        "items": { "type": "string", "minLength": 1, "maxLength": MAX_PATH_BYTES },
        "maxItems": MAX_SPAWN_PATHS,
        "description": what,
    })
}

fn schema(properties: Value, required: &[&str]) -> Arc<JsonObject> {
    let value = json!({
        "$schema": SCHEMA_DIALECT,
        "type": "object",
        "properties": properties,
        "required": required,
        "additionalProperties": false,
    });
    match value {
        Value::Object(map) => Arc::new(map),
        _ => unreachable!("a json! object literal is an object"),
    }
}

fn key_schema(what: &str) -> Value {
    json!({ "type": "string", "minLength": 1, "maxLength": pod_kv::limits::MAX_KEY_BYTES, "description": what })
}

fn layer_schema() -> Value {
    name_schema(
        "The layer (the lead Pod whose store this is): your own Pod (the layer you lead) or your parent (the layer you are a member of); \
         default: your parent's, or your own for a Pod without a parent. Required outside every Pod.",
    )
}

fn override_schema() -> Value {
    json!({
        "type": "boolean",
        "default": false,
        "description": "The lead's (or operator's) write of a member's /peer slot or release of another holder's lease; refused for members."
    })
}

fn global_schema() -> Value {
    json!({
        "type": "boolean",
        "default": false,
        "description": "A tree-wide lease: the lease of your tree's root layer, which any Pod of the tree may take (it serializes across sub-trees)."
    })
}

fn lease_name_schema() -> Value {
    json!({ "type": "string", "minLength": 1, "maxLength": pod_kv::limits::MAX_KEY_BYTES - "/leases/".len(), "description": "The lease's name: one key segment (A-Z, a-z, 0-9, `.`, `_`, `-`)." })
}

const STORE_INTRO: &str = "The coordination store of a layer (a lead Pod and its direct children, the members). \
    Keys are `/`-separated: /ref/... (everyone reads, the lead writes), /shared/... (everyone reads and writes), \
    /peer/MEMBER/... (a member's slot: only that member and the lead read it; only that member writes it; /peer/self/... is yours). \
    Who you are is decided by the kernel from this server's process, never by an argument.";

const LEASE_INTRO: &str = "Leases of a layer's store: mutual exclusion with a TTL and a fencing token (it grows with every grant and never repeats; \
    pass it along with what you write so stale holders can be refused). A lease is freed when its TTL passes, on release, or when its holder Pod stops.";

fn read_only() -> ToolAnnotations {
    ToolAnnotations::new().read_only(true).open_world(false)
}

fn writes(idempotent: bool) -> ToolAnnotations {
    ToolAnnotations::new().destructive(false).idempotent(idempotent).open_world(false)
}

/// The coordination store's tools.
fn store() -> Vec<Tool> {
    vec![
        Tool::new(
            KV_GET,
            format!("{STORE_INTRO} Read one key. Returns {{key, value (UTF-8) or value_hex, version, written_by, written_at, written_at_ms}}. \
                     Refused: kv.not_found, kv.denied (e.g. another member's /peer slot)."),
            schema(json!({ "key": key_schema("The key, e.g. /shared/tasks or /peer/self/result."), "layer": layer_schema() }), &["key"]),
        )
        .annotate(read_only()),
        Tool::new(
            KV_SET,
            format!("{STORE_INTRO} Write one key (created or replaced). Returns {{key, version}} (the new version). \
                     Limits: values at most 1 MiB (kv.value_too_large; this server's messages are at most 1 MiB too), keys at most 512 bytes."),
            schema(
                json!({
                    "key": key_schema("The key to write."),
                    "value": { "type": "string", "description": "The value (UTF-8 text)." },
                    "layer": layer_schema(),
                    "override": override_schema(),
                }),
                &["key", "value"],
            ),
        )
        .annotate(writes(true)),
        Tool::new(
            KV_CAS,
            format!("{STORE_INTRO} Compare and swap: write the key only if it is at expected_version (0: only if it does not exist). \
                     Use it to claim a task or update a counter without losing another writer's change. \
                     Returns {{key, version}}; refused kv.version_mismatch when the key moved (read it again and retry)."),
            schema(
                json!({
                    "key": key_schema("The key to write."),
                    "expected_version": { "type": "integer", "minimum": 0, "description": "The version the key must have now; 0: it must not exist." },
                    "value": { "type": "string", "description": "The new value (UTF-8 text)." },
                    "layer": layer_schema(),
                    "override": override_schema(),
                }),
                &["key", "expected_version", "value"],
            ),
        )
        .annotate(writes(false)),
        Tool::new(
            KV_RM,
            format!("{STORE_INTRO} Delete one key. Returns {{key, version}} (the version it had); refused kv.not_found."),
            schema(json!({ "key": key_schema("The key to delete."), "layer": layer_schema(), "override": override_schema() }), &["key"]),
        )
        .annotate(ToolAnnotations::new().destructive(true).idempotent(false).open_world(false)),
        Tool::new(
            KV_LIST,
            format!("{STORE_INTRO} List the keys matching a glob that you may read: `*` matches one segment, `**` any number. \
                     Returns {{entries: [{{key, version, written_by, written_at, written_at_ms, value_bytes}}], truncated}} in key order, \
                     at most 1000 entries (truncated: true when more match)."),
            schema(
                json!({ "pattern": key_schema("The glob, e.g. /shared/tasks/* or /**."), "layer": layer_schema() }),
                &["pattern"],
            ),
        )
        .annotate(read_only()),
        Tool::new(
            KV_WAIT,
            format!("{STORE_INTRO} Wait until a key is at min_version or later (0: until it exists), then return it as kv_get does. \
                     Use it to wait for a helper's result in its /peer slot or for a task list. \
                     Refused kv.timed_out when timeout_seconds pass first. Cancelling the call stops the wait. \
                     Limits: timeout_seconds default 60, at most 3600."),
            schema(
                json!({
                    "key": key_schema("The key to wait for."),
                    "min_version": { "type": "integer", "minimum": 0, "default": 0, "description": "The version to wait for; 0: any (the key exists)." },
                    "timeout_seconds": {
                        "type": "integer", "minimum": 0, "maximum": MAX_WAIT.as_secs(), "default": DEFAULT_KV_WAIT.as_secs(),
                        "description": "Longest to wait, in seconds."
                    },
                    "layer": layer_schema(),
                }),
                &["key"],
            ),
        )
        .annotate(read_only()),
        Tool::new(
            LEASE_ACQUIRE,
            format!("{LEASE_INTRO} Take a lease for ttl_seconds. Returns {{name, token, holder, ttl_ms, expires_at, expires_at_ms, remaining_ms, waiting}}. \
                     Held by someone else: refused kv.lease_held, or with wait_seconds you queue (first come, first served) and get it when it is freed, \
                     else kv.timed_out. Not re-entrant. Cancelling the call stops the wait. Limits: ttl_seconds 1 to 86400, wait_seconds at most 3600."),
            schema(
                json!({
                    "name": lease_name_schema(),
                    "ttl_seconds": { "type": "integer", "minimum": 1, "maximum": MAX_LEASE_TTL_SECONDS, "description": "How long the grant lasts unless renewed." },
                    "wait_seconds": { "type": "integer", "minimum": 0, "maximum": MAX_WAIT.as_secs(), "description": "Wait this long for a held lease instead of being refused." },
                    "layer": layer_schema(),
                    "global": global_schema(),
                }),
                &["name", "ttl_seconds"],
            ),
        )
        .annotate(writes(false)),
        Tool::new(
            LEASE_RENEW,
            format!("{LEASE_INTRO} Renew a lease you hold: its deadline becomes now + TTL (ttl_seconds, default the grant's own). \
                     Returns the grant as lease_acquire does. Refused kv.lease_not_held when its TTL already passed (acquire again, for a new token), \
                     kv.lease_stale when token names an older grant. Limits: ttl_seconds 1 to 86400."),
            schema(
                json!({
                    "name": lease_name_schema(),
                    "token": { "type": "integer", "minimum": 0, "description": "Only renew this grant (its token)." },
                    "ttl_seconds": { "type": "integer", "minimum": 1, "maximum": MAX_LEASE_TTL_SECONDS, "description": "A new TTL." },
                    "layer": layer_schema(),
                    "global": global_schema(),
                }),
                &["name"],
            ),
        )
        .annotate(writes(true)),
        Tool::new(
            LEASE_RELEASE,
            format!("{LEASE_INTRO} Release a lease you hold; the first waiter gets it. Returns {{name, token}}. \
                     Refused kv.lease_not_held, kv.lease_stale (token of an older grant)."),
            schema(
                json!({
                    "name": lease_name_schema(),
                    "token": { "type": "integer", "minimum": 0, "description": "Only release this grant (its token)." },
                    "layer": layer_schema(),
                    "global": global_schema(),
                    "override": override_schema(),
                }),
                &["name"],
            ),
        )
        .annotate(ToolAnnotations::new().destructive(true).idempotent(false).open_world(false)),
        Tool::new(
            LEASE_LIST,
            format!("{LEASE_INTRO} Every live grant of the layer (or, global, of the tree). Returns {{leases: [grant as lease_acquire returns it]}}. Read-only."),
            schema(json!({ "layer": layer_schema(), "global": global_schema() }), &[]),
        )
        .annotate(read_only()),
    ]
}

/// Every tool this build serves, in the order they are listed.
pub fn all() -> Vec<Tool> {
    let mut tools = runtime();
    tools.extend(store());
    tools
}

/// The runtime's tools.
fn runtime() -> Vec<Tool> {
    vec![
        Tool::new(
            SPAWN,
            "Start a helper: a child Pod of your Pod with part of your write scope, running a command. \
             Use it to hand a piece of work to a helper agent or process that may touch only the paths you give it. \
             While the child runs, you lose write access to its write paths (they are delegated), and get them back when it stops. \
             Paths are absolute or relative to this server's working directory; a trailing `/*` means the directory and its direct children only. \
             `env` gives the command variables on top of what it inherits (POD_NAME, POD_SOCKET, POD_HOME, POD_PARENT are set by the runtime and refused). \
             Returns {child, pid, parent}. Refused (tool error with a code) if a path is outside your own scope, overlaps another live helper's, \
             or the name is taken. Limits: at most 64 paths (write and read together) of 4096 bytes, 256 command words of 32768 bytes, \
             256 variables (names of 256 bytes, values of 32768 bytes); past one, the code is mcp.over_limit (env.too_many for variables).",
            schema(
                json!({
                    "name": name_schema("The child Pod's name: letters, digits, `-`, `_`, `.`; unique among live Pods."),
                    "write": paths_schema("Paths the child may write (and read), delegated from your scope."),
                    "read": paths_schema("Paths the child may read."),
                    "command": {
                        "type": "array",
                        "items": { "type": "string", "maxLength": MAX_WORD_BYTES },
                        "minItems": 1,
                        "maxItems": MAX_COMMAND_WORDS,
                        "description": "The child's workload, as argv (no shell unless you name one); the child stops when it exits. Without it the child only holds its scope."
                    },
                    "env": {
                        "type": "object",
                        "maxProperties": MAX_VARS,
                        "propertyNames": { "pattern": "^[A-Za-z_][A-Za-z0-9_]*$", "maxLength": MAX_VAR_NAME_BYTES },
                        "additionalProperties": { "type": "string", "maxLength": MAX_VAR_VALUE_BYTES },
                        "description": "Variables for the command, {NAME: value}; never written to a file or a log by the runtime."
                    },
                    "parent": name_schema("The Pod to spawn under; default: the Pod this server runs in (POD_NAME). The parent Pod decides from the kernel whether you may."),
                }),
                &["name"],
            ),
        )
        .annotate(ToolAnnotations::new().destructive(false).idempotent(false).open_world(false)),
        Tool::new(
            STOP,
            "Stop a Pod and its children (its workload is ended); for a helper, its parent gets the helper's write scope back. \
             Use it when a helper's work is done or must be abandoned. You may stop only Pods of your own tree below you (the operator: any). \
             Returns {outcome: reclaimed | already_stopped | parent_down | top_level, name, parent?}. Refused (tool error) if the Pod is not running \
             or is not yours to stop.",
            schema(json!({ "name": name_schema("The Pod to stop.") }), &["name"]),
        )
        .annotate(ToolAnnotations::new().destructive(true).idempotent(true).open_world(false)),
        Tool::new(
            WAIT,
            "Wait until Pods have stopped (their workloads exited) and learn how each ended. \
             Use it after pod_spawn to wait for helpers to finish their work, then read their exit codes. \
             Returns {outcomes: [{name, state: exited | killed | stopped | crashed | lost | running, exit_code?, signal?}], timed_out}; \
             `running` with timed_out: true when the timeout passed first (not an error). A stopped Pod answers at once. \
             Limits: 1 to 64 names; timeout_seconds default 60, at most 3600. Cancelling the call stops the wait (the Pods go on).",
            schema(
                json!({
                    "names": {
                        "type": "array",
                        "items": { "type": "string", "minLength": 1, "maxLength": 64 },
                        "minItems": 1,
                        "maxItems": MAX_WAIT_NAMES,
                        "description": "The Pods to wait for."
                    },
                    "timeout_seconds": {
                        "type": "integer",
                        "minimum": 0,
                        "maximum": MAX_WAIT.as_secs(),
                        "default": DEFAULT_WAIT.as_secs(),
                        "description": "Longest to wait, in seconds."
                    },
                }),
                &["names"],
            ),
        )
        .annotate(ToolAnnotations::new().read_only(true).open_world(false)),
        Tool::new(
            STATUS,
            "The tree of live Pods with their states and write scopes: under `name`, by default under the Pod this server runs in \
             (outside every Pod: all trees). Use it to see which helpers are running and what each may write. \
             Returns {pods: [{name, pid, state, write: [paths], children: [...]}]}. Read-only.",
            schema(json!({ "name": name_schema("The Pod whose tree to show; default: this server's Pod.") }), &[]),
        )
        .annotate(ToolAnnotations::new().read_only(true).open_world(false)),
        Tool::new(
            CHECK,
            "May a Pod read (or, with write=true, write) a path, and which rule decides. Use it before working on a path, \
             or to explain a refusal. The path is absolute or relative to this server's working directory; symlinks are resolved. \
             Returns {pod, path, wanted, allowed, permission, decided_by}; a denial is a normal result (allowed: false), not an error. Read-only.",
            schema(
                json!({
                    "path": { "type": "string", "minLength": 1, "maxLength": MAX_PATH_BYTES, "description": "The path to check." },
                    "write": { "type": "boolean", "default": false, "description": "Check write access instead of read." },
                    "name": name_schema("The Pod to check for; default: this server's Pod."),
                }),
                &["path"],
            ),
        )
        .annotate(ToolAnnotations::new().read_only(true).open_world(false)),
        Tool::new(
            LOGS,
            "The last lines a Pod's command wrote to stdout and stderr, oldest first, while it runs and after it stopped (until it is removed). \
             Use it to see what a helper did or why it failed, e.g. after pod_wait reports a non-zero exit code. \
             Returns {name, lines: [{timestamp_ms, stream: stdout | stderr, line}], earlier}; `earlier` counts older lines not returned. \
             Refused (pod.unknown) for a Pod that has no output here. \
             Limits: tail default 100, at most 1000 lines; at most 262144 bytes of text per answer (the newest lines that fit).",
            schema(
                json!({
                    "name": name_schema("The Pod whose output to read."),
                    "tail": {
                        "type": "integer",
                        "minimum": 1,
                        "maximum": MAX_LOG_LINES,
                        "default": DEFAULT_LOG_LINES,
                        "description": "How many of the last lines to return."
                    },
                }),
                &["name"],
            ),
        )
        .annotate(ToolAnnotations::new().read_only(true).open_world(false)),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::limits::MAX_LOG_BYTES;

    /// The numbers the descriptions state are the limits enforced.
    #[test]
    fn descriptions_state_the_enforced_limits() {
        let described = |name: &str| {
            all()
                .into_iter()
                .find(|t| t.name == name)
                .and_then(|t| t.description)
                .map(|d| d.to_string())
                .unwrap_or_default()
        };
        let spawn = described(SPAWN);
        for limit in [
            MAX_SPAWN_PATHS,
            MAX_PATH_BYTES,
            MAX_COMMAND_WORDS,
            MAX_WORD_BYTES,
            MAX_VARS,
            MAX_VAR_NAME_BYTES,
            MAX_VAR_VALUE_BYTES,
        ] {
            assert!(spawn.contains(&format!(" {limit} ")), "pod_spawn's description lacks {limit}");
        }
        let logs = described(LOGS);
        for limit in [DEFAULT_LOG_LINES, MAX_LOG_LINES, MAX_LOG_BYTES] {
            assert!(logs.contains(&format!(" {limit}")), "pod_logs' description lacks {limit}");
        }
    }
}
