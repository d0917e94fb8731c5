//! The AWS outputs beyond Kinesis: `cloudwatch_logs` (Fluent Bit's C plugin) and `cloudwatch`
//! (aws-for-fluent-bit's Go plugin) → the CloudWatch Logs sink. docs/firelens.md lists every
//! decision.

use super::super::native::{Native, Val};
use super::super::values;
use super::{at, boolean, string, Keys};

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
        "log_group_class",
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
    boolean(keys, native, "auto_create_group", "auto_create_group");
    if let Some(e) = keys.one("log_retention_days") {
        match values::integer(&e.value) {
            // Fluent Bit: 0 (the default) leaves the retention alone.
            Ok(0) => {}
            Ok(n) => native.set("log_retention_days", Val::Int(n), at(e)),
            Err(m) => keys.problem(e, m),
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
