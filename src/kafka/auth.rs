//! MSK IAM at run time: AWS credentials (the aws-config default chain, optionally through STS
//! AssumeRole) turned into signed tokens for librdkafka's OAUTHBEARER refresh callback, and the
//! `logferry msk-token` command.
//!
//! librdkafka asks for a token from its polling thread (the `ThreadedProducer`'s, which runs even
//! when no records flow, and which also serves delivery reports and statistics), at start and
//! again at 80% of the previous token's lifetime; after a failure it asks again 10 s later. So
//! that callback must not wait for the network: credentials are fetched by a Tokio task of their
//! own ([`MskTokenProvider::load`] starts it), ahead of their expiry and again after a failure,
//! and the callback ([`MskTokenProvider::token_now`]) only signs with the cached credentials, a
//! local computation. When none are cached yet it fails at once, and librdkafka asks again.

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::sync::{watch, Notify};
use tokio_util::sync::{CancellationToken, DropGuard};

use aws_config::Region;
use aws_credential_types::provider::{ProvideCredentials, SharedCredentialsProvider};
use aws_credential_types::Credentials;

use super::msk_iam::{resolve_target, MskIamError, MskIamSigner, MskIamToken, MskTarget};
use super::options::MskIamSettings;
use crate::aws::{assume_role, session_name, AssumeRole};

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

/// The token callback still signs with cached credentials that are due for a refresh (the
/// background fetch is under way) while they stay valid at least this long; the token's
/// lifetime is capped by their expiry, so librdkafka asks again before they expire.
const MIN_CREDENTIALS_VALIDITY: Duration = Duration::from_secs(10);

/// How long opening an MSK IAM sink waits for the first credentials (an async wait on start-up,
/// not on librdkafka's thread), so that the producer's first token callback finds them.
const FIRST_CREDENTIALS_WAIT: Duration = Duration::from_secs(5);

/// Waits of the background fetch after failures: 1 s doubling up to 30 s.
const RETRY_FIRST: Duration = Duration::from_secs(1);
const RETRY_MAX: Duration = Duration::from_secs(30);

/// Credentials without expiry (static keys) are looked at again this often.
const STATIC_RECHECK: Duration = Duration::from_secs(3600);

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
    #[error(
        "no AWS credentials yet ({0}); they are fetched in the background and librdkafka asks \
         for a token again in 10 s"
    )]
    NotReady(String),
}

/// Credentials from one provider, cached until shortly before they expire.
pub struct CredentialSource {
    provider: SharedCredentialsProvider,
    cached: Mutex<Option<Cached>>,
    /// Why the last fetch failed (cleared by a success); never holds a secret.
    last_error: Mutex<Option<String>>,
}

#[derive(Clone)]
struct Cached {
    credentials: Credentials,
    fetched_at: SystemTime,
}

impl CredentialSource {
    pub fn new(provider: SharedCredentialsProvider) -> Self {
        CredentialSource {
            provider,
            cached: Mutex::new(None),
            last_error: Mutex::new(None),
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
            crate::aws::default_region_chain().or_else(Region::new(region.to_string()));
        let sdk = crate::aws::config_loader()
            .region(region_chain)
            .load()
            .await;
        let provider = match role_arn {
            None => sdk.credentials_provider().ok_or(AuthError::NoProvider)?,
            Some(role_arn) => {
                let role = AssumeRole {
                    role_arn,
                    sts_endpoint,
                    external_id: None,
                    session_name,
                    region: None,
                };
                assume_role(&sdk, role).await
            }
        };
        Ok(CredentialSource::new(provider))
    }

    /// Current credentials: the cached ones while they stay valid long enough, else new ones.
    pub async fn credentials(&self) -> Result<Credentials, AuthError> {
        if let Some(fresh) = self.cached_fresh(SystemTime::now()) {
            return Ok(fresh);
        }
        self.fetch().await
    }

    /// Fetches credentials from the provider (bounded by [`CREDENTIALS_TIMEOUT`]) and caches
    /// them; a failure is remembered for [`AuthError::NotReady`].
    pub async fn fetch(&self) -> Result<Credentials, AuthError> {
        let fetched =
            match tokio::time::timeout(CREDENTIALS_TIMEOUT, self.provider.provide_credentials())
                .await
            {
                Err(_) => Err(AuthError::Timeout(CREDENTIALS_TIMEOUT)),
                Ok(Err(e)) => Err(AuthError::Credentials(super::error_chain(&e))),
                Ok(Ok(credentials)) => Ok(credentials),
            };
        match &fetched {
            Ok(credentials) => {
                if let Ok(mut cached) = self.cached.lock() {
                    *cached = Some(Cached {
                        credentials: credentials.clone(),
                        fetched_at: SystemTime::now(),
                    });
                }
                if let Ok(mut last) = self.last_error.lock() {
                    *last = None;
                }
            }
            Err(e) => {
                if let Ok(mut last) = self.last_error.lock() {
                    *last = Some(e.to_string());
                }
            }
        }
        fetched
    }

    /// The cached credentials if they are valid for longer than the refresh margin.
    fn cached_fresh(&self, now: SystemTime) -> Option<Credentials> {
        let cached = self.cached.lock().ok()?;
        let credentials = &cached.as_ref()?.credentials;
        match credentials.expiry() {
            None => Some(credentials.clone()),
            Some(expiry) if expiry > now + CREDENTIALS_REFRESH_MARGIN => Some(credentials.clone()),
            Some(_) => None,
        }
    }

    /// The cached credentials if they stay valid at least [`MIN_CREDENTIALS_VALIDITY`], even
    /// when a refresh is due.
    fn cached_usable(&self, now: SystemTime) -> Option<Credentials> {
        let cached = self.cached.lock().ok()?;
        let credentials = &cached.as_ref()?.credentials;
        match credentials.expiry() {
            Some(expiry) if expiry <= now + MIN_CREDENTIALS_VALIDITY => None,
            _ => Some(credentials.clone()),
        }
    }

    /// How long until the cached credentials are due for a refresh (zero: now, or none are
    /// cached): `CREDENTIALS_REFRESH_MARGIN` before they expire, but for credentials that live
    /// shorter than that, halfway through their life (so short-lived ones are not fetched in a
    /// loop).
    fn refresh_due_in(&self, now: SystemTime) -> Duration {
        let Some(cached) = self.cached.lock().ok().and_then(|c| c.clone()) else {
            return Duration::ZERO;
        };
        let Some(expiry) = cached.credentials.expiry() else {
            return STATIC_RECHECK;
        };
        crate::aws::renew_at(cached.fetched_at, expiry, CREDENTIALS_REFRESH_MARGIN)
            .duration_since(now)
            .unwrap_or(Duration::ZERO)
    }

    /// Why no credentials are cached, for the token callback's error.
    fn not_ready(&self) -> AuthError {
        let last = self.last_error.lock().ok().and_then(|l| l.clone());
        AuthError::NotReady(match last {
            Some(e) => format!("the last fetch failed: {e}"),
            None => "the first fetch has not finished".to_string(),
        })
    }
}

/// The background fetch of one [`CredentialSource`]: fetches when the credentials are due (or
/// missing), retries failures with backoff, and is woken early by the token callback when it
/// found nothing usable. Stops when the owning [`MskTokenProvider`] is dropped.
struct Refresher {
    wake: Arc<Notify>,
    /// The number of fetches finished (successful or not), for the start-up wait.
    attempts: watch::Receiver<u64>,
    _stop: DropGuard,
}

impl Refresher {
    fn spawn(source: Arc<CredentialSource>, runtime: &tokio::runtime::Handle, sink: &str) -> Self {
        let wake = Arc::new(Notify::new());
        let stop = CancellationToken::new();
        let (attempts_tx, attempts) = watch::channel(0u64);
        runtime.spawn(refresh_loop(
            source,
            wake.clone(),
            stop.clone(),
            attempts_tx,
            sink.to_string(),
        ));
        Refresher {
            wake,
            attempts,
            _stop: stop.drop_guard(),
        }
    }
}

async fn refresh_loop(
    source: Arc<CredentialSource>,
    wake: Arc<Notify>,
    stop: CancellationToken,
    attempts: watch::Sender<u64>,
    sink: String,
) {
    let mut failures = 0u32;
    loop {
        let due_in = source.refresh_due_in(SystemTime::now());
        if !due_in.is_zero() {
            tokio::select! {
                _ = tokio::time::sleep(due_in) => {}
                _ = wake.notified() => {}
                _ = stop.cancelled() => return,
            }
            continue;
        }
        let fetched = tokio::select! {
            r = source.fetch() => r,
            _ = stop.cancelled() => return,
        };
        attempts.send_modify(|n| *n += 1);
        match fetched {
            Ok(credentials) => {
                failures = 0;
                tracing::debug!(sink = %sink, expiry = ?credentials.expiry(),
                    "AWS credentials fetched for MSK IAM");
            }
            Err(e) => {
                let wait = RETRY_FIRST
                    .saturating_mul(1u32 << failures.min(5))
                    .min(RETRY_MAX);
                failures = failures.saturating_add(1);
                if let Some(suppressed) = crate::log_limit::allow(&sink, "msk_credentials") {
                    tracing::error!(sink = %sink, error = %e, retry_in = ?wait, suppressed,
                        "cannot get AWS credentials for MSK IAM; retrying in the background");
                }
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    _ = wake.notified() => {}
                    _ = stop.cancelled() => return,
                }
            }
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
    /// The background fetch, when started ([`MskTokenProvider::refresh_in_background`]).
    refresher: Option<Refresher>,
}

impl MskTokenProvider {
    /// Loads the credentials provider, starts fetching credentials in the background, and waits
    /// for the first fetch for at most [`FIRST_CREDENTIALS_WAIT`]; fails only when no provider is
    /// configured at all (credentials that cannot be fetched yet are retried in the background).
    pub async fn load(settings: &MskIamSettings, sink_name: &str) -> Result<Self, AuthError> {
        let credentials = CredentialSource::load(
            &settings.target.region,
            settings.role_arn.as_deref(),
            settings.sts_endpoint.as_deref(),
            &session_name(sink_name),
        )
        .await?;
        let lifetime_cap = test_only_lifetime_cap(sink_name);
        let mut provider = Self::new(settings.target.clone(), Arc::new(credentials), lifetime_cap);
        provider.refresh_in_background(sink_name);
        if !provider.first_fetch(FIRST_CREDENTIALS_WAIT).await {
            tracing::warn!(sink = %sink_name, waited = ?FIRST_CREDENTIALS_WAIT,
                "AWS credentials for MSK IAM are not there yet; starting anyway, the Kafka \
                 connection waits for them (fetched in the background)");
        }
        Ok(provider)
    }

    /// Starts the background fetch of credentials (once), so that [`Self::token_now`] finds
    /// them cached.
    pub fn refresh_in_background(&mut self, sink_name: &str) {
        if self.refresher.is_none() {
            self.refresher = Some(Refresher::spawn(
                self.credentials.clone(),
                &self.runtime,
                sink_name,
            ));
        }
    }

    /// Waits (at most `limit`) until the background fetch finished its first attempt; true when
    /// it did.
    pub async fn first_fetch(&self, limit: Duration) -> bool {
        let Some(refresher) = &self.refresher else {
            return false;
        };
        let mut attempts = refresher.attempts.clone();
        let fetched = tokio::time::timeout(limit, attempts.wait_for(|n| *n > 0))
            .await
            .is_ok_and(|r| r.is_ok());
        fetched
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
            refresher: None,
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

    /// Signs a token now, from any thread (librdkafka's polling thread calls this), without
    /// waiting for the network: with the cached credentials (which the background fetch keeps
    /// fresh; one due for a refresh is still used while it stays valid, the token's lifetime
    /// capped by its expiry), or, when none are usable, an [`AuthError::NotReady`] at once after
    /// waking the background fetch.
    pub fn token_now(&self) -> Result<IssuedToken, AuthError> {
        let now = SystemTime::now();
        if self.credentials.cached_fresh(now).is_none() {
            if let Some(refresher) = &self.refresher {
                refresher.wake.notify_one();
            }
        }
        match self.credentials.cached_usable(now) {
            Some(credentials) => self.sign(&credentials, now),
            None => Err(self.credentials.not_ready()),
        }
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
        let issued = std::thread::spawn(move || capped.token_now().map(|t| t.lifetime_ms))
            .join()
            .unwrap()
            .unwrap();
        let now = millis(SystemTime::now());
        assert!(issued > now && issued <= now + 3_000, "{issued} vs {now}");
    }

    /// Credentials that take `delay` to fetch and live `life`, counting the fetches.
    #[derive(Debug)]
    struct SlowProvider {
        delay: Duration,
        life: Duration,
        calls: Arc<std::sync::atomic::AtomicUsize>,
    }

    impl ProvideCredentials for SlowProvider {
        fn provide_credentials<'a>(
            &'a self,
        ) -> aws_credential_types::provider::future::ProvideCredentials<'a>
        where
            Self: 'a,
        {
            aws_credential_types::provider::future::ProvideCredentials::new(async move {
                self.calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                tokio::time::sleep(self.delay).await;
                Ok(Credentials::new(
                    "AKIDSLOW",
                    "secret",
                    None,
                    Some(SystemTime::now() + self.life),
                    "slow",
                ))
            })
        }
    }

    fn slow_provider(
        delay: Duration,
        life: Duration,
    ) -> (MskTokenProvider, Arc<std::sync::atomic::AtomicUsize>) {
        let calls = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let source = CredentialSource::new(SharedCredentialsProvider::new(SlowProvider {
            delay,
            life,
            calls: calls.clone(),
        }));
        let target = MskTarget {
            region: "us-east-1".into(),
            serverless: false,
        };
        (MskTokenProvider::new(target, Arc::new(source), None), calls)
    }

    /// The token callback runs on librdkafka's polling thread: a slow credentials source must
    /// not hold it. It answers at once (an error while nothing is cached), and signs with the
    /// cached credentials once the background fetch has them.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_token_callback_does_not_wait_for_slow_credentials() {
        let (mut provider, calls) =
            slow_provider(Duration::from_secs(3), Duration::from_secs(3600));
        provider.refresh_in_background("k");
        let provider = Arc::new(provider);
        let call = |provider: &Arc<MskTokenProvider>| {
            let provider = provider.clone();
            std::thread::spawn(move || {
                let started = std::time::Instant::now();
                let result = provider.token_now().map(|t| t.lifetime_ms);
                (result, started.elapsed())
            })
            .join()
            .unwrap()
        };
        let (result, took) = call(&provider);
        // Generous: the old callback waited the whole 3 s fetch.
        assert!(
            took < Duration::from_millis(500),
            "the callback took {took:?}"
        );
        let error = result.unwrap_err().to_string();
        assert!(
            error.contains("no AWS credentials yet (the first fetch has not finished)"),
            "{error}"
        );
        assert!(provider.first_fetch(Duration::from_secs(20)).await);
        let (result, took) = call(&provider);
        assert!(
            took < Duration::from_millis(500),
            "the callback took {took:?}"
        );
        assert!(result.is_ok(), "{result:?}");
        assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), 1);
    }

    /// Credentials that live shorter than the refresh margin are fetched again halfway through
    /// their life, not in a loop; until then the callback keeps signing with them.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn short_lived_credentials_are_refreshed_halfway_and_used_meanwhile() {
        let (mut provider, calls) =
            slow_provider(Duration::from_millis(10), Duration::from_secs(60));
        provider.refresh_in_background("k");
        assert!(provider.first_fetch(Duration::from_secs(20)).await);
        let due = provider.credentials.refresh_due_in(SystemTime::now());
        assert!(
            due > Duration::from_secs(25) && due <= Duration::from_secs(30),
            "{due:?}"
        );
        // Due for a refresh (within the margin) but valid: signed, lifetime capped by expiry.
        let issued = provider.token_now().unwrap();
        assert!(issued.lifetime_ms <= millis(SystemTime::now() + Duration::from_secs(60)));
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(
            calls.load(std::sync::atomic::Ordering::SeqCst),
            1,
            "no fetch loop"
        );
    }
}
