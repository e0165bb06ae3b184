//! `pod mcp` and `pod mcp config`: the MCP server (crates/pod-mcp) on this
//! environment's runtime, and the snippet a client needs to start it.
//! Stdout belongs to the protocol while serving: nothing else prints there.

use std::process::ExitCode;

use pod_proto::WireError;

use crate::commands::{client, cwd, pod_name};

pub async fn serve() -> Result<ExitCode, WireError> {
    let client = client()?;
    // POD_NAME is only the default Pod of tool arguments; who is calling,
    // the Pods decide from this process's peer credentials.
    let own = match std::env::var("POD_NAME") {
        Ok(raw) if !raw.is_empty() => Some(pod_name(&raw)?),
        _ => None,
    };
    pod_mcp::serve_stdio(client, own, cwd()?).await?;
    Ok(ExitCode::SUCCESS)
}

pub fn config() -> Result<ExitCode, WireError> {
    let binary = std::env::current_exe()
        .map_err(|e| WireError::new("cli.exe", format!("cannot find this binary's path: {e}")))?;
    let home = std::env::var("POD_HOME").ok().filter(|h| !h.is_empty());
    let home = home
        .map(|h| std::path::absolute(&h).map(|p| p.to_string_lossy().into_owned()))
        .transpose()
        .map_err(|e| WireError::new("cli.pod_home", format!("cannot make POD_HOME absolute: {e}")))?;
    crate::commands::print_json(&pod_mcp::config_snippet(&binary, home.as_deref()))?;
    Ok(ExitCode::SUCCESS)
}
