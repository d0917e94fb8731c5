//! Reading CloudWatch Logs back independently of the sink: boto3 GetLogEvents (every page,
//! from the head), FilterLogEvents and DescribeLogGroups through tests/support/logs_tool.py,
//! run in the test venv against moto.

use std::process::Command;

use serde::Deserialize;
use serde_json::Value;

use crate::kinesis::aws_env;
use crate::paths::{python, support_file};

/// Runs logs_tool.py with `args` (in the test region); panics with its output when it fails.
pub fn logs_tool(endpoint: &str, args: &[&str]) -> Vec<u8> {
    logs_tool_in(crate::kinesis::REGION, endpoint, args)
}

/// [`logs_tool`] in `region`.
pub fn logs_tool_in(region: &str, endpoint: &str, args: &[&str]) -> Vec<u8> {
    let mut command = Command::new(python());
    command
        .arg(support_file("logs_tool.py"))
        .arg(endpoint)
        .args(args);
    aws_env(&mut command);
    command
        .env("AWS_REGION", region)
        .env("AWS_DEFAULT_REGION", region);
    let output = command.output().expect("run logs_tool.py");
    assert!(
        output.status.success(),
        "logs_tool.py {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    output.stdout
}

/// One event as CloudWatch Logs returns it.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LogEventOut {
    /// FilterLogEvents only.
    #[serde(default)]
    pub log_stream_name: Option<String>,
    pub timestamp: i64,
    pub message: String,
}

impl LogEventOut {
    /// The message as JSON (records are sent as JSON objects by default).
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.message)
            .unwrap_or_else(|e| panic!("message is not JSON ({e}): {:?}", self.message))
    }

    /// Its `seq` field.
    pub fn seq(&self) -> u64 {
        self.json()["seq"]
            .as_u64()
            .unwrap_or_else(|| panic!("event without seq: {}", self.message))
    }
}

pub fn create_group(endpoint: &str, group: &str) {
    logs_tool(endpoint, &["create-group", group]);
}

/// Every event of a stream, in the order GetLogEvents returns them.
pub fn events(endpoint: &str, group: &str, stream: &str) -> Vec<LogEventOut> {
    serde_json::from_slice(&logs_tool(endpoint, &["events", group, stream])).expect("events")
}

/// [`events`] of a group in `region`.
pub fn events_in(region: &str, endpoint: &str, group: &str, stream: &str) -> Vec<LogEventOut> {
    serde_json::from_slice(&logs_tool_in(region, endpoint, &["events", group, stream]))
        .expect("events")
}

/// Every event of a group (FilterLogEvents), with its stream.
pub fn filter(endpoint: &str, group: &str) -> Vec<LogEventOut> {
    serde_json::from_slice(&logs_tool(endpoint, &["filter", group])).expect("filter")
}

/// The group as DescribeLogGroups shows it, `None` when it does not exist.
pub fn group(endpoint: &str, group: &str) -> Option<Value> {
    let value: Value =
        serde_json::from_slice(&logs_tool(endpoint, &["group", group])).expect("group");
    (!value.is_null()).then_some(value)
}

/// The names of a group's streams, sorted.
pub fn streams(endpoint: &str, group: &str) -> Vec<String> {
    serde_json::from_slice(&logs_tool(endpoint, &["streams", group])).expect("streams")
}

/// A log group name no other test of this process uses.
pub fn unique_group(prefix: &str) -> String {
    crate::kinesis::unique_stream(&format!("/logferry-test/{prefix}"))
}
