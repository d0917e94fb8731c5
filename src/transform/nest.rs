//! `nest`: move top-level keys into a map, or lift a map's keys to the top, like Fluent Bit's
//! `nest` filter.
//!
//! - `operation = "nest"`: the keys matching a `wildcard` (exact names, or a prefix with a
//!   trailing `*`) move, in record order, into a new map under `nest_under`, appended at the end
//!   of the record (replacing a key of that name). A record with no matching key is unchanged.
//! - `operation = "lift"`: the map under `nested_under` is removed and its keys appended at the
//!   top level (each replacing a top-level key of the same name). A value that is not a map is
//!   left alone.
//!
//! `add_prefix` / `remove_prefix` (exclusive, as in Fluent Bit) rename the keys that move:
//! prefix added, or removed when the key starts with it. Keys are compared case-sensitively.

use bytes::Bytes;
use serde::Deserialize;

use super::pairs::StringOrList;
use super::Transform;
use crate::config::field::FieldError;
use crate::event::{Event, Map, Value};

/// What `nest` does.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Operation {
    Nest,
    Lift,
}

/// Options of a `nest` transform.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NestConfig {
    /// `nest` or `lift`.
    pub operation: Operation,
    /// `nest`: the keys to move: names, or prefixes ending in `*`.
    #[serde(default)]
    pub wildcard: StringOrList,
    /// `nest`: the key of the new map.
    #[serde(default)]
    pub nest_under: Option<String>,
    /// `lift`: the key of the map whose keys go to the top level.
    #[serde(default)]
    pub nested_under: Option<String>,
    /// Prefix added to every key that moves.
    #[serde(default)]
    pub add_prefix: Option<String>,
    /// Prefix removed from every key that moves and starts with it.
    #[serde(default)]
    pub remove_prefix: Option<String>,
}

#[derive(Debug)]
struct Wildcard {
    text: Bytes,
    prefix: bool,
}

impl Wildcard {
    fn matches(&self, key: &[u8]) -> bool {
        if self.prefix {
            key.starts_with(&self.text)
        } else {
            key == self.text.as_ref()
        }
    }
}

#[derive(Debug)]
enum Prefix {
    None,
    Add(Bytes),
    Remove(Bytes),
}

impl Prefix {
    fn apply(&self, key: &Bytes) -> Bytes {
        match self {
            Prefix::None => key.clone(),
            Prefix::Add(p) => {
                let mut k = Vec::with_capacity(p.len() + key.len());
                k.extend_from_slice(p);
                k.extend_from_slice(key);
                Bytes::from(k)
            }
            Prefix::Remove(p) => match key.strip_prefix(p.as_ref()) {
                Some(_) => key.slice(p.len()..),
                None => key.clone(),
            },
        }
    }
}

#[derive(Debug)]
enum Action {
    Nest {
        wildcards: Vec<Wildcard>,
        under: Bytes,
    },
    Lift {
        from: Bytes,
    },
}

/// The `nest` transform.
#[derive(Debug)]
pub struct Nest {
    action: Action,
    prefix: Prefix,
}

fn bytes(s: &str) -> Bytes {
    Bytes::copy_from_slice(s.as_bytes())
}

impl Nest {
    pub fn build(config: NestConfig) -> Result<Nest, Vec<FieldError>> {
        let mut errors = Vec::new();
        let mut misplaced = |key: &str, present: bool, needs: &str| {
            if present {
                errors.push(FieldError::new(
                    key,
                    format!("only applies to `operation = \"{needs}\"`; remove it"),
                ));
            }
        };
        let action = match config.operation {
            Operation::Nest => {
                misplaced("nested_under", config.nested_under.is_some(), "lift");
                let under = config.nest_under.as_deref().unwrap_or_default();
                if under.is_empty() {
                    errors.push(FieldError::new(
                        "nest_under",
                        "is required with `operation = \"nest\"`: the key of the new map",
                    ));
                }
                if config.wildcard.is_empty() {
                    errors.push(FieldError::new(
                        "wildcard",
                        "is required with `operation = \"nest\"`: the keys to move (`kube_*`)",
                    ));
                }
                for w in config.wildcard.iter().filter(|w| w.is_empty()) {
                    errors.push(FieldError::new("wildcard", format!("`{w}` is empty")));
                }
                let wildcards = config
                    .wildcard
                    .iter()
                    .map(|w| match w.strip_suffix('*') {
                        Some(p) => Wildcard {
                            text: bytes(p),
                            prefix: true,
                        },
                        None => Wildcard {
                            text: bytes(w),
                            prefix: false,
                        },
                    })
                    .collect();
                Action::Nest {
                    wildcards,
                    under: bytes(under),
                }
            }
            Operation::Lift => {
                misplaced("nest_under", config.nest_under.is_some(), "nest");
                misplaced("wildcard", !config.wildcard.is_empty(), "nest");
                let from = config.nested_under.as_deref().unwrap_or_default();
                if from.is_empty() {
                    errors.push(FieldError::new(
                        "nested_under",
                        "is required with `operation = \"lift\"`: the key of the map to lift",
                    ));
                }
                Action::Lift { from: bytes(from) }
            }
        };
        let prefix = match (&config.add_prefix, &config.remove_prefix) {
            (Some(_), Some(_)) => {
                errors.push(FieldError::new(
                    "remove_prefix",
                    "`add_prefix` and `remove_prefix` exclude each other (as in Fluent Bit); \
                     keep one",
                ));
                Prefix::None
            }
            (Some(p), None) => Prefix::Add(bytes(p)),
            (None, Some(p)) => Prefix::Remove(bytes(p)),
            (None, None) => Prefix::None,
        };
        if !errors.is_empty() {
            return Err(errors);
        }
        Ok(Nest { action, prefix })
    }

    fn apply_one(&self, record: &mut Map) {
        match &self.action {
            Action::Nest { wildcards, under } => {
                if !record
                    .iter()
                    .any(|(k, _)| wildcards.iter().any(|w| w.matches(k)))
                {
                    return;
                }
                let mut nested = Map::new();
                record.retain(|k, v| {
                    if wildcards.iter().any(|w| w.matches(k)) {
                        nested.push(self.prefix.apply(&Bytes::copy_from_slice(k)), v.clone());
                        false
                    } else {
                        true
                    }
                });
                record.remove(under);
                record.push(under.clone(), Value::Map(nested));
            }
            Action::Lift { from } => {
                if !matches!(record.get(from), Some(Value::Map(_))) {
                    return;
                }
                let Some(Value::Map(inner)) = record.remove(from) else {
                    return;
                };
                for (k, v) in inner.iter() {
                    let key = self.prefix.apply(k);
                    record.remove(&key);
                    record.push(key, v.clone());
                }
            }
        }
    }
}

impl Transform for Nest {
    fn apply(&mut self, events: &mut Vec<Event>) {
        for event in events.iter_mut() {
            self.apply_one(&mut event.record);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::EventTime;

    fn nest(src: &str) -> Nest {
        Nest::build(toml::from_str(src).unwrap()).unwrap()
    }

    fn run(n: &mut Nest, json: &str) -> String {
        let v: serde_json::Value = serde_json::from_str(json).unwrap();
        let Value::Map(record) = Value::from(v) else {
            panic!("not an object")
        };
        let mut events = vec![Event::new("t".into(), EventTime::default(), record)];
        n.apply(&mut events);
        Value::Map(events.remove(0).record).to_text()
    }

    #[test]
    fn nest_moves_matching_keys_in_order_under_a_new_map() {
        let mut n = nest(
            "operation = 'nest'\nwildcard = ['k_*', 'b']\nnest_under = 'inner'\nadd_prefix = 'p.'",
        );
        assert_eq!(
            run(&mut n, r#"{"a":"A","k_1":1,"b":"xb","k_2":{"x":1},"z":1}"#),
            r#"{"a":"A","z":1,"inner":{"p.k_1":1,"p.b":"xb","p.k_2":{"x":1}}}"#
        );
        assert_eq!(run(&mut n, r#"{"a":"A","bb":1}"#), r#"{"a":"A","bb":1}"#);
        assert_eq!(
            run(&mut n, r#"{"inner":"old","k_3":3}"#),
            r#"{"inner":{"p.k_3":3}}"#
        );
    }

    #[test]
    fn lift_appends_the_inner_keys() {
        let mut n = nest("operation = 'lift'\nnested_under = 'inner'\nremove_prefix = 'x_'");
        assert_eq!(
            run(&mut n, r#"{"a":"A","inner":{"x_1":1,"y":{"q":2}},"z":1}"#),
            r#"{"a":"A","z":1,"1":1,"y":{"q":2}}"#
        );
        assert_eq!(run(&mut n, r#"{"inner":"s"}"#), r#"{"inner":"s"}"#);
        assert_eq!(run(&mut n, r#"{"a":1,"inner":{}}"#), r#"{"a":1}"#);
        assert_eq!(run(&mut n, r#"{"y":0,"inner":{"y":1}}"#), r#"{"y":1}"#);
    }

    #[test]
    fn config_errors_name_the_key() {
        let err = |src: &str| Nest::build(toml::from_str(src).unwrap()).unwrap_err();
        assert_eq!(
            err("operation = 'nest'\nwildcard = 'a'")[0].key,
            "nest_under"
        );
        assert_eq!(
            err("operation = 'nest'\nnest_under = 'a'")[0].key,
            "wildcard"
        );
        assert_eq!(err("operation = 'lift'")[0].key, "nested_under");
        assert_eq!(
            err("operation = 'lift'\nnested_under = 'a'\nwildcard = 'b'")[0].key,
            "wildcard"
        );
        assert_eq!(
            err("operation = 'lift'\nnested_under = 'a'\nadd_prefix = 'x'\nremove_prefix = 'y'")[0]
                .key,
            "remove_prefix"
        );
        assert!(toml::from_str::<NestConfig>("operation = 'flatten'").is_err());
    }
}
