//! The Firehose sink end to end against moto: the real binary, records sent with
//! `logferry loadgen`, read back from the S3 bucket moto's Firehose stream delivers to (one
//! object per PutRecordBatch call).

use support::kinesis as kin;
mod support;

use std::collections::BTreeMap;
use std::io::Read;
use std::time::Duration;

use kin::Logferry;
use logferry_test_kit::fault_proxy::{self, FaultProxy};
use logferry_test_kit::firehose as fh;
use logferry_test_kit::stand_ins::Moto;

const OUT: &str = "logferry_records_out_total{component=\"kinesis_firehose.0\"";

/// The sink's options: the stream, moto, and `extra` (with a `flush`, else 200ms).
fn start(moto: &Moto, stream: &str, extra: &str) -> Logferry {
    let flush = if extra.contains("flush") {
        ""
    } else {
        "flush = \"200ms\"\n"
    };
    Logferry::start_typed(
        "kinesis_firehose",
        &format!(
            "delivery_stream = \"{stream}\"\nendpoint = \"{}\"\n{flush}{extra}",
            moto.endpoint()
        ),
        &[],
    )
}

fn wait_delivered(lf: &Logferry, n: u64) {
    lf.wait_for(
        &format!("{n} records delivered"),
        Duration::from_secs(90),
        |lf| lf.metric(OUT) >= n as f64,
    );
}

fn stop_clean(lf: Logferry) -> String {
    let (code, log) = lf.stop();
    assert_eq!(code, 0, "{}", kin::tail(&log, 40));
    log
}

/// The JSON lines of every object (gunzipped when `gzip`), per object.
fn lines(objects: &[fh::Delivered], gzip: bool) -> Vec<Vec<serde_json::Value>> {
    objects
        .iter()
        .map(|o| {
            let mut data = o.data();
            if gzip {
                let mut out = Vec::new();
                flate2::read::MultiGzDecoder::new(&data[..])
                    .read_to_end(&mut out)
                    .expect("gzip members");
                data = out;
            }
            let text = String::from_utf8(data).expect("UTF-8");
            assert!(text.ends_with('\n'), "records end with a newline");
            text.lines()
                .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
                .collect()
        })
        .collect()
}

/// Every seq once, and in order within each call.
fn assert_each_once_in_order(per_object: &[Vec<serde_json::Value>], n: u64) {
    let mut counts = BTreeMap::<u64, usize>::new();
    for records in per_object {
        let seqs: Vec<u64> = records.iter().map(|r| r["seq"].as_u64().unwrap()).collect();
        assert!(seqs.windows(2).all(|w| w[0] < w[1]), "in order: {seqs:?}");
        for seq in seqs {
            *counts.entry(seq).or_default() += 1;
        }
    }
    assert_eq!(
        counts.keys().copied().collect::<Vec<_>>(),
        (0..n).collect::<Vec<_>>()
    );
    assert!(counts.values().all(|&c| c == 1), "no duplicates");
}

/// Every PutRecordBatch call, as the sink's debug log reports it: (records, bytes).
fn calls(log: &str) -> Vec<(usize, usize)> {
    let field = |line: &str, name: &str| -> usize {
        let at = line.find(&format!(" {name}=")).expect(name) + name.len() + 2;
        line[at..]
            .split(|c: char| !c.is_ascii_digit())
            .next()
            .and_then(|n| n.parse().ok())
            .expect("a number")
    };
    log.lines()
        .filter(|l| l.contains("PutRecordBatch") && l.contains("records="))
        .map(|l| (field(l, "records"), field(l, "bytes")))
        .collect()
}

#[test]
fn records_arrive_once_as_json_lines_within_500_records_per_call() {
    let moto = Moto::start();
    fh::create_stream(&moto.endpoint(), "plain", "plain-bucket");
    let lf = start(
        &moto,
        "plain",
        "time_key = \"ts\"\ntime_key_format = \"%Y-%m-%dT%H:%M:%S\"\ndata_keys = \"seq,log\"\nflush = \"3s\"",
    );
    lf.loadgen_no_ack(0, 1200, 100);
    wait_delivered(&lf, 1200);
    let log = stop_clean(lf);
    let calls = calls(&log);
    assert_eq!(
        calls.iter().map(|c| c.0).collect::<Vec<_>>(),
        vec![500, 500, 200],
        "500 records per call at most"
    );
    let per_object = lines(&fh::read_bucket(&moto.endpoint(), "plain-bucket"), false);
    assert_eq!(per_object.len(), 3, "one object per call");
    assert_each_once_in_order(&per_object, 1200);
    let first = &per_object[0][0];
    assert_eq!(
        first.as_object().unwrap().keys().collect::<Vec<_>>(),
        vec!["seq", "log", "ts"],
        "data_keys, then time_key: {first}"
    );
    assert_eq!(
        first["ts"].as_str().unwrap().len(),
        "2026-01-01T00:00:00".len()
    );
}

#[test]
fn simple_aggregation_joins_records_up_to_1000_kib_and_4_mib_per_call() {
    let moto = Moto::start();
    fh::create_stream(&moto.endpoint(), "agg", "agg-bucket");
    let lf = start(&moto, "agg", "simple_aggregation = true\nflush = \"3s\"");
    // 12,000 records of ~1 KiB: ~12 MiB, so ~12 Firehose records of up to 1,000 KiB, four
    // of which fill a 4 MiB call.
    lf.loadgen_no_ack(0, 12_000, 1_000);
    wait_delivered(&lf, 12_000);
    let log = stop_clean(lf);
    let calls = calls(&log);
    assert!(
        calls.iter().all(|&(n, b)| n <= 4 && b <= 4 * 1024 * 1024),
        "at most four 1,000 KiB records per 4 MiB call: {calls:?}"
    );
    let records: usize = calls.iter().map(|c| c.0).sum();
    let bytes: usize = calls.iter().map(|c| c.1).sum();
    assert!(
        records <= bytes / (900 * 1024) + calls.len(),
        "records are joined up to the 1,000 KiB limit: {records} records, {bytes} bytes ({calls:?})"
    );
    assert!(
        calls.iter().any(|&(n, b)| n == 4 && b > 4_000_000),
        "full calls: {calls:?}"
    );
    let objects = fh::read_bucket(&moto.endpoint(), "agg-bucket");
    assert_eq!(objects.len(), calls.len());
    assert_each_once_in_order(&lines(&objects, false), 12_000);
}

#[test]
fn simple_aggregation_with_gzip_reads_back_as_one_gzip_stream_per_record() {
    let moto = Moto::start();
    fh::create_stream(&moto.endpoint(), "aggz", "aggz-bucket");
    let lf = start(
        &moto,
        "aggz",
        "simple_aggregation = true\ncompression = \"gzip\"\nflush = \"1s\"",
    );
    lf.loadgen_no_ack(0, 3_000, 500);
    wait_delivered(&lf, 3_000);
    let log = stop_clean(lf);
    let records: usize = calls(&log).iter().map(|c| c.0).sum();
    assert!(records < 30, "joined: {records} Firehose records for 3,000");
    let objects = fh::read_bucket(&moto.endpoint(), "aggz-bucket");
    assert_each_once_in_order(&lines(&objects, true), 3_000);
}

#[test]
fn a_missing_stream_is_reported_on_health_and_delivery_resumes_once_it_exists() {
    let moto = Moto::start();
    let lf = start(&moto, "late", "");
    lf.loadgen_no_ack(0, 100, 100);
    lf.wait_for(
        "/health 503 naming the stream",
        Duration::from_secs(30),
        |lf| {
            let (code, body) = lf.health();
            code == 503 && body.contains("`late`") && body.contains("does not exist")
        },
    );
    assert_eq!(lf.metric(OUT), 0.0);
    fh::create_stream(&moto.endpoint(), "late", "late-bucket");
    wait_delivered(&lf, 100);
    lf.wait_for("/health 200 again", Duration::from_secs(10), |lf| {
        lf.health().0 == 200
    });
    stop_clean(lf);
    let per_object = lines(&fh::read_bucket(&moto.endpoint(), "late-bucket"), false);
    assert_each_once_in_order(&per_object, 100);
}

/// moto never refuses single records: a proxy in front of it refuses every 7th new record of
/// PutRecordBatch with ServiceUnavailableException (Firehose's throttling) and forwards the
/// rest. Exactly the refused records are sent again, once each, and every record arrives once.
#[test]
fn exactly_the_refused_records_are_sent_again() {
    let moto = Moto::start();
    fh::create_stream(&moto.endpoint(), "partial", "partial-bucket");
    let proxy = FaultProxy::start(
        moto.addr(),
        fault_proxy::Faults {
            refuse_every_kth_record: 7,
            ..Default::default()
        },
    );
    let lf = Logferry::start_typed(
        "kinesis_firehose",
        &format!(
            "delivery_stream = \"partial\"\nendpoint = \"{}\"\nflush = \"200ms\"",
            proxy.endpoint()
        ),
        &[],
    );
    lf.loadgen(0, 2000, 100);
    wait_delivered(&lf, 2000);
    let throttled = logferry_test_kit::metrics::first_containing(
        &lf.metrics(),
        &[
            "logferry_retries_total",
            "kinesis_firehose.0",
            "reason=\"throttled\"",
        ],
    )
    .unwrap_or(0.0);
    stop_clean(lf);
    let (refused, received) =
        proxy.seen(|s| (s.records_refused.clone(), s.records_received.clone()));
    assert_eq!(refused.len(), 2000 / 7, "every 7th record refused once");
    assert_eq!(
        throttled as usize,
        refused.len(),
        "each counted as a throttled retry"
    );
    for (data, times) in &received {
        let expected = if refused.contains(data) { 2 } else { 1 };
        assert_eq!(
            *times,
            expected,
            "received {times} times: {}",
            String::from_utf8_lossy(data)
        );
    }
    assert_eq!(received.len(), 2000);
    let per_object = lines(&fh::read_bucket(&moto.endpoint(), "partial-bucket"), false);
    let mut seqs: Vec<u64> = per_object
        .iter()
        .flatten()
        .map(|r| r["seq"].as_u64().unwrap())
        .collect();
    seqs.sort_unstable();
    assert_eq!(seqs, (0..2000).collect::<Vec<u64>>(), "every record once");
}
