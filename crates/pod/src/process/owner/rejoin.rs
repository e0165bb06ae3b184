//! Re-claim after a lost lease: a Pod fenced when its node's etcd lease
//! lapsed takes its paths back under the node's new lease where they are
//! still free, with its whole tree.
//!
//! Why a tree needs an order: a node's keys go with its lease all at once,
//! so a tree is either still held whole (the lease never expired, only the
//! Pods' deadline passed: every Pod takes its record back as it is) or gone
//! whole. A child's record names its parent, and the parent's record holds
//! the child's layer, so a gone tree comes back from its top: the top-level
//! Pod registers afresh (one guarded transaction, granted only where its
//! paths, which cover its children's, are free); every Pod whose own claim
//! is back delegates each child's part again, as at spawn; each child then
//! adopts the reservation made for it, as a spawned child does, and in turn
//! delegates its own children's. Every step is the consent of the Pod that
//! takes it: each stopped granting at the old deadline (its own guard did).
//!
//! A Pod whose claim is refused (another Pod holds its paths now) stays
//! fenced and says why; its children wait for it, fenced, and say so. Each
//! Pod records the outcome in its session log (`pod.rejoined`): itself and
//! the children whose part it delegated again, or who stays fenced and why.

use std::collections::BTreeMap;

use pod_proto::WireError;
use pod_registry::{AllocState, Allocation, LeaseView};
use scope::{PodName, ScopeRule, ScopeSnapshot};
use session_log::Event;

use super::{Owner, LEASE_LOST_REASON};

/// Where what a re-claim adds to a Pod's lease-lost reason begins, so that
/// a later offer replaces it instead of adding to it.
const NOTE: &str = "; re-claim ";

/// How a Pod's own claim came back.
enum Claimed {
    /// Its record was still held (the lease lived on): nothing to redo.
    Kept,
    /// Registered or adopted afresh: its children's parts are delegated
    /// again.
    Afresh,
}

impl Owner {
    /// Re-claims this Pod's paths, and its children's parts, under the
    /// node's new lease (see the module comment). Returns whether to offer
    /// again later (the registry was away, or the parent has not re-claimed
    /// yet).
    pub(super) async fn rejoin(&mut self, lease: &LeaseView) -> bool {
        let Some(fenced) = self.fenced.clone().filter(|r| r.starts_with(LEASE_LOST_REASON)) else { return false };
        if self.shutdown.is_some() || self.lease.check().is_ok() {
            return false;
        }
        let reason = fenced.split(NOTE).next().unwrap_or_default().to_string();
        let claimed = match self.registry.get(&self.name).await {
            Ok(Some(rec)) => self.take_back(rec).await,
            Ok(None) => match self.parent.clone() {
                None => self.register_afresh().await.map(|()| Claimed::Afresh),
                Some(parent) => {
                    self.fenced = Some(format!(
                        "{reason}{NOTE}waits for its parent {parent}, which delegates this pod's part again once its own claim is back"
                    ));
                    tracing::info!(%parent, "re-claim waits for the parent's");
                    return true;
                }
            },
            Err(e) => Err(e),
        };
        match claimed {
            Ok(how) => {
                self.lease.rejoined(lease);
                // Write comes back to the workload before the Pod grants
                // again, so an allowed check is a write the kernel lets by.
                self.give_write_back().await;
                self.fenced = None;
                let mut reclaimed = vec![self.name.clone()];
                let mut still_fenced = BTreeMap::new();
                if let Claimed::Afresh = how {
                    self.delegate_again(&mut reclaimed, &mut still_fenced).await;
                }
                tracing::info!(?reclaimed, ?still_fenced, "re-claimed under the node's new lease");
                self.record_rejoin(reclaimed, still_fenced).await;
                false
            }
            Err(e) if e.code == "registry.write_conflict" || e.code == "pod.fenced" => {
                tracing::error!(error = %e, "re-claim refused; the pod stays fenced");
                self.fenced = Some(format!("{reason}{NOTE}under the new lease refused: {} [{}]", e.message, e.code));
                let mut still_fenced = BTreeMap::new();
                still_fenced.insert(self.name.clone(), format!("re-claim refused: {} [{}]", e.message, e.code));
                for child in self.core.children.keys() {
                    still_fenced.insert(child.clone(), format!("its parent {}'s re-claim was refused", self.name));
                }
                self.record_rejoin(Vec::new(), still_fenced).await;
                false
            }
            Err(e) => {
                tracing::warn!(error = %e, "re-claim failed; offering again later");
                true
            }
        }
    }

    /// This Pod's record as the registry holds it: its own, kept (the
    /// lease lived on), or the part its parent delegated to it again,
    /// which it adopts.
    async fn take_back(&self, rec: Allocation) -> Result<Claimed, WireError> {
        let other = || {
            WireError::new("pod.fenced", format!("the registry holds another record of {} than this pod's", self.name))
        };
        let redelegated = rec.state == AllocState::Reserved && rec.parent.is_some() && rec.parent == self.parent;
        if redelegated {
            let scope = self.core.scope.snapshot();
            if rec.allow != scope.allow || rec.deny != scope.deny {
                return Err(other());
            }
            let socket = self.paths.socket().to_string_lossy().into_owned();
            self.registry
                .adopt(&self.name, std::process::id(), &self.paths.session_id(), &socket, &self.scratch())
                .await?;
            return Ok(Claimed::Afresh);
        }
        match self.explain(Some(&rec)).await {
            Ok(missing) if missing.is_empty() => Ok(Claimed::Kept),
            Ok(_) | Err(_) => Err(other()),
        }
    }

    /// A top-level Pod's own rules, registered again without layers: its
    /// children's parts are delegated again after it.
    async fn register_afresh(&self) -> Result<(), WireError> {
        let socket = self.paths.socket().to_string_lossy().into_owned();
        let scope = self.core.scope.snapshot();
        let own = ScopeSnapshot { allow: scope.allow.clone(), deny: scope.deny.clone(), layers: BTreeMap::new() };
        self.registry
            .register(&self.name, std::process::id(), &socket, &self.paths.session_id(), &own, &self.scratch())
            .await
            .map(drop)
    }

    /// Delegates each child's part again; notes whom it did and whom not.
    async fn delegate_again(&self, reclaimed: &mut Vec<PodName>, still_fenced: &mut BTreeMap<PodName, String>) {
        let children: Vec<(PodName, Vec<ScopeRule>)> =
            self.core.children.iter().map(|(name, child)| (name.clone(), child.rules.clone())).collect();
        for (child, rules) in children {
            match self.registry.delegate(&self.name, &child, &rules).await {
                Ok(_) => reclaimed.push(child),
                Err(e) => {
                    tracing::error!(%child, error = %e, "could not delegate a child's part again; it stays fenced");
                    still_fenced.insert(child, format!("its part was not delegated again: {} [{}]", e.message, e.code));
                }
            }
        }
    }

    async fn record_rejoin(&self, reclaimed: Vec<PodName>, fenced: BTreeMap<PodName, String>) {
        if let Err(e) = self.append(vec![Event::PodRejoined { reclaimed, fenced }]).await {
            tracing::error!(error = %e, "could not record pod.rejoined");
        }
    }

    /// The `--scratch` paths the registry keeps with this Pod's claim.
    fn scratch(&self) -> Vec<scope::ScopePath> {
        self.enforcement().map(|e| e.scratch.clone()).unwrap_or_default()
    }
}
