//! The Kinesis Data Streams sink.
//!
//! - [`config`]: the `type = "kinesis"` options.
//! - [`client`]: the SDK client and its credentials (default chain, `role_arn`).
//! - [`direct`]: PutRecords signed with aws-sigv4 and sent on the SDK's HTTPS connector,
//!   without the SDK's per-call orchestrator (the endpoint and credentials stay the SDK's).
//! - [`api`]: DescribeStreamSummary, ListShards, and what the API's errors mean.
//! - [`put_records`]: the PutRecords request body and answer, written and read by logferry.
//! - [`shard_map`]: the open shards' hash key ranges.
//! - [`batch`]: PutRecords batches within every limit, partial-failure bookkeeping, and
//!   per-shard aggregation containers (the KPL format itself is [`crate::kinesis_record::kpl`]).
//! - [`rate_limit`]: each shard's write limits, kept before Kinesis enforces them.
//! - [`retry_policy`]: what each Kinesis error code means (retryable or fatal, which shared
//!   reason it counts under), backoffs, and when failures make the sink unhealthy.
//! - `settle`: the user records' tokens an entry carries (acknowledged through
//!   [`crate::sink::settle`]).
//! - `task`: the running loop, split by step: `intake` (records into entries), `answer`
//!   (calls and their answers), `retry` (entries going back), `reshard` (shard map changes).
//! - [`metrics`]: Kinesis-specific counters.
//! - [`permissions`]: actions the sink works around when refused, reported on `/health`.
//!
//! One record's way: the queue hands an input batch to `task::intake`, which encodes each record
//! into one buffer per batch, keys it, and puts it into a shard's aggregate or straight into
//! the batcher (through the rate limiter); a full or due batch goes to `task::answer`, which
//! calls PutRecords ([`put_records`]) and settles each record's acknowledgement from the answer
//! (`settle`), or hands failed entries to `task::retry`.
//!
//! The sink task is one loop that owns all state: it keeps up to `max_in_flight` calls running,
//! and sorts every answer into delivered (acknowledged), to retry (only those entries, after a
//! backoff with full jitter, together) and fatal (reported on `/health`, retried slowly). An
//! input batch is completed, which acknowledges it upstream, once each of its records was
//! accepted, or dropped for a reason that retrying cannot fix (too large, unencodable, refused
//! as invalid) — or, with `dead_letter_path`, written to the dead-letter file for that reason
//! ([`super::undeliverable`]); the records of a batch are then kept until it is settled.

pub mod aggregators;
pub mod api;
pub mod batch;
pub mod client;
pub mod config;
pub mod direct;
pub mod metrics;
pub mod permissions;
pub mod put_records;
pub mod rate_limit;
pub mod retry_policy;
mod settle;
pub mod shard_map;
mod task;

pub use config::{KinesisConfig, ShardRateLimit};

use self::batch::BatchLimits;
use self::metrics::KinesisMetrics;
use self::permissions::DeniedActions;
use self::retry_policy::{auth_reason, ErrorClass};
use self::retry_policy::{slow_delay, RETRY_BACKOFF, UNHEALTHY_AFTER};
use self::shard_map::ShardMap;
use self::task::Task;
use super::undeliverable::Undeliverable;
use super::{SinkContext, SinkError};
use crate::buffer::QueueReceiver;
use crate::encode::Encoder;
use crate::event::KeyPath;

/// A Kinesis sink ready to run.
pub struct KinesisSink {
    cx: SinkContext,
    /// Where records that can never be sent go: the dead-letter file, or counted drops.
    undeliverable: Undeliverable,
    /// `` stream `name` ``: where records went, for dead letters and logs.
    stream_target: String,
    config: KinesisConfig,
    client: aws_sdk_kinesis::Client,
    put_records: direct::PutRecordsClient,
    region: String,
    encoder: Encoder,
    partition_key: Option<KeyPath>,
    explicit_hash_key: Option<KeyPath>,
    metrics: KinesisMetrics,
    /// DescribeStreamSummary / ListShards refused: worked around, reported on `/health`.
    denied: DeniedActions,
}

impl KinesisSink {
    /// Builds the encoder and the client. Nothing is called yet: the stream is checked when
    /// the sink starts running, so a missing permission shows on `/health` instead of
    /// stopping the process.
    pub async fn build(config: &KinesisConfig, cx: SinkContext) -> Result<KinesisSink, SinkError> {
        let setup = |message: String| SinkError::Setup {
            name: cx.name.clone(),
            message,
        };
        let encoder = config.encoder().map_err(|e| setup(e.to_string()))?;
        let clients = client::build(config, &cx.name, &cx.metrics)
            .await
            .map_err(setup)?;
        let metrics = KinesisMetrics::new(&cx.registry, &cx.name);
        Ok(KinesisSink {
            partition_key: config.partition_key.as_deref().map(KeyPath::parse),
            explicit_hash_key: config.explicit_hash_key.as_deref().map(KeyPath::parse),
            denied: DeniedActions::new(&cx.name, &config.stream),
            config: config.clone(),
            client: clients.kinesis,
            put_records: clients.put_records,
            region: clients.region,
            encoder,
            metrics,
            undeliverable: Undeliverable::new(&cx),
            stream_target: format!("stream `{}`", config.stream),
            cx,
        })
    }

    /// Delivers until the queue is closed and every record is settled.
    pub async fn run(self, input: QueueReceiver) {
        let limits = self.start_up().await;
        let shard_map = if self.config.aggregation || self.config.shard_rates().is_some() {
            self.first_shard_map().await
        } else {
            None
        };
        let mut task = match Task::new(self, limits, shard_map) {
            Ok(task) => task,
            Err(failed) => {
                let (sink, message) = *failed;
                tracing::error!(sink = %sink.cx.name, "{message}");
                sink.cx.health.set_unhealthy(&sink.cx.name, message);
                return;
            }
        };
        task.run(input).await;
        if let Some(dead_letters) = task.sink.undeliverable.dead_letters() {
            dead_letters.drained().await;
        }
    }

    /// The start-up check: DescribeStreamSummary until it answers, which also gives the
    /// per-record limit. Logs what it found and keeps `/health` up to date meanwhile.
    async fn start_up(&self) -> BatchLimits {
        let name = &self.cx.name;
        let stream = &self.config.stream;
        let mut failures = 0u32;
        let discovered = loop {
            match api::describe(&self.client, stream).await {
                Ok(summary) => {
                    tracing::info!(sink = %name, stream = %stream, region = %self.region,
                        status = %summary.status, open_shards = summary.open_shards,
                        arn = %summary.arn,
                        max_record_size = ?summary.max_record_size,
                        "Kinesis stream found");
                    if summary.status != "ACTIVE" && summary.status != "UPDATING" {
                        tracing::warn!(sink = %name, stream = %stream, status = %summary.status,
                            "the stream is not ACTIVE yet; writes may fail until it is");
                    }
                    self.cx.health.set_healthy(name);
                    break summary.max_record_size;
                }
                Err(e) if e.is_access_denied() => {
                    self.cx
                        .metrics
                        .auth_failure(crate::metrics::retry_reason::ACCESS_DENIED);
                    let report = self.denied.denied(
                        &self.cx.health,
                        "DescribeStreamSummary",
                        &e,
                        "delivering meanwhile with `max_record_size` or the default 1 MiB \
                         per-record limit",
                    );
                    tracing::error!(sink = %name, stream = %stream, "{report}");
                    break None;
                }
                Err(e) => {
                    failures += 1;
                    self.cx.metrics.error("describe_stream");
                    self.metrics.failed_request(&e.code);
                    if let Some(reason) = auth_reason(&e.code, e.status) {
                        self.cx.metrics.auth_failure(reason);
                    }
                    let hint = e.hint(stream, "DescribeStreamSummary");
                    let fatal = e.class == ErrorClass::Fatal;
                    let delay = if fatal {
                        slow_delay(failures - 1)
                    } else {
                        RETRY_BACKOFF.delay(failures - 1)
                    };
                    if fatal || failures >= UNHEALTHY_AFTER {
                        let reason = format!(
                            "kinesis stream `{stream}` (region {}): DescribeStreamSummary \
                             failed: {e}. {hint}",
                            self.region
                        );
                        self.cx.health.set_unhealthy(name, reason);
                    }
                    tracing::error!(sink = %name, stream = %stream, region = %self.region,
                        error = %e, retry_in = ?delay, "cannot check the Kinesis stream: {hint}");
                    tokio::time::sleep(delay).await;
                }
            }
        };
        let max_record_size = self
            .config
            .max_record_size_override()
            .or(discovered)
            .unwrap_or(batch::DEFAULT_MAX_RECORD_SIZE);
        BatchLimits {
            max_entries: batch::MAX_ENTRIES,
            max_request_bytes: KinesisConfig::max_request_bytes(max_record_size)
                .max(max_record_size),
            max_record_size,
        }
    }

    /// The first shard map, for aggregation and the per-shard rate limiter. Without one
    /// (ListShards not permitted), records are sent unaggregated rather than risking
    /// aggregates that span shards, and unheld (throttled ones are retried).
    async fn first_shard_map(&self) -> Option<ShardMap> {
        let mut failures = 0u32;
        loop {
            match api::list_shards(&self.client, &self.config.stream).await {
                Ok(map) => return Some(map),
                Err(api::ListError::Call(e)) if e.is_access_denied() => {
                    let report = self.denied.denied(
                        &self.cx.health,
                        "ListShards",
                        &e,
                        "delivering meanwhile without aggregation and without per-shard rate \
                         limits (both need the shard listing)",
                    );
                    tracing::error!(sink = %self.cx.name, stream = %self.config.stream,
                        "{report}");
                    return None;
                }
                Err(e) => {
                    failures += 1;
                    let delay = RETRY_BACKOFF.delay(failures.min(6));
                    tracing::warn!(sink = %self.cx.name, stream = %self.config.stream, error = %e,
                        retry_in = ?delay, "cannot list the shards to aggregate by; retrying");
                    if failures >= 5 {
                        tracing::warn!(sink = %self.cx.name,
                            "sending unaggregated and unheld until a shard listing succeeds");
                        return None;
                    }
                    tokio::time::sleep(delay).await;
                }
            }
        }
    }
}
