//! `pod doctor`: what this machine offers for kernel enforcement and
//! containment, and why not where it does not, so a user knows which level
//! a Pod gets here before starting one. The lines are `pod-sandbox`'s
//! detection (`Support::report_lines`); `POD_SANDBOX_DISABLE` simulates a
//! missing feature.

use std::process::ExitCode;

use pod_proto::WireError;
use pod_sandbox::level::best_level;
use serde::Serialize;

use crate::commands::print_json;

#[derive(Serialize)]
struct Doctor {
    /// The level a Pod with a plain write scope gets by default.
    level: pod_sandbox::Level,
    /// One line per feature: `landlock: yes (ABI 7)`, `cgroup: no (why)`.
    features: Vec<String>,
}

pub fn run(json: bool) -> Result<ExitCode, WireError> {
    let support = pod_sandbox::Support::detect().map_err(|e| WireError::new(e.code(), e.to_string()))?;
    let doctor = Doctor { level: best_level(&support), features: support.report_lines() };
    if json {
        print_json(&doctor)?;
        return Ok(ExitCode::SUCCESS);
    }
    for line in &doctor.features {
        println!("{line}");
    }
    let meaning = match doctor.level {
        pod_sandbox::Level::Full => {
            "Landlock at exec and a private mount namespace: delegated regions are taken from a running workload"
        }
        pod_sandbox::Level::Landlock => {
            "Landlock at exec only: a running workload keeps write on regions its Pod delegates"
        }
        pod_sandbox::Level::Off => "no kernel enforcement: a Pod's scope is bookkeeping only",
    };
    println!("default level: {} ({meaning})", doctor.level);
    Ok(ExitCode::SUCCESS)
}
