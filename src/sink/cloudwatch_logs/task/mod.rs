//! The sink's running loop: one task owns every stream's waiting events and calls. It takes
//! input batches while it holds less than [`HOLD_BYTES`], keeps up to `max_in_flight`
//! PutLogEvents calls running (one per stream), and wakes for answers, backoffs and `flush`.
//!
//! - this module: the loop, records into events (`accept`), calls started (`dispatch`);
//! - [`answer`]: answers sorted into delivered, dead-lettered and retried, and `/health`.

mod answer;

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::Arc;

use aws_sdk_cloudwatchlogs::types::InputLogEvent;
use tokio::task::JoinSet;
use tokio::time::Instant;

use super::api::{self, Failure};
use super::batch::{self, Call, Dest, LogEvent, RejectedInfo};
use super::config::Naming;
use super::names;
use super::CloudWatchLogsSink;
use crate::buffer::QueueReceiver;
use crate::event::{Event, EventTime};
use crate::sink::dead_letter;
use crate::sink::settle::{Token, Tracked};

/// Bytes of events the sink holds (waiting, in calls, retried) before it stops taking input,
/// which then pushes back on the sources through the queue.
const HOLD_BYTES: usize = 8 << 20;

/// Streams remembered (created, idle) before idle ones are forgotten: templates can name many
/// streams (one per pod or task), and a forgotten stream only costs a CreateLogStream call if
/// it comes back.
const MAX_IDLE_STREAMS: usize = 4096;

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
    /// The stream of each call in flight, by task id (to free a stream whose task panicked).
    in_flight_dest: HashMap<tokio::task::Id, Arc<Dest>>,
    held_bytes: usize,
    /// Streams whose failures are reported on `/health`, with the reason (a group's owed
    /// retention under the group with an empty stream name).
    failing: BTreeMap<Arc<Dest>, String>,
    /// Groups logferry created whose PutRetentionPolicy failed: tried again with their next
    /// call.
    retention_owed: HashSet<String>,
    encode_buf: Vec<u8>,
    event_limits: batch::EventLimits,
}

impl Task {
    pub(super) fn new(sink: CloudWatchLogsSink) -> Task {
        let event_limits = sink.config.event_limits();
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
            in_flight_dest: HashMap::new(),
            held_bytes: 0,
            failing: BTreeMap::new(),
            retention_owed: HashSet::new(),
            encode_buf: Vec::with_capacity(4096),
            event_limits,
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
                Some(joined) = self.in_flight.join_next_with_id() => match joined {
                    Ok((id, answer)) => {
                        self.in_flight_dest.remove(&id);
                        self.answer(answer);
                    }
                    Err(e) => {
                        // Its tokens are dropped, which fails their upstream acknowledgements;
                        // the stream takes calls again.
                        tracing::error!(sink = %self.name(), error = %e, "a PutLogEvents task failed");
                        if let Some(dest) = self.in_flight_dest.remove(&e.id()) {
                            if let Some(stream) = self.streams.get_mut(&dest) {
                                stream.busy = false;
                            }
                        }
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
        let tracked = Tracked::batch(batch, self.sink.undeliverable.keeps_records());
        let (tracker, events) = (&tracked.tracker, tracked.events());
        let client_waits = tracker.client_waits();
        self.sink.cx.metrics.records_in.inc_by(events.len() as u64);
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
            if let Err(refused) = batch::check(timestamp, size, now_ms, self.event_limits) {
                self.reject(token, refused.reason(), refused.to_string());
                continue;
            }
            self.held_bytes += size;
            let stream = self
                .streams
                .entry(dest.clone())
                .or_insert_with(|| Stream::new(dest.clone()));
            // A full call goes before the event that would not fit it (cutting after it would
            // leave a call of one event behind every full one).
            if !batch::fits(stream.open.len(), stream.open_bytes, size) {
                stream.cut();
            }
            stream.open.push(LogEvent {
                timestamp,
                message,
                token,
            });
            stream.open_bytes += size;
            stream.since.get_or_insert(now);
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
        if self.streams.len() > MAX_IDLE_STREAMS {
            let failing = &self.failing;
            self.streams.retain(|dest, s| {
                s.busy || !s.open.is_empty() || !s.calls.is_empty() || failing.contains_key(dest)
            });
        }
    }

    /// The log group and stream of `event`, or why it has none.
    fn dest_for(&self, event: &Event) -> Result<Arc<Dest>, String> {
        if let Some(fixed) = &self.fixed {
            return Ok(fixed.clone());
        }
        let d = &self.sink.destinations;
        let group = names::name_for(&d.group, event, "log_group_template", "log_group_name")?;
        let stream = names::name_for(&d.stream, event, "log_stream_template", "log_stream_name")?;
        names::check_group_name(&group)?;
        names::check_stream_name(&stream)?;
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
            let dest = call.dest.clone();
            let handle = self.in_flight.spawn(async move {
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
            self.in_flight_dest.insert(handle.id(), dest);
        }
    }
}

async fn sleep_until_opt(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
