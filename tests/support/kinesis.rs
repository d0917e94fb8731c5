//! Helpers for the Kinesis sink's end-to-end tests: running the real `logferry` binary with a
//! config in a temp dir, sending records, and reading a stream back (boto3 GetRecords on every
//! shard + the official aws-kinesis-agg deaggregator, in tests/support/kinesis_tool.py).
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine;
use serde::Deserialize;

use crate::support::services::{free_port, http_request, python, support_file, wait_listening};

/// Static test credentials (moto accepts any while auth enforcement is off).
pub const ACCESS_KEY: &str = "AKIAIOSFODNN7EXAMPLE";
pub const SECRET_KEY: &str = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY";
pub const REGION: &str = "us-east-1";

/// Environment for AWS clients in tests: static keys, a region, nothing from the host.
pub fn aws_env(command: &mut Command) {
    for var in [
        "AWS_PROFILE",
        "AWS_SESSION_TOKEN",
        "AWS_ROLE_ARN",
        "AWS_WEB_IDENTITY_TOKEN_FILE",
        "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
        "AWS_CONTAINER_CREDENTIALS_FULL_URI",
        "AWS_ENDPOINT_URL",
        "AWS_ENDPOINT_URL_STS",
        "AWS_ENDPOINT_URL_KINESIS",
    ] {
        command.env_remove(var);
    }
    command
        .env("AWS_ACCESS_KEY_ID", ACCESS_KEY)
        .env("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
        .env("AWS_REGION", REGION)
        .env("AWS_DEFAULT_REGION", REGION)
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("NO_COLOR", "1")
        .env("AWS_CONFIG_FILE", "/nonexistent/logferry-test-config")
        .env(
            "AWS_SHARED_CREDENTIALS_FILE",
            "/nonexistent/logferry-test-credentials",
        );
}

/// Runs kinesis_tool.py with `args`; panics with its output when it fails.
pub fn tool(endpoint: &str, args: &[&str]) -> Vec<u8> {
    let mut command = Command::new(python());
    command
        .arg(support_file("kinesis_tool.py"))
        .arg(endpoint)
        .args(args);
    aws_env(&mut command);
    let output = command.output().expect("run kinesis_tool.py");
    assert!(
        output.status.success(),
        "kinesis_tool.py {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    output.stdout
}

pub fn create_stream(endpoint: &str, stream: &str, shards: u32) {
    tool(endpoint, &["create", stream, &shards.to_string()]);
}

#[derive(Debug, Clone, Deserialize)]
pub struct ShardInfo {
    pub shard_id: String,
    pub start: String,
    pub end: String,
    pub closed: bool,
}

impl ShardInfo {
    pub fn contains(&self, hash: u128) -> bool {
        let start: u128 = self.start.parse().unwrap();
        let end: u128 = self.end.parse().unwrap();
        start <= hash && hash <= end
    }
}

#[derive(Debug, Clone, Deserialize)]
pub struct UserRecord {
    pub partition_key: String,
    pub explicit_hash_key: Option<String>,
    pub data_b64: String,
}

impl UserRecord {
    pub fn data(&self) -> Vec<u8> {
        base64::engine::general_purpose::STANDARD
            .decode(&self.data_b64)
            .unwrap()
    }

    /// The data as JSON (records are sent as JSON objects by default).
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.data()).unwrap_or_else(|e| {
            panic!(
                "record data is not JSON ({e}): {:?}",
                String::from_utf8_lossy(&self.data())
            )
        })
    }
}

#[derive(Debug, Clone, Deserialize)]
pub struct StreamRecord {
    pub shard_id: String,
    pub sequence_number: String,
    pub partition_key: String,
    pub data_b64: String,
    pub aggregated: bool,
    /// ApproximateArrivalTimestamp, seconds since the epoch.
    pub arrival: f64,
    pub users: Vec<UserRecord>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct StreamContents {
    pub shards: Vec<ShardInfo>,
    pub records: Vec<StreamRecord>,
}

impl StreamContents {
    pub fn shard(&self, id: &str) -> &ShardInfo {
        self.shards
            .iter()
            .find(|s| s.shard_id == id)
            .unwrap_or_else(|| panic!("no shard {id}"))
    }

    /// Every user record (deaggregated), with the shard it was read from.
    pub fn users(&self) -> Vec<(&str, &UserRecord)> {
        self.records
            .iter()
            .flat_map(|r| r.users.iter().map(move |u| (r.shard_id.as_str(), u)))
            .collect()
    }

    /// `seq` of every user record (JSON data with a `seq` field), counted.
    pub fn seq_counts(&self) -> BTreeMap<u64, usize> {
        let mut counts = BTreeMap::new();
        for (_, user) in self.users() {
            let seq = user.json()["seq"]
                .as_u64()
                .unwrap_or_else(|| panic!("record without seq: {:?}", user.json()));
            *counts.entry(seq).or_default() += 1;
        }
        counts
    }
}

pub fn read_stream(endpoint: &str, stream: &str) -> StreamContents {
    serde_json::from_slice(&tool(endpoint, &["read", stream])).expect("kinesis_tool read output")
}

/// The hash key Kinesis computes for a partition key (MD5, big-endian), computed here with
/// the md-5 crate directly rather than the sink's own shard_map code.
pub fn md5_hash_key(key: &str) -> u128 {
    use md5::Digest;
    u128::from_be_bytes(md5::Md5::digest(key.as_bytes()).into())
}

// --- the logferry binary ------------------------------------------------------------------------

/// A running `logferry run`, killed on drop. Its stderr goes to a file shown on failure.
pub struct Logferry {
    child: Child,
    pub dir: tempfile::TempDir,
    pub forward: SocketAddr,
    pub http: SocketAddr,
    log: PathBuf,
}

/// The config of a forward source on `forward`, HTTP on `http`, and `sink` (the TOML of one
/// `[[sinks]]` entry, without the header).
pub fn config_text(forward: SocketAddr, http: SocketAddr, sink: &str) -> String {
    format!(
        "[service]\nhttp_listen = \"{http}\"\ngrace_period = \"20s\"\nlog_level = \"debug\"\n\n\
         [[sources]]\ntype = \"forward\"\nlisten = \"{forward}\"\n\n\
         [[sinks]]\ntype = \"kinesis\"\nmatch = \"*\"\n{sink}\n"
    )
}

impl Logferry {
    /// Starts logferry with a forward source and the given kinesis sink options; `env` adds or
    /// overrides environment variables (after the static test credentials).
    pub fn start(sink: &str, env: &[(&str, &str)]) -> Logferry {
        let dir = tempfile::tempdir().unwrap();
        let forward = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let http = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let config = dir.path().join("logferry.toml");
        std::fs::write(&config, config_text(forward, http, sink)).unwrap();
        let log = dir.path().join("logferry.log");
        let mut command = Command::new(env!("CARGO_BIN_EXE_logferry"));
        command.arg("run").arg("--config").arg(&config);
        aws_env(&mut command);
        command.env("RUST_LOG", "logferry=debug,info");
        for (k, v) in env {
            command.env(k, v);
        }
        command
            .stdin(Stdio::null())
            .stdout(Stdio::from(std::fs::File::create(&log).unwrap()))
            .stderr(Stdio::from(
                std::fs::OpenOptions::new().append(true).open(&log).unwrap(),
            ));
        let child = command.spawn().expect("start logferry");
        let mut me = Logferry {
            child,
            dir,
            forward,
            http,
            log,
        };
        if let Err(reason) = wait_listening(&mut me.child, forward, Duration::from_secs(30)) {
            let _ = me.child.kill();
            panic!("logferry {reason}:\n{}", me.log());
        }
        me
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Sends `records` records of ~`size` bytes with `logferry loadgen`, starting at `seq`.
    pub fn loadgen(&self, start_seq: u64, records: u64, size: usize) {
        loadgen(self.forward, start_seq, records, size, 500, true);
    }

    /// Like [`Logferry::loadgen`] without waiting for acks (for sinks that cannot deliver).
    pub fn loadgen_no_ack(&self, start_seq: u64, records: u64, size: usize) {
        loadgen(self.forward, start_seq, records, size, 500, false);
    }

    /// `GET /health`: (status, body).
    pub fn health(&self) -> (u16, String) {
        let (status, body) = http_request(self.http, "GET", "/health", b"");
        (status, String::from_utf8_lossy(&body).into_owned())
    }

    /// `GET /metrics`.
    pub fn metrics(&self) -> String {
        let (_, body) = http_request(self.http, "GET", "/metrics", b"");
        String::from_utf8_lossy(&body).into_owned()
    }

    /// The value of a metric line starting with `prefix` (name and labels), 0 when absent.
    pub fn metric(&self, prefix: &str) -> f64 {
        metric_value(&self.metrics(), prefix)
    }

    /// Waits until `check` holds, polling; panics with the log after `timeout`.
    pub fn wait_for(
        &self,
        what: &str,
        timeout: Duration,
        mut check: impl FnMut(&Logferry) -> bool,
    ) {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if check(self) {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!(
            "timed out waiting for {what}; logferry log:\n{}",
            tail(&self.log(), 60)
        );
    }

    /// SIGTERM, then waits for a clean exit (the sink drains first). Returns the exit code.
    pub fn stop(mut self) -> (i32, String) {
        let pid = self.child.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        let deadline = Instant::now() + Duration::from_secs(40);
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return (status.code().unwrap_or(-1), self.log());
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!(
                    "logferry did not stop within 40 s:\n{}",
                    tail(&self.log(), 60)
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Logferry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

pub fn metric_value(metrics: &str, prefix: &str) -> f64 {
    metrics
        .lines()
        .filter(|l| l.starts_with(prefix))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Runs `logferry loadgen` against `target`.
pub fn loadgen(
    target: SocketAddr,
    start_seq: u64,
    records: u64,
    size: usize,
    batch: usize,
    ack: bool,
) {
    let output = Command::new(env!("CARGO_BIN_EXE_logferry"))
        .args([
            "loadgen",
            "--target",
            &target.to_string(),
            "--records",
            &records.to_string(),
            "--size",
            &size.to_string(),
            "--batch",
            &batch.to_string(),
            "--start-seq",
            &start_seq.to_string(),
        ])
        .args(ack.then_some("--ack"))
        .output()
        .expect("run logferry loadgen");
    assert!(
        output.status.success(),
        "loadgen failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Runs logferry with a stdin source fed `lines` (JSON objects) and the given kinesis sink
/// options, until it drains and exits. Returns its log.
pub fn run_stdin(sink: &str, lines: &[String], env: &[(&str, &str)]) -> String {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("logferry.toml");
    std::fs::write(
        &config,
        format!(
            "[service]\nhttp_listen = \"off\"\ngrace_period = \"20s\"\n\n\
             [[sources]]\ntype = \"stdin\"\nformat = \"json\"\ntag = \"app\"\n\n\
             [[sinks]]\ntype = \"kinesis\"\nmatch = \"*\"\n{sink}\n"
        ),
    )
    .unwrap();
    let mut command = Command::new(env!("CARGO_BIN_EXE_logferry"));
    command.arg("run").arg("--config").arg(&config);
    aws_env(&mut command);
    command.env("RUST_LOG", "logferry=debug,info");
    for (k, v) in env {
        command.env(k, v);
    }
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start logferry");
    {
        let mut stdin = child.stdin.take().unwrap();
        for line in lines {
            writeln!(stdin, "{line}").unwrap();
        }
    }
    let output = wait_with_timeout(child, Duration::from_secs(60));
    let log = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(
        output.status.success(),
        "logferry exited with {}:\n{}",
        output.status,
        tail(&log, 60)
    );
    log
}

fn wait_with_timeout(mut child: Child, timeout: Duration) -> std::process::Output {
    let deadline = Instant::now() + timeout;
    loop {
        if let Ok(Some(_)) = child.try_wait() {
            return child.wait_with_output().unwrap();
        }
        if Instant::now() > deadline {
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

/// True when something accepts connections at `addr`.
pub fn listening(addr: SocketAddr) -> bool {
    TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok()
}

pub fn unique_stream(prefix: &str) -> String {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static N: AtomicUsize = AtomicUsize::new(0);
    format!(
        "{prefix}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

pub fn path_str(p: &Path) -> &str {
    p.to_str().unwrap()
}
