//! Quoting what a caller sent back at them, bounded.
//!
//! Error messages name the input they refuse, and that input comes from
//! outside: a path with a newline or an escape sequence would forge a second
//! line or repaint a terminal, and a 100 KB name would make a 100 KB error.
//! Every error that echoes input formats it through [`Echo`]: quoted, with
//! control characters escaped, and cut after [`MAX_ECHO_CHARS`] characters
//! with the full length said.

use std::fmt;

/// Most characters of an input an error message repeats.
pub const MAX_ECHO_CHARS: usize = 96;

/// `"text"`, escaped like Rust's `Debug` (so `\n`, `\u{1b}`, `\"` stay on
/// one line), and cut to [`MAX_ECHO_CHARS`] characters: `"text"... (N
/// bytes)`.
#[derive(Clone, Copy)]
pub struct Echo<'a>(pub &'a str);

impl fmt::Display for Echo<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text = self.0;
        match text.char_indices().nth(MAX_ECHO_CHARS) {
            None => write!(f, "{text:?}"),
            Some((cut, _)) => write!(f, "{:?}... ({} bytes)", &text[..cut], text.len()),
        }
    }
}

impl fmt::Debug for Echo<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// An owned input kept for an error message, so the error can outlive the
/// request: only the part that will be shown is kept, with the full length.
#[derive(Clone, PartialEq, Eq)]
pub struct Echoed {
    shown: String,
    len: usize,
}

impl Echoed {
    pub fn new(text: &str) -> Echoed {
        let cut = text.char_indices().nth(MAX_ECHO_CHARS).map_or(text.len(), |(at, _)| at);
        Echoed { shown: text[..cut].to_string(), len: text.len() }
    }
}

impl fmt::Display for Echoed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.len > self.shown.len() {
            write!(f, "{:?}... ({} bytes)", self.shown, self.len)
        } else {
            write!(f, "{:?}", self.shown)
        }
    }
}

impl fmt::Debug for Echoed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// A message that may quote input (a parser's error): control characters
/// escaped in place, the whole cut after `max` characters. Unlike [`Echo`]
/// it adds no quotes, for text that is not one input.
pub fn sanitize(text: &str, max: usize) -> String {
    let mut out = String::with_capacity(text.len().min(max + 16));
    for (n, c) in text.chars().enumerate() {
        if n == max {
            out.push_str("...");
            break;
        }
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

/// Does `text` hold a character a terminal or a line-based reader would
/// act on (C0 and C1 controls, DEL)?
pub fn has_control(text: &str) -> bool {
    text.chars().any(char::is_control)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_controls_and_quotes() {
        assert_eq!(Echo("a\nb\u{1b}[31m\"c").to_string(), r#""a\nb\u{1b}[31m\"c""#);
        assert!(has_control("a\tb") && has_control("\u{7f}") && has_control("\u{85}"));
        assert!(!has_control("plain/päth"));
    }

    #[test]
    fn sanitize_escapes_in_place_and_cuts() {
        assert_eq!(sanitize("unknown variant `\u{1b}[2J`\n", 100), "unknown variant `\\u{1b}[2J`\\n");
        assert_eq!(sanitize("abcdef", 3), "abc...");
    }

    #[test]
    fn cuts_long_input_and_says_how_long_it_was() {
        let long = "x".repeat(100_000);
        let shown = Echo(&long).to_string();
        assert_eq!(shown, format!("\"{}\"... (100000 bytes)", "x".repeat(MAX_ECHO_CHARS)));
        let short = "y".repeat(MAX_ECHO_CHARS);
        assert_eq!(Echo(&short).to_string(), format!("\"{short}\""));
        // Multi-byte characters are never cut in the middle.
        let wide = "é".repeat(200);
        assert!(Echo(&wide).to_string().starts_with(&format!("\"{}\"...", "é".repeat(MAX_ECHO_CHARS))));
        assert_eq!(Echoed::new(&long).to_string(), shown);
        assert_eq!(Echoed::new("a\nb").to_string(), r#""a\nb""#);
    }
}
