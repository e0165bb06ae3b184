//! The operations as pure plans: `(layer, waits, caller, request, now) ->
//! (plan, outcome)`. One file per group: `kv.rs` (get, set, cas, delete,
//! list, wait), `lease.rs` (acquire, renew, release, the lease list, and
//! the events time and the shell bring: tick, holder gone, cancel, rebase).
//!
//! A [`Plan`] is what the store writes in one durable commit (`commit`),
//! the waiting callers that commit answers (`wakes`), and the change to who
//! is waiting. The shell applies the plan to memory ([`Core::apply`]),
//! makes the commit durable (in one group with others), and only then
//! sends the outcome and the wakes. A refused request plans nothing:
//! `Err` means nothing changes.

mod kv;
mod lease;

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::caller::{Caller, PodRef};
use crate::clock::Now;
use crate::error::KvError;
use crate::key::{Key, LeaseName, Partition};
use crate::state::{Change, Commit, Grant, Holder, Layer, Record, Writer};
use crate::waits::{Ticket, Waiter, Waits, Wanted};

/// What `set` expects of the key's current version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Expect {
    /// Plain `set`: whatever is there.
    Any,
    /// `cas`: exactly this version; 0 means the key must not exist.
    Version(u64),
}

/// A request, as a caller spells it. Keys, patterns and lease names are
/// raw strings: parsing them is part of the plan, because `/peer/self`
/// depends on who calls.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Op {
    Get {
        key: String,
    },
    Set {
        key: String,
        #[serde(with = "serde_bytes")]
        value: Vec<u8>,
        expect: Expect,
        overriding: bool,
    },
    Delete {
        key: String,
        overriding: bool,
    },
    List {
        pattern: String,
    },
    Wait {
        key: String,
        min_version: u64,
        timeout_ms: u64,
    },
    Acquire {
        name: String,
        ttl_ms: u64,
        /// How long to queue if the lease is held; `None` or 0: not at all.
        wait_ms: Option<u64>,
    },
    Renew {
        name: String,
        /// The grant being renewed (its token); `None`: whichever the
        /// caller holds.
        token: Option<u64>,
        /// A new TTL; `None`: the grant's own.
        ttl_ms: Option<u64>,
    },
    Release {
        name: String,
        token: Option<u64>,
        /// The lead's (and the operator's) way to break another's lease.
        overriding: bool,
    },
    Leases,
}

/// What a store-side event asks of the core.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// Time has passed: end the waits and free the leases due by now. The
    /// shell runs it at [`Core::next_deadline`].
    Tick,
    /// This Pod run stopped or died: its leases are freed (and passed to
    /// their queues), its waits dropped.
    HolderGone(PodRef),
    /// The waiting caller went away (its connection closed).
    Cancel(Ticket),
    /// The store just opened: move every lease deadline into this boot
    /// (see [`crate::clock`]) and free those that passed while it was shut.
    Rebase,
}

/// A value as `get` returns it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Found {
    pub key: Key,
    #[serde(with = "serde_bytes")]
    pub value: Vec<u8>,
    pub version: u64,
    pub written_by: Writer,
    pub written_at_ms: u64,
}

/// One key of a list answer (no value: a list stays small).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Listed {
    pub key: Key,
    pub version: u64,
    pub written_by: Writer,
    pub written_at_ms: u64,
    pub value_bytes: usize,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Listing {
    /// In key order, at most [`crate::limits::MAX_LIST`].
    pub entries: Vec<Listed>,
    /// More keys the caller may read match the pattern.
    pub truncated: bool,
}

/// A lease grant as callers see it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseView {
    pub name: LeaseName,
    /// The fencing token, which is also the grant's id.
    pub token: u64,
    pub holder: Holder,
    pub ttl_ms: u64,
    /// Wall clock (ms since the epoch) at which it ends unless renewed.
    pub expires_at_ms: u64,
    pub remaining_ms: u64,
    /// Callers queued for it.
    pub waiting: usize,
}

/// The answer to a request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Outcome {
    Found(Found),
    Written {
        key: Key,
        version: u64,
    },
    Deleted {
        key: Key,
        version: u64,
    },
    Listed(Listing),
    /// The wait is registered; its answer comes as a [`Wake`].
    Waiting {
        ticket: Ticket,
    },
    Granted(LeaseView),
    /// Queued for the lease; the grant (or the time-out) comes as a [`Wake`].
    Queued {
        ticket: Ticket,
    },
    Renewed(LeaseView),
    Released {
        name: LeaseName,
        token: u64,
    },
    Leases(Vec<LeaseView>),
}

/// The answer to a waiting caller: `Found` or `Granted`, or `kv.timed_out`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Wake {
    pub ticket: Ticket,
    pub answer: Result<Outcome, KvError>,
}

/// What one request or event changes. See the module comment.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    pub commit: Commit,
    pub wakes: Vec<Wake>,
    /// Waits that end (the woken among them), and the one that begins.
    removed: BTreeSet<Ticket>,
    added: Option<Waiter>,
}

impl Plan {
    /// Whether applying it changes nothing at all.
    pub fn is_empty(&self) -> bool {
        self.commit.is_empty() && self.removed.is_empty() && self.added.is_none()
    }

    /// The wait this plan begins, if any.
    pub fn added(&self) -> Option<&Waiter> {
        self.added.as_ref()
    }
}

/// A layer's store, pure: its durable state and who waits on it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Core {
    layer: Layer,
    waits: Waits,
}

impl Core {
    /// A store just opened on `layer` (nobody waits yet). Plan
    /// [`Event::Rebase`] before serving.
    pub fn new(layer: Layer) -> Core {
        Core { layer, waits: Waits::new() }
    }

    pub fn layer(&self) -> &Layer {
        &self.layer
    }

    pub fn waits(&self) -> &Waits {
        &self.waits
    }

    /// Plans `op` for `caller` at `now`.
    pub fn plan(&self, caller: &Caller, op: &Op, now: &Now) -> Result<(Plan, Outcome), KvError> {
        let mut draft = Draft::new(&self.layer, &self.waits);
        let outcome = match op {
            Op::Get { key } => kv::get(&draft, caller, key)?,
            Op::Set { key, value, expect, overriding } => {
                kv::set(&mut draft, caller, key, value, *expect, *overriding, now)?
            }
            Op::Delete { key, overriding } => kv::delete(&mut draft, caller, key, *overriding)?,
            Op::List { pattern } => kv::list(&draft, caller, pattern)?,
            Op::Wait { key, min_version, timeout_ms } => {
                kv::wait(&mut draft, caller, key, *min_version, *timeout_ms, now)?
            }
            Op::Acquire { name, ttl_ms, wait_ms } => lease::acquire(&mut draft, caller, name, *ttl_ms, *wait_ms, now)?,
            Op::Renew { name, token, ttl_ms } => lease::renew(&mut draft, caller, name, *token, *ttl_ms, now)?,
            Op::Release { name, token, overriding } => {
                lease::release(&mut draft, caller, name, *token, *overriding, now)?
            }
            Op::Leases => lease::list(&draft, now),
        };
        Ok((draft.finish(), outcome))
    }

    /// Plans an event of time or of the shell.
    pub fn plan_event(&self, event: &Event, now: &Now) -> Plan {
        let mut draft = Draft::new(&self.layer, &self.waits);
        match event {
            Event::Tick => lease::tick(&mut draft, now),
            Event::HolderGone(pod) => lease::holder_gone(&mut draft, pod, now),
            Event::Cancel(ticket) => draft.drop_waiter(*ticket),
            Event::Rebase => lease::rebase(&mut draft, now),
        }
        draft.finish()
    }

    /// Applies a plan made against this very state (the last one applied
    /// before it was planned).
    ///
    /// # Panics
    /// If the plan does not fit the state: plans come from this core, so
    /// that is a bug in it or in the order the shell applies plans.
    pub fn apply(&mut self, plan: &Plan) {
        if let Err(e) = self.layer.apply(&plan.commit) {
            panic!("a plan broke the layer's invariants: {e}");
        }
        for ticket in &plan.removed {
            self.waits.remove(*ticket);
        }
        if let Some(waiter) = &plan.added {
            self.waits.add(waiter.clone());
        }
    }

    /// The monotonic instant (ms) at which [`Event::Tick`] has work: the
    /// first wait to end or lease to expire.
    pub fn next_deadline(&self, now: &Now) -> Option<u64> {
        let leases = self.layer.grants().map(|g| now.mono_ms.saturating_add(g.remaining_ms(now)));
        leases.chain(self.waits.earliest()).min()
    }

    /// Every Pod run that holds a lease or waits here: after a restart the
    /// shell checks each is still running and reports those that are not
    /// ([`Event::HolderGone`]).
    pub fn parties(&self) -> BTreeSet<PodRef> {
        let holders = self.layer.grants().filter_map(|g| match &g.holder {
            Holder::Pod(pod) => Some(pod.clone()),
            Holder::Operator => None,
        });
        holders.chain(self.waits.all().filter_map(|w| w.owner.clone())).collect()
    }
}

/// A plan being built: changes overlaid on the layer, each record at most
/// once (a later change of the same record replaces the earlier).
pub(crate) struct Draft<'a> {
    layer: &'a Layer,
    waits: &'a Waits,
    changes: BTreeMap<Record, Change>,
    wakes: Vec<Wake>,
    removed: BTreeSet<Ticket>,
    added: Option<Waiter>,
}

impl<'a> Draft<'a> {
    fn new(layer: &'a Layer, waits: &'a Waits) -> Draft<'a> {
        Draft { layer, waits, changes: BTreeMap::new(), wakes: Vec::new(), removed: BTreeSet::new(), added: None }
    }

    pub(crate) fn layer(&self) -> &'a Layer {
        self.layer
    }

    fn counter(&self, partition: &Partition) -> u64 {
        match self.changes.get(&Record::Counter(partition.clone())) {
            Some(Change::Counter { value, .. }) => *value,
            _ => self.layer.counter(partition),
        }
    }

    /// Draws the next version (or token) of `partition`.
    pub(crate) fn next_version(&mut self, partition: Partition) -> u64 {
        let value = self.counter(&partition) + 1;
        self.changes.insert(Record::Counter(partition.clone()), Change::Counter { partition, value });
        value
    }

    pub(crate) fn put(&mut self, key: Key, entry: crate::state::Entry) {
        self.changes.insert(Record::Entry(key.clone()), Change::Put { key, entry });
    }

    pub(crate) fn delete(&mut self, key: Key) {
        self.changes.insert(Record::Entry(key.clone()), Change::Delete { key });
    }

    /// The grant of `name` as this draft leaves it.
    pub(crate) fn grant(&self, name: &LeaseName) -> Option<&Grant> {
        match self.changes.get(&Record::Lease(name.clone())) {
            Some(Change::Grant(grant)) => Some(grant),
            Some(_) => None,
            None => self.layer.grant(name),
        }
    }

    pub(crate) fn set_grant(&mut self, grant: Grant) {
        self.changes.insert(Record::Lease(grant.name.clone()), Change::Grant(grant));
    }

    pub(crate) fn free(&mut self, name: &LeaseName) {
        let record = Record::Lease(name.clone());
        if self.layer.grant(name).is_some() {
            self.changes.insert(record, Change::Free { name: name.clone() });
        } else {
            self.changes.remove(&record);
        }
    }

    /// The waiters of `key` this draft has not ended, in arrival order.
    pub(crate) fn key_waiters(&self, key: &Key) -> Vec<&'a Waiter> {
        self.waits.on_key(key).filter(|w| !self.removed.contains(&w.ticket)).collect()
    }

    /// The queue of `name` this draft has not ended, in arrival order.
    pub(crate) fn lease_queue(&self, name: &LeaseName) -> Vec<&'a Waiter> {
        self.waits.on_lease(name).filter(|w| !self.removed.contains(&w.ticket)).collect()
    }

    pub(crate) fn waits(&self) -> &'a Waits {
        self.waits
    }

    /// Ends the wait of `ticket` with an answer, which is worked out once
    /// the waiter has left (so a lease view does not count it as queued).
    pub(crate) fn wake(&mut self, ticket: Ticket, answer: impl FnOnce(&Self) -> Result<Outcome, KvError>) {
        let fresh = self.removed.insert(ticket);
        assert!(fresh, "waiter {ticket:?} answered twice in one plan");
        let answer = answer(self);
        self.wakes.push(Wake { ticket, answer });
    }

    pub(crate) fn drop_waiter(&mut self, ticket: Ticket) {
        if self.waits.get(ticket).is_some() {
            self.removed.insert(ticket);
        }
    }

    /// Begins a wait; refused past [`crate::limits::MAX_WAITERS`].
    pub(crate) fn add_waiter(
        &mut self,
        caller: &Caller,
        wanted: Wanted,
        timeout_ms: u64,
        now: &Now,
    ) -> Result<Ticket, KvError> {
        if self.waits.len() - self.removed.len() >= crate::limits::MAX_WAITERS {
            return Err(KvError::TooManyWaiters);
        }
        assert!(self.added.is_none(), "one request begins at most one wait");
        let ticket = self.waits.next_ticket();
        self.added = Some(Waiter {
            ticket,
            until_mono_ms: now.mono_ms.saturating_add(timeout_ms),
            timeout_ms,
            owner: caller.pod().cloned(),
            wanted,
        });
        Ok(ticket)
    }

    fn finish(self) -> Plan {
        Plan {
            commit: Commit { changes: self.changes.into_values().collect() },
            wakes: self.wakes,
            removed: self.removed,
            added: self.added,
        }
    }
}
