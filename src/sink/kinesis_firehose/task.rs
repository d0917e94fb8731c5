//! The sink's running loop: one task owns the batcher, the calls in flight and the retries.

use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

use bytes::Bytes;
use tokio::task::JoinSet;
use tokio::time::Instant;

use super::api::{self, RecordResult};
use super::batch::{self, Batcher, Entry};
use super::KinesisFirehoseSink;
use crate::buffer::QueueReceiver;
use crate::sink::dead_letter;
use crate::sink::kinesis::api::CallError;
use crate::sink::kinesis::retry_policy::{auth_reason, retry_reason, slow_delay, ErrorClass};
use crate::sink::kinesis::retry_policy::{RETRY_BACKOFF, UNHEALTHY_AFTER};
use crate::sink::settle::{Token, Tracked};
use crate::sink::undeliverable::Why;

/// Calls waiting for a slot before the sink stops taking input (pushing back on sources).
const READY_PER_SLOT: usize = 2;

type Answer = (Vec<Entry<Token>>, Result<Vec<RecordResult>, CallError>);

pub(super) struct Task {
    sink: KinesisFirehoseSink,
    batcher: Batcher<Token>,
    ready: VecDeque<Vec<Entry<Token>>>,
    /// Refused records waiting out their backoff, by due time.
    retries: BTreeMap<(Instant, u64), Vec<Entry<Token>>>,
    retry_seq: u64,
    in_flight: JoinSet<Answer>,
    pending_since: Option<Instant>,
    blocked_until: Option<Instant>,
    consecutive_failures: u32,
    unhealthy: bool,
    buf: Vec<u8>,
}

impl Task {
    pub(super) fn new(sink: KinesisFirehoseSink) -> Task {
        Task {
            batcher: Batcher::new(sink.config.simple_aggregation),
            sink,
            ready: VecDeque::new(),
            retries: BTreeMap::new(),
            retry_seq: 0,
            in_flight: JoinSet::new(),
            pending_since: None,
            blocked_until: None,
            consecutive_failures: 0,
            unhealthy: false,
            buf: Vec::new(),
        }
    }

    fn name(&self) -> &str {
        &self.sink.cx.name
    }

    pub(super) async fn run(&mut self, mut input: QueueReceiver) {
        let flush = self.sink.config.flush.get();
        let max_in_flight = self.sink.config.max_in_flight;
        let mut input_open = true;
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
            let accept = input_open && self.ready.len() < max_in_flight * READY_PER_SLOT;
            tokio::select! {
                biased;
                Some(joined) = self.in_flight.join_next() => match joined {
                    Ok((entries, result)) => self.answer(entries, result),
                    Err(e) => {
                        tracing::error!(sink = %self.name(), error = %e, "a PutRecordBatch task failed");
                    }
                },
                _ = sleep_until_opt(retry_at), if retry_at.is_some() => self.release_retries(),
                _ = sleep_until_opt(blocked_at), if blocked_at.is_some() => {
                    self.blocked_until = None;
                }
                _ = sleep_until_opt(flush_at), if flush_at.is_some() => self.flush_all(),
                batch = input.recv(), if accept => match batch {
                    Some(batch) => self.accept(batch),
                    None => {
                        input_open = false;
                        self.flush_all();
                    }
                },
            }
        }
        tracing::info!(sink = %self.name(), "kinesis_firehose sink drained");
    }

    fn is_idle(&self) -> bool {
        self.ready.is_empty()
            && self.retries.is_empty()
            && self.in_flight.is_empty()
            && self.batcher.is_empty()
    }

    fn accept(&mut self, batch: crate::buffer::Batch) {
        let tracked = Tracked::batch(batch, self.sink.undeliverable.keeps_records());
        let (tracker, events) = (&tracked.tracker, tracked.events());
        let client_waits = tracker.client_waits();
        self.sink.cx.metrics.records_in.inc_by(events.len() as u64);
        let mut buf = std::mem::take(&mut self.buf);
        for (index, event) in events.iter().enumerate() {
            let token = Token {
                tracker: tracker.clone(),
                index,
            };
            buf.clear();
            if let Err(e) = self.sink.encoder.encode(event, &mut buf) {
                self.reject(token, dead_letter::reason::UNENCODABLE, e.to_string());
                continue;
            }
            if buf.len() > batch::MAX_RECORD_BYTES {
                let why = format!(
                    "the record is {} bytes encoded; Firehose takes at most {} per record",
                    buf.len(),
                    batch::MAX_RECORD_BYTES
                );
                self.reject(token, dead_letter::reason::TOO_LARGE, why);
                continue;
            }
            if let Some(full) = self.batcher.push(&buf, token) {
                self.ready.push_back(full);
            }
        }
        self.buf = buf;
        if client_waits {
            // The client waits for this batch's acknowledgement: send now.
            self.flush_all();
        } else if !self.batcher.is_empty() {
            self.pending_since.get_or_insert_with(Instant::now);
        }
    }

    fn flush_all(&mut self) {
        self.ready.extend(self.batcher.flush());
        self.pending_since = None;
    }

    fn dispatch(&mut self) {
        let now = Instant::now();
        if self.blocked_until.is_some_and(|t| t > now) {
            return;
        }
        self.blocked_until = None;
        while self.in_flight.len() < self.sink.config.max_in_flight {
            let Some(entries) = self.ready.pop_front() else {
                break;
            };
            let client = self.sink.client.clone();
            let stream = self.sink.config.delivery_stream.clone();
            let data: Vec<Bytes> = entries.iter().map(|e| e.data.clone()).collect();
            let latency = self.sink.cx.metrics.request_duration("PutRecordBatch");
            let bytes: usize = data.iter().map(Bytes::len).sum();
            tracing::debug!(sink = %self.name(), records = data.len(), bytes, "PutRecordBatch");
            self.in_flight.spawn(async move {
                let started = std::time::Instant::now();
                let result = api::put_record_batch(&client, &stream, data).await;
                latency.observe(started.elapsed().as_secs_f64());
                (entries, result)
            });
        }
    }

    fn answer(&mut self, entries: Vec<Entry<Token>>, result: Result<Vec<RecordResult>, CallError>) {
        let results = match result {
            Ok(results) => results,
            Err(error) => return self.call_failed(entries, error),
        };
        self.consecutive_failures = 0;
        if self.unhealthy {
            self.unhealthy = false;
            self.sink.cx.health.set_healthy(&self.sink.cx.name);
            tracing::info!(sink = %self.name(), "Firehose accepts records again");
        }
        let mut failed = Vec::new();
        let mut last_error = None;
        let (mut records, mut bytes) = (0u64, 0u64);
        for (entry, outcome) in entries.into_iter().zip(results) {
            match outcome {
                None => {
                    records += entry.tokens.len() as u64;
                    bytes += entry.data.len() as u64;
                    for token in &entry.tokens {
                        token.settle(true);
                    }
                }
                Some(error) => {
                    last_error = Some(error);
                    failed.push(entry);
                }
            }
        }
        let metrics = &self.sink.cx.metrics;
        metrics.records_out.inc_by(records);
        metrics.bytes_out.inc_by(bytes);
        if let Some((code, message)) = last_error {
            let reason = firehose_reason(&code, None);
            metrics.retried(reason, failed.len() as u64);
            if let Some(suppressed) = crate::log_limit::allow(self.name(), reason) {
                tracing::warn!(sink = %self.name(), stream = %self.sink.config.delivery_stream,
                    records = failed.len(), error = %format!("{code}: {message}"), suppressed,
                    "PutRecordBatch refused some records; retrying only those after a backoff");
            }
            let error = format!("{code}: {message}");
            self.schedule_retries(failed, &error, |attempt| RETRY_BACKOFF.delay(attempt));
        }
    }

    fn call_failed(&mut self, entries: Vec<Entry<Token>>, error: CallError) {
        self.consecutive_failures += 1;
        let metrics = self.sink.cx.metrics.clone();
        metrics.error("put_record_batch");
        let reason = firehose_reason(&error.code, error.status);
        metrics.retried(reason, entries.len() as u64);
        let attempt = self.consecutive_failures - 1;
        let stream = self.sink.config.delivery_stream.clone();
        let hint = api::hint(&error, &stream);
        let fatal = error.class == ErrorClass::Fatal;
        let delay = if fatal {
            slow_delay(attempt)
        } else {
            RETRY_BACKOFF.delay(attempt)
        };
        if let Some(suppressed) = crate::log_limit::allow(self.name(), reason) {
            if fatal {
                tracing::error!(sink = %self.name(), stream = %stream, region = %self.sink.region,
                    error = %error, retry_in = ?delay, suppressed, "PutRecordBatch refused: {hint}");
            } else {
                tracing::warn!(sink = %self.name(), stream = %stream, error = %error,
                    records = entries.len(), retry_in = ?delay, suppressed,
                    "PutRecordBatch failed; retrying the call");
            }
        }
        if fatal || self.consecutive_failures >= UNHEALTHY_AFTER {
            if let Some(auth) = auth_reason(&error.code, error.status) {
                metrics.auth_failure(auth);
            }
            self.unhealthy = true;
            let why = format!(
                "kinesis_firehose stream `{stream}` (region {}): PutRecordBatch failed \
                 ({} in a row): {error}. {hint}",
                self.sink.region, self.consecutive_failures
            );
            self.sink.cx.health.set_unhealthy(&self.sink.cx.name, why);
        }
        let until = Instant::now() + delay;
        self.blocked_until = Some(self.blocked_until.map_or(until, |t| t.max(until)));
        // Due at once: the whole sink waits out the backoff (`blocked_until`).
        let message = error.to_string();
        self.schedule_retries(entries, &message, |_| Duration::ZERO);
    }

    /// Puts failed records back after a backoff, unless they ran out of retries.
    fn schedule_retries(
        &mut self,
        failed: Vec<Entry<Token>>,
        error: &str,
        delay: impl Fn(u32) -> Duration,
    ) {
        let mut groups: BTreeMap<u32, Vec<Entry<Token>>> = BTreeMap::new();
        for mut entry in failed {
            if self
                .sink
                .config
                .retry_limit
                .is_some_and(|limit| entry.attempts >= limit)
            {
                tracing::error!(sink = %self.name(), records = entry.tokens.len(),
                    last_error = %error, "records still failing after retry_limit retries");
                for token in entry.tokens {
                    self.give_up(token, error.to_string());
                }
                continue;
            }
            let attempt = entry.attempts;
            entry.attempts += 1;
            groups.entry(attempt).or_default().push(entry);
        }
        let now = Instant::now();
        for (attempt, group) in groups {
            self.retry_seq += 1;
            self.retries
                .insert((now + delay(attempt), self.retry_seq), group);
        }
    }

    fn release_retries(&mut self) {
        let now = Instant::now();
        let later = self.retries.split_off(&(now, u64::MAX));
        let due = std::mem::replace(&mut self.retries, later);
        for entry in due.into_values().flatten() {
            if let Some(full) = self.batcher.push_entry(entry) {
                self.ready.push_back(full);
            }
        }
        self.flush_all();
    }

    /// A record that can never be sent: dead-lettered or dropped (counted and logged either
    /// way), and settled so it blocks nothing.
    fn reject(&self, token: Token, reason: &'static str, error: String) {
        self.sink.undeliverable.give_up(
            [token],
            &Why::new(
                reason,
                "record cannot be sent",
                &self.sink.config.delivery_stream,
                &error,
            ),
        );
    }

    /// A record that ran out of retries: dead-lettered, or dropped failing its
    /// acknowledgement.
    fn give_up(&self, token: Token, error: String) {
        self.sink.undeliverable.give_up(
            [token],
            &Why {
                ack_dropped: false,
                ..Why::new(
                    dead_letter::reason::RETRY_LIMIT,
                    "record still failing after retry_limit retries",
                    &self.sink.config.delivery_stream,
                    &error,
                )
            },
        );
    }
}

/// The shared retry reason of a Firehose error: ServiceUnavailableException is Firehose's
/// throttling (the stream's or the account's limits), not a fault.
fn firehose_reason(code: &str, status: Option<u16>) -> &'static str {
    if code == "ServiceUnavailableException" {
        crate::metrics::retry_reason::THROTTLED
    } else {
        retry_reason(code, status)
    }
}

async fn sleep_until_opt(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
