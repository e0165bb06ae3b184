//! A layer's durable state, and the one way it changes: a [`Commit`].
//!
//! Operations never mutate a [`Layer`]; they return a commit (whole records
//! to put or remove, each named at most once), which the store makes
//! durable and then applies here. Opening the store folds its records back
//! into a layer ([`Layer::restore`]), and a commit the write-ahead log still
//! holds is applied again on top: since a commit's changes are whole
//! records and counters come first, applying it over any prefix of itself
//! gives the same layer as applying it once (tested in
//! `tests/replay.rs`). [`Layer::apply`] checks a commit before it changes
//! anything, so a damaged one read back from disk is refused
//! (`kv.corrupt`), not half applied.
//!
//! Volatile state (who is waiting) is not here: it lives in
//! [`crate::Waits`] and does not survive a restart of the lead, whose
//! connections do not either.

use std::collections::BTreeMap;
use std::fmt;
use std::ops::Bound;

use scope::PodName;
use serde::{Deserialize, Serialize};

use crate::caller::{Caller, PodRef};
use crate::clock::{Deadline, Now};
use crate::error::KvError;
use crate::key::{Key, LeaseName, Partition};
use crate::limits::{MAX_KEYS, MAX_LAYER_BYTES, MAX_LEASES, MAX_SLOTS, MAX_VALUE_BYTES};

/// Who wrote a value. The operator shows as `operator`, never as a Pod.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Writer {
    Operator,
    Pod(PodName),
}

impl Writer {
    pub(crate) fn of(caller: &Caller) -> Writer {
        match caller.pod() {
            None => Writer::Operator,
            Some(pod) => Writer::Pod(pod.name.clone()),
        }
    }
}

impl fmt::Display for Writer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Writer::Operator => f.write_str("operator"),
            Writer::Pod(name) => write!(f, "{name}"),
        }
    }
}

/// A stored value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    #[serde(with = "serde_bytes")]
    pub value: Vec<u8>,
    /// Drawn from the key's partition counter: above every version this key
    /// had before, deleted or not.
    pub version: u64,
    pub written_by: Writer,
    /// Wall clock of the write (ms since the epoch), as the shell gave it.
    pub written_at_ms: u64,
}

/// Who holds a lease: a Pod (one run of it), or the operator.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Holder {
    Operator,
    Pod(PodRef),
}

impl Holder {
    pub(crate) fn of(caller: &Caller) -> Holder {
        match caller.pod() {
            None => Holder::Operator,
            Some(pod) => Holder::Pod(pod.clone()),
        }
    }
}

impl fmt::Display for Holder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Holder::Operator => f.write_str("operator"),
            Holder::Pod(pod) => write!(f, "{}", pod.name),
        }
    }
}

/// One grant of a lease.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Grant {
    pub name: LeaseName,
    /// The fencing token, drawn from the layer's lease counter: higher than
    /// every earlier grant's, of this name or any other, across restarts.
    /// It is also the grant's id.
    pub token: u64,
    pub holder: Holder,
    pub ttl_ms: u64,
    pub deadline: Deadline,
    pub granted_at_ms: u64,
}

impl Grant {
    pub fn remaining_ms(&self, now: &Now) -> u64 {
        self.deadline.remaining_ms(self.ttl_ms, now)
    }

    pub fn is_live(&self, now: &Now) -> bool {
        self.remaining_ms(now) > 0
    }
}

/// The record a change writes; a commit names each at most once. Counters
/// sort first, so every prefix of a commit keeps versions at or below their
/// counters.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Record {
    Counter(Partition),
    Entry(Key),
    Lease(LeaseName),
}

/// One change of a commit: a whole record, so applying it again is harmless.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Change {
    Counter { partition: Partition, value: u64 },
    Put { key: Key, entry: Entry },
    Delete { key: Key },
    Grant(Grant),
    Free { name: LeaseName },
}

impl Change {
    pub fn record(&self) -> Record {
        match self {
            Change::Counter { partition, .. } => Record::Counter(partition.clone()),
            Change::Put { key, .. } | Change::Delete { key } => Record::Entry(key.clone()),
            Change::Grant(grant) => Record::Lease(grant.name.clone()),
            Change::Free { name } => Record::Lease(name.clone()),
        }
    }
}

/// What one durable commit writes, in strictly increasing [`Record`]
/// order (so each record at most once, counters first).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Commit {
    pub changes: Vec<Change>,
}

impl Commit {
    pub fn is_empty(&self) -> bool {
        self.changes.is_empty()
    }
}

/// Everything a layer holds, as separate records (what the store keeps).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Records {
    pub counters: Vec<(Partition, u64)>,
    pub entries: Vec<(Key, Entry)>,
    pub grants: Vec<Grant>,
}

/// A layer's durable state.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Layer {
    entries: BTreeMap<Key, Entry>,
    grants: BTreeMap<LeaseName, Grant>,
    counters: BTreeMap<Partition, u64>,
    /// Bytes of keys and values, kept with `entries`.
    bytes: u64,
    /// Slot counters among `counters`.
    slots: usize,
}

fn entry_bytes(key: &Key, entry: &Entry) -> u64 {
    (key.as_str().len() + entry.value.len()) as u64
}

impl Layer {
    pub fn new() -> Layer {
        Layer::default()
    }

    /// The layer a sequence of commits builds from nothing: what the store
    /// replays.
    pub fn replay<'a>(commits: impl IntoIterator<Item = &'a Commit>) -> Result<Layer, KvError> {
        let mut layer = Layer::new();
        for commit in commits {
            layer.apply(commit)?;
        }
        Ok(layer)
    }

    /// Rebuilds a layer from its records, checking them as a commit.
    pub fn restore(records: Records) -> Result<Layer, KvError> {
        let mut changes = Vec::new();
        changes.extend(records.counters.into_iter().map(|(partition, value)| Change::Counter { partition, value }));
        changes.extend(records.entries.into_iter().map(|(key, entry)| Change::Put { key, entry }));
        changes.extend(records.grants.into_iter().map(Change::Grant));
        changes.sort_by_cached_key(Change::record);
        let mut layer = Layer::new();
        layer.apply(&Commit { changes })?;
        Ok(layer)
    }

    pub fn records(&self) -> Records {
        Records {
            counters: self.counters.iter().map(|(p, v)| (p.clone(), *v)).collect(),
            entries: self.entries.iter().map(|(k, e)| (k.clone(), e.clone())).collect(),
            grants: self.grants.values().cloned().collect(),
        }
    }

    pub fn entry(&self, key: &Key) -> Option<&Entry> {
        self.entries.get(key)
    }

    /// Entries whose key starts with `prefix`, in key order.
    pub fn entries_with_prefix<'a>(&'a self, prefix: &'a str) -> impl Iterator<Item = (&'a Key, &'a Entry)> + 'a {
        self.entries
            .range::<str, _>((Bound::Included(prefix), Bound::Unbounded))
            .take_while(move |(k, _)| k.as_str().starts_with(prefix))
    }

    pub fn entries(&self) -> impl Iterator<Item = (&Key, &Entry)> {
        self.entries.iter()
    }

    pub fn grant(&self, name: &LeaseName) -> Option<&Grant> {
        self.grants.get(name)
    }

    pub fn grants(&self) -> impl Iterator<Item = &Grant> {
        self.grants.values()
    }

    pub fn lease_count(&self) -> usize {
        self.grants.len()
    }

    pub fn grant_count(&self) -> usize {
        self.grants.len()
    }

    /// The last version (or token) drawn in `partition`; 0 before the first.
    pub fn counter(&self, partition: &Partition) -> u64 {
        self.counters.get(partition).copied().unwrap_or(0)
    }

    pub fn key_count(&self) -> usize {
        self.entries.len()
    }

    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    pub fn slot_count(&self) -> usize {
        self.slots
    }

    /// Applies `commit`, or refuses it whole (`kv.corrupt`) when it would
    /// break an invariant: a record named twice, a counter moving back, a
    /// version above its counter or below the key's current one, a limit.
    pub fn apply(&mut self, commit: &Commit) -> Result<(), KvError> {
        self.check(commit)?;
        for change in &commit.changes {
            match change {
                Change::Counter { partition, value } => {
                    if self.counters.insert(partition.clone(), *value).is_none()
                        && matches!(partition, Partition::Slot(_))
                    {
                        self.slots += 1;
                    }
                }
                Change::Put { key, entry } => {
                    self.bytes += entry_bytes(key, entry);
                    if let Some(old) = self.entries.insert(key.clone(), entry.clone()) {
                        self.bytes -= entry_bytes(key, &old);
                    }
                }
                Change::Delete { key } => {
                    if let Some(old) = self.entries.remove(key) {
                        self.bytes -= entry_bytes(key, &old);
                    }
                }
                Change::Grant(grant) => {
                    self.grants.insert(grant.name.clone(), grant.clone());
                }
                Change::Free { name } => {
                    self.grants.remove(name);
                }
            }
        }
        Ok(())
    }

    fn check(&self, commit: &Commit) -> Result<(), KvError> {
        let corrupt = |why: String| Err(KvError::Corrupt(why));
        if let Some(pair) = commit.changes.windows(2).find(|pair| pair[0].record() >= pair[1].record()) {
            return corrupt(format!("a commit changes {:?} out of order or twice", pair[1].record()));
        }
        let mut counters: BTreeMap<&Partition, u64> = BTreeMap::new();
        for change in &commit.changes {
            if let Change::Counter { partition, value } = change {
                let before = self.counter(partition);
                if *value < before {
                    return corrupt(format!("the counter of {partition:?} would move back from {before} to {value}"));
                }
                counters.insert(partition, *value);
            }
        }
        let counter_after = |p: &Partition| counters.get(p).copied().unwrap_or_else(|| self.counter(p));
        let new_slots = counters.keys().filter(|p| matches!(p, Partition::Slot(_)) && !self.counters.contains_key(p));
        let slots = self.slots + new_slots.count();
        let (mut keys, mut bytes, mut grants) = (self.entries.len(), self.bytes, self.grants.len());
        for change in &commit.changes {
            match change {
                Change::Counter { .. } => {}
                Change::Put { key, entry } => {
                    if entry.value.len() > MAX_VALUE_BYTES {
                        return corrupt(format!("{key} holds {} bytes", entry.value.len()));
                    }
                    let counter = counter_after(&key.partition());
                    if entry.version == 0 || entry.version > counter {
                        return corrupt(format!("{key} is at version {} but its counter at {counter}", entry.version));
                    }
                    bytes += entry_bytes(key, entry);
                    match self.entries.get(key) {
                        Some(old) if old.version > entry.version => {
                            return corrupt(format!(
                                "{key} would go back from version {} to {}",
                                old.version, entry.version
                            ));
                        }
                        Some(old) => bytes -= entry_bytes(key, old),
                        None => keys += 1,
                    }
                }
                Change::Delete { key } => {
                    if let Some(old) = self.entries.get(key) {
                        keys -= 1;
                        bytes -= entry_bytes(key, old);
                    }
                }
                Change::Grant(grant) => {
                    let counter = counter_after(&Partition::Leases);
                    if grant.token == 0 || grant.token > counter {
                        return corrupt(format!(
                            "lease {} has token {} but the counter is at {counter}",
                            grant.name, grant.token
                        ));
                    }
                    match self.grants.get(&grant.name) {
                        Some(old) if old.token > grant.token => {
                            return corrupt(format!(
                                "lease {} would go back from token {} to {}",
                                grant.name, old.token, grant.token
                            ));
                        }
                        Some(_) => {}
                        None => grants += 1,
                    }
                }
                Change::Free { name } => {
                    if self.grants.contains_key(name) {
                        grants -= 1;
                    }
                }
            }
        }
        if keys > MAX_KEYS || bytes > MAX_LAYER_BYTES || slots > MAX_SLOTS || grants > MAX_LEASES {
            return corrupt(format!(
                "the layer would hold {keys} keys, {bytes} bytes, {slots} slots and {grants} leases, past a limit"
            ));
        }
        Ok(())
    }
}
