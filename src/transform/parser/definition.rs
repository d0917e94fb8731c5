//! One parser definition (`[[transforms.parsers]]`, Fluent Bit's `[PARSER]` section) and what it
//! makes of a text.
//!
//! - `json`: the text must be a JSON object; its fields become the record.
//! - `regex`: named groups become string fields; a group that did not take part, or matched
//!   nothing, is left out (Fluent Bit's `Skip_Empty_Values`, on by default).
//! - `logfmt`: see [`super::logfmt`].
//! - `docker` and `cri`: Fluent Bit's stock `parsers.conf` definitions of those names, so a
//!   filter written `Parser docker` means the same here: `docker` is `json` with the time from
//!   `time` (`%Y-%m-%dT%H:%M:%S.%L`, kept); `cri` is the regex
//!   `^(?<time>[^ ]+) (?<stream>stdout|stderr) (?<logtag>[^ ]*) (?<message>.*)$` with the time
//!   from `time` (`%Y-%m-%dT%H:%M:%S.%L%z`, kept). Their time options may be overridden.
//!
//! Time: with a `time_format`, the field `time_key` is read as the record's time and removed
//! unless `time_keep`. A time that does not parse leaves the record's time as it was; the field
//! stays for `json` but is removed for `regex` and `logfmt`, even with `time_keep` (Fluent Bit
//! 5.1 does both).
//! `types` converts `regex` and `logfmt` fields (see [`super::types`]).

use bytes::Bytes;
use serde::Deserialize;

use super::time::TimeFormat;
use super::types::{self, FieldType};
use crate::event::{EventTime, Map, Value};
use crate::transform::fluent_regex;
use crate::transform::pairs::StringOrList;

/// The regex of Fluent Bit's stock `cri` parser.
pub const CRI_REGEX: &str =
    r"^(?<time>[^ ]+) (?<stream>stdout|stderr) (?<logtag>[^ ]*) (?<message>.*)$";
/// The time format of Fluent Bit's stock `docker` parser.
pub const DOCKER_TIME_FORMAT: &str = "%Y-%m-%dT%H:%M:%S.%L";
/// The time format of Fluent Bit's stock `cri` parser.
pub const CRI_TIME_FORMAT: &str = "%Y-%m-%dT%H:%M:%S.%L%z";

/// How a parser reads the text.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    Json,
    Regex,
    Logfmt,
    Docker,
    Cri,
}

/// One parser, as written in the config.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ParserDefinition {
    /// A name for logs and error messages (the `[PARSER]` section's `Name` when imported).
    #[serde(default)]
    pub name: Option<String>,
    /// `json`, `regex`, `logfmt`, `docker` or `cri`.
    pub format: Format,
    /// `regex` only: the pattern with named groups `(?<name>...)`, in Fluent Bit's syntax.
    #[serde(default)]
    pub regex: Option<String>,
    /// The field holding the time (default `time`); read only with `time_format`.
    #[serde(default)]
    pub time_key: Option<String>,
    /// strptime format of `time_key` (`%L` = fractional seconds). Unset: the time is not read.
    #[serde(default)]
    pub time_format: Option<String>,
    /// Keep `time_key` in the record after reading the time (default false).
    #[serde(default)]
    pub time_keep: Option<bool>,
    /// `KEY:TYPE` conversions for `regex` / `logfmt` fields: `"code:integer size:integer"`.
    #[serde(default)]
    pub types: StringOrList,
    /// `regex`: leave out fields that matched an empty string (default true).
    #[serde(default)]
    pub skip_empty_values: Option<bool>,
}

impl ParserDefinition {
    /// How messages name this parser: its name, or its format.
    pub fn label(&self, index: usize) -> String {
        match &self.name {
            Some(name) => format!("parsers[{index}] `{name}`"),
            None => format!("parsers[{index}]"),
        }
    }
}

#[derive(Debug)]
enum Reader {
    Json,
    Regex {
        regex: regex::bytes::Regex,
        names: Vec<Option<Bytes>>,
        skip_empty: bool,
    },
    Logfmt,
}

#[derive(Debug)]
struct TimeRule {
    key: Bytes,
    format: TimeFormat,
    keep: bool,
}

/// A parser ready to run.
#[derive(Debug)]
pub struct Parser {
    reader: Reader,
    time: Option<TimeRule>,
    types: Vec<(Bytes, FieldType)>,
}

/// What a parser made of a text.
#[derive(Debug)]
pub struct Parsed {
    pub record: Map,
    /// The time read from `time_key`, when there is a `time_format` and it parsed.
    pub time: Option<EventTime>,
}

impl Parser {
    /// Compiles a definition; errors say what is wrong, without the option's name.
    pub fn new(def: &ParserDefinition) -> Result<Parser, String> {
        let (format, preset_time) = match def.format {
            Format::Docker => (Format::Json, Some(DOCKER_TIME_FORMAT)),
            Format::Cri => (Format::Regex, Some(CRI_TIME_FORMAT)),
            other => (other, None),
        };
        let preset = preset_time.is_some();
        let pattern = match (def.format, &def.regex) {
            (Format::Regex, Some(r)) => Some(r.as_str()),
            (Format::Regex, None) => {
                return Err(
                    "`format = \"regex\"` needs `regex`, a pattern with named groups".into(),
                )
            }
            (Format::Cri, None) => Some(CRI_REGEX),
            (_, Some(_)) => {
                return Err(
                    "`regex` is only for `format = \"regex\"`; remove it or change the format"
                        .into(),
                )
            }
            (_, None) => None,
        };
        let reader = match format {
            Format::Json => Reader::Json,
            Format::Logfmt => Reader::Logfmt,
            _ => {
                let pattern = pattern.unwrap_or_default();
                let regex = fluent_regex::compile_bytes(pattern)?;
                let names: Vec<Option<Bytes>> = regex
                    .capture_names()
                    .map(|n| n.map(|n| Bytes::copy_from_slice(n.as_bytes())))
                    .collect();
                if names.iter().all(Option::is_none) {
                    return Err(format!(
                        "`{pattern}` has no named group: write fields as (?<name>...)"
                    ));
                }
                Reader::Regex {
                    regex,
                    names,
                    skip_empty: def.skip_empty_values.unwrap_or(true),
                }
            }
        };
        if def.skip_empty_values.is_some() && !matches!(reader, Reader::Regex { .. }) {
            return Err("`skip_empty_values` is only for `regex` parsers".into());
        }
        let time_format = def.time_format.as_deref().or(preset_time);
        let time = match time_format {
            Some(f) => Some(TimeRule {
                key: Bytes::copy_from_slice(def.time_key.as_deref().unwrap_or("time").as_bytes()),
                format: TimeFormat::new(f)?,
                keep: def.time_keep.unwrap_or(preset),
            }),
            None => None,
        };
        let types = types::parse(&def.types.0)?;
        if !types.is_empty() && matches!(reader, Reader::Json) {
            return Err(
                "`types` converts `regex` and `logfmt` fields; JSON values keep their own types"
                    .into(),
            );
        }
        Ok(Parser {
            reader,
            time,
            types,
        })
    }

    /// Parses `text` (a slice of the record's value: regex and logfmt fields share its buffer).
    pub fn parse(&self, text: &Bytes) -> Option<Parsed> {
        let (mut record, drop_bad_time) = match &self.reader {
            Reader::Json => (parse_json_object(text)?, false),
            Reader::Logfmt => (super::logfmt::parse(text)?, true),
            Reader::Regex {
                regex,
                names,
                skip_empty,
            } => {
                let caps = regex.captures(text)?;
                let mut record = Map::with_capacity(names.len());
                for (i, name) in names.iter().enumerate() {
                    let (Some(name), Some(m)) = (name, caps.get(i)) else {
                        continue;
                    };
                    if *skip_empty && m.is_empty() {
                        continue;
                    }
                    record.insert(name.clone(), Value::Str(text.slice(m.start()..m.end())));
                }
                (record, true)
            }
        };
        let time = self.read_time(&mut record, drop_bad_time);
        for (key, kind) in &self.types {
            if let Some(slot) = record.get_mut(key) {
                if let Some(converted) = types::convert(slot, *kind) {
                    *slot = converted;
                }
            }
        }
        Some(Parsed { record, time })
    }

    fn read_time(&self, record: &mut Map, drop_bad_time: bool) -> Option<EventTime> {
        let rule = self.time.as_ref()?;
        let time = rule.format.parse_value(record.get(&rule.key)?);
        let drop = match time {
            Some(_) => !rule.keep,
            None => drop_bad_time,
        };
        if drop {
            record.remove(&rule.key);
        }
        time
    }
}

fn parse_json_object(text: &[u8]) -> Option<Map> {
    match serde_json::from_slice::<serde_json::Value>(text) {
        Ok(v @ serde_json::Value::Object(_)) => match Value::from(v) {
            Value::Map(m) => Some(m),
            _ => None,
        },
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn def(src: &str) -> ParserDefinition {
        toml::from_str(src).unwrap()
    }

    fn parser(src: &str) -> Parser {
        Parser::new(&def(src)).unwrap()
    }

    fn run(p: &Parser, text: &'static str) -> Option<Parsed> {
        p.parse(&Bytes::from_static(text.as_bytes()))
    }

    fn keys(m: &Map) -> Vec<String> {
        m.iter()
            .map(|(k, _)| String::from_utf8_lossy(k).into_owned())
            .collect()
    }

    #[test]
    fn regex_groups_types_and_empty_values() {
        let p = parser(
            r#"format = "regex"
               regex = '^(?<host>\S+) (?<code>\d+) (?<size>\d*) (?<msg>.*)$'
               types = "code:integer size:integer""#,
        );
        let out = run(&p, "h1 200 15 hello world").unwrap();
        assert_eq!(keys(&out.record), ["host", "code", "size", "msg"]);
        assert_eq!(out.record.get(b"code"), Some(&Value::Int(200)));
        assert_eq!(out.record.get(b"msg"), Some(&Value::from("hello world")));
        let empty = run(&p, "h1 200  hello").unwrap();
        assert_eq!(keys(&empty.record), ["host", "code", "msg"]);
        assert!(run(&p, "nope").is_none());
    }

    #[test]
    fn time_is_read_and_removed_unless_kept() {
        let p = parser(
            r#"format = "json"
               time_key = "ts"
               time_format = "%Y-%m-%dT%H:%M:%S.%L%z""#,
        );
        let out = run(&p, r#"{"a":1,"ts":"2024-05-14T09:30:01.250+02:00"}"#).unwrap();
        assert_eq!(out.time, Some(EventTime::new(1715671801, 250_000_000)));
        assert_eq!(keys(&out.record), ["a"]);
        // A bad time: JSON keeps the field, regex drops it; the time stays unset.
        let bad = run(&p, r#"{"a":1,"ts":"bad"}"#).unwrap();
        assert_eq!(
            (bad.time, keys(&bad.record)),
            (None, vec!["a".into(), "ts".into()])
        );
        let r = parser(
            r#"format = "regex"
               regex = '^(?<time>\S+ \S+) (?<level>\w+)$'
               time_format = "%d/%b/%Y:%H:%M:%S""#,
        );
        let bad = run(&r, "bad time WARN").unwrap();
        assert_eq!((bad.time, keys(&bad.record)), (None, vec!["level".into()]));
        let kept = parser(
            r#"format = "regex"
               regex = '^(?<time>\S+) (?<level>\w+)$'
               time_format = "%d/%b/%Y:%H:%M:%S"
               time_keep = true"#,
        );
        let out = run(&kept, "14/May/2024:09:30:01 WARN").unwrap();
        assert_eq!(out.time, Some(EventTime::new(1715679001, 0)));
        assert_eq!(keys(&out.record), ["time", "level"]);
        let bad = run(&kept, "yesterday WARN").unwrap();
        assert_eq!((bad.time, keys(&bad.record)), (None, vec!["level".into()]));
    }

    #[test]
    fn docker_and_cri_presets() {
        let d = parser("format = \"docker\"");
        let out = run(
            &d,
            r#"{"log":"hi\n","stream":"stdout","time":"2024-05-14T09:30:01.123456789Z"}"#,
        )
        .unwrap();
        assert_eq!(out.time, Some(EventTime::new(1715679001, 123_456_789)));
        assert_eq!(keys(&out.record), ["log", "stream", "time"]);
        let c = parser("format = \"cri\"");
        let out = run(&c, "2024-05-14T09:30:01.5+02:00 stderr F hello world").unwrap();
        assert_eq!(out.time, Some(EventTime::new(1715671801, 500_000_000)));
        assert_eq!(keys(&out.record), ["time", "stream", "logtag", "message"]);
        assert!(run(&c, "2024 nostream F x").is_none());
    }

    #[test]
    fn definition_errors() {
        let err = |src: &str| Parser::new(&def(src)).unwrap_err();
        assert!(err("format = \"regex\"").contains("regex"));
        assert!(err("format = \"json\"\nregex = 'x'").contains("regex"));
        assert!(err("format = \"regex\"\nregex = 'x'").contains("named group"));
        assert!(err("format = \"regex\"\nregex = '(?<a>'").contains("(?<a>"));
        assert!(err("format = \"json\"\ntypes = 'a:integer'").contains("types"));
        assert!(err("format = \"json\"\ntime_format = '%Q'").contains("%Q"));
        assert!(toml::from_str::<ParserDefinition>("format = \"ltsv\"").is_err());
        assert!(toml::from_str::<ParserDefinition>("format = \"json\"\nkey = 1").is_err());
    }
}
