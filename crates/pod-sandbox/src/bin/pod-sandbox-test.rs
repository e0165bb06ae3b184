//! The crate's own re-exec helper, for its tests: `pod-sandbox-test STAGE`
//! is what `pod __sandbox-exec STAGE` is in the `pod` binary (both call
//! `helper_main`).
//!
//! `pod-sandbox-test pod` plays a Pod process for the tests that kill one:
//! it reads a [`StandIn`] (JSON) on stdin, creates the containment,
//! launches the workload, prints the containment record (one JSON line),
//! and waits to be killed.

use std::io::{Read, Write};
use std::process::ExitCode;

use pod_sandbox::detect::Feature;
use pod_sandbox::{
    choose_containment, choose_level, launch, Containment, ContainmentKey, HelperCommand, LaunchSpec, Level, Limits,
    Policy, Program, Support,
};
use serde::Deserialize;

#[derive(Deserialize)]
struct StandIn {
    policy: Policy,
    level: Level,
    disable: Vec<Feature>,
    home: std::path::PathBuf,
    pod: String,
    instance: String,
    program: Program,
    log: std::path::PathBuf,
}

fn stand_in() -> Result<(), String> {
    let mut body = String::new();
    std::io::stdin().take(1 << 20).read_to_string(&mut body).map_err(|e| e.to_string())?;
    let s: StandIn = serde_json::from_str(&body).map_err(|e| e.to_string())?;
    let mut support = Support::detect().map_err(|e| e.to_string())?;
    support.apply_disabled(&s.disable);
    let choice = choose_level(&support, &s.policy, Some(s.level), None).map_err(|e| e.to_string())?;
    let cchoice = choose_containment(&support, &Limits::default()).map_err(|e| e.to_string())?;
    let key = ContainmentKey {
        home: s.home,
        pod: scope::PodName::new(&s.pod).map_err(|e| e.to_string())?,
        instance: s.instance,
    };
    let mut containment =
        Containment::create(&support, &cchoice, &key, &Limits::default()).map_err(|e| e.to_string())?;
    let log = std::fs::OpenOptions::new().create(true).append(true).open(&s.log).map_err(|e| e.to_string())?;
    let helper = HelperCommand { program: std::env::current_exe().map_err(|e| e.to_string())?, args: vec![] };
    let spec = LaunchSpec {
        helper,
        program: s.program,
        level: s.level,
        plan: &choice.plan,
        support: &support,
        stdout: log.try_clone().map_err(|e| e.to_string())?.into(),
        stderr: log.into(),
    };
    let workload = launch(&mut containment, spec).and_then(pod_sandbox::Parked::release).map_err(|e| e.to_string())?;
    let line = serde_json::to_string(containment.record()).map_err(|e| e.to_string())?;
    let mut out = std::io::stdout().lock();
    writeln!(out, "{line}").and_then(|()| out.flush()).map_err(|e| e.to_string())?;
    drop(out);
    // Killed by the test, like a Pod process by kill -9.
    let _keep = workload;
    loop {
        std::thread::park();
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("pod") {
        return match stand_in() {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("pod stand-in: {e}");
                ExitCode::FAILURE
            }
        };
    }
    pod_sandbox::helper_main(&args)
}
