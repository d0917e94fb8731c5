//! The Kinesis Data Firehose sink (`type = "kinesis_firehose"`), Fluent Bit's
//! `kinesis_firehose` output (and aws-for-fluent-bit's `firehose`) for FireLens.
//!
//! - [`config`]: the options, named as Fluent Bit names them.
//! - [`batch`]: PutRecordBatch limits (500 records, 4 MiB, 1,000 KiB per record) and
//!   `simple_aggregation`.
//! - [`api`]: the client, PutRecordBatch, and what failures mean.
//! - `task`: the running loop.
//!
//! One record's way: the queue hands an input batch to the task, which encodes each record
//! (JSON with `data_keys`, `log_key`, `time_key`; a newline; gzip), refuses what is over
//! 1,000 KiB (dead-lettered with the reason, or counted and logged as dropped), and adds it
//! to the batcher (joined with others into one Firehose record with `simple_aggregation`).
//! Full calls, or everything at `flush`, go out up to `max_in_flight` at once. From an
//! answer, accepted records are acknowledged and exactly the refused ones are retried after a
//! backoff with full jitter; a whole failed call is retried after a backoff, configuration
//! errors (permissions, a missing stream) reported on `/health` and retried slowly. An input
//! batch is acknowledged upstream once each of its records was accepted, dead-lettered or
//! dropped for good.

pub mod api;
pub mod batch;
pub mod config;
mod task;

pub use config::KinesisFirehoseConfig;

use super::undeliverable::Undeliverable;
use super::{SinkContext, SinkError};
use crate::buffer::QueueReceiver;
use crate::encode::Encoder;

/// A Firehose sink ready to run.
pub struct KinesisFirehoseSink {
    cx: SinkContext,
    /// Where records that can never be sent go: the dead-letter file, or counted drops.
    undeliverable: Undeliverable,
    config: KinesisFirehoseConfig,
    client: aws_sdk_firehose::Client,
    region: String,
    encoder: Encoder,
}

impl KinesisFirehoseSink {
    /// Builds the encoder and the client; nothing is called before the first records.
    pub async fn build(
        config: &KinesisFirehoseConfig,
        cx: SinkContext,
    ) -> Result<KinesisFirehoseSink, SinkError> {
        let setup = |message: String| SinkError::Setup {
            name: cx.name.clone(),
            message,
        };
        let encoder = config.encoder().map_err(|e| setup(e.to_string()))?;
        let clients = api::build(config, &cx.name, &cx.metrics)
            .await
            .map_err(|e| setup(e.to_string()))?;
        tracing::info!(sink = %cx.name, region = %clients.region,
            delivery_stream = %config.delivery_stream, "Firehose sink ready");
        Ok(KinesisFirehoseSink {
            config: config.clone(),
            client: clients.firehose,
            region: clients.region,
            encoder,
            undeliverable: Undeliverable::new(&cx),
            cx,
        })
    }

    /// Delivers until the queue is closed and every record is settled.
    pub async fn run(self, input: QueueReceiver) {
        let dead_letters = self.cx.dead_letters.clone();
        task::Task::new(self).run(input).await;
        if let Some(dead_letters) = dead_letters {
            dead_letters.drained().await;
        }
    }
}
