//! The Kinesis client: the SDK settings every AWS sink shares ([`crate::aws`]: credentials
//! from the default chain or `role_arn`, counted; no SDK-level retries, since the sink resends
//! only the failed entries of a PutRecords call itself).

use super::config::KinesisConfig;
use crate::aws::{sink_sdk_config, ClientError};
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
    let sdk = sink_sdk_config(&config.client_options(), sink_name, metrics).await?;
    Ok(Clients {
        kinesis: aws_sdk_kinesis::Client::new(&sdk.config),
        region: sdk.region,
    })
}
