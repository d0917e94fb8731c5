//! Fluent Bit's own `out_forward` as the client: the most common topology there is (a Fluent Bit
//! DaemonSet or sidecar forwarding to an aggregator). The real binary (`FLUENT_BIT_BIN`, which
//! `scripts/test` points at `../shared/bench/peers/fluent-bit` when it exists) reads numbered
//! lines with its `tail` input and forwards them to logferry, whose file sink is read back:
//! every line exactly once.
//!
//! What Fluent Bit 5.1 sends, per setting (captured off the wire): Forward mode
//! `[tag, [[[time, {metadata}], record], ...]]` by default (its event format with metadata,
//! `retain_metadata_in_forward_mode true`), with an option map and `chunk` under
//! `require_ack_response`, CompressedPackedForward under `compress gzip`, and plain
//! `[time, record]` entries with integer times under `time_as_integer`. It never sends Message or
//! uncompressed PackedForward mode; those two carry the metadata form in hand-built frames in
//! `fluent_bit_metadata_in_message_and_packed_modes` below and in the protocol's unit tests.

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use logferry_test_kit::logferry::{read_jsonl, wait_for_lines, Logferry};
use logferry_test_kit::stand_ins::{fluent_bit_bin, numbered_lines, FluentBit};

const CONFIG: &str = r#"
[service]
http_listen = "{http}"
grace_period = "20s"

[[sources]]
type = "forward"
listen = "{forward}"
{source_extra}

[[sinks]]
type = "file"
match = "*"
path = "{dir}/out.jsonl"
time_key = "time"
time_key_format = "double"
"#;

/// Every `line <i>` for i in 0..n exactly once, in order.
fn check_lines(records: &[serde_json::Value], n: usize) {
    let logs: Vec<&str> = records
        .iter()
        .map(|r| r["log"].as_str().unwrap_or_else(|| panic!("no log: {r}")))
        .collect();
    let expected: Vec<String> = (0..n).map(|i| format!("line {i}")).collect();
    assert_eq!(logs.len(), n, "records delivered");
    assert!(
        logs.iter().zip(&expected).all(|(a, b)| a == b),
        "lines out of order or altered"
    );
}

/// One Fluent Bit → logferry run: `n` lines with these `out_forward` options.
fn run(out_args: &[&str], metadata_key: Option<&str>, n: usize) {
    let Some(bin) = fluent_bit_bin("Fluent Bit interop test") else {
        return;
    };
    let extra = metadata_key
        .map(|k| format!("metadata_key = \"{k}\""))
        .unwrap_or_default();
    let mut lf = Logferry::start(&CONFIG.replace("{source_extra}", &extra));
    let input = numbered_lines(lf.dir.path(), n);
    let fb = FluentBit::forward(&bin, &input, lf.forward, out_args);
    let out = lf.path("out.jsonl");
    let waited = std::panic::catch_unwind(|| wait_for_lines(&out, n, Duration::from_secs(60)));
    if waited.is_err() {
        panic!(
            "Fluent Bit {out_args:?} → logferry: records missing\n--- logferry:\n{}\n--- fluent-bit:\n{}",
            lf.stderr(),
            fb.log()
        );
    }
    // Let a duplicate, if any were sent, arrive before counting.
    std::thread::sleep(Duration::from_millis(1500));
    drop(fb);
    assert!(lf.terminate().success(), "{}", lf.stderr());
    let records = read_jsonl(&out);
    check_lines(&records, n);
    assert!(
        !lf.stderr().contains("closing a forward connection"),
        "logferry refused a connection:\n{}",
        lf.stderr()
    );
    for r in &records {
        let t = r["time"].as_f64().expect("time");
        assert!(t > 1.6e9, "time from Fluent Bit kept: {r}");
        match metadata_key {
            Some(k) => assert!(r[k].is_object(), "metadata kept under {k}: {r}"),
            None => assert_eq!(r.as_object().map(|o| o.len()), Some(2), "{r}"),
        }
    }
}

#[test]
fn fluent_bit_defaults_deliver_every_record() {
    // Forward mode with metadata, no acks: what 0 of 10,000 arrived with before.
    run(&[], None, 10_000);
}

#[test]
fn fluent_bit_with_acks() {
    run(&["require_ack_response=true"], None, 3_000);
}

#[test]
fn fluent_bit_with_gzip() {
    run(&["compress=gzip"], None, 3_000);
}

#[test]
fn fluent_bit_with_gzip_and_acks_and_options() {
    run(
        &[
            "compress=gzip",
            "require_ack_response=true",
            "send_options=true",
        ],
        None,
        3_000,
    );
}

#[test]
fn fluent_bit_legacy_integer_times() {
    run(&["time_as_integer=true"], None, 1_000);
}

#[test]
fn fluent_bit_metadata_kept_under_a_key() {
    run(
        &["require_ack_response=true"],
        Some("_fluent_metadata"),
        1_000,
    );
    run(&["compress=gzip"], Some("_fluent_metadata"), 1_000);
}

/// Message and PackedForward modes with Fluent Bit's `[time, metadata]` header, over the wire to
/// the real binary, acked after delivery (Fluent Bit itself does not send these two modes).
#[test]
fn fluent_bit_metadata_in_message_and_packed_modes() {
    use rmp::encode::*;
    let lf = Logferry::start(&CONFIG.replace("{source_extra}", "metadata_key = \"_meta\""));
    let mut s = TcpStream::connect(lf.forward).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let header = |b: &mut Vec<u8>, secs: u32, meta: Option<&str>| {
        write_array_len(b, 2).unwrap();
        write_ext_meta(b, 8, 0).unwrap();
        b.extend_from_slice(&secs.to_be_bytes());
        b.extend_from_slice(&5u32.to_be_bytes());
        match meta {
            Some(v) => {
                write_map_len(b, 1).unwrap();
                write_str(b, "trace_id").unwrap();
                write_str(b, v).unwrap();
            }
            None => write_map_len(b, 0).map(|_| ()).unwrap(),
        }
    };
    let record = |b: &mut Vec<u8>, log: &str| {
        write_map_len(b, 1).unwrap();
        write_str(b, "log").unwrap();
        write_str(b, log).unwrap();
    };
    let chunk = |b: &mut Vec<u8>, id: &str| {
        write_map_len(b, 1).unwrap();
        write_str(b, "chunk").unwrap();
        write_str(b, id).unwrap();
    };
    // Message mode: [tag, [time, metadata], record, option]
    let mut m = Vec::new();
    write_array_len(&mut m, 4).unwrap();
    write_str(&mut m, "t.message").unwrap();
    header(&mut m, 1_700_000_000, Some("abc"));
    record(&mut m, "message");
    chunk(&mut m, "m1");
    // PackedForward: [tag, bin([[time, metadata], record]...), option]
    let mut entries = Vec::new();
    for i in 0..2u32 {
        write_array_len(&mut entries, 2).unwrap();
        header(&mut entries, 1_700_000_001 + i, None);
        record(&mut entries, &format!("packed-{i}"));
    }
    write_array_len(&mut m, 3).unwrap();
    write_str(&mut m, "t.packed").unwrap();
    write_bin_len(&mut m, entries.len() as u32).unwrap();
    m.extend_from_slice(&entries);
    chunk(&mut m, "p1");
    s.write_all(&m).unwrap();
    let mut acks = Vec::new();
    let mut buf = [0u8; 64];
    // {"ack": "m1"} then {"ack": "p1"}, 8 bytes each.
    let expected: &[u8] = b"\x81\xa3ack\xa2m1\x81\xa3ack\xa2p1";
    while acks.len() < expected.len() {
        let n = s.read(&mut buf).expect("ack");
        assert!(n > 0, "connection closed:\n{}", lf.stderr());
        acks.extend_from_slice(&buf[..n]);
    }
    assert_eq!(acks, expected);
    let records = read_jsonl(&lf.path("out.jsonl"));
    assert_eq!(records.len(), 3, "{records:?}");
    assert_eq!(records[0]["log"], "message");
    assert_eq!(records[0]["_meta"]["trace_id"], "abc");
    assert_eq!(records[0]["time"].as_f64(), Some(1_700_000_000.000_000_005));
    assert_eq!(records[2]["log"], "packed-1");
    assert_eq!(records[2]["_meta"], serde_json::json!({}));
}
