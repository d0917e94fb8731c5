//! Resharding with aggregation on, against kinesalite. moto cannot be used for this: after
//! SplitShard it keeps writing records to the closed parent shard (its PutRecords routing does
//! not skip closed shards), so a producer can neither observe nor be checked against the new
//! shards. kinesalite routes to open shards only, as Kinesis does.
//!
//! Every record read back is judged as the Kinesis Client Library judges it: an aggregated
//! record whose user records are not all inside the hash key range of the shard it was read
//! from is dropped whole. Every record logferry acknowledged must survive that judgement,
//! including those sent while the sink still used the shard map from before the reshard.

use support::kinesis as kin;
mod support;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use kin::{create_stream, md5_hash_key, read_stream, unique_stream, Logferry, StreamContents};
use logferry_test_kit::stand_ins::Kinesalite;

fn sink(endpoint: &str, stream: &str, extra: &str) -> String {
    format!("stream = \"{stream}\"\nendpoint = \"{endpoint}\"\nflush = \"200ms\"\n{extra}")
}

fn wait_delivered(lf: &Logferry, n: u64) {
    lf.wait_for(
        &format!("{n} records delivered"),
        Duration::from_secs(60),
        |lf| lf.metric("logferry_kinesis_user_records_sent_total") >= n as f64,
    );
}

/// What a KCL consumer reads: `seq` of every user record it keeps, counted, and how many
/// aggregated records it drops because one of their user records is out of the shard's range.
fn kcl_view(contents: &StreamContents) -> (BTreeMap<u64, usize>, usize) {
    let mut counts = BTreeMap::new();
    let mut dropped = 0;
    for record in &contents.records {
        let shard = contents.shard(&record.shard_id);
        let in_range = record
            .users
            .iter()
            .all(|u| shard.contains(md5_hash_key(&u.partition_key)));
        if record.aggregated && !in_range {
            dropped += 1;
            continue;
        }
        for user in &record.users {
            let seq = user.json()["seq"].as_u64().expect("seq");
            *counts.entry(seq).or_default() += 1;
        }
    }
    (counts, dropped)
}

/// Asserts that a KCL consumer reads each of the `acknowledged` records (seq 0..n) exactly once.
fn assert_kcl_reads_each_once(contents: &StreamContents, acknowledged: u64) -> usize {
    let (counts, dropped) = kcl_view(contents);
    let missing: Vec<u64> = (0..acknowledged)
        .filter(|seq| !counts.contains_key(seq))
        .collect();
    assert!(
        missing.is_empty(),
        "{} acknowledged records never reach a KCL consumer (first: {:?}); {dropped} aggregates \
         dropped as out of range",
        missing.len(),
        &missing[..missing.len().min(10)]
    );
    let twice: Vec<(&u64, &usize)> = counts.iter().filter(|(_, &n)| n > 1).collect();
    assert!(
        twice.is_empty(),
        "a KCL consumer reads records more than once: {:?}",
        &twice[..twice.len().min(10)]
    );
    assert_eq!(counts.len() as u64, acknowledged, "records nobody sent");
    dropped
}

#[test]
fn resharding_mid_stream_with_aggregation_loses_nothing_and_stops_mixing_shards() {
    let kinesalite = Kinesalite::start();
    let stream = unique_stream("reshard");
    create_stream(&kinesalite.endpoint(), &stream, 2);
    let lf = Logferry::start(
        &sink(
            &kinesalite.endpoint(),
            &stream,
            "partition_key = \"seq\"\naggregation = true",
        ),
        &[],
    );
    lf.loadgen(0, 2000, 200);
    wait_delivered(&lf, 2000);
    kin::tool(&kinesalite.endpoint(), &["split", &stream]);
    // The first records after the split land on child shards: the sink notices, lists the
    // shards again, and sends the aggregates that landed elsewhere again.
    lf.loadgen(2000, 500, 200);
    wait_delivered(&lf, 2500);
    lf.wait_for("shard map refreshed", Duration::from_secs(20), |lf| {
        lf.metric("logferry_kinesis_shard_map_refreshes_total") >= 1.0
    });
    let misplaced = lf.metric("logferry_kinesis_misplaced_aggregates_total");
    lf.loadgen(2500, 3000, 200);
    wait_delivered(&lf, 5500);
    let (code, log) = lf.stop();
    assert_eq!(code, 0, "{}", kin::tail(&log, 30));

    let contents = read_stream(&kinesalite.endpoint(), &stream);
    assert_eq!(contents.shards.iter().filter(|s| !s.closed).count(), 4);
    let dropped = assert_kcl_reads_each_once(&contents, 5500);
    assert!(
        dropped as f64 <= misplaced,
        "{dropped} aggregates dropped by the KCL check, but only {misplaced} seen landing elsewhere"
    );
    // Once the map is refreshed, no aggregate mixes shards.
    let after_refresh = contents
        .records
        .iter()
        .filter(|r| r.aggregated)
        .filter(|r| {
            r.users
                .iter()
                .all(|u| u.json()["seq"].as_u64().unwrap() >= 2500)
        })
        .count();
    assert!(after_refresh > 10, "{after_refresh} aggregates checked");
}

#[test]
fn splits_and_merges_while_records_flow_reach_a_kcl_consumer_exactly_once() {
    let kinesalite = Kinesalite::start();
    let endpoint = kinesalite.endpoint();
    let stream = unique_stream("reshard-flow");
    create_stream(&endpoint, &stream, 2);
    let lf = Logferry::start(
        &sink(
            &endpoint,
            &stream,
            "partition_key = \"seq\"\naggregation = true",
        ),
        &[],
    );
    // A client that waits for each chunk's ack, sending without pause while the shards change.
    let stop = Arc::new(AtomicBool::new(false));
    let acknowledged = Arc::new(AtomicU64::new(0));
    let client = {
        let (stop, acknowledged, forward) = (stop.clone(), acknowledged.clone(), lf.forward);
        std::thread::spawn(move || {
            while !stop.load(Ordering::Acquire) {
                let start = acknowledged.load(Ordering::Acquire);
                kin::loadgen(forward, start, 300, 200, 100, true);
                acknowledged.store(start + 300, Ordering::Release);
            }
        })
    };
    let wait_flow = |more: u64| {
        let target = acknowledged.load(Ordering::Acquire) + more;
        let deadline = Instant::now() + Duration::from_secs(90);
        while acknowledged.load(Ordering::Acquire) < target {
            assert!(
                Instant::now() < deadline,
                "records stopped flowing: {}",
                kin::tail(&lf.log(), 30)
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    wait_flow(1200);
    kin::tool(&endpoint, &["split", &stream]);
    wait_flow(1500);
    kin::tool(&endpoint, &["merge", &stream]);
    wait_flow(1500);
    stop.store(true, Ordering::Release);
    client.join().expect("the load thread");
    let acknowledged = acknowledged.load(Ordering::Acquire);
    let misplaced = lf.metric("logferry_kinesis_misplaced_aggregates_total");
    let refreshes = lf.metric("logferry_kinesis_shard_map_refreshes_total");
    let (code, log) = lf.stop();
    assert_eq!(code, 0, "{}", kin::tail(&log, 30));

    let contents = read_stream(&endpoint, &stream);
    assert_eq!(
        contents.shards.iter().filter(|s| !s.closed).count(),
        2,
        "split into 4, merged back into 2"
    );
    assert!(refreshes >= 2.0, "{refreshes} shard map refreshes");
    let dropped = assert_kcl_reads_each_once(&contents, acknowledged);
    assert!(
        misplaced >= 1.0,
        "no aggregate landed on another shard: the window under test was not exercised"
    );
    eprintln!(
        "reshard while flowing: {acknowledged} records acknowledged, {misplaced} aggregates \
         landed elsewhere and were sent again, {dropped} dropped by the KCL check"
    );
}
