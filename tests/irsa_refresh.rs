//! IRSA end to end with credential refresh: `AWS_WEB_IDENTITY_TOKEN_FILE` + `AWS_ROLE_ARN` +
//! `AWS_ROLE_SESSION_NAME`, STS and Kinesis on moto, the role holding the Kinesis statement of
//! infra/iam/eks-irsa-role.json, moto's SigV4/IAM enforcement on for every Kinesis call.
//!
//! Short-lived credentials: the SDK does not send `DurationSeconds` for web identity, so moto
//! grants an hour. A proxy in front of moto (tests/support/expiring_sts.rs) rewrites each
//! answer's `Expiration` to LIFETIME from now, refuses Kinesis calls signed with a key past
//! that (`ExpiredTokenException`, as AWS would), and records every AssumeRoleWithWebIdentity
//! call. The SDK's identity cache (aws-smithy-runtime's lazy cache) treats credentials as
//! expired 10 s before their `Expiration` minus a random jitter of up to 5 s, and loads new ones
//! on the next call after that: with a 12 s lifetime, logferry must assume the role again every
//! 2 to 7 seconds while it ships.
//!
//! The web identity trust policy (eks-irsa-role.trust.json) is not checked here: moto does not
//! evaluate trust policies for AssumeRoleWithWebIdentity, whose call must run with enforcement
//! off (docs/security.md).

use logferry_test_kit::expiring_sts;
use support::iam_documents as iam;
use support::kinesis as kin;
mod support;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use expiring_sts::ExpiringSts;
use kin::{create_stream, read_stream, tool, unique_stream, Logferry};
use logferry_test_kit::stand_ins::Moto;

const LIFETIME: Duration = Duration::from_secs(12);
/// AssumeRoleWithWebIdentity calls to see: the first one and at least two refreshes.
const CALLS: usize = 3;
const SESSION_NAME: &str = "logferry-irsa";
/// JWT-shaped tokens (moto does not validate them); the file is rotated after the first call,
/// as the kubelet rotates the projected token.
const TOKEN_1: &str = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJzeXN0ZW06c2VydmljZWFjY291bnQ6MSJ9.c2lnMQ";
const TOKEN_2: &str = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJzeXN0ZW06c2VydmljZWFjY291bnQ6MiJ9.c2lnMg";

#[test]
fn irsa_credentials_are_refreshed_with_a_stable_session_name_and_nothing_is_lost() {
    let moto = Moto::start();
    let stream = unique_stream("irsa-refresh");
    create_stream(&moto.endpoint(), &stream, 2);
    let arn = iam::stream_arn(&moto, &stream);
    let policy = iam::for_test(
        &iam::shipped("eks-irsa-role.json"),
        &iam::account_of(&arn),
        &stream,
        &arn,
    );
    let role = String::from_utf8(tool(
        &moto.endpoint(),
        &["iam-role", "logferry-irsa", &policy.to_string()],
    ))
    .unwrap();
    moto.enforce_auth();
    let proxy = ExpiringSts::start(moto.addr(), LIFETIME);

    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("token");
    std::fs::write(&token, TOKEN_1).unwrap();
    let sink = format!(
        "stream = \"{stream}\"\nendpoint = \"{}\"\nflush = \"200ms\"\naggregation = true\n",
        proxy.endpoint()
    );
    let lf = Logferry::start(
        &sink,
        &[
            // No static keys: only the web identity provider can give credentials.
            ("AWS_ACCESS_KEY_ID", ""),
            ("AWS_SECRET_ACCESS_KEY", ""),
            ("AWS_WEB_IDENTITY_TOKEN_FILE", token.to_str().unwrap()),
            ("AWS_ROLE_ARN", &role),
            ("AWS_ROLE_SESSION_NAME", SESSION_NAME),
            ("AWS_ENDPOINT_URL_STS", &proxy.endpoint()),
        ],
    );

    // Ship continuously until the role was assumed CALLS times, then one batch more.
    let deadline = Instant::now() + Duration::from_secs(50);
    let mut sent = 0u64;
    let mut rotated = false;
    loop {
        let calls = proxy.observed().calls.len();
        if calls >= 1 && !rotated {
            std::fs::write(&token, TOKEN_2).unwrap();
            rotated = true;
        }
        if calls >= CALLS {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "only {calls} AssumeRoleWithWebIdentity calls; logferry log:\n{}",
            kin::tail(&lf.log(), 40)
        );
        lf.loadgen(sent, 50, 200);
        sent += 50;
        std::thread::sleep(Duration::from_millis(250));
    }
    lf.loadgen(sent, 50, 200);
    sent += 50;
    lf.wait_for(
        &format!("{sent} delivered"),
        Duration::from_secs(30),
        |lf| lf.metric("logferry_kinesis_user_records_sent_total") >= sent as f64,
    );
    assert_eq!(lf.health().0, 200, "{}", lf.health().1);
    let (code, log) = lf.stop();
    assert_eq!(code, 0, "{}", kin::tail(&log, 30));
    assert!(
        !log.contains("eyJhbGci"),
        "the token never appears in the log"
    );

    let seen = proxy.observed();
    assert!(seen.calls.len() >= CALLS, "{seen:?}");
    for call in &seen.calls {
        assert_eq!(
            call.role_session_name, SESSION_NAME,
            "the session name stays the same on every call"
        );
        assert_eq!(call.role_arn, role);
        assert!(!call.access_key_id.is_empty(), "moto granted it: {call:?}");
    }
    assert_eq!(seen.calls[0].token, TOKEN_1);
    assert_eq!(
        seen.calls.last().unwrap().token,
        TOKEN_2,
        "a refresh reads the rotated token file"
    );
    let issued: BTreeSet<&str> = seen
        .calls
        .iter()
        .map(|c| c.access_key_id.as_str())
        .collect();
    assert_eq!(issued.len(), seen.calls.len(), "new keys each time");
    assert_eq!(
        seen.expired_uses, 0,
        "no call was signed with expired credentials"
    );
    assert_eq!(
        seen.unknown_key_uses, 0,
        "every Kinesis call used role credentials: {:?}",
        seen.uses
    );
    assert!(
        seen.uses.len() >= CALLS,
        "Kinesis calls were signed with each refreshed key in turn: {:?}",
        seen.uses
    );

    moto.disable_auth();
    let counts = read_stream(&moto.endpoint(), &stream).seq_counts();
    assert_eq!(
        counts.keys().copied().collect::<Vec<u64>>(),
        (0..sent).collect::<Vec<u64>>(),
        "every record delivered across the refreshes"
    );
    assert!(counts.values().all(|&c| c == 1), "no duplicates");
}
