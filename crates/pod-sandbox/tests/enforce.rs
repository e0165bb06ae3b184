//! Kernel enforcement with real writes by real sandboxed workloads.

mod common;

use std::time::Duration;

use common::*;
use pod_sandbox::detect::Feature;
use pod_sandbox::{Level, Limits, SandboxError};
use scope::{PodName, ScopeRule};

const WRITES: &[(&str, &str)] = &[
    ("create inside", "echo new > $R/docs/new"),
    ("append inside", "echo more >> $R/src/main.rs"),
    ("truncate inside", "truncate -s 0 $R/docs/new"),
    ("rename inside", "mv $R/docs/new $R/src/moved"),
    ("link inside", "ln $R/src/moved $R/docs/linked"),
    ("delete inside", "rm $R/docs/linked"),
    ("mkdir inside", "mkdir $R/docs/sub"),
    ("create outside", "echo new > $O/new"),
    ("append outside", "echo more >> $O/file"),
    ("truncate outside", "truncate -s 0 $O/file"),
    ("rename into outside", "mv $R/src/moved $O/moved"),
    ("link into outside", "ln $R/src/main.rs $O/linked"),
    ("rename out of outside", "mv $O/file $R/docs/stolen"),
    ("delete outside", "rm $O/file"),
    ("mkdir outside", "mkdir $O/sub"),
    ("write the runtime's run/", "echo x > $H/run/x"),
    ("read the stores' data/", "cat $H/data/store"),
    ("write /dev/null", "echo x > /dev/null"),
    ("write TMPDIR", "echo x > $T/scratch"),
];

const EXPECTED: &str = "\
create inside: ok
append inside: ok
truncate inside: ok
rename inside: ok
link inside: ok
delete inside: ok
mkdir inside: ok
create outside: denied
append outside: denied
truncate outside: denied
rename into outside: denied
link into outside: denied
rename out of outside: denied
delete outside: denied
mkdir outside: denied
write the runtime's run/: denied
read the stores' data/: denied
write /dev/null: ok
write TMPDIR: ok
";

fn writes_bounded_at(level: Level, disable: &[Feature]) {
    let fx = Fixture::new();
    let run = start(&fx, "helper", level, &fx.policy(vec![]), disable, Limits::default(), AGENT);
    let got = attempts(&fx, WRITES);
    quit(&fx);
    assert_eq!(got, EXPECTED);
    assert_eq!(std::fs::read_to_string(fx.outside.join("file")).expect("untouched"), "outside\n");
    finish(run);
}

#[test]
fn a_workload_writes_exactly_inside_its_scope_at_landlock() {
    if require(&["landlock", "cgroup"]) {
        writes_bounded_at(Level::Landlock, &[]);
    }
}

#[test]
fn a_workload_writes_exactly_inside_its_scope_at_full() {
    if require(&["landlock", "mountns", "cgroup"]) {
        writes_bounded_at(Level::Full, &[]);
    }
}

#[test]
fn a_workload_under_the_pid_namespace_supervisor_is_bounded_the_same() {
    if require(&["landlock", "mountns", "pidns"]) {
        writes_bounded_at(Level::Full, &[Feature::Cgroup]);
    }
}

#[test]
fn a_workload_under_the_subreaper_is_bounded_the_same() {
    if require(&["landlock"]) {
        writes_bounded_at(Level::Landlock, &[Feature::Cgroup, Feature::Pidns]);
    }
}

#[test]
fn deny_rules_carved_out_of_the_scope_hold_at_full() {
    if !require(&["landlock", "mountns", "cgroup"]) {
        return;
    }
    let fx = Fixture::new();
    let deny = vec![ScopeRule::read(p(&fx.repo.join("secrets"))), ScopeRule::write(p(&fx.repo.join("vendor")))];
    let run = start(&fx, "lead", Level::Full, &fx.policy(deny), &[], Limits::default(), AGENT);
    let got = attempts(
        &fx,
        &[
            ("read a deny-read file", "cat $R/secrets/key"),
            ("list a deny-read dir", "ls $R/secrets | grep -q key"),
            ("write a deny-read dir", "echo x > $R/secrets/new"),
            ("write a deny-write dir", "echo x > $R/vendor/new"),
            ("read a deny-write dir", "ls $R/vendor"),
            ("write next to them", "echo x > $R/src/new"),
        ],
    );
    quit(&fx);
    assert_eq!(
        got,
        "\
read a deny-read file: denied
list a deny-read dir: denied
write a deny-read dir: denied
write a deny-write dir: denied
read a deny-write dir: ok
write next to them: ok
"
    );
    finish(run);
}

fn narrowing_and_widening(disable: &[Feature]) {
    let fx = Fixture::new();
    let deny = vec![ScopeRule::write(p(&fx.repo.join("vendor")))];
    let run = start(&fx, "lead", Level::Full, &fx.policy(deny), disable, Limits::default(), AGENT);
    let child = PodName::new("docs-writer").expect("name");
    let docs = vec![ScopeRule::write(p(&fx.repo.join("docs")))];
    let probe = [
        ("docs", "echo x >> $R/docs/a"),
        ("src", "echo x >> $R/src/a"),
        ("vendor (base deny)", "echo x >> $R/vendor/a"),
    ];
    let before = attempts(&fx, &probe);
    run.workload.narrow(&child, &docs).expect("narrow");
    let narrowed = attempts(&fx, &probe);
    run.workload.narrow(&child, &docs).expect("narrowing twice is narrowing once");
    run.workload.widen(&child).expect("widen");
    let widened = attempts(&fx, &probe);
    run.workload.widen(&child).expect("widening twice is widening once");
    quit(&fx);
    assert_eq!(before, "docs: ok\nsrc: ok\nvendor (base deny): denied\n");
    assert_eq!(narrowed, "docs: denied\nsrc: ok\nvendor (base deny): denied\n");
    assert_eq!(widened, before);
    finish(run);
}

#[test]
fn narrowing_takes_write_from_the_running_workload_and_widening_gives_it_back() {
    if require(&["landlock", "mountns", "cgroup"]) {
        narrowing_and_widening(&[]);
    }
}

#[test]
fn narrowing_works_the_same_under_the_pid_namespace_supervisor() {
    if require(&["landlock", "mountns", "pidns"]) {
        narrowing_and_widening(&[Feature::Cgroup]);
    }
}

fn busy(fx: &Fixture, holder: &str) -> (SandboxError, String) {
    let run = start(fx, "lead", Level::Full, &fx.policy(vec![]), &[], Limits::default(), AGENT);
    // The holder runs in the background of the agent and says when it holds.
    assert_eq!(ask(fx, &format!("{{ {holder}; echo up > $T/sync; exec sleep 1000; }} & read x < $T/sync")), "ok");
    let child = PodName::new("docs-writer").expect("name");
    let err = run.workload.narrow(&child, &[ScopeRule::write(p(&fx.repo.join("docs")))]).expect_err("busy");
    // Nothing changed: the lead still writes there.
    let after = ask(fx, "echo x >> $R/docs/still");
    finish(run);
    (err, after)
}

#[test]
fn a_file_open_for_writing_makes_narrowing_busy() {
    if !require(&["landlock", "mountns", "cgroup"]) {
        return;
    }
    let fx = Fixture::new();
    let (err, after) = busy(&fx, "exec 3>>$R/docs/held");
    let SandboxError::Busy { path, how, .. } = &err else { panic!("not busy: {err}") };
    assert_eq!((path.clone(), *how), (fx.repo.join("docs/held"), "open for writing"));
    assert_eq!(err.code(), "enforce.busy");
    assert_eq!(after, "ok");
}

#[test]
fn a_working_directory_inside_makes_narrowing_busy() {
    if !require(&["landlock", "mountns", "cgroup"]) {
        return;
    }
    let fx = Fixture::new();
    let (err, after) = busy(&fx, "cd $R/docs");
    let SandboxError::Busy { path, how, .. } = &err else { panic!("not busy: {err}") };
    assert_eq!((path.clone(), *how), (fx.repo.join("docs"), "its working directory"));
    assert_eq!(after, "ok");
}

/// A workload busy making and removing directories in the region while it
/// is narrowed: the bind's read-only remount meets writes in progress
/// (EBUSY from the kernel), which last microseconds and hold nothing, so
/// every narrowing succeeds. The interleaving is not forced: the writer
/// never stops, so each of the rounds' remounts may meet one.
#[test]
fn narrowing_succeeds_while_the_workload_writes_in_the_region() {
    if !require(&["landlock", "mountns", "cgroup"]) {
        return;
    }
    let fx = Fixture::new();
    let run = start(&fx, "lead", Level::Full, &fx.policy(vec![]), &[], Limits::default(), AGENT);
    let writer = "while :; do mkdir $R/docs/p 2>/dev/null; rmdir $R/docs/p 2>/dev/null; done";
    assert_eq!(ask(&fx, &format!("{{ echo up > $T/sync; {writer}; }} >/dev/null 2>&1 & read x < $T/sync")), "ok");
    let child = PodName::new("docs-writer").expect("name");
    let docs = vec![ScopeRule::write(p(&fx.repo.join("docs")))];
    for round in 0..50 {
        run.workload.narrow(&child, &docs).unwrap_or_else(|e| panic!("round {round}: narrow: {e}"));
        run.workload.widen(&child).unwrap_or_else(|e| panic!("round {round}: widen: {e}"));
    }
    run.workload.narrow(&child, &docs).expect("narrow");
    let narrowed = attempts(&fx, &[("docs", "echo x >> $R/docs/a")]);
    quit(&fx);
    assert_eq!(narrowed, "docs: denied\n");
    finish(run);
}

#[test]
fn proc_root_of_a_process_outside_the_sandbox_is_no_way_out() {
    if !require(&["landlock", "mountns", "cgroup"]) {
        return;
    }
    let fx = Fixture::new();
    let run = start(&fx, "lead", Level::Full, &fx.policy(vec![]), &[], Limits::default(), AGENT);
    let child = PodName::new("docs-writer").expect("name");
    run.workload.narrow(&child, &[ScopeRule::write(p(&fx.repo.join("docs")))]).expect("narrow");
    let me = std::process::id();
    let got = attempts(
        &fx,
        &[
            ("write the delegated dir directly", "echo x > $R/docs/a"),
            ("write it through the Pod's /proc root", &format!("echo x > /proc/{me}/root$R/docs/a")),
            ("read data/ through the Pod's /proc root", &format!("cat /proc/{me}/root$H/data/store")),
            ("signal the Pod", &format!("kill -0 {me}")),
        ],
    );
    quit(&fx);
    assert_eq!(
        got,
        "\
write the delegated dir directly: denied
write it through the Pod's /proc root: denied
read data/ through the Pod's /proc root: denied
signal the Pod: denied
"
    );
    assert!(!fx.repo.join("docs/a").exists());
    finish(run);
}

#[test]
fn a_workload_cannot_undo_the_mounts() {
    if !require(&["root", "landlock", "mountns", "cgroup"]) {
        return;
    }
    let fx = Fixture::new();
    let run = start(
        &fx,
        "lead",
        Level::Full,
        &fx.policy(vec![ScopeRule::read(p(&fx.repo.join("secrets")))]),
        &[],
        Limits::default(),
        AGENT,
    );
    let got = attempts(
        &fx,
        &[
            ("umount the hidden dir", "umount -l $R/secrets"),
            ("mount over it", "mount -t tmpfs none $R/docs"),
            ("still hidden", "test ! -e $R/secrets/key"),
        ],
    );
    quit(&fx);
    assert_eq!(got, "umount the hidden dir: denied\nmount over it: denied\nstill hidden: ok\n");
    finish(run);
}

#[test]
fn a_workload_at_level_off_is_contained_but_not_bounded() {
    if !require(&["cgroup"]) {
        return;
    }
    let fx = Fixture::new();
    let run = start(&fx, "free", Level::Off, &fx.policy(vec![]), &[], Limits::default(), AGENT);
    assert_eq!(ask(&fx, "echo new > $O/new"), "ok");
    let child = PodName::new("c").expect("name");
    let err = run.workload.narrow(&child, &[ScopeRule::write(p(&fx.repo.join("docs")))]).expect_err("no mounts");
    assert_eq!(err.code(), "enforce.unsupported");
    quit(&fx);
    let exit = run.workload.wait_exit(Duration::from_secs(10)).expect("exit");
    assert_eq!(exit.shell_code(), 0);
    finish(run);
}
