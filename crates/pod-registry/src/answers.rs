//! Request ids, and the answers the registry remembers for them.
//!
//! Why: a mutation whose answer was lost (the daemon died after the commit,
//! the connection broke) must be safe to send again and get the answer the
//! first one got. A reclaim that reparented survivors is the case that
//! matters: run a second time it would find the child gone and report
//! nobody, and its caller would give back a region a grandchild still
//! holds. So every mutation carries a [`RequestId`]: a stream (a random
//! 128-bit number the client draws once per sequence of calls) and a
//! sequence number that grows along that stream. Like a client session in
//! a replicated state machine, the registry keeps, per stream, the last
//! sequence number it committed and that request's answer, written in the
//! same commit as the change itself. A request whose id is the stream's last
//! gets the remembered answer and changes nothing; a lower one is stale
//! (`registry.stale_request`); a higher one runs and replaces it.
//!
//! A stream has one request in flight at a time (a client sends the next
//! only after the previous answered or was given up), so one answer per
//! stream is all a retry needs. Streams are random, so the same ids work
//! for a registry shared by many machines (the etcd backend stores each
//! stream's entry in the transaction of the change).
//!
//! Bound: [`MAX_STREAMS`] streams and [`MAX_ANSWER_BYTES`] of answers; past
//! either the least recently used stream is forgotten. A retry of a
//! forgotten stream's last request runs again as a new request, so a client
//! must retry within the time the registry takes to see that many other
//! streams (the client retries at once, within `START_TIMEOUT`).
//! Refusals are not remembered: they change nothing, so running the request
//! again is the same as if the first had arrived later.
//!
//! Pure: no I/O; the store persists entries through the `Store` seam.

use std::collections::BTreeMap;
use std::fmt;

use rustc_hash::FxHashMap;
use serde::{Deserialize, Serialize};

use crate::wire::Reply;

/// Most streams whose last answer is remembered.
pub const MAX_STREAMS: usize = 16_384;
/// Most bytes of remembered answers (their encoded size).
pub const MAX_ANSWER_BYTES: usize = 64 << 20;

/// A client's sequence of calls: 128 random bits, as 32 hex digits on the
/// wire and in the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct StreamId(pub u128);

impl StreamId {
    /// A fresh random stream (from the kernel's random source).
    pub fn random() -> std::io::Result<StreamId> {
        use std::io::Read;
        let mut bytes = [0u8; 16];
        std::fs::File::open("/dev/urandom")?.read_exact(&mut bytes)?;
        Ok(StreamId(u128::from_le_bytes(bytes)))
    }
}

impl fmt::Display for StreamId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:032x}", self.0)
    }
}

impl From<StreamId> for String {
    fn from(s: StreamId) -> String {
        s.to_string()
    }
}

impl TryFrom<String> for StreamId {
    type Error = String;
    fn try_from(s: String) -> Result<StreamId, String> {
        if s.len() != 32 || !s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) {
            return Err(format!(
                "stream id {:?} is not 32 lowercase hex digits",
                s.chars().take(40).collect::<String>()
            ));
        }
        u128::from_str_radix(&s, 16).map(StreamId).map_err(|e| format!("stream id: {e}"))
    }
}

/// One request's identity: its stream and its place in it (from 1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct RequestId {
    pub stream: StreamId,
    pub seq: u64,
}

impl fmt::Display for RequestId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.stream, self.seq)
    }
}

/// A stream's last committed request and its answer, as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Remembered {
    pub seq: u64,
    pub reply: Reply,
    /// When it was last used, in the registry's use counter (orders
    /// eviction; survives restarts with the entry).
    pub used: u64,
    /// Encoded size of `reply`, counted against [`MAX_ANSWER_BYTES`].
    pub bytes: usize,
}

/// What the table says about a request id.
#[derive(Debug, PartialEq, Eq)]
pub enum Lookup<'a> {
    /// Not seen: run it.
    New,
    /// The stream's last request: answer this, change nothing.
    Replay(&'a Reply),
    /// Older than the stream's last request: its answer is gone.
    Stale { last: u64 },
}

/// Every remembered answer, with the eviction order.
#[derive(Debug, Default, Clone)]
pub struct Answers {
    by_stream: FxHashMap<StreamId, Remembered>,
    by_use: BTreeMap<u64, StreamId>,
    bytes: usize,
    next_use: u64,
}

/// A change of the table, applied to memory and to the store together.
#[derive(Debug, Clone)]
pub enum AnswerChange {
    Put(StreamId, Box<Remembered>),
    Forget(StreamId),
}

impl Answers {
    /// Rebuilds the table from stored entries.
    pub fn from_stored(entries: Vec<(StreamId, Remembered)>) -> Result<Answers, String> {
        let mut answers = Answers::default();
        for (stream, rem) in entries {
            if answers.by_use.contains_key(&rem.used) {
                return Err(format!("two remembered answers share use number {}", rem.used));
            }
            answers.next_use = answers.next_use.max(rem.used + 1);
            answers.insert(stream, rem);
        }
        Ok(answers)
    }

    pub fn len(&self) -> usize {
        self.by_stream.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_stream.is_empty()
    }

    pub fn bytes(&self) -> usize {
        self.bytes
    }

    pub fn get(&self, stream: &StreamId) -> Option<&Remembered> {
        self.by_stream.get(stream)
    }

    pub fn lookup(&self, id: &RequestId) -> Lookup<'_> {
        match self.by_stream.get(&id.stream) {
            Some(rem) if rem.seq == id.seq => Lookup::Replay(&rem.reply),
            Some(rem) if id.seq < rem.seq => Lookup::Stale { last: rem.seq },
            _ => Lookup::New,
        }
    }

    /// The changes that remember `reply` as the answer to `id`: the
    /// evictions that keep the table within its bounds, then the entry.
    pub fn remember(&self, id: &RequestId, reply: &Reply) -> Vec<AnswerChange> {
        let bytes = rmp_serde::to_vec(reply).map_or(0, |v| v.len());
        let rem = Remembered { seq: id.seq, reply: reply.clone(), used: self.next_use, bytes };
        let mut changes = Vec::new();
        let replaced = self.by_stream.get(&id.stream).map_or(0, |r| r.bytes);
        let mut count = self.by_stream.len() + usize::from(!self.by_stream.contains_key(&id.stream));
        let mut total = self.bytes - replaced + bytes;
        for stream in self.by_use.values() {
            if count <= MAX_STREAMS && total <= MAX_ANSWER_BYTES {
                break;
            }
            if *stream == id.stream {
                continue;
            }
            let old = &self.by_stream[stream];
            count -= 1;
            total -= old.bytes;
            changes.push(AnswerChange::Forget(*stream));
        }
        changes.push(AnswerChange::Put(id.stream, Box::new(rem)));
        changes
    }

    /// Takes in an entry this registry wrote that reached it another way
    /// (a shared store's change feed, after a commit whose answer was
    /// lost): kept only if it is newer than the stream's entry, and given a
    /// fresh use number.
    pub fn adopt(&mut self, stream: StreamId, mut rem: Remembered) {
        if self.by_stream.get(&stream).is_some_and(|held| held.seq >= rem.seq) {
            return;
        }
        rem.used = self.next_use;
        self.apply(AnswerChange::Put(stream, Box::new(rem)));
    }

    pub fn apply(&mut self, change: AnswerChange) {
        match change {
            AnswerChange::Put(stream, rem) => {
                self.remove(&stream);
                self.next_use = self.next_use.max(rem.used + 1);
                self.insert(stream, *rem);
            }
            AnswerChange::Forget(stream) => self.remove(&stream),
        }
        assert_eq!(self.by_stream.len(), self.by_use.len(), "answer table and its use order disagree");
    }

    fn insert(&mut self, stream: StreamId, rem: Remembered) {
        self.bytes += rem.bytes;
        self.by_use.insert(rem.used, stream);
        self.by_stream.insert(stream, rem);
    }

    fn remove(&mut self, stream: &StreamId) {
        if let Some(old) = self.by_stream.remove(stream) {
            self.bytes -= old.bytes;
            self.by_use.remove(&old.used);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::Reply;

    fn id(stream: u128, seq: u64) -> RequestId {
        RequestId { stream: StreamId(stream), seq }
    }

    fn reply(n: usize) -> Reply {
        Reply::Swept { gone: Vec::with_capacity(n) }
    }

    fn remember(a: &mut Answers, id: &RequestId) {
        for c in a.remember(id, &reply(0)) {
            a.apply(c);
        }
    }

    #[test]
    fn the_last_request_of_a_stream_is_replayed_older_ones_are_stale() {
        let mut a = Answers::default();
        assert_eq!(a.lookup(&id(1, 1)), Lookup::New);
        remember(&mut a, &id(1, 1));
        assert_eq!(a.lookup(&id(1, 1)), Lookup::Replay(&reply(0)));
        remember(&mut a, &id(1, 2));
        assert_eq!(a.lookup(&id(1, 1)), Lookup::Stale { last: 2 });
        assert_eq!(a.lookup(&id(1, 3)), Lookup::New);
        assert_eq!(a.lookup(&id(2, 1)), Lookup::New);
        assert_eq!(a.len(), 1);
    }

    #[test]
    fn past_the_bound_the_least_recently_used_stream_goes() {
        let mut a = Answers::default();
        for s in 0..MAX_STREAMS as u128 {
            remember(&mut a, &id(s, 1));
        }
        assert_eq!(a.len(), MAX_STREAMS);
        // Stream 0 used again: stream 1 is now the oldest.
        remember(&mut a, &id(0, 2));
        remember(&mut a, &id(u128::MAX, 1));
        assert_eq!(a.len(), MAX_STREAMS);
        assert_eq!(a.lookup(&id(1, 1)), Lookup::New, "evicted");
        assert!(matches!(a.lookup(&id(0, 2)), Lookup::Replay(_)));
    }

    #[test]
    fn stream_ids_round_trip_as_hex_and_refuse_garbage() {
        let s = StreamId(0xabc);
        let text: String = s.into();
        assert_eq!(text, "00000000000000000000000000000abc");
        assert_eq!(StreamId::try_from(text), Ok(s));
        assert!(StreamId::try_from("xyz".to_string()).is_err());
        assert!(StreamId::try_from("0000000000000000000000000000ABCD".to_string()).is_err());
        assert_ne!(StreamId::random().expect("random"), StreamId::random().expect("random"));
    }
}
