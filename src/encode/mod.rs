//! The record encoder every sink shares (stdout, file, Kinesis, Kafka, the Lambda forwarder).
//!
//! A sink maps its own config onto a plain [`EncodeOptions`] (reading each option with
//! [`options`], the same way in every sink), builds one [`Encoder`] (which
//! validates the options and compiles the time format), and calls [`Encoder::encode`] per
//! record with a buffer it reuses. The record is written straight from the decoded [`Event`]:
//! `data_keys`, `time_key` and `replace_dots` are applied while writing, without building a new
//! map or copying any field.
//!
//! Order of operations, following the aws-for-fluent-bit `kinesis` plugin: select
//! (`log_key` or `data_keys`), add the time, serialize, append the newline, compress.
//!
//! Semantics, option by option:
//! - `format`: `json` (the record as an object), `msgpack` (the record as a map, every string
//!   and binary byte-exact), `text` (the `log_key` field alone as raw bytes; requires
//!   `log_key`).
//! - `log_key`: send only that field (a nested path `a->b` is allowed). With `json` a string or
//!   binary is sent as its raw bytes and anything else as JSON (`null` for nil), as the Go
//!   plugins do; with `msgpack` the value is sent as a msgpack value; with `text` strings are raw
//!   bytes, nil is empty and other values are JSON. A record without the field fails with
//!   [`EncodeError::MissingLogKey`] (a poison record for the dead-letter file). `time_key` does
//!   not apply (there is no object to add it to); `data_keys` must then include the field.
//! - `data_keys`: keep only these top-level keys. Unlike the Go plugin, which adds the time
//!   first and filters after (silently dropping the time unless listed), `time_key` is always
//!   written: asking for it is explicit.
//! - `time_key` + `time_format`: the record's time under that key, written last; a field of the
//!   same name in the record is replaced (dropped from its place). The key is written as given,
//!   not touched by `replace_dots`.
//! - `replace_dots`: every `.` in every key, at any depth, becomes this string.
//! - `append_newline`: `\n` after each record (before compression).
//! - `compression`: `zlib` or `gzip` of the whole encoded record, one stream per record.

mod civil;
pub mod compress;
pub mod json;
pub mod options;
pub mod time_format;

use std::borrow::Cow;
use std::cell::RefCell;

use crate::config::field::FieldError;
use crate::event::{Event, KeyPath, Map, Value};
use crate::msgpack::read::{check_value, parse_head, Head, ReadError};
use crate::msgpack::write::{self, WriteError};

pub use compress::Compression;
pub use time_format::{Subsecond, TimeFormat, TimeWriter, DEFAULT_STRFTIME};

/// What one record is serialized as.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Format {
    #[default]
    Json,
    Msgpack,
    /// The `log_key` field alone, as raw bytes.
    Text,
}

/// Everything that shapes an encoded record; see the module docs for each option's meaning.
/// Plain data: each sink fills it from its own config.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EncodeOptions {
    pub format: Format,
    pub log_key: Option<KeyPath>,
    pub data_keys: Vec<String>,
    pub time_key: Option<String>,
    pub time_format: TimeFormat,
    pub replace_dots: Option<String>,
    pub append_newline: bool,
    pub compression: Compression,
}

/// Why one record could not be encoded. Every variant is about that record alone: the caller
/// dead-letters it and carries on.
#[derive(Debug, thiserror::Error)]
pub enum EncodeError {
    #[error("the record has no `{key}` field, which log_key selects; nothing to send")]
    MissingLogKey { key: String },
    #[error("the record's time ({secs} s since the epoch) is outside the range of dates that can be formatted; check the source's timestamps")]
    TimeOutOfRange { secs: i64 },
    #[error(transparent)]
    TooLong(#[from] WriteError),
    #[error("compressing the record failed: {0}")]
    Compress(String),
    /// Only for a record whose msgpack was not checked when decoded (a bug): the encoder then
    /// falls back to the parsed record.
    #[error("the record's msgpack is malformed: {0}")]
    Msgpack(#[from] ReadError),
}

/// What is serialized, decided once at build time.
#[derive(Debug)]
enum Body {
    /// The record (filtered, with the time added).
    Record { msgpack: bool },
    /// One field's value.
    Field { path: KeyPath, format: Format },
}

/// An encoder built once from [`EncodeOptions`]; cheap to share between threads.
#[derive(Debug)]
pub struct Encoder {
    body: Body,
    data_keys: Vec<Box<[u8]>>,
    time: Option<(Box<[u8]>, TimeWriter)>,
    replace_dots: Option<Box<[u8]>>,
    append_newline: bool,
    compression: Compression,
}

thread_local! {
    /// The uncompressed record, before compression writes it to the caller's buffer.
    static SCRATCH: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// A scratch buffer larger than this is dropped after use rather than kept per thread.
const SCRATCH_KEEP_LIMIT: usize = 4 << 20;

impl Encoder {
    /// Validates and compiles the options. Errors name the offending option.
    pub fn new(options: &EncodeOptions) -> Result<Encoder, FieldError> {
        let body = match (&options.log_key, options.format) {
            (None, Format::Text) => {
                return Err(FieldError::new(
                    "format",
                    "`text` sends the value of a single field: set log_key to name it",
                ))
            }
            (None, format) => Body::Record {
                msgpack: format == Format::Msgpack,
            },
            (Some(path), format) => Body::Field {
                path: path.clone(),
                format,
            },
        };
        if let Some(path) = &options.log_key {
            if path.as_str().is_empty() {
                return Err(FieldError::new("log_key", "must not be empty"));
            }
            if !options.data_keys.is_empty()
                && !options
                    .data_keys
                    .iter()
                    .any(|k| k.as_bytes() == path.first())
            {
                return Err(FieldError::new(
                    "data_keys",
                    format!(
                        "does not include `{}`, the field log_key sends, so no record could be \
                         sent; add it or remove data_keys",
                        String::from_utf8_lossy(path.first())
                    ),
                ));
            }
        }
        let time = match &options.time_key {
            Some(key) if key.is_empty() => {
                return Err(FieldError::new("time_key", "must not be empty"))
            }
            Some(key) => Some((
                Box::from(key.as_bytes()),
                TimeWriter::new(&options.time_format, "time_key_format")?,
            )),
            None => None,
        };
        Ok(Encoder {
            body,
            data_keys: options
                .data_keys
                .iter()
                .map(|k| Box::from(k.as_bytes()))
                .collect(),
            time,
            replace_dots: options
                .replace_dots
                .as_ref()
                .map(|r| Box::from(r.as_bytes())),
            append_newline: options.append_newline,
            compression: options.compression,
        })
    }

    /// Appends one encoded record to `out`. On error `out` is left as it was.
    pub fn encode(&self, event: &Event, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        if self.compression == Compression::None {
            return self.encode_plain(event, out);
        }
        SCRATCH.with(|cell| match cell.try_borrow_mut() {
            Ok(mut scratch) => {
                scratch.clear();
                let result = self
                    .encode_plain(event, &mut scratch)
                    .and_then(|()| compress::compress_into(self.compression, &scratch, out));
                if scratch.capacity() > SCRATCH_KEEP_LIMIT {
                    *scratch = Vec::new();
                }
                result
            }
            Err(_) => {
                let mut scratch = Vec::new();
                self.encode_plain(event, &mut scratch)?;
                compress::compress_into(self.compression, &scratch, out)
            }
        })
    }

    fn encode_plain(&self, event: &Event, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        let start = out.len();
        let result = match &self.body {
            Body::Record { msgpack: false } => self.json_record(event, out),
            Body::Record { msgpack: true } => self.msgpack_record(event, out),
            Body::Field { path, format } => self.field(event, path, *format, out),
        };
        match result {
            Ok(()) => {
                if self.append_newline {
                    out.push(b'\n');
                }
                Ok(())
            }
            Err(e) => {
                out.truncate(start);
                Err(e)
            }
        }
    }

    fn dots(&self) -> Option<&[u8]> {
        self.replace_dots.as_deref()
    }

    /// Whether a top-level field is written in record form.
    fn keeps(&self, key: &[u8]) -> bool {
        if matches!(&self.time, Some((time_key, _)) if time_key.as_ref() == key) {
            return false;
        }
        self.data_keys.is_empty() || self.data_keys.iter().any(|k| k.as_ref() == key)
    }

    fn json_record(&self, event: &Event, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        if let Some(raw) = event.record.raw() {
            // The lean path: JSON straight from the received msgpack. It cannot fail on a
            // checked map; should it, the parsed path below writes the record.
            let start = out.len();
            // Ok written out, not moved as `done => return done`: moving the whole result
            // (an error is 40 bytes) stalled on store-to-load forwarding once per record.
            match self.json_record_from_msgpack(event, raw, out) {
                Ok(()) => return Ok(()),
                Err(EncodeError::Msgpack(_)) => out.truncate(start),
                Err(e) => return Err(e),
            }
        }
        out.push(b'{');
        let mut first = true;
        for (key, value) in event.record.iter().filter(|(k, _)| self.keeps(k)) {
            if !first {
                out.push(b',');
            }
            first = false;
            json::write_key(out, key, self.dots());
            out.push(b':');
            json::write_value_with(out, value, self.dots());
        }
        self.close_json_record(event, first, out)
    }

    /// Ends a JSON record: the time under `time_key` when configured, then `}`. `first`: no
    /// field was written before.
    fn close_json_record(
        &self,
        event: &Event,
        first: bool,
        out: &mut Vec<u8>,
    ) -> Result<(), EncodeError> {
        if let Some((time_key, writer)) = &self.time {
            if !first {
                out.push(b',');
            }
            json::write_key(out, time_key, None);
            out.push(b':');
            writer.write_json(event.time, out)?;
        }
        out.push(b'}');
        Ok(())
    }

    /// [`Encoder::json_record`] for a record still in its received msgpack form.
    fn json_record_from_msgpack(
        &self,
        event: &Event,
        raw: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<(), EncodeError> {
        let (head, head_len) = parse_head(raw, 0)?;
        let Head::Map(count) = head else {
            return Err(EncodeError::Msgpack(ReadError::Malformed {
                offset: 0,
                reason: "a record must be a map",
            }));
        };
        let filtered = !self.data_keys.is_empty() || self.time.is_some();
        let mut pos = head_len;
        let mut first = true;
        out.push(b'{');
        for _ in 0..count {
            // Nearly every key is short plain text, written as it is without the general path.
            let (key, key_end, plain) = match json::plain_fixstr_key(raw, pos) {
                Some((key, end)) => (Cow::Borrowed(key), end, true),
                None => {
                    let (key, end) = json::msgpack_key(raw, pos)?;
                    (key, end, false)
                }
            };
            if filtered && !self.keeps(&key) {
                pos = check_value(raw, key_end, 1)?;
                continue;
            }
            if !first {
                out.push(b',');
            }
            first = false;
            let dotted = self.dots().is_some() && key.contains(&b'.');
            if plain && !dotted {
                json::write_plain_key(out, &key);
            } else {
                json::write_key(out, &key, self.dots());
                out.push(b':');
            }
            pos = match json::short_str_value(raw, key_end) {
                Some((text, end)) => {
                    json::write_str(out, text);
                    end
                }
                None => json::write_msgpack_with(out, raw, key_end, self.dots())?,
            };
        }
        self.close_json_record(event, first, out)
    }

    fn msgpack_record(&self, event: &Event, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        let kept = event.record.iter().filter(|(k, _)| self.keeps(k)).count();
        write::write_map_len(out, kept + usize::from(self.time.is_some()))?;
        for (key, value) in event.record.iter().filter(|(k, _)| self.keeps(k)) {
            write_msgpack_key(out, key, self.dots())?;
            write_msgpack_value(out, value, self.dots())?;
        }
        if let Some((time_key, writer)) = &self.time {
            write::write_str(out, time_key)?;
            writer.write_msgpack(event.time, out)?;
        }
        Ok(())
    }

    fn field(
        &self,
        event: &Event,
        path: &KeyPath,
        format: Format,
        out: &mut Vec<u8>,
    ) -> Result<(), EncodeError> {
        let value = event
            .record
            .get_path(path)
            .ok_or_else(|| EncodeError::MissingLogKey {
                key: path.to_string(),
            })?;
        match (format, value) {
            (Format::Msgpack, value) => write_msgpack_value(out, value, self.dots())?,
            (_, Value::Str(bytes) | Value::Bin(bytes)) => out.extend_from_slice(bytes),
            (Format::Text, Value::Nil) => {}
            (_, value) => json::write_value_with(out, value, self.dots()),
        }
        Ok(())
    }
}

/// A map key as msgpack `str`, with `.` replaced by `dots` when given (the length is computed
/// first, so nothing is buffered).
fn write_msgpack_key(out: &mut Vec<u8>, key: &[u8], dots: Option<&[u8]>) -> Result<(), WriteError> {
    let Some(replacement) = dots.filter(|_| key.contains(&b'.')) else {
        return write::write_str(out, key);
    };
    let count = key.iter().filter(|&&b| b == b'.').count();
    write::write_str_len(out, key.len() - count + count * replacement.len())?;
    for (i, part) in key.split(|&b| b == b'.').enumerate() {
        if i > 0 {
            out.extend_from_slice(replacement);
        }
        out.extend_from_slice(part);
    }
    Ok(())
}

fn write_msgpack_value(
    out: &mut Vec<u8>,
    value: &Value,
    dots: Option<&[u8]>,
) -> Result<(), WriteError> {
    if dots.is_none() {
        return write::write_value(out, value);
    }
    match value {
        Value::Map(map) => write_msgpack_map(out, map, dots),
        Value::Array(items) => {
            write::write_array_len(out, items.len())?;
            for item in items {
                write_msgpack_value(out, item, dots)?;
            }
            Ok(())
        }
        scalar => write::write_value(out, scalar),
    }
}

fn write_msgpack_map(out: &mut Vec<u8>, map: &Map, dots: Option<&[u8]>) -> Result<(), WriteError> {
    write::write_map_len(out, map.len())?;
    for (key, value) in map.iter() {
        write_msgpack_key(out, key, dots)?;
        write_msgpack_value(out, value, dots)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{EventTime, Tag};
    use bytes::Bytes;
    use chrono::{DateTime, SecondsFormat, Utc};
    use std::io::Read;
    use std::sync::Arc;

    fn event(time: EventTime) -> Event {
        let mut kubernetes = Map::new();
        kubernetes.push(Bytes::from("pod.name"), Value::from("web-1"));
        kubernetes.push(Bytes::from("labels"), {
            let mut labels = Map::new();
            labels.push(Bytes::from("app.kubernetes.io/name"), Value::from("web"));
            Value::Map(labels)
        });
        let mut record = Map::new();
        record.push(Bytes::from("log"), Value::from("GET /healthz \"200\"\n"));
        record.push(Bytes::from("source"), Value::from("stdout"));
        record.push(Bytes::from("level.num"), Value::Int(3));
        record.push(Bytes::from("kubernetes"), Value::Map(kubernetes));
        record.push(
            Bytes::from("partial"),
            Value::Str(Bytes::from_static(b"tail \xe2\x82")),
        );
        Event::new(Tag::from("app.web"), time, record)
    }

    fn sample_time() -> EventTime {
        EventTime::new(1_715_679_001, 123_456_789)
    }

    fn encode(options: &EncodeOptions, event: &Event) -> Result<Vec<u8>, EncodeError> {
        let encoder = Encoder::new(options).unwrap();
        let mut out = b"prev|".to_vec();
        encoder.encode(event, &mut out)?;
        assert_eq!(&out[..5], b"prev|", "encode appends");
        Ok(out.split_off(5))
    }

    fn json_of(options: &EncodeOptions, event: &Event) -> serde_json::Value {
        serde_json::from_slice(&encode(options, event).unwrap()).unwrap()
    }

    fn with_time(format: TimeFormat) -> EncodeOptions {
        EncodeOptions {
            time_key: Some("@timestamp".into()),
            time_format: format,
            ..EncodeOptions::default()
        }
    }

    fn chrono_time(t: EventTime) -> DateTime<Utc> {
        DateTime::from_timestamp(t.secs, t.nanos).unwrap()
    }

    /// A record as the forward source decodes it (kept in its msgpack form) and the same record
    /// parsed (any change drops the msgpack form).
    fn received_and_parsed(msgpack: Vec<u8>) -> (Event, Event) {
        let mut reader = crate::msgpack::Reader::new(Bytes::from(msgpack));
        let map = reader.read_map().unwrap();
        assert!(reader.is_empty(), "one whole map");
        assert!(map.raw().is_some() && !map.is_parsed());
        let mut parsed = map.clone();
        parsed.retain(|_, _| true);
        assert!(parsed.raw().is_none());
        let tag = Tag::from("t");
        (
            Event::new(tag.clone(), sample_time(), map),
            Event::new(tag, sample_time(), parsed),
        )
    }

    /// Every msgpack type, odd keys, invalid UTF-8, nested containers and dotted keys, from the
    /// `rmp` crate (an encoder independent of ours).
    fn every_kind_of_field() -> Vec<u8> {
        use rmp::encode::*;
        let mut b = Vec::new();
        write_map_len(&mut b, 13).unwrap();
        write_str(&mut b, "log").unwrap();
        write_str(
            &mut b,
            "GET /a \"q\" \\ \u{1} é 😀 plain ascii text of some length",
        )
        .unwrap();
        write_str(&mut b, "bad.utf8").unwrap();
        write_str_len(&mut b, 4).unwrap();
        b.extend_from_slice(b"ok\xe2\x82");
        write_str(&mut b, "n").unwrap();
        write_sint(&mut b, -5).unwrap();
        write_str(&mut b, "u").unwrap();
        write_u64(&mut b, u64::MAX).unwrap();
        write_str(&mut b, "f32").unwrap();
        write_f32(&mut b, 0.1).unwrap();
        write_str(&mut b, "f64").unwrap();
        write_f64(&mut b, f64::NAN).unwrap();
        write_str(&mut b, "flags").unwrap();
        write_array_len(&mut b, 3).unwrap();
        write_bool(&mut b, true).unwrap();
        write_bool(&mut b, false).unwrap();
        write_nil(&mut b).unwrap();
        write_bin(&mut b, b"bin.key").unwrap();
        write_bin(&mut b, b"\x00\xff").unwrap();
        write_uint(&mut b, 42).unwrap(); // an integer key
        write_str(&mut b, "int key").unwrap();
        write_str(&mut b, "ext").unwrap();
        write_ext_meta(&mut b, 5, 3).unwrap(); // 5 bytes of type 3
        b.extend_from_slice(b"\x01\x02\x03\x04\x05");
        write_ext_meta(&mut b, 2, 4).unwrap(); // an ext key
        b.extend_from_slice(b"\x01\x02");
        write_str(&mut b, "ext key").unwrap();
        write_str(&mut b, "kubernetes").unwrap();
        write_map_len(&mut b, 2).unwrap();
        write_str(&mut b, "pod.name").unwrap();
        write_str(&mut b, "web-1").unwrap();
        write_str(&mut b, "labels").unwrap();
        write_map_len(&mut b, 1).unwrap();
        write_str(&mut b, "app.kubernetes.io/name").unwrap();
        write_array_len(&mut b, 1).unwrap();
        write_map_len(&mut b, 0).unwrap();
        write_str(&mut b, "@timestamp").unwrap();
        write_str(&mut b, "replaced by time_key").unwrap();
        b
    }

    #[test]
    fn received_records_encode_exactly_like_parsed_ones() {
        let (received, parsed) = received_and_parsed(every_kind_of_field());
        let option_sets = [
            EncodeOptions::default(),
            EncodeOptions {
                replace_dots: Some("_".into()),
                append_newline: true,
                ..EncodeOptions::default()
            },
            EncodeOptions {
                data_keys: vec!["log".into(), "42".into(), "kubernetes".into()],
                ..with_time(TimeFormat::Epoch)
            },
            with_time(TimeFormat::Iso8601(Subsecond::Nanos)),
            EncodeOptions {
                format: Format::Msgpack,
                ..with_time(TimeFormat::Epoch)
            },
            EncodeOptions {
                log_key: Some(KeyPath::parse("kubernetes->labels")),
                ..EncodeOptions::default()
            },
            EncodeOptions {
                compression: Compression::Gzip,
                ..EncodeOptions::default()
            },
        ];
        for options in option_sets {
            let a = encode(&options, &received).unwrap();
            let b = encode(&options, &parsed).unwrap();
            assert_eq!(
                String::from_utf8_lossy(&a),
                String::from_utf8_lossy(&b),
                "{options:?}"
            );
        }
        // Plain JSON encoding reads no field: the received record is never parsed.
        let (received, _) = received_and_parsed(every_kind_of_field());
        let json = encode(&EncodeOptions::default(), &received).unwrap();
        assert!(!received.record.is_parsed());
        let value: serde_json::Value = serde_json::from_slice(&json).unwrap();
        assert_eq!(value["42"], "int key");
        assert_eq!(value["\"AQI=\""], "ext key");
        assert_eq!(value["bad.utf8"], "ok\u{FFFD}");
    }

    #[test]
    fn json_record_parses_back_to_the_input() {
        let parsed = json_of(&EncodeOptions::default(), &event(sample_time()));
        assert_eq!(
            parsed,
            serde_json::json!({
                "log": "GET /healthz \"200\"\n",
                "source": "stdout",
                "level.num": 3,
                "kubernetes": {"pod.name": "web-1", "labels": {"app.kubernetes.io/name": "web"}},
                "partial": "tail \u{FFFD}",
            })
        );
    }

    #[test]
    fn data_keys_keep_only_those_and_the_time() {
        let options = EncodeOptions {
            data_keys: vec!["log".into(), "missing".into()],
            ..with_time(TimeFormat::Epoch)
        };
        let parsed = json_of(&options, &event(sample_time()));
        assert_eq!(
            parsed,
            serde_json::json!({"log": "GET /healthz \"200\"\n", "@timestamp": 1_715_679_001})
        );
    }

    #[test]
    fn time_key_replaces_a_field_of_that_name_and_comes_last() {
        let mut e = event(sample_time());
        e.record.insert("@timestamp", Value::from("old"));
        e.record.insert("after", Value::Nil);
        let out = encode(&with_time(TimeFormat::EpochMillis), &e).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(
            text.ends_with(r#""after":null,"@timestamp":1715679001123}"#),
            "{text}"
        );
        assert_eq!(text.matches("@timestamp").count(), 1);
    }

    #[test]
    fn strftime_conversions_match_chrono() {
        let times = [
            sample_time(),
            EventTime::new(0, 0),
            EventTime::new(1_700_000_000, 999_999_999),
            EventTime::new(-1, 1),
            EventTime::new(4_102_444_800, 5_000_000),
        ];
        // Ours on the left, what chrono prints for it (computed independently) on the right.
        let cases = [
            ("%Y-%m-%dT%H:%M:%S", "%Y-%m-%dT%H:%M:%S"),
            ("%Y-%m-%dT%H:%M:%S.%L", "%Y-%m-%dT%H:%M:%S%.3f"),
            ("%H:%M:%S.%f", "%H:%M:%S%.6f"),
            ("%s.%N", "%s%.9f"),
            ("%3N|%6N|%9N", "%3f|%6f|%9f"),
            ("%Y-%m-%dT%H:%M:%S%z", "%Y-%m-%dT%H:%M:%S%z"),
            ("%d/%b/%Y:%H:%M:%S %Z", "%d/%b/%Y:%H:%M:%S %Z"),
            ("%+", "%+"),
            ("100%% at %L%%L", "100%% at %3f%%L"),
            ("%.3f %j %a", "%.3f %j %a"),
        ];
        for (ours, theirs) in cases {
            let options = with_time(TimeFormat::Strftime(ours.into()));
            for t in times {
                let parsed = json_of(&options, &event(t));
                let expected = chrono_time(t).format(theirs).to_string();
                assert_eq!(parsed["@timestamp"], expected.as_str(), "{ours} at {t:?}");
            }
        }
    }

    #[test]
    fn strftime_literals_are_escaped_in_json_and_raw_in_msgpack() {
        let format = TimeFormat::Strftime("\"%Y\"\t\\".into());
        let parsed = json_of(&with_time(format.clone()), &event(sample_time()));
        assert_eq!(parsed["@timestamp"], "\"2024\"\t\\");
        // A quote in the literal text after a fraction (a text-only segment) too.
        let after_fraction = TimeFormat::Strftime("%Y.%L\"".into());
        let parsed = json_of(&with_time(after_fraction), &event(sample_time()));
        assert!(
            parsed["@timestamp"]
                .as_str()
                .is_some_and(|t| t.starts_with("2024.") && t.ends_with('"')),
            "{parsed}"
        );
        let options = EncodeOptions {
            format: Format::Msgpack,
            data_keys: vec!["source".into()],
            ..with_time(format)
        };
        let out = encode(&options, &event(sample_time())).unwrap();
        let mut rd = &out[..];
        assert_eq!(rmp::decode::read_map_len(&mut rd).unwrap(), 2);
        let mut buf = [0u8; 64];
        assert_eq!(rmp::decode::read_str(&mut rd, &mut buf).unwrap(), "source");
        assert_eq!(rmp::decode::read_str(&mut rd, &mut buf).unwrap(), "stdout");
        assert_eq!(
            rmp::decode::read_str(&mut rd, &mut buf).unwrap(),
            "@timestamp"
        );
        assert_eq!(
            rmp::decode::read_str(&mut rd, &mut buf).unwrap(),
            "\"2024\"\t\\"
        );
        assert!(rd.is_empty());
    }

    #[test]
    fn iso8601_and_numeric_formats_match_chrono() {
        let times = [
            sample_time(),
            EventTime::new(1_700_000_000, 0),
            EventTime::new(-2, 500_000_000),
        ];
        for t in times {
            let c = chrono_time(t);
            for (sub, sf) in [
                (Subsecond::None, SecondsFormat::Secs),
                (Subsecond::Millis, SecondsFormat::Millis),
                (Subsecond::Micros, SecondsFormat::Micros),
                (Subsecond::Nanos, SecondsFormat::Nanos),
            ] {
                let parsed = json_of(&with_time(TimeFormat::Iso8601(sub)), &event(t));
                assert_eq!(parsed["@timestamp"], c.to_rfc3339_opts(sf, true).as_str());
            }
            let parsed = json_of(&with_time(TimeFormat::Epoch), &event(t));
            assert_eq!(parsed["@timestamp"], c.timestamp());
            let parsed = json_of(&with_time(TimeFormat::EpochMillis), &event(t));
            assert_eq!(parsed["@timestamp"], c.timestamp_millis());
            // Double: the exact decimal, independently: whole seconds plus fraction.
            let out = encode(&with_time(TimeFormat::Double), &event(t)).unwrap();
            let text = String::from_utf8(out).unwrap();
            let number = text.rsplit_once(':').unwrap().1.trim_end_matches('}');
            let exact = c.timestamp_nanos_opt().unwrap() as f64 / 1e9;
            let ours: f64 = number.parse().unwrap();
            assert!((ours - exact).abs() < 1e-6, "{number} vs {exact}");
            assert_eq!(number.split_once('.').unwrap().1.len(), 9);
        }
        let out = encode(&with_time(TimeFormat::Double), &event(sample_time())).unwrap();
        assert!(String::from_utf8(out)
            .unwrap()
            .ends_with(&format!("{}.{:09}}}", 1_715_679_001, 123_456_789)));
    }

    #[test]
    fn fluent_bit_time_format_names() {
        for (name, expected) in [
            ("double", TimeFormat::Double),
            ("ISO8601", TimeFormat::Iso8601(Subsecond::Micros)),
            ("iso8601_ns", TimeFormat::Iso8601(Subsecond::Nanos)),
            ("iso8601_ms", TimeFormat::Iso8601(Subsecond::Millis)),
            ("epoch", TimeFormat::Epoch),
            ("epoch_ms", TimeFormat::EpochMillis),
        ] {
            assert_eq!(
                TimeFormat::from_name("timestamp_format", name),
                Ok(expected)
            );
        }
        let err = TimeFormat::from_name("timestamp_format", "rfc822").unwrap_err();
        assert_eq!(err.key, "timestamp_format");
    }

    #[test]
    fn bad_options_are_refused_naming_the_option() {
        for bad in ["%Y-%Q", "%Y %", "%E"] {
            let err = Encoder::new(&with_time(TimeFormat::Strftime(bad.into()))).unwrap_err();
            assert_eq!(err.key, "time_key_format", "{bad}");
            assert!(err.message.contains(bad));
        }
        let text = EncodeOptions {
            format: Format::Text,
            ..EncodeOptions::default()
        };
        assert_eq!(Encoder::new(&text).unwrap_err().key, "format");
        let conflict = EncodeOptions {
            log_key: Some(KeyPath::parse("log")),
            data_keys: vec!["source".into()],
            ..EncodeOptions::default()
        };
        assert_eq!(Encoder::new(&conflict).unwrap_err().key, "data_keys");
    }

    #[test]
    fn time_out_of_range_fails_the_record_and_leaves_the_buffer() {
        let encoder = Encoder::new(&with_time(TimeFormat::default())).unwrap();
        let mut out = b"prev".to_vec();
        let far = event(EventTime::new(i64::MAX / 2, 0));
        assert!(matches!(
            encoder.encode(&far, &mut out),
            Err(EncodeError::TimeOutOfRange { .. })
        ));
        assert_eq!(out, b"prev");
    }

    #[test]
    fn log_key_sends_raw_strings_and_json_otherwise() {
        let e = event(sample_time());
        let log_key = |key: &str, format: Format| EncodeOptions {
            format,
            log_key: Some(KeyPath::parse(key)),
            ..EncodeOptions::default()
        };
        // Raw bytes, invalid UTF-8 untouched.
        assert_eq!(
            encode(&log_key("partial", Format::Json), &e).unwrap(),
            b"tail \xe2\x82"
        );
        assert_eq!(
            encode(&log_key("partial", Format::Text), &e).unwrap(),
            b"tail \xe2\x82"
        );
        assert_eq!(
            encode(&log_key("level.num", Format::Text), &e).unwrap(),
            b"3"
        );
        let nested = encode(&log_key("kubernetes->labels", Format::Json), &e).unwrap();
        let parsed: serde_json::Value = serde_json::from_slice(&nested).unwrap();
        assert_eq!(parsed, serde_json::json!({"app.kubernetes.io/name": "web"}));
        let mut with_nil = e.clone();
        with_nil.record.insert("nothing", Value::Nil);
        assert_eq!(
            encode(&log_key("nothing", Format::Json), &with_nil).unwrap(),
            b"null"
        );
        assert_eq!(
            encode(&log_key("nothing", Format::Text), &with_nil).unwrap(),
            b""
        );
        // msgpack: the value as a msgpack value.
        let out = encode(&log_key("source", Format::Msgpack), &e).unwrap();
        let mut buf = [0u8; 16];
        assert_eq!(
            rmp::decode::read_str(&mut &out[..], &mut buf).unwrap(),
            "stdout"
        );
        // Missing: an error, nothing written.
        let encoder = Encoder::new(&log_key("absent", Format::Text)).unwrap();
        let mut out = Vec::new();
        assert!(matches!(
            encoder.encode(&e, &mut out),
            Err(EncodeError::MissingLogKey { key }) if key == "absent"
        ));
        assert!(out.is_empty());
    }

    #[test]
    fn msgpack_keeps_every_byte() {
        let options = EncodeOptions {
            format: Format::Msgpack,
            data_keys: vec!["partial".into(), "level.num".into()],
            ..with_time(TimeFormat::Double)
        };
        let out = encode(&options, &event(sample_time())).unwrap();
        // Walk it with rmp's decoder.
        let mut rd = &out[..];
        assert_eq!(rmp::decode::read_map_len(&mut rd).unwrap(), 3);
        let mut buf = [0u8; 64];
        assert_eq!(
            rmp::decode::read_str(&mut rd, &mut buf).unwrap(),
            "level.num"
        );
        assert_eq!(rmp::decode::read_int::<i64, _>(&mut rd).unwrap(), 3);
        assert_eq!(rmp::decode::read_str(&mut rd, &mut buf).unwrap(), "partial");
        let len = rmp::decode::read_str_len(&mut rd).unwrap() as usize;
        assert_eq!(&rd[..len], b"tail \xe2\x82");
        rd = &rd[len..];
        assert_eq!(
            rmp::decode::read_str(&mut rd, &mut buf).unwrap(),
            "@timestamp"
        );
        let secs = rmp::decode::read_f64(&mut rd).unwrap();
        assert!((secs - 1_715_679_001.123_456).abs() < 1e-5);
        assert!(rd.is_empty());
    }

    #[test]
    fn replace_dots_rewrites_keys_at_every_depth() {
        let options = EncodeOptions {
            replace_dots: Some("_".into()),
            ..with_time(TimeFormat::Epoch)
        };
        let mut e = event(sample_time());
        e.record.insert(
            "list",
            Value::Array(vec![Value::Map(Map::from_iter([(
                Bytes::from("a.b"),
                Value::Int(1),
            )]))]),
        );
        let parsed = json_of(&options, &e);
        assert_eq!(parsed["level_num"], 3);
        assert_eq!(parsed["kubernetes"]["pod_name"], "web-1");
        assert_eq!(
            parsed["kubernetes"]["labels"]["app_kubernetes_io/name"],
            "web"
        );
        assert_eq!(parsed["list"][0]["a_b"], 1);
        assert_eq!(parsed["log"], "GET /healthz \"200\"\n", "values untouched");

        let msgpack = EncodeOptions {
            format: Format::Msgpack,
            replace_dots: Some("__".into()),
            ..EncodeOptions::default()
        };
        let out = encode(&msgpack, &e).unwrap();
        let back = crate::msgpack::Reader::new(Bytes::from(out))
            .read_map()
            .unwrap();
        assert_eq!(back.get(b"level__num"), Some(&Value::Int(3)));
        let k8s = back.get(b"kubernetes").and_then(Value::as_map).unwrap();
        assert_eq!(k8s.get(b"pod__name"), Some(&Value::from("web-1")));
    }

    #[test]
    fn newline_then_compression_round_trip() {
        let e = event(sample_time());
        for compression in [Compression::Zlib, Compression::Gzip] {
            let options = EncodeOptions {
                append_newline: true,
                compression,
                ..EncodeOptions::default()
            };
            let out = encode(&options, &e).unwrap();
            let mut plain = Vec::new();
            match compression {
                Compression::Zlib => flate2::read::ZlibDecoder::new(&out[..])
                    .read_to_end(&mut plain)
                    .unwrap(),
                _ => flate2::read::GzDecoder::new(&out[..])
                    .read_to_end(&mut plain)
                    .unwrap(),
            };
            assert_eq!(plain.pop(), Some(b'\n'));
            let parsed: serde_json::Value = serde_json::from_slice(&plain).unwrap();
            assert_eq!(parsed["source"], "stdout");
        }
    }

    #[test]
    fn encoder_is_shareable_across_threads() {
        let encoder = Arc::new(
            Encoder::new(&EncodeOptions {
                compression: Compression::Gzip,
                ..with_time(TimeFormat::default())
            })
            .unwrap(),
        );
        let handles: Vec<_> = (0..2)
            .map(|_| {
                let encoder = Arc::clone(&encoder);
                std::thread::spawn(move || {
                    let mut out = Vec::new();
                    encoder.encode(&event(sample_time()), &mut out).unwrap();
                    out
                })
            })
            .collect();
        for handle in handles {
            let out = handle.join().unwrap();
            let mut plain = Vec::new();
            flate2::read::GzDecoder::new(&out[..])
                .read_to_end(&mut plain)
                .unwrap();
            let parsed: serde_json::Value = serde_json::from_slice(&plain).unwrap();
            assert_eq!(parsed["@timestamp"], "2024-05-14T09:30:01");
        }
    }
}
