//! The node's etcd lease: kept alive at TTL/3, known lost the moment
//! there is evidence, and its deadline carried to every Pod.
//!
//! The deadline is the send time of the last keepalive etcd answered, on
//! CLOCK_BOOTTIME, plus the TTL it granted, minus a margin. etcd counts the
//! TTL from when it received that keepalive, which is later, so before the
//! deadline no other node can have been granted this node's paths. The
//! lease is lost when etcd answers a keepalive with TTL <= 0 (the lease
//! expired: a keepalive that ignored this answer is how a holder never
//! learns), when the deadline passes without a newer answer, or when a
//! transaction finds the node record gone. From then on every write is
//! refused (`registry.fenced`); the old lease is revoked, so whatever is
//! left of its keys goes now, and a new lease and node record are taken.
//! The node's Pods whose allocations went are fenced for good (the feed
//! marks them); a Pod registered afterwards is bound to the new lease.

use std::sync::Arc;
use std::time::Duration;

use etcd_client::Client;
use tokio::sync::watch;

use super::{etcd_error, EtcdConfig, REQUEST_TIMEOUT};
use crate::record::NodeName;
use crate::wire::LeaseView;
use crate::RegistryError;

/// CLOCK_BOOTTIME in milliseconds: the clock every process of the machine
/// reads alike, which keeps counting while the machine is suspended.
pub fn boottime_ms() -> u64 {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::Boottime);
    t.tv_sec as u64 * 1000 + t.tv_nsec as u64 / 1_000_000
}

/// The margin kept before the TTL runs out: a tenth of it, at least 250 ms.
pub fn margin(ttl: Duration) -> Duration {
    (ttl / 10).max(Duration::from_millis(250))
}

/// The lease as the writer, the watchers and the keeper share it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseStatus {
    pub lease: i64,
    /// Create revision of the node record written under this lease.
    pub node_token: u64,
    /// CLOCK_BOOTTIME ms at which the lease counts as lost.
    pub deadline_ms: u64,
    pub lost: Option<String>,
}

/// What a commit is made under.
#[derive(Debug, Clone, Copy)]
pub struct Held {
    pub lease: i64,
    pub node_token: u64,
}

pub struct LeaseCell {
    node: NodeName,
    ttl: Duration,
    status: watch::Sender<LeaseStatus>,
}

impl LeaseCell {
    /// A lease taken at `taken_ms` with `remaining` of its TTL left.
    pub fn new(node: NodeName, lease: i64, node_token: u64, ttl: Duration, taken_ms: u64, remaining: Duration) -> Self {
        let deadline_ms = taken_ms + remaining.saturating_sub(margin(ttl)).as_millis() as u64;
        let (status, _) = watch::channel(LeaseStatus { lease, node_token, deadline_ms, lost: None });
        LeaseCell { node, ttl, status }
    }

    pub fn current(&self) -> LeaseStatus {
        self.status.borrow().clone()
    }

    pub fn subscribe(&self) -> watch::Receiver<LeaseStatus> {
        self.status.subscribe()
    }

    /// The lease a write may be made under now, or why none may.
    pub fn check(&self) -> Result<Held, RegistryError> {
        let now = self.current();
        if let Some(reason) = now.lost {
            return Err(RegistryError::Fenced(format!("node {} lost its etcd lease: {reason}", self.node)));
        }
        if boottime_ms() >= now.deadline_ms {
            let reason = format!("no keepalive was answered for the lease's TTL minus {:?}", margin(self.ttl));
            self.lose(&reason);
            return Err(RegistryError::Fenced(format!("node {} lost its etcd lease: {reason}", self.node)));
        }
        Ok(Held { lease: now.lease, node_token: now.node_token })
    }

    /// Marks the lease lost (the first reason is kept).
    pub fn lose(&self, reason: &str) {
        let changed = self.status.send_if_modified(|s| {
            if s.lost.is_some() {
                return false;
            }
            s.lost = Some(reason.to_string());
            s.deadline_ms = 0;
            true
        });
        if changed {
            tracing::error!(node = %self.node, reason, "the node's etcd lease is lost: every write is refused until a new one is taken");
        }
    }

    /// A keepalive sent at `sent_ms` was answered with `ttl_s`.
    fn renewed(&self, lease: i64, sent_ms: u64, ttl_s: i64) {
        let deadline = sent_ms + Duration::from_secs(ttl_s as u64).saturating_sub(margin(self.ttl)).as_millis() as u64;
        self.status.send_if_modified(|s| {
            if s.lease != lease || s.lost.is_some() || deadline <= s.deadline_ms {
                return false;
            }
            s.deadline_ms = deadline;
            true
        });
    }

    fn replaced(&self, status: LeaseStatus) {
        self.status.send_replace(status);
    }

    /// The lease as a Pod keeps it.
    pub fn view(&self) -> LeaseView {
        let now = self.current();
        LeaseView {
            node: self.node.clone(),
            deadline_ms: if now.lost.is_some() { 0 } else { now.deadline_ms },
            ttl_ms: self.ttl.as_millis() as u64,
            margin_ms: margin(self.ttl).as_millis() as u64,
            lost: now.lost,
        }
    }
}

/// The task that keeps the lease alive (and takes a new one once lost).
pub struct Keeper {
    client: Client,
    config: EtcdConfig,
    instance: String,
    cell: Arc<LeaseCell>,
}

impl Keeper {
    pub(super) fn new(client: Client, config: EtcdConfig, instance: String, cell: Arc<LeaseCell>) -> Keeper {
        Keeper { client, config, instance, cell }
    }

    pub async fn run(mut self) {
        let every = self.config.lease_ttl / 3;
        loop {
            if self.cell.current().lost.is_some() {
                if let Err(e) = self.replace().await {
                    tracing::warn!(error = %e, "cannot take a new lease yet");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
                continue;
            }
            let lease = self.cell.current().lease;
            let opened = tokio::time::timeout(REQUEST_TIMEOUT, self.client.lease_keep_alive(lease)).await;
            let (mut keeper, mut answers) = match opened {
                Ok(Ok(pair)) => pair,
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, "cannot open the keepalive stream");
                    let _ = self.cell.check();
                    tokio::time::sleep(every.min(Duration::from_millis(200))).await;
                    continue;
                }
                Err(_) => {
                    let _ = self.cell.check();
                    continue;
                }
            };
            loop {
                let sent = boottime_ms();
                let answer = async {
                    keeper.keep_alive().await?;
                    answers.message().await
                };
                match tokio::time::timeout(REQUEST_TIMEOUT.min(every), answer).await {
                    Ok(Ok(Some(resp))) if resp.ttl() > 0 => self.cell.renewed(lease, sent, resp.ttl()),
                    Ok(Ok(Some(_))) => {
                        self.cell.lose("etcd answered a keepalive with TTL 0: the lease expired");
                        break;
                    }
                    Ok(Ok(None)) | Ok(Err(_)) | Err(_) => {
                        tracing::warn!(node = %self.config.node, "a keepalive was not answered; reopening the stream");
                        let _ = self.cell.check();
                        break;
                    }
                }
                if self.cell.check().is_err() {
                    break;
                }
                tokio::time::sleep(every.saturating_sub(Duration::from_millis(boottime_ms() - sent))).await;
            }
        }
    }

    /// Revokes the lost lease (so what is left of its keys goes now) and
    /// takes a new one with a new node record.
    async fn replace(&mut self) -> Result<(), RegistryError> {
        let old = self.cell.current();
        match self.client.lease_revoke(old.lease).await {
            Ok(_) => {}
            Err(etcd_client::Error::GRpcStatus(s)) if s.message().contains("not found") => {}
            Err(e) => return Err(etcd_error("revoke the lost lease", e)),
        }
        let taken = boottime_ms();
        let (lease, node_token) = super::new_node_lease(&mut self.client, &self.config, &self.instance).await?;
        let deadline_ms =
            taken + self.config.lease_ttl.saturating_sub(margin(self.config.lease_ttl)).as_millis() as u64;
        self.cell.replaced(LeaseStatus { lease, node_token, deadline_ms, lost: None });
        tracing::info!(node = %self.config.node, lease, "took a new lease after losing the last one");
        Ok(())
    }
}
