//! The sink's running loop ([`Task::run`]): one task owns all delivery state. It takes input
//! batches, keeps up to `max_in_flight` PutRecords calls running, and wakes for answers,
//! retries, the flush interval, the rate limiter and shard map refreshes.
//!
//! - [`intake`]: records into entries (encode, keys, aggregation, rejects).
//! - [`answer`]: calls and their answers.
//! - [`retry`]: entries going back into the batches (backoffs, the rate limiter).
//! - [`reshard`]: shard map refreshes, regrouping, misplaced aggregates.

mod answer;
mod intake;
mod reshard;
mod retry;

use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

use tokio::task::JoinSet;
use tokio::time::Instant;

use super::aggregators::ShardAggregators;
use super::api::{self, CallError};
use super::batch::{Batch, BatchLimits, Batcher, Entry, EntryResult};
use super::rate_limit::ShardLimiter;
use super::retry_policy::ErrorClass;
use super::settle::Tokens;
use super::shard_map::ShardMap;
use super::{KinesisSink, ShardRateLimit};
use crate::buffer::QueueReceiver;
use crate::sink::settle::Token;

/// How often the shard map is listed again when aggregating (resharding is also detected from
/// PutRecords answers and refreshes at once).
const SHARD_REFRESH_INTERVAL: Duration = Duration::from_secs(60);

/// Soonest a shard map refresh follows the previous one.
const SHARD_REFRESH_MIN_GAP: Duration = Duration::from_secs(1);

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

/// Longest time between two releases while the limiter holds entries: within it, held entries
/// go when all of them can (a client's 500-record chunk on 4 throttled shards goes in one call
/// after 125 ms instead of three calls at 50 ms gaps). The shards' tokens, not this wait, set
/// the throughput; it adds at most this much latency, like the KPL's `RecordMaxBufferedTime`.
const LIMITER_RELEASE_MAX_GAP: Duration = Duration::from_millis(200);

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

/// Pre-flight for entries and what was done with them.
type PutResult = (Batch<Tokens>, Result<Vec<EntryResult>, CallError>);

/// The running loop's state.
pub(super) struct Task {
    pub(super) sink: KinesisSink,
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
    /// While an input batch is accepted: when it arrived. The rate limiter admits its records
    /// as of that instant, one clock read per batch instead of one per record (1.9% of the CPU
    /// of the no-ack forward → Kinesis run; a clock read costs ~40 ns in this VM).
    accepting_at: Option<Instant>,
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
    pub(super) fn new(
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
            accepting_at: None,
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

    pub(super) async fn run(&mut self, mut input: QueueReceiver) {
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
            let release_at = self.limiter.as_ref().and_then(|limiter| {
                let first = limiter.next_release()?;
                let all = limiter.all_released_at().unwrap_or(first).min(
                    limiter.held_since().unwrap_or(first).max(self.last_release)
                        + LIMITER_RELEASE_MAX_GAP,
                );
                Some(all.max(first).max(self.last_release + LIMITER_RELEASE_GAP))
            });
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
