//! Crash points for the crash-consistency suite.
//!
//! Code marks step boundaries with `fail::fail_point!("area.step")`. In a
//! build with the `failpoints` feature, `arm(role)` reads `POD_FAILPOINTS`
//! (`role:point[@n][!hold];...`) and makes the n-th hit (default: the
//! first) of each point named for this process's `role` (a Pod's name, or
//! `registry`) abort the process on the spot: a real crash, no unwinding,
//! no cleanup. With `!hold` the process instead stops at the point until
//! the test creates `run/failpoints/<role>.<point>.release`, so a test can
//! force the order of two events. Each armed point fires once per runtime directory (a marker
//! file records it), so the processes a user starts to recover, which
//! inherit the same environment, run through. Markers live in
//! `run/failpoints/`, apart from the Pods' and the registry's files. Release builds carry no
//! failpoints at all (the macro expands to nothing without the feature).

/// The environment variable `arm` reads.
pub const ENV: &str = "POD_FAILPOINTS";

/// The folder of `run/` where fired points leave their markers
/// (`<role>.<point>.fired`).
pub const MARKERS_DIR: &str = "failpoints";

/// Arms this process's crash points; returns how many were armed.
#[cfg(feature = "failpoints")]
pub fn arm(role: &str) -> Result<usize, String> {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    let Ok(spec) = std::env::var(ENV) else { return Ok(0) };
    let mut armed = 0;
    for entry in spec.split(';').map(str::trim).filter(|e| !e.is_empty()) {
        let (who, point) = entry.split_once(':').ok_or_else(|| format!("{ENV}: {entry:?} is not role:point"))?;
        if who != role {
            continue;
        }
        // `!hold`: instead of aborting, wait there until the test releases
        // the process (see `HOLD_LIMIT`), to force an interleaving.
        let (point, hold) = match point.strip_suffix("!hold") {
            Some(p) => (p, true),
            None => (point, false),
        };
        let (point, nth) = match point.split_once('@') {
            Some((p, n)) => (p, n.parse::<usize>().map_err(|_| format!("{ENV}: bad hit count in {entry:?}"))?),
            None => (point, 1),
        };
        let hits = Arc::new(AtomicUsize::new(0));
        let name = point.to_string();
        let markers = crate::RuntimeDirs::from_env().map_err(|e| e.to_string())?.run.join(MARKERS_DIR);
        crate::paths::ensure_private_dir(&markers).map_err(|e| e.to_string())?;
        let marker = markers.join(format!("{role}.{point}.{}", if hold { "held" } else { "fired" }));
        let release = markers.join(format!("{role}.{point}.release"));
        fail::cfg_callback(point, move || {
            if hits.fetch_add(1, Ordering::SeqCst) + 1 != nth {
                return;
            }
            if hold {
                hold_until_released(&name, &marker, &release);
                return;
            }
            // Fire once: the first process to get here creates the marker.
            if std::os::unix::fs::OpenOptionsExt::mode(std::fs::OpenOptions::new().write(true).create_new(true), 0o600)
                .open(&marker)
                .is_ok()
            {
                eprintln!("failpoint {name}: aborting (hit {nth})");
                std::process::abort();
            }
        })?;
        armed += 1;
    }
    Ok(armed)
}

/// Longest a held point waits for its release before going on by itself
/// (a test that died must not leave processes hanging).
#[cfg(feature = "failpoints")]
pub const HOLD_LIMIT: std::time::Duration = std::time::Duration::from_secs(60);

/// Says it is held (`<role>.<point>.held`, once per runtime directory),
/// then waits for `<role>.<point>.release` to exist. Blocks the calling
/// thread: test builds only.
///
/// On a tokio worker the wait first hands the worker's run queue to another
/// thread (`block_in_place`): a task the held one woke just before sits in
/// the worker's LIFO slot, which no other worker steals, so a plain blocking
/// wait froze it too (the Pod's allocation watch, seen as a rare timeout in
/// `tests/races.rs`).
#[cfg(feature = "failpoints")]
fn hold_until_released(name: &str, marker: &std::path::Path, release: &std::path::Path) {
    let on_worker = tokio::runtime::Handle::try_current()
        .is_ok_and(|h| h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread);
    if on_worker {
        tokio::task::block_in_place(|| wait_for_release(name, marker, release));
    } else {
        wait_for_release(name, marker, release);
    }
}

#[cfg(feature = "failpoints")]
fn wait_for_release(name: &str, marker: &std::path::Path, release: &std::path::Path) {
    let created =
        std::os::unix::fs::OpenOptionsExt::mode(std::fs::OpenOptions::new().write(true).create_new(true), 0o600)
            .open(marker)
            .is_ok();
    if !created {
        return;
    }
    eprintln!("failpoint {name}: held until {} exists", release.display());
    let started = std::time::Instant::now();
    while !release.exists() && started.elapsed() < HOLD_LIMIT {
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
}

/// Without the `failpoints` feature there is nothing to arm; a spec in the
/// environment is reported, since it would silently do nothing.
#[cfg(not(feature = "failpoints"))]
pub fn arm(_role: &str) -> Result<usize, String> {
    match std::env::var_os(ENV) {
        Some(_) => Err(format!("{ENV} is set but this build has no failpoints (build with --features failpoints)")),
        None => Ok(0),
    }
}
