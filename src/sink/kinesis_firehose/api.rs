//! The Firehose client (credentials as every AWS sink: [`crate::aws`], counted) and
//! PutRecordBatch, with what its failures mean. SDK-level retries are off: the sink retries
//! exactly the failed records itself.

use aws_sdk_firehose::primitives::Blob;
use aws_sdk_firehose::types::Record;
use aws_sdk_firehose::Client;
use bytes::Bytes;

use super::config::KinesisFirehoseConfig;
use crate::aws::{sink_sdk_config, ClientError};
use crate::metrics::ComponentMetrics;
use crate::sink::kinesis::api::{call_error, CallError};

/// The client and the region it resolved.
#[derive(Clone, Debug)]
pub struct Clients {
    pub firehose: Client,
    pub region: String,
}

/// Builds the client from the sink's settings ([`crate::aws::sink_sdk_config`]).
pub async fn build(
    config: &KinesisFirehoseConfig,
    sink_name: &str,
    metrics: &ComponentMetrics,
) -> Result<Clients, ClientError> {
    let sdk = sink_sdk_config(&config.client_options(), sink_name, metrics).await?;
    Ok(Clients {
        firehose: Client::new(&sdk.config),
        region: sdk.region,
    })
}

/// One record's outcome: `None` accepted, `Some((code, message))` refused.
pub type RecordResult = Option<(String, String)>;

/// PutRecordBatch of `records`; per record, whether Firehose took it.
pub async fn put_record_batch(
    client: &Client,
    stream: &str,
    records: Vec<Bytes>,
) -> Result<Vec<RecordResult>, CallError> {
    let count = records.len();
    let records = records
        .into_iter()
        .filter_map(|data| Record::builder().data(Blob::new(data)).build().ok())
        .collect();
    let out = client
        .put_record_batch()
        .delivery_stream_name(stream)
        .set_records(Some(records))
        .send()
        .await
        .map_err(|e| call_error(&e))?;
    let responses = out.request_responses();
    if responses.len() != count {
        return Err(CallError {
            code: "response".into(),
            status: None,
            message: format!(
                "PutRecordBatch answered for {} records of {count}",
                responses.len()
            ),
            class: crate::sink::kinesis::retry_policy::ErrorClass::Retryable,
            sts_action: None,
        });
    }
    Ok(responses
        .iter()
        .map(|r| {
            r.error_code().map(|code| {
                (
                    code.to_string(),
                    crate::sink::kinesis::api::sanitize(r.error_message().unwrap_or("")),
                )
            })
        })
        .collect())
}

/// What an operator should do about a failed call to `stream`.
pub fn hint(error: &CallError, stream: &str) -> String {
    if error.sts_action.is_some() || error.code == "credentials" {
        return error.hint(stream, "PutRecordBatch");
    }
    if error.is_access_denied() || error.status == Some(403) && !error.code.contains("Signature") {
        return format!(
            "the credentials are not allowed to call firehose:PutRecordBatch on Firehose \
             stream `{stream}`: allow it in the IAM policy of the role logferry runs as (see \
             docs/kinesis_firehose.md)"
        );
    }
    if error.code == "ResourceNotFoundException" {
        return format!(
            "Firehose stream `{stream}` does not exist in this region/account: create it, or \
             fix `delivery_stream`, `region` or `endpoint`"
        );
    }
    if error.code == "timeout" || error.code == "dispatch" || error.code == "response" {
        return "check the network path to the Firehose endpoint (and `endpoint`); retrying"
            .to_string();
    }
    format!("Firehose refused the request for stream `{stream}`; retrying")
}
