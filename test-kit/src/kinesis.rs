//! Reading a Kinesis stream back independently of the sink: boto3 GetRecords on every shard and
//! the official aws-kinesis-agg deaggregator (tests/support/kinesis_tool.py), run in the test
//! venv against moto or kinesalite; plus the environment that keeps AWS clients in tests off
//! the host's credentials.

use std::collections::BTreeMap;
use std::process::Command;

use base64::Engine;
use serde::Deserialize;

use crate::paths::{python, support_file};

/// Static test credentials (moto accepts any while auth enforcement is off).
pub const ACCESS_KEY: &str = "AKIAIOSFODNN7EXAMPLE";
pub const SECRET_KEY: &str = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY";
pub const REGION: &str = "us-east-1";

/// Environment for AWS clients in tests: static keys, a region, nothing from the host.
pub fn aws_env(command: &mut Command) {
    for var in [
        "AWS_PROFILE",
        "AWS_SESSION_TOKEN",
        "AWS_ROLE_ARN",
        "AWS_WEB_IDENTITY_TOKEN_FILE",
        "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
        "AWS_CONTAINER_CREDENTIALS_FULL_URI",
        "AWS_ENDPOINT_URL",
        "AWS_ENDPOINT_URL_STS",
        "AWS_ENDPOINT_URL_KINESIS",
    ] {
        command.env_remove(var);
    }
    command
        .env("AWS_ACCESS_KEY_ID", ACCESS_KEY)
        .env("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
        .env("AWS_REGION", REGION)
        .env("AWS_DEFAULT_REGION", REGION)
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("NO_COLOR", "1")
        .env("AWS_CONFIG_FILE", "/nonexistent/logferry-test-config")
        .env(
            "AWS_SHARED_CREDENTIALS_FILE",
            "/nonexistent/logferry-test-credentials",
        );
}

/// Runs kinesis_tool.py with `args`; panics with its output when it fails.
pub fn tool(endpoint: &str, args: &[&str]) -> Vec<u8> {
    let mut command = Command::new(python());
    command
        .arg(support_file("kinesis_tool.py"))
        .arg(endpoint)
        .args(args);
    aws_env(&mut command);
    let output = command.output().expect("run kinesis_tool.py");
    assert!(
        output.status.success(),
        "kinesis_tool.py {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    output.stdout
}

pub fn create_stream(endpoint: &str, stream: &str, shards: u32) {
    tool(endpoint, &["create", stream, &shards.to_string()]);
}

#[derive(Debug, Clone, Deserialize)]
pub struct ShardInfo {
    pub shard_id: String,
    pub start: String,
    pub end: String,
    pub closed: bool,
}

impl ShardInfo {
    pub fn contains(&self, hash: u128) -> bool {
        let start: u128 = self.start.parse().unwrap();
        let end: u128 = self.end.parse().unwrap();
        start <= hash && hash <= end
    }
}

#[derive(Debug, Clone, Deserialize)]
pub struct UserRecord {
    pub partition_key: String,
    pub explicit_hash_key: Option<String>,
    pub data_b64: String,
}

impl UserRecord {
    pub fn data(&self) -> Vec<u8> {
        base64::engine::general_purpose::STANDARD
            .decode(&self.data_b64)
            .unwrap()
    }

    /// The data as JSON (records are sent as JSON objects by default).
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.data()).unwrap_or_else(|e| {
            panic!(
                "record data is not JSON ({e}): {:?}",
                String::from_utf8_lossy(&self.data())
            )
        })
    }
}

#[derive(Debug, Clone, Deserialize)]
pub struct StreamRecord {
    pub shard_id: String,
    pub sequence_number: String,
    pub partition_key: String,
    pub data_b64: String,
    pub aggregated: bool,
    /// ApproximateArrivalTimestamp, seconds since the epoch.
    pub arrival: f64,
    pub users: Vec<UserRecord>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct StreamContents {
    pub shards: Vec<ShardInfo>,
    pub records: Vec<StreamRecord>,
}

impl StreamContents {
    pub fn shard(&self, id: &str) -> &ShardInfo {
        self.shards
            .iter()
            .find(|s| s.shard_id == id)
            .unwrap_or_else(|| panic!("no shard {id}"))
    }

    /// Every user record (deaggregated), with the shard it was read from.
    pub fn users(&self) -> Vec<(&str, &UserRecord)> {
        self.records
            .iter()
            .flat_map(|r| r.users.iter().map(move |u| (r.shard_id.as_str(), u)))
            .collect()
    }

    /// `seq` of every user record (JSON data with a `seq` field), counted.
    pub fn seq_counts(&self) -> BTreeMap<u64, usize> {
        let mut counts = BTreeMap::new();
        for (_, user) in self.users() {
            let seq = user.json()["seq"]
                .as_u64()
                .unwrap_or_else(|| panic!("record without seq: {:?}", user.json()));
            *counts.entry(seq).or_default() += 1;
        }
        counts
    }
}

pub fn read_stream(endpoint: &str, stream: &str) -> StreamContents {
    serde_json::from_slice(&tool(endpoint, &["read", stream])).expect("kinesis_tool read output")
}

/// The hash key Kinesis computes for a partition key (MD5, big-endian), computed here with
/// the md-5 crate directly rather than the sink's own shard_map code.
pub fn md5_hash_key(key: &str) -> u128 {
    use md5::Digest;
    u128::from_be_bytes(md5::Md5::digest(key.as_bytes()).into())
}

/// A stream name no other test of this process uses.
pub fn unique_stream(prefix: &str) -> String {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static N: AtomicUsize = AtomicUsize::new(0);
    format!(
        "{prefix}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}
