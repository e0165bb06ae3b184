//! Leases: acquire, renew, release, the lease list, and the events that
//! free leases (time passing, a holder gone, the store reopening).
//!
//! A lease is held by at most one holder at every `now`: a grant is live
//! until its deadline, and a new grant of the name is made only once the
//! last one is released, has passed its deadline, or its holder is gone.
//! A freed lease goes to the first caller still waiting in its queue (first
//! come, first served), in the same commit that frees it; waits that ended
//! by `now` are answered `kv.timed_out` instead. Every grant draws a new
//! fencing token from the layer's lease counter, which is durable and only
//! grows, so tokens never repeat, even across restarts.
//!
//! Lease rights: everyone in the layer (and, at the root, every Pod of the
//! tree) may acquire, list, and renew or release what it holds; the lead
//! and the operator may release another holder's lease with `override`.

use super::{Draft, LeaseView, Outcome};
use crate::caller::{Caller, PodRef};
use crate::clock::{Deadline, Now};
use crate::error::{Access, Awaited, KvError};
use crate::key::{LeaseName, Partition};
use crate::limits::{MAX_LEASES, MAX_TTL_MS, MAX_WAIT_MS, MIN_TTL_MS};
use crate::state::{Grant, Holder};
use crate::waits::Wanted;

fn check_ttl(ttl_ms: u64) -> Result<(), KvError> {
    if (MIN_TTL_MS..=MAX_TTL_MS).contains(&ttl_ms) {
        Ok(())
    } else {
        Err(KvError::TtlOutOfRange { ttl_ms })
    }
}

pub(super) fn view(draft: &Draft<'_>, grant: &Grant, now: &Now) -> LeaseView {
    let remaining_ms = grant.remaining_ms(now);
    LeaseView {
        name: grant.name.clone(),
        token: grant.token,
        holder: grant.holder.clone(),
        ttl_ms: grant.ttl_ms,
        expires_at_ms: now.wall_ms.saturating_add(remaining_ms),
        remaining_ms,
        waiting: draft.lease_queue(&grant.name).len(),
    }
}

fn held(grant: &Grant, holder: &Holder, now: &Now) -> KvError {
    KvError::LeaseHeld {
        name: grant.name.to_string(),
        holder: grant.holder.to_string(),
        remaining_ms: grant.remaining_ms(now),
        yours: &grant.holder == holder,
    }
}

/// The live grant of `name` in the draft, if any.
fn live<'d>(draft: &'d Draft<'_>, name: &LeaseName, now: &Now) -> Option<&'d Grant> {
    draft.grant(name).filter(|g| g.is_live(now))
}

pub(super) fn acquire(
    draft: &mut Draft<'_>,
    caller: &Caller,
    raw: &str,
    ttl_ms: u64,
    wait_ms: Option<u64>,
    now: &Now,
) -> Result<Outcome, KvError> {
    let name = LeaseName::new(raw)?;
    check_ttl(ttl_ms)?;
    let wait_ms = wait_ms.unwrap_or(0);
    if wait_ms > MAX_WAIT_MS {
        return Err(KvError::WaitOutOfRange { wait_ms });
    }
    let holder = Holder::of(caller);
    // A grant that passed its deadline goes to the queue first.
    if draft.grant(&name).is_some_and(|g| !g.is_live(now)) {
        hand_off(draft, &name, now);
    }
    if let Some(grant) = live(draft, &name, now) {
        if grant.holder == holder || wait_ms == 0 {
            return Err(held(grant, &holder, now));
        }
        let wanted = Wanted::Lease { name, holder, ttl_ms };
        let ticket = draft.add_waiter(caller, wanted, wait_ms, now)?;
        return Ok(Outcome::Queued { ticket });
    }
    debug_assert!(draft.lease_queue(&name).is_empty(), "lease {name} is free with callers queued");
    if draft.layer().grant(&name).is_none() && draft.layer().lease_count() >= MAX_LEASES {
        return Err(KvError::TooManyLeases);
    }
    let grant = grant_to(draft, name, holder, ttl_ms, now);
    Ok(Outcome::Granted(view(draft, &grant, now)))
}

fn grant_to(draft: &mut Draft<'_>, name: LeaseName, holder: Holder, ttl_ms: u64, now: &Now) -> Grant {
    let token = draft.next_version(Partition::Leases);
    let grant =
        Grant { name, token, holder, ttl_ms, deadline: Deadline::after(now, ttl_ms), granted_at_ms: now.wall_ms };
    draft.set_grant(grant.clone());
    grant
}

/// The lease `name` is free as of `now` (its grant, if any, is over): the
/// first caller still waiting gets it; waits that ended are answered.
fn hand_off(draft: &mut Draft<'_>, name: &LeaseName, now: &Now) {
    for waiter in draft.lease_queue(name) {
        let Wanted::Lease { holder, ttl_ms, .. } = &waiter.wanted else { continue };
        if waiter.until_mono_ms <= now.mono_ms {
            let awaited = Awaited::Lease { name: name.to_string() };
            draft.wake(waiter.ticket, |_| Err(KvError::TimedOut { awaited, waited_ms: waiter.timeout_ms }));
            continue;
        }
        let grant = grant_to(draft, name.clone(), holder.clone(), *ttl_ms, now);
        draft.wake(waiter.ticket, |d| Ok(Outcome::Granted(view(d, &grant, now))));
        return;
    }
    draft.free(name);
}

pub(super) fn renew(
    draft: &mut Draft<'_>,
    caller: &Caller,
    raw: &str,
    token: Option<u64>,
    ttl_ms: Option<u64>,
    now: &Now,
) -> Result<Outcome, KvError> {
    let name = LeaseName::new(raw)?;
    if let Some(ttl_ms) = ttl_ms {
        check_ttl(ttl_ms)?;
    }
    let holder = Holder::of(caller);
    let grant = live(draft, &name, now).ok_or_else(|| KvError::LeaseNotHeld { name: name.to_string() })?;
    if grant.holder != holder {
        return Err(held(grant, &holder, now));
    }
    if let Some(id) = token.filter(|t| *t != grant.token) {
        return Err(KvError::LeaseStale { name: name.to_string(), token: id, current: grant.token });
    }
    let ttl_ms = ttl_ms.unwrap_or(grant.ttl_ms);
    let renewed = Grant { ttl_ms, deadline: Deadline::after(now, ttl_ms), ..grant.clone() };
    draft.set_grant(renewed.clone());
    Ok(Outcome::Renewed(view(draft, &renewed, now)))
}

pub(super) fn release(
    draft: &mut Draft<'_>,
    caller: &Caller,
    raw: &str,
    token: Option<u64>,
    overriding: bool,
    now: &Now,
) -> Result<Outcome, KvError> {
    let name = LeaseName::new(raw)?;
    let holder = Holder::of(caller);
    let grant = live(draft, &name, now).ok_or_else(|| KvError::LeaseNotHeld { name: name.to_string() })?;
    if grant.holder != holder {
        if !overriding {
            return Err(held(grant, &holder, now));
        }
        if !caller.has_lead_rights() {
            return Err(KvError::Denied {
                who: caller.to_string(),
                access: Access::Write,
                key: name.key(),
                why: "only the lead and the operator release another holder's lease",
            });
        }
    }
    if let Some(id) = token.filter(|t| *t != grant.token) {
        return Err(KvError::LeaseStale { name: name.to_string(), token: id, current: grant.token });
    }
    let released = grant.token;
    hand_off(draft, &name, now);
    Ok(Outcome::Released { name, token: released })
}

pub(super) fn list(draft: &Draft<'_>, now: &Now) -> Outcome {
    let live = draft.layer().grants().filter(|g| g.is_live(now));
    Outcome::Leases(live.map(|g| view(draft, g, now)).collect())
}

pub(super) fn tick(draft: &mut Draft<'_>, now: &Now) {
    let due: Vec<_> = draft.waits().due(now.mono_ms).collect();
    for waiter in due {
        let awaited = match &waiter.wanted {
            Wanted::Key { key, min_version } => Awaited::Key { key: key.to_string(), min_version: *min_version },
            Wanted::Lease { name, .. } => Awaited::Lease { name: name.to_string() },
        };
        draft.wake(waiter.ticket, |_| Err(KvError::TimedOut { awaited, waited_ms: waiter.timeout_ms }));
    }
    let over: Vec<LeaseName> = draft.layer().grants().filter(|g| !g.is_live(now)).map(|g| g.name.clone()).collect();
    for name in over {
        hand_off(draft, &name, now);
    }
}

pub(super) fn holder_gone(draft: &mut Draft<'_>, pod: &PodRef, now: &Now) {
    let gone: Vec<_> = draft.waits().all().filter(|w| w.owner.as_ref() == Some(pod)).map(|w| w.ticket).collect();
    for ticket in gone {
        draft.drop_waiter(ticket);
    }
    let holder = Holder::Pod(pod.clone());
    let held: Vec<LeaseName> = draft.layer().grants().filter(|g| g.holder == holder).map(|g| g.name.clone()).collect();
    for name in held {
        hand_off(draft, &name, now);
    }
}

pub(super) fn rebase(draft: &mut Draft<'_>, now: &Now) {
    let grants: Vec<Grant> = draft.layer().grants().cloned().collect();
    for grant in grants {
        match grant.deadline.rebased(grant.ttl_ms, now) {
            None => hand_off(draft, &grant.name, now),
            Some(deadline) if deadline != grant.deadline => draft.set_grant(Grant { deadline, ..grant }),
            Some(_) => {}
        }
    }
}
