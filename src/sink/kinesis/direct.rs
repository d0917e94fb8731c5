//! PutRecords sent straight to the Kinesis endpoint: signed with aws-sigv4 and sent on the SDK's
//! own HTTPS connector, without the SDK's generic orchestrator.
//!
//! Why: the orchestrator builds every call from layers of type-erased configuration, runs a
//! dozen interceptors, resolves the endpoint and looks the credentials up in its identity cache
//! again, each time — about 350 allocations per call. Profiled (docs/performance.md), that was
//! 12% of the CPU of the forward → Kinesis run with full 500-record calls and 30% of a call
//! of 50 records (the retries of failed entries are such calls). PutRecords is the only call
//! the sink makes at a rate; DescribeStreamSummary and ListShards stay on the SDK client.
//!
//! What still comes from the SDK, so behaviour does not change:
//! - **The endpoint**, resolved once when the sink is built by a PutRecords call through the
//!   SDK client that stops before it is signed ([`learn_endpoint`]): the same rules as every
//!   other call (`endpoint`, `AWS_ENDPOINT_URL_KINESIS`, FIPS and dual-stack settings,
//!   partitions), and the region it says to sign for.
//! - **Credentials**: the provider of the sink's SDK config (default chain or `role_arn`,
//!   counted; [`crate::aws`]). [`PutRecordsClient`] caches them as the SDK's identity cache
//!   does, renewing them a minute before they expire (or halfway through a shorter life).
//! - **SigV4** (aws-sigv4) and **HTTPS** ([`crate::aws::https_connector`]: rustls on *ring*,
//!   proxy settings, connection pool, connect timeout).
//!
//! What this module does itself: bounds each call by `http_request_timeout`, reads an error
//! answer's code and message ([`CallError::from_answer`]), drops cached credentials that
//! Kinesis calls expired, and corrects a skewed clock from the `Date` of an answer that refused
//! the signature's time, as the SDK does.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use aws_credential_types::provider::{ProvideCredentials, SharedCredentialsProvider};
use aws_credential_types::Credentials;
use aws_sdk_kinesis::config::endpoint::Params;
use aws_sdk_kinesis::config::interceptors::BeforeTransmitInterceptorContextRef;
use aws_sdk_kinesis::config::{ConfigBag, Intercept, RuntimeComponents};
use aws_sdk_kinesis::error::{BoxError, DisplayErrorContext};
use aws_sigv4::http_request::{sign, SignableBody, SignableRequest, SigningSettings};
use aws_sigv4::sign::v4;
use aws_smithy_http_client::Connector;
use aws_smithy_runtime_api::client::endpoint::{
    EndpointResolverParams, ResolveEndpoint, SharedEndpointResolver,
};
use aws_smithy_runtime_api::client::http::{HttpConnector, HttpConnectorSettings};
use aws_smithy_runtime_api::client::orchestrator::HttpRequest;
use aws_smithy_types::body::SdkBody;
use aws_smithy_types::date_time::{DateTime, Format};
use aws_smithy_types::Document;
use bytes::Bytes;
use http::header::{HeaderValue, CONTENT_LENGTH, CONTENT_TYPE, HOST, USER_AGENT};
use http_body_util::BodyExt;

use super::api::{sanitize, CallError};

/// The operation, as the `X-Amz-Target` header names it.
const TARGET: &str = "Kinesis_20131202.PutRecords";
/// The JSON protocol's content type.
const JSON_1_1: &str = "application/x-amz-json-1.1";
/// The SigV4 service name of Kinesis.
const SIGNING_NAME: &str = "kinesis";
/// Cached credentials are renewed this long before they expire.
const RENEW_BEFORE_EXPIRY: Duration = Duration::from_secs(60);
/// Answers that say the request's time is too far from the service's clock.
const CLOCK_SKEW_CODES: &[&str] = &[
    "RequestExpired",
    "RequestTimeTooSkewed",
    "InvalidSignatureException",
    "SignatureDoesNotMatch",
];
/// The User-Agent of PutRecords calls.
const AGENT: &str = concat!("logferry/", env!("CARGO_PKG_VERSION"));

/// Sends PutRecords bodies to one stream's endpoint. Cheap to clone (one `Arc`).
#[derive(Clone, Debug)]
pub struct PutRecordsClient {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    connector: Connector,
    endpoint: http::Uri,
    /// `endpoint` as text, as it is signed.
    endpoint_text: String,
    host: HeaderValue,
    region: String,
    provider: SharedCredentialsProvider,
    cached: Mutex<Option<Cached>>,
    /// Serializes fetches, so a burst of calls with expired credentials fetches them once.
    fetching: tokio::sync::Mutex<()>,
    timeout: Duration,
    /// The service's clock minus ours, in seconds, once an answer said they differ.
    clock_skew: AtomicI64,
}

#[derive(Debug, Clone)]
struct Cached {
    credentials: Credentials,
    renew_at: Option<SystemTime>,
}

/// Where PutRecords goes, as the SDK client would send it.
#[derive(Debug, Clone)]
pub struct Endpoint {
    pub uri: http::Uri,
    /// The region to sign for, when the endpoint names one.
    pub signing_region: Option<String>,
}

impl PutRecordsClient {
    /// A client for `endpoint` with the credentials and sleep of the sink's SDK config, each
    /// call bounded by `timeout` (connecting by at most 5 s of it, as the SDK client is).
    pub fn new(
        sdk: &aws_config::SdkConfig,
        endpoint: Endpoint,
        region: String,
        timeout: Duration,
    ) -> Result<PutRecordsClient, String> {
        let provider = sdk
            .credentials_provider()
            .ok_or("no AWS credentials provider is configured")?;
        let settings = HttpConnectorSettings::builder()
            .connect_timeout(timeout.min(Duration::from_secs(5)))
            .build();
        let host = endpoint
            .uri
            .authority()
            .ok_or_else(|| format!("the Kinesis endpoint {} has no host", endpoint.uri))
            .and_then(|authority| {
                HeaderValue::from_str(authority.as_str()).map_err(|e| e.to_string())
            })?;
        Ok(PutRecordsClient {
            inner: Arc::new(Inner {
                connector: crate::aws::https_connector(Some(settings), sdk.sleep_impl()),
                host,
                endpoint_text: endpoint.uri.to_string(),
                endpoint: endpoint.uri,
                region: endpoint.signing_region.unwrap_or(region),
                provider,
                cached: Mutex::new(None),
                fetching: tokio::sync::Mutex::new(()),
                timeout,
                clock_skew: AtomicI64::new(0),
            }),
        })
    }

    /// Sends one PutRecords `body` (see [`super::put_records::put_records_body`]); returns the
    /// body of a successful (200) answer.
    pub async fn send(&self, body: Bytes) -> Result<Bytes, CallError> {
        let credentials = self.credentials().await?;
        let request = self.signed_request(&credentials, body)?;
        let inner = &self.inner;
        match tokio::time::timeout(inner.timeout, self.exchange(request)).await {
            Ok(Ok(answer)) => Ok(answer),
            Ok(Err(error)) => {
                if error.code.starts_with("ExpiredToken") {
                    self.forget_credentials();
                }
                Err(error)
            }
            Err(_) => Err(CallError::new(
                "timeout".into(),
                None,
                "no answer within http_request_timeout".into(),
            )),
        }
    }

    /// The request, signed as of now (corrected by the clock skew an answer reported).
    fn signed_request(
        &self,
        credentials: &Credentials,
        body: Bytes,
    ) -> Result<HttpRequest, CallError> {
        let inner = &self.inner;
        let skew = inner.clock_skew.load(Ordering::Relaxed);
        let now = SystemTime::now();
        let time = if skew >= 0 {
            now + Duration::from_secs(skew.unsigned_abs())
        } else {
            now - Duration::from_secs(skew.unsigned_abs())
        };
        let signing_failed = |e: &dyn std::fmt::Display| {
            CallError::new(
                "request".into(),
                None,
                sanitize(&format!("cannot sign the PutRecords request: {e}")),
            )
        };
        let host = inner.host.to_str().map_err(|e| signing_failed(&e))?;
        let identity = credentials.clone().into();
        let params = v4::SigningParams::builder()
            .identity(&identity)
            .region(&inner.region)
            .name(SIGNING_NAME)
            .time(time)
            .settings(SigningSettings::default())
            .build()
            .map_err(|e| signing_failed(&e))?
            .into();
        let signed_headers = [
            ("content-type", JSON_1_1),
            ("host", host),
            ("x-amz-target", TARGET),
        ];
        let signable = SignableRequest::new(
            "POST",
            &inner.endpoint_text,
            signed_headers.into_iter(),
            SignableBody::Bytes(&body),
        )
        .map_err(|e| signing_failed(&e))?;
        let (instructions, _signature) = sign(signable, &params)
            .map_err(|e| signing_failed(&e))?
            .into_parts();

        let length = body.len();
        let mut request = http::Request::new(SdkBody::from(body));
        *request.method_mut() = http::Method::POST;
        *request.uri_mut() = inner.endpoint.clone();
        let headers = request.headers_mut();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static(JSON_1_1));
        headers.insert(HOST, inner.host.clone());
        headers.insert("x-amz-target", HeaderValue::from_static(TARGET));
        headers.insert(CONTENT_LENGTH, HeaderValue::from(length));
        headers.insert(USER_AGENT, HeaderValue::from_static(AGENT));
        instructions.apply_to_request_http1x(&mut request);
        HttpRequest::try_from(request).map_err(|e| signing_failed(&e))
    }

    /// Sends `request` and reads the whole answer.
    async fn exchange(&self, request: HttpRequest) -> Result<Bytes, CallError> {
        let response = self.inner.connector.call(request).await.map_err(|e| {
            let code = if e.is_timeout() {
                "timeout"
            } else {
                "dispatch"
            };
            CallError::new(
                code.into(),
                None,
                sanitize(&DisplayErrorContext(&e).to_string()),
            )
        })?;
        let status = response.status().as_u16();
        let error_type = response
            .headers()
            .get("x-amzn-errortype")
            .map(str::to_owned);
        let date = response.headers().get("date").map(str::to_owned);
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(|e| {
                CallError::new(
                    "response".into(),
                    Some(status),
                    sanitize(&format!("the answer broke off: {e}")),
                )
            })?
            .to_bytes();
        if status == 200 {
            return Ok(body);
        }
        let error = CallError::from_answer(status, error_type.as_deref(), &body);
        if CLOCK_SKEW_CODES.contains(&error.code.as_str()) {
            if let Some(skew) = date.as_deref().and_then(clock_skew) {
                self.inner.clock_skew.store(skew, Ordering::Relaxed);
            }
        }
        Err(error)
    }

    /// Credentials for the next call: the cached ones until they are due for renewal.
    async fn credentials(&self) -> Result<Credentials, CallError> {
        if let Some(fresh) = self.cached_fresh() {
            return Ok(fresh);
        }
        let _one_fetch = self.inner.fetching.lock().await;
        if let Some(fresh) = self.cached_fresh() {
            return Ok(fresh);
        }
        let credentials = self
            .inner
            .provider
            .provide_credentials()
            .await
            .map_err(|e| CallError::from_credentials(&e))?;
        let renew_at = credentials
            .expiry()
            .map(|expiry| crate::aws::renew_at(SystemTime::now(), expiry, RENEW_BEFORE_EXPIRY));
        if let Ok(mut cached) = self.inner.cached.lock() {
            *cached = Some(Cached {
                credentials: credentials.clone(),
                renew_at,
            });
        }
        Ok(credentials)
    }

    fn cached_fresh(&self) -> Option<Credentials> {
        let cached = self.inner.cached.lock().ok()?;
        let cached = cached.as_ref()?;
        match cached.renew_at {
            Some(at) if at <= SystemTime::now() => None,
            _ => Some(cached.credentials.clone()),
        }
    }

    fn forget_credentials(&self) {
        if let Ok(mut cached) = self.inner.cached.lock() {
            *cached = None;
        }
    }
}

/// The service's clock minus ours, in whole seconds, from an HTTP `Date` header.
fn clock_skew(date: &str) -> Option<i64> {
    let service = DateTime::from_str(date, Format::HttpDate).ok()?;
    let ours = DateTime::from(SystemTime::now());
    Some(service.secs() - ours.secs())
}

/// The endpoint the SDK `client` would send PutRecords on `stream` to. The SDK prepares the
/// call until its endpoint parameters are known (its settings, the environment's
/// `AWS_ENDPOINT_URL_KINESIS`, FIPS and dual-stack settings), the call stops there (before
/// credentials are needed, so nothing is fetched or sent), and the SDK's endpoint resolver
/// resolves them.
pub async fn learn_endpoint(
    client: &aws_sdk_kinesis::Client,
    stream: &str,
) -> Result<Endpoint, String> {
    let learned = Arc::new(Mutex::new(None));
    let result = client
        .put_records()
        .stream_name(stream)
        .set_records(Some(Vec::new()))
        .customize()
        .interceptor(LearnEndpoint {
            learned: learned.clone(),
        })
        .send()
        .await;
    let Some((params, resolver)) = learned.lock().ok().and_then(|mut slot| slot.take()) else {
        return Err(match result {
            Err(e) => format!(
                "cannot resolve the Kinesis endpoint: {}",
                sanitize(&DisplayErrorContext(&e).to_string())
            ),
            Ok(_) => "cannot resolve the Kinesis endpoint".into(),
        });
    };
    let params = EndpointResolverParams::new(params);
    let endpoint = resolver
        .resolve_endpoint(&params)
        .await
        .map_err(|e| format!("cannot resolve the Kinesis endpoint: {e}"))?;
    let uri = endpoint.url().parse().map_err(|e| {
        format!(
            "the Kinesis endpoint `{}` is not a URL: {e}",
            endpoint.url()
        )
    })?;
    Ok(Endpoint {
        uri,
        signing_region: signing_region(&endpoint),
    })
}

/// The region the endpoint says to sign for, when it says (`authSchemes[].signingRegion`).
fn signing_region(endpoint: &aws_smithy_types::endpoint::Endpoint) -> Option<String> {
    let Some(Document::Array(schemes)) = endpoint.properties().get("authSchemes") else {
        return None;
    };
    schemes.iter().find_map(|scheme| match scheme {
        Document::Object(scheme) => match scheme.get("signingRegion") {
            Some(Document::String(region)) => Some(region.clone()),
            _ => None,
        },
        _ => None,
    })
}

/// Takes the prepared call's endpoint parameters and resolver, then stops the call.
#[derive(Debug)]
struct LearnEndpoint {
    learned: Arc<Mutex<Option<(Params, SharedEndpointResolver)>>>,
}

impl Intercept for LearnEndpoint {
    fn name(&self) -> &'static str {
        "logferry::LearnEndpoint"
    }

    fn read_before_attempt(
        &self,
        _context: &BeforeTransmitInterceptorContextRef<'_>,
        runtime_components: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let params = cfg
            .load::<EndpointResolverParams>()
            .and_then(|params| params.get::<Params>())
            .ok_or("the SDK prepared no Kinesis endpoint parameters")?;
        if let Ok(mut slot) = self.learned.lock() {
            *slot = Some((params.clone(), runtime_components.endpoint_resolver()));
        }
        Err("endpoint parameters learned; this call is not sent".into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_skew_is_read_from_the_date_header() {
        let ahead = DateTime::from(SystemTime::now() + Duration::from_secs(600))
            .fmt(Format::HttpDate)
            .unwrap();
        let skew = clock_skew(&ahead).unwrap();
        assert!((599..=601).contains(&skew), "{skew}");
        assert_eq!(clock_skew("yesterday"), None);
    }
}
