//! Dead letters end to end, driving the real binary: records a sink cannot deliver land in its
//! `dead_letter_path` with the reason, and `logferry replay-dead-letters` delivers them once
//! the cause is fixed — exactly once, also when run again.
//!
//! Kinesis runs against moto (the stream read back with boto3), Kafka against tansu.

use support::kafka;
use support::kinesis as kin;
mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use logferry_test_kit::stand_ins::{Moto, Tansu};

/// Runs logferry with a stdin source (JSON lines, tag `app`) and one sink until it drains and
/// exits; returns its exit code and log.
fn run_stdin(config: &Path, lines: &[impl AsRef<[u8]>]) -> (i32, String) {
    use std::io::Write;
    let mut command = Command::new(env!("CARGO_BIN_EXE_logferry"));
    command.arg("run").arg("--config").arg(config);
    kin::aws_env(&mut command);
    command.env("RUST_LOG", "logferry=debug,info");
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start logferry");
    {
        let mut stdin = child.stdin.take().unwrap();
        for line in lines {
            stdin.write_all(line.as_ref()).unwrap();
            stdin.write_all(b"\n").unwrap();
        }
    }
    let output = wait(child, Duration::from_secs(60));
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

fn wait(mut child: std::process::Child, timeout: Duration) -> Output {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        if let Ok(Some(_)) = child.try_wait() {
            return child.wait_with_output().unwrap();
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!(
                "logferry did not exit within {timeout:?}:\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `logferry replay-dead-letters --config CONFIG --sink SINK [extra]`: (exit code, stdout,
/// stderr).
fn replay(config: &Path, sink: &str, extra: &[&str]) -> (i32, String, String) {
    let mut command = Command::new(env!("CARGO_BIN_EXE_logferry"));
    command
        .arg("replay-dead-letters")
        .arg("--config")
        .arg(config)
        .args(["--sink", sink, "--timeout", "45s"])
        .args(extra);
    kin::aws_env(&mut command);
    let child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start replay-dead-letters");
    let out = wait(child, Duration::from_secs(60));
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn files_with(dir: &Path, suffix: &str) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|d| d.map(|e| e.unwrap().path()).collect())
        .unwrap_or_default();
    files.retain(|p| p.to_string_lossy().ends_with(suffix));
    files.sort();
    files
}

fn letters(dir: &Path) -> Vec<serde_json::Value> {
    files_with(dir, ".jsonl")
        .iter()
        .flat_map(|f| {
            std::fs::read_to_string(f)
                .unwrap()
                .lines()
                .map(|l| serde_json::from_str(l).unwrap())
                .collect::<Vec<serde_json::Value>>()
        })
        .collect()
}

fn record(seq: u64, size: usize) -> String {
    serde_json::json!({"seq": seq, "log": "x".repeat(size)}).to_string()
}

fn kinesis_config(dir: &Path, endpoint: &str, stream: &str, extra: &str) -> PathBuf {
    let config = dir.join("logferry.toml");
    std::fs::write(
        &config,
        format!(
            "[service]\nhttp_listen = \"off\"\ngrace_period = \"20s\"\n\n\
             [[sources]]\ntype = \"stdin\"\nformat = \"json\"\ntag = \"app\"\n\n\
             [[sinks]]\nname = \"k\"\ntype = \"kinesis\"\nmatch = \"*\"\nstream = \"{stream}\"\n\
             endpoint = \"{endpoint}\"\nflush = \"200ms\"\npartition_key = \"seq\"\n\
             dead_letter_path = \"{}\"\n{extra}\n",
            dir.join("dl").display()
        ),
    )
    .unwrap();
    config
}

#[test]
fn kinesis_too_large_records_are_dead_lettered_then_replayed_exactly_once() {
    let moto = Moto::start();
    let stream = kin::unique_stream("dl");
    kin::create_stream(&moto.endpoint(), &stream, 2);
    let dir = tempfile::tempdir().unwrap();
    let dl = dir.path().join("dl");

    // 1. A 4 KiB per-record limit: the three 6 KB records cannot be sent.
    let config = kinesis_config(
        dir.path(),
        &moto.endpoint(),
        &stream,
        "max_record_size = \"4KiB\"",
    );
    let mut lines: Vec<String> = (0..10).map(|seq| record(seq, 100)).collect();
    lines.extend((10..13).map(|seq| record(seq, 6000)));
    let (code, log) = run_stdin(&config, &lines);
    assert_eq!(code, 0, "{}", kin::tail(&log, 40));
    assert!(
        log.contains("written to the dead-letter file"),
        "{}",
        kin::tail(&log, 40)
    );

    let contents = kin::read_stream(&moto.endpoint(), &stream);
    let delivered: Vec<u64> = contents.seq_counts().keys().copied().collect();
    assert_eq!(
        delivered,
        (0..10).collect::<Vec<_>>(),
        "only the small records"
    );

    let dead = letters(&dl);
    assert_eq!(dead.len(), 3, "one dead letter per large record: {dead:?}");
    for (letter, seq) in dead.iter().zip(10..) {
        assert_eq!(letter["sink"], "k");
        assert_eq!(letter["reason"], "too_large");
        assert_eq!(letter["tag"], "app");
        assert_eq!(letter["record"]["seq"], seq);
        assert_eq!(letter["record"]["log"].as_str().unwrap().len(), 6000);
        let error = letter["error"].as_str().unwrap();
        assert!(error.contains("4096 byte record limit"), "{error}");
        assert!(letter["time"].as_str().unwrap().ends_with('Z'));
        assert!(letter["event_time"].is_string());
    }

    // 2. Replaying with the limit unfixed: dead-lettered again into a new file, exit 2.
    let (code, out, err) = replay(&config, "k", &[]);
    assert_eq!(code, 2, "{out}\n{err}");
    assert!(out.contains("dead-lettered again 3"), "{out}\n{err}");
    assert_eq!(
        files_with(&dl, ".replayed").len(),
        1,
        "the first file is done"
    );
    assert_eq!(
        letters(&dl).len(),
        3,
        "the records are in the new file, once"
    );

    // 3. The cause fixed (the stream's own 1 MiB limit): delivered, files marked.
    let config = kinesis_config(dir.path(), &moto.endpoint(), &stream, "");
    let (code, out, err) = replay(&config, "k", &[]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(out.contains("delivered 3,"), "{out}");
    assert!(files_with(&dl, ".jsonl").is_empty(), "every file replayed");
    assert_eq!(files_with(&dl, ".replayed").len(), 2);
    assert!(files_with(&dl, ".progress").is_empty());

    // 4. Run again: nothing left to send.
    let (code, out, err) = replay(&config, "k", &[]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(out.contains("read 0 records"), "{out}");

    let contents = kin::read_stream(&moto.endpoint(), &stream);
    let counts = contents.seq_counts();
    assert_eq!(counts.len(), 13, "{counts:?}");
    assert!(counts.values().all(|&n| n == 1), "exactly once: {counts:?}");
    for user in contents.records.iter().flat_map(|r| r.users.iter()) {
        let json = user.json();
        if json["seq"].as_u64().unwrap() >= 10 {
            assert_eq!(json["log"].as_str().unwrap().len(), 6000, "record intact");
        }
    }
}

#[test]
fn an_unwritable_dead_letter_path_is_reported_not_a_crash() {
    let dir = tempfile::tempdir().unwrap();
    // A file where the directory should be.
    let blocked = dir.path().join("dl");
    std::fs::write(&blocked, b"not a directory").unwrap();
    let config = dir.path().join("logferry.toml");
    std::fs::write(
        &config,
        format!(
            "[[sources]]\ntype = \"stdin\"\nformat = \"json\"\n\n\
             [[sinks]]\ntype = \"file\"\nmatch = \"*\"\npath = \"{}\"\ndead_letter_path = \"{}\"\n",
            dir.path().join("out.jsonl").display(),
            blocked.display()
        ),
    )
    .unwrap();
    let (code, log) = run_stdin(&config, &[record(1, 10)]);
    assert_eq!(code, 2, "{log}");
    assert!(log.contains("dead_letter_path"), "{log}");
    assert!(
        log.contains("not a directory") || log.contains("File exists"),
        "{log}"
    );
    assert!(!log.contains("panicked"), "{log}");
}

#[test]
fn file_sink_unencodable_records_are_dead_lettered_and_replayed() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.txt");
    let dl = dir.path().join("dl");
    let write_config = |log_key: &str| {
        let config = dir.path().join("logferry.toml");
        std::fs::write(
            &config,
            format!(
                "[service]\nhttp_listen = \"off\"\n\n\
                 [[sources]]\ntype = \"stdin\"\nformat = \"json\"\ntag = \"app\"\n\n\
                 [[sinks]]\nname = \"f\"\ntype = \"file\"\nmatch = \"*\"\npath = \"{}\"\n\
                 format = \"text\"\nlog_key = \"{log_key}\"\ndead_letter_path = \"{}\"\n",
                out.display(),
                dl.display()
            ),
        )
        .unwrap();
        config
    };
    // `text` writes the `message` field: a record without it cannot be encoded.
    let config = write_config("message");
    let lines = vec![
        r#"{"message": "one"}"#.to_string(),
        r#"{"msg": "two, under another key", "n": 2}"#.to_string(),
        r#"{"message": "three"}"#.to_string(),
    ];
    let (code, log) = run_stdin(&config, &lines);
    assert_eq!(code, 0, "{log}");
    assert_eq!(std::fs::read_to_string(&out).unwrap(), "one\nthree\n");
    let dead = letters(&dl);
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert_eq!(dead[0]["reason"], "unencodable");
    assert_eq!(dead[0]["sink"], "f");
    assert_eq!(
        dead[0]["record"],
        serde_json::json!({"msg": "two, under another key", "n": 2})
    );
    assert!(dead[0]["error"].as_str().unwrap().contains("message"));

    // Fixed: the sink writes `msg` now.
    let config = write_config("msg");
    let (code, stdout, err) = replay(&config, "f", &[]);
    assert_eq!(code, 0, "{stdout}\n{err}");
    assert!(stdout.contains("delivered 1,"), "{stdout}");
    assert_eq!(
        std::fs::read_to_string(&out).unwrap(),
        "one\nthree\ntwo, under another key\n"
    );
    assert!(files_with(&dl, ".jsonl").is_empty());
}

#[test]
fn kafka_records_over_message_max_bytes_are_dead_lettered_then_replayed() {
    let tansu = Tansu::start();
    tansu.create_topic("dl-logs", 1);
    let dir = tempfile::tempdir().unwrap();
    let dl = dir.path().join("dl");
    let write_config = |max_bytes: &str| {
        let config = dir.path().join("logferry.toml");
        std::fs::write(
            &config,
            format!(
                "[service]\nhttp_listen = \"off\"\ngrace_period = \"20s\"\n\n\
                 [[sources]]\ntype = \"stdin\"\nformat = \"json\"\ntag = \"app\"\n\n\
                 [[sinks]]\nname = \"kf\"\ntype = \"kafka\"\nmatch = \"*\"\nbrokers = \"{}\"\n\
                 topics = \"dl-logs\"\ndead_letter_path = \"{}\"\n\
                 [sinks.rdkafka]\n\"message.max.bytes\" = \"{max_bytes}\"\n",
                tansu.bootstrap(),
                dl.display()
            ),
        )
        .unwrap();
        config
    };
    // librdkafka refuses a message over message.max.bytes before sending it.
    let config = write_config("2000");
    let mut lines: Vec<String> = (0..5).map(|seq| record(seq, 100)).collect();
    lines.extend((5..7).map(|seq| record(seq, 5000)));
    let (code, log) = run_stdin(&config, &lines);
    assert_eq!(code, 0, "{}", kin::tail(&log, 40));
    let dead = letters(&dl);
    assert_eq!(dead.len(), 2, "{dead:?}\n{}", kin::tail(&log, 40));
    for (letter, seq) in dead.iter().zip(5..) {
        assert_eq!(letter["reason"], "too_large");
        assert_eq!(letter["sink"], "kf");
        assert_eq!(letter["record"]["seq"], seq);
    }

    let config = write_config("1000000");
    let (code, out, err) = replay(&config, "kf", &[]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(out.contains("delivered 2,"), "{out}");
    assert!(files_with(&dl, ".jsonl").is_empty());

    let consumed = kafka::consume(&tansu.bootstrap(), "dl-logs", 7, Duration::from_secs(30));
    let mut seqs = kafka::seqs(&consumed);
    seqs.sort();
    assert_eq!(
        seqs,
        (0..7).collect::<Vec<_>>(),
        "every record exactly once"
    );
}

#[test]
fn kafka_records_naming_a_missing_topic_are_dead_lettered_then_replayed() {
    let tansu = Tansu::start();
    tansu.create_topic("dl-default", 1);
    let dir = tempfile::tempdir().unwrap();
    let dl = dir.path().join("dl");
    let config = dir.path().join("logferry.toml");
    std::fs::write(
        &config,
        format!(
            "[service]\nhttp_listen = \"off\"\ngrace_period = \"20s\"\n\n\
             [[sources]]\ntype = \"stdin\"\nformat = \"json\"\ntag = \"app\"\n\n\
             [[sinks]]\nname = \"kf\"\ntype = \"kafka\"\nmatch = \"*\"\nbrokers = \"{}\"\n\
             topics = \"dl-default\"\ntopic_key = \"topic\"\ndynamic_topic = true\n\
             dead_letter_path = \"{}\"\n\
             [sinks.rdkafka]\n\"topic.metadata.propagation.max.ms\" = \"1000\"\n",
            tansu.bootstrap(),
            dl.display()
        ),
    )
    .unwrap();
    let line = |seq: u64, topic: &str| {
        serde_json::json!({"seq": seq, "topic": topic, "log": "hello"}).to_string()
    };
    let lines = vec![
        line(0, "dl-default"),
        line(1, "dl-missing"),
        line(2, "dl-default"),
        line(3, "dl-missing"),
    ];
    let (code, log) = run_stdin(&config, &lines);
    assert_eq!(code, 0, "{}", kin::tail(&log, 40));
    let dead = letters(&dl);
    assert_eq!(dead.len(), 2, "{dead:?}\n{}", kin::tail(&log, 40));
    for (letter, seq) in dead.iter().zip([1, 3]) {
        assert_eq!(letter["reason"], "topic_not_allowed");
        assert_eq!(letter["record"]["seq"], seq);
        assert!(letter["error"].as_str().unwrap().contains("dl-missing"));
    }

    // Fixed: the topic exists now.
    tansu.create_topic("dl-missing", 1);
    let (code, out, err) = replay(&config, "kf", &[]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(out.contains("delivered 2,"), "{out}");
    let consumed = kafka::consume(&tansu.bootstrap(), "dl-missing", 2, Duration::from_secs(30));
    let mut seqs = kafka::seqs(&consumed);
    seqs.sort();
    assert_eq!(seqs, vec![1, 3]);
    let consumed = kafka::consume(&tansu.bootstrap(), "dl-default", 2, Duration::from_secs(30));
    assert_eq!(kafka::seqs(&consumed).len(), 2);
}

#[test]
fn bytes_that_are_not_utf8_survive_the_dead_letter_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.txt");
    let dl = dir.path().join("dl");
    let write_config = |log_key: &str| {
        let config = dir.path().join("logferry.toml");
        std::fs::write(
            &config,
            format!(
                "[service]\nhttp_listen = \"off\"\n\n\
                 [[sources]]\ntype = \"stdin\"\nformat = \"text\"\ntag = \"app\"\n\n\
                 [[sinks]]\nname = \"f\"\ntype = \"file\"\nmatch = \"*\"\npath = \"{}\"\n\
                 format = \"text\"\nlog_key = \"{log_key}\"\ndead_letter_path = \"{}\"\n",
                out.display(),
                dl.display()
            ),
        )
        .unwrap();
        config
    };
    // Text lines become {"log": <bytes>}; `message` does not exist, so none can be encoded.
    let broken: Vec<u8> = b"half a euro sign \xe2\x82 and \xff\xfe raw".to_vec();
    let lines = vec![broken.clone(), "plain \u{e9}t\u{e9}".as_bytes().to_vec()];
    let (code, log) = run_stdin(&write_config("message"), &lines);
    assert_eq!(code, 0, "{log}");
    let dead = letters(&dl);
    assert_eq!(dead.len(), 2, "{dead:?}");
    assert!(
        dead[0]["record"]["log"]["$base64"].is_string(),
        "{}",
        dead[0]
    );
    assert_eq!(dead[1]["record"]["log"], "plain \u{e9}t\u{e9}");

    let (code, stdout, err) = replay(&write_config("log"), "f", &[]);
    assert_eq!(code, 0, "{stdout}\n{err}");
    let mut expected = broken;
    expected.push(b'\n');
    expected.extend_from_slice("plain \u{e9}t\u{e9}\n".as_bytes());
    assert_eq!(std::fs::read(&out).unwrap(), expected, "byte for byte");
}

#[test]
fn a_dead_letter_directory_that_breaks_at_run_time_shows_on_health_and_metrics() {
    use logferry_test_kit::net::{free_port, http_request};
    use std::io::Write;
    let dir = tempfile::tempdir().unwrap();
    let dl = dir.path().join("dl");
    let http = std::net::SocketAddr::from(([127, 0, 0, 1], free_port()));
    let config = dir.path().join("logferry.toml");
    std::fs::write(
        &config,
        format!(
            "[service]\nhttp_listen = \"{http}\"\n\n\
             [[sources]]\ntype = \"stdin\"\nformat = \"json\"\ntag = \"app\"\n\n\
             [[sinks]]\nname = \"f\"\ntype = \"file\"\nmatch = \"*\"\npath = \"{}\"\n\
             format = \"text\"\nlog_key = \"message\"\ndead_letter_path = \"{}\"\n",
            dir.path().join("out.txt").display(),
            dl.display()
        ),
    )
    .unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_logferry"))
        .arg("run")
        .arg("--config")
        .arg(&config)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    assert!(logferry_test_kit::net::wait_port(
        http,
        Duration::from_secs(30)
    ));
    // The directory exists (created at start); now it is replaced by a file.
    std::fs::remove_dir(&dl).unwrap();
    std::fs::write(&dl, b"not a directory").unwrap();
    let mut stdin = child.stdin.take().unwrap();
    writeln!(stdin, r#"{{"msg": "no message field"}}"#).unwrap();
    stdin.flush().unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let body = loop {
        let (status, body) = http_request(http, "GET", "/health", b"");
        let body = String::from_utf8_lossy(&body).into_owned();
        if status == 503 {
            break body;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "still healthy: {body}"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(body.contains("f dead letters"), "{body}");
    assert!(body.contains("cannot write dead letters"), "{body}");
    let (_, metrics) = http_request(http, "GET", "/metrics", b"");
    let metrics = String::from_utf8_lossy(&metrics);
    assert!(
        metrics.contains(
            r#"logferry_dead_letter_failures_total{component="f",reason="unencodable"} 1"#
        ),
        "{metrics}"
    );
    drop(stdin);
    let out = wait(child, Duration::from_secs(30));
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(log.contains("dead-letter write failed"), "{log}");
    assert!(!log.contains("panicked"), "{log}");
}

#[test]
fn replay_skips_the_file_being_written_and_resumes_after_an_interruption() {
    use std::io::Write;
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.txt");
    let dl = dir.path().join("dl");
    let write_config = |log_key: &str| {
        let config = dir.path().join(format!("{log_key}.toml"));
        std::fs::write(
            &config,
            format!(
                "[service]\nhttp_listen = \"off\"\n\n\
                 [[sources]]\ntype = \"stdin\"\nformat = \"json\"\ntag = \"app\"\n\n\
                 [[sinks]]\nname = \"f\"\ntype = \"file\"\nmatch = \"*\"\npath = \"{}\"\n\
                 format = \"text\"\nlog_key = \"{log_key}\"\ndead_letter_path = \"{}\"\n",
                out.display(),
                dl.display()
            ),
        )
        .unwrap();
        config
    };
    let broken = write_config("message");
    let fixed = write_config("msg");

    // A running logferry holds its dead-letter file open (and locked).
    let mut child = Command::new(env!("CARGO_BIN_EXE_logferry"))
        .arg("run")
        .arg("--config")
        .arg(&broken)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    for n in 1..=5 {
        writeln!(stdin, r#"{{"msg": "record {n}"}}"#).unwrap();
    }
    stdin.flush().unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while letters(&dl).len() < 5 {
        assert!(
            std::time::Instant::now() < deadline,
            "no dead letters written"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let (code, stdout, err) = replay(&fixed, "f", &[]);
    assert_eq!(code, 2, "{stdout}\n{err}");
    assert!(stdout.contains("locked"), "{stdout}");
    assert!(!out.exists() || std::fs::read(&out).unwrap().is_empty());
    assert_eq!(letters(&dl).len(), 5, "the file in use is left alone");
    drop(stdin);
    let status = wait(child, Duration::from_secs(30)).status;
    assert!(status.success());

    // An earlier replay was interrupted after committing the first two lines.
    let file = &files_with(&dl, ".jsonl")[0];
    std::fs::write(format!("{}.progress", file.display()), "2\n").unwrap();
    let (code, stdout, err) = replay(&fixed, "f", &[]);
    assert_eq!(code, 0, "{stdout}\n{err}");
    assert!(
        stdout.contains("read 3 records (2 already done"),
        "{stdout}"
    );
    assert_eq!(
        std::fs::read_to_string(&out).unwrap(),
        "record 3\nrecord 4\nrecord 5\n",
        "the lines already done are not sent again"
    );
    assert!(files_with(&dl, ".progress").is_empty());
}

/// A minimal Kinesis stand-in (DescribeStreamSummary, PutRecords) that refuses, per entry
/// with `ValidationException`, every record whose data contains `poison` while `picky` is set.
/// No emulator refuses single entries as invalid, hence this one.
struct PickyKinesis {
    addr: std::net::SocketAddr,
    picky: std::sync::Arc<std::sync::atomic::AtomicBool>,
    accepted: std::sync::Arc<std::sync::Mutex<Vec<serde_json::Value>>>,
}

impl PickyKinesis {
    fn start() -> PickyKinesis {
        use std::sync::atomic::AtomicBool;
        use std::sync::{Arc, Mutex};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let picky = Arc::new(AtomicBool::new(true));
        let accepted = Arc::new(Mutex::new(Vec::new()));
        let (p, a) = (picky.clone(), accepted.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let (p, a) = (p.clone(), a.clone());
                std::thread::spawn(move || Self::serve(stream, &p, &a));
            }
        });
        PickyKinesis {
            addr,
            picky,
            accepted,
        }
    }

    fn serve(
        stream: std::net::TcpStream,
        picky: &std::sync::atomic::AtomicBool,
        accepted: &std::sync::Mutex<Vec<serde_json::Value>>,
    ) {
        use base64::Engine;
        use std::io::{BufRead, BufReader, Read, Write};
        let mut out = stream.try_clone().unwrap();
        let mut reader = BufReader::new(stream);
        loop {
            let mut line = String::new();
            if reader.read_line(&mut line).unwrap_or(0) == 0 {
                return;
            }
            let (mut length, mut target) = (0usize, String::new());
            loop {
                let mut header = String::new();
                if reader.read_line(&mut header).unwrap_or(0) == 0 {
                    return;
                }
                let header = header.trim_end();
                if header.is_empty() {
                    break;
                }
                if let Some((name, value)) = header.split_once(':') {
                    match name.to_ascii_lowercase().as_str() {
                        "content-length" => length = value.trim().parse().unwrap_or(0),
                        "x-amz-target" => target = value.trim().to_string(),
                        _ => {}
                    }
                }
            }
            let mut body = vec![0; length];
            if reader.read_exact(&mut body).is_err() {
                return;
            }
            let answer = if target.ends_with("DescribeStreamSummary") {
                serde_json::json!({"StreamDescriptionSummary": {
                    "StreamName": "picky", "StreamARN": "arn:aws:kinesis:us-east-1:123456789012:stream/picky",
                    "StreamStatus": "ACTIVE", "RetentionPeriodHours": 24,
                    "StreamCreationTimestamp": 1700000000.0, "EnhancedMonitoring": [],
                    "OpenShardCount": 1}})
            } else {
                let request: serde_json::Value = serde_json::from_slice(&body).unwrap();
                let mut failed = 0;
                let mut results = Vec::new();
                for record in request["Records"].as_array().unwrap() {
                    let data = base64::engine::general_purpose::STANDARD
                        .decode(record["Data"].as_str().unwrap())
                        .unwrap();
                    let poison = data.windows(6).any(|w| w == b"poison");
                    if poison && picky.load(std::sync::atomic::Ordering::SeqCst) {
                        failed += 1;
                        results.push(serde_json::json!({
                            "ErrorCode": "ValidationException",
                            "ErrorMessage": "record rejected by the stand-in"}));
                    } else {
                        accepted
                            .lock()
                            .unwrap()
                            .push(serde_json::from_slice(&data).unwrap());
                        results.push(serde_json::json!({
                            "SequenceNumber": "1", "ShardId": "shardId-000000000000"}));
                    }
                }
                serde_json::json!({"FailedRecordCount": failed, "Records": results})
            };
            let text = answer.to_string();
            let _ = write!(
                out,
                "HTTP/1.1 200 OK\r\nContent-Type: application/x-amz-json-1.1\r\n\
                 x-amzn-RequestId: 0\r\nContent-Length: {}\r\n\r\n{text}",
                text.len()
            );
        }
    }
}

#[test]
fn kinesis_entries_refused_as_invalid_are_dead_lettered_then_replayed() {
    let kinesis = PickyKinesis::start();
    let dir = tempfile::tempdir().unwrap();
    let dl = dir.path().join("dl");
    let config = kinesis_config(dir.path(), &format!("http://{}", kinesis.addr), "picky", "");
    let lines: Vec<String> = (0..5)
        .map(|seq| {
            let log = if seq % 2 == 1 { "poison" } else { "fine" };
            serde_json::json!({"seq": seq, "log": log}).to_string()
        })
        .collect();
    let (code, log) = run_stdin(&config, &lines);
    assert_eq!(code, 0, "{}", kin::tail(&log, 40));
    let dead = letters(&dl);
    assert_eq!(dead.len(), 2, "{dead:?}");
    for (letter, seq) in dead.iter().zip([1, 3]) {
        assert_eq!(letter["reason"], "rejected");
        assert_eq!(letter["record"]["seq"], seq);
        let error = letter["error"].as_str().unwrap();
        assert!(error.contains("ValidationException"), "{error}");
    }
    assert_eq!(kinesis.accepted.lock().unwrap().len(), 3);

    kinesis
        .picky
        .store(false, std::sync::atomic::Ordering::SeqCst);
    let (code, out, err) = replay(&config, "k", &[]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(out.contains("delivered 2,"), "{out}");
    let mut seqs: Vec<u64> = kinesis
        .accepted
        .lock()
        .unwrap()
        .iter()
        .map(|r| r["seq"].as_u64().unwrap())
        .collect();
    seqs.sort();
    assert_eq!(seqs, vec![0, 1, 2, 3, 4], "each record exactly once");
}

#[test]
fn replay_names_what_is_wrong_with_its_arguments() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("logferry.toml");
    std::fs::write(
        &config,
        "[[sources]]\ntype = \"stdin\"\n\n[[sinks]]\nname = \"out\"\ntype = \"stdout\"\nmatch = \"*\"\n",
    )
    .unwrap();
    let (code, out, err) = replay(&config, "nope", &[]);
    assert_eq!(code, 1, "{out}\n{err}");
    assert!(err.contains("no sink named `nope`; sinks: out"), "{err}");
    let (code, out, err) = replay(&config, "out", &[]);
    assert_eq!(code, 1, "{out}\n{err}");
    assert!(err.contains("has no dead_letter_path"), "{err}");
    assert!(err.contains("--file"), "{err}");

    // A Fluent Bit config works the same way: its outputs are the sinks to choose from.
    let classic = dir.path().join("fluent-bit.conf");
    std::fs::write(
        &classic,
        "[INPUT]\n    Name forward\n    Port 24224\n\n[OUTPUT]\n    Name stdout\n    Match *\n",
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_logferry"))
        .arg("replay-dead-letters")
        .arg("--fluent-bit-config")
        .arg(&classic)
        .args(["--sink", "nope"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("fluent-bit.conf"), "{err}");
    assert!(err.contains("no sink named `nope`; sinks: "), "{err}");
    assert!(err.contains("stdout"), "{err}");
}
