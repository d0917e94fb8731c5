//! Key paths as written in transform options.
//!
//! Two spellings are accepted: `a->b->c` (the convention used across logferry and Fluent Bit's
//! nested-key options) and the record-accessor form `$a['b']['c']` that Fluent Bit's grep takes,
//! so rules copied from a Fluent Bit config keep working. Both become a [`KeyPath`] for lookups,
//! plus the split parts, which renaming needs to reach the parent map of a nested key.

use bytes::Bytes;

use crate::event::{KeyPath, Map};

/// A parsed key path with its parts kept for parent navigation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigPath {
    path: KeyPath,
    parts: Vec<Bytes>,
}

impl ConfigPath {
    /// Parses `a->b` or `$a['b']`. The error says what is wrong, without the option's name.
    pub fn parse(s: &str) -> Result<ConfigPath, String> {
        if s.is_empty() {
            return Err("the key is empty".to_string());
        }
        let parts: Vec<String> = match s.strip_prefix('$') {
            Some(accessor) => parse_accessor(accessor, s)?,
            None => {
                let parts: Vec<String> = s.split("->").map(str::to_string).collect();
                if parts.iter().any(String::is_empty) {
                    return Err(format!(
                        "`{s}` has an empty part; write nested keys as `a->b`"
                    ));
                }
                parts
            }
        };
        let joined = parts.join("->");
        Ok(ConfigPath {
            path: KeyPath::parse(&joined),
            parts: parts
                .into_iter()
                .map(|p| Bytes::copy_from_slice(p.as_bytes()))
                .collect(),
        })
    }

    /// The path for [`Map::get_path`] and friends.
    pub fn key_path(&self) -> &KeyPath {
        &self.path
    }

    pub fn is_nested(&self) -> bool {
        self.parts.len() > 1
    }

    /// The last key (the one a rename changes).
    pub fn last(&self) -> &Bytes {
        // parse() never builds an empty path.
        &self.parts[self.parts.len() - 1]
    }

    /// True when both paths live in the same map (same parents), so a rename can happen in place.
    pub fn same_parent(&self, other: &ConfigPath) -> bool {
        let n = self.parts.len() - 1;
        other.parts.len() - 1 == n && self.parts[..n] == other.parts[..n]
    }

    /// True when inserting at this path would only add maps where none exist, never replace a
    /// value in the way (`a->b` into a record whose `a` is a string).
    pub fn fits_in(&self, map: &Map) -> bool {
        let mut current = map;
        for part in &self.parts[..self.parts.len() - 1] {
            match current.get(part) {
                None => return true,
                Some(crate::event::Value::Map(m)) => current = m,
                Some(_) => return false,
            }
        }
        true
    }

    /// The map holding the last key, if every parent exists and is a map.
    pub fn parent_mut<'a>(&self, map: &'a mut Map) -> Option<&'a mut Map> {
        let mut current = map;
        for part in &self.parts[..self.parts.len() - 1] {
            current = match current.get_mut(part) {
                Some(crate::event::Value::Map(m)) => m,
                _ => return None,
            };
        }
        Some(current)
    }
}

impl std::fmt::Display for ConfigPath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.path.as_str())
    }
}

/// `name['a']["b"]` (after the `$`) into its parts.
fn parse_accessor(accessor: &str, whole: &str) -> Result<Vec<String>, String> {
    let name_end = accessor.find('[').unwrap_or(accessor.len());
    let name = &accessor[..name_end];
    if name.is_empty() {
        return Err(format!("`{whole}` has no key name after `$`"));
    }
    let mut parts = vec![name.to_string()];
    let mut rest = &accessor[name_end..];
    while !rest.is_empty() {
        let inner = rest.strip_prefix('[').ok_or_else(|| {
            format!(
                "`{whole}`: expected `['key']` after `{}`",
                parts.join("']['")
            )
        })?;
        let quote = inner.chars().next().filter(|c| *c == '\'' || *c == '"');
        let Some(quote) = quote else {
            return Err(format!(
                "`{whole}`: only quoted map keys like `['key']` are supported, not array indexes"
            ));
        };
        let body = &inner[1..];
        let close = body
            .find(quote)
            .ok_or_else(|| format!("`{whole}`: unterminated quote"))?;
        let key = &body[..close];
        let after = body[close + 1..]
            .strip_prefix(']')
            .ok_or_else(|| format!("`{whole}`: expected `]` after the quoted key"))?;
        if key.is_empty() || key.contains("->") {
            return Err(format!(
                "`{whole}`: sub-key `{key}` is empty or contains `->`"
            ));
        }
        parts.push(key.to_string());
        rest = after;
    }
    Ok(parts)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::Value;

    #[test]
    fn arrow_and_accessor_forms_agree() {
        let a = ConfigPath::parse("kubernetes->labels->app").unwrap();
        let b = ConfigPath::parse("$kubernetes['labels'][\"app\"]").unwrap();
        assert_eq!(a, b);
        assert!(a.is_nested());
        assert_eq!(a.last().as_ref(), b"app");
        let plain = ConfigPath::parse("$log").unwrap();
        assert_eq!(plain, ConfigPath::parse("log").unwrap());
        assert!(!plain.is_nested());
    }

    #[test]
    fn rejects_malformed_paths() {
        for bad in [
            "", "a->", "->a", "a->->b", "$", "$a[0]", "$a['b'", "$a['b']x", "$['a']",
        ] {
            assert!(
                ConfigPath::parse(bad).is_err(),
                "{bad:?} should be rejected"
            );
        }
    }

    #[test]
    fn parent_mut_reaches_nested_maps_only() {
        let mut m = Map::new();
        let p = ConfigPath::parse("k->pod").unwrap();
        assert!(p.parent_mut(&mut m).is_none());
        m.insert_path(p.key_path(), Value::from("web"));
        let parent = p.parent_mut(&mut m).unwrap();
        assert_eq!(parent.get(b"pod"), Some(&Value::from("web")));
        assert!(p.fits_in(&m));
        m.insert("k", Value::from("flat"));
        assert!(p.parent_mut(&mut m).is_none());
        assert!(!p.fits_in(&m));
        assert!(ConfigPath::parse("new->x").unwrap().fits_in(&m));
    }
}
