//! Turning what a user typed (`--write src`, `--deny-read /repo/.env`) into
//! scope rules: relative paths are joined to a base directory, then resolved
//! through symlinks, so the rule names where the path really points.
//!
//! A trailing `/*` asks for a non-recursive rule (the directory and its direct
//! children); anything else is recursive.

use std::path::{Path, PathBuf};

use scope::{Echoed, Permission, ResolveError, ScopeRule};

/// A rule as the user wrote it, made absolute but not yet resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleSpec {
    pub path: PathBuf,
    pub permission: Permission,
    pub recursive: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum RulesError {
    /// Every resolve error names the path itself.
    #[error(transparent)]
    Resolve(#[from] ResolveError),
    #[error("path {0} is not valid UTF-8; scope paths must be UTF-8")]
    NotUtf8(Echoed),
    #[error("an empty path names no file; write `.` for the current directory")]
    Empty,
}

impl RulesError {
    pub fn code(&self) -> &'static str {
        match self {
            RulesError::Resolve(source) => source.code(),
            RulesError::NotUtf8(_) => "path.not_utf8",
            RulesError::Empty => "path.empty",
        }
    }
}

impl RuleSpec {
    /// `raw` joined to nothing: it must already be absolute or be joined by
    /// the caller. A trailing `/*` makes the rule non-recursive.
    pub fn new(raw: &Path, permission: Permission, recursive: bool) -> Result<RuleSpec, RulesError> {
        let text = raw.to_str().ok_or_else(|| RulesError::NotUtf8(Echoed::new(&raw.to_string_lossy())))?;
        if text.is_empty() {
            return Err(RulesError::Empty);
        }
        let (path, recursive) = match text.strip_suffix("/*") {
            Some(dir) if !dir.is_empty() => (PathBuf::from(dir), false),
            Some(_) => (PathBuf::from("/"), false),
            None => (PathBuf::from(text.strip_suffix("/**").unwrap_or(text)), recursive),
        };
        Ok(RuleSpec { path, permission, recursive })
    }

    /// Parses a command-line path relative to `cwd`. An empty argument is
    /// refused (joined, it would silently name `cwd` itself).
    pub fn from_arg(arg: &str, cwd: &Path, permission: Permission) -> Result<RuleSpec, RulesError> {
        if arg.is_empty() {
            return Err(RulesError::Empty);
        }
        RuleSpec::new(&cwd.join(arg), permission, true)
    }

    /// Resolves symlinks and normalizes: the rule that is checked and stored.
    pub fn resolve(&self) -> Result<ScopeRule, RulesError> {
        let target = scope::resolve(&self.path).map_err(RulesError::Resolve)?;
        Ok(ScopeRule::new(target, self.permission, self.recursive))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suffixes_choose_recursion() {
        let cwd = Path::new("/work");
        let r = RuleSpec::from_arg("src", cwd, Permission::Write).unwrap();
        assert_eq!((r.path.as_path(), r.recursive), (Path::new("/work/src"), true));
        let r = RuleSpec::from_arg("src/*", cwd, Permission::Write).unwrap();
        assert_eq!((r.path.as_path(), r.recursive), (Path::new("/work/src"), false));
        let r = RuleSpec::from_arg("/abs/**", cwd, Permission::Read).unwrap();
        assert_eq!((r.path.as_path(), r.recursive), (Path::new("/abs"), true));
    }

    #[test]
    fn an_empty_path_is_refused() {
        let e = RuleSpec::from_arg("", Path::new("/work"), Permission::Write).unwrap_err();
        assert_eq!(e.code(), "path.empty");
    }

    #[test]
    fn resolution_normalizes_dotdot_after_symlinks() {
        let dir = tempfile::tempdir().unwrap();
        let real = std::fs::canonicalize(dir.path()).unwrap();
        let r = RuleSpec::from_arg("a/../b", &real, Permission::Write).unwrap().resolve().unwrap();
        assert_eq!(r.target.as_str(), real.join("b").to_str().unwrap());
    }
}
