//! A Kafka message turned into a record: the value parsed as a JSON object (`format = "json"`)
//! or kept as a string under `log_key`, the Kafka metadata under `metadata_key` on request, the
//! message timestamp as the record time, and the tag with `${topic}` replaced.

use std::collections::HashMap;

use bytes::Bytes;

use super::config::{KafkaSourceSettings, ValueFormat};
use super::transcode;
use crate::event::{Event, EventTime, Map, Tag};
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
    /// The last topic's tag: messages come in runs of one topic.
    last_tag: Option<(String, Tag)>,
    /// The metadata entry of the message being decoded (reused, not allocated per message).
    extra: Vec<u8>,
}

/// A decoded message.
pub struct Decoded {
    pub event: Event,
    /// The value was not what `format` expects (a poison message), and is kept raw.
    pub invalid: bool,
}

/// A message decoded into a shared buffer by [`Decoder::decode_into`].
pub struct Packed {
    pub tag: Tag,
    pub time: EventTime,
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
            last_tag: None,
            extra: Vec::new(),
        }
    }

    /// The tag of records of `topic`.
    pub fn tag(&mut self, topic: &str) -> Tag {
        if let Some((last, tag)) = &self.last_tag {
            if last == topic {
                return tag.clone();
            }
        }
        let tag = match self.tags.get(topic) {
            Some(tag) => tag.clone(),
            None => {
                let tag: Tag = self.tag_template.replace("${topic}", topic).as_str().into();
                self.tags.insert(topic.to_string(), tag.clone());
                tag
            }
        };
        self.last_tag = Some((topic.to_string(), tag.clone()));
        tag
    }

    /// The message as one record, on its own.
    pub fn decode(&mut self, message: &Message<'_>) -> Decoded {
        let mut out = Vec::with_capacity(message.payload.map_or(0, <[u8]>::len) + 32);
        let packed = self.decode_into(message, &mut out);
        let len = out.len();
        let bytes = Bytes::from(out);
        debug_assert_eq!(crate::msgpack::read::check_value(&bytes, 0, 0), Ok(len));
        Decoded {
            event: Event::new(packed.tag, packed.time, Map::from_checked_msgpack(bytes)),
            invalid: packed.invalid,
        }
    }

    /// Appends the message's record (a msgpack map, well-formed and nested no deeper than
    /// [`crate::msgpack::read::MAX_DEPTH`], ready for [`Map::from_checked_msgpack`]) to `out`,
    /// where a batch's records are packed one after the other.
    pub fn decode_into(&mut self, message: &Message<'_>, out: &mut Vec<u8>) -> Packed {
        let payload = message.payload.unwrap_or_default();
        let time = message
            .timestamp_ms
            .filter(|ms| *ms > 0)
            .map(EventTime::from_millis)
            .unwrap_or_else(EventTime::now);
        let mut extra = std::mem::take(&mut self.extra);
        extra.clear();
        if let Some(key) = &self.metadata_key {
            let _ = write::write_str(&mut extra, key);
            write_metadata(&mut extra, message);
        }
        let extra_entry = self.metadata_key.is_some().then_some(extra.as_slice());
        let invalid = match self.format {
            ValueFormat::Raw => {
                self.raw(payload, extra_entry, out);
                false
            }
            ValueFormat::Json => {
                // Not one JSON object, or nested deeper than a record may be: kept raw, as
                // a poison message.
                if transcode::object_to_msgpack(payload, extra_entry, out).is_some() {
                    false
                } else {
                    self.raw(payload, extra_entry, out);
                    true
                }
            }
        };
        self.extra = extra;
        let tag = match (&self.invalid_tag, invalid) {
            (Some(tag), true) => tag.clone(),
            _ => self.tag(message.topic),
        };
        Packed { tag, time, invalid }
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

/// The message's `topic`, `partition`, `offset`, `key` (string or nil) and `timestamp` (ms or
/// nil), as a msgpack map.
fn write_metadata(out: &mut Vec<u8>, message: &Message<'_>) {
    let _ = write::write_map_len(out, 5);
    let _ = write::write_str(out, b"topic");
    if write::write_str(out, message.topic.as_bytes()).is_err() {
        write::write_nil(out);
    }
    let _ = write::write_str(out, b"partition");
    write::write_int(out, i64::from(message.partition));
    let _ = write::write_str(out, b"offset");
    write::write_int(out, message.offset);
    let _ = write::write_str(out, b"key");
    match message.key {
        Some(key) if write::write_str(out, key).is_ok() => {}
        _ => write::write_nil(out),
    }
    let _ = write::write_str(out, b"timestamp");
    match message.timestamp_ms {
        Some(ms) => write::write_int(out, ms),
        None => write::write_nil(out),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::Value;
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
