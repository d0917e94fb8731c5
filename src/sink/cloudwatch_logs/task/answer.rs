//! Answers: delivered events acknowledged (refused ones dead-lettered), failed calls retried
//! first for their stream after a backoff or their events dead-lettered, and what `/health`
//! says about each stream and owed retention.

use std::sync::Arc;

use tokio::time::Instant;

use super::super::api::{self, Failure};
use super::super::batch::{Call, Dest, RejectedInfo};
use super::{Answer, Task};
use crate::sink::dead_letter;
use crate::sink::kinesis::retry_policy::{auth_reason, retry_reason, slow_delay};
use crate::sink::kinesis::retry_policy::{RETRY_BACKOFF, UNHEALTHY_AFTER};
use crate::sink::settle::Token;
use crate::sink::undeliverable::Why;

impl Task {
    pub(super) fn answer(&mut self, answer: Answer) {
        let Answer {
            call,
            ensured,
            retention,
            result,
        } = answer;
        let name = self.sink.cx.name.clone();
        let Some(stream) = self.streams.get_mut(&call.dest) else {
            return;
        };
        stream.busy = false;
        let mut retention = retention;
        if let Some(ensured) = ensured {
            stream.created = true;
            if ensured.group_created {
                tracing::info!(sink = %name, group = %call.dest.group, "created the log group");
                retention = ensured.retention_failed.map(Err).or(Some(Ok(())));
            }
            tracing::debug!(sink = %name, dest = %call.dest, "log stream ready");
        }
        if let Some(outcome) = retention {
            self.retention_outcome(&call.dest.group, outcome);
        }
        match result {
            Ok(rejected) => {
                if let Some(stream) = self.streams.get_mut(&call.dest) {
                    stream.failures = 0;
                    stream.not_before = None;
                }
                self.recovered(&call.dest);
                tracing::debug!(sink = %name, dest = %call.dest, events = call.events.len(),
                    bytes = call.bytes(), "PutLogEvents accepted");
                self.delivered(call, rejected);
            }
            Err(failure) => self.failed(call, failure),
        }
    }

    /// PutRetentionPolicy on a group logferry created: owed (and on `/health`) until it works.
    pub(super) fn retention_outcome(&mut self, group: &str, outcome: Result<(), Failure>) {
        let key = Arc::new(Dest {
            group: group.to_string(),
            stream: String::new(),
        });
        match outcome {
            Ok(()) => {
                self.retention_owed.remove(group);
                self.recovered(&key);
            }
            Err(failure) => {
                self.retention_owed.insert(group.to_string());
                let hint = api::hint(&failure, &key, &self.sink.creation);
                if let Some(suppressed) = crate::log_limit::allow(self.name(), "retention") {
                    tracing::error!(sink = %self.name(), group, error = %failure.error, suppressed,
                        "PutRetentionPolicy refused (events are delivered meanwhile): {hint}");
                }
                let why = format!(
                    "cloudwatch_logs group `{group}` (region {}): PutRetentionPolicy failed: {}. \
                     {hint}; events are delivered meanwhile",
                    self.sink.region, failure.error
                );
                self.failing.insert(key, why.clone());
                self.sink.cx.health.set_unhealthy(&self.sink.cx.name, why);
            }
        }
    }

    /// PutLogEvents took the call: its events are acknowledged, except those it refused.
    pub(super) fn delivered(&mut self, call: Call<Token>, rejected: RejectedInfo) {
        self.held_bytes = self.held_bytes.saturating_sub(call.bytes());
        let (mut records, mut bytes) = (0u64, 0u64);
        for (index, event) in call.events.into_iter().enumerate() {
            match rejected.refused(index) {
                Some((reason, message)) => self.reject(event.token, reason, message.to_string()),
                None => {
                    records += 1;
                    bytes += event.size() as u64;
                    event.token.settle(true);
                }
            }
        }
        let metrics = &self.sink.cx.metrics;
        metrics.records_out.inc_by(records);
        metrics.bytes_out.inc_by(bytes);
    }

    /// A call failed: retried after a backoff (first for its stream), or its events
    /// dead-lettered when they are what is wrong.
    pub(super) fn failed(&mut self, mut call: Call<Token>, failure: Failure) {
        let metrics = self.sink.cx.metrics.clone();
        let error = &failure.error;
        metrics.error(error_reason(failure.action));
        if failure.code() == "DataAlreadyAcceptedException" {
            return self.delivered(call, RejectedInfo::default());
        }
        let dest = call.dest.clone();
        if api::is_record_error(&failure) {
            self.held_bytes = self.held_bytes.saturating_sub(call.bytes());
            let message = format!("{}: {}", error.code, error.message);
            if let Some(suppressed) = crate::log_limit::allow(self.name(), "rejected") {
                tracing::warn!(sink = %self.name(), dest = %dest, error = %message,
                    events = call.events.len(), suppressed,
                    "PutLogEvents refused the events as invalid");
            }
            for event in call.events {
                self.reject(event.token, dead_letter::reason::REJECTED, message.clone());
            }
            return;
        }
        let reason = retry_reason(&failure.error.code, failure.error.status);
        metrics.retried(reason, call.events.len() as u64);
        let Some(stream) = self.streams.get_mut(&dest) else {
            return;
        };
        let stream_gone =
            failure.action == "PutLogEvents" && failure.code() == "ResourceNotFoundException";
        if stream_gone {
            // Deleted since it was created: made sure of again on the next try.
            stream.created = false;
        }
        stream.failures += 1;
        let fatal = api::is_fatal(&failure) && !stream_gone;
        let attempt = stream.failures - 1;
        let delay = if fatal {
            slow_delay(attempt)
        } else {
            RETRY_BACKOFF.delay(attempt)
        };
        stream.not_before = Some(Instant::now() + delay);
        let report = fatal || stream.failures >= UNHEALTHY_AFTER;
        let failures = stream.failures;
        let hint = api::hint(&failure, &dest, &self.sink.creation);
        if let Some(suppressed) = crate::log_limit::allow(self.name(), reason) {
            let (sink, region) = (&self.sink.cx.name, &self.sink.region);
            if fatal {
                tracing::error!(sink = %sink, dest = %dest, region = %region,
                    error = %failure.error, retry_in = ?delay, suppressed,
                    "{} refused: {hint}", failure.action);
            } else {
                tracing::warn!(sink = %sink, dest = %dest, error = %failure.error,
                    events = call.events.len(), retry_in = ?delay, suppressed,
                    "{} failed; retrying the call", failure.action);
            }
        }
        if report {
            if let Some(auth) = auth_reason(&failure.error.code, failure.error.status) {
                metrics.auth_failure(auth);
            }
            let why = format!(
                "cloudwatch_logs `{dest}` (region {}): {} failed ({failures} in a row): {}. {hint}",
                self.sink.region, failure.action, failure.error
            );
            self.failing.insert(dest.clone(), why.clone());
            self.sink.cx.health.set_unhealthy(&self.sink.cx.name, why);
        }
        if let Some(limit) = self.sink.config.retry_limit {
            if call.attempts >= limit {
                self.held_bytes = self.held_bytes.saturating_sub(call.bytes());
                let message = format!("{}: {}", failure.error.code, failure.error.message);
                tracing::error!(sink = %self.name(), dest = %dest, events = call.events.len(),
                    last_error = %message, retry_limit = limit,
                    "events still failing after retry_limit retries");
                for event in call.events {
                    self.give_up(event.token, message.clone());
                }
                return;
            }
        }
        call.attempts += 1;
        if let Some(stream) = self.streams.get_mut(&dest) {
            stream.calls.push_front(call);
        }
    }

    /// A stream accepts events again: off `/health` once no other stream is failing.
    pub(super) fn recovered(&mut self, dest: &Arc<Dest>) {
        if self.failing.remove(dest).is_none() {
            return;
        }
        match self.failing.values().next() {
            Some(reason) => self
                .sink
                .cx
                .health
                .set_unhealthy(&self.sink.cx.name, reason.clone()),
            None => {
                tracing::info!(sink = %self.name(), dest = %dest, "CloudWatch Logs accepts events again");
                self.sink.cx.health.set_healthy(&self.sink.cx.name);
            }
        }
    }

    /// An event that can never be sent: dead-lettered or dropped (counted and logged either
    /// way), and settled so it blocks nothing.
    pub(super) fn reject(&self, token: Token, reason: &'static str, error: String) {
        self.sink.undeliverable.give_up(
            [token],
            &Why::new(reason, "event cannot be sent", "", &error),
        );
    }

    /// An event that ran out of retries: dead-lettered, or dropped failing its
    /// acknowledgement.
    pub(super) fn give_up(&self, token: Token, error: String) {
        self.sink.undeliverable.give_up(
            [token],
            &Why {
                ack_dropped: false,
                ..Why::new(
                    dead_letter::reason::RETRY_LIMIT,
                    "event still failing after retry_limit retries",
                    "",
                    &error,
                )
            },
        );
    }
}

/// The `errors_total` reason of a failed call, in the metric's snake case.
fn error_reason(action: &str) -> &'static str {
    match action {
        "CreateLogStream" => "create_log_stream",
        "CreateLogGroup" => "create_log_group",
        "PutRetentionPolicy" => "put_retention_policy",
        _ => "put_log_events",
    }
}
