//! `logferry msk-token` against the golden vectors of the official signer
//! (aws-msk-iam-sasl-signer-python 1.0.2, tests/fixtures/msk_iam/tokens.json): for the same
//! credentials (given through the environment, read by the default chain), region and signing
//! time, the token decodes to the same query parameters (User-Agent aside) and signature.

use std::collections::BTreeMap;
use std::process::Command;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;

const FIXTURE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/fixtures/msk_iam/tokens.json"
);

#[derive(serde::Deserialize)]
struct Case {
    name: String,
    region: String,
    access_key_id: String,
    secret_access_key: String,
    session_token: Option<String>,
    signing_time: String,
    expiry_ms: i64,
    host: String,
    signature: String,
    query_without_user_agent: BTreeMap<String, String>,
}

fn cases() -> Vec<Case> {
    let text = std::fs::read_to_string(FIXTURE)
        .unwrap_or_else(|e| panic!("cannot read {FIXTURE} (the shared fixtures): {e}"));
    let cases: Vec<Case> = serde_json::from_str(&text).unwrap();
    assert!(cases.len() >= 3);
    cases
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            out.push(u8::from_str_radix(&text[i + 1..i + 3], 16).unwrap());
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).unwrap()
}

/// Runs `logferry msk-token` with only these credentials visible to the default chain.
fn msk_token(case: &Case, extra: &[&str]) -> std::process::Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_logferry"));
    cmd.arg("msk-token")
        .args(["--region", &case.region])
        .args(["--signing-time", &case.signing_time])
        .args(extra)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("AWS_ACCESS_KEY_ID", &case.access_key_id)
        .env("AWS_SECRET_ACCESS_KEY", &case.secret_access_key)
        .env("AWS_CONFIG_FILE", "/dev/null")
        .env("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")
        .env("AWS_EC2_METADATA_DISABLED", "true");
    if let Some(token) = &case.session_token {
        cmd.env("AWS_SESSION_TOKEN", token);
    }
    cmd.output().expect("run logferry msk-token")
}

#[test]
fn msk_token_matches_the_official_signer() {
    for case in cases() {
        let out = msk_token(&case, &[]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{}: {stderr}", case.name);
        let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(json["region"], case.region.as_str(), "{}", case.name);
        assert_eq!(json["expiry_ms"], case.expiry_ms, "{}", case.name);
        let token = json["token"].as_str().unwrap();
        let url = String::from_utf8(
            URL_SAFE_NO_PAD
                .decode(token)
                .expect("base64url, no padding"),
        )
        .unwrap();
        let (base, query) = url.split_once('?').unwrap();
        assert_eq!(base, format!("https://{}/", case.host), "{}", case.name);
        let params: Vec<(String, String)> = query
            .split('&')
            .map(|pair| {
                let (k, v) = pair.split_once('=').unwrap();
                (percent_decode(k), percent_decode(v))
            })
            .collect();
        let (last_key, last_value) = params.last().unwrap();
        assert_eq!(last_key, "User-Agent");
        assert!(last_value.starts_with("logferry/"), "{last_value}");
        let ours: BTreeMap<String, String> = params[..params.len() - 1].iter().cloned().collect();
        assert_eq!(ours, case.query_without_user_agent, "{}", case.name);
        assert_eq!(ours["X-Amz-Signature"], case.signature, "{}", case.name);
        // The secret never appears in the output.
        assert!(!String::from_utf8_lossy(&out.stdout).contains(&case.secret_access_key));
        assert!(!stderr.contains(&case.secret_access_key));
    }
}

#[test]
fn msk_token_takes_the_region_from_the_cluster_arn() {
    let case = cases().into_iter().next().unwrap();
    let arn = format!(
        "arn:aws:kafka:{}:123456789012:cluster/logs/0a1b2c3d-1111-2222-3333-444455556666-1",
        case.region
    );
    let out = msk_token(&case, &["--cluster-arn", &arn]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["region"], case.region.as_str());

    // A different region on the command line loses to the ARN.
    let mut other = case;
    let region = other.region.clone();
    other.region = "eu-north-1".into();
    let out = msk_token(&other, &["--cluster-arn", &arn]);
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["region"], region.as_str());

    let out = msk_token(&other, &["--cluster-arn", "arn:aws:kinesis:x"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not an MSK cluster ARN"));
}

#[test]
fn msk_token_without_credentials_fails_clearly() {
    let out = Command::new(env!("CARGO_BIN_EXE_logferry"))
        .args(["msk-token", "--region", "us-east-1"])
        .env_clear()
        .env("AWS_CONFIG_FILE", "/dev/null")
        .env("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("credentials"), "{stderr}");
}
