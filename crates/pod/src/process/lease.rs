//! The node's etcd lease as this Pod holds it, so that the Pod stops
//! granting in time even when the registry daemon cannot act (frozen,
//! killed, cut off from etcd).
//!
//! On a registry shared through etcd, every answer to the Pod's allocation
//! watch carries the node's lease deadline (`pod_registry::LeaseView`):
//! CLOCK_BOOTTIME milliseconds, the send time of the last keepalive etcd
//! answered plus the TTL minus the daemon's margin. etcd cannot expire the
//! lease, and so no other node can be granted this Pod's paths, before
//! `deadline + margin`. The Pod compares CLOCK_BOOTTIME with the deadline
//! it holds on every check and spawn (no daemon, no timer involved), and a
//! watchdog task wakes at the deadline to record `pod.fenced` once.
//!
//! Once the deadline passed (or the daemon said the lease is lost) the Pod
//! has stopped granting, and no later answer revives it: a newer deadline
//! that arrives late may come from a new lease under which the Pod's
//! allocation is gone. Only a fresh claim under the new lease, granted by
//! the registry where the paths are still free, un-fences it (`rejoin`).
//! On the embedded registry there is no lease, no deadline is ever held,
//! and nothing here changes a verdict.

use std::sync::Arc;
use std::time::Duration;

use pod_registry::LeaseView;
use tokio::sync::watch;

/// The code of checks denied and spawns refused past the deadline.
pub const LEASE_LOST: &str = "registry.lease_lost";

/// Longest the watchdog sleeps before reading CLOCK_BOOTTIME again (tokio's
/// timers run on CLOCK_MONOTONIC, which stops while the machine sleeps).
const WATCHDOG_TICK: Duration = Duration::from_secs(1);

/// CLOCK_BOOTTIME in milliseconds, the clock the daemon's deadlines are on.
pub fn boottime_ms() -> u64 {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::Boottime);
    t.tv_sec as u64 * 1000 + t.tv_nsec as u64 / 1_000_000
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Held {
    /// CLOCK_BOOTTIME ms at which the Pod stops granting; 0: none held (the
    /// embedded registry, or no answer yet).
    pub deadline_ms: u64,
    pub node: Option<String>,
    /// Why the Pod stopped granting, once it did.
    pub lost: Option<String>,
    /// How many times the Pod re-claimed its paths under a new lease.
    pub rejoined: u32,
}

/// The lease as the check path, the watch and the watchdog share it.
pub struct LeaseGuard {
    held: watch::Sender<Held>,
}

impl LeaseGuard {
    pub fn new() -> Arc<LeaseGuard> {
        Arc::new(LeaseGuard { held: watch::channel(Held::default()).0 })
    }

    pub fn held(&self) -> Held {
        self.held.borrow().clone()
    }

    /// `Ok` while the Pod may grant; past the deadline (first noticed
    /// here or anywhere) the reason it stopped.
    pub fn check(&self) -> Result<(), String> {
        self.expire_at(boottime_ms());
        match &self.held.borrow().lost {
            Some(reason) => Err(reason.clone()),
            None => Ok(()),
        }
    }

    /// Takes what a watch answer says of the lease. A later deadline
    /// extends the one held, unless the held one passed already; a lost
    /// lease stops the Pod.
    pub fn take(&self, view: &LeaseView) {
        let now = boottime_ms();
        self.expire_at(now);
        self.held.send_if_modified(|h| {
            if h.lost.is_some() {
                return false;
            }
            if let Some(why) = &view.lost {
                h.lost = Some(format!("node {} lost its etcd lease: {why}", view.node));
                return true;
            }
            if view.deadline_ms <= h.deadline_ms {
                return false;
            }
            h.deadline_ms = view.deadline_ms;
            h.node = Some(view.node.to_string());
            true
        });
    }

    fn expire_at(&self, now: u64) {
        self.held.send_if_modified(|h| {
            if h.lost.is_some() || h.deadline_ms == 0 || now < h.deadline_ms {
                return false;
            }
            let node = h.node.as_deref().unwrap_or("?");
            h.lost = Some(format!(
                "node {node}'s etcd lease deadline passed ({} ms ago on CLOCK_BOOTTIME) with no newer keepalive heard",
                now - h.deadline_ms
            ));
            true
        });
    }

    /// Un-fences the Pod after the registry granted its fresh claim under
    /// the node's new lease, holding that lease's deadline from now on.
    pub fn rejoined(&self, view: &LeaseView) {
        self.held.send_modify(|h| {
            *h = Held {
                deadline_ms: view.deadline_ms,
                node: Some(view.node.to_string()),
                lost: None,
                rejoined: h.rejoined + 1,
            };
        });
    }

    /// Returns the reason once the Pod stops granting (at the deadline at
    /// the latest, whether or not anything else noticed).
    pub async fn until_lost(&self) -> String {
        let mut changes = self.held.subscribe();
        loop {
            changes.mark_unchanged();
            if let Err(reason) = self.check() {
                return reason;
            }
            let deadline = self.held().deadline_ms;
            let pause = match deadline {
                0 => WATCHDOG_TICK * 60,
                d => Duration::from_millis(d.saturating_sub(boottime_ms())).min(WATCHDOG_TICK),
            };
            tokio::select! {
                () = tokio::time::sleep(pause) => {}
                changed = changes.changed() => if changed.is_err() { std::future::pending::<()>().await },
            }
        }
    }

    /// Waits until the Pod grants again (after a re-claim).
    pub async fn until_granting(&self) {
        let mut changes = self.held.subscribe();
        if changes.wait_for(|h| h.lost.is_none()).await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pod_registry::NodeName;

    fn view(deadline_ms: u64, lost: Option<&str>) -> LeaseView {
        LeaseView {
            node: NodeName::new("a").expect("node"),
            deadline_ms,
            ttl_ms: 3000,
            margin_ms: 300,
            lost: lost.map(Into::into),
        }
    }

    #[test]
    fn without_a_deadline_nothing_is_denied() {
        let g = LeaseGuard::new();
        assert_eq!(g.check(), Ok(()));
    }

    #[test]
    fn a_deadline_is_extended_until_it_passes_and_never_after() {
        let g = LeaseGuard::new();
        let now = boottime_ms();
        g.take(&view(now + 60_000, None));
        assert_eq!(g.check(), Ok(()));
        g.take(&view(now + 120_000, None));
        assert_eq!(g.held().deadline_ms, now + 120_000);
        // An older deadline does not shorten it.
        g.take(&view(now + 90_000, None));
        assert_eq!(g.held().deadline_ms, now + 120_000);

        let g = LeaseGuard::new();
        g.take(&view(now.saturating_sub(1), None));
        let reason = g.check().expect_err("past the deadline");
        assert!(reason.starts_with("node a's etcd lease deadline passed ("), "{reason}");
        // A newer deadline after the held one passed does not revive it.
        g.take(&view(boottime_ms() + 60_000, None));
        assert_eq!(g.check(), Err(reason));
    }

    #[test]
    fn a_lost_lease_stops_the_pod_at_once_and_only_a_rejoin_restarts_it() {
        let g = LeaseGuard::new();
        g.take(&view(boottime_ms() + 60_000, None));
        g.take(&view(0, Some("etcd answered a keepalive with TTL 0: the lease expired")));
        assert_eq!(
            g.check(),
            Err("node a lost its etcd lease: etcd answered a keepalive with TTL 0: the lease expired".into())
        );
        g.take(&view(boottime_ms() + 60_000, None));
        assert!(g.check().is_err());
        let next = view(boottime_ms() + 60_000, None);
        g.rejoined(&next);
        assert_eq!(g.check(), Ok(()));
        assert_eq!((g.held().deadline_ms, g.held().rejoined), (next.deadline_ms, 1));
    }
}
