//! The Kafka source end to end against tansu: records produced by confluent-kafka (the Python
//! client on librdkafka 2.16, tests/support/kafka_produce.py), consumed by logferry into file
//! sinks, and the group's committed offsets read back with the rdkafka crate.

use support::kafka;
mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use logferry_test_kit::logferry::{read_jsonl, wait_for_lines, Logferry};
use logferry_test_kit::paths::{python, support_file};
use logferry_test_kit::stand_ins::Tansu;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{Offset, TopicPartitionList};

const WAIT: Duration = Duration::from_secs(90);

/// Produces `count` records numbered from `start` (see kafka_produce.py for `extra`).
fn produce(bootstrap: &str, topic: &str, start: u64, count: u64, extra: &[&str]) {
    let out = Command::new(python())
        .arg(support_file("kafka_produce.py"))
        .args(["--bootstrap", bootstrap, "--topic", topic])
        .args(["--start", &start.to_string(), "--count", &count.to_string()])
        .args(extra)
        .output()
        .expect("run kafka_produce.py");
    assert!(
        out.status.success(),
        "producing failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The group's committed offset per partition (`None`: nothing committed).
fn committed(bootstrap: &str, group: &str, topic: &str, partitions: i32) -> Vec<Option<i64>> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .create()
        .expect("consumer");
    let mut list = TopicPartitionList::new();
    for p in 0..partitions {
        list.add_partition(topic, p);
    }
    let offsets = consumer
        .committed_offsets(list, Duration::from_secs(10))
        .expect("committed offsets");
    (0..partitions)
        .map(
            |p| match offsets.find_partition(topic, p).map(|e| e.offset()) {
                Some(Offset::Offset(o)) => Some(o),
                _ => None,
            },
        )
        .collect()
}

fn source_config(bootstrap: &str, topic: &str, group: &str, out: &Path, extra: &str) -> String {
    format!(
        r#"
[service]
http_listen = "{{http}}"
grace_period = "20s"

[[sources]]
type = "kafka"
name = "in"
brokers = "{bootstrap}"
topics = "{topic}"
group_id = "{group}"
format = "json"
tag = "kafka.$${{topic}}"
metadata_key = "kafka"
poll_ms = 100
{extra}

[sources.rdkafka]
"session.timeout.ms" = 6000
"heartbeat.interval.ms" = 500
"reconnect.backoff.max.ms" = 500

[[sinks]]
type = "file"
name = "out"
match = "kafka.*"
path = "{out}"
"#,
        out = out.display()
    )
}

fn seq_counts(records: &[serde_json::Value]) -> BTreeMap<u64, u32> {
    let mut counts = BTreeMap::new();
    for r in records {
        let seq = r["seq"].as_u64().unwrap_or_else(|| panic!("no seq: {r}"));
        *counts.entry(seq).or_default() += 1;
    }
    counts
}

fn assert_all_present(counts: &BTreeMap<u64, u32>, range: std::ops::Range<u64>) {
    let missing: Vec<u64> = range.filter(|s| !counts.contains_key(s)).collect();
    assert!(
        missing.is_empty(),
        "{} missing (first {:?})",
        missing.len(),
        &missing[..missing.len().min(10)]
    );
}

/// A slow output: logferry's file sink writes into a FIFO that a thread of the test copies to
/// `copy` at about `rate` bytes per second (unthrottled once `fast` is set), reopening it after
/// each writer goes away. The sink's deliveries then lag well behind what the source consumed,
/// so a commit running ahead of delivery would show.
struct SlowFifo {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    fast: std::sync::Arc<std::sync::atomic::AtomicBool>,
    /// How many times a writer went away and everything it wrote was copied.
    ends: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    fifo: std::path::PathBuf,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl SlowFifo {
    fn start(fifo: &Path, copy: &Path, rate: usize) -> SlowFifo {
        use std::io::{Read, Write};
        use std::sync::atomic::Ordering;
        assert!(Command::new("mkfifo").arg(fifo).status().unwrap().success());
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let fast = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (fifo_path, copy_path) = (fifo.to_path_buf(), copy.to_path_buf());
        let ends = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let (stop2, fast2, ends2) = (stop.clone(), fast.clone(), ends.clone());
        let thread = std::thread::spawn(move || {
            let mut out = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&copy_path)
                .unwrap();
            let chunk = (rate / 50).max(256);
            let mut buf = vec![0u8; 64 * 1024];
            while !stop2.load(Ordering::Acquire) {
                let mut input = std::fs::File::open(&fifo_path).unwrap();
                loop {
                    let limit = if fast2.load(Ordering::Acquire) {
                        buf.len()
                    } else {
                        chunk
                    };
                    let n = input.read(&mut buf[..limit]).unwrap_or(0);
                    if n == 0 {
                        ends2.fetch_add(1, Ordering::AcqRel);
                        break;
                    }
                    out.write_all(&buf[..n]).unwrap();
                    if !fast2.load(Ordering::Acquire) {
                        std::thread::sleep(Duration::from_millis(20));
                    }
                }
            }
        });
        SlowFifo {
            stop,
            fast,
            ends,
            fifo: fifo.to_path_buf(),
            thread: Some(thread),
        }
    }

    fn unthrottle(&self) {
        self.fast.store(true, std::sync::atomic::Ordering::Release);
    }
}

impl Drop for SlowFifo {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Release);
        // Unblocks a reader waiting for a writer.
        let _ = std::fs::OpenOptions::new().write(true).open(&self.fifo);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn committed_total(offsets: &[Option<i64>]) -> u64 {
    offsets.iter().map(|o| o.unwrap_or(0) as u64).sum()
}

#[test]
fn produced_records_arrive_exactly_once_and_their_offsets_are_committed() {
    let tansu = Tansu::start();
    tansu.create_topic("app", 3);
    let out_dir = tempfile::tempdir().unwrap();
    let out = out_dir.path().join("out.jsonl");
    let poison = out_dir.path().join("poison.jsonl");
    // Every 100th message is not JSON: 30 poison messages, routed to their own file.
    let n = 3000u64;
    produce(&tansu.bootstrap(), "app", 0, n, &["--bad-every", "100"]);
    let extra = format!(
        "invalid_tag = \"poison\"\n\n[[sinks]]\ntype = \"file\"\nname = \"poison\"\nmatch = \"poison\"\npath = \"{}\"",
        poison.display()
    );
    let mut lf = Logferry::start(&source_config(
        &tansu.bootstrap(),
        "app",
        "g1",
        &out,
        &extra,
    ));
    wait_for_lines(&out, (n - 30) as usize, WAIT);
    wait_for_lines(&poison, 30, WAIT);
    lf.wait_until("every offset committed", WAIT, || {
        committed_total(&committed(&tansu.bootstrap(), "g1", "app", 3)) == n
    });
    assert_eq!(
        lf.metric(
            "logferry_errors_total{component=\"in\",kind=\"source\",reason=\"invalid_json\"}"
        ),
        Some(30.0),
        "{}",
        lf.metrics()
    );
    assert!(lf.terminate().success(), "{}", lf.stderr());

    let records = read_jsonl(&out);
    let counts = seq_counts(&records);
    let good: Vec<u64> = (0..n).filter(|i| (i + 1) % 100 != 0).collect();
    assert_eq!(records.len(), good.len(), "exactly once");
    assert_eq!(counts.keys().copied().collect::<Vec<_>>(), good);
    let mut partitions = BTreeSet::new();
    for r in &records {
        let seq = r["seq"].as_u64().unwrap();
        assert_eq!(r["log"], format!("record {seq}"), "{r}");
        let meta = &r["kafka"];
        assert_eq!(meta["topic"], "app", "{r}");
        assert!(meta["offset"].as_i64().is_some(), "{r}");
        assert!(
            meta["timestamp"].as_i64().unwrap() > 1_600_000_000_000,
            "{r}"
        );
        assert_eq!(
            meta["key"],
            format!("k{}", r["n"].as_u64().unwrap() % 16),
            "{r}"
        );
        partitions.insert(meta["partition"].as_i64().unwrap());
    }
    assert_eq!(partitions.len(), 3, "keys spread over every partition");
    let poisoned = read_jsonl(&poison);
    let texts: BTreeSet<String> = poisoned
        .iter()
        .map(|r| r["log"].as_str().unwrap().to_string())
        .collect();
    let expected: BTreeSet<String> = (0..n)
        .filter(|i| (i + 1) % 100 == 0)
        .map(|i| format!("not json {i}"))
        .collect();
    assert_eq!(texts, expected);
}

/// kill -9 in the middle of the stream, then a restart in the same group: every record is
/// there, and the only duplicates are records the first run delivered after its last commit.
#[test]
fn kill_9_mid_stream_then_restart_loses_nothing_and_repeats_only_what_was_not_committed() {
    let tansu = Tansu::start();
    tansu.create_topic("app", 2);
    let out_dir = tempfile::tempdir().unwrap();
    let out = out_dir.path().join("out.jsonl");
    let fifo = out_dir.path().join("out.fifo");
    let slow = SlowFifo::start(&fifo, &out, 300 * 1024);
    let n = 30_000u64;
    let config = source_config(
        &tansu.bootstrap(),
        "app",
        "g-crash",
        &fifo,
        "buffer_max_size = \"16KiB\"",
    )
    .replace("path = ", "buffer_limit = \"1MiB\"\npath = ");
    let mut first = Logferry::start(&config);
    // The records are produced while logferry consumes, and it is killed once a first commit
    // happened, with records still flowing.
    let bootstrap = tansu.bootstrap();
    let producer = std::thread::spawn(move || {
        produce(&bootstrap, "app", 0, n, &["--one-per-batch"]);
    });
    first.wait_until("a first commit", WAIT, || {
        committed_total(&committed(&tansu.bootstrap(), "g-crash", "app", 2)) > 0
    });
    let pid = first.pid().to_string();
    assert!(Command::new("kill")
        .args(["-KILL", &pid])
        .status()
        .unwrap()
        .success());
    first.wait(Duration::from_secs(10));
    producer.join().expect("producer");
    // What the killed process had written into the pipe was delivered: the copy thread reads it
    // to its end.
    slow.unthrottle();
    logferry_test_kit::wait::wait_until("the pipe copied to its end", WAIT, || {
        slow.ends.load(std::sync::atomic::Ordering::Acquire) > 0
    });
    // A line cut by the kill would fail the JSON parse below: the file sink writes whole
    // batches, so a torn last line is dropped here and counted as not delivered.
    let text = std::fs::read_to_string(&out).unwrap();
    let whole = match text.rfind('\n') {
        Some(end) => &text[..=end],
        None => "",
    };
    std::fs::write(&out, whole).unwrap();
    let delivered_first = read_jsonl(&out).len() as u64;
    let committed_first = committed_total(&committed(&tansu.bootstrap(), "g-crash", "app", 2));
    assert!(
        committed_first <= delivered_first,
        "committed {committed_first} > delivered {delivered_first}: a commit ran ahead of delivery"
    );
    assert!(
        delivered_first < n,
        "the kill came too late to test anything"
    );
    assert!(committed_first > 0);

    // tansu gives a member that joins while the killed one's session still runs an empty
    // assignment and never rebalances once that session expires (seen when the machine is
    // busy); so the restart comes after session.timeout.ms (6 s). Real Kafka rebalances then.
    std::thread::sleep(Duration::from_secs(7));
    let mut second = Logferry::start(&config);
    second.wait_until("every offset committed", WAIT, || {
        committed_total(&committed(&tansu.bootstrap(), "g-crash", "app", 2)) == n
    });
    assert!(second.terminate().success(), "{}", second.stderr());
    let records = read_jsonl(&out);
    let counts = seq_counts(&records);
    assert_all_present(&counts, 0..n);
    let duplicates = records.len() as u64 - n;
    eprintln!(
        "delivered before the kill: {delivered_first}, committed: {committed_first}, \
         duplicates: {duplicates}"
    );
    assert!(
        duplicates <= delivered_first - committed_first,
        "{duplicates} duplicates, more than the {} records delivered but not committed",
        delivered_first - committed_first
    );
}

/// Two logferry instances in one consumer group share the partitions; together they deliver
/// every record once.
#[test]
fn two_instances_in_one_group_split_the_partitions() {
    let tansu = Tansu::start();
    tansu.create_topic("shared", 4);
    let out_dir = tempfile::tempdir().unwrap();
    let out_a = out_dir.path().join("a.jsonl");
    let out_b = out_dir.path().join("b.jsonl");
    let mut a = Logferry::start(&source_config(
        &tansu.bootstrap(),
        "shared",
        "g-pair",
        &out_a,
        "",
    ));
    let mut b = Logferry::start(&source_config(
        &tansu.bootstrap(),
        "shared",
        "g-pair",
        &out_b,
        "",
    ));
    // Both members are in the group once each has partitions assigned.
    for lf in [&a, &b] {
        lf.wait_until("partitions assigned", WAIT, || {
            lf.stderr().contains("partitions assigned")
        });
    }
    let n = 8000u64;
    produce(&tansu.bootstrap(), "shared", 0, n, &["--one-per-batch"]);
    a.wait_until("every offset committed", WAIT, || {
        committed_total(&committed(&tansu.bootstrap(), "g-pair", "shared", 4)) == n
    });
    assert!(a.terminate().success(), "{}", a.stderr());
    assert!(b.terminate().success(), "{}", b.stderr());
    let ra = read_jsonl(&out_a);
    let rb = read_jsonl(&out_b);
    let partitions = |records: &[serde_json::Value]| -> BTreeSet<i64> {
        records
            .iter()
            .map(|r| r["kafka"]["partition"].as_i64().unwrap())
            .collect()
    };
    let (pa, pb) = (partitions(&ra), partitions(&rb));
    eprintln!(
        "a: {} records from {pa:?}; b: {} records from {pb:?}",
        ra.len(),
        rb.len()
    );
    assert!(!ra.is_empty() && !rb.is_empty(), "both members consumed");
    assert!(pa.is_disjoint(&pb), "no partition read by both");
    let mut all = ra;
    all.extend(rb);
    let counts = seq_counts(&all);
    assert_all_present(&counts, 0..n);
    assert_eq!(all.len() as u64, n, "exactly once across both");
}

/// MSK IAM on both ends: a Kafka source and a Kafka sink authenticate through the
/// SASL-validating proxy (tests/support/msk_iam_proxy.py) with the same token code.
#[test]
fn msk_iam_source_to_msk_iam_sink_through_the_sasl_proxy() {
    let stack = kafka::TansuBehindProxy::start();
    stack.create_topic("in", 2);
    stack.create_topic("out", 1);
    let proxy = stack.proxy(kafka::SECRET, &[]);
    let n = 2000u64;
    kafka::produce_msk(&stack.bootstrap(), "in", n);
    let config = format!(
        r#"
[service]
http_listen = "{{http}}"
grace_period = "20s"

[[sources]]
type = "kafka"
name = "msk-in"
brokers = "{bootstrap}"
topics = "in"
format = "json"
aws_msk_iam = true
region = "{region}"

[sources.rdkafka]
"security.protocol" = "SASL_PLAINTEXT"

[[sinks]]
type = "kafka"
name = "msk-out"
match = "*"
brokers = "{bootstrap}"
topics = "out"
aws_msk_iam = true
region = "{region}"

[sinks.rdkafka]
"security.protocol" = "SASL_PLAINTEXT"
"#,
        bootstrap = stack.bootstrap(),
        region = kafka::REGION
    );
    let mut lf = Logferry::start_with_env(&config, &kafka::aws_env());
    let records = kafka::consume_msk(&stack.bootstrap(), "out", n as usize, WAIT);
    kafka::assert_exactly_once(&kafka::seqs(&records), 0..n);
    assert!(lf.terminate().success(), "{}", lf.stderr());
    assert!(
        proxy.stat("auth_ok") >= 2,
        "source and sink authenticated: {}",
        proxy.stats()
    );
    assert_eq!(proxy.stat("auth_failed"), 0, "{}", proxy.stats());
    let log = lf.stderr();
    assert!(
        !log.contains(kafka::SECRET),
        "the secret key is in the logs"
    );
    assert!(
        !log.contains("aHR0cHM6Ly9rYWZrYS"),
        "a token is in the logs"
    );
}

/// A stuck output: the file sink writes into a FIFO nobody reads, for longer than
/// `max.poll.interval.ms`. The source pauses its partitions and keeps polling, so it stays in
/// the group (librdkafka would otherwise leave it, and the partitions would be handed over and
/// read again); once the output moves, everything arrives exactly once.
#[test]
fn a_stuck_sink_pauses_the_partitions_without_leaving_the_group() {
    use std::io::Read;
    let tansu = Tansu::start();
    tansu.create_topic("app", 2);
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("out.fifo");
    let mut stalled = logferry_test_kit::logferry::stalled_fifo(&fifo);
    let n = 20_000u64;
    // One message per producer batch: resuming a paused partition fetches from the offset
    // after the last consumed message, which tansu cannot do inside a batch (TESTING.md).
    produce(
        &tansu.bootstrap(),
        "app",
        0,
        n,
        &["--size", "200", "--one-per-batch"],
    );
    let config = source_config(&tansu.bootstrap(), "app", "g-stuck", &fifo, "")
        .replace(
            "\"session.timeout.ms\" = 6000",
            "\"session.timeout.ms\" = 6000\n\"max.poll.interval.ms\" = 6000",
        )
        .replace("path = ", "buffer_limit = \"256KiB\"\npath = ")
        // What the source may hold besides the sink's queue: one batch of 256 KiB.
        .replace(
            "poll_ms = 100",
            "poll_ms = 100\nbuffer_max_size = \"256KiB\"",
        );
    let mut lf = Logferry::start_with_env(
        &config,
        &[("RUST_LOG", "info,logferry::source::kafka=debug")],
    );
    lf.wait_until("the partitions paused", WAIT, || {
        lf.stderr().contains("partitions paused")
    });
    let consumed = || {
        lf.metric("logferry_records_in_total{component=\"in\"")
            .unwrap_or(0.0) as u64
    };
    // Stuck for well over max.poll.interval.ms.
    std::thread::sleep(Duration::from_secs(10));
    let while_stuck = consumed();
    assert!(
        while_stuck < n / 2,
        "{while_stuck} of {n} consumed while the output was stuck"
    );
    // The output moves again: read the FIFO until every record came out.
    let mut text = Vec::new();
    let mut buf = vec![0u8; 1 << 16];
    while text.iter().filter(|&&b| b == b'\n').count() < n as usize {
        let got = stalled.read(&mut buf).expect("read the FIFO");
        text.extend_from_slice(&buf[..got]);
    }
    lf.wait_until("every offset committed", WAIT, || {
        committed_total(&committed(&tansu.bootstrap(), "g-stuck", "app", 2)) == n
    });
    let log = lf.stderr();
    assert!(
        !log.contains("maximum poll interval"),
        "the consumer left the group while paused:\n{log}"
    );
    assert!(lf.terminate().success(), "{}", lf.stderr());
    let records: Vec<serde_json::Value> = String::from_utf8(text)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let counts = seq_counts(&records);
    assert_all_present(&counts, 0..n);
    assert_eq!(
        records.len() as u64,
        n,
        "no duplicates: the group never rebalanced"
    );
}
