//! Regular expressions written the way Fluent Bit reads them (grep rules, `Match_Regex`).
//!
//! Fluent Bit compiles patterns with Onigmo in Ruby syntax, and accepts them bare (`ERROR|WARN`)
//! or between slashes with Ruby option letters (`/^error/i`). We translate that dialect onto the
//! `regex` crate so a rule copied from a Fluent Bit config means the same thing:
//! - `/pat/` and `/pat/imx` lose their slashes; `i` = case-insensitive, `m` = `.` matches a
//!   newline (Ruby's meaning of `m`), `x` = extended (whitespace and `#` comments ignored).
//!   Anything else after the last slash (`/var/log`) leaves the pattern as written.
//! - In Ruby `^` and `$` always match at line boundaries, so multi-line mode is always on.
//!
//! Ruby features the `regex` crate lacks (look-around, backreferences, `\h`, `\Z`) are rejected
//! when the config is loaded, with the crate's own explanation.

/// Options found after the closing slash.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Options {
    case_insensitive: bool,
    dot_matches_newline: bool,
    extended: bool,
}

/// Splits `/body/opts` into the body and options, as Fluent Bit's `str_to_regex` does.
fn split_delimiters(pattern: &str) -> (&str, Options) {
    let plain = (pattern, Options::default());
    if !pattern.starts_with('/') {
        return plain;
    }
    let Some(last) = pattern.rfind('/').filter(|&i| i > 0) else {
        return plain;
    };
    let body = &pattern[1..last];
    let suffix = &pattern[last + 1..];
    if suffix.is_empty() {
        return (body, Options::default());
    }
    let mut opts = Options::default();
    for c in suffix.chars() {
        match c {
            'i' => opts.case_insensitive = true,
            'm' => opts.dot_matches_newline = true,
            'x' => opts.extended = true,
            'o' => {}
            _ => return plain,
        }
    }
    if opts == Options::default() {
        // Only `o` (or nothing usable): Fluent Bit then keeps the pattern as written.
        return plain;
    }
    (body, opts)
}

fn error_message(pattern: &str, err: regex::Error) -> String {
    format!("`{pattern}` is not a valid regular expression: {err}")
}

/// Compiles a pattern for matching record values (which may hold invalid UTF-8).
pub fn compile_bytes(pattern: &str) -> Result<regex::bytes::Regex, String> {
    let (body, opts) = split_delimiters(pattern);
    regex::bytes::RegexBuilder::new(body)
        .multi_line(true)
        .case_insensitive(opts.case_insensitive)
        .dot_matches_new_line(opts.dot_matches_newline)
        .ignore_whitespace(opts.extended)
        .build()
        .map_err(|e| error_message(pattern, e))
}

/// Compiles a pattern for matching tags.
pub fn compile_str(pattern: &str) -> Result<regex::Regex, String> {
    let (body, opts) = split_delimiters(pattern);
    regex::RegexBuilder::new(body)
        .multi_line(true)
        .case_insensitive(opts.case_insensitive)
        .dot_matches_new_line(opts.dot_matches_newline)
        .ignore_whitespace(opts.extended)
        .build()
        .map_err(|e| error_message(pattern, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(pattern: &str, text: &str) -> bool {
        compile_bytes(pattern).unwrap().is_match(text.as_bytes())
    }

    #[test]
    fn bare_patterns_search_anywhere() {
        assert!(m("ERROR|WARN", "level=WARN disk"));
        assert!(!m("ERROR|WARN", "level=info"));
        assert!(!m("error", "ERROR"));
    }

    #[test]
    fn slashes_and_ruby_options() {
        assert!(m("/^apple$/", "apple"));
        assert!(m("/error/i", "ERROR"));
        assert!(m("/a.b/m", "a\nb"));
        assert!(!m("/a.b/", "a\nb"));
        assert!(m("/ a b /x", "ab"));
        // Not an options suffix: taken literally, slashes included.
        assert!(m("/var/log", "path=/var/log/app"));
        assert!(!m("/var/log", "var"));
        // `o` alone is no option for Fluent Bit: the pattern stays as written.
        assert!(m("/ab/o", "x/ab/o"));
        assert!(!m("/ab/o", "ab"));
    }

    #[test]
    fn caret_and_dollar_are_line_anchors_like_ruby() {
        assert!(m("^second$", "first\nsecond\nthird"));
    }

    #[test]
    fn matches_invalid_utf8_values() {
        let re = compile_bytes("abc").unwrap();
        assert!(re.is_match(b"\xe2abc\x82"));
    }

    #[test]
    fn unsupported_syntax_is_a_clear_error() {
        let err = compile_bytes("foo(?=bar)").unwrap_err();
        assert!(err.contains("foo(?=bar)"), "{err}");
        assert!(err.contains("look-around"), "{err}");
    }
}
