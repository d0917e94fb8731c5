//! Reading what a Firehose stream delivered, independently of the sink: moto's Firehose
//! writes one S3 object per PutRecordBatch call (the records' bytes joined), read back with
//! boto3 through tests/support/firehose_tool.py in the test venv.

use std::process::Command;

use base64::Engine;
use serde::Deserialize;

use crate::kinesis::aws_env;
use crate::paths::{python, support_file};

/// Runs firehose_tool.py with `args`; panics with its output when it fails.
pub fn firehose_tool(endpoint: &str, args: &[&str]) -> Vec<u8> {
    let mut command = Command::new(python());
    command
        .arg(support_file("firehose_tool.py"))
        .arg(endpoint)
        .args(args);
    aws_env(&mut command);
    let output = command.output().expect("run firehose_tool.py");
    assert!(
        output.status.success(),
        "firehose_tool.py {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    output.stdout
}

/// Creates `bucket` and a Firehose stream delivering to it.
pub fn create_stream(endpoint: &str, stream: &str, bucket: &str) {
    firehose_tool(endpoint, &["create", stream, bucket]);
}

/// The stream's ARN, as the service reports it.
pub fn stream_arn(endpoint: &str, stream: &str) -> String {
    String::from_utf8(firehose_tool(endpoint, &["arn", stream])).expect("UTF-8")
}

/// One S3 object the stream delivered (one PutRecordBatch call's records, joined).
#[derive(Debug, Clone, Deserialize)]
pub struct Delivered {
    pub key: String,
    pub last_modified: String,
    pub data_b64: String,
}

impl Delivered {
    pub fn data(&self) -> Vec<u8> {
        base64::engine::general_purpose::STANDARD
            .decode(&self.data_b64)
            .expect("base64")
    }
}

/// Every object in `bucket`.
pub fn read_bucket(endpoint: &str, bucket: &str) -> Vec<Delivered> {
    serde_json::from_slice(&firehose_tool(endpoint, &["read", bucket])).expect("objects")
}
