//! Builders shared by the integration tests: valid events and fixed clocks.
#![allow(clippy::unwrap_used, dead_code)]

use std::collections::BTreeMap;

use scope::{Permission, PodName, ScopePath, ScopeRule, ScopeSnapshot};
use session_log::{Event, LogOptions, RemovalReason};

pub const FIXED_MS: u64 = 1_700_000_000_000;

pub fn fixed_clock() -> u64 {
    FIXED_MS
}

pub fn options(checkpoint_every: u64) -> LogOptions {
    LogOptions { checkpoint_every, clock: fixed_clock, ..LogOptions::default() }
}

pub fn name(s: &str) -> PodName {
    PodName::new(s).unwrap()
}

pub fn write(p: &str) -> ScopeRule {
    ScopeRule::write(ScopePath::new(p).unwrap())
}

pub fn base() -> ScopeSnapshot {
    ScopeSnapshot {
        allow: vec![write("/work/repo")],
        deny: vec![ScopeRule::new(ScopePath::new("/work/repo/.git").unwrap(), Permission::Write, true)],
        layers: BTreeMap::new(),
    }
}

pub fn created() -> Event {
    Event::PodCreated {
        name: name("lead"),
        parent: Some(name("root")),
        base: base(),
        workload: Some(vec!["cargo".into(), "build".into()]),
    }
}

pub fn spawned(child: &str) -> Event {
    Event::ChildSpawned {
        name: name(child),
        socket: format!("/run/pod/{child}.sock"),
        rules: vec![write(&format!("/work/repo/{child}"))],
        callback: "/run/pod/lead.sock".into(),
    }
}

/// The base with one layer per child in `children`, as a `pod.scope` event.
pub fn scope_with(children: &[&str]) -> Event {
    let mut scope = base();
    for c in children {
        scope.layers.insert(name(c), vec![write(&format!("/work/repo/{c}"))]);
    }
    Event::PodScope { scope }
}

/// One event of every kind, in an order the fold accepts.
pub fn every_kind() -> Vec<Event> {
    vec![
        created(),
        spawned("a"),
        scope_with(&["a"]),
        Event::ChildReparented {
            name: name("g"),
            from: name("b"),
            rules: vec![write("/work/repo/a/g")],
            socket: "/run/pod/g.sock".into(),
        },
        Event::ChildRemoved { name: name("a"), reason: RemovalReason::ShutDown, exit: session_log::Exit::default() },
        Event::PodStopped { exit: session_log::Exit::default() },
    ]
}

/// Opens a log's sled database directly, as a tool would. sled releases its
/// file lock on background threads a moment after the last handle is
/// dropped; there is no event to wait for, so retry within a bound.
pub fn open_raw(dir: &std::path::Path) -> sled::Db {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        match sled::open(dir) {
            Ok(db) => return db,
            Err(e) if std::time::Instant::now() < deadline && e.to_string().contains("could not acquire lock") => {
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
            Err(e) => panic!("cannot open {}: {e}", dir.display()),
        }
    }
}
