//! TOML manifests (`pod start --manifest FILE`): a Pod's name, base rules and
//! workload written down once instead of on every command line.
//!
//! Relative paths in a manifest are relative to the manifest's own directory,
//! so a manifest checked into a repository means the same from any cwd.
//!
//! A manifest is read from a regular file only, and at most
//! [`MAX_MANIFEST_BYTES`] of it: the file is opened without blocking (a FIFO
//! with no writer would otherwise hang the open), its type and size are
//! taken from the open descriptor (so what is checked is what is read), and
//! FIFOs, devices (`/dev/zero`), directories and files over the limit
//! (also sparse ones: only their size is looked at) are refused before a
//! byte is read.

use std::io::Read;
use std::path::Path;

use serde::Deserialize;

use crate::rules::{RuleSpec, RulesError};
use scope::{Echoed, Permission, PodName};

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

/// The manifest's path as error messages show it: quoted, escaped, bounded.
fn shown(path: &Path) -> Echoed {
    Echoed::new(&path.to_string_lossy())
}

#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error("--manifest names an empty path")]
    EmptyPath,
    #[error("cannot read manifest {path}: {source}")]
    Read { path: Echoed, source: std::io::Error },
    #[error("manifest {path} is {kind}, not a regular file; a manifest is read from a regular file only")]
    NotAFile { path: Echoed, kind: &'static str },
    #[error("manifest {path} is {len} bytes; the limit is {max}")]
    TooLarge { path: Echoed, len: u64, max: u64 },
    #[error("manifest {path} is not UTF-8 text")]
    NotText { path: Echoed },
    #[error("manifest {path} is not valid: {message}")]
    Invalid { path: Echoed, message: String },
    #[error("manifest {path}: {source}")]
    Rule { path: Echoed, source: RulesError },
}

impl ManifestError {
    pub fn code(&self) -> &'static str {
        match self {
            ManifestError::EmptyPath => "path.empty",
            ManifestError::Read { .. } => "manifest.read",
            ManifestError::NotAFile { .. } => "manifest.not_a_file",
            ManifestError::TooLarge { .. } => "manifest.too_large",
            ManifestError::NotText { .. } => "manifest.not_text",
            ManifestError::Invalid { .. } => "manifest.invalid",
            ManifestError::Rule { .. } => "manifest.rule",
        }
    }
}

impl Manifest {
    /// The manifest a command line names, relative to `cwd`.
    pub fn load_arg(arg: &Path, cwd: &Path) -> Result<Manifest, ManifestError> {
        if arg.as_os_str().is_empty() {
            return Err(ManifestError::EmptyPath);
        }
        Manifest::load(&cwd.join(arg))
    }

    pub fn load(path: &Path) -> Result<Manifest, ManifestError> {
        let text = read_bounded(path)?;
        let base = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
        Manifest::parse(&text, base).map_err(|e| match e {
            ParseError::Toml(message) => ManifestError::Invalid { path: shown(path), message },
            ParseError::Rule(source) => ManifestError::Rule { path: shown(path), source },
        })
    }

    fn parse(text: &str, base: &Path) -> Result<Manifest, ParseError> {
        let raw: RawManifest = toml::from_str(text).map_err(|e| ParseError::Toml(describe(text, &e)))?;
        let name = raw.name.map(PodName::new).transpose().map_err(|e| ParseError::Toml(format!("name: {e}")))?;
        let rules = |list: Vec<RawRule>| {
            list.into_iter()
                .map(|r| {
                    // `base.join("")` is `base`: an empty path would silently
                    // name the manifest's folder.
                    if r.path.is_empty() {
                        return Err(RulesError::Empty);
                    }
                    RuleSpec::new(&base.join(&r.path), r.permission, r.recursive)
                })
                .collect::<Result<Vec<_>, _>>()
                .map_err(ParseError::Rule)
        };
        if raw.workload.as_ref().is_some_and(Vec::is_empty) {
            return Err(ParseError::Toml("workload: an empty command; leave `workload` out instead".into()));
        }
        Ok(Manifest { name, allow: rules(raw.allow)?, deny: rules(raw.deny)?, workload: raw.workload })
    }
}

/// The manifest's text: from a regular file, at most the limit, never
/// blocking on a FIFO and never reading a device.
fn read_bounded(path: &Path) -> Result<String, ManifestError> {
    use rustix::fs::{FileType, Mode, OFlags};
    if path.as_os_str().is_empty() {
        return Err(ManifestError::EmptyPath);
    }
    let read = |source: std::io::Error| ManifestError::Read { path: shown(path), source };
    let flags = OFlags::RDONLY | OFlags::NONBLOCK | OFlags::CLOEXEC | OFlags::NOCTTY;
    let fd = rustix::fs::open(path, flags, Mode::empty()).map_err(|e| read(e.into()))?;
    let stat = rustix::fs::fstat(&fd).map_err(|e| read(e.into()))?;
    let kind = match FileType::from_raw_mode(stat.st_mode) {
        FileType::RegularFile => None,
        FileType::Directory => Some("a directory"),
        FileType::Fifo => Some("a FIFO"),
        FileType::CharacterDevice => Some("a character device"),
        FileType::BlockDevice => Some("a block device"),
        FileType::Socket => Some("a socket"),
        _ => Some("not a regular file"),
    };
    if let Some(kind) = kind {
        return Err(ManifestError::NotAFile { path: shown(path), kind });
    }
    let len = u64::try_from(stat.st_size).unwrap_or(u64::MAX);
    if len > MAX_MANIFEST_BYTES {
        return Err(ManifestError::TooLarge { path: shown(path), len, max: MAX_MANIFEST_BYTES });
    }
    // The file may grow after the fstat: the read is bounded on its own.
    let mut bytes = Vec::with_capacity(len as usize);
    std::fs::File::from(fd).take(MAX_MANIFEST_BYTES + 1).read_to_end(&mut bytes).map_err(read)?;
    if bytes.len() as u64 > MAX_MANIFEST_BYTES {
        return Err(ManifestError::TooLarge { path: shown(path), len: bytes.len() as u64, max: MAX_MANIFEST_BYTES });
    }
    String::from_utf8(bytes).map_err(|_| ManifestError::NotText { path: shown(path) })
}

enum ParseError {
    Toml(String),
    Rule(RulesError),
}

/// TOML's own rendering spans several lines (a source excerpt); errors here
/// are one line: where, then what.
fn describe(text: &str, e: &toml::de::Error) -> String {
    // The parser's words may quote the manifest (a bad value): escaped, cut.
    let what = scope::sanitize(&e.message().split_whitespace().collect::<Vec<_>>().join(" "), 200);
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
    use std::path::PathBuf;

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
            ("[[allow]]\npath = \"\"\npermission = \"write\"", "empty"),
            ("[[allow]]\npath = \"/a\"\npermission = \"\\u001b[2J\"", "\\u{1b}[2J"),
        ] {
            let e = parse(text).unwrap_err();
            assert!(e.contains(needle), "{text:?}: {e}");
            assert!(!e.contains('\n'), "multi-line error: {e}");
        }
    }
}
