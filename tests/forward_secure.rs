//! Secure forward with real clients: TLS and the shared_key / users handshake of the forward
//! protocol v1, as Fluent Bit's `out_forward` and a spec-following Python client do it.
//!
//! - Fluent Bit (`FLUENT_BIT_BIN`, see tests/fluent_bit_client.rs; a loud SKIPPED line when
//!   unset) over TLS with `Shared_Key`: every record exactly once, with `tls.verify off` and
//!   with our CA; with a wrong key or password nothing arrives and the failure is counted and
//!   logged with the peer; without `tls on` against the TLS port the connection is refused.
//!   Fluent Bit 5.1's out_forward does the handshake whenever `Shared_Key` is set, with or
//!   without TLS (it waits for the HELO, so against a TLS port it stalls until
//!   `handshake_timeout`).
//! - Python: the fluent-logger package has no TLS and no shared_key support, so
//!   tests/support/secure_forward_client.py, written from the specification with `ssl`,
//!   `hashlib` and `msgpack`, is the second client: it computes the digests itself and checks
//!   the server's PONG digest. Client certificates (mutual TLS) are tested with it.
//! - Plain text on the TLS port and a stalled handshake, with raw sockets.
//!
//! Certificates are made at test time with the `openssl` CLI (a CA, a server certificate for
//! 127.0.0.1/localhost and a client certificate), in the test's temp dir.

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use logferry_test_kit::logferry::{check_sequence, read_jsonl, wait_for_lines, Logferry};
use logferry_test_kit::metrics;
use logferry_test_kit::paths::python;
use logferry_test_kit::stand_ins::{fluent_bit_bin, numbered_lines, FluentBit};
use support::tls::{make_certs, Certs};

const SHARED_KEY: &str = "fleet-key-3f9c";

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
"#;

/// `[sources.tls]` and the rest of the forward options must come after the plain keys.
fn config(extra: &str) -> String {
    CONFIG.replace("{source_extra}", extra)
}

/// Starts logferry with TLS (certificates made first, in a dir of their own) and `extra` keys.
/// `{crt}`, `{key}` and `{ca}` in `extra` are replaced by the files.
fn start_tls(extra: &str) -> (Logferry, Certs, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let certs = make_certs(dir.path());
    let extra = extra
        .replace("{crt}", &certs.server_crt.display().to_string())
        .replace("{key}", &certs.server_key.display().to_string())
        .replace("{ca}", &certs.ca.display().to_string());
    let lf = Logferry::start(&config(&extra));
    (lf, certs, dir)
}

const TLS_AND_KEY: &str = r#"shared_key = "fleet-key-3f9c"
self_hostname = "aggregator-test"
[sources.tls]
crt_file = "{crt}"
key_file = "{key}"
"#;

/// The sum of the metric lines of the forward source with this name and reason.
fn counted(lf: &Logferry, metric: &str, reason: &str) -> f64 {
    let name = format!("logferry_{metric}_total{{");
    let reason = format!("reason=\"{reason}\"");
    metrics::sum_containing(&lf.metrics(), &[&name, "kind=\"source\"", &reason])
}

/// No secret in logferry's log, whatever happened.
fn assert_no_secret_logged(lf: &Logferry, secrets: &[&str]) {
    let log = lf.stderr();
    for s in secrets {
        assert!(!log.contains(s), "`{s}` appears in the log:\n{log}");
    }
}

struct PyResult {
    ok: bool,
    json: serde_json::Value,
}

/// Runs the Python secure-forward client against logferry.
fn py_client(lf: &Logferry, args: &[&str]) -> PyResult {
    let script =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/support/secure_forward_client.py");
    let out = Command::new(python())
        .arg(script)
        .arg("127.0.0.1")
        .arg(lf.forward.port().to_string())
        .args(args)
        .output()
        .expect("run the Python client");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let json = serde_json::from_str(stdout.trim()).unwrap_or_else(|e| {
        panic!(
            "client output {stdout:?} ({e}); stderr: {}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    PyResult {
        ok: out.status.success(),
        json,
    }
}

fn tls_args(certs: &Certs) -> Vec<String> {
    vec![
        "--tls".into(),
        "--ca".into(),
        certs.ca.display().to_string(),
    ]
}

fn strs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

#[test]
fn python_client_over_tls_with_the_shared_key_delivers_every_record_once() {
    let (mut lf, certs, _d) = start_tls(TLS_AND_KEY);
    let mut args = tls_args(&certs);
    args.extend(["--shared-key", SHARED_KEY, "--count", "200"].map(String::from));
    let r = py_client(&lf, &strs(&args));
    assert!(r.ok, "{}\n--- logferry:\n{}", r.json, lf.stderr());
    assert_eq!(r.json["helo"]["nonce_len"], 16);
    assert_eq!(r.json["helo"]["auth_len"], 0, "no users: empty auth salt");
    assert_eq!(r.json["helo"]["keepalive"], true);
    assert_eq!(r.json["pong"][1], true);
    assert_eq!(r.json["pong"][3], "aggregator-test");
    assert_eq!(r.json["pong_digest_ok"], true);
    assert_eq!(r.json["acked"], 200);
    wait_for_lines(&lf.path("out.jsonl"), 200, Duration::from_secs(20));
    assert!(lf.terminate().success(), "{}", lf.stderr());
    check_sequence(&read_jsonl(&lf.path("out.jsonl")), 200);
    assert_no_secret_logged(&lf, &[SHARED_KEY]);
}

#[test]
fn python_client_with_a_wrong_key_gets_a_failed_pong_and_nothing_enters() {
    let (mut lf, certs, _d) = start_tls(TLS_AND_KEY);
    let mut args = tls_args(&certs);
    args.extend(
        [
            "--shared-key",
            "wrong-key-77",
            "--hostname",
            "intruder-host",
        ]
        .map(String::from),
    );
    let r = py_client(&lf, &strs(&args));
    assert!(!r.ok, "{}", r.json);
    assert_eq!(r.json["pong"][1], false, "{}", r.json);
    assert_eq!(r.json["pong"][2], "shared_key mismatch");
    assert_eq!(r.json["acked"], 0);
    lf.wait_until("the wrong key counted", Duration::from_secs(10), || {
        counted(&lf, "auth_failures", "shared_key") == 1.0
    });
    let log = lf.stderr();
    let line = log
        .lines()
        .find(|l| l.contains("handshake failed"))
        .unwrap_or_else(|| panic!("no log line:\n{log}"));
    assert!(line.contains("127.0.0.1:"), "names the peer: {line}");
    assert!(
        line.contains("shared key mismatch") && line.contains("intruder-host"),
        "{line}"
    );
    assert!(lf.terminate().success(), "{}", lf.stderr());
    assert!(read_jsonl(&lf.path("out.jsonl")).is_empty());
    assert_no_secret_logged(&lf, &[SHARED_KEY, "wrong-key-77"]);
}

#[test]
fn python_client_must_authenticate_as_a_listed_user() {
    let extra = format!(
        "{TLS_AND_KEY}\n[[sources.users]]\nusername = \"alice\"\npassword = \"alice-pw-1\"\n\n\
         [[sources.users]]\nusername = \"bob\"\npassword = \"bob-pw-2\"\n"
    );
    let (mut lf, certs, _d) = start_tls(&extra);
    let run = |user: &str, password: &str| {
        let mut args = tls_args(&certs);
        args.extend(["--shared-key", SHARED_KEY, "--count", "5"].map(String::from));
        args.extend(["--username", user, "--password", password].map(String::from));
        py_client(&lf, &strs(&args))
    };
    let good = run("bob", "bob-pw-2");
    assert!(good.ok, "{}\n{}", good.json, lf.stderr());
    assert_eq!(
        good.json["helo"]["auth_len"], 16,
        "an auth salt when users are set"
    );
    for (user, password) in [("bob", "alice-pw-1"), ("mallory", "bob-pw-2")] {
        let bad = run(user, password);
        assert!(!bad.ok);
        assert_eq!(
            bad.json["pong"][2], "username/password mismatch",
            "{}",
            bad.json
        );
    }
    lf.wait_until("two refused users counted", Duration::from_secs(10), || {
        counted(&lf, "auth_failures", "password") == 2.0
    });
    // The first refusal is logged with the user it claimed; the second, from the same address
    // within 10 s, is only counted (log lines are rate-limited per client address and reason).
    let log = lf.stderr();
    assert!(
        log.lines().any(|l| l.contains("handshake failed")
            && l.contains("username/password mismatch")
            && l.contains("\"bob\"")),
        "{log}"
    );
    assert!(lf.terminate().success());
    assert_eq!(
        read_jsonl(&lf.path("out.jsonl")).len(),
        5,
        "only bob's records"
    );
    assert_no_secret_logged(&lf, &["alice-pw-1", "bob-pw-2", SHARED_KEY]);
}

#[test]
fn client_certificates_are_required_with_a_ca_file() {
    let extra = format!("{TLS_AND_KEY}ca_file = \"{{ca}}\"\n");
    let (mut lf, certs, _d) = start_tls(&extra);
    let mut args = tls_args(&certs);
    args.extend(["--shared-key", SHARED_KEY, "--count", "3"].map(String::from));
    let without = py_client(&lf, &strs(&args));
    assert!(
        !without.ok,
        "a client without a certificate got in: {}",
        without.json
    );
    lf.wait_until(
        "the missing certificate counted",
        Duration::from_secs(10),
        || counted(&lf, "errors", "tls_handshake") >= 1.0,
    );
    args.extend([
        "--cert".to_string(),
        certs.client_crt.display().to_string(),
        "--key".to_string(),
        certs.client_key.display().to_string(),
    ]);
    let with = py_client(&lf, &strs(&args));
    assert!(with.ok, "{}\n{}", with.json, lf.stderr());
    assert!(lf.terminate().success());
    assert_eq!(read_jsonl(&lf.path("out.jsonl")).len(), 3);
}

#[test]
fn tls_without_a_shared_key_needs_no_handshake() {
    // Dotted keys work as well as a [sources.tls] table.
    let (mut lf, certs, _d) = start_tls("tls.crt_file = \"{crt}\"\ntls.key_file = \"{key}\"\n");
    let mut args = tls_args(&certs);
    args.extend(["--count", "20"].map(String::from));
    let r = py_client(&lf, &strs(&args));
    assert!(r.ok, "{}\n{}", r.json, lf.stderr());
    assert!(
        r.json["helo"].is_null(),
        "no HELO without a shared key: {}",
        r.json
    );
    assert!(lf.terminate().success());
    check_sequence(&read_jsonl(&lf.path("out.jsonl")), 20);
}

/// A forward message in plain text, as a client without TLS sends it.
fn plain_message() -> Vec<u8> {
    use rmp::encode::*;
    let mut m = Vec::new();
    write_array_len(&mut m, 3).unwrap();
    write_str(&mut m, "plain.text").unwrap();
    write_uint(&mut m, 1_700_000_000).unwrap();
    write_map_len(&mut m, 1).unwrap();
    write_str(&mut m, "log").unwrap();
    write_str(&mut m, "should never arrive").unwrap();
    m
}

/// Reads until the server closes; panics if it stays open for `within`.
fn expect_closed(s: &mut TcpStream, within: Duration) -> Vec<u8> {
    s.set_read_timeout(Some(within)).unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return got,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return got,
            Err(e) => panic!("the server kept the connection open ({e})"),
        }
    }
}

#[test]
fn plain_text_on_the_tls_port_is_refused_and_counted() {
    let (mut lf, _certs, _d) = start_tls(TLS_AND_KEY);
    let mut s = TcpStream::connect(lf.forward).unwrap();
    s.write_all(&plain_message()).unwrap();
    expect_closed(&mut s, Duration::from_secs(15));
    lf.wait_until("plain text counted", Duration::from_secs(10), || {
        counted(&lf, "errors", "tls_handshake") == 1.0
    });
    let log = lf.stderr();
    assert!(
        log.lines()
            .any(|l| l.contains("TLS handshake failed") && l.contains("127.0.0.1:")),
        "{log}"
    );
    assert!(lf.terminate().success());
    assert!(read_jsonl(&lf.path("out.jsonl")).is_empty());
}

#[test]
fn a_port_probe_is_counted_without_a_warning() {
    let (mut lf, _certs, _d) = start_tls(TLS_AND_KEY);
    // What a TCP health check does: connect, then hang up without a word.
    drop(TcpStream::connect(lf.forward).unwrap());
    lf.wait_until("the probe counted", Duration::from_secs(10), || {
        counted(&lf, "errors", "handshake_closed") == 1.0
    });
    assert_eq!(counted(&lf, "errors", "tls_handshake"), 0.0);
    assert!(!lf.stderr().contains("handshake failed"), "{}", lf.stderr());
    assert!(lf.terminate().success());
}

#[test]
fn a_stalled_handshake_is_cut_off_after_the_timeout() {
    let extra = TLS_AND_KEY.replace("self_hostname", "handshake_timeout = \"1s\"\nself_hostname");
    let (mut lf, _certs, _d) = start_tls(&extra);
    // TLS stalled: connect and say nothing.
    let started = Instant::now();
    let mut s = TcpStream::connect(lf.forward).unwrap();
    expect_closed(&mut s, Duration::from_secs(10));
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(5),
        "closed after {took:?}"
    );
    lf.wait_until("the stall counted", Duration::from_secs(10), || {
        counted(&lf, "errors", "handshake_timeout") == 1.0
    });
    assert!(lf.terminate().success());
}

#[test]
fn a_client_that_skips_the_handshake_is_refused_without_tls_too() {
    let lf_config = config(&format!(
        "shared_key = \"{SHARED_KEY}\"\nhandshake_timeout = \"2s\"\n"
    ));
    let mut lf = Logferry::start(&lf_config);
    let mut s = TcpStream::connect(lf.forward).unwrap();
    s.write_all(&plain_message()).unwrap();
    let got = expect_closed(&mut s, Duration::from_secs(10));
    assert!(
        got.starts_with(b"\x92\xa4HELO"),
        "the HELO came first: {got:?}"
    );
    lf.wait_until(
        "the skipped handshake counted",
        Duration::from_secs(10),
        || counted(&lf, "auth_failures", "no_handshake") == 1.0,
    );
    // A client that stalls after HELO.
    let mut s = TcpStream::connect(lf.forward).unwrap();
    expect_closed(&mut s, Duration::from_secs(10));
    lf.wait_until("the stall counted", Duration::from_secs(10), || {
        counted(&lf, "errors", "handshake_timeout") == 1.0
    });
    assert!(lf.terminate().success());
    assert!(read_jsonl(&lf.path("out.jsonl")).is_empty());
}

#[test]
fn require_auth_false_lets_clients_without_the_handshake_in() {
    let mut lf = Logferry::start(&config(&format!(
        "shared_key = \"{SHARED_KEY}\"\nrequire_auth = false\n"
    )));
    let mut s = TcpStream::connect(lf.forward).unwrap();
    s.write_all(&plain_message()).unwrap();
    drop(s);
    wait_for_lines(&lf.path("out.jsonl"), 1, Duration::from_secs(20));
    assert_eq!(counted(&lf, "auth_failures", "no_handshake"), 1.0);
    // One that tries and fails is still refused.
    let r = py_client(&lf, &["--shared-key", "wrong", "--count", "1"]);
    assert!(!r.ok && r.json["pong"][1] == false, "{}", r.json);
    let r = py_client(&lf, &["--shared-key", SHARED_KEY, "--count", "2"]);
    assert!(r.ok, "{}", r.json);
    assert!(lf.terminate().success());
    assert_eq!(read_jsonl(&lf.path("out.jsonl")).len(), 3);
}

#[test]
fn a_bad_certificate_path_stops_start_up_naming_the_option_and_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("logferry.toml");
    std::fs::write(
        &path,
        config(
            "shared_key = \"k\"\n[sources.tls]\ncrt_file = \"/nonexistent/server.crt\"\n\
             key_file = \"/nonexistent/server.key\"\n",
        )
        .replace("{forward}", "127.0.0.1:0")
        .replace("{http}", "127.0.0.1:0")
        .replace("{dir}", &dir.path().display().to_string()),
    )
    .unwrap();
    let out = logferry_test_kit::logferry::logferry(&["run", "--config", path.to_str().unwrap()]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("tls.crt_file") && stderr.contains("/nonexistent/server.crt"),
        "{stderr}"
    );
}

// --- Fluent Bit's out_forward -------------------------------------------------------------

/// `{"log": "line <i>"}` records as `{"seq": i}`, for [`check_sequence`].
fn numbered(records: &[serde_json::Value]) -> Vec<serde_json::Value> {
    records
        .iter()
        .map(|r| {
            let log = r["log"].as_str().unwrap_or_else(|| panic!("no log: {r}"));
            let i: u64 = log
                .strip_prefix("line ")
                .and_then(|n| n.parse().ok())
                .unwrap_or_else(|| panic!("not a numbered line: {r}"));
            serde_json::json!({ "seq": i })
        })
        .collect()
}

/// Fluent Bit over TLS with these options (made from the test's certificates) delivers `n`
/// records, each exactly once.
fn fluent_bit_delivers(extra: &str, out_args: impl Fn(&Certs) -> Vec<String>, n: usize) {
    let Some(bin) = fluent_bit_bin("Fluent Bit secure forward test") else {
        return;
    };
    let (mut lf, certs, dir) = start_tls(extra);
    let out_args = out_args(&certs);
    let args = strs(&out_args);
    let fb = FluentBit::forward(&bin, &numbered_lines(dir.path(), n), lf.forward, &args);
    let out = lf.path("out.jsonl");
    if std::panic::catch_unwind(|| wait_for_lines(&out, n, Duration::from_secs(60))).is_err() {
        panic!(
            "Fluent Bit {args:?}: records missing\n--- logferry:\n{}\n--- fluent-bit:\n{}",
            lf.stderr(),
            fb.log()
        );
    }
    std::thread::sleep(Duration::from_millis(1500));
    drop(fb);
    assert!(lf.terminate().success(), "{}", lf.stderr());
    check_sequence(&numbered(&read_jsonl(&out)), n as u64);
    assert!(
        !lf.stderr().contains("handshake failed"),
        "a connection was refused:\n{}",
        lf.stderr()
    );
    assert_no_secret_logged(&lf, &[SHARED_KEY]);
}

fn fb_tls(verify_with: Option<&Path>, key: &str) -> Vec<String> {
    let mut args = vec![
        "tls=on".to_string(),
        format!("shared_key={key}"),
        "self_hostname=fluent-bit-node".to_string(),
        "require_ack_response=true".to_string(),
    ];
    match verify_with {
        Some(ca) => args.extend([
            "tls.verify=on".to_string(),
            format!("tls.ca_file={}", ca.display()),
            "tls.vhost=localhost".to_string(),
        ]),
        None => args.push("tls.verify=off".to_string()),
    }
    args
}

#[test]
fn fluent_bit_over_tls_with_the_shared_key_and_verify_off() {
    fluent_bit_delivers(TLS_AND_KEY, |_| fb_tls(None, SHARED_KEY), 3_000);
}

#[test]
fn fluent_bit_over_tls_verifying_our_ca_with_gzip() {
    let args = |certs: &Certs| {
        let mut args = fb_tls(Some(&certs.ca), SHARED_KEY);
        args.push("compress=gzip".to_string());
        args
    };
    fluent_bit_delivers(TLS_AND_KEY, args, 2_000);
}

#[test]
fn fluent_bit_with_users_and_password() {
    let extra = format!(
        "{TLS_AND_KEY}\n[[sources.users]]\nusername = \"fbuser\"\npassword = \"fb-pass-9\"\n"
    );
    let args = |_: &Certs| {
        let mut args = fb_tls(None, SHARED_KEY);
        args.extend([
            "username=fbuser".to_string(),
            "password=fb-pass-9".to_string(),
        ]);
        args
    };
    fluent_bit_delivers(&extra, args, 1_000);
}

/// Fluent Bit with `out_args` is refused: nothing arrives, `reason` is counted, the log names
/// the peer.
fn fluent_bit_refused(extra: &str, out_args: &[String], metric: &str, reason: &str) {
    let Some(bin) = fluent_bit_bin("Fluent Bit secure forward test") else {
        return;
    };
    let (mut lf, _certs, dir) = start_tls(extra);
    let fb = FluentBit::forward(
        &bin,
        &numbered_lines(dir.path(), 100),
        lf.forward,
        &strs(out_args),
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    while counted(&lf, metric, reason) < 1.0 {
        if Instant::now() > deadline {
            panic!(
                "no {metric}{{reason={reason}}} counted\n--- logferry:\n{}\n--- fluent-bit:\n{}",
                lf.stderr(),
                fb.log()
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    // Fluent Bit retries; give it time to (wrongly) get something through.
    std::thread::sleep(Duration::from_secs(3));
    drop(fb);
    assert!(lf.terminate().success());
    assert!(
        read_jsonl(&lf.path("out.jsonl")).is_empty(),
        "records arrived from a refused client"
    );
    let log = lf.stderr();
    assert!(
        log.lines()
            .any(|l| l.contains("handshake failed") && l.contains("127.0.0.1:")),
        "{log}"
    );
    assert_no_secret_logged(&lf, &[SHARED_KEY, "wrong-fleet-key", "fb-pass-9"]);
}

#[test]
fn fluent_bit_with_a_wrong_key_gets_nothing_in() {
    fluent_bit_refused(
        TLS_AND_KEY,
        &fb_tls(None, "wrong-fleet-key"),
        "auth_failures",
        "shared_key",
    );
}

#[test]
fn fluent_bit_with_a_wrong_password_gets_nothing_in() {
    let extra = format!(
        "{TLS_AND_KEY}\n[[sources.users]]\nusername = \"fbuser\"\npassword = \"fb-pass-9\"\n"
    );
    let mut args = fb_tls(None, SHARED_KEY);
    args.extend(["username=fbuser".to_string(), "password=not-it".to_string()]);
    fluent_bit_refused(&extra, &args, "auth_failures", "password");
}

#[test]
fn fluent_bit_in_plain_text_against_the_tls_port_gets_nothing_in() {
    // Without a shared key Fluent Bit sends its records at once: not a TLS ClientHello.
    let extra = TLS_AND_KEY.replace("self_hostname", "handshake_timeout = \"2s\"\nself_hostname");
    fluent_bit_refused(&extra, &[], "errors", "tls_handshake");
}

#[test]
fn fluent_bit_in_plain_text_with_a_shared_key_against_the_tls_port_times_out() {
    // With a shared key Fluent Bit waits for our HELO while we wait for its ClientHello: the
    // handshake timeout ends it.
    let extra = TLS_AND_KEY.replace("self_hostname", "handshake_timeout = \"2s\"\nself_hostname");
    fluent_bit_refused(
        &extra,
        &[format!("shared_key={SHARED_KEY}")],
        "errors",
        "handshake_timeout",
    );
}

#[test]
fn fluent_bit_with_the_shared_key_without_tls() {
    // Fluent Bit 5.1 does the handshake whenever Shared_Key is set, TLS or not.
    let extra = format!("shared_key = \"{SHARED_KEY}\"\n");
    let args = |_: &Certs| {
        vec![
            format!("shared_key={SHARED_KEY}"),
            "require_ack_response=true".to_string(),
        ]
    };
    fluent_bit_delivers(&extra, args, 1_000);
}

/// The same options from a Fluent Bit classic `[INPUT] forward` section (`--fluent-bit-config`),
/// with Fluent Bit itself as the client.
#[test]
fn fluent_bit_config_secure_forward_input_with_fluent_bit_as_client() {
    use logferry_test_kit::net::{free_port, wait_listening};
    let Some(bin) = fluent_bit_bin("Fluent Bit secure forward test") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let certs = make_certs(dir.path());
    let (port, http) = (free_port(), free_port());
    let classic = dir.path().join("fluent-bit.conf");
    std::fs::write(
        &classic,
        format!(
            "[SERVICE]\n    HTTP_Server On\n    HTTP_Listen 127.0.0.1\n    HTTP_Port {http}\n\n\
             [INPUT]\n    Name forward\n    Listen 127.0.0.1\n    Port {port}\n    tls on\n    \
             tls.verify off\n    tls.crt_file {}\n    tls.key_file {}\n    Shared_Key {SHARED_KEY}\n    \
             Self_Hostname agg-classic\n    Security.Users fbuser fb pass 9\n\n\
             [OUTPUT]\n    Name file\n    Match *\n    Path {}\n    File out.jsonl\n    Format plain\n",
            certs.server_crt.display(),
            certs.server_key.display(),
            dir.path().display(),
        ),
    )
    .unwrap();
    let stderr_path = dir.path().join("logferry.stderr");
    let mut child = Command::new(env!("CARGO_BIN_EXE_logferry"))
        .arg("run")
        .arg("--fluent-bit-config")
        .arg(&classic)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&stderr_path).unwrap())
        .spawn()
        .expect("spawn logferry");
    let stderr = || std::fs::read_to_string(&stderr_path).unwrap_or_default();
    let http_addr = format!("127.0.0.1:{http}").parse().unwrap();
    if let Err(e) = wait_listening(&mut child, http_addr, Duration::from_secs(20)) {
        let _ = child.kill();
        panic!("logferry {e}:\n{}", stderr());
    }
    let to = format!("127.0.0.1:{port}").parse().unwrap();
    let mut args = fb_tls(None, SHARED_KEY);
    // The password is the rest of the Security.Users line, spaces included.
    args.extend([
        "username=fbuser".to_string(),
        "password=fb pass 9".to_string(),
    ]);
    let fb = FluentBit::forward(&bin, &numbered_lines(dir.path(), 500), to, &strs(&args));
    let out = dir.path().join("out.jsonl");
    let waited = std::panic::catch_unwind(|| wait_for_lines(&out, 500, Duration::from_secs(60)));
    std::thread::sleep(Duration::from_millis(1000));
    drop(fb);
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let _ = child.wait();
    if waited.is_err() {
        panic!("records missing\n--- logferry:\n{}", stderr());
    }
    check_sequence(&numbered(&read_jsonl(&out)), 500);
    let log = stderr();
    assert!(!log.contains("handshake failed"), "{log}");
    assert!(
        !log.contains("fb pass 9") && !log.contains(SHARED_KEY),
        "{log}"
    );
}
