//! List patterns: `*` matches one segment, `**` any number (zero or more);
//! every other segment is literal and follows the key rules. Nothing else is
//! a metacharacter: `[`, `?`, `{` are refused, and so is a `*` inside a
//! segment. `/peer/self` resolves to the caller's slot as in keys.

use crate::caller::Caller;
use crate::error::{KvError, Spelling};
use crate::key::{check_segment, member_of, namespace_of, split, Key, Member, Top};
use crate::limits::{MAX_KEY_BYTES, MAX_PATTERN_SEGMENTS};

#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    Literal(String),
    /// `*`
    One,
    /// `**`
    Any,
}

/// A valid, resolved list pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pattern {
    text: String,
    segments: Vec<Segment>,
}

impl Pattern {
    pub fn resolve(raw: &str, caller: &Caller) -> Result<Pattern, KvError> {
        let bad = |why| KvError::BadPattern { pattern: raw.to_string(), why };
        let parts = split(raw).map_err(bad)?;
        if parts.len() > MAX_PATTERN_SEGMENTS {
            return Err(bad(Spelling::TooManySegments { count: parts.len() }));
        }
        let mut segments = Vec::with_capacity(parts.len());
        for &(at, part) in &parts {
            segments.push(match part {
                "*" => Segment::One,
                "**" => Segment::Any,
                wild if wild.contains('*') => {
                    return Err(bad(Spelling::PartialWildcard { segment: wild.to_string() }));
                }
                literal => {
                    check_segment(literal, at).map_err(bad)?;
                    Segment::Literal(literal.to_string())
                }
            });
        }
        if let Segment::Literal(top) = &segments[0] {
            let top = namespace_of(top).map_err(bad)?;
            if top == Top::Peer {
                if let Some(Segment::Literal(member)) = segments.get(1) {
                    if let Member::OwnSlot = member_of(member).map_err(bad)? {
                        let own = caller.slot().ok_or(KvError::NoSlot)?;
                        segments[1] = Segment::Literal(own.to_string());
                    }
                }
            }
            let literal_only = segments.iter().all(|s| matches!(s, Segment::Literal(_)));
            let shortest = if top == Top::Peer { 3 } else { 2 };
            if literal_only && segments.len() < shortest {
                return Err(bad(Spelling::Incomplete));
            }
        }
        let text = render(&segments);
        if text.len() > MAX_KEY_BYTES {
            return Err(bad(Spelling::TooLong { len: text.len() }));
        }
        Ok(Pattern { text, segments })
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The leading literal segments as a key prefix: every matching key
    /// starts with it. With a wildcard after them it ends in `/`; a pattern
    /// without wildcards is its own (only) match.
    pub(crate) fn prefix(&self) -> String {
        let literals: Vec<&str> = self
            .segments
            .iter()
            .map_while(|s| match s {
                Segment::Literal(l) => Some(l.as_str()),
                _ => None,
            })
            .collect();
        let mut prefix = String::from("/");
        prefix.push_str(&literals.join("/"));
        if literals.len() < self.segments.len() && !literals.is_empty() {
            prefix.push('/');
        }
        prefix
    }

    pub fn matches(&self, key: &Key) -> bool {
        let key: Vec<&str> = key.segments().collect();
        match_segments(&self.segments, &key)
    }
}

fn render(segments: &[Segment]) -> String {
    let mut out = String::new();
    for s in segments {
        out.push('/');
        out.push_str(match s {
            Segment::Literal(l) => l,
            Segment::One => "*",
            Segment::Any => "**",
        });
    }
    out
}

/// Wildcard matching over segments, greedy with one backtrack point (the
/// last `**` seen): correct because every other pattern segment matches
/// exactly one key segment. At most `pattern.len() x key.len()` steps.
fn match_segments(pattern: &[Segment], key: &[&str]) -> bool {
    let (mut p, mut k) = (0, 0);
    let mut resume: Option<(usize, usize)> = None;
    while k < key.len() {
        match pattern.get(p) {
            Some(Segment::Any) => {
                resume = Some((p, k));
                p += 1;
                continue;
            }
            Some(Segment::One) => {
                p += 1;
                k += 1;
                continue;
            }
            Some(Segment::Literal(l)) if l == key[k] => {
                p += 1;
                k += 1;
                continue;
            }
            _ => {}
        }
        match resume {
            // Let the last `**` take one more segment and retry after it.
            Some((star, taken)) => {
                resume = Some((star, taken + 1));
                p = star + 1;
                k = taken + 1;
            }
            None => return false,
        }
    }
    pattern[p..].iter().all(|s| *s == Segment::Any)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The definition, by recursion: obviously right, exponential.
    fn reference(pattern: &[Segment], key: &[&str]) -> bool {
        match pattern.split_first() {
            None => key.is_empty(),
            Some((Segment::Any, rest)) => (0..=key.len()).any(|n| reference(rest, &key[n..])),
            Some((Segment::One, rest)) => !key.is_empty() && reference(rest, &key[1..]),
            Some((Segment::Literal(l), rest)) => key.first() == Some(&l.as_str()) && reference(rest, &key[1..]),
        }
    }

    fn segment() -> impl Strategy<Value = Segment> {
        prop_oneof![
            Just(Segment::One),
            Just(Segment::Any),
            Just(Segment::Literal("a".into())),
            Just(Segment::Literal("b".into())),
        ]
    }

    proptest! {
        #[test]
        fn matching_agrees_with_the_definition(
            pattern in proptest::collection::vec(segment(), 0..7),
            key in proptest::collection::vec(prop_oneof![Just("a"), Just("b")], 0..8),
        ) {
            prop_assert_eq!(match_segments(&pattern, &key), reference(&pattern, &key));
        }
    }
}
