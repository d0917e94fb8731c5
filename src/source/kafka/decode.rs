//! A Kafka message turned into a record: the value parsed as a JSON object (`format = "json"`)
//! or kept as a string under `log_key`, the Kafka metadata under `metadata_key` on request, the
//! message timestamp as the record time, and the tag with `${topic}` replaced.

use std::collections::HashMap;

use bytes::Bytes;

use super::config::{KafkaSourceSettings, ValueFormat};
use super::transcode;
use crate::event::{Event, EventTime, Map, Tag, Value};
use crate::msgpack::write;

/// What a Kafka message carries, independent of the client library (tests build these).
pub struct Message<'a> {
    pub topic: &'a str,
    pub partition: i32,
    pub offset: i64,
    pub key: Option<&'a [u8]>,
    pub payload: Option<&'a [u8]>,
    /// Milliseconds since the epoch, when the message has a timestamp.
    pub timestamp_ms: Option<i64>,
}

/// Turns messages into records.
pub struct Decoder {
    format: ValueFormat,
    log_key: Bytes,
    metadata_key: Option<Bytes>,
    tag_template: String,
    invalid_tag: Option<Tag>,
    tags: HashMap<String, Tag>,
}

/// A decoded message.
pub struct Decoded {
    pub event: Event,
    /// The value was not what `format` expects (a poison message), and is kept raw.
    pub invalid: bool,
}

impl Decoder {
    pub fn new(settings: &KafkaSourceSettings) -> Decoder {
        Decoder {
            format: settings.format,
            log_key: Bytes::copy_from_slice(settings.log_key.as_bytes()),
            metadata_key: settings
                .metadata_key
                .as_ref()
                .map(|k| Bytes::copy_from_slice(k.as_bytes())),
            tag_template: settings.tag.clone(),
            invalid_tag: settings.invalid_tag.as_deref().map(Tag::from),
            tags: HashMap::new(),
        }
    }

    /// The tag of records of `topic`.
    pub fn tag(&mut self, topic: &str) -> Tag {
        if let Some(tag) = self.tags.get(topic) {
            return tag.clone();
        }
        let tag: Tag = self.tag_template.replace("${topic}", topic).as_str().into();
        self.tags.insert(topic.to_string(), tag.clone());
        tag
    }

    pub fn decode(&mut self, message: &Message<'_>) -> Decoded {
        let payload = message.payload.unwrap_or_default();
        let time = message
            .timestamp_ms
            .filter(|ms| *ms > 0)
            .map(EventTime::from_millis)
            .unwrap_or_else(EventTime::now);
        let extra = self.metadata_key.as_ref().map(|key| {
            let mut entry = Vec::with_capacity(64);
            let _ = write::write_str(&mut entry, key);
            let _ = write::write_value(&mut entry, &Value::Map(metadata(message)));
            entry
        });
        let mut out = Vec::with_capacity(payload.len() + 32);
        let invalid = match self.format {
            ValueFormat::Raw => {
                self.raw(payload, extra.as_deref(), &mut out);
                false
            }
            ValueFormat::Json => {
                if transcode::object_to_msgpack(payload, extra.as_deref(), &mut out).is_some() {
                    false
                } else {
                    self.raw(payload, extra.as_deref(), &mut out);
                    true
                }
            }
        };
        let (record, invalid) = match to_map(out) {
            Some(record) => (record, invalid),
            // Nested deeper than a record may be: kept raw, as a poison message.
            None => {
                let mut out = Vec::with_capacity(payload.len() + 16);
                self.raw(payload, extra.as_deref(), &mut out);
                (to_map(out).unwrap_or_default(), true)
            }
        };
        let tag = match (&self.invalid_tag, invalid) {
            (Some(tag), true) => tag.clone(),
            _ => self.tag(message.topic),
        };
        Decoded {
            event: Event::new(tag, time, record),
            invalid,
        }
    }

    /// `{log_key: payload}` (plus the metadata entry) as a msgpack map.
    fn raw(&self, payload: &[u8], extra: Option<&[u8]>, out: &mut Vec<u8>) {
        let _ = write::write_map_len(out, 1 + usize::from(extra.is_some()));
        let _ = write::write_str(out, &self.log_key);
        if write::write_str(out, payload).is_err() {
            let _ = write::write_str(out, b"");
        }
        if let Some(extra) = extra {
            out.extend_from_slice(extra);
        }
    }
}

/// The record over its msgpack bytes, checked as every received record is.
fn to_map(out: Vec<u8>) -> Option<Map> {
    let len = out.len();
    let bytes = Bytes::from(out);
    match crate::msgpack::read::check_value(&bytes, 0, 0) {
        Ok(end) if end == len => Some(Map::from_checked_msgpack(bytes)),
        _ => None,
    }
}

fn metadata(message: &Message<'_>) -> Map {
    let mut map = Map::with_capacity(5);
    map.push(
        Bytes::from_static(b"topic"),
        Value::Str(Bytes::copy_from_slice(message.topic.as_bytes())),
    );
    map.push(
        Bytes::from_static(b"partition"),
        Value::Int(i64::from(message.partition)),
    );
    map.push(Bytes::from_static(b"offset"), Value::Int(message.offset));
    map.push(
        Bytes::from_static(b"key"),
        match message.key {
            Some(key) => Value::Str(Bytes::copy_from_slice(key)),
            None => Value::Nil,
        },
    );
    map.push(
        Bytes::from_static(b"timestamp"),
        match message.timestamp_ms {
            Some(ms) => Value::Int(ms),
            None => Value::Nil,
        },
    );
    map
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::kafka::config::KafkaSourceConfig;

    fn decoder(options: &str) -> Decoder {
        let config: KafkaSourceConfig =
            toml::from_str(&format!("brokers = \"a:1\"\ntopics = \"t\"\n{options}")).unwrap();
        Decoder::new(&config.validate().unwrap())
    }

    fn message<'a>(payload: &'a [u8]) -> Message<'a> {
        Message {
            topic: "app-logs",
            partition: 2,
            offset: 41,
            key: Some(b"k1"),
            payload: Some(payload),
            timestamp_ms: Some(1_700_000_000_123),
        }
    }

    fn json(event: &Event) -> serde_json::Value {
        let mut out = Vec::new();
        crate::encode::json::write_value(&mut out, &Value::Map(event.record.clone()));
        serde_json::from_slice(&out).unwrap()
    }

    #[test]
    fn json_values_become_records_with_metadata_and_kafka_time() {
        let mut d =
            decoder("format = \"json\"\ntag = \"kafka.${topic}\"\nmetadata_key = \"kafka\"");
        let out = d.decode(&message(br#"{"level":"info","n":3}"#));
        assert!(!out.invalid);
        assert_eq!(&*out.event.tag, "kafka.app-logs");
        assert_eq!(out.event.time.as_millis(), 1_700_000_000_123);
        assert_eq!(
            json(&out.event),
            serde_json::json!({"level": "info", "n": 3, "kafka": {
                "topic": "app-logs", "partition": 2, "offset": 41, "key": "k1",
                "timestamp": 1_700_000_000_123i64}})
        );
    }

    #[test]
    fn poison_messages_are_kept_raw_under_their_own_tag() {
        let mut d = decoder("format = \"json\"\ninvalid_tag = \"kafka.invalid\"");
        for bad in [&b"not json"[..], b"[1,2]", b"\"s\"", b"{\"a\":"] {
            let out = d.decode(&message(bad));
            assert!(out.invalid);
            assert_eq!(&*out.event.tag, "kafka.invalid");
            assert_eq!(
                out.event.record.get(b"log"),
                Some(&Value::Str(Bytes::copy_from_slice(bad)))
            );
        }
    }

    #[test]
    fn raw_values_go_under_log_key() {
        let mut d = decoder("format = \"raw\"\nlog_key = \"message\"");
        let out = d.decode(&message(b"plain text"));
        assert_eq!(
            json(&out.event),
            serde_json::json!({"message": "plain text"})
        );
        assert_eq!(&*out.event.tag, "kafka");
    }
}
