//! End to end through the Lambda Runtime API: the real `logferry-lambda` binary against a
//! Runtime API stand-in (tests/support), delivering to a file sink.

mod support;

use std::collections::HashMap;
use std::io::BufRead;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use support::{awslogs_event, data_message, fixture, Function};

const BUDGET: Duration = Duration::from_secs(10);

fn file_sink(dir: &Path, out: &Path) -> Function {
    Function::start(
        dir,
        &[
            ("LOGFERRY_SINK", "file"),
            ("LOGFERRY_PATH", out.to_str().unwrap()),
            ("LOGFERRY_TIME_KEY", "time"),
            ("LOGFERRY_TIME_KEY_FORMAT", "%Y-%m-%dT%H:%M:%S.%LZ"),
        ],
    )
}

fn lines(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad line {l}: {e}")))
        .collect()
}

/// The records the realistic fixture must produce, in order.
fn expected_realistic() -> Vec<Value> {
    let decoded: Value =
        serde_json::from_slice(&fixture("lambda-data-message-realistic.decoded.json")).unwrap();
    let times = [
        "2024-05-14T09:30:01.123Z",
        "2024-05-14T09:30:01.125Z",
        "2024-05-14T09:30:01.340Z",
        "2024-05-14T09:30:02.001Z",
        "2024-05-14T09:30:02.517Z",
    ];
    decoded["logEvents"]
        .as_array()
        .unwrap()
        .iter()
        .zip(times)
        .map(|(e, time)| {
            json!({
                "message": e["message"],
                "logGroup": "/ecs/web",
                "logStream": "web/app/0123",
                "owner": "123456789012",
                "subscriptionFilters": ["to-logferry"],
                "id": e["id"],
                "time": time,
            })
        })
        .collect()
}

/// Compares records one by one, printing only the first difference (the messages are long).
fn assert_records(got: &[Value], want: &[Value]) {
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        if g != w {
            let mut g = g.clone();
            let mut w = w.clone();
            for v in [&mut g, &mut w] {
                if let Some(m) = v["message"].as_str() {
                    if m.len() > 100 {
                        v["message"] = json!(format!("{}… ({} bytes)", &m[..40], m.len()));
                    }
                }
            }
            panic!("record {i} differs:\n got  {g}\n want {w}");
        }
    }
    assert_eq!(got.len(), want.len(), "record count");
}

#[test]
fn data_message_lands_in_the_file_sink_with_exact_records() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.json");
    let f = file_sink(dir.path(), &out);
    let reply = f
        .invoke(&fixture("lambda-data-message-realistic.json"), BUDGET)
        .response();
    assert_eq!(reply, json!({"records": 5, "control_messages": 0}));
    assert_records(&lines(&out), &expected_realistic());
    // Key order as written: message, metadata, id, time.
    let first = std::fs::read_to_string(&out).unwrap();
    assert!(
        first.starts_with(
            "{\"message\":\"GET /healthz 200 1.2ms\",\"logGroup\":\"/ecs/web\",\"logStream\":\
             \"web/app/0123\",\"owner\":\"123456789012\",\"subscriptionFilters\":[\"to-logferry\"],\
             \"id\":\"38260920246519012333835124682124673415244250676231759308\""
        ),
        "{first}"
    );

    // moto's payload (integer ids) through the same container: ids become strings.
    let reply = f
        .invoke(&fixture("lambda-data-message.json"), BUDGET)
        .response();
    assert_eq!(reply, json!({"records": 5, "control_messages": 0}));
    let got = lines(&out);
    assert_eq!(got.len(), 10);
    let ids: Vec<&str> = got[5..].iter().map(|r| r["id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["0", "1", "2", "3", "4"]);
    assert_eq!(got[5]["time"], "2026-11-22T02:59:48.232Z");
    eprintln!("init: {:?}", f.init);
}

#[test]
fn control_message_succeeds_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.json");
    let f = file_sink(dir.path(), &out);
    let reply = f
        .invoke(&fixture("lambda-control-message.json"), BUDGET)
        .response();
    assert_eq!(reply, json!({"records": 0, "control_messages": 1}));
    assert_eq!(std::fs::read(&out).unwrap(), b"");
}

#[test]
fn kinesis_trigger_event_delivers_and_reports_failed_records() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.json");
    let f = file_sink(dir.path(), &out);
    let event = fixture("lambda-kinesis-trigger.json");
    let reply = f.invoke(&event, BUDGET).response();
    assert_eq!(reply, json!({"batchItemFailures": []}));
    assert_records(&lines(&out), &expected_realistic());

    // A record that does not decode is reported alone; the others are delivered.
    let mut event: Value = serde_json::from_slice(&event).unwrap();
    let mut bad = event["Records"][1].clone();
    bad["kinesis"]["data"] = json!("H4sI%%%not-base64!!");
    bad["kinesis"]["sequenceNumber"] =
        json!("49651874017433946285613417651363392540105324865036238851");
    event["Records"].as_array_mut().unwrap().insert(1, bad);
    let reply = f
        .invoke(&serde_json::to_vec(&event).unwrap(), BUDGET)
        .response();
    assert_eq!(
        reply,
        json!({"batchItemFailures": [
            {"itemIdentifier": "49651874017433946285613417651363392540105324865036238851"}
        ]})
    );
    assert_eq!(lines(&out).len(), 10);
}

#[test]
fn every_bad_fixture_fails_with_an_error_naming_the_problem() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.json");
    let f = file_sink(dir.path(), &out);
    let cases = [
        ("bad-not-base64.json", "`awslogs.data` is not valid base64"),
        (
            "bad-not-gzip.json",
            "the payload is not gzip: it starts with 74 68 69 73",
        ),
        (
            "bad-truncated-gzip.json",
            "the gzip payload is truncated or corrupt",
        ),
        (
            "bad-json-inside.json",
            "the decompressed payload is not a CloudWatch Logs message (bad JSON)",
        ),
        (
            "bad-missing-awslogs.json",
            "the event has no `awslogs` object",
        ),
    ];
    for (name, expected) in cases {
        let error = f.invoke(&fixture(name), BUDGET).error();
        assert_eq!(
            error["errorType"], "logferry.DecodeError",
            "{name}: {error}"
        );
        let message = error["errorMessage"].as_str().unwrap();
        assert!(
            message.starts_with(&format!("cannot decode the event: {expected}")),
            "{name}: {message}"
        );
    }
    // Nothing half-sent, and the container still works.
    assert_eq!(std::fs::read(&out).unwrap(), b"");
    f.invoke(&fixture("lambda-data-message-realistic.json"), BUDGET)
        .response();
    assert_eq!(lines(&out).len(), 5);
}

#[test]
fn a_sink_that_cannot_deliver_fails_before_the_deadline_and_the_retry_delivers() {
    let dir = tempfile::tempdir().unwrap();
    let pipe = dir.path().join("out.pipe");
    assert!(Command::new("mkfifo")
        .arg(&pipe)
        .status()
        .expect("mkfifo")
        .success());
    // Read-write open of a FIFO does not block; holding it lets the sink open its end. Nobody
    // reads yet, so the sink stalls once the pipe's 64 KiB are full.
    let reader = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&pipe)
        .unwrap();
    let f = Function::start(
        dir.path(),
        &[
            ("LOGFERRY_SINK", "file"),
            ("LOGFERRY_PATH", pipe.to_str().unwrap()),
            ("LOGFERRY_SAFETY_MARGIN", "1s"),
        ],
    );
    let n = 2000;
    let event = awslogs_event(&data_message(n, 200)); // ~450 KB of JSON lines
    let budget = Duration::from_secs(3);
    let started = Instant::now();
    let error = f.invoke(&event, budget).error();
    let took = started.elapsed();
    assert_eq!(error["errorType"], "logferry.DeliveryTimeout", "{error}");
    assert!(
        error["errorMessage"]
            .as_str()
            .unwrap()
            .starts_with("2000 records were not confirmed delivered"),
        "{error}"
    );
    assert!(
        took < budget,
        "the invocation must fail before its deadline, not be killed at it ({took:?})"
    );

    // Unblock delivery, then retry the same event: it succeeds, and every record arrives (the
    // first attempt's queued copy too: duplicates, told apart by `id`).
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(reader).lines() {
            let Ok(line) = line else { return };
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    let reply = f.invoke(&event, Duration::from_secs(30)).response();
    assert_eq!(reply, json!({"records": n, "control_messages": 0}));
    let mut seen: HashMap<String, usize> = HashMap::new();
    let until = Instant::now() + Duration::from_secs(20);
    while seen.len() < n {
        let left = until.saturating_duration_since(Instant::now());
        let line = rx
            .recv_timeout(left)
            .unwrap_or_else(|_| panic!("only {} of {n} ids arrived", seen.len()));
        let record: Value = serde_json::from_str(&line).unwrap();
        *seen
            .entry(record["id"].as_str().unwrap().to_string())
            .or_default() += 1;
    }
    for i in 0..n {
        assert!(seen.contains_key(&format!("ev-{i}")), "ev-{i} missing");
    }
}

/// Figures for docs/lambda.md (printed, not asserted): init time and a 1 MiB batch.
#[test]
fn bench_init_and_one_mib_batch() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.json");
    let f = Function::start(
        dir.path(),
        &[
            ("LOGFERRY_SINK", "file"),
            ("LOGFERRY_PATH", out.to_str().unwrap()),
        ],
    );
    // 4096 events of 256 bytes: 1 MiB of messages, CloudWatch Logs' largest batch.
    let json = data_message(4096, 256);
    let event = awslogs_event(&json);
    let mut times = Vec::new();
    for _ in 0..5 {
        let started = Instant::now();
        f.invoke(&event, BUDGET).response();
        times.push(started.elapsed());
    }
    times.sort();
    eprintln!(
        "BENCH init {:?}; 1 MiB batch (4096 events, {} B JSON, {} B event): min {:?} median {:?} max {:?}",
        f.init,
        json.len(),
        event.len(),
        times[0],
        times[2],
        times[4]
    );
    assert_eq!(lines(&out).len(), 5 * 4096);
}

#[test]
fn a_configuration_error_is_reported_as_an_init_error() {
    let dir = tempfile::tempdir().unwrap();
    let (error, status) = Function::start_failing(dir.path(), &[("LOGFERRY_SINK", "kinesis")]);
    assert!(!status.success());
    assert_eq!(
        error,
        json!({
            "errorType": "logferry.ConfigError",
            "errorMessage": "configuration error: LOGFERRY_STREAM is required with LOGFERRY_SINK=kinesis"
        })
    );
    // A problem the shared loader finds names the key.
    let (error, _) = Function::start_failing(
        dir.path(),
        &[
            ("LOGFERRY_SINK", "stdout"),
            ("LOGFERRY_SAFETY_MARGIN", "soon"),
        ],
    );
    let message = error["errorMessage"].as_str().unwrap();
    assert!(message.contains("`safety_margin`"), "{message}");
}
