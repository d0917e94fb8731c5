//! The Kinesis sink against a fault-injecting stand-in written here (tests/support/
//! fault_kinesis.rs): per-entry ProvisionedThroughputExceeded / InternalFailure, whole-request
//! 5xx and throttling, slow answers, timeouts, dropped connections, configuration errors.
//! Every record must be delivered exactly once as the stand-in counts it, and only failed
//! entries may be sent again.

use logferry_test_kit::fault_kinesis as fault;
use support::kinesis as kin;
mod support;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use bytes::Bytes;
use fault::{FaultKinesis, Faults, RequestFault};
use kin::Logferry;
use logferry::kinesis_record::kpl;
use logferry::kinesis_record::Record;

fn sink(endpoint: &str, extra: &str) -> String {
    format!(
        "stream = \"faulty\"\nendpoint = \"{endpoint}\"\nflush = \"100ms\"\n\
         http_request_timeout = \"1s\"\n{extra}"
    )
}

/// `seq` of every user record the stand-in accepted (aggregates split with our deaggregator).
fn accepted_seqs(kinesis: &FaultKinesis) -> BTreeMap<u64, u32> {
    kinesis.seen(|seen| {
        let mut seqs = BTreeMap::new();
        for (data, times) in &seen.accepted {
            let users = kpl::deaggregate(Record::new("k", Bytes::from(data.clone())))
                .expect("accepted data deaggregates");
            for user in users {
                let json: serde_json::Value = serde_json::from_slice(&user.data).unwrap();
                *seqs.entry(json["seq"].as_u64().unwrap()).or_default() += times;
            }
        }
        seqs
    })
}

fn wait_all_accepted(lf: &Logferry, kinesis: &FaultKinesis, n: u64) {
    lf.wait_for(
        &format!("{n} records accepted"),
        Duration::from_secs(90),
        |_| accepted_seqs(kinesis).len() as u64 >= n,
    );
}

fn assert_exactly_once(kinesis: &FaultKinesis, n: u64) {
    let seqs = accepted_seqs(kinesis);
    assert_eq!(seqs.len() as u64, n, "every record accepted");
    let dup: Vec<_> = seqs.iter().filter(|(_, &c)| c != 1).collect();
    assert!(dup.is_empty(), "records accepted more than once: {dup:?}");
    assert_eq!(
        kinesis.seen(|s| s.resent_after_success),
        0,
        "an entry was sent again after Kinesis had accepted it"
    );
}

#[test]
fn partial_failures_resend_only_the_failed_entries_with_backoff() {
    let kinesis = FaultKinesis::start(Faults {
        entry_failure_rate: 0.3,
        ..Faults::default()
    });
    let lf = Logferry::start(&sink(&kinesis.endpoint(), ""), &[]);
    lf.loadgen_no_ack(0, 3000, 200);
    wait_all_accepted(&lf, &kinesis, 3000);
    assert_exactly_once(&kinesis, 3000);
    let (received, failures, gaps) = kinesis.seen(|s| {
        (
            s.entries_received,
            s.entry_failures.clone(),
            s.retry_gaps.clone(),
        )
    });
    let failed: u64 = failures.values().sum();
    assert!(
        failures.len() == 2 && failed > 900,
        "both codes injected: {failures:?}"
    );
    assert_eq!(
        received,
        3000 + failed,
        "exactly the failed entries were sent again"
    );
    let mean = gaps.iter().sum::<Duration>() / gaps.len() as u32;
    assert!(
        mean >= Duration::from_millis(20),
        "retries wait a backoff (mean gap {mean:?})"
    );
    let metrics = lf.metrics();
    for code in ["ProvisionedThroughputExceededException", "InternalFailure"] {
        let n = kin::metric_value(
            &metrics,
            &format!(
                "logferry_kinesis_failed_entries_total{{component=\"kinesis.0\",code=\"{code}\"}}"
            ),
        );
        assert_eq!(n as u64, failures[code], "failed entries counted by code");
    }
    assert!(
        kin::metric_value(
            &metrics,
            "logferry_kinesis_retries_total{component=\"kinesis.0\",kind=\"entry\"}"
        ) >= failed as f64
    );
    let (code, log) = lf.stop();
    assert_eq!(code, 0, "{}", kin::tail(&log, 30));
}

#[test]
fn whole_request_faults_slow_answers_timeouts_and_dropped_connections() {
    let kinesis = FaultKinesis::start(Faults {
        entry_failure_rate: 0.1,
        request_cycle: vec![
            RequestFault::Ok,
            RequestFault::ServerError,
            RequestFault::Ok,
            RequestFault::Throttle,
            RequestFault::Slow(Duration::from_millis(300)),
            RequestFault::Drop,
            RequestFault::Ok,
            RequestFault::Timeout(Duration::from_millis(1500)),
        ],
        ..Faults::default()
    });
    let lf = Logferry::start(&sink(&kinesis.endpoint(), "max_in_flight = 2"), &[]);
    lf.loadgen_no_ack(0, 4000, 200);
    wait_all_accepted(&lf, &kinesis, 4000);
    assert_exactly_once(&kinesis, 4000);
    let metrics = lf.metrics();
    for code in [
        "InternalFailure",
        "ProvisionedThroughputExceededException",
        "timeout",
    ] {
        let n = kin::metric_value(
            &metrics,
            &format!(
                "logferry_kinesis_failed_requests_total{{component=\"kinesis.0\",code=\"{code}\"}}"
            ),
        );
        assert!(
            n >= 1.0,
            "failed requests with code {code} counted:\n{metrics}"
        );
    }
    assert!(
        kin::metric_value(
            &metrics,
            "logferry_kinesis_retries_total{component=\"kinesis.0\",kind=\"request\"}"
        ) > 0.0
    );
    let (code, log) = lf.stop();
    assert_eq!(code, 0, "{}", kin::tail(&log, 30));
}

#[test]
fn configuration_errors_surface_on_health_without_spinning_and_recover() {
    let kinesis = FaultKinesis::start(Faults {
        request_cycle: vec![RequestFault::AccessDenied],
        ..Faults::default()
    });
    let lf = Logferry::start(&sink(&kinesis.endpoint(), ""), &[]);
    lf.loadgen_no_ack(0, 100, 200);
    lf.wait_for("/health 503", Duration::from_secs(20), |lf| {
        lf.health().0 == 503
    });
    let (_, body) = lf.health();
    assert!(
        body.contains("faulty")
            && body.contains("kinesis:PutRecords")
            && body.contains("IAM policy"),
        "health names the stream and what to fix: {body}"
    );
    let log = lf.log();
    assert!(
        log.contains("AccessDeniedException") && log.contains("faulty"),
        "{}",
        kin::tail(&log, 20)
    );
    // Slow retries: a few calls over 4 seconds, not a hot loop.
    let before = kinesis.seen(|s| s.put_calls);
    std::thread::sleep(Duration::from_secs(4));
    let during = kinesis.seen(|s| s.put_calls) - before;
    assert!(
        during <= 5,
        "{during} PutRecords calls in 4 s while access is denied"
    );
    // The operator fixes the policy: everything goes through, health recovers.
    kinesis.set(Faults::default());
    let start = Instant::now();
    lf.wait_for(
        "all delivered after the fix",
        Duration::from_secs(90),
        |_| accepted_seqs(&kinesis).len() == 100,
    );
    lf.wait_for("/health 200", Duration::from_secs(10), |lf| {
        lf.health().0 == 200
    });
    assert_exactly_once(&kinesis, 100);
    assert!(start.elapsed() < Duration::from_secs(90));
    let (code, _) = lf.stop();
    assert_eq!(code, 0);
}

#[test]
fn describe_not_permitted_falls_back_to_1mib_and_too_large_records_are_dropped_alone() {
    let kinesis = FaultKinesis::start(Faults {
        deny_describe: true,
        ..Faults::default()
    });
    let lf = Logferry::start(&sink(&kinesis.endpoint(), "aggregation = true"), &[]);
    lf.loadgen(0, 50, 200);
    lf.loadgen(50, 3, 1_100_000);
    lf.loadgen(53, 50, 200);
    lf.wait_for("100 accepted", Duration::from_secs(30), |_| {
        accepted_seqs(&kinesis).len() == 100
    });
    lf.wait_for("too_large counted", Duration::from_secs(10), |lf| {
        lf.metric("logferry_dropped_records_total{component=\"kinesis.0\",kind=\"sink\",reason=\"too_large\"}") == 3.0
    });
    let seqs = accepted_seqs(&kinesis);
    assert!(
        (50..53).all(|s| !seqs.contains_key(&s)),
        "oversized records were not sent"
    );
    let log = lf.log();
    assert!(
        log.contains("not permitted to call kinesis:DescribeStreamSummary"),
        "{}",
        kin::tail(&log, 20)
    );
    assert!(
        log.contains("too_large") && log.contains("tag=loadgen"),
        "{}",
        kin::tail(&log, 20)
    );
    let (code, log) = lf.stop();
    assert_eq!(
        code,
        0,
        "dropped records do not block shutdown:\n{}",
        kin::tail(&log, 20)
    );
}

#[test]
fn retry_limit_drops_records_that_keep_failing() {
    let kinesis = FaultKinesis::start(Faults {
        entry_failure_rate: 1.0,
        ..Faults::default()
    });
    let lf = Logferry::start(&sink(&kinesis.endpoint(), "retry_limit = 2"), &[]);
    lf.loadgen_no_ack(0, 20, 200);
    lf.wait_for("20 dropped after retries", Duration::from_secs(30), |lf| {
        lf.metric("logferry_dropped_records_total{component=\"kinesis.0\",kind=\"sink\",reason=\"retry_limit\"}") == 20.0
    });
    assert_eq!(
        kinesis.seen(|s| s.entries_received),
        60,
        "1 try + 2 retries each"
    );
    let (code, _) = lf.stop();
    assert_eq!(code, 0);
}

#[test]
fn half_the_entries_throttled_for_a_period_under_load_lose_and_duplicate_nothing() {
    // 50% of entries answered ProvisionedThroughputExceededException for 4 s while the
    // forward client keeps sending and waits for its acks; then the stream has room again.
    let kinesis = FaultKinesis::start(Faults {
        entry_failure_rate: 0.5,
        ..Faults::default()
    });
    // The default request timeout (10 s): a timed-out request that Kinesis did accept is
    // sent again by design, which would be a duplicate this test is not about.
    let options = format!(
        "stream = \"faulty\"\nendpoint = \"{}\"\nflush = \"100ms\"\n",
        kinesis.endpoint()
    );
    let lf = Logferry::start(&options, &[]);
    let n = 20_000u64;
    let forward = lf.forward;
    let started = Instant::now();
    // 8 forward clients at once (each waits for the ack of a message before the next), on
    // disjoint seq ranges.
    let clients: Vec<_> = (0..8u64)
        .map(|i| {
            std::thread::spawn(move || kin::loadgen(forward, i * n / 8, n / 8, 200, 250, true))
        })
        .collect();
    std::thread::sleep(Duration::from_secs(4));
    let throttled_period = started.elapsed();
    let accepted_while_throttled = kinesis.seen(|s| s.accepted.len());
    kinesis.set(Faults::default());
    for client in clients {
        client.join().expect("every message acknowledged");
    }
    let took = started.elapsed();
    wait_all_accepted(&lf, &kinesis, n);
    let seqs = accepted_seqs(&kinesis);
    let delivered = seqs.len() as u64;
    let duplicates: u64 = seqs.values().map(|&c| u64::from(c.saturating_sub(1))).sum();
    let lost = (0..n).filter(|s| !seqs.contains_key(s)).count();
    let (received, throttled, other_failures, resent_after_success) = kinesis.seen(|s| {
        (
            s.entries_received,
            s.entry_failures
                .get("ProvisionedThroughputExceededException")
                .copied()
                .unwrap_or(0),
            s.entry_failures
                .iter()
                .filter(|(code, _)| code.as_str() != "ProvisionedThroughputExceededException")
                .map(|(_, n)| n)
                .sum::<u64>(),
            s.resent_after_success,
        )
    });
    crate::support::figures::report(format!(
        "50% throttled: sent {n}, acknowledged {n}, delivered {delivered}, lost {lost}, \
         duplicates {duplicates}; throttled entries {throttled} (other entry failures \
         {other_failures}), entries received {received}, resent after success \
         {resent_after_success}; {accepted_while_throttled} accepted during the {:.1?} of \
         throttling, all acknowledged after {took:.1?}",
        throttled_period
    ));
    assert_eq!(lost, 0, "records lost");
    assert_eq!(duplicates, 0, "records duplicated by retries");
    assert_eq!(resent_after_success, 0, "an accepted entry was sent again");
    assert!(
        throttled >= accepted_while_throttled as u64 / 2,
        "half the entries were throttled while it lasted: {throttled}"
    );
    assert!(accepted_while_throttled > 0 && (accepted_while_throttled as u64) < n);
    assert_eq!(
        received,
        n + throttled + other_failures,
        "exactly the throttled entries were sent again"
    );
    let (code, log) = lf.stop();
    assert_eq!(code, 0, "{}", kin::tail(&log, 30));
}

#[test]
fn a_shard_kinesis_throttles_is_held_to_its_write_limits_from_then_on() {
    // `shard_rate_limit` is `auto` by default: nothing is held until Kinesis throttles.
    let kinesis = FaultKinesis::start(Faults {
        entry_failure_rate: 0.5,
        ..Faults::default()
    });
    let lf = Logferry::start(
        &sink(&kinesis.endpoint(), "shard_records_per_second = 200"),
        &[],
    );
    lf.loadgen_no_ack(0, 200, 100);
    lf.wait_for("an entry throttled", Duration::from_secs(30), |_| {
        kinesis.throttled_entries() > 0
    });
    kinesis.set(Faults::default());
    // From an empty bucket at 200 records/s, 1000 more records are held about 5 s.
    lf.loadgen_no_ack(200, 1000, 100);
    wait_all_accepted(&lf, &kinesis, 1200);
    let held = lf.metric("logferry_kinesis_rate_limited_entries_total");
    let held_for = lf.metric("logferry_kinesis_rate_limited_seconds_total");
    let (code, log) = lf.stop();
    assert_eq!(code, 0, "{}", kin::tail(&log, 30));
    assert!(
        held >= 500.0,
        "{held} entries held once the shard was throttled"
    );
    assert!(held_for >= 2.0, "held for {held_for} s");
    assert!(
        log.contains("holding records to its write limits from now on"),
        "{}",
        kin::tail(&log, 30)
    );
    assert_exactly_once(&kinesis, 1200);
}
