//! Proven least privilege for the CloudWatch Logs and Firehose sinks: the CloudWatch Logs and
//! Firehose statements of the ECS task role document (infra/iam/ecs-task-role.json, the
//! FireLens router's role) are enough, and each of their actions is needed.
//!
//! As tests/least_privilege.rs does for Kinesis: against moto with SigV4 and IAM policy
//! enforcement on, a user whose only policy is the document (read from the repository at run
//! time; account, region and group substituted, the logs statement's resource `*` because
//! moto evaluates CloudWatch Logs actions against `*` only, see tests/support/iam_documents.rs)
//! runs the real `logferry` binary with `auto_create_group = true` towards a group that does
//! not exist yet; its events are read back with GetLogEvents. Then, for each action of the
//! statement, a user without it: nothing is delivered, and `/health` (503) and the log name the
//! refused action with AccessDenied. (`logs:PutRetentionPolicy`, needed only with
//! `log_retention_days`, is not in the shipped documents; docs/cloudwatch_logs.md says so.)
//! The Firehose statement is proven the same way with a stream delivering to S3, read back
//! from the bucket.

use support::iam_documents as iam;
use support::kinesis as kin;
mod support;

use std::time::Duration;

use iam::{account_of, firehose_actions, for_test_firehose, for_test_logs, logs_actions};
use iam::{is_firehose_statement, is_logs_statement, shipped, statements, user, without};
use iam::{EXAMPLE_ACCOUNT, EXAMPLE_REGION};
use kin::Logferry;
use logferry_test_kit::cloudwatch_logs as cwl;
use logferry_test_kit::firehose as fh;
use logferry_test_kit::stand_ins::Moto;

const RECORDS: u64 = 300;
const OUT: &str = "logferry_records_out_total{component=\"cloudwatch_logs.0\"";

/// The ARN moto gives a log group (created and read back, then deleted is not needed: the
/// probe group is never written to).
fn group_arn(moto: &Moto, group: &str) -> String {
    cwl::create_group(&moto.endpoint(), group);
    let info = cwl::group(&moto.endpoint(), group).expect("the probe group");
    let arn = info["arn"].as_str().expect("an arn").to_string();
    arn.trim_end_matches(":*").to_string()
}

fn prove(document: &str) {
    let moto = Moto::start();
    let doc = shipped(document);
    let role = document.trim_end_matches(".json");
    let probe = group_arn(&moto, "/logferry-test/arn-probe");
    let account = account_of(&probe);
    assert_eq!(
        probe,
        format!(
            "arn:aws:logs:{}:{account}:log-group:/logferry-test/arn-probe",
            kin::REGION
        ),
        "the ARN form the documents use"
    );

    let actions = logs_actions(&doc);
    assert!(!actions.is_empty(), "{document} grants CloudWatch Logs");
    let mut cases = Vec::new();
    let mut variants = vec![(None, Some(doc.clone()))];
    for action in &actions {
        variants.push((Some(action.clone()), without(&doc, action)));
    }
    for (n, (removed, variant)) in variants.into_iter().enumerate() {
        let group = cwl::unique_group(&format!("lp-{n}"));
        let arn = format!("arn:aws:logs:{}:{account}:log-group:{group}", kin::REGION);
        let policy = variant.map(|v| for_test_logs(&v, &account, &group, &arn));
        let keys = user(&moto, &format!("{role}-logs-{n}"), policy.as_ref());
        cases.push((removed, group, keys));
    }
    moto.enforce_auth();

    let mut delivered = Vec::new();
    for (removed, group, keys) in &cases {
        let what = match removed {
            None => format!("{document} as shipped"),
            Some(action) => format!("{document} without {action}"),
        };
        let lf = Logferry::start_typed(
            "cloudwatch_logs",
            &format!(
                "endpoint = \"{}\"\nlog_group_name = \"{group}\"\nlog_stream_name = \"s\"\n\
                 auto_create_group = true\nflush = \"200ms\"",
                moto.endpoint()
            ),
            &[
                ("AWS_ACCESS_KEY_ID", &keys.0),
                ("AWS_SECRET_ACCESS_KEY", &keys.1),
            ],
        );
        match removed {
            None => {
                lf.loadgen(0, RECORDS, 200);
                lf.wait_for(
                    &format!("{what}: delivered"),
                    Duration::from_secs(60),
                    |lf| lf.metric(OUT) >= RECORDS as f64,
                );
                let (status, body) = lf.health();
                assert_eq!(status, 200, "{what}: healthy: {body}");
                let (code, log) = lf.stop();
                assert_eq!(code, 0, "{what}: {}", kin::tail(&log, 30));
                assert!(
                    !log.contains("AccessDenied"),
                    "{what}: every call was allowed:\n{}",
                    kin::tail(&log, 30)
                );
                assert!(!log.contains(&keys.1), "no secret in the log");
                delivered.push(group.clone());
            }
            Some(action) => {
                lf.loadgen_no_ack(0, 50, 200);
                lf.wait_for(
                    &format!("{what}: /health 503 naming {action}"),
                    Duration::from_secs(30),
                    |lf| {
                        let (code, body) = lf.health();
                        code == 503
                            && body.contains(action.as_str())
                            && body.contains("AccessDenied")
                    },
                );
                let (_, body) = lf.health();
                assert!(
                    body.contains(group.as_str()) && body.contains("IAM policy"),
                    "{what}: /health names the group and what to fix: {body}"
                );
                let log = lf.log();
                assert!(
                    log.lines().any(|l| l.contains("ERROR")
                        && l.contains(action.trim_start_matches("logs:"))
                        && l.contains("AccessDenied")),
                    "{what}: an error line names the action and AccessDenied:\n{}",
                    kin::tail(&log, 30)
                );
                assert_eq!(lf.metric(OUT), 0.0, "{what}: nothing delivered");
            }
        }
    }

    moto.disable_auth();
    for group in delivered {
        let events = cwl::events(&moto.endpoint(), &group, "s");
        let seqs: Vec<u64> = events.iter().map(cwl::LogEventOut::seq).collect();
        assert_eq!(
            seqs,
            (0..RECORDS).collect::<Vec<u64>>(),
            "{group}: in order, once"
        );
    }
}

#[test]
fn ecs_task_role_is_sufficient_and_each_cloudwatch_logs_action_is_needed() {
    prove("ecs-task-role.json");
}

#[test]
fn ecs_task_role_firehose_statement_is_sufficient_and_needed() {
    let moto = Moto::start();
    let doc = shipped("ecs-task-role.json");
    let actions = firehose_actions(&doc);
    assert_eq!(actions, vec!["firehose:PutRecordBatch"]);
    let out = "logferry_records_out_total{component=\"kinesis_firehose.0\"";
    let mut cases = Vec::new();
    let variants = [
        (None, Some(doc.clone())),
        (Some(actions[0].clone()), without(&doc, &actions[0])),
    ];
    for (n, (removed, variant)) in variants.into_iter().enumerate() {
        let stream = format!("lp-firehose-{n}");
        let bucket = format!("lp-firehose-bucket-{n}");
        fh::create_stream(&moto.endpoint(), &stream, &bucket);
        let arn = fh::stream_arn(&moto.endpoint(), &stream);
        // Without its only action the Firehose statement is gone: nothing to adapt.
        let policy = variant.map(|v| match firehose_actions(&v).is_empty() {
            true => v,
            false => for_test_firehose(&v, &account_of(&arn), &stream, &arn),
        });
        let keys = user(
            &moto,
            &format!("ecs-task-role-firehose-{n}"),
            policy.as_ref(),
        );
        cases.push((removed, stream, bucket, keys));
    }
    moto.enforce_auth();
    for (removed, stream, _, keys) in &cases {
        let lf = Logferry::start_typed(
            "kinesis_firehose",
            &format!(
                "endpoint = \"{}\"\ndelivery_stream = \"{stream}\"\nflush = \"200ms\"",
                moto.endpoint()
            ),
            &[
                ("AWS_ACCESS_KEY_ID", &keys.0),
                ("AWS_SECRET_ACCESS_KEY", &keys.1),
            ],
        );
        match removed {
            None => {
                lf.loadgen(0, RECORDS, 200);
                lf.wait_for("delivered", Duration::from_secs(60), |lf| {
                    lf.metric(out) >= RECORDS as f64
                });
                assert_eq!(lf.health().0, 200);
                let (code, log) = lf.stop();
                assert_eq!(code, 0, "{}", kin::tail(&log, 30));
                assert!(!log.contains("AccessDenied"), "{}", kin::tail(&log, 30));
            }
            Some(action) => {
                lf.loadgen_no_ack(0, 50, 200);
                lf.wait_for(
                    &format!("/health 503 naming {action}"),
                    Duration::from_secs(30),
                    |lf| {
                        let (code, body) = lf.health();
                        code == 503
                            && body.contains(action.as_str())
                            && body.contains("AccessDenied")
                            && body.contains(stream.as_str())
                    },
                );
                assert!(
                    lf.log()
                        .lines()
                        .any(|l| l.contains("ERROR") && l.contains("AccessDenied")),
                    "{}",
                    kin::tail(&lf.log(), 30)
                );
                assert_eq!(lf.metric(out), 0.0, "nothing delivered");
            }
        }
    }
    moto.disable_auth();
    let (_, _, bucket, _) = &cases[0];
    let mut seqs: Vec<u64> = fh::read_bucket(&moto.endpoint(), bucket)
        .iter()
        .flat_map(|o| {
            String::from_utf8(o.data())
                .unwrap()
                .lines()
                .map(|l| {
                    serde_json::from_str::<serde_json::Value>(l).unwrap()["seq"]
                        .as_u64()
                        .unwrap()
                })
                .collect::<Vec<u64>>()
        })
        .collect();
    seqs.sort_unstable();
    assert_eq!(seqs, (0..RECORDS).collect::<Vec<u64>>(), "each once");
    assert!(
        fh::read_bucket(&moto.endpoint(), &cases[1].2).is_empty(),
        "nothing reached the refused stream"
    );
}

/// `role_arn` for both sinks (the credentials code every AWS sink shares): starting
/// credentials whose only policy is `assume-delivery-role.json` assume `logferry-delivery`,
/// a role holding the CloudWatch Logs and Firehose statements of the ECS task role; events
/// reach the log group and the Firehose stream. With enforcement on, so the calls are really
/// made with the role's credentials.
#[test]
fn role_arn_delivers_to_cloudwatch_logs_and_firehose_with_the_assumed_role() {
    let moto = Moto::start();
    let group = cwl::unique_group("role");
    fh::create_stream(&moto.endpoint(), "role-stream", "role-bucket");
    let firehose_arn = fh::stream_arn(&moto.endpoint(), "role-stream");
    let account = account_of(&firehose_arn);
    let group_arn = format!("arn:aws:logs:{}:{account}:log-group:{group}", kin::REGION);
    let task_role = shipped("ecs-task-role.json");
    let task_role = for_test_logs(&task_role, &account, &group, &group_arn);
    let task_role = for_test_firehose(&task_role, &account, "role-stream", &firehose_arn);
    let delivery = serde_json::json!({
        "Version": "2012-10-17",
        "Statement": statements(&task_role)
            .iter()
            .filter(|s| is_logs_statement(s) || is_firehose_statement(s))
            .cloned()
            .collect::<Vec<serde_json::Value>>(),
    });
    let role_arn = String::from_utf8(kin::tool(
        &moto.endpoint(),
        &["iam-role", "logferry-delivery", &delivery.to_string()],
    ))
    .unwrap();
    let assume: serde_json::Value = serde_json::from_str(
        &shipped("assume-delivery-role.json")
            .to_string()
            .replace(EXAMPLE_ACCOUNT, &account)
            .replace(EXAMPLE_REGION, kin::REGION),
    )
    .unwrap();
    let keys = user(&moto, "starter", Some(&assume));
    moto.enforce_auth();
    let role = format!(
        "role_arn = \"{role_arn}\"\nsts_endpoint = \"{}\"\nendpoint = \"{}\"\nflush = \"200ms\"",
        moto.endpoint(),
        moto.endpoint()
    );
    let env = [
        ("AWS_ACCESS_KEY_ID", keys.0.as_str()),
        ("AWS_SECRET_ACCESS_KEY", keys.1.as_str()),
    ];
    let lf = Logferry::start_typed(
        "cloudwatch_logs",
        &format!("{role}\nlog_group_name = \"{group}\"\nlog_stream_name = \"s\"\nauto_create_group = true"),
        &env,
    );
    lf.loadgen(0, 100, 100);
    lf.wait_for("delivered with the role", Duration::from_secs(60), |lf| {
        lf.metric(OUT) >= 100.0
    });
    let (code, log) = lf.stop();
    assert_eq!(code, 0, "{}", kin::tail(&log, 30));
    assert!(!log.contains("AccessDenied"), "{}", kin::tail(&log, 30));
    let lf = Logferry::start_typed(
        "kinesis_firehose",
        &format!("{role}\ndelivery_stream = \"role-stream\""),
        &env,
    );
    lf.loadgen(0, 100, 100);
    lf.wait_for("delivered with the role", Duration::from_secs(60), |lf| {
        lf.metric("logferry_records_out_total{component=\"kinesis_firehose.0\"") >= 100.0
    });
    let (code, log) = lf.stop();
    assert_eq!(code, 0, "{}", kin::tail(&log, 30));
    assert!(!log.contains("AccessDenied"), "{}", kin::tail(&log, 30));
    moto.disable_auth();
    assert_eq!(cwl::events(&moto.endpoint(), &group, "s").len(), 100);
    let delivered: usize = fh::read_bucket(&moto.endpoint(), "role-bucket")
        .iter()
        .map(|o| String::from_utf8(o.data()).unwrap().lines().count())
        .sum();
    assert_eq!(delivered, 100);
}
