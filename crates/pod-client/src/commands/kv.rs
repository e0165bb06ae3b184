//! `kv` and `lease`: the coordination store of a layer, one typed call per
//! operation (`kv_get`, `kv_set`, ..., `lease_acquire`, ...), each
//! answering a typed result or a `WireError` with the store's stable code
//! (`pod_kv::CODES`; [`exit_code`] turns it into the CLI's exit status).
//!
//! Routing: the caller asks its own Pod (`POD_SOCKET`, when it runs in a
//! workload) who the kernel says it is (`Whoami`), then
//! `pod_kv::address` picks the lead whose socket the call goes to. Outside
//! every Pod the caller is the operator, which names the layer. Nothing
//! here decides a right: a lie about the socket only misroutes the liar,
//! and the lead decides the caller's standing again from the kernel.

use std::path::{Path, PathBuf};
use std::time::Duration;

use pod_kv::store::RequestId;
use pod_kv::{Asker, Expect, KvError, LeaseView, Lineage, Listing, Op, Outcome, Reach, Route};
use pod_proto::{ProtoError, WireError};
use scope::PodName;
use serde::Serialize;

use crate::commands::Client;
use crate::pod::{unexpected, PodClient};
use crate::protocol::{PodReply, PodRequest, Whoami};

/// Added to a wait's own timeout for the whole exchange: the lead answers
/// a wait that timed out itself, so the connection's limit only catches a
/// lead that stopped answering.
const WAIT_MARGIN: Duration = Duration::from_secs(30);

/// Which store a call goes to: `--layer LEAD` and `--global` (leases).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KvRoute {
    pub layer: Option<PodName>,
    pub global: bool,
}

/// A value as `get` and `wait` return it. In JSON the value is `value`
/// when it is UTF-8, else `value_hex`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct KvValue {
    pub key: String,
    #[serde(skip)]
    pub bytes: Vec<u8>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub value_hex: Option<String>,
    pub version: u64,
    pub written_by: String,
    /// RFC 3339, UTC.
    pub written_at: String,
    pub written_at_ms: u64,
}

/// The answer to `set`, `cas` (the new version) and `rm` (the version the
/// key had).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct KvVersion {
    pub key: String,
    pub version: u64,
}

/// One key of a list answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct KvListed {
    pub key: String,
    pub version: u64,
    pub written_by: String,
    pub written_at: String,
    pub written_at_ms: u64,
    pub value_bytes: usize,
}

/// A list answer: the first keys the caller may read, in key order, and
/// whether more such keys match.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct KvList {
    pub entries: Vec<KvListed>,
    pub truncated: bool,
}

/// A lease grant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Lease {
    pub name: String,
    /// The fencing token (also the grant's id).
    pub token: u64,
    pub holder: String,
    pub ttl_ms: u64,
    /// RFC 3339, UTC.
    pub expires_at: String,
    pub expires_at_ms: u64,
    pub remaining_ms: u64,
    pub waiting: usize,
}

/// The answer to `release`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Released {
    pub name: String,
    pub token: u64,
}

/// The exit status of `pod kv` / `pod lease` for a refusal: the store's
/// class of the code (`pod_kv::Kind::exit_code`); 2 for the command line's
/// own bad input (`cli.*`); 69 (unavailable) for everything else: the lead
/// not running or not answering.
pub fn exit_code(error: &WireError) -> u8 {
    match pod_kv::Kind::of_code(&error.code) {
        Some(kind) => kind.exit_code(),
        None if error.code.starts_with("cli.") => pod_kv::Kind::BadInput.exit_code(),
        None => pod_kv::Kind::Unavailable.exit_code(),
    }
}

fn wire(e: &KvError) -> WireError {
    WireError::new(e.code(), e.to_string())
}

fn rfc3339(ms: u64) -> String {
    let ms = i64::try_from(ms).unwrap_or(i64::MAX);
    jiff::Timestamp::from_millisecond(ms).map(|t| t.to_string()).unwrap_or_else(|_| ms.to_string())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl From<pod_kv::Found> for KvValue {
    fn from(f: pod_kv::Found) -> KvValue {
        let (value, value_hex) = match String::from_utf8(f.value.clone()) {
            Ok(text) => (Some(text), None),
            Err(_) => (None, Some(hex(&f.value))),
        };
        KvValue {
            key: f.key.to_string(),
            bytes: f.value,
            value,
            value_hex,
            version: f.version,
            written_by: f.written_by.to_string(),
            written_at: rfc3339(f.written_at_ms),
            written_at_ms: f.written_at_ms,
        }
    }
}

impl From<Listing> for KvList {
    fn from(l: Listing) -> KvList {
        let entries = l
            .entries
            .into_iter()
            .map(|e| KvListed {
                key: e.key.to_string(),
                version: e.version,
                written_by: e.written_by.to_string(),
                written_at: rfc3339(e.written_at_ms),
                written_at_ms: e.written_at_ms,
                value_bytes: e.value_bytes,
            })
            .collect();
        KvList { entries, truncated: l.truncated }
    }
}

impl From<LeaseView> for Lease {
    fn from(v: LeaseView) -> Lease {
        Lease {
            name: v.name.to_string(),
            token: v.token,
            holder: v.holder.to_string(),
            ttl_ms: v.ttl_ms,
            expires_at: rfc3339(v.expires_at_ms),
            expires_at_ms: v.expires_at_ms,
            remaining_ms: v.remaining_ms,
            waiting: v.waiting,
        }
    }
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

impl Client {
    /// Who the kernel says this process is: its own Pod's answer (the Pod
    /// whose socket `POD_SOCKET` names), or the operator outside every Pod.
    pub async fn whoami(&self) -> Result<Whoami, WireError> {
        let Some(socket) = self.own_socket() else { return Ok(Whoami::Operator) };
        match PodClient::call_at(&socket.to_string_lossy(), &PodRequest::Whoami).await? {
            PodReply::Whoami(who) => Ok(who),
            other => Err(unexpected(&other)),
        }
    }

    /// `pod kv get KEY`.
    pub async fn kv_get(&self, route: &KvRoute, key: &str) -> Result<KvValue, WireError> {
        match self.kv_call(route, Op::Get { key: key.into() }, None).await? {
            Outcome::Found(found) => Ok(found.into()),
            other => Err(unexpected_outcome(&other)),
        }
    }

    /// `pod kv set KEY VALUE`: the new version. `overriding`: the lead's
    /// (and the operator's) write of a member's slot.
    pub async fn kv_set(
        &self,
        route: &KvRoute,
        key: &str,
        value: Vec<u8>,
        overriding: bool,
    ) -> Result<KvVersion, WireError> {
        self.write(route, Op::Set { key: key.into(), value, expect: Expect::Any, overriding }).await
    }

    /// `pod kv cas KEY EXPECTED VALUE`: written only if the key is at
    /// version `expected` (0: absent), else `kv.version_mismatch`.
    pub async fn kv_cas(
        &self,
        route: &KvRoute,
        key: &str,
        expected: u64,
        value: Vec<u8>,
        overriding: bool,
    ) -> Result<KvVersion, WireError> {
        self.write(route, Op::Set { key: key.into(), value, expect: Expect::Version(expected), overriding }).await
    }

    async fn write(&self, route: &KvRoute, op: Op) -> Result<KvVersion, WireError> {
        match self.kv_call(route, op, None).await? {
            Outcome::Written { key, version } => Ok(KvVersion { key: key.to_string(), version }),
            other => Err(unexpected_outcome(&other)),
        }
    }

    /// `pod kv rm KEY`: the version the key had.
    pub async fn kv_rm(&self, route: &KvRoute, key: &str, overriding: bool) -> Result<KvVersion, WireError> {
        match self.kv_call(route, Op::Delete { key: key.into(), overriding }, None).await? {
            Outcome::Deleted { key, version } => Ok(KvVersion { key: key.to_string(), version }),
            other => Err(unexpected_outcome(&other)),
        }
    }

    /// `pod kv ls GLOB`.
    pub async fn kv_ls(&self, route: &KvRoute, pattern: &str) -> Result<KvList, WireError> {
        match self.kv_call(route, Op::List { pattern: pattern.into() }, None).await? {
            Outcome::Listed(listing) => Ok(listing.into()),
            other => Err(unexpected_outcome(&other)),
        }
    }

    /// `pod kv wait KEY`: the value once the key is at `min_version` or
    /// later (0: once it exists), or `kv.timed_out` after `timeout`.
    pub async fn kv_wait(
        &self,
        route: &KvRoute,
        key: &str,
        min_version: u64,
        timeout: Duration,
    ) -> Result<KvValue, WireError> {
        let op = Op::Wait { key: key.into(), min_version, timeout_ms: ms(timeout) };
        match self.kv_call(route, op, Some(timeout)).await? {
            Outcome::Found(found) => Ok(found.into()),
            other => Err(unexpected_outcome(&other)),
        }
    }

    /// `pod lease acquire NAME --ttl T [--wait W]`: the grant, or
    /// `kv.lease_held` (without `wait`), or `kv.timed_out`.
    pub async fn lease_acquire(
        &self,
        route: &KvRoute,
        name: &str,
        ttl: Duration,
        wait: Option<Duration>,
    ) -> Result<Lease, WireError> {
        let op = Op::Acquire { name: name.into(), ttl_ms: ms(ttl), wait_ms: wait.map(ms) };
        match self.kv_call(route, op, wait).await? {
            Outcome::Granted(view) => Ok(view.into()),
            other => Err(unexpected_outcome(&other)),
        }
    }

    /// `pod lease renew NAME`: the grant with its new deadline. `token`:
    /// only that grant; `ttl`: a new TTL (default: the grant's own).
    pub async fn lease_renew(
        &self,
        route: &KvRoute,
        name: &str,
        token: Option<u64>,
        ttl: Option<Duration>,
    ) -> Result<Lease, WireError> {
        let op = Op::Renew { name: name.into(), token, ttl_ms: ttl.map(ms) };
        match self.kv_call(route, op, None).await? {
            Outcome::Renewed(view) => Ok(view.into()),
            other => Err(unexpected_outcome(&other)),
        }
    }

    /// `pod lease release NAME`. `overriding`: the lead's (and the
    /// operator's) release of another holder's lease.
    pub async fn lease_release(
        &self,
        route: &KvRoute,
        name: &str,
        token: Option<u64>,
        overriding: bool,
    ) -> Result<Released, WireError> {
        match self.kv_call(route, Op::Release { name: name.into(), token, overriding }, None).await? {
            Outcome::Released { name, token } => Ok(Released { name: name.to_string(), token }),
            other => Err(unexpected_outcome(&other)),
        }
    }

    /// `pod lease ls`: every live grant of the layer (or, `global`, of the
    /// tree).
    pub async fn lease_ls(&self, route: &KvRoute) -> Result<Vec<Lease>, WireError> {
        match self.kv_call(route, Op::Leases, None).await? {
            Outcome::Leases(views) => Ok(views.into_iter().map(Lease::from).collect()),
            other => Err(unexpected_outcome(&other)),
        }
    }

    /// The lead a call of `route` goes to (see the module comment).
    pub async fn kv_lead(&self, route: &KvRoute) -> Result<PodName, WireError> {
        let asker = match self.whoami().await? {
            Whoami::Operator => Asker::Operator,
            Whoami::Pod { name, parent, root } => Asker::Pod(Lineage { name, parent, root }),
        };
        let reach = if route.global { Reach::Tree } else { Reach::Layer };
        let named_root = match (&route.layer, reach) {
            (Some(named), Reach::Tree) => self.root_of(named).await?,
            _ => None,
        };
        pod_kv::address(&asker, &Route { layer: route.layer.clone(), reach }, named_root.as_ref()).map_err(|e| wire(&e))
    }

    /// The root of `name`'s tree, as the registry records it (`None`: no
    /// such Pod).
    async fn root_of(&self, name: &PodName) -> Result<Option<PodName>, WireError> {
        let mut registry = self.registry().await?;
        let Some(mut record) = registry.get(name).await? else { return Ok(None) };
        let mut current = name.clone();
        for _ in 0..scope::limits::MAX_LAYERS {
            let Some(parent) = record.parent.clone() else { break };
            match registry.get(&parent).await? {
                Some(next) => {
                    current = parent;
                    record = next;
                }
                None => break,
            }
        }
        Ok(Some(current))
    }

    /// One store call at the lead `route` names. `waits`: how long the lead
    /// may hold the call before it answers (a wait's own timeout).
    ///
    /// A mutation that does not wait carries a request id of its own (a
    /// client id drawn for this call, seq 1): if its answer is lost (the
    /// connection broke after it was sent), it is sent again with the
    /// same id, at most [`MAX_ATTEMPTS`] times in all, and the lead answers
    /// a repeat from its record of the first (a set is not written twice).
    async fn kv_call(&self, route: &KvRoute, op: Op, waits: Option<Duration>) -> Result<Outcome, WireError> {
        let lead = self.kv_lead(route).await?;
        let reach = if route.global { Reach::Tree } else { Reach::Layer };
        let paths = self.paths(&lead);
        let socket = paths.socket();
        let id = if repeatable(&op) { Some(RequestId { client: draw_client_id()?, seq: 1 }) } else { None };
        let request = PodRequest::Kv { reach, op, id };
        let mut attempt = 1;
        let answer = loop {
            let answer = async {
                let mut client = PodClient::connect(&socket).await?;
                if let Some(waits) = waits {
                    client.set_call_limit(waits.saturating_add(WAIT_MARGIN));
                }
                client.call(&request).await
            };
            match answer.await {
                Err(ProtoError::Closed | ProtoError::Io(_) | ProtoError::Truncated { .. })
                    if id.is_some() && attempt < MAX_ATTEMPTS =>
                {
                    tracing::info!(attempt, ?id, "kv answer lost; sending the request again with its id");
                    // The lost-answer test holds the call here until the
                    // lead is back.
                    fail::fail_point!("kv.before_resend");
                    tokio::time::sleep(RETRY_PAUSE * attempt as u32).await;
                    attempt += 1;
                }
                answer => break answer,
            }
        };
        match answer {
            Ok(PodReply::Kv(outcome)) => Ok(outcome),
            Ok(other) => Err(unexpected(&other)),
            Err(ProtoError::Remote(w)) => Err(w),
            Err(e @ ProtoError::Timeout(_)) => Err(e.to_wire()),
            Err(_) if !paths.session_log().exists() => Err(wire(&KvError::NoSuchLayer { name: lead.to_string() })),
            Err(_) => Err(lead_down(&lead)),
        }
    }

    /// The socket of this process's own Pod, if it runs in one.
    pub fn own_socket(&self) -> Option<&Path> {
        self.own_socket.as_deref()
    }

    /// The same client, calling as the process in `socket`'s Pod would
    /// (`None`: as the operator).
    pub fn with_own_socket(mut self, socket: Option<PathBuf>) -> Client {
        self.own_socket = socket;
        self
    }
}

/// Most attempts of one mutation whose answer is lost.
pub const MAX_ATTEMPTS: usize = 5;
/// Pause before the n-th attempt: n times this (a lead restarting needs a
/// moment; bounded by [`MAX_ATTEMPTS`]).
const RETRY_PAUSE: Duration = Duration::from_millis(20);

/// Whether `op` is a mutation that is answered at once, so it carries a
/// request id and may be sent again. Reads are not remembered by the
/// store (nothing to remember), and an acquire that waits is given up by
/// the lead when its connection closes, so neither gets an id.
fn repeatable(op: &Op) -> bool {
    match op {
        Op::Set { .. } | Op::Delete { .. } | Op::Renew { .. } | Op::Release { .. } => true,
        Op::Acquire { wait_ms, .. } => wait_ms.is_none(),
        Op::Get { .. } | Op::List { .. } | Op::Wait { .. } | Op::Leases => false,
    }
}

/// A client id for one call's request stream: random, so that no two
/// calls of the same caller (two `pod kv set`s at once) share a stream,
/// which would answer one with the other's outcome.
fn draw_client_id() -> Result<u64, WireError> {
    use std::io::Read;
    let mut bytes = [0u8; 8];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .map_err(|e| WireError::new("pod.internal", format!("cannot draw a request id from /dev/urandom: {e}")))?;
    Ok(u64::from_le_bytes(bytes))
}

/// A lead that does not answer: its layer's store is unavailable (exit 69)
/// until it is back.
fn lead_down(lead: &PodName) -> WireError {
    WireError::new(
        "pod.not_running",
        format!("the lead {lead} is not running, so its layer's store does not answer (`pod resume {lead}` or spawn it again)"),
    )
}

/// The error for an answer of the wrong kind (named by its kind only: a
/// value is never echoed).
fn unexpected_outcome(outcome: &Outcome) -> WireError {
    let kind = match outcome {
        Outcome::Found(_) => "found",
        Outcome::Written { .. } => "written",
        Outcome::Deleted { .. } => "deleted",
        Outcome::Listed(_) => "listed",
        Outcome::Waiting { .. } => "waiting",
        Outcome::Granted(_) => "granted",
        Outcome::Queued { .. } => "queued",
        Outcome::Renewed(_) => "renewed",
        Outcome::Released { .. } => "released",
        Outcome::Leases(_) => "leases",
    };
    WireError::new("pod.unexpected_reply", format!("unexpected answer from the store: {kind}"))
}
