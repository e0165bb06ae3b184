//! Starting on demand, one daemon per registry, private files, clean
//! shutdown, and the command line.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::process::Command;

use common::*;
use pod_registry::daemon::holder_pid;
use pod_registry::Client;

/// Daemon processes serving this home, found by their command line.
fn daemons_for(home: &Home) -> Vec<u32> {
    let needle = home.dirs.run.to_string_lossy().into_owned();
    let Ok(entries) = std::fs::read_dir("/proc") else { return Vec::new() };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            let Ok(cmd) = std::fs::read(format!("/proc/{pid}/cmdline")) else { return false };
            let cmd = String::from_utf8_lossy(&cmd);
            let running = pod_registry::proc::start_time(*pid).ok().flatten().is_some();
            running && cmd.contains("serve") && cmd.contains(&needle)
        })
        .collect()
}

struct StopOnDrop(u32);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        signal(self.0, rustix::process::Signal::KILL);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_start_the_daemon_on_demand_and_two_at_once_end_with_one() {
    let home = Home::new();
    let (a, b) = tokio::join!(Client::connect(&home.dirs), Client::connect(&home.dirs));
    let (mut a, mut b) = (a.expect("client a"), b.expect("client b"));
    let pid = holder_pid(&home.dirs.registry_lock()).expect("lock names its holder");
    let _stop = StopOnDrop(pid);
    a.register(&reg("via-a", vec![w("/a")])).await.expect("register");
    assert!(b.get(&n("via-a")).await.expect("get").is_some(), "both talk to one daemon");
    wait_until(|| async { daemons_for(&home).len() == 1 }).await;
    assert_eq!(daemons_for(&home), vec![pid]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_are_private_and_sigterm_shuts_down_cleanly_keeping_everything() {
    let home = Home::new();
    let mut daemon = Daemon::start(&home).await;
    let mode = |p: &std::path::Path| std::fs::metadata(p).expect("meta").permissions().mode() & 0o777;
    assert_eq!(mode(&home.dirs.run), 0o700);
    assert_eq!(mode(&home.dirs.data), 0o700);
    assert_eq!(mode(&home.dirs.registry_socket()), 0o600);
    let mut c = client(&home).await;
    c.register(&reg("lead", vec![w("/repo")])).await.expect("lead");
    c.delegate(&n("lead"), &n("child"), &[w("/repo/src")], &[]).await.expect("child");
    let status = daemon.term();
    assert!(status.success(), "{status:?}\n{}", home.log());
    assert!(!home.dirs.registry_socket().exists(), "socket removed on clean shutdown");
    let _again = Daemon::start(&home).await;
    let mut c = client(&home).await;
    let lead = c.get(&n("lead")).await.expect("get").expect("lead kept");
    assert!(lead.layers.contains_key(&n("child")));
    assert_eq!(c.get(&n("child")).await.expect("get").expect("child").parent, Some(n("lead")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_daemon_exits_quietly_while_one_serves() {
    let home = Home::new();
    let _d = Daemon::start(&home).await;
    let out = Command::new(BIN).arg("serve").env("POD_HOME", home.path()).output().expect("second daemon");
    assert!(out.status.success(), "{out:?}");
    still_answers(&home).await;
}

async fn still_answers(home: &Home) {
    client(home).await.list().await.expect("first daemon still serves");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ls_json_lists_every_allocation() {
    let home = Home::new();
    let _d = Daemon::start(&home).await;
    let mut c = client(&home).await;
    c.register(&pod_registry::client::Registration { deny: vec![w("/repo/secret")], ..reg("lead", vec![w("/repo")]) })
        .await
        .expect("lead");
    c.delegate(&n("lead"), &n("child"), &[w("/repo/src")], &[]).await.expect("child");
    let out = Command::new(BIN).args(["ls", "--json"]).env("POD_HOME", home.path()).output().expect("ls");
    assert!(out.status.success(), "{out:?}");
    let list: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    let items = list.as_array().expect("array");
    assert_eq!(items.len(), 2);
    let lead = items.iter().find(|i| i["name"] == "lead").expect("lead");
    for key in ["name", "parent", "pid", "state", "allow", "deny", "layers"] {
        assert!(lead.get(key).is_some(), "missing {key} in {lead}");
    }
    assert_eq!(lead["deny"][0]["target"], "/repo/secret");
    assert_eq!(lead["layers"]["child"][0]["target"], "/repo/src");
    let child = items.iter().find(|i| i["name"] == "child").expect("child");
    assert_eq!((child["parent"].as_str(), child["state"].as_str()), (Some("lead"), Some("reserved")));
}

/// The peer check itself, with a real process of another uid. Needs root
/// (to run the peer as `nobody`) and opens the private directories so the
/// other user can reach the socket at all; skipped otherwise.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_of_another_uid_is_refused() {
    let needs = [
        ("root", rustix::process::geteuid().is_root()),
        ("setpriv", std::path::Path::new("/usr/bin/setpriv").exists()),
        ("python3", std::path::Path::new("/usr/bin/python3").exists()),
    ];
    let required = std::env::var("POD_TEST_REQUIRE").unwrap_or_default();
    for (need, present) in needs {
        if !present {
            let demanded = required.split(',').map(str::trim).any(|r| r == need || r == "all");
            assert!(!demanded, "this test needs {need}, which POD_TEST_REQUIRE demands, and it is missing");
            eprintln!("skipped: this test needs {need} (POD_TEST_REQUIRE={need} makes its absence fail)");
            return;
        }
    }
    let home = Home::new();
    let _d = Daemon::start(&home).await;
    let open_up = [
        (home.path(), 0o755),
        (home.dirs.run.clone(), 0o755),
        (home.dirs.registry_run(), 0o755),
        (home.dirs.registry_socket(), 0o666),
    ];
    for (path, mode) in open_up {
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).expect("open up for the test");
    }
    let script = "import socket,sys\ns=socket.socket(socket.AF_UNIX)\ns.settimeout(20)\ns.connect(sys.argv[1])\n\
                  data=b''\nwhile True:\n    chunk=s.recv(4096)\n    if not chunk: break\n    data+=chunk\n\
                  sys.stdout.write(data.decode('latin-1'))";
    let out = Command::new("/usr/bin/setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "/usr/bin/python3", "-c", script])
        .arg(home.dirs.registry_socket())
        .output()
        .expect("run the foreign peer");
    assert!(out.status.success(), "{out:?}");
    let answer = String::from_utf8_lossy(&out.stdout);
    assert!(answer.contains("proto.peer_refused") && answer.contains("65534"), "{answer}");
    still_answers(&home).await;
}
