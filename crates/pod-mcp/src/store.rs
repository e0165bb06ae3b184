//! The coordination store's tools (`kv_*`, `lease_*`): each one typed call
//! of `pod_client`'s store calls. Which layer a call reaches and who the
//! caller is are not decided here: pod-client asks this process's own Pod
//! (`POD_SOCKET`) who the kernel says it is and routes by that, and the
//! lead decides the caller's standing again from the kernel. `layer` and
//! `global` only say which store is meant.

use std::time::Duration;

use pod_client::commands::kv::KvRoute;
use pod_client::Client;
use pod_proto::WireError;
use scope::PodName;
use serde_json::{json, Map, Value};

use crate::args::{
    lease_ttl, parse, store_wait, KvCasArgs, KvGetArgs, KvListArgs, KvRmArgs, KvSetArgs, KvWaitArgs, LeaseAcquireArgs,
    LeaseListArgs, LeaseReleaseArgs, LeaseRenewArgs,
};
use crate::limits::DEFAULT_KV_WAIT;
use crate::server::to_json;
use crate::tools;

fn route(layer: Option<&str>, global: bool) -> Result<KvRoute, WireError> {
    let layer = layer.map(PodName::new).transpose().map_err(|e| WireError::new(e.code(), e.to_string()))?;
    Ok(KvRoute { layer, global })
}

/// Whether `tool` is one of the store's.
pub fn is_store_tool(tool: &str) -> bool {
    tool.starts_with("kv_") || tool.starts_with("lease_")
}

/// One store tool call.
pub async fn call(client: &Client, tool: &str, args: Map<String, Value>) -> Result<Value, WireError> {
    match tool {
        tools::KV_GET => {
            let a: KvGetArgs = parse(tool, args)?;
            to_json(&client.kv_get(&route(a.layer.as_deref(), false)?, &a.key).await?)
        }
        tools::KV_SET => {
            let a: KvSetArgs = parse(tool, args)?;
            let route = route(a.layer.as_deref(), false)?;
            to_json(&client.kv_set(&route, &a.key, a.value.into_bytes(), a.overriding).await?)
        }
        tools::KV_CAS => {
            let a: KvCasArgs = parse(tool, args)?;
            let route = route(a.layer.as_deref(), false)?;
            to_json(&client.kv_cas(&route, &a.key, a.expected_version, a.value.into_bytes(), a.overriding).await?)
        }
        tools::KV_RM => {
            let a: KvRmArgs = parse(tool, args)?;
            to_json(&client.kv_rm(&route(a.layer.as_deref(), false)?, &a.key, a.overriding).await?)
        }
        tools::KV_LIST => {
            let a: KvListArgs = parse(tool, args)?;
            to_json(&client.kv_ls(&route(a.layer.as_deref(), false)?, &a.pattern).await?)
        }
        tools::KV_WAIT => {
            let a: KvWaitArgs = parse(tool, args)?;
            let seconds = store_wait(tool, "timeout_seconds", a.timeout_seconds.unwrap_or(DEFAULT_KV_WAIT.as_secs()))?;
            let route = route(a.layer.as_deref(), false)?;
            to_json(&client.kv_wait(&route, &a.key, a.min_version, Duration::from_secs(seconds)).await?)
        }
        tools::LEASE_ACQUIRE => {
            let a: LeaseAcquireArgs = parse(tool, args)?;
            let ttl = Duration::from_secs(lease_ttl(tool, a.ttl_seconds)?);
            let wait =
                a.wait_seconds.map(|w| store_wait(tool, "wait_seconds", w)).transpose()?.map(Duration::from_secs);
            to_json(&client.lease_acquire(&route(a.layer.as_deref(), a.global)?, &a.name, ttl, wait).await?)
        }
        tools::LEASE_RENEW => {
            let a: LeaseRenewArgs = parse(tool, args)?;
            let ttl = a.ttl_seconds.map(|t| lease_ttl(tool, t)).transpose()?.map(Duration::from_secs);
            to_json(&client.lease_renew(&route(a.layer.as_deref(), a.global)?, &a.name, a.token, ttl).await?)
        }
        tools::LEASE_RELEASE => {
            let a: LeaseReleaseArgs = parse(tool, args)?;
            let route = route(a.layer.as_deref(), a.global)?;
            to_json(&client.lease_release(&route, &a.name, a.token, a.overriding).await?)
        }
        tools::LEASE_LIST => {
            let a: LeaseListArgs = parse(tool, args)?;
            Ok(json!({ "leases": to_json(&client.lease_ls(&route(a.layer.as_deref(), a.global)?).await?)? }))
        }
        other => Err(WireError::new("mcp.unknown_tool", format!("no tool named {other}"))),
    }
}
