//! Options of `type = "cloudwatch_logs"`. Names follow Fluent Bit's `cloudwatch_logs` output,
//! so a FireLens user finds the options they know; docs/cloudwatch_logs.md documents each.

use std::time::Duration as StdDuration;

use serde::Deserialize;

use super::names::{check_group_name, check_stream_name};
use super::template::Template;
use crate::aws::ClientOptions;
use crate::config::field::FieldError;
use crate::config::units::{ByteSize, Duration};
use crate::encode::{Compression, EncodeOptions, Encoder, Format, TimeFormat};
use crate::event::KeyPath;

/// Default number of PutLogEvents calls in flight at once (at most one per log stream).
pub const DEFAULT_MAX_IN_FLIGHT: usize = 4;

/// The retention periods CloudWatch Logs accepts, in days.
pub const RETENTION_DAYS: &[u32] = &[
    1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557, 2922,
    3288, 3653,
];

/// `[[sinks]] type = "cloudwatch_logs"`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CloudWatchLogsConfig {
    /// AWS region of the log groups. Default: the default chain (`AWS_REGION`, the profile,
    /// IMDS).
    #[serde(default)]
    pub region: Option<String>,
    /// The log group every record goes to, or the fallback of `log_group_template` when the
    /// template cannot be filled for a record.
    #[serde(default)]
    pub log_group_name: Option<String>,
    /// The log group per record: `$(tag)`, `$(tag[n])` and record fields
    /// (`$(kubernetes['namespace_name'])`, also written `$kubernetes['namespace_name']`,
    /// `$TAG`, `$TAG[n]`) are replaced by their values.
    #[serde(default)]
    pub log_group_template: Option<String>,
    /// The log stream every record goes to (or the fallback of `log_stream_template`).
    #[serde(default)]
    pub log_stream_name: Option<String>,
    /// Log stream per tag: this prefix followed by the record's tag.
    #[serde(default)]
    pub log_stream_prefix: Option<String>,
    /// The log stream per record, as `log_group_template`.
    #[serde(default)]
    pub log_stream_template: Option<String>,
    /// Send only the value of this field (as it is for a string, JSON otherwise). Default:
    /// the whole record as JSON.
    #[serde(default)]
    pub log_key: Option<String>,
    /// `json/emf`: tells CloudWatch the events are Embedded Metric Format JSON, from which it
    /// extracts metrics (the `x-amzn-logs-format` header). Default: plain events.
    #[serde(default)]
    pub log_format: Option<String>,
    /// Create the log group when it does not exist. Default false (as Fluent Bit).
    #[serde(default)]
    pub auto_create_group: bool,
    /// Retention of the log groups logferry creates, in days (one of CloudWatch's values).
    /// Default: never expire. Events older than the retention are dead-lettered.
    #[serde(default)]
    pub log_retention_days: Option<u32>,
    /// Class of the log groups logferry creates: `STANDARD` or `INFREQUENT_ACCESS`. Default:
    /// CloudWatch's (STANDARD).
    #[serde(default)]
    pub log_group_class: Option<String>,
    /// Role to assume with STS AssumeRole before writing. Default: none.
    #[serde(default)]
    pub role_arn: Option<String>,
    /// External ID passed to AssumeRole when the role's trust policy requires one.
    #[serde(default)]
    pub external_id: Option<String>,
    /// Full URL of the CloudWatch Logs endpoint. Default: the regional endpoint (or
    /// `AWS_ENDPOINT_URL_CLOUDWATCH_LOGS` / `AWS_ENDPOINT_URL`).
    #[serde(default)]
    pub endpoint: Option<String>,
    /// Full URL of the STS endpoint used to assume `role_arn`. Default: the regional one.
    #[serde(default)]
    pub sts_endpoint: Option<String>,
    /// Appended to the User-Agent of every request (letters, digits and `!#$%&'*+-.^_`|~`).
    #[serde(default)]
    pub extra_user_agent: Option<String>,
    /// Largest event sent, with CloudWatch's 26 bytes of overhead; larger ones are
    /// dead-lettered (`too_large`). Default 256KiB (Fluent Bit's limit, and AWS's for years);
    /// at most 1MiB, CloudWatch Logs' current per-event limit.
    #[serde(default)]
    pub max_event_size: Option<ByteSize>,
    /// Longest time an event waits before it is sent. Default 1s.
    #[serde(default = "default_flush")]
    pub flush: Duration,
    /// PutLogEvents calls in flight at once (never two to the same stream). Default 4.
    #[serde(default = "default_max_in_flight")]
    pub max_in_flight: usize,
    /// Retries of an event after its first try before it is dead-lettered or dropped.
    /// Default: no limit.
    #[serde(default)]
    pub retry_limit: Option<u32>,
    /// Time limit of one HTTP attempt. Default 10s.
    #[serde(default = "default_http_request_timeout")]
    pub http_request_timeout: Duration,
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

/// Where events go, checked: the group and the stream, each a template or a fixed name.
#[derive(Debug, Clone)]
pub struct Destinations {
    pub group: Naming,
    pub stream: Naming,
}

/// How a group or stream name is found for a record.
#[derive(Debug, Clone)]
pub enum Naming {
    /// Always this name.
    Fixed(String),
    /// The prefix followed by the record's tag.
    TagPrefix(String),
    /// A template, with the fixed name used when the record lacks a field it names.
    Template {
        template: Template,
        fallback: Option<String>,
    },
}

impl CloudWatchLogsConfig {
    /// The options of the sink's AWS client ([`crate::aws`]).
    pub fn client_options(&self) -> ClientOptions<'_> {
        ClientOptions {
            region: self.region.as_deref(),
            endpoint: self.endpoint.as_deref(),
            role_arn: self.role_arn.as_deref(),
            sts_endpoint: self.sts_endpoint.as_deref(),
            external_id: self.external_id.as_deref(),
            timeout: self.http_request_timeout.get(),
            app_name: self.extra_user_agent.as_deref(),
        }
    }

    /// Checks every option; each problem names its key.
    pub fn validate(&self) -> Result<(), Vec<FieldError>> {
        let mut problems = Vec::new();
        if let Err(mut e) = self.destinations() {
            problems.append(&mut e);
        }
        self.client_options()
            .check("logs.eu-west-1.amazonaws.com", &mut problems);
        if let Some(format) = &self.log_format {
            if format != "json/emf" {
                problems.push(FieldError::new(
                    "log_format",
                    format!(
                        "`{format}` is not supported: the only log_format CloudWatch Logs \
                         knows is `json/emf` (Embedded Metric Format); remove it for plain events"
                    ),
                ));
            }
        }
        if let Some(days) = self.log_retention_days {
            if !RETENTION_DAYS.contains(&days) {
                problems.push(FieldError::new(
                    "log_retention_days",
                    format!(
                        "{days} is not a retention CloudWatch Logs accepts; use one of {}",
                        RETENTION_DAYS
                            .iter()
                            .map(u32::to_string)
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                ));
            }
        }
        if let Some(class) = &self.log_group_class {
            if class != "STANDARD" && class != "INFREQUENT_ACCESS" {
                problems.push(FieldError::new(
                    "log_group_class",
                    format!(
                        "`{class}` is not a log group class: use STANDARD or INFREQUENT_ACCESS"
                    ),
                ));
            }
        }
        let creates = self.auto_create_group;
        for (key, set) in [
            ("log_retention_days", self.log_retention_days.is_some()),
            ("log_group_class", self.log_group_class.is_some()),
        ] {
            if set && !creates {
                problems.push(FieldError::new(
                    key,
                    "only applies to log groups logferry creates: set auto_create_group = true \
                     (or set it on the existing group)",
                ));
            }
        }
        if let Some(size) = self.max_event_size {
            let size = size.as_usize();
            if size <= super::batch::EVENT_OVERHEAD || size > super::batch::MAX_EVENT_BYTES_LIMIT {
                problems.push(FieldError::new(
                    "max_event_size",
                    format!(
                        "{size} bytes is outside 27 bytes .. 1MiB, what CloudWatch Logs takes \
                         per event (26 bytes of it are CloudWatch's overhead)"
                    ),
                ));
            }
        }
        if let Some(agent) = &self.extra_user_agent {
            if let Err(message) = check_user_agent(agent) {
                problems.push(FieldError::new("extra_user_agent", message));
            }
        }
        if matches!(&self.log_key, Some(k) if k.trim().is_empty()) {
            problems.push(FieldError::new(
                "log_key",
                "must name a record field (or be removed)",
            ));
        }
        if self.flush.get().is_zero() {
            problems.push(FieldError::new(
                "flush",
                "must be above 0 (e.g. \"1s\"): it is the longest time an event waits",
            ));
        }
        if self.max_in_flight == 0 || self.max_in_flight > 256 {
            problems.push(FieldError::new(
                "max_in_flight",
                "must be between 1 and 256 concurrent PutLogEvents calls",
            ));
        }
        if self.http_request_timeout.get() < StdDuration::from_millis(100) {
            problems.push(FieldError::new(
                "http_request_timeout",
                "must be at least 100ms (e.g. \"10s\")",
            ));
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(problems)
        }
    }

    /// The group and stream naming these options describe.
    pub fn destinations(&self) -> Result<Destinations, Vec<FieldError>> {
        let mut problems = Vec::new();
        let name = |key: &'static str, value: &Option<String>, problems: &mut Vec<FieldError>| {
            let value = value.as_deref()?;
            let checked = if key == "log_group_name" {
                check_group_name(value)
            } else {
                check_stream_name(value)
            };
            if let Err(message) = checked {
                problems.push(FieldError::new(key, message));
                return None;
            }
            Some(value.to_string())
        };
        let template =
            |key: &'static str, value: &Option<String>, problems: &mut Vec<FieldError>| {
                let value = value.as_deref()?;
                match Template::parse(value) {
                    Ok(t) => Some(t),
                    Err(message) => {
                        problems.push(FieldError::new(key, message));
                        None
                    }
                }
            };
        let group_name = name("log_group_name", &self.log_group_name, &mut problems);
        let group_template = template(
            "log_group_template",
            &self.log_group_template,
            &mut problems,
        );
        let stream_name = name("log_stream_name", &self.log_stream_name, &mut problems);
        let stream_prefix = self.log_stream_prefix.clone();
        let stream_template = template(
            "log_stream_template",
            &self.log_stream_template,
            &mut problems,
        );
        let group = match (group_template, group_name) {
            (Some(template), fallback) => Some(Naming::Template { template, fallback }),
            (None, Some(name)) => Some(Naming::Fixed(name)),
            (None, None) => {
                if self.log_group_template.is_none() {
                    problems.push(FieldError::new(
                        "log_group_name",
                        "missing: name the log group (or give log_group_template)",
                    ));
                }
                None
            }
        };
        if stream_name.is_some() && stream_prefix.is_some() {
            problems.push(FieldError::new(
                "log_stream_prefix",
                "give either log_stream_name or log_stream_prefix, not both",
            ));
        }
        let fixed_stream = match (stream_name, stream_prefix) {
            (Some(name), _) => Some(Naming::Fixed(name)),
            (None, Some(prefix)) => Some(Naming::TagPrefix(prefix)),
            (None, None) => None,
        };
        let stream = match (stream_template, fixed_stream) {
            (Some(template), fallback) => {
                let fallback = match fallback {
                    Some(Naming::Fixed(name)) => Some(name),
                    Some(Naming::TagPrefix(prefix)) => {
                        problems.push(FieldError::new(
                            "log_stream_prefix",
                            "cannot be the fallback of log_stream_template: give \
                             log_stream_name as the fallback instead",
                        ));
                        Some(prefix)
                    }
                    _ => None,
                };
                Some(Naming::Template { template, fallback })
            }
            (None, Some(naming)) => Some(naming),
            (None, None) => {
                if self.log_stream_template.is_none() {
                    problems.push(FieldError::new(
                        "log_stream_name",
                        "missing: give log_stream_name, log_stream_prefix or log_stream_template",
                    ));
                }
                None
            }
        };
        match (group, stream) {
            (Some(group), Some(stream)) if problems.is_empty() => {
                Ok(Destinations { group, stream })
            }
            _ => Err(problems),
        }
    }

    /// The per-event limits these options set.
    pub fn event_limits(&self) -> super::batch::EventLimits {
        super::batch::EventLimits {
            max_size: self
                .max_event_size
                .map_or(super::batch::MAX_EVENT_BYTES, |s| s.as_usize()),
            retention_days: self.log_retention_days,
        }
    }

    /// The encoder: the record as JSON, or the value of `log_key`.
    pub fn encoder(&self) -> Result<Encoder, FieldError> {
        Encoder::new(&EncodeOptions {
            format: Format::Json,
            log_key: self.log_key.as_deref().map(KeyPath::parse),
            data_keys: Vec::new(),
            time_key: None,
            time_format: TimeFormat::default(),
            replace_dots: None,
            append_newline: false,
            compression: Compression::None,
        })
    }
}

/// The characters the SDK accepts in an app name (an HTTP token).
pub fn check_user_agent(agent: &str) -> Result<(), String> {
    let ok = !agent.is_empty()
        && agent
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "`{agent}` cannot go in a User-Agent: use letters, digits and !#$%&'*+-.^_`|~ only"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<CloudWatchLogsConfig, String> {
        let config: CloudWatchLogsConfig =
            toml::from_str(text).map_err(|e| format!("parse error: {e}"))?;
        config
            .validate()
            .map_err(|problems| crate::config::field::join(&problems))
            .map(|()| config)
    }

    #[test]
    fn every_option_is_accepted() {
        let c = parse(
            r#"
            region = "eu-west-1"
            log_group_name = "fallback"
            log_group_template = "/aws/ecs/$(ecs_cluster)"
            log_stream_name = "fallback-stream"
            log_stream_template = "$(tag[1]).$(kubernetes['pod_name'])"
            log_key = "log"
            log_format = "json/emf"
            auto_create_group = true
            log_retention_days = 30
            log_group_class = "INFREQUENT_ACCESS"
            role_arn = "arn:aws:iam::123456789012:role/writer"
            external_id = "x"
            endpoint = "http://127.0.0.1:5000"
            sts_endpoint = "http://127.0.0.1:5000"
            extra_user_agent = "firelens"
            max_event_size = "1MiB"
            flush = "200ms"
            max_in_flight = 2
            retry_limit = 3
            http_request_timeout = "5s"
            "#,
        )
        .unwrap();
        let d = c.destinations().unwrap();
        assert!(
            matches!(d.group, Naming::Template { fallback: Some(ref f), .. } if f == "fallback")
        );
        assert!(matches!(d.stream, Naming::Template { .. }));
    }

    #[test]
    fn minimal_configs() {
        let c = parse("log_group_name = \"g\"\nlog_stream_prefix = \"from-\"").unwrap();
        let d = c.destinations().unwrap();
        assert!(matches!(d.stream, Naming::TagPrefix(ref p) if p == "from-"));
        assert!(parse("log_group_template = \"$(tag)\"\nlog_stream_template = \"$(tag)\"").is_ok());
    }

    #[test]
    fn problems_name_their_key() {
        let cases = [
            ("log_stream_name = \"s\"", "log_group_name"),
            ("log_group_name = \"g\"", "log_stream_name"),
            (
                "log_group_name = \"g\"\nlog_stream_name = \"s\"\nlog_stream_prefix = \"p\"",
                "log_stream_prefix",
            ),
            (
                "log_group_name = \"g\"\nlog_stream_name = \"s\"\nlog_format = \"text\"",
                "log_format",
            ),
            (
                "log_group_name = \"g\"\nlog_stream_name = \"s\"\nauto_create_group = true\nlog_retention_days = 2",
                "log_retention_days",
            ),
            (
                "log_group_name = \"g\"\nlog_stream_name = \"s\"\nlog_retention_days = 7",
                "log_retention_days",
            ),
            (
                "log_group_name = \"g\"\nlog_stream_name = \"s\"\nauto_create_group = true\nlog_group_class = \"COLD\"",
                "log_group_class",
            ),
            (
                "log_group_name = \"g\"\nlog_stream_name = \"s\"\nendpoint = \"logs.local\"",
                "endpoint",
            ),
            (
                "log_group_name = \"g\"\nlog_stream_name = \"s\"\nrole_arn = \"writer\"",
                "role_arn",
            ),
            (
                "log_group_name = \"g\"\nlog_stream_name = \"s\"\nextra_user_agent = \"a b\"",
                "extra_user_agent",
            ),
            (
                "log_group_template = \"$(tag\"\nlog_stream_name = \"s\"",
                "log_group_template",
            ),
            (
                "log_group_name = \"g\"\nlog_stream_name = \"s\"\nmax_in_flight = 0",
                "max_in_flight",
            ),
            (
                "log_group_name = \"g\"\nlog_stream_name = \"s\"\nmax_event_size = \"2MiB\"",
                "max_event_size",
            ),
            ("log_group_name = \"my group\"\nlog_stream_name = \"s\"", "log_group_name"),
            ("log_group_name = \"g\"\nlog_stream_name = \"a:b\"", "log_stream_name"),
        ];
        for (text, key) in cases {
            let err = parse(text).expect_err(text);
            assert!(err.starts_with(&format!("{key}:")), "{text}: {err}");
        }
        assert!(
            parse("log_group_name = \"g\"\nlog_stream_name = \"s\"\nlog_group = \"x\"")
                .unwrap_err()
                .contains("unknown field")
        );
    }
}
