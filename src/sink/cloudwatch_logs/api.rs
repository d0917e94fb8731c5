//! The CloudWatch Logs client and the calls the sink makes: CreateLogStream (and, with
//! `auto_create_group`, CreateLogGroup and PutRetentionPolicy) the first time a stream is
//! written to, and PutLogEvents. No sequence tokens: the API no longer needs them.
//!
//! Credentials as the Kinesis sink's ([`crate::aws`]: the default chain, `role_arn` through
//! STS), counted the same way. SDK-level retries are off: the sink retries itself, per call
//! and per stream, and counts every retry.

use aws_sdk_cloudwatchlogs::types::{InputLogEvent, LogGroupClass};
use aws_sdk_cloudwatchlogs::Client;

use super::batch::{Dest, RejectedInfo};
use super::config::CloudWatchLogsConfig;
use crate::aws::{sink_sdk_config, ClientError};
use crate::metrics::ComponentMetrics;
use crate::sink::kinesis::api::{call_error, CallError};
use crate::sink::kinesis::retry_policy::ErrorClass;

/// The header that marks events as Embedded Metric Format (`log_format = "json/emf"`).
const LOGS_FORMAT_HEADER: &str = "x-amzn-logs-format";

/// The client and the region it resolved.
#[derive(Clone, Debug)]
pub struct Clients {
    pub logs: Client,
    pub region: String,
}

/// Builds the client from the sink's settings ([`crate::aws::sink_sdk_config`]).
pub async fn build(
    config: &CloudWatchLogsConfig,
    sink_name: &str,
    metrics: &ComponentMetrics,
) -> Result<Clients, ClientError> {
    let sdk = sink_sdk_config(&config.client_options(), sink_name, metrics).await?;
    Ok(Clients {
        logs: Client::new(&sdk.config),
        region: sdk.region,
    })
}

/// What creating a missing log group involves (`auto_create_group`).
#[derive(Debug, Clone, Default)]
pub struct Creation {
    pub auto_create_group: bool,
    pub retention_days: Option<u32>,
    pub class: Option<String>,
}

/// A call that failed, and which API action it was.
#[derive(Debug, Clone)]
pub struct Failure {
    pub action: &'static str,
    pub error: CallError,
}

impl Failure {
    fn new(action: &'static str, error: CallError) -> Failure {
        Failure { action, error }
    }

    pub fn code(&self) -> &str {
        &self.error.code
    }
}

/// What making sure of a stream did.
#[derive(Debug, Default)]
pub struct Ensured {
    /// CreateLogGroup created the group.
    pub group_created: bool,
    /// PutRetentionPolicy on the new group failed: events are delivered all the same, the
    /// retention is set again with the next call to the group (and `/health` says so).
    pub retention_failed: Option<Failure>,
}

/// Makes sure `dest`'s stream exists: CreateLogStream, and when the group is missing and
/// `auto_create_group` is set, CreateLogGroup (with its class), PutRetentionPolicy, then
/// CreateLogStream again.
pub async fn ensure(client: &Client, dest: &Dest, creation: &Creation) -> Result<Ensured, Failure> {
    match create_stream(client, dest).await {
        Ok(()) => return Ok(Ensured::default()),
        Err(f) if f.code() == "ResourceNotFoundException" && creation.auto_create_group => {}
        Err(f) => return Err(f),
    }
    let mut create = client.create_log_group().log_group_name(&dest.group);
    if let Some(class) = &creation.class {
        create = create.log_group_class(LogGroupClass::from(class.as_str()));
    }
    let group_created = match create.send().await {
        Ok(_) => true,
        Err(e) => {
            let error = call_error(&e);
            if error.code != "ResourceAlreadyExistsException" {
                return Err(Failure::new("CreateLogGroup", error));
            }
            false
        }
    };
    let mut retention_failed = None;
    if group_created {
        if let Some(days) = creation.retention_days {
            retention_failed = set_retention(client, &dest.group, days).await.err();
        }
    }
    create_stream(client, dest).await?;
    Ok(Ensured {
        group_created,
        retention_failed,
    })
}

/// PutRetentionPolicy of `days` on `group`.
pub async fn set_retention(client: &Client, group: &str, days: u32) -> Result<(), Failure> {
    client
        .put_retention_policy()
        .log_group_name(group)
        .retention_in_days(i32::try_from(days).unwrap_or(i32::MAX))
        .send()
        .await
        .map(|_| ())
        .map_err(|e| Failure::new("PutRetentionPolicy", call_error(&e)))
}

async fn create_stream(client: &Client, dest: &Dest) -> Result<(), Failure> {
    match client
        .create_log_stream()
        .log_group_name(&dest.group)
        .log_stream_name(&dest.stream)
        .send()
        .await
    {
        Ok(_) => Ok(()),
        Err(e) => {
            let error = call_error(&e);
            if error.code == "ResourceAlreadyExistsException" {
                Ok(())
            } else {
                Err(Failure::new("CreateLogStream", error))
            }
        }
    }
}

/// PutLogEvents of `events` (sorted, within the limits) into `dest`.
pub async fn put(
    client: &Client,
    dest: &Dest,
    events: Vec<InputLogEvent>,
    emf: bool,
) -> Result<RejectedInfo, Failure> {
    let mut request = client
        .put_log_events()
        .log_group_name(&dest.group)
        .log_stream_name(&dest.stream)
        .set_log_events(Some(events))
        .customize();
    if emf {
        request = request.mutate_request(|r| {
            r.headers_mut().insert(LOGS_FORMAT_HEADER, "json/emf");
        });
    }
    let out = request
        .send()
        .await
        .map_err(|e| Failure::new("PutLogEvents", call_error(&e)))?;
    let index = |i: Option<i32>| i.and_then(|i| usize::try_from(i).ok());
    Ok(match out.rejected_log_events_info() {
        Some(info) => RejectedInfo {
            too_new_start: index(info.too_new_log_event_start_index()),
            too_old_end: index(info.too_old_log_event_end_index()),
            expired_end: index(info.expired_log_event_end_index()),
        },
        None => RejectedInfo::default(),
    })
}

/// Whether a failed call means a record of it is bad (it fails the same way every time,
/// whatever an operator changes): its events are dead-lettered.
pub fn is_record_error(failure: &Failure) -> bool {
    failure.action == "PutLogEvents"
        && matches!(
            failure.code(),
            "InvalidParameterException" | "ValidationException" | "SerializationException"
        )
}

/// Whether retrying can succeed without an operator.
pub fn is_fatal(failure: &Failure) -> bool {
    failure.error.class == ErrorClass::Fatal
        || matches!(
            failure.code(),
            "ResourceNotFoundException" | "InvalidParameterException"
        )
}

/// What an operator should do about `failure` writing to `dest`.
pub fn hint(failure: &Failure, dest: &Dest, creation: &Creation) -> String {
    let error = &failure.error;
    let action = failure.action;
    if error.sts_action.is_some() || error.code == "credentials" {
        // The Kinesis sink's advice on credentials and STS applies word for word.
        return error.hint(&dest.group, action);
    }
    if error.is_access_denied() || error.status == Some(403) && !error.code.contains("Signature") {
        return format!(
            "the credentials are not allowed to call logs:{action} on log group `{}`: allow \
             it in the IAM policy of the role logferry runs as (see docs/cloudwatch_logs.md)",
            dest.group
        );
    }
    if error.code == "ResourceNotFoundException" {
        return if creation.auto_create_group {
            format!(
                "log group `{}` was not found; retrying (it is created on demand)",
                dest.group
            )
        } else {
            format!(
                "log group `{}` does not exist in this region/account: create it, set \
                 auto_create_group = true, or fix log_group_name / region / endpoint",
                dest.group
            )
        };
    }
    if error.code == "InvalidParameterException" {
        return format!(
            "CloudWatch Logs refused the parameters for `{dest}` (check the group and stream \
             names: letters, digits and ._-/# for groups, no : or * in streams)"
        );
    }
    error
        .hint(&dest.group, action)
        .replace("Kinesis", "CloudWatch Logs")
}
