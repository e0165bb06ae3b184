//! Normalized absolute paths. Every check in this crate runs on a
//! [`ScopePath`], never on a raw string, so what is checked is exactly what is
//! stored.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::echo::{has_control, Echoed};
use crate::{limits::MAX_PATH_BYTES, PathError};

/// An absolute, lexically normalized, UTF-8 path: starts with `/`, has no
/// empty, `.` or `..` components and no trailing separator (except the root
/// itself). Construction and deserialization both normalize and validate.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ScopePath(String);

impl ScopePath {
    /// Normalizes `raw` lexically: repeated and trailing separators and `.`
    /// are dropped, `..` removes the previous component (and stays at `/` at
    /// the root). This does not look at the filesystem; use
    /// [`crate::resolve`] for paths that may contain symlinks.
    pub fn new(raw: &str) -> Result<ScopePath, PathError> {
        if raw.is_empty() {
            return Err(PathError::Empty);
        }
        if raw.as_bytes().contains(&0) {
            return Err(PathError::Nul(Echoed::new(raw)));
        }
        if raw.len() > MAX_PATH_BYTES {
            return Err(PathError::TooLong { path: Echoed::new(raw), len: raw.len(), max: MAX_PATH_BYTES });
        }
        if has_control(raw) {
            return Err(PathError::ControlChar(Echoed::new(raw)));
        }
        if !raw.starts_with('/') {
            return Err(PathError::NotAbsolute(Echoed::new(raw)));
        }
        let mut parts: Vec<&str> = Vec::new();
        for part in raw.split('/') {
            match part {
                "" | "." => {}
                ".." => {
                    parts.pop();
                }
                p => parts.push(p),
            }
        }
        let mut out = String::with_capacity(raw.len());
        for p in &parts {
            out.push('/');
            out.push_str(p);
        }
        if out.is_empty() {
            out.push('/');
        }
        Ok(ScopePath(out))
    }

    /// The filesystem root.
    pub fn root() -> ScopePath {
        ScopePath("/".to_string())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn is_root(&self) -> bool {
        self.0 == "/"
    }

    /// The parent directory, or `None` for the root.
    pub fn parent(&self) -> Option<&str> {
        parent_of(&self.0)
    }

    /// Appends one already-clean component. Used by resolution and tests;
    /// the component must not contain `/` and must not be `.` or `..`.
    pub fn join_component(&self, component: &str) -> Result<ScopePath, PathError> {
        let joined = if self.is_root() { format!("/{component}") } else { format!("{}/{component}", self.0) };
        ScopePath::new(&joined)
    }

    /// True when `self` is `ancestor` or lies below it.
    pub fn is_within(&self, ancestor: &ScopePath) -> bool {
        is_within(&self.0, &ancestor.0)
    }

    /// Number of components (`/` has 0, `/a/b` has 2).
    pub fn depth(&self) -> usize {
        if self.is_root() {
            0
        } else {
            self.0.bytes().filter(|&b| b == b'/').count()
        }
    }
}

/// `path` equals `ancestor` or lies below it. Both must be normalized.
pub(crate) fn is_within(path: &str, ancestor: &str) -> bool {
    if ancestor == "/" {
        return true;
    }
    path.len() >= ancestor.len()
        && path.as_bytes()[..ancestor.len()] == *ancestor.as_bytes()
        && (path.len() == ancestor.len() || path.as_bytes()[ancestor.len()] == b'/')
}

/// Parent of a normalized path, `None` for the root.
pub(crate) fn parent_of(path: &str) -> Option<&str> {
    if path == "/" {
        return None;
    }
    match path.rfind('/') {
        Some(0) => Some("/"),
        Some(i) => Some(&path[..i]),
        None => None,
    }
}

impl TryFrom<String> for ScopePath {
    type Error = PathError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        ScopePath::new(&s)
    }
}

impl From<ScopePath> for String {
    fn from(p: ScopePath) -> String {
        p.0
    }
}

impl std::str::FromStr for ScopePath {
    type Err = PathError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ScopePath::new(s)
    }
}

impl fmt::Display for ScopePath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for ScopePath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn norm(s: &str) -> String {
        ScopePath::new(s).map(|p| p.0).unwrap_or_else(|e| format!("ERR {}", e.code()))
    }

    #[test]
    fn normalizes_lexically() {
        assert_eq!(norm("/"), "/");
        assert_eq!(norm("//"), "/");
        assert_eq!(norm("/a//b/"), "/a/b");
        assert_eq!(norm("/a/./b/."), "/a/b");
        assert_eq!(norm("/a/b/../c"), "/a/c");
        assert_eq!(norm("/.."), "/");
        assert_eq!(norm("/a/../../.."), "/");
        assert_eq!(norm("/a/..b/c.."), "/a/..b/c..");
    }

    #[test]
    fn rejects_bad_paths() {
        assert_eq!(norm(""), "ERR path.empty");
        assert_eq!(norm("a/b"), "ERR path.not_absolute");
        assert_eq!(norm("./a"), "ERR path.not_absolute");
        assert_eq!(norm("/a\0b"), "ERR path.nul");
        assert_eq!(norm("/a\nb"), "ERR path.control_char");
        assert_eq!(norm("/a\u{1b}[2J"), "ERR path.control_char");
        assert_eq!(norm(&format!("/{}", "x".repeat(MAX_PATH_BYTES))), "ERR path.too_long");
    }

    #[test]
    fn within_respects_component_boundaries() {
        assert!(is_within("/a/b", "/a"));
        assert!(is_within("/a", "/a"));
        assert!(is_within("/a", "/"));
        assert!(!is_within("/ab", "/a"));
        assert!(!is_within("/a", "/a/b"));
    }

    #[test]
    fn parent_and_depth() {
        assert_eq!(parent_of("/"), None);
        assert_eq!(parent_of("/a"), Some("/"));
        assert_eq!(parent_of("/a/b"), Some("/a"));
        assert_eq!(ScopePath::root().depth(), 0);
        assert_eq!(norm("/a/b").len(), 4);
        assert_eq!(ScopePath::new("/a/b").map(|p| p.depth()), Ok(2));
    }

    #[test]
    fn deserializing_renormalizes_and_revalidates() {
        let p: ScopePath = serde_json::from_str("\"/a//b/\"").expect("valid path");
        assert_eq!(p.as_str(), "/a/b");
        assert!(serde_json::from_str::<ScopePath>("\"rel\"").is_err());
    }
}
