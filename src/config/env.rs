//! `${VAR}` and `${VAR:-default}` interpolation of string values from the environment.
//!
//! Interpolation happens on parsed string values rather than on the raw file, so a value holding
//! quotes or backslashes cannot break the TOML around it, and line numbers stay exact.

use std::borrow::Cow;

/// Why a string could not be interpolated.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InterpolationError {
    #[error("environment variable `{0}` is not set; set it or write `${{{0}:-default}}`")]
    Missing(String),
    #[error("unterminated `${{` in `{0}`; close it with `}}` or write `$${{` for a literal")]
    Unterminated(String),
    #[error("`${{}}` needs a variable name")]
    EmptyName,
}

/// Replaces `${VAR}` and `${VAR:-default}` using `lookup`. `$${` is a literal `${`.
pub fn interpolate<'a>(
    input: &'a str,
    lookup: impl Fn(&str) -> Option<String>,
) -> Result<Cow<'a, str>, InterpolationError> {
    if !input.contains("${") {
        return Ok(Cow::Borrowed(input));
    }
    let mut out = String::with_capacity(input.len());
    let mut rest = input;
    while let Some(pos) = rest.find("${") {
        if pos > 0 && rest.as_bytes()[pos - 1] == b'$' {
            out.push_str(&rest[..pos - 1]);
            out.push_str("${");
            rest = &rest[pos + 2..];
            continue;
        }
        out.push_str(&rest[..pos]);
        let after = &rest[pos + 2..];
        let end = after
            .find('}')
            .ok_or_else(|| InterpolationError::Unterminated(input.to_string()))?;
        let expr = &after[..end];
        let (name, default) = match expr.find(":-") {
            Some(i) => (&expr[..i], Some(&expr[i + 2..])),
            None => (expr, None),
        };
        if name.is_empty() {
            return Err(InterpolationError::EmptyName);
        }
        match (lookup(name), default) {
            (Some(v), Some(d)) if v.is_empty() => out.push_str(d),
            (Some(v), _) => out.push_str(&v),
            (None, Some(d)) => out.push_str(d),
            (None, None) => return Err(InterpolationError::Missing(name.to_string())),
        }
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(Cow::Owned(out))
}

/// Interpolation from the process environment.
pub fn interpolate_env(input: &str) -> Result<Cow<'_, str>, InterpolationError> {
    interpolate(input, |name| std::env::var(name).ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lookup(name: &str) -> Option<String> {
        match name {
            "REGION" => Some("eu-west-1".into()),
            "EMPTY" => Some(String::new()),
            _ => None,
        }
    }

    #[test]
    fn substitutes_and_defaults() {
        assert_eq!(
            interpolate("a-${REGION}-b", lookup).unwrap(),
            "a-eu-west-1-b"
        );
        assert_eq!(interpolate("${NOPE:-x}", lookup).unwrap(), "x");
        assert_eq!(interpolate("${EMPTY:-d}", lookup).unwrap(), "d");
        assert_eq!(interpolate("${REGION:-d}", lookup).unwrap(), "eu-west-1");
        assert_eq!(interpolate("plain", lookup).unwrap(), "plain");
        assert_eq!(interpolate("$${REGION}", lookup).unwrap(), "${REGION}");
    }

    #[test]
    fn errors_name_the_variable() {
        assert_eq!(
            interpolate("${NOPE}", lookup),
            Err(InterpolationError::Missing("NOPE".into()))
        );
        assert!(matches!(
            interpolate("${REGION", lookup),
            Err(InterpolationError::Unterminated(_))
        ));
        assert_eq!(
            interpolate("${}", lookup),
            Err(InterpolationError::EmptyName)
        );
    }
}
