//! Operations, end to end on the real binary: the Grafana dashboard (infra/grafana/logferry.json)
//! only queries metrics that logferry exports, the operational metrics move under load (request
//! latency, retries by reason against the fault-injecting Kinesis stand-in, credential refreshes,
//! auth failures, buffer gauges in memory and on disk), and `/health` reports a buffer over
//! `health_buffer_threshold` and clears once it drains.

use logferry_test_kit::fault_kinesis as fault;
mod support;

use std::collections::BTreeSet;
use std::io::Read;
use std::time::Duration;

use fault::{FaultKinesis, Faults, RequestFault, AWS_ENV};
use logferry_test_kit::logferry::{loadgen, read_jsonl, stalled_fifo, wait_for_lines, Logferry};

/// Every `logferry_*` metric name the dashboard's queries use.
fn dashboard_metric_names() -> BTreeSet<String> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/infra/grafana/logferry.json");
    let model: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).expect("read the dashboard"))
            .expect("the dashboard is JSON");
    let mut exprs = Vec::new();
    collect_exprs(&model, &mut exprs);
    assert!(exprs.len() > 10, "the dashboard has queries: {exprs:?}");
    let mut names = BTreeSet::new();
    for expr in exprs {
        let mut rest = expr.as_str();
        while let Some(at) = rest.find("logferry_") {
            let tail = &rest[at..];
            let end = tail
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(tail.len());
            names.insert(tail[..end].to_string());
            rest = &tail[end..];
        }
    }
    names
}

/// Every `expr` of every target and variable query, wherever it sits in the model.
fn collect_exprs(value: &serde_json::Value, out: &mut Vec<String>) {
    match value {
        serde_json::Value::Object(map) => {
            for (key, v) in map {
                match (key.as_str(), v) {
                    ("expr" | "definition", serde_json::Value::String(s)) => out.push(s.clone()),
                    _ => collect_exprs(v, out),
                }
            }
        }
        serde_json::Value::Array(items) => items.iter().for_each(|v| collect_exprs(v, out)),
        _ => {}
    }
}

/// The family a sample name belongs to, as the `# TYPE` line names it.
fn family(name: &str) -> &str {
    for suffix in ["_total", "_bucket", "_count", "_sum"] {
        if let Some(base) = name.strip_suffix(suffix) {
            return base;
        }
    }
    name
}

/// The sum of every sample of `name` whose labels contain all of `labels`.
fn sample_sum(metrics: &str, name: &str, labels: &[&str]) -> f64 {
    metrics
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
        })
        .filter(|l| labels.iter().all(|want| l.contains(want)))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[test]
fn the_dashboard_queries_only_exported_metrics_and_they_move_under_load() {
    // First a call refused for lack of permission, then entries throttled or failed now and
    // then.
    let kinesis = FaultKinesis::start(Faults {
        request_cycle: vec![
            RequestFault::AccessDenied,
            RequestFault::AccessDenied,
            RequestFault::Ok,
        ],
        ..Faults::default()
    });
    let config = format!(
        r#"
[service]
http_listen = "{{http}}"
grace_period = "20s"

[[sources]]
type = "forward"
listen = "{{forward}}"

[[sinks]]
type = "kinesis"
name = "to_kinesis"
match = "loadgen"
stream = "ops"
endpoint = "{}"
flush = "100ms"
http_request_timeout = "2s"

[[sinks]]
type = "file"
name = "to_file"
match = "loadgen"
path = "{{dir}}/out.jsonl"
buffer = "disk"
buffer_path = "{{dir}}/buffer"
"#,
        kinesis.endpoint()
    );
    let lf = Logferry::start_with_env(&config, AWS_ENV);
    loadgen(
        &lf.forward.to_string(),
        &["--records", "100", "--size", "200", "--start-seq", "0"],
    );
    // /health and its gauges report the sink while calls are refused (1 to 3 s: slow retries).
    lf.wait_until(
        "the refused call on /health",
        Duration::from_secs(30),
        || {
            let (code, body) = lf.health();
            code == 503
                && body.contains("AccessDenied")
                && lf
                    .metrics()
                    .contains("logferry_unhealthy{component=\"to_kinesis\"} 1")
        },
    );
    lf.wait_until("the refused calls", Duration::from_secs(30), || {
        kinesis.seen(|s| s.put_calls) >= 2
    });
    kinesis.set(Faults {
        entry_failure_rate: 0.3,
        ..Faults::default()
    });
    let n = 3000u64;
    loadgen(
        &lf.forward.to_string(),
        &[
            "--records",
            &(n - 100).to_string(),
            "--size",
            "200",
            "--batch",
            "100",
            "--start-seq",
            "100",
        ],
    );
    lf.wait_until(
        "every record delivered to both sinks",
        Duration::from_secs(60),
        || {
            let m = lf.metrics();
            sample_sum(
                &m,
                "logferry_records_out_total",
                &["component=\"to_kinesis\""],
            ) >= n as f64
                && sample_sum(&m, "logferry_records_out_total", &["component=\"to_file\""])
                    >= n as f64
        },
    );
    // Records no sink matches are dropped and counted.
    loadgen(
        &lf.forward.to_string(),
        &["--records", "10", "--tag", "nobody", "--ack"],
    );
    wait_for_lines(&lf.path("out.jsonl"), n as usize, Duration::from_secs(10));
    logferry_test_kit::logferry::check_sequence(&read_jsonl(&lf.path("out.jsonl")), n);
    // Health comes back once a call succeeds after the refused one.
    lf.wait_until("/health 200 again", Duration::from_secs(30), || {
        lf.health().0 == 200
    });
    let metrics = lf.metrics();

    // 1. The dashboard cannot drift from the code: each metric it queries is exported (a family
    // is listed once it has a sample, which this run gives every one of them).
    let names = dashboard_metric_names();
    let missing: Vec<&String> = names
        .iter()
        .filter(|name| {
            !metrics
                .lines()
                .any(|l| l.starts_with(&format!("# TYPE {} ", family(name))))
        })
        .collect();
    assert!(
        missing.is_empty(),
        "the dashboard queries metrics logferry does not export: {missing:?}\n{metrics}"
    );

    // 2. The operational metrics move.
    let kinesis_sink = "component=\"to_kinesis\"";
    let file_sink = "component=\"to_file\"";
    let puts = sample_sum(
        &metrics,
        "logferry_request_duration_seconds_count",
        &[kinesis_sink, "operation=\"PutRecords\""],
    );
    let calls = kinesis.seen(|s| s.put_calls) as f64;
    assert!(
        puts > 0.0 && puts <= calls,
        "one latency observation per PutRecords call: {puts} of {calls} calls"
    );
    assert!(
        sample_sum(
            &metrics,
            "logferry_request_duration_seconds_bucket",
            &[kinesis_sink, "le=\"+Inf\""]
        ) == puts,
        "the histogram's +Inf bucket holds every observation"
    );
    assert!(
        sample_sum(
            &metrics,
            "logferry_request_duration_seconds_count",
            &[file_sink, "operation=\"write\""]
        ) > 0.0
    );
    let failures = kinesis.seen(|s| s.entry_failures.clone());
    let throttled = failures
        .get("ProvisionedThroughputExceededException")
        .copied()
        .unwrap_or(0);
    let internal = failures.get("InternalFailure").copied().unwrap_or(0);
    assert!(throttled > 0 && internal > 0, "{failures:?}");
    assert_eq!(
        sample_sum(
            &metrics,
            "logferry_retries_total",
            &[kinesis_sink, "reason=\"throttled\""]
        ) as u64,
        throttled,
        "every throttled entry is counted as a retry with reason throttled"
    );
    assert_eq!(
        sample_sum(
            &metrics,
            "logferry_retries_total",
            &[kinesis_sink, "reason=\"internal\""]
        ) as u64,
        internal
    );
    assert!(
        sample_sum(
            &metrics,
            "logferry_retries_total",
            &[kinesis_sink, "reason=\"access_denied\""]
        ) > 0.0,
        "the entries of the refused call are retried as access_denied"
    );
    assert!(
        sample_sum(
            &metrics,
            "logferry_auth_failures_total",
            &[kinesis_sink, "reason=\"access_denied\""]
        ) >= 1.0
    );
    assert!(
        sample_sum(
            &metrics,
            "logferry_token_refreshes_total",
            &[kinesis_sink, "token=\"aws_credentials\""]
        ) >= 1.0,
        "the credentials fetch is counted"
    );
    // Buffer gauges: present for both modes, with their bounds; drained now.
    for (sink, buffer) in [
        (kinesis_sink, "buffer=\"memory\""),
        (file_sink, "buffer=\"memory\""),
        (file_sink, "buffer=\"disk\""),
    ] {
        assert!(
            sample_sum(&metrics, "logferry_buffer_limit_bytes", &[sink, buffer]) > 0.0,
            "{sink} {buffer} limit\n{metrics}"
        );
        assert!(metrics
            .lines()
            .any(|l| l.starts_with("logferry_buffer_fill_ratio{")
                && l.contains(sink)
                && l.contains(buffer)));
    }
    assert!(
        !metrics.contains("component=\"to_kinesis\",kind=\"sink\",buffer=\"disk\""),
        "no disk series for a memory buffer"
    );
    for name in [
        "logferry_buffer_memory_records",
        "logferry_buffer_oldest_unacked_seconds",
        "logferry_buffer_disk_records",
    ] {
        for sink in [kinesis_sink, file_sink] {
            assert!(
                metrics
                    .lines()
                    .any(|l| l.starts_with(&format!("{name}{{")) && l.contains(sink)),
                "{name} for {sink}"
            );
        }
    }
    assert_eq!(sample_sum(&metrics, "logferry_healthy", &[]), 1.0);
    assert_eq!(
        sample_sum(
            &metrics,
            "logferry_dropped_records_total",
            &["reason=\"unmatched\""]
        ),
        10.0
    );
    assert!(
        metrics.contains("logferry_unhealthy{component=\"to_kinesis\"} 0"),
        "the refused call was reported and then cleared\n{metrics}"
    );
    // The refused call was logged once, not once per retry.
    let refused_lines = lf.stderr().matches("PutRecords refused").count();
    assert!(
        refused_lines >= 1,
        "the refused call is logged:\n{}",
        lf.stderr()
    );
}

#[test]
fn health_reports_a_buffer_over_the_threshold_until_it_drains() {
    let pipe_dir = tempfile::tempdir().unwrap();
    let pipe = pipe_dir.path().join("out.pipe");
    let mut reader = stalled_fifo(&pipe);
    let config = format!(
        r#"
[service]
http_listen = "{{http}}"
health_buffer_threshold = 0.5

[[sources]]
type = "forward"
listen = "{{forward}}"

[[sinks]]
type = "file"
name = "stuck"
match = "*"
path = "{}"
buffer_limit = "256KiB"
"#,
        pipe.display()
    );
    let lf = Logferry::start(&config);
    assert_eq!(lf.health().0, 200);
    // More than the pipe (64 KiB) and the queue (256 KiB) hold: the sender blocks.
    let n = 5000u64;
    let target = lf.forward.to_string();
    let sender = std::thread::spawn(move || {
        loadgen(
            &target,
            &[
                "--records",
                &n.to_string(),
                "--size",
                "200",
                "--batch",
                "50",
            ],
        )
    });
    lf.wait_until(
        "/health 503 for the full buffer",
        Duration::from_secs(30),
        || {
            let (code, body) = lf.health();
            code == 503 && body.contains("stuck.buffer_fill")
        },
    );
    let (_, body) = lf.health();
    let report: serde_json::Value = serde_json::from_str(&body).unwrap();
    let reason = report["components"]["stuck.buffer_fill"].as_str().unwrap();
    assert!(
        reason.contains("% full") && reason.contains("in memory") && reason.contains("262144"),
        "{reason}"
    );
    // While stalled, the oldest record ages and the records are counted.
    lf.wait_until("the oldest record to age", Duration::from_secs(10), || {
        let m = lf.metrics();
        sample_sum(
            &m,
            "logferry_buffer_oldest_unacked_seconds",
            &["component=\"stuck\""],
        ) >= 1.0
            && sample_sum(
                &m,
                "logferry_buffer_memory_records",
                &["component=\"stuck\""],
            ) > 0.0
            && sample_sum(
                &m,
                "logferry_unhealthy",
                &["component=\"stuck.buffer_fill\""],
            ) == 1.0
    });
    // Unstick the output: read the pipe to the end of what the sender sends.
    let drain = std::thread::spawn(move || {
        let mut lines = 0u64;
        let mut buf = vec![0u8; 64 * 1024];
        while lines < n {
            match reader.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(k) => lines += buf[..k].iter().filter(|&&b| b == b'\n').count() as u64,
            }
        }
        lines
    });
    sender.join().expect("loadgen finished");
    assert_eq!(drain.join().unwrap(), n, "every record came out");
    lf.wait_until(
        "/health 200 after draining",
        Duration::from_secs(10),
        || lf.health().0 == 200,
    );
    let m = lf.metrics();
    assert_eq!(
        sample_sum(
            &m,
            "logferry_unhealthy",
            &["component=\"stuck.buffer_fill\""]
        ),
        0.0
    );
    assert!(lf
        .stderr()
        .contains("drained below health_buffer_threshold"));
}
