//! Who is waiting: callers of `wait` (for a key to reach a version) and of
//! `acquire` with a wait (queued for a lease, first come first served).
//!
//! Volatile on purpose: a waiter is a caller on an open connection, and a
//! restart of the lead closes every connection. Tickets only grow, so the
//! tickets waiting on one key or lease, in order, are their arrival order.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::caller::PodRef;
use crate::key::{Key, LeaseName};
use crate::state::Holder;

/// Names one waiting call; its answer comes as a [`crate::Wake`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Ticket(pub u64);

/// What a waiter waits for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Wanted {
    /// `key` at `min_version` or later (0: to exist).
    Key { key: Key, min_version: u64 },
    /// A grant of `name`, to `holder`, for `ttl_ms`.
    Lease { name: LeaseName, holder: Holder, ttl_ms: u64 },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Waiter {
    pub ticket: Ticket,
    /// The monotonic instant the wait ends at, unanswered.
    pub until_mono_ms: u64,
    /// How long it was asked to wait (for the timed-out message).
    pub timeout_ms: u64,
    /// The Pod that waits (none: the operator); its waits go when it does.
    pub owner: Option<PodRef>,
    pub wanted: Wanted,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Waits {
    next_ticket: u64,
    waiters: BTreeMap<Ticket, Waiter>,
    on_key: BTreeMap<Key, BTreeSet<Ticket>>,
    on_lease: BTreeMap<LeaseName, BTreeSet<Ticket>>,
    by_deadline: BTreeSet<(u64, Ticket)>,
}

impl Waits {
    pub fn new() -> Waits {
        Waits::default()
    }

    pub fn len(&self) -> usize {
        self.waiters.len()
    }

    pub fn is_empty(&self) -> bool {
        self.waiters.is_empty()
    }

    /// The ticket the next waiter gets.
    pub fn next_ticket(&self) -> Ticket {
        Ticket(self.next_ticket)
    }

    pub fn get(&self, ticket: Ticket) -> Option<&Waiter> {
        self.waiters.get(&ticket)
    }

    /// The waiters of `key`, in arrival order.
    pub fn on_key<'a>(&'a self, key: &Key) -> impl Iterator<Item = &'a Waiter> + 'a {
        self.on_key.get(key).into_iter().flatten().filter_map(|t| self.waiters.get(t))
    }

    /// The queue of lease `name`, in arrival order.
    pub fn on_lease<'a>(&'a self, name: &LeaseName) -> impl Iterator<Item = &'a Waiter> + 'a {
        self.on_lease.get(name).into_iter().flatten().filter_map(|t| self.waiters.get(t))
    }

    /// Waiters whose wait has ended at monotonic `mono_ms`.
    pub fn due(&self, mono_ms: u64) -> impl Iterator<Item = &Waiter> + '_ {
        self.by_deadline.range(..=(mono_ms, Ticket(u64::MAX))).filter_map(|(_, t)| self.waiters.get(t))
    }

    /// The earliest monotonic instant a wait ends at.
    pub fn earliest(&self) -> Option<u64> {
        self.by_deadline.first().map(|(until, _)| *until)
    }

    pub fn all(&self) -> impl Iterator<Item = &Waiter> {
        self.waiters.values()
    }

    pub(crate) fn add(&mut self, waiter: Waiter) {
        assert_eq!(waiter.ticket, self.next_ticket(), "a waiter was planned against other waits");
        self.next_ticket += 1;
        match &waiter.wanted {
            Wanted::Key { key, .. } => self.on_key.entry(key.clone()).or_default().insert(waiter.ticket),
            Wanted::Lease { name, .. } => self.on_lease.entry(name.clone()).or_default().insert(waiter.ticket),
        };
        self.by_deadline.insert((waiter.until_mono_ms, waiter.ticket));
        self.waiters.insert(waiter.ticket, waiter);
    }

    pub(crate) fn remove(&mut self, ticket: Ticket) {
        let Some(waiter) = self.waiters.remove(&ticket) else { return };
        self.by_deadline.remove(&(waiter.until_mono_ms, ticket));
        match &waiter.wanted {
            Wanted::Key { key, .. } => remove_from(&mut self.on_key, key, ticket),
            Wanted::Lease { name, .. } => remove_from(&mut self.on_lease, name, ticket),
        }
    }
}

fn remove_from<K: Ord>(index: &mut BTreeMap<K, BTreeSet<Ticket>>, at: &K, ticket: Ticket) {
    if let Some(set) = index.get_mut(at) {
        set.remove(&ticket);
        if set.is_empty() {
            index.remove(at);
        }
    }
}
