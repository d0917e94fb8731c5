//! One dead letter: a line of JSON that holds the record exactly, and reads back into the same
//! [`Event`].
//!
//! ```json
//! {"time":"2026-11-22T07:38:55.123456Z","sink":"kinesis.0","reason":"too_large",
//!  "error":"record is 2000000 bytes ...","tag":"app.web",
//!  "event_time":"2026-11-22T07:38:54.000000001Z","record":{"log":"..."}}
//! ```
//!
//! JSON cannot say everything a msgpack record can, so a few values are written as a one-key
//! object whose key is a marker:
//!
//! | value | written as |
//! |---|---|
//! | `str` holding bytes that are not UTF-8 | `{"$base64": "<standard base64>"}` |
//! | `bin` | `{"$bin": "<standard base64>"}` |
//! | extension type | `{"$ext": [type, "<standard base64>"]}` |
//! | float NaN / ±infinity | `{"$float": "NaN" \| "inf" \| "-inf"}` |
//! | map with a key that is not UTF-8, a duplicate key, or a lone key that is a marker | `{"$map": [[key, value], ...]}` |
//!
//! Everything else is plain JSON: valid UTF-8 strings as strings, integers as integers, floats
//! with a fraction or exponent (so they read back as floats), maps as objects in their order.
//! `event_time` is RFC 3339 with nine fractional digits (or `[secs, nanos]` for a time outside
//! the years 1–9999).

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use bytes::Bytes;
use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{json, Map as JsonMap, Number, Value as Json};

use crate::event::{Event, EventTime, Map, Value};

const MARKERS: [&str; 5] = ["$base64", "$bin", "$ext", "$float", "$map"];

/// What is known about a dead letter besides the record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Meta<'a> {
    /// The sink that could not deliver the record.
    pub sink: &'a str,
    /// Why: `too_large`, `unencodable`, `rejected`, `invalid`, `topic_not_allowed`, ...
    pub reason: &'a str,
    /// The destination's (or encoder's) message, if any.
    pub error: Option<&'a str>,
}

/// Appends one dead letter (with its trailing `\n`) to `out`; `now` is when it was
/// dead-lettered.
pub fn write_line(out: &mut Vec<u8>, now: DateTime<Utc>, meta: &Meta<'_>, event: &Event) {
    let line = json!({
        "time": now.to_rfc3339_opts(SecondsFormat::Micros, true),
        "sink": meta.sink,
        "reason": meta.reason,
        "error": meta.error,
        "tag": &*event.tag,
        "event_time": time_to_json(event.time),
        "record": map_to_json(&event.record),
    });
    // Writing a `serde_json::Value` into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, &line);
    out.push(b'\n');
}

/// A dead letter read back.
#[derive(Debug, Clone, PartialEq)]
pub struct Letter {
    pub time: String,
    pub sink: String,
    pub reason: String,
    pub error: Option<String>,
    pub event: Event,
}

/// A line that is not a dead letter.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LineError {
    #[error("not JSON: {0}")]
    Json(String),
    #[error("`{0}` is missing or has the wrong type")]
    Field(&'static str),
    #[error("`event_time`: {0}")]
    Time(String),
    #[error("`record`: {0}")]
    Value(String),
}

/// Parses one line written by [`write_line`].
pub fn parse_line(line: &[u8]) -> Result<Letter, LineError> {
    let json: Json = serde_json::from_slice(line).map_err(|e| LineError::Json(e.to_string()))?;
    let Json::Object(mut fields) = json else {
        return Err(LineError::Json("a dead letter is a JSON object".into()));
    };
    let mut text = |key: &'static str| match fields.remove(key) {
        Some(Json::String(s)) => Ok(s),
        _ => Err(LineError::Field(key)),
    };
    let time = text("time")?;
    let sink = text("sink")?;
    let reason = text("reason")?;
    let tag = text("tag")?;
    let error = match fields.remove("error") {
        Some(Json::String(s)) => Some(s),
        Some(Json::Null) | None => None,
        Some(_) => return Err(LineError::Field("error")),
    };
    let event_time = time_from_json(fields.remove("event_time").unwrap_or(Json::Null))?;
    let record = match fields.remove("record") {
        Some(record) => match value_from_json(record).map_err(LineError::Value)? {
            Value::Map(map) => map,
            _ => return Err(LineError::Value("the record must be a map".into())),
        },
        None => return Err(LineError::Field("record")),
    };
    Ok(Letter {
        time,
        sink,
        reason,
        error,
        event: Event::new(tag.into(), event_time, record),
    })
}

fn time_to_json(time: EventTime) -> Json {
    match DateTime::<Utc>::from_timestamp(time.secs, time.nanos) {
        Some(t) if (1..=9999).contains(&chrono::Datelike::year(&t)) => {
            Json::String(t.to_rfc3339_opts(SecondsFormat::Nanos, true))
        }
        _ => json!([time.secs, time.nanos]),
    }
}

fn time_from_json(json: Json) -> Result<EventTime, LineError> {
    match json {
        Json::String(s) => {
            let t = DateTime::parse_from_rfc3339(&s).map_err(|e| LineError::Time(e.to_string()))?;
            Ok(EventTime::new(t.timestamp(), t.timestamp_subsec_nanos()))
        }
        Json::Array(parts) => match parts.as_slice() {
            [secs, nanos] => match (secs.as_i64(), nanos.as_u64()) {
                (Some(secs), Some(nanos)) if nanos < 1_000_000_000 => {
                    Ok(EventTime::new(secs, nanos as u32))
                }
                _ => Err(LineError::Time("expected [seconds, nanoseconds]".into())),
            },
            _ => Err(LineError::Time("expected [seconds, nanoseconds]".into())),
        },
        _ => Err(LineError::Field("event_time")),
    }
}

fn marker(key: &str, value: Json) -> Json {
    let mut object = JsonMap::with_capacity(1);
    object.insert(key.to_string(), value);
    Json::Object(object)
}

fn bytes_to_json(bytes: &[u8]) -> Json {
    match std::str::from_utf8(bytes) {
        Ok(s) => Json::String(s.to_string()),
        Err(_) => marker("$base64", Json::String(STANDARD.encode(bytes))),
    }
}

/// A value as JSON, with markers where JSON alone would lose something.
pub fn value_to_json(value: &Value) -> Json {
    match value {
        Value::Nil => Json::Null,
        Value::Bool(b) => Json::Bool(*b),
        Value::Int(i) => Json::Number((*i).into()),
        Value::UInt(u) => Json::Number((*u).into()),
        Value::Float(f) => match Number::from_f64(*f) {
            Some(n) => Json::Number(n),
            None => {
                let name = if f.is_nan() {
                    "NaN"
                } else if *f > 0.0 {
                    "inf"
                } else {
                    "-inf"
                };
                marker("$float", Json::String(name.into()))
            }
        },
        Value::Str(b) => bytes_to_json(b),
        Value::Bin(b) => marker("$bin", Json::String(STANDARD.encode(b))),
        Value::Array(items) => Json::Array(items.iter().map(value_to_json).collect()),
        Value::Map(map) => map_to_json(map),
        Value::Ext(kind, data) => marker("$ext", json!([kind, STANDARD.encode(data)])),
    }
}

fn map_to_json(map: &Map) -> Json {
    let plain = map.iter().all(|(k, _)| std::str::from_utf8(k).is_ok())
        && !(map.len() == 1
            && map
                .iter()
                .all(|(k, _)| MARKERS.iter().any(|m| m.as_bytes() == k.as_ref())))
        && !has_duplicate_keys(map);
    if plain {
        let mut object = JsonMap::with_capacity(map.len());
        for (k, v) in map.iter() {
            // Checked above: every key is UTF-8.
            let key = String::from_utf8_lossy(k).into_owned();
            object.insert(key, value_to_json(v));
        }
        Json::Object(object)
    } else {
        let pairs = map
            .iter()
            .map(|(k, v)| Json::Array(vec![bytes_to_json(k), value_to_json(v)]))
            .collect();
        marker("$map", Json::Array(pairs))
    }
}

fn has_duplicate_keys(map: &Map) -> bool {
    let keys: Vec<&Bytes> = map.iter().map(|(k, _)| k).collect();
    keys.iter()
        .enumerate()
        .any(|(i, k)| keys[..i].iter().any(|other| other == k))
}

fn base64_field(value: &Json, what: &str) -> Result<Bytes, String> {
    let text = value
        .as_str()
        .ok_or_else(|| format!("{what} must hold a base64 string"))?;
    STANDARD
        .decode(text)
        .map(Bytes::from)
        .map_err(|e| format!("{what}: not base64: {e}"))
}

fn key_from_json(json: Json) -> Result<Bytes, String> {
    match json {
        Json::String(s) => Ok(Bytes::from(s)),
        Json::Object(o) if o.len() == 1 && o.contains_key("$base64") => {
            base64_field(&o["$base64"], "$base64")
        }
        _ => Err("a $map key must be a string or {\"$base64\": ...}".into()),
    }
}

/// Reads a value written by [`value_to_json`].
pub fn value_from_json(json: Json) -> Result<Value, String> {
    Ok(match json {
        Json::Null => Value::Nil,
        Json::Bool(b) => Value::Bool(b),
        Json::Number(n) => {
            if let Some(i) = n.as_i64() {
                Value::Int(i)
            } else if let Some(u) = n.as_u64() {
                Value::UInt(u)
            } else {
                Value::Float(n.as_f64().unwrap_or(f64::NAN))
            }
        }
        Json::String(s) => Value::Str(Bytes::from(s)),
        Json::Array(items) => Value::Array(
            items
                .into_iter()
                .map(value_from_json)
                .collect::<Result<_, _>>()?,
        ),
        Json::Object(object) => {
            let lone_marker = object.len() == 1
                && object
                    .keys()
                    .next()
                    .is_some_and(|k| MARKERS.contains(&k.as_str()));
            if !lone_marker {
                let mut map = Map::with_capacity(object.len());
                for (k, v) in object {
                    map.push(Bytes::from(k), value_from_json(v)?);
                }
                return Ok(Value::Map(map));
            }
            let Some((key, inner)) = object.into_iter().next() else {
                return Ok(Value::Map(Map::new()));
            };
            match key.as_str() {
                "$base64" => Value::Str(base64_field(&inner, "$base64")?),
                "$bin" => Value::Bin(base64_field(&inner, "$bin")?),
                "$float" => match inner.as_str() {
                    Some("NaN") => Value::Float(f64::NAN),
                    Some("inf") => Value::Float(f64::INFINITY),
                    Some("-inf") => Value::Float(f64::NEG_INFINITY),
                    _ => return Err("$float must be \"NaN\", \"inf\" or \"-inf\"".into()),
                },
                "$ext" => match inner {
                    Json::Array(parts) if parts.len() == 2 => {
                        let kind = parts[0]
                            .as_i64()
                            .and_then(|k| i8::try_from(k).ok())
                            .ok_or("$ext type must be an integer from -128 to 127")?;
                        Value::Ext(kind, base64_field(&parts[1], "$ext data")?)
                    }
                    _ => return Err("$ext must be [type, base64]".into()),
                },
                _ => match inner {
                    // "$map"
                    Json::Array(pairs) => {
                        let mut map = Map::with_capacity(pairs.len());
                        for pair in pairs {
                            let Json::Array(mut kv) = pair else {
                                return Err("$map holds [key, value] pairs".into());
                            };
                            if kv.len() != 2 {
                                return Err("$map holds [key, value] pairs".into());
                            }
                            let value = value_from_json(kv.pop().unwrap_or(Json::Null))?;
                            let key = key_from_json(kv.pop().unwrap_or(Json::Null))?;
                            map.push(key, value);
                        }
                        Value::Map(map)
                    }
                    _ => return Err("$map must be an array of [key, value] pairs".into()),
                },
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(event: &Event) -> Letter {
        let mut out = Vec::new();
        let meta = Meta {
            sink: "k",
            reason: "too_large",
            error: Some("too big"),
        };
        write_line(&mut out, Utc::now(), &meta, event);
        assert_eq!(out.last(), Some(&b'\n'));
        assert_eq!(
            out.iter().filter(|&&b| b == b'\n').count(),
            1,
            "one line per letter"
        );
        parse_line(&out[..out.len() - 1]).unwrap()
    }

    fn map(pairs: Vec<(&[u8], Value)>) -> Map {
        pairs
            .into_iter()
            .map(|(k, v)| (Bytes::copy_from_slice(k), v))
            .collect()
    }

    #[test]
    fn every_value_survives_the_round_trip_exactly() {
        let nested = map(vec![
            (b"\xff\xfekey", Value::Int(1)),
            (b"dup", Value::Nil),
            (b"dup", Value::Bool(true)),
        ]);
        let record = map(vec![
            (b"log", Value::string("plain text \"quoted\"\nnewline é")),
            (
                b"broken",
                Value::Str(Bytes::from_static(b"half a char \xe2\x82")),
            ),
            (b"bin", Value::Bin(Bytes::from_static(&[0, 1, 2, 255]))),
            (b"neg", Value::Int(-5)),
            (b"big", Value::UInt(u64::MAX)),
            (b"float", Value::Float(1.0)),
            (b"pi", Value::Float(std::f64::consts::PI)),
            (b"negzero", Value::Float(-0.0)),
            (b"inf", Value::Float(f64::INFINITY)),
            (b"ninf", Value::Float(f64::NEG_INFINITY)),
            (b"ext", Value::Ext(-3, Bytes::from_static(b"\x01\x02"))),
            (
                b"arr",
                Value::Array(vec![Value::Nil, Value::Bool(false), Value::Map(nested)]),
            ),
            (
                b"lookalike",
                Value::Map(map(vec![(b"$bin", Value::string("not a marker"))])),
            ),
            (b"empty", Value::Map(Map::new())),
        ]);
        let event = Event::new(
            "app.web".into(),
            EventTime::new(1_700_000_000, 123_456_789),
            record,
        );
        let letter = round_trip(&event);
        assert_eq!(letter.event, event);
        assert_eq!(letter.sink, "k");
        assert_eq!(letter.reason, "too_large");
        assert_eq!(letter.error.as_deref(), Some("too big"));
        assert!(DateTime::parse_from_rfc3339(&letter.time).is_ok());
    }

    #[test]
    fn nan_and_odd_times_survive() {
        let event = Event::new(
            "t".into(),
            EventTime::new(i64::MAX / 2, 7),
            map(vec![(b"nan", Value::Float(f64::NAN))]),
        );
        let back = round_trip(&event).event;
        assert_eq!(back.time, event.time);
        assert!(matches!(back.record.get(b"nan"), Some(Value::Float(f)) if f.is_nan()));
        let old = Event::new("t".into(), EventTime::new(-1, 5), Map::new());
        assert_eq!(round_trip(&old).event, old);
    }

    #[test]
    fn the_line_is_readable_json_for_the_usual_record() {
        let event = Event::new(
            "app".into(),
            EventTime::new(0, 1),
            map(vec![
                (b"log", Value::string("hello")),
                (b"n", Value::Int(3)),
            ]),
        );
        let mut out = Vec::new();
        let meta = Meta {
            sink: "s",
            reason: "unencodable",
            error: None,
        };
        write_line(&mut out, Utc::now(), &meta, &event);
        let json: Json = serde_json::from_slice(&out).unwrap();
        assert_eq!(json["record"], json!({"log": "hello", "n": 3}));
        assert_eq!(json["event_time"], "1970-01-01T00:00:00.000000001Z");
        assert_eq!(json["error"], Json::Null);
        assert_eq!(json["tag"], "app");
    }

    #[test]
    fn malformed_lines_are_errors_not_panics() {
        for line in [
            &b"not json"[..],
            b"[]",
            b"{}",
            br#"{"time":"x","sink":"s","reason":"r","tag":"t","event_time":"nope","record":{}}"#,
            br#"{"time":"x","sink":"s","reason":"r","tag":"t","event_time":[0,0],"record":[1]}"#,
            br#"{"time":"x","sink":"s","reason":"r","tag":"t","event_time":[0,0],"record":{"a":{"$bin":"%%"}}}"#,
            br#"{"time":"x","sink":"s","reason":"r","tag":"t","event_time":[0,0],"record":{"$map":[[1,2]]}}"#,
        ] {
            assert!(parse_line(line).is_err(), "{}", String::from_utf8_lossy(line));
        }
    }
}
