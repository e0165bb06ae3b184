//! The registry's in-memory state and the plans that change it.
//!
//! An operation never mutates state directly: it returns a [`Plan`] (records
//! to put, names to delete). The daemon applies the same plan to memory and
//! to the store, so what is served and what is durable cannot drift.

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Bound;

use rustc_hash::FxHashMap;
use scope::{PodName, Scope};

use crate::answers::{AnswerChange, Answers, Remembered, StreamId};
use crate::index::WriteIndex;
use crate::limits::MAX_DEPTH;
use crate::record::{AllocState, Allocation, NodeName};
use crate::RegistryError;

/// A record with its scope already built (the scope is what answers checks
/// and validates delegations; the record is what is stored).
#[derive(Debug, Clone)]
pub struct Held {
    pub rec: Allocation,
    pub scope: Scope,
}

impl Held {
    /// Builds the scope of a record read from outside (store, request),
    /// re-validating limits and layer disjointness.
    pub fn from_record(rec: Allocation) -> Result<Held, RegistryError> {
        rec.validate().map_err(RegistryError::Corrupt)?;
        let scope = Scope::from_snapshot(rec.snapshot())?;
        Ok(Held { rec, scope })
    }
}

/// The outcome of one operation, not yet applied.
#[derive(Debug, Default)]
pub struct Plan {
    /// The fence counter when the plan was made: the plan handed out
    /// `first_fence..next_fence` (a shared store turns them into the
    /// revision of its transaction).
    pub first_fence: u64,
    pub puts: Vec<Held>,
    pub deletes: Vec<PodName>,
    pub next_fence: u64,
    /// The request's answer to remember (and the evictions that make room),
    /// committed with the change.
    pub answers: Vec<AnswerChange>,
}

/// Collects a plan, stamping each written record with a fresh fence.
pub struct PlanBuilder {
    plan: Plan,
}

impl PlanBuilder {
    pub fn new(state: &State) -> PlanBuilder {
        PlanBuilder { plan: Plan { first_fence: state.next_fence, next_fence: state.next_fence, ..Plan::default() } }
    }

    /// Queues `rec` (whose scope is `scope`) for writing. Asserts the
    /// record and its scope agree: they are written and served together.
    pub fn put(&mut self, mut rec: Allocation, scope: Scope) -> &Allocation {
        assert_eq!(&rec.layers, scope.layers(), "record and scope of {} disagree on layers", rec.name);
        assert_eq!(rec.allow, scope.allow(), "record and scope of {} disagree on allow", rec.name);
        assert_eq!(rec.deny, scope.deny(), "record and scope of {} disagree on deny", rec.name);
        rec.fence = self.plan.next_fence;
        self.plan.next_fence += 1;
        if let Err(e) = rec.validate() {
            panic!("an operation produced an invalid record: {e}");
        }
        self.plan.puts.push(Held { rec, scope });
        let last = self.plan.puts.len() - 1;
        &self.plan.puts[last].rec
    }

    pub fn delete(&mut self, name: PodName) {
        self.plan.deletes.push(name);
    }

    pub fn finish(self) -> Plan {
        self.plan
    }
}

/// Every allocation, plus the indexes that keep operations off full scans.
#[derive(Debug, Default, Clone)]
pub struct State {
    pods: BTreeMap<PodName, Held>,
    index: WriteIndex,
    sessions: FxHashMap<String, PodName>,
    /// Pods by the parent they lost (`Allocation::former_parent`), so a
    /// reclaim or a restore finds them without a scan.
    moved_from: FxHashMap<PodName, BTreeSet<PodName>>,
    /// Pods that hold scratch paths (few: a delegate checks its rules
    /// against theirs, not against every allocation).
    scratch_holders: BTreeSet<PodName>,
    next_fence: u64,
    /// The last answer of every request stream (see `answers`).
    answers: Answers,
    /// What a registry shared with other nodes (etcd) adds; empty on the
    /// embedded one.
    shared: Shared,
}

/// A node's view of a shared table: whose node this is, each record's
/// fencing token (the create revision of its key; its fence is the key's
/// mod revision), the revision the view is complete through, and the
/// node's own Pods that lost their claim.
#[derive(Debug, Default, Clone)]
pub struct Shared {
    local: Option<NodeName>,
    tokens: FxHashMap<PodName, u64>,
    /// Every change up to this revision is applied (the change feed's
    /// position); the node's own commits may be ahead of it.
    through: u64,
    /// Names deleted at a revision above `through`, so that an older put
    /// arriving late from the feed does not bring them back.
    tombstones: FxHashMap<PodName, u64>,
    /// The node's own Pods whose allocation went with a lost lease and
    /// could not be claimed again: why. Requests about them are
    /// `registry.fenced`.
    fenced: BTreeMap<PodName, String>,
}

/// What applying changes from the shared store did.
#[derive(Debug, Default)]
pub struct Applied {
    pub changed: Vec<PodName>,
    /// The node's own records that were deleted by someone else: its lease
    /// was lost and etcd removed them.
    pub lost: Vec<Allocation>,
    pub bad: Vec<String>,
}

/// One revision's worth of changes from the shared store: records as
/// stored (fence = mod revision) with their tokens, and deleted names.
#[derive(Debug, Default, Clone)]
pub struct Remote {
    pub revision: u64,
    pub puts: Vec<(Allocation, u64)>,
    pub deletes: Vec<PodName>,
}

impl State {
    pub fn new() -> State {
        State { next_fence: 1, ..State::default() }
    }

    /// Rebuilds state (and its indexes) from stored records, checking every
    /// record and the links between them.
    pub fn from_records(records: Vec<Allocation>, next_fence: u64) -> Result<State, RegistryError> {
        State::from_stored(records, Vec::new(), next_fence)
    }

    /// [`State::from_records`], with the remembered answers.
    pub fn from_stored(
        records: Vec<Allocation>,
        answers: Vec<(StreamId, Remembered)>,
        next_fence: u64,
    ) -> Result<State, RegistryError> {
        let mut state = State::new();
        state.answers = Answers::from_stored(answers).map_err(RegistryError::Corrupt)?;
        let mut max_fence = 0;
        for rec in records {
            max_fence = max_fence.max(rec.fence);
            let held = Held::from_record(rec)?;
            if state.pods.contains_key(&held.rec.name) {
                return Err(RegistryError::Corrupt(format!("{} is stored twice", held.rec.name)));
            }
            state.insert(held);
        }
        if next_fence <= max_fence {
            return Err(RegistryError::Corrupt(format!(
                "fence counter {next_fence} is not above record fence {max_fence}"
            )));
        }
        state.next_fence = next_fence;
        state.check_links().map_err(RegistryError::Corrupt)?;
        Ok(state)
    }

    pub fn get(&self, name: &PodName) -> Option<&Held> {
        self.pods.get(name)
    }

    /// This node, on a shared registry (`None`: the embedded one).
    pub fn local_node(&self) -> Option<&NodeName> {
        self.shared.local.as_ref()
    }

    /// Makes this the view of node `node` of a shared table.
    pub fn set_local_node(&mut self, node: NodeName) {
        self.shared.local = Some(node);
    }

    /// Whether `rec` belongs to another node (only that node changes it).
    pub fn is_remote(&self, rec: &Allocation) -> bool {
        rec.node.is_some() && rec.node.as_ref() != self.shared.local.as_ref()
    }

    /// The fencing token of `name` (the create revision of its key; 0 on
    /// the embedded registry).
    pub fn token(&self, name: &PodName) -> u64 {
        self.shared.tokens.get(name).copied().unwrap_or(0)
    }

    /// The revision every change up to which is applied (0: embedded).
    pub fn through(&self) -> u64 {
        self.shared.through
    }

    /// Why the node's own Pod `name` is fenced, if it is.
    pub fn fenced(&self, name: &PodName) -> Option<&str> {
        self.shared.fenced.get(name).map(String::as_str)
    }

    pub fn fenced_pods(&self) -> impl Iterator<Item = (&PodName, &str)> {
        self.shared.fenced.iter().map(|(n, r)| (n, r.as_str()))
    }

    pub fn fence_pod(&mut self, name: PodName, reason: String) {
        self.shared.fenced.insert(name, reason);
    }

    pub fn unfence_pod(&mut self, name: &PodName) {
        self.shared.fenced.remove(name);
    }

    pub fn len(&self) -> usize {
        self.pods.len()
    }

    pub fn is_empty(&self) -> bool {
        self.pods.is_empty()
    }

    pub fn next_fence(&self) -> u64 {
        self.next_fence
    }

    pub fn index(&self) -> &WriteIndex {
        &self.index
    }

    pub fn answers(&self) -> &Answers {
        &self.answers
    }

    /// The pod holding `session`, if any.
    pub fn by_session(&self, session: &str) -> Option<&Held> {
        self.sessions.get(session).and_then(|n| self.pods.get(n))
    }

    /// Up to `limit` allocations in name order, starting after `after`.
    pub fn page(&self, after: Option<&PodName>, limit: usize) -> impl Iterator<Item = &Held> {
        let start = match after {
            Some(a) => Bound::Excluded(a),
            None => Bound::Unbounded,
        };
        self.pods.range::<PodName, _>((start, Bound::Unbounded)).map(|(_, h)| h).take(limit)
    }

    /// The allocations that hold scratch paths, in name order.
    pub fn scratch_holders(&self) -> impl Iterator<Item = &Held> {
        self.scratch_holders.iter().filter_map(|name| self.pods.get(name))
    }

    pub fn iter(&self) -> impl Iterator<Item = &Held> {
        self.pods.values()
    }

    /// Number of ancestors of `name` (0 for a top-level Pod), bounded by
    /// [`MAX_DEPTH`] so a corrupt cycle cannot loop forever.
    pub fn depth(&self, name: &PodName) -> usize {
        let mut depth = 0;
        let mut cur = self.pods.get(name).and_then(|h| h.rec.parent.as_ref());
        while let Some(p) = cur {
            depth += 1;
            if depth > MAX_DEPTH {
                break;
            }
            cur = self.pods.get(p).and_then(|h| h.rec.parent.as_ref());
        }
        depth
    }

    /// Pods that lost `parent` (it went away before the Pod holding a layer
    /// for it reclaimed it) and were moved elsewhere.
    pub fn moved_from(&self, parent: &PodName) -> impl Iterator<Item = &Held> {
        self.moved_from.get(parent).into_iter().flatten().filter_map(|n| self.pods.get(n))
    }

    /// Children of `name` that still have an allocation, with the rules
    /// `name` delegated to each.
    pub fn live_children(&self, name: &PodName) -> BTreeMap<PodName, Vec<scope::ScopeRule>> {
        let Some(held) = self.pods.get(name) else { return BTreeMap::new() };
        held.rec
            .layers
            .iter()
            .filter(|(c, _)| self.pods.get(*c).is_some_and(|h| h.rec.parent.as_ref() == Some(name)))
            .map(|(c, rules)| (c.clone(), rules.clone()))
            .collect()
    }

    /// Applies `plan`, which a shared store committed at `revision`: the
    /// fences the plan handed out become that revision (every key a
    /// transaction writes has it as its mod revision), records it created
    /// get it as their token, and names it deleted are remembered until
    /// the feed has passed it.
    ///
    /// The feed may have brought this revision, and later ones, first (the
    /// writer does not hold the state while etcd commits): a record the
    /// view holds at this revision or newer, or no longer holds although
    /// the view is complete through this revision (a later delete, such as
    /// a lost lease's), is left as the view has it.
    pub fn apply_committed(&mut self, mut plan: Plan, revision: u64) {
        let (from, to) = (plan.first_fence, plan.next_fence);
        let remap = |f: u64| if (from..to).contains(&f) { revision } else { f };
        let superseded = |state: &State, name: &PodName| match state.pods.get(name) {
            Some(held) => held.rec.fence >= revision,
            None => {
                revision <= state.shared.through || state.shared.tombstones.get(name).is_some_and(|d| *d >= revision)
            }
        };
        let written: Vec<PodName> = plan.puts.iter().map(|h| h.rec.name.clone()).collect();
        plan.puts.retain(|held| !superseded(self, &held.rec.name));
        plan.deletes.retain(|name| self.pods.get(name).is_some_and(|held| held.rec.fence < revision));
        for held in &mut plan.puts {
            held.rec.fence = remap(held.rec.fence);
            if !self.pods.contains_key(&held.rec.name) {
                self.shared.tokens.insert(held.rec.name.clone(), revision);
            }
            self.shared.tombstones.remove(&held.rec.name);
        }
        for change in &mut plan.answers {
            if let AnswerChange::Put(_, rem) = change {
                rem.reply.map_fences(remap);
            }
        }
        for name in &plan.deletes {
            self.shared.tokens.remove(name);
            self.shared.tombstones.insert(name.clone(), revision);
        }
        plan.next_fence = plan.next_fence.max(revision + 1).max(self.next_fence);
        self.apply(plan);
        // A fenced Pod that registered afresh under the node's new lease
        // (its re-claim, granted where its paths were free) is no longer
        // fenced: this record is its claim now (if the view still holds it
        // at this revision: a later delete keeps the Pod fenced).
        for name in written {
            if self.pods.get(&name).is_some_and(|h| h.rec.fence == revision) {
                self.unfence_pod(&name);
            }
        }
    }

    /// Applies one revision of changes from the shared store's feed. Each
    /// key is applied only if it is newer than what is held (the node's
    /// own commits are applied when they commit, and arrive here again):
    /// a put older than the record's fence or than a later delete is
    /// skipped, and so is a delete older than the record. Returns the
    /// names whose records changed, the node's own records deleted behind
    /// its back (only a lost lease does that), and records that failed
    /// validation (skipped), with the reason.
    pub fn apply_remote(&mut self, batch: Remote) -> Applied {
        let mut applied = Applied::default();
        let Applied { changed, lost, bad } = &mut applied;
        for name in batch.deletes {
            let Some(held) = self.pods.get(&name) else { continue };
            if held.rec.fence > batch.revision {
                continue;
            }
            if !self.is_remote(&held.rec) && self.shared.local.is_some() {
                lost.push(held.rec.clone());
            }
            self.remove(&name);
            self.shared.tokens.remove(&name);
            self.shared.tombstones.insert(name.clone(), batch.revision);
            changed.push(name);
        }
        for (rec, token) in batch.puts {
            let fence = rec.fence;
            let held_newer = self.pods.get(&rec.name).is_some_and(|h| h.rec.fence >= fence);
            let deleted_later = self.shared.tombstones.get(&rec.name).is_some_and(|d| *d >= fence);
            if held_newer || deleted_later {
                continue;
            }
            let name = rec.name.clone();
            match Held::from_record(rec) {
                Ok(held) => {
                    self.remove(&name);
                    self.insert(held);
                    self.shared.tokens.insert(name.clone(), token);
                    changed.push(name);
                }
                Err(e) => bad.push(format!("{name}: {e}")),
            }
        }
        self.advance(batch.revision);
        applied
    }

    /// A remembered answer of this node read back from the shared store.
    pub fn adopt_answer(&mut self, stream: StreamId, rem: Remembered) {
        self.answers.adopt(stream, rem);
    }

    /// Everything up to `revision` is applied: the feed's position moves
    /// (never back) and tombstones it passed are dropped.
    pub fn advance(&mut self, revision: u64) {
        if revision <= self.shared.through {
            return;
        }
        self.shared.through = revision;
        self.shared.tombstones.retain(|_, d| *d > revision);
        self.next_fence = self.next_fence.max(revision + 1);
    }

    /// Brings the view in line with a full read of the shared store at
    /// `revision` (after a compaction, a broken watch, or the periodic
    /// reconcile): records read are applied as puts; records held that
    /// the read lacks and that are not newer than it are gone, so their
    /// deletes are applied. Returns the names that changed.
    pub fn resync(&mut self, records: Vec<(Allocation, u64)>, revision: u64) -> Applied {
        let present: BTreeSet<PodName> = records.iter().map(|(r, _)| r.name.clone()).collect();
        let gone: Vec<PodName> = self
            .pods
            .values()
            .filter(|h| h.rec.fence <= revision && !present.contains(&h.rec.name))
            .map(|h| h.rec.name.clone())
            .collect();
        let mut applied = self.apply_remote(Remote { revision, puts: records, deletes: gone });
        applied.changed.sort();
        applied.changed.dedup();
        applied
    }

    pub fn apply(&mut self, plan: Plan) {
        assert!(plan.next_fence >= self.next_fence, "fence counter must never go back");
        for name in &plan.deletes {
            self.remove(name);
        }
        for held in plan.puts {
            self.replace(held);
        }
        for change in plan.answers {
            self.answers.apply(change);
        }
        self.next_fence = plan.next_fence;
    }

    /// Puts `held` in place of the record of the same name, touching the
    /// indexes only when what they index changed (most changes are layers,
    /// pid or state).
    fn replace(&mut self, held: Held) {
        let same_keys = self.pods.get(&held.rec.name).is_some_and(|old| {
            old.rec.allow == held.rec.allow
                && old.rec.former_parent == held.rec.former_parent
                && old.rec.scratch == held.rec.scratch
        });
        if !same_keys {
            self.remove(&held.rec.name);
            self.insert(held);
            return;
        }
        if let Some(old) = self.pods.get(&held.rec.name) {
            if self.sessions.get(&old.rec.session) == Some(&old.rec.name) {
                self.sessions.remove(&old.rec.session);
            }
        }
        if held.rec.state == AllocState::Live && !held.rec.session.is_empty() {
            self.sessions.insert(held.rec.session.clone(), held.rec.name.clone());
        }
        self.pods.insert(held.rec.name.clone(), held);
    }

    fn insert(&mut self, held: Held) {
        for rule in held.rec.allow_writes() {
            self.index.insert(&held.rec.name, rule);
        }
        if held.rec.state == AllocState::Live && !held.rec.session.is_empty() {
            self.sessions.insert(held.rec.session.clone(), held.rec.name.clone());
        }
        if let Some(former) = &held.rec.former_parent {
            self.moved_from.entry(former.clone()).or_default().insert(held.rec.name.clone());
        }
        if !held.rec.scratch.is_empty() {
            self.scratch_holders.insert(held.rec.name.clone());
        }
        self.pods.insert(held.rec.name.clone(), held);
    }

    fn remove(&mut self, name: &PodName) {
        let Some(held) = self.pods.remove(name) else { return };
        for rule in held.rec.allow_writes() {
            self.index.remove(name, rule);
        }
        if self.sessions.get(&held.rec.session) == Some(name) {
            self.sessions.remove(&held.rec.session);
        }
        self.scratch_holders.remove(name);
        if let Some(former) = &held.rec.former_parent {
            if let Some(set) = self.moved_from.get_mut(former) {
                set.remove(name);
                if set.is_empty() {
                    self.moved_from.remove(former);
                }
            }
        }
    }

    /// Parent links and layers agree: a child's parent exists and holds a
    /// layer for it; a layer naming an existing Pod names one of its own
    /// children. O(n); run at load time and by tests, never per operation.
    pub fn check_links(&self) -> Result<(), String> {
        for held in self.pods.values() {
            let rec = &held.rec;
            if let Some(parent) = &rec.parent {
                match self.pods.get(parent) {
                    None => return Err(format!("{} names missing parent {parent}", rec.name)),
                    Some(p) if !p.rec.layers.contains_key(&rec.name) => {
                        return Err(format!("{} has no layer for its child {}", parent, rec.name))
                    }
                    Some(_) => {}
                }
            }
            for child in rec.layers.keys() {
                if let Some(c) = self.pods.get(child) {
                    if c.rec.parent.as_ref() != Some(&rec.name) {
                        return Err(format!(
                            "{} holds a layer for {child}, whose parent is {:?}",
                            rec.name, c.rec.parent
                        ));
                    }
                }
            }
            if self.depth(&rec.name) > MAX_DEPTH {
                return Err(format!("{} has a parent chain deeper than {MAX_DEPTH} (a cycle?)", rec.name));
            }
        }
        Ok(())
    }
}
