//! MSK IAM with `role_arn`: credentials from STS AssumeRole (moto's STS at `sts_endpoint`) sign
//! the tokens, with the session token in the token and its lifetime capped by the credentials.

mod support;

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use logferry::sink::kafka::auth::{CredentialSource, MskTokenProvider};
use logferry::sink::kafka::msk_iam::MskTarget;
use logferry_test_kit::stand_ins::Moto;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn role_arn_credentials_come_from_sts_assume_role() {
    let moto = Moto::start();
    // The base credentials of the default chain, for the AssumeRole call itself.
    std::env::set_var("AWS_ACCESS_KEY_ID", "AKIDBASECREDENTIALS");
    std::env::set_var("AWS_SECRET_ACCESS_KEY", "base-secret");
    std::env::set_var("AWS_CONFIG_FILE", "/dev/null");
    std::env::set_var("AWS_SHARED_CREDENTIALS_FILE", "/dev/null");
    std::env::set_var("AWS_EC2_METADATA_DISABLED", "true");
    std::env::remove_var("AWS_SESSION_TOKEN");
    std::env::remove_var("AWS_PROFILE");

    let role = "arn:aws:iam::123456789012:role/logferry-msk";
    let source = CredentialSource::load(
        "us-east-1",
        Some(role),
        Some(&moto.endpoint()),
        "logferry-kafka.0",
    )
    .await
    .expect("an AssumeRole provider");
    let credentials = source.credentials().await.expect("moto's STS answers");
    assert_ne!(credentials.access_key_id(), "AKIDBASECREDENTIALS");
    assert!(
        credentials.session_token().is_some(),
        "temporary credentials"
    );
    let expiry = credentials.expiry().expect("STS credentials expire");
    assert!(expiry > SystemTime::now());

    let provider = MskTokenProvider::new(
        MskTarget {
            region: "us-east-1".into(),
            serverless: false,
        },
        Arc::new(source),
        None,
    );
    // Sign as of 5 minutes before the credentials expire: the credentials' expiry, not the
    // URL's 900 s, bounds the lifetime.
    let late = expiry - Duration::from_secs(300);
    let issued = provider.token_at(late).await.unwrap();
    let expiry_ms = expiry
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    assert_eq!(issued.lifetime_ms, expiry_ms);
    let url = String::from_utf8(URL_SAFE_NO_PAD.decode(issued.token.token()).unwrap()).unwrap();
    assert!(url.contains("X-Amz-Security-Token="), "{url}");
    assert!(
        url.contains(&format!(
            "X-Amz-Credential={}%2F",
            credentials.access_key_id()
        )),
        "{url}"
    );

    // From a plain thread (as librdkafka calls it) the cached credentials are reused.
    let issued = std::thread::spawn(move || provider.token_now().map(|t| t.lifetime_ms))
        .join()
        .unwrap()
        .unwrap();
    assert!(issued <= expiry_ms);
}
