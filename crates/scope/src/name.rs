//! Pod names. Layers are keyed by child name, so the name rules live with the
//! scope model; every crate that names a Pod validates through [`PodName`].

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::echo::Echoed;
use crate::{limits::MAX_NAME_BYTES, NameError};

/// Names no Pod may take, each with why: the coordination store uses them
/// with a meaning of their own, so a Pod of that name would be ambiguous.
pub const RESERVED: &[(&str, &str)] = &[
    ("self", "the coordination store's alias for the caller's own slot, /peer/self"),
    ("operator", "the coordination store's name for the operator, as in written_by: operator"),
];

/// A validated Pod name: 1-64 bytes of `[a-z0-9._-]`, starting with a letter
/// or a digit. Deserializing validates too, so a stored name is re-checked
/// when it is read back.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct PodName(String);

impl PodName {
    pub fn new(name: impl Into<String>) -> Result<PodName, NameError> {
        let name = name.into();
        let first = name.chars().next().ok_or(NameError::Empty)?;
        if name.len() > MAX_NAME_BYTES {
            return Err(NameError::TooLong { len: name.len(), max: MAX_NAME_BYTES, name: Echoed::new(&name) });
        }
        if let Some((pos, ch)) = name
            .char_indices()
            .find(|&(_, c)| !(c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '_' | '-')))
        {
            return Err(NameError::BadChar { name: Echoed::new(&name), ch, pos });
        }
        if !(first.is_ascii_lowercase() || first.is_ascii_digit()) {
            return Err(NameError::BadStart(Echoed::new(&name)));
        }
        if let Some(&(reserved, why)) = RESERVED.iter().find(|(r, _)| *r == name) {
            return Err(NameError::Reserved { name: reserved, why });
        }
        Ok(PodName(name))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for PodName {
    type Error = NameError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        PodName::new(s)
    }
}

impl From<PodName> for String {
    fn from(n: PodName) -> String {
        n.0
    }
}

impl std::str::FromStr for PodName {
    type Err = NameError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        PodName::new(s)
    }
}

impl fmt::Display for PodName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for PodName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_valid_names() {
        for n in ["a", "0", "lead", "helper-1", "a.b_c-d", &"x".repeat(64)] {
            assert_eq!(PodName::new(n).map(|p| p.to_string()), Ok(n.to_string()));
        }
    }

    #[test]
    fn rejects_each_kind_of_bad_name() {
        assert_eq!(PodName::new("").unwrap_err().code(), "name.empty");
        assert_eq!(PodName::new("x".repeat(65)).unwrap_err().code(), "name.too_long");
        assert_eq!(PodName::new("Lead").unwrap_err().code(), "name.bad_char");
        assert_eq!(PodName::new("a/b").unwrap_err().code(), "name.bad_char");
        assert_eq!(PodName::new("a b").unwrap_err().code(), "name.bad_char");
        assert_eq!(PodName::new("-a").unwrap_err().code(), "name.bad_start");
        assert_eq!(PodName::new(".").unwrap_err().code(), "name.bad_start");
        assert_eq!(PodName::new("..").unwrap_err().code(), "name.bad_start");
        assert_eq!(PodName::new("self").unwrap_err().code(), "name.reserved");
        assert_eq!(PodName::new("operator").unwrap_err().code(), "name.reserved");
        assert!(PodName::new("self2").is_ok() && PodName::new("operators").is_ok());
    }

    #[test]
    fn error_names_the_offending_character() {
        let msg = PodName::new("ab$").unwrap_err().to_string();
        assert!(msg.contains("'$'") && msg.contains("position 2"), "{msg}");
    }

    #[test]
    fn deserializing_revalidates() {
        let ok: Result<PodName, _> = serde_json::from_str("\"lead\"");
        assert!(ok.is_ok());
        let bad: Result<PodName, _> = serde_json::from_str("\"../etc\"");
        assert!(bad.is_err());
    }
}
