//! The CloudWatch Logs sink (`type = "cloudwatch_logs"`), Fluent Bit's `cloudwatch_logs`
//! output for FireLens task definitions.
//!
//! - [`config`]: the options, named as Fluent Bit names them.
//! - [`template`]: `log_group_template` / `log_stream_template` and their fallbacks.
//! - [`names`]: a record's group and stream name, and CloudWatch's rules for names.
//! - [`batch`]: PutLogEvents limits (events, bytes with 26 per event, time order, 24 hours per
//!   call, per-event age and size) and what a partial refusal means per event.
//! - [`api`]: the client, stream and group creation, PutLogEvents, and what failures mean.
//! - `task`: the running loop.
//!
//! One record's way: the queue hands an input batch to the task, which encodes each record
//! (JSON, or the value of `log_key`), finds its log group and stream, and checks it against
//! the per-event limits (a record that can never be sent is dead-lettered with the reason,
//! or counted and logged as dropped). Events wait per stream until `flush` or a full call,
//! are sorted by time and cut into calls within every limit. At most one call per stream is
//! in flight (so a stream's events arrive in order), up to `max_in_flight` in all. The first
//! call to a stream creates it (and its group with `auto_create_group`), once. A throttled or
//! failed call is retried, alone and first for its stream, after a backoff with full jitter;
//! configuration errors (permissions, a missing group) are reported on `/health` and retried
//! slowly. An input batch is acknowledged upstream once each of its records was accepted, or
//! dead-lettered (acknowledged once the letter is on disk), or dropped for good.

pub mod api;
pub mod batch;
pub mod config;
pub mod names;
mod task;
pub mod template;

pub use config::CloudWatchLogsConfig;

use self::config::Destinations;
use super::undeliverable::Undeliverable;
use super::{SinkContext, SinkError};
use crate::buffer::QueueReceiver;
use crate::encode::Encoder;

/// A CloudWatch Logs sink ready to run.
pub struct CloudWatchLogsSink {
    cx: SinkContext,
    /// Where records that can never be sent go: the dead-letter file, or counted drops.
    undeliverable: Undeliverable,
    config: CloudWatchLogsConfig,
    destinations: Destinations,
    creation: api::Creation,
    client: aws_sdk_cloudwatchlogs::Client,
    region: String,
    encoder: Encoder,
}

impl CloudWatchLogsSink {
    /// Builds the encoder and the client; nothing is called yet (streams are created by the
    /// first call to each, so a missing permission shows on `/health`).
    pub async fn build(
        config: &CloudWatchLogsConfig,
        cx: SinkContext,
    ) -> Result<CloudWatchLogsSink, SinkError> {
        let setup = |message: String| SinkError::Setup {
            name: cx.name.clone(),
            message,
        };
        let encoder = config.encoder().map_err(|e| setup(e.to_string()))?;
        let destinations = config
            .destinations()
            .map_err(|problems| setup(crate::config::field::join(&problems)))?;
        let clients = api::build(config, &cx.name, &cx.metrics)
            .await
            .map_err(|e| setup(e.to_string()))?;
        tracing::info!(sink = %cx.name, region = %clients.region,
            group = ?config.log_group_name.as_ref().or(config.log_group_template.as_ref()),
            "CloudWatch Logs sink ready");
        Ok(CloudWatchLogsSink {
            creation: api::Creation {
                auto_create_group: config.auto_create_group,
                retention_days: config.log_retention_days,
                class: config.log_group_class.clone(),
            },
            destinations,
            config: config.clone(),
            client: clients.logs,
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
