//! Who may do what on a Pod's socket, decided from the kernel's answers
//! (the caller's pid and start time, then its process tree), never from
//! what it sends or its environment: a process in Pod W's workload may
//! spawn children of W and stop, inspect or remove W and its descendants,
//! nothing else; a process outside every Pod (this test) is the operator
//! and may do everything; a ShutDown callback is taken only from the
//! child's own process.

use pod_e2e as common;

use common::{wait_until, Home, POD};

/// The commands W's workload tries, each as `$ COMMAND`, its stderr, and
/// its exit code. `env -u POD_NAME` shows that the environment plays no
/// part. It writes its answers to the test's scratch directory (the
/// workload's `--scratch`: it may write nowhere else outside `a/`).
fn attempts(h: &Home) -> String {
    let lines = [
        "pod stop lead",
        "pod stop sib",
        "env -u POD_NAME pod stop sib",
        "pod spawn x --parent lead --write a/b",
        "pod spawn x --parent sib --write tests/x",
        "pod scope lead",
        "pod check sib tests/t",
        "pod spawn w1 --write a/x",
        "pod check w1 a/x/f --write",
        "pod stop w1",
        "pod rm sib",
        "pod rm w1",
    ];
    let out = h.scratch().join("attempts");
    let mut script = format!("OUT={}\n", out.display());
    script.push_str(
        "run() { echo \"\\$ $*\" >> \"$OUT\"; \"$@\" >/dev/null 2>> \"$OUT\"; echo \"exit $?\" >> \"$OUT\"; }\n",
    );
    for line in lines {
        script.push_str(&format!("run {}\n", line.replacen("pod", POD, 1)));
    }
    script.push_str(&format!("touch {}\n", h.scratch().join("attempted").display()));
    // Bounded, so a failed test leaves no process behind for long.
    script.push_str(&format!(
        "for i in $(seq 3000); do [ -e {} ] && break; sleep 0.02; done\n",
        h.repo.join(".done").display()
    ));
    script
}

#[test]
fn a_workload_acts_on_its_own_pod_and_descendants_only() {
    acts_on_its_own_pod_and_descendants_only(&[]);
}

/// The same, with the workload known by its process tree instead of its
/// cgroup (none is used: a PID namespace's supervisor contains it). Its
/// Pod `w` is lead's second child, so it was started from lead's standby,
/// whose command line (`pod __pod --standby`) names no Pod: it must still
/// be told from lead, whose process started it.
#[test]
fn a_workload_known_by_its_process_tree_acts_on_its_own_pod_and_descendants_only() {
    acts_on_its_own_pod_and_descendants_only(&[("POD_SANDBOX_DISABLE", "cgroup")]);
}

/// The same under a subreaper (no cgroup, no PID namespace).
#[test]
fn a_workload_under_a_subreaper_acts_on_its_own_pod_and_descendants_only() {
    acts_on_its_own_pod_and_descendants_only(&[("POD_SANDBOX_DISABLE", "cgroup,pidns")]);
}

/// lead, its child sib, then its child w, whose workload tries every
/// command of [`attempts`]; `env` goes to lead's process (and so to every
/// Pod process it starts).
fn acts_on_its_own_pod_and_descendants_only(env: &[(&str, &str)]) {
    let h = Home::new();
    let started = h.pod_env(&["start", "lead", "--write", "."], env);
    assert!(started.ok(), "{started:?}");
    h.must(&["spawn", "sib", "--parent", "lead", "--write", "tests"]);
    let script = attempts(&h);
    let scratch = h.scratch().to_string_lossy().into_owned();
    let run =
        h.pod(&["spawn", "w", "--parent", "lead", "--write", "a", "--scratch", &scratch, "--", "sh", "-c", &script]);
    assert!(run.ok(), "{run:?}");
    wait_until("the workload tried everything", || h.scratch().join("attempted").exists());
    let text = std::fs::read_to_string(h.scratch().join("attempts")).expect("attempts");
    insta::assert_snapshot!("a_workload_acts_on_its_own_pod_and_descendants_only", h.redact(&text).replace(POD, "pod"));
    // Nothing it was refused happened.
    for pod in ["lead", "sib", "w"] {
        assert!(h.allocation(pod).is_some_and(|a| a["state"] == "live"), "{pod} must still run");
    }
    assert!(h.allocation("x").is_none());
    assert!(h.allocation("w1").is_none(), "w stopped its own child");
    assert!(!h.data_dir("w1").exists(), "w removed its own stopped child");
    assert_eq!(common::layer_names(&h.scope("lead")), vec!["sib", "w"]);
    // The operator may do what the workload may not.
    h.must(&["stop", "sib"]);
    h.must(&["spawn", "x", "--parent", "lead", "--write", "src"]);
    std::fs::write(h.repo.join(".done"), b"").expect("done");
}

/// The ShutDown callback names a child; the Pod takes it only from that
/// child's own process, whatever the frame says.
#[test]
fn a_shutdown_callback_from_another_process_is_refused() {
    let h = Home::new();
    h.must(&["start", "lead", "--write", "."]);
    h.must(&["spawn", "sib", "--parent", "lead", "--write", "tests"]);
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    let socket = h.run_dir("lead").join("sock");
    let request = pod::protocol::PodRequest::ChildShutDown {
        child: scope::PodName::new("sib").expect("name"),
        exit: Default::default(),
    };
    let answer = runtime.block_on(pod_client::pod::PodClient::call_at(&socket.to_string_lossy(), &request));
    let refusal = answer.expect_err("refused");
    insta::assert_snapshot!(h.redact(&format!("{} [{}]", refusal.message, refusal.code)));
    assert_eq!(common::layer_names(&h.scope("lead")), vec!["sib"], "nothing reclaimed");
    assert!(h.allocation("sib").is_some_and(|a| a["state"] == "live"));
}
