//! The coordination store through the real command line, with real Pods:
//! workloads are `sh -c` scripts calling `pod kv` and `pod lease` from
//! inside their Pods (the kernel says who they are), the operator calls
//! from outside. Named after what each proves: the strict-tree spotlight
//! (two sub-trees, each sub-lead's `/shared/progress` its own, a worker
//! refused another's slot through every spelling and glob, `POD_NAME` lies
//! changing nothing), kill -9 of the lead during 1,000 writes from four
//! workers, leases (TTL expiry, FIFO of three waiters, a tree-wide lease
//! across sub-trees, a sub-layer's lease freed when its holder dies), and
//! bad input refused with its code and exit status, changing nothing.
//!
//! Orders are forced through the store itself: a test goes on when
//! `pod kv wait` answers or `pod lease ls` shows the waiter queued, never
//! after a sleep.
#![allow(clippy::unwrap_used)]

use pod_e2e as common;

use common::{wait_until, Home, Run, POD};
use serde_json::Value;

/// A workload script: `sh -c` with `$P` the `pod` binary, and `probe ARGS`
/// appending `> pod ARGS`, what it printed (stdout and stderr) and its exit
/// status to `$OUT`.
fn script(out: &str, body: &str) -> String {
    format!(
        "P='{POD}'; OUT='{out}'\n\
         probe() {{ printf '> pod %s\\n' \"$*\" >> \"$OUT\"; \"$P\" \"$@\" >> \"$OUT\" 2>&1; rc=$?; printf '\\n[exit %s]\\n' $rc >> \"$OUT\"; }}\n\
         {body}\n"
    )
}

fn spawn(h: &Home, name: &str, parent: &str, write: &str, body: Option<String>) {
    let mut args = vec!["spawn", name, "--parent", parent, "--write", write];
    if let Some(body) = &body {
        args.extend(["--", "sh", "-c", body.as_str()]);
    }
    h.must(&args);
}

/// A run as a transcript entry: the command, what it printed, its status.
fn entry(args: &[&str], run: &Run) -> String {
    format!("> pod {}\n{}{}\n[exit {}]\n", args.join(" "), run.stdout, run.stderr, run.code)
}

/// `text` with every RFC 3339 time (`2026-12-02T05:20:56.123+00:00`)
/// replaced by `[time]`.
fn redact_times(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while i < bytes.len() {
        if let Some(len) = time_at(&bytes[i..]) {
            out.push_str("[time]");
            i += len;
        } else {
            let ch = text[i..].chars().next().unwrap();
            out.push(ch);
            i += ch.len_utf8();
        }
    }
    out
}

/// The length of an RFC 3339 time at the start of `b` (`DDDD-DD-DDTDD:DD:DD`,
/// then fractions, then `Z` or `+DD:DD`), if there is one.
fn time_at(b: &[u8]) -> Option<usize> {
    let shape = b"dddd-dd-ddTdd:dd:dd";
    if b.len() < shape.len() {
        return None;
    }
    for (c, s) in b.iter().zip(shape.iter()) {
        let fits = if *s == b'd' { c.is_ascii_digit() } else { c == s };
        if !fits {
            return None;
        }
    }
    let mut n = shape.len();
    if b.get(n) == Some(&b'.') {
        n += 1;
        while b.get(n).is_some_and(u8::is_ascii_digit) {
            n += 1;
        }
    }
    match b.get(n) {
        Some(b'Z') => Some(n + 1),
        Some(b'+' | b'-') if b.len() >= n + 6 => Some(n + 6),
        _ => Some(n),
    }
}

fn read(h: &Home, rel: &str) -> String {
    std::fs::read_to_string(h.repo.join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

/// `pod wait NAME` (bounded) and insists the workload exited 0.
fn finished(h: &Home, name: &str) {
    let run = h.pod(&["wait", name, "--timeout", "60"]);
    assert_eq!(run.code, 0, "{name} did not exit 0: {run:?}");
}

#[test]
fn strict_tree_spotlight_sub_leads_keep_their_own_progress_and_a_worker_never_reaches_anothers_slot() {
    let h = Home::new();
    for d in ["docs/p", "docs/q"] {
        std::fs::create_dir_all(h.repo.join(d)).unwrap();
    }
    h.must(&["start", "root", "--write", "."]);
    // Each sub-lead writes and reads back /shared/progress in its own
    // layer, looks in root's layer and in the other's, says it is ready,
    // and (s1) once told to go reads its workers' slots as their lead.
    let sub_lead = |me: &str, other: &str, out: &str, after_go: &str| {
        script(
            out,
            &format!(
                "probe kv set --layer {me} /shared/progress {me}-half\n\
                 probe kv get --layer {me} /shared/progress\n\
                 probe kv get /shared/progress\n\
                 probe kv get --layer {other} /shared/progress\n\
                 \"$P\" kv set --layer {me} /peer/self/ready yes > /dev/null || exit 9\n\
                 \"$P\" kv wait --layer {me} /ref/go --timeout 120 > /dev/null || exit 8\n\
                 {after_go}"
            ),
        )
    };
    let s1_after = "probe kv get --layer s1 /peer/w1/r\n\
                    probe kv get --layer s1 /peer/w2/x\n\
                    probe kv ls --layer s1 '/peer/*/*'";
    spawn(&h, "s1", "root", "a", Some(sub_lead("s1", "s2", "a/s1.out", s1_after)));
    spawn(&h, "s2", "root", "docs", Some(sub_lead("s2", "s1", "docs/s2.out", "true")));
    for lead in ["s1", "s2"] {
        let key = format!("/peer/{lead}/ready");
        h.must(&["kv", "wait", "--layer", lead, &key, "--timeout", "30"]);
    }
    // w2 leaves a secret in its slot; then w1 tries every way to it.
    spawn(&h, "w2", "s1", "a/x", Some(script("a/x/w2.out", "probe kv set /peer/self/x w2-secret")));
    finished(&h, "w2");
    let w1 = script(
        "a/b/w1.out",
        "probe kv set /peer/self/r from-w1\n\
         probe kv get /peer/w2/x\n\
         probe kv get /peer//w2/x\n\
         probe kv get /peer/./w2/x\n\
         probe kv get /peer/w2/../w2/x\n\
         probe kv ls '/**'\n\
         probe kv ls '/peer/*/*'\n\
         probe kv ls '/pee[r]/*/*'\n\
         probe kv ls '/*/w2/*'\n\
         probe kv wait /peer/w2/x --timeout 0.2\n\
         probe kv set /peer/w2/x overwritten\n\
         probe kv rm /peer/w2/x\n\
         probe kv get --layer w2 /peer/w2/x\n\
         export POD_NAME=w2\n\
         probe kv get /peer/w2/x\n\
         probe kv get /peer/self/r\n\
         probe kv ls '/peer/**'",
    );
    spawn(&h, "w1", "s1", "a/b", Some(w1));
    finished(&h, "w1");
    // s2's workers only fill the shape of the tree.
    spawn(&h, "w3", "s2", "docs/p", None);
    spawn(&h, "w4", "s2", "docs/q", None);
    // The operator, outside every Pod, with POD_NAME=w2: still the operator.
    let mut operator = String::new();
    for args in [
        &["kv", "get", "--layer", "root", "/shared/progress"][..],
        &["kv", "ls", "--layer", "root", "/**"],
        &["kv", "set", "--layer", "s1", "/peer/self/x", "lie"],
        &["kv", "set", "--layer", "s1", "/peer/w2/x", "lie"],
        &["kv", "get", "--layer", "s1", "/peer/w2/x"],
        &["kv", "get", "/shared/progress"],
    ] {
        operator.push_str(&entry(args, &h.pod_env(args, &[("POD_NAME", "w2")])));
    }
    h.must(&["kv", "set", "--layer", "s1", "/ref/go", "now"]);
    h.must(&["kv", "set", "--layer", "s2", "/ref/go", "now"]);
    finished(&h, "s1");
    finished(&h, "s2");
    let transcript = format!(
        "## w2 (member of s1)\n{}\n## w1 (member of s1)\n{}\n## s1 (sub-lead)\n{}\n## s2 (sub-lead)\n{}\n## the operator, POD_NAME=w2\n{}",
        read(&h, "a/x/w2.out"),
        read(&h, "a/b/w1.out"),
        read(&h, "a/s1.out"),
        read(&h, "docs/s2.out"),
        operator
    );
    insta::assert_snapshot!(redact_times(&transcript));
    h.must(&["stop", "root"]);
}

/// The fixed part of every value a worker writes (4 KiB), so that a torn
/// value would show.
const PAD: usize = 4096;

#[test]
fn kill_9_of_the_lead_during_1000_writes_from_four_workers_loses_no_acknowledged_version() {
    let h = Home::new();
    let workers = ["w1", "w2", "w3", "w4"];
    for w in workers {
        std::fs::create_dir_all(h.repo.join("k").join(w)).unwrap();
    }
    h.must(&["start", "lead", "--write", "."]);
    // Each worker writes /shared/<itself> 250 times: "NAME:I:" and 4 KiB of
    // I's last digit, and appends "I VERSION" to its file once the set is
    // acknowledged. A set that failed (the lead down) is tried again.
    for w in workers {
        let body = format!(
            "pad=$(printf '%{PAD}s' '')\n\
             i=1; tries=0\n\
             while [ $i -le 250 ]; do\n\
               d=$((i % 10)); v=$(\"$P\" kv set /shared/{w} \"{w}:$i:$(printf '%s' \"$pad\" | tr ' ' $d)\" 2>> k/{w}/err)\n\
               if [ $? -eq 0 ]; then echo \"$i $v\" >> k/{w}/acked; i=$((i+1)); tries=0\n\
               else tries=$((tries+1)); [ $tries -gt 2000 ] && exit 7; sleep 0.01; fi\n\
             done"
        );
        spawn(&h, w, "lead", &format!("k/{w}"), Some(script(&format!("k/{w}/out"), &body)));
    }
    let acked = |w: &str| -> Vec<(u64, u64)> {
        let text = std::fs::read_to_string(h.repo.join("k").join(w).join("acked")).unwrap_or_default();
        text.lines()
            .filter_map(|l| {
                let mut words = l.split_whitespace().map(|w| w.parse::<u64>());
                match (words.next(), words.next()) {
                    (Some(Ok(i)), Some(Ok(v))) => Some((i, v)),
                    _ => None,
                }
            })
            .collect()
    };
    wait_until("the workers are well into their writes", || {
        workers.iter().map(|w| acked(w).len()).sum::<usize>() >= 200
    });
    h.kill9("lead");
    // What was acknowledged before the lead died (read after the kill, so
    // no acknowledgement of the dead run is missed).
    let before: Vec<Vec<(u64, u64)>> = workers.iter().map(|w| acked(w)).collect();
    h.must(&["resume", "lead"]);
    for (w, before) in workers.iter().zip(&before) {
        let key = format!("/shared/{w}");
        let found = h.json(&["kv", "get", "--layer", "lead", &key, "--json"]);
        let version = found["version"].as_u64().unwrap();
        let last = before.last().map_or(0, |(_, v)| *v);
        assert!(version >= last, "{key} is at v{version} after the resume, but v{last} was acknowledged");
    }
    for w in workers {
        finished(&h, w);
    }
    for w in workers {
        let acks = acked(w);
        assert_eq!(acks.iter().map(|(i, _)| *i).collect::<Vec<_>>(), (1..=250).collect::<Vec<_>>(), "{w}'s acks");
        assert!(acks.windows(2).all(|p| p[0].1 < p[1].1), "{w}'s versions did not only grow: {acks:?}");
        let key = format!("/shared/{w}");
        let found = h.json(&["kv", "get", "--layer", "lead", &key, "--json"]);
        assert_eq!(found["version"].as_u64(), acks.last().map(|(_, v)| *v), "{key}: the last acknowledged version");
        let value = found["value"].as_str().unwrap();
        assert_eq!(value, format!("{w}:250:{}", "0".repeat(PAD)), "{key}: the value as written by one set");
        // Every value the store held was whole: the raw value equals what
        // `get` prints alone.
        let raw = h.must(&["kv", "get", "--layer", "lead", &key]);
        assert_eq!(raw.stdout, value);
    }
    h.must(&["stop", "lead"]);
}

/// `pod lease ls --json` of a layer (or, with `global`, of the tree).
fn leases(h: &Home, layer: &str, global: bool) -> Vec<Value> {
    let mut args = vec!["lease", "ls", "--layer", layer, "--json"];
    if global {
        args.push("--global");
    }
    h.json(&args).as_array().unwrap().clone()
}

fn waiting(h: &Home, layer: &str, name: &str, global: bool) -> u64 {
    leases(h, layer, global).iter().find(|l| l["name"] == name).map_or(0, |l| l["waiting"].as_u64().unwrap())
}

#[test]
fn a_lease_ends_with_its_ttl_while_its_holder_lives() {
    let h = Home::new();
    h.must(&["start", "lead", "--write", "."]);
    // w1 takes the lease for 0.3 s, then waits (alive) until told to renew.
    let body = "probe lease acquire build --ttl 0.3\n\
                \"$P\" kv wait /ref/renew --timeout 60 > /dev/null || exit 8\n\
                probe lease renew build";
    spawn(&h, "w1", "lead", "a", Some(script("a/w1.out", body)));
    wait_until("w1 holds the lease", || {
        std::fs::read_to_string(h.repo.join("a/w1.out")).is_ok_and(|t| t.contains("[exit"))
    });
    // The operator queues for it; it passes when w1's TTL is over, with w1
    // still running.
    let got = h.must(&["lease", "acquire", "--layer", "lead", "build", "--ttl", "30", "--wait", "20", "--json"]);
    let grant: Value = serde_json::from_str(&got.stdout).unwrap();
    assert_eq!((grant["holder"].as_str(), grant["token"].as_u64()), (Some("operator"), Some(2)));
    assert!(h.proc("w1").alive(), "w1 was gone, so its death, not its TTL, freed the lease");
    h.must(&["kv", "set", "--layer", "lead", "/ref/renew", "now"]);
    finished(&h, "w1");
    insta::assert_snapshot!(common::redact_numbers_after(&redact_times(&read(&h, "a/w1.out")), &["for another "]));
    h.must(&["stop", "lead"]);
}

#[test]
fn three_waiters_get_a_freed_lease_in_the_order_they_queued() {
    let h = Home::new();
    h.must(&["start", "lead", "--write", "."]);
    h.must(&["lease", "acquire", "--layer", "lead", "build", "--ttl", "120"]);
    // Each waiter queues, and once granted releases, passing it on. The
    // next starts only once the store shows the previous one queued.
    for (n, w) in ["w1", "w2", "w3"].into_iter().enumerate() {
        let body = format!(
            "\"$P\" lease acquire build --ttl 30 --wait 60 --json > a/{w}/grant || exit 7\n\
             \"$P\" lease release build > /dev/null || exit 6"
        );
        std::fs::create_dir_all(h.repo.join(format!("a/{w}"))).unwrap();
        spawn(&h, w, "lead", &format!("a/{w}"), Some(script("/dev/null", &body)));
        wait_until("the waiter is queued", || waiting(&h, "lead", "build", false) == n as u64 + 1);
    }
    h.must(&["lease", "release", "--layer", "lead", "build"]);
    let mut order = Vec::new();
    for w in ["w1", "w2", "w3"] {
        finished(&h, w);
        let grant: Value = serde_json::from_str(&read(&h, &format!("a/{w}/grant"))).unwrap();
        order.push(format!("{} token {}", grant["holder"].as_str().unwrap(), grant["token"]));
    }
    assert_eq!(order, ["w1 token 2", "w2 token 3", "w3 token 4"]);
    assert!(leases(&h, "lead", false).is_empty(), "the lease is still held");
    h.must(&["stop", "lead"]);
}

#[test]
fn a_global_lease_serializes_two_sub_trees_and_a_sub_layers_lease_is_freed_when_its_holder_dies() {
    let h = Home::new();
    h.must(&["start", "root", "--write", "."]);
    spawn(&h, "s1", "root", "a", None);
    spawn(&h, "s2", "root", "docs", None);
    // w1 (under s1) takes the tree-wide lease and holds it until told.
    let w1 = "probe lease acquire --global deploy --ttl 60\n\
              \"$P\" kv wait /ref/done --timeout 60 > /dev/null || exit 8\n\
              probe lease release --global deploy";
    spawn(&h, "w1", "s1", "a/b", Some(script("a/b/w1.out", w1)));
    wait_until("w1 holds the global lease", || leases(&h, "root", true).len() == 1);
    // w3 (under s2, another sub-tree) is refused it, then queues for it.
    std::fs::create_dir_all(h.repo.join("docs/p")).unwrap();
    let w3 = "probe lease acquire --global deploy --ttl 60\n\
              probe lease acquire --global deploy --ttl 60 --wait 60\n\
              probe lease ls --global";
    spawn(&h, "w3", "s2", "docs/p", Some(script("docs/p/w3.out", w3)));
    wait_until("w3 is queued", || waiting(&h, "root", "deploy", true) == 1);
    // No sub-layer has it: the tree-wide table is the root's.
    assert!(leases(&h, "s1", false).is_empty() && leases(&h, "s2", false).is_empty());
    h.must(&["kv", "set", "--layer", "s1", "/ref/done", "yes"]);
    finished(&h, "w1");
    finished(&h, "w3");
    let transcript =
        format!("## w1 (under s1)\n{}\n## w3 (under s2)\n{}", read(&h, "a/b/w1.out"), read(&h, "docs/p/w3.out"));
    insta::assert_snapshot!(common::redact_numbers_after(&redact_times(&transcript), &["for another "]));
    // A lease of s1's own layer, held by its member w2: freed when w2 is
    // SIGKILLed, and the operator waiting for it gets it.
    let w2 = "\"$P\" lease acquire sub --ttl 600 > /dev/null && exec sleep 30";
    spawn(&h, "w2", "s1", "a/x", Some(script("/dev/null", w2)));
    wait_until("w2 holds s1's lease", || leases(&h, "s1", false).len() == 1);
    let waiter = {
        let home = h.home.clone();
        std::thread::spawn(move || {
            std::process::Command::new(POD)
                .args(["lease", "acquire", "--layer", "s1", "sub", "--ttl", "5", "--wait", "20", "--json"])
                .env("POD_HOME", home)
                .env_remove("POD_SOCKET")
                .output()
                .unwrap()
        })
    };
    wait_until("the operator is queued", || waiting(&h, "s1", "sub", false) == 1);
    h.kill9("w2");
    let out = Run::from_output(waiter.join().unwrap());
    assert_eq!(out.code, 0, "{out:?}");
    let grant: Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(grant["holder"], "operator");
    h.must(&["stop", "root"]);
}

#[test]
fn bad_input_and_every_limit_through_the_cli_give_their_code_and_status_and_change_nothing() {
    let h = Home::new();
    h.must(&["start", "lead", "--write", "."]);
    h.must(&["kv", "set", "--layer", "lead", "/shared/x", "one"]);
    h.must(&["lease", "acquire", "--layer", "lead", "held", "--ttl", "60"]);
    let state = |h: &Home| {
        let keys = h.must(&["kv", "ls", "--layer", "lead", "/**", "--json"]).stdout;
        // Without the times, which are worked out from the time left (it
        // runs down meanwhile, and the expiry moves by a rounding).
        let mut leases = h.json(&["lease", "ls", "--layer", "lead", "--json"]);
        for lease in leases.as_array_mut().unwrap() {
            for time in ["remaining_ms", "expires_at", "expires_at_ms"] {
                lease.as_object_mut().unwrap().remove(time);
            }
        }
        format!("{keys}{leases}")
    };
    let before = state(&h);
    let long_key = format!("/shared/{}", "k".repeat(513 - "/shared/".len()));
    let long_lease = "l".repeat(513 - "/leases/".len());
    let cases: Vec<Vec<&str>> = vec![
        vec!["kv", "get", "/shared/x"],
        vec!["kv", "get", "--layer", "lead", ""],
        vec!["kv", "get", "--layer", "lead", "shared/x"],
        vec!["kv", "set", "--layer", "lead", "/peer//w2/x", "v"],
        vec!["kv", "set", "--layer", "lead", "/shared/x/", "v"],
        vec!["kv", "set", "--layer", "lead", "/peer/./w2/x", "v"],
        vec!["kv", "set", "--layer", "lead", "/peer/w2/../w2/x", "v"],
        vec!["kv", "set", "--layer", "lead", "/shared/a b", "v"],
        vec!["kv", "set", "--layer", "lead", &long_key, "v"],
        vec!["kv", "set", "--layer", "lead", "/secret/x", "v"],
        vec!["kv", "set", "--layer", "lead", "/shared", "v"],
        vec!["kv", "set", "--layer", "lead", "/peer/W1/x", "v"],
        vec!["kv", "set", "--layer", "lead", "/leases/held", "v"],
        vec!["kv", "set", "--layer", "lead", "/peer/self/x", "v"],
        vec!["kv", "set", "--layer", "lead", "/peer/w9/x", "v"],
        vec!["kv", "cas", "--layer", "lead", "/shared/x", "7", "v"],
        vec!["kv", "cas", "--layer", "lead", "/shared/x", "0", "v"],
        vec!["kv", "cas", "--layer", "lead", "/shared/x", "one", "v"],
        vec!["kv", "rm", "--layer", "lead", "/shared/none"],
        vec!["kv", "get", "--layer", "lead", "/shared/none"],
        vec!["kv", "ls", "--layer", "lead", "/pee[r]/*/*"],
        vec!["kv", "ls", "--layer", "lead", "/shared/task-*"],
        vec!["kv", "wait", "--layer", "lead", "/shared/x", "--min-version", "9", "--timeout", "0.1"],
        vec!["kv", "wait", "--layer", "lead", "/shared/x", "--timeout", "3601"],
        vec!["kv", "wait", "--layer", "lead", "/shared/x", "--timeout", "soon"],
        vec!["kv", "get", "--layer", "nobody", "/shared/x"],
        vec!["kv", "get", "--layer", "No Such", "/shared/x"],
        vec!["lease", "acquire", "--layer", "lead", "held", "--ttl", "5"],
        vec!["lease", "acquire", "--layer", "lead", "held", "--ttl", "0.05"],
        vec!["lease", "acquire", "--layer", "lead", "held", "--ttl", "86401"],
        vec!["lease", "acquire", "--layer", "lead", "other", "--ttl", "5", "--wait", "3601"],
        vec!["lease", "acquire", "--layer", "lead", "a/b", "--ttl", "5"],
        vec!["lease", "acquire", "--layer", "lead", &long_lease, "--ttl", "5"],
        vec!["lease", "renew", "--layer", "lead", "free"],
        vec!["lease", "release", "--layer", "lead", "held", "--token", "9"],
        vec!["lease", "acquire", "--global", "gl", "--ttl", "5"],
    ];
    let mut transcript = String::new();
    for args in &cases {
        transcript.push_str(&entry(args, &h.pod(args)));
    }
    // A value one byte past the limit, from stdin (read bounded).
    let big = vec![b'v'; pod_kv::limits::MAX_VALUE_BYTES + 1];
    let mut child = std::process::Command::new(POD)
        .args(["kv", "set", "--layer", "lead", "/shared/big", "-"])
        .env("POD_HOME", &h.home)
        .env_remove("POD_SOCKET")
        .current_dir(&h.repo)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().unwrap();
        // The command stops reading at the limit; a closed pipe is fine.
        let _ = stdin.write_all(&big);
    }
    let run = Run::from_output(child.wait_with_output().unwrap());
    transcript.push_str(&entry(&["kv", "set", "--layer", "lead", "/shared/big", "- (1 MiB + 1 byte on stdin)"], &run));
    let transcript = common::redact_numbers_after(&h.redact(&redact_times(&transcript)), &["for another "]);
    insta::assert_snapshot!(transcript);
    assert_eq!(state(&h), before, "a refused call changed the store");
    h.must(&["stop", "lead"]);
}

#[test]
fn get_prints_the_value_alone_as_written_and_set_reads_stdin() {
    let h = Home::new();
    h.must(&["start", "lead", "--write", "."]);
    let value = "two\nlines, no newline at the end";
    h.must(&["kv", "set", "--layer", "lead", "/ref/text", value]);
    assert_eq!(h.must(&["kv", "get", "--layer", "lead", "/ref/text"]).stdout, value);
    let bytes: Vec<u8> = (0..=255u8).collect();
    let mut child = std::process::Command::new(POD)
        .args(["kv", "set", "--layer", "lead", "/ref/bin", "-"])
        .env("POD_HOME", &h.home)
        .env_remove("POD_SOCKET")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::Write;
        child.stdin.take().unwrap().write_all(&bytes).unwrap();
    }
    let out = child.wait_with_output().unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "2\n");
    let raw = std::process::Command::new(POD)
        .args(["kv", "get", "--layer", "lead", "/ref/bin"])
        .env("POD_HOME", &h.home)
        .env_remove("POD_SOCKET")
        .output()
        .unwrap();
    assert_eq!(raw.stdout, bytes);
    let json = h.json(&["kv", "get", "--layer", "lead", "/ref/bin", "--json"]);
    assert_eq!(json["value_hex"].as_str().map(str::len), Some(512));
    let json = h.json(&["kv", "get", "--layer", "lead", "/ref/text", "--json"]);
    let mut shape: Vec<String> = json.as_object().unwrap().keys().cloned().collect();
    shape.sort();
    assert_eq!(shape, ["key", "value", "version", "written_at", "written_at_ms", "written_by"]);
    assert_eq!(
        (json["value"].as_str(), json["version"].as_u64(), json["written_by"].as_str()),
        (Some(value), Some(1), Some("operator"))
    );
    h.must(&["stop", "lead"]);
}

#[test]
fn a_waiter_that_went_away_gives_its_place_up_and_is_never_granted() {
    let h = Home::new();
    h.must(&["start", "lead", "--write", "."]);
    h.must(&["lease", "acquire", "--layer", "lead", "build", "--ttl", "120"]);
    // w1's workload queues for the lease in a `pod lease` process of its
    // own, which the test kills; the workload itself stays.
    let body = "\"$P\" lease acquire build --ttl 60 --wait 60 > /dev/null 2>&1 &\n\
                echo $! > a/w1.pid\n\
                wait\n\
                \"$P\" kv wait /ref/done --timeout 60 > /dev/null || exit 8";
    spawn(&h, "w1", "lead", "a", Some(script("/dev/null", body)));
    wait_until("the waiter is queued", || waiting(&h, "lead", "build", false) == 1);
    let pid: u32 = read(&h, "a/w1.pid").trim().parse().unwrap();
    common::kill9(pid);
    // Its place is given up as soon as its connection closes, not when its
    // wait would have ended, and not because its Pod stopped.
    wait_until("the queue is empty", || waiting(&h, "lead", "build", false) == 0);
    assert!(h.proc("w1").alive(), "w1 stopped, so its end, not the closed connection, emptied the queue");
    h.must(&["lease", "release", "--layer", "lead", "build"]);
    assert!(leases(&h, "lead", false).is_empty(), "the lease went to a waiter that was gone");
    h.must(&["kv", "set", "--layer", "lead", "/ref/done", "yes"]);
    finished(&h, "w1");
    // The same for a key's waiter: the lead logs the wait cancelled once
    // the waiting process is killed.
    let (registered, cancelled) = (logged(&h, "kv wait registered"), logged(&h, "kv wait cancelled"));
    let mut gone = std::process::Command::new(POD)
        .args(["kv", "wait", "--layer", "lead", "/shared/later", "--timeout", "60"])
        .env("POD_HOME", &h.home)
        .env_remove("POD_SOCKET")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    wait_until("the key's wait is registered", || logged(&h, "kv wait registered") == registered + 1);
    gone.kill().unwrap();
    gone.wait().unwrap();
    wait_until("the key's wait is cancelled", || logged(&h, "kv wait cancelled") == cancelled + 1);
    h.must(&["stop", "lead"]);
}

/// How many times the lead's own log has `what`.
fn logged(h: &Home, what: &str) -> usize {
    std::fs::read_to_string(h.run_dir("lead").join("pod.log")).unwrap_or_default().matches(what).count()
}

/// `count` durable sets over the lead's socket, 32 connections at once
/// (filling a layer through the CLI would start 10,000 processes).
fn fill(socket: &std::path::Path, count: usize, value: &[u8]) {
    use pod_client::pod::PodClient;
    use pod_client::protocol::{PodReply, PodRequest};
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    runtime.block_on(async {
        let mut tasks = Vec::new();
        for c in 0..32 {
            let (socket, value) = (socket.to_path_buf(), value.to_vec());
            tasks.push(tokio::spawn(async move {
                let mut client = PodClient::connect(&socket).await.unwrap();
                for i in (c..count).step_by(32) {
                    let op = pod_kv::Op::Set {
                        key: format!("/shared/k{i}"),
                        value: value.clone(),
                        expect: pod_kv::Expect::Any,
                        overriding: false,
                    };
                    let request = PodRequest::Kv { reach: pod_kv::Reach::Layer, op, id: None };
                    match client.call(&request).await {
                        Ok(PodReply::Kv(pod_kv::Outcome::Written { .. })) => {}
                        other => panic!("set {i}: {other:?}"),
                    }
                }
            }));
        }
        for task in tasks {
            task.await.unwrap();
        }
    });
}

#[test]
fn the_layers_capacity_limits_refuse_the_next_key_and_byte_with_their_codes_and_change_nothing() {
    let h = Home::new();
    h.must(&["start", "keys", "--write", "src"]);
    h.must(&["start", "bytes", "--write", "docs"]);
    let socket = |pod: &str| pod::layout::PodPaths::new(&h.dirs(), &pod.parse().unwrap()).socket();
    // 10,000 keys: the next new key is refused, an existing one may still
    // be written.
    fill(&socket("keys"), pod_kv::limits::MAX_KEYS, b"v");
    let mut transcript = String::new();
    for args in [
        &["kv", "set", "--layer", "keys", "/shared/one-more", "v"][..],
        &["kv", "get", "--layer", "keys", "/shared/one-more"],
        &["kv", "set", "--layer", "keys", "/shared/k0", "still"],
    ] {
        transcript.push_str(&entry(args, &h.pod(args)));
    }
    // 64 MiB of keys and values: 63 values of 1 MiB fit, a 64th does not.
    fill(&socket("bytes"), 63, &vec![b'b'; pod_kv::limits::MAX_VALUE_BYTES]);
    let before = h.must(&["kv", "ls", "--layer", "bytes", "/**", "--json"]).stdout;
    let mut child = std::process::Command::new(POD)
        .args(["kv", "set", "--layer", "bytes", "/shared/k63", "-"])
        .env("POD_HOME", &h.home)
        .env_remove("POD_SOCKET")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::Write;
        let _ = child.stdin.take().unwrap().write_all(&vec![b'b'; pod_kv::limits::MAX_VALUE_BYTES]);
    }
    let run = Run::from_output(child.wait_with_output().unwrap());
    transcript.push_str(&entry(&["kv", "set", "--layer", "bytes", "/shared/k63", "- (1 MiB on stdin)"], &run));
    assert_eq!(
        h.must(&["kv", "ls", "--layer", "bytes", "/**", "--json"]).stdout,
        before,
        "a refused set changed the layer"
    );
    insta::assert_snapshot!(transcript);
    h.must(&["stop", "keys"]);
    h.must(&["stop", "bytes"]);
}
