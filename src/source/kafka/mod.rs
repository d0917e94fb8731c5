//! The Kafka source (`type = "kafka"` under `[[sources]]`): consumes topics of a Kafka / Amazon
//! MSK cluster as a consumer group member, with the MSK IAM authentication of the Kafka sink.
//!
//! - [`config`]: options (Fluent Bit `in_kafka` names), checks, librdkafka properties.
//! - [`decode`]: a message into a record (JSON object or raw value, metadata, tag).
//! - [`offsets`]: which offsets may be committed.
//! - [`context`]: librdkafka's callbacks (errors, tokens, rebalances).
//!
//! Consuming: a thread of its own polls a `BaseConsumer` in bursts (every message librdkafka has
//! ready, up to a full batch) and writes each message's record into one msgpack buffer per
//! batch; rebalance callbacks run inside those polls, on that thread. See docs/kafka.md
//! ("Benchmark of the source") for why: the async `StreamConsumer` polled per message cost
//! almost twice the CPU per record.
//!
//! At least once, end to end: messages are routed in batches (at most `buffer_max_size` bytes,
//! waiting at most `poll_ms`); each batch carries an acknowledgement that resolves once every
//! sink it went to delivered it, and a partition's offset is committed only past batches that
//! were all delivered, in order (see [`offsets`]). Offsets are committed every
//! [`COMMIT_INTERVAL`], on a rebalance, and when stopping.
//!
//! Backpressure: while the router waits for room in a sink's queue, the assigned partitions are
//! paused (librdkafka stops fetching; what it had prefetched is dropped and fetched again on
//! resume), and the consumer is still polled so that rebalances are served.
//!
//! Duplicates: after a crash (kill -9), every record consumed since the last commit is read
//! again: at most what was in flight (sink queues) plus [`COMMIT_INTERVAL`] of delivered
//! records. A clean stop commits everything delivered within [`STOP_WAIT`].

pub mod config;
pub mod context;
pub mod decode;
pub mod offsets;
mod transcode;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::message::{BorrowedMessage, Message as _, Timestamp};
use tokio::runtime::Handle;
use tokio::sync::mpsc;

use self::config::{KafkaSourceConfig, KafkaSourceSettings};
use self::context::{offset_list, SourceContext as KafkaContext};
use self::decode::{Decoder, Message};
use self::offsets::{BatchId, Offsets, PartitionKey};
use super::{SourceContext, SourceError};
use crate::buffer::AckRef;
use crate::event::{Event, EventTime, Map, Tag};
use crate::kafka::auth::MskTokenProvider;
use crate::kafka::options;

/// How often delivered offsets are committed.
pub const COMMIT_INTERVAL: Duration = Duration::from_secs(1);

/// How long a blocked router may wait before the partitions are paused.
const PAUSE_AFTER: Duration = Duration::from_millis(200);

/// How long a stopping source waits for its records in flight to be delivered, to commit them.
pub const STOP_WAIT: Duration = Duration::from_secs(10);

/// The longest the consuming thread blocks in librdkafka (or on a full router, once the
/// partitions are paused) before it looks at acknowledgements, commits and shutdown again.
const TICK: Duration = Duration::from_millis(100);

type Consumer_ = BaseConsumer<KafkaContext>;

/// Creates the consumer, subscribes, and starts the thread consuming until shutdown (it polls
/// librdkafka in bursts); returns a task that ends when the thread does.
pub async fn start(
    config: KafkaSourceConfig,
    cx: SourceContext,
) -> Result<tokio::task::JoinHandle<()>, SourceError> {
    let setup = |message: String| SourceError::Setup {
        name: cx.name.clone(),
        message,
    };
    let settings = config
        .validate()
        .map_err(|problems| setup(crate::config::field::join(&problems)))?;
    for warning in &settings.warnings {
        tracing::warn!(source = %cx.name, "{warning}");
    }
    let tokens = match &settings.msk_iam {
        Some(msk) => Some(Arc::new(
            MskTokenProvider::load(msk, &cx.name)
                .await
                .map_err(|e| setup(e.to_string()))?,
        )),
        None => None,
    };
    let offsets = Arc::new(Mutex::new(Offsets::default()));
    let assignment_changes = Arc::new(AtomicU64::new(0));
    let context = KafkaContext {
        name: cx.name.clone(),
        metrics: cx.metrics.clone(),
        offsets: offsets.clone(),
        assignment_changes: assignment_changes.clone(),
        tokens,
    };
    let consumer: Consumer_ = options::client_config(&settings.properties)
        .create_with_context(context)
        .map_err(|e| setup(format!("cannot create the Kafka consumer: {e}")))?;
    let topics: Vec<&str> = settings.topics.iter().map(String::as_str).collect();
    consumer
        .subscribe(&topics)
        .map_err(|e| setup(format!("cannot subscribe to {topics:?}: {e}")))?;
    tracing::info!(source = %cx.name, brokers = settings.property("bootstrap.servers").unwrap_or(""),
        topics = ?settings.topics, group = settings.property("group.id").unwrap_or(""),
        msk_iam = settings.msk_iam.is_some(), "kafka source consuming");
    let runner = Runner {
        consumer,
        st: State {
            decoder: Decoder::new(&settings),
            settings,
            offsets,
            assigned: AssignedCache::new(assignment_changes),
            cx,
            pending: Pending::default(),
            paused: false,
            consumed: (0, 0),
        },
    };
    // A thread of its own rather than a blocking task of the runtime: dropping the runtime
    // waits for blocking tasks, and a source still stopping when the grace period ran out
    // must not hold the process up.
    let handle = Handle::current();
    let name = runner.st.cx.name.clone();
    let (done, finished) = tokio::sync::oneshot::channel::<()>();
    std::thread::Builder::new()
        .name("kafka-source".to_string())
        .spawn(move || {
            // In the runtime's context: timers are created here, futures run by block_on.
            let _runtime = handle.enter();
            runner.run(&handle);
            let _ = done.send(());
        })
        .map_err(|e| SourceError::Setup {
            name: name.clone(),
            message: format!("cannot start the consuming thread: {e}"),
        })?;
    Ok(tokio::spawn(async move {
        if finished.await.is_err() {
            tracing::error!(source = %name, "the Kafka source's thread ended abnormally");
        }
    }))
}

/// Messages consumed and not routed yet, their records packed one after the other in `buf`.
#[derive(Default)]
struct Pending {
    buf: Vec<u8>,
    /// Runs of records with one tag, in consumption order.
    groups: Vec<(Tag, Vec<PackedRecord>)>,
    bytes: usize,
    /// Per partition, the offset after its last record here.
    ends: Vec<(PartitionKey, i64)>,
    since: Option<Instant>,
}

impl Pending {
    /// An empty batch whose buffer has room for `capacity` bytes of records.
    fn with_capacity(capacity: usize) -> Pending {
        Pending {
            buf: Vec::with_capacity(capacity),
            ..Pending::default()
        }
    }

    /// Adds the record that was just written at `start..` of `buf`.
    fn push(&mut self, tag: Tag, time: EventTime, start: usize, bytes: usize, offset: Position) {
        self.since.get_or_insert_with(Instant::now);
        self.bytes += bytes;
        let record = (time, start, self.buf.len());
        match self.groups.last_mut() {
            Some((last, records)) if *last == tag => records.push(record),
            _ => self.groups.push((tag, vec![record])),
        }
        let (topic, partition, offset) = offset;
        match self
            .ends
            .iter_mut()
            .find(|((t, p), _)| *p == partition && t == topic)
        {
            Some((_, end)) => *end = offset + 1,
            None => self.ends.push(((topic.to_string(), partition), offset + 1)),
        }
    }

    fn is_empty(&self) -> bool {
        self.groups.is_empty()
    }

    /// The records as events grouped by tag, each a slice of one shared buffer.
    fn into_groups(mut self) -> Vec<(Tag, Vec<Event>)> {
        // A batch cut short by `poll_ms` should not pin the room a full one would need.
        if self.buf.capacity() > self.buf.len() + self.buf.len() / 4 + (64 << 10) {
            self.buf.shrink_to_fit();
        }
        let packed = Bytes::from(self.buf);
        self.groups
            .into_iter()
            .map(|(tag, records)| {
                let events = records
                    .into_iter()
                    .map(|(time, start, end)| {
                        // Written by the decoder, well-formed and bounded in depth.
                        let record = Map::from_checked_msgpack(packed.slice(start..end));
                        Event::new(tag.clone(), time, record)
                    })
                    .collect();
                (tag, events)
            })
            .collect()
    }
}

/// A record of a pending batch: its time, and where it is in the batch's buffer.
type PackedRecord = (EventTime, usize, usize);

/// A message's topic, partition and offset.
type Position<'a> = (&'a str, i32, i64);

/// Which partitions are assigned, as last seen: asked of [`Offsets`] (under its lock) only
/// for a partition not seen since the assignment last changed.
struct AssignedCache {
    changes: Arc<AtomicU64>,
    seen_at: u64,
    known: Vec<(PartitionKey, bool)>,
}

impl AssignedCache {
    fn new(changes: Arc<AtomicU64>) -> AssignedCache {
        AssignedCache {
            changes,
            seen_at: 0,
            known: Vec::new(),
        }
    }

    fn is_assigned(&mut self, offsets: &Mutex<Offsets>, topic: &str, partition: i32) -> bool {
        let now = self.changes.load(Ordering::Acquire);
        if now != self.seen_at {
            self.known.clear();
            self.seen_at = now;
        }
        if let Some((_, assigned)) = self
            .known
            .iter()
            .find(|((t, p), _)| *p == partition && t == topic)
        {
            return *assigned;
        }
        let assigned = offsets
            .lock()
            .map(|o| o.is_assigned(topic, partition))
            .unwrap_or(false);
        self.known.push(((topic.to_string(), partition), assigned));
        assigned
    }
}

struct Runner {
    consumer: Consumer_,
    st: State,
}

/// Everything of the runner but the consumer, whose messages borrow it.
struct State {
    settings: KafkaSourceSettings,
    decoder: Decoder,
    offsets: Arc<Mutex<Offsets>>,
    assigned: AssignedCache,
    cx: SourceContext,
    pending: Pending,
    paused: bool,
    /// Records and bytes consumed and not yet added to the metrics.
    consumed: (u64, u64),
}

impl Runner {
    /// The consuming loop, on a thread of its own: polls librdkafka in bursts (every message
    /// librdkafka has queued, up to a full batch), decodes them into the pending batch, and
    /// routes the batch once it is full or `poll_ms` old. Rebalance callbacks run inside the
    /// polls, on this thread.
    fn run(mut self, handle: &Handle) {
        let (settled_tx, mut settled) = mpsc::unbounded_channel::<(BatchId, bool)>();
        let shutdown = self.st.cx.shutdown.clone();
        let mut next_commit = Instant::now() + COMMIT_INTERVAL;
        while !shutdown.is_cancelled() {
            while let Ok((id, ok)) = settled.try_recv() {
                self.st.settle(id, ok);
            }
            let now = Instant::now();
            if now >= next_commit {
                self.commit(CommitMode::Async);
                next_commit = now + COMMIT_INTERVAL;
            }
            let mut wait = TICK.min(next_commit.saturating_duration_since(now));
            if let Some(since) = self.st.pending.since {
                wait = wait.min((since + self.st.settings.poll).saturating_duration_since(now));
            }
            self.consume(wait);
            let full = self.st.pending.bytes >= self.st.settings.buffer_max_size;
            let due = self
                .st
                .pending
                .since
                .is_some_and(|since| since.elapsed() >= self.st.settings.poll);
            if (full || due) && self.route(handle, &settled_tx).is_err() {
                break;
            }
        }
        self.stop(handle, settled);
    }

    /// Polls the consumer (waiting at most `wait` for the first message) and takes every
    /// message librdkafka has ready, until the batch is full or `poll_ms` old.
    fn consume(&mut self, wait: Duration) {
        let mut timeout = wait;
        let mut n = 0u32;
        loop {
            match self.consumer.poll(timeout) {
                Some(Ok(message)) => self.st.take(&message),
                Some(Err(e)) => self.st.consume_error(&e),
                // Nothing ready, or an event (a rebalance) was served.
                None => break,
            }
            timeout = Duration::ZERO;
            n += 1;
            if self.st.pending.bytes >= self.st.settings.buffer_max_size {
                break;
            }
            if n.is_multiple_of(1024)
                && self
                    .st
                    .pending
                    .since
                    .is_some_and(|since| since.elapsed() >= self.st.settings.poll)
            {
                break;
            }
        }
        self.st.count_consumed();
    }

    /// Routes the pending batch with one acknowledgement, pausing the partitions while the
    /// router waits for room (the consumer is still polled, every [`TICK`], so that the
    /// consumer stays in the group and rebalances are served). Err when the router is closed,
    /// or when stopping and the router stayed full for [`STOP_WAIT`] (the batch is then not
    /// committed, and read again after a restart).
    fn route(
        &mut self,
        handle: &Handle,
        settled_tx: &mpsc::UnboundedSender<(BatchId, bool)>,
    ) -> Result<(), ()> {
        // The next batch likely fills as this one did: room for it up front, not by doubling.
        let room = (self.st.pending.buf.len() + (64 << 10))
            .min(self.st.settings.buffer_max_size + (256 << 10));
        let pending = std::mem::replace(&mut self.st.pending, Pending::with_capacity(room));
        if pending.is_empty() {
            return Ok(());
        }
        let id = match self.st.offsets.lock() {
            Ok(mut offsets) => offsets.register(&pending.ends),
            Err(_) => return Err(()),
        };
        let (ack, waiter) = AckRef::for_progress();
        let tx = settled_tx.clone();
        handle.spawn(async move {
            let delivered = waiter.wait().await;
            let _ = tx.send((id, delivered));
        });
        let router = self.st.cx.router.clone();
        let total_bytes = pending.bytes;
        let groups = pending.into_groups();
        let count = groups.len();
        let submit = async move {
            for (n, (tag, events)) in groups.into_iter().enumerate() {
                // Each group weighs its share of the bytes consumed.
                let bytes =
                    (total_bytes / count).max(1) + usize::from(n == 0) * (total_bytes % count);
                router.submit(tag, events, bytes, Some(ack.clone())).await?;
            }
            ack.complete();
            Ok::<(), crate::buffer::Closed>(())
        };
        let mut submit = Box::pin(submit);
        let mut limit = PAUSE_AFTER;
        let mut give_up_at: Option<Instant> = None;
        let result = loop {
            if let Ok(r) = handle.block_on(tokio::time::timeout(limit, submit.as_mut())) {
                break r.map_err(|_| ());
            }
            if !self.st.paused {
                pause(&self.consumer, &mut self.st, true);
            }
            // Paused: messages fetched before the pause still arrive; serve rebalances.
            self.consume(Duration::ZERO);
            limit = TICK;
            if self.st.cx.shutdown.is_cancelled() {
                let at = *give_up_at.get_or_insert_with(|| Instant::now() + STOP_WAIT);
                if Instant::now() >= at {
                    tracing::warn!(source = %self.st.cx.name,
                        "stopping while the sinks are full: a batch is not routed; it is read \
                         again after a restart");
                    break Err(());
                }
            }
        };
        if self.st.paused {
            pause(&self.consumer, &mut self.st, false);
        }
        result
    }

    fn commit(&self, mode: CommitMode) {
        let commits = match self.st.offsets.lock() {
            Ok(mut offsets) => offsets.take_commits(),
            Err(_) => return,
        };
        if commits.is_empty() {
            return;
        }
        let name = &self.st.cx.name;
        tracing::debug!(source = %name, offsets = ?commits, "committing");
        if let Err(e) = self.consumer.commit(&offset_list(&commits), mode) {
            self.st.cx.metrics.error("commit");
            if let Some(suppressed) = crate::log_limit::allow(name, "commit") {
                tracing::warn!(source = %name, error = %e, suppressed,
                    "committing offsets failed");
            }
        }
    }

    /// Stops consuming, waits (at most [`STOP_WAIT`]) for what is in flight to be delivered,
    /// commits it, and leaves the group.
    fn stop(mut self, handle: &Handle, mut settled: mpsc::UnboundedReceiver<(BatchId, bool)>) {
        // Messages consumed but not routed are not committed: they are read again next time.
        self.st.pending = Pending::default();
        if let Ok(assignment) = self.consumer.assignment() {
            let _ = self.consumer.pause(&assignment);
        }
        let deadline = tokio::time::Instant::now() + STOP_WAIT;
        while self.st.offsets.lock().map(|o| o.in_flight()).unwrap_or(0) > 0 {
            match handle.block_on(tokio::time::timeout_at(deadline, settled.recv())) {
                Ok(Some((id, ok))) => self.st.settle(id, ok),
                _ => break,
            }
        }
        self.commit(CommitMode::Sync);
        let left = self.st.offsets.lock().map(|o| o.in_flight()).unwrap_or(0);
        if left > 0 {
            tracing::warn!(source = %self.st.cx.name, batches = left,
                "stopping with records still on their way to the sinks; they are read again \
                 after a restart");
        }
        self.consumer.unsubscribe();
        tracing::info!(source = %self.st.cx.name, "kafka source stopped");
    }
}

impl State {
    /// Adds a consumed message to the pending batch.
    fn take(&mut self, message: &BorrowedMessage<'_>) {
        let topic = message.topic();
        let partition = message.partition();
        if !self.assigned.is_assigned(&self.offsets, topic, partition) {
            // Prefetched before a revocation: the partition's new owner reads it.
            return;
        }
        let payload = message.payload();
        let bytes = payload.map_or(0, <[u8]>::len) + message.key().map_or(0, <[u8]>::len);
        let timestamp_ms = match message.timestamp() {
            Timestamp::CreateTime(ms) | Timestamp::LogAppendTime(ms) => Some(ms),
            Timestamp::NotAvailable => None,
        };
        let offset = message.offset();
        let start = self.pending.buf.len();
        let decoded = self.decoder.decode_into(
            &Message {
                topic,
                partition,
                offset,
                key: message.key(),
                payload,
                timestamp_ms,
            },
            &mut self.pending.buf,
        );
        self.consumed.0 += 1;
        self.consumed.1 += bytes as u64;
        if decoded.invalid {
            self.cx.metrics.error("invalid_json");
            if let Some(suppressed) = crate::log_limit::allow(&self.cx.name, "invalid_json") {
                tracing::warn!(source = %self.cx.name, topic, partition, offset, suppressed,
                    "a message is not a JSON object; delivered as is under log_key");
            }
        }
        self.pending.push(
            decoded.tag,
            decoded.time,
            start,
            bytes.max(1),
            (topic, partition, offset),
        );
    }

    fn consume_error(&self, e: &rdkafka::error::KafkaError) {
        self.cx.metrics.error("consume");
        if let Some(suppressed) = crate::log_limit::allow(&self.cx.name, "consume") {
            tracing::warn!(source = %self.cx.name, error = %e, suppressed, "Kafka consume error");
        }
    }

    /// Adds what was consumed since the last call to the metrics (once per burst of polls,
    /// not per message).
    fn count_consumed(&mut self) {
        let (records, bytes) = std::mem::take(&mut self.consumed);
        if records > 0 {
            self.cx.metrics.records_in.inc_by(records);
            self.cx.metrics.bytes_in.inc_by(bytes);
        }
    }

    fn settle(&mut self, id: BatchId, delivered: bool) {
        let stuck = match self.offsets.lock() {
            Ok(mut offsets) => offsets.settle(id, delivered),
            Err(_) => return,
        };
        if !stuck.is_empty() {
            self.cx.metrics.error("undelivered");
            tracing::error!(source = %self.cx.name, partitions = ?stuck,
                "records were not delivered: these partitions commit nothing more until a \
                 restart, which reads them again from the last commit");
        }
    }
}

/// Pauses (or resumes) every assigned partition.
fn pause(consumer: &Consumer_, st: &mut State, pause: bool) {
    let Ok(assignment) = consumer.assignment() else {
        return;
    };
    let result = if pause {
        consumer.pause(&assignment)
    } else {
        consumer.resume(&assignment)
    };
    match result {
        Ok(()) => {
            st.paused = pause;
            tracing::debug!(source = %st.cx.name, pause, partitions = assignment.count(),
                "the sinks are full: partitions paused (or resumed)");
        }
        Err(e) => tracing::warn!(source = %st.cx.name, error = %e, pause,
            "cannot pause or resume partitions"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::kafka::config::KafkaSourceConfig;

    #[test]
    fn a_batch_packs_its_records_into_one_buffer_grouped_by_tag_in_order() {
        let config: KafkaSourceConfig = toml::from_str(
            "brokers = \"a:1\"\ntopics = \"a,b\"\nformat = \"json\"\ntag = \"k.${topic}\"",
        )
        .unwrap();
        let mut decoder = Decoder::new(&config.validate().unwrap());
        let mut pending = Pending::default();
        let messages = [("a", 0, 5), ("a", 1, 7), ("b", 0, 2), ("a", 0, 6)];
        for (n, (topic, partition, offset)) in messages.into_iter().enumerate() {
            let payload = format!("{{\"n\":{n}}}");
            let start = pending.buf.len();
            let packed = decoder.decode_into(
                &Message {
                    topic,
                    partition,
                    offset,
                    key: None,
                    payload: Some(payload.as_bytes()),
                    timestamp_ms: Some(1_000 + n as i64),
                },
                &mut pending.buf,
            );
            pending.push(
                packed.tag,
                packed.time,
                start,
                payload.len(),
                (topic, partition, offset),
            );
        }
        assert_eq!(
            pending.ends,
            vec![
                (("a".to_string(), 0), 7),
                (("a".to_string(), 1), 8),
                (("b".to_string(), 0), 3)
            ]
        );
        let groups = pending.into_groups();
        let shape: Vec<(String, Vec<(i64, i64)>)> = groups
            .iter()
            .map(|(tag, events)| {
                let records = events
                    .iter()
                    .map(|e| {
                        assert_eq!(e.tag, *tag);
                        let n = match e.record.get(b"n") {
                            Some(crate::event::Value::Int(n)) => *n,
                            other => panic!("{other:?}"),
                        };
                        (n, e.time.as_millis())
                    })
                    .collect();
                (tag.to_string(), records)
            })
            .collect();
        assert_eq!(
            shape,
            vec![
                ("k.a".to_string(), vec![(0, 1_000), (1, 1_001)]),
                ("k.b".to_string(), vec![(2, 1_002)]),
                ("k.a".to_string(), vec![(3, 1_003)]),
            ]
        );
        // Every record is a slice of the one buffer.
        let raws: Vec<&Bytes> = groups
            .iter()
            .flat_map(|(_, events)| events.iter().map(|e| e.record.raw().unwrap()))
            .collect();
        for pair in raws.windows(2) {
            assert_eq!(
                pair[0].as_ptr().wrapping_add(pair[0].len()),
                pair[1].as_ptr()
            );
        }
    }
}
