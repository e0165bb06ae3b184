//! The tools as a model sees them: name, a description saying what the
//! tool does, when to use it, what it returns and its limits, and the JSON
//! Schema of its arguments (draft 2020-12, declared by `$schema`). Only
//! tools whose feature is built are listed: the coordination store's
//! `kv_*`/`lease_*` tools join when `pod-client` has their calls. Every
//! limit a schema states is checked again at the edge (`args.rs`).

use std::sync::Arc;

use rmcp::model::{JsonObject, Tool, ToolAnnotations};
use serde_json::{json, Value};

use pod_client::env::{MAX_NAME_BYTES as MAX_VAR_NAME_BYTES, MAX_VALUE_BYTES as MAX_VAR_VALUE_BYTES, MAX_VARS};

use crate::limits::{
    DEFAULT_LOG_LINES, DEFAULT_WAIT, MAX_COMMAND_WORDS, MAX_LOG_LINES, MAX_PATH_BYTES, MAX_SPAWN_PATHS, MAX_WAIT,
    MAX_WAIT_NAMES, MAX_WORD_BYTES,
};

pub const SPAWN: &str = "pod_spawn";
pub const STOP: &str = "pod_stop";
pub const WAIT: &str = "pod_wait";
pub const STATUS: &str = "pod_status";
pub const CHECK: &str = "pod_check";
pub const LOGS: &str = "pod_logs";

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

/// Every tool this build serves, in the order they are listed.
pub fn all() -> Vec<Tool> {
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
             Returns {name, lines: [{ts_ms, stream: stdout | stderr, line}], earlier}; `earlier` counts older lines not returned. \
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
