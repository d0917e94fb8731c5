//! Resharding with aggregation on, against kinesalite. moto cannot be used for this: after
//! SplitShard it keeps writing records to the closed parent shard (its PutRecords routing does
//! not skip closed shards), so a producer can neither observe nor be checked against the new
//! shards. kinesalite routes to open shards only, as Kinesis does.

#[path = "support/kinesis.rs"]
mod kin;
mod support;

use std::time::Duration;

use kin::{create_stream, md5_hash_key, read_stream, unique_stream, Logferry};
use support::services::Kinesalite;

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
    // The first records after the split land on child shards: the sink notices and lists the
    // shards again.
    lf.loadgen(2000, 500, 200);
    wait_delivered(&lf, 2500);
    lf.wait_for("shard map refreshed", Duration::from_secs(20), |lf| {
        lf.metric("logferry_kinesis_shard_map_refreshes_total") >= 1.0
    });
    lf.loadgen(2500, 3000, 200);
    wait_delivered(&lf, 5500);
    let (code, log) = lf.stop();
    assert_eq!(code, 0, "{}", kin::tail(&log, 30));

    let contents = read_stream(&kinesalite.endpoint(), &stream);
    assert_eq!(contents.shards.iter().filter(|s| !s.closed).count(), 4);
    let counts = contents.seq_counts();
    assert_eq!(counts.len(), 5500, "no loss across the resharding");
    assert!(counts.values().all(|&n| n == 1), "no duplicates");
    let mut checked = 0;
    for record in &contents.records {
        let after_refresh = record
            .users
            .iter()
            .all(|u| u.json()["seq"].as_u64().unwrap() >= 2500);
        let before_split = record
            .users
            .iter()
            .all(|u| u.json()["seq"].as_u64().unwrap() < 2000);
        if !(after_refresh || before_split) {
            continue;
        }
        let shard = contents.shard(&record.shard_id);
        for user in &record.users {
            assert!(
                shard.contains(md5_hash_key(&user.partition_key)),
                "aggregate read from {} holds key {} of another shard",
                record.shard_id,
                user.partition_key
            );
        }
        checked += usize::from(record.aggregated);
    }
    assert!(checked > 10, "{checked} aggregates checked");
}
