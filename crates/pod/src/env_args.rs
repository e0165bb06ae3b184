//! `--env K=V`, `--env K` and `--env-file FILE`: the variables a workload
//! gets on top of what it inherits (see `process/workload.rs`), validated
//! here at the edge by the checks of `pod_client::env` (shared with the MCP
//! server). `--env K` takes K's value from the caller's own
//! environment, so a secret never appears in argv. The values travel to
//! the Pod process on its launch pipe (start) or its parent's socket
//! (spawn) and are never written to a file or a log.

use std::io::Read;
use std::path::Path;

use pod_client::env::{check_env, check_var as check};
use pod_client::protocol::Env;
use pod_proto::WireError;
use scope::Echo;

/// Largest `--env-file`.
pub const MAX_FILE_BYTES: u64 = 64 << 10;

fn bad(code: &str, message: String) -> WireError {
    WireError::new(code, message)
}

/// The variables of `file` (if any), then of each `--env` (a later one
/// replaces an earlier one of the same name).
pub fn collect(args: &[String], file: Option<&Path>, cwd: &Path) -> Result<Env, WireError> {
    let mut vars: Vec<(String, String)> = Vec::new();
    let mut put = |key: String, value: String| {
        vars.retain(|(k, _)| *k != key);
        vars.push((key, value));
    };
    if let Some(file) = file {
        let text = read_file(&cwd.join(file))?;
        for (n, line) in text.lines().enumerate() {
            let line = line.trim_start();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let Some((key, value)) = line.split_once('=') else {
                return Err(bad(
                    "env.bad_line",
                    format!(
                        "--env-file {}: line {} is not KEY=VALUE: {}",
                        Echo(&file.to_string_lossy()),
                        n + 1,
                        Echo(line)
                    ),
                ));
            };
            check(key, value)?;
            put(key.to_string(), value.to_string());
        }
    }
    for arg in args {
        let (key, value) = match arg.split_once('=') {
            Some((k, v)) => (k.to_string(), v.to_string()),
            None => {
                let value = std::env::var(arg).map_err(|_| {
                    bad("env.unset", format!("--env {}: no such variable in this environment to pass on", Echo(arg)))
                })?;
                (arg.clone(), value)
            }
        };
        check(&key, &value)?;
        put(key, value);
    }
    check_env(vars)
}

/// An env file's text: a regular file, at most the limit, never blocking
/// on a FIFO.
fn read_file(path: &Path) -> Result<String, WireError> {
    use rustix::fs::{FileType, Mode, OFlags};
    let shown = Echo(&path.to_string_lossy()).to_string();
    let fail = |what: String| bad("env.file", format!("--env-file {shown}: {what}"));
    let flags = OFlags::RDONLY | OFlags::NONBLOCK | OFlags::CLOEXEC | OFlags::NOCTTY;
    let fd = rustix::fs::open(path, flags, Mode::empty()).map_err(|e| fail(std::io::Error::from(e).to_string()))?;
    let stat = rustix::fs::fstat(&fd).map_err(|e| fail(std::io::Error::from(e).to_string()))?;
    if FileType::from_raw_mode(stat.st_mode) != FileType::RegularFile {
        return Err(fail("not a regular file".into()));
    }
    let mut bytes = Vec::new();
    std::fs::File::from(fd).take(MAX_FILE_BYTES + 1).read_to_end(&mut bytes).map_err(|e| fail(e.to_string()))?;
    if bytes.len() as u64 > MAX_FILE_BYTES {
        return Err(fail(format!("larger than {MAX_FILE_BYTES} bytes")));
    }
    String::from_utf8(bytes).map_err(|_| fail("not UTF-8 text".into()))
}
