//! `pod mcp config`: the snippet an MCP client needs to start this server.
//! MCP clients pass a server only a few variables of their own
//! environment, so what the server needs to find its runtime (`POD_HOME`
//! when set) is written into `env`; the binary's path is absolute.

use std::path::Path;

use serde_json::{json, Map, Value};

/// `{"mcpServers": {"pod": {"command": ..., "args": ["mcp"], "env": {...}}}}`.
pub fn config_snippet(binary: &Path, pod_home: Option<&str>) -> Value {
    let mut env = Map::new();
    if let Some(home) = pod_home {
        env.insert("POD_HOME".to_string(), Value::String(home.to_string()));
    }
    json!({
        "mcpServers": {
            "pod": { "command": binary.to_string_lossy(), "args": ["mcp"], "env": env }
        }
    })
}
