//! The Kinesis Data Streams sink.
//!
//! - [`config`]: the `type = "kinesis"` options.
//! - [`client`]: the SDK client and its credentials (default chain, `role_arn`).
//! - [`api`]: DescribeStreamSummary, ListShards, and what the API's errors mean.
//! - [`put_records`]: the PutRecords request body and answer, written and read by logferry.
//! - [`kpl`]: the KPL aggregated record format (exact size accounting, deaggregation).
//! - [`shard_map`]: MD5 hash keys and the open shards' hash key ranges.
//! - [`batch`]: PutRecords batches within every limit, partial-failure bookkeeping, and
//!   per-shard aggregation containers.
//! - [`metrics`]: Kinesis-specific counters.
//! - [`permissions`]: actions the sink works around when refused, reported on `/health`.
//!
//! The sink task ([`KinesisSink::run`]) is one loop that owns all state: it encodes incoming
//! records (each input batch into one buffer, records are slices of it), groups them per shard
//! when aggregating, cuts PutRecords batches, keeps up to `max_in_flight` calls running, and
//! sorts every answer into delivered (acknowledged), to retry (only those entries, after a
//! backoff with full jitter) and fatal (reported on `/health`, retried slowly). An input batch
//! is completed, which acknowledges it upstream, once each of its records was accepted, or
//! dropped for a reason that retrying cannot fix (too large, unencodable, refused as invalid) —
//! or, with `dead_letter_path`, written to the dead-letter file for that reason
//! ([`super::dead_letter`]); the records of a batch are then kept until it is settled.

pub mod api;
pub mod batch;
pub mod client;
pub mod config;
pub mod metrics;
pub mod permissions;
pub mod put_records;
pub mod rate_limit;
pub mod shard_map;

pub use config::{KinesisConfig, ShardRateLimit};

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use tokio::task::JoinSet;
use tokio::time::Instant;

use self::api::CallError;
use self::batch::{
    random_partition_key, Batch, BatchLimits, Batcher, Entry, EntryResult, ErrorClass, Failed,
    Rejected, ShardAggregators,
};
use self::metrics::{auth_reason, retry_reason, KinesisMetrics};
use self::permissions::DeniedActions;
use self::rate_limit::ShardLimiter;
use self::shard_map::ShardMap;
use super::backoff::Backoff;
use super::dead_letter;
use super::{SinkContext, SinkError};
use crate::buffer::queue::BatchDone;
use crate::buffer::QueueReceiver;
use crate::encode::Encoder;
use crate::event::{Event, KeyPath};
use crate::kinesis_record::kpl;
use crate::kinesis_record::{hash_key, Record, RejectReason, MAX_PARTITION_KEY_CHARS};

/// Delays between retries of throttled or failed entries, and of failed calls.
const RETRY_BACKOFF: Backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(10));
/// Delays while a configuration error (permissions, missing stream) lasts: slow, so a broken
/// sink does not hammer the API or flood the log.
const FATAL_BACKOFF: Backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(60));
/// How often the shard map is listed again when aggregating (resharding is also detected from
/// PutRecords answers and refreshes at once).
const SHARD_REFRESH_INTERVAL: Duration = Duration::from_secs(60);
/// Soonest a shard map refresh follows the previous one.
const SHARD_REFRESH_MIN_GAP: Duration = Duration::from_secs(1);
/// Consecutive failed calls (of the retryable kind) before the sink reports itself unhealthy.
const UNHEALTHY_AFTER: u32 = 3;
/// How long records a client is blocked on (forward `chunk` acks) wait in open aggregates and
/// batches once nothing more is queued, instead of the `flush` interval: a client that sends
/// its next chunk only after the ack would otherwise get one chunk per `flush` (500 records/s).
/// None at all: such a client sends nothing while it waits, so waiting only slows it (2 ms
/// cost a third of its rate in the side-by-side bench). Under sustained load the queue is
/// rarely empty and aggregates still fill; records nobody is blocked on (Docker's driver, tail
/// checkpoints) wait for `flush` as before.
const CLIENT_WAIT_LINGER: Duration = Duration::ZERO;
/// Shortest time between two releases of entries the rate limiter holds: tokens come one
/// record at a time (every millisecond at 1000 records/s), and a call per record would cost
/// more than the wait. 50 ms lets about 50 records per shard go together.
const LIMITER_RELEASE_GAP: Duration = Duration::from_millis(50);
/// How much the rate limiter holds, in seconds of the shards' limits, before the sink stops
/// taking records from its queue (which then pushes back on the sources).
const LIMITER_HOLD_SECONDS: f64 = 2.0;
/// Bytes the rate limiter holds at most, whatever the shard count.
const LIMITER_HOLD_MAX_BYTES: usize = 64 << 20;

/// Whether the limiter holds enough that the sink should take no more records for now.
fn held_enough(limiter: &ShardLimiter<Tokens>) -> bool {
    let shards = limiter.shard_map().len().max(1) as f64;
    let rates = limiter.rates();
    let records = LIMITER_HOLD_SECONDS * shards * rates.records_per_second;
    let bytes = (LIMITER_HOLD_SECONDS * shards * rates.bytes_per_second) as usize;
    limiter.held_entries() as f64 >= records
        || limiter.held_bytes() >= bytes.min(LIMITER_HOLD_MAX_BYTES)
}

// --- acknowledgement bookkeeping -----------------------------------------------------------------

/// The records of one input batch still on their way; completes the batch when the last one
/// is settled.
struct Tracker {
    remaining: AtomicUsize,
    failed: AtomicBool,
    /// A client sends nothing more until this batch is acknowledged (forward `chunk` acks):
    /// its records, retried ones included, go out without waiting for fuller batches.
    client_waits: bool,
    done: Mutex<Option<BatchDone>>,
    /// The batch's records, kept only with a dead-letter file: what a dead letter holds.
    events: Option<Vec<Event>>,
}

/// One user record: its batch's tracker and its place in the batch.
#[derive(Clone)]
struct Token {
    tracker: Arc<Tracker>,
    index: usize,
}

impl Token {
    fn settle(&self, ok: bool) {
        self.tracker.settle(ok);
    }

    /// The record itself, when the sink keeps records for dead letters.
    fn event(&self) -> Option<&Event> {
        self.tracker.events.as_ref()?.get(self.index)
    }
}

impl Tracker {
    fn new(
        records: usize,
        done: BatchDone,
        events: Option<Vec<Event>>,
        client_waits: bool,
    ) -> Arc<Tracker> {
        let tracker = Arc::new(Tracker {
            remaining: AtomicUsize::new(records),
            failed: AtomicBool::new(false),
            client_waits,
            done: Mutex::new(Some(done)),
            events,
        });
        if records == 0 {
            tracker.finish();
        }
        tracker
    }

    /// One record is settled: delivered or dropped for good (`ok`), or given up on (`!ok`,
    /// which fails the upstream acknowledgement).
    fn settle(&self, ok: bool) {
        if !ok {
            self.failed.store(true, Ordering::Release);
        }
        if self.remaining.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.finish();
        }
    }

    fn finish(&self) {
        let done = self.done.lock().ok().and_then(|mut d| d.take());
        if let Some(done) = done {
            if self.failed.load(Ordering::Acquire) {
                done.fail();
            } else {
                done.complete();
            }
        }
    }
}

/// What travels with a Kinesis entry: the trackers of its user records (one per record, in
/// order), how often it was retried, and the shard it was aggregated for.
struct Tokens {
    users: Vec<Token>,
    attempts: u32,
    /// The shard the entry is expected to land on, when it comes from the aggregators.
    expected: Option<Expected>,
    /// What Kinesis counts for the entry (data + partition key), for the metrics.
    size: usize,
}

impl Tokens {
    fn settle(&self, ok: bool) {
        for user in &self.users {
            user.settle(ok);
        }
    }

    /// Whether a client is blocked until one of these records is acknowledged.
    fn client_waits(&self) -> bool {
        self.users.iter().any(|user| user.tracker.client_waits)
    }

    /// An aggregate (more than one user record) expected on a shard other than `shard_id`:
    /// the stream was resharded since the shard map it was built from, and a KCL consumer
    /// drops the whole aggregate if any of its user records is outside the shard's range.
    fn misplaced_on(&self, shard_id: &str) -> bool {
        self.users.len() > 1
            && self
                .expected
                .as_ref()
                .is_some_and(|expected| *expected.shard_id != *shard_id)
    }
}

/// Where the aggregators predicted an entry to land: the shard map it was built from (its
/// epoch) and the shard's id.
struct Expected {
    epoch: u64,
    shard_id: Arc<str>,
}

// --- the sink ------------------------------------------------------------------------------------

/// A Kinesis sink ready to run.
pub struct KinesisSink {
    cx: SinkContext,
    config: KinesisConfig,
    client: aws_sdk_kinesis::Client,
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
            .map_err(|e| setup(e.to_string()))?;
        let metrics = KinesisMetrics::new(&cx.registry, &cx.name);
        Ok(KinesisSink {
            partition_key: config.partition_key.as_deref().map(KeyPath::parse),
            explicit_hash_key: config.explicit_hash_key.as_deref().map(KeyPath::parse),
            denied: DeniedActions::new(&cx.name, &config.stream),
            config: config.clone(),
            client: clients.kinesis,
            region: clients.region,
            encoder,
            metrics,
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
        if let Some(dead_letters) = &task.sink.cx.dead_letters {
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

/// A delay for configuration errors: half the ceiling plus jitter, so never near zero.
fn slow_delay(attempt: u32) -> Duration {
    let ceiling = FATAL_BACKOFF.ceiling(attempt);
    ceiling / 2 + FATAL_BACKOFF.delay(attempt) / 2
}

/// Pre-flight for entries and what was done with them.
type PutResult = (Batch<Tokens>, Result<Vec<EntryResult>, CallError>);

/// The running loop's state.
struct Task {
    sink: KinesisSink,
    limits: BatchLimits,
    /// With aggregation and a shard map: one open container per shard.
    aggregators: Option<ShardAggregators<Token>>,
    /// With `shard_rate_limit` and a shard map: entries held to each shard's write limits
    /// between the aggregators and the batcher.
    limiter: Option<ShardLimiter<Tokens>>,
    /// Largest aggregated record; user records bigger than this go out unaggregated.
    aggregation_max_size: usize,
    /// Bumped whenever the shard map changes.
    epoch: u64,
    batcher: Batcher<Tokens>,
    /// Full batches waiting for a slot.
    ready: VecDeque<Batch<Tokens>>,
    /// Entries waiting out a backoff, by due time: the failed entries of one answer (with the
    /// same number of attempts) wait and go back together, so they fill one call, not many.
    retries: BTreeMap<(Instant, u64), Vec<Entry<Tokens>>>,
    /// Aggregates that landed on another shard than predicted, with that shard's id: accepted
    /// by Kinesis but not acknowledged, waiting for the shard map refresh that tells whether
    /// the shard's range holds all their user records (else they are sent again).
    misplaced: Vec<(Entry<Tokens>, String)>,
    /// When the rate limiter last let entries go (see [`LIMITER_RELEASE_GAP`]).
    last_release: Instant,
    retry_seq: u64,
    in_flight: JoinSet<PutResult>,
    /// When the oldest record waiting in a container or the batcher arrived.
    pending_since: Option<Instant>,
    /// When a record a client is blocked on last arrived, while such records wait in a
    /// container or the batcher (see [`CLIENT_WAIT_LINGER`]).
    client_waiting_since: Option<Instant>,
    /// No call is started before this (after a failed call).
    blocked_until: Option<Instant>,
    consecutive_failures: u32,
    unhealthy: bool,
    refresh: Option<tokio::task::JoinHandle<Result<ShardMap, api::ListError>>>,
    refresh_wanted: bool,
    /// DescribeStreamSummary asked again while it is refused.
    recheck: Option<tokio::task::JoinHandle<Result<api::StreamSummary, CallError>>>,
    last_refresh: Instant,
    /// Reused per input batch: partition key text.
    key_scratch: Vec<u8>,
    encode_capacity: usize,
}

impl Task {
    fn new(
        sink: KinesisSink,
        limits: BatchLimits,
        shard_map: Option<ShardMap>,
    ) -> Result<Task, Box<(KinesisSink, String)>> {
        let batcher = match Batcher::new(limits) {
            Ok(b) => b,
            Err(e) => return Err(Box::new((sink, format!("invalid PutRecords limits: {e}")))),
        };
        let aggregation_max_size = sink
            .config
            .aggregation_max_size
            .map(|s| s.as_usize())
            .unwrap_or(limits.max_record_size)
            .min(limits.max_record_size);
        let limiter = match (&shard_map, sink.config.shard_rates()) {
            (Some(map), Some(rates)) => {
                let always = sink.config.shard_rate_limit == ShardRateLimit::On;
                tracing::info!(sink = %sink.cx.name, shards = map.len(),
                    records_per_second = rates.records_per_second,
                    bytes_per_second = rates.bytes_per_second,
                    "holding records to each shard's write limits {}",
                    if always { "from the start" } else { "once Kinesis throttles it" });
                Some(ShardLimiter::new(
                    map.clone(),
                    rates,
                    always,
                    Instant::now(),
                ))
            }
            _ => None,
        };
        let aggregators = match shard_map.filter(|_| sink.config.aggregation) {
            Some(map) => match ShardAggregators::new(map, aggregation_max_size) {
                Ok(a) => Some(a),
                Err(e) => {
                    return Err(Box::new((
                        sink,
                        format!("cannot aggregate with aggregation_max_size: {e}"),
                    )))
                }
            },
            None => None,
        };
        if let Some(a) = &aggregators {
            tracing::info!(sink = %sink.cx.name, shards = a.shard_map().len(),
                max_record_size = limits.max_record_size, aggregation_max_size,
                "aggregating by shard");
        }
        Ok(Task {
            sink,
            limits,
            aggregators,
            limiter,
            aggregation_max_size,
            epoch: 0,
            batcher,
            ready: VecDeque::new(),
            retries: BTreeMap::new(),
            misplaced: Vec::new(),
            last_release: Instant::now(),
            retry_seq: 0,
            in_flight: JoinSet::new(),
            pending_since: None,
            client_waiting_since: None,
            blocked_until: None,
            consecutive_failures: 0,
            unhealthy: false,
            refresh: None,
            refresh_wanted: false,
            recheck: None,
            last_refresh: Instant::now(),
            key_scratch: Vec::new(),
            encode_capacity: 64 * 1024,
        })
    }

    fn name(&self) -> &str {
        &self.sink.cx.name
    }

    async fn run(&mut self, mut input: QueueReceiver) {
        let flush = self.sink.config.flush.get();
        let max_in_flight = self.sink.config.max_in_flight;
        let mut input_open = true;
        let mut refresh_tick = tokio::time::interval_at(
            Instant::now() + SHARD_REFRESH_INTERVAL,
            SHARD_REFRESH_INTERVAL,
        );
        loop {
            self.dispatch();
            if !input_open && self.is_idle() {
                break;
            }
            let flush_at = self.pending_since.map(|t| t + flush);
            let retry_at = self.retries.keys().next().map(|(t, _)| *t);
            let blocked_at = self
                .blocked_until
                .filter(|_| !self.ready.is_empty() && self.in_flight.len() < max_in_flight);
            let accept = input_open
                && self.ready.len() < max_in_flight * 2
                && self.limiter.as_ref().is_none_or(|l| !held_enough(l));
            let refresh_due = (self.refresh_wanted && self.refresh.is_none())
                .then(|| self.last_refresh + SHARD_REFRESH_MIN_GAP);
            let linger_at = self
                .client_waiting_since
                .filter(|_| accept)
                .map(|t| t + CLIENT_WAIT_LINGER);
            let refreshing = self.refresh.is_some();
            let rechecking = self.recheck.is_some();
            let wants_map = self.sink.config.aggregation || self.limiter.is_some();
            let tick = wants_map || self.sink.denied.is_denied("DescribeStreamSummary");
            let release_at = self
                .limiter
                .as_ref()
                .and_then(ShardLimiter::next_release)
                .map(|at| at.max(self.last_release + LIMITER_RELEASE_GAP));
            tokio::select! {
                biased;
                Some(joined) = self.in_flight.join_next() => match joined {
                    Ok((batch, result)) => self.handle_result(batch, result),
                    Err(e) => {
                        // A panicked request task: its trackers are dropped, which fails the
                        // upstream acknowledgements of its records.
                        tracing::error!(sink = %self.name(), error = %e, "a PutRecords task failed");
                    }
                },
                listed = wait_refresh(&mut self.refresh), if refreshing => {
                    self.refresh = None;
                    self.apply_refresh(listed);
                    self.resend_misplaced();
                }
                _ = sleep_until_opt(retry_at), if retry_at.is_some() => self.release_retries(),
                _ = sleep_until_opt(release_at), if release_at.is_some() => self.release_held(),
                _ = sleep_until_opt(flush_at), if flush_at.is_some() => self.flush_all(),
                _ = sleep_until_opt(blocked_at), if blocked_at.is_some() => {
                    self.blocked_until = None;
                }
                checked = wait_recheck(&mut self.recheck), if rechecking => {
                    self.recheck = None;
                    self.apply_recheck(checked);
                }
                _ = refresh_tick.tick(), if tick => {
                    self.refresh_wanted = wants_map;
                    self.start_recheck();
                }
                batch = input.recv(), if accept => match batch {
                    Some(batch) => self.accept(batch),
                    None => {
                        input_open = false;
                        self.flush_all();
                    }
                },
                // Only reached when no batch is queued (the input arm comes first).
                _ = sleep_until_opt(linger_at), if linger_at.is_some() => self.flush_all(),
                // Wakes the loop when a wanted listing may start (checked below).
                _ = sleep_until_opt(refresh_due), if refresh_due.is_some() => {}
            }
            if self.refresh_wanted
                && self.refresh.is_none()
                && self.last_refresh.elapsed() >= SHARD_REFRESH_MIN_GAP
            {
                self.start_refresh();
            }
        }
        tracing::info!(sink = %self.name(), "kinesis sink drained");
    }

    fn is_idle(&self) -> bool {
        self.ready.is_empty()
            && self.retries.is_empty()
            && self.misplaced.is_empty()
            && self.limiter.as_ref().is_none_or(|l| l.held_entries() == 0)
            && self.in_flight.is_empty()
            && self.batcher.pending_entries() == 0
            && self
                .aggregators
                .as_ref()
                .is_none_or(|a| a.pending_records() == 0)
    }

    // --- intake ------------------------------------------------------------------------------

    /// Encodes an input batch and routes its records into containers / the batcher.
    fn accept(&mut self, batch: crate::buffer::Batch) {
        let tag = batch.tag.clone();
        let client_waits = batch.client_waits();
        let (events, done) = batch.into_parts();
        self.sink.cx.metrics.records_in.inc_by(events.len() as u64);
        let mut buf = Vec::with_capacity(self.encode_capacity);
        let mut ends = Vec::with_capacity(events.len());
        for event in &events {
            let start = buf.len();
            match self.sink.encoder.encode(event, &mut buf) {
                Ok(()) => ends.push(Ok((start, buf.len()))),
                Err(e) => {
                    buf.truncate(start);
                    ends.push(Err(e));
                }
            }
        }
        self.encode_capacity = buf.len().clamp(4096, 8 << 20);
        let data = Bytes::from(buf);
        // With a dead-letter file the records stay with their tracker until settled.
        let (kept, events) = match self.sink.cx.dead_letters {
            Some(_) => (Some(events), Vec::new()),
            None => (None, events),
        };
        let tracker = Tracker::new(ends.len(), done, kept, client_waits);
        let events: &[Event] = match &tracker.events {
            Some(kept) => kept,
            None => &events,
        };
        for (index, (event, range)) in events.iter().zip(ends).enumerate() {
            let token = Token {
                tracker: tracker.clone(),
                index,
            };
            let (start, end) = match range {
                Ok(range) => range,
                Err(e) => {
                    if !self.dead_letter(token, dead_letter::reason::UNENCODABLE, e.to_string()) {
                        self.sink.cx.metrics.dropped("unencodable", 1);
                        tracing::warn!(sink = %self.name(), tag = %tag, error = %e,
                            "record dropped: it cannot be encoded as configured");
                    } else {
                        tracing::warn!(sink = %self.name(), tag = %tag, error = %e,
                            "record cannot be encoded as configured: written to the dead-letter file");
                    }
                    continue;
                }
            };
            let record = self.record_for(event, data.slice(start..end));
            match record {
                Ok(record) => self.route(record, token, &tag),
                Err(data) => self.spread(data, token, &tag),
            }
        }
        if self.pending_since.is_none()
            && (self.batcher.pending_entries() > 0
                || self
                    .aggregators
                    .as_ref()
                    .is_some_and(|a| a.pending_records() > 0))
        {
            self.pending_since = Some(Instant::now());
        }
        if client_waits && self.pending_since.is_some() {
            self.client_waiting_since = Some(Instant::now());
        }
    }

    /// The Kinesis record for an encoded event: its partition key and explicit hash key. A
    /// record that gets neither while aggregating is handed back (`Err`) for
    /// [`Task::spread`]: it needs no key of its own.
    fn record_for(&mut self, event: &Event, data: Bytes) -> Result<Record, Bytes> {
        let spread = self.aggregators.is_some()
            && self.sink.explicit_hash_key.is_none()
            && data.len() + 32 <= self.aggregation_max_size;
        let partition_key = match &self.sink.partition_key {
            Some(path) => {
                let key = event.record.get_path(path).and_then(|value| {
                    self.key_scratch.clear();
                    value.write_text(&mut self.key_scratch);
                    (!self.key_scratch.is_empty())
                        .then(|| truncate_key(String::from_utf8_lossy(&self.key_scratch)))
                });
                match key {
                    Some(key) => key,
                    None => {
                        self.sink.metrics.random_keys.inc();
                        if spread {
                            return Err(data);
                        }
                        random_partition_key()
                    }
                }
            }
            None if spread => return Err(data),
            None => random_partition_key(),
        };
        let mut record = Record::new(partition_key, data);
        if let Some(path) = &self.sink.explicit_hash_key {
            if let Some(value) = event.record.get_path(path) {
                let text = value.to_text();
                match hash_key::parse_hash_key(text.trim()) {
                    Ok(_) => record.explicit_hash_key = Some(text.trim().to_string()),
                    Err(e) => {
                        self.sink.cx.metrics.error("invalid_explicit_hash_key");
                        tracing::debug!(sink = %self.name(), error = %e,
                            "ignoring the record's explicit hash key: routing by partition key");
                    }
                }
            }
        }
        Ok(record)
    }

    /// Aggregates a record without a key of its own, spread over the shards in turn.
    fn spread(&mut self, data: Bytes, token: Token, tag: &str) {
        let refused = self
            .aggregators
            .as_mut()
            .and_then(|aggregators| aggregators.add_spread(data, token).err());
        self.aggregated(refused, tag);
    }

    /// After adding a user record to the aggregators: rejects what they refused, and moves
    /// finished containers on.
    fn aggregated(&mut self, refused: Option<Rejected<Token>>, tag: &str) {
        if let Some(Rejected { entry, reason }) = refused {
            self.reject(entry.record.size(), vec![entry.token], &reason, tag);
        }
        self.drain_aggregators();
    }

    fn route(&mut self, record: Record, token: Token, tag: &str) {
        let aggregate = self
            .aggregators
            .as_ref()
            .is_some_and(|_| record.size() <= self.aggregation_max_size);
        if aggregate {
            let refused = self
                .aggregators
                .as_mut()
                .and_then(|aggregators| aggregators.add(record, token).err());
            self.aggregated(refused, tag);
        } else {
            let entry = Entry {
                token: Tokens {
                    users: vec![token],
                    attempts: 0,
                    expected: None,
                    size: record.size(),
                },
                record,
            };
            self.push(entry, tag);
        }
    }

    /// Moves finished containers into the batcher.
    fn drain_aggregators(&mut self) {
        let Some(aggregators) = self.aggregators.as_mut() else {
            return;
        };
        let finished: Vec<Entry<Vec<Token>>> = aggregators.drain_ready().collect();
        for entry in finished {
            let entry = self.with_expected_shard(entry);
            self.push(entry, "");
        }
    }

    /// Wraps an entry from the aggregators with the shard it is expected to land on.
    fn with_expected_shard(&self, entry: Entry<Vec<Token>>) -> Entry<Tokens> {
        let expected = self.aggregators.as_ref().and_then(|a| {
            let hash = hash_key::effective_hash_key(
                &entry.record.partition_key,
                entry.record.explicit_hash_key.as_deref(),
            )
            .ok()?;
            let map = a.shard_map();
            let shard = map.shards().get(map.index_for(hash)?)?;
            Some(Expected {
                epoch: self.epoch,
                shard_id: Arc::from(shard.id()),
            })
        });
        Entry {
            token: Tokens {
                users: entry.token,
                attempts: 0,
                expected,
                size: entry.record.size(),
            },
            record: entry.record,
        }
    }

    /// Queues an entry for sending: into the batcher, once the per-shard rate limiter (if
    /// any) lets it go.
    fn push(&mut self, entry: Entry<Tokens>, tag: &str) {
        let entry = match self.limiter.as_mut() {
            Some(limiter) => match limiter.admit(entry, Instant::now()) {
                Some(entry) => entry,
                None => {
                    self.sink.metrics.rate_limited_entries.inc();
                    return;
                }
            },
            None => entry,
        };
        self.batch(entry, tag);
    }

    /// Adds an entry to the batcher (a full batch moves to `ready`).
    fn batch(&mut self, entry: Entry<Tokens>, tag: &str) {
        match self.batcher.push(entry) {
            Ok(Some(full)) => self.ready.push_back(full),
            Ok(None) => {}
            Err(rejected) => {
                let Rejected { entry, reason } = rejected;
                self.reject(entry.record.size(), entry.token.users, &reason, tag);
            }
        }
    }

    /// Hands a record to the dead-letter file; its token is settled once the letter is on
    /// disk (as failed if it could not be written). Without a dead-letter file the token is
    /// settled at once and false is returned: the caller counts and logs the drop.
    fn dead_letter(&self, token: Token, reason: &'static str, error: String) -> bool {
        let Some(dead_letters) = &self.sink.cx.dead_letters else {
            token.settle(true);
            return false;
        };
        let Some(event) = token.event().cloned() else {
            // Unreachable: records are kept whenever a dead-letter file is configured.
            token.settle(false);
            return true;
        };
        dead_letters.send(dead_letter::Letter {
            reason,
            error: Some(error),
            event,
            on_written: Box::new(move |ok| token.settle(ok)),
        });
        true
    }

    /// A record that can never be sent: written to the dead-letter file, or logged and
    /// counted as dropped; either way settled so it blocks nothing.
    fn reject(&self, size: usize, users: Vec<Token>, reason: &RejectReason, tag: &str) {
        let why = if reason.is_too_large() {
            dead_letter::reason::TOO_LARGE
        } else {
            dead_letter::reason::INVALID
        };
        // Counted per record; logged at most every few seconds per reason (with how many were
        // suppressed), so a stream of oversized records does not flood the log.
        let log = crate::log_limit::allow(self.name(), why);
        if self.sink.cx.dead_letters.is_some() {
            if let Some(suppressed) = log {
                tracing::warn!(sink = %self.name(), stream = %self.sink.config.stream, tag = %tag,
                    size, max = self.limits.max_record_size, reason = %reason, suppressed,
                    "record cannot be sent ({why}): written to the dead-letter file");
            }
            for user in users {
                self.dead_letter(user, why, reason.to_string());
            }
            return;
        }
        self.sink.cx.metrics.dropped(why, users.len() as u64);
        if let Some(suppressed) = log {
            tracing::warn!(sink = %self.name(), stream = %self.sink.config.stream, tag = %tag,
                size, max = self.limits.max_record_size, reason = %reason, suppressed,
                "record dropped: {why}");
        }
        for user in users {
            user.settle(true);
        }
    }

    /// Sends everything waiting (the `flush` deadline, or the end of input).
    fn flush_all(&mut self) {
        if let Some(aggregators) = self.aggregators.as_mut() {
            let entries = aggregators.flush_all();
            for entry in entries {
                let entry = self.with_expected_shard(entry);
                self.push(entry, "");
            }
        }
        if let Some(batch) = self.batcher.flush() {
            self.ready.push_back(batch);
        }
        self.pending_since = None;
        self.client_waiting_since = None;
    }

    // --- sending -----------------------------------------------------------------------------

    fn dispatch(&mut self) {
        let now = Instant::now();
        if self.blocked_until.is_some_and(|t| t > now) {
            return;
        }
        self.blocked_until = None;
        while self.in_flight.len() < self.sink.config.max_in_flight {
            let Some(batch) = self.ready.pop_front() else {
                break;
            };
            self.sink.metrics.requests.inc();
            // Shard ids are read from the answer only to check where aggregates landed.
            let shard_ids = batch.entries().iter().any(|e| e.token.expected.is_some());
            let put = put_records::put_records(
                self.sink.client.clone(),
                self.sink.config.stream.clone(),
                batch,
                shard_ids,
            );
            // Observed per call, whatever its outcome (timeouts included).
            let latency = self.sink.cx.metrics.request_duration("PutRecords");
            self.in_flight.spawn(async move {
                let started = std::time::Instant::now();
                let result = put.await;
                latency.observe(started.elapsed().as_secs_f64());
                result
            });
        }
    }

    fn handle_result(&mut self, batch: Batch<Tokens>, result: Result<Vec<EntryResult>, CallError>) {
        let results = match result {
            Ok(results) => results,
            Err(error) => return self.call_failed(batch, error),
        };
        let outcome = match batch::split_results(batch, results) {
            Ok(outcome) => outcome,
            Err(mismatch) => {
                let error = CallError {
                    code: "response".into(),
                    status: None,
                    message: mismatch.to_string(),
                    class: ErrorClass::Retryable,
                    sts_action: None,
                };
                return self.call_failed(mismatch.batch, error);
            }
        };
        self.call_succeeded();
        let mut stale_shard = false;
        for delivered in outcome.delivered {
            let tokens = &delivered.entry.token;
            if tokens
                .expected
                .as_ref()
                .is_some_and(|expected| *expected.shard_id != *delivered.shard_id)
            {
                stale_shard = true;
            }
            if tokens.misplaced_on(&delivered.shard_id) {
                // Accepted, but a KCL consumer would drop the whole aggregate: every user
                // record in it goes again by the refreshed map before it is acknowledged.
                self.sink.metrics.misplaced(tokens.size);
                self.misplaced.push((delivered.entry, delivered.shard_id));
                continue;
            }
            let users = tokens.users.len();
            self.sink.metrics.sent(tokens.size, users);
            self.sink.cx.metrics.records_out.inc_by(users as u64);
            self.sink.cx.metrics.bytes_out.inc_by(tokens.size as u64);
            tokens.settle(true);
        }
        self.sink.metrics.update_ratio();
        if stale_shard && !self.refresh_wanted {
            // Listed again at once, or SHARD_REFRESH_MIN_GAP after the last listing: a reshard
            // noticed right after one is remembered, not dropped.
            tracing::info!(sink = %self.name(), misplaced_aggregates = self.misplaced.len(),
                "a record landed on another shard than predicted: the stream was resharded; \
                 listing the shards again (aggregates that landed elsewhere are sent again)");
            self.refresh_wanted = true;
        }
        // Retries are counted per reason once per answer, not once per entry.
        let mut retried: Vec<(&'static str, u64)> = Vec::new();
        for failed in &outcome.retry {
            self.sink.metrics.failed_entry(&failed.code);
            self.sink.metrics.entry_retries.inc();
            let reason = retry_reason(&failed.code, None);
            match retried.iter_mut().find(|(r, _)| *r == reason) {
                Some((_, n)) => *n += 1,
                None => retried.push((reason, 1)),
            }
            if reason == crate::metrics::retry_reason::THROTTLED {
                self.engage_limiter(&failed.entry.record);
            }
        }
        self.schedule_retries(outcome.retry, |attempt| RETRY_BACKOFF.delay(attempt));
        for (reason, entries) in retried {
            self.sink.cx.metrics.retried(reason, entries);
            if let Some(suppressed) = crate::log_limit::allow(self.name(), reason) {
                tracing::warn!(sink = %self.name(), stream = %self.sink.config.stream,
                    reason, entries, suppressed,
                    "PutRecords refused some entries; retrying only those after a backoff");
            }
        }
        let mut fatal = outcome.fatal;
        if self.sink.cx.dead_letters.is_some() {
            let (rejected, config): (Vec<_>, Vec<_>) = fatal
                .into_iter()
                .partition(|f| batch::is_record_error(&f.code));
            fatal = config;
            for failed in rejected {
                self.sink.metrics.failed_entry(&failed.code);
                let error = format!("{}: {}", failed.code, failed.message);
                tracing::warn!(sink = %self.name(), stream = %self.sink.config.stream,
                    records = failed.entry.token.users.len(), error = %error,
                    "PutRecords refused the record: written to the dead-letter file");
                for user in failed.entry.token.users {
                    self.dead_letter(user, dead_letter::reason::REJECTED, error.clone());
                }
            }
        }
        if !fatal.is_empty() {
            let first = &fatal[0];
            let error = CallError {
                code: first.code.clone(),
                status: None,
                message: first.message.clone(),
                class: ErrorClass::Fatal,
                sts_action: None,
            };
            self.report_fatal(&error, "PutRecords");
            for failed in &fatal {
                self.sink.metrics.failed_entry(&failed.code);
                self.sink
                    .cx
                    .metrics
                    .retried(retry_reason(&failed.code, None), 1);
            }
            self.schedule_retries(fatal, slow_delay);
        }
    }

    /// Counts what an accepted entry cost, before its tokens are settled.
    fn call_succeeded(&mut self) {
        self.consecutive_failures = 0;
        if self.unhealthy {
            self.unhealthy = false;
            self.sink.cx.health.set_healthy(&self.sink.cx.name);
            tracing::info!(sink = %self.name(), stream = %self.sink.config.stream,
                "Kinesis accepts records again");
        }
    }

    /// A whole call failed: every entry goes back, and no call starts before the backoff ends.
    fn call_failed(&mut self, batch: Batch<Tokens>, error: CallError) {
        self.consecutive_failures += 1;
        if retry_reason(&error.code, error.status) == crate::metrics::retry_reason::THROTTLED {
            for entry in batch.entries() {
                self.engage_limiter(&entry.record);
            }
        }
        self.sink.metrics.failed_request(&error.code);
        self.sink.cx.metrics.error("put_records");
        self.sink
            .cx
            .metrics
            .retried(retry_reason(&error.code, error.status), batch.len() as u64);
        let attempt = self.consecutive_failures - 1;
        let delay = match error.class {
            ErrorClass::Fatal => {
                self.report_fatal(&error, "PutRecords");
                slow_delay(attempt)
            }
            ErrorClass::Retryable => {
                let delay = RETRY_BACKOFF.delay(attempt);
                let key = retry_reason(&error.code, error.status);
                if let Some(suppressed) = crate::log_limit::allow(self.name(), key) {
                    tracing::warn!(sink = %self.name(), stream = %self.sink.config.stream,
                        error = %error, entries = batch.len(), retry_in = ?delay, suppressed,
                        "PutRecords failed; retrying the whole request");
                }
                if self.consecutive_failures >= UNHEALTHY_AFTER {
                    let reason = format!(
                        "kinesis stream `{}`: {} PutRecords calls in a row failed, last: {error}. {}",
                        self.sink.config.stream,
                        self.consecutive_failures,
                        error.hint(&self.sink.config.stream, "PutRecords")
                    );
                    self.set_unhealthy(reason);
                }
                delay
            }
        };
        let until = Instant::now() + delay;
        self.blocked_until = Some(self.blocked_until.map_or(until, |t| t.max(until)));
        self.sink.metrics.request_retries.inc_by(batch.len() as u64);
        let failed = batch
            .into_entries()
            .into_iter()
            .map(|entry| Failed {
                entry,
                code: error.code.clone(),
                message: String::new(),
            })
            .collect();
        // Due at once: the whole sink waits out the backoff (`blocked_until`).
        self.schedule_retries(failed, |_| Duration::ZERO);
    }

    fn report_fatal(&mut self, error: &CallError, action: &str) {
        if let Some(reason) = auth_reason(&error.code, error.status) {
            self.sink.cx.metrics.auth_failure(reason);
        }
        let stream = &self.sink.config.stream;
        let hint = error.hint(stream, action);
        let reason = format!(
            "kinesis stream `{stream}` (region {}): {action} failed: {error}. {hint}",
            self.sink.region
        );
        let key = retry_reason(&error.code, error.status);
        if let Some(suppressed) = crate::log_limit::allow(&self.sink.cx.name, key) {
            tracing::error!(sink = %self.name(), stream = %stream, region = %self.sink.region,
                error = %error, suppressed, "{action} refused: {hint}");
        }
        self.set_unhealthy(reason);
    }

    fn set_unhealthy(&mut self, reason: String) {
        self.unhealthy = true;
        self.sink
            .cx
            .health
            .set_unhealthy(&self.sink.cx.name, reason);
    }

    /// Puts failed entries back after a backoff (`delay` of the attempts made so far), unless
    /// they ran out of retries. Entries with as many attempts wait as one group and go back
    /// into the batches together.
    fn schedule_retries(&mut self, failed: Vec<Failed<Tokens>>, delay: impl Fn(u32) -> Duration) {
        let mut groups: Vec<(u32, Vec<Entry<Tokens>>)> = Vec::new();
        for failed in failed {
            let Some(mut entry) = self.within_retry_limit(failed) else {
                continue;
            };
            let attempt = entry.token.attempts;
            entry.token.attempts += 1;
            match groups.iter_mut().find(|(a, _)| *a == attempt) {
                Some((_, group)) => group.push(entry),
                None => groups.push((attempt, vec![entry])),
            }
        }
        let now = Instant::now();
        for (attempt, group) in groups {
            self.retry_seq += 1;
            self.retries
                .insert((now + delay(attempt), self.retry_seq), group);
        }
    }

    /// The failed entry, or `None` once it reached `retry_limit`: then its records are written
    /// to the dead-letter file, or dropped (counted, logged, failing their acknowledgement).
    fn within_retry_limit(&mut self, failed: Failed<Tokens>) -> Option<Entry<Tokens>> {
        let Failed {
            entry,
            code,
            message,
        } = failed;
        let Some(limit) = self.sink.config.retry_limit else {
            return Some(entry);
        };
        if entry.token.attempts < limit {
            return Some(entry);
        }
        if self.sink.cx.dead_letters.is_some() {
            tracing::error!(sink = %self.name(), stream = %self.sink.config.stream,
                records = entry.token.users.len(), last_error = %code, retry_limit = limit,
                "records still failing after retry_limit retries: written to the dead-letter file");
            let error = format!("{code}: {message}");
            for user in entry.token.users {
                self.dead_letter(user, dead_letter::reason::RETRY_LIMIT, error.clone());
            }
            return None;
        }
        let users = entry.token.users.len() as u64;
        self.sink.cx.metrics.dropped("retry_limit", users);
        tracing::error!(sink = %self.name(), stream = %self.sink.config.stream,
            records = users, last_error = %code, retry_limit = limit,
            "records dropped: still failing after retry_limit retries");
        entry.token.settle(false);
        None
    }

    /// Moves entries whose backoff ended back into the batches, where they wait like new
    /// records: under load they fill the next calls with new records; when a client is blocked
    /// on them, they go as soon as nothing more is queued (the linger). Aggregated entries
    /// built for an older shard map are split and aggregated again by the current one.
    fn release_retries(&mut self) {
        let now = Instant::now();
        let later = self.retries.split_off(&(now, u64::MAX));
        let due = std::mem::replace(&mut self.retries, later);
        let mut client_waits = false;
        for entry in due.into_values().flatten() {
            client_waits |= entry.token.client_waits();
            let stale = entry
                .token
                .expected
                .as_ref()
                .is_some_and(|expected| expected.epoch != self.epoch)
                && entry.token.users.len() > 1;
            if stale {
                self.reaggregate(entry);
            } else {
                self.push(entry, "");
            }
        }
        self.mark_pending(now, client_waits);
    }

    /// Kinesis throttled `record`: its shard is held to its limits from now on (`auto`).
    fn engage_limiter(&mut self, record: &Record) {
        let Some(limiter) = self.limiter.as_mut() else {
            return;
        };
        if let Some(shard) = limiter.throttled(record, Instant::now()) {
            tracing::info!(sink = %self.sink.cx.name, stream = %self.sink.config.stream,
                shard, "Kinesis throttled the shard: holding records to its write limits from now on");
        }
    }

    /// Moves the entries the rate limiter lets go now into the batcher.
    fn release_held(&mut self) {
        let now = Instant::now();
        self.last_release = now;
        let Some(limiter) = self.limiter.as_mut() else {
            return;
        };
        let mut released = Vec::new();
        limiter.release(now, &mut released);
        let held_for = limiter.take_held_time(now);
        self.sink
            .metrics
            .rate_limited_seconds
            .inc_by(held_for.as_secs_f64());
        let mut client_waits = false;
        for entry in released {
            client_waits |= entry.token.client_waits();
            self.batch(entry, "");
        }
        self.mark_pending(now, client_waits);
    }

    /// Records are waiting in containers or the batcher since `now` (unless older ones wait
    /// already); with `client_waits`, a client is blocked on them.
    fn mark_pending(&mut self, now: Instant, client_waits: bool) {
        let pending = self.batcher.pending_entries() > 0
            || self
                .aggregators
                .as_ref()
                .is_some_and(|a| a.pending_records() > 0);
        if !pending {
            return;
        }
        self.pending_since.get_or_insert(now);
        if client_waits {
            self.client_waiting_since = Some(now);
        }
    }

    /// Aggregates the user records of an aggregated entry again by the current shard map
    /// (one that failed, or landed on another shard, after the map changed). An entry that
    /// cannot be split goes back as it is.
    fn reaggregate(&mut self, entry: Entry<Tokens>) {
        let Some(aggregators) = self.aggregators.as_mut() else {
            return self.push(entry, "");
        };
        let Entry { record, token } = entry;
        let Tokens {
            users,
            attempts,
            expected,
            size,
        } = token;
        match aggregators.reroute(Entry {
            record,
            token: users,
        }) {
            Ok(rejected) => {
                for Rejected { entry, reason } in rejected {
                    self.reject(entry.record.size(), vec![entry.token], &reason, "");
                }
            }
            Err(failed) => {
                let entry = Entry {
                    token: Tokens {
                        users: failed.entry.token,
                        attempts,
                        expected,
                        size,
                    },
                    record: failed.entry.record,
                };
                self.push(entry, "");
            }
        }
        self.drain_aggregators();
    }

    /// After a shard listing (whatever its outcome), for each aggregate that landed on another
    /// shard than predicted: if the listing shows that shard and its range holds every user
    /// record of the aggregate, a KCL consumer keeps it: acknowledged. Otherwise the consumer
    /// drops the aggregate whole, so every user record in it goes again: regrouped by the
    /// current map if it is newer than the one the aggregate was built from, else unaggregated
    /// (Kinesis routes plain records by their own keys; every consumer reads them in range).
    fn resend_misplaced(&mut self) {
        if self.misplaced.is_empty() {
            return;
        }
        let misplaced = std::mem::take(&mut self.misplaced);
        let mut client_waits = false;
        let mut resent = 0usize;
        for (entry, landed) in misplaced {
            if self.landed_in_range(&entry.record, &landed) {
                let users = entry.token.users.len();
                self.sink.metrics.sent_after_check(entry.token.size, users);
                self.sink.cx.metrics.records_out.inc_by(users as u64);
                self.sink
                    .cx
                    .metrics
                    .bytes_out
                    .inc_by(entry.token.size as u64);
                entry.token.settle(true);
                continue;
            }
            resent += 1;
            client_waits |= entry.token.client_waits();
            let regroup = entry
                .token
                .expected
                .as_ref()
                .is_some_and(|expected| expected.epoch != self.epoch);
            if regroup {
                self.reaggregate(entry);
            } else {
                self.unaggregate(entry);
            }
        }
        if resent > 0 {
            tracing::info!(sink = %self.name(), aggregates = resent,
                "aggregates that landed on a shard not holding all their user records: \
                 sending their user records again");
        }
        self.mark_pending(Instant::now(), client_waits);
    }

    /// Whether the shard `shard_id`, as the current map lists it, holds the hash key of every
    /// user record of the aggregated `record`.
    fn landed_in_range(&self, record: &Record, shard_id: &str) -> bool {
        let Some(aggregators) = self.aggregators.as_ref() else {
            return false;
        };
        let Some(shard) = aggregators
            .shard_map()
            .shards()
            .iter()
            .find(|shard| shard.id() == shard_id)
        else {
            return false;
        };
        let Ok(users) = kpl::deaggregate(record.clone()) else {
            return false;
        };
        users.iter().all(|user| {
            hash_key::effective_hash_key(&user.partition_key, user.explicit_hash_key.as_deref())
                .is_ok_and(|hash| shard.contains(hash))
        })
    }

    /// Sends the user records of an aggregate as plain entries, each with its own keys.
    fn unaggregate(&mut self, entry: Entry<Tokens>) {
        let records = match kpl::deaggregate(entry.record.clone()) {
            Ok(records) if records.len() == entry.token.users.len() => records,
            Ok(_) | Err(_) => return self.push(entry, ""),
        };
        let attempts = entry.token.attempts;
        for (record, user) in records.into_iter().zip(entry.token.users) {
            let entry = Entry {
                token: Tokens {
                    users: vec![user],
                    attempts,
                    expected: None,
                    size: record.size(),
                },
                record,
            };
            self.push(entry, "");
        }
    }

    // --- shard map ---------------------------------------------------------------------------

    fn start_refresh(&mut self) {
        self.refresh_wanted = false;
        self.last_refresh = Instant::now();
        let client = self.sink.client.clone();
        let stream = self.sink.config.stream.clone();
        self.refresh = Some(tokio::spawn(async move {
            api::list_shards(&client, &stream).await
        }));
    }

    /// Asks for DescribeStreamSummary again while it is refused, to clear the report.
    fn start_recheck(&mut self) {
        if self.recheck.is_some() || !self.sink.denied.is_denied("DescribeStreamSummary") {
            return;
        }
        let client = self.sink.client.clone();
        let stream = self.sink.config.stream.clone();
        self.recheck = Some(tokio::spawn(async move {
            api::describe(&client, &stream).await
        }));
    }

    fn apply_recheck(&mut self, checked: Result<api::StreamSummary, CallError>) {
        match checked {
            Ok(summary) => {
                if self
                    .sink
                    .denied
                    .allowed(&self.sink.cx.health, "DescribeStreamSummary")
                {
                    tracing::info!(sink = %self.name(), stream = %self.sink.config.stream,
                        max_record_size = ?summary.max_record_size,
                        current_limit = self.limits.max_record_size,
                        "kinesis:DescribeStreamSummary is allowed now; a restart applies the \
                         stream's per-record limit if it differs from the current one");
                }
            }
            Err(e) if e.is_access_denied() => {}
            Err(e) => tracing::debug!(sink = %self.name(), error = %e,
                "DescribeStreamSummary check failed; asking again in a minute"),
        }
    }

    fn apply_refresh(&mut self, listed: Result<ShardMap, api::ListError>) {
        let map = match listed {
            Ok(map) => {
                if self.sink.denied.allowed(&self.sink.cx.health, "ListShards") {
                    tracing::info!(sink = %self.name(), stream = %self.sink.config.stream,
                        "kinesis:ListShards is allowed now");
                }
                map
            }
            Err(api::ListError::Call(e)) if e.is_access_denied() => {
                let report = self.sink.denied.denied(
                    &self.sink.cx.health,
                    "ListShards",
                    &e,
                    "keeping the previous shard map, if any",
                );
                tracing::error!(sink = %self.name(), stream = %self.sink.config.stream,
                    "{report}");
                return;
            }
            Err(e) => {
                tracing::warn!(sink = %self.name(), error = %e,
                    "cannot refresh the shard map; keeping the previous one");
                return;
            }
        };
        let current = match (&self.aggregators, &self.limiter) {
            (Some(aggregators), _) => Some(aggregators.shard_map()),
            (None, Some(limiter)) => Some(limiter.shard_map()),
            (None, None) => None,
        };
        if current == Some(&map) {
            return;
        }
        self.sink.metrics.shard_map_refreshes.inc();
        tracing::info!(sink = %self.name(), shards = map.len(), "shard map updated");
        self.limit_by(&map);
        if self.sink.config.aggregation {
            self.aggregate_by(map);
        }
    }

    /// Gives the rate limiter a new shard map (or starts it, if it waited for a first one);
    /// what it held is admitted again by the new map.
    fn limit_by(&mut self, map: &ShardMap) {
        let Some(rates) = self.sink.config.shard_rates() else {
            return;
        };
        let now = Instant::now();
        let Some(limiter) = self.limiter.as_mut() else {
            tracing::info!(sink = %self.name(), shards = map.len(),
                "shard listing available: holding records to each shard's write limits from now on");
            let always = self.sink.config.shard_rate_limit == ShardRateLimit::On;
            self.limiter = Some(ShardLimiter::new(map.clone(), rates, always, now));
            return;
        };
        if limiter.shard_map() == map {
            return;
        }
        for entry in limiter.replace_shard_map(map.clone(), now) {
            self.push(entry, "");
        }
    }

    /// Gives the aggregators a new shard map (or starts aggregating, if aggregation waited for
    /// a first listing); user records in open containers are routed again by it.
    fn aggregate_by(&mut self, map: ShardMap) {
        let Some(aggregators) = self.aggregators.as_mut() else {
            match ShardAggregators::new(map, self.aggregation_max_size) {
                Ok(aggregators) => {
                    tracing::info!(sink = %self.name(), shards = aggregators.shard_map().len(),
                        "shard listing available: aggregating by shard from now on");
                    self.aggregators = Some(aggregators);
                    self.epoch += 1;
                }
                Err(e) => tracing::warn!(sink = %self.name(), error = %e,
                    "cannot aggregate with this shard listing"),
            }
            return;
        };
        if *aggregators.shard_map() == map {
            return;
        }
        match aggregators.replace_shard_map(map) {
            Ok(rejected) => {
                self.epoch += 1;
                for Rejected { entry, reason } in rejected {
                    self.reject(entry.record.size(), vec![entry.token], &reason, "");
                }
                self.drain_aggregators();
            }
            Err(e) => {
                tracing::warn!(sink = %self.name(), error = %e,
                    "cannot aggregate with the new shard map; keeping the previous one");
            }
        }
    }
}

async fn wait_refresh(
    refresh: &mut Option<tokio::task::JoinHandle<Result<ShardMap, api::ListError>>>,
) -> Result<ShardMap, api::ListError> {
    match refresh {
        Some(handle) => match handle.await {
            Ok(result) => result,
            Err(e) => Err(api::ListError::Call(CallError {
                code: "task".into(),
                status: None,
                message: e.to_string(),
                class: ErrorClass::Retryable,
                sts_action: None,
            })),
        },
        None => std::future::pending().await,
    }
}

async fn wait_recheck(
    recheck: &mut Option<tokio::task::JoinHandle<Result<api::StreamSummary, CallError>>>,
) -> Result<api::StreamSummary, CallError> {
    match recheck {
        Some(handle) => match handle.await {
            Ok(result) => result,
            Err(e) => Err(CallError {
                code: "task".into(),
                status: None,
                message: e.to_string(),
                class: ErrorClass::Retryable,
                sts_action: None,
            }),
        },
        None => std::future::pending().await,
    }
}

async fn sleep_until_opt(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Truncates a partition key to 256 characters.
fn truncate_key(key: std::borrow::Cow<'_, str>) -> String {
    match key.char_indices().nth(MAX_PARTITION_KEY_CHARS) {
        Some((cut, _)) => key[..cut].to_string(),
        None => key.into_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::buffer::ack::AckRef;
    use crate::event::{EventTime, Map};

    #[test]
    fn keys_are_truncated_to_256_characters_and_random_keys_are_valid() {
        let long = "é".repeat(300);
        let key = truncate_key(std::borrow::Cow::Borrowed(&long));
        assert_eq!(key.chars().count(), 256);
        assert_eq!(truncate_key(std::borrow::Cow::Borrowed("web-1")), "web-1");
        let a = random_partition_key();
        assert_eq!(a.len(), 32);
        assert_ne!(a, random_partition_key());
    }

    #[tokio::test]
    async fn a_batch_completes_only_once_every_record_is_settled() {
        let (ack, waiter) = AckRef::new();
        let ev = Event::new("t".into(), EventTime::default(), Map::new());
        let batch = crate::buffer::Batch::new("t".into(), vec![ev.clone(), ev], 10, Some(ack));
        let (events, done) = batch.into_parts();
        let tracker = Tracker::new(events.len(), done, None, false);
        tracker.settle(true);
        let mut waiter = Box::pin(waiter.wait());
        assert!(
            tokio::time::timeout(Duration::from_millis(20), &mut waiter)
                .await
                .is_err(),
            "one record is still on its way"
        );
        tracker.settle(true);
        assert!(waiter.await);

        let (ack, waiter) = AckRef::new();
        let ev = Event::new("t".into(), EventTime::default(), Map::new());
        let (events, done) =
            crate::buffer::Batch::new("t".into(), vec![ev.clone(), ev], 10, Some(ack)).into_parts();
        let tracker = Tracker::new(events.len(), done, None, false);
        tracker.settle(false);
        tracker.settle(true);
        assert!(!waiter.wait().await, "a record given up on fails the ack");
    }
}
