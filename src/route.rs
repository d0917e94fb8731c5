//! Tag matching for transforms and outputs: Fluent Bit's `Match` and `Match_Regex`.
//!
//! Semantics follow Fluent Bit's router (`flb_router_match`):
//! - `match` is a glob where `*` matches any run of characters, dots included, and every other
//!   character matches itself (case-sensitive); the whole tag must match. `*` takes everything,
//!   `app.*` takes `app.web` and `app.web.1`, `web-firelens*` takes `web-firelens-<task id>`.
//!   There is no `?` or character class.
//! - `match_regex` is a regular expression in Fluent Bit's dialect (see
//!   [`crate::transform::fluent_regex`]) that must match a non-empty prefix of the tag: Fluent
//!   Bit anchors it at the start of the tag but not at the end, so write `^...$`-style patterns
//!   as `web-.*-prod$` when the end matters.
//!
//! Matching runs for every batch of records, so the glob is matched byte by byte with no
//! allocation, and the common shapes (`*`, `prefix*`, exact) take a shortcut.

use crate::transform::fluent_regex;

/// A `match_regex` that does not compile. The message quotes the pattern and says what is wrong.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct BadRegex(pub String);

/// Decides whether a record's tag is taken by a transform or an output.
#[derive(Clone, Debug)]
pub enum TagMatcher {
    /// Fluent Bit `Match`.
    Glob(Glob),
    /// Fluent Bit `Match_Regex`.
    Regex(regex::Regex),
}

impl TagMatcher {
    /// A glob matcher (`match`). Every string is a valid glob.
    pub fn glob(pattern: &str) -> TagMatcher {
        TagMatcher::Glob(Glob::new(pattern))
    }

    /// A regex matcher (`match_regex`).
    pub fn regex(pattern: &str) -> Result<TagMatcher, BadRegex> {
        fluent_regex::compile_str(pattern)
            .map(TagMatcher::Regex)
            .map_err(BadRegex)
    }

    pub fn matches(&self, tag: &str) -> bool {
        match self {
            TagMatcher::Glob(g) => g.matches(tag),
            TagMatcher::Regex(re) => re.find(tag).is_some_and(|m| m.start() == 0 && m.end() > 0),
        }
    }
}

/// A Fluent Bit `Match` pattern, pre-classified so the usual shapes cost one comparison.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Glob {
    pattern: Box<str>,
    shape: Shape,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Shape {
    /// `*` (or `**`...): every tag.
    Any,
    /// No `*`: the tag must equal the pattern.
    Exact,
    /// `literal*`: the tag must start with the literal (held in `pattern` minus the stars).
    Prefix(usize),
    /// Anything else: general wildcard matching.
    General,
}

impl Glob {
    pub fn new(pattern: &str) -> Glob {
        let trimmed = pattern.trim_end_matches('*');
        let shape = if trimmed.is_empty() && !pattern.is_empty() {
            Shape::Any
        } else if !pattern.contains('*') {
            Shape::Exact
        } else if !trimmed.contains('*') {
            Shape::Prefix(trimmed.len())
        } else {
            Shape::General
        };
        Glob {
            pattern: pattern.into(),
            shape,
        }
    }

    pub fn as_str(&self) -> &str {
        &self.pattern
    }

    pub fn matches(&self, tag: &str) -> bool {
        match self.shape {
            Shape::Any => true,
            Shape::Exact => tag == &*self.pattern,
            Shape::Prefix(n) => tag.as_bytes().starts_with(&self.pattern.as_bytes()[..n]),
            Shape::General => wildcard_match(self.pattern.as_bytes(), tag.as_bytes()),
        }
    }
}

/// `*`-only wildcard matching without recursion or allocation: on a mismatch, retry from the
/// last `*` with it swallowing one more byte. Linear in practice, O(n*m) at worst.
fn wildcard_match(pattern: &[u8], text: &[u8]) -> bool {
    let (mut p, mut t) = (0, 0);
    let mut retry: Option<(usize, usize)> = None;
    while t < text.len() {
        if p < pattern.len() && pattern[p] == b'*' {
            retry = Some((p, t));
            p += 1;
        } else if p < pattern.len() && pattern[p] == text[t] {
            p += 1;
            t += 1;
        } else if let Some((star, from)) = retry {
            p = star + 1;
            t = from + 1;
            retry = Some((star, from + 1));
        } else {
            return false;
        }
    }
    pattern[p..].iter().all(|&c| c == b'*')
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An independent, obviously-correct matcher (recursive, straight from the definition) to
    /// check the fast one against.
    fn reference(p: &[u8], t: &[u8]) -> bool {
        match p.split_first() {
            None => t.is_empty(),
            Some((b'*', rest)) => (0..=t.len()).any(|i| reference(rest, &t[i..])),
            Some((c, rest)) => t.first() == Some(c) && reference(rest, &t[1..]),
        }
    }

    #[test]
    fn fluent_bit_glob_cases() {
        let cases: &[(&str, &str, bool)] = &[
            ("*", "anything.at.all", true),
            ("*", "", true),
            ("app.*", "app.web", true),
            ("app.*", "app.web.1", true),
            ("app.*", "app.", true),
            ("app.*", "app", false),
            ("app.*", "xapp.web", false),
            (
                "web-firelens*",
                "web-firelens-0123456789abcdef0123456789abcdef",
                true,
            ),
            ("web-firelens*", "web-firelens", true),
            ("web-firelens*", "api-firelens-0123", false),
            ("firelens-healthcheck", "firelens-healthcheck", true),
            ("firelens-healthcheck", "firelens-healthcheck2", false),
            ("*.web", "app.web", true),
            ("*.web", "app.web.x", false),
            ("kube.*.prod.*", "kube.ns.prod.pod", true),
            ("kube.*.prod.*", "kube.ns.staging.pod", false),
            ("a*b*c", "abbbc", true),
            ("a*b*c", "acb", false),
            ("a**b", "ab", true),
            ("App.*", "app.web", false),
        ];
        for &(pattern, tag, expected) in cases {
            let m = TagMatcher::glob(pattern);
            assert_eq!(
                m.matches(tag),
                expected,
                "match {pattern:?} against {tag:?}"
            );
            assert_eq!(
                reference(pattern.as_bytes(), tag.as_bytes()),
                expected,
                "reference {pattern:?} {tag:?}"
            );
        }
    }

    #[test]
    fn fast_matcher_agrees_with_reference_exhaustively() {
        let alphabet = [b'a', b'b', b'.', b'*'];
        let mut patterns = vec![Vec::new()];
        for len in 1..=4 {
            let mut idx = vec![0usize; len];
            loop {
                patterns.push(idx.iter().map(|&i| alphabet[i]).collect::<Vec<u8>>());
                let mut k = 0;
                while k < len {
                    idx[k] += 1;
                    if idx[k] < alphabet.len() {
                        break;
                    }
                    idx[k] = 0;
                    k += 1;
                }
                if k == len {
                    break;
                }
            }
        }
        let texts: Vec<Vec<u8>> = patterns
            .iter()
            .filter(|p| !p.contains(&b'*'))
            .cloned()
            .collect();
        for p in &patterns {
            let glob = Glob::new(std::str::from_utf8(p).unwrap());
            for t in &texts {
                let tag = std::str::from_utf8(t).unwrap();
                assert_eq!(
                    glob.matches(tag),
                    reference(p, t),
                    "pattern {:?} tag {:?}",
                    glob.as_str(),
                    tag
                );
            }
        }
    }

    #[test]
    fn regex_is_anchored_at_the_start_only() {
        let m = TagMatcher::regex("web-firelens-[0-9a-f]+").unwrap();
        assert!(m.matches("web-firelens-0123abcd"));
        assert!(m.matches("web-firelens-0123abcd.extra"));
        assert!(!m.matches("app.web-firelens-0123"));
        let end = TagMatcher::regex("^(api|web)-firelens.*prod$").unwrap();
        assert!(end.matches("api-firelens-x-prod"));
        assert!(!end.matches("api-firelens-x-prod-2"));
        let ci = TagMatcher::regex("/^APP\\./i").unwrap();
        assert!(ci.matches("app.web"));
    }

    #[test]
    fn regex_must_match_a_non_empty_prefix() {
        let m = TagMatcher::regex("a*").unwrap();
        assert!(m.matches("aab"));
        assert!(!m.matches("bbb"));
    }

    #[test]
    fn bad_regex_is_explained() {
        let err = TagMatcher::regex("app.(").unwrap_err();
        assert!(err.to_string().contains("`app.(`"), "{err}");
        assert!(
            !err.to_string().starts_with("match_regex"),
            "the loader adds the key"
        );
    }
}
