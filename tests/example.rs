//! The example lead script (runtime/examples/lead.sh) runs as README shows:
//! the pod binary on PATH, from the repository. Its whole output is the
//! contract: two helpers with their task in the environment, both waited
//! for, their output and exit codes read, everything removed after. And
//! the MCP example (runtime/examples/mcp-agent/run.sh), as docs/agents.md
//! shows it: the stand-in lead agent's transcript is its contract. Both
//! show the level a Pod gets by default, written for a machine that
//! enforces at `full` (elsewhere they are skipped, saying so).

use pod_e2e as common;

#[test]
fn the_example_lead_script_runs() {
    if !enforced_at_full() {
        return;
    }
    let repo = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
    let bin = std::path::Path::new(common::POD).parent().expect("bin dir");
    let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap_or_default());
    let out = std::process::Command::new("sh")
        .arg("runtime/examples/lead.sh")
        .current_dir(repo)
        .env("PATH", path)
        .env_remove("POD_HOME")
        .env_remove("POD_NAME")
        .output()
        .expect("run the example");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    insta::assert_snapshot!(common::redact_numbers_after(&stdout, &["(pid ", "ABI "]));
}

#[test]
fn the_mcp_agent_example_runs() {
    if !enforced_at_full() {
        return;
    }
    let repo = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
    let out = std::process::Command::new("sh")
        .arg("runtime/examples/mcp-agent/run.sh")
        .current_dir(repo)
        .env("POD", common::POD)
        .env_remove("POD_HOME")
        .env_remove("POD_NAME")
        .env_remove("POD_SOCKET")
        .output()
        .expect("run the example");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    insta::assert_snapshot!(common::redact_numbers_after(&stdout, &["(pid ", "ABI ", "\"landlock_abi\": "]));
}

fn enforced_at_full() -> bool {
    common::available("landlock", common::default_level() == "full")
}
