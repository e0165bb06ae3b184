//! The shared store: one allocation table in etcd for many nodes.
//!
//! Why etcd: "no two Pods write the same path" must hold across machines,
//! through partitions and dead machines, and that takes consensus; etcd is
//! a real, trusted engine for it, so we build on it instead of our own.
//!
//! Each node's daemon keeps the whole table in memory (its `State`, fed by
//! [`feed`]) and plans every mutation on it with the same pure operations
//! as the embedded registry. A mutation is then one etcd transaction:
//!
//! - guarded by its [`Precondition`]s (see `crate::preconditions`): each
//!   record it writes at the token (create revision) and fence (mod
//!   revision) it read, or absent; the claims around every new write rule
//!   unchanged since the revision the view is complete through; and the
//!   node record at the node's own token, so a node whose lease expired
//!   (and whose keys etcd deleted) cannot write at all;
//! - writing the records, their claims (new records) or deleting both,
//!   and the request's remembered answer, all bound to the node's lease;
//! - reading, when a guard fails, the node record and every record it
//!   guarded, to tell a stale view (catch up, plan again) from a replaced
//!   claim (`registry.fenced`, never retried: the stale node must not touch
//!   the new holder's keys, and the guards make sure it cannot).
//!
//! A transaction whose answer was lost is sent again as it was; if the
//! first one applied, the second's guards fail and its reads show exactly
//! the values the first wrote, all at one revision, which is then taken as
//! the commit's.
//!
//! Liveness: every key is bound to its node's lease ([`lease`]), kept alive
//! at TTL/3. When a node's lease expires, etcd deletes its keys, the other
//! nodes' feeds see the deletes and their paths are free; the node itself
//! learns of it from a TTL-0 keepalive answer, from missing answers for TTL
//! minus a margin, or from its feed, and then refuses every write. Its Pods
//! whose allocations went are fenced (`registry.fenced`).

pub mod cluster;
mod feed;
pub mod keys;
mod lease;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use etcd_client::{Client, Compare, CompareOp, ConnectOptions, GetOptions, PutOptions, Txn, TxnOp, TxnOpResponse};
use serde::{Deserialize, Serialize};
use tokio::sync::{watch, Notify};

pub use feed::Feed;
pub use lease::{boottime_ms, margin, Keeper, LeaseCell, LeaseStatus};

use super::{Mutation, Outcome, Precondition, SharedStore, StoreFuture};
use crate::answers::{AnswerChange, Remembered, StreamId};
use crate::record::NodeName;
use crate::state::State;
use crate::{Allocation, RegistryError};

/// Bumped when the encoding of a value changes.
const FORMAT: u8 = 1;
/// How long one etcd request may take before it is given up (and, for a
/// transaction, sent again while the lease lasts).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a transaction is retried while etcd does not answer.
const COMMIT_PATIENCE: Duration = Duration::from_secs(10);
/// How long the writer waits for the change feed to reach a revision.
const CATCH_UP_WAIT: Duration = Duration::from_secs(5);
/// Largest value of a key we read back (an allocation is far smaller;
/// etcd's own request limit is 1.5 MiB).
const MAX_VALUE_BYTES: usize = 2 << 20;

pub use crate::config::Shared as EtcdConfig;

/// What the node record (`n/<node>`) holds.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct NodeRecord {
    node: NodeName,
    /// Random, kept in the node's data directory: a registry restarted on
    /// the same node takes its lease back; another machine configured with
    /// the same node name is refused.
    instance: String,
    lease: i64,
    ttl_s: u64,
    pid: u32,
}

/// The shared store of one node.
pub struct EtcdStore {
    client: Client,
    node: NodeName,
    lease: Arc<LeaseCell>,
    through: watch::Receiver<u64>,
    progress: Arc<Notify>,
    own_deletes: OwnDeletes,
}

/// Names this node deleted, with the revision, until the feed has passed
/// it: the feed may see such a delete before the writer applied it, and
/// must not take it for a lost lease. [`PENDING_DELETE`] while the
/// transaction is in flight.
pub(crate) type OwnDeletes = Arc<std::sync::Mutex<rustc_hash::FxHashMap<scope::PodName, u64>>>;

/// The revision of an own delete whose transaction is in flight.
const PENDING_DELETE: u64 = u64::MAX;

/// An opened store, with the view it loaded and the tasks that keep both
/// current (the daemon runs them).
pub struct Opened {
    pub store: EtcdStore,
    pub state: State,
    pub feed: Feed,
    pub keeper: Keeper,
    pub lease: Arc<LeaseCell>,
}

fn etcd_error(what: &str, e: etcd_client::Error) -> RegistryError {
    RegistryError::EtcdUnavailable(format!("{what}: {e}"))
}

pub(crate) fn encode<T: Serialize>(what: &str, value: &T) -> Result<Vec<u8>, RegistryError> {
    let mut out = vec![FORMAT];
    rmp_serde::encode::write(&mut out, value).map_err(|e| RegistryError::Store(format!("encode {what}: {e}")))?;
    Ok(out)
}

pub(crate) fn decode<T: for<'a> Deserialize<'a>>(what: &str, value: &[u8]) -> Result<T, RegistryError> {
    if value.len() > MAX_VALUE_BYTES {
        return Err(RegistryError::Corrupt(format!("{what}: {} bytes, more than {MAX_VALUE_BYTES}", value.len())));
    }
    let (format, body) = value.split_first().ok_or_else(|| RegistryError::Corrupt(format!("{what}: empty value")))?;
    if *format != FORMAT {
        return Err(RegistryError::Corrupt(format!("{what}: unknown format {format}")));
    }
    rmp_serde::from_slice(body).map_err(|e| RegistryError::Corrupt(format!("{what}: cannot decode: {e}")))
}

/// An allocation as stored at `key`: its fence is the key's mod revision,
/// its token the create revision.
pub fn decode_record(kv: &etcd_client::KeyValue) -> Result<(Allocation, u64), RegistryError> {
    let key = String::from_utf8_lossy(kv.key()).into_owned();
    let mut rec: Allocation = decode(&key, kv.value())?;
    if keys::pod_name(kv.key()) != Some(rec.name.as_str()) {
        return Err(RegistryError::Corrupt(format!("{key}: holds the record of {}", rec.name)));
    }
    rec.fence = kv.mod_revision() as u64;
    Ok((rec, kv.create_revision() as u64))
}

/// A remembered answer as stored: the fences its plan handed out become
/// the revision of the transaction that wrote it (the key's mod revision).
pub(crate) fn decode_answer(kv: &etcd_client::KeyValue) -> Result<Remembered, RegistryError> {
    let key = String::from_utf8_lossy(kv.key()).into_owned();
    let (from, to, mut rem): (u64, u64, Remembered) = decode(&key, kv.value())?;
    let revision = kv.mod_revision() as u64;
    rem.reply.map_fences(|f| if (from..to).contains(&f) { revision } else { f });
    Ok(rem)
}

/// The node's instance id, created once (0600) in its data directory.
fn instance(data: &Path) -> Result<String, RegistryError> {
    use std::io::{Read, Write};
    use std::os::unix::fs::OpenOptionsExt;
    let path = data.join("etcd-instance");
    let failed = |e: std::io::Error| RegistryError::Store(format!("{}: {e}", path.display()));
    std::fs::create_dir_all(data).map_err(failed)?;
    match std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&path) {
        Ok(mut f) => {
            let id = StreamId::random().map_err(failed)?.to_string();
            f.write_all(id.as_bytes()).and_then(|()| f.sync_all()).map_err(failed)?;
            Ok(id)
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            let mut text = String::new();
            std::fs::File::open(&path).map_err(failed)?.take(64).read_to_string(&mut text).map_err(failed)?;
            let id = text.trim().to_string();
            if StreamId::try_from(id.clone()).is_err() {
                return Err(RegistryError::Corrupt(format!("{}: not an instance id", path.display())));
            }
            Ok(id)
        }
        Err(e) => Err(failed(e)),
    }
}

/// Connects to etcd (every endpoint, balanced).
pub async fn connect(endpoints: &[String]) -> Result<Client, RegistryError> {
    let options = ConnectOptions::new()
        .with_connect_timeout(REQUEST_TIMEOUT)
        .with_timeout(REQUEST_TIMEOUT)
        .with_keep_alive(Duration::from_secs(1), REQUEST_TIMEOUT)
        .with_keep_alive_while_idle(true);
    Client::connect(endpoints, Some(options)).await.map_err(|e| etcd_error(&format!("connect to {endpoints:?}"), e))
}

impl EtcdStore {
    /// Connects, takes the node's lease (its own again if it restarted
    /// within the TTL), and loads the whole table and the node's answers.
    pub async fn open(config: &EtcdConfig, data: &Path) -> Result<Opened, RegistryError> {
        let instance = instance(data)?;
        let mut client = connect(&config.endpoints).await?;
        let taken = take_node(&mut client, config, &instance).await?;
        let (lease, node_token) = (taken.lease, taken.node_token);
        let cell = Arc::new(LeaseCell::new(
            config.node.clone(),
            lease,
            node_token,
            config.lease_ttl,
            taken.at_ms,
            taken.remaining,
        ));
        // The table and this node's answers, read at one revision.
        let read = Txn::new().and_then([
            TxnOp::get(keys::pods(), Some(GetOptions::new().with_prefix())),
            TxnOp::get(keys::answers(&config.node), Some(GetOptions::new().with_prefix())),
        ]);
        let resp = client.txn(read).await.map_err(|e| etcd_error("read the table", e))?;
        let revision = resp.header().map_or(0, |h| h.revision()) as u64;
        let mut records = Vec::new();
        let mut answers = Vec::new();
        for (i, op) in resp.op_responses().into_iter().enumerate() {
            let TxnOpResponse::Get(get) = op else { continue };
            for kv in get.kvs() {
                if i == 0 {
                    match decode_record(kv) {
                        Ok(r) => records.push(r),
                        Err(e) => tracing::error!(error = %e, "skipping a record that cannot be read"),
                    }
                } else if let Some(stream) = keys::answer_stream(&config.node, kv.key()) {
                    answers.push((stream, decode_answer(kv)?));
                }
            }
        }
        let mut state = State::from_stored(Vec::new(), answers, revision + 1)?;
        state.set_local_node(config.node.clone());
        let applied = state.resync(records, revision);
        for bad in applied.bad {
            tracing::error!(error = %bad, "skipping a record that fails validation");
        }
        if let Err(e) = state.check_links() {
            tracing::warn!(error = %e, "the shared table's links are inconsistent");
        }
        let (through_tx, through) = watch::channel(revision);
        let progress = Arc::new(Notify::new());
        let own_deletes = OwnDeletes::default();
        let feed = Feed::new(
            client.clone(),
            config.clone(),
            revision,
            through_tx,
            Arc::clone(&progress),
            Arc::clone(&own_deletes),
        );
        let keeper = Keeper::new(client.clone(), config.clone(), instance, Arc::clone(&cell));
        let store =
            EtcdStore { client, node: config.node.clone(), lease: Arc::clone(&cell), through, progress, own_deletes };
        tracing::info!(node = %config.node, lease = lease, allocations = state.len(), revision, "etcd store open");
        Ok(Opened { store, state, feed, keeper, lease: cell })
    }

    /// Builds the guarded transaction of `m`, and what it reads when a
    /// guard fails: the node record, then every record key and answer key
    /// it writes or deletes, in that order (see `judge`).
    fn transaction(&self, m: &Mutation<'_>, lease: i64, node_token: u64) -> Result<Built, RegistryError> {
        let put_lease = || Some(PutOptions::new().with_lease(lease));
        let mut compares = vec![Compare::create_revision(keys::node(&self.node), CompareOp::Equal, node_token as i64)];
        let mut created: rustc_hash::FxHashSet<&scope::PodName> = rustc_hash::FxHashSet::default();
        for pre in m.preconditions {
            match pre {
                Precondition::Record { name, seen: None } => {
                    created.insert(name);
                    compares.push(Compare::version(keys::pod(name), CompareOp::Equal, 0));
                }
                Precondition::Record { name, seen: Some(seen) } => {
                    if seen.token != 0 {
                        compares.push(Compare::create_revision(keys::pod(name), CompareOp::Equal, seen.token as i64));
                    }
                    compares.push(Compare::mod_revision(keys::pod(name), CompareOp::Equal, seen.fence as i64));
                }
                Precondition::Claims { region, through } => {
                    for range in keys::overlapping(region) {
                        compares.push(
                            Compare::mod_revision(range.start, CompareOp::Less, *through as i64 + 1)
                                .with_range(range.end),
                        );
                    }
                }
            }
        }
        let mut ops = Vec::new();
        let mut reads = vec![TxnOp::get(keys::node(&self.node), None)];
        let mut expect = Vec::new();
        let mut claims = std::collections::BTreeSet::new();
        for rec in &m.puts {
            let value = encode(rec.name.as_str(), *rec)?;
            ops.push(TxnOp::put(keys::pod(&rec.name), value.clone(), put_lease()));
            reads.push(TxnOp::get(keys::pod(&rec.name), None));
            expect.push(Some(value));
            if created.contains(&rec.name) {
                for rule in rec.allow_writes() {
                    claims.insert(keys::claim(&rec.name, &rule.region()));
                }
            }
        }
        for claim in claims {
            ops.push(TxnOp::put(claim, Vec::new(), put_lease()));
        }
        let mut gone = std::collections::BTreeSet::new();
        for rec in &m.deletes {
            ops.push(TxnOp::delete(keys::pod(&rec.name), None));
            reads.push(TxnOp::get(keys::pod(&rec.name), None));
            expect.push(None);
            for rule in rec.allow_writes() {
                gone.insert(keys::claim(&rec.name, &rule.region()));
            }
        }
        for claim in gone {
            ops.push(TxnOp::delete(claim, None));
        }
        for change in m.answers {
            match change {
                AnswerChange::Put(stream, rem) => {
                    let value = encode("answer", &(m.fences.start, m.fences.end, rem.as_ref()))?;
                    ops.push(TxnOp::put(keys::answer(&self.node, stream), value.clone(), put_lease()));
                    reads.push(TxnOp::get(keys::answer(&self.node, stream), None));
                    expect.push(Some(value));
                }
                AnswerChange::Forget(stream) => ops.push(TxnOp::delete(keys::answer(&self.node, stream), None)),
            }
        }
        Ok(Built { txn: Txn::new().when(compares).and_then(ops).or_else(reads), expect })
    }

    /// What a transaction's answer means (see the module comment).
    fn judge(
        &self,
        resp: &etcd_client::TxnResponse,
        built: &Built,
        m: &Mutation<'_>,
        node_token: u64,
        resent: bool,
    ) -> Result<Outcome, RegistryError> {
        let revision = resp.header().map_or(0, |h| h.revision()) as u64;
        if resp.succeeded() {
            return Ok(Outcome::Committed { revision });
        }
        let found: Vec<Option<etcd_client::KeyValue>> = resp
            .op_responses()
            .into_iter()
            .map(|op| match op {
                TxnOpResponse::Get(g) => g.kvs().first().cloned(),
                _ => None,
            })
            .collect();
        let node_now = found.first().cloned().flatten();
        if node_now.as_ref().map(|kv| kv.create_revision() as u64) != Some(node_token) {
            let reason =
                format!("node {} no longer holds its etcd lease (its record is gone or was replaced)", self.node);
            self.lease.lose(&reason);
            return Err(RegistryError::Fenced(reason));
        }
        let written = &found[1..];
        if resent && written.len() == built.expect.len() {
            let mut at = None;
            let mut ours = true;
            for (now, expected) in written.iter().zip(&built.expect) {
                match (now, expected) {
                    (Some(kv), Some(value)) if kv.value() == value.as_slice() => {
                        let rev = kv.mod_revision() as u64;
                        ours &= at.is_none_or(|a| a == rev);
                        at = Some(rev);
                    }
                    (None, None) => {}
                    _ => ours = false,
                }
            }
            if ours {
                if let Some(revision) = at {
                    tracing::info!(revision, "a transaction resent after a lost answer had applied the first time");
                    return Ok(Outcome::Committed { revision });
                }
            }
        }
        let names: Vec<&scope::PodName> = m.puts.iter().chain(m.deletes.iter()).map(|r| &r.name).collect();
        for pre in m.preconditions {
            let Precondition::Record { name, seen: Some(seen) } = pre else { continue };
            let Some(now) = names.iter().position(|n| *n == name).and_then(|i| written.get(i)) else { continue };
            let replaced = match now {
                None => Some("its allocation is gone from etcd".to_string()),
                Some(kv) if seen.token != 0 && kv.create_revision() as u64 != seen.token => {
                    let by = decode_record(kv).ok().and_then(|(r, _)| r.node);
                    Some(format!("its claim was replaced{}", by.map_or_else(String::new, |n| format!(" by node {n}"))))
                }
                Some(_) => None,
            };
            if let Some(why) = replaced {
                return Err(RegistryError::Fenced(format!("pod {name}: {why}; this node will not write its keys")));
            }
        }
        Ok(Outcome::Stale { revision })
    }

    async fn run_txn(&self, txn: Txn) -> Result<etcd_client::TxnResponse, etcd_client::Error> {
        self.client.kv_client().txn(txn).await
    }

    /// Commits `m`. Its deletes are marked as this node's own before the
    /// transaction is sent: the feed may see them before the answer comes
    /// back (the writer does not hold the state meanwhile), and must not
    /// take them for a lost lease.
    async fn commit(&self, m: &Mutation<'_>) -> Result<Outcome, RegistryError> {
        self.mark_own_deletes(m, Some(PENDING_DELETE));
        let outcome = self.send(m).await;
        let at = match &outcome {
            Ok(Outcome::Committed { revision }) => Some(*revision),
            _ => None,
        };
        self.mark_own_deletes(m, at);
        outcome
    }

    /// Records `m`'s deletes as this node's, at `at` (`None`: they did not
    /// happen; a pending mark is taken back).
    fn mark_own_deletes(&self, m: &Mutation<'_>, at: Option<u64>) {
        let mut own = self.own_deletes.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        for rec in &m.deletes {
            match at {
                Some(revision) => {
                    own.insert(rec.name.clone(), revision);
                }
                None if own.get(&rec.name) == Some(&PENDING_DELETE) => {
                    own.remove(&rec.name);
                }
                None => {}
            }
        }
    }

    async fn send(&self, m: &Mutation<'_>) -> Result<Outcome, RegistryError> {
        let held = self.lease.check()?;
        let built = self.transaction(m, held.lease, held.node_token)?;
        let patience = std::time::Instant::now() + COMMIT_PATIENCE;
        let mut resent = false;
        let mut pause = Duration::from_millis(20);
        loop {
            match self.run_txn(built.txn.clone()).await {
                Ok(resp) => return self.judge(&resp, &built, m, held.node_token, resent),
                Err(e) if too_large(&e) => return Err(RegistryError::TxnTooLarge(e.to_string())),
                Err(e) => {
                    // The answer may have been lost after etcd applied it;
                    // the same transaction again tells (see `judge`).
                    resent = true;
                    if std::time::Instant::now() >= patience {
                        return Err(etcd_error("commit (the outcome is unknown; the change feed will tell)", e));
                    }
                    self.lease.check()?;
                    tracing::warn!(error = %e, "etcd did not answer a transaction; sending it again");
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_millis(500));
                }
            }
        }
    }

    async fn catch_up(&self, revision: u64) -> Result<(), RegistryError> {
        let mut through = self.through.clone();
        let deadline = tokio::time::Instant::now() + CATCH_UP_WAIT;
        while *through.borrow_and_update() < revision {
            self.progress.notify_one();
            let step = tokio::time::Instant::now() + Duration::from_millis(100);
            match tokio::time::timeout_at(step.min(deadline), through.changed()).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) => return Err(RegistryError::EtcdUnavailable("the change feed stopped".into())),
                Err(_) if tokio::time::Instant::now() >= deadline => {
                    return Err(RegistryError::EtcdUnavailable(format!(
                        "the change feed did not reach revision {revision} within {CATCH_UP_WAIT:?}"
                    )))
                }
                Err(_) => {}
            }
        }
        Ok(())
    }

    async fn newest_revision(&self) -> Result<u64, RegistryError> {
        let resp = self
            .client
            .kv_client()
            .get(keys::node(&self.node), Some(GetOptions::new().with_count_only()))
            .await
            .map_err(|e| etcd_error("read the current revision", e))?;
        Ok(resp.header().map_or(0, |h| h.revision()) as u64)
    }
}

/// A transaction ready to send, and the values its writes leave.
struct Built {
    txn: Txn,
    /// Per record and answer key written or deleted, in the order of the
    /// failure reads: the value the transaction writes (`None`: deleted).
    expect: Vec<Option<Vec<u8>>>,
}

fn too_large(e: &etcd_client::Error) -> bool {
    matches!(e, etcd_client::Error::GRpcStatus(s) if s.message().contains("too many operations"))
}

impl SharedStore for EtcdStore {
    fn commit_guarded<'a>(&'a mut self, m: &'a Mutation<'_>) -> StoreFuture<'a, Outcome> {
        Box::pin(self.commit(m))
    }

    fn wait_through(&mut self, revision: u64) -> StoreFuture<'_, ()> {
        Box::pin(self.catch_up(revision))
    }

    fn current_revision(&mut self) -> StoreFuture<'_, u64> {
        Box::pin(self.newest_revision())
    }
}

/// Takes the node's lease: its own again when the node record is this
/// instance's and the lease still lives (a registry restarted within the
/// TTL keeps every allocation), else a new one, refused while another
/// instance holds the name.
async fn take_node(client: &mut Client, config: &EtcdConfig, instance: &str) -> Result<Taken, RegistryError> {
    let key = keys::node(&config.node);
    let at_ms = boottime_ms();
    let current = client.get(key.clone(), None).await.map_err(|e| etcd_error("read the node record", e))?;
    if let Some(kv) = current.kvs().first() {
        let rec: NodeRecord = decode(&config.node.to_string(), kv.value())?;
        let ttl =
            client.lease_time_to_live(rec.lease, None).await.map_err(|e| etcd_error("read the node's lease", e))?;
        if rec.instance != instance && ttl.ttl() > 0 {
            return Err(RegistryError::Config(format!(
                "node {} is held by another registry (pid {}, another data directory or machine) for {} s more; \
                 every node needs a name of its own",
                config.node,
                rec.pid,
                ttl.ttl()
            )));
        }
        if ttl.ttl() > 0 && kv.lease() == rec.lease {
            tracing::info!(node = %config.node, lease = rec.lease, ttl = ttl.ttl(), "taking this node's lease back");
            let remaining = Duration::from_secs(ttl.ttl() as u64);
            return Ok(Taken { lease: rec.lease, node_token: kv.create_revision() as u64, at_ms, remaining });
        }
    }
    let (lease, node_token) = new_node_lease(client, config, instance).await?;
    tracing::info!(node = %config.node, lease, ttl_s = config.lease_ttl.as_secs(), "took a new lease");
    Ok(Taken { lease, node_token, at_ms, remaining: config.lease_ttl })
}

/// Grants the node a new lease and writes its node record bound to it, in
/// one transaction that requires the record to be absent (another instance
/// that took the name meanwhile wins, and the new lease is revoked).
/// Returns the lease and the node token (the record's create revision).
pub(super) async fn new_node_lease(
    client: &mut Client,
    config: &EtcdConfig,
    instance: &str,
) -> Result<(i64, u64), RegistryError> {
    let key = keys::node(&config.node);
    let ttl_s = config.lease_ttl.as_secs();
    let grant = client.lease_grant(ttl_s as i64, None).await.map_err(|e| etcd_error("grant a lease", e))?;
    let rec = NodeRecord {
        node: config.node.clone(),
        instance: instance.to_string(),
        lease: grant.id(),
        ttl_s,
        pid: std::process::id(),
    };
    let put = Txn::new().when([Compare::version(key.clone(), CompareOp::Equal, 0)]).and_then([TxnOp::put(
        key,
        encode("node record", &rec)?,
        Some(PutOptions::new().with_lease(grant.id())),
    )]);
    let resp = client.txn(put).await.map_err(|e| etcd_error("write the node record", e))?;
    if !resp.succeeded() {
        let _ = client.lease_revoke(grant.id()).await;
        return Err(RegistryError::Config(format!(
            "node {} was registered by another registry at the same moment; every node needs a name of its own",
            config.node
        )));
    }
    Ok((grant.id(), resp.header().map_or(0, |h| h.revision()) as u64))
}

/// The lease a node starts with.
struct Taken {
    lease: i64,
    node_token: u64,
    /// CLOCK_BOOTTIME ms before the lease was asked for.
    at_ms: u64,
    remaining: Duration,
}
