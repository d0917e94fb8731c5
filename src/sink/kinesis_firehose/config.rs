//! Options of `type = "kinesis_firehose"`. Names follow Fluent Bit's `kinesis_firehose` output
//! (and aws-for-fluent-bit's `firehose`); docs/kinesis_firehose.md documents each.

use std::time::Duration as StdDuration;

use serde::Deserialize;

use crate::aws::ClientOptions;
use crate::config::field::FieldError;
use crate::config::units::Duration;
use crate::encode::{Compression, EncodeOptions, Encoder, Format, TimeFormat};
use crate::event::KeyPath;

/// Default number of PutRecordBatch calls in flight at once.
pub const DEFAULT_MAX_IN_FLIGHT: usize = 4;

/// `[[sinks]] type = "kinesis_firehose"`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KinesisFirehoseConfig {
    /// Name of the Firehose stream (delivery stream), required.
    pub delivery_stream: String,
    /// AWS region of the stream. Default: the default chain.
    #[serde(default)]
    pub region: Option<String>,
    /// Full URL of the Firehose endpoint. Default: the regional endpoint (or
    /// `AWS_ENDPOINT_URL_FIREHOSE` / `AWS_ENDPOINT_URL`).
    #[serde(default)]
    pub endpoint: Option<String>,
    /// Full URL of the STS endpoint used to assume `role_arn`. Default: the regional one.
    #[serde(default)]
    pub sts_endpoint: Option<String>,
    /// Role to assume with STS AssumeRole before writing. Default: none.
    #[serde(default)]
    pub role_arn: Option<String>,
    /// External ID passed to AssumeRole when the role's trust policy requires one.
    #[serde(default)]
    pub external_id: Option<String>,
    /// Comma-separated top-level keys to keep; the others are not sent. Default: all keys.
    #[serde(default)]
    pub data_keys: Option<String>,
    /// Send only the value of this field (as it is for a string). Default: the whole record.
    #[serde(default)]
    pub log_key: Option<String>,
    /// Add the record's time under this key. Default: not added.
    #[serde(default)]
    pub time_key: Option<String>,
    /// strftime format of `time_key` (`%L` ms, `%f` µs), or `iso8601`, `double`, `epoch`,
    /// `epoch_ms`. Default `%Y-%m-%dT%H:%M:%S.%LZ`.
    #[serde(default)]
    pub time_key_format: Option<String>,
    /// Replace every `.` in keys with this string. Default: keys unchanged.
    #[serde(default)]
    pub replace_dots: Option<String>,
    /// `gzip` (each record compressed on its own), or `none` (default). `arrow` is refused.
    #[serde(default)]
    pub compression: Option<String>,
    /// End each record with `\n` (before compression), so that S3 objects are JSON lines.
    /// Default true, as Fluent Bit's `kinesis_firehose`.
    #[serde(default = "default_true")]
    pub append_newline: bool,
    /// Join records (each ending with `\n`) into Firehose records of up to 1,000 KiB: fewer,
    /// larger records, as Firehose consumers expect newline-delimited data. Default false.
    #[serde(default)]
    pub simple_aggregation: bool,
    /// Longest time a record waits before it is sent. Default 1s.
    #[serde(default = "default_flush")]
    pub flush: Duration,
    /// PutRecordBatch calls in flight at once. Default 4.
    #[serde(default = "default_max_in_flight")]
    pub max_in_flight: usize,
    /// Retries of a record after its first try before it is dead-lettered or dropped.
    /// Default: no limit.
    #[serde(default)]
    pub retry_limit: Option<u32>,
    /// Time limit of one HTTP attempt. Default 10s.
    #[serde(default = "default_http_request_timeout")]
    pub http_request_timeout: Duration,
}

fn default_true() -> bool {
    true
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

impl KinesisFirehoseConfig {
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
        if self.delivery_stream.trim().is_empty() {
            problems.push(FieldError::new(
                "delivery_stream",
                "must name the Firehose stream",
            ));
        }
        self.client_options()
            .check("firehose.eu-west-1.amazonaws.com", &mut problems);
        if self.flush.get().is_zero() {
            problems.push(FieldError::new(
                "flush",
                "must be above 0 (e.g. \"1s\"): it is the longest time a record waits",
            ));
        }
        if self.max_in_flight == 0 || self.max_in_flight > 256 {
            problems.push(FieldError::new(
                "max_in_flight",
                "must be between 1 and 256 concurrent PutRecordBatch calls",
            ));
        }
        if self.http_request_timeout.get() < StdDuration::from_millis(100) {
            problems.push(FieldError::new(
                "http_request_timeout",
                "must be at least 100ms (e.g. \"10s\")",
            ));
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

    /// The encode options: JSON records, as both Fluent Bit plugins send them.
    pub fn encode_options(&self) -> Result<EncodeOptions, FieldError> {
        let time_format = match &self.time_key_format {
            Some(f) if f.contains('%') => TimeFormat::Strftime(f.clone()),
            Some(f) => TimeFormat::from_name("time_key_format", f)?,
            None => TimeFormat::default(),
        };
        let compression = match self.compression.as_deref() {
            Some(c) if c.eq_ignore_ascii_case("arrow") => {
                return Err(FieldError::new(
                    "compression",
                    "`arrow` is not supported (it needs Fluent Bit built with Apache Arrow, \
                     for S3 Parquet conversion); use gzip or none, and Firehose's own record \
                     format conversion for Parquet",
                ))
            }
            Some(c) => c
                .parse::<Compression>()
                .map_err(|m| FieldError::new("compression", m))?,
            None => Compression::None,
        };
        let data_keys = self
            .data_keys
            .as_deref()
            .map(|keys| {
                keys.split(',')
                    .map(str::trim)
                    .filter(|k| !k.is_empty())
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default();
        Ok(EncodeOptions {
            format: Format::Json,
            log_key: self.log_key.as_deref().map(KeyPath::parse),
            data_keys,
            time_key: self.time_key.clone(),
            time_format,
            replace_dots: self.replace_dots.clone(),
            append_newline: self.append_newline || self.simple_aggregation,
            compression,
        })
    }

    /// Builds the record encoder.
    pub fn encoder(&self) -> Result<Encoder, FieldError> {
        Encoder::new(&self.encode_options()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<KinesisFirehoseConfig, String> {
        let config: KinesisFirehoseConfig =
            toml::from_str(text).map_err(|e| format!("parse error: {e}"))?;
        config
            .validate()
            .map_err(|problems| crate::config::field::join(&problems))
            .map(|()| config)
    }

    #[test]
    fn every_option_is_accepted_and_defaults_are_fluent_bits() {
        let c = parse("delivery_stream = \"d\"").unwrap();
        assert!(c.append_newline && !c.simple_aggregation);
        let c = parse(
            r#"
            delivery_stream = "d"
            region = "eu-west-1"
            endpoint = "http://127.0.0.1:5000"
            sts_endpoint = "http://127.0.0.1:5000"
            role_arn = "arn:aws:iam::123456789012:role/w"
            external_id = "x"
            data_keys = "log, seq"
            log_key = "log"
            time_key = "ts"
            time_key_format = "%Y-%m-%dT%H:%M:%S"
            replace_dots = "_"
            compression = "gzip"
            append_newline = false
            simple_aggregation = true
            flush = "200ms"
            max_in_flight = 2
            retry_limit = 3
            http_request_timeout = "5s"
            "#,
        )
        .unwrap();
        let o = c.encode_options().unwrap();
        assert!(o.append_newline, "simple_aggregation joins with newlines");
        assert_eq!(o.compression, Compression::Gzip);
    }

    #[test]
    fn problems_name_their_key() {
        for (text, key) in [
            ("delivery_stream = \"\"", "delivery_stream"),
            (
                "delivery_stream = \"d\"\ncompression = \"arrow\"",
                "compression",
            ),
            (
                "delivery_stream = \"d\"\ncompression = \"lz4\"",
                "compression",
            ),
            (
                "delivery_stream = \"d\"\nendpoint = \"firehose.local\"",
                "endpoint",
            ),
            ("delivery_stream = \"d\"\nrole_arn = \"w\"", "role_arn"),
            (
                "delivery_stream = \"d\"\nmax_in_flight = 0",
                "max_in_flight",
            ),
        ] {
            let err = parse(text).expect_err(text);
            assert!(err.starts_with(&format!("{key}:")), "{text}: {err}");
        }
        assert!(parse("delivery_stream = \"d\"\ncompression = \"arrow\"")
            .unwrap_err()
            .contains("Arrow"));
        assert!(parse("delivery_stream = \"d\"\nstream = \"x\"")
            .unwrap_err()
            .contains("unknown field"));
    }
}
