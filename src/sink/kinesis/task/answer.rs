//! PutRecords calls and their answers: calls started up to `max_in_flight`, each answer sorted
//! into delivered (acknowledged), to retry and fatal; a whole failed call and what it does to
//! `/health`.

use std::time::Duration;

use tokio::time::Instant;

use super::super::api::CallError;
use super::super::batch::{self, Batch, EntryResult, Failed};
use super::super::put_records;
use super::super::retry_policy::{self, auth_reason, retry_reason, ErrorClass};
use super::super::retry_policy::{slow_delay, RETRY_BACKOFF, UNHEALTHY_AFTER};
use super::super::settle::{Delivered, Tokens};
use crate::sink::dead_letter;
use crate::sink::undeliverable::Why;

use super::Task;

impl Task {
    pub(super) fn dispatch(&mut self) {
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
            let client = self.sink.put_records.clone();
            let stream = self.sink.config.stream.clone();
            let put =
                async move { put_records::put_records(client, &stream, batch, shard_ids).await };
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

    pub(super) fn handle_result(
        &mut self,
        batch: Batch<Tokens>,
        result: Result<Vec<EntryResult>, CallError>,
    ) {
        let results = match result {
            Ok(results) => results,
            Err(error) => return self.call_failed(batch, error),
        };
        if results.len() == batch.len() {
            self.call_succeeded();
        }
        let mut stale_shard = false;
        let mut delivered = Delivered::default();
        let outcome = match batch::split_results(batch, results, |entry, shard_id| {
            let tokens = &entry.token;
            let elsewhere = tokens.landed_elsewhere(shard_id);
            stale_shard |= elsewhere;
            if elsewhere && tokens.users.len() > 1 {
                // Accepted, but a KCL consumer may drop the whole aggregate: it is kept, and
                // acknowledged or sent again once the refreshed map tells (`resend_misplaced`).
                self.sink.metrics.misplaced(tokens.size);
                return true;
            }
            delivered.add(tokens);
            false
        }) {
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
        self.acknowledge_delivered(delivered);
        self.sink.metrics.update_ratio();
        self.misplaced.extend(outcome.kept);
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
        if self.sink.undeliverable.keeps_records() {
            let (rejected, config): (Vec<_>, Vec<_>) = fatal
                .into_iter()
                .partition(|f| retry_policy::is_record_error(&f.code));
            fatal = config;
            for failed in rejected {
                self.sink.metrics.failed_entry(&failed.code);
                let error = format!("{}: {}", failed.code, failed.message);
                self.sink.undeliverable.give_up(
                    failed.entry.token.users,
                    &Why::new(
                        dead_letter::reason::REJECTED,
                        "PutRecords refused the record",
                        &self.sink.stream_target,
                        &error,
                    ),
                );
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

    /// An entry is delivered: its records count as out, and their acknowledgements settle.
    pub(super) fn acknowledge(&self, tokens: &Tokens) {
        let metrics = &self.sink.cx.metrics;
        metrics.records_out.inc_by(tokens.users.len() as u64);
        metrics.bytes_out.inc_by(tokens.size as u64);
        tokens.settle(true);
    }

    /// The entries of an answer are delivered: counted (sent, and as the sink's records out),
    /// then their acknowledgements settle.
    pub(super) fn acknowledge_delivered(&self, delivered: Delivered) {
        let Delivered { tally, settlement } = delivered;
        self.sink.metrics.sent(&tally);
        let metrics = &self.sink.cx.metrics;
        metrics.records_out.inc_by(tally.user_records);
        metrics.bytes_out.inc_by(tally.bytes);
        settlement.settle(true);
    }

    /// Counts what an accepted entry cost, before its tokens are settled.
    pub(super) fn call_succeeded(&mut self) {
        self.consecutive_failures = 0;
        if self.unhealthy {
            self.unhealthy = false;
            self.sink.cx.health.set_healthy(&self.sink.cx.name);
            tracing::info!(sink = %self.name(), stream = %self.sink.config.stream,
                "Kinesis accepts records again");
        }
    }

    /// A whole call failed: every entry goes back, and no call starts before the backoff ends.
    pub(super) fn call_failed(&mut self, batch: Batch<Tokens>, error: CallError) {
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

    pub(super) fn report_fatal(&mut self, error: &CallError, action: &str) {
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

    pub(super) fn set_unhealthy(&mut self, reason: String) {
        self.unhealthy = true;
        self.sink
            .cx
            .health
            .set_unhealthy(&self.sink.cx.name, reason);
    }
}
