//! The AWS outputs beyond Kinesis Data Streams: `cloudwatch_logs` (Fluent Bit's C plugin) and
//! `cloudwatch` (aws-for-fluent-bit's Go plugin) → the CloudWatch Logs sink;
//! `kinesis_firehose` (C) and `firehose` (Go) → the Firehose sink. docs/firelens.md lists
//! every decision.

use super::super::native::{At, Native, Val};
use super::super::values;
use super::{at, boolean, endpoints, string, Keys};

/// Which CloudWatch Logs plugin a section names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum CloudWatchPlugin {
    /// `cloudwatch_logs`: templates in `log_group_template` / `log_stream_template`.
    C,
    /// `cloudwatch`: `$(...)` templates in `log_group_name` / `log_stream_name`, with
    /// `default_log_group_name` / `default_log_stream_name` as fallbacks.
    Go,
}

/// The Go plugin's fallbacks when a template cannot be filled and no default is given.
const GO_DEFAULT_GROUP: &str = "fluentbit-default";
const GO_DEFAULT_STREAM: &str = "/fluentbit-default";

pub(super) fn cloudwatch_logs(keys: &mut Keys, native: &mut Native, plugin: CloudWatchPlugin) {
    for key in [
        "region",
        "log_stream_prefix",
        "log_key",
        "log_format",
        "role_arn",
        "external_id",
        "extra_user_agent",
        "log_group_template",
        "log_stream_template",
    ] {
        string(keys, native, key, key);
    }
    for (name_key, default_key, go_default) in [
        ("log_group_name", "default_log_group_name", GO_DEFAULT_GROUP),
        (
            "log_stream_name",
            "default_log_stream_name",
            GO_DEFAULT_STREAM,
        ),
    ] {
        let template_key = name_key.replace("_name", "_template");
        let name = keys.one(name_key);
        let default = keys.one(default_key);
        match name {
            Some(e) if plugin == CloudWatchPlugin::Go && e.value.contains("$(") => {
                native.set(&template_key, Val::Str(e.value.clone()), at(e));
                match default {
                    Some(d) => native.set(name_key, Val::Str(d.value.clone()), at(d)),
                    None => native.set(name_key, Val::Str(go_default.to_string()), at(e)),
                }
            }
            Some(e) => {
                native.set(name_key, Val::Str(e.value.clone()), at(e));
                if let Some(d) = default {
                    keys.problem(
                        d,
                        format!(
                            "only applies when {name_key} is a template ($(...)); remove it or \
                             make {name_key} a template"
                        ),
                    );
                }
            }
            None => {
                if let Some(d) = default {
                    native.set(name_key, Val::Str(d.value.clone()), at(d));
                }
            }
        }
    }
    let mut creates = false;
    if let Some(e) = keys.one("auto_create_group") {
        match values::boolean(&e.value) {
            Ok(b) => {
                creates = b;
                native.set("auto_create_group", Val::Bool(b), at(e));
            }
            Err(m) => keys.problem(e, m),
        }
    }
    // Both only apply to a group the plugin creates: without auto_create_group Fluent Bit
    // ignores them, and so does the translation (the native options would be refused).
    if let Some(e) = keys.one("log_retention_days") {
        match values::integer(&e.value) {
            // Fluent Bit: 0 (the default) leaves the retention alone.
            Ok(0) => {}
            Ok(_) if !creates => {}
            Ok(n) => native.set("log_retention_days", Val::Int(n), at(e)),
            Err(m) => keys.problem(e, m),
        }
    }
    if let Some(e) = keys.one("log_group_class") {
        if creates {
            native.set("log_group_class", Val::Str(e.value.clone()), at(e));
        }
    }
    for key in ["endpoint", "sts_endpoint"] {
        if let Some(e) = keys.one(key) {
            match values::endpoint(&e.value, None) {
                Ok(url) => native.set(key, Val::Str(url), at(e)),
                Err(m) => keys.problem(e, m),
            }
        }
    }
    if let Some(e) = keys.one("auto_create_stream") {
        match values::boolean(&e.value) {
            Ok(true) => {}
            Ok(false) => keys.problem(
                e,
                "`false` is not supported: logferry creates a missing log stream on the first \
                 call to it (remove the key)",
            ),
            Err(m) => keys.problem(e, m),
        }
    }
    // logferry always retries with backoff.
    keys.no_op("auto_retry_requests");
    for key in ["metric_namespace", "metric_dimensions"] {
        keys.refuse(
            key,
            "not supported: logferry does not turn Fluent Bit metrics into Embedded Metric \
             Format; send EMF JSON records with log_format json/emf instead",
        );
    }
    keys.refuse(
        "new_log_group_tags",
        "not supported: tag the log group yourself (or create it with its tags beforehand)",
    );
    keys.refuse(
        "credentials_endpoint",
        "not supported; credentials come from the default chain (ECS task role, IRSA, \
         environment, profile) or role_arn",
    );
    keys.refuse(
        "profile",
        "not supported; set AWS_PROFILE in the environment (the default credential chain reads it)",
    );
}

/// `kinesis_firehose` (C plugin) and `firehose` (Go plugin) → the Firehose sink.
pub(super) fn kinesis_firehose(keys: &mut Keys, native: &mut Native, go: Option<At>) {
    for key in [
        "region",
        "delivery_stream",
        "data_keys",
        "log_key",
        "role_arn",
        "external_id",
        "time_key",
        "replace_dots",
    ] {
        string(keys, native, key, key);
    }
    endpoints(keys, native);
    let dialect = if go.is_some() {
        values::TimeDialect::GoPlugin
    } else {
        values::TimeDialect::FluentBitC
    };
    if let Some(e) = keys.one("time_key_format") {
        match values::time_key_format(&e.value, dialect) {
            Ok(f) => native.set("time_key_format", Val::Str(f), at(e)),
            Err(m) => keys.problem(e, m),
        }
    }
    if let Some(e) = keys.one("compression") {
        let value = e.value.to_ascii_lowercase();
        if value == "arrow" {
            keys.problem(
                e,
                "`arrow` is not supported (it needs Fluent Bit built with Apache Arrow); use \
                 gzip, or Firehose's record format conversion for Parquet",
            );
        } else {
            native.set("compression", Val::Str(value), at(e));
        }
    }
    // The C plugin ends every record with a newline; the Go plugin sends records as they are.
    if let Some(name) = go {
        native.set("append_newline", Val::Bool(false), name);
    }
    boolean(keys, native, "simple_aggregation", "simple_aggregation");
    if let Some(e) = keys.one("experimental_concurrency") {
        match values::integer(&e.value) {
            Ok(0) => {}
            Ok(n) => native.set("max_in_flight", Val::Int(n), at(e)),
            Err(m) => keys.problem(e, m),
        }
    }
    keys.no_op("experimental_concurrency_retries");
    keys.no_op("auto_retry_requests");
    keys.refuse(
        "profile",
        "not supported; set AWS_PROFILE in the environment (the default credential chain reads it)",
    );
}
