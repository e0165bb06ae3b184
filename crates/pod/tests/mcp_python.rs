//! `pod mcp` through a client this project did not write: the official MCP
//! Python SDK (`mcp` from PyPI, with `jsonschema`), in the venv that
//! .ci/run creates (`POD_MCP_PYTHON` names its python; default
//! `.venv/mcp/bin/python` at the repository root). Without it the test
//! skips with a printed reason, unless POD_TEST_REQUIRE names `mcp-python`.

use pod_e2e as common;

use std::path::PathBuf;
use std::process::Command;

use common::*;
use serde_json::{json, Value};

fn python() -> Option<PathBuf> {
    let path = std::env::var_os("POD_MCP_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../.venv/mcp/bin/python"));
    let works = Command::new(&path).args(["-c", "import mcp, jsonschema"]).output().is_ok_and(|o| o.status.success());
    works.then_some(path)
}

const BUSY: &str = "8 tool calls are already running; wait for one to finish and try again [mcp.busy]";

/// One session, in order: list and validate the schemas; spawn, check,
/// wait for an exit code; refusals (a path outside the lead's scope, a
/// reserved variable, a limit past the schema); stop; the message limit;
/// `env` reaching a helper and pod_logs reading it; the operator's store;
/// then the concurrent-call limit and the cancellation of a waiting call
/// (see client.py). Then the client runs inside a helper: refused another
/// member's peer slot and its parent's stop.
#[test]
fn the_python_sdk_drives_pod_mcp() {
    let python = python();
    if !available("mcp-python", python.is_some()) {
        return;
    }
    let python = python.expect("checked");
    let home = Home::new();
    home.must(&["start", "lead", "--write", ".", "--", "sleep", "600"]);
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/mcp_python/client.py");
    let run = Run::from_output(
        Command::new(&python)
            .arg(&script)
            .args([POD, &home.home.to_string_lossy(), &home.repo.to_string_lossy()])
            .output()
            .expect("run python"),
    );
    assert!(run.ok(), "the Python client failed: {run:?}");
    let seen: Value = serde_json::from_str(run.stdout.trim()).expect("one JSON object");
    assert_eq!(
        seen,
        json!({
            "server": "pod",
            "tools": [
                "pod_spawn", "pod_stop", "pod_wait", "pod_status", "pod_check", "pod_logs",
                "kv_get", "kv_set", "kv_cas", "kv_rm", "kv_list", "kv_wait",
                "lease_acquire", "lease_renew", "lease_release", "lease_list",
            ],
            "waited": { "outcomes": [{ "name": "quick", "state": "exited", "exit_code": 7 }], "timed_out": false },
            "dialects": ["https://json-schema.org/draft/2020-12/schema"],
            "spawned": { "child": "helper", "parent": "lead" },
            "helper_may_write_src": true,
            "outside": "scope.write_outside",
            "stopped": "reclaimed",
            "too_large": [-32600, "mcp.message_too_large]"],
            "children_after_stop": [],
            "logs": [["stdout", "greeting=hello from python"]],
            "reserved_env": "POD_NAME is set by the runtime itself and cannot be given [env.reserved]",
            "over_limit": "pod_spawn names 65 paths (write and read together); the limit is 64 [mcp.over_limit]",
            "kv": [{ "key": "/shared/plan", "version": 1 }, "split", "operator"],
            "layer_required": "the operator belongs to no layer: name one with --layer LEAD [kv.layer_required]",
            "concurrency": {
                "ninth": BUSY,
                "after_cancel": BUSY,
                "cancelled": "cancelled",
                "held": ["killed"],
                "held_count": 8,
            },
        })
    );

    // A helper's own session: the Python client runs as w1's workload.
    home.must(&["spawn", "w2", "--parent", "lead", "--write", "tests"]);
    let out = home.repo.join("a/member.json");
    let member = [&python.to_string_lossy(), &script.to_string_lossy(), "member", POD, &out.to_string_lossy()]
        .map(|w| w.to_string());
    let mut spawn = vec!["spawn", "w1", "--parent", "lead", "--write", "a", "--"];
    spawn.extend(member.iter().map(String::as_str));
    home.must(&spawn);
    let waited = home.pod(&["wait", "w1", "--timeout", "120"]);
    assert!(waited.ok(), "the member session failed: {waited:?}\n{}", home.pod(&["logs", "w1"]).stdout);
    let seen: Value =
        serde_json::from_str(&std::fs::read_to_string(&out).expect("the member's answers")).expect("JSON");
    assert_eq!(
        seen,
        json!({
            "own_slot": { "key": "/peer/w1/r", "version": 1 },
            "read_other": "member w1 may not read /peer/w2/x: a /peer slot is read only by its member and the layer's lead [kv.denied]",
            "write_other": "member w1 may not write /peer/w2/x: a /peer slot is written only by its member (and the lead with --override) [kv.denied]",
            "listed": ["/peer/w1/r", "/shared/plan"],
            "stop_parent": "auth.stop_denied",
        })
    );
    home.must(&["stop", "lead"]);
}
