//! The per-shard rate limiter against kinesalite, which (like moto) does not enforce shard
//! limits itself: the limits are lowered so a test run crosses them many times, and the
//! records read back are checked against them by their ApproximateArrivalTimestamp. The
//! figures against the real limits (1000 records/s, 1 MiB/s per shard, enforced by the
//! bench's fake-kinesis) are in docs/kinesis.md.

use support::kinesis as kin;
mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use base64::Engine;

use kin::{create_stream, read_stream, unique_stream, Logferry, StreamContents};
use logferry_test_kit::stand_ins::Kinesalite;

/// The most any one-second window of a shard's arrivals holds, by records and by bytes (data
/// + partition key), over every shard.
fn busiest_second(contents: &StreamContents) -> (usize, usize) {
    let mut by_shard: BTreeMap<&str, Vec<(f64, usize)>> = BTreeMap::new();
    for record in &contents.records {
        let data = base64::engine::general_purpose::STANDARD
            .decode(&record.data_b64)
            .expect("base64 data");
        let size = data.len() + record.partition_key.len();
        by_shard
            .entry(record.shard_id.as_str())
            .or_default()
            .push((record.arrival, size));
    }
    let (mut records, mut bytes) = (0, 0);
    for arrivals in by_shard.values_mut() {
        arrivals.sort_by(|a, b| a.0.total_cmp(&b.0));
        for (i, (start, _)) in arrivals.iter().enumerate() {
            let window: Vec<usize> = arrivals[i..]
                .iter()
                .take_while(|(t, _)| *t < start + 1.0)
                .map(|(_, size)| *size)
                .collect();
            records = records.max(window.len());
            bytes = bytes.max(window.iter().sum());
        }
    }
    (records, bytes)
}

fn start(endpoint: &str, stream: &str, extra: &str) -> Logferry {
    Logferry::start(
        &format!("stream = \"{stream}\"\nendpoint = \"{endpoint}\"\nflush = \"100ms\"\n{extra}"),
        &[],
    )
}

#[test]
fn plain_records_are_held_to_each_shards_records_per_second() {
    let kinesalite = Kinesalite::start();
    let stream = unique_stream("rate-records");
    create_stream(&kinesalite.endpoint(), &stream, 2);
    let lf = start(
        &kinesalite.endpoint(),
        &stream,
        "shard_rate_limit = true\nshard_records_per_second = 100",
    );
    // 200 records per shard go at once (a second's burst), the rest at 100/s.
    lf.loadgen(0, 1000, 100);
    let held = lf.metric("logferry_kinesis_rate_limited_entries_total");
    let held_for = lf.metric("logferry_kinesis_rate_limited_seconds_total");
    let (code, log) = lf.stop();
    assert_eq!(code, 0, "{}", kin::tail(&log, 30));

    let contents = read_stream(&kinesalite.endpoint(), &stream);
    let counts = contents.seq_counts();
    assert_eq!(counts.len(), 1000, "every record delivered");
    assert!(counts.values().all(|&n| n == 1), "no duplicates");
    let (records, _) = busiest_second(&contents);
    eprintln!("records/s limit 100 per shard: busiest second {records} records, {held} held");
    // A full bucket (100) plus a second of refill (100), and 10% for the arrival clock.
    assert!(
        records <= 220,
        "a shard took {records} records within one second; the limit lets 200 through"
    );
    assert!(held >= 500.0, "{held} entries held back");
    assert!(held_for >= 1.0, "held for {held_for} s");
}

#[test]
fn aggregates_are_held_to_each_shards_bytes_per_second() {
    let kinesalite = Kinesalite::start();
    let stream = unique_stream("rate-bytes");
    create_stream(&kinesalite.endpoint(), &stream, 2);
    let lf = start(
        &kinesalite.endpoint(),
        &stream,
        "partition_key = \"seq\"\naggregation = true\naggregation_max_size = \"4KiB\"\n\
         shard_rate_limit = true\nshard_bytes_per_second = \"16KiB\"",
    );
    // ~120 KB of records: a second's burst of 16 KiB per shard, then 16 KiB/s each.
    lf.loadgen(0, 600, 200);
    let held = lf.metric("logferry_kinesis_rate_limited_entries_total");
    let (code, log) = lf.stop();
    assert_eq!(code, 0, "{}", kin::tail(&log, 30));

    let contents = read_stream(&kinesalite.endpoint(), &stream);
    let counts = contents.seq_counts();
    assert_eq!(counts.len(), 600, "every record delivered");
    assert!(counts.values().all(|&n| n == 1), "no duplicates");
    assert!(
        contents.records.iter().filter(|r| r.aggregated).count() > 10,
        "records were aggregated"
    );
    let (_, bytes) = busiest_second(&contents);
    eprintln!("bytes/s limit 16 KiB per shard: busiest second {bytes} bytes, {held} held");
    // A full bucket plus a second of refill (32 KiB), and one aggregate for the arrival clock.
    assert!(
        bytes <= 36 * 1024,
        "a shard took {bytes} bytes within one second; the limit lets 32 KiB through"
    );
    assert!(held >= 10.0, "{held} aggregates held back");
}

/// `auto` (the default) holds a shard only once Kinesis throttled it (tests/kinesis_faults.rs
/// shows that part): kinesalite never throttles, so nothing is held.
#[test]
fn in_auto_mode_a_stream_that_never_throttles_is_not_held() {
    let kinesalite = Kinesalite::start();
    let stream = unique_stream("rate-auto");
    create_stream(&kinesalite.endpoint(), &stream, 2);
    let lf = start(
        &kinesalite.endpoint(),
        &stream,
        "shard_records_per_second = 100",
    );
    lf.loadgen(0, 1000, 100);
    lf.wait_for("records delivered", Duration::from_secs(30), |lf| {
        lf.metric("logferry_kinesis_user_records_sent_total") >= 1000.0
    });
    assert_eq!(
        lf.metric("logferry_kinesis_rate_limited_entries_total"),
        0.0
    );
    let (code, log) = lf.stop();
    assert_eq!(code, 0, "{}", kin::tail(&log, 30));
    let (records, _) = busiest_second(&read_stream(&kinesalite.endpoint(), &stream));
    eprintln!("unheld: busiest second {records} records");
    assert!(
        records > 220,
        "unheld, a shard takes the records as fast as they come ({records} in a second): \
         the check above can fail"
    );
}
