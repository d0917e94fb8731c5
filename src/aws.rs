//! AWS credentials and SDK settings shared by the sinks that call AWS (Kinesis, CloudWatch Logs,
//! Firehose, and Kafka through MSK IAM).
//!
//! Credentials come from the aws-config default chain: environment keys, the shared profile,
//! ECS container credentials (the task role), web identity (IRSA: `AWS_WEB_IDENTITY_TOKEN_FILE`
//! and `AWS_ROLE_ARN`), EKS Pod Identity, IMDS. With `role_arn`, those credentials assume the
//! role through STS AssumeRole (at `sts_endpoint` when given) under a role session name that
//! stays the same across refreshes and restarts (MSK refuses a re-authentication that changes
//! the principal, and CloudTrail reads better with one session name per sink). The SDK caches
//! credentials and refreshes them before they expire.
//!
//! [`sink_sdk_config`] is the one place an AWS sink's SDK settings are made: region, endpoint,
//! credentials, timeouts, and no SDK-level retries (every sink retries itself, so it can resend
//! only what failed, count every retry and keep going past the SDK's three attempts). Every
//! credentials fetch is counted: `token_refreshes_total{token="aws_credentials"}`, or
//! `auth_failures_total{reason="credentials"}` when it fails.
//!
//! Every SDK client and credentials provider talks HTTPS through [`http_client`]: the SDK's
//! own hyper client with rustls on the process's crypto provider ([`crate::tls`], *ring*). The
//! SDK crates are built without their default HTTPS client (which would link aws-lc), so a
//! config loaded without [`http_client`] has no HTTP client at all and its calls fail; every
//! loader here sets it, and the credentials providers aws-config builds (IMDS, ECS container
//! credentials and EKS Pod Identity, web identity through STS, AssumeRole) take it from the
//! loader's config.

use std::time::{Duration, SystemTime};

use aws_config::environment::EnvironmentVariableRegionProvider;
use aws_config::meta::region::RegionProviderChain;
use aws_config::provider_config::ProviderConfig;
use aws_config::retry::RetryConfig;
use aws_config::stalled_stream_protection::StalledStreamProtectionConfig;
use aws_config::sts::AssumeRoleProvider;
use aws_config::timeout::TimeoutConfig;
use aws_config::{AppName, BehaviorVersion, Region, SdkConfig};
use aws_credential_types::provider::{self, ProvideCredentials, SharedCredentialsProvider};
use aws_smithy_async::rt::sleep::SharedAsyncSleep;
use aws_smithy_http_client::proxy::ProxyConfig;
use aws_smithy_http_client::tls::{rustls_provider::CryptoMode, Provider};
use aws_smithy_http_client::Connector;
use aws_smithy_runtime_api::client::http::{HttpConnectorSettings, SharedHttpClient};

use crate::config::field::FieldError;
use crate::metrics::ComponentMetrics;

/// The HTTPS client of the AWS SDK: what the SDK's default client is (hyper 1 with rustls,
/// the system's root certificates, the `HTTP(S)_PROXY` / `NO_PROXY` settings of the
/// environment, one connection pool per client and timeout settings), on *ring* instead of
/// aws-lc (see the module docs). Cheap: connections are made when a client first calls.
pub fn http_client() -> SharedHttpClient {
    aws_smithy_http_client::Builder::new().build_with_connector_fn(|settings, components| {
        https_connector(
            settings.cloned(),
            components.and_then(|components| components.sleep_impl()),
        )
    })
}

/// The connector [`http_client`] makes for each of its settings: rustls on *ring*, the
/// environment's proxy settings, its own connection pool. `sleep` runs the connect timeout of
/// `settings`. Also used on its own where a call skips the SDK's orchestrator
/// ([`crate::sink::kinesis::direct`]).
pub fn https_connector(
    settings: Option<HttpConnectorSettings>,
    sleep: Option<SharedAsyncSleep>,
) -> Connector {
    let mut connector = Connector::builder().tls_provider(Provider::Rustls(CryptoMode::Ring));
    connector.set_connector_settings(settings);
    connector.set_sleep_impl(sleep);
    connector.set_proxy_config(Some(ProxyConfig::from_env()));
    connector.build()
}

/// `aws_config::defaults` with the latest behavior version and [`http_client`]: the start of
/// every SDK config logferry loads.
pub fn config_loader() -> aws_config::ConfigLoader {
    aws_config::defaults(BehaviorVersion::latest()).http_client(http_client())
}

/// aws-config's default region chain (`AWS_REGION` / `AWS_DEFAULT_REGION`, the profile, IMDS),
/// its IMDS lookup through [`http_client`]: `RegionProviderChain::default_provider()` would have
/// no HTTP client for IMDS.
pub fn default_region_chain() -> RegionProviderChain {
    let provider_config = ProviderConfig::without_region().with_http_client(http_client());
    RegionProviderChain::first_try(EnvironmentVariableRegionProvider::new())
        .or_else(
            aws_config::profile::region::ProfileFileRegionProvider::builder()
                .configure(&provider_config)
                .build(),
        )
        .or_else(
            aws_config::imds::region::ImdsRegionProvider::builder()
                .configure(&provider_config)
                .build(),
        )
}

/// When credentials fetched at `fetched_at` that expire at `expiry` are due for renewal:
/// `margin` before they expire, but not before half their life is over, so short-lived
/// credentials are not fetched in a loop. Shared by the Kinesis PutRecords client and the MSK
/// IAM token signer, which cache credentials outside the SDK.
pub fn renew_at(fetched_at: SystemTime, expiry: SystemTime, margin: Duration) -> SystemTime {
    let life = expiry.duration_since(fetched_at).unwrap_or(Duration::ZERO);
    let early = expiry.checked_sub(margin).unwrap_or(fetched_at);
    early.max(fetched_at + life / 2)
}

/// `logferry-<sink name>`, reduced to the characters and length STS accepts for a role session
/// name (`[\w+=,.@-]{2,64}`).
pub fn session_name(sink_name: &str) -> String {
    let mut name = String::from("logferry-");
    name.extend(sink_name.chars().map(|c| {
        if c.is_ascii_alphanumeric() || "+=,.@-_".contains(c) {
            c
        } else {
            '-'
        }
    }));
    name.truncate(64);
    name
}

/// What assuming a role takes, as the sinks' options give it.
#[derive(Debug, Clone, Copy)]
pub struct AssumeRole<'a> {
    pub role_arn: &'a str,
    /// STS endpoint URL (`sts_endpoint`); default: the regional one.
    pub sts_endpoint: Option<&'a str>,
    /// ExternalId the role's trust policy asks for, if any.
    pub external_id: Option<&'a str>,
    /// [`session_name`] of the sink.
    pub session_name: &'a str,
    /// Region of the STS call; default: the one `base` resolved.
    pub region: Option<&'a Region>,
}

/// Credentials of `role.role_arn`, assumed with the credentials of `base` (the default chain);
/// the provider caches them and assumes the role again before they expire.
pub async fn assume_role(base: &SdkConfig, role: AssumeRole<'_>) -> SharedCredentialsProvider {
    let mut sts = base.to_builder();
    if let Some(endpoint) = role.sts_endpoint {
        sts.set_endpoint_url(Some(endpoint.to_string()));
    }
    let mut provider = AssumeRoleProvider::builder(role.role_arn)
        .session_name(role.session_name)
        .configure(&sts.build());
    if let Some(region) = role.region {
        provider = provider.region(region.clone());
    }
    if let Some(external_id) = role.external_id {
        provider = provider.external_id(external_id);
    }
    SharedCredentialsProvider::new(provider.build().await)
}

/// The options every AWS sink has for its client (named as the Fluent Bit plugins name them).
#[derive(Debug, Clone, Copy, Default)]
pub struct ClientOptions<'a> {
    /// `region`; default: the environment's or profile's.
    pub region: Option<&'a str>,
    /// `endpoint`: another URL for the service (a VPC endpoint, a local stand-in).
    pub endpoint: Option<&'a str>,
    /// `role_arn`, with `sts_endpoint` and `external_id`.
    pub role_arn: Option<&'a str>,
    pub sts_endpoint: Option<&'a str>,
    pub external_id: Option<&'a str>,
    /// `http_request_timeout`: one attempt of one call (connecting gets at most 5 s of it).
    pub timeout: Duration,
    /// `extra_user_agent`: appended to the User-Agent as the SDK's app name.
    pub app_name: Option<&'a str>,
}

impl ClientOptions<'_> {
    /// Checks the options without calling anything; each problem names its key.
    /// `service_host` is an example host for the `endpoint` message
    /// (`kinesis.eu-west-1.amazonaws.com`).
    pub fn check(&self, service_host: &str, problems: &mut Vec<FieldError>) {
        for (key, value) in [
            ("endpoint", self.endpoint),
            ("sts_endpoint", self.sts_endpoint),
        ] {
            if let Some(url) = value {
                if let Err(message) = check_url(url, service_host) {
                    problems.push(FieldError::new(key, message));
                }
            }
        }
        if let Some(arn) = self.role_arn {
            if !arn.starts_with("arn:") || !arn.contains(":role/") {
                problems.push(FieldError::new(
                    "role_arn",
                    format!(
                        "`{arn}` is not a role ARN such as arn:aws:iam::123456789012:role/name"
                    ),
                ));
            }
        }
        if self.external_id.is_some() && self.role_arn.is_none() {
            problems.push(FieldError::new(
                "external_id",
                "only applies when assuming a role: set role_arn too",
            ));
        }
    }
}

/// An endpoint option must be a full URL with a host.
fn check_url(url: &str, service_host: &str) -> Result<(), String> {
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"))
        .ok_or_else(|| {
            format!(
                "`{url}` is not a full URL: write it with its scheme, e.g. https://{service_host}"
            )
        })?;
    if rest.is_empty() || rest.starts_with('/') {
        return Err(format!("`{url}` has no host"));
    }
    Ok(())
}

/// Why an AWS client could not be built.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error(
        "no AWS region: set `region` in the sink, or AWS_REGION in the environment \
         (or a region in the AWS profile)"
    )]
    NoRegion,
}

/// SDK settings for one sink's clients, and the region they resolved.
#[derive(Debug, Clone)]
pub struct SinkSdkConfig {
    pub config: SdkConfig,
    pub region: String,
}

/// The SDK settings of the sink `sink_name` (see the module docs); a service client is then
/// `Client::new(&sdk.config)`.
pub async fn sink_sdk_config(
    options: &ClientOptions<'_>,
    sink_name: &str,
    metrics: &ComponentMetrics,
) -> Result<SinkSdkConfig, ClientError> {
    let mut loader = config_loader();
    if let Some(region) = options.region {
        loader = loader.region(Region::new(region.to_string()));
    }
    if let Some(agent) = options.app_name {
        // Checked by the sink's validate(); an invalid one is left out rather than failing here.
        if let Ok(name) = AppName::new(agent.to_string()) {
            loader = loader.app_name(name);
        }
    }
    let base = loader.load().await;
    let region = base.region().cloned().ok_or(ClientError::NoRegion)?;
    let mut credentials = base.credentials_provider();
    if let Some(role_arn) = options.role_arn {
        let role = AssumeRole {
            role_arn,
            sts_endpoint: options.sts_endpoint,
            external_id: options.external_id,
            session_name: &session_name(sink_name),
            region: Some(&region),
        };
        credentials = Some(assume_role(&base, role).await);
    }
    let mut config = base
        .into_builder()
        .retry_config(RetryConfig::disabled())
        // Each attempt is bounded by `operation_attempt_timeout` below; the SDK's stalled-stream
        // watchdog would only add a timer poll to every request and response body (3% of the
        // CPU of a PutRecords call in a profile).
        .stalled_stream_protection(StalledStreamProtectionConfig::disabled())
        .timeout_config(
            TimeoutConfig::builder()
                .operation_attempt_timeout(options.timeout)
                .connect_timeout(options.timeout.min(Duration::from_secs(5)))
                .build(),
        );
    if let Some(endpoint) = options.endpoint {
        config.set_endpoint_url(Some(endpoint.to_string()));
    }
    if let Some(inner) = credentials {
        config.set_credentials_provider(Some(SharedCredentialsProvider::new(Counted {
            inner,
            metrics: metrics.clone(),
        })));
    }
    Ok(SinkSdkConfig {
        config: config.build(),
        region: region.to_string(),
    })
}

/// A credentials provider that counts (and logs, at most once per interval) what it provides.
#[derive(Debug)]
pub struct Counted {
    pub inner: SharedCredentialsProvider,
    pub metrics: ComponentMetrics,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_are_renewed_before_they_expire_but_not_in_a_loop() {
        let margin = Duration::from_secs(60);
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let hour = now + Duration::from_secs(3600);
        assert_eq!(renew_at(now, hour, margin), hour - margin);
        let short = now + Duration::from_secs(40);
        assert_eq!(renew_at(now, short, margin), now + Duration::from_secs(20));
        assert_eq!(renew_at(now, now - Duration::from_secs(1), margin), now);
    }

    #[test]
    fn client_options_are_checked_by_key() {
        let mut problems = Vec::new();
        ClientOptions {
            endpoint: Some("kinesis.local"),
            sts_endpoint: Some("https://"),
            role_arn: Some("writer"),
            ..ClientOptions::default()
        }
        .check("kinesis.eu-west-1.amazonaws.com", &mut problems);
        let keys: Vec<&str> = problems.iter().map(|p| p.key.as_str()).collect();
        assert_eq!(keys, ["endpoint", "sts_endpoint", "role_arn"]);
        assert!(problems[0].message.contains("https://kinesis.eu-west-1"));

        let mut problems = Vec::new();
        ClientOptions {
            external_id: Some("x"),
            ..ClientOptions::default()
        }
        .check("h", &mut problems);
        assert_eq!(problems[0].key, "external_id");

        let mut problems = Vec::new();
        ClientOptions {
            endpoint: Some("http://127.0.0.1:4566"),
            role_arn: Some("arn:aws:iam::123456789012:role/w"),
            external_id: Some("x"),
            ..ClientOptions::default()
        }
        .check("h", &mut problems);
        assert!(problems.is_empty());
    }

    #[test]
    fn session_names_are_stable_and_valid_for_sts() {
        assert_eq!(session_name("kinesis.0"), "logferry-kinesis.0");
        assert_eq!(session_name("kafka.0"), "logferry-kafka.0");
        assert_eq!(session_name("app logs/é"), "logferry-app-logs--");
        assert_eq!(session_name("to msk/logs"), "logferry-to-msk-logs");
        assert_eq!(session_name(&"x".repeat(100)).len(), 64);
    }
}
