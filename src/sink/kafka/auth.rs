//! MSK IAM at run time: AWS credentials (the aws-config default chain, optionally through STS
//! AssumeRole) turned into signed tokens for librdkafka's OAUTHBEARER refresh callback, and the
//! `logferry msk-token` command.
//!
//! librdkafka asks for a token from its polling thread (the `ThreadedProducer`'s, which runs even
//! when no records flow), at start and again at 80% of the previous token's lifetime; after a
//! failure it asks again 10 s later. Credentials are cached here and fetched again shortly
//! before they expire, so most refreshes only sign (no network call).

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_config::meta::region::RegionProviderChain;
use aws_config::sts::AssumeRoleProvider;
use aws_config::{BehaviorVersion, Region};
use aws_credential_types::provider::{ProvideCredentials, SharedCredentialsProvider};
use aws_credential_types::Credentials;

use super::config::MskIamSettings;
use super::msk_iam::{resolve_target, MskIamError, MskIamSigner, MskIamToken, MskTarget};

/// Test-only: caps the token lifetime reported to librdkafka at this many milliseconds (the
/// signed URL itself stays valid for 900 s), so integration tests see several refreshes in a
/// few seconds. Compiled only with the `test-hooks` feature, which only the tests turn on (a
/// dev-dependency of the crate on itself): the release binary neither reads nor contains it.
#[cfg(feature = "test-hooks")]
pub const TEST_ONLY_TOKEN_LIFETIME_ENV: &str = "LOGFERRY_TEST_ONLY_MSK_TOKEN_LIFETIME_MS";

/// How long one credentials fetch (IMDS, ECS endpoint, STS) may take.
const CREDENTIALS_TIMEOUT: Duration = Duration::from_secs(30);

/// Cached credentials are fetched again when they expire within this margin, so a token is
/// never signed with credentials about to expire (its lifetime would be cut short).
const CREDENTIALS_REFRESH_MARGIN: Duration = Duration::from_secs(300);

/// Why no token could be made. Never contains a secret.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error(
        "no AWS credentials provider is configured; provide credentials through the default \
         chain (environment, profile, ECS task role, IRSA, Pod Identity, instance profile)"
    )]
    NoProvider,
    #[error("cannot get AWS credentials: {0}")]
    Credentials(String),
    #[error(
        "getting AWS credentials took longer than {0:?}; check the network path to the \
         credentials source (IMDS, ECS endpoint, STS)"
    )]
    Timeout(Duration),
    #[error(transparent)]
    Sign(#[from] MskIamError),
    #[error("invalid argument: {0}")]
    Argument(String),
}

/// The error and its causes on one line (SDK errors keep the useful part in their sources).
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

/// Credentials from one provider, cached until shortly before they expire.
pub struct CredentialSource {
    provider: SharedCredentialsProvider,
    cached: Mutex<Option<Credentials>>,
}

impl CredentialSource {
    pub fn new(provider: SharedCredentialsProvider) -> Self {
        CredentialSource {
            provider,
            cached: Mutex::new(None),
        }
    }

    /// The aws-config default chain, with `region` as the fallback region of the chain's own
    /// STS calls (IRSA), or an AssumeRole provider on top of it with a session name that does
    /// not change across refreshes (MSK refuses a re-authentication that changes the principal).
    pub async fn load(
        region: &str,
        role_arn: Option<&str>,
        sts_endpoint: Option<&str>,
        session_name: &str,
    ) -> Result<Self, AuthError> {
        let region_chain =
            RegionProviderChain::default_provider().or_else(Region::new(region.to_string()));
        let sdk = aws_config::defaults(BehaviorVersion::latest())
            .region(region_chain)
            .load()
            .await;
        let provider = match role_arn {
            None => sdk.credentials_provider().ok_or(AuthError::NoProvider)?,
            Some(role_arn) => {
                let mut sts = sdk.into_builder();
                if let Some(endpoint) = sts_endpoint {
                    sts.set_endpoint_url(Some(endpoint.to_string()));
                }
                let provider = AssumeRoleProvider::builder(role_arn)
                    .session_name(session_name)
                    .configure(&sts.build())
                    .build()
                    .await;
                SharedCredentialsProvider::new(provider)
            }
        };
        Ok(CredentialSource::new(provider))
    }

    /// Current credentials: the cached ones while they stay valid long enough, else new ones.
    pub async fn credentials(&self) -> Result<Credentials, AuthError> {
        if let Some(fresh) = self.cached_fresh(SystemTime::now()) {
            return Ok(fresh);
        }
        let fetched =
            tokio::time::timeout(CREDENTIALS_TIMEOUT, self.provider.provide_credentials())
                .await
                .map_err(|_| AuthError::Timeout(CREDENTIALS_TIMEOUT))?
                .map_err(|e| AuthError::Credentials(error_chain(&e)))?;
        if let Ok(mut cached) = self.cached.lock() {
            *cached = Some(fetched.clone());
        }
        Ok(fetched)
    }

    /// The cached credentials if they are valid for longer than the refresh margin.
    fn cached_fresh(&self, now: SystemTime) -> Option<Credentials> {
        let cached = self.cached.lock().ok()?;
        let credentials = cached.as_ref()?;
        match credentials.expiry() {
            None => Some(credentials.clone()),
            Some(expiry) if expiry > now + CREDENTIALS_REFRESH_MARGIN => Some(credentials.clone()),
            Some(_) => None,
        }
    }
}

/// A token with the lifetime to give librdkafka (ms since the epoch).
pub struct IssuedToken {
    pub token: MskIamToken,
    pub lifetime_ms: i64,
}

/// Signs MSK IAM tokens with current credentials.
pub struct MskTokenProvider {
    signer: MskIamSigner,
    credentials: Arc<CredentialSource>,
    runtime: tokio::runtime::Handle,
    lifetime_cap: Option<Duration>,
}

impl MskTokenProvider {
    /// Loads the credentials provider; fails only when none is configured at all (fetching
    /// credentials happens when the first token is needed).
    pub async fn load(settings: &MskIamSettings, sink_name: &str) -> Result<Self, AuthError> {
        let credentials = CredentialSource::load(
            &settings.target.region,
            settings.role_arn.as_deref(),
            settings.sts_endpoint.as_deref(),
            &session_name(sink_name),
        )
        .await?;
        let lifetime_cap = test_only_lifetime_cap(sink_name);
        Ok(Self::new(
            settings.target.clone(),
            Arc::new(credentials),
            lifetime_cap,
        ))
    }

    /// Must be called inside a Tokio runtime (its handle fetches credentials later).
    pub fn new(
        target: MskTarget,
        credentials: Arc<CredentialSource>,
        lifetime_cap: Option<Duration>,
    ) -> Self {
        MskTokenProvider {
            signer: MskIamSigner::new(target),
            credentials,
            runtime: tokio::runtime::Handle::current(),
            lifetime_cap,
        }
    }

    pub fn target(&self) -> &MskTarget {
        self.signer.target()
    }

    /// Signs a token as of `signing_time` with current credentials.
    pub async fn token_at(&self, signing_time: SystemTime) -> Result<IssuedToken, AuthError> {
        let credentials = self.credentials.credentials().await?;
        self.sign(&credentials, signing_time)
    }

    /// Signs a token now, from any thread (librdkafka's polling thread calls this). Credentials
    /// are fetched on a thread of its own when the cache cannot serve them, so this never runs
    /// the async fetch on a thread that is already driving a runtime.
    pub fn token_blocking(&self) -> Result<IssuedToken, AuthError> {
        let now = SystemTime::now();
        if let Some(credentials) = self.credentials.cached_fresh(now) {
            return self.sign(&credentials, now);
        }
        let source = self.credentials.clone();
        let runtime = self.runtime.clone();
        let fetched = std::thread::scope(|scope| {
            std::thread::Builder::new()
                .name("msk-iam-credentials".into())
                .spawn_scoped(scope, move || runtime.block_on(source.credentials()))
                .map_err(|e| AuthError::Credentials(format!("cannot start a thread: {e}")))?
                .join()
                .unwrap_or_else(|_| {
                    Err(AuthError::Credentials(
                        "the credentials provider panicked".into(),
                    ))
                })
        })?;
        self.sign(&fetched, SystemTime::now())
    }

    fn sign(
        &self,
        credentials: &Credentials,
        signing_time: SystemTime,
    ) -> Result<IssuedToken, AuthError> {
        let token = self.signer.sign(credentials, signing_time)?;
        let mut lifetime_ms = token.expiry_ms();
        if let Some(cap) = self.lifetime_cap {
            lifetime_ms = lifetime_ms.min(millis(signing_time + cap));
        }
        Ok(IssuedToken { token, lifetime_ms })
    }
}

fn millis(time: SystemTime) -> i64 {
    time.duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// The test-only lifetime cap (see [`TEST_ONLY_TOKEN_LIFETIME_ENV`]); always `None` in a build
/// without the `test-hooks` feature.
#[cfg(feature = "test-hooks")]
fn test_only_lifetime_cap(sink_name: &str) -> Option<Duration> {
    let value = std::env::var(TEST_ONLY_TOKEN_LIFETIME_ENV).ok()?;
    match value.trim().parse::<u64>() {
        Ok(ms) if ms > 0 => {
            let cap = Duration::from_millis(ms);
            tracing::warn!(sink = %sink_name, lifetime = ?cap,
                "{TEST_ONLY_TOKEN_LIFETIME_ENV} is set: MSK IAM token lifetimes are shortened; \
                 this is for tests only");
            Some(cap)
        }
        _ => {
            tracing::warn!(
                "{TEST_ONLY_TOKEN_LIFETIME_ENV}={value:?} is not a positive number of ms; ignored"
            );
            None
        }
    }
}

#[cfg(not(feature = "test-hooks"))]
fn test_only_lifetime_cap(_sink_name: &str) -> Option<Duration> {
    None
}

/// `logferry-<sink name>`, reduced to the characters and length STS accepts for a role session
/// name. Stable across refreshes and restarts.
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

/// `logferry msk-token`: prints an MSK IAM token for use with other Kafka tools.
#[derive(Debug, Clone, clap::Args)]
pub struct MskTokenArgs {
    /// The cluster's AWS region (also the fallback region of the credential chain).
    #[arg(long)]
    pub region: String,
    /// The cluster's ARN; its region wins over --region.
    #[arg(long)]
    pub cluster_arn: Option<String>,
    /// Sign as of this time (RFC 3339, e.g. 2024-01-02T03:04:05Z) instead of now, for
    /// reproducible tokens.
    #[arg(long)]
    pub signing_time: Option<String>,
}

/// Runs `logferry msk-token`: returns the JSON line to print,
/// `{"token": ..., "expiry_ms": ..., "region": ...}`.
pub async fn msk_token_command(args: &MskTokenArgs) -> Result<String, AuthError> {
    let target = resolve_target(
        args.cluster_arn.as_deref(),
        &[] as &[&str],
        Some(args.region.as_str()),
    )?;
    let signing_time = match &args.signing_time {
        None => SystemTime::now(),
        Some(text) => parse_rfc3339(text)?,
    };
    let credentials =
        CredentialSource::load(&target.region, None, None, &session_name("msk-token")).await?;
    let provider = MskTokenProvider::new(target.clone(), Arc::new(credentials), None);
    let issued = provider.token_at(signing_time).await?;
    Ok(serde_json::json!({
        "token": issued.token.token(),
        "expiry_ms": issued.lifetime_ms,
        "region": target.region,
    })
    .to_string())
}

fn parse_rfc3339(text: &str) -> Result<SystemTime, AuthError> {
    let parsed = chrono::DateTime::parse_from_rfc3339(text).map_err(|e| {
        AuthError::Argument(format!(
            "--signing-time {text:?} is not an RFC 3339 time such as 2024-01-02T03:04:05Z: {e}"
        ))
    })?;
    let secs = u64::try_from(parsed.timestamp())
        .map_err(|_| AuthError::Argument(format!("--signing-time {text:?} is before 1970")))?;
    Ok(UNIX_EPOCH + Duration::new(secs, parsed.timestamp_subsec_nanos()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_names_are_stable_and_legal() {
        assert_eq!(session_name("kafka.0"), "logferry-kafka.0");
        assert_eq!(session_name("to msk/logs"), "logferry-to-msk-logs");
        assert_eq!(session_name(&"x".repeat(100)).len(), 64);
    }

    #[test]
    fn signing_time_parsing() {
        assert_eq!(
            parse_rfc3339("2024-01-02T03:04:05Z").unwrap(),
            UNIX_EPOCH + Duration::from_secs(1_704_164_645)
        );
        assert!(parse_rfc3339("yesterday").is_err());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn tokens_from_a_static_provider_with_a_lifetime_cap() {
        let credentials = Credentials::new("AKIDEXAMPLE", "secret", None, None, "test");
        let source = Arc::new(CredentialSource::new(SharedCredentialsProvider::new(
            credentials,
        )));
        let target = MskTarget {
            region: "us-east-1".into(),
            serverless: false,
        };
        let uncapped = MskTokenProvider::new(target.clone(), source.clone(), None);
        let at = UNIX_EPOCH + Duration::from_secs(1_704_164_645);
        let issued = uncapped.token_at(at).await.unwrap();
        assert_eq!(issued.lifetime_ms, 1_704_164_645_000 + 900_000);

        let capped = MskTokenProvider::new(target, source, Some(Duration::from_secs(3)));
        let issued = capped.token_at(at).await.unwrap();
        assert_eq!(issued.lifetime_ms, 1_704_164_645_000 + 3_000);
        // From a plain thread, as librdkafka calls it.
        let issued = std::thread::spawn(move || capped.token_blocking().map(|t| t.lifetime_ms))
            .join()
            .unwrap()
            .unwrap();
        let now = millis(SystemTime::now());
        assert!(issued > now && issued <= now + 3_000, "{issued} vs {now}");
    }
}
