//! `parser`: parse a text field of each record into fields, like Fluent Bit's `parser` filter.
//!
//! The transform carries its parsers inline (`[[transforms.parsers]]`, see [`definition`]), tried
//! in written order on the value of `key_name`; the first that takes the text wins. (Fluent Bit
//! names parsers defined in a parsers file; `--fluent-bit-config` copies those definitions in.)
//!
//! What the record becomes, as in Fluent Bit 5.1:
//! - the parsed fields, then, with `reserve_data`, the record's other fields in their order
//!   (`key_name` itself only with `preserve_key`), or with `preserve_key` alone just `key_name`.
//!   A kept original field replaces a parsed field of the same name, and comes after the
//!   parsed ones.
//! - the record's time becomes the parsed time when the parser read one.
//!
//! A record whose `key_name` is missing or not a string is left alone. One whose text no parser
//! takes is left alone too, and counted: `logferry_errors_total{reason="parser_no_match"}`.
//! Records keep their lazily parsed form until something reads them: this transform reads only
//! records its `match` takes, and a record it leaves alone keeps its msgpack bytes for the sink.

pub mod definition;
pub mod logfmt;
pub mod time;
pub mod types;

use bytes::Bytes;
use prometheus_client::metrics::counter::Counter;
use serde::Deserialize;

use super::Transform;
use crate::config::field::FieldError;
use crate::event::{Event, Map, Value};
use crate::metrics::ComponentMetrics;
use definition::{Parser, ParserDefinition};

/// The metric reason of a text no parser took.
pub const NO_MATCH_REASON: &str = "parser_no_match";

fn default_key_name() -> String {
    "log".to_string()
}

/// Options of a `parser` transform.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ParserConfig {
    /// The field to parse (default `log`).
    #[serde(default = "default_key_name")]
    pub key_name: String,
    /// The parsers, tried in order: `[[transforms.parsers]]` tables.
    #[serde(default)]
    pub parsers: Vec<ParserDefinition>,
    /// Keep the record's other fields next to the parsed ones (default false: only the parsed
    /// fields remain).
    #[serde(default)]
    pub reserve_data: bool,
    /// Keep `key_name` itself next to the parsed fields (default false).
    #[serde(default)]
    pub preserve_key: bool,
}

/// The `parser` transform.
#[derive(Debug)]
pub struct ParserTransform {
    key_name: Bytes,
    parsers: Vec<Parser>,
    reserve_data: bool,
    preserve_key: bool,
    no_match: Counter,
}

impl ParserTransform {
    pub fn build(config: ParserConfig) -> Result<ParserTransform, Vec<FieldError>> {
        let mut errors = Vec::new();
        if config.key_name.is_empty() {
            errors.push(FieldError::new(
                "key_name",
                "is empty; name the field to parse",
            ));
        }
        if config.parsers.is_empty() {
            errors.push(FieldError::new(
                "parsers",
                "no parser: add a [[transforms.parsers]] table with a `format` (json, regex, \
                 logfmt, docker or cri)",
            ));
        }
        let mut parsers = Vec::with_capacity(config.parsers.len());
        for (i, def) in config.parsers.iter().enumerate() {
            match Parser::new(def) {
                Ok(p) => parsers.push(p),
                Err(message) => errors.push(FieldError::new(
                    "parsers",
                    format!("{}: {message}", def.label(i)),
                )),
            }
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        Ok(ParserTransform {
            key_name: Bytes::copy_from_slice(config.key_name.as_bytes()),
            parsers,
            reserve_data: config.reserve_data,
            preserve_key: config.preserve_key,
            no_match: Counter::default(),
        })
    }

    /// Parses one record in place; false when its text was there but no parser took it.
    fn parse_event(&self, event: &mut Event) -> bool {
        let text = match event.record.get(&self.key_name) {
            Some(Value::Str(b) | Value::Bin(b)) => b.clone(),
            _ => return true,
        };
        let Some(parsed) = self.parsers.iter().find_map(|p| p.parse(&text)) else {
            return false;
        };
        let mut record = parsed.record;
        if self.reserve_data {
            for (key, value) in event.record.iter() {
                if key == &self.key_name && !self.preserve_key {
                    continue;
                }
                keep_original(&mut record, key, value);
            }
        } else if self.preserve_key {
            let original = Value::Str(text);
            keep_original(&mut record, &self.key_name, &original);
        }
        event.record = record;
        if let Some(time) = parsed.time {
            event.time = time;
        }
        true
    }
}

/// Appends an original field after the parsed ones, replacing a parsed field of that name.
fn keep_original(record: &mut Map, key: &Bytes, value: &Value) {
    record.remove(key);
    record.push(key.clone(), value.clone());
}

impl Transform for ParserTransform {
    fn apply(&mut self, events: &mut Vec<Event>) {
        let mut unmatched = 0u64;
        for event in events.iter_mut() {
            if !self.parse_event(event) {
                unmatched += 1;
            }
        }
        if unmatched > 0 {
            self.no_match.inc_by(unmatched);
            tracing::debug!(
                unmatched,
                "parser: lines no parser took were left as they were"
            );
        }
    }

    fn attach_metrics(&mut self, metrics: &ComponentMetrics) {
        self.no_match = metrics.error_counter(NO_MATCH_REASON);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::EventTime;

    fn transform(src: &str) -> ParserTransform {
        ParserTransform::build(toml::from_str(src).unwrap()).unwrap()
    }

    fn event(pairs: &[(&str, &str)]) -> Event {
        let record = pairs
            .iter()
            .map(|(k, v)| (Bytes::copy_from_slice(k.as_bytes()), Value::from(*v)))
            .collect();
        Event::new("t".into(), EventTime::new(7, 0), record)
    }

    fn text(m: &Map) -> Vec<(String, String)> {
        m.iter()
            .map(|(k, v)| (String::from_utf8_lossy(k).into_owned(), v.to_text()))
            .collect()
    }

    fn pairs(p: &[(&str, &str)]) -> Vec<(String, String)> {
        p.iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    }

    const JSON_THEN_LOGFMT: &str = r#"
        [[parsers]]
        format = "json"
        time_key = "ts"
        time_format = "%s"
        [[parsers]]
        format = "logfmt"
    "#;

    #[test]
    fn parsers_are_tried_in_order_and_only_parsed_fields_stay_by_default() {
        let mut t = transform(JSON_THEN_LOGFMT);
        let mut events = vec![
            event(&[("log", r#"{"a":"1","ts":"1715679001"}"#), ("other", "x")]),
            event(&[("log", "k=v"), ("other", "x")]),
        ];
        t.apply(&mut events);
        assert_eq!(text(&events[0].record), pairs(&[("a", "1")]));
        assert_eq!(events[0].time, EventTime::new(1715679001, 0));
        assert_eq!(text(&events[1].record), pairs(&[("k", "v")]));
        assert_eq!(events[1].time, EventTime::new(7, 0));
    }

    #[test]
    fn reserve_data_and_preserve_key_keep_originals_after_the_parsed_fields() {
        let src = format!("reserve_data = true\n{JSON_THEN_LOGFMT}");
        let mut t = transform(&src);
        let mut events = vec![event(&[("z", "1"), ("log", "k=v z=2"), ("o", "x")])];
        t.apply(&mut events);
        assert_eq!(
            text(&events[0].record),
            pairs(&[("k", "v"), ("z", "1"), ("o", "x")])
        );

        let src = format!("preserve_key = true\n{JSON_THEN_LOGFMT}");
        let mut t = transform(&src);
        let mut events = vec![event(&[("log", "log=inner k=v"), ("o", "x")])];
        t.apply(&mut events);
        assert_eq!(
            text(&events[0].record),
            pairs(&[("k", "v"), ("log", "log=inner k=v")])
        );
    }

    #[test]
    fn unmatched_and_untouched_records_are_left_alone_and_unmatched_counted() {
        let mut t = transform("key_name = \"msg\"\n[[parsers]]\nformat = \"json\"");
        let metrics = ComponentMetrics::detached("p", "transform");
        t.attach_metrics(&metrics);
        let mut record = Map::new();
        record.insert("msg", Value::Int(3));
        let mut events = vec![
            event(&[("msg", "not json"), ("o", "x")]),
            event(&[("other", "x")]),
            Event::new("t".into(), EventTime::default(), record.clone()),
        ];
        let before = events.clone();
        t.apply(&mut events);
        assert_eq!(events, before);
        assert_eq!(metrics.error_count(NO_MATCH_REASON), 1);
    }

    #[test]
    fn a_record_without_the_key_keeps_its_msgpack_form() {
        let mut t = transform("[[parsers]]\nformat = \"json\"");
        let mut events = vec![event(&[("other", "x")])];
        crate::event::pack(&mut events);
        t.apply(&mut events);
        assert!(events[0].record.raw().is_some(), "nothing changed it");
    }

    #[test]
    fn config_errors_name_the_key() {
        let err = |src: &str| ParserTransform::build(toml::from_str(src).unwrap()).unwrap_err();
        assert_eq!(err("")[0].key, "parsers");
        let e = err("[[parsers]]\nname = 'apache'\nformat = 'regex'\nregex = '(unclosed'");
        assert_eq!(e[0].key, "parsers");
        assert!(e[0].message.contains("apache"), "{}", e[0].message);
        assert_eq!(
            err("key_name = ''\n[[parsers]]\nformat = 'json'")[0].key,
            "key_name"
        );
    }
}
