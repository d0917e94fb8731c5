//! The Kafka sink end to end against tansu (an Apache-Kafka-compatible broker): records sent
//! with `logferry loadgen` to the forward input, read back with the rdkafka crate's consumer.

use support::kafka;
mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::process::{Command, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use kafka::{assert_exactly_once, consume, seqs, Consumed};
use logferry_test_kit::logferry::{loadgen, Logferry};
use logferry_test_kit::paths::python;
use logferry_test_kit::stand_ins::Tansu;

const READ_TIMEOUT: Duration = Duration::from_secs(60);

fn now_secs() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

fn config(sinks: &str, transforms: &str) -> String {
    format!(
        r#"
[service]
http_listen = "{{http}}"
grace_period = "20s"

[[sources]]
type = "forward"
listen = "{{forward}}"
{transforms}
{sinks}
"#
    )
}

#[test]
fn forward_records_arrive_in_kafka_with_their_content() {
    let tansu = Tansu::start();
    tansu.create_topic("logs", 3);
    let sink = format!(
        r#"
[[sinks]]
type = "kafka"
match = "*"
brokers = "{}"
topics = "logs"
"#,
        tansu.bootstrap()
    );
    let mut lf = Logferry::start(&config(&sink, ""));
    let before = now_secs();
    let n = 5000u64;
    loadgen(
        &lf.forward.to_string(),
        &[
            "--records",
            &n.to_string(),
            "--size",
            "300",
            "--batch",
            "250",
            "--ack",
        ],
    );
    let after = now_secs();
    // Acks come back only after the broker acknowledged every record of a message.
    assert_eq!(
        lf.metric("logferry_records_out_total{component=\"kafka.0\""),
        Some(n as f64)
    );

    let records = consume(&tansu.bootstrap(), "logs", n as usize, READ_TIMEOUT);
    assert_exactly_once(&seqs(&records), 0..n);
    let padding = "x".repeat(300 - 24);
    for r in &records {
        let json = r.json();
        let object = json.as_object().unwrap();
        assert_eq!(
            object.keys().collect::<Vec<_>>(),
            ["seq", "log", "@timestamp"],
            "{json}"
        );
        assert_eq!(json["log"], padding.as_str());
        let ts = json["@timestamp"].as_f64().expect("double timestamp");
        assert!(ts >= before.floor() - 1.0 && ts <= after + 1.0, "{ts}");
        assert!(r.key.is_none(), "no key configured");
    }
    let partitions: BTreeSet<i32> = records.iter().map(|r| r.partition).collect();
    assert!(
        partitions.len() > 1,
        "keyless records spread: {partitions:?}"
    );
    assert_eq!(lf.health().0, 200, "{}", lf.health().1);
    assert!(lf.terminate().success(), "{}", lf.stderr());
}

#[test]
fn message_key_field_keeps_each_key_on_one_partition_in_order() {
    let tansu = Tansu::start();
    tansu.create_topic("keyed", 6);
    // Each tag gets its own `user` field; one tag's records are one key's records.
    let users = ["alice", "bob", "carol", "dave", "erin"];
    let transforms: String = users
        .iter()
        .map(|u| {
            format!(
                "[[transforms]]\ntype = \"record_modifier\"\nmatch = \"{u}\"\nrecords = {{ user = \"{u}\" }}\n"
            )
        })
        .collect();
    let sink = format!(
        r#"
[[sinks]]
type = "kafka"
match = "*"
brokers = "{}"
topics = "keyed"
message_key_field = "user"
message_key = "nobody"
"#,
        tansu.bootstrap()
    );
    let mut lf = Logferry::start(&config(&sink, &transforms));
    let per_user = 600u64;
    let handles: Vec<_> = users
        .iter()
        .enumerate()
        .map(|(i, user)| {
            let target = lf.forward.to_string();
            let start = (i as u64 * per_user).to_string();
            let user = user.to_string();
            std::thread::spawn(move || {
                loadgen(
                    &target,
                    &[
                        "--records",
                        &per_user.to_string(),
                        "--batch",
                        "50",
                        "--size",
                        "100",
                        "--tag",
                        &user,
                        "--start-seq",
                        &start,
                        "--ack",
                    ],
                )
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    // Untagged records fall back to the static message_key.
    loadgen(
        &lf.forward.to_string(),
        &[
            "--records",
            "10",
            "--tag",
            "other",
            "--start-seq",
            "3000",
            "--ack",
        ],
    );
    let total = per_user * users.len() as u64 + 10;
    let records = consume(&tansu.bootstrap(), "keyed", total as usize, READ_TIMEOUT);
    assert_exactly_once(&seqs(&records), 0..total);

    let mut by_key: BTreeMap<Vec<u8>, Vec<&Consumed>> = BTreeMap::new();
    for r in &records {
        by_key
            .entry(r.key.clone().expect("every record has a key"))
            .or_default()
            .push(r);
    }
    let mut partitions_used = BTreeSet::new();
    for (key, list) in &by_key {
        let partitions: BTreeSet<i32> = list.iter().map(|r| r.partition).collect();
        assert_eq!(
            partitions.len(),
            1,
            "key {:?} on several partitions",
            String::from_utf8_lossy(key)
        );
        partitions_used.extend(partitions);
        let mut ordered = list.clone();
        ordered.sort_by_key(|r| r.offset);
        let in_offset_order: Vec<u64> = ordered
            .iter()
            .map(|r| r.json()["seq"].as_u64().unwrap())
            .collect();
        let mut sorted = in_offset_order.clone();
        sorted.sort_unstable();
        assert_eq!(
            in_offset_order,
            sorted,
            "key {:?} out of order",
            String::from_utf8_lossy(key)
        );
        let key_text = String::from_utf8_lossy(key).into_owned();
        for r in list {
            assert_eq!(
                r.json()["user"].as_str().unwrap_or("nobody"),
                key_text,
                "the key is the record's `user`, else message_key"
            );
        }
    }
    assert_eq!(by_key.len(), users.len() + 1);
    assert!(
        partitions_used.len() > 1,
        "keys spread over partitions: {partitions_used:?}"
    );
    assert!(lf.terminate().success(), "{}", lf.stderr());
}

#[test]
fn topic_key_routes_records_to_listed_or_dynamic_topics() {
    let tansu = Tansu::start();
    for topic in ["logs", "audit", "dyn-extra"] {
        tansu.create_topic(topic, 1);
    }
    let transforms = r#"
[[transforms]]
type = "record_modifier"
match = "a"
records = { route = "audit" }
[[transforms]]
type = "record_modifier"
match = "b"
records = { route = "logs" }
[[transforms]]
type = "record_modifier"
match = "c"
records = { route = "unlisted" }
[[transforms]]
type = "record_modifier"
match = "d"
records = { route = "dyn-extra" }
"#;
    let sinks = format!(
        r#"
[[sinks]]
type = "kafka"
name = "listed"
match_regex = "^[abc]$"
brokers = "{b}"
topics = "logs, audit"
topic_key = "route"

[[sinks]]
type = "kafka"
name = "dynamic"
match = "d"
brokers = "{b}"
topics = "logs"
topic_key = "route"
dynamic_topic = true
"#,
        b = tansu.bootstrap()
    );
    let mut lf = Logferry::start(&config(&sinks, transforms));
    for (i, tag) in ["a", "b", "c", "d"].iter().enumerate() {
        loadgen(
            &lf.forward.to_string(),
            &[
                "--records",
                "100",
                "--tag",
                tag,
                "--start-seq",
                &(i * 100).to_string(),
                "--ack",
            ],
        );
    }
    let audit = consume(&tansu.bootstrap(), "audit", 100, READ_TIMEOUT);
    assert_exactly_once(&seqs(&audit), 0..100);
    // `b` names logs; `c` names a topic not in `topics`, so it goes to the first one.
    let logs = consume(&tansu.bootstrap(), "logs", 200, READ_TIMEOUT);
    assert_exactly_once(&seqs(&logs), 100..300);
    let dynamic = consume(&tansu.bootstrap(), "dyn-extra", 100, READ_TIMEOUT);
    assert_exactly_once(&seqs(&dynamic), 300..400);
    assert!(lf.terminate().success(), "{}", lf.stderr());
}

/// Decodes msgpack payloads with the Python `msgpack` package (an independent decoder) into
/// JSON-compatible values; bytes become strings.
fn decode_msgpack(payloads: &[Vec<u8>]) -> Vec<serde_json::Value> {
    let script = r#"
import base64, json, sys, msgpack
out = []
for line in sys.stdin:
    value = msgpack.unpackb(base64.b64decode(line), raw=False)
    out.append(value)
json.dump(out, sys.stdout)
"#;
    use base64::Engine;
    use std::io::Write;
    let mut child = Command::new(python())
        .args(["-c", script])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python");
    let mut input = String::new();
    for p in payloads {
        input.push_str(&base64::engine::general_purpose::STANDARD.encode(p));
        input.push('\n');
    }
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "msgpack decode: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn msgpack_and_raw_formats() {
    let tansu = Tansu::start();
    tansu.create_topic("mp", 1);
    tansu.create_topic("raw", 1);
    let transforms = r#"
[[transforms]]
type = "record_modifier"
match = "*"
records = { message = "hello \"kafka\"" }
"#;
    let sinks = format!(
        r#"
[[sinks]]
type = "kafka"
name = "mp"
match = "*"
brokers = "{b}"
topics = "mp"
format = "msgpack"
timestamp_key = "ts"
timestamp_format = "epoch_ms"

[[sinks]]
type = "kafka"
name = "raw"
match = "*"
brokers = "{b}"
topics = "raw"
format = "raw"
log_key = "message"
"#,
        b = tansu.bootstrap()
    );
    let mut lf = Logferry::start(&config(&sinks, transforms));
    let before_ms = (now_secs() * 1000.0) as u64;
    loadgen(
        &lf.forward.to_string(),
        &["--records", "200", "--size", "80", "--ack"],
    );
    let after_ms = (now_secs() * 1000.0) as u64 + 1;

    let mp = consume(&tansu.bootstrap(), "mp", 200, READ_TIMEOUT);
    let decoded = decode_msgpack(&mp.iter().map(|r| r.payload.clone()).collect::<Vec<_>>());
    let seqs_mp: Vec<u64> = decoded.iter().map(|v| v["seq"].as_u64().unwrap()).collect();
    assert_exactly_once(&seqs_mp, 0..200);
    for v in &decoded {
        let keys: Vec<&String> = v.as_object().unwrap().keys().collect();
        assert_eq!(keys, ["seq", "log", "message", "ts"], "{v}");
        assert_eq!(v["message"], "hello \"kafka\"");
        let ts = v["ts"].as_u64().expect("epoch_ms is an integer");
        assert!(ts >= before_ms - 1000 && ts <= after_ms, "{ts}");
    }

    let raw = consume(&tansu.bootstrap(), "raw", 200, READ_TIMEOUT);
    assert_eq!(raw.len(), 200);
    for r in &raw {
        assert_eq!(
            r.payload, b"hello \"kafka\"",
            "raw sends the field's bytes only"
        );
    }
    assert!(lf.terminate().success(), "{}", lf.stderr());
}

#[test]
fn timestamp_formats_agree_on_the_same_record_time() {
    let tansu = Tansu::start();
    let formats = ["iso8601", "double", "epoch_ms"];
    let mut sinks = String::new();
    for f in formats {
        let topic = format!("ts-{}", f.replace('_', "-"));
        tansu.create_topic(&topic, 1);
        sinks.push_str(&format!(
            "[[sinks]]\ntype = \"kafka\"\nname = \"{f}\"\nmatch = \"*\"\nbrokers = \"{}\"\n\
             topics = \"{topic}\"\nmessage_key_field = \"seq\"\ntimestamp_key = \"time\"\n\
             timestamp_format = \"{f}\"\n",
            tansu.bootstrap()
        ));
    }
    let mut lf = Logferry::start(&config(&sinks, ""));
    loadgen(&lf.forward.to_string(), &["--records", "100", "--ack"]);

    let by_seq = |topic: &str| -> BTreeMap<u64, serde_json::Value> {
        consume(&tansu.bootstrap(), topic, 100, READ_TIMEOUT)
            .iter()
            .map(|r| {
                let json = r.json();
                (json["seq"].as_u64().unwrap(), json["time"].clone())
            })
            .collect()
    };
    let iso = by_seq("ts-iso8601");
    let double = by_seq("ts-double");
    let millis = by_seq("ts-epoch-ms");
    assert_eq!((iso.len(), double.len(), millis.len()), (100, 100, 100));
    let shape = regex::Regex::new(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$").unwrap();
    for seq in 0..100u64 {
        let iso_text = iso[&seq].as_str().expect("iso8601 is a string");
        assert!(shape.is_match(iso_text), "{iso_text}");
        let iso_ms = chrono::DateTime::parse_from_rfc3339(iso_text)
            .unwrap()
            .timestamp_millis();
        let ms = millis[&seq].as_i64().expect("epoch_ms is an integer");
        let secs = double[&seq].as_f64().expect("double is a number");
        assert_eq!(iso_ms, ms, "seq {seq}: iso8601 and epoch_ms differ");
        // `double` has nanosecond digits; epoch_ms truncates them.
        let diff = secs * 1000.0 - ms as f64;
        assert!(
            (-0.01..1.0).contains(&diff),
            "seq {seq}: double {secs} vs epoch_ms {ms}"
        );
        assert!((secs - now_secs()).abs() < 120.0, "{secs}");
    }
    assert!(lf.terminate().success(), "{}", lf.stderr());
}
