//! The Kinesis sink end to end against moto: the real binary, records sent with
//! `logferry loadgen` (forward protocol), the stream read back from every shard with boto3
//! GetRecords and deaggregated with the official aws-kinesis-agg library.

use support::kinesis as kin;
mod support;

use std::time::Duration;

use kin::{create_stream, md5_hash_key, read_stream, unique_stream, Logferry};
use logferry_test_kit::stand_ins::Moto;

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

#[test]
fn batches_that_would_break_500_entries_or_5_mib_are_split_and_moto_accepts_them_all() {
    let moto = Moto::start();
    let stream = unique_stream("limits");
    create_stream(&moto.endpoint(), &stream, 2);
    // A long flush so that everything sent at once waits in one batcher.
    let lf = Logferry::start(
        &format!(
            "stream = \"{stream}\"\nendpoint = \"{}\"\nflush = \"3s\"\nmax_in_flight = 1",
            moto.endpoint()
        ),
        &[],
    );
    kin::loadgen(lf.forward, 0, 1200, 200, 1200, true);
    kin::loadgen(lf.forward, 1200, 14, 900_000, 14, true);
    wait_delivered(&lf, 1214);
    let metrics = lf.metrics();
    let calls = kin::metric_value(&metrics, "logferry_kinesis_put_records_requests_total");
    let failed = kin::metric_value(&metrics, "logferry_kinesis_failed_requests_total");
    let (code, log) = lf.stop();
    assert_eq!(code, 0, "{}", kin::tail(&log, 30));
    assert_eq!(
        failed,
        0.0,
        "moto refused no request:\n{}",
        kin::tail(&log, 30)
    );
    // 1200 small records need 3 calls (500 entries each at most); 14 records of ~900 KB need
    // at least 3 calls (5 MiB each at most).
    assert!(calls >= 6.0, "{calls} PutRecords calls");
    let counts = read_stream(&moto.endpoint(), &stream).seq_counts();
    assert_eq!(counts.len(), 1214);
    assert!(counts.values().all(|&n| n == 1));
}

/// The start of a shard's range plus a little: an explicit hash key inside it (moto answers
/// HTTP 500 for one equal to a shard's EndingHashKey, so stay clear of the end).
fn inside(shard: &kin::ShardInfo, offset: u128) -> String {
    (shard.start.parse::<u128>().unwrap() + offset).to_string()
}

#[test]
fn explicit_hash_keys_route_records_plain_and_aggregated() {
    let moto = Moto::start();
    for aggregation in [false, true] {
        let stream = unique_stream("ehk");
        create_stream(&moto.endpoint(), &stream, 4);
        let shards: Vec<kin::ShardInfo> =
            serde_json::from_slice(&kin::tool(&moto.endpoint(), &["shards", &stream])).unwrap();
        let lines: Vec<String> = (0..400u64)
            .map(|seq| {
                let shard = &shards[(seq % 4) as usize];
                let mut record =
                    serde_json::json!({"seq": seq, "log": "routed by explicit hash key"});
                // One record in ten has no explicit hash key: routed by MD5(partition key).
                if seq % 10 != 9 {
                    record["ehk"] = inside(shard, u128::from(seq) * 7919).into();
                }
                record.to_string()
            })
            .collect();
        kin::run_stdin(
            &format!(
                "stream = \"{stream}\"\nendpoint = \"{}\"\npartition_key = \"seq\"\n\
                 explicit_hash_key = \"ehk\"\naggregation = {aggregation}",
                moto.endpoint()
            ),
            &lines,
            &[],
        );
        let contents = read_stream(&moto.endpoint(), &stream);
        assert_eq!(contents.seq_counts().len(), 400);
        assert_eq!(contents.records.iter().any(|r| r.aggregated), aggregation);
        for (shard_id, user) in contents.users() {
            let json = user.json();
            let shard = contents.shard(shard_id);
            let hash = match json["ehk"].as_str() {
                Some(ehk) => {
                    if aggregation {
                        assert_eq!(
                            user.explicit_hash_key.as_deref(),
                            Some(ehk),
                            "key table keeps it"
                        );
                    }
                    ehk.parse().unwrap()
                }
                None => md5_hash_key(&user.partition_key),
            };
            assert!(shard.contains(hash), "{json} read from {shard_id}");
        }
    }
}

/// Runs a stdin pipeline with `options` on a fresh stream and returns the user records.
fn encoded(moto: &Moto, options: &str, lines: &[serde_json::Value]) -> Vec<kin::UserRecord> {
    let stream = unique_stream("enc");
    create_stream(&moto.endpoint(), &stream, 1);
    let lines: Vec<String> = lines.iter().map(|l| l.to_string()).collect();
    kin::run_stdin(
        &format!(
            "stream = \"{stream}\"\nendpoint = \"{}\"\n{options}",
            moto.endpoint()
        ),
        &lines,
        &[],
    );
    let contents = read_stream(&moto.endpoint(), &stream);
    let mut users: Vec<kin::UserRecord> = contents
        .users()
        .into_iter()
        .map(|(_, u)| u.clone())
        .collect();
    users.sort_by_key(|u| u.data());
    users
}

fn decompress(kind: &str, data: &[u8]) -> Vec<u8> {
    use std::io::Read;
    let mut out = Vec::new();
    match kind {
        "zlib" => flate2::read::ZlibDecoder::new(data).read_to_end(&mut out),
        _ => flate2::read::GzDecoder::new(data).read_to_end(&mut out),
    }
    .expect("decompresses");
    out
}

#[test]
fn encoding_options_data_keys_log_key_newline_time_key_replace_dots_and_compression() {
    let moto = Moto::start();
    let record = serde_json::json!({
        "seq": 1, "log": "hello", "a.b": 2,
        "kubernetes": {"pod.name": "web-1", "labels": {"app.kubernetes.io/name": "web"}}
    });

    let users = encoded(
        &moto,
        "data_keys = \"seq, log\"\nappend_newline = true\ntime_key = \"ts\"\n\
         time_key_format = \"%Y-%m-%dT%H:%M:%S.%LZ\"",
        std::slice::from_ref(&record),
    );
    let text = String::from_utf8(users[0].data()).unwrap();
    assert!(
        text.starts_with("{\"seq\":1,\"log\":\"hello\",\"ts\":\"20"),
        "{text}"
    );
    assert!(text.ends_with("Z\"}\n"), "{text}");
    let ts = &text[text.find("\"ts\":\"").unwrap() + 6..text.len() - 3];
    assert_eq!(
        ts.len(),
        "2024-05-14T09:30:01.123".len() + 1,
        "ms, zero-padded: {ts}"
    );

    let users = encoded(
        &moto,
        "time_key = \"ts\"\ntime_key_format = \"%s.%f\"",
        std::slice::from_ref(&record),
    );
    let ts = users[0].json()["ts"].as_str().unwrap().to_string();
    let (_, micros) = ts.split_once('.').unwrap();
    assert_eq!(micros.len(), 6, "microseconds, zero-padded: {ts}");

    let users = encoded(&moto, "log_key = \"log\"", std::slice::from_ref(&record));
    assert_eq!(users[0].data(), b"hello");

    let users = encoded(&moto, "replace_dots = \"_\"", std::slice::from_ref(&record));
    let json = users[0].json();
    assert_eq!(json["a_b"], 2);
    assert_eq!(json["kubernetes"]["pod_name"], "web-1");
    assert_eq!(
        json["kubernetes"]["labels"]["app_kubernetes_io/name"],
        "web"
    );

    for kind in ["zlib", "gzip"] {
        let users = encoded(
            &moto,
            &format!("compression = \"{kind}\"\nappend_newline = true\naggregation = true"),
            &[
                record.clone(),
                serde_json::json!({"seq": 2, "log": "second"}),
            ],
        );
        assert_eq!(users.len(), 2, "both records, each compressed on its own");
        let mut texts: Vec<String> = users
            .iter()
            .map(|u| String::from_utf8(decompress(kind, &u.data())).unwrap())
            .collect();
        texts.sort();
        assert!(texts.iter().all(|t| t.ends_with("}\n")), "{texts:?}");
        let first: serde_json::Value = serde_json::from_str(texts[0].trim_end()).unwrap();
        assert_eq!(first, record, "{kind} decompresses back to the record");
    }
}

#[test]
fn nested_partition_keys_and_random_keys_for_missing_ones() {
    let moto = Moto::start();
    let long = "p".repeat(300);
    let users = encoded(
        &moto,
        "partition_key = \"kubernetes->pod_name\"",
        &[
            serde_json::json!({"seq": 1, "kubernetes": {"pod_name": "web-1"}}),
            serde_json::json!({"seq": 2, "kubernetes": {"pod_name": 42}}),
            serde_json::json!({"seq": 3, "kubernetes": {"pod_name": long}}),
            serde_json::json!({"seq": 4, "kubernetes": {}}),
            serde_json::json!({"seq": 5, "kubernetes": {"pod_name": ""}}),
        ],
    );
    let by_seq: std::collections::BTreeMap<u64, String> = users
        .iter()
        .map(|u| (u.json()["seq"].as_u64().unwrap(), u.partition_key.clone()))
        .collect();
    assert_eq!(by_seq[&1], "web-1");
    assert_eq!(by_seq[&2], "42", "stringified");
    assert_eq!(by_seq[&3], "p".repeat(256), "truncated to 256 characters");
    for seq in [4, 5] {
        let key = &by_seq[&seq];
        assert!(
            key.len() == 16 && key.chars().all(|c| c.is_ascii_hexdigit()),
            "missing or empty key -> random key, got {key:?}"
        );
    }
    assert_ne!(by_seq[&4], by_seq[&5]);
}

#[test]
fn aggregates_stay_within_aggregation_max_size() {
    let moto = Moto::start();
    let stream = unique_stream("aggmax");
    create_stream(&moto.endpoint(), &stream, 2);
    let lf = Logferry::start(
        &sink(
            &moto.endpoint(),
            &stream,
            "partition_key = \"seq\"\naggregation = true\naggregation_max_size = \"16KiB\"",
        ),
        &[],
    );
    lf.loadgen(0, 3000, 200);
    wait_delivered(&lf, 3000);
    let (code, log) = lf.stop();
    assert_eq!(code, 0, "{}", kin::tail(&log, 30));
    let contents = read_stream(&moto.endpoint(), &stream);
    assert_eq!(contents.seq_counts().len(), 3000);
    let mut biggest = 0;
    for record in &contents.records {
        use base64::Engine;
        let data = base64::engine::general_purpose::STANDARD
            .decode(&record.data_b64)
            .unwrap();
        let size = data.len() + record.partition_key.len();
        assert!(size <= 16 * 1024, "aggregate of {size} bytes");
        biggest = biggest.max(size);
    }
    assert!(
        biggest > 15 * 1024,
        "aggregates are filled up to the limit: {biggest}"
    );
}

/// A client that waits for each chunk's ack before sending the next (Fluent Bit's out_forward
/// with Require_ack_response, loadgen here) is not held back by aggregation: its records go out
/// once nothing more is queued, not after `flush`. With `flush = "60s"` four chunks would take
/// four minutes if each waited for the timer.
#[test]
fn acked_chunks_are_not_held_for_the_flush_interval_when_aggregating() {
    let moto = Moto::start();
    let stream = unique_stream("linger");
    create_stream(&moto.endpoint(), &stream, 2);
    let lf = Logferry::start(
        &format!(
            "stream = \"{stream}\"\nendpoint = \"{}\"\nflush = \"60s\"\naggregation = true",
            moto.endpoint()
        ),
        &[],
    );
    let started = std::time::Instant::now();
    lf.loadgen(0, 2000, 200);
    let waited = started.elapsed();
    assert!(
        waited < Duration::from_secs(50),
        "four acked chunks took {waited:?}: they waited for the 60 s flush"
    );
    wait_delivered(&lf, 2000);
    let ratio = lf.metric("logferry_kinesis_aggregation_ratio");
    let (code, log) = lf.stop();
    assert_eq!(code, 0, "{}", kin::tail(&log, 40));
    assert!(ratio > 10.0, "records were still aggregated: ratio {ratio}");
    let counts = read_stream(&moto.endpoint(), &stream).seq_counts();
    assert_eq!(counts.len(), 2000);
    assert!(counts.values().all(|&n| n == 1), "no duplicates");
}

#[test]
fn a_tail_backlog_beyond_read_ahead_limit_is_not_held_for_the_flush_interval_when_aggregating() {
    // A tail source stops reading at read_ahead_limit until the sink delivers; open aggregates
    // waiting for a 20 s flush would then stall it (256 KiB per flush). Past half its budget
    // the source tells the sink it waits, and the sink sends what it holds.
    let moto = Moto::start();
    let stream = unique_stream("tailagg");
    create_stream(&moto.endpoint(), &stream, 2);
    let logs = tempfile::tempdir().unwrap();
    let lines = 12_000u64;
    let mut text = String::new();
    for seq in 0..lines {
        text.push_str(&format!(
            "{{\"seq\":{seq},\"msg\":\"{}\"}}\n",
            "m".repeat(220)
        ));
    }
    std::fs::write(logs.path().join("app.log"), &text).unwrap();
    let lf = Logferry::start(
        &format!(
            "stream = \"{stream}\"\nendpoint = \"{}\"\nflush = \"20s\"\naggregation = true\n\n\
             [[sources]]\ntype = \"tail\"\npath = \"{}/*.log\"\nparser = \"json\"\n\
             read_from_head = true\npoll_interval = \"20ms\"\nbuffer_max_size = \"64KiB\"\n\
             read_ahead_limit = \"256KiB\"\n",
            moto.endpoint(),
            logs.path().display()
        ),
        &[],
    );
    // 3 MB of lines, 12 read-ahead windows: 20 s each if held for the flush.
    let most = lines * 8 / 10;
    lf.wait_for(
        &format!("{most} of {lines} lines delivered before the first flush"),
        Duration::from_secs(15),
        |lf| lf.metric("logferry_kinesis_user_records_sent_total") >= most as f64,
    );
    // The end of the file, read while nothing waits, goes out with the flush.
    lf.wait_for(
        &format!("all {lines} lines delivered"),
        Duration::from_secs(40),
        |lf| lf.metric("logferry_kinesis_user_records_sent_total") >= lines as f64,
    );
    let ratio = lf.metric("logferry_kinesis_aggregation_ratio");
    let (code, log) = lf.stop();
    assert_eq!(code, 0, "{}", kin::tail(&log, 40));
    assert!(ratio > 10.0, "records were still aggregated: ratio {ratio}");
    let counts = read_stream(&moto.endpoint(), &stream).seq_counts();
    assert_eq!(counts.len() as u64, lines);
    assert!(counts.values().all(|&n| n == 1), "no duplicates");
}
