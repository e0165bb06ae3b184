//! get, set (and cas), delete, list, wait.
//!
//! Every call parses and resolves its key (or pattern) and checks the
//! caller's right first; only then does it look at what the layer holds.
//! A refusal that comes before that look is the same whatever the layer
//! holds, so nothing about keys the caller may not read leaks out of it.

use super::{Draft, Expect, Found, Listed, Listing, Outcome};
use crate::caller::Caller;
use crate::clock::Now;
use crate::error::{Awaited, KvError};
use crate::key::{Key, Partition};
use crate::limits::{MAX_KEYS, MAX_LAYER_BYTES, MAX_LIST, MAX_SLOTS, MAX_VALUE_BYTES, MAX_WAIT_MS};
use crate::pattern::Pattern;
use crate::rights::{check_read, check_write, readable_prefixes};
use crate::state::{Entry, Writer};
use crate::waits::Wanted;

pub(super) fn found(key: &Key, entry: &Entry) -> Found {
    Found {
        key: key.clone(),
        value: entry.value.clone(),
        version: entry.version,
        written_by: entry.written_by.clone(),
        written_at_ms: entry.written_at_ms,
    }
}

pub(super) fn get(draft: &Draft<'_>, caller: &Caller, raw: &str) -> Result<Outcome, KvError> {
    let key = Key::resolve(raw, caller)?;
    check_read(caller, &key)?;
    match draft.layer().entry(&key) {
        Some(entry) => Ok(Outcome::Found(found(&key, entry))),
        None => Err(KvError::NotFound { key: key.to_string() }),
    }
}

pub(super) fn set(
    draft: &mut Draft<'_>,
    caller: &Caller,
    raw: &str,
    value: &[u8],
    expect: Expect,
    overriding: bool,
    now: &Now,
) -> Result<Outcome, KvError> {
    let key = Key::resolve(raw, caller)?;
    check_write(caller, &key, overriding)?;
    if value.len() > MAX_VALUE_BYTES {
        return Err(KvError::ValueTooLarge { len: value.len() });
    }
    let layer = draft.layer();
    let current = layer.entry(&key);
    if let Expect::Version(expected) = expect {
        let actual = current.map(|e| e.version);
        if actual.unwrap_or(0) != expected {
            return Err(KvError::VersionMismatch { key: key.to_string(), expected, actual });
        }
    }
    if current.is_none() && layer.key_count() >= MAX_KEYS {
        return Err(KvError::TooManyKeys);
    }
    let old_bytes = current.map_or(0, |e| key.as_str().len() + e.value.len()) as u64;
    let new_bytes = (key.as_str().len() + value.len()) as u64;
    if layer.bytes() - old_bytes + new_bytes > MAX_LAYER_BYTES {
        return Err(KvError::LayerTooLarge);
    }
    let partition = key.partition();
    if matches!(partition, Partition::Slot(_)) && layer.counter(&partition) == 0 && layer.slot_count() >= MAX_SLOTS {
        return Err(KvError::TooManySlots);
    }
    let version = draft.next_version(partition);
    let entry = Entry { value: value.to_vec(), version, written_by: Writer::of(caller), written_at_ms: now.wall_ms };
    // Only the waiters of this key, and only those it satisfies.
    for waiter in draft.key_waiters(&key) {
        if let Wanted::Key { min_version, .. } = waiter.wanted {
            if version >= min_version {
                draft.wake(waiter.ticket, |_| Ok(Outcome::Found(found(&key, &entry))));
            }
        }
    }
    draft.put(key.clone(), entry);
    Ok(Outcome::Written { key, version })
}

pub(super) fn delete(draft: &mut Draft<'_>, caller: &Caller, raw: &str, overriding: bool) -> Result<Outcome, KvError> {
    let key = Key::resolve(raw, caller)?;
    check_write(caller, &key, overriding)?;
    let Some(entry) = draft.layer().entry(&key) else {
        return Err(KvError::NotFound { key: key.to_string() });
    };
    let version = entry.version;
    draft.delete(key.clone());
    Ok(Outcome::Deleted { key, version })
}

/// Filters before it caps: the answer is the first [`MAX_LIST`] keys the
/// caller may read that match, and `truncated` says whether there are
/// more of those. Both depend only on readable keys, and the walk visits
/// only the ranges the caller may read.
pub(super) fn list(draft: &Draft<'_>, caller: &Caller, raw: &str) -> Result<Outcome, KvError> {
    let pattern = Pattern::resolve(raw, caller)?;
    let wanted = pattern.prefix();
    let ranges: Vec<String> = match readable_prefixes(caller)? {
        None => vec![wanted],
        Some(readable) => readable.into_iter().filter_map(|r| narrower(&wanted, &r)).collect(),
    };
    let mut entries = Vec::new();
    let mut truncated = false;
    'ranges: for range in &ranges {
        for (key, entry) in draft.layer().entries_with_prefix(range) {
            if !pattern.matches(key) {
                continue;
            }
            debug_assert!(check_read(caller, key).is_ok(), "list walked into {key}, which {caller} may not read");
            if entries.len() == MAX_LIST {
                truncated = true;
                break 'ranges;
            }
            entries.push(Listed {
                key: key.clone(),
                version: entry.version,
                written_by: entry.written_by.clone(),
                written_at_ms: entry.written_at_ms,
                value_bytes: entry.value.len(),
            });
        }
    }
    Ok(Outcome::Listed(Listing { entries, truncated }))
}

/// The keys under both prefixes, as one prefix: the longer one if one
/// contains the other, else none.
fn narrower(a: &str, b: &str) -> Option<String> {
    if a.starts_with(b) {
        Some(a.to_string())
    } else if b.starts_with(a) {
        Some(b.to_string())
    } else {
        None
    }
}

pub(super) fn wait(
    draft: &mut Draft<'_>,
    caller: &Caller,
    raw: &str,
    min_version: u64,
    timeout_ms: u64,
    now: &Now,
) -> Result<Outcome, KvError> {
    let key = Key::resolve(raw, caller)?;
    check_read(caller, &key)?;
    if timeout_ms > MAX_WAIT_MS {
        return Err(KvError::WaitOutOfRange { wait_ms: timeout_ms });
    }
    if let Some(entry) = draft.layer().entry(&key) {
        if entry.version >= min_version {
            return Ok(Outcome::Found(found(&key, entry)));
        }
    }
    if timeout_ms == 0 {
        return Err(KvError::TimedOut { awaited: Awaited::Key { key: key.to_string(), min_version }, waited_ms: 0 });
    }
    let ticket = draft.add_waiter(caller, Wanted::Key { key, min_version }, timeout_ms, now)?;
    Ok(Outcome::Waiting { ticket })
}
