//! Channel names and wildcard patterns.
//!
//! A subscription whose name contains `*`, `?` or `[` is a pattern: shell-glob syntax,
//! matched against the whole channel name, case-sensitive, with `*` crossing `/` (as QCOP
//! did). `[abc]`, `[a-z]` and negated `[!a-z]` / `[^a-z]` classes are supported; a `]` right
//! after the opening bracket (or its `!`) is a literal.

use std::borrow::Cow;
use std::fmt;

/// Why a channel, pattern or message name was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NameError {
    /// The name is empty.
    Empty,
    /// The name is longer than the limit (bytes).
    TooLong {
        /// Length of the name in bytes.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The name contains a control character.
    ControlChar,
    /// A `[` class is not closed.
    UnclosedClass,
    /// A message name whose normalised form normalises to something else again (only
    /// malformed signatures such as `f(const void)` do).
    Unstable,
}

impl fmt::Display for NameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NameError::Empty => f.write_str("name is empty"),
            NameError::TooLong { len, max } => {
                write!(f, "name is {len} bytes long, the limit is {max}")
            }
            NameError::ControlChar => f.write_str("name contains a control character"),
            NameError::UnclosedClass => f.write_str("pattern has an unclosed '[' class"),
            NameError::Unstable => f.write_str("message signature has no stable normalised form"),
        }
    }
}

impl std::error::Error for NameError {}

/// Checks a channel or message name: non-empty, at most `max` bytes, no control characters.
pub fn check_name(name: &str, max: usize) -> Result<(), NameError> {
    if name.is_empty() {
        return Err(NameError::Empty);
    }
    if name.len() > max {
        return Err(NameError::TooLong {
            len: name.len(),
            max,
        });
    }
    if name.chars().any(char::is_control) {
        return Err(NameError::ControlChar);
    }
    Ok(())
}

/// Checks a message name as [`check_name`] does and returns it normalised as Qt's
/// `QMetaObject::normalizedSignature` normalises signatures
/// ([`normalize_signature`](crate::datastream::normalize_signature)): `reboot( )` is
/// `reboot()`. The daemon passes every message name it is given (by a client, a linked
/// daemon or its spool) through this before the policy, routing and monitors see it.
///
/// # Errors
///
/// What [`check_name`] refuses, in the name as given or in its normalised form (which must
/// not be empty), and [`NameError::Unstable`].
pub fn check_message_name(name: &str, max: usize) -> Result<Cow<'_, str>, NameError> {
    check_name(name, max)?;
    let normalized = crate::datastream::normalize_signature(name);
    if let Cow::Owned(n) = &normalized {
        check_name(n, max)?;
        if crate::datastream::normalize_signature(n) != n.as_str() {
            return Err(NameError::Unstable);
        }
    }
    Ok(normalized)
}

/// True if `name` is a pattern rather than a plain channel name: it contains a `*`, as in
/// Qt's QCOP. Within a pattern `?` and `[...]` are wildcards too; in a name without a `*`
/// they are ordinary characters (`cam?` and `QPE/cam[1]` are plain channels).
pub fn is_pattern(name: &str) -> bool {
    name.contains('*')
}

/// One element of a compiled pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Token {
    Star,
    AnyChar,
    Literal(char),
    Class {
        negated: bool,
        ranges: Vec<(char, char)>,
    },
}

impl Token {
    fn matches(&self, c: char) -> bool {
        match self {
            Token::Star => true,
            Token::AnyChar => true,
            Token::Literal(l) => *l == c,
            Token::Class { negated, ranges } => {
                ranges.iter().any(|&(lo, hi)| lo <= c && c <= hi) != *negated
            }
        }
    }
}

/// A compiled wildcard pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pattern {
    tokens: Vec<Token>,
}

impl Pattern {
    /// Compiles `text`. Consecutive `*` collapse into one.
    pub fn new(text: &str) -> Result<Pattern, NameError> {
        let mut tokens = Vec::new();
        let mut chars = text.chars().peekable();
        while let Some(c) = chars.next() {
            let tok = match c {
                '*' => {
                    if tokens.last() == Some(&Token::Star) {
                        continue;
                    }
                    Token::Star
                }
                '?' => Token::AnyChar,
                '[' => {
                    let negated = matches!(chars.peek(), Some('!') | Some('^'));
                    if negated {
                        chars.next();
                    }
                    let mut ranges = Vec::new();
                    let mut first = true;
                    loop {
                        let Some(lo) = chars.next() else {
                            return Err(NameError::UnclosedClass);
                        };
                        if lo == ']' && !first {
                            break;
                        }
                        first = false;
                        let mut hi = lo;
                        if chars.peek() == Some(&'-') {
                            let mut look = chars.clone();
                            look.next();
                            if let Some(&h) = look.peek() {
                                if h != ']' {
                                    chars.next();
                                    chars.next();
                                    hi = h;
                                }
                            }
                        }
                        ranges.push((lo, hi));
                    }
                    Token::Class { negated, ranges }
                }
                other => Token::Literal(other),
            };
            tokens.push(tok);
        }
        Ok(Pattern { tokens })
    }

    /// The compiled tokens (for the daemon's pattern index).
    #[cfg_attr(not(feature = "daemon"), allow(dead_code))]
    pub(crate) fn tokens(&self) -> &[Token] {
        &self.tokens
    }

    /// Whether the whole of `name` matches.
    ///
    /// Iterative with backtracking to the last `*` only, so it runs in
    /// O(len(pattern) × len(name)) at worst and never recurses.
    pub fn matches(&self, name: &str) -> bool {
        let toks = &self.tokens;
        let (mut t, mut s) = (0usize, 0usize);
        // Token index after the last star, and the name position it is retried from.
        let mut backtrack: Option<(usize, usize)> = None;
        loop {
            if let Some(tok) = toks.get(t) {
                if *tok == Token::Star {
                    backtrack = Some((t + 1, s));
                    t += 1;
                    continue;
                }
                if let Some(c) = name[s..].chars().next() {
                    if tok.matches(c) {
                        t += 1;
                        s += c.len_utf8();
                        continue;
                    }
                }
            } else if s == name.len() {
                return true;
            }
            let Some((bt, bs)) = backtrack else {
                return false;
            };
            let Some(c) = name[bs..].chars().next() else {
                return false;
            };
            let next = bs + c.len_utf8();
            backtrack = Some((bt, next));
            t = bt;
            s = next;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn m(p: &str, n: &str) -> bool {
        Pattern::new(p).unwrap().matches(n)
    }

    #[test]
    fn message_names_are_normalized() {
        for raw in [
            "reboot()",
            "reboot( )",
            "reboot ()",
            " reboot()",
            "reboot(  )",
            "reboot(void)",
        ] {
            assert_eq!(check_message_name(raw, 255).unwrap(), "reboot()", "{raw:?}");
        }
        assert_eq!(check_message_name("f(qint64)", 255).unwrap(), "f(qint64)");
        assert_eq!(check_message_name(" ", 255), Err(NameError::Empty));
        assert_eq!(check_message_name("", 255), Err(NameError::Empty));
        assert_eq!(
            check_message_name("a\n()", 255),
            Err(NameError::ControlChar)
        );
        assert_eq!(
            check_message_name("f(const void)", 255),
            Err(NameError::Unstable)
        );
        // The limit holds for the name as sent and as normalised (`> >` is one longer).
        assert_eq!(
            check_message_name("f(QList<QList<int>>)", 19),
            Err(NameError::TooLong { len: 20, max: 19 })
        );
    }

    #[test]
    fn glob_semantics() {
        assert!(m("QPE/*", "QPE/System"));
        assert!(m("QPE/*", "QPE/Application/x"), "* crosses /");
        assert!(!m("QPE/*", "qpe/System"), "case-sensitive");
        assert!(m("*", "anything/at/all"));
        assert!(m("a?c", "abc"));
        assert!(!m("a?c", "abbc"));
        assert!(m("a?c", "aéc"), "? is one character, not one byte");
        assert!(m("ch[0-9]", "ch7"));
        assert!(!m("ch[!0-9]", "ch7"));
        assert!(m("ch[^0-9]", "chx"));
        assert!(m("[]]x", "]x"));
        assert!(m("a[-]b", "a-b"));
        assert!(m("*/volume", "QPE/Audio/volume"));
        assert!(!m("*/volume", "QPE/Audio/volume2"), "whole-name match");
        assert!(m("a*b*c", "aXXbYYc"));
        assert!(!m("a*b*c", "aXXbYY"));
        assert_eq!(Pattern::new("a[bc"), Err(NameError::UnclosedClass));
    }

    #[test]
    fn name_checks() {
        assert_eq!(check_name("", 10), Err(NameError::Empty));
        assert_eq!(
            check_name("abcdef", 3),
            Err(NameError::TooLong { len: 6, max: 3 })
        );
        assert_eq!(check_name("a\nb", 10), Err(NameError::ControlChar));
        assert_eq!(check_name("QPE/System", 255), Ok(()));
        assert!(is_pattern("a*") && is_pattern("a?*") && is_pattern("[a]*"));
        assert!(!is_pattern("QPE/System") && !is_pattern("cam?") && !is_pattern("QPE/cam[1]"));
    }

    /// A plainly recursive reference matcher for `*` and `?`, to check the iterative one.
    fn reference(p: &[char], n: &[char]) -> bool {
        match p.split_first() {
            None => n.is_empty(),
            Some(('*', rest)) => (0..=n.len()).any(|i| reference(rest, &n[i..])),
            Some(('?', rest)) => !n.is_empty() && reference(rest, &n[1..]),
            Some((c, rest)) => n.first() == Some(c) && reference(rest, &n[1..]),
        }
    }

    proptest! {
        #[test]
        fn matches_reference(p in "[ab*?/]{0,8}", n in "[ab/]{0,10}") {
            let pc: Vec<char> = p.chars().collect();
            let nc: Vec<char> = n.chars().collect();
            prop_assert_eq!(m(&p, &n), reference(&pc, &nc));
        }

        #[test]
        fn literal_names_match_themselves(n in "[^*?\\[]{1,30}") {
            prop_assert!(m(&n, &n));
        }

        #[test]
        fn any_pattern_text_compiles_or_errors(p in "\\PC{0,20}", n in "\\PC{0,20}") {
            if let Ok(pat) = Pattern::new(&p) {
                let _ = pat.matches(&n);
            }
        }
    }
}
