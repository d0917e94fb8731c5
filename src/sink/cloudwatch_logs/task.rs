//! The sink's running loop: one task owns every stream's waiting events and calls. It takes
//! input batches while it holds less than [`HOLD_BYTES`], keeps up to `max_in_flight`
//! PutLogEvents calls running (one per stream), and wakes for answers, backoffs and `flush`.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::Arc;

use aws_sdk_cloudwatchlogs::types::InputLogEvent;
use tokio::task::JoinSet;
use tokio::time::Instant;

use super::api::{self, Failure};
use super::batch::{self, Call, Dest, LogEvent, RejectedInfo};
use super::config::Naming;
use super::CloudWatchLogsSink;
use crate::buffer::QueueReceiver;
use crate::event::{Event, EventTime};
use crate::sink::dead_letter;
use crate::sink::kinesis::retry_policy::{auth_reason, retry_reason, slow_delay};
use crate::sink::kinesis::retry_policy::{RETRY_BACKOFF, UNHEALTHY_AFTER};
use crate::sink::kinesis::settle::{Token, Tracker};

/// Bytes of events the sink holds (waiting, in calls, retried) before it stops taking input,
/// which then pushes back on the sources through the queue.
const HOLD_BYTES: usize = 8 << 20;

/// What a call gives back.
struct Answer {
    call: Call<Token>,
    /// The stream was made sure of first (CreateLogStream, maybe CreateLogGroup).
    ensured: Option<api::Ensured>,
    /// PutRetentionPolicy was (tried) again, for a group whose retention is owed.
    retention: Option<Result<(), Failure>>,
    /// PutLogEvents' answer (or the creation's failure).
    result: Result<RejectedInfo, Failure>,
}

/// One log stream's events and state.
struct Stream {
    dest: Arc<Dest>,
    /// Events not yet cut into calls.
    open: Vec<LogEvent<Token>>,
    open_bytes: usize,
    /// When the oldest open event arrived.
    since: Option<Instant>,
    /// Calls ready to go, in order (a retried call goes back first).
    calls: VecDeque<Call<Token>>,
    /// A call to this stream is in flight.
    busy: bool,
    /// CreateLogStream succeeded (or found it): no more creation calls.
    created: bool,
    /// No call before this (backoff after a failure).
    not_before: Option<Instant>,
    failures: u32,
}

impl Stream {
    fn new(dest: Arc<Dest>) -> Stream {
        Stream {
            dest,
            open: Vec::new(),
            open_bytes: 0,
            since: None,
            calls: VecDeque::new(),
            busy: false,
            created: false,
            not_before: None,
            failures: 0,
        }
    }

    /// Moves the open events into calls.
    fn cut(&mut self) {
        let open = std::mem::take(&mut self.open);
        for events in batch::cut(open) {
            self.calls.push_back(Call {
                dest: self.dest.clone(),
                events,
                attempts: 0,
            });
        }
        self.open_bytes = 0;
        self.since = None;
    }
}

pub(super) struct Task {
    sink: CloudWatchLogsSink,
    streams: HashMap<Arc<Dest>, Stream>,
    /// The destination when neither name is a template or a prefix.
    fixed: Option<Arc<Dest>>,
    in_flight: JoinSet<Answer>,
    held_bytes: usize,
    /// Streams whose failures are reported on `/health`, with the reason (a group's owed
    /// retention under the group with an empty stream name).
    failing: BTreeMap<Arc<Dest>, String>,
    /// Groups logferry created whose PutRetentionPolicy failed: tried again with their next
    /// call.
    retention_owed: HashSet<String>,
    encode_buf: Vec<u8>,
}

impl Task {
    pub(super) fn new(sink: CloudWatchLogsSink) -> Task {
        let fixed = match (&sink.destinations.group, &sink.destinations.stream) {
            (Naming::Fixed(group), Naming::Fixed(stream)) => Some(Arc::new(Dest {
                group: group.clone(),
                stream: stream.clone(),
            })),
            _ => None,
        };
        Task {
            sink,
            streams: HashMap::new(),
            fixed,
            in_flight: JoinSet::new(),
            held_bytes: 0,
            failing: BTreeMap::new(),
            retention_owed: HashSet::new(),
            encode_buf: Vec::with_capacity(4096),
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
            let now = Instant::now();
            let flush_at = self
                .streams
                .values()
                .filter_map(|s| s.since)
                .min()
                .map(|t| t + flush);
            let wake_at = (self.in_flight.len() < max_in_flight)
                .then(|| {
                    self.streams
                        .values()
                        .filter(|s| !s.busy && !s.calls.is_empty())
                        .filter_map(|s| s.not_before)
                        .filter(|t| *t > now)
                        .min()
                })
                .flatten();
            let accept = input_open && self.held_bytes < HOLD_BYTES;
            tokio::select! {
                biased;
                Some(joined) = self.in_flight.join_next() => match joined {
                    Ok(answer) => self.answer(answer),
                    Err(e) => {
                        // Its tokens are dropped, which fails their upstream acknowledgements.
                        tracing::error!(sink = %self.name(), error = %e, "a PutLogEvents task failed");
                    }
                },
                _ = sleep_until_opt(wake_at), if wake_at.is_some() => {}
                _ = sleep_until_opt(flush_at), if flush_at.is_some() => self.flush_due(flush),
                batch = input.recv(), if accept => match batch {
                    Some(batch) => self.accept(batch),
                    None => {
                        input_open = false;
                        for stream in self.streams.values_mut() {
                            stream.cut();
                        }
                    }
                },
            }
        }
        tracing::info!(sink = %self.name(), "cloudwatch_logs sink drained");
    }

    fn is_idle(&self) -> bool {
        self.in_flight.is_empty()
            && self
                .streams
                .values()
                .all(|s| s.open.is_empty() && s.calls.is_empty())
    }

    /// Encodes an input batch into events, each on its stream.
    fn accept(&mut self, batch: crate::buffer::Batch) {
        let client_waits = batch.client_waits();
        let (events, done) = batch.into_parts();
        self.sink.cx.metrics.records_in.inc_by(events.len() as u64);
        let (kept, events) = match self.sink.cx.dead_letters {
            Some(_) => (Some(events), Vec::new()),
            None => (None, events),
        };
        let tracker = Tracker::new(
            kept.as_ref().map_or(events.len(), Vec::len),
            done,
            kept,
            client_waits,
        );
        let events: &[Event] = match &tracker.events {
            Some(kept) => kept,
            None => &events,
        };
        let now_ms = EventTime::now().as_millis();
        let now = Instant::now();
        let mut touched: Vec<Arc<Dest>> = Vec::new();
        for (index, event) in events.iter().enumerate() {
            let token = Token {
                tracker: tracker.clone(),
                index,
            };
            let mut buf = std::mem::take(&mut self.encode_buf);
            buf.clear();
            let encoded = self.sink.encoder.encode(event, &mut buf);
            let message = match encoded {
                Ok(()) => String::from_utf8_lossy(&buf).into_owned(),
                Err(e) => {
                    self.encode_buf = buf;
                    self.reject(token, dead_letter::reason::UNENCODABLE, e.to_string());
                    continue;
                }
            };
            self.encode_buf = buf;
            let dest = match self.dest_for(event) {
                Ok(dest) => dest,
                Err(why) => {
                    self.reject(token, dead_letter::reason::INVALID, why);
                    continue;
                }
            };
            let timestamp = event.time.as_millis();
            let size = message.len() + batch::EVENT_OVERHEAD;
            if let Err(refused) =
                batch::check(timestamp, size, now_ms, self.sink.config.log_retention_days)
            {
                self.reject(token, refused.reason(), refused.to_string());
                continue;
            }
            self.held_bytes += size;
            let stream = self
                .streams
                .entry(dest.clone())
                .or_insert_with(|| Stream::new(dest.clone()));
            stream.open.push(LogEvent {
                timestamp,
                message,
                token,
            });
            stream.open_bytes += size;
            stream.since.get_or_insert(now);
            if stream.open.len() >= batch::MAX_EVENTS
                || stream.open_bytes >= batch::MAX_REQUEST_BYTES
            {
                stream.cut();
            }
            if client_waits && !touched.contains(&dest) {
                touched.push(dest);
            }
        }
        // A client waits for this batch's acknowledgement before it sends more: waiting for
        // fuller calls would only slow it down.
        for dest in touched {
            if let Some(stream) = self.streams.get_mut(&dest) {
                stream.cut();
            }
        }
    }

    /// The log group and stream of `event`, or why it has none.
    fn dest_for(&self, event: &Event) -> Result<Arc<Dest>, String> {
        if let Some(fixed) = &self.fixed {
            return Ok(fixed.clone());
        }
        let d = &self.sink.destinations;
        let group = name_for(&d.group, event, "log_group_template", "log_group_name")?;
        let stream = name_for(&d.stream, event, "log_stream_template", "log_stream_name")?;
        check_group_name(&group)?;
        check_stream_name(&stream)?;
        let dest = Dest { group, stream };
        Ok(match self.streams.get_key_value(&dest) {
            Some((known, _)) => known.clone(),
            None => Arc::new(dest),
        })
    }

    /// Streams whose oldest event waited `flush`: cut into calls.
    fn flush_due(&mut self, flush: std::time::Duration) {
        let now = Instant::now();
        for stream in self.streams.values_mut() {
            if stream.since.is_some_and(|t| t + flush <= now) {
                stream.cut();
            }
        }
    }

    /// Starts calls: at most one per stream, `max_in_flight` in all.
    fn dispatch(&mut self) {
        let max = self.sink.config.max_in_flight;
        let now = Instant::now();
        let emf = self.sink.config.log_format.is_some();
        for stream in self.streams.values_mut() {
            if self.in_flight.len() >= max {
                break;
            }
            if stream.busy || stream.not_before.is_some_and(|t| t > now) {
                continue;
            }
            let Some(call) = stream.calls.pop_front() else {
                continue;
            };
            stream.busy = true;
            let client = self.sink.client.clone();
            let creation = (!stream.created).then(|| self.sink.creation.clone());
            let owed = self
                .sink
                .config
                .log_retention_days
                .filter(|_| self.retention_owed.contains(&stream.dest.group));
            let latency = self.sink.cx.metrics.request_duration("PutLogEvents");
            self.in_flight.spawn(async move {
                let (mut ensured, mut retention) = (None, None);
                if let Some(creation) = creation {
                    match api::ensure(&client, &call.dest, &creation).await {
                        Ok(made) => ensured = Some(made),
                        Err(failure) => {
                            return Answer {
                                call,
                                ensured,
                                retention,
                                result: Err(failure),
                            }
                        }
                    }
                } else if let Some(days) = owed {
                    retention = Some(api::set_retention(&client, &call.dest.group, days).await);
                }
                let events = call
                    .events
                    .iter()
                    .filter_map(|e| {
                        InputLogEvent::builder()
                            .timestamp(e.timestamp)
                            .message(e.message.clone())
                            .build()
                            .ok()
                    })
                    .collect();
                let started = std::time::Instant::now();
                let result = api::put(&client, &call.dest, events, emf).await;
                latency.observe(started.elapsed().as_secs_f64());
                Answer {
                    call,
                    ensured,
                    retention,
                    result,
                }
            });
        }
    }

    fn answer(&mut self, answer: Answer) {
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
    fn retention_outcome(&mut self, group: &str, outcome: Result<(), Failure>) {
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
    fn delivered(&mut self, call: Call<Token>, rejected: RejectedInfo) {
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
    fn failed(&mut self, mut call: Call<Token>, failure: Failure) {
        let metrics = self.sink.cx.metrics.clone();
        let error = &failure.error;
        metrics.error(&failure.action.to_ascii_lowercase());
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
    fn recovered(&mut self, dest: &Arc<Dest>) {
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

    /// An event that can never be sent: written to the dead-letter file, or counted and
    /// logged as dropped; settled either way so it blocks nothing.
    fn reject(&self, token: Token, reason: &'static str, error: String) {
        let log = crate::log_limit::allow(self.name(), reason);
        if let Some(dead_letters) = &self.sink.cx.dead_letters {
            if let Some(suppressed) = log {
                tracing::warn!(sink = %self.name(), reason, error = %error, suppressed,
                    "event cannot be sent: written to the dead-letter file");
            }
            match token.event().cloned() {
                Some(event) => dead_letters.send(dead_letter::Letter {
                    reason,
                    error: Some(error),
                    event,
                    on_written: Box::new(move |ok| token.settle(ok)),
                }),
                // Unreachable: records are kept whenever a dead-letter file is configured.
                None => token.settle(false),
            }
            return;
        }
        self.sink.cx.metrics.dropped(reason, 1);
        if let Some(suppressed) = log {
            tracing::warn!(sink = %self.name(), reason, error = %error, suppressed,
                "event dropped: it cannot be sent (set dead_letter_path to keep such events)");
        }
        token.settle(true);
    }

    /// An event that ran out of retries: dead-lettered, or dropped failing its
    /// acknowledgement.
    fn give_up(&self, token: Token, error: String) {
        if self.sink.cx.dead_letters.is_some() {
            return self.reject(token, dead_letter::reason::RETRY_LIMIT, error);
        }
        self.sink
            .cx
            .metrics
            .dropped(dead_letter::reason::RETRY_LIMIT, 1);
        token.settle(false);
    }
}

/// A group or stream name for `event` by `naming`.
fn name_for(
    naming: &Naming,
    event: &Event,
    template_key: &str,
    fallback_key: &str,
) -> Result<String, String> {
    match naming {
        Naming::Fixed(name) => Ok(name.clone()),
        Naming::TagPrefix(prefix) => Ok(format!("{prefix}{}", &*event.tag)),
        Naming::Template { template, fallback } => match template.render(event) {
            Ok(name) => Ok(name),
            Err(missing) => fallback.clone().ok_or_else(|| {
                format!(
                    "{template_key}: the record has no {missing}, and there is no \
                     {fallback_key} to fall back to"
                )
            }),
        },
    }
}

/// CloudWatch's rule for log group names: 1 to 512 of `[.-_/#A-Za-z0-9]`.
pub(super) fn check_group_name(name: &str) -> Result<(), String> {
    let ok = (1..=512).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-/#".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "`{name}` is not a valid log group name (1 to 512 letters, digits and ._-/#)"
        ))
    }
}

/// CloudWatch's rule for log stream names: 1 to 512 characters, no `:` or `*`.
pub(super) fn check_stream_name(name: &str) -> Result<(), String> {
    if (1..=512).contains(&name.len()) && !name.contains([':', '*']) {
        Ok(())
    } else {
        Err(format!(
            "`{name}` is not a valid log stream name (1 to 512 characters, no : or *)"
        ))
    }
}

async fn sleep_until_opt(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
