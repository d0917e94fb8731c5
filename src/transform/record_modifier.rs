//! `record_modifier`: add fixed keys to every record and remove unwanted ones.
//!
//! This is the filter FireLens uses to stamp `ecs_cluster`, `ecs_task_arn` and
//! `ecs_task_definition` on every record. Semantics follow Fluent Bit's `record_modifier`:
//! - `remove_keys` / `allowlist_keys` (`Remove_key`, `Allowlist_key` / `Whitelist_key`) act on
//!   top-level keys, compare names ignoring ASCII case, and a trailing `*` makes the name a
//!   prefix (`kube_*`). They are exclusive. A `remove_keys` entry written `a->b` removes that
//!   nested key instead (exact name).
//! - `records` are added after the removal, in written order, so an allowlist never strips
//!   them. A key that already exists gets the new value in place (Fluent Bit appends a second
//!   copy of the key, which every JSON reader resolves to the added value). `a->b` sets a
//!   nested key, creating the maps on the way.
//! - A record left with no keys at all by the removal is dropped, as Fluent Bit does.

use bytes::Bytes;
use serde::Deserialize;

use super::pairs::OrderedPairs;
use super::path::ConfigPath;
use super::Transform;
use crate::config::field::FieldError;
use crate::event::{Event, Map, Value};

/// Options of a `record_modifier` transform.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecordModifierConfig {
    /// Keys to set on every record, in order: `{ ecs_cluster = "prod" }` (or Fluent Bit
    /// `Record` lines: `["ecs_cluster prod"]`). `a->b` sets a nested key.
    #[serde(default)]
    pub records: OrderedPairs,
    /// Top-level keys to remove (ASCII case ignored; `prefix*` removes every key starting with
    /// `prefix`); `a->b` removes a nested key.
    #[serde(default)]
    pub remove_keys: Vec<String>,
    /// Top-level keys to keep, every other key being removed (same matching as `remove_keys`).
    /// Cannot be combined with `remove_keys`.
    #[serde(default, alias = "whitelist_keys")]
    pub allowlist_keys: Vec<String>,
}

/// A top-level key name to compare against, ignoring ASCII case, whole or as a prefix.
#[derive(Debug)]
struct KeyPattern {
    name: Bytes,
    prefix: bool,
}

impl KeyPattern {
    fn parse(s: &str) -> KeyPattern {
        let (name, prefix) = match s.strip_suffix('*') {
            Some(p) => (p, true),
            None => (s, false),
        };
        KeyPattern {
            name: Bytes::copy_from_slice(name.as_bytes()),
            prefix,
        }
    }

    fn matches(&self, key: &[u8]) -> bool {
        let n = self.name.len();
        if self.prefix {
            key.len() >= n && key[..n].eq_ignore_ascii_case(&self.name)
        } else {
            key.eq_ignore_ascii_case(&self.name)
        }
    }
}

#[derive(Debug)]
enum Removal {
    None,
    Remove {
        top: Vec<KeyPattern>,
        nested: Vec<ConfigPath>,
    },
    Allow(Vec<KeyPattern>),
}

/// A key to set: top-level keys skip the path walk.
#[derive(Debug)]
enum Target {
    Top(Bytes),
    Nested(ConfigPath),
}

/// The `record_modifier` transform.
#[derive(Debug)]
pub struct RecordModifier {
    removal: Removal,
    records: Vec<(Target, Value)>,
}

impl RecordModifier {
    pub fn build(config: RecordModifierConfig) -> Result<RecordModifier, Vec<FieldError>> {
        let mut errors = Vec::new();
        let mut records = Vec::with_capacity(config.records.0.len());
        for (key, value) in config.records.iter() {
            match ConfigPath::parse(key) {
                Ok(path) => {
                    let target = if path.is_nested() {
                        Target::Nested(path)
                    } else {
                        Target::Top(path.last().clone())
                    };
                    records.push((target, Value::Str(Bytes::copy_from_slice(value.as_bytes()))));
                }
                Err(message) => errors.push(FieldError::new("records", message)),
            }
        }
        if !config.remove_keys.is_empty() && !config.allowlist_keys.is_empty() {
            errors.push(FieldError::new(
                "allowlist_keys",
                "`remove_keys` and `allowlist_keys` exclude each other; keep one of them",
            ));
        }
        let mut check_keys = |option: &str, keys: &[String]| {
            for k in keys.iter().filter(|k| k.is_empty()) {
                errors.push(FieldError::new(option, format!("`{k}`: the key is empty")));
            }
        };
        check_keys("remove_keys", &config.remove_keys);
        check_keys("allowlist_keys", &config.allowlist_keys);
        for k in config.allowlist_keys.iter().filter(|k| k.contains("->")) {
            errors.push(FieldError::new(
                "allowlist_keys",
                format!("`{k}`: only top-level keys can be allowlisted"),
            ));
        }

        let removal = if !config.allowlist_keys.is_empty() {
            Removal::Allow(
                config
                    .allowlist_keys
                    .iter()
                    .map(|k| KeyPattern::parse(k))
                    .collect(),
            )
        } else if !config.remove_keys.is_empty() {
            let mut top = Vec::new();
            let mut nested = Vec::new();
            for k in config.remove_keys.iter().filter(|k| !k.is_empty()) {
                if k.contains("->") {
                    match ConfigPath::parse(k) {
                        Ok(p) => nested.push(p),
                        Err(message) => errors.push(FieldError::new("remove_keys", message)),
                    }
                } else {
                    top.push(KeyPattern::parse(k));
                }
            }
            Removal::Remove { top, nested }
        } else {
            Removal::None
        };
        if records.is_empty() && matches!(removal, Removal::None) && errors.is_empty() {
            errors.push(FieldError::new(
                "records",
                "record_modifier does nothing: set `records`, `remove_keys` or `allowlist_keys`",
            ));
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        Ok(RecordModifier { removal, records })
    }

    /// Modifies one record; false when it was emptied and must be dropped.
    fn modify(&self, record: &mut Map) -> bool {
        let was_empty = record.is_empty();
        match &self.removal {
            Removal::None => {}
            Removal::Remove { top, nested } => {
                if !top.is_empty() {
                    record.retain(|k, _| !top.iter().any(|p| p.matches(k)));
                }
                for path in nested {
                    record.remove_path(path.key_path());
                }
            }
            Removal::Allow(keep) => record.retain(|k, _| keep.iter().any(|p| p.matches(k))),
        }
        if record.is_empty() && !was_empty && self.records.is_empty() {
            return false;
        }
        for (target, value) in &self.records {
            match target {
                Target::Top(key) => record.insert(key.clone(), value.clone()),
                Target::Nested(path) => record.insert_path(path.key_path(), value.clone()),
            }
        }
        true
    }
}

impl Transform for RecordModifier {
    fn apply(&mut self, events: &mut Vec<Event>) {
        events.retain_mut(|e| self.modify(&mut e.record));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::EventTime;

    fn modifier(src: &str) -> RecordModifier {
        RecordModifier::build(toml::from_str(src).unwrap()).unwrap()
    }

    fn rec(pairs: &[(&str, &str)]) -> Map {
        pairs
            .iter()
            .map(|(k, v)| (Bytes::copy_from_slice(k.as_bytes()), Value::from(*v)))
            .collect()
    }

    fn keys(m: &Map) -> Vec<String> {
        m.iter()
            .map(|(k, _)| String::from_utf8_lossy(k).into_owned())
            .collect()
    }

    fn run(m: &mut RecordModifier, record: Map) -> Vec<Event> {
        let mut events = vec![Event::new("t".into(), EventTime::default(), record)];
        m.apply(&mut events);
        events
    }

    #[test]
    fn firelens_metadata_is_appended_in_written_order() {
        let mut m = modifier(
            "records = { ecs_cluster = 'prod', ecs_task_arn = 'arn:aws:ecs:us-east-1:123456789012:task/prod/0123', ecs_task_definition = 'web:7' }",
        );
        let out = run(&mut m, rec(&[("log", "hi"), ("source", "stdout")]));
        assert_eq!(
            keys(&out[0].record),
            [
                "log",
                "source",
                "ecs_cluster",
                "ecs_task_arn",
                "ecs_task_definition"
            ]
        );
        assert_eq!(
            out[0].record.get(b"ecs_task_definition"),
            Some(&Value::from("web:7"))
        );
    }

    #[test]
    fn existing_key_takes_the_added_value() {
        let mut m = modifier("records = ['ecs_cluster prod']");
        let out = run(&mut m, rec(&[("ecs_cluster", "old"), ("log", "x")]));
        assert_eq!(keys(&out[0].record), ["ecs_cluster", "log"]);
        assert_eq!(
            out[0].record.get(b"ecs_cluster"),
            Some(&Value::from("prod"))
        );
    }

    #[test]
    fn nested_records_create_maps() {
        let mut m = modifier("records = { 'aws->region' = 'us-east-1', 'aws->account' = '1234' }");
        let out = run(&mut m, rec(&[("log", "x")]));
        let aws = out[0].record.get(b"aws").and_then(Value::as_map).unwrap();
        assert_eq!(keys(aws), ["region", "account"]);
    }

    #[test]
    fn remove_keys_ignores_case_and_supports_prefix_and_nested() {
        let mut m = modifier("remove_keys = ['Container_ID', 'partial_*', 'k->secret']");
        let mut record = rec(&[
            ("container_id", "abc"),
            ("partial_id", "1"),
            ("partial_last", "true"),
            ("partial", "kept: no `_` after the prefix"),
            ("log", "x"),
        ]);
        record.insert("k", Value::Map(rec(&[("secret", "s"), ("public", "p")])));
        let out = run(&mut m, record);
        assert_eq!(keys(&out[0].record), ["partial", "log", "k"]);
        let k = out[0].record.get(b"k").and_then(Value::as_map).unwrap();
        assert_eq!(keys(k), ["public"]);
    }

    #[test]
    fn allowlist_keeps_matching_keys_and_added_records() {
        let mut m = modifier("allowlist_keys = ['log', 'ECS_*']\nrecords = { added = 'yes' }");
        let out = run(
            &mut m,
            rec(&[
                ("log", "x"),
                ("ecs_cluster", "c"),
                ("source", "stdout"),
                ("Log2", "y"),
            ]),
        );
        assert_eq!(keys(&out[0].record), ["log", "ecs_cluster", "added"]);
    }

    #[test]
    fn whitelist_alias_is_accepted() {
        let mut m = modifier("whitelist_keys = ['log']");
        let out = run(&mut m, rec(&[("log", "x"), ("source", "stdout")]));
        assert_eq!(keys(&out[0].record), ["log"]);
    }

    #[test]
    fn emptied_records_are_dropped() {
        let mut m = modifier("allowlist_keys = ['log']");
        assert!(run(&mut m, rec(&[("source", "stdout")])).is_empty());
        let mut m = modifier("allowlist_keys = ['log']\nrecords = { a = 'b' }");
        assert_eq!(run(&mut m, rec(&[("source", "stdout")])).len(), 1);
    }

    #[test]
    fn config_errors() {
        let err = |src: &str| RecordModifier::build(toml::from_str(src).unwrap()).unwrap_err();
        assert_eq!(
            err("remove_keys = ['a']\nallowlist_keys = ['b']")[0].key,
            "allowlist_keys"
        );
        assert_eq!(err("")[0].key, "records");
        assert_eq!(err("records = { 'a->' = 'x' }")[0].key, "records");
        assert_eq!(err("allowlist_keys = ['a->b']")[0].key, "allowlist_keys");
        assert_eq!(err("remove_keys = ['']")[0].key, "remove_keys");
        let unknown = toml::from_str::<RecordModifierConfig>("remove_key = ['a']")
            .unwrap_err()
            .to_string();
        assert!(unknown.contains("remove_key"), "{unknown}");
    }
}
