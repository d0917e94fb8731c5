//! `grep`: keep or drop records by matching a value against a regular expression.
//!
//! Follows Fluent Bit's grep filter (what FireLens generates for `include-pattern` /
//! `exclude-pattern`): rules are `KEY REGEX`, the key may be nested (`a->b` or `$a['b']`), the
//! regex is Fluent Bit's dialect ([`super::fluent_regex`]) and matches anywhere in the value.
//! A rule matches only a string (or binary) value: a missing key, or a number, map or other
//! non-string, never matches (so a `regex` rule drops the record and an `exclude` rule keeps it).
//!
//! `logical_op`:
//! - `legacy` (default): keep a record when every `regex` rule matches and no `exclude` rule
//!   does. This is what Fluent Bit documents for legacy mode. Fluent Bit's code differs when a
//!   filter has several rules: it stops at the first `regex` rule that matches and keeps the
//!   record without checking the rest (fluent-bit issues #3259, #7035). We implement the
//!   documented meaning; with one rule per filter, as FireLens writes them, both agree.
//! - `and` / `or`: combine the rules, all of one kind: keep when all (any) `regex` rules match,
//!   or drop when all (any) `exclude` rules match. Setting both kinds is an error, as in Fluent
//!   Bit.

use std::fmt;

use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;

use super::fluent_regex;
use super::path::ConfigPath;
use super::Transform;
use crate::config::field::FieldError;
use crate::event::{Event, Map, Value};

/// Options of a `grep` transform.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GrepConfig {
    /// Keep records whose KEY matches: `"KEY REGEX"` strings (Fluent Bit's `Regex` lines) or
    /// `{ key = "...", pattern = "..." }` tables. One rule may be given without the list.
    #[serde(default)]
    pub regex: Rules,
    /// Drop records whose KEY matches; same forms as `regex` (Fluent Bit's `Exclude`).
    #[serde(default)]
    pub exclude: Rules,
    /// How rules combine: `legacy` (default), `and` or `or` (any case).
    #[serde(default)]
    pub logical_op: LogicalOp,
}

/// How several rules combine.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum LogicalOp {
    /// All `regex` rules must match and no `exclude` rule may match.
    #[default]
    Legacy,
    And,
    Or,
}

impl<'de> Deserialize<'de> for LogicalOp {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        match s.to_ascii_lowercase().as_str() {
            "legacy" => Ok(LogicalOp::Legacy),
            "and" => Ok(LogicalOp::And),
            "or" => Ok(LogicalOp::Or),
            _ => Err(de::Error::custom(format!(
                "unknown logical_op `{s}`; use \"legacy\", \"and\" or \"or\""
            ))),
        }
    }
}

/// One rule as written: a `"KEY REGEX"` line or a `{ key, pattern }` table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RuleSpec {
    Line(String),
    Table { key: String, pattern: String },
}

impl RuleSpec {
    /// The key and pattern. A line splits at its first run of whitespace, as Fluent Bit does.
    fn parts(&self) -> Result<(&str, &str), String> {
        match self {
            RuleSpec::Table { key, pattern } => Ok((key, pattern)),
            RuleSpec::Line(line) => {
                let line = line.trim();
                line.split_once(char::is_whitespace)
                    .map(|(k, p)| (k, p.trim_start()))
                    .filter(|(_, p)| !p.is_empty())
                    .ok_or_else(|| {
                        format!("`{line}` is not \"KEY REGEX\": a key, a space, then the pattern")
                    })
            }
        }
    }
}

impl fmt::Display for RuleSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RuleSpec::Line(line) => write!(f, "`{line}`"),
            RuleSpec::Table { key, pattern } => {
                write!(f, "{{ key = {key:?}, pattern = {pattern:?} }}")
            }
        }
    }
}

/// A list of rules; a single rule may be written without the brackets.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Rules(pub Vec<RuleSpec>);

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleTable {
    key: String,
    pattern: String,
}

impl<'de> Deserialize<'de> for RuleSpec {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(RulesVisitor).and_then(|mut rules| {
            if rules.0.len() == 1 {
                Ok(rules.0.remove(0))
            } else {
                Err(de::Error::custom("expected one rule, found a list"))
            }
        })
    }
}

impl<'de> Deserialize<'de> for Rules {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(RulesVisitor)
    }
}

struct RulesVisitor;

impl<'de> Visitor<'de> for RulesVisitor {
    type Value = Rules;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("\"KEY REGEX\", { key = \"...\", pattern = \"...\" }, or a list of those")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Rules, E> {
        Ok(Rules(vec![RuleSpec::Line(v.to_string())]))
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Rules, A::Error> {
        let t = RuleTable::deserialize(de::value::MapAccessDeserializer::new(map))?;
        Ok(Rules(vec![RuleSpec::Table {
            key: t.key,
            pattern: t.pattern,
        }]))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Rules, A::Error> {
        let mut rules = Vec::with_capacity(seq.size_hint().unwrap_or(0));
        while let Some(rule) = seq.next_element::<RuleSpec>()? {
            rules.push(rule);
        }
        Ok(Rules(rules))
    }
}

/// A compiled rule.
#[derive(Debug)]
struct Rule {
    path: ConfigPath,
    regex: regex::bytes::Regex,
}

impl Rule {
    fn matches(&self, record: &Map) -> bool {
        match record.get_path(self.path.key_path()) {
            Some(Value::Str(b)) | Some(Value::Bin(b)) => self.regex.is_match(b),
            _ => false,
        }
    }
}

/// The `grep` transform.
#[derive(Debug)]
pub struct Grep {
    regex: Vec<Rule>,
    exclude: Vec<Rule>,
    op: LogicalOp,
}

impl Grep {
    pub fn build(config: GrepConfig) -> Result<Grep, Vec<FieldError>> {
        let mut errors = Vec::new();
        let regex = compile_rules("regex", &config.regex, &mut errors);
        let exclude = compile_rules("exclude", &config.exclude, &mut errors);
        if config.regex.0.is_empty() && config.exclude.0.is_empty() {
            errors.push(FieldError::new(
                "regex",
                "grep has no rules: set `regex` (records to keep) or `exclude` (records to drop)",
            ));
        }
        if config.logical_op != LogicalOp::Legacy
            && !config.regex.0.is_empty()
            && !config.exclude.0.is_empty()
        {
            errors.push(FieldError::new(
                "logical_op",
                "with `and` / `or`, use either `regex` or `exclude` rules, not both \
                 (or use two grep transforms)",
            ));
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        Ok(Grep {
            regex,
            exclude,
            op: config.logical_op,
        })
    }

    /// Whether a record passes the filter.
    pub fn keeps(&self, record: &Map) -> bool {
        match self.op {
            LogicalOp::Legacy => {
                self.regex.iter().all(|r| r.matches(record))
                    && !self.exclude.iter().any(|r| r.matches(record))
            }
            LogicalOp::And if !self.regex.is_empty() => {
                self.regex.iter().all(|r| r.matches(record))
            }
            LogicalOp::And => !self.exclude.iter().all(|r| r.matches(record)),
            LogicalOp::Or if !self.regex.is_empty() => self.regex.iter().any(|r| r.matches(record)),
            LogicalOp::Or => !self.exclude.iter().any(|r| r.matches(record)),
        }
    }
}

fn compile_rules(option: &str, specs: &Rules, errors: &mut Vec<FieldError>) -> Vec<Rule> {
    let mut rules = Vec::with_capacity(specs.0.len());
    for spec in &specs.0 {
        let compiled = spec.parts().and_then(|(key, pattern)| {
            let path = ConfigPath::parse(key)?;
            let regex = fluent_regex::compile_bytes(pattern)?;
            Ok(Rule { path, regex })
        });
        match compiled {
            Ok(rule) => rules.push(rule),
            Err(message) => errors.push(FieldError::new(option, format!("rule {spec}: {message}"))),
        }
    }
    rules
}

impl Transform for Grep {
    fn apply(&mut self, events: &mut Vec<Event>) {
        events.retain(|e| self.keeps(&e.record));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::EventTime;
    use bytes::Bytes;

    fn grep(src: &str) -> Grep {
        let config: GrepConfig = toml::from_str(src).unwrap();
        Grep::build(config).unwrap()
    }

    fn record(pairs: &[(&str, &str)]) -> Map {
        pairs
            .iter()
            .map(|(k, v)| (Bytes::copy_from_slice(k.as_bytes()), Value::from(*v)))
            .collect()
    }

    /// `{"key":"match","hoge":"aaa"}` (single-rule cases) and
    /// `{"key":"match","cc":"dd","aa":"bb"}` (multi-rule cases): the records of Fluent Bit's
    /// own grep unit tests (tests/internal/grep.c), with their expected outcomes.
    #[test]
    fn fluent_bit_internal_test_cases() {
        let one = record(&[("key", "match"), ("hoge", "aaa")]);
        let three = record(&[("key", "match"), ("cc", "dd"), ("aa", "bb")]);
        let cases: &[(&str, &Map, bool)] = &[
            ("regex = 'key match'", &one, true),
            ("regex = 'key unmatch'", &one, false),
            ("exclude = 'key match'", &one, false),
            ("exclude = 'key unmatch'", &one, true),
            ("logical_op = 'or'\nregex = 'key match'", &one, true),
            ("logical_op = 'or'\nregex = 'key unmatch'", &one, false),
            ("logical_op = 'or'\nexclude = 'key match'", &one, false),
            ("logical_op = 'or'\nexclude = 'key unmatch'", &one, true),
            ("logical_op = 'AND'\nregex = 'key match'", &one, true),
            ("logical_op = 'AND'\nregex = 'key unmatch'", &one, false),
            ("logical_op = 'AND'\nexclude = 'key match'", &one, false),
            ("logical_op = 'AND'\nexclude = 'key unmatch'", &one, true),
            (
                "logical_op = 'OR'\nregex = ['aa bb', 'cc dd', 'key match']",
                &one,
                true,
            ),
            (
                "logical_op = 'OR'\nregex = ['aa bb', 'cc dd', 'key unmatch']",
                &one,
                false,
            ),
            (
                "logical_op = 'OR'\nexclude = ['aa bb', 'cc dd', 'key match']",
                &one,
                false,
            ),
            (
                "logical_op = 'OR'\nexclude = ['aa bb', 'cc dd', 'key unmatch']",
                &one,
                true,
            ),
            (
                "logical_op = 'and'\nregex = ['aa bb', 'cc dd', 'key match']",
                &three,
                true,
            ),
            (
                "logical_op = 'and'\nregex = ['aa bb', 'cc dd', 'key unmatch']",
                &three,
                false,
            ),
            (
                "logical_op = 'and'\nexclude = ['aa bb', 'cc dd', 'key match']",
                &three,
                false,
            ),
            (
                "logical_op = 'and'\nexclude = ['aa bb', 'cc dd', 'key unmatch']",
                &three,
                true,
            ),
        ];
        for (src, rec, keep) in cases {
            assert_eq!(grep(src).keeps(rec), *keep, "{src}");
        }
    }

    #[test]
    fn and_or_differ_when_rules_disagree() {
        let rec = record(&[("a", "x"), ("b", "y")]);
        let rules = "['a x', 'b nope']";
        assert!(!grep(&format!("logical_op='and'\nregex={rules}")).keeps(&rec));
        assert!(grep(&format!("logical_op='or'\nregex={rules}")).keeps(&rec));
        // Exclude with AND drops only when every rule matches.
        assert!(grep(&format!("logical_op='and'\nexclude={rules}")).keeps(&rec));
        assert!(!grep(&format!("logical_op='or'\nexclude={rules}")).keeps(&rec));
    }

    #[test]
    fn legacy_ands_regex_and_ors_exclude() {
        let g =
            grep("regex = ['log ERROR', 'source stderr']\nexclude = ['log healthz', 'log ping']");
        assert!(g.keeps(&record(&[("log", "ERROR db"), ("source", "stderr")])));
        assert!(!g.keeps(&record(&[("log", "ERROR db"), ("source", "stdout")])));
        assert!(!g.keeps(&record(&[("log", "ERROR healthz"), ("source", "stderr")])));
        assert!(!g.keeps(&record(&[("log", "ERROR ping"), ("source", "stderr")])));
    }

    #[test]
    fn missing_key_fails_regex_and_passes_exclude() {
        let rec = record(&[("message", "ERROR")]);
        assert!(!grep("regex = 'log ERROR'").keeps(&rec));
        assert!(grep("exclude = 'log ERROR'").keeps(&rec));
        assert!(!grep("logical_op='or'\nregex = ['log ERROR', 'other x']").keeps(&rec));
        assert!(grep("logical_op='and'\nexclude = ['log ERROR', 'message ERROR']").keeps(&rec));
    }

    #[test]
    fn non_string_values_never_match() {
        let mut rec = Map::new();
        rec.insert("status", Value::Int(500));
        rec.insert("nested", Value::Map(record(&[("x", "500")])));
        assert!(!grep("regex = 'status 500'").keeps(&rec));
        assert!(grep("exclude = 'status 500'").keeps(&rec));
        assert!(!grep("regex = 'nested 500'").keeps(&rec));
    }

    #[test]
    fn nested_keys_both_spellings() {
        let mut rec = Map::new();
        rec.insert(
            "kubernetes",
            Value::Map(record(&[("namespace_name", "prod"), ("pod_name", "web-1")])),
        );
        assert!(grep("regex = 'kubernetes->namespace_name ^prod$'").keeps(&rec));
        assert!(grep("regex = \"$kubernetes['pod_name'] ^web-\"").keeps(&rec));
        assert!(!grep("regex = 'kubernetes->namespace_name ^dev$'").keeps(&rec));
        assert!(!grep("regex = 'kubernetes->missing ^prod$'").keeps(&rec));
    }

    #[test]
    fn structured_rules_and_firelens_patterns() {
        let g = grep("regex = [{ key = 'log', pattern = 'ERROR|WARN' }]");
        assert!(g.keeps(&record(&[("log", "WARN low disk")])));
        assert!(!g.keeps(&record(&[("log", "INFO ok")])));
        // A pattern containing spaces stays whole (the line splits at the first space only).
        let g = grep("regex = 'log payment API timeout'");
        assert!(g.keeps(&record(&[(
            "log",
            "level=error msg=\"payment API timeout\""
        )])));
    }

    #[test]
    fn matches_values_with_invalid_utf8() {
        let mut rec = Map::new();
        rec.insert("log", Value::Str(Bytes::from_static(b"abc \xe2 ERROR")));
        assert!(grep("regex = 'log ERROR'").keeps(&rec));
    }

    #[test]
    fn apply_drops_in_place_and_keeps_order() {
        let mut g = grep("exclude = 'log DEBUG'");
        let tag: crate::event::Tag = "app".into();
        let mut events: Vec<Event> = ["a", "DEBUG b", "c", "DEBUG d", "e"]
            .iter()
            .map(|l| Event::new(tag.clone(), EventTime::default(), record(&[("log", l)])))
            .collect();
        g.apply(&mut events);
        let logs: Vec<_> = events
            .iter()
            .map(|e| e.record.get(b"log").unwrap().to_text())
            .collect();
        assert_eq!(logs, ["a", "c", "e"]);
    }

    #[test]
    fn config_errors_name_the_option() {
        let build = |src: &str| Grep::build(toml::from_str(src).unwrap()).unwrap_err();
        let errs = build("regex = ['log (', 'nopattern']\nexclude = '$a[0] x'");
        let keys: Vec<_> = errs.iter().map(|e| e.key.as_str()).collect();
        assert_eq!(keys, ["regex", "regex", "exclude"]);
        assert!(errs[0].message.contains("log ("), "{}", errs[0].message);
        assert_eq!(build("")[0].key, "regex");
        assert_eq!(
            build("logical_op='or'\nregex='a b'\nexclude='c d'")[0].key,
            "logical_op"
        );
        let unknown = toml::from_str::<GrepConfig>("regex = [{ key = 'a', patern = 'b' }]")
            .unwrap_err()
            .to_string();
        assert!(unknown.contains("patern"), "{unknown}");
    }
}
