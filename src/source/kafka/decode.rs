//! A Kafka message turned into a record: the value parsed as a JSON object (`format = "json"`)
//! or kept as a string under `log_key`, the Kafka metadata under `metadata_key` on request, the
//! message timestamp as the record time, and the tag with `${topic}` replaced.

use std::collections::HashMap;

use bytes::Bytes;

use super::config::{KafkaSourceSettings, ValueFormat};
use crate::event::{Event, EventTime, Map, Tag, Value};

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
        let (mut record, invalid) = match self.format {
            ValueFormat::Raw => (self.raw(payload), false),
            ValueFormat::Json => match parse_object(payload) {
                Some(record) => (record, false),
                None => (self.raw(payload), true),
            },
        };
        if let Some(key) = &self.metadata_key {
            record.push(key.clone(), Value::Map(metadata(message)));
        }
        let tag = match (&self.invalid_tag, invalid) {
            (Some(tag), true) => tag.clone(),
            _ => self.tag(message.topic),
        };
        Decoded {
            event: Event::new(tag, time, record),
            invalid,
        }
    }

    fn raw(&self, payload: &[u8]) -> Map {
        let mut record = Map::with_capacity(2);
        record.push(
            self.log_key.clone(),
            Value::Str(Bytes::copy_from_slice(payload)),
        );
        record
    }
}

/// The value as a JSON object, or `None` when it is anything else.
fn parse_object(payload: &[u8]) -> Option<Map> {
    match serde_json::from_slice::<serde_json::Value>(payload) {
        Ok(value @ serde_json::Value::Object(_)) => match Value::from(value) {
            Value::Map(map) => Some(map),
            _ => None,
        },
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
