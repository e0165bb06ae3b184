//! The one place this crate touches the filesystem: resolving a path to where
//! it really points, so that `/repo/link/../x` or a symlink out of a scope is
//! checked at its destination, not at its spelling.

use std::path::{Component, Path, PathBuf};

use crate::echo::Echoed;
use crate::{PathError, ResolveError, ScopePath};

/// Most symlinks followed while resolving one path (Linux's `MAXSYMLINKS`).
const MAX_SYMLINK_HOPS: usize = 40;

/// Resolves an absolute path: every existing prefix is canonicalized
/// (following symlinks, including dangling ones whose target does not exist
/// yet), and the part that does not exist is appended lexically. The result is
/// normalized and is what scope checks should run on.
pub fn resolve(path: &Path) -> Result<ScopePath, ResolveError> {
    let text = path.to_str().ok_or_else(|| PathError::NotUtf8(Echoed::new(&path.to_string_lossy())))?;
    // Validate the spelling first, so limits and NUL are refused before I/O.
    ScopePath::new(text)?;
    let mut hops = 0;
    let mut pending: Vec<PathBuf> = components_reversed(path);
    let mut resolved = PathBuf::from("/");
    let mut exists = true;
    while let Some(component) = pending.pop() {
        let name = component.as_os_str();
        if name == ".." {
            resolved.pop();
            continue;
        }
        let candidate = resolved.join(name);
        if !exists {
            resolved = candidate;
            continue;
        }
        match std::fs::symlink_metadata(&candidate) {
            Ok(meta) if meta.file_type().is_symlink() => {
                hops += 1;
                if hops > MAX_SYMLINK_HOPS {
                    return Err(ResolveError::SymlinkLoop { path: Echoed::new(text), max: MAX_SYMLINK_HOPS });
                }
                let target = std::fs::read_link(&candidate)
                    .map_err(|source| ResolveError::Io { path: Echoed::new(&candidate.to_string_lossy()), source })?;
                if target.is_absolute() {
                    resolved = PathBuf::from("/");
                }
                pending.extend(components_reversed(&target));
            }
            Ok(_) => resolved = candidate,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                exists = false;
                resolved = candidate;
            }
            Err(source) => {
                return Err(ResolveError::Io { path: Echoed::new(&candidate.to_string_lossy()), source });
            }
        }
    }
    let text = resolved.to_str().ok_or_else(|| PathError::NotUtf8(Echoed::new(&resolved.to_string_lossy())))?;
    Ok(ScopePath::new(text)?)
}

/// Normal and `..` components of `path`, last first (a stack to pop from).
fn components_reversed(path: &Path) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = path
        .components()
        .filter_map(|c| match c {
            Component::Normal(n) => Some(PathBuf::from(n)),
            Component::ParentDir => Some(PathBuf::from("..")),
            Component::RootDir | Component::CurDir | Component::Prefix(_) => None,
        })
        .collect();
    out.reverse();
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    fn canon(p: &Path) -> String {
        std::fs::canonicalize(p).expect("canonicalize").to_string_lossy().into_owned()
    }

    #[test]
    fn follows_symlinks_before_dotdot() {
        let dir = tempfile::tempdir().expect("tempdir");
        let base = dir.path();
        std::fs::create_dir_all(base.join("repo")).expect("mkdir");
        std::fs::create_dir_all(base.join("other/deep")).expect("mkdir");
        symlink(base.join("other/deep"), base.join("repo/link")).expect("symlink");
        let got = resolve(&base.join("repo/link/../x")).expect("resolve");
        assert_eq!(got.as_str(), format!("{}/x", canon(&base.join("other"))));
    }

    #[test]
    fn symlink_out_of_scope_resolves_to_its_target() {
        let dir = tempfile::tempdir().expect("tempdir");
        let base = dir.path();
        std::fs::create_dir_all(base.join("repo")).expect("mkdir");
        symlink("/etc", base.join("repo/escape")).expect("symlink");
        let got = resolve(&base.join("repo/escape/passwd")).expect("resolve");
        assert_eq!(got.as_str(), format!("{}/passwd", canon(Path::new("/etc"))));
    }

    #[test]
    fn dangling_symlink_resolves_to_where_a_write_would_land() {
        let dir = tempfile::tempdir().expect("tempdir");
        let base = dir.path();
        std::fs::create_dir_all(base.join("repo")).expect("mkdir");
        symlink(base.join("elsewhere/new"), base.join("repo/dangling")).expect("symlink");
        let got = resolve(&base.join("repo/dangling")).expect("resolve");
        assert_eq!(got.as_str(), format!("{}/elsewhere/new", canon(base)));
    }

    #[test]
    fn missing_tail_is_appended_lexically() {
        let dir = tempfile::tempdir().expect("tempdir");
        let got = resolve(&dir.path().join("a/b/./c/../d")).expect("resolve");
        assert_eq!(got.as_str(), format!("{}/a/b/d", canon(dir.path())));
    }

    #[test]
    fn symlink_loop_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        symlink(dir.path().join("b"), dir.path().join("a")).expect("symlink");
        symlink(dir.path().join("a"), dir.path().join("b")).expect("symlink");
        let err = resolve(&dir.path().join("a/x")).expect_err("loop");
        assert_eq!(err.code(), "path.symlink_loop");
    }

    #[test]
    fn relative_path_is_refused_before_io() {
        assert_eq!(resolve(Path::new("rel/x")).expect_err("relative").code(), "path.not_absolute");
    }
}
