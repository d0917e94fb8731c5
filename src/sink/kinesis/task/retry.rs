//! Entries going back into the batches: failed entries after their backoff (together, so
//! they fill calls), and entries the per-shard rate limiter held.

use std::time::Duration;

use tokio::time::Instant;

use super::super::batch::{Entry, Failed};
use super::super::settle::Tokens;
use crate::kinesis_record::Record;
use crate::sink::dead_letter;
use crate::sink::undeliverable::Why;

use super::Task;

impl Task {
    /// Puts failed entries back after a backoff (`delay` of the attempts made so far), unless
    /// they ran out of retries. Entries with as many attempts wait as one group and go back
    /// into the batches together.
    pub(super) fn schedule_retries(
        &mut self,
        failed: Vec<Failed<Tokens>>,
        delay: impl Fn(u32) -> Duration,
    ) {
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
    pub(super) fn within_retry_limit(&mut self, failed: Failed<Tokens>) -> Option<Entry<Tokens>> {
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
        let error = format!("{code}: {message}");
        let what = format!("records still failing after retry_limit ({limit}) retries");
        self.sink.undeliverable.give_up(
            entry.token.users,
            &Why {
                ack_dropped: false,
                ..Why::new(
                    dead_letter::reason::RETRY_LIMIT,
                    &what,
                    &self.sink.stream_target,
                    &error,
                )
            },
        );
        None
    }

    /// Moves entries whose backoff ended back into the batches, where they wait like new
    /// records: under load they fill the next calls with new records; when a client is blocked
    /// on them, they go as soon as nothing more is queued (the linger). Aggregated entries
    /// built for an older shard map are split and aggregated again by the current one.
    pub(super) fn release_retries(&mut self) {
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

    /// Records are waiting in containers or the batcher since `now` (unless older ones wait
    /// already); with `client_waits`, a client is blocked on them.
    pub(super) fn mark_pending(&mut self, now: Instant, client_waits: bool) {
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

    /// Kinesis throttled `record`: its shard is held to its limits from now on (`auto`).
    pub(super) fn engage_limiter(&mut self, record: &Record) {
        let Some(limiter) = self.limiter.as_mut() else {
            return;
        };
        if let Some(shard) = limiter.throttled(record, Instant::now()) {
            tracing::info!(sink = %self.sink.cx.name, stream = %self.sink.config.stream,
                shard, "Kinesis throttled the shard: holding records to its write limits from now on");
        }
    }

    /// Moves the entries the rate limiter lets go now into the batcher.
    pub(super) fn release_held(&mut self) {
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
}
