//! The IAM documents of infra/iam/, read from the repository at run time, and what the tests
//! against moto change in them.
//!
//! - account, region and stream: the documents' example values (123456789012, us-east-1,
//!   `app-logs`) are replaced by the test's own (moto's account, the test region, a unique
//!   stream name). The resulting Kinesis resource must equal the ARN moto reports for the
//!   test's stream, which proves the documents name the stream in the right ARN form.
//! - the Kinesis statements' `Resource` is then replaced by `*`, and nothing else is changed.
//!   moto (5.2.x) does not pass the stream to its authorizer for Kinesis requests: its Kinesis
//!   responses have no `_determine_resource`, so moto/core/responses.py evaluates every
//!   Kinesis action against resource `*`, and a statement scoped to the stream ARN never
//!   matches `*`. moto would deny the exact document although AWS allows it. The actions,
//!   which are what the tests prove, are kept exactly as shipped; the ARN scoping is checked
//!   as above and by the linters (scripts/lint-infra), not by moto.
#![allow(dead_code)]

use serde_json::Value;

use logferry_test_kit::kinesis::{tool, REGION};
use logferry_test_kit::paths::repo_root;
use logferry_test_kit::stand_ins::Moto;

/// The example values the documents in infra/iam/ are written with.
pub const EXAMPLE_ACCOUNT: &str = "123456789012";
pub const EXAMPLE_REGION: &str = "us-east-1";
pub const EXAMPLE_STREAM: &str = "app-logs";

/// The document `infra/iam/<name>`, exactly as shipped.
pub fn shipped(name: &str) -> Value {
    let path = repo_root().join("infra").join("iam").join(name);
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{} is not JSON: {e}", path.display()))
}

pub fn as_list(value: &Value) -> Vec<&str> {
    match value {
        Value::String(s) => vec![s.as_str()],
        Value::Array(items) => items.iter().filter_map(Value::as_str).collect(),
        other => panic!("not a string or a list of strings: {other}"),
    }
}

pub fn statements(doc: &Value) -> &Vec<Value> {
    doc["Statement"]
        .as_array()
        .expect("a policy document with a Statement list")
}

pub fn is_kinesis_statement(statement: &Value) -> bool {
    as_list(&statement["Action"])
        .iter()
        .all(|a| a.starts_with("kinesis:"))
}

/// Every Kinesis action the document grants, in document order.
pub fn kinesis_actions(doc: &Value) -> Vec<String> {
    statements(doc)
        .iter()
        .flat_map(|s| as_list(&s["Action"]))
        .filter(|a| a.starts_with("kinesis:"))
        .map(str::to_owned)
        .collect()
}

/// The document with the test's account, region and stream (see the module doc), and the
/// Kinesis statements' resource `*` after checking it named `stream_arn`.
pub fn for_test(doc: &Value, account: &str, stream: &str, stream_arn: &str) -> Value {
    let text = doc
        .to_string()
        .replace(EXAMPLE_ACCOUNT, account)
        .replace(EXAMPLE_REGION, REGION)
        .replace(
            &format!(":stream/{EXAMPLE_STREAM}\""),
            &format!(":stream/{stream}\""),
        );
    let mut doc: Value = serde_json::from_str(&text).unwrap();
    let mut kinesis_statements = 0;
    for statement in doc["Statement"].as_array_mut().unwrap() {
        if !is_kinesis_statement(statement) {
            continue;
        }
        kinesis_statements += 1;
        assert_eq!(
            as_list(&statement["Resource"]),
            vec![stream_arn],
            "the Kinesis statement names exactly the stream's ARN"
        );
        // moto evaluates Kinesis actions against `*` only: see the module doc.
        statement["Resource"] = Value::String("*".into());
    }
    assert!(kinesis_statements > 0, "the document grants Kinesis: {doc}");
    doc
}

/// The document without `action`; a statement left without actions goes, and a document left
/// without statements is `None` (the user gets no policy at all).
pub fn without(doc: &Value, action: &str) -> Option<Value> {
    let mut doc = doc.clone();
    let kept: Vec<Value> = statements(&doc)
        .iter()
        .filter_map(|statement| {
            let actions: Vec<&str> = as_list(&statement["Action"])
                .into_iter()
                .filter(|a| *a != action)
                .collect();
            if actions.is_empty() {
                return None;
            }
            let mut statement = statement.clone();
            statement["Action"] = serde_json::json!(actions);
            Some(statement)
        })
        .collect();
    assert_ne!(
        serde_json::json!(kept),
        doc["Statement"],
        "{action} was in the document"
    );
    if kept.is_empty() {
        return None;
    }
    doc["Statement"] = Value::Array(kept);
    Some(doc)
}

/// Creates a user whose only policy is `policy` (none when `None`); returns its keys.
pub fn user(moto: &Moto, name: &str, policy: Option<&Value>) -> (String, String) {
    let policy = policy.map(Value::to_string).unwrap_or_default();
    let key: Value =
        serde_json::from_slice(&tool(&moto.endpoint(), &["iam-user", name, &policy])).unwrap();
    (
        key["AccessKeyId"].as_str().unwrap().to_string(),
        key["SecretAccessKey"].as_str().unwrap().to_string(),
    )
}

pub fn stream_arn(moto: &Moto, stream: &str) -> String {
    String::from_utf8(tool(&moto.endpoint(), &["stream-arn", stream])).unwrap()
}

/// The account in an ARN (`arn:aws:kinesis:REGION:ACCOUNT:...`).
pub fn account_of(arn: &str) -> String {
    arn.split(':').nth(4).unwrap().to_string()
}

/// The example log group the documents name (the ECS sample's app container logs there).
pub const EXAMPLE_LOG_GROUP: &str = "/ecs/app-logs";

pub fn is_logs_statement(statement: &Value) -> bool {
    as_list(&statement["Action"])
        .iter()
        .all(|a| a.starts_with("logs:"))
}

/// Every CloudWatch Logs action the document grants, in document order.
pub fn logs_actions(doc: &Value) -> Vec<String> {
    statements(doc)
        .iter()
        .filter(|s| is_logs_statement(s))
        .flat_map(|s| as_list(&s["Action"]))
        .map(str::to_owned)
        .collect()
}

/// The document with the test's account, region and log group, and the CloudWatch Logs
/// statements' resource `*` after checking they named exactly `group_arn` and its streams
/// (`group_arn:*`). moto evaluates CloudWatch Logs actions against `*` only, as it does
/// Kinesis actions (see the module doc).
pub fn for_test_logs(doc: &Value, account: &str, group: &str, group_arn: &str) -> Value {
    let text = doc
        .to_string()
        .replace(EXAMPLE_ACCOUNT, account)
        .replace(EXAMPLE_REGION, REGION)
        .replace(
            &format!(":log-group:{EXAMPLE_LOG_GROUP}"),
            &format!(":log-group:{group}"),
        );
    let mut doc: Value = serde_json::from_str(&text).unwrap();
    let mut found = 0;
    for statement in doc["Statement"].as_array_mut().unwrap() {
        if !is_logs_statement(statement) {
            continue;
        }
        found += 1;
        assert_eq!(
            as_list(&statement["Resource"]),
            vec![group_arn.to_string(), format!("{group_arn}:*")],
            "the CloudWatch Logs statement names exactly the group and its streams"
        );
        statement["Resource"] = Value::String("*".into());
    }
    assert!(found > 0, "the document grants CloudWatch Logs: {doc}");
    doc
}

/// The example Firehose stream the documents name.
pub const EXAMPLE_FIREHOSE_STREAM: &str = "app-logs";

pub fn is_firehose_statement(statement: &Value) -> bool {
    as_list(&statement["Action"])
        .iter()
        .all(|a| a.starts_with("firehose:"))
}

/// Every Firehose action the document grants.
pub fn firehose_actions(doc: &Value) -> Vec<String> {
    statements(doc)
        .iter()
        .filter(|s| is_firehose_statement(s))
        .flat_map(|s| as_list(&s["Action"]))
        .map(str::to_owned)
        .collect()
}

/// The document with the test's account, region and Firehose stream, and the Firehose
/// statements' resource `*` after checking they named exactly `stream_arn` (moto evaluates
/// Firehose actions against `*` only, as Kinesis's).
pub fn for_test_firehose(doc: &Value, account: &str, stream: &str, stream_arn: &str) -> Value {
    let text = doc
        .to_string()
        .replace(EXAMPLE_ACCOUNT, account)
        .replace(EXAMPLE_REGION, REGION)
        .replace(
            &format!(":deliverystream/{EXAMPLE_FIREHOSE_STREAM}\""),
            &format!(":deliverystream/{stream}\""),
        );
    let mut doc: Value = serde_json::from_str(&text).unwrap();
    let mut found = 0;
    for statement in doc["Statement"].as_array_mut().unwrap() {
        if !is_firehose_statement(statement) {
            continue;
        }
        found += 1;
        assert_eq!(
            as_list(&statement["Resource"]),
            vec![stream_arn],
            "the Firehose statement names exactly the stream's ARN"
        );
        statement["Resource"] = Value::String("*".into());
    }
    assert!(found > 0, "the document grants Firehose: {doc}");
    doc
}
