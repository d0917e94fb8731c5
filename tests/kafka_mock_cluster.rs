//! The Kafka sink against librdkafka's in-process mock cluster, which can misbehave on demand:
//! brokers going down and coming back, injected request errors. Every record must be
//! acknowledged upstream only after the broker has it, and must arrive exactly once.
//!
//! The sink is driven through the library (queue -> sink task), because the mock cluster lives
//! inside the test process.

use support::kafka;
mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use logferry::buffer::memory::queue;
use logferry::buffer::{AckRef, AckWaiter, Batch, QueueSender};
use logferry::event::{Event, EventTime, Map, Value};
use logferry::health::Health;
use logferry::metrics::ComponentMetrics;
use logferry::sink::kafka::config::KafkaConfig;
use logferry::sink::kafka::KafkaSink;
use logferry::sink::SinkContext;
use prometheus_client::metrics::gauge::Gauge;
use rdkafka::mocking::MockCluster;
use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};

use kafka::{assert_exactly_once, consume, seqs};

const TOPIC: &str = "logs";

struct Running {
    tx: QueueSender,
    task: tokio::task::JoinHandle<()>,
    health: Arc<Health>,
    metrics: ComponentMetrics,
}

async fn start_sink(bootstrap: &str, extra: &str) -> Running {
    start_sink_with(&format!(
        "brokers = \"{bootstrap}\"\ntopics = \"{TOPIC}\"\nmessage_key_field = \"key\"\n{extra}"
    ))
    .await
}

/// The sink with this whole configuration.
async fn start_sink_with(text: &str) -> Running {
    let config: KafkaConfig = toml::from_str(text).unwrap();
    let health = Arc::new(Health::default());
    let metrics = ComponentMetrics::detached("kafka.mock", "sink");
    let cx = SinkContext {
        name: "kafka.mock".into(),
        metrics: metrics.clone(),
        health: health.clone(),
        registry: Arc::new(logferry::metrics::Metrics::new()),
        dead_letters: None,
    };
    let sink = KafkaSink::build(&config, cx).await.expect("open the sink");
    let (tx, rx) = queue(64 << 20, Gauge::default());
    let task = tokio::spawn(sink.run(rx));
    Running {
        tx,
        task,
        health,
        metrics,
    }
}

/// A batch of `count` records with `seq` from `first`, 8 keys spread over them.
fn batch(first: u64, count: u64, log_len: usize) -> (Batch, AckWaiter) {
    batch_of(
        (first..first + count)
            .map(|seq| record(seq, log_len))
            .collect(),
    )
}

/// Record `seq`: its key (one of 8) and a `log` of `log_len` bytes.
fn record(seq: u64, log_len: usize) -> Map {
    let mut record = Map::new();
    record.push(Bytes::from("seq"), Value::UInt(seq));
    record.push(Bytes::from("key"), Value::from(format!("k{}", seq % 8)));
    record.push(Bytes::from("log"), Value::from("y".repeat(log_len)));
    record
}

/// A batch of these records, acknowledged through the waiter.
fn batch_of(records: Vec<Map>) -> (Batch, AckWaiter) {
    let size = records.len() * 64;
    let events = records
        .into_iter()
        .map(|record| Event::new("mock".into(), EventTime::now(), record))
        .collect();
    let (ack, waiter) = AckRef::new();
    (Batch::new("mock".into(), events, size, Some(ack)), waiter)
}

/// Sends `batches` batches of `count` records (see [`batch`]), `seq` going on from `next`.
async fn send_batches(
    tx: &QueueSender,
    next: &mut u64,
    batches: usize,
    count: u64,
    log_len: usize,
) -> Vec<AckWaiter> {
    let mut waiters = Vec::new();
    for _ in 0..batches {
        let (b, w) = batch(*next, count, log_len);
        *next += count;
        tx.send(b).await.unwrap();
        waiters.push(w);
    }
    waiters
}

async fn wait_acks(waiters: Vec<AckWaiter>, timeout: Duration) {
    let all = async {
        for (i, waiter) in waiters.into_iter().enumerate() {
            assert!(waiter.wait().await, "batch {i} was not delivered");
        }
    };
    tokio::time::timeout(timeout, all)
        .await
        .expect("every batch is acknowledged in time");
}

/// Reads the topic back until `count` records came or `timeout` passed (on a blocking thread:
/// the consumer blocks).
async fn read_back(bootstrap: String, count: u64, timeout: Duration) -> Vec<kafka::Consumed> {
    tokio::task::spawn_blocking(move || consume(&bootstrap, TOPIC, count as usize, timeout))
        .await
        .unwrap()
}

async fn stop(running: Running) {
    drop(running.tx);
    tokio::time::timeout(Duration::from_secs(30), running.task)
        .await
        .expect("the sink drains and stops")
        .expect("the sink task ends cleanly");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_outage_for_seconds_then_every_record_exactly_once() {
    let mock = MockCluster::new(3).unwrap();
    mock.create_topic(TOPIC, 4, 3).unwrap();
    let bootstrap = mock.bootstrap_servers();
    let running = start_sink(&bootstrap, "[rdkafka]\n\"statistics.interval.ms\" = 1000\n").await;

    let mut next = 0u64;
    let first = send_batches(&running.tx, &mut next, 20, 100, 100).await;
    wait_acks(first, Duration::from_secs(30)).await;

    // Every broker goes away; records keep coming and must wait, unacknowledged.
    mock.broker_down(-1).unwrap();
    let down_at = Instant::now();
    let mut waiters = Vec::new();
    for _ in 0..30 {
        waiters.extend(send_batches(&running.tx, &mut next, 1, 100, 100).await);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut saw_unhealthy = false;
    while down_at.elapsed() < Duration::from_secs(5) {
        saw_unhealthy |= running.health.report().0 == 503;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let pending: Vec<AckWaiter> = waiters;
    assert!(saw_unhealthy, "all brokers down shows on /health");
    mock.broker_up(-1).unwrap();
    wait_acks(pending, Duration::from_secs(60)).await;

    let delivered = running.metrics.records_out.get();
    assert_eq!(
        delivered, next,
        "records_out counts broker-acknowledged records"
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    while running.health.report().0 != 200 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        running.health.report().0,
        200,
        "{}",
        running.health.report().1
    );
    stop(running).await;

    let records = read_back(bootstrap, next, Duration::from_secs(60)).await;
    assert_exactly_once(&seqs(&records), 0..next);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn injected_request_errors_are_retried_into_exactly_once_delivery() {
    let mock = MockCluster::new(3).unwrap();
    mock.create_topic(TOPIC, 4, 3).unwrap();
    let bootstrap = mock.bootstrap_servers();
    let running = start_sink(&bootstrap, "[rdkafka]\n\"retry.backoff.ms\" = 20\n").await;

    let errors = [
        RDKafkaRespErr::RD_KAFKA_RESP_ERR_NOT_LEADER_FOR_PARTITION,
        RDKafkaRespErr::RD_KAFKA_RESP_ERR_REQUEST_TIMED_OUT,
        RDKafkaRespErr::RD_KAFKA_RESP_ERR_NOT_ENOUGH_REPLICAS,
        RDKafkaRespErr::RD_KAFKA_RESP_ERR__TRANSPORT,
        RDKafkaRespErr::RD_KAFKA_RESP_ERR_NOT_ENOUGH_REPLICAS_AFTER_APPEND,
        RDKafkaRespErr::RD_KAFKA_RESP_ERR_LEADER_NOT_AVAILABLE,
    ];
    let mut waiters = Vec::new();
    let mut next = 0u64;
    for round in 0..10 {
        // A burst of failing Produce (and some Metadata) requests before every round.
        mock.request_errors(RDKafkaApiKey::Produce, &errors);
        if round % 3 == 0 {
            mock.request_errors(
                RDKafkaApiKey::Metadata,
                &[RDKafkaRespErr::RD_KAFKA_RESP_ERR__TRANSPORT],
            );
        }
        waiters.extend(send_batches(&running.tx, &mut next, 5, 200, 60).await);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    wait_acks(waiters, Duration::from_secs(60)).await;
    assert_eq!(running.metrics.records_out.get(), next);
    assert_eq!(running.metrics.dropped_count("too_large"), 0);
    stop(running).await;

    let records = read_back(bootstrap, next, Duration::from_secs(60)).await;
    assert_exactly_once(&seqs(&records), 0..next);
    // One key's records stay in order on their partition despite the retries.
    let mut last_by_key = std::collections::HashMap::new();
    let mut sorted = records.clone();
    sorted.sort_by_key(|r| (r.partition, r.offset));
    for r in &sorted {
        let json = r.json();
        let seq = json["seq"].as_u64().unwrap();
        let key = json["key"].as_str().unwrap().to_string();
        if let Some(previous) = last_by_key.insert(key.clone(), seq) {
            assert!(previous < seq, "key {key}: {previous} before {seq}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_too_large_is_dropped_and_counted_without_blocking_the_rest() {
    let mock = MockCluster::new(1).unwrap();
    mock.create_topic(TOPIC, 1, 1).unwrap();
    let bootstrap = mock.bootstrap_servers();
    let running = start_sink(&bootstrap, "[rdkafka]\n\"message.max.bytes\" = 10000\n").await;

    let (small, small_ack) = batch(0, 50, 100);
    running.tx.send(small).await.unwrap();
    let (big, big_ack) = batch(50, 1, 20_000);
    running.tx.send(big).await.unwrap();
    let (after, after_ack) = batch(51, 50, 100);
    running.tx.send(after).await.unwrap();
    wait_acks(vec![small_ack, big_ack, after_ack], Duration::from_secs(30)).await;
    assert_eq!(running.metrics.dropped_count("too_large"), 1);
    assert_eq!(running.metrics.records_out.get(), 100);
    stop(running).await;

    let records = read_back(bootstrap, 100, Duration::from_secs(30)).await;
    let mut got = seqs(&records);
    got.sort_unstable();
    let expected: Vec<u64> = (0..50).chain(51..101).collect();
    assert_eq!(got, expected);
}

/// A batch's records go to librdkafka in one call; the ones it refuses there (too large, in
/// the middle of the batch) are dropped and counted one by one, and every other record of the
/// batch arrives once, in order (one partition).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_refused_inside_a_batch_leave_the_rest_once_and_in_order() {
    let mock = MockCluster::new(1).unwrap();
    mock.create_topic(TOPIC, 1, 1).unwrap();
    let bootstrap = mock.bootstrap_servers();
    let running = start_sink(&bootstrap, "[rdkafka]\n\"message.max.bytes\" = 10000\n").await;

    let too_large = [0, 25, 26, 70, 99];
    let records = (0..100)
        .map(|seq| {
            record(
                seq,
                if too_large.contains(&seq) {
                    20_000
                } else {
                    100
                },
            )
        })
        .collect();
    let (b, ack) = batch_of(records);
    running.tx.send(b).await.unwrap();
    wait_acks(vec![ack], Duration::from_secs(30)).await;
    assert_eq!(running.metrics.dropped_count("too_large"), 5);
    assert_eq!(running.metrics.records_out.get(), 95);
    stop(running).await;

    let records = read_back(bootstrap, 95, Duration::from_secs(30)).await;
    let expected: Vec<u64> = (0..100).filter(|seq| !too_large.contains(seq)).collect();
    assert_eq!(seqs(&records), expected);
}

/// Records of one batch routed to two topics (`topic_key`, interleaved) reach each topic once
/// and in their order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_routed_to_two_topics_reaches_each_in_order() {
    const AUDIT: &str = "audit";
    let mock = MockCluster::new(1).unwrap();
    mock.create_topic(TOPIC, 1, 1).unwrap();
    mock.create_topic(AUDIT, 1, 1).unwrap();
    let bootstrap = mock.bootstrap_servers();
    let running = start_sink_with(&format!(
        "brokers = \"{bootstrap}\"\ntopics = \"{TOPIC},{AUDIT}\"\ntopic_key = \"to\"\n"
    ))
    .await;

    let audit = |seq: u64| seq.is_multiple_of(3);
    let records = (0..300)
        .map(|seq| {
            let mut record = record(seq, 50);
            let to = if audit(seq) { AUDIT } else { TOPIC };
            record.push(Bytes::from("to"), Value::from(to));
            record
        })
        .collect();
    let (b, ack) = batch_of(records);
    running.tx.send(b).await.unwrap();
    wait_acks(vec![ack], Duration::from_secs(30)).await;
    assert_eq!(running.metrics.records_out.get(), 300);
    stop(running).await;

    let (logs, audited): (Vec<u64>, Vec<u64>) = (0..300).partition(|seq| !audit(*seq));
    for (topic, expected) in [(TOPIC, logs), (AUDIT, audited)] {
        let bootstrap = bootstrap.clone();
        let count = expected.len();
        let records = tokio::task::spawn_blocking(move || {
            consume(&bootstrap, topic, count, Duration::from_secs(30))
        })
        .await
        .unwrap();
        assert_eq!(seqs(&records), expected, "topic {topic}");
    }
}

/// librdkafka's local queue holds 20 records here, so most sends find it full and wait for
/// room (`queue_full` retries): deliveries must wake those waits (they notify only while a send
/// waits), and every record must still arrive exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_local_queue_makes_sends_wait_and_loses_nothing() {
    let mock = MockCluster::new(1).unwrap();
    mock.create_topic(TOPIC, 4, 1).unwrap();
    let bootstrap = mock.bootstrap_servers();
    let running = start_sink(
        &bootstrap,
        "queue_full_retries = 0\n[rdkafka]\n\"queue.buffering.max.messages\" = 20\n\"linger.ms\" = 5\n",
    )
    .await;

    let mut next = 0u64;
    let waiters = send_batches(&running.tx, &mut next, 10, 300, 60).await;
    wait_acks(waiters, Duration::from_secs(60)).await;
    assert_eq!(running.metrics.records_out.get(), next);
    let waits = running.metrics.retry_count("queue_full");
    assert!(
        waits > 0,
        "the local queue was never full: the test proves nothing"
    );
    stop(running).await;

    let records = read_back(bootstrap, next, Duration::from_secs(60)).await;
    assert_exactly_once(&seqs(&records), 0..next);
}
