//! Line parsers of the `tail` source: `none`, `json`, `docker`, `cri` and `regex`.
//!
//! A parser turns one line (bytes, without its newline) into a record and a time. A line that
//! does not parse is never dropped: it becomes `{<key>: line}` with the current time, and the
//! failure is counted (`invalid_json`, `invalid_docker`, `invalid_cri`, `regex_no_match`).
//!
//! - `docker`: Docker's json-file lines `{"log":"text\n","stream":"stdout","time":"<RFC 3339>"}`;
//!   the time comes from `time` (kept in the record, as Fluent Bit's `docker` parser does).
//! - `cri`: containerd / CRI-O lines `<RFC 3339 time> <stream> <P|F> <text>` become
//!   `{time, stream, _p, <key>: text}` (Fluent Bit's built-in `cri` parser's fields).
//! - `json` and `regex`: the time is read from `time_key` with `time_format` when a format is
//!   given; the key is removed unless `time_keep`.

use bytes::Bytes;
use chrono::{DateTime, NaiveDateTime};

use crate::config::field::FieldError;
use crate::event::{EventTime, Map, Value};

pub const STREAM: &[u8] = b"stream";
pub const TIME: &[u8] = b"time";
pub const LOG: &[u8] = b"log";
pub const PARTIAL: &[u8] = b"_p";

/// How a line becomes a record.
#[derive(Debug, Clone)]
pub enum Parser {
    None,
    Json(TimeRule),
    Docker,
    Cri,
    Regex {
        regex: regex::bytes::Regex,
        names: Vec<Option<Bytes>>,
        time: TimeRule,
    },
}

/// Where a parsed record's time comes from (`json`, `regex`).
#[derive(Debug, Clone)]
pub struct TimeRule {
    pub key: Bytes,
    /// `None`: the record's time is the time the line was read.
    pub format: Option<TimeParse>,
    pub keep: bool,
}

/// A compiled `time_format`.
#[derive(Debug, Clone)]
pub struct TimeParse {
    /// The format in chrono's syntax (`.%L` became `%.f`).
    format: String,
    /// The format carries an offset (`%z`, `%:z`, `%#z`); otherwise times are UTC.
    with_offset: bool,
}

impl TimeParse {
    /// Compiles a strptime-style format. `%L` (fractional seconds, Fluent Bit's spelling) is
    /// accepted after a `.` (any number of digits) or a `,` (exactly 3 digits, log4j style).
    pub fn new(key: &str, format: &str) -> Result<TimeParse, FieldError> {
        let translated = format.replace(".%L", "%.f").replace(",%L", ",%3f");
        if translated.contains("%L") {
            return Err(FieldError::new(
                key,
                format!("`{format}`: %L (fractional seconds) must follow a `.` or `,`"),
            ));
        }
        if chrono::format::StrftimeItems::new(&translated)
            .any(|i| matches!(i, chrono::format::Item::Error))
        {
            return Err(FieldError::new(
                key,
                format!("`{format}` is not a valid time format (strptime syntax, e.g. \"%d/%b/%Y:%H:%M:%S %z\")"),
            ));
        }
        let with_offset = translated.contains("%z")
            || translated.contains("%:z")
            || translated.contains("%#z")
            || translated.contains("%::z");
        Ok(TimeParse {
            format: translated,
            with_offset,
        })
    }

    pub fn parse(&self, text: &[u8]) -> Option<EventTime> {
        let text = std::str::from_utf8(text).ok()?.trim();
        let (secs, nanos) = if self.with_offset {
            let t = DateTime::parse_from_str(text, &self.format).ok()?;
            (t.timestamp(), t.timestamp_subsec_nanos())
        } else {
            let t = NaiveDateTime::parse_from_str(text, &self.format)
                .ok()?
                .and_utc();
            (t.timestamp(), t.timestamp_subsec_nanos())
        };
        Some(EventTime::new(secs, nanos))
    }
}

/// Parses an RFC 3339 time with up to nanoseconds (`2024-05-14T09:30:01.123456789Z`).
pub fn parse_rfc3339(text: &[u8]) -> Option<EventTime> {
    let t = DateTime::parse_from_rfc3339(std::str::from_utf8(text).ok()?).ok()?;
    Some(EventTime::new(t.timestamp(), t.timestamp_subsec_nanos()))
}

/// What a parser made of one line.
#[derive(Debug)]
pub struct Parsed {
    pub record: Map,
    pub time: EventTime,
    /// `cri`: the line is a partial (`P`) piece. `docker`: the `log` text lacks its newline.
    pub partial: bool,
    /// The failure counted when the line did not parse.
    pub error: Option<&'static str>,
}

impl Parser {
    /// Parses `line`, a slice of the buffer it was read into (kept without copying where the
    /// format allows). `key` holds the raw line when the line does not parse, and the text for
    /// `none` and `cri`.
    pub fn parse(&self, line: Bytes, key: &Bytes, now: EventTime) -> Parsed {
        match self {
            Parser::None => raw(line, key, now, None),
            Parser::Json(rule) => match parse_json_object(&line) {
                Some(mut record) => {
                    let time = rule.apply(&mut record).unwrap_or(now);
                    Parsed {
                        record,
                        time,
                        partial: false,
                        error: None,
                    }
                }
                None => raw(line, key, now, Some("invalid_json")),
            },
            Parser::Docker => match parse_json_object(&line) {
                Some(record) => {
                    let time = record
                        .get(TIME)
                        .and_then(Value::as_bytes)
                        .and_then(parse_rfc3339);
                    let partial =
                        matches!(record.get(LOG), Some(Value::Str(s)) if !s.ends_with(b"\n"));
                    Parsed {
                        record,
                        time: time.unwrap_or(now),
                        partial,
                        error: None,
                    }
                }
                None => raw(line, key, now, Some("invalid_docker")),
            },
            Parser::Cri => parse_cri(line, key, now),
            Parser::Regex { regex, names, time } => {
                let Some(caps) = regex.captures(&line) else {
                    return raw(line, key, now, Some("regex_no_match"));
                };
                let mut record = Map::with_capacity(names.len());
                for (i, name) in names.iter().enumerate() {
                    if let (Some(name), Some(m)) = (name, caps.get(i)) {
                        record.push(name.clone(), Value::Str(line.slice(m.start()..m.end())));
                    }
                }
                let t = time.apply(&mut record).unwrap_or(now);
                Parsed {
                    record,
                    time: t,
                    partial: false,
                    error: None,
                }
            }
        }
    }

    /// Builds a `regex` parser; the group names become the record's keys.
    pub fn regex(pattern: &str, time: TimeRule) -> Result<Parser, FieldError> {
        let regex = crate::transform::fluent_regex::compile_bytes(pattern)
            .map_err(|m| FieldError::new("regex", m))?;
        let names: Vec<Option<Bytes>> = regex
            .capture_names()
            .map(|n| n.map(|n| Bytes::copy_from_slice(n.as_bytes())))
            .collect();
        if names.iter().all(Option::is_none) {
            return Err(FieldError::new(
                "regex",
                "has no named group: write fields as (?<name>...)",
            ));
        }
        Ok(Parser::Regex { regex, names, time })
    }
}

impl TimeRule {
    /// Reads the time from the record; `None` when there is no format, no such key, or it does
    /// not parse (then the key stays).
    fn apply(&self, record: &mut Map) -> Option<EventTime> {
        let format = self.format.as_ref()?;
        let value = record.get(&self.key)?;
        let t = match value {
            Value::Str(s) => format.parse(s),
            Value::Int(i) if format.format == "%s" => Some(EventTime::new(*i, 0)),
            Value::Float(f) if format.format == "%s" => Some(EventTime::from_f64(*f)),
            _ => None,
        }?;
        if !self.keep {
            record.remove(&self.key);
        }
        Some(t)
    }
}

fn raw(line: Bytes, key: &Bytes, now: EventTime, error: Option<&'static str>) -> Parsed {
    let mut record = Map::with_capacity(1);
    record.push(key.clone(), Value::Str(line));
    Parsed {
        record,
        time: now,
        partial: false,
        error,
    }
}

fn parse_json_object(line: &[u8]) -> Option<Map> {
    match serde_json::from_slice::<serde_json::Value>(line) {
        Ok(v @ serde_json::Value::Object(_)) => match Value::from(v) {
            Value::Map(m) => Some(m),
            _ => None,
        },
        _ => None,
    }
}

/// `<time> <stream> <P|F> <text>`; the text may be empty and may contain spaces.
fn parse_cri(line: Bytes, key: &Bytes, now: EventTime) -> Parsed {
    let mut parts = line.splitn(4, |&b| b == b' ');
    let (Some(time), Some(stream), Some(tag)) = (parts.next(), parts.next(), parts.next()) else {
        return raw(line, key, now, Some("invalid_cri"));
    };
    let text_start = time.len() + stream.len() + tag.len() + 3;
    let parsed_time = parse_rfc3339(time);
    // The tag is `P` or `F`, possibly followed by more `:`-separated flags in future versions.
    let partial = match tag.split(|&b| b == b':').next() {
        Some(b"P") => true,
        Some(b"F") => false,
        _ => return raw(line, key, now, Some("invalid_cri")),
    };
    let Some(parsed_time) = parsed_time else {
        return raw(line, key, now, Some("invalid_cri"));
    };
    let text = if text_start <= line.len() {
        line.slice(text_start..)
    } else {
        Bytes::new()
    };
    let mut record = Map::with_capacity(4);
    record.push(
        Bytes::from_static(TIME),
        Value::Str(line.slice(..time.len())),
    );
    let s = time.len() + 1;
    record.push(
        Bytes::from_static(STREAM),
        Value::Str(line.slice(s..s + stream.len())),
    );
    record.push(
        Bytes::from_static(PARTIAL),
        Value::Str(Bytes::from_static(if partial { b"P" } else { b"F" })),
    );
    record.push(key.clone(), Value::Str(text));
    Parsed {
        record,
        time: parsed_time,
        partial,
        error: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> Bytes {
        Bytes::from_static(b"log")
    }

    fn s(v: &Value) -> &[u8] {
        v.as_bytes().unwrap()
    }

    const NOW: EventTime = EventTime { secs: 7, nanos: 0 };

    #[test]
    fn none_keeps_the_line_under_key() {
        let p = Parser::None.parse(Bytes::from_static(b"\xffhello"), &key(), NOW);
        assert_eq!(s(p.record.get(b"log").unwrap()), b"\xffhello");
        assert_eq!(p.time, NOW);
        assert!(p.error.is_none());
    }

    #[test]
    fn json_with_and_without_time_format() {
        let rule = TimeRule {
            key: Bytes::from_static(b"ts"),
            format: Some(TimeParse::new("time_format", "%Y-%m-%dT%H:%M:%S.%L%z").unwrap()),
            keep: false,
        };
        let p = Parser::Json(rule).parse(
            Bytes::from_static(br#"{"ts":"2024-05-14T09:30:01.250+02:00","msg":"hi","n":3}"#),
            &key(),
            NOW,
        );
        assert_eq!(p.time, EventTime::new(1715671801, 250_000_000));
        assert!(
            p.record.get(b"ts").is_none(),
            "time_keep = false removes it"
        );
        assert_eq!(s(p.record.get(b"msg").unwrap()), b"hi");
        assert_eq!(p.record.get(b"n"), Some(&Value::Int(3)));

        let plain = TimeRule {
            key: Bytes::from_static(b"time"),
            format: None,
            keep: false,
        };
        let p =
            Parser::Json(plain.clone()).parse(Bytes::from_static(br#"{"time":"x"}"#), &key(), NOW);
        assert_eq!(p.time, NOW);
        assert!(p.record.get(b"time").is_some());

        let bad = Parser::Json(plain).parse(Bytes::from_static(b"not json {"), &key(), NOW);
        assert_eq!(bad.error, Some("invalid_json"));
        assert_eq!(s(bad.record.get(b"log").unwrap()), b"not json {");
    }

    #[test]
    fn docker_lines_and_partial_pieces() {
        let p = Parser::Docker.parse(
            Bytes::from_static(
                br#"{"log":"hello\n","stream":"stderr","time":"2024-05-14T09:30:01.123456789Z"}"#,
            ),
            &key(),
            NOW,
        );
        assert_eq!(p.time, EventTime::new(1715679001, 123_456_789));
        assert_eq!(s(p.record.get(b"log").unwrap()), b"hello\n");
        assert_eq!(s(p.record.get(b"stream").unwrap()), b"stderr");
        assert!(!p.partial);
        let piece = Parser::Docker.parse(
            Bytes::from_static(br#"{"log":"abc","stream":"stdout","time":"2024-05-14T09:30:01Z"}"#),
            &key(),
            NOW,
        );
        assert!(piece.partial);
    }

    #[test]
    fn cri_fields_time_and_partial_flag() {
        let p = Parser::Cri.parse(
            Bytes::from_static(b"2024-05-14T09:30:01.5+00:00 stdout F hello  world"),
            &key(),
            NOW,
        );
        assert!(p.error.is_none());
        assert_eq!(p.time, EventTime::new(1715679001, 500_000_000));
        assert_eq!(s(p.record.get(b"stream").unwrap()), b"stdout");
        assert_eq!(s(p.record.get(b"_p").unwrap()), b"F");
        assert_eq!(s(p.record.get(b"log").unwrap()), b"hello  world");
        assert_eq!(
            s(p.record.get(b"time").unwrap()),
            b"2024-05-14T09:30:01.5+00:00"
        );
        let partial = Parser::Cri.parse(
            Bytes::from_static(b"2024-05-14T09:30:01Z stderr P "),
            &key(),
            NOW,
        );
        assert!(partial.partial);
        assert_eq!(s(partial.record.get(b"log").unwrap()), b"");
        let empty = Parser::Cri.parse(
            Bytes::from_static(b"2024-05-14T09:30:01Z stderr F"),
            &key(),
            NOW,
        );
        assert!(empty.error.is_none());
        for bad in [
            &b"garbage"[..],
            b"notatime stdout F x",
            b"2024-05-14T09:30:01Z stdout X x",
        ] {
            let p = Parser::Cri.parse(Bytes::copy_from_slice(bad), &key(), NOW);
            assert_eq!(p.error, Some("invalid_cri"), "{bad:?}");
            assert_eq!(s(p.record.get(b"log").unwrap()), bad);
        }
    }

    #[test]
    fn regex_named_groups_and_time() {
        let rule = TimeRule {
            key: Bytes::from_static(b"time"),
            format: Some(TimeParse::new("time_format", "%d/%b/%Y:%H:%M:%S %z").unwrap()),
            keep: true,
        };
        let p = Parser::regex(
            r"^(?<host>\S+) \[(?<time>[^\]]+)\] (?<method>\w+) (?<path>\S+)$",
            rule,
        )
        .unwrap();
        let out = p.parse(
            Bytes::from_static(b"10.0.0.1 [14/May/2024:09:30:01 +0000] GET /health"),
            &key(),
            NOW,
        );
        assert_eq!(out.time, EventTime::new(1715679001, 0));
        assert_eq!(s(out.record.get(b"host").unwrap()), b"10.0.0.1");
        assert_eq!(s(out.record.get(b"method").unwrap()), b"GET");
        assert_eq!(s(out.record.get(b"path").unwrap()), b"/health");
        assert!(out.record.get(b"time").is_some(), "time_keep = true");
        let miss = p.parse(Bytes::from_static(b"nope"), &key(), NOW);
        assert_eq!(miss.error, Some("regex_no_match"));
        assert!(Parser::regex("(unclosed", rule_none()).is_err());
        assert!(Parser::regex("no groups", rule_none()).is_err());
    }

    fn rule_none() -> TimeRule {
        TimeRule {
            key: Bytes::from_static(b"time"),
            format: None,
            keep: false,
        }
    }

    #[test]
    fn time_formats_without_offset_are_utc_and_bad_formats_are_rejected() {
        let t = TimeParse::new("time_format", "%Y-%m-%d %H:%M:%S,%L").unwrap();
        assert_eq!(
            t.parse(b"2024-05-14 09:30:01,050"),
            Some(EventTime::new(1715679001, 50_000_000))
        );
        let t = TimeParse::new("time_format", "%Y-%m-%d %H:%M:%S.%L").unwrap();
        assert_eq!(
            t.parse(b"2024-05-14 09:30:01.5"),
            Some(EventTime::new(1715679001, 500_000_000))
        );
        assert!(t.parse(b"yesterday").is_none());
        assert!(TimeParse::new("time_format", "%H%L").is_err());
        assert!(TimeParse::new("time_format", "%Q").is_err());
    }
}
