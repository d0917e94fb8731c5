//! The Kafka / Amazon MSK sink (`type = "kafka"`).
//!
//! - [`config`]: options (Fluent Bit `out_kafka` names), validation, librdkafka properties.
//! - [`producer`]: the librdkafka context: delivery reports, errors, health, token refresh.
//! - [`enqueue`]: a batch's records handed to librdkafka in one call per topic, on kept topic
//!   handles.
//! - [`auth`]: AWS credentials and MSK IAM tokens at run time; `logferry msk-token`.
//! - [`msk_iam`]: the MSK IAM token itself (a SigV4 presigned URL) and region resolution.
//!
//! Delivery: each record of a batch is handed to librdkafka with a reference to the batch's
//! [`Tracker`] (see [`super::settle`]); the batch is completed (acknowledged upstream, its queue space
//! freed) only when every record's delivery report says the broker has it (`acks=all`), or the
//! record was dropped for a counted reason (`too_large`, `unencodable`) or, with
//! `dead_letter_path`, written to the dead-letter file (then each record gets a tracker of its
//! own, so a delivery report names its record; see [`super::undeliverable`]). A full local queue
//! makes the sink wait, never drop; records whose delivery fails for another reason are
//! produced again after a backoff. With `message.timeout.ms = 0` librdkafka itself keeps
//! retrying through broker outages, so records simply wait, bounded by the sink's buffer.

pub mod avro;
mod avro_options;
pub mod config;
mod enqueue;
pub mod payload;
pub mod producer;
pub mod schema_registry;

/// MSK IAM is shared with the Kafka source: it lives in [`crate::kafka`].
pub use crate::kafka::{auth, msk_iam};

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use rdkafka::config::RDKafkaLogLevel;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{BaseRecord, Producer, ThreadedProducer};
use tokio::sync::mpsc;

use super::backoff::Backoff;
use super::dead_letter;
use super::settle::Tracker;
use super::undeliverable::{Undeliverable, Why};
use super::{SinkContext, SinkError};
use crate::buffer::{Batch, QueueReceiver};
use crate::encode::Encoder;
use crate::event::{Event, Value};
use auth::MskTokenProvider;
use config::{is_valid_topic, KafkaConfig, KafkaSettings};
use enqueue::{Producer as BatchProducer, Staged};
use payload::PayloadEncoder;
use producer::{KafkaContext, Problem, Retry, Shared};

/// How long the sink waits for librdkafka to make room when its local queue is full, before
/// counting one `queue_full_retries` attempt.
const QUEUE_FULL_WAIT: Duration = Duration::from_secs(1);

/// Backoff of records produced again after a failed delivery.
const RETRY_BACKOFF: Backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(10));

/// How often the run loop wakes up without input (fatal-error check, drain check).
const TICK: Duration = Duration::from_millis(200);

/// How long librdkafka gets to flush at the end, after every batch is settled.
const FINAL_FLUSH: Duration = Duration::from_secs(10);

type KafkaProducer = ThreadedProducer<KafkaContext>;

/// A running Kafka sink.
pub struct KafkaSink {
    settings: Box<KafkaSettings>,
    encoder: PayloadEncoder,
    shared: Arc<Shared>,
    producer: BatchProducer,
    tokens: Option<Arc<MskTokenProvider>>,
    retry_tx: mpsc::UnboundedSender<Retry>,
    retries: mpsc::UnboundedReceiver<Retry>,
    /// The encoded records of the input batch being sent (reused).
    staged: Staged,
    /// Scratch buffer of the record's message key.
    key: Vec<u8>,
}

impl KafkaSink {
    /// Creates the producer. Brokers are contacted in the background: an unreachable cluster
    /// does not stop start-up; records wait and the sink reports unhealthy.
    pub async fn build(config: &KafkaConfig, cx: SinkContext) -> Result<KafkaSink, SinkError> {
        let setup = |message: String| SinkError::Setup {
            name: cx.name.clone(),
            message,
        };
        let settings = config
            .validate()
            .map_err(|problems| setup(crate::config::field::join(&problems)))?;
        for warning in &settings.warnings {
            tracing::warn!(sink = %cx.name, "{warning}");
        }
        let encoder = match &settings.avro {
            Some(avro) => PayloadEncoder::avro(avro.clone()).map_err(setup)?,
            None => PayloadEncoder::Plain(
                Encoder::new(&settings.encode).map_err(|e| setup(e.to_string()))?,
            ),
        };
        let tokens = match &settings.msk_iam {
            Some(msk) => Some(Arc::new(
                MskTokenProvider::load(msk, &cx.name)
                    .await
                    .map_err(|e| setup(e.to_string()))?,
            )),
            None => None,
        };
        let shared = Shared::new(
            cx.name.clone(),
            cx.metrics.clone(),
            cx.health.clone(),
            Undeliverable::new(&cx),
            settings.topics.clone(),
        );
        let (retry_tx, retries) = mpsc::unbounded_channel();
        let producer = create_producer(&settings, &shared, &retry_tx, &tokens)
            .map_err(|e| setup(format!("cannot create the Kafka producer: {e}")))?;
        tracing::info!(sink = %cx.name, brokers = settings.property("bootstrap.servers").unwrap_or(""),
            topics = ?settings.topics, msk_iam = settings.msk_iam.is_some(), "kafka sink ready");
        Ok(KafkaSink {
            settings: Box::new(settings),
            encoder,
            shared,
            producer: BatchProducer::new(producer),
            tokens,
            retry_tx,
            retries,
            staged: Staged::default(),
            key: Vec::with_capacity(64),
        })
    }

    /// Delivers batches until the queue is closed and every batch is settled.
    pub async fn run(mut self, mut input: QueueReceiver) {
        let mut input_open = true;
        let mut retry_attempt = 0u32;
        let mut delivered_at_last_retry = 0u64;
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            if self.shared.fatal.swap(false, Ordering::AcqRel) {
                self.replace_producer().await;
            }
            tokio::select! {
                biased;
                Some(retry) = self.retries.recv() => {
                    let delivered = self.shared.delivered.load(Ordering::Relaxed);
                    if delivered != delivered_at_last_retry {
                        retry_attempt = 0;
                        delivered_at_last_retry = delivered;
                    }
                    tokio::time::sleep(RETRY_BACKOFF.delay(retry_attempt)).await;
                    retry_attempt = retry_attempt.saturating_add(1);
                    self.produce_retry(retry).await;
                    while let Ok(retry) = self.retries.try_recv() {
                        self.produce_retry(retry).await;
                    }
                }
                batch = input.recv(), if input_open => match batch {
                    Some(batch) => self.send_batch(batch).await,
                    None => input_open = false,
                },
                _ = tick.tick() => {}
            }
            if !input_open && self.shared.inflight_batches() == 0 {
                break;
            }
        }
        if let Some(dead_letters) = self.shared.undeliverable.dead_letters() {
            dead_letters.drained().await;
        }
        self.finish().await;
    }

    async fn finish(self) {
        let KafkaSink {
            producer, shared, ..
        } = self;
        // Every batch is settled; the flush only waits for librdkafka's own bookkeeping. It
        // runs off the async threads: flushing polls, and polling may call back into us.
        let flushed = tokio::task::spawn_blocking(move || {
            let result = producer.inner().flush(FINAL_FLUSH);
            drop(producer);
            result
        })
        .await;
        if let Ok(Err(e)) = flushed {
            tracing::warn!(sink = %shared.name, error = %e, "final flush of the Kafka producer failed");
        }
    }

    /// Replaces a producer that hit a fatal error (idempotence state lost). Records still in
    /// the old one are purged by its drop and come back through the retry channel.
    async fn replace_producer(&mut self) {
        match create_producer(&self.settings, &self.shared, &self.retry_tx, &self.tokens) {
            Ok(new) => {
                let old = std::mem::replace(&mut self.producer, BatchProducer::new(new));
                let _ = tokio::task::spawn_blocking(move || drop(old)).await;
                tracing::warn!(sink = %self.shared.name, "replaced the Kafka producer after a fatal error");
            }
            Err(e) => {
                tracing::error!(sink = %self.shared.name, error = %e,
                    "cannot create a new Kafka producer after a fatal error; retrying");
                self.shared.fatal.store(true, Ordering::Release);
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }

    async fn send_batch(&mut self, batch: Batch) {
        // Avro: the schema id must be known (from the registry) before anything is produced.
        self.encoder.ready(&self.shared).await;
        let (events, done) = batch.into_parts();
        let records = events.len();
        if self.shared.undeliverable.keeps_records() {
            // Dead-letter mode: one tracker per record, so a failure knows its record.
            let tracker = self.shared.track(done, records, Some(events));
            for index in 0..records {
                let record = tracker.record(index);
                self.stage_record(&tracker.events()[index], record);
            }
            self.enqueue_staged().await;
            self.shared.metrics.records_in.inc_by(records as u64);
            tracker.settle(true);
            return;
        }
        let tracker = self.shared.track(done, records, None);
        for event in &events {
            self.stage_record(event, tracker.clone());
        }
        self.enqueue_staged().await;
        self.shared.metrics.records_in.inc_by(records as u64);
        tracker.settle(true);
    }

    /// Hands the staged records to librdkafka.
    async fn enqueue_staged(&mut self) {
        self.producer
            .enqueue(
                &mut self.staged,
                &self.shared,
                self.settings.queue_full_retries,
            )
            .await;
    }

    /// Encodes one record into the staged batch (see [`enqueue`]), or gives it up when it
    /// cannot be encoded.
    fn stage_record(&mut self, event: &Event, tracker: Arc<Tracker>) {
        let buffer = self.staged.payload_buffer();
        let start = buffer.len();
        if let Err(e) = self.encoder.encode(event, buffer) {
            buffer.truncate(start);
            self.shared.give_up(
                tracker,
                &Why::new(
                    dead_letter::reason::UNENCODABLE,
                    "record cannot be encoded as configured",
                    "",
                    &e,
                )
                .tagged(&event.tag),
            );
            return;
        }
        let has_key = select_key(&self.settings, event, &mut self.key);
        let topic = select_topic(&self.settings, event, &self.shared);
        let key = has_key.then_some(self.key.as_slice());
        self.staged.push(topic, start, key, tracker);
    }

    async fn produce_retry(&mut self, retry: Retry) {
        let Retry {
            topic,
            key,
            payload,
            tracker,
        } = retry;
        produce(
            self.producer.inner(),
            &self.shared,
            self.settings.queue_full_retries,
            &topic,
            key.as_deref(),
            &payload,
            tracker,
        )
        .await;
    }
}

/// Hands one record to librdkafka, waiting while its local queue is full.
async fn produce(
    producer: &KafkaProducer,
    shared: &Shared,
    queue_full_retries: u32,
    topic: &str,
    key: Option<&[u8]>,
    payload: &[u8],
    tracker: Arc<Tracker>,
) {
    let mut record = BaseRecord::with_opaque_to(topic, tracker).payload(payload);
    if let Some(key) = key {
        record = record.key(key);
    }
    let mut full_attempts = 0u32;
    loop {
        match producer.send(record) {
            Ok(()) => {
                if full_attempts > 0 {
                    shared.clear(&[Problem::QueueFull]);
                }
                return;
            }
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                record = back;
                shared.wait_for_room(QUEUE_FULL_WAIT).await;
                full_attempts = full_attempts.saturating_add(1);
                shared
                    .metrics
                    .retried(crate::metrics::retry_reason::QUEUE_FULL, 1);
                if queue_full_retries > 0 && full_attempts == queue_full_retries {
                    shared.metrics.error("queue_full");
                    let reason = format!(
                        "librdkafka's local queue has been full for {full_attempts} attempts: \
                         the brokers do not take records as fast as they come; records wait"
                    );
                    if shared.set_problem(Problem::QueueFull, reason.clone()) {
                        tracing::warn!(sink = %shared.name, "{reason}");
                    }
                }
            }
            Err((error, back)) => {
                let dead_letter = shared.dead_letter_reason(&error, topic);
                let too_large = producer::classify(&error) == producer::Failure::TooLarge;
                if dead_letter.is_some() || too_large {
                    let (why, what) = match dead_letter {
                        Some(why) => (why, "record refused before sending"),
                        None => (
                            dead_letter::reason::TOO_LARGE,
                            "record larger than message.max.bytes allows",
                        ),
                    };
                    let target = format!("topic `{topic}`, {} bytes", payload.len());
                    shared.give_up(back.delivery_opaque, &Why::new(why, what, &target, &error));
                    return;
                }
                record = back;
                shared.metrics.error("produce");
                shared.metrics.retried(producer::retry_reason(&error), 1);
                let reason =
                    format!("cannot queue a record for topic `{topic}`: {error}; retrying");
                let first = shared.set_problem(Problem::Delivery, reason.clone());
                if first || crate::log_limit::allow(&shared.name, "produce").is_some() {
                    tracing::warn!(sink = %shared.name, "{reason}");
                }
                tokio::time::sleep(RETRY_BACKOFF.cap()).await;
            }
        }
    }
}

/// The record's topic: the value of `topic_key` when it names one of `topics` (or any valid
/// topic with `dynamic_topic`), else the first topic.
fn select_topic<'a>(settings: &'a KafkaSettings, event: &'a Event, shared: &Shared) -> &'a str {
    let default = settings.topics.first().map(String::as_str).unwrap_or("");
    let Some(path) = &settings.topic_key else {
        return default;
    };
    let Some(value) = event.record.get_path(path).and_then(Value::as_bytes) else {
        return default;
    };
    if let Some(listed) = settings.topics.iter().find(|t| t.as_bytes() == value) {
        return listed;
    }
    if settings.dynamic_topic {
        if is_valid_topic(value) {
            if let Ok(topic) = std::str::from_utf8(value) {
                return topic;
            }
        }
        shared.metrics.error("invalid_topic");
        tracing::debug!(sink = %shared.name, "topic_key value is not a valid topic name; using the first topic");
    }
    default
}

/// Writes the record's message key into `key`; false when the record gets no key.
fn select_key(settings: &KafkaSettings, event: &Event, key: &mut Vec<u8>) -> bool {
    key.clear();
    if let Some(path) = &settings.message_key_field {
        if let Some(value) = event.record.get_path(path) {
            if !matches!(value, Value::Nil) {
                value.write_text(key);
                return true;
            }
        }
    }
    match &settings.message_key {
        Some(static_key) => {
            key.extend_from_slice(static_key);
            true
        }
        None => false,
    }
}

fn create_producer(
    settings: &KafkaSettings,
    shared: &Arc<Shared>,
    retry_tx: &mpsc::UnboundedSender<Retry>,
    tokens: &Option<Arc<MskTokenProvider>>,
) -> Result<KafkaProducer, KafkaError> {
    let mut client_config = settings.client_config();
    let level = if settings.property("debug").is_some() {
        RDKafkaLogLevel::Debug
    } else {
        RDKafkaLogLevel::Info
    };
    client_config.set_log_level(level);
    let context = KafkaContext::new(shared.clone(), retry_tx.clone(), tokens.clone());
    client_config.create_with_context(context)
}

/// `logferry msk-token`.
pub use auth::{msk_token_command, MskTokenArgs};

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{EventTime, KeyPath, Map};
    use crate::health::Health;
    use crate::metrics::ComponentMetrics;
    use bytes::Bytes;

    fn settings(extra: &str) -> KafkaSettings {
        let text = format!("brokers = \"127.0.0.1:1\"\ntopics = \"logs,audit\"\n{extra}");
        toml::from_str::<KafkaConfig>(&text)
            .unwrap()
            .validate()
            .unwrap()
    }

    fn event(pairs: &[(&str, Value)]) -> Event {
        let mut map = Map::new();
        for (k, v) in pairs {
            map.push(Bytes::copy_from_slice(k.as_bytes()), v.clone());
        }
        Event::new("t".into(), EventTime::new(1, 0), map)
    }

    fn shared() -> Arc<Shared> {
        Shared::new(
            "k".into(),
            ComponentMetrics::detached("k", "sink"),
            Arc::new(Health::default()),
            Undeliverable::detached("k"),
            Vec::new(),
        )
    }

    #[test]
    fn topic_selection() {
        let shared = shared();
        let s = settings("topic_key = \"route->to\"");
        let mut nested = Map::new();
        nested.push(Bytes::from("to"), Value::from("audit"));
        let routed = event(&[("route", Value::Map(nested))]);
        assert_eq!(select_topic(&s, &routed, &shared), "audit");
        let mut other = Map::new();
        other.push(Bytes::from("to"), Value::from("elsewhere"));
        let unlisted = event(&[("route", Value::Map(other))]);
        assert_eq!(select_topic(&s, &unlisted, &shared), "logs");
        assert_eq!(select_topic(&s, &event(&[]), &shared), "logs");

        let s = settings("topic_key = \"t\"\ndynamic_topic = true");
        let e = event(&[("t", Value::from("new-topic"))]);
        assert_eq!(select_topic(&s, &e, &shared), "new-topic");
        let e = event(&[("t", Value::from("bad topic!"))]);
        assert_eq!(select_topic(&s, &e, &shared), "logs");
        assert_eq!(s.topic_key, Some(KeyPath::parse("t")));
    }

    #[test]
    fn message_key_field_falls_back_to_message_key() {
        let mut key = Vec::new();
        let s = settings("message_key_field = \"user\"\nmessage_key = \"static\"");
        assert!(select_key(
            &s,
            &event(&[("user", Value::from("alice"))]),
            &mut key
        ));
        assert_eq!(key, b"alice");
        assert!(select_key(
            &s,
            &event(&[("user", Value::Int(42))]),
            &mut key
        ));
        assert_eq!(key, b"42");
        assert!(select_key(&s, &event(&[]), &mut key));
        assert_eq!(key, b"static");
        let s = settings("message_key_field = \"user\"");
        assert!(!select_key(&s, &event(&[]), &mut key));
        let s = settings("");
        assert!(!select_key(
            &s,
            &event(&[("user", Value::from("x"))]),
            &mut key
        ));
    }
}
