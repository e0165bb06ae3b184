//! The crate's own re-exec helper, for its tests: `pod-sandbox-test STAGE`
//! is what `pod __sandbox-exec STAGE` is in the `pod` binary (both call
//! `helper_main`).

fn main() -> std::process::ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    pod_sandbox::helper_main(&args)
}
