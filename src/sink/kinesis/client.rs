//! The Kinesis clients: the SDK settings every AWS sink shares ([`crate::aws`]: credentials
//! from the default chain or `role_arn`, counted; no SDK-level retries, since the sink resends
//! only the failed entries of a PutRecords call itself), and the PutRecords client that sends
//! with those settings without the SDK's orchestrator ([`super::direct`]).

use super::config::KinesisConfig;
use super::direct::{self, PutRecordsClient};
use crate::aws::sink_sdk_config;
use crate::metrics::ComponentMetrics;

/// The clients a Kinesis sink uses.
#[derive(Clone, Debug)]
pub struct Clients {
    /// DescribeStreamSummary and ListShards.
    pub kinesis: aws_sdk_kinesis::Client,
    /// PutRecords.
    pub put_records: PutRecordsClient,
    pub region: String,
}

/// Builds the clients from the sink's settings ([`crate::aws::sink_sdk_config`]). Nothing is
/// sent: the PutRecords endpoint is resolved by the SDK without a call
/// ([`direct::learn_endpoint`]).
pub async fn build(
    config: &KinesisConfig,
    sink_name: &str,
    metrics: &ComponentMetrics,
) -> Result<Clients, String> {
    let sdk = sink_sdk_config(&config.client_options(), sink_name, metrics)
        .await
        .map_err(|e| e.to_string())?;
    let kinesis = aws_sdk_kinesis::Client::new(&sdk.config);
    let endpoint = direct::learn_endpoint(&kinesis, &config.stream).await?;
    let put_records = PutRecordsClient::new(
        &sdk.config,
        endpoint,
        sdk.region.clone(),
        config.http_request_timeout.get(),
    )?;
    Ok(Clients {
        kinesis,
        put_records,
        region: sdk.region,
    })
}
