//! The Kafka sink's `format = "avro"` end to end: records sent as JSON lines to the tcp source,
//! written to tansu in the Confluent wire format with a schema id from a schema registry
//! stand-in (tests/support/schema_registry.py), and read back with confluent-kafka's
//! AvroDeserializer (tests/support/avro_consume.py), the official Confluent deserializer.

mod support;

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use logferry_test_kit::logferry::Logferry;
use logferry_test_kit::net::{free_port, wait_port};
use logferry_test_kit::paths::{python, support_file};
use logferry_test_kit::stand_ins::Tansu;
use logferry_test_kit::wait::wait_until;
use serde_json::{json, Value};

const WAIT: Duration = Duration::from_secs(60);

const SCHEMA_V1: &str = r#"{"type": "record", "name": "Log", "namespace": "test.logferry", "fields": [
  {"name": "seq", "type": "long"},
  {"name": "log", "type": "string"},
  {"name": "level", "type": ["null", "string"], "default": null},
  {"name": "count", "type": "int", "default": 7},
  {"name": "ratio", "type": "double"},
  {"name": "ok", "type": "boolean"},
  {"name": "labels", "type": {"type": "map", "values": "string"}, "default": {}},
  {"name": "sizes", "type": {"type": "array", "items": "long"}, "default": []},
  {"name": "raw", "type": ["null", "bytes"], "default": null},
  {"name": "ts", "type": {"type": "long", "logicalType": "timestamp-millis"}}
]}"#;

/// V1 plus a field with a default: a compatible evolution.
fn schema_v2() -> String {
    SCHEMA_V1.replace(
        r#"{"name": "seq", "type": "long"},"#,
        r#"{"name": "seq", "type": "long"}, {"name": "region", "type": "string", "default": "unknown"},"#,
    )
}

/// A running schema_registry.py, killed on drop.
struct RegistryProc {
    child: Child,
}

impl RegistryProc {
    fn start(port: u16, state: &Path) -> RegistryProc {
        let mut child = Command::new(python())
            .arg(support_file("schema_registry.py"))
            .args(["--port", &port.to_string()])
            .arg("--state")
            .arg(state)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start schema_registry.py");
        let mut line = String::new();
        let _ = BufReader::new(child.stdout.take().unwrap()).read_line(&mut line);
        assert!(line.contains("listening"), "registry did not start: {line}");
        RegistryProc { child }
    }
}

impl Drop for RegistryProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn config(bootstrap: &str, registry: &str, tcp_port: u16, schema: &str, dead: &Path) -> String {
    format!(
        r#"
[service]
http_listen = "{{http}}"
grace_period = "20s"

[[sources]]
type = "tcp"
listen = "127.0.0.1"
port = {tcp_port}
tag = "app"

[[sinks]]
type = "kafka"
name = "avro"
match = "*"
brokers = "{bootstrap}"
topics = "logs"
format = "avro"
schema_registry_url = "{registry}"
schema_str = '''{schema}'''
timestamp_key = "ts"
dead_letter_path = "{dead}"
"#,
        dead = dead.display()
    )
}

/// Sends JSON lines to the tcp source.
fn send(port: u16, records: &[Value]) {
    // `Logferry::start` waits for the HTTP port only: the tcp source may bind a moment later
    // (once seen as "connection refused" here).
    assert!(
        wait_port(([127, 0, 0, 1], port).into(), Duration::from_secs(10)),
        "the tcp source never listened on port {port}"
    );
    let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("connect to the tcp source");
    for r in records {
        writeln!(stream, "{r}").unwrap();
    }
    stream.flush().unwrap();
}

/// Everything in the topic, decoded by confluent-kafka's AvroDeserializer.
fn consume(bootstrap: &str, registry: &str, count: usize) -> Vec<Value> {
    let out = Command::new(python())
        .arg(support_file("avro_consume.py"))
        .args([
            "--bootstrap",
            bootstrap,
            "--registry",
            registry,
            "--topic",
            "logs",
        ])
        .args(["--count", &count.to_string()])
        .output()
        .expect("run avro_consume.py");
    assert!(
        out.status.success(),
        "avro_consume.py failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn dead_letters(dir: &Path) -> Vec<Value> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let text = std::fs::read_to_string(entry.path()).unwrap_or_default();
        out.extend(
            text.lines()
                .map(|l| serde_json::from_str::<Value>(l).unwrap()),
        );
    }
    out
}

fn full_record(seq: u64) -> Value {
    json!({"seq": seq, "log": format!("line {seq}"), "level": "warn", "count": 3, "ratio": 0.25,
           "ok": true, "labels": {"app": "web", "zone": "a"}, "sizes": [1, 2, 3],
           "raw": "AB", "ignored": "not in the schema"})
}

fn delivered(lf: &Logferry) -> u64 {
    lf.metric("logferry_records_out_total{component=\"avro\"")
        .unwrap_or(0.0) as u64
}

fn dir() -> (tempfile::TempDir, PathBuf, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("registry.json");
    let dead = dir.path().join("dead");
    (dir, state, dead)
}

#[test]
fn avro_records_read_back_by_confluents_deserializer_field_by_field() {
    let tansu = Tansu::start();
    tansu.create_topic("logs", 1);
    let (_dir, state, dead) = dir();
    let registry_port = free_port();
    let _registry = RegistryProc::start(registry_port, &state);
    let registry = format!("http://127.0.0.1:{registry_port}");
    let tcp = free_port();
    let lf = Logferry::start(&config(
        &tansu.bootstrap(),
        &registry,
        tcp,
        SCHEMA_V1,
        &dead,
    ));
    let sparse = json!({"seq": 2, "log": "only the required fields", "ratio": 1, "ok": false});
    // `ratio` is a string and `seq` is missing: not encodable, dead-lettered with the field.
    let wrong_type = json!({"seq": 3, "log": "x", "ratio": "high", "ok": true});
    let missing = json!({"log": "no seq", "ratio": 0.5, "ok": true});
    send(tcp, &[full_record(1), sparse, wrong_type, missing]);
    wait_until("two records delivered, two dead-lettered", WAIT, || {
        delivered(&lf) >= 2 && dead_letters(&dead).len() >= 2
    });

    let records = consume(&tansu.bootstrap(), &registry, 2);
    assert_eq!(records.len(), 2, "{records:?}");
    let ids: Vec<u64> = records
        .iter()
        .map(|r| r["schema_id"].as_u64().unwrap())
        .collect();
    assert_eq!(ids, [1, 1], "the id registered under logs-value");
    let full = &records[0]["value"];
    assert_eq!(full["seq"], 1);
    assert_eq!(full["log"], "line 1");
    assert_eq!(full["level"], "warn");
    assert_eq!(full["count"], 3);
    assert_eq!(full["ratio"], 0.25);
    assert_eq!(full["ok"], true);
    assert_eq!(full["labels"], json!({"app": "web", "zone": "a"}));
    assert_eq!(full["sizes"], json!([1, 2, 3]));
    assert_eq!(full["raw"], json!([65, 66]));
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    let ts = full["ts"].as_i64().expect("timestamp-millis");
    assert!(
        (now_ms - ts).abs() < 60_000,
        "the record time: {ts} vs {now_ms}"
    );
    assert!(full.get("ignored").is_none());
    let sparse = &records[1]["value"];
    assert_eq!(sparse["seq"], 2);
    assert_eq!(sparse["level"], Value::Null, "null union without a value");
    assert_eq!(sparse["count"], 7, "the schema's default");
    assert_eq!(sparse["ratio"], 1.0, "an integer widened to double");
    assert_eq!(sparse["labels"], json!({}));
    assert_eq!(sparse["sizes"], json!([]));

    let letters = dead_letters(&dead);
    let errors: Vec<String> = letters
        .iter()
        .map(|l| l["error"].as_str().unwrap().to_string())
        .collect();
    assert!(
        errors.iter().any(|e| e.contains("`ratio`")),
        "the wrong type names its field: {errors:?}"
    );
    assert!(
        errors
            .iter()
            .any(|e| e.contains("`seq`") && e.contains("missing")),
        "the missing field is named: {errors:?}"
    );
    assert!(
        letters.iter().all(|l| l["reason"] == "unencodable"),
        "{letters:?}"
    );
}

/// Registry down at start: records wait, the sink says why on /health, and they go out once the
/// registry answers. Down again mid-run: the id is known, records keep flowing. A new schema
/// version with a defaulted field gets a new id, and both versions read back.
#[test]
fn registry_outages_and_schema_evolution() {
    let tansu = Tansu::start();
    tansu.create_topic("logs", 1);
    let (dir, state, dead) = dir();
    let registry_port = free_port();
    let registry = format!("http://127.0.0.1:{registry_port}");
    let tcp = free_port();
    let v1 = config(&tansu.bootstrap(), &registry, tcp, SCHEMA_V1, &dead);
    let mut lf = Logferry::start(&v1);
    send(tcp, &[full_record(1), full_record(2)]);
    lf.wait_until("the sink reports the registry", WAIT, || {
        let (status, body) = lf.health();
        status == 503 && body.contains("schema")
    });
    assert_eq!(delivered(&lf), 0, "nothing goes out without a schema id");
    assert!(lf.stderr().contains("schema registry"), "{}", lf.stderr());

    let up = RegistryProc::start(registry_port, &state);
    lf.wait_until("the waiting records delivered", WAIT, || {
        delivered(&lf) == 2
    });
    lf.wait_until("healthy again", WAIT, || lf.health().0 == 200);
    drop(up);
    send(tcp, &[full_record(3)]);
    lf.wait_until("delivered with the registry down", WAIT, || {
        delivered(&lf) == 3
    });
    assert!(lf.terminate().success(), "{}", lf.stderr());

    let _up = RegistryProc::start(registry_port, &state);
    let v2 = config(&tansu.bootstrap(), &registry, tcp, &schema_v2(), &dead);
    let lf = Logferry::start(&v2);
    let mut r4 = full_record(4);
    r4["region"] = json!("eu-west-1");
    send(tcp, &[r4, full_record(5)]);
    lf.wait_until("v2 records delivered", WAIT, || delivered(&lf) == 2);

    let records = consume(&tansu.bootstrap(), &registry, 5);
    let seqs: Vec<u64> = records
        .iter()
        .map(|r| r["value"]["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(seqs, [1, 2, 3, 4, 5]);
    let ids: Vec<u64> = records
        .iter()
        .map(|r| r["schema_id"].as_u64().unwrap())
        .collect();
    assert_eq!(ids, [1, 1, 1, 2, 2], "v2 registered under a new id");
    assert!(records[0]["value"].get("region").is_none());
    assert_eq!(records[3]["value"]["region"], "eu-west-1");
    assert_eq!(records[4]["value"]["region"], "unknown", "v2's default");
    assert!(dead_letters(&dead).is_empty());
    drop(dir);
}
