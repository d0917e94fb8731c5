//! MSK IAM end to end: logferry -> tests/support/msk_iam_proxy.py -> tansu. The proxy answers
//! the SASL handshake itself and recomputes every token's SigV4 signature with plain HMAC from
//! the secret it knows (not with the signer logferry uses), checks host, action and expiry,
//! and relays authenticated traffic to tansu, which advertises the proxy's address.

use support::kafka;
mod support;

use std::time::Duration;

use kafka::{assert_exactly_once, consume_msk, seqs, TansuBehindProxy, AKID, REGION, SECRET};
use logferry_test_kit::logferry::{loadgen, Logferry};
use logferry_test_kit::wait::wait_until_or;

const READ_TIMEOUT: Duration = Duration::from_secs(60);

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
region = "{REGION}"

[sinks.rdkafka]
"security.protocol" = "SASL_PLAINTEXT"
"reconnect.backoff.max.ms" = 1000
"statistics.interval.ms" = 1000
"#
    )
}

/// Credentials for the default chain: exactly these, nothing from the developer's machine.
fn aws_env(extra: &[(&'static str, &'static str)]) -> Vec<(&'static str, &'static str)> {
    let mut env = vec![
        ("AWS_ACCESS_KEY_ID", AKID),
        ("AWS_SECRET_ACCESS_KEY", SECRET),
        ("AWS_SESSION_TOKEN", ""),
        ("AWS_PROFILE", ""),
        ("AWS_CONFIG_FILE", "/dev/null"),
        ("AWS_SHARED_CREDENTIALS_FILE", "/dev/null"),
        ("AWS_EC2_METADATA_DISABLED", "true"),
        ("RUST_LOG", "info"),
    ];
    env.extend_from_slice(extra);
    env
}

/// Tokens (base64url of `https://kafka...`) and secrets must never reach the logs.
fn assert_no_secrets(text: &str) {
    assert!(!text.contains(SECRET), "the secret key is in the logs");
    assert!(
        !text.contains("aHR0cHM6Ly9rYWZrYS") && !text.contains("X-Amz-Signature"),
        "a token is in the logs"
    );
}

fn delivered(lf: &Logferry) -> u64 {
    lf.metric("logferry_records_out_total{component=\"msk\"")
        .unwrap_or(0.0) as u64
}

#[test]
fn right_credentials_deliver_every_record() {
    let stack = TansuBehindProxy::start();
    stack.create_topic("logs", 2);
    let proxy = stack.proxy(SECRET, &[]);
    let mut lf = Logferry::start_with_env(&config(&stack.bootstrap()), &aws_env(&[]));
    let n = 2000u64;
    loadgen(
        &lf.forward.to_string(),
        &["--records", &n.to_string(), "--batch", "200", "--ack"],
    );
    assert_eq!(delivered(&lf), n);
    let records = consume_msk(&stack.bootstrap(), "logs", n as usize, READ_TIMEOUT);
    assert_exactly_once(&seqs(&records), 0..n);

    let stats = proxy.stats();
    assert!(stats["auth_ok"].as_u64().unwrap_or(0) >= 2, "{stats}");
    assert_eq!(stats["auth_failed"], 0, "{stats}");
    assert_eq!(stats["unauthenticated_requests"], 0, "{stats}");
    assert!(
        stats["requests_relayed"].as_u64().unwrap_or(0) > 0,
        "{stats}"
    );
    assert_eq!(lf.health().0, 200, "{}", lf.health().1);
    assert!(lf
        .metric("logferry_token_refreshes_total{component=\"msk\",kind=\"sink\",token=\"msk_iam\"}")
        .is_some_and(|v| v >= 1.0));
    assert!(lf
        .metric("logferry_request_duration_seconds_count{component=\"msk\",kind=\"sink\",operation=\"produce\"}")
        .is_some_and(|v| v >= 1.0));
    let stderr = lf.stderr();
    assert!(stderr.contains("MSK IAM token refreshed"), "{stderr}");
    assert_no_secrets(&stderr);
    assert!(lf.terminate().success(), "{}", lf.stderr());
}

/// The proxy refuses logferry's tokens; logferry reports an auth error, /health is 503, the
/// records wait. Once the proxy accepts (the IAM side is fixed), every record arrives once.
fn refused_then_fixed(refusing_secret: &str, refusing_args: &[&str], reason: &str) {
    let stack = TansuBehindProxy::start();
    stack.create_topic("logs", 1);
    let refusing = stack.proxy(refusing_secret, refusing_args);
    let lf = Logferry::start_with_env(&config(&stack.bootstrap()), &aws_env(&[]));
    let n = 300u64;
    // No acks: the records are accepted into logferry's buffer and wait there.
    loadgen(
        &lf.forward.to_string(),
        &["--records", &n.to_string(), "--batch", "50"],
    );
    wait_until_or(
        "logferry to report the authentication failure on /health",
        Duration::from_secs(30),
        || {
            let (code, body) = lf.health();
            code == 503 && body.contains("authenticate")
        },
        || format!("{:?}\n{}", lf.health(), lf.stderr()),
    );
    let stderr = lf.stderr();
    assert!(
        stderr.contains("Kafka authentication failed"),
        "no auth error in the log:\n{stderr}"
    );
    assert_eq!(delivered(&lf), 0, "nothing passes a refusing proxy");
    let stats = refusing.stats();
    assert!(stats["auth_failed"].as_u64().unwrap_or(0) >= 1, "{stats}");
    assert_eq!(stats["auth_ok"], 0, "{stats}");
    let reasons: Vec<&String> = stats["failures_by_reason"]
        .as_object()
        .map(|m| m.keys().collect())
        .unwrap_or_default();
    assert_eq!(reasons, [reason], "{stats}");
    assert!(lf
        .metric("logferry_errors_total{component=\"msk\",kind=\"sink\",reason=\"auth\"}")
        .is_some_and(|v| v >= 1.0));
    assert!(lf
        .metric("logferry_auth_failures_total{component=\"msk\",kind=\"sink\",reason=\"sasl\"}")
        .is_some_and(|v| v >= 1.0));
    let refusing_log = refusing.log();
    assert!(
        refusing_log.contains(&format!("REFUSED ({reason})")),
        "{refusing_log}"
    );
    drop(refusing);

    // Fixed: the same port now accepts logferry's credentials.
    let accepting = stack.proxy(SECRET, &[]);
    wait_until_or(
        "every waiting record to be delivered",
        Duration::from_secs(60),
        || delivered(&lf) >= n,
        || format!("delivered {}\n{}", delivered(&lf), lf.stderr()),
    );
    wait_until_or(
        "/health to recover",
        Duration::from_secs(20),
        || lf.health().0 == 200,
        || format!("{:?}", lf.health()),
    );
    let records = consume_msk(&stack.bootstrap(), "logs", n as usize, READ_TIMEOUT);
    assert_exactly_once(&seqs(&records), 0..n);
    assert_eq!(accepting.stat("auth_failed"), 0);
    assert_no_secrets(&lf.stderr());
}

#[test]
fn wrong_secret_is_refused_and_nothing_is_lost_once_fixed() {
    refused_then_fixed("not-the-secret", &[], "signature_mismatch");
}

#[test]
fn expired_token_is_refused_and_nothing_is_lost_once_fixed() {
    // The proxy's clock runs 1000 s ahead: every 900 s token logferry signs is already stale.
    refused_then_fixed(SECRET, &["--clock-offset", "1000"], "token_expired");
}

fn refreshes(lf: &Logferry) -> usize {
    lf.stderr().matches("MSK IAM token refreshed").count()
}

#[test]
fn tokens_refresh_while_busy_and_idle_without_auth_failures() {
    let stack = TansuBehindProxy::start();
    stack.create_topic("logs", 1);
    // Sessions must re-authenticate every 2 s; tokens live 3 s as far as librdkafka knows,
    // so it refreshes them every 2.4 s.
    let proxy = stack.proxy(SECRET, &["--max-reauth-ms", "2000"]);
    let mut lf = Logferry::start_with_env(
        &config(&stack.bootstrap()),
        &aws_env(&[("LOGFERRY_TEST_ONLY_MSK_TOKEN_LIFETIME_MS", "3000")]),
    );
    // Busy: 10 records a second for 5 s.
    loadgen(
        &lf.forward.to_string(),
        &["--records", "50", "--rate", "10", "--batch", "1", "--ack"],
    );
    let busy_refreshes = refreshes(&lf);
    let busy_stats = proxy.stats();
    // Idle for longer than two token lifetimes.
    std::thread::sleep(Duration::from_secs(8));
    let idle_refreshes = refreshes(&lf);
    let idle_stats = proxy.stats();
    assert_eq!(lf.health().0, 200, "{}", lf.health().1);
    loadgen(
        &lf.forward.to_string(),
        &["--records", "20", "--start-seq", "50", "--ack"],
    );
    let records = consume_msk(&stack.bootstrap(), "logs", 70, READ_TIMEOUT);
    assert_exactly_once(&seqs(&records), 0..70);

    let stats = proxy.stats();
    let context = format!(
        "busy {busy_stats}\nidle {idle_stats}\nend {stats}\n{}",
        proxy.log()
    );
    crate::support::figures::report(format!(
        "refreshes: busy {busy_refreshes}, after idle {idle_refreshes}, end {}\n{context}",
        refreshes(&lf)
    ));
    assert!(refreshes(&lf) >= 3, "{}", lf.stderr());
    assert!(
        idle_refreshes >= busy_refreshes + 2,
        "tokens must refresh on an idle producer: {busy_refreshes} -> {idle_refreshes}"
    );
    assert_eq!(stats["auth_failed"], 0, "{context}");
    assert_eq!(stats["sessions_expired"], 0, "{context}");
    assert!(
        idle_stats["reauth_ok"].as_u64() > busy_stats["reauth_ok"].as_u64(),
        "re-authentication continued while idle: {context}"
    );
    assert!(
        idle_stats["distinct_tokens"].as_u64().unwrap_or(0) >= 3,
        "refreshed tokens were used (before the test's consumer connected): {context}"
    );
    assert_eq!(stats["principals"], serde_json::json!([AKID]), "{context}");
    assert!(lf
        .metric("logferry_errors_total{component=\"msk\",kind=\"sink\",reason=\"auth\"}")
        .is_none_or(|v| v == 0.0));
    assert_no_secrets(&lf.stderr());
    assert!(lf.terminate().success(), "{}", lf.stderr());
}
