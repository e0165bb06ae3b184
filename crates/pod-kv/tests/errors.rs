//! The codes and the exit-code table: every refusal has a stable code in
//! `CODES`, every code in `CODES` is produced by some refusal, and the
//! classes map to the exit codes of `pod kv` and `pod lease`.

mod common;

use std::collections::BTreeSet;

use pod_kv::{Access, Awaited, Kind, KvError, Reach, Spelling, CODES, EXIT_OK};

/// One refusal of every variant (every spelling reason for keys and
/// patterns), as the core words them.
fn samples() -> Vec<KvError> {
    let spellings = || {
        vec![
            Spelling::Empty,
            Spelling::NotAbsolute,
            Spelling::EmptySegment,
            Spelling::DotSegment,
            Spelling::DotDotSegment,
            Spelling::BadChar { ch: '[', pos: 4 },
            Spelling::TooLong { len: 600 },
            Spelling::UnknownNamespace { top: "secret".into() },
            Spelling::Incomplete,
            Spelling::BadMember { why: scope::PodName::new("W1").expect_err("bad name") },
            Spelling::LeaseNamespace,
        ]
    };
    let mut out: Vec<KvError> = spellings().into_iter().map(|why| KvError::BadKey { key: "/k".into(), why }).collect();
    let mut pattern_reasons = spellings();
    pattern_reasons.push(Spelling::PartialWildcard { segment: "a*".into() });
    pattern_reasons.push(Spelling::TooManySegments { count: 33 });
    out.extend(pattern_reasons.into_iter().map(|why| KvError::BadPattern { pattern: "/p".into(), why }));
    out.extend([
        KvError::BadLeaseName { name: "a/b".into(), why: Spelling::BadChar { ch: '/', pos: 1 } },
        KvError::ValueTooLarge { len: 2 << 20 },
        KvError::TtlOutOfRange { ttl_ms: 5 },
        KvError::WaitOutOfRange { wait_ms: 7_200_000 },
        KvError::LayerRequired,
        KvError::NotRoot { lead: "s1".into() },
        KvError::TooManyKeys,
        KvError::LayerTooLarge,
        KvError::TooManySlots,
        KvError::TooManyLeases,
        KvError::TooManyWaiters,
        KvError::Denied {
            who: "member w1".into(),
            access: Access::Read,
            key: "/peer/w2/x".into(),
            why: "a /peer slot is read only by its member and the layer's lead",
        },
        KvError::OverrideRequired { who: "lead lead".into(), key: "/peer/w2/x".into() },
        KvError::NotInLayer { who: "pod g".into(), lead: "lead".into(), reach: Reach::Layer },
        KvError::NotInLayer { who: "pod x".into(), lead: "root".into(), reach: Reach::Tree },
        KvError::NoSlot,
        KvError::VersionMismatch { key: "/shared/x".into(), expected: 3, actual: Some(5) },
        KvError::VersionMismatch { key: "/shared/x".into(), expected: 0, actual: Some(5) },
        KvError::VersionMismatch { key: "/shared/x".into(), expected: 4, actual: None },
        KvError::LeaseHeld { name: "build".into(), holder: "w2".into(), remaining_ms: 1200, yours: false },
        KvError::LeaseHeld { name: "build".into(), holder: "w1".into(), remaining_ms: 900, yours: true },
        KvError::LeaseStale { name: "build".into(), token: 4, current: 9 },
        KvError::NotFound { key: "/shared/x".into() },
        KvError::LeaseNotHeld { name: "build".into() },
        KvError::NoSuchLayer { name: "ghost".into() },
        KvError::TimedOut { awaited: Awaited::Key { key: "/shared/x".into(), min_version: 0 }, waited_ms: 2000 },
        KvError::TimedOut { awaited: Awaited::Key { key: "/shared/x".into(), min_version: 7 }, waited_ms: 2000 },
        KvError::TimedOut { awaited: Awaited::Lease { name: "build".into() }, waited_ms: 500 },
        KvError::RequestStale { seq: 3, last: 5 },
        KvError::Corrupt("a commit changes Entry(\"/shared/x\") out of order or twice".into()),
        KvError::Storage("cannot fdatasync kv/wal: Input/output error (os error 5)".into()),
    ]);
    out
}

#[test]
fn every_refusal_has_a_listed_code_and_every_listed_code_is_used() {
    let listed: Vec<&str> = CODES.iter().map(|(c, _)| *c).collect();
    let unique: BTreeSet<&str> = listed.iter().copied().collect();
    assert_eq!(unique.len(), listed.len(), "a code is listed twice");
    let used: BTreeSet<&str> = samples().iter().map(|e| e.code()).collect();
    assert_eq!(used, unique, "CODES and the variants disagree");
    for (code, _) in CODES {
        assert!(code.starts_with("kv.") && code[3..].chars().all(|c| c.is_ascii_lowercase() || c == '_'), "{code}");
    }
}

#[test]
fn classes_map_to_the_exit_codes_of_the_command_line() {
    let table: Vec<(Kind, u8)> =
        [Kind::Denied, Kind::BadInput, Kind::Conflict, Kind::NotFound, Kind::TimedOut, Kind::Unavailable]
            .into_iter()
            .map(|k| (k, k.exit_code()))
            .collect();
    assert_eq!(
        table,
        vec![
            (Kind::Denied, 1),
            (Kind::BadInput, 2),
            (Kind::Conflict, 3),
            (Kind::NotFound, 4),
            (Kind::TimedOut, 124),
            (Kind::Unavailable, 69)
        ]
    );
    assert_eq!(EXIT_OK, 0);
    assert_eq!(Kind::of_code("kv.version_mismatch"), Some(Kind::Conflict));
    assert_eq!(Kind::of_code("kv.lease_held"), Some(Kind::Conflict));
    assert_eq!(Kind::of_code("registry.write_conflict"), None);
}

#[test]
fn the_whole_table_of_codes_and_messages() {
    let text: String = samples().iter().map(|e| format!("{:<32} exit {:<3} {e}\n", e.code(), e.exit_code())).collect();
    insta::assert_snapshot!(text);
}

#[test]
fn the_docs_list_every_code_with_its_exit_code() {
    let docs = include_str!("../../../docs/coordination.md");
    let section = docs.split("## Exit codes and error codes").nth(1).expect("the docs have the exit-code section");
    let section = section.split("\n## ").next().unwrap_or(section);
    for (code, kind) in CODES {
        let quoted = format!("`{code}`");
        assert!(section.contains(&quoted), "docs/coordination.md does not list {code}");
        // In the table, a code sits in the row of its exit code; the key and
        // pattern codes are spelled out below it, under `kv.key_*` and
        // `kv.pattern_*` of the exit-2 row.
        match section.lines().find(|l| l.starts_with("| ") && l.contains(&quoted)) {
            Some(row) => assert!(row.starts_with(&format!("| {} |", kind.exit_code())), "{code} is in the row {row}"),
            None => assert!(
                *kind == Kind::BadInput && (code.starts_with("kv.key_") || code.starts_with("kv.pattern_")),
                "{code} is listed outside the table"
            ),
        }
    }
}
