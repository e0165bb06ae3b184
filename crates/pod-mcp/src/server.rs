//! The rmcp handler: each tool call becomes one typed call of
//! `pod_client::Client`, its result structured JSON, a refusal a tool
//! error with the runtime's stable code and one line. The Pod that answers
//! decides from this process's peer credentials who is asking: the server
//! has the rights of the Pod whose workload tree it runs in (outside every
//! Pod, the operator's), never those a tool argument names.
//!
//! Bounds: at most [`MAX_CONCURRENT_CALLS`] calls at once (one past it is
//! refused, `mcp.busy`), each given up after [`CALL_TIMEOUT`]
//! (`mcp.timeout`; `pod_wait`, `kv_wait` and `lease_acquire` after their
//! own timeout, at most [`MAX_WAIT`]) or as soon as the client cancels it (rmcp then sends no
//! answer, as MCP asks).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use pod_client::{Client, SpawnSpec};
use pod_proto::WireError;
use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, ContentBlock, Implementation, ListToolsResult,
    PaginatedRequestParams, ServerCapabilities, ServerConfig, Tool,
};
use rmcp::service::RequestContext;
use rmcp::{ErrorData as McpError, RoleServer, ServerHandler, ServiceExt};
use scope::{Permission, PodName, ScopeRule};
use serde_json::{json, Value};
use tokio::sync::Semaphore;
use tracing::Instrument;

use crate::args::{parse, CheckArgs, LogsArgs, NameArgs, SpawnArgs, StatusArgs, WaitArgs};
use crate::limits::{CALL_TIMEOUT, MAX_CONCURRENT_CALLS, MAX_WAIT};
use crate::{logs, tools};

/// What the server knows of where it runs: the runtime's directories, the
/// Pod it runs in (`POD_NAME`, only a default for tool arguments: the Pods
/// asked decide identity themselves) and the directory relative paths are
/// joined to.
pub struct PodTools {
    client: Client,
    own: Option<PodName>,
    cwd: PathBuf,
    calls: Arc<Semaphore>,
    tools: Vec<Tool>,
}

fn pod_name(raw: &str) -> Result<PodName, WireError> {
    PodName::new(raw).map_err(|e| WireError::new(e.code(), e.to_string()))
}

pub(crate) fn to_json<T: serde::Serialize>(value: &T) -> Result<Value, WireError> {
    serde_json::to_value(value).map_err(|e| WireError::new("mcp.json", e.to_string()))
}

impl PodTools {
    pub fn new(client: Client, own: Option<PodName>, cwd: PathBuf) -> PodTools {
        PodTools { client, own, cwd, calls: Arc::new(Semaphore::new(MAX_CONCURRENT_CALLS)), tools: tools::all() }
    }

    /// The Pod a call is about: the one named, else this server's own.
    fn target(&self, named: Option<&str>, tool: &str) -> Result<PodName, WireError> {
        match named {
            Some(raw) => pod_name(raw),
            None => self.own.clone().ok_or_else(|| {
                WireError::new(
                    "mcp.no_pod",
                    format!("{tool} needs `name` (or `parent`) here: this server runs outside every Pod (POD_NAME is not set)"),
                )
            }),
        }
    }

    /// A path argument made absolute against the server's directory,
    /// symlinks resolved; a trailing `/*` asks for a non-recursive rule.
    fn rule(&self, raw: &str, permission: Permission) -> Result<ScopeRule, WireError> {
        let (text, recursive) = match raw.strip_suffix("/*") {
            Some(dir) => (if dir.is_empty() { "/" } else { dir }, false),
            None => (raw, true),
        };
        let target = self.resolve(text)?;
        Ok(ScopeRule::new(target, permission, recursive))
    }

    fn resolve(&self, raw: &str) -> Result<scope::ScopePath, WireError> {
        if raw.is_empty() {
            return Err(WireError::new(
                "path.empty",
                "an empty path names no file; write `.` for the current directory",
            ));
        }
        scope::resolve(&self.cwd.join(Path::new(raw))).map_err(|e| WireError::new(e.code(), e.to_string()))
    }

    async fn dispatch(&self, tool: &str, args: serde_json::Map<String, Value>) -> Result<Value, WireError> {
        if crate::store::is_store_tool(tool) {
            return crate::store::call(&self.client, tool, args).await;
        }
        match tool {
            tools::SPAWN => {
                let a: SpawnArgs = parse(tool, args)?;
                a.check()?;
                let parent = self.target(a.parent.as_deref(), tool)?;
                let mut rules = Vec::with_capacity(a.write.len() + a.read.len());
                for p in &a.write {
                    rules.push(self.rule(p, Permission::Write)?);
                }
                for p in &a.read {
                    rules.push(self.rule(p, Permission::Read)?);
                }
                let spec = SpawnSpec {
                    parent,
                    child: pod_name(&a.name)?,
                    rules,
                    workload: a.command,
                    cwd: Some(self.cwd.to_string_lossy().into_owned()),
                    env: pod_client::env::check_env(a.env.into_iter().collect())?,
                    limits: Default::default(),
                    enforce: pod_client::protocol::EnforceRequest::default(),
                };
                to_json(&self.client.spawn(spec).await?)
            }
            tools::STOP => {
                let a: NameArgs = parse(tool, args)?;
                to_json(&self.client.stop(&pod_name(&a.name)?, pod_client::protocol::StopGrace::default()).await?)
            }
            tools::WAIT => {
                let a: WaitArgs = parse(tool, args)?;
                let timeout = Duration::from_secs(a.timeout_seconds()?);
                let names = a.names.iter().map(|n| pod_name(n)).collect::<Result<Vec<_>, _>>()?;
                to_json(&self.client.wait(&names, Some(timeout)).await?)
            }
            tools::STATUS => {
                let a: StatusArgs = parse(tool, args)?;
                let under = match a.name.as_deref() {
                    Some(raw) => Some(pod_name(raw)?),
                    None => self.own.clone(),
                };
                Ok(json!({ "pods": to_json(&self.client.tree(under.as_ref()).await?)? }))
            }
            tools::CHECK => {
                let a: CheckArgs = parse(tool, args)?;
                a.check()?;
                let name = self.target(a.name.as_deref(), tool)?;
                let path = self.resolve(&a.path)?;
                let wanted = if a.write { Permission::Write } else { Permission::Read };
                to_json(&self.client.check(&name, path, wanted).await?)
            }
            tools::LOGS => {
                let a: LogsArgs = parse(tool, args)?;
                let tail = a.tail()?;
                let name = pod_name(&a.name)?;
                // All there is (two files of at most 4 MiB each), cut below.
                let (lines, _) = self.client.logs(&name, None).await?;
                Ok(logs::newest(name.as_str(), lines, tail))
            }
            other => Err(WireError::new("mcp.unknown_tool", format!("no tool named {other}"))),
        }
    }
}

/// A refusal as a tool error: one line (`what went wrong [code]`) for the
/// model, and `{code, message}` as structured content for programs.
pub fn refusal(e: &WireError) -> CallToolResult {
    let mut result = CallToolResult::structured_error(json!({ "code": e.code, "message": e.message }));
    result.content = vec![ContentBlock::text(format!("{} [{}]", e.message, e.code))];
    result
}

impl ServerHandler for PodTools {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
            .with_server_info(Implementation::new("pod", env!("CARGO_PKG_VERSION")))
            .with_instructions(
                "Tools of the Pod runtime. You run inside a Pod: a process tree with a filesystem scope. \
                 Hand work to helpers with pod_spawn (each gets part of your write scope), wait for them with pod_wait, \
                 read what they wrote with pod_logs, see them with pod_status, stop them with pod_stop, \
                 and ask what a Pod may touch with pod_check. Coordinate with your lead and fellow helpers through the store: \
                 kv_* (task lists in /shared, each helper's result in its /peer slot, kv_cas to claim, kv_wait to wait) and lease_* (mutual exclusion). Refusals carry a stable code in brackets.",
            )
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, McpError> {
        Ok(ListToolsResult::with_all_items(self.tools.clone()))
    }

    fn get_tool(&self, name: &str) -> Option<Tool> {
        self.tools.iter().find(|t| t.name == name).cloned()
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, McpError> {
        if !self.tools.iter().any(|t| t.name == request.name) {
            return Err(McpError::invalid_params(format!("no tool named {}", request.name), None));
        }
        let Ok(_permit) = self.calls.clone().try_acquire_owned() else {
            let busy = WireError::new(
                "mcp.busy",
                format!("{MAX_CONCURRENT_CALLS} tool calls are already running; wait for one to finish and try again"),
            );
            return Ok(refusal(&busy).into());
        };
        // A waiting call has a timeout of its own; the call's bound is past it.
        let waits = tools::WAITING.contains(&request.name.as_ref());
        let limit = if waits { MAX_WAIT + CALL_TIMEOUT } else { CALL_TIMEOUT };
        let span = tracing::info_span!("tool", name = %request.name);
        let work = self.dispatch(&request.name, request.arguments.unwrap_or_default()).instrument(span);
        let outcome = tokio::select! {
            _ = context.ct.cancelled() => {
                Err(WireError::new("mcp.cancelled", "the client cancelled this call"))
            }
            done = tokio::time::timeout(limit, work) => done.unwrap_or_else(|_| {
                Err(WireError::new("mcp.timeout", format!("the call did not finish within {limit:?}")))
            }),
        };
        let result = match outcome {
            Ok(value) => CallToolResult::structured(value),
            Err(e) => {
                tracing::info!(code = %e.code, message = %e.message, "tool refused");
                refusal(&e)
            }
        };
        Ok(result.into())
    }
}

/// Serves the tools on stdin/stdout until the client closes stdin.
pub async fn serve_stdio(client: Client, own: Option<PodName>, cwd: PathBuf) -> Result<(), WireError> {
    let io = |e: std::io::Error| WireError::new("mcp.io", format!("stdio failed: {e}"));
    let (server_side, relay_side) = tokio::io::duplex(64 * 1024);
    let (from_server, to_server) = tokio::io::split(relay_side);
    let relay = tokio::spawn(crate::framing::relay(tokio::io::stdin(), tokio::io::stdout(), from_server, to_server));
    let running = PodTools::new(client, own, cwd)
        .serve(server_side)
        .await
        .map_err(|e| WireError::new("mcp.initialize", format!("the client's initialization failed: {e}")))?;
    let quit = running.waiting().await.map_err(|e| WireError::new("mcp.server", e.to_string()))?;
    tracing::info!(?quit, "client gone");
    relay.await.map_err(|e| WireError::new("mcp.server", e.to_string()))?.map_err(io)
}
