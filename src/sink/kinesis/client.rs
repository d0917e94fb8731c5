//! The Kinesis client and its credentials.
//!
//! Credentials come from the aws-config default chain: environment keys, the shared profile,
//! ECS container credentials (the task role), web identity (IRSA: `AWS_WEB_IDENTITY_TOKEN_FILE`
//! and `AWS_ROLE_ARN`), EKS Pod Identity, IMDS. With `role_arn`, those credentials assume the role
//! through STS AssumeRole (at `sts_endpoint` when given) with a session name that stays the same
//! across refreshes. The client caches credentials and refreshes them before they expire.
//!
//! Every credentials fetch the client makes (the SDK caches them and fetches again before they
//! expire) is counted: `token_refreshes_total{token="aws_credentials"}`, or
//! `auth_failures_total{reason="credentials"}` when it fails.
//!
//! SDK-level retries are off: the sink retries itself, so it can resend only the failed entries
//! of a PutRecords call, count every retry, and keep retrying past the SDK's three attempts.

use aws_config::BehaviorVersion;
use aws_credential_types::provider::{self, ProvideCredentials, SharedCredentialsProvider};
use aws_sdk_kinesis::config::retry::RetryConfig;
use aws_sdk_kinesis::config::timeout::TimeoutConfig;
use aws_sdk_kinesis::config::Region;

use super::config::KinesisConfig;
use crate::aws::{assume_role, session_name, AssumeRole};
use crate::metrics::ComponentMetrics;

/// A credentials provider that counts what it provides (shared by the AWS sinks).
#[derive(Debug)]
pub(crate) struct Counted {
    pub(crate) inner: SharedCredentialsProvider,
    pub(crate) metrics: ComponentMetrics,
}

impl ProvideCredentials for Counted {
    fn provide_credentials<'a>(&'a self) -> provider::future::ProvideCredentials<'a>
    where
        Self: 'a,
    {
        provider::future::ProvideCredentials::new(async move {
            let result = self.inner.provide_credentials().await;
            match &result {
                Ok(_) => self.metrics.token_refreshed("aws_credentials"),
                Err(e) => {
                    self.metrics
                        .auth_failure(crate::metrics::retry_reason::CREDENTIALS);
                    if let Some(suppressed) =
                        crate::log_limit::allow(self.metrics.name(), "credentials")
                    {
                        tracing::error!(sink = %self.metrics.name(), error = %e, suppressed,
                            "cannot get AWS credentials; check where they come from \
                             (environment, profile, role_arn, IRSA, task role)");
                    }
                }
            }
            result
        })
    }
}

/// Why a client could not be built.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error(
        "no AWS region: set `region` in the sink, or AWS_REGION in the environment \
         (or a region in the AWS profile)"
    )]
    NoRegion,
}

/// The clients a Kinesis sink uses.
#[derive(Clone, Debug)]
pub struct Clients {
    pub kinesis: aws_sdk_kinesis::Client,
    pub region: String,
}

/// Builds the Kinesis client from the sink's settings and the default chain.
pub async fn build(
    config: &KinesisConfig,
    sink_name: &str,
    metrics: &ComponentMetrics,
) -> Result<Clients, ClientError> {
    let mut loader = aws_config::defaults(BehaviorVersion::latest());
    if let Some(region) = &config.region {
        loader = loader.region(Region::new(region.clone()));
    }
    let base = loader.load().await;
    let region = base.region().cloned().ok_or(ClientError::NoRegion)?;

    let timeout = config.http_request_timeout.get();
    let mut builder = aws_sdk_kinesis::config::Builder::from(&base)
        .retry_config(RetryConfig::disabled())
        .timeout_config(
            TimeoutConfig::builder()
                .operation_attempt_timeout(timeout)
                .connect_timeout(timeout.min(std::time::Duration::from_secs(5)))
                .build(),
        );
    if let Some(endpoint) = &config.endpoint {
        builder = builder.endpoint_url(endpoint.clone());
    }
    let mut credentials = base.credentials_provider();
    if let Some(role_arn) = &config.role_arn {
        let role = AssumeRole {
            role_arn,
            sts_endpoint: config.sts_endpoint.as_deref(),
            external_id: config.external_id.as_deref(),
            session_name: &session_name(sink_name),
            region: Some(&region),
        };
        credentials = Some(assume_role(&base, role).await);
    }
    if let Some(inner) = credentials {
        builder = builder.credentials_provider(Counted {
            inner,
            metrics: metrics.clone(),
        });
    }
    Ok(Clients {
        kinesis: aws_sdk_kinesis::Client::from_conf(builder.build()),
        region: region.to_string(),
    })
}
