//! `modify`: rules that set, add, remove, rename and copy top-level keys, gated by conditions,
//! like Fluent Bit's `modify` filter.
//!
//! Semantics (checked against Fluent Bit 5.1's binary, see tests/fluent_bit_transforms.rs):
//! - Conditions are ANDed and evaluated once, on the record as it came in; when one fails no
//!   rule runs.
//! - Rules run one after the other in written order, each on the result of the previous one.
//!   In TOML the rule options apply in the order the options are written, each table or list
//!   in its own order; `rules` (Fluent Bit lines, which `--fluent-bit-config` writes) may
//!   interleave kinds freely.
//! - `set`: removes the key wherever it is and appends it with the value. `add`: appends when
//!   the key is absent. `remove`: removes it. `remove_wildcard`: removes every key starting
//!   with the text (compared literally: Fluent Bit 5.1 does not treat `*` specially here).
//! - `rename`: renames in place when the source exists and the target does not; `hard_rename`
//!   removes an existing target first. `copy`: inserts the copy right after the source (only
//!   when there is exactly one source and no target); `hard_copy` replaces an existing target.
//! - Keys and values compare exactly (case-sensitive); values are set as strings.
//! - Conditions: `key_exists`, `key_does_not_exist`, `key_value_equals` (a string value equal to
//!   the text), `key_value_matches` (a string value the regex, Fluent Bit's syntax, matches
//!   somewhere).

mod line;

use std::fmt;

use bytes::Bytes;
use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::Deserialize;

use super::fluent_regex;
use super::pairs::{OrderedPairs, StringOrList};
use super::Transform;
use crate::config::field::FieldError;
use crate::event::{Event, Map, Value};

/// The option names, as written in TOML.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(field_identifier, rename_all = "snake_case")]
enum Field {
    Set,
    Add,
    Remove,
    RemoveWildcard,
    Rename,
    HardRename,
    Copy,
    HardCopy,
    Rules,
    KeyExists,
    KeyDoesNotExist,
    KeyValueEquals,
    KeyValueMatches,
    Condition,
}

impl Field {
    fn name(self) -> &'static str {
        match self {
            Field::Set => "set",
            Field::Add => "add",
            Field::Remove => "remove",
            Field::RemoveWildcard => "remove_wildcard",
            Field::Rename => "rename",
            Field::HardRename => "hard_rename",
            Field::Copy => "copy",
            Field::HardCopy => "hard_copy",
            Field::Rules => "rules",
            Field::KeyExists => "key_exists",
            Field::KeyDoesNotExist => "key_does_not_exist",
            Field::KeyValueEquals => "key_value_equals",
            Field::KeyValueMatches => "key_value_matches",
            Field::Condition => "condition",
        }
    }
}

/// One rule or condition as written: the option it came from and its words (`["a", "b"]` for
/// `rename = { a = "b" }`, `["Rename", "a", "b"]` split from a `rules` line).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Written {
    pub option: &'static str,
    /// The operation (`set`, `key_exists`), lower case.
    pub operation: String,
    pub args: Vec<String>,
}

/// Options of a `modify` transform, in written order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ModifyConfig {
    pub rules: Vec<Written>,
    pub conditions: Vec<Written>,
}

impl<'de> Deserialize<'de> for ModifyConfig {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_map(ModifyVisitor)
    }
}

struct ModifyVisitor;

impl<'de> Visitor<'de> for ModifyVisitor {
    type Value = ModifyConfig;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("modify options (set, add, remove, rename, ..., key_exists, ...)")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<ModifyConfig, A::Error> {
        let mut config = ModifyConfig::default();
        while let Some(field) = map.next_key::<Field>()? {
            let option = field.name();
            let written = |args: Vec<String>| Written {
                option,
                operation: option.to_string(),
                args,
            };
            match field {
                Field::Set
                | Field::Add
                | Field::Rename
                | Field::HardRename
                | Field::Copy
                | Field::HardCopy => {
                    let pairs: OrderedPairs = map.next_value()?;
                    config
                        .rules
                        .extend(pairs.0.into_iter().map(|(k, v)| written(vec![k, v])));
                }
                Field::Remove | Field::RemoveWildcard => {
                    let keys: StringOrList = map.next_value()?;
                    config
                        .rules
                        .extend(keys.0.into_iter().map(|k| written(vec![k])));
                }
                Field::KeyExists | Field::KeyDoesNotExist => {
                    let keys: StringOrList = map.next_value()?;
                    config
                        .conditions
                        .extend(keys.0.into_iter().map(|k| written(vec![k])));
                }
                Field::KeyValueEquals | Field::KeyValueMatches => {
                    let pairs: OrderedPairs = map.next_value()?;
                    config
                        .conditions
                        .extend(pairs.0.into_iter().map(|(k, v)| written(vec![k, v])));
                }
                Field::Rules | Field::Condition => {
                    let lines: StringOrList = map.next_value()?;
                    for l in lines.0 {
                        let mut words = line::words(&l).map_err(de::Error::custom)?;
                        if words.is_empty() {
                            return Err(de::Error::custom(format!(
                                "`{option}`: an empty line; write \"OPERATION KEY [VALUE]\""
                            )));
                        }
                        let operation = words.remove(0).to_ascii_lowercase();
                        let w = Written {
                            option,
                            operation,
                            args: words,
                        };
                        if field == Field::Rules {
                            config.rules.push(w);
                        } else {
                            config.conditions.push(w);
                        }
                    }
                }
            }
        }
        Ok(config)
    }
}

#[derive(Debug)]
enum Rule {
    Set(Bytes, Bytes),
    Add(Bytes, Bytes),
    Remove(Bytes),
    RemoveWildcard(Bytes),
    Rename { from: Bytes, to: Bytes, hard: bool },
    Copy { from: Bytes, to: Bytes, hard: bool },
}

#[derive(Debug)]
enum Condition {
    Exists(Bytes),
    Absent(Bytes),
    Equals(Bytes, Bytes),
    Matches(Bytes, regex::bytes::Regex),
}

fn bytes(s: &str) -> Bytes {
    Bytes::copy_from_slice(s.as_bytes())
}

/// The words a rule needs after its operation, per operation.
const RULE_ARITY: &[(&str, usize)] = &[
    ("set", 2),
    ("add", 2),
    ("remove", 1),
    ("remove_wildcard", 1),
    ("rename", 2),
    ("hard_rename", 2),
    ("copy", 2),
    ("hard_copy", 2),
];

const CONDITION_ARITY: &[(&str, usize)] = &[
    ("key_exists", 1),
    ("key_does_not_exist", 1),
    ("key_value_equals", 2),
    ("key_value_matches", 2),
];

fn check_arity(w: &Written, table: &[(&str, usize)], kind: &str) -> Result<(), String> {
    let Some((_, n)) = table.iter().find(|(op, _)| *op == w.operation) else {
        let known: Vec<&str> = table.iter().map(|(op, _)| *op).collect();
        return Err(format!(
            "unknown {kind} `{}`; logferry's modify supports {}",
            w.operation,
            known.join(", ")
        ));
    };
    if w.args.len() != *n {
        let shape = if *n == 1 { "KEY" } else { "KEY VALUE" };
        return Err(format!(
            "`{} {}` needs {shape} ({n} word{}; quote a value holding spaces)",
            w.operation,
            w.args.join(" "),
            if *n == 1 { "" } else { "s" }
        ));
    }
    if w.args.iter().any(String::is_empty) {
        return Err(format!("`{} ...` has an empty key or value", w.operation));
    }
    Ok(())
}

fn compile_rule(w: &Written) -> Result<Rule, String> {
    check_arity(w, RULE_ARITY, "rule")?;
    let a = bytes(&w.args[0]);
    let b = || bytes(&w.args[1]);
    Ok(match w.operation.as_str() {
        "set" => Rule::Set(a, b()),
        "add" => Rule::Add(a, b()),
        "remove" => Rule::Remove(a),
        "remove_wildcard" => Rule::RemoveWildcard(a),
        "rename" | "hard_rename" => Rule::Rename {
            from: a,
            to: b(),
            hard: w.operation == "hard_rename",
        },
        _ => Rule::Copy {
            from: a,
            to: b(),
            hard: w.operation == "hard_copy",
        },
    })
}

fn compile_condition(w: &Written) -> Result<Condition, String> {
    check_arity(w, CONDITION_ARITY, "condition")?;
    let a = bytes(&w.args[0]);
    Ok(match w.operation.as_str() {
        "key_exists" => Condition::Exists(a),
        "key_does_not_exist" => Condition::Absent(a),
        "key_value_equals" => Condition::Equals(a, bytes(&w.args[1])),
        _ => Condition::Matches(a, fluent_regex::compile_bytes(&w.args[1])?),
    })
}

fn count(record: &Map, key: &[u8]) -> usize {
    record.iter().filter(|(k, _)| k.as_ref() == key).count()
}

fn string_values<'a>(record: &'a Map, key: &'a [u8]) -> impl Iterator<Item = &'a [u8]> + 'a {
    record.iter().filter_map(move |(k, v)| match v {
        Value::Str(s) | Value::Bin(s) if k.as_ref() == key => Some(s.as_ref()),
        _ => None,
    })
}

impl Condition {
    fn holds(&self, record: &Map) -> bool {
        match self {
            Condition::Exists(k) => count(record, k) > 0,
            Condition::Absent(k) => count(record, k) == 0,
            Condition::Equals(k, v) => string_values(record, k).any(|s| s == v.as_ref()),
            Condition::Matches(k, re) => record
                .iter()
                .any(|(key, value)| matches!(value, Value::Str(s) if key == k && re.is_match(s))),
        }
    }
}

impl Rule {
    fn apply(&self, record: &mut Map) {
        match self {
            Rule::Set(key, value) => {
                record.retain(|k, _| k != key.as_ref());
                record.push(key.clone(), Value::Str(value.clone()));
            }
            Rule::Add(key, value) => {
                if count(record, key) == 0 {
                    record.push(key.clone(), Value::Str(value.clone()));
                }
            }
            Rule::Remove(key) => {
                if count(record, key) > 0 {
                    record.retain(|k, _| k != key.as_ref());
                }
            }
            Rule::RemoveWildcard(prefix) => {
                if record.iter().any(|(k, _)| k.starts_with(prefix)) {
                    record.retain(|k, _| !k.starts_with(prefix));
                }
            }
            Rule::Rename { from, to, hard } => {
                if from == to || count(record, from) == 0 || (!hard && count(record, to) > 0) {
                    return;
                }
                record.retain(|k, _| k != to.as_ref());
                for (k, _) in record.iter_mut() {
                    if *k == *from {
                        *k = to.clone();
                    }
                }
            }
            Rule::Copy { from, to, hard } => {
                let targets = count(record, to);
                if from == to || count(record, from) != 1 || targets > usize::from(*hard) {
                    return;
                }
                let mut out = Map::with_capacity(record.len() + 1);
                for (k, v) in record.iter() {
                    if k == to {
                        continue;
                    }
                    out.push(k.clone(), v.clone());
                    if k == from {
                        out.push(to.clone(), v.clone());
                    }
                }
                *record = out;
            }
        }
    }
}

/// The `modify` transform.
#[derive(Debug)]
pub struct Modify {
    rules: Vec<Rule>,
    conditions: Vec<Condition>,
}

impl Modify {
    pub fn build(config: ModifyConfig) -> Result<Modify, Vec<FieldError>> {
        let mut errors = Vec::new();
        let mut rules = Vec::with_capacity(config.rules.len());
        for w in &config.rules {
            match compile_rule(w) {
                Ok(r) => rules.push(r),
                Err(m) => errors.push(FieldError::new(w.option, m)),
            }
        }
        let mut conditions = Vec::with_capacity(config.conditions.len());
        for w in &config.conditions {
            match compile_condition(w) {
                Ok(c) => conditions.push(c),
                Err(m) => errors.push(FieldError::new(w.option, m)),
            }
        }
        if config.rules.is_empty() && errors.is_empty() {
            errors.push(FieldError::new(
                "rules",
                "modify has no rule: set `set`, `add`, `remove`, `remove_wildcard`, `rename`, \
                 `hard_rename`, `copy`, `hard_copy` or `rules`",
            ));
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        Ok(Modify { rules, conditions })
    }
}

impl Transform for Modify {
    fn apply(&mut self, events: &mut Vec<Event>) {
        for event in events.iter_mut() {
            if self.conditions.iter().all(|c| c.holds(&event.record)) {
                for rule in &self.rules {
                    rule.apply(&mut event.record);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::EventTime;

    fn modify(src: &str) -> Modify {
        Modify::build(toml::from_str(src).unwrap()).unwrap()
    }

    fn run(m: &mut Modify, json: &str) -> String {
        let v: serde_json::Value = serde_json::from_str(json).unwrap();
        let Value::Map(record) = Value::from(v) else {
            panic!("not an object")
        };
        let mut events = vec![Event::new("t".into(), EventTime::default(), record)];
        m.apply(&mut events);
        Value::Map(events.remove(0).record).to_text()
    }

    /// The rules and conditions of the Fluent Bit run recorded in the module docs' semantics.
    const LINES: &str = r#"
        condition = ["Key_exists a", "Key_value_matches b ^x.*"]
        rules = [
            "Set s1 v1", "Rename a a2", "Add a newa", "Copy b bcopy", "Hard_copy c b",
            "Remove d", "Remove_wildcard k_", "Hard_rename e c", "Set a setover",
            "Add s1 addedlater",
        ]
    "#;

    #[test]
    fn rules_run_in_written_order_with_fluent_bit_placement() {
        let mut m = modify(LINES);
        assert_eq!(
            run(
                &mut m,
                r#"{"a":"A","b":"xb","c":"C","d":"D","k_1":1,"k_2":2,"e":"E","z":1}"#
            ),
            r#"{"a2":"A","bcopy":"xb","b":"C","c":"E","z":1,"s1":"v1","a":"setover"}"#
        );
        assert_eq!(
            run(
                &mut m,
                r#"{"a":"A","b":"xb","s1":"pre","k":"kk","bcopy":"exists"}"#
            ),
            r#"{"a2":"A","b":"xb","k":"kk","bcopy":"exists","s1":"v1","a":"setover"}"#
        );
    }

    #[test]
    fn conditions_gate_every_rule() {
        let mut m = modify(LINES);
        for input in [
            r#"{"a":"A","b":"yb"}"#,
            r#"{"b":"xb"}"#,
            r#"{"a":"A","b":1}"#,
        ] {
            assert_eq!(run(&mut m, input), input);
        }
        let mut m = modify(
            "key_does_not_exist = 'x'\nkey_value_equals = { level = 'warn' }\nset = { seen = 'yes' }",
        );
        assert_eq!(
            run(&mut m, r#"{"level":"warn"}"#),
            r#"{"level":"warn","seen":"yes"}"#
        );
        assert_eq!(
            run(&mut m, r#"{"level":"warn","x":1}"#),
            r#"{"level":"warn","x":1}"#
        );
    }

    #[test]
    fn toml_options_apply_in_the_order_written() {
        let mut m = modify("rename = { a = 'b' }\nset = { b = 'new' }");
        assert_eq!(run(&mut m, r#"{"a":"1","z":2}"#), r#"{"z":2,"b":"new"}"#);
        let mut m = modify("set = { b = 'new' }\nrename = { a = 'b' }");
        assert_eq!(
            run(&mut m, r#"{"a":"1","z":2}"#),
            r#"{"a":"1","z":2,"b":"new"}"#
        );
    }

    #[test]
    fn quoted_values_and_config_errors() {
        let mut m = modify("rules = ['Set q \"two words\"']");
        assert_eq!(run(&mut m, "{}"), r#"{"q":"two words"}"#);
        let err = |src: &str| Modify::build(toml::from_str(src).unwrap()).unwrap_err();
        assert_eq!(err("")[0].key, "rules");
        let e = err("rules = ['Add r spaced out']");
        assert!(e[0].message.contains("quote"), "{}", e[0].message);
        let e = err("rules = ['Move_to_start a']");
        assert!(e[0].message.contains("move_to_start"), "{}", e[0].message);
        assert_eq!(
            err("set = { a = 'b' }\ncondition = ['Key_exists']")[0].key,
            "condition"
        );
        assert_eq!(
            err("set = { a = 'b' }\nkey_value_matches = { a = '(' }")[0].key,
            "key_value_matches"
        );
        let unknown = toml::from_str::<ModifyConfig>("sett = { a = 'b' }")
            .unwrap_err()
            .to_string();
        assert!(unknown.contains("sett"), "{unknown}");
    }
}
