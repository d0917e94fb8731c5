//! `rename`: rename or copy keys, like the rename/copy rules of Fluent Bit's `modify` filter.
//!
//! - `rename = { old = "new" }` (`Rename`): only when `old` exists and `new` does not.
//! - `hard_rename` (`Hard_rename`): when `old` exists, replacing any existing `new`.
//! - `copy` / `hard_copy` (`Copy` / `Hard_copy`): the same, keeping `old`.
//!
//! Both sides are key paths (`a->b`). A key renamed within its own map keeps its position; a
//! key moved to another map (`kubernetes->pod_name` to `pod`) is appended there, creating maps
//! on the way, unless a non-map value is in the way (then the rule is skipped). Renames run
//! before copies, each table in written order.

use serde::Deserialize;

use super::pairs::OrderedPairs;
use super::path::ConfigPath;
use super::Transform;
use crate::config::field::FieldError;
use crate::event::{Event, Map};

/// Options of a `rename` transform.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RenameConfig {
    /// `{ old = "new" }`: rename when `old` exists and `new` does not.
    #[serde(default)]
    pub rename: OrderedPairs,
    /// `{ old = "new" }`: rename when `old` exists, overwriting `new`.
    #[serde(default)]
    pub hard_rename: OrderedPairs,
    /// `{ from = "to" }`: copy when `from` exists and `to` does not.
    #[serde(default)]
    pub copy: OrderedPairs,
    /// `{ from = "to" }`: copy when `from` exists, overwriting `to`.
    #[serde(default)]
    pub hard_copy: OrderedPairs,
}

#[derive(Debug)]
struct Rule {
    from: ConfigPath,
    to: ConfigPath,
    keep_source: bool,
    overwrite: bool,
}

impl Rule {
    fn apply(&self, record: &mut Map) {
        if !self.overwrite && record.get_path(self.to.key_path()).is_some() {
            return;
        }
        if !self.to.fits_in(record) {
            // A non-map value sits where the target's parent map would go: leave both alone
            // rather than replace data nobody asked to touch.
            return;
        }
        if !self.keep_source && self.from.same_parent(&self.to) {
            // In place: the key keeps its position among its siblings.
            if let Some(parent) = self.from.parent_mut(record) {
                parent.rename(self.from.last(), self.to.last().clone());
            }
            return;
        }
        let value = if self.keep_source {
            record.get_path(self.from.key_path()).cloned()
        } else {
            record.remove_path(self.from.key_path())
        };
        if let Some(value) = value {
            record.insert_path(self.to.key_path(), value);
        }
    }
}

/// The `rename` transform.
#[derive(Debug)]
pub struct Rename {
    rules: Vec<Rule>,
}

impl Rename {
    pub fn build(config: RenameConfig) -> Result<Rename, Vec<FieldError>> {
        let mut errors = Vec::new();
        let mut rules = Vec::new();
        let tables = [
            ("rename", &config.rename, false, false),
            ("hard_rename", &config.hard_rename, false, true),
            ("copy", &config.copy, true, false),
            ("hard_copy", &config.hard_copy, true, true),
        ];
        for (option, pairs, keep_source, overwrite) in tables {
            for (from, to) in pairs.iter() {
                match (ConfigPath::parse(from), ConfigPath::parse(to)) {
                    (Ok(from), Ok(to)) if from == to => errors.push(FieldError::new(
                        option,
                        format!("`{from}` is renamed or copied to itself"),
                    )),
                    (Ok(from), Ok(to)) => rules.push(Rule {
                        from,
                        to,
                        keep_source,
                        overwrite,
                    }),
                    (Err(message), _) | (_, Err(message)) => {
                        errors.push(FieldError::new(option, message))
                    }
                }
            }
        }
        if rules.is_empty() && errors.is_empty() {
            errors.push(FieldError::new(
                "rename",
                "nothing to do: set `rename`, `hard_rename`, `copy` or `hard_copy`",
            ));
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        Ok(Rename { rules })
    }
}

impl Transform for Rename {
    fn apply(&mut self, events: &mut Vec<Event>) {
        for event in events.iter_mut() {
            for rule in &self.rules {
                rule.apply(&mut event.record);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{EventTime, Value};
    use bytes::Bytes;

    fn rename(src: &str) -> Rename {
        Rename::build(toml::from_str(src).unwrap()).unwrap()
    }

    fn rec(pairs: &[(&str, &str)]) -> Map {
        pairs
            .iter()
            .map(|(k, v)| (Bytes::copy_from_slice(k.as_bytes()), Value::from(*v)))
            .collect()
    }

    fn run(r: &mut Rename, record: Map) -> Map {
        let mut events = vec![Event::new("t".into(), EventTime::default(), record)];
        r.apply(&mut events);
        events.remove(0).record
    }

    fn text(m: &Map) -> Vec<(String, String)> {
        m.iter()
            .map(|(k, v)| {
                let v = match v {
                    Value::Map(inner) => format!("{:?}", text(inner)),
                    other => other.to_text(),
                };
                (String::from_utf8_lossy(k).into_owned(), v)
            })
            .collect()
    }

    fn pairs(p: &[(&str, &str)]) -> Vec<(String, String)> {
        p.iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    }

    #[test]
    fn rename_in_place_keeps_position() {
        let mut r = rename("rename = { Key2 = 'RenamedKey' }");
        let out = run(
            &mut r,
            rec(&[("Key1", "Value1"), ("Key2", "Value2"), ("Key3", "v3")]),
        );
        assert_eq!(
            text(&out),
            pairs(&[("Key1", "Value1"), ("RenamedKey", "Value2"), ("Key3", "v3")])
        );
    }

    #[test]
    fn soft_rename_skips_existing_target_and_hard_overwrites() {
        let input = rec(&[("a", "1"), ("b", "2")]);
        let mut soft = rename("rename = { a = 'b' }");
        assert_eq!(
            text(&run(&mut soft, input.clone())),
            pairs(&[("a", "1"), ("b", "2")])
        );
        let mut hard = rename("hard_rename = { a = 'b' }");
        assert_eq!(text(&run(&mut hard, input)), pairs(&[("b", "1")]));
    }

    #[test]
    fn missing_source_is_a_no_op() {
        let mut r = rename("hard_rename = { nope = 'b' }\ncopy = { nope = 'c' }");
        assert_eq!(text(&run(&mut r, rec(&[("b", "2")]))), pairs(&[("b", "2")]));
    }

    #[test]
    fn nested_paths_move_between_maps() {
        let mut r = rename("rename = { 'kubernetes->pod_name' = 'pod', 'kubernetes->ns' = 'kubernetes->namespace', log = 'meta->line' }");
        let mut input = rec(&[("log", "hello")]);
        input.insert(
            "kubernetes",
            Value::Map(rec(&[("pod_name", "web-1"), ("ns", "prod")])),
        );
        let out = run(&mut r, input);
        assert_eq!(out.get(b"pod"), Some(&Value::from("web-1")));
        let k8s = out.get(b"kubernetes").and_then(Value::as_map).unwrap();
        assert_eq!(text(k8s), pairs(&[("namespace", "prod")]));
        assert!(out.get(b"log").is_none());
        let meta = out.get(b"meta").and_then(Value::as_map).unwrap();
        assert_eq!(meta.get(b"line"), Some(&Value::from("hello")));
    }

    #[test]
    fn never_replaces_a_value_in_the_way_of_the_target() {
        let mut r = rename("hard_rename = { log = 'meta->line' }");
        let input = rec(&[("log", "hello"), ("meta", "a string")]);
        assert_eq!(text(&run(&mut r, input.clone())), text(&input));
    }

    #[test]
    fn copies_keep_the_source() {
        let mut r =
            rename("copy = { log = 'message', x = 'log' }\nhard_copy = { source = 'stream' }");
        let out = run(
            &mut r,
            rec(&[("log", "hi"), ("x", "ignored"), ("source", "stdout")]),
        );
        assert_eq!(
            text(&out),
            pairs(&[
                ("log", "hi"),
                ("x", "ignored"),
                ("source", "stdout"),
                ("message", "hi"),
                ("stream", "stdout")
            ])
        );
    }

    #[test]
    fn config_errors() {
        let err = |src: &str| Rename::build(toml::from_str(src).unwrap()).unwrap_err();
        assert_eq!(err("")[0].key, "rename");
        assert_eq!(err("copy = { a = 'a' }")[0].key, "copy");
        assert_eq!(err("hard_rename = { 'a->' = 'b' }")[0].key, "hard_rename");
        let unknown = toml::from_str::<RenameConfig>("renames = { a = 'b' }")
            .unwrap_err()
            .to_string();
        assert!(unknown.contains("renames"), "{unknown}");
    }
}
