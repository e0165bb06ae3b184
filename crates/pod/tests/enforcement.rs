//! Kernel enforcement as the Pod runtime offers it (issue 11): `pod doctor`,
//! the `--enforce` levels (chosen, refused, recorded, shown), a child never
//! enforced below its parent. Missing kernel features are simulated with
//! `POD_SANDBOX_DISABLE`, which the Pod processes inherit from `pod start`.

use pod_e2e as common;

use common::{available, Home, Run, POD};

/// Every feature `POD_SANDBOX_DISABLE` knows.
const ALL_FEATURES: &str = "landlock,userns,mountns,pidns,cgroup,pids,memory";

fn landlock_here() -> bool {
    let support = pod_sandbox::Support::detect().expect("detection");
    available("landlock", support.landlock.is_ok())
}

/// `run`'s exit code, stdout and stderr, with the test's folders, process
/// numbers and the kernel's Landlock ABI replaced by placeholders.
fn shown(h: &Home, run: &Run) -> String {
    let text = format!("exit {}\nstdout:\n{}stderr:\n{}", run.code, run.stdout, run.stderr);
    common::redact_numbers_after(&h.redact(&text), &["ABI "])
}

#[test]
fn doctor_names_each_missing_feature_and_why() {
    let h = Home::new();
    let run = h.pod_env(&["doctor"], &[("POD_SANDBOX_DISABLE", ALL_FEATURES)]);
    // The first line says who runs it (root or not): not this test's subject.
    let text = shown(&h, &run);
    let text: Vec<&str> = text.lines().filter(|l| !l.starts_with("user: ")).collect();
    insta::assert_snapshot!(text.join("\n"));
    let json = h.pod_env(&["doctor", "--json"], &[("POD_SANDBOX_DISABLE", "mountns")]);
    let value: serde_json::Value = serde_json::from_str(&json.stdout).expect("json");
    assert_eq!(value["level"], "landlock", "{json:?}");
    let unknown = h.pod_env(&["doctor"], &[("POD_SANDBOX_DISABLE", "landlok")]);
    insta::assert_snapshot!("unknown_feature", shown(&h, &unknown));
}

#[test]
fn a_level_the_machine_cannot_give_is_refused_and_nothing_is_taken() {
    let h = Home::new();
    let run = h.pod_env(&["start", "lead", "--write", ".", "--enforce", "full"], &[("POD_SANDBOX_DISABLE", "mountns")]);
    insta::assert_snapshot!(shown(&h, &run));
    assert_eq!(h.json(&["registry", "ls", "--json"]), serde_json::json!([]));
    assert_eq!(h.json(&["ls", "--json"]), serde_json::json!([]));
    // The name is free: nothing of the refused start stayed.
    let off = h.pod_env(&["start", "lead", "--write", ".", "--enforce", "off"], &[("POD_SANDBOX_DISABLE", "mountns")]);
    insta::assert_snapshot!("off", shown(&h, &off));
    h.must(&["stop", "lead"]);
}

#[test]
fn bad_levels_and_rules_the_level_cannot_express_are_refused_in_one_line() {
    let h = Home::new();
    let mut refusals = Vec::new();
    let bad_flag = h.pod(&["start", "lead", "--write", ".", "--enforce", "strict"]);
    refusals.push(shown(&h, &bad_flag));
    let bad_env = h.pod_env(&["start", "lead", "--write", "."], &[("POD_ENFORCE", "strict")]);
    refusals.push(shown(&h, &bad_env));
    if landlock_here() {
        let carve = h.pod(&["start", "lead", "--write", ".", "--deny-write", "secrets", "--enforce", "landlock"]);
        refusals.push(shown(&h, &carve));
        let hide = h.pod(&["start", "lead", "--write", "src", "--deny-read", "secrets", "--enforce", "landlock"]);
        refusals.push(shown(&h, &hide));
    }
    insta::assert_snapshot!(refusals.join("\n---\n"));
    assert_eq!(h.json(&["ls", "--json"]), serde_json::json!([]));
}

#[test]
fn the_level_is_said_recorded_and_shown() {
    if !landlock_here() {
        return;
    }
    let h = Home::new();
    let disable = [("POD_SANDBOX_DISABLE", "mountns")];
    // Unasked: the strongest level this machine gives (landlock, as mount
    // namespaces are simulated missing), saying why not full.
    let unasked = h.pod_env(&["start", "unasked", "--write", "src"], &disable);
    h.must(&["stop", "unasked"]);
    // Asked through POD_ENFORCE: said, with what it does not cover.
    let started = h.pod_env(&["start", "lead", "--write", "."], &[disable[0], ("POD_ENFORCE", "landlock")]);
    let spawned = h.pod(&["spawn", "docs", "--parent", "lead", "--write", "docs"]);
    let scope = h.pod(&["scope", "lead"]);
    let json = h.json(&["scope", "docs", "--json"]);
    assert_eq!(json["enforcement"]["level"], "landlock", "{json}");
    h.must(&["stop", "lead"]);
    // A stopped Pod's level comes from its log.
    let stopped = h.pod(&["scope", "lead"]);
    let log = h.pod(&["log", "lead"]);
    let enforced: Vec<&str> = log.stdout.lines().filter(|l| l.contains("pod.enforced")).collect();
    assert_eq!(enforced.len(), 1, "{log:?}");
    let recorded = common::redact_numbers_after(enforced[0].split_once("pod.enforced").expect("kind").1, &["ABI "]);
    insta::assert_snapshot!([
        shown(&h, &unasked),
        shown(&h, &started),
        shown(&h, &spawned),
        shown(&h, &scope),
        shown(&h, &stopped),
        recorded.trim().to_string()
    ]
    .join("\n---\n"));
}

#[test]
fn a_child_is_never_enforced_below_its_parent() {
    if !landlock_here() {
        return;
    }
    let h = Home::new();
    h.must(&["start", "lead", "--write", ".", "--enforce", "landlock"]);
    let off = h.pod(&["spawn", "docs", "--parent", "lead", "--write", "docs", "--enforce", "off"]);
    let from_env = h.pod_env(&["spawn", "docs", "--parent", "lead", "--write", "docs"], &[("POD_ENFORCE", "off")]);
    insta::assert_snapshot!([shown(&h, &off), shown(&h, &from_env)].join("\n---\n"));
    // Refused before the delegate: the parent holds no layer, the
    // registry no child.
    assert!(common::layer_names(&h.scope("lead")).is_empty());
    assert_eq!(h.allocation("docs"), None);
    // Stronger than the parent is fine.
    h.must(&["spawn", "docs", "--parent", "lead", "--write", "docs", "--enforce", "full"]);
    assert_eq!(h.json(&["scope", "docs", "--json"])["enforcement"]["level"], "full");
    h.must(&["stop", "lead"]);
}

#[test]
fn scratch_paths_are_writable_by_check_and_never_overlap_an_allocation() {
    let h = Home::new();
    let cache = h.home.parent().expect("root").join("cache");
    std::fs::create_dir_all(&cache).expect("cache");
    let cache = cache.to_string_lossy().into_owned();
    h.must(&["start", "lead", "--write", "src", "--scratch", &cache, "--enforce", "off"]);
    // Several Pods may share one scratch path.
    h.must(&["start", "other", "--write", "docs", "--scratch", &cache, "--enforce", "off"]);
    let check = h.pod(&["check", "lead", &format!("{cache}/tool/state"), "--write"]);
    let scope = h.pod(&["scope", "lead"]);
    let taken = h.pod(&["start", "greedy", "--write", &cache, "--enforce", "off"]);
    let inside = h.pod(&["start", "tool", "--write", "tests", "--scratch", "src/target", "--enforce", "off"]);
    let child = h.pod(&["spawn", "c", "--parent", "lead", "--write", "src/c", "--scratch", "docs", "--enforce", "off"]);
    let not_tree = h.pod(&["start", "t", "--write", "tests", "--scratch", "a/*", "--enforce", "off"]);
    insta::assert_snapshot!([
        shown(&h, &check),
        shown(&h, &scope),
        shown(&h, &taken),
        shown(&h, &inside),
        shown(&h, &child),
        shown(&h, &not_tree)
    ]
    .join("\n---\n")
    .replace(&cache, "[cache]"));
    // Refused starts and spawns left nothing behind.
    for pod in ["greedy", "tool", "c", "t"] {
        assert_eq!(h.allocation(pod), None, "{pod}");
    }
    assert!(common::layer_names(&h.scope("lead")).is_empty());
    h.must(&["stop", "lead"]);
    // A stopped Pod's check still names its scratch (from its log).
    let stopped = h.pod(&["check", "lead", &format!("{cache}/x"), "--write"]);
    assert_eq!(stopped.stdout.replace(&cache, "[cache]"), "allowed: lead write [cache]/x (scratch [cache]/**)\n");
    h.must(&["stop", "other"]);
}

#[test]
fn each_workload_gets_a_private_tmpdir() {
    use std::os::unix::fs::PermissionsExt;
    let h = Home::new();
    let script = r#"echo "$TMPDIR" > tmpdir.txt.part && touch "$TMPDIR/made" && mv tmpdir.txt.part tmpdir.txt && exec sleep 600"#;
    h.must(&["start", "lead", "--write", ".", "--enforce", "off", "--", "sh", "-c", script]);
    let told = h.repo.join("tmpdir.txt");
    common::wait_until("the workload wrote its TMPDIR", || told.exists());
    let tmpdir = std::path::PathBuf::from(std::fs::read_to_string(&told).expect("tmpdir.txt").trim());
    assert_eq!(tmpdir, h.home.join("run/tmp/lead"));
    assert!(tmpdir.join("made").exists());
    for dir in [&tmpdir, &h.home.join("run/tmp")] {
        assert_eq!(std::fs::metadata(dir).expect("dir").permissions().mode() & 0o777, 0o700, "{}", dir.display());
    }
    h.must(&["stop", "lead"]);
    assert!(!tmpdir.exists(), "the TMPDIR outlived its Pod");
}

fn full_here() -> bool {
    let support = pod_sandbox::Support::detect().expect("detection");
    available("landlock", support.landlock.is_ok()) && available("mountns", support.mountns.is_ok())
}

/// The lead's workload: on each `go` file it tries to append to
/// `docs/probe` and answers `W` (written) or `R` (refused) in `result`.
const PROBE: &str = r#"while true; do if [ -e go ]; then if echo x >> docs/probe 2>/dev/null; then echo W > result.part; else echo R > result.part; fi; rm go; mv result.part result; fi; sleep 0.02; done"#;

/// Asks the lead's probing workload whether it can write `docs/` now.
fn lead_writes_docs(h: &Home) -> bool {
    let result = h.repo.join("result");
    let _ = std::fs::remove_file(&result);
    std::fs::write(h.repo.join("go"), "").expect("go");
    common::wait_until("the probe answered", || result.exists());
    std::fs::read_to_string(&result).expect("result").trim() == "W"
}

#[test]
fn a_helpers_workload_writes_exactly_inside_its_scope() {
    if !full_here() {
        return;
    }
    let h = Home::new();
    std::fs::write(h.repo.join("src/main.rs"), "fn main() {}\n").expect("src");
    std::fs::write(h.repo.join("docs/old.md"), "old\n").expect("docs");
    h.must(&["start", "lead", "--write", ".", "--enforce", "full"]);
    let attempts = r#"
try() { if sh -c "$2" 2>/dev/null; then echo "$1 allowed"; else echo "$1 refused"; fi; }
for where in src docs; do
  try "create $where" "echo new > $where/new.txt"
  try "append $where" "echo more >> $where/$( [ $where = src ] && echo main.rs || echo old.md )"
  try "truncate $where" ": > $where/$( [ $where = src ] && echo main.rs || echo old.md )"
  try "rename into $where" "echo r > docs/r.tmp && mv docs/r.tmp $where/renamed"
  try "link into $where" "ln docs/old.md $where/linked"
  try "delete in $where" "rm $where/$( [ $where = src ] && echo main.rs || echo old.md )"
done
"#;
    h.must(&["spawn", "helper", "--parent", "lead", "--write", "docs", "--", "sh", "-c", attempts]);
    assert_eq!(h.pod(&["wait", "helper"]).code, 0);
    let logs = h.must(&["logs", "helper"]);
    let lines: Vec<&str> = logs.stdout.lines().map(|l| l.split_once(' ').expect("time").1).collect();
    insta::assert_snapshot!(lines.join("\n"));
    assert_eq!(std::fs::read_to_string(h.repo.join("src/main.rs")).expect("src kept"), "fn main() {}\n");
    h.must(&["stop", "lead"]);
}

#[test]
fn the_leads_workload_loses_a_delegated_dir_within_spawn_and_gets_it_back() {
    if !full_here() {
        return;
    }
    let h = Home::new();
    h.must(&["start", "lead", "--write", ".", "--deny-write", "tests", "--enforce", "full", "--", "sh", "-c", PROBE]);
    assert!(lead_writes_docs(&h), "before any delegation");
    // After `pod stop`.
    h.must(&["spawn", "a", "--parent", "lead", "--write", "docs", "--", "sleep", "600"]);
    assert!(!lead_writes_docs(&h), "lost within pod spawn");
    h.must(&["stop", "a"]);
    assert!(lead_writes_docs(&h), "back after pod stop");
    // After the helper exits.
    h.must(&["spawn", "b", "--parent", "lead", "--write", "docs", "--", "sleep", "600"]);
    assert!(!lead_writes_docs(&h));
    h.must(&["kill", "b", "--signal", "TERM"]);
    h.pod(&["wait", "b"]);
    common::wait_until("b's layer reclaimed", || common::layer_names(&h.scope("lead")).is_empty());
    assert!(lead_writes_docs(&h), "back after the helper exited");
    // After the helper's Pod is killed.
    h.must(&["spawn", "c", "--parent", "lead", "--write", "docs", "--", "sleep", "600"]);
    assert!(!lead_writes_docs(&h));
    h.kill9("c");
    common::wait_until("c's layer reclaimed", || common::layer_names(&h.scope("lead")).is_empty());
    assert!(lead_writes_docs(&h), "back after the helper was killed");
    h.must(&["stop", "lead"]);
}

#[test]
fn a_process_holding_the_region_makes_the_spawn_fail_busy_and_nothing_changes() {
    if !full_here() {
        return;
    }
    let h = Home::new();
    let hold = r#"cd docs && exec sleep 600"#;
    h.must(&["start", "lead", "--write", ".", "--enforce", "full", "--", "sh", "-c", hold]);
    let busy = h.pod(&["spawn", "docs", "--parent", "lead", "--write", "docs"]);
    insta::assert_snapshot!(shown(&h, &busy));
    assert!(common::layer_names(&h.scope("lead")).is_empty());
    assert_eq!(h.allocation("docs"), None);
    h.must(&["stop", "lead"]);
}

#[test]
fn deny_rules_and_the_stores_files_hold_for_the_workload() {
    if !full_here() {
        return;
    }
    let h = Home::new();
    std::fs::write(h.repo.join("secrets/key"), "hunter2\n").expect("secret");
    let log_dir = h.data_dir("lead").join("log");
    let attempts = r#"
try() { if sh -c "$2" >/dev/null 2>&1; then echo "$1 allowed"; else echo "$1 refused"; fi; }
try "read secrets/key" "cat secrets/key"
try "list secrets" "ls secrets | grep -q key"
try "read the session log" "cat $LOG/conf"
try "write tests (deny-write)" "echo x > tests/x"
try "write src" "echo x > src/x"
"#;
    h.must(&[
        "start",
        "lead",
        "--write",
        ".",
        "--enforce",
        "full",
        "--deny-read",
        "secrets",
        "--deny-write",
        "tests",
        "--env",
        &format!("LOG={}", log_dir.display()),
        "--",
        "sh",
        "-c",
        attempts,
    ]);
    assert_eq!(h.pod(&["wait", "lead"]).code, 0);
    let logs = h.must(&["logs", "lead"]);
    let lines: Vec<&str> = logs.stdout.lines().map(|l| l.split_once(' ').expect("time").1).collect();
    insta::assert_snapshot!(lines.join("\n"));
}

#[test]
fn a_tool_writing_its_cache_under_scratch_works() {
    if !full_here() {
        return;
    }
    let h = Home::new();
    let cache = h.home.parent().expect("root").join("cache");
    std::fs::create_dir_all(&cache).expect("cache");
    let tool =
        r#"mkdir -p "$CACHE/tool" && echo state > "$CACHE/tool/state" && echo t > "$TMPDIR/t" && echo src > src/out"#;
    let cache_env = format!("CACHE={}", cache.display());
    let scratch = cache.to_string_lossy().into_owned();
    h.must(&[
        "start",
        "lead",
        "--write",
        "src",
        "--scratch",
        &scratch,
        "--env",
        &cache_env,
        "--enforce",
        "full",
        "--",
        "sh",
        "-c",
        tool,
    ]);
    assert_eq!(h.pod(&["wait", "lead"]).code, 0, "{:?}", h.pod(&["logs", "lead"]));
    assert_eq!(std::fs::read_to_string(cache.join("tool/state")).expect("cache written"), "state\n");
}

/// A lead's workload enforced at `full` cannot read the stores' `data/`,
/// yet `pod wait`, `pod logs` and `pod log` of its helper work there: they
/// ask the lead's Pod, which reads for its own tree only (a Pod outside it
/// is refused, `auth.inspect_denied`).
#[test]
fn an_enforced_lead_waits_for_and_reads_its_helper_through_its_pod() {
    if !full_here() {
        return;
    }
    let h = Home::new();
    h.must(&["start", "other", "--write", "tests", "--enforce", "off"]);
    let out = h.repo.join(".reads");
    std::fs::create_dir_all(&out).expect("reads");
    // The helper runs until the lead's workload has seen it running.
    let go = out.join("go");
    let helper =
        format!("until [ -e {} ]; do sleep 0.02; done; echo hello from h1; echo bye from h1; exit 3", go.display());
    let spawn = format!("spawn h1 --write docs -- sh -c '{helper}'");
    // (file, what the snapshot shows, the shell's command)
    let steps = [
        ("spawn", spawn.replace(&go.display().to_string(), "[go]").replace('\'', ""), format!("{POD} {spawn}")),
        ("wait", "wait h1 --timeout 1".into(), format!("{POD} wait h1 --timeout 1")),
        // Asked while h1 runs; h1 goes on only then.
        ("wait", "wait h1".into(), format!("{{ {POD} wait h1 & touch {}; wait $!; }}", go.display())),
        ("logs", "logs h1".into(), format!("{POD} logs h1")),
        ("tail", "logs h1 --tail 1 --follow".into(), format!("{POD} logs h1 --tail 1 --follow")),
        ("log", "log h1 --follow".into(), format!("{POD} log h1 --follow")),
        ("own", "log lead".into(), format!("{POD} log lead")),
        ("refused", "wait other".into(), format!("{POD} wait other")),
        ("refused", "logs other".into(), format!("{POD} logs other")),
        ("refused", "log other".into(), format!("{POD} log other")),
    ];
    let mut script = String::new();
    for (file, shown, command) in &steps {
        let f = out.join(file);
        let f = f.display();
        script.push_str(&format!("echo \"$ pod {shown}\" >> {f}; {command} >> {f} 2>&1; echo \"exit $?\" >> {f}\n"));
    }
    script.push_str(&format!("touch {}\n", out.join(".read").display()));
    script.push_str(&format!(
        "for i in $(seq 3000); do [ -e {} ] && break; sleep 0.02; done\n",
        out.join(".done").display()
    ));
    h.must(&["start", "lead", "--write", "docs", "--write", ".reads", "--enforce", "full", "--", "sh", "-c", &script]);
    common::wait_until("the lead's workload read everything", || out.join(".read").exists());
    let read = |file: &str| std::fs::read_to_string(out.join(file)).expect("output");
    // A `pod logs` line is `TIME STREAM LINE`; a `pod log` line `SEQ TIME
    // KIND TEXT`: the times go.
    let untimed = |text: String, time_at: usize| -> String {
        text.lines()
            .map(|l| {
                let words: Vec<&str> = l.split_whitespace().collect();
                if l.starts_with("$ ") || l.starts_with("exit ") || l.starts_with("pod: ") || words.len() <= time_at {
                    l.to_string()
                } else {
                    let mut kept = words.clone();
                    kept[time_at] = "[time]";
                    kept.join(" ")
                }
            })
            .map(|l| format!("{l}\n"))
            .collect::<String>()
    };
    let own = read("own");
    assert!(own.lines().any(|l| l.contains("spawned h1")), "{own}");
    assert!(own.ends_with("exit 0\n"), "{own}");
    let text = [
        read("spawn"),
        read("wait"),
        untimed(read("logs"), 0),
        untimed(read("tail"), 0),
        untimed(read("log"), 1),
        read("refused"),
    ]
    .join("---\n");
    insta::assert_snapshot!(common::redact_numbers_after(&h.redact(&text), &["ABI "]));
    // The lead's workload then ends, and with it the lead.
    std::fs::write(out.join(".done"), b"").expect("done");
    assert_eq!(h.pod(&["wait", "lead"]).code, 0);
    h.must(&["stop", "other"]);
}
