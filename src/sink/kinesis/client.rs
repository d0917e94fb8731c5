//! The Kinesis client: the SDK settings every AWS sink shares ([`crate::aws`]: credentials
//! from the default chain or `role_arn`, counted; no SDK-level retries, since the sink resends
//! only the failed entries of a PutRecords call itself).

use super::config::KinesisConfig;
use crate::aws::{sink_sdk_config, ClientError, ClientOptions};
use crate::metrics::ComponentMetrics;

/// The clients a Kinesis sink uses.
#[derive(Clone, Debug)]
pub struct Clients {
    pub kinesis: aws_sdk_kinesis::Client,
    pub region: String,
}

/// Builds the client from the sink's settings ([`crate::aws::sink_sdk_config`]).
pub async fn build(
    config: &KinesisConfig,
    sink_name: &str,
    metrics: &ComponentMetrics,
) -> Result<Clients, ClientError> {
    let options = ClientOptions {
        region: config.region.as_deref(),
        endpoint: config.endpoint.as_deref(),
        role_arn: config.role_arn.as_deref(),
        sts_endpoint: config.sts_endpoint.as_deref(),
        external_id: config.external_id.as_deref(),
        timeout: config.http_request_timeout.get(),
        app_name: None,
    };
    let sdk = sink_sdk_config(&options, sink_name, metrics).await?;
    Ok(Clients {
        kinesis: aws_sdk_kinesis::Client::new(&sdk.config),
        region: sdk.region,
    })
}
