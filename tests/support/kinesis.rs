//! The Kinesis sink's end-to-end tests: logferry with a forward source and one `kinesis` sink
//! (the kit's process harness, with the AWS test environment), `logferry loadgen` with
//! sequence numbers, and logferry fed on stdin. Reading a stream back is the test kit's
//! (re-exported here, so tests name everything Kinesis as `kin::...`).

use std::io::Write;
use std::net::SocketAddr;
use std::ops::{Deref, DerefMut};
use std::process::{Command, Stdio};
use std::time::Duration;

pub use logferry_test_kit::kinesis::*;
/// The values of every metric line starting with a prefix, added up (0 when none).
pub use logferry_test_kit::metrics::sum as metric_value;
pub use logferry_test_kit::net::listening;
pub use logferry_test_kit::wait::tail;

use logferry_test_kit::fault_kinesis::FaultKinesis;
use logferry_test_kit::logferry::{self as harness, Launch, Ready};
use logferry_test_kit::wait::wait_for_exit;

/// The config of a forward source on `forward`, HTTP on `http`, and `sink` (the TOML of one
/// `[[sinks]]` entry, without the header).
pub fn config_text(forward: SocketAddr, http: SocketAddr, sink: &str) -> String {
    typed_config_text("kinesis", forward, http, sink)
}

/// [`config_text`] for a sink of another `type` (the AWS sinks share this harness).
pub fn typed_config_text(kind: &str, forward: SocketAddr, http: SocketAddr, sink: &str) -> String {
    format!(
        "[service]\nhttp_listen = \"{http}\"\ngrace_period = \"20s\"\nlog_level = \"debug\"\n\n\
         [[sources]]\ntype = \"forward\"\nlisten = \"{forward}\"\n\n\
         [[sinks]]\ntype = \"{kind}\"\nmatch = \"*\"\n{sink}\n"
    )
}

/// The kit's [`harness::Logferry`] running [`config_text`] for one kinesis sink, with the
/// static test credentials and debug logs (stdout and stderr in its log).
pub struct Logferry(harness::Logferry);

impl Deref for Logferry {
    type Target = harness::Logferry;
    fn deref(&self) -> &harness::Logferry {
        &self.0
    }
}

impl DerefMut for Logferry {
    fn deref_mut(&mut self) -> &mut harness::Logferry {
        &mut self.0
    }
}

impl Logferry {
    /// Starts logferry with a forward source and the given kinesis sink options; `env` adds or
    /// overrides environment variables (after the static test credentials).
    pub fn start(sink: &str, env: &[(&str, &str)]) -> Logferry {
        Self::start_typed("kinesis", sink, env)
    }

    /// As [`Logferry::start`], with a sink of type `kind` (`cloudwatch_logs`, ...).
    pub fn start_typed(kind: &str, sink: &str, env: &[(&str, &str)]) -> Logferry {
        let configure = |command: &mut Command| {
            aws_env(command);
            command.env("RUST_LOG", "logferry=debug,info");
        };
        Logferry(harness::Logferry::launch(
            |at| typed_config_text(kind, at.forward, at.http, sink),
            Launch {
                env,
                configure: &configure,
                ready: Ready::Forward,
                timeout: Duration::from_secs(30),
                stdout_to_log: true,
            },
        ))
    }

    /// What logferry logged so far.
    pub fn log(&self) -> String {
        self.stderr()
    }

    /// Sends `records` records of ~`size` bytes with `logferry loadgen`, starting at `seq`.
    pub fn loadgen(&self, start_seq: u64, records: u64, size: usize) {
        loadgen(self.forward, start_seq, records, size, 500, true);
    }

    /// Like [`Logferry::loadgen`] without waiting for acks (for sinks that cannot deliver).
    pub fn loadgen_no_ack(&self, start_seq: u64, records: u64, size: usize) {
        loadgen(self.forward, start_seq, records, size, 500, false);
    }

    /// The value of the metric lines starting with `prefix` (name and labels), added up; 0
    /// when absent.
    pub fn metric(&self, prefix: &str) -> f64 {
        self.metric_sum(prefix)
    }

    /// Waits until `check` holds, polling; panics with the log after `timeout`.
    pub fn wait_for(
        &self,
        what: &str,
        timeout: Duration,
        mut check: impl FnMut(&Logferry) -> bool,
    ) {
        self.wait_until(what, timeout, || check(self));
    }

    /// SIGTERM, then waits for a clean exit (the sink drains first). Returns the exit code.
    pub fn stop(mut self) -> (i32, String) {
        let status = self.terminate_within(Duration::from_secs(40));
        (status.code().unwrap_or(-1), self.log())
    }
}

/// Runs `logferry loadgen` against `target`, starting at `start_seq`.
pub fn loadgen(
    target: SocketAddr,
    start_seq: u64,
    records: u64,
    size: usize,
    batch: usize,
    ack: bool,
) {
    let mut args = vec![
        "--records".to_string(),
        records.to_string(),
        "--size".to_string(),
        size.to_string(),
        "--batch".to_string(),
        batch.to_string(),
        "--start-seq".to_string(),
        start_seq.to_string(),
    ];
    if ack {
        args.push("--ack".to_string());
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    harness::loadgen(&target.to_string(), &args);
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
    let mut command = Command::new(harness::logferry_bin());
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
    wait_for_exit(&mut child, Duration::from_secs(60), || {
        "logferry fed on stdin did not drain and exit".to_string()
    });
    let output = child.wait_with_output().expect("logferry's output");
    let log = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(
        output.status.success(),
        "logferry exited with {}:\n{}",
        output.status,
        tail(&log, 60)
    );
    log
}

/// What the fault-injecting stand-in accepted, read as user records: the deaggregation uses
/// the crate's own KPL decoder, which the kit (not depending on the crate) cannot.
pub trait AcceptedUserSeqs {
    /// `seq` of every user record accepted, once per acceptance (aggregated records are split
    /// with the crate's deaggregator; plain records are JSON with a `seq`).
    fn accepted_user_seqs(&self) -> Vec<u64>;
}

impl AcceptedUserSeqs for FaultKinesis {
    fn accepted_user_seqs(&self) -> Vec<u64> {
        use logferry::kinesis_record::kpl;
        use logferry::kinesis_record::Record;
        self.seen(|seen| {
            let mut seqs = Vec::new();
            for (data, times) in &seen.accepted {
                let users = kpl::deaggregate(Record::new("k", bytes::Bytes::from(data.clone())))
                    .expect("accepted data deaggregates");
                for user in users {
                    let json: serde_json::Value = serde_json::from_slice(&user.data).unwrap();
                    let seq = json["seq"].as_u64().expect("a seq");
                    seqs.extend(std::iter::repeat_n(seq, *times as usize));
                }
            }
            seqs
        })
    }
}
