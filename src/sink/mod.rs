//! Sinks: where records go.
//!
//! - [`writer`]: `stdout` and `file`, one encoded record after another.
//! - [`kinesis`]: Kinesis Data Streams (PutRecords batching, KPL aggregation).
//! - [`cloudwatch_logs`]: CloudWatch Logs (PutLogEvents, log groups and streams on demand).
//! - [`kinesis_firehose`]: Kinesis Data Firehose (PutRecordBatch, simple aggregation).
//! - [`kafka`]: Kafka / Amazon MSK (rdkafka producer, MSK IAM tokens).
//! - [`null`]: discards records (and acknowledges them), counting them.
//! - [`backoff`]: exponential backoff with full jitter, for every sink that retries.
//! - [`settle`]: per-record outcomes into batch acknowledgements ([`settle::Tracker`]), for
//!   every sink.
//! - [`undeliverable`]: the one "dead-letter or drop, count and log" step of every sink.
//! - [`dead_letter`]: records that can never be delivered, kept in files per sink and replayed.
//!
//! Every sink reads its own bounded queue ([`crate::buffer::queue`]), encodes with the shared
//! [`crate::encode`] module, and completes each batch only once it is delivered, which is what
//! releases upstream acknowledgements. A sink does not know which source fed it.
//!
//! Every sink has the same three verbs: its config's `validate()`, called by
//! [`SinkConfig::parse`]; `build(config, cx) -> Result<Self, SinkError>`, which opens files and
//! clients (failing start-up when the sink cannot work at all); and `run(self, queue)`, which
//! delivers until the queue is closed and drained. Health goes to `cx.health`, the process's
//! one registry behind `/health`.

pub mod backoff;
pub mod cloudwatch_logs;
pub mod dead_letter;
pub mod kafka;
pub mod kinesis;
pub mod kinesis_firehose;
pub mod null;
pub mod settle;
pub mod undeliverable;
pub mod writer;

use std::sync::Arc;

use serde::Deserialize;

use crate::buffer::QueueReceiver;
use crate::config::field::{EntryError, FieldError};
use crate::health::Health;
use crate::metrics::{ComponentMetrics, Metrics};

/// A sink's configuration, by `type`.
#[derive(Debug, Clone)]
pub enum SinkConfig {
    Stdout(writer::WriterConfig),
    File(writer::WriterConfig),
    Kafka(Box<kafka::config::KafkaConfig>),
    Kinesis(Box<kinesis::KinesisConfig>),
    CloudWatchLogs(Box<cloudwatch_logs::CloudWatchLogsConfig>),
    KinesisFirehose(Box<kinesis_firehose::KinesisFirehoseConfig>),
    Null(null::NullConfig),
}

/// The `type` values of sinks.
pub const TYPES: &[&str] = &[
    "stdout",
    "file",
    "kinesis",
    "kafka",
    "cloudwatch_logs",
    "kinesis_firehose",
    "null",
];

impl SinkConfig {
    /// Deserializes a `[[sinks]]` entry's own options (common keys already removed).
    pub fn parse(kind: &str, de: toml::Deserializer<'_>) -> Result<SinkConfig, EntryError> {
        match kind {
            "stdout" => {
                let c = writer::WriterConfig::deserialize(de)?;
                if c.path.is_some() {
                    return Err(FieldError::new(
                        "path",
                        "stdout writes to standard output; use type = \"file\" to write a file",
                    )
                    .into());
                }
                c.validate()?;
                Ok(SinkConfig::Stdout(c))
            }
            "file" => {
                let c = writer::WriterConfig::deserialize(de)?;
                if c.path.is_none() {
                    return Err(FieldError::new("path", "missing: the file to write to").into());
                }
                c.validate()?;
                Ok(SinkConfig::File(c))
            }
            "kafka" => {
                let c = kafka::config::KafkaConfig::deserialize(de)?;
                c.validate()?;
                Ok(SinkConfig::Kafka(Box::new(c)))
            }
            "kinesis" => {
                let c = kinesis::KinesisConfig::deserialize(de)?;
                c.validate()?;
                Ok(SinkConfig::Kinesis(Box::new(c)))
            }
            "cloudwatch_logs" => {
                let c = cloudwatch_logs::CloudWatchLogsConfig::deserialize(de)?;
                c.validate()?;
                Ok(SinkConfig::CloudWatchLogs(Box::new(c)))
            }
            "kinesis_firehose" => {
                let c = kinesis_firehose::KinesisFirehoseConfig::deserialize(de)?;
                c.validate()?;
                Ok(SinkConfig::KinesisFirehose(Box::new(c)))
            }
            "null" => {
                let c = null::NullConfig::deserialize(de)?;
                c.validate()?;
                Ok(SinkConfig::Null(c))
            }
            other => Err(EntryError::UnknownType {
                given: other.to_string(),
                known: TYPES,
            }),
        }
    }

    /// Opens files and clients. Fails start-up when the sink cannot work at all.
    pub async fn build(&self, cx: SinkContext) -> Result<Sink, SinkError> {
        match self {
            SinkConfig::Stdout(c) | SinkConfig::File(c) => {
                Ok(Sink::Writer(writer::WriterSink::build(c, cx).await?))
            }
            SinkConfig::Kafka(c) => Ok(Sink::Kafka(kafka::KafkaSink::build(c, cx).await?)),
            SinkConfig::Kinesis(c) => Ok(Sink::Kinesis(kinesis::KinesisSink::build(c, cx).await?)),
            SinkConfig::CloudWatchLogs(c) => Ok(Sink::CloudWatchLogs(
                cloudwatch_logs::CloudWatchLogsSink::build(c, cx).await?,
            )),
            SinkConfig::KinesisFirehose(c) => Ok(Sink::KinesisFirehose(
                kinesis_firehose::KinesisFirehoseSink::build(c, cx).await?,
            )),
            SinkConfig::Null(c) => Ok(Sink::Null(null::NullSink::build(c, cx).await?)),
        }
    }
}

/// What a sink needs from the process.
#[derive(Clone)]
pub struct SinkContext {
    pub name: String,
    pub metrics: ComponentMetrics,
    pub health: Arc<Health>,
    /// The process registry, for sink-specific metrics ([`Metrics::shared`]).
    pub registry: Arc<Metrics>,
    /// Where records that can never be delivered go (`dead_letter_path`); `None`: they are
    /// counted as dropped and logged.
    pub dead_letters: Option<dead_letter::DeadLetters>,
}

/// A built sink, ready to run (one per configured sink, so variant sizes do not matter).
#[allow(clippy::large_enum_variant)]
pub enum Sink {
    Writer(writer::WriterSink),
    Kafka(kafka::KafkaSink),
    Kinesis(kinesis::KinesisSink),
    CloudWatchLogs(cloudwatch_logs::CloudWatchLogsSink),
    KinesisFirehose(kinesis_firehose::KinesisFirehoseSink),
    Null(null::NullSink),
}

impl Sink {
    /// Delivers batches until the queue is closed and empty, then flushes.
    pub async fn run(self, input: QueueReceiver) {
        match self {
            Sink::Writer(s) => s.run(input).await,
            Sink::Kafka(s) => s.run(input).await,
            Sink::Kinesis(s) => s.run(input).await,
            Sink::CloudWatchLogs(s) => s.run(input).await,
            Sink::KinesisFirehose(s) => s.run(input).await,
            Sink::Null(s) => s.run(input).await,
        }
    }
}

/// A sink could not start.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    #[error("sink `{name}`: cannot open {path}: {source}")]
    Open {
        name: String,
        path: String,
        source: std::io::Error,
    },
    #[error("sink `{name}`: {message}")]
    Setup { name: String, message: String },
}
