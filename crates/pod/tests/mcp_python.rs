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
        Command::new(python)
            .arg(script)
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
            "tools": ["pod_spawn", "pod_stop", "pod_wait", "pod_status", "pod_check"],
            "waited": { "outcomes": [{ "name": "quick", "state": "exited", "exit_code": 7 }], "timed_out": false },
            "dialects": ["https://json-schema.org/draft/2020-12/schema"],
            "spawned": { "child": "helper", "parent": "lead" },
            "helper_may_write_src": true,
            "outside": "scope.write_outside",
            "stopped": "reclaimed",
            "too_large": [-32600, "mcp.message_too_large]"],
            "children_after_stop": [],
        })
    );
    home.must(&["stop", "lead"]);
}
