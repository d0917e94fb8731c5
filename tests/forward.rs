//! The forward source end to end: the real binary, real clients (Python fluent-logger, Docker's
//! recorded frames, our load generator), records read back from a file sink.

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use logferry_test_kit::forward_ack::{expected_ack, read_ack};
use logferry_test_kit::logferry::{check_sequence, loadgen, read_jsonl, wait_for_lines, Logferry};
use logferry_test_kit::paths::python;

const FORWARD_TO_FILE: &str = r#"
[service]
http_listen = "{http}"
grace_period = "20s"

[[sources]]
type = "forward"
listen = "{forward}"
unix_path = "{dir}/fluent.sock"

[[sinks]]
type = "file"
match = "*"
path = "{dir}/out.jsonl"
time_key = "time"
time_key_format = "double"
"#;

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/firelens")
}

/// msgpack helpers for hand-built frames.
mod frames {
    use rmp::encode::*;

    pub fn event_time(out: &mut Vec<u8>, secs: u32, nanos: u32, ext8: bool) {
        if ext8 {
            out.extend_from_slice(&[0xc7, 8, 0]);
        } else {
            write_ext_meta(out, 8, 0).unwrap();
        }
        out.extend_from_slice(&secs.to_be_bytes());
        out.extend_from_slice(&nanos.to_be_bytes());
    }

    pub fn record(out: &mut Vec<u8>, msg: &str) {
        write_map_len(out, 1).unwrap();
        write_str(out, "msg").unwrap();
        write_str(out, msg).unwrap();
    }

    pub fn option_chunk(out: &mut Vec<u8>, chunk: &str, extra: Option<(&str, &str)>) {
        write_map_len(out, if extra.is_some() { 2 } else { 1 }).unwrap();
        write_str(out, "chunk").unwrap();
        write_str(out, chunk).unwrap();
        if let Some((k, v)) = extra {
            write_str(out, k).unwrap();
            write_str(out, v).unwrap();
        }
    }

    pub fn gzip(data: &[u8]) -> Vec<u8> {
        use std::io::Write;
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        enc.write_all(data).unwrap();
        enc.finish().unwrap()
    }
}

#[test]
fn python_fluent_logger_records_arrive_with_their_times() {
    let mut lf = Logferry::start(FORWARD_TO_FILE);
    let script = r#"
import sys
from fluent import sender, event
s = sender.FluentSender('app', host='127.0.0.1', port=int(sys.argv[1]), nanosecond_precision=True)
for i in range(200):
    ok = s.emit_with_time('web', 1715679001 + i + 0.123456789, {'i': i, 'msg': 'héllo %d' % i, 'nested': {'k': [1, 2.5, None, True]}})
    assert ok, s.last_error
s.close()
"#;
    let out = Command::new(python())
        .args(["-c", script, &lf.forward.port().to_string()])
        .output()
        .expect("python");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    wait_for_lines(&lf.path("out.jsonl"), 200, Duration::from_secs(20));
    assert!(lf.terminate().success(), "{}", lf.stderr());
    let records = read_jsonl(&lf.path("out.jsonl"));
    assert_eq!(records.len(), 200);
    for (i, r) in records.iter().enumerate() {
        assert_eq!(r["i"], i as u64);
        assert_eq!(r["msg"], format!("héllo {i}"));
        assert_eq!(r["nested"]["k"], serde_json::json!([1, 2.5, null, true]));
        // EventTime with nanoseconds survives: the double is written with 9 decimals.
        let t = r["time"].as_f64().unwrap();
        let want = 1715679001.0 + i as f64 + 0.123456789;
        assert!((t - want).abs() < 1e-6, "record {i}: time {t}, want {want}");
    }
}

#[test]
fn every_mode_is_decoded_and_acked_only_after_delivery() {
    use rmp::encode::*;
    let mut lf = Logferry::start(FORWARD_TO_FILE);
    let mut s = TcpStream::connect(lf.forward).unwrap();

    // Message mode, integer time, with chunk.
    let mut m = Vec::new();
    write_array_len(&mut m, 4).unwrap();
    write_str(&mut m, "t.message").unwrap();
    write_uint(&mut m, 1700000000).unwrap();
    frames::record(&mut m, "message");
    frames::option_chunk(&mut m, "c1", None);
    // A keepalive between messages.
    m.push(0xc0);
    s.write_all(&m).unwrap();
    assert_eq!(read_ack(&mut s), expected_ack("c1"));

    // Forward mode, float time and fixext8 EventTime.
    let mut m = Vec::new();
    write_array_len(&mut m, 3).unwrap();
    write_str(&mut m, "t.forward").unwrap();
    write_array_len(&mut m, 2).unwrap();
    write_array_len(&mut m, 2).unwrap();
    write_f64(&mut m, 1700000001.5).unwrap();
    frames::record(&mut m, "forward-1");
    write_array_len(&mut m, 2).unwrap();
    frames::event_time(&mut m, 1700000002, 7, false);
    frames::record(&mut m, "forward-2");
    frames::option_chunk(&mut m, "c2", None);
    s.write_all(&m).unwrap();
    assert_eq!(read_ack(&mut s), expected_ack("c2"));

    // PackedForward with ext8 EventTime, written in two pieces.
    let mut entries = Vec::new();
    for i in 0..3 {
        write_array_len(&mut entries, 2).unwrap();
        frames::event_time(&mut entries, 1700000003, i, true);
        frames::record(&mut entries, &format!("packed-{i}"));
    }
    let mut m = Vec::new();
    write_array_len(&mut m, 3).unwrap();
    write_str(&mut m, "t.packed").unwrap();
    write_bin_len(&mut m, entries.len() as u32).unwrap();
    m.extend_from_slice(&entries);
    frames::option_chunk(&mut m, "c3", None);
    let (a, b) = m.split_at(m.len() / 2);
    s.write_all(a).unwrap();
    std::thread::sleep(Duration::from_millis(50));
    s.write_all(b).unwrap();
    assert_eq!(read_ack(&mut s), expected_ack("c3"));

    // CompressedPackedForward: two gzip members back to back.
    let mut first = Vec::new();
    let mut second = Vec::new();
    for (buf, name) in [(&mut first, "gz-1"), (&mut second, "gz-2")] {
        write_array_len(buf, 2).unwrap();
        frames::event_time(buf, 1700000004, 0, false);
        frames::record(buf, name);
    }
    let mut payload = frames::gzip(&first);
    payload.extend(frames::gzip(&second));
    let mut m = Vec::new();
    write_array_len(&mut m, 3).unwrap();
    write_str(&mut m, "t.gzip").unwrap();
    write_bin_len(&mut m, payload.len() as u32).unwrap();
    m.extend_from_slice(&payload);
    frames::option_chunk(&mut m, "c4", Some(("compressed", "gzip")));
    s.write_all(&m).unwrap();
    assert_eq!(read_ack(&mut s), expected_ack("c4"));

    // Acked means delivered: the records are in the file already, before any shutdown.
    let records = read_jsonl(&lf.path("out.jsonl"));
    let msgs: Vec<_> = records.iter().map(|r| r["msg"].as_str().unwrap()).collect();
    assert_eq!(
        msgs,
        [
            "message",
            "forward-1",
            "forward-2",
            "packed-0",
            "packed-1",
            "packed-2",
            "gz-1",
            "gz-2"
        ]
    );
    assert_eq!(records[0]["time"].as_f64(), Some(1700000000.0));
    assert_eq!(records[1]["time"].as_f64(), Some(1700000001.5));
    // Nanoseconds are kept exactly (parsing into f64 would round them; look at the text).
    let raw = std::fs::read_to_string(lf.path("out.jsonl")).unwrap();
    let third = raw.lines().nth(2).unwrap();
    assert!(third.contains("1700000002.000000007"), "{third}");
    drop(s);
    assert!(lf.terminate().success());
}

#[test]
fn docker_fluentd_frames_over_the_unix_socket_are_reassembled() {
    let config = FORWARD_TO_FILE.replace(
        "[[sinks]]",
        "[[transforms]]\ntype = \"partial_message\"\nmatch = \"*\"\n\n[[sinks]]",
    );
    let mut lf = Logferry::start(&config);
    let frames = std::fs::read(fixtures().join("docker-fluentd-frames.bin")).unwrap();
    let expected: serde_json::Value = serde_json::from_slice(
        &std::fs::read(fixtures().join("docker-fluentd-frames.expected.json")).unwrap(),
    )
    .unwrap();
    let mut s = UnixStream::connect(lf.path("fluent.sock")).unwrap();
    // Odd-sized writes, so frames are split across reads as they are in real life.
    for piece in frames.chunks(997) {
        s.write_all(piece).unwrap();
    }
    drop(s);
    std::thread::sleep(Duration::from_millis(300));
    assert!(lf.terminate().success(), "{}", lf.stderr());
    let records = read_jsonl(&lf.path("out.jsonl"));

    let frames_json = expected["frames"]
        .as_array()
        .or_else(|| expected.as_array())
        .expect("frames list in the expected file");
    let partial_chunks = frames_json
        .iter()
        .filter(|f| f.to_string().contains("partial_message"))
        .count();
    // Every partial chunk of one line collapses into one record; other frames map 1:1.
    assert!(partial_chunks >= 2, "the fixture has partial chunks");
    assert!(records.len() < frames_json.len(), "partials were joined");
    assert!(records.iter().all(|r| r.get("partial_message").is_none()));
    let longest = records
        .iter()
        .map(|r| r["log"].as_str().map_or(0, str::len))
        .max()
        .unwrap();
    assert!(
        longest > 16384,
        "the long line was reassembled ({longest} bytes)"
    );
    for r in &records {
        assert!(r["container_id"].as_str().is_some_and(|c| c.len() == 64));
        assert!(r["container_name"]
            .as_str()
            .is_some_and(|c| c.starts_with('/')));
    }
}

#[test]
fn malformed_and_oversized_frames_close_only_their_connection() {
    let config = FORWARD_TO_FILE.replace(
        "unix_path = \"{dir}/fluent.sock\"",
        "buffer_max_size = \"64KiB\"",
    );
    let mut lf = Logferry::start(&config);
    let mut good = TcpStream::connect(lf.forward).unwrap();

    // Garbage: a map where the message array should be, then junk.
    let mut bad = TcpStream::connect(lf.forward).unwrap();
    bad.write_all(&[0x81, 0xa1, b'x', 0x01, 0xff, 0xff])
        .unwrap();
    bad.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut buf = [0u8; 16];
    assert_eq!(
        bad.read(&mut buf).unwrap_or(0),
        0,
        "a bad connection is closed"
    );

    // A frame announcing 1 MiB of payload, over the 64 KiB limit.
    let mut big = TcpStream::connect(lf.forward).unwrap();
    let mut m = Vec::new();
    rmp::encode::write_array_len(&mut m, 3).unwrap();
    rmp::encode::write_str(&mut m, "t").unwrap();
    rmp::encode::write_bin_len(&mut m, 1 << 20).unwrap();
    m.extend(std::iter::repeat_n(0u8, 70_000));
    let _ = big.write_all(&m);
    big.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    assert_eq!(
        big.read(&mut buf).unwrap_or(0),
        0,
        "an oversized frame closes its connection"
    );

    // The good connection still works.
    let mut m = Vec::new();
    rmp::encode::write_array_len(&mut m, 4).unwrap();
    rmp::encode::write_str(&mut m, "t.good").unwrap();
    rmp::encode::write_uint(&mut m, 1700000000).unwrap();
    frames::record(&mut m, "still here");
    frames::option_chunk(&mut m, "ok", None);
    good.write_all(&m).unwrap();
    assert_eq!(read_ack(&mut good), expected_ack("ok"));

    let metrics = lf.metrics();
    assert!(
        metrics.contains("logferry_errors_total{component=\"forward.0\",kind=\"source\",reason=\"malformed_frame\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("logferry_errors_total{component=\"forward.0\",kind=\"source\",reason=\"frame_too_large\"} 1"),
        "{metrics}"
    );
    assert!(lf.terminate().success());
    assert_eq!(read_jsonl(&lf.path("out.jsonl")).len(), 1);
}

#[test]
fn sigterm_drains_everything_sent_before_it() {
    let mut lf = Logferry::start(FORWARD_TO_FILE);
    let n = 200_000u64;
    loadgen(
        &lf.forward.to_string(),
        &[
            "--records",
            &n.to_string(),
            "--size",
            "200",
            "--batch",
            "500",
        ],
    );
    // The client is done writing; much of it may still sit in socket buffers and queues.
    let status = lf.terminate();
    assert!(status.success(), "exit {status}:\n{}", lf.stderr());
    let records = read_jsonl(&lf.path("out.jsonl"));
    check_sequence(&records, n);
}

#[test]
fn acked_load_is_all_delivered() {
    let mut lf = Logferry::start(FORWARD_TO_FILE);
    let n = 50_000u64;
    let out = loadgen(
        &lf.forward.to_string(),
        &["--records", &n.to_string(), "--batch", "1000", "--ack"],
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["acked_messages"], 50);
    // Every acked record is already in the file.
    check_sequence(&read_jsonl(&lf.path("out.jsonl")), n);
    assert!(lf.terminate().success());
}

/// The `seq` field of a JSON line, without a full parse (the test reads 300k lines).
fn seq_of(line: &str) -> Option<u64> {
    let start = line.find("\"seq\":")? + 6;
    let digits: String = line[start..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().ok()
}

#[test]
fn a_stalled_sink_pauses_the_source_with_bounded_memory_and_loses_nothing() {
    use std::io::BufRead;
    let pipe_dir = tempfile::tempdir().unwrap();
    let pipe = pipe_dir.path().join("out.pipe");
    let reader = logferry_test_kit::logferry::stalled_fifo(&pipe);
    let config = format!(
        r#"
[service]
http_listen = "{{http}}"
[[sources]]
type = "forward"
listen = "{{forward}}"
[[sinks]]
type = "file"
match = "*"
path = "{}"
buffer_limit = "2MiB"
"#,
        pipe.display()
    );
    let mut lf = Logferry::start(&config);
    let n = 300_000u64;
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
                "200",
            ],
        )
    });
    // Nobody reads the pipe: the sink stalls after the pipe's 64 KiB, its queue fills to 2 MiB,
    // and the forward source must stop reading. 60 MB are offered meanwhile.
    std::thread::sleep(Duration::from_secs(3));
    assert!(
        !sender.is_finished(),
        "the client must be blocked by backpressure"
    );
    let (rss, peak) = lf.memory_kib();
    crate::support::figures::report(format!(
        "while stalled: rss {rss} KiB, peak {peak} KiB, offered ~60000 KiB"
    ));
    assert!(
        peak < 48 * 1024,
        "peak RSS {peak} KiB while the sink was stalled"
    );
    let queued = lf
        .metric("logferry_queue_bytes{component=\"file.0\"")
        .unwrap_or(0.0);
    assert!(
        queued <= 2.0 * 1048576.0,
        "queue holds {queued} bytes, over its 2 MiB bound"
    );

    // Unstall: read everything; every record arrives exactly once.
    let mut seen = vec![0u8; n as usize];
    let mut lines = std::io::BufReader::new(reader).lines();
    let mut count = 0u64;
    while count < n {
        let line = lines.next().expect("more lines").unwrap();
        let seq = seq_of(&line).unwrap_or_else(|| panic!("no seq in {line}"));
        seen[seq as usize] += 1;
        count += 1;
    }
    sender.join().unwrap();
    assert!(lf.terminate().success(), "{}", lf.stderr());
    let missing = seen.iter().filter(|&&c| c == 0).count();
    let dup = seen.iter().filter(|&&c| c > 1).count();
    assert_eq!((missing, dup), (0, 0), "missing, duplicated");
}
