//! The Kinesis sink end to end against moto: the real binary, records sent with
//! `logferry loadgen` (forward protocol), the stream read back from every shard with boto3
//! GetRecords and deaggregated with the official aws-kinesis-agg library.

#[path = "support/kinesis.rs"]
mod kin;
mod support;

use std::time::Duration;

use kin::{create_stream, md5_hash_key, read_stream, unique_stream, Logferry};
use support::services::Moto;

fn sink(endpoint: &str, stream: &str, extra: &str) -> String {
    format!("stream = \"{stream}\"\nendpoint = \"{endpoint}\"\nflush = \"200ms\"\n{extra}")
}

/// Waits until the sink reports `n` user records delivered.
fn wait_delivered(lf: &Logferry, n: u64) {
    lf.wait_for(
        &format!("{n} records delivered"),
        Duration::from_secs(60),
        |lf| lf.metric("logferry_kinesis_user_records_sent_total") >= n as f64,
    );
}

#[test]
fn plain_records_land_on_the_shard_predicted_from_md5_of_their_key() {
    let moto = Moto::start();
    let stream = unique_stream("plain");
    create_stream(&moto.endpoint(), &stream, 4);
    let lf = Logferry::start(
        &sink(&moto.endpoint(), &stream, "partition_key = \"seq\""),
        &[],
    );
    lf.loadgen(0, 2000, 200);
    wait_delivered(&lf, 2000);
    let (code, log) = lf.stop();
    assert_eq!(code, 0, "{}", kin::tail(&log, 40));

    let contents = read_stream(&moto.endpoint(), &stream);
    let counts = contents.seq_counts();
    assert_eq!(counts.len(), 2000, "every record arrived");
    assert!(counts.values().all(|&n| n == 1), "no duplicates");
    let mut per_shard = std::collections::BTreeMap::<&str, usize>::new();
    for record in &contents.records {
        assert!(!record.aggregated);
        let seq = record.users[0].json()["seq"].as_u64().unwrap();
        assert_eq!(
            record.partition_key,
            seq.to_string(),
            "partition key is the seq field"
        );
        let shard = contents.shard(&record.shard_id);
        assert!(
            shard.contains(md5_hash_key(&record.partition_key)),
            "record {seq} read from {} but MD5({}) is outside its range",
            record.shard_id,
            record.partition_key
        );
        *per_shard.entry(&record.shard_id).or_default() += 1;
    }
    assert_eq!(
        per_shard.len(),
        4,
        "keys spread over every shard: {per_shard:?}"
    );
}

#[test]
fn aggregated_records_deaggregate_into_exactly_what_was_sent_each_in_its_shard() {
    let moto = Moto::start();
    let stream = unique_stream("agg");
    create_stream(&moto.endpoint(), &stream, 3);
    let lf = Logferry::start(
        &sink(
            &moto.endpoint(),
            &stream,
            "partition_key = \"seq\"\naggregation = true",
        ),
        &[],
    );
    lf.loadgen(0, 5000, 200);
    wait_delivered(&lf, 5000);
    let ratio = lf.metric("logferry_kinesis_aggregation_ratio");
    let (code, log) = lf.stop();
    assert_eq!(code, 0, "{}", kin::tail(&log, 40));
    assert!(ratio > 50.0, "records were aggregated: ratio {ratio}");

    let contents = read_stream(&moto.endpoint(), &stream);
    let counts = contents.seq_counts();
    assert_eq!(counts.len(), 5000);
    assert!(counts.values().all(|&n| n == 1), "no duplicates");
    assert!(contents.records.iter().any(|r| r.aggregated));
    for (shard_id, user) in contents.users() {
        let seq = user.json()["seq"].as_u64().unwrap();
        assert_eq!(
            user.partition_key,
            seq.to_string(),
            "user record keeps its own key"
        );
        assert!(
            contents
                .shard(shard_id)
                .contains(md5_hash_key(&user.partition_key)),
            "user record {seq} inside an aggregate read from {shard_id} belongs to another shard"
        );
    }
}
