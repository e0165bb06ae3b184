//! `pod mcp` driven by rmcp's own client over a real child process: a real
//! Pod tree, a real registry, the real `pod` binary as the server. What an
//! agent sees: the tools, their results, refusals with codes, the message
//! limit, and that identity comes from where the server runs (a server
//! inside a helper cannot stop the helper's parent).

use pod_e2e as common;

use common::*;
use rmcp::model::{CallToolRequestParams, CallToolResult};
use rmcp::service::{RunningService, ServiceError};
use rmcp::transport::TokioChildProcess;
use rmcp::{RoleClient, ServiceExt};
use serde_json::{json, Value};

type Session = RunningService<RoleClient, ()>;

async fn connect(home: &Home, pod_name: Option<&str>) -> Session {
    let mut cmd = tokio::process::Command::new(POD);
    cmd.arg("mcp").env("POD_HOME", &home.home).env_remove("POD_NAME").current_dir(&home.repo);
    if let Some(name) = pod_name {
        cmd.env("POD_NAME", name);
    }
    let transport = TokioChildProcess::new(cmd).expect("start pod mcp");
    ().serve(transport).await.expect("initialize")
}

async fn call(client: &Session, tool: &str, args: Value) -> Result<CallToolResult, ServiceError> {
    let Value::Object(map) = args else { panic!("arguments are an object") };
    client.call_tool(CallToolRequestParams::new(tool.to_string()).with_arguments(map)).await
}

/// The structured result of a call that must succeed.
async fn ok(client: &Session, tool: &str, args: Value) -> Value {
    let result = call(client, tool, args).await.expect("call answered");
    assert_eq!(result.is_error, Some(false), "{tool} failed: {result:?}");
    result.structured_content.expect("structured content")
}

/// The one line of a call refused as a tool error, and its code.
async fn refused(client: &Session, tool: &str, args: Value) -> (String, String) {
    let result = call(client, tool, args).await.expect("call answered");
    assert_eq!(result.is_error, Some(true), "{tool} was not refused: {result:?}");
    let structured = result.structured_content.expect("structured content");
    let text = result.content[0].as_text().expect("text content").text.clone();
    let code = structured["code"].as_str().expect("code").to_string();
    assert_eq!(text, format!("{} [{code}]", structured["message"].as_str().expect("message")));
    (text, code)
}

#[tokio::test]
async fn tools_are_listed_with_their_schemas() {
    let home = Home::new();
    let client = connect(&home, None).await;
    let tools = client.list_all_tools().await.expect("list tools");
    let names: Vec<&str> = tools.iter().map(|t| t.name.as_ref()).collect();
    assert_eq!(names, ["pod_spawn", "pod_stop", "pod_wait", "pod_status", "pod_check"]);
    for t in &tools {
        assert_eq!(t.input_schema["$schema"], json!("https://json-schema.org/draft/2020-12/schema"), "{}", t.name);
        assert_eq!(t.input_schema["additionalProperties"], json!(false), "{}", t.name);
        assert!(t.description.as_ref().is_some_and(|d| d.len() > 100), "{} needs a description", t.name);
    }
    client.cancel().await.expect("close");
}

#[tokio::test]
async fn a_lead_spawns_checks_and_stops_a_helper() {
    let home = Home::new();
    home.must(&["start", "lead", "--write", ".", "--", "sleep", "600"]);
    let client = connect(&home, Some("lead")).await;

    let spawned =
        ok(&client, "pod_spawn", json!({ "name": "helper", "write": ["src"], "command": ["sleep", "600"] })).await;
    assert_eq!(spawned["child"], json!("helper"));
    assert_eq!(spawned["parent"], json!("lead"));

    let status = ok(&client, "pod_status", json!({})).await;
    let lead = &status["pods"][0];
    assert_eq!((lead["name"].clone(), lead["children"][0]["name"].clone()), (json!("lead"), json!("helper")));
    assert_eq!(lead["children"][0]["write"], json!([format!("{}/**", home.path("src"))]));

    let mine = ok(&client, "pod_check", json!({ "path": "src/main.rs", "write": true })).await;
    assert_eq!(mine["allowed"], json!(false), "delegated: the lead lost write on src while the helper runs");
    let theirs = ok(&client, "pod_check", json!({ "name": "helper", "path": "src/main.rs", "write": true })).await;
    assert_eq!(theirs["allowed"], json!(true));

    let stopped = ok(&client, "pod_stop", json!({ "name": "helper" })).await;
    assert_eq!(stopped, json!({ "outcome": "reclaimed", "name": "helper", "parent": "lead" }));
    let back = ok(&client, "pod_check", json!({ "path": "src/main.rs", "write": true })).await;
    assert_eq!(back["allowed"], json!(true));
    client.cancel().await.expect("close");
    home.must(&["stop", "lead"]);
}

#[tokio::test]
async fn refusals_are_tool_errors_with_codes() {
    let home = Home::new();
    home.must(&["start", "lead", "--write", "src", "--", "sleep", "600"]);
    let client = connect(&home, Some("lead")).await;
    let (text, code) = refused(&client, "pod_spawn", json!({ "name": "helper", "write": ["docs"] })).await;
    assert_eq!(
        home.redact(&text),
        "cannot delegate write [repo]/docs/**: it is not inside any write rule of the parent's base scope [scope.write_outside]"
    );
    assert_eq!(code, "scope.write_outside");
    let (text, code) = refused(&client, "pod_spawn", json!({ "name": "helper", "colour": "red" })).await;
    assert_eq!(
        text,
        "arguments of pod_spawn do not fit its schema: unknown field `colour`, expected one of `name`, `write`, `read`, `command`, `parent` [mcp.bad_arguments]"
    );
    assert_eq!(code, "mcp.bad_arguments");
    client.cancel().await.expect("close");
    home.must(&["stop", "lead"]);
}

#[tokio::test]
async fn a_request_over_the_message_limit_is_refused_and_the_server_goes_on() {
    let home = Home::new();
    let client = connect(&home, None).await;
    let huge = "a".repeat(pod_mcp_limit() + 1);
    let err = call(&client, "pod_check", json!({ "name": "x", "path": huge })).await.expect_err("refused");
    let ServiceError::McpError(data) = err else { panic!("expected a JSON-RPC error, got {err:?}") };
    assert_eq!(data.code.0, -32600);
    let len = data.message.split(' ').nth(2).expect("length").to_string();
    assert_eq!(
        data.message,
        format!("request of {len} bytes is over the limit of 1048576 bytes per message; send less (fewer or shorter arguments) [mcp.message_too_large]")
    );
    // The next request is served as usual.
    let tools = client.list_all_tools().await.expect("list tools after the refusal");
    assert_eq!(tools.len(), 5);
    client.cancel().await.expect("close");
}

fn pod_mcp_limit() -> usize {
    1024 * 1024
}

/// A server started inside a helper's workload speaks as the helper: its
/// parent is not below it, so it may not stop it. The helper's workload is
/// a script that talks to `pod mcp` itself and keeps the answer.
#[tokio::test]
async fn a_server_inside_a_helper_cannot_stop_the_helpers_parent() {
    let home = Home::new();
    home.must(&["start", "lead", "--write", ".", "--", "sleep", "600"]);
    let out = home.repo.join("src/answers.jsonl");
    let script = home.repo.join("src/agent.sh");
    let messages = [
        json!({"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"script","version":"0"}}}),
        json!({"jsonrpc":"2.0","method":"notifications/initialized"}),
        json!({"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"pod_stop","arguments":{"name":"lead"}}}),
    ];
    let lines: Vec<String> = messages.iter().map(|m| format!("'{m}'")).collect();
    // The script keeps stdin open until the answer to id 2 is in, then
    // moves the answers where the test looks.
    let part = format!("{}.part", out.display());
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\n{{ printf '%s\\n' {}; while ! grep -q '\"id\":2' {part}; do sleep 0.05; done; }} | {POD} mcp > {part}\nmv {part} {out}\nexec sleep 600\n",
            lines.join(" "),
            out = out.display(),
        ),
    )
    .expect("script");
    std::fs::write(&part, "").expect("part file");
    home.must(&["spawn", "helper", "--parent", "lead", "--write", "src", "--", "sh", &script.to_string_lossy()]);
    wait_until("the helper's server answered", || out.exists());
    let answers = std::fs::read_to_string(&out).expect("answers");
    let answer: Value = answers
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|m| m["id"] == json!(2))
        .expect("the answer to pod_stop");
    assert_eq!(answer["result"]["isError"], json!(true), "{answer}");
    let text = answer["result"]["content"][0]["text"].as_str().expect("text");
    assert_eq!(
        home.redact(text),
        "process [n] runs in pod helper's tree; it may stop helper and its descendants only, and lead is not one [auth.stop_denied]"
    );
    assert_eq!(answer["result"]["structuredContent"]["code"], json!("auth.stop_denied"));
    assert_eq!(
        home.json(&["ls", "--json"]).as_array().map(|a| a.iter().filter(|p| p["state"] == json!("running")).count()),
        Some(2)
    );
    home.must(&["stop", "lead"]);
}

/// Sends a `tools/call` and returns once it is on the wire, unanswered.
async fn send(client: &Session, tool: &str) -> rmcp::service::RequestHandle<RoleClient> {
    send_with(client, tool, json!({})).await
}

async fn send_with(client: &Session, tool: &str, args: Value) -> rmcp::service::RequestHandle<RoleClient> {
    let Value::Object(map) = args else { panic!("arguments are an object") };
    let request = rmcp::model::ClientRequest::CallToolRequest(rmcp::model::Request::new(
        CallToolRequestParams::new(tool.to_string()).with_arguments(map),
    ));
    client
        .peer()
        .send_cancellable_request(request, rmcp::service::PeerRequestOptions::no_options())
        .await
        .expect("sent")
}

/// The hold: the registry daemon is frozen (SIGSTOP), so every pod_status
/// call waits on it. Eight calls fill the server; the ninth is refused at
/// once; a cancelled call gives its place up (the next one is admitted and
/// the one after refused again); once the registry runs again the calls
/// still held are answered.
#[tokio::test]
async fn calls_past_the_cap_are_refused_and_a_cancelled_call_gives_its_place_up() {
    use rustix::process::Signal;
    let home = Home::new();
    home.must(&["registry", "ls"]);
    let registry = home.registry_pid().expect("the registry daemon runs");
    let client = connect(&home, None).await;
    signal(registry, Signal::STOP);
    let mut held = Vec::new();
    for _ in 0..8 {
        held.push(send(&client, "pod_status").await);
    }
    let busy = "8 tool calls are already running; wait for one to finish and try again [mcp.busy]";
    let (text, _) = refused(&client, "pod_status", json!({})).await;
    assert_eq!(text, busy);

    let cancelled = held.pop().expect("a held call");
    cancelled.cancel(Some("the test gives up".to_string())).await.expect("cancel sent");
    held.push(send(&client, "pod_status").await);
    let (text, _) = refused(&client, "pod_status", json!({})).await;
    assert_eq!(text, busy);

    signal(registry, Signal::CONT);
    for call in held {
        let answer = call.await_response().await.expect("answered once the registry runs");
        let rmcp::model::ServerResult::CallToolResult(result) = answer else {
            panic!("expected a tool result: {answer:?}")
        };
        assert_eq!(result.structured_content, Some(json!({ "pods": [] })));
    }
    client.cancel().await.expect("close");
}

#[tokio::test]
async fn a_lead_waits_for_a_helper_and_reads_its_exit_code() {
    let home = Home::new();
    home.must(&["start", "lead", "--write", ".", "--", "sleep", "600"]);
    let client = connect(&home, Some("lead")).await;
    ok(&client, "pod_spawn", json!({ "name": "helper", "write": ["src"], "command": ["sh", "-c", "exit 3"] })).await;
    let waited = ok(&client, "pod_wait", json!({ "names": ["helper"], "timeout_seconds": 30 })).await;
    assert_eq!(
        waited,
        json!({ "outcomes": [{ "name": "helper", "state": "exited", "exit_code": 3 }], "timed_out": false })
    );
    client.cancel().await.expect("close");
    home.must(&["stop", "lead"]);
}

/// A waiting call that the client cancels gives its place up: after it,
/// eight more waits are admitted and the ninth is refused; stopping the
/// helper answers the eight.
#[tokio::test]
async fn a_cancelled_wait_gives_its_place_up() {
    let home = Home::new();
    home.must(&["start", "lead", "--write", ".", "--", "sleep", "600"]);
    let client = connect(&home, Some("lead")).await;
    ok(&client, "pod_spawn", json!({ "name": "helper", "write": ["src"], "command": ["sleep", "600"] })).await;
    let wait = json!({ "names": ["helper"], "timeout_seconds": 600 });
    let first = send_with(&client, "pod_wait", wait.clone()).await;
    first.cancel(Some("the lead changed its mind".to_string())).await.expect("cancel sent");
    let mut held = Vec::new();
    for _ in 0..8 {
        held.push(send_with(&client, "pod_wait", wait.clone()).await);
    }
    let (text, _) = refused(&client, "pod_status", json!({})).await;
    assert_eq!(text, "8 tool calls are already running; wait for one to finish and try again [mcp.busy]");
    home.must(&["stop", "helper"]);
    for call in held {
        let answer = call.await_response().await.expect("answered once the helper stopped");
        let rmcp::model::ServerResult::CallToolResult(result) = answer else {
            panic!("expected a tool result: {answer:?}")
        };
        let outcome = &result.structured_content.expect("structured")["outcomes"][0];
        assert_eq!(outcome["name"], json!("helper"));
        assert_eq!(outcome["state"], json!("killed"), "{outcome}");
    }
    client.cancel().await.expect("close");
    home.must(&["stop", "lead"]);
}
