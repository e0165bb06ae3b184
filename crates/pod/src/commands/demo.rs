//! `pod demo`: the product in one minute, run as a user would run it. Every
//! step is a real `pod` command in a fresh POD_HOME, printed before it runs:
//! start a Pod, spawn two children, look at the tree and at `pod check`
//! answers, stop one child, kill the parent with SIGKILL (and one child while
//! the parent is down), resume the parent, and watch the scope come back;
//! then the kernel keeping those scopes (a helper's write outside its scope
//! refused, the lead's running workload losing write on what it delegates
//! and getting it back), and the coordination store.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

use pod_proto::WireError;

struct Demo {
    exe: PathBuf,
    home: PathBuf,
    repo: PathBuf,
}

impl Demo {
    /// Runs `pod ARGS` and prints it; returns its exit code.
    fn pod(&self, args: &[&str]) -> Result<i32, WireError> {
        println!("\n$ pod {}", args.join(" "));
        let status = Command::new(&self.exe)
            .args(args)
            .env("POD_HOME", &self.home)
            .env_remove("POD_NAME")
            .current_dir(&self.repo)
            .status()
            .map_err(|e| WireError::new("demo.run", format!("cannot run pod: {e}")))?;
        Ok(status.code().unwrap_or(-1))
    }

    fn must(&self, args: &[&str]) -> Result<(), WireError> {
        match self.pod(args)? {
            0 => Ok(()),
            code => Err(WireError::new("demo.step", format!("`pod {}` exited with {code}", args.join(" ")))),
        }
    }

    fn expect(&self, args: &[&str], want: i32) -> Result<(), WireError> {
        match self.pod(args)? {
            code if code == want => Ok(()),
            code => Err(WireError::new(
                "demo.step",
                format!("`pod {}` exited with {code}, expected {want}", args.join(" ")),
            )),
        }
    }

    /// `pod kv wait` for `key` in `layer`'s store (the value it prints
    /// has no newline of its own).
    fn wait_key(&self, layer: &str, key: &str) -> Result<(), WireError> {
        self.must(&["kv", "wait", "--layer", layer, key, "--timeout", "60"])?;
        println!();
        Ok(())
    }

    /// Writes workload script `name` beside the repository, shows it, and
    /// returns its path.
    fn script(&self, name: &str, text: &str) -> Result<String, WireError> {
        let path = self.home.with_file_name(name);
        std::fs::write(&path, text)
            .map_err(|e| WireError::new("demo.io", format!("cannot write {}: {e}", path.display())))?;
        println!("\n$ cat {}\n{}", path.display(), text.trim_end());
        Ok(path.to_string_lossy().into_owned())
    }

    fn kill9(&self, name: &str) -> Result<(), WireError> {
        let pid_file = self.home.join("run/pods").join(name).join("pid");
        let text = std::fs::read_to_string(&pid_file)
            .map_err(|e| WireError::new("demo.pid", format!("cannot read {}: {e}", pid_file.display())))?;
        // `PID START_TIME` (see `layout::PidRecord`).
        let pid: i32 = text
            .split_whitespace()
            .next()
            .and_then(|w| w.parse().ok())
            .ok_or_else(|| WireError::new("demo.pid", format!("bad pid file {}", pid_file.display())))?;
        println!("\n$ kill -9 {pid}    # {name}");
        signal_and_wait(pid, rustix::process::Signal::KILL)
            .map_err(|e| WireError::new("demo.kill", format!("cannot kill {name} (pid {pid}): {e}")))
    }
}

/// Sends `sig` to `pid` and waits (at most 10 s) until the process is gone.
fn signal_and_wait(pid: i32, sig: rustix::process::Signal) -> Result<(), String> {
    let fd = rustix::process::Pid::from_raw(pid)
        .and_then(|p| rustix::process::pidfd_open(p, rustix::process::PidfdFlags::empty()).ok())
        .ok_or("not running")?;
    rustix::process::pidfd_send_signal(&fd, sig).map_err(|e| e.to_string())?;
    let mut fds = [rustix::event::PollFd::new(&fd, rustix::event::PollFlags::IN)];
    let timeout = rustix::event::Timespec { tv_sec: 10, tv_nsec: 0 };
    rustix::event::poll(&mut fds, Some(&timeout)).map_err(|e| e.to_string())?;
    Ok(())
}

pub fn run(dir: Option<&Path>) -> Result<ExitCode, WireError> {
    let exe = std::env::current_exe().map_err(|e| WireError::new("demo.exe", e.to_string()))?;
    let temp;
    let root = match dir {
        Some(d) => d.to_path_buf(),
        None => {
            temp = tempfile::Builder::new()
                .prefix("pod-demo-")
                .tempdir()
                .map_err(|e| WireError::new("demo.io", e.to_string()))?;
            temp.path().to_path_buf()
        }
    };
    let home = root.join("home");
    let repo = root.join("repo");
    for d in ["src", "docs", "tests", "secrets"] {
        std::fs::create_dir_all(repo.join(d)).map_err(|e| WireError::new("demo.io", e.to_string()))?;
    }
    println!("# demo in {} (POD_HOME={})", root.display(), home.display());
    let demo = Demo { exe, home, repo };
    let result = steps(&demo).and_then(|()| enforcement(&demo)).and_then(|()| coordination(&demo));
    // Leave nothing running, whatever happened.
    for name in ["lead", "docs", "tests", "guard", "scribe", "crew"] {
        let _ = Command::new(&demo.exe)
            .args(["stop", name])
            .env("POD_HOME", &demo.home)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status();
    }
    // The registry daemon this demo started on demand goes too.
    if let Some(pid) =
        std::fs::read_to_string(demo.home.join("run/registry/lock")).ok().and_then(|t| t.trim().parse().ok())
    {
        if let Err(e) = signal_and_wait(pid, rustix::process::Signal::TERM) {
            tracing::warn!(pid, error = %e, "could not stop the demo's registry daemon");
        }
    }
    result?;
    println!("\n# demo done: every answer above came from real processes and a real registry.");
    Ok(ExitCode::SUCCESS)
}

fn steps(d: &Demo) -> Result<(), WireError> {
    println!("\n# A lead Pod owns the repository, except secrets it may not even read.");
    d.must(&["start", "lead", "--write", ".", "--deny-read", "secrets"])?;
    println!("\n# It hands docs/ and tests/ to two helpers; it loses write there.");
    d.must(&["spawn", "docs", "--parent", "lead", "--write", "docs"])?;
    d.must(&["spawn", "tests", "--parent", "lead", "--write", "tests"])?;
    d.must(&["tree"])?;
    d.expect(&["check", "lead", "docs/guide.md", "--write"], 1)?;
    d.expect(&["check", "docs", "docs/guide.md", "--write"], 0)?;
    d.expect(&["check", "lead", "secrets/key.pem"], 1)?;
    println!("\n# Stopping a helper gives the lead its write back: the layer goes, the deny stays.");
    d.must(&["stop", "docs"])?;
    d.expect(&["check", "lead", "docs/guide.md", "--write"], 0)?;
    d.expect(&["check", "lead", "secrets/key.pem"], 1)?;
    println!("\n# Now the lead crashes, and the tests helper dies while the lead is down.");
    d.kill9("lead")?;
    d.kill9("tests")?;
    println!("\n# Resuming replays the session log and prunes the helper that is gone.");
    d.must(&["resume", "lead"])?;
    d.expect(&["check", "lead", "tests/unit.rs", "--write"], 0)?;
    d.must(&["scope", "lead"])?;
    d.must(&["log", "lead"])?;
    d.must(&["stop", "lead"])?;
    d.must(&["ls"])?;
    Ok(())
}

/// The kernel keeps the scopes. A helper's workload tries to write outside
/// its scope and inside it; the lead's running workload writes `docs/`,
/// loses it within `pod spawn` of a helper that gets `docs/`, and has it
/// back after `pod stop`. The lead's workload and the demo take turns
/// through the lead's layer of the store (`pod kv wait`), so every attempt
/// happens at the step it is printed under. Below `full` the demo says what
/// this machine cannot do (`pod doctor`) and shows what the level keeps.
fn enforcement(d: &Demo) -> Result<(), WireError> {
    println!("\n# The kernel keeps these scopes, not the agents' good manners.");
    let level = pod_sandbox::Support::detect()
        .map(|support| pod_sandbox::level::best_level(&support))
        .unwrap_or(pod_sandbox::Level::Off);
    if level != pod_sandbox::Level::Full {
        println!("# This machine cannot enforce at full (why, below); a Pod here gets level {level}.");
        d.must(&["doctor"])?;
        if level == pod_sandbox::Level::Off {
            println!("# At off a Pod's scope is bookkeeping: the writes below would all succeed, so they are skipped.");
            return Ok(());
        }
        println!("# At landlock a workload is bounded at exec only: guard's running workload keeps docs/ below.");
    }
    let exe = d.exe.to_string_lossy();
    let attempt = |who: &str| {
        format!(
            "P='{exe}'\n\
             try() {{ if (echo draft >> \"$1\") 2>/dev/null; then echo \"{who} $2: wrote $1\"; \
             else echo \"{who} $2: the kernel refused $1\"; fi; }}\n"
        )
    };
    let guard = d.script(
        "guard.sh",
        &format!(
            "{}try docs/guide.md \"before delegating docs/\"\n\
             \"$P\" kv set /ref/ready 1 > /dev/null\n\
             \"$P\" kv wait /ref/spawned --timeout 60 > /dev/null\n\
             try docs/guide.md \"while scribe holds docs/\"\n\
             \"$P\" kv set /ref/tried 1 > /dev/null\n\
             \"$P\" kv wait /ref/stopped --timeout 60 > /dev/null\n\
             try docs/guide.md \"after scribe stopped\"\n\
             \"$P\" kv set /ref/done 1 > /dev/null\n\
             exec sleep 600\n",
            attempt("guard")
        ),
    )?;
    let scribe = d.script(
        "scribe.sh",
        &format!(
            "{}try src/main.rs \"(scope docs/)\"\n\
             try docs/guide.md \"(scope docs/)\"\n\
             \"$P\" kv set /peer/self/tried 1 > /dev/null\n\
             exec sleep 600\n",
            attempt("scribe")
        ),
    )?;
    println!("\n# guard's workload writes docs/guide.md at three steps, each when the demo says so through the store.");
    d.must(&["start", "guard", "--write", ".", "--", "sh", &guard])?;
    d.wait_key("guard", "/ref/ready")?;
    println!("\n# A helper gets docs/ only: its workload tries src/main.rs and docs/guide.md.");
    d.must(&["spawn", "scribe", "--parent", "guard", "--write", "docs", "--", "sh", &scribe])?;
    d.wait_key("guard", "/peer/scribe/tried")?;
    d.must(&["logs", "scribe"])?;
    println!("\n# scribe holds docs/: the lead's running workload tries it now.");
    d.must(&["kv", "set", "--layer", "guard", "/ref/spawned", "1"])?;
    d.wait_key("guard", "/ref/tried")?;
    println!("\n# Stopping scribe gives docs/ back, to the running workload too.");
    d.must(&["stop", "scribe"])?;
    d.must(&["kv", "set", "--layer", "guard", "/ref/stopped", "1"])?;
    d.wait_key("guard", "/ref/done")?;
    d.must(&["logs", "guard"])?;
    d.must(&["stop", "guard"])?;
    Ok(())
}

/// The coordination store: the lead publishes tasks in `/ref`, each helper
/// (a workload calling `pod kv` and `pod lease` from inside its Pod, so the
/// lead knows it from the kernel) reads them, takes the `build` lease in
/// turn, and leaves its result in its own slot; one helper tries to read
/// the other's slot and is refused (exit 1).
fn coordination(d: &Demo) -> Result<(), WireError> {
    println!("\n# A lead and its helpers coordinate through the lead's layer of the store.");
    d.must(&["start", "crew", "--write", "."])?;
    d.must(&["kv", "set", "--layer", "crew", "/ref/tasks", "h1: compile src; h2: write docs"])?;
    let exe = d.exe.to_string_lossy();
    let helper = |me: &str, work: &str, peek: &str| {
        format!(
            "P='{exe}'\n\
             echo \"{me} reads the tasks: $(\"$P\" kv get /ref/tasks)\"\n\
             \"$P\" lease acquire build --ttl 10 --wait 30 > /dev/null && echo \"{me} holds the build lease\"\n\
             \"$P\" kv set /peer/self/result '{work}' > /dev/null\n\
             \"$P\" lease release build > /dev/null\n\
             {peek}"
        )
    };
    let h1 = helper("h1", "h1: src compiled", "");
    let h2 = helper(
        "h2",
        "h2: docs written",
        "\"$P\" kv get /peer/h1/result || echo \"h2 was refused h1's slot (exit $?)\"",
    );
    d.must(&["spawn", "h1", "--parent", "crew", "--write", "src", "--", "sh", "-c", &h1])?;
    d.must(&["spawn", "h2", "--parent", "crew", "--write", "docs", "--", "sh", "-c", &h2])?;
    println!("\n# The lead waits for each helper's result, then reads every slot (only it may).");
    d.wait_key("crew", "/peer/h1/result")?;
    d.wait_key("crew", "/peer/h2/result")?;
    d.must(&["wait", "h1", "h2", "--timeout", "30"])?;
    d.must(&["kv", "ls", "--layer", "crew", "/**"])?;
    d.must(&["lease", "ls", "--layer", "crew"])?;
    println!("\n# What the helpers printed: h2 could not read h1's slot.");
    d.must(&["logs", "h1"])?;
    d.must(&["logs", "h2"])?;
    d.must(&["stop", "crew"])?;
    Ok(())
}
