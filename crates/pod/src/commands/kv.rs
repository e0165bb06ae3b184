//! `pod kv get|set|cas|rm|ls|wait` and `pod lease acquire|renew|release|ls`:
//! renderers of `pod_client`'s store calls. The exit status is the store's
//! class of the answer (`pod_client::commands::kv::exit_code`: 0 ok, 1
//! denied, 2 bad input, 3 version mismatch or lease held, 4 not found, 124
//! timed out, 69 the lead does not answer), so a refusal prints its one
//! line here and returns that status rather than the CLI's generic 2.

use std::io::{Read, Write};
use std::process::ExitCode;

use pod_client::commands::kv::exit_code;
use pod_client::{KvRoute, KvValue, Lease};
use pod_proto::WireError;

use crate::cli::{KvCommand, LayerArg, LeaseCommand, LeaseTarget};
use crate::commands::{client, pod_name, print_json};
use crate::render::local_time;

/// The most a value read from stdin may be: one byte past the store's
/// limit, so that a bigger value is refused by the store with its own code
/// (`kv.value_too_large`) and never read whole.
const STDIN_LIMIT: u64 = pod_kv::limits::MAX_VALUE_BYTES as u64 + 1;

pub async fn kv(command: KvCommand) -> Result<ExitCode, WireError> {
    let answer = match command {
        KvCommand::Get { key, layer, json } => {
            let route = route(&layer, false)?;
            client()?.kv_get(&route, &key).await.and_then(|v| print_value(&v, json.json))
        }
        KvCommand::Set { key, value, overriding, layer, json } => {
            let route = route(&layer, false)?;
            let value = read_value(&value)?;
            client()?
                .kv_set(&route, &key, value, overriding.overriding)
                .await
                .and_then(|v| print_version(&v, json.json))
        }
        KvCommand::Cas { key, expected, value, overriding, layer, json } => {
            let route = route(&layer, false)?;
            let value = read_value(&value)?;
            client()?
                .kv_cas(&route, &key, expected, value, overriding.overriding)
                .await
                .and_then(|v| print_version(&v, json.json))
        }
        KvCommand::Rm { key, overriding, layer, json } => {
            let route = route(&layer, false)?;
            client()?.kv_rm(&route, &key, overriding.overriding).await.and_then(|v| print_version(&v, json.json))
        }
        KvCommand::Ls { glob, layer, json } => {
            let route = route(&layer, false)?;
            client()?.kv_ls(&route, &glob).await.and_then(|list| {
                if json.json {
                    return print_json(&list);
                }
                for e in &list.entries {
                    println!(
                        "{}  v{}  {}  {}  {} bytes",
                        e.key,
                        e.version,
                        e.written_by,
                        local_time(e.written_at_ms),
                        e.value_bytes
                    );
                }
                if list.truncated {
                    eprintln!(
                        "pod: more keys match; the first {} are shown (narrow the pattern)",
                        pod_kv::limits::MAX_LIST
                    );
                }
                Ok(())
            })
        }
        KvCommand::Wait { key, min_version, timeout, layer, json } => {
            let route = route(&layer, false)?;
            client()?.kv_wait(&route, &key, min_version, timeout).await.and_then(|v| print_value(&v, json.json))
        }
    };
    finish(answer)
}

pub async fn lease(command: LeaseCommand) -> Result<ExitCode, WireError> {
    let answer = match command {
        LeaseCommand::Acquire { name, ttl, wait, target, json } => {
            let route = lease_route(&target)?;
            client()?.lease_acquire(&route, &name, ttl, wait).await.and_then(|l| print_lease(&l, json.json))
        }
        LeaseCommand::Renew { name, ttl, token, target, json } => {
            let route = lease_route(&target)?;
            client()?.lease_renew(&route, &name, token, ttl).await.and_then(|l| print_lease(&l, json.json))
        }
        LeaseCommand::Release { name, token, overriding, target, json } => {
            let route = lease_route(&target)?;
            client()?.lease_release(&route, &name, token, overriding.overriding).await.and_then(|r| {
                if json.json {
                    print_json(&r)
                } else {
                    println!("released {} (token {})", r.name, r.token);
                    Ok(())
                }
            })
        }
        LeaseCommand::Ls { target, json } => {
            let route = lease_route(&target)?;
            client()?.lease_ls(&route).await.and_then(|leases| {
                if json.json {
                    return print_json(&leases);
                }
                println!("{:<24} {:<24} {:>8} {:<29} {:>7}", "NAME", "HOLDER", "TOKEN", "EXPIRES", "WAITING");
                for l in &leases {
                    println!(
                        "{:<24} {:<24} {:>8} {:<29} {:>7}",
                        l.name,
                        l.holder,
                        l.token,
                        local_time(l.expires_at_ms),
                        l.waiting
                    );
                }
                Ok(())
            })
        }
    };
    finish(answer)
}

/// A refusal of the store: its one line, and the status of its class.
fn finish(answer: Result<(), WireError>) -> Result<ExitCode, WireError> {
    match answer {
        Ok(()) => Ok(ExitCode::SUCCESS),
        Err(e) => {
            eprintln!("pod: {} [{}]", e.message, e.code);
            Ok(ExitCode::from(exit_code(&e)))
        }
    }
}

fn route(layer: &LayerArg, global: bool) -> Result<KvRoute, WireError> {
    let layer = layer.layer.as_deref().map(pod_name).transpose()?;
    Ok(KvRoute { layer, global })
}

fn lease_route(target: &LeaseTarget) -> Result<KvRoute, WireError> {
    route(&target.layer, target.global)
}

/// The value argument, or stdin for `-` (read bounded, see
/// [`STDIN_LIMIT`]).
fn read_value(arg: &str) -> Result<Vec<u8>, WireError> {
    if arg != "-" {
        return Ok(arg.as_bytes().to_vec());
    }
    let mut value = Vec::new();
    std::io::stdin()
        .take(STDIN_LIMIT)
        .read_to_end(&mut value)
        .map_err(|e| WireError::new("cli.stdin", format!("cannot read the value from stdin: {e}")))?;
    Ok(value)
}

/// The value alone, byte for byte (no newline added); `--json`: the whole
/// answer.
fn print_value(value: &KvValue, json: bool) -> Result<(), WireError> {
    if json {
        return print_json(value);
    }
    let mut out = std::io::stdout().lock();
    out.write_all(&value.bytes)
        .and_then(|()| out.flush())
        .map_err(|e| WireError::new("cli.stdout", format!("cannot write the value: {e}")))
}

/// The version alone (a script's `V=$(pod kv set ...)`).
fn print_version(version: &pod_client::KvVersion, json: bool) -> Result<(), WireError> {
    if json {
        return print_json(version);
    }
    println!("{}", version.version);
    Ok(())
}

fn print_lease(lease: &Lease, json: bool) -> Result<(), WireError> {
    if json {
        return print_json(lease);
    }
    println!(
        "lease {} held by {}, token {}, expires {} (ttl {} ms)",
        lease.name,
        lease.holder,
        lease.token,
        local_time(lease.expires_at_ms),
        lease.ttl_ms
    );
    Ok(())
}
