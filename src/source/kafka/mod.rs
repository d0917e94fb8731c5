//! The Kafka source (`type = "kafka"` under `[[sources]]`): consumes topics of a Kafka / Amazon
//! MSK cluster as a consumer group member, with the MSK IAM authentication of the Kafka sink.
//!
//! - [`config`]: options (Fluent Bit `in_kafka` names), checks, librdkafka properties.
//! - [`decode`]: a message into a record (JSON object or raw value, metadata, tag).
//! - [`offsets`]: which offsets may be committed.
//! - [`context`]: librdkafka's callbacks (errors, tokens, rebalances).
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

use std::sync::{Arc, Mutex};
use std::time::Duration;

use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::message::{Message as _, Timestamp};
use tokio::sync::mpsc;

use self::config::{KafkaSourceConfig, KafkaSourceSettings};
use self::context::{offset_list, SourceContext as KafkaContext};
use self::decode::{Decoder, Message};
use self::offsets::{BatchId, Offsets, PartitionKey};
use super::{SourceContext, SourceError};
use crate::buffer::AckRef;
use crate::event::{Event, Tag};
use crate::kafka::auth::MskTokenProvider;
use crate::kafka::options;

/// How often delivered offsets are committed.
pub const COMMIT_INTERVAL: Duration = Duration::from_secs(1);

/// How long a blocked router may wait before the partitions are paused.
const PAUSE_AFTER: Duration = Duration::from_millis(200);

/// How long a stopping source waits for its records in flight to be delivered, to commit them.
pub const STOP_WAIT: Duration = Duration::from_secs(10);

type Consumer_ = StreamConsumer<KafkaContext>;

/// Creates the consumer, subscribes, and returns the task consuming until shutdown.
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
    let context = KafkaContext {
        name: cx.name.clone(),
        metrics: cx.metrics.clone(),
        offsets: offsets.clone(),
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
            cx,
            pending: Pending::default(),
            paused: false,
        },
    };
    Ok(tokio::spawn(runner.run()))
}

/// Messages consumed and not routed yet.
#[derive(Default)]
struct Pending {
    /// Records grouped by tag, in consumption order.
    groups: Vec<(Tag, Vec<Event>)>,
    bytes: usize,
    /// Per partition, the offset after its last record here.
    ends: Vec<(PartitionKey, i64)>,
    since: Option<tokio::time::Instant>,
}

impl Pending {
    fn push(&mut self, event: Event, bytes: usize, topic: &str, partition: i32, offset: i64) {
        self.since.get_or_insert_with(tokio::time::Instant::now);
        self.bytes += bytes;
        match self.groups.last_mut() {
            Some((tag, events)) if *tag == event.tag => events.push(event),
            _ => self.groups.push((event.tag.clone(), vec![event])),
        }
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
    cx: SourceContext,
    pending: Pending,
    paused: bool,
}

impl Runner {
    async fn run(mut self) {
        let (settled_tx, mut settled) = mpsc::unbounded_channel::<(BatchId, bool)>();
        let mut commit_tick = tokio::time::interval(COMMIT_INTERVAL);
        commit_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let shutdown = self.st.cx.shutdown.clone();
        loop {
            let flush_at = self.st.pending.since.map(|s| s + self.st.settings.poll);
            let full = tokio::select! {
                biased;
                _ = shutdown.cancelled() => break,
                Some((id, ok)) = settled.recv() => {
                    self.st.settle(id, ok);
                    false
                }
                _ = commit_tick.tick() => {
                    self.commit(CommitMode::Async);
                    false
                }
                _ = sleep_until(flush_at) => true,
                received = self.consumer.recv() => {
                    self.st.take(received);
                    self.st.pending.bytes >= self.st.settings.buffer_max_size
                }
            };
            if full && self.route(&settled_tx).await.is_err() {
                break;
            }
        }
        self.stop(settled).await;
    }

    /// Routes the pending batch with one acknowledgement, pausing the partitions while the
    /// router waits for room. Err when the router is closed.
    async fn route(
        &mut self,
        settled_tx: &mpsc::UnboundedSender<(BatchId, bool)>,
    ) -> Result<(), ()> {
        let pending = std::mem::take(&mut self.st.pending);
        if pending.is_empty() {
            return Ok(());
        }
        let id = match self.st.offsets.lock() {
            Ok(mut offsets) => offsets.register(&pending.ends),
            Err(_) => return Err(()),
        };
        let (ack, waiter) = AckRef::for_progress();
        let tx = settled_tx.clone();
        tokio::spawn(async move {
            let delivered = waiter.wait().await;
            let _ = tx.send((id, delivered));
        });
        let router = self.st.cx.router.clone();
        let total_bytes = pending.bytes;
        let groups = pending.groups;
        let count = groups.len();
        let submit = async move {
            for (n, (tag, mut events)) in groups.into_iter().enumerate() {
                // Each group weighs its share of the bytes consumed.
                let bytes =
                    (total_bytes / count).max(1) + usize::from(n == 0) * (total_bytes % count);
                // Decoded records are already msgpack; only others (none today) get packed.
                if events.iter().any(|e| e.record.raw().is_none()) {
                    crate::event::pack(&mut events);
                }
                router.submit(tag, events, bytes, Some(ack.clone())).await?;
            }
            ack.complete();
            Ok::<(), crate::buffer::Closed>(())
        };
        tokio::pin!(submit);
        let pause_at = tokio::time::sleep(PAUSE_AFTER);
        tokio::pin!(pause_at);
        let result = loop {
            tokio::select! {
                r = &mut submit => break r,
                _ = &mut pause_at, if !self.st.paused => pause(&self.consumer, &mut self.st, true),
                received = self.consumer.recv(), if self.st.paused => self.st.take(received),
            }
        };
        if self.st.paused {
            pause(&self.consumer, &mut self.st, false);
        }
        result.map_err(|_| ())
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
    async fn stop(mut self, mut settled: mpsc::UnboundedReceiver<(BatchId, bool)>) {
        // Messages consumed but not routed are not committed: they are read again next time.
        self.st.pending = Pending::default();
        if let Ok(assignment) = self.consumer.assignment() {
            let _ = self.consumer.pause(&assignment);
        }
        let deadline = tokio::time::Instant::now() + STOP_WAIT;
        while self.st.offsets.lock().map(|o| o.in_flight()).unwrap_or(0) > 0 {
            match tokio::time::timeout_at(deadline, settled.recv()).await {
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
    fn take(
        &mut self,
        received: Result<rdkafka::message::BorrowedMessage<'_>, rdkafka::error::KafkaError>,
    ) {
        let message = match received {
            Ok(message) => message,
            Err(e) => {
                self.cx.metrics.error("consume");
                if let Some(suppressed) = crate::log_limit::allow(&self.cx.name, "consume") {
                    tracing::warn!(source = %self.cx.name, error = %e, suppressed, "Kafka consume error");
                }
                return;
            }
        };
        let topic = message.topic();
        let partition = message.partition();
        let assigned = self
            .offsets
            .lock()
            .map(|o| o.is_assigned(topic, partition))
            .unwrap_or(false);
        if !assigned {
            // Prefetched before a revocation: the partition's new owner reads it.
            return;
        }
        let payload = message.payload();
        let bytes = payload.map_or(0, <[u8]>::len) + message.key().map_or(0, <[u8]>::len);
        let timestamp_ms = match message.timestamp() {
            Timestamp::CreateTime(ms) | Timestamp::LogAppendTime(ms) => Some(ms),
            Timestamp::NotAvailable => None,
        };
        let decoded = self.decoder.decode(&Message {
            topic,
            partition,
            offset: message.offset(),
            key: message.key(),
            payload,
            timestamp_ms,
        });
        self.cx.metrics.records_in.inc();
        self.cx.metrics.bytes_in.inc_by(bytes as u64);
        if decoded.invalid {
            self.cx.metrics.error("invalid_json");
            if let Some(suppressed) = crate::log_limit::allow(&self.cx.name, "invalid_json") {
                tracing::warn!(source = %self.cx.name, topic, partition, offset = message.offset(),
                    suppressed, "a message is not a JSON object; delivered as is under log_key");
            }
        }
        let offset = message.offset();
        let topic = topic.to_string();
        self.pending
            .push(decoded.event, bytes.max(1), &topic, partition, offset);
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

async fn sleep_until(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
