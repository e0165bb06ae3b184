//! Walks stored records in order and checks, for each one, that it is the
//! next sequence number, intact, and linked to the one before it. Every
//! reader (`read_from`, `replay`, `verify`) goes through here, so none of
//! them can hand out a record the others would call corrupt.

use crate::envelope::{seq_of, Envelope, Hash};
use crate::LogError;

pub(crate) struct Chain {
    iter: sled::Iter,
    /// The sequence number the next stored key must have.
    expected: u64,
    /// The checksum the next record must link to; `None` when reading starts
    /// mid-log without its predecessor.
    prev: Option<Hash>,
    /// The last durable record; later ones are not handed out yet.
    bound: u64,
    done: bool,
}

impl Chain {
    /// Records `first..=bound` of `records`; `prev` is what record `first`
    /// must link to, if known.
    pub fn new(records: &sled::Tree, first: u64, prev: Option<Hash>, bound: u64) -> Chain {
        let iter = records.range(crate::envelope::key(first)..);
        Chain { iter, expected: first, prev, bound, done: first > bound }
    }

    fn step(&mut self) -> Option<Result<Envelope, LogError>> {
        let (key, value) = match self.iter.next()? {
            Ok(kv) => kv,
            Err(e) => return Some(Err(LogError::storage("read a record", e))),
        };
        let seq = self.expected;
        let Some(found) = seq_of(&key) else {
            return Some(Err(LogError::BadKey { after: seq - 1 }));
        };
        if found != seq {
            return Some(Err(LogError::MissingRecord { seq }));
        }
        let env = match Envelope::open(seq, &value) {
            Ok(env) => env,
            Err(e) => return Some(Err(e)),
        };
        if self.prev.is_some_and(|prev| prev != env.prev) {
            return Some(Err(LogError::BrokenChain { seq }));
        }
        self.prev = Some(env.checksum);
        self.expected += 1;
        Some(Ok(env))
    }
}

impl Iterator for Chain {
    type Item = Result<Envelope, LogError>;

    /// Stops after the first error: nothing after a bad record is trusted.
    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        let item = self.step();
        match &item {
            Some(Ok(_)) => self.done = self.expected > self.bound,
            Some(Err(_)) => self.done = true,
            // The durable bound said a record exists: it vanished.
            None => {
                self.done = true;
                return Some(Err(LogError::MissingRecord { seq: self.expected }));
            }
        }
        item
    }
}
