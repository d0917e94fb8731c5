//! MSK IAM with a slow credentials source: fetching credentials must not hold librdkafka's
//! polling thread, which also serves the delivery reports that forward acks wait for.
//!
//! The credentials come from a `credential_process` (aws-config's profile provider) that takes
//! 4 s after its first run and hands out credentials living 40 s, shorter than logferry's 5-minute
//! refresh margin, so they are always due for a refresh. Tokens are refreshed every 1.6 s
//! (test-only lifetime cap). A callback that fetched credentials itself would stall the polling
//! thread 4 s at a time and delay acks by seconds; fetched in the background, the acks of a
//! client that sends one acknowledged message every 0.4 s stay quick while a fetch runs.

use support::kafka;
mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use kafka::{assert_exactly_once, consume_msk, seqs, TansuBehindProxy, AKID, SECRET};
use logferry_test_kit::logferry::Logferry;
use logferry_test_kit::net::connect_when_listening;
use logferry_test_kit::wait::wait_until_or;

/// Acks normally take milliseconds; a callback that waits for the 4 s fetch delays them by up to
/// 4 s. The bound is generous on purpose: it checks that nothing blocks for the fetch's length.
const ACK_BOUND: Duration = Duration::from_millis(1500);

const MESSAGES: u64 = 60;

fn config(bootstrap: &str) -> String {
    format!(
        r#"
[service]
http_listen = "{{http}}"
grace_period = "20s"

[[sources]]
type = "forward"
listen = "{{forward}}"

[[sinks]]
type = "kafka"
name = "msk"
match = "*"
brokers = "{bootstrap}"
topics = "logs"
aws_msk_iam = true
region = "us-east-1"

[sinks.rdkafka]
"security.protocol" = "SASL_PLAINTEXT"
"reconnect.backoff.max.ms" = 1000
"statistics.interval.ms" = 1000
"#
    )
}

/// `[tag, [[time, {"seq": n, "log": "..."}]], {"chunk": "c<n>"}]`.
fn message(seq: u64) -> (Vec<u8>, Vec<u8>) {
    use rmp::encode::*;
    let chunk = format!("c{seq}");
    let mut out = Vec::new();
    write_array_len(&mut out, 3).unwrap();
    write_str(&mut out, "slow").unwrap();
    write_array_len(&mut out, 1).unwrap();
    write_array_len(&mut out, 2).unwrap();
    write_uint(&mut out, 1_715_679_001).unwrap();
    write_map_len(&mut out, 2).unwrap();
    write_str(&mut out, "seq").unwrap();
    write_uint(&mut out, seq).unwrap();
    write_str(&mut out, "log").unwrap();
    write_str(&mut out, "slow credentials").unwrap();
    write_map_len(&mut out, 1).unwrap();
    write_str(&mut out, "chunk").unwrap();
    write_str(&mut out, &chunk).unwrap();
    let mut ack = Vec::new();
    write_map_len(&mut ack, 1).unwrap();
    write_str(&mut ack, "ack").unwrap();
    write_str(&mut ack, &chunk).unwrap();
    (out, ack)
}

/// A credential_process script: instant the first time, 4 s afterwards; each run is logged.
fn credential_process(dir: &std::path::Path) -> std::path::PathBuf {
    let runs = dir.join("credential-process.runs");
    let script = dir.join("slow-credentials.sh");
    std::fs::write(
        &script,
        format!(
            r#"#!/bin/sh
runs="{runs}"
if [ -s "$runs" ]; then sleep 4; fi
date +%s >> "$runs"
expiration=$(date -u -d "+40 seconds" +%Y-%m-%dT%H:%M:%SZ)
printf '{{"Version": 1, "AccessKeyId": "{AKID}", "SecretAccessKey": "{SECRET}", "Expiration": "%s"}}\n' "$expiration"
"#,
            runs = runs.display()
        ),
    )
    .unwrap();
    let status = std::process::Command::new("chmod")
        .arg("+x")
        .arg(&script)
        .status()
        .unwrap();
    assert!(status.success());
    script
}

fn runs(dir: &std::path::Path) -> usize {
    std::fs::read_to_string(dir.join("credential-process.runs"))
        .unwrap_or_default()
        .lines()
        .count()
}

#[test]
fn slow_credentials_do_not_stall_delivery_reports() {
    let work = tempfile::tempdir().unwrap();
    let script = credential_process(work.path());
    let profile = work.path().join("aws-config");
    std::fs::write(
        &profile,
        format!("[default]\ncredential_process = {}\n", script.display()),
    )
    .unwrap();
    let profile = profile.display().to_string();

    let stack = TansuBehindProxy::start();
    stack.create_topic("logs", 1);
    let proxy = stack.proxy(SECRET, &[]);
    let mut lf = Logferry::start_with_env(
        &config(&stack.bootstrap()),
        &[
            // Nothing from the environment: the profile's credential_process is the source.
            ("AWS_ACCESS_KEY_ID", ""),
            ("AWS_SECRET_ACCESS_KEY", ""),
            ("AWS_SESSION_TOKEN", ""),
            ("AWS_PROFILE", "default"),
            ("AWS_CONFIG_FILE", profile.as_str()),
            ("AWS_SHARED_CREDENTIALS_FILE", "/dev/null"),
            ("AWS_EC2_METADATA_DISABLED", "true"),
            ("LOGFERRY_TEST_ONLY_MSK_TOKEN_LIFETIME_MS", "2000"),
            ("RUST_LOG", "info"),
        ],
    );
    let mut client = connect_when_listening(lf.forward, Duration::from_secs(20));
    client
        .set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    let send = |client: &mut TcpStream, seq: u64| -> Duration {
        let (msg, want) = message(seq);
        let started = Instant::now();
        client.write_all(&msg).unwrap();
        let mut got = vec![0u8; want.len()];
        client.read_exact(&mut got).expect("an ack");
        assert_eq!(got, want);
        started.elapsed()
    };
    // The first delivery may wait for the connection and the first token.
    send(&mut client, 0);

    // 60 acknowledged messages over ~25 s, past the moment (20 s after the first fetch) the
    // credentials are due and the 4 s fetch runs, with tokens refreshed every 1.6 s.
    let mut slowest = Duration::ZERO;
    let mut acks = Vec::new();
    for seq in 1..MESSAGES {
        let took = send(&mut client, seq);
        acks.push(took.as_millis());
        slowest = slowest.max(took);
        std::thread::sleep(Duration::from_millis(400));
    }
    wait_until_or(
        "a background fetch to finish",
        Duration::from_secs(30),
        || runs(work.path()) >= 2,
        || lf.stderr(),
    );
    let refreshes = lf.stderr().matches("MSK IAM token refreshed").count();
    support::figures::report(format!(
        "slowest ack {slowest:?}; acks (ms) {acks:?}; credential_process runs {}; token \
         refreshes {refreshes}",
        runs(work.path())
    ));
    assert!(
        slowest < ACK_BOUND,
        "an ack took {slowest:?}: the polling thread waited for credentials ({acks:?} ms)\n{}",
        lf.stderr()
    );
    assert!(refreshes >= 10, "tokens refreshed {refreshes} times");
    // Background fetches run when the credentials are due, not once per token.
    let fetched = runs(work.path());
    assert!(
        (2..=4).contains(&fetched),
        "credential_process ran {fetched} times for {refreshes} tokens"
    );
    let stats = proxy.stats();
    assert_eq!(stats["auth_failed"], 0, "{stats}");
    assert!(lf
        .metric(
            "logferry_auth_failures_total{component=\"msk\",kind=\"sink\",reason=\"msk_token\"}"
        )
        .is_none_or(|v| v == 0.0));
    assert!(lf.terminate().success(), "{}", lf.stderr());
    let records = consume_msk(
        &stack.bootstrap(),
        "logs",
        MESSAGES as usize,
        Duration::from_secs(60),
    );
    assert_exactly_once(&seqs(&records), 0..MESSAGES);
}
