//! The crate's own copy of the re-exec helper, for its tests (the `pod`
//! binary dispatches `pod __sandbox-exec STAGE` to the same function).

fn main() -> std::process::ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    pod_sandbox::helper_main(&args)
}
