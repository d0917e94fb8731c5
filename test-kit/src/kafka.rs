//! Reading Kafka topics back with the rdkafka crate's own consumer (not the sink's producer
//! code), and checking what arrived.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, DefaultConsumerContext};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};

/// One record read back from Kafka.
#[derive(Debug, Clone)]
pub struct Consumed {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    pub key: Option<Vec<u8>>,
    pub payload: Vec<u8>,
}

impl Consumed {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.payload).unwrap_or_else(|e| {
            panic!(
                "payload is not JSON ({e}): {:?}",
                String::from_utf8_lossy(&self.payload)
            )
        })
    }
}

/// The consumer settings every test consumer starts from (no commits, fast reconnects).
pub fn consumer_config(bootstrap: &str) -> ClientConfig {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", bootstrap)
        .set("group.id", "logferry-tests")
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "false")
        .set("reconnect.backoff.max.ms", "500");
    config
}

/// Reads `topic` from the beginning of every partition until `want` records arrived (plus a
/// short grace period, so duplicates show up too) or `timeout` passed.
pub fn consume(bootstrap: &str, topic: &str, want: usize, timeout: Duration) -> Vec<Consumed> {
    let consumer: BaseConsumer<DefaultConsumerContext> = consumer_config(bootstrap)
        .create()
        .expect("create consumer");
    read_all(&consumer, topic, want, timeout)
}

/// Reads `topic` from the beginning of every partition with `consumer` until `want` records
/// arrived (plus a short grace period, so duplicates show up too) or `timeout` passed.
pub fn read_all<C: ConsumerContext>(
    consumer: &BaseConsumer<C>,
    topic: &str,
    want: usize,
    timeout: Duration,
) -> Vec<Consumed> {
    let deadline = Instant::now() + timeout;
    let partitions = loop {
        // Token refresh callbacks are served by polling; poll while waiting for metadata.
        let _ = consumer.poll(Duration::from_millis(50));
        match consumer.fetch_metadata(Some(topic), Duration::from_secs(2)) {
            Ok(metadata) => {
                let count = metadata
                    .topics()
                    .first()
                    .map(|t| t.partitions().len())
                    .unwrap_or(0);
                if count > 0 {
                    break count;
                }
            }
            Err(e) if Instant::now() > deadline => panic!("no metadata for {topic}: {e}"),
            Err(_) => {}
        }
        assert!(Instant::now() < deadline, "topic {topic} has no partitions");
        std::thread::sleep(Duration::from_millis(100));
    };
    let mut assignment = TopicPartitionList::new();
    for p in 0..partitions {
        assignment
            .add_partition_offset(topic, p as i32, Offset::Beginning)
            .expect("assignment");
    }
    consumer.assign(&assignment).expect("assign");
    let mut out = Vec::new();
    let mut grace_until: Option<Instant> = None;
    loop {
        let now = Instant::now();
        if now > deadline || grace_until.is_some_and(|g| now > g) {
            break;
        }
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(message)) => out.push(Consumed {
                topic: message.topic().to_string(),
                partition: message.partition(),
                offset: message.offset(),
                key: message.key().map(<[u8]>::to_vec),
                payload: message.payload().map(<[u8]>::to_vec).unwrap_or_default(),
            }),
            Some(Err(e)) => eprintln!("consumer: {e}"),
            None => {}
        }
        if out.len() >= want && grace_until.is_none() {
            grace_until = Some(Instant::now() + Duration::from_millis(700));
        }
    }
    out
}

/// `seq` of each JSON record.
pub fn seqs(records: &[Consumed]) -> Vec<u64> {
    records
        .iter()
        .map(|r| {
            r.json()["seq"]
                .as_u64()
                .unwrap_or_else(|| panic!("no seq in {}", r.json()))
        })
        .collect()
}

/// Asserts that `seqs` holds `range` exactly once each.
pub fn assert_exactly_once(seqs: &[u64], range: std::ops::Range<u64>) {
    let mut counts: BTreeMap<u64, u32> = BTreeMap::new();
    for s in seqs {
        *counts.entry(*s).or_default() += 1;
    }
    let missing: Vec<u64> = range.clone().filter(|s| !counts.contains_key(s)).collect();
    let duplicated: Vec<u64> = counts
        .iter()
        .filter(|(_, &c)| c > 1)
        .map(|(s, _)| *s)
        .collect();
    let unexpected: Vec<u64> = counts
        .keys()
        .filter(|s| !range.contains(s))
        .copied()
        .collect();
    assert!(
        missing.is_empty() && duplicated.is_empty() && unexpected.is_empty(),
        "of {:?}: {} missing (first {:?}), {} duplicated (first {:?}), {} unexpected",
        range,
        missing.len(),
        missing.iter().take(10).collect::<Vec<_>>(),
        duplicated.len(),
        duplicated.iter().take(10).collect::<Vec<_>>(),
        unexpected.len()
    );
}
