//! Credentials of the Kinesis sink against moto: static keys under real SigV4 and IAM policy
//! enforcement (right and wrong secret), `role_arn` through moto's STS, and IRSA (web identity
//! token file + AWS_ROLE_ARN) through moto's STS, and all of them over HTTPS with a private CA.

use support::kinesis as kin;
mod support;

use std::path::Path;
use std::time::Duration;

use kin::{create_stream, read_stream, tool, unique_stream, Logferry};
use logferry_test_kit::stand_ins::Moto;

/// The actions docs/kinesis.md lists for the sink, and nothing else. The resource is `*`
/// because moto evaluates Kinesis actions against resource `*` only (its Kinesis responses do
/// not name the stream to the authorizer): a policy scoped to the stream ARN, as docs/kinesis.md
/// recommends, is denied by moto although AWS allows it.
fn kinesis_policy(_stream: &str) -> String {
    serde_json::json!({
        "Version": "2012-10-17",
        "Statement": [{
            "Effect": "Allow",
            "Action": ["kinesis:PutRecords", "kinesis:DescribeStreamSummary", "kinesis:ListShards"],
            "Resource": "*"
        }]
    })
    .to_string()
}

fn user(moto: &Moto, name: &str, policy: &str) -> (String, String) {
    let key: serde_json::Value =
        serde_json::from_slice(&tool(&moto.endpoint(), &["iam-user", name, policy])).unwrap();
    (
        key["AccessKeyId"].as_str().unwrap().to_string(),
        key["SecretAccessKey"].as_str().unwrap().to_string(),
    )
}

fn sink(moto: &Moto, stream: &str, extra: &str) -> String {
    format!(
        "stream = \"{stream}\"\nendpoint = \"{}\"\nflush = \"200ms\"\naggregation = true\n{extra}",
        moto.endpoint()
    )
}

fn delivered(lf: &Logferry, n: u64) {
    lf.wait_for(&format!("{n} delivered"), Duration::from_secs(60), |lf| {
        lf.metric("logferry_kinesis_user_records_sent_total") >= n as f64
    });
}

fn assert_read_back(moto: &Moto, stream: &str, n: usize) {
    moto.disable_auth();
    let counts = read_stream(&moto.endpoint(), stream).seq_counts();
    assert_eq!(counts.len(), n);
    assert!(counts.values().all(|&c| c == 1));
}

#[test]
fn a_user_with_only_the_documented_actions_succeeds_under_enforced_sigv4_and_iam() {
    let moto = Moto::start();
    let stream = unique_stream("authz");
    create_stream(&moto.endpoint(), &stream, 2);
    let (id, secret) = user(&moto, "writer", &kinesis_policy(&stream));
    moto.enforce_auth();
    let lf = Logferry::start(
        &sink(&moto, &stream, ""),
        &[
            ("AWS_ACCESS_KEY_ID", &id),
            ("AWS_SECRET_ACCESS_KEY", &secret),
        ],
    );
    lf.loadgen_no_ack(0, 500, 200);
    delivered(&lf, 500);
    assert_eq!(lf.health().0, 200);
    let (code, log) = lf.stop();
    assert_eq!(code, 0, "{}", kin::tail(&log, 30));
    assert!(
        !log.contains(&secret),
        "the secret key never appears in the log"
    );
    assert!(
        !log.contains("not permitted"),
        "every call was allowed: {}",
        kin::tail(&log, 30)
    );
    assert_read_back(&moto, &stream, 500);
}

#[test]
fn a_wrong_secret_fails_clearly_and_health_goes_unhealthy() {
    let moto = Moto::start();
    let stream = unique_stream("badkey");
    create_stream(&moto.endpoint(), &stream, 1);
    let (id, secret) = user(&moto, "writer", &kinesis_policy(&stream));
    moto.enforce_auth();
    let wrong = format!("{}x", &secret[..secret.len() - 1]);
    let lf = Logferry::start(
        &sink(&moto, &stream, ""),
        &[
            ("AWS_ACCESS_KEY_ID", &id),
            ("AWS_SECRET_ACCESS_KEY", &wrong),
        ],
    );
    lf.wait_for("/health 503", Duration::from_secs(30), |lf| {
        lf.health().0 == 503
    });
    let (_, body) = lf.health();
    assert!(
        body.contains(&stream) && body.contains("credentials were refused"),
        "health says what is wrong: {body}"
    );
    let log = lf.log();
    assert!(
        log.contains("credentials were refused"),
        "{}",
        kin::tail(&log, 20)
    );
    assert!(
        !log.contains(&wrong) && !log.contains(&secret),
        "no secret in the log"
    );
    assert!(!log.contains("Signature="), "no signature in the log");
}

#[test]
fn role_arn_is_assumed_through_sts_at_sts_endpoint() {
    let moto = Moto::start();
    let stream = unique_stream("role");
    create_stream(&moto.endpoint(), &stream, 2);
    let role = String::from_utf8(tool(
        &moto.endpoint(),
        &["iam-role", "log-writer", &kinesis_policy(&stream)],
    ))
    .unwrap();
    // The user may only assume the role: every Kinesis call must use the role's credentials.
    let assume_only = serde_json::json!({
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Action": "sts:AssumeRole", "Resource": role}]
    })
    .to_string();
    let (id, secret) = user(&moto, "assumer", &assume_only);
    moto.enforce_auth();
    let lf = Logferry::start(
        &sink(
            &moto,
            &stream,
            &format!(
                "role_arn = \"{role}\"\nexternal_id = \"ext-1\"\nsts_endpoint = \"{}\"",
                moto.endpoint()
            ),
        ),
        &[
            ("AWS_ACCESS_KEY_ID", &id),
            ("AWS_SECRET_ACCESS_KEY", &secret),
        ],
    );
    lf.loadgen_no_ack(0, 300, 200);
    delivered(&lf, 300);
    let (code, log) = lf.stop();
    assert_eq!(code, 0, "{}", kin::tail(&log, 30));
    assert_read_back(&moto, &stream, 300);
}

#[test]
fn irsa_web_identity_token_file_and_role_arn_through_moto_sts() {
    let moto = Moto::start();
    let stream = unique_stream("irsa");
    create_stream(&moto.endpoint(), &stream, 1);
    let role = String::from_utf8(tool(
        &moto.endpoint(),
        &["iam-role", "irsa-writer", &kinesis_policy(&stream)],
    ))
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("token");
    // moto does not validate the JWT; any token-shaped string will do.
    std::fs::write(
        &token,
        "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJzeXN0ZW06c2VydmljZWFjY291bnQ6bG9nczpsb2dmZXJyeSJ9.c2ln",
    )
    .unwrap();
    let lf = Logferry::start(
        &sink(&moto, &stream, ""),
        &[
            // No static keys: only the web identity provider can give credentials.
            ("AWS_ACCESS_KEY_ID", ""),
            ("AWS_SECRET_ACCESS_KEY", ""),
            ("AWS_WEB_IDENTITY_TOKEN_FILE", token.to_str().unwrap()),
            ("AWS_ROLE_ARN", &role),
            ("AWS_ROLE_SESSION_NAME", "logferry-irsa"),
            ("AWS_ENDPOINT_URL_STS", &moto.endpoint()),
        ],
    );
    lf.loadgen(0, 200, 200);
    delivered(&lf, 200);
    let (code, log) = lf.stop();
    assert_eq!(code, 0, "{}", kin::tail(&log, 30));
    assert!(
        !log.contains("eyJhbGci"),
        "the token never appears in the log"
    );
    assert_read_back(&moto, &stream, 200);
}

/// Every AWS call over HTTPS, as in AWS: the web identity credentials (IRSA) and `role_arn`'s
/// AssumeRole at STS, and Kinesis, all through the SDK's HTTPS client (rustls on *ring*,
/// src/aws.rs), at endpoints whose certificate only a test CA signed (a TLS proxy in front of
/// moto). That CA is trusted through SSL_CERT_FILE; with another CA there the same setup gets
/// no credentials, the server's certificate being refused.
#[test]
fn https_to_sts_and_kinesis_verified_against_the_ca_of_ssl_cert_file() {
    let moto = Moto::start();
    let stream = unique_stream("https");
    create_stream(&moto.endpoint(), &stream, 1);
    let policy = kinesis_policy(&stream);
    let irsa_role =
        String::from_utf8(tool(&moto.endpoint(), &["iam-role", "irsa", &policy])).unwrap();
    let role = String::from_utf8(tool(&moto.endpoint(), &["iam-role", "writer", &policy])).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let certs = support::tls::make_certs(dir.path());
    let other = support::tls::make_certs(&dir.path().join("other"));
    let proxy = support::tls::TlsProxy::start(&certs);
    proxy.set_upstream(moto.addr());
    let token = dir.path().join("token");
    std::fs::write(
        &token,
        "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJzeXN0ZW06c2VydmljZWFjY291bnQ6bG9nczpsb2dmZXJyeSJ9.c2ln",
    )
    .unwrap();
    let sink = format!(
        "stream = \"{stream}\"\nendpoint = \"{https}\"\nflush = \"200ms\"\n\
         role_arn = \"{role}\"\nsts_endpoint = \"{https}\"\n",
        https = proxy.https_url()
    );
    let start = |ca: &Path| {
        Logferry::start(
            &sink,
            &[
                ("AWS_ACCESS_KEY_ID", ""),
                ("AWS_SECRET_ACCESS_KEY", ""),
                ("AWS_WEB_IDENTITY_TOKEN_FILE", token.to_str().unwrap()),
                ("AWS_ROLE_ARN", &irsa_role),
                ("AWS_ROLE_SESSION_NAME", "logferry-irsa"),
                ("AWS_ENDPOINT_URL_STS", &proxy.https_url()),
                ("SSL_CERT_FILE", ca.to_str().unwrap()),
            ],
        )
    };

    let lf = start(&certs.ca);
    lf.loadgen_no_ack(0, 200, 200);
    delivered(&lf, 200);
    let (code, log) = lf.stop();
    assert_eq!(code, 0, "{}", kin::tail(&log, 30));
    assert_read_back(&moto, &stream, 200);

    let lf = start(&other.ca);
    lf.loadgen_no_ack(1000, 10, 200);
    lf.wait_for("the certificate refused", Duration::from_secs(30), |lf| {
        lf.log().contains("invalid peer certificate")
    });
    assert_eq!(lf.metric("logferry_kinesis_user_records_sent_total"), 0.0);
    drop(lf);
}
