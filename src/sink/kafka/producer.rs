//! The librdkafka side of the sink: the producer context (delivery reports, errors, logs,
//! statistics, MSK IAM token refresh), per-batch delivery tracking, and the sink's health.
//!
//! Every callback here runs on the `ThreadedProducer`'s polling thread. That thread polls every
//! 100 ms whether or not records flow, which is what keeps OAUTHBEARER tokens refreshed on an
//! idle producer.
//!
//! Operational metrics: `request_duration_seconds{operation="produce"}` is observed once per
//! batch, from handing its first record to librdkafka to the last delivery report;
//! `retries_total{reason}` counts records produced again ([`retry_reason`]), waits on a full
//! local queue, and librdkafka's own request retries (`txretries` from its statistics);
//! `token_refreshes_total{token="msk_iam"}` and `auth_failures_total{reason}` follow token
//! signing and the brokers' authentication answers.

use prometheus_client::metrics::histogram::Histogram;
use std::error::Error;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::client::{ClientContext, OAuthToken};
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{BorrowedMessage, Message};
use rdkafka::producer::{DeliveryResult, ProducerContext};
use tokio::sync::{mpsc, Notify};

use super::auth::MskTokenProvider;
use crate::buffer::queue::BatchDone;
use crate::event::Event;
use crate::health::Health;
use crate::metrics::{retry_reason as retry, ComponentMetrics};
use crate::sink::dead_letter::reason;
use crate::sink::settle::Tracker;
use crate::sink::undeliverable::{Undeliverable, Why};

/// The shared `retries_total` reason of a failed delivery or produce call.
pub fn retry_reason(error: &KafkaError) -> &'static str {
    use RDKafkaErrorCode as C;
    match error.rdkafka_error_code() {
        Some(C::MessageTimedOut | C::RequestTimedOut | C::OperationTimedOut | C::TimedOutQueue) => {
            retry::TIMEOUT
        }
        Some(C::ThrottlingQuotaExceeded) => retry::THROTTLED,
        Some(C::QueueFull) => retry::QUEUE_FULL,
        Some(C::UnknownTopicOrPartition | C::UnknownTopic) => retry::NOT_FOUND,
        Some(C::TopicAuthorizationFailed | C::ClusterAuthorizationFailed) => retry::ACCESS_DENIED,
        Some(C::Authentication | C::SaslAuthenticationFailed) => retry::CREDENTIALS,
        Some(C::BrokerTransportFailure | C::AllBrokersDown | C::NetworkException) => retry::NETWORK,
        Some(
            C::LeaderNotAvailable
            | C::NotLeaderForPartition
            | C::BrokerNotAvailable
            | C::NotEnoughReplicas
            | C::NotEnoughReplicasAfterAppend,
        ) => retry::INTERNAL,
        _ => retry::OTHER,
    }
}

/// A record whose delivery failed for a reason worth retrying, back to the sink task.
pub struct Retry {
    pub topic: String,
    pub key: Option<Vec<u8>>,
    pub payload: Vec<u8>,
    pub tracker: Arc<Tracker>,
}

/// What the sink knows is wrong, by kind; the sink is healthy when all are clear.
#[derive(Default)]
struct Problems {
    token: Option<String>,
    auth: Option<String>,
    brokers: Option<String>,
    delivery: Option<String>,
    queue_full: Option<String>,
}

/// Which problem a report is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Problem {
    /// No MSK IAM token could be signed; cleared by the next successful signing.
    Token,
    /// A broker refused authentication; cleared once a broker is up or a record is delivered.
    Auth,
    Brokers,
    Delivery,
    QueueFull,
}

/// State shared by the sink task and the producer context.
pub struct Shared {
    pub name: String,
    pub metrics: ComponentMetrics,
    health: Arc<Health>,
    problems: Mutex<Problems>,
    /// Signalled whenever a batch completes, a record is given up, or (while
    /// `queue_full_waiters` is not zero) a record is delivered.
    pub progress: Notify,
    /// Sends waiting for room in librdkafka's full local queue ([`Shared::wait_for_room`]). A
    /// delivery report notifies `progress` only while this is not zero: notifying takes
    /// `Notify`'s lock and writes a cache line the producing thread reads, which on every
    /// report had cost the polling thread and the sink a cross-core transfer per record.
    queue_full_waiters: AtomicUsize,
    pub inflight_batches: AtomicUsize,
    /// Records delivered so far (the retry backoff restarts when this moves).
    pub delivered: AtomicU64,
    pub token_refreshes: AtomicU64,
    pub auth_errors: AtomicU64,
    /// Some problem is set (read on every delivery report, so kept outside the mutex).
    any_problem: AtomicBool,
    /// librdkafka raised a fatal error: the producer must be replaced.
    pub fatal: AtomicBool,
    /// Where records that can never be delivered go: the dead-letter file, or counted drops.
    pub undeliverable: Undeliverable,
    /// The configured `topics`: a failure to write one of them is a configuration problem,
    /// while a topic taken from the record (`dynamic_topic`) makes the record a dead letter.
    pub configured_topics: Vec<String>,
    /// `request_duration_seconds{operation="produce"}`.
    produce_latency: Histogram,
}

impl Shared {
    /// `configured_topics`: the `topics` option; a failure to write one of them is a
    /// configuration problem, while a topic taken from the record makes the record a dead
    /// letter.
    pub fn new(
        name: String,
        metrics: ComponentMetrics,
        health: Arc<Health>,
        undeliverable: Undeliverable,
        configured_topics: Vec<String>,
    ) -> Arc<Shared> {
        Arc::new(Shared {
            name,
            health,
            problems: Mutex::new(Problems::default()),
            progress: Notify::new(),
            queue_full_waiters: AtomicUsize::new(0),
            inflight_batches: AtomicUsize::new(0),
            delivered: AtomicU64::new(0),
            token_refreshes: AtomicU64::new(0),
            auth_errors: AtomicU64::new(0),
            any_problem: AtomicBool::new(false),
            fatal: AtomicBool::new(false),
            undeliverable,
            configured_topics,
            produce_latency: metrics.request_duration("produce"),
            metrics,
        })
    }

    /// A tracker for a batch of `records` records handed to the producer now, plus one guard
    /// share, which the sink settles once it has handed every record to librdkafka, so that
    /// early reports cannot complete a batch still being produced. Counts the batch in flight
    /// until it finishes, and times it (`request_duration_seconds{operation="produce"}`).
    /// `events`: the records, kept for dead letters.
    pub fn track(
        self: &Arc<Self>,
        done: BatchDone,
        records: usize,
        events: Option<Vec<Event>>,
    ) -> Arc<Tracker> {
        self.inflight_batches.fetch_add(1, Ordering::AcqRel);
        let shared = self.clone();
        let started = Instant::now();
        let finished = move |ok: bool| {
            if ok {
                shared
                    .produce_latency
                    .observe(started.elapsed().as_secs_f64());
            }
            shared.inflight_batches.fetch_sub(1, Ordering::AcqRel);
            shared.progress.notify_waiters();
        };
        Tracker::build(done, records + 1, events, false, Some(Box::new(finished)))
    }

    /// Waits until a record is delivered or a batch settles, at most `limit`: room in
    /// librdkafka's full local queue. A delivery reported between the failed send and this
    /// call does not wake it (reports notify only while someone waits); with the queue full,
    /// more reports follow at once, and `limit` bounds the wait in any case.
    pub async fn wait_for_room(&self, limit: Duration) {
        let progress = self.progress.notified();
        self.queue_full_waiters.fetch_add(1, Ordering::SeqCst);
        /// Counts the waiter out even if the send is cancelled mid-wait.
        struct Waiting<'a>(&'a AtomicUsize);
        impl Drop for Waiting<'_> {
            fn drop(&mut self) {
                self.0.fetch_sub(1, Ordering::SeqCst);
            }
        }
        let _waiting = Waiting(&self.queue_full_waiters);
        let _ = tokio::time::timeout(limit, progress).await;
    }

    /// Gives up on the record of `tracker` (dead letter or counted drop, see
    /// [`Undeliverable`]).
    pub fn give_up(&self, tracker: Arc<Tracker>, why: &Why<'_>) {
        self.undeliverable.give_up_tracked(tracker, why);
        self.progress.notify_waiters();
    }

    /// The dead-letter reason of a failed record, if it is one (`None`: retry it).
    pub fn dead_letter_reason(&self, error: &KafkaError, topic: &str) -> Option<&'static str> {
        if !self.undeliverable.keeps_records() {
            return None;
        }
        match classify(error) {
            Failure::TooLarge => Some(reason::TOO_LARGE),
            Failure::Invalid => Some(reason::INVALID),
            Failure::Retry => {
                let dynamic = !self.configured_topics.iter().any(|t| t == topic);
                let topic_error = matches!(
                    error.rdkafka_error_code(),
                    Some(
                        RDKafkaErrorCode::UnknownTopic
                            | RDKafkaErrorCode::UnknownTopicOrPartition
                            | RDKafkaErrorCode::TopicAuthorizationFailed
                            | RDKafkaErrorCode::InvalidTopic
                    )
                );
                (dynamic && topic_error).then_some(reason::TOPIC_NOT_ALLOWED)
            }
        }
    }

    pub fn inflight_batches(&self) -> usize {
        self.inflight_batches.load(Ordering::Acquire)
    }

    /// Records a problem (replacing an earlier one of the same kind) and reports unhealthy.
    /// True when no problem of this kind was set before (worth a log line).
    pub fn set_problem(&self, kind: Problem, reason: String) -> bool {
        let mut new = false;
        self.update(|p| new = slot(p, kind).replace(reason).is_none());
        new
    }

    /// Clears problems of these kinds; healthy again when none is left.
    pub fn clear(&self, kinds: &[Problem]) {
        self.update(|p| {
            for kind in kinds {
                *slot(p, *kind) = None;
            }
        });
    }

    /// True while any problem is set.
    pub fn any_problem(&self) -> bool {
        self.any_problem.load(Ordering::Acquire)
    }

    fn update(&self, change: impl FnOnce(&mut Problems)) {
        let Ok(mut problems) = self.problems.lock() else {
            return;
        };
        let before = summary(&problems);
        change(&mut problems);
        let after = summary(&problems);
        self.any_problem.store(after.is_some(), Ordering::Release);
        if before == after {
            return;
        }
        match after {
            Some(reason) => self.health.set_unhealthy(&self.name, reason),
            None => {
                tracing::info!(sink = %self.name, "kafka sink is healthy again");
                self.health.set_healthy(&self.name);
            }
        }
    }
}

fn slot(p: &mut Problems, kind: Problem) -> &mut Option<String> {
    match kind {
        Problem::Token => &mut p.token,
        Problem::Auth => &mut p.auth,
        Problem::Brokers => &mut p.brokers,
        Problem::Delivery => &mut p.delivery,
        Problem::QueueFull => &mut p.queue_full,
    }
}

fn summary(p: &Problems) -> Option<String> {
    let parts: Vec<&str> = [&p.token, &p.auth, &p.brokers, &p.delivery, &p.queue_full]
        .into_iter()
        .flatten()
        .map(String::as_str)
        .collect();
    (!parts.is_empty()).then(|| parts.join("; "))
}

/// How a failed delivery is handled.
#[derive(Debug, PartialEq, Eq)]
pub enum Failure {
    /// The record can never be accepted (too large for the broker): dropped and counted.
    TooLarge,
    /// The broker refuses the record itself (e.g. no key on a compacted topic): dropped and
    /// counted as `invalid_record`.
    Invalid,
    /// Anything else (unknown topic, authorization, purged by a producer restart, a timeout
    /// when the user set `message.timeout.ms`): produced again after a backoff.
    Retry,
}

pub fn classify(error: &KafkaError) -> Failure {
    match error.rdkafka_error_code() {
        Some(RDKafkaErrorCode::MessageSizeTooLarge | RDKafkaErrorCode::MessageBatchTooLarge) => {
            Failure::TooLarge
        }
        Some(RDKafkaErrorCode::InvalidRecord) => Failure::Invalid,
        _ => Failure::Retry,
    }
}

/// The producer's context: librdkafka calls it back from the polling thread.
pub struct KafkaContext {
    shared: Arc<Shared>,
    retries: mpsc::UnboundedSender<Retry>,
    tokens: Option<Arc<MskTokenProvider>>,
    /// The last global error seen, to drop the immediate repeat: rdkafka 0.39's producer poll
    /// hands every error event to [`ClientContext::error`] twice.
    last_error: Mutex<Option<(String, Instant)>>,
    /// librdkafka's cumulative `txretries` at the last statistics, to count the difference.
    tx_retries: AtomicU64,
}

impl KafkaContext {
    pub fn new(
        shared: Arc<Shared>,
        retries: mpsc::UnboundedSender<Retry>,
        tokens: Option<Arc<MskTokenProvider>>,
    ) -> Self {
        KafkaContext {
            shared,
            retries,
            tokens,
            last_error: Mutex::new(None),
            tx_retries: AtomicU64::new(0),
        }
    }

    /// True when this exact error was just reported (the duplicate delivery of one event).
    fn is_repeat(&self, error: &KafkaError, reason: &str) -> bool {
        let Ok(mut last) = self.last_error.lock() else {
            return false;
        };
        let text = format!("{error}|{reason}");
        let now = Instant::now();
        let repeat = matches!(&*last, Some((previous, at))
            if *previous == text && now.duration_since(*at) < Duration::from_millis(50));
        *last = Some((text, now));
        repeat
    }
}

impl ClientContext for KafkaContext {
    const ENABLE_REFRESH_OAUTH_TOKEN: bool = true;

    fn log(&self, level: RDKafkaLogLevel, facility: &str, message: &str) {
        crate::kafka::forward_log(
            crate::kafka::Role::Sink,
            &self.shared.name,
            level,
            facility,
            message,
        );
    }

    fn error(&self, error: KafkaError, reason: &str) {
        if self.is_repeat(&error, reason) {
            return;
        }
        let sink = &self.shared.name;
        match error.rdkafka_error_code() {
            Some(
                RDKafkaErrorCode::Authentication
                | RDKafkaErrorCode::SaslAuthenticationFailed
                | RDKafkaErrorCode::TopicAuthorizationFailed
                | RDKafkaErrorCode::ClusterAuthorizationFailed,
            ) => {
                self.shared.auth_errors.fetch_add(1, Ordering::Relaxed);
                self.shared.metrics.error("auth");
                let auth = match error.rdkafka_error_code() {
                    Some(
                        RDKafkaErrorCode::TopicAuthorizationFailed
                        | RDKafkaErrorCode::ClusterAuthorizationFailed,
                    ) => retry::ACCESS_DENIED,
                    _ => "sasl",
                };
                self.shared.metrics.auth_failure(auth);
                if let Some(suppressed) = crate::log_limit::allow(sink, auth) {
                    tracing::error!(sink = %sink, error = %error, suppressed,
                        "Kafka authentication failed: {reason}");
                }
                self.shared.set_problem(
                    Problem::Auth,
                    format!("cannot authenticate to Kafka: {reason}"),
                );
            }
            Some(RDKafkaErrorCode::AllBrokersDown) => {
                self.shared.metrics.error("brokers_down");
                if let Some(suppressed) = crate::log_limit::allow(sink, "brokers_down") {
                    tracing::error!(sink = %sink, suppressed,
                        "all Kafka brokers are down: {reason}; records wait in the buffer");
                }
                self.shared.set_problem(
                    Problem::Brokers,
                    format!("all Kafka brokers are down: {reason}"),
                );
            }
            Some(RDKafkaErrorCode::Fatal) => {
                self.shared.metrics.error("fatal");
                tracing::error!(sink = %sink, "fatal producer error: {reason}; replacing the producer");
                self.shared.fatal.store(true, Ordering::Release);
            }
            Some(RDKafkaErrorCode::BrokerTransportFailure) => {
                // A single connection dropping is routine (idle timeouts, broker restarts);
                // librdkafka reconnects and logs it itself. All brokers down is reported
                // separately.
                tracing::debug!(sink = %sink, "Kafka connection problem: {reason}");
            }
            _ => {
                self.shared.metrics.error("kafka");
                if let Some(suppressed) = crate::log_limit::allow(sink, "client_error") {
                    tracing::error!(sink = %sink, error = %error, suppressed,
                        "Kafka client error: {reason}");
                }
            }
        }
    }

    fn stats_raw(&self, statistics: &[u8]) {
        let Some(stats) = parse_stats(statistics) else {
            return;
        };
        // `txretries` is cumulative per producer (each producer has its own context). The sum
        // can drop when a broker leaves the statistics; counting only past the highest sum seen
        // may miss retries then, but never counts one twice.
        let before = self
            .tx_retries
            .fetch_max(stats.tx_retries, Ordering::Relaxed);
        if stats.tx_retries > before {
            self.shared
                .metrics
                .retried(retry::BROKER_RETRY, stats.tx_retries - before);
        }
        // A broker in state UP has an open, authenticated connection: whatever kept the sink
        // from connecting or authenticating is over, even if no records flow to prove it.
        match stats.any_broker_up {
            true => self.shared.clear(&[Problem::Auth, Problem::Brokers]),
            false if self.shared.inflight_batches() > 0 => {
                let reason = "no connection to any Kafka broker is up; records wait in the buffer";
                if self
                    .shared
                    .set_problem(Problem::Brokers, reason.to_string())
                {
                    tracing::error!(sink = %self.shared.name, "{reason}");
                }
            }
            _ => {}
        }
    }

    fn generate_oauth_token(
        &self,
        _oauthbearer_config: Option<&str>,
    ) -> Result<OAuthToken, Box<dyn Error>> {
        let sink = &self.shared.name;
        let Some(tokens) = &self.tokens else {
            return Err(
                "OAUTHBEARER is configured but aws_msk_iam is not enabled: set \
                        aws_msk_iam = true, or configure sasl.oauthbearer.* in [sinks.rdkafka]"
                    .into(),
            );
        };
        // Never waits for the network: this is librdkafka's polling thread, which also serves
        // delivery reports and statistics (credentials are fetched by a task of their own).
        let started = Instant::now();
        let result = tokens.token_now();
        let took_us = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
        match result {
            Ok(issued) => {
                self.shared.token_refreshes.fetch_add(1, Ordering::Relaxed);
                self.shared.metrics.token_refreshed("msk_iam");
                self.shared.clear(&[Problem::Token]);
                tracing::info!(sink = %sink, region = %tokens.target().region,
                    signed_at = issued.token.amz_date(), lifetime_ms = issued.lifetime_ms, took_us,
                    "MSK IAM token refreshed");
                Ok(OAuthToken {
                    token: issued.token.token().to_string(),
                    principal_name: "logferry".to_string(),
                    lifetime_ms: issued.lifetime_ms,
                })
            }
            Err(e) => {
                self.shared.metrics.error("auth");
                self.shared.metrics.auth_failure("msk_token");
                tracing::error!(sink = %sink, error = %e, took_us,
                    "cannot create an MSK IAM token; librdkafka retries in 10 s");
                self.shared.set_problem(
                    Problem::Token,
                    format!("cannot create an MSK IAM token: {e}"),
                );
                Err(e.into())
            }
        }
    }
}

impl ProducerContext for KafkaContext {
    type DeliveryOpaque = Arc<Tracker>;

    fn delivery(&self, result: &DeliveryResult<'_>, tracker: Arc<Tracker>) {
        match result {
            Ok(message) => {
                let metrics = &self.shared.metrics;
                metrics.records_out.inc();
                metrics.bytes_out.inc_by(message.payload_len() as u64);
                self.shared.delivered.fetch_add(1, Ordering::Relaxed);
                if self.shared.any_problem() {
                    self.shared
                        .clear(&[Problem::Auth, Problem::Brokers, Problem::Delivery]);
                }
                tracker.settle(true);
                if self.shared.queue_full_waiters.load(Ordering::SeqCst) > 0 {
                    self.shared.progress.notify_waiters();
                }
            }
            Err((error, message)) => match self.shared.dead_letter_reason(error, message.topic()) {
                Some(why) => {
                    let target = format!("topic `{}`", message.topic());
                    self.shared.give_up(
                        tracker,
                        &Why::new(why, "the broker refuses the record", &target, error),
                    );
                }
                None => self.failed(error, message, tracker),
            },
        }
    }
}

impl KafkaContext {
    /// A delivery failed and there is no dead-letter reason for it: dropped when the broker
    /// will never take it, produced again otherwise.
    fn failed(&self, error: &KafkaError, message: &BorrowedMessage<'_>, tracker: Arc<Tracker>) {
        let target = format!("topic `{}`", message.topic());
        match classify(error) {
            Failure::TooLarge => self.shared.give_up(
                tracker,
                &Why::new(
                    reason::TOO_LARGE,
                    "the broker refuses the record as too large; raise the topic's \
                         max.message.bytes or send smaller records",
                    &target,
                    error,
                ),
            ),
            Failure::Invalid => self.shared.give_up(
                tracker,
                &Why {
                    dropped_as: "invalid_record",
                    ..Why::new(
                        reason::INVALID,
                        "the broker refuses the record as invalid (a compacted topic needs \
                             a message key)",
                        &target,
                        error,
                    )
                },
            ),
            Failure::Retry => {
                self.shared.metrics.error("delivery");
                self.shared.metrics.retried(retry_reason(error), 1);
                let purged = matches!(
                    error.rdkafka_error_code(),
                    Some(RDKafkaErrorCode::PurgeQueue | RDKafkaErrorCode::PurgeInflight)
                );
                let reason = format!(
                    "delivery to topic `{}` failed: {error}; retrying",
                    message.topic()
                );
                // Purges come from replacing or stopping the producer, not from Kafka.
                if !purged && self.shared.set_problem(Problem::Delivery, reason.clone()) {
                    tracing::warn!(sink = %self.shared.name, "{reason}");
                } else {
                    tracing::debug!(sink = %self.shared.name, "{reason}");
                }
                let retry = Retry {
                    topic: message.topic().to_string(),
                    key: message.key().map(<[u8]>::to_vec),
                    payload: message.payload().map(<[u8]>::to_vec).unwrap_or_default(),
                    tracker,
                };
                // If the sink task is gone, the tracker drops here and the batch fails.
                let _ = self.retries.send(retry);
            }
        }
    }
}

/// What the sink reads from librdkafka's statistics JSON.
struct Stats {
    /// Some broker is in state `UP`.
    any_broker_up: bool,
    /// Requests librdkafka sent again, summed over brokers (cumulative).
    tx_retries: u64,
}

fn parse_stats(statistics: &[u8]) -> Option<Stats> {
    #[derive(serde::Deserialize)]
    struct Raw {
        #[serde(default)]
        brokers: std::collections::HashMap<String, Broker>,
    }
    #[derive(serde::Deserialize)]
    struct Broker {
        state: String,
        #[serde(default)]
        txretries: u64,
    }
    let raw = serde_json::from_slice::<Raw>(statistics).ok()?;
    Some(Stats {
        any_broker_up: raw.brokers.values().any(|b| b.state == "UP"),
        tx_retries: raw.brokers.values().map(|b| b.txretries).sum(),
    })
}

/// Whether librdkafka's statistics JSON lists a broker in state `UP` (`None`: unreadable).
#[cfg(test)]
fn any_broker_up(statistics: &[u8]) -> Option<bool> {
    parse_stats(statistics).map(|s| s.any_broker_up)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::buffer::AckRef;
    use crate::buffer::Batch;

    fn shared() -> (Arc<Shared>, Arc<Health>) {
        let health = Arc::new(Health::default());
        (
            Shared::new(
                "kafka.test".into(),
                ComponentMetrics::detached("kafka.test", "sink"),
                health.clone(),
                Undeliverable::detached("kafka.test"),
                Vec::new(),
            ),
            health,
        )
    }

    #[tokio::test]
    async fn a_batch_completes_after_its_last_record_and_the_guard() {
        let (shared, _) = shared();
        let (ack, waiter) = AckRef::new();
        let batch = Batch::new("t".into(), Vec::new(), 10, Some(ack));
        let (_, done) = batch.into_parts();
        let tracker = shared.track(done, 2, None);
        assert_eq!(shared.inflight_batches(), 1);
        tracker.settle(true);
        tracker.settle(true);
        assert_eq!(shared.inflight_batches(), 1, "the guard is still held");
        tracker.settle(true);
        assert_eq!(shared.inflight_batches(), 0);
        assert!(waiter.wait().await);
    }

    #[tokio::test]
    async fn an_unsettled_batch_fails_when_dropped() {
        let (shared, _) = shared();
        let (ack, waiter) = AckRef::new();
        let (_, done) = Batch::new("t".into(), Vec::new(), 10, Some(ack)).into_parts();
        let tracker = shared.track(done, 1, None);
        tracker.settle(true);
        drop(tracker);
        assert_eq!(shared.inflight_batches(), 0);
        assert!(!waiter.wait().await);
    }

    #[test]
    fn health_follows_problems() {
        let (shared, health) = shared();
        shared.set_problem(Problem::Auth, "cannot authenticate".into());
        shared.set_problem(Problem::Brokers, "all brokers down".into());
        let (code, body) = health.report();
        assert_eq!(code, 503);
        assert!(body.contains("cannot authenticate") && body.contains("all brokers down"));
        shared.clear(&[Problem::Auth]);
        assert_eq!(health.report().0, 503);
        shared.clear(&[Problem::Brokers]);
        assert_eq!(health.report().0, 200);
    }

    #[test]
    fn failures_are_classified() {
        let too_large = KafkaError::MessageProduction(RDKafkaErrorCode::MessageSizeTooLarge);
        assert_eq!(classify(&too_large), Failure::TooLarge);
        let unknown = KafkaError::MessageProduction(RDKafkaErrorCode::UnknownTopicOrPartition);
        assert_eq!(classify(&unknown), Failure::Retry);
        let purged = KafkaError::MessageProduction(RDKafkaErrorCode::PurgeQueue);
        assert_eq!(classify(&purged), Failure::Retry);
    }

    #[test]
    fn statistics_tell_when_a_broker_is_up() {
        let up = br#"{"name":"x","brokers":{"127.0.0.1:9092/1":{"state":"UP","nodeid":1}}}"#;
        let down =
            br#"{"brokers":{"127.0.0.1:9092/bootstrap":{"state":"AUTH_HANDSHAKE","nodeid":-1}}}"#;
        assert_eq!(any_broker_up(up), Some(true));
        assert_eq!(any_broker_up(down), Some(false));
        assert_eq!(any_broker_up(b"not json"), None);
        let retries =
            br#"{"brokers":{"a":{"state":"UP","txretries":3},"b":{"state":"DOWN","txretries":4}}}"#;
        assert_eq!(parse_stats(retries).unwrap().tx_retries, 7);
    }

    #[test]
    fn librdkafka_request_retries_are_counted_from_its_statistics_once() {
        let (shared, _) = shared();
        let (tx, _rx) = mpsc::unbounded_channel();
        let context = KafkaContext::new(shared.clone(), tx, None);
        let stats = |a: u64, b: Option<u64>| {
            let mut brokers = format!(r#""a":{{"state":"UP","txretries":{a}}}"#);
            if let Some(b) = b {
                brokers.push_str(&format!(r#","b":{{"state":"UP","txretries":{b}}}"#));
            }
            format!(r#"{{"brokers":{{{brokers}}}}}"#).into_bytes()
        };
        context.stats_raw(&stats(1, Some(2)));
        context.stats_raw(&stats(2, Some(3)));
        assert_eq!(shared.metrics.retry_count("broker_retry"), 5);
        // Broker b left the statistics: nothing is counted twice when a's count grows.
        context.stats_raw(&stats(4, None));
        assert_eq!(shared.metrics.retry_count("broker_retry"), 5);
        context.stats_raw(&stats(7, None));
        assert_eq!(shared.metrics.retry_count("broker_retry"), 7);
    }

    #[test]
    fn delivery_errors_map_onto_shared_retry_reasons() {
        let e = |code| KafkaError::MessageProduction(code);
        assert_eq!(
            retry_reason(&e(RDKafkaErrorCode::MessageTimedOut)),
            "timeout"
        );
        assert_eq!(
            retry_reason(&e(RDKafkaErrorCode::UnknownTopicOrPartition)),
            "not_found"
        );
        assert_eq!(
            retry_reason(&e(RDKafkaErrorCode::TopicAuthorizationFailed)),
            "access_denied"
        );
        assert_eq!(
            retry_reason(&e(RDKafkaErrorCode::NotEnoughReplicas)),
            "internal"
        );
        assert_eq!(retry_reason(&e(RDKafkaErrorCode::PurgeQueue)), "other");
    }

    #[tokio::test]
    async fn a_completed_batch_is_timed_once() {
        let metrics = crate::metrics::Metrics::new();
        let shared = Shared::new(
            "k".into(),
            metrics.component("k", "sink"),
            Arc::new(Health::default()),
            Undeliverable::detached("k"),
            Vec::new(),
        );
        let (_, done) = Batch::new("t".into(), Vec::new(), 10, None).into_parts();
        let tracker = shared.track(done, 2, None);
        tracker.settle(true);
        tracker.settle(true);
        tracker.settle(true);
        let text = metrics.render();
        assert!(text.contains(
            "logferry_request_duration_seconds_count{component=\"k\",kind=\"sink\",operation=\"produce\"} 1"
        ), "{text}");
    }
}
