//! CloudWatch Logs subscription payloads: the decoder behind the Lambda forwarder
//! (`logferry-lambda`).
//!
//! CloudWatch Logs delivers a batch of log events as base64(gzip(JSON)):
//!
//! ```text
//! {"messageType": "DATA_MESSAGE" | "CONTROL_MESSAGE", "owner": "...", "logGroup": "...",
//!  "logStream": "...", "subscriptionFilters": ["..."],
//!  "logEvents": [{"id": "...", "timestamp": <ms>, "message": "..."}]}
//! ```
//!
//! It arrives either as a direct Lambda subscription event (`{"awslogs": {"data": "..."}}`) or as
//! the data of Kinesis records (a Kinesis trigger event, `{"Records": [{"kinesis": {"data":
//! "..."}}]}`), where the gzip is told apart by its `1F 8B` magic. Kinesis records without that
//! magic were written by logferry's own Kinesis sink: KPL-aggregated (deaggregated here) or plain.
//!
//! A DATA_MESSAGE becomes one [`Event`] per log event: `message`, the event's `timestamp` as the
//! record time, and the batch's `logGroup`, `logStream`, `owner`, `subscriptionFilters` and the
//! event's `id` as fields (names configurable in [`CloudwatchConfig`]). `id` is a stable key a
//! consumer can use to drop the duplicates a retried invocation produces. A CONTROL_MESSAGE (a
//! health check CloudWatch Logs sends when a subscription is created) carries no log data: it
//! is skipped and counted.
//!
//! Untrusted input never panics: every malformed payload is a [`CloudwatchError`] that names
//! what was wrong, and decompression is bounded ([`CloudwatchConfig::max_decompressed_size`]).

use std::io::Read;
use std::sync::Arc;

use base64::Engine;
use bytes::Bytes;
use serde::Deserialize;

use crate::config::field::FieldError;
use crate::config::units::{ByteSize, Duration};
use crate::event::{Event, EventTime, Map, Tag, Value};
use crate::kinesis_record::kpl::{self, KplError};
use crate::kinesis_record::Record;

/// The gzip magic number.
const GZIP_MAGIC: [u8; 2] = [0x1F, 0x8B];

/// Options of `type = "cloudwatch_logs"`: how `logferry-lambda` turns CloudWatch Logs
/// subscription payloads into records. Every key name option may be set to `""` to leave that
/// field out (except `message_key`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CloudwatchConfig {
    /// Tag of the records, for `match` in transforms and sinks. Default `cloudwatch_logs`.
    pub tag: String,
    /// When a log event's message is a JSON object, use its keys as the record's fields instead
    /// of a `message` string. A message that is not a JSON object stays as it is. Default false.
    pub parse_json: bool,
    /// Field holding the log event's message. Default `message`.
    pub message_key: String,
    /// Field holding the log group name. Default `logGroup`.
    pub log_group_key: String,
    /// Field holding the log stream name. Default `logStream`.
    pub log_stream_key: String,
    /// Field holding the AWS account id that owns the log group. Default `owner`.
    pub owner_key: String,
    /// Field holding the subscription filter names (an array). Default `subscriptionFilters`.
    pub subscription_filters_key: String,
    /// Field holding the log event id, a stable dedupe key. Default `id`.
    pub id_key: String,
    /// Largest decompressed payload accepted (CloudWatch Logs batches are at most 1 MiB of
    /// events; the limit guards against gzip bombs). Default `16MiB`.
    pub max_decompressed_size: ByteSize,
    /// How long before the function's timeout an invocation gives up waiting for delivery and
    /// returns an error, so that it fails cleanly instead of being killed mid-send. Default `1s`.
    pub safety_margin: Duration,
}

impl Default for CloudwatchConfig {
    fn default() -> Self {
        CloudwatchConfig {
            tag: "cloudwatch_logs".to_string(),
            parse_json: false,
            message_key: "message".to_string(),
            log_group_key: "logGroup".to_string(),
            log_stream_key: "logStream".to_string(),
            owner_key: "owner".to_string(),
            subscription_filters_key: "subscriptionFilters".to_string(),
            id_key: "id".to_string(),
            max_decompressed_size: ByteSize::mib(16),
            safety_margin: Duration::from_secs(1),
        }
    }
}

impl CloudwatchConfig {
    /// Semantic checks the loader reports with the key's line.
    pub fn validate(&self) -> Result<(), Vec<FieldError>> {
        let mut problems = Vec::new();
        if self.tag.is_empty() {
            problems.push(FieldError::new("tag", "must not be empty"));
        }
        if self.message_key.is_empty() {
            problems.push(FieldError::new(
                "message_key",
                "must not be empty: the message needs a field",
            ));
        }
        if self.max_decompressed_size.bytes() == 0 {
            problems.push(FieldError::new(
                "max_decompressed_size",
                "must be above 0, e.g. \"16MiB\"",
            ));
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(problems)
        }
    }
}

/// Why a payload could not be decoded. Each message names the part of the input at fault.
#[derive(Debug, thiserror::Error)]
pub enum CloudwatchError {
    #[error("the Lambda event is not valid JSON: {0}")]
    EventJson(serde_json::Error),
    #[error(
        "the event has no `awslogs` object (nor Kinesis `Records`): it is not a CloudWatch Logs \
         subscription event"
    )]
    MissingAwslogs,
    #[error("`awslogs.data` is missing or is not a string")]
    MissingData,
    #[error("{what} is not valid base64: {source}")]
    Base64 {
        what: &'static str,
        source: base64::DecodeError,
    },
    #[error("the payload is not gzip: it starts with {found}, not the gzip magic 1f 8b")]
    NotGzip { found: String },
    #[error("the gzip payload is truncated or corrupt: {0}")]
    Gzip(std::io::Error),
    #[error(
        "the gzip payload decompresses to more than {limit} bytes (max_decompressed_size); \
         refusing it"
    )]
    TooLarge { limit: usize },
    #[error("the decompressed payload is not a CloudWatch Logs message (bad JSON): {0}")]
    Json(serde_json::Error),
    #[error("unknown messageType `{0}`; expected DATA_MESSAGE or CONTROL_MESSAGE")]
    UnknownMessageType(String),
    #[error("Kinesis record {index}: {message}")]
    KinesisRecord { index: usize, message: String },
    #[error("KPL-aggregated Kinesis record: {0}")]
    Kpl(#[from] KplError),
}

/// Records decoded from one payload (or one whole event).
#[derive(Debug, Default)]
pub struct Decoded {
    pub events: Vec<Event>,
    /// Approximate size of the records, for the router's byte accounting.
    pub bytes: usize,
    /// CONTROL_MESSAGE payloads skipped.
    pub control_messages: usize,
}

impl Decoded {
    fn append(&mut self, other: Decoded) {
        self.events.extend(other.events);
        self.bytes += other.bytes;
        self.control_messages += other.control_messages;
    }
}

/// One record of a Kinesis trigger event, decoded on its own so that a failure affects only it.
#[derive(Debug)]
pub struct KinesisTriggerRecord {
    /// `kinesis.sequenceNumber`: the `itemIdentifier` of a `batchItemFailures` entry.
    pub sequence_number: String,
    pub decoded: Result<Decoded, CloudwatchError>,
}

/// What a Lambda event holds.
#[derive(Debug)]
pub enum LambdaInput {
    /// A direct subscription event (`awslogs.data`).
    Awslogs(Decoded),
    /// A Kinesis trigger event, record by record.
    Kinesis(Vec<KinesisTriggerRecord>),
}

/// Turns payloads into records; built once from the config.
#[derive(Debug, Clone)]
pub struct Decoder {
    tag: Tag,
    parse_json: bool,
    message_key: Bytes,
    log_group_key: Option<Bytes>,
    log_stream_key: Option<Bytes>,
    owner_key: Option<Bytes>,
    subscription_filters_key: Option<Bytes>,
    id_key: Option<Bytes>,
    max_decompressed_size: usize,
}

/// The JSON inside a payload. Only `messageType` is required; absent strings are empty.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Payload {
    message_type: String,
    #[serde(default)]
    owner: String,
    #[serde(default)]
    log_group: String,
    #[serde(default)]
    log_stream: String,
    #[serde(default)]
    subscription_filters: Vec<String>,
    #[serde(default)]
    log_events: Vec<LogEvent>,
}

#[derive(Deserialize)]
struct LogEvent {
    #[serde(default)]
    id: EventId,
    timestamp: i64,
    message: String,
}

/// AWS sends `id` as a decimal string; moto as an integer. Both become a string.
#[derive(Deserialize, Default)]
#[serde(untagged)]
enum EventId {
    Str(String),
    Int(u64),
    #[default]
    Missing,
}

impl EventId {
    fn into_string(self) -> String {
        match self {
            EventId::Str(s) => s,
            EventId::Int(i) => i.to_string(),
            EventId::Missing => String::new(),
        }
    }
}

fn key(name: &str) -> Option<Bytes> {
    (!name.is_empty()).then(|| Bytes::copy_from_slice(name.as_bytes()))
}

/// Overhead counted per record on top of its message, for byte accounting.
const RECORD_OVERHEAD: usize = 128;

impl Decoder {
    pub fn new(config: &CloudwatchConfig) -> Decoder {
        Decoder {
            tag: Arc::from(config.tag.as_str()),
            parse_json: config.parse_json,
            message_key: Bytes::copy_from_slice(config.message_key.as_bytes()),
            log_group_key: key(&config.log_group_key),
            log_stream_key: key(&config.log_stream_key),
            owner_key: key(&config.owner_key),
            subscription_filters_key: key(&config.subscription_filters_key),
            id_key: key(&config.id_key),
            max_decompressed_size: config.max_decompressed_size.as_usize(),
        }
    }

    /// The tag records are submitted under.
    pub fn tag(&self) -> &Tag {
        &self.tag
    }

    /// Decodes a whole Lambda event (its JSON bytes).
    pub fn decode_event_bytes(&self, event: &[u8]) -> Result<LambdaInput, CloudwatchError> {
        let value: serde_json::Value =
            serde_json::from_slice(event).map_err(CloudwatchError::EventJson)?;
        self.decode_event(&value)
    }

    /// Decodes a Lambda event: a direct subscription event, or a Kinesis trigger event.
    pub fn decode_event(&self, event: &serde_json::Value) -> Result<LambdaInput, CloudwatchError> {
        if let Some(awslogs) = event.get("awslogs") {
            let data = awslogs
                .get("data")
                .and_then(serde_json::Value::as_str)
                .ok_or(CloudwatchError::MissingData)?;
            return self.decode_base64(data).map(LambdaInput::Awslogs);
        }
        if let Some(records) = event.get("Records").and_then(serde_json::Value::as_array) {
            let is_kinesis = |r: &serde_json::Value| r.get("kinesis").is_some();
            if !records.is_empty() && records.iter().all(is_kinesis) {
                return Ok(LambdaInput::Kinesis(
                    records
                        .iter()
                        .enumerate()
                        .map(|(index, r)| self.decode_trigger_record(index, r))
                        .collect(),
                ));
            }
        }
        Err(CloudwatchError::MissingAwslogs)
    }

    fn decode_trigger_record(
        &self,
        index: usize,
        record: &serde_json::Value,
    ) -> KinesisTriggerRecord {
        let kinesis = &record["kinesis"];
        let text = |name: &str| kinesis.get(name).and_then(serde_json::Value::as_str);
        let sequence_number = text("sequenceNumber").unwrap_or_default().to_string();
        let decoded = (|| {
            let data = text("data").ok_or_else(|| CloudwatchError::KinesisRecord {
                index,
                message: "`kinesis.data` is missing or is not a string".to_string(),
            })?;
            let data = base64::engine::general_purpose::STANDARD
                .decode(data)
                .map_err(|source| CloudwatchError::Base64 {
                    what: "`kinesis.data`",
                    source,
                })?;
            let arrival = kinesis
                .get("approximateArrivalTimestamp")
                .and_then(serde_json::Value::as_f64)
                .map(EventTime::from_f64)
                .unwrap_or_else(EventTime::now);
            let partition_key = text("partitionKey").unwrap_or_default();
            self.decode_kinesis_data(Bytes::from(data), partition_key, arrival)
        })();
        KinesisTriggerRecord {
            sequence_number,
            decoded,
        }
    }

    /// Decodes `awslogs.data`: base64, then gzip, then JSON.
    pub fn decode_base64(&self, data: &str) -> Result<Decoded, CloudwatchError> {
        let gz = base64::engine::general_purpose::STANDARD
            .decode(data.trim())
            .map_err(|source| CloudwatchError::Base64 {
                what: "`awslogs.data`",
                source,
            })?;
        self.decode_gzip(&gz)
    }

    /// Decodes the data of a Kinesis record: a CloudWatch Logs gzip payload (told by `1F 8B`),
    /// else records written by logferry's Kinesis sink, KPL-aggregated or plain. Those become
    /// their JSON object's fields when they are one, else `message_key` = the data; their time
    /// is `arrival` (the record's approximate arrival time).
    pub fn decode_kinesis_data(
        &self,
        data: Bytes,
        partition_key: &str,
        arrival: EventTime,
    ) -> Result<Decoded, CloudwatchError> {
        if data.starts_with(&GZIP_MAGIC) {
            return self.decode_gzip(&data);
        }
        let users = kpl::deaggregate(Record::new(partition_key, data))?;
        let mut out = Decoded::default();
        for user in users {
            if user.data.starts_with(&GZIP_MAGIC) {
                out.append(self.decode_gzip(&user.data)?);
                continue;
            }
            out.bytes += user.data.len() + RECORD_OVERHEAD;
            let record = match serde_json::from_slice::<serde_json::Value>(&user.data) {
                Ok(serde_json::Value::Object(o)) => match Value::from(serde_json::Value::Object(o))
                {
                    Value::Map(m) => m,
                    _ => Map::new(),
                },
                _ => {
                    let mut m = Map::with_capacity(1);
                    m.push(self.message_key.clone(), Value::Str(user.data));
                    m
                }
            };
            out.events
                .push(Event::new(self.tag.clone(), arrival, record));
        }
        Ok(out)
    }

    /// Decodes a gzip payload (several concatenated members are read as one stream).
    pub fn decode_gzip(&self, gz: &[u8]) -> Result<Decoded, CloudwatchError> {
        if !gz.starts_with(&GZIP_MAGIC) {
            let found = gz
                .iter()
                .take(4)
                .map(|b| format!("{b:02x}"))
                .collect::<Vec<_>>()
                .join(" ");
            let found = if found.is_empty() {
                "nothing (it is empty)".to_string()
            } else {
                found
            };
            return Err(CloudwatchError::NotGzip { found });
        }
        let limit = self.max_decompressed_size;
        let mut json = Vec::with_capacity(gz.len().saturating_mul(4).min(limit));
        flate2::read::MultiGzDecoder::new(gz)
            .take(limit as u64 + 1)
            .read_to_end(&mut json)
            .map_err(CloudwatchError::Gzip)?;
        if json.len() > limit {
            return Err(CloudwatchError::TooLarge { limit });
        }
        self.decode_json(&json)
    }

    /// Decodes the JSON of a payload.
    pub fn decode_json(&self, json: &[u8]) -> Result<Decoded, CloudwatchError> {
        let payload: Payload = serde_json::from_slice(json).map_err(CloudwatchError::Json)?;
        match payload.message_type.as_str() {
            "CONTROL_MESSAGE" => {
                return Ok(Decoded {
                    control_messages: 1,
                    ..Decoded::default()
                })
            }
            "DATA_MESSAGE" => {}
            _ => return Err(CloudwatchError::UnknownMessageType(payload.message_type)),
        }
        let group = Value::from(payload.log_group);
        let stream = Value::from(payload.log_stream);
        let owner = Value::from(payload.owner);
        let filters = Value::Array(
            payload
                .subscription_filters
                .into_iter()
                .map(Value::from)
                .collect(),
        );
        let mut out = Decoded {
            events: Vec::with_capacity(payload.log_events.len()),
            ..Decoded::default()
        };
        for event in payload.log_events {
            out.bytes += event.message.len() + RECORD_OVERHEAD;
            let mut record = self.message_record(event.message);
            let mut put = |key: &Option<Bytes>, value: Value| {
                if let Some(key) = key {
                    record.insert(key.clone(), value);
                }
            };
            put(&self.log_group_key, group.clone());
            put(&self.log_stream_key, stream.clone());
            put(&self.owner_key, owner.clone());
            put(&self.subscription_filters_key, filters.clone());
            put(&self.id_key, Value::from(event.id.into_string()));
            out.events.push(Event::new(
                self.tag.clone(),
                EventTime::from_millis(event.timestamp),
                record,
            ));
        }
        Ok(out)
    }

    /// The record's fields from the message: the parsed object with `parse_json` when the
    /// message is one, else the message under `message_key`.
    fn message_record(&self, message: String) -> Map {
        if self.parse_json && message.trim_start().starts_with('{') {
            if let Ok(serde_json::Value::Object(o)) = serde_json::from_str(&message) {
                if let Value::Map(m) = Value::from(serde_json::Value::Object(o)) {
                    return m;
                }
            }
        }
        let mut m = Map::with_capacity(6);
        m.push(self.message_key.clone(), Value::from(message));
        m
    }
}

#[cfg(test)]
mod tests;
