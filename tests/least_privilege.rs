//! Proven least privilege: the IAM documents we ship in infra/iam/ are enough for the Kinesis
//! sink, and every Kinesis action in them is needed.
//!
//! Against moto with SigV4 and IAM policy enforcement on (`POST /moto-api/reset-auth` with
//! body `0`): for each role document that grants Kinesis, a user whose only policy is that
//! document, read from the repository at run time, runs the real `logferry` binary and its
//! records are read back from the stream. Then, for each Kinesis action of the document, a user
//! with that one action removed: logferry names the refused action with `AccessDenied` in its
//! log and on `/health` (503). Without `kinesis:PutRecords` nothing is delivered; without
//! `kinesis:DescribeStreamSummary` or `kinesis:ListShards` the sink keeps delivering (it assumes
//! the default per-record limit / sends unaggregated) but `/health` stays 503 until the policy
//! is fixed. `assume-delivery-role.json` is proven the same way with `role_arn`.
//!
//! The documents are used exactly as shipped except for two substitutions, explained in
//! tests/support/iam_documents.rs: the example account/region/stream become the test's own
//! (checked against the ARN moto reports for the stream), and the Kinesis statements' resource
//! becomes `*`, because moto evaluates Kinesis actions against resource `*` only (a statement
//! scoped to the stream ARN is denied by moto although AWS allows it).
//!
//! The MSK statements (`kafka-cluster:*`) are part of the documents the users get, but nothing
//! here can prove them: no broker we can run authorizes MSK IAM actions. What is tested for MSK
//! is the token (golden vectors from the official signer, tests/kafka_msk_token.rs) and its
//! validation end to end by a SASL-validating proxy (tests/kafka_msk_iam.rs).
//!
//! The Lambda forwarder (lambda/) runs the same Kinesis sink as the `logferry` binary, so
//! running the binary with `lambda-forwarder-role.json` proves the calls the forwarder makes.

use support::iam_documents as iam;
use support::kinesis as kin;
mod support;

use std::time::Duration;

use iam::{
    account_of, as_list, for_test, is_kinesis_statement, kinesis_actions, shipped, statements,
    stream_arn, user, without, EXAMPLE_ACCOUNT, EXAMPLE_REGION,
};
use kin::{create_stream, read_stream, tool, unique_stream, Logferry};
use logferry_test_kit::stand_ins::Moto;
use serde_json::Value;

/// One run of logferry: its stream and the keys of the user it runs as.
struct Case {
    what: String,
    stream: String,
    keys: (String, String),
}

impl Case {
    fn start(&self, moto: &Moto, extra: &str) -> Logferry {
        let sink = format!(
            "stream = \"{}\"\nendpoint = \"{}\"\nflush = \"200ms\"\naggregation = true\n{extra}",
            self.stream,
            moto.endpoint()
        );
        Logferry::start(
            &sink,
            &[
                ("AWS_ACCESS_KEY_ID", &self.keys.0),
                ("AWS_SECRET_ACCESS_KEY", &self.keys.1),
            ],
        )
    }
}

const RECORDS: u64 = 300;

/// Sends RECORDS records (acknowledged) and waits until all are delivered.
fn deliver(lf: &Logferry, what: &str) {
    lf.loadgen(0, RECORDS, 200);
    lf.wait_for(
        &format!("{what}: {RECORDS} delivered"),
        Duration::from_secs(60),
        |lf| lf.metric("logferry_kinesis_user_records_sent_total") >= RECORDS as f64,
    );
}

/// Stops logferry; it must exit 0. Returns its log.
fn stop_clean(lf: Logferry, what: &str) -> String {
    let (code, log) = lf.stop();
    assert_eq!(code, 0, "{what}: {}", kin::tail(&log, 30));
    log
}

/// Waits until `/health` answers 503 naming `action` with AccessDenied; returns the body.
fn health_names_denied(lf: &Logferry, what: &str, action: &str) -> String {
    lf.wait_for(
        &format!("{what}: /health 503 naming {action}"),
        Duration::from_secs(30),
        |lf| {
            let (code, body) = lf.health();
            code == 503 && body.contains(action) && body.contains("AccessDenied")
        },
    );
    lf.health().1
}

fn log_names_denied(log: &str, what: &str, action: &str) {
    assert!(
        log.lines()
            .any(|l| l.contains("ERROR") && l.contains(action) && l.contains("AccessDenied")),
        "{what}: an error line names {action} and AccessDenied:\n{}",
        kin::tail(log, 30)
    );
}

/// The user records in `stream` are exactly seq 0..RECORDS, once each.
fn assert_all_read_back(moto: &Moto, stream: &str, what: &str) {
    let counts = read_stream(&moto.endpoint(), stream).seq_counts();
    assert_eq!(
        counts.keys().copied().collect::<Vec<u64>>(),
        (0..RECORDS).collect::<Vec<u64>>(),
        "{what}: every record read back"
    );
    assert!(
        counts.values().all(|&c| c == 1),
        "{what}: no duplicates: {counts:?}"
    );
}

/// The whole proof for one role document.
fn prove(document: &str) {
    let moto = Moto::start();
    let doc = shipped(document);
    let role = document.trim_end_matches(".json");

    // Set up every case while enforcement is off.
    let mut cases = Vec::new();
    let mut variants = vec![(None, Some(doc.clone()))];
    for action in kinesis_actions(&doc) {
        variants.push((Some(action.clone()), without(&doc, &action)));
    }
    for (n, (removed, variant)) in variants.into_iter().enumerate() {
        let stream = unique_stream("lp");
        create_stream(&moto.endpoint(), &stream, 2);
        let arn = stream_arn(&moto, &stream);
        let policy = variant.map(|v| for_test(&v, &account_of(&arn), &stream, &arn));
        let keys = user(&moto, &format!("{role}-{n}"), policy.as_ref());
        let what = match &removed {
            None => format!("{document} as shipped"),
            Some(action) => format!("{document} without {action}"),
        };
        cases.push((removed, Case { what, stream, keys }));
    }
    moto.enforce_auth();

    let mut delivered = Vec::new();
    for (removed, case) in &cases {
        let what = &case.what;
        match removed.as_deref() {
            None => {
                let lf = case.start(&moto, "");
                deliver(&lf, what);
                let (status, body) = lf.health();
                assert_eq!(status, 200, "{what}: healthy: {body}");
                let log = stop_clean(lf, what);
                assert!(
                    !log.contains("AccessDenied") && !log.contains("not permitted"),
                    "{what}: every call was allowed:\n{}",
                    kin::tail(&log, 30)
                );
                assert!(!log.contains(&case.keys.1), "no secret in the log");
                delivered.push(case);
            }
            Some("kinesis:PutRecords") => {
                let lf = case.start(&moto, "");
                lf.loadgen_no_ack(0, 50, 200);
                let body = health_names_denied(&lf, what, "kinesis:PutRecords");
                assert!(
                    body.contains(&case.stream) && body.contains("IAM policy"),
                    "{what}: /health names the stream and what to fix: {body}"
                );
                log_names_denied(&lf.log(), what, "kinesis:PutRecords");
                assert_eq!(
                    lf.metric("logferry_kinesis_user_records_sent_total"),
                    0.0,
                    "{what}: nothing delivered"
                );
                // Dropped: killed, the records were never accepted.
            }
            Some(action) => {
                // DescribeStreamSummary / ListShards: delivery goes on, /health says what to fix.
                let lf = case.start(&moto, "");
                let body = health_names_denied(&lf, what, action);
                assert!(
                    body.contains("/permissions") && body.contains("IAM policy"),
                    "{what}: /health says what to fix: {body}"
                );
                deliver(&lf, what);
                let (status, body) = lf.health();
                assert!(
                    status == 503 && body.contains(action),
                    "{what}: still reported after delivering: {body}"
                );
                let log = stop_clean(lf, what);
                log_names_denied(&log, what, action);
                delivered.push(case);
            }
        }
    }

    moto.disable_auth();
    for case in delivered {
        assert_all_read_back(&moto, &case.stream, &case.what);
    }
    for (removed, case) in &cases {
        if removed.as_deref() == Some("kinesis:PutRecords") {
            assert!(
                read_stream(&moto.endpoint(), &case.stream)
                    .records
                    .is_empty(),
                "{}: nothing reached the stream",
                case.what
            );
        }
    }
}

#[test]
fn ecs_task_role_is_sufficient_and_each_kinesis_action_is_needed() {
    prove("ecs-task-role.json");
}

#[test]
fn eks_irsa_role_is_sufficient_and_each_kinesis_action_is_needed() {
    prove("eks-irsa-role.json");
}

#[test]
fn lambda_forwarder_role_is_sufficient_and_each_kinesis_action_is_needed() {
    prove("lambda-forwarder-role.json");
}

/// `assume-delivery-role.json` as the only policy of the starting credentials, `role_arn`
/// naming a role that holds the Kinesis statement: delivery works. Without `sts:AssumeRole`
/// (the document's only action, so no policy at all): AccessDenied naming `sts:AssumeRole`.
#[test]
fn assume_delivery_role_is_sufficient_and_sts_assume_role_is_needed() {
    let moto = Moto::start();
    let doc = shipped("assume-delivery-role.json");
    let stream = unique_stream("lp-assume");
    create_stream(&moto.endpoint(), &stream, 2);
    let arn = stream_arn(&moto, &stream);
    let account = account_of(&arn);

    // The delivery role holds the Kinesis statement of the ECS task role document.
    let task_role = for_test(&shipped("ecs-task-role.json"), &account, &stream, &arn);
    let kinesis_only = serde_json::json!({
        "Version": "2012-10-17",
        "Statement": statements(&task_role)
            .iter()
            .filter(|s| is_kinesis_statement(s))
            .cloned()
            .collect::<Vec<Value>>(),
    });
    let role_arn = String::from_utf8(tool(
        &moto.endpoint(),
        &["iam-role", "logferry-delivery", &kinesis_only.to_string()],
    ))
    .unwrap();
    let assume = serde_json::from_str::<Value>(
        &doc.to_string()
            .replace(EXAMPLE_ACCOUNT, &account)
            .replace(EXAMPLE_REGION, kin::REGION),
    )
    .unwrap();
    let resources: Vec<String> = statements(&assume)
        .iter()
        .flat_map(|s| as_list(&s["Resource"]))
        .map(str::to_owned)
        .collect();
    assert_eq!(
        resources,
        vec![role_arn.clone()],
        "the document names the delivery role's ARN (moto checks sts:AssumeRole against it)"
    );
    let allowed = Case {
        what: "assume-delivery-role.json as shipped".into(),
        stream: stream.clone(),
        keys: user(&moto, "starter", Some(&assume)),
    };
    let refused = Case {
        what: "assume-delivery-role.json without sts:AssumeRole".into(),
        stream: stream.clone(),
        keys: user(
            &moto,
            "starter-denied",
            without(&assume, "sts:AssumeRole").as_ref(),
        ),
    };
    moto.enforce_auth();
    let role = format!(
        "role_arn = \"{role_arn}\"\nsts_endpoint = \"{}\"",
        moto.endpoint()
    );

    let lf = allowed.start(&moto, &role);
    deliver(&lf, &allowed.what);
    let log = stop_clean(lf, &allowed.what);
    assert!(!log.contains("AccessDenied"), "{}", kin::tail(&log, 30));

    let lf = refused.start(&moto, &role);
    lf.loadgen_no_ack(RECORDS, 20, 200);
    let body = health_names_denied(&lf, &refused.what, "sts:AssumeRole");
    assert!(
        body.contains("assume-delivery-role.json") && body.contains("trust policy"),
        "/health says what to fix: {body}"
    );
    log_names_denied(&lf.log(), &refused.what, "sts:AssumeRole");
    drop(lf);

    moto.disable_auth();
    assert_all_read_back(&moto, &stream, &allowed.what);
}
