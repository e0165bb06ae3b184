//! Tool arguments as the server takes them: each tool's fields (an unknown
//! one is refused), then the limits its schema states checked again here,
//! at the edge, because a client need not validate against the schema. A
//! limit passed is a tool error naming it (`mcp.over_limit`). Pure: nothing
//! here touches the runtime.

use std::collections::BTreeMap;

use pod_proto::WireError;
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::Value;

use crate::limits::{
    DEFAULT_LOG_LINES, DEFAULT_WAIT, MAX_COMMAND_WORDS, MAX_LEASE_TTL_SECONDS, MAX_LOG_LINES, MAX_PATH_BYTES,
    MAX_SPAWN_PATHS, MAX_WAIT, MAX_WAIT_NAMES, MAX_WORD_BYTES,
};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SpawnArgs {
    pub name: String,
    #[serde(default)]
    pub write: Vec<String>,
    #[serde(default)]
    pub read: Vec<String>,
    pub command: Option<Vec<String>>,
    /// Checked by `pod_client::env` when the spawn is built.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    pub parent: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NameArgs {
    pub name: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WaitArgs {
    pub names: Vec<String>,
    pub timeout_seconds: Option<u64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StatusArgs {
    pub name: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckArgs {
    pub path: String,
    #[serde(default)]
    pub write: bool,
    pub name: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogsArgs {
    pub name: String,
    pub tail: Option<u64>,
}

/// `kv_get`: one key of a layer.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KvGetArgs {
    pub key: String,
    pub layer: Option<String>,
}

/// `kv_set`, and `kv_cas` with `expected_version`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KvSetArgs {
    pub key: String,
    pub value: String,
    pub layer: Option<String>,
    #[serde(default, rename = "override")]
    pub overriding: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KvCasArgs {
    pub key: String,
    pub expected_version: u64,
    pub value: String,
    pub layer: Option<String>,
    #[serde(default, rename = "override")]
    pub overriding: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KvRmArgs {
    pub key: String,
    pub layer: Option<String>,
    #[serde(default, rename = "override")]
    pub overriding: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KvListArgs {
    pub pattern: String,
    pub layer: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KvWaitArgs {
    pub key: String,
    #[serde(default)]
    pub min_version: u64,
    pub timeout_seconds: Option<u64>,
    pub layer: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LeaseAcquireArgs {
    pub name: String,
    pub ttl_seconds: u64,
    pub wait_seconds: Option<u64>,
    pub layer: Option<String>,
    #[serde(default)]
    pub global: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LeaseRenewArgs {
    pub name: String,
    pub token: Option<u64>,
    pub ttl_seconds: Option<u64>,
    pub layer: Option<String>,
    #[serde(default)]
    pub global: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LeaseReleaseArgs {
    pub name: String,
    pub token: Option<u64>,
    pub layer: Option<String>,
    #[serde(default)]
    pub global: bool,
    #[serde(default, rename = "override")]
    pub overriding: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LeaseListArgs {
    pub layer: Option<String>,
    #[serde(default)]
    pub global: bool,
}

/// A store wait (`kv_wait`'s timeout, `lease_acquire`'s wait), in
/// seconds: at most [`MAX_WAIT`]. Keys, values, patterns and lease names
/// are the store's to check (its codes name each limit).
pub fn store_wait(tool: &str, what: &str, seconds: u64) -> Result<u64, WireError> {
    if seconds > MAX_WAIT.as_secs() {
        return Err(over_limit(format!("{tool}: {what} {seconds}; the limit is {}", MAX_WAIT.as_secs())));
    }
    Ok(seconds)
}

/// A lease TTL in seconds: 1 to [`MAX_LEASE_TTL_SECONDS`].
pub fn lease_ttl(tool: &str, seconds: u64) -> Result<u64, WireError> {
    if seconds == 0 {
        return Err(WireError::new(
            "mcp.bad_arguments",
            format!("{tool}: ttl_seconds 0; a lease lasts 1 second or more"),
        ));
    }
    if seconds > MAX_LEASE_TTL_SECONDS {
        return Err(over_limit(format!("{tool}: ttl_seconds {seconds}; the limit is {MAX_LEASE_TTL_SECONDS}")));
    }
    Ok(seconds)
}

/// The arguments of `tool` as `T`, refused whole if they do not fit.
pub fn parse<T: DeserializeOwned>(tool: &str, args: serde_json::Map<String, Value>) -> Result<T, WireError> {
    serde_json::from_value(Value::Object(args))
        .map_err(|e| WireError::new("mcp.bad_arguments", format!("arguments of {tool} do not fit its schema: {e}")))
}

fn over_limit(message: String) -> WireError {
    WireError::new("mcp.over_limit", message)
}

fn path_within_limit(tool: &str, path: &str) -> Result<(), WireError> {
    if path.len() > MAX_PATH_BYTES {
        return Err(over_limit(format!("{tool}: a path of {} bytes; the limit is {MAX_PATH_BYTES}", path.len())));
    }
    Ok(())
}

impl SpawnArgs {
    /// At most [`MAX_SPAWN_PATHS`] paths of at most [`MAX_PATH_BYTES`];
    /// a command of 1 to [`MAX_COMMAND_WORDS`] words of at most
    /// [`MAX_WORD_BYTES`].
    pub fn check(&self) -> Result<(), WireError> {
        let paths = self.write.len() + self.read.len();
        if paths > MAX_SPAWN_PATHS {
            return Err(over_limit(format!(
                "pod_spawn names {paths} paths (write and read together); the limit is {MAX_SPAWN_PATHS}"
            )));
        }
        for path in self.write.iter().chain(&self.read) {
            path_within_limit("pod_spawn", path)?;
        }
        if let Some(command) = &self.command {
            if command.is_empty() {
                return Err(WireError::new(
                    "mcp.bad_arguments",
                    "pod_spawn: `command` is empty; give the program and its arguments, or leave `command` out",
                ));
            }
            if command.len() > MAX_COMMAND_WORDS {
                return Err(over_limit(format!(
                    "pod_spawn: a command of {} words; the limit is {MAX_COMMAND_WORDS}",
                    command.len()
                )));
            }
            if let Some(word) = command.iter().find(|w| w.len() > MAX_WORD_BYTES) {
                return Err(over_limit(format!(
                    "pod_spawn: a command word of {} bytes; the limit is {MAX_WORD_BYTES}",
                    word.len()
                )));
            }
        }
        Ok(())
    }
}

impl WaitArgs {
    /// 1 to [`MAX_WAIT_NAMES`] names; the timeout (default
    /// [`DEFAULT_WAIT`]) at most [`MAX_WAIT`], in seconds.
    pub fn timeout_seconds(&self) -> Result<u64, WireError> {
        if self.names.is_empty() {
            return Err(WireError::new("mcp.bad_arguments", "pod_wait: `names` is empty; name the Pods to wait for"));
        }
        if self.names.len() > MAX_WAIT_NAMES {
            return Err(over_limit(format!("pod_wait: {} names; the limit is {MAX_WAIT_NAMES}", self.names.len())));
        }
        let timeout = self.timeout_seconds.unwrap_or(DEFAULT_WAIT.as_secs());
        if timeout > MAX_WAIT.as_secs() {
            return Err(over_limit(format!(
                "pod_wait: timeout_seconds {timeout}; the limit is {}",
                MAX_WAIT.as_secs()
            )));
        }
        Ok(timeout)
    }
}

impl CheckArgs {
    pub fn check(&self) -> Result<(), WireError> {
        path_within_limit("pod_check", &self.path)
    }
}

impl LogsArgs {
    /// How many of the last lines to return: 1 to [`MAX_LOG_LINES`],
    /// default [`DEFAULT_LOG_LINES`].
    pub fn tail(&self) -> Result<usize, WireError> {
        let tail = self.tail.unwrap_or(DEFAULT_LOG_LINES as u64);
        if tail == 0 {
            return Err(WireError::new("mcp.bad_arguments", "pod_logs: tail 0 asks for no lines; give 1 or more"));
        }
        if tail > MAX_LOG_LINES as u64 {
            return Err(over_limit(format!("pod_logs: tail {tail}; the limit is {MAX_LOG_LINES}")));
        }
        Ok(tail as usize)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn spawn(args: Value) -> Result<(), String> {
        let Value::Object(map) = args else { panic!("an object") };
        let a: SpawnArgs = parse("pod_spawn", map).map_err(|e| e.message)?;
        a.check().map_err(|e| format!("{} [{}]", e.message, e.code))
    }

    #[test]
    fn spawn_limits_are_refused_naming_the_limit() {
        assert_eq!(spawn(json!({ "name": "h", "write": ["a"], "read": ["b"], "command": ["true"] })), Ok(()));
        let paths: Vec<String> = (0..=MAX_SPAWN_PATHS).map(|i| format!("p{i}")).collect();
        assert_eq!(
            spawn(json!({ "name": "h", "write": paths[..32], "read": paths[32..] })),
            Err("pod_spawn names 65 paths (write and read together); the limit is 64 [mcp.over_limit]".into())
        );
        assert_eq!(
            spawn(json!({ "name": "h", "write": ["a".repeat(MAX_PATH_BYTES + 1)] })),
            Err("pod_spawn: a path of 4097 bytes; the limit is 4096 [mcp.over_limit]".into())
        );
        let words = vec!["w"; MAX_COMMAND_WORDS + 1];
        assert_eq!(
            spawn(json!({ "name": "h", "command": words })),
            Err("pod_spawn: a command of 257 words; the limit is 256 [mcp.over_limit]".into())
        );
        assert_eq!(
            spawn(json!({ "name": "h", "command": ["x".repeat(MAX_WORD_BYTES + 1)] })),
            Err("pod_spawn: a command word of 32769 bytes; the limit is 32768 [mcp.over_limit]".into())
        );
        assert_eq!(
            spawn(json!({ "name": "h", "command": [] })),
            Err("pod_spawn: `command` is empty; give the program and its arguments, or leave `command` out [mcp.bad_arguments]".into())
        );
    }

    #[test]
    fn wait_and_logs_bounds() {
        let wait = |names: usize, timeout: Option<u64>| {
            WaitArgs { names: vec!["a".into(); names], timeout_seconds: timeout }
                .timeout_seconds()
                .map_err(|e| e.message)
        };
        assert_eq!(wait(1, None), Ok(60));
        assert_eq!(wait(0, None), Err("pod_wait: `names` is empty; name the Pods to wait for".into()));
        assert_eq!(wait(65, None), Err("pod_wait: 65 names; the limit is 64".into()));
        assert_eq!(wait(1, Some(3601)), Err("pod_wait: timeout_seconds 3601; the limit is 3600".into()));
        let tail = |tail| LogsArgs { name: "a".into(), tail }.tail().map_err(|e| e.message);
        assert_eq!(tail(None), Ok(100));
        assert_eq!(tail(Some(1001)), Err("pod_logs: tail 1001; the limit is 1000".into()));
        assert_eq!(tail(Some(0)), Err("pod_logs: tail 0 asks for no lines; give 1 or more".into()));
    }

    #[test]
    fn store_waits_and_ttls_are_bounded() {
        assert_eq!(store_wait("kv_wait", "timeout_seconds", 3600).map_err(|e| e.message), Ok(3600));
        assert_eq!(
            store_wait("kv_wait", "timeout_seconds", 3601).map_err(|e| e.message),
            Err("kv_wait: timeout_seconds 3601; the limit is 3600".into())
        );
        assert_eq!(lease_ttl("lease_acquire", 86400).map_err(|e| e.message), Ok(86400));
        assert_eq!(
            lease_ttl("lease_acquire", 86401).map_err(|e| e.message),
            Err("lease_acquire: ttl_seconds 86401; the limit is 86400".into())
        );
        assert_eq!(
            lease_ttl("lease_renew", 0).map_err(|e| e.message),
            Err("lease_renew: ttl_seconds 0; a lease lasts 1 second or more".into())
        );
    }
}
