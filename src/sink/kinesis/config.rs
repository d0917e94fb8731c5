//! Options of `type = "kinesis"`. Names follow the aws-for-fluent-bit `kinesis` plugin, so a
//! FireLens user finds the options they know; docs/kinesis.md documents each with an example.

use std::time::Duration as StdDuration;

use serde::Deserialize;

use super::batch::{DEFAULT_MAX_RECORD_SIZE, DEFAULT_MAX_REQUEST_BYTES};
use super::rate_limit::ShardRates;
use crate::aws::ClientOptions;
use crate::config::field::FieldError;
use crate::config::units::{ByteSize, Duration};
use crate::encode::{options, EncodeOptions, Encoder, Format};
use crate::event::KeyPath;
use crate::kinesis_record::kpl;

/// Largest per-record limit a stream can have (MaxRecordSize raised to 10 MiB).
pub const MAX_STREAM_RECORD_SIZE: usize = 10 * 1024 * 1024;
/// Default number of concurrent PutRecords requests.
pub const DEFAULT_MAX_IN_FLIGHT: usize = 4;

/// `[[sinks]] type = "kinesis"`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KinesisConfig {
    /// Name of the Kinesis data stream (required).
    pub stream: String,
    /// AWS region of the stream. Default: the default chain (`AWS_REGION`, `AWS_DEFAULT_REGION`,
    /// the profile, IMDS).
    #[serde(default)]
    pub region: Option<String>,
    /// Full URL of the Kinesis endpoint (`https://kinesis.eu-west-1.amazonaws.com`, a VPC
    /// endpoint, or a local stand-in such as `http://127.0.0.1:4567`). Default: the regional
    /// endpoint (or `AWS_ENDPOINT_URL_KINESIS` / `AWS_ENDPOINT_URL`).
    #[serde(default)]
    pub endpoint: Option<String>,
    /// Full URL of the STS endpoint used to assume `role_arn`. Default: the regional STS
    /// endpoint (or `AWS_ENDPOINT_URL_STS`).
    #[serde(default)]
    pub sts_endpoint: Option<String>,
    /// Role to assume (with STS AssumeRole, from the credentials of the default chain) before
    /// writing. Default: none, the default chain's credentials are used directly.
    #[serde(default)]
    pub role_arn: Option<String>,
    /// External ID passed to AssumeRole when the role's trust policy requires one.
    #[serde(default)]
    pub external_id: Option<String>,
    /// Record field (nested with `->`, e.g. `kubernetes->pod_name`) whose value, stringified and
    /// truncated to 256 characters, is the partition key. Default: a random key per record.
    #[serde(default)]
    pub partition_key: Option<String>,
    /// Record field holding a decimal explicit hash key (0 to 2^128-1) that routes the record
    /// instead of its partition key. Default: none.
    #[serde(default)]
    pub explicit_hash_key: Option<String>,
    /// Comma-separated top-level keys to keep; the others are not sent. Default: all keys.
    #[serde(default)]
    pub data_keys: Option<String>,
    /// Send only the value of this field (raw bytes for a string). Default: the whole record.
    #[serde(default)]
    pub log_key: Option<String>,
    /// End each record with `\n` (before compression). Default false.
    #[serde(default)]
    pub append_newline: bool,
    /// Add the record's time under this key. Default: not added.
    #[serde(default)]
    pub time_key: Option<String>,
    /// strftime format of `time_key`, plus `%L` (milliseconds) and `%f` (microseconds),
    /// zero-padded; or `iso8601`, `double`, `epoch`, `epoch_ms`. Default `%Y-%m-%dT%H:%M:%S.%LZ`.
    #[serde(default)]
    pub time_key_format: Option<String>,
    /// Replace every `.` in keys (at any depth) with this string. Default: keys unchanged.
    #[serde(default)]
    pub replace_dots: Option<String>,
    /// `none` (default), `zlib` or `gzip`: each user record is compressed on its own, before
    /// aggregation.
    #[serde(default)]
    pub compression: Option<String>,
    /// Pack many records into KPL aggregated records, grouped by shard. Default false.
    #[serde(default)]
    pub aggregation: bool,
    /// Largest aggregated record (data + partition key). Default: the per-record limit.
    #[serde(default)]
    pub aggregation_max_size: Option<ByteSize>,
    /// Per-record limit (data + partition key). Default: read from DescribeStreamSummary
    /// (MaxRecordSizeInKiB), 1 MiB when it cannot be read.
    #[serde(default)]
    pub max_record_size: Option<ByteSize>,
    /// Longest time a record waits in a batch before it is sent. Default 1s.
    #[serde(default = "default_flush")]
    pub flush: Duration,
    /// PutRecords requests in flight at once. Default 4.
    #[serde(default = "default_max_in_flight")]
    pub max_in_flight: usize,
    /// Attempts to retry a record after its first try before it is dropped (counted as
    /// `retry_limit`). Default: no limit, records are retried until they are delivered or the
    /// shutdown grace period ends.
    #[serde(default)]
    pub retry_limit: Option<u32>,
    /// Time limit of one PutRecords (or other Kinesis) HTTP attempt. Default 10s.
    #[serde(default = "default_http_request_timeout")]
    pub http_request_timeout: Duration,
    /// Hold records back to each shard's write limits before Kinesis refuses them, as the KPL
    /// does: `true` (every shard from the start), `auto` (each shard from the first time
    /// Kinesis throttles it) or `false`. Needs kinesis:ListShards; without it records go
    /// unheld and throttled ones are retried. Default `auto`.
    #[serde(default)]
    pub shard_rate_limit: ShardRateLimit,
    /// Records per second the limiter lets through per shard. Default 1000, Kinesis's limit
    /// (an aggregated record counts once).
    #[serde(default)]
    pub shard_records_per_second: Option<u32>,
    /// Bytes (data + partition key) per second the limiter lets through per shard. Default
    /// 1MiB, Kinesis's limit.
    #[serde(default)]
    pub shard_bytes_per_second: Option<ByteSize>,
}

/// When the per-shard rate limiter holds records back (`shard_rate_limit`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ShardRateLimit {
    /// Each shard from the first entry Kinesis throttles on it.
    #[default]
    Auto,
    /// Every shard from the start.
    On,
    /// Never: throttled entries are retried after a backoff.
    Off,
}

impl<'de> Deserialize<'de> for ShardRateLimit {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Written {
            Bool(bool),
            Text(String),
        }
        match Written::deserialize(deserializer)? {
            Written::Bool(true) => Ok(ShardRateLimit::On),
            Written::Bool(false) => Ok(ShardRateLimit::Off),
            Written::Text(text) if text == "auto" => Ok(ShardRateLimit::Auto),
            Written::Text(text) => Err(serde::de::Error::custom(format!(
                "`{text}` is not a shard_rate_limit: use \"auto\", true or false"
            ))),
        }
    }
}

fn default_flush() -> Duration {
    Duration::from_secs(1)
}

fn default_max_in_flight() -> usize {
    DEFAULT_MAX_IN_FLIGHT
}

fn default_http_request_timeout() -> Duration {
    Duration::from_secs(10)
}

impl KinesisConfig {
    /// The options of the sink's AWS client ([`crate::aws`]).
    pub fn client_options(&self) -> ClientOptions<'_> {
        ClientOptions {
            region: self.region.as_deref(),
            endpoint: self.endpoint.as_deref(),
            role_arn: self.role_arn.as_deref(),
            sts_endpoint: self.sts_endpoint.as_deref(),
            external_id: self.external_id.as_deref(),
            timeout: self.http_request_timeout.get(),
            app_name: None,
        }
    }

    /// Checks every option; each problem names its key.
    pub fn validate(&self) -> Result<(), Vec<FieldError>> {
        let mut problems = Vec::new();
        if self.stream.trim().is_empty() {
            problems.push(FieldError::new(
                "stream",
                "must name the Kinesis data stream",
            ));
        }
        self.client_options()
            .check("kinesis.eu-west-1.amazonaws.com", &mut problems);
        for (key, value) in [
            ("partition_key", &self.partition_key),
            ("explicit_hash_key", &self.explicit_hash_key),
        ] {
            if matches!(value, Some(path) if path.trim().is_empty()) {
                problems.push(FieldError::new(
                    key,
                    "must name a record field (or be removed)",
                ));
            }
        }
        if let Err(e) = options::compression("compression", self.compression.as_deref()) {
            problems.push(e);
        }
        if let Some(size) = self.max_record_size {
            let size = size.as_usize();
            if size == 0 || size > MAX_STREAM_RECORD_SIZE {
                problems.push(FieldError::new(
                    "max_record_size",
                    format!(
                        "{size} bytes is outside 1 byte .. 10MiB, the range of Kinesis \
                         per-record limits; leave it unset to read the stream's own limit"
                    ),
                ));
            }
        }
        if let Some(size) = self.aggregation_max_size {
            let size = size.as_usize();
            let outer = "shardId-000000000000".len() + kpl::FRAMING_LEN;
            if size <= outer + 8 || size > MAX_STREAM_RECORD_SIZE {
                problems.push(FieldError::new(
                    "aggregation_max_size",
                    format!(
                        "{size} bytes leaves no room to aggregate; use a size between 1KiB and \
                         the stream's per-record limit (or leave it unset)"
                    ),
                ));
            } else if let Some(max) = self.max_record_size {
                if size > max.as_usize() {
                    problems.push(FieldError::new(
                        "aggregation_max_size",
                        "is above max_record_size: an aggregated record that large is refused",
                    ));
                }
            }
            if !self.aggregation {
                problems.push(FieldError::new(
                    "aggregation_max_size",
                    "only applies with aggregation = true",
                ));
            }
        }
        if self.flush.get().is_zero() {
            problems.push(FieldError::new(
                "flush",
                "must be above 0 (e.g. \"1s\"): it is the longest time a record waits",
            ));
        }
        if self.max_in_flight == 0 || self.max_in_flight > 256 {
            problems.push(FieldError::new(
                "max_in_flight",
                "must be between 1 and 256 concurrent PutRecords requests",
            ));
        }
        if self.http_request_timeout.get() < StdDuration::from_millis(100) {
            problems.push(FieldError::new(
                "http_request_timeout",
                "must be at least 100ms (e.g. \"10s\")",
            ));
        }
        if self.shard_records_per_second == Some(0) {
            problems.push(FieldError::new(
                "shard_records_per_second",
                "must be above 0 (Kinesis takes 1000 records/s per shard; leave it unset for that)",
            ));
        }
        if self
            .shard_bytes_per_second
            .is_some_and(|b| b.as_usize() < 1024)
        {
            problems.push(FieldError::new(
                "shard_bytes_per_second",
                "must be at least 1KiB (Kinesis takes 1MiB/s per shard; leave it unset for that)",
            ));
        }
        if self.shard_rate_limit == ShardRateLimit::Off {
            for (key, set) in [
                (
                    "shard_records_per_second",
                    self.shard_records_per_second.is_some(),
                ),
                (
                    "shard_bytes_per_second",
                    self.shard_bytes_per_second.is_some(),
                ),
            ] {
                if set {
                    problems.push(FieldError::new(
                        key,
                        "does not apply with shard_rate_limit = false",
                    ));
                }
            }
        }
        if let Err(e) = self.encoder() {
            problems.push(e);
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(problems)
        }
    }

    /// The per-shard rates of the limiter, unless it is off.
    pub fn shard_rates(&self) -> Option<ShardRates> {
        (self.shard_rate_limit != ShardRateLimit::Off).then(|| ShardRates {
            records_per_second: self
                .shard_records_per_second
                .map_or(ShardRates::KINESIS.records_per_second, f64::from),
            bytes_per_second: self
                .shard_bytes_per_second
                .map_or(ShardRates::KINESIS.bytes_per_second, |b| {
                    b.as_usize() as f64
                }),
        })
    }

    /// The encode options these settings describe (JSON records, as the Go and C plugins send).
    pub fn encode_options(&self) -> Result<EncodeOptions, FieldError> {
        let time_format = options::time_format("time_key_format", self.time_key_format.as_deref())?;
        let compression = options::compression("compression", self.compression.as_deref())?;
        let data_keys = options::data_keys(self.data_keys.as_deref());
        Ok(EncodeOptions {
            format: Format::Json,
            log_key: self.log_key.as_deref().map(KeyPath::parse),
            data_keys,
            time_key: self.time_key.clone(),
            time_format,
            replace_dots: self.replace_dots.clone(),
            append_newline: self.append_newline,
            compression,
        })
    }

    /// Builds the record encoder.
    pub fn encoder(&self) -> Result<Encoder, FieldError> {
        Encoder::new(&self.encode_options()?)
    }

    /// The configured per-record limit, if any.
    pub fn max_record_size_override(&self) -> Option<usize> {
        self.max_record_size.map(|s| s.as_usize())
    }

    /// The request size limit for a stream whose per-record limit is `max_record_size`: 5 MiB,
    /// or 10 MiB where large records are enabled.
    pub fn max_request_bytes(max_record_size: usize) -> usize {
        if max_record_size > DEFAULT_MAX_RECORD_SIZE {
            2 * DEFAULT_MAX_REQUEST_BYTES
        } else {
            DEFAULT_MAX_REQUEST_BYTES
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::encode::Compression;

    fn parse(text: &str) -> Result<KinesisConfig, String> {
        let config: KinesisConfig =
            toml::from_str(text).map_err(|e| format!("parse error: {e}"))?;
        config
            .validate()
            .map_err(|problems| crate::config::field::join(&problems))
            .map(|()| config)
    }

    #[test]
    fn defaults_work_with_only_a_stream() {
        let c = parse("stream = \"logs\"").unwrap();
        assert_eq!(c.flush.get(), StdDuration::from_secs(1));
        assert_eq!(c.max_in_flight, DEFAULT_MAX_IN_FLIGHT);
        assert_eq!(c.retry_limit, None);
        assert!(!c.aggregation && !c.append_newline);
        assert_eq!(c.http_request_timeout.get(), StdDuration::from_secs(10));
        let o = c.encode_options().unwrap();
        assert_eq!(o.format, Format::Json);
        assert_eq!(o.compression, Compression::None);
    }

    #[test]
    fn every_option_of_the_issue_is_accepted() {
        let c = parse(
            r#"
            stream = "logs"
            region = "eu-west-1"
            endpoint = "http://127.0.0.1:4567"
            sts_endpoint = "https://sts.eu-west-1.amazonaws.com"
            role_arn = "arn:aws:iam::123456789012:role/writer"
            external_id = "x-1"
            partition_key = "kubernetes->pod_name"
            explicit_hash_key = "ehk"
            data_keys = "log, kubernetes"
            log_key = "log"
            append_newline = true
            time_key = "ts"
            time_key_format = "%Y-%m-%dT%H:%M:%S.%fZ"
            replace_dots = "_"
            compression = "gzip"
            aggregation = true
            aggregation_max_size = "256KiB"
            max_record_size = "1MiB"
            flush = "250ms"
            max_in_flight = 8
            retry_limit = 5
            http_request_timeout = "3s"
            "#,
        )
        .unwrap();
        let o = c.encode_options().unwrap();
        assert_eq!(
            o.data_keys,
            vec!["log".to_string(), "kubernetes".to_string()]
        );
        assert_eq!(o.compression, Compression::Gzip);
        assert_eq!(c.retry_limit, Some(5));
    }

    #[test]
    fn problems_name_their_key() {
        let cases = [
            ("stream = \"\"", "stream"),
            ("stream = \"s\"\nendpoint = \"localhost:4567\"", "endpoint"),
            ("stream = \"s\"\nrole_arn = \"writer\"", "role_arn"),
            ("stream = \"s\"\nexternal_id = \"x\"", "external_id"),
            ("stream = \"s\"\ncompression = \"brotli\"", "compression"),
            (
                "stream = \"s\"\nmax_record_size = \"20MiB\"",
                "max_record_size",
            ),
            (
                "stream = \"s\"\naggregation_max_size = \"64KiB\"",
                "aggregation_max_size",
            ),
            ("stream = \"s\"\nflush = \"0s\"", "flush"),
            ("stream = \"s\"\nmax_in_flight = 0", "max_in_flight"),
            (
                "stream = \"s\"\ntime_key = \"t\"\ntime_key_format = \"bogus\"",
                "time_key_format",
            ),
            ("stream = \"s\"\npartition_key = \"\"", "partition_key"),
        ];
        for (text, key) in cases {
            let err = parse(text).expect_err(text);
            assert!(err.starts_with(&format!("{key}:")), "{text}: {err}");
        }
        assert!(parse("stream = \"s\"\nstreams = \"t\"")
            .unwrap_err()
            .contains("unknown field"));
    }

    #[test]
    fn request_limit_follows_the_record_limit() {
        assert_eq!(KinesisConfig::max_request_bytes(1 << 20), 5 << 20);
        assert_eq!(KinesisConfig::max_request_bytes(10 << 20), 10 << 20);
    }
}
