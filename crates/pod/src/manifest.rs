//! TOML manifests (`pod start --manifest FILE`): a Pod's name, base rules and
//! workload written down once instead of on every command line.
//!
//! Relative paths in a manifest are relative to the manifest's own directory,
//! so a manifest checked into a repository means the same from any cwd.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::rules::{RuleSpec, RulesError};
use scope::{Permission, PodName};

/// Largest manifest read, in bytes.
pub const MAX_MANIFEST_BYTES: u64 = 256 * 1024;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawManifest {
    name: Option<String>,
    #[serde(default)]
    allow: Vec<RawRule>,
    #[serde(default)]
    deny: Vec<RawRule>,
    workload: Option<Vec<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRule {
    path: String,
    permission: Permission,
    #[serde(default = "default_recursive")]
    recursive: bool,
}

fn default_recursive() -> bool {
    true
}

/// A parsed manifest, paths still unresolved but made absolute.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Manifest {
    pub name: Option<PodName>,
    pub allow: Vec<RuleSpec>,
    pub deny: Vec<RuleSpec>,
    pub workload: Option<Vec<String>>,
}

#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error("cannot read manifest {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("manifest {path} is {len} bytes; the limit is {max}")]
    TooLarge { path: PathBuf, len: u64, max: u64 },
    #[error("manifest {path} is not valid: {message}")]
    Invalid { path: PathBuf, message: String },
    #[error("manifest {path}: {source}")]
    Rule { path: PathBuf, source: RulesError },
}

impl ManifestError {
    pub fn code(&self) -> &'static str {
        match self {
            ManifestError::Read { .. } => "manifest.read",
            ManifestError::TooLarge { .. } => "manifest.too_large",
            ManifestError::Invalid { .. } => "manifest.invalid",
            ManifestError::Rule { .. } => "manifest.rule",
        }
    }
}

impl Manifest {
    pub fn load(path: &Path) -> Result<Manifest, ManifestError> {
        let meta = std::fs::metadata(path).map_err(|source| ManifestError::Read { path: path.into(), source })?;
        if meta.len() > MAX_MANIFEST_BYTES {
            return Err(ManifestError::TooLarge { path: path.into(), len: meta.len(), max: MAX_MANIFEST_BYTES });
        }
        let text = std::fs::read_to_string(path).map_err(|source| ManifestError::Read { path: path.into(), source })?;
        let base = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
        Manifest::parse(&text, base).map_err(|e| match e {
            ParseError::Toml(message) => ManifestError::Invalid { path: path.into(), message },
            ParseError::Rule(source) => ManifestError::Rule { path: path.into(), source },
        })
    }

    fn parse(text: &str, base: &Path) -> Result<Manifest, ParseError> {
        let raw: RawManifest = toml::from_str(text).map_err(|e| ParseError::Toml(describe(text, &e)))?;
        let name = raw.name.map(PodName::new).transpose().map_err(|e| ParseError::Toml(format!("name: {e}")))?;
        let rules = |list: Vec<RawRule>| {
            list.into_iter()
                .map(|r| RuleSpec::new(&base.join(&r.path), r.permission, r.recursive))
                .collect::<Result<Vec<_>, _>>()
                .map_err(ParseError::Rule)
        };
        if raw.workload.as_ref().is_some_and(Vec::is_empty) {
            return Err(ParseError::Toml("workload: an empty command; leave `workload` out instead".into()));
        }
        Ok(Manifest { name, allow: rules(raw.allow)?, deny: rules(raw.deny)?, workload: raw.workload })
    }
}

enum ParseError {
    Toml(String),
    Rule(RulesError),
}

/// TOML's own rendering spans several lines (a source excerpt); errors here
/// are one line: where, then what.
fn describe(text: &str, e: &toml::de::Error) -> String {
    let what = e.message().split_whitespace().collect::<Vec<_>>().join(" ");
    match e.span() {
        Some(span) => {
            let before = &text[..span.start.min(text.len())];
            let line = before.matches('\n').count() + 1;
            let column = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
            format!("line {line}, column {column}: {what}")
        }
        None => what,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Manifest, String> {
        Manifest::parse(text, Path::new("/base")).map_err(|e| match e {
            ParseError::Toml(m) => m,
            ParseError::Rule(r) => r.to_string(),
        })
    }

    #[test]
    fn full_manifest() {
        let m = parse(
            r#"
            name = "lead"
            workload = ["sh", "-c", "true"]
            [[allow]]
            path = "/repo"
            permission = "write"
            [[allow]]
            path = "tools"
            permission = "read"
            recursive = false
            [[deny]]
            path = "/repo/secrets"
            permission = "read"
            "#,
        )
        .unwrap();
        assert_eq!(m.name.map(|n| n.to_string()), Some("lead".into()));
        assert_eq!(m.allow.len(), 2);
        assert_eq!(m.allow[1].path, PathBuf::from("/base/tools"));
        assert!(!m.allow[1].recursive);
        assert_eq!(m.deny[0].permission, Permission::Read);
        assert_eq!(m.workload.unwrap().len(), 3);
    }

    #[test]
    fn corrupt_manifests_are_refused_in_one_line() {
        for (text, needle) in [
            ("name = ", "line 1, column 8"),
            ("nme = \"x\"", "unknown field"),
            ("[[allow]]\npath = \"/a\"\npermission = \"own\"", "unknown variant"),
            ("name = \"Bad Name\"", "name:"),
            ("workload = []", "empty command"),
        ] {
            let e = parse(text).unwrap_err();
            assert!(e.contains(needle), "{text:?}: {e}");
            assert!(!e.contains('\n'), "multi-line error: {e}");
        }
    }
}
