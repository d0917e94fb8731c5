//! MSK IAM authentication token for SASL/OAUTHBEARER.
//!
//! Amazon MSK does not take a password: the OAUTHBEARER token is a SigV4 *presigned URL* for the
//! pseudo-request `GET https://kafka.<region>.amazonaws.com/?Action=kafka-cluster%3AConnect`,
//! base64url-encoded without padding. The broker recomputes the signature from the caller's IAM
//! identity, so the token proves who we are without the secret ever leaving the process.
//!
//! The signature itself comes from the `aws-sigv4` crate (the same signer the AWS SDK uses), never
//! from hand-written crypto; this module only builds the request, picks the signing settings the
//! official MSK signers use, and encodes the result. Signing time is a parameter, so tokens are
//! reproducible in tests and nothing here reads the wall clock.
//!
//! Region and flavour (provisioned or Serverless) are resolved once at startup from the cluster
//! ARN, the broker host names or an explicit region; see [`resolve_target`].

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_credential_types::Credentials;
use aws_sigv4::http_request::{
    sign, SignableBody, SignableRequest, SignatureLocation, SigningSettings,
};
use aws_sigv4::sign::v4;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;

/// How long a presigned token is valid, as MSK and every official signer use it.
pub const TOKEN_VALIDITY: Duration = Duration::from_secs(900);

/// The SigV4 service name MSK checks the signature against.
const SIGNING_SERVICE: &str = "kafka-cluster";

/// The only action in the presigned request; MSK authorizes the rest per Kafka API call.
const CONNECT_ACTION_QUERY: &str = "Action=kafka-cluster%3AConnect";

/// Failures of MSK IAM setup or signing. Messages never contain secrets.
#[derive(Debug, thiserror::Error)]
pub enum MskIamError {
    #[error(
        "cannot determine the AWS region of the MSK cluster: set `aws_msk_iam_cluster_arn`, \
         use broker host names of the form `b-1.<cluster>.<id>.c2.kafka.<region>.amazonaws.com`, \
         or configure the region explicitly"
    )]
    NoRegion,
    #[error(
        "`aws_msk_iam_cluster_arn` = {arn:?} is not an MSK cluster ARN ({reason}); expected \
         `arn:aws:kafka:<region>:<account>:cluster/<name>/<uuid>`"
    )]
    InvalidClusterArn { arn: String, reason: &'static str },
    #[error(
        "the brokers name two AWS regions ({first} and {second}); an MSK cluster lives in one \
         region: fix `brokers` or set `aws_msk_iam_cluster_arn`"
    )]
    ConflictingBrokerRegions { first: String, second: String },
    #[error("the configured AWS region {0:?} is not a valid region name (e.g. `us-east-1`)")]
    InvalidRegion(String),
    #[error(
        "the AWS credentials (access key {access_key_id}) expired at {expired_at_ms} ms since the \
         epoch, before the MSK IAM token could be signed; the credential provider must refresh them"
    )]
    CredentialsExpired {
        access_key_id: String,
        expired_at_ms: i64,
    },
    #[error("signing the MSK IAM token failed: {0}")]
    Signing(String),
}

/// Where MSK IAM tokens are aimed: the cluster's region, and whether it is MSK Serverless.
///
/// Serverless changes nothing in the token: AWS's own signers (aws-msk-iam-sasl-signer for
/// Python, Go, JS, Java and .NET, which AWS documents for provisioned and Serverless clusters
/// alike) always sign `kafka.<region>.amazonaws.com`, so logferry does too. The flag is kept
/// for logs (`/health`, start-up) only.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MskTarget {
    pub region: String,
    pub serverless: bool,
}

impl MskTarget {
    /// The host the presigned URL names: `kafka.<region>.amazonaws.com` for provisioned and
    /// Serverless clusters alike, as in every official MSK IAM signer (their endpoint template
    /// is `https://kafka.{region}.amazonaws.com/`). Fluent Bit signs `kafka-serverless.<region>`
    /// for Serverless brokers; AWS's signers do not, and they are what AWS documents.
    pub fn signing_host(&self) -> String {
        format!("kafka.{}.amazonaws.com", self.region)
    }
}

/// Finds the region and flavour of the cluster: from the cluster ARN when configured (the most
/// explicit statement of intent), else from the broker host names, else from the explicitly
/// configured region (brokers reached through a proxy or private DNS name no region).
///
/// `brokers` entries are `host:port` strings; an entry may itself be a comma-separated list as
/// in librdkafka's `bootstrap.servers`. The cluster is taken as Serverless when any broker host is
/// a `kafka-serverless` endpoint (informational: the token is the same); the ARN is not used for
/// that, as no documented ARN form tells Serverless clusters apart.
pub fn resolve_target<S: AsRef<str>>(
    cluster_arn: Option<&str>,
    brokers: &[S],
    configured_region: Option<&str>,
) -> Result<MskTarget, MskIamError> {
    let hosts: Vec<BrokerHost> = brokers
        .iter()
        .flat_map(|entry| entry.as_ref().split(','))
        .filter_map(|broker| parse_broker_host(broker.trim()))
        .collect();
    let serverless = hosts.iter().any(|host| host.serverless);

    if let Some(arn) = cluster_arn.map(str::trim).filter(|arn| !arn.is_empty()) {
        let region = region_from_cluster_arn(arn)?;
        return Ok(MskTarget {
            region: region.to_owned(),
            serverless,
        });
    }

    let mut found: Option<&str> = None;
    for host in &hosts {
        match found {
            None => found = Some(&host.region),
            Some(first) if first != host.region => {
                return Err(MskIamError::ConflictingBrokerRegions {
                    first: first.to_owned(),
                    second: host.region.clone(),
                })
            }
            Some(_) => {}
        }
    }
    if let Some(region) = found {
        return Ok(MskTarget {
            region: region.to_owned(),
            serverless,
        });
    }

    match configured_region.map(str::trim).filter(|r| !r.is_empty()) {
        Some(region) if is_region_name(region) => Ok(MskTarget {
            region: region.to_owned(),
            serverless,
        }),
        Some(region) => Err(MskIamError::InvalidRegion(region.to_owned())),
        None => Err(MskIamError::NoRegion),
    }
}

/// Region of `arn:<partition>:kafka:<region>:<account>:cluster/<name>/<uuid>`.
fn region_from_cluster_arn(arn: &str) -> Result<&str, MskIamError> {
    let invalid = |reason| MskIamError::InvalidClusterArn {
        arn: arn.to_owned(),
        reason,
    };
    let mut parts = arn.splitn(6, ':');
    if parts.next() != Some("arn") {
        return Err(invalid("it does not start with `arn:`"));
    }
    let _partition = parts.next();
    if parts.next() != Some("kafka") {
        return Err(invalid("its service is not `kafka`"));
    }
    let region = parts.next().unwrap_or_default();
    let _account = parts.next();
    let resource = parts.next().unwrap_or_default();
    if !resource.starts_with("cluster/") {
        return Err(invalid("its resource is not `cluster/...`"));
    }
    if !is_region_name(region) {
        return Err(invalid("its region field is not a region name"));
    }
    Ok(region)
}

/// What a broker's DNS name tells about the cluster.
#[derive(Debug, PartialEq, Eq)]
struct BrokerHost {
    region: String,
    serverless: bool,
}

/// Reads `...kafka.<region>.amazonaws.com[.cn]` and `...kafka-serverless.<region>.amazonaws.com`
/// host names (any prefix: broker, bootstrap, public, multi-VPC); other names yield nothing.
fn parse_broker_host(broker: &str) -> Option<BrokerHost> {
    let host = strip_port(broker)
        .trim_end_matches('.')
        .to_ascii_lowercase();
    let domainless = host
        .strip_suffix(".amazonaws.com")
        .or_else(|| host.strip_suffix(".amazonaws.com.cn"))?;
    let (rest, region) = domainless.rsplit_once('.')?;
    let service = rest.rsplit('.').next()?;
    let serverless = match service {
        "kafka" => false,
        "kafka-serverless" => true,
        _ => return None,
    };
    is_region_name(region).then(|| BrokerHost {
        region: region.to_owned(),
        serverless,
    })
}

/// `host:port` -> `host`; bracketed IPv6 literals and bare hosts pass through.
fn strip_port(broker: &str) -> &str {
    match broker.rsplit_once(':') {
        Some((host, port))
            if !port.is_empty()
                && port.bytes().all(|b| b.is_ascii_digit())
                && !host.contains(':') =>
        {
            host
        }
        _ => broker,
    }
}

/// Shape check for AWS region names (`us-east-1`, `us-gov-west-1`, `cn-north-1`, ...), so that a
/// typo or a stray host label is reported instead of silently signing for a wrong region.
fn is_region_name(region: &str) -> bool {
    let parts: Vec<&str> = region.split('-').collect();
    parts.len() >= 3
        && parts.iter().all(|p| {
            !p.is_empty()
                && p.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        })
        && parts[0].bytes().all(|b| b.is_ascii_lowercase())
        && parts
            .last()
            .is_some_and(|p| p.bytes().all(|b| b.is_ascii_digit()))
}

/// A signed MSK IAM token with its lifetime, ready for librdkafka's OAUTHBEARER token callback.
///
/// `Debug` redacts the token: it is a bearer credential (anyone holding it can connect as us
/// until it expires), so it must not reach logs.
#[derive(Clone)]
pub struct MskIamToken {
    token: String,
    expiry_ms: i64,
    amz_date: String,
    credential_scope: String,
    host: String,
}

impl MskIamToken {
    /// The base64url (unpadded) presigned URL to hand to the broker. Secret: do not log.
    pub fn token(&self) -> &str {
        &self.token
    }

    /// When the token stops being usable, in ms since the Unix epoch: the earlier of the
    /// presigned URL's expiry and the expiry of the credentials that signed it.
    pub fn expiry_ms(&self) -> i64 {
        self.expiry_ms
    }

    /// `X-Amz-Date` of the signature (`YYYYMMDDTHHMMSSZ`), for debugging clock skew.
    pub fn amz_date(&self) -> &str {
        &self.amz_date
    }

    /// `<date>/<region>/kafka-cluster/aws4_request`, for debugging region mistakes.
    pub fn credential_scope(&self) -> &str {
        &self.credential_scope
    }

    /// Host the presigned URL names.
    pub fn host(&self) -> &str {
        &self.host
    }
}

impl fmt::Debug for MskIamToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MskIamToken")
            .field("token", &"** redacted **")
            .field("expiry_ms", &self.expiry_ms)
            .field("amz_date", &self.amz_date)
            .field("credential_scope", &self.credential_scope)
            .field("host", &self.host)
            .finish()
    }
}

/// Signs MSK IAM tokens for one cluster.
#[derive(Debug, Clone)]
pub struct MskIamSigner {
    target: MskTarget,
    host: String,
    user_agent: String,
}

impl MskIamSigner {
    pub fn new(target: MskTarget) -> Self {
        let host = target.signing_host();
        Self {
            target,
            host,
            user_agent: format!("logferry/{}", env!("CARGO_PKG_VERSION")),
        }
    }

    pub fn target(&self) -> &MskTarget {
        &self.target
    }

    /// Signs a token as of `signing_time` (pass the current time in production; tests pass fixed
    /// times). Credentials that already expired at `signing_time` are refused, since a token
    /// signed with them would be rejected by the broker anyway.
    pub fn sign(
        &self,
        credentials: &Credentials,
        signing_time: SystemTime,
    ) -> Result<MskIamToken, MskIamError> {
        // The URL carries X-Amz-Date in whole seconds and the broker counts from there, so the
        // token dies up to a second before `signing_time + 900 s`.
        let signed_until = (millis_since_epoch(signing_time) / 1000) * 1000
            + i64::try_from(TOKEN_VALIDITY.as_millis()).unwrap_or(i64::MAX);
        let expiry_ms = match credentials.expiry().map(millis_since_epoch) {
            Some(expired_at_ms) if expired_at_ms <= millis_since_epoch(signing_time) => {
                return Err(MskIamError::CredentialsExpired {
                    access_key_id: credentials.access_key_id().to_owned(),
                    expired_at_ms,
                })
            }
            Some(credentials_expiry) => credentials_expiry.min(signed_until),
            None => signed_until,
        };

        let mut settings = SigningSettings::default();
        settings.signature_location = SignatureLocation::QueryParams;
        settings.expires_in = Some(TOKEN_VALIDITY);
        // Only `host` is signed: the request never travels as HTTP, so no other header exists.
        settings.excluded_headers = None;

        let identity = credentials.clone().into();
        let params = v4::SigningParams::builder()
            .identity(&identity)
            .region(&self.target.region)
            .name(SIGNING_SERVICE)
            .time(signing_time)
            .settings(settings)
            .build()
            .map_err(|e| MskIamError::Signing(e.to_string()))?
            .into();

        let url = format!("https://{}/?{CONNECT_ACTION_QUERY}", self.host);
        let request = SignableRequest::new(
            "GET",
            url.as_str(),
            std::iter::empty(),
            // The presigned request has no body; the official MSK signers hash it as empty
            // (not UNSIGNED-PAYLOAD), which the golden vectors in the tests pin down.
            SignableBody::Bytes(&[]),
        )
        .map_err(|e| MskIamError::Signing(e.to_string()))?;
        let (instructions, _signature) = sign(request, &params)
            .map_err(|e| MskIamError::Signing(e.to_string()))?
            .into_parts();
        let (_headers, query_params) = instructions.into_parts();

        let mut signed_url = url;
        let mut amz_date = String::new();
        let mut credential_scope = String::new();
        for (name, value) in &query_params {
            match *name {
                "X-Amz-Date" => amz_date = value.to_string(),
                "X-Amz-Credential" => {
                    credential_scope = value
                        .split_once('/')
                        .map(|(_, scope)| scope.to_owned())
                        .unwrap_or_default()
                }
                _ => {}
            }
            push_query_param(&mut signed_url, name, value);
        }
        // Appended after signing, like the official signers do: identifies the client in the
        // broker's logs without being part of the signature.
        push_query_param(&mut signed_url, "User-Agent", &self.user_agent);

        Ok(MskIamToken {
            token: URL_SAFE_NO_PAD.encode(signed_url.as_bytes()),
            expiry_ms,
            amz_date,
            credential_scope,
            host: self.host.clone(),
        })
    }
}

/// Appends `&name=value`, percent-encoding the value the way SigV4 canonicalizes it (everything
/// but RFC 3986 unreserved characters), so the URL carries exactly the bytes that were signed.
fn push_query_param(url: &mut String, name: &str, value: &str) {
    url.push('&');
    url.push_str(name);
    url.push('=');
    for byte in value.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'.' | b'~') {
            url.push(char::from(byte));
        } else {
            url.push('%');
            url.push(char::from(HEX_UPPER[usize::from(byte >> 4)]));
            url.push(char::from(HEX_UPPER[usize::from(byte & 0x0f)]));
        }
    }
}

const HEX_UPPER: &[u8; 16] = b"0123456789ABCDEF";

/// Milliseconds since the Unix epoch; times before the epoch clamp to 0 (they cannot occur for
/// signing times or credential expiries that matter).
fn millis_since_epoch(time: SystemTime) -> i64 {
    time.duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    const FIXTURE: &str = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/msk_iam/tokens.json"
    );

    /// A case of the golden vectors made by the official signer
    /// (aws-msk-iam-sasl-signer-python 1.0.2).
    #[derive(serde::Deserialize)]
    struct GoldenCase {
        name: String,
        region: String,
        access_key_id: String,
        secret_access_key: String,
        session_token: Option<String>,
        signing_time: String,
        expiry_ms: i64,
        host: String,
        signature: String,
        query_without_user_agent: BTreeMap<String, String>,
    }

    fn golden_cases() -> Vec<GoldenCase> {
        let text = std::fs::read_to_string(FIXTURE).unwrap();
        let cases: Vec<GoldenCase> = serde_json::from_str(&text).unwrap();
        assert!(cases.len() >= 3, "fixture has too few cases");
        cases
    }

    fn parse_rfc3339(text: &str) -> SystemTime {
        let parsed = chrono::DateTime::parse_from_rfc3339(text).unwrap();
        UNIX_EPOCH + Duration::from_secs(u64::try_from(parsed.timestamp()).unwrap())
    }

    fn percent_decode(text: &str) -> String {
        let bytes = text.as_bytes();
        let mut out = Vec::new();
        let mut i = 0;
        while i < bytes.len() {
            if bytes[i] == b'%' {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap();
                out.push(u8::from_str_radix(hex, 16).unwrap());
                i += 3;
            } else {
                out.push(bytes[i]);
                i += 1;
            }
        }
        String::from_utf8(out).unwrap()
    }

    /// Decodes a token into (scheme+host+path, query parameters in order).
    /// The value of query parameter `name` of a decoded token.
    fn param<'a>(params: &'a [(String, String)], name: &str) -> &'a String {
        &params
            .iter()
            .find(|(k, _)| k == name)
            .unwrap_or_else(|| panic!("no {name} in the token"))
            .1
    }

    fn decode_token(token: &str) -> (String, Vec<(String, String)>) {
        assert!(!token.contains('='), "token must be unpadded");
        assert!(
            !token.contains('+') && !token.contains('/'),
            "token must be base64url"
        );
        let url = String::from_utf8(URL_SAFE_NO_PAD.decode(token).unwrap()).unwrap();
        let (base, query) = url.split_once('?').unwrap();
        let params = query
            .split('&')
            .map(|pair| {
                let (k, v) = pair.split_once('=').unwrap();
                (percent_decode(k), percent_decode(v))
            })
            .collect();
        (base.to_owned(), params)
    }

    fn credentials(case: &GoldenCase, expiry: Option<SystemTime>) -> Credentials {
        Credentials::new(
            &case.access_key_id,
            &case.secret_access_key,
            case.session_token.clone(),
            expiry,
            "test",
        )
    }

    fn signer(region: &str) -> MskIamSigner {
        MskIamSigner::new(MskTarget {
            region: region.to_owned(),
            serverless: false,
        })
    }

    #[test]
    fn tokens_match_the_official_signer() {
        for case in golden_cases() {
            let time = parse_rfc3339(&case.signing_time);
            let token = signer(&case.region)
                .sign(&credentials(&case, None), time)
                .unwrap();
            let (base, params) = decode_token(token.token());
            assert_eq!(base, format!("https://{}/", case.host), "{}", case.name);
            assert_eq!(params[0].0, "Action", "{}: Action comes first", case.name);
            assert_eq!(
                params.last().unwrap(),
                &(
                    "User-Agent".to_owned(),
                    format!("logferry/{}", env!("CARGO_PKG_VERSION"))
                ),
                "{}: User-Agent is appended last",
                case.name
            );
            let ours: BTreeMap<String, String> = params
                .iter()
                .filter(|(k, _)| k != "User-Agent")
                .cloned()
                .collect();
            assert_eq!(
                ours.len(),
                params.len() - 1,
                "{}: duplicate parameters",
                case.name
            );
            assert_eq!(ours, case.query_without_user_agent, "{}", case.name);
            assert_eq!(ours["X-Amz-Signature"], case.signature, "{}", case.name);
            assert_eq!(token.expiry_ms(), case.expiry_ms, "{}", case.name);
            assert_eq!(
                token.amz_date(),
                case.query_without_user_agent["X-Amz-Date"]
            );
            assert_eq!(token.host(), case.host);
            assert!(token
                .credential_scope()
                .ends_with(&format!("/{}/kafka-cluster/aws4_request", case.region)));
        }
    }

    #[test]
    fn a_different_secret_gives_a_different_signature() {
        let case = &golden_cases()[0];
        let time = parse_rfc3339(&case.signing_time);
        let wrong = Credentials::new(
            &case.access_key_id,
            "not-the-secret",
            case.session_token.clone(),
            None,
            "test",
        );
        let token = signer(&case.region).sign(&wrong, time).unwrap();
        let (_, params) = decode_token(token.token());
        let signature = param(&params, "X-Amz-Signature");
        assert_ne!(signature, &case.signature);
    }

    #[test]
    fn signing_depends_only_on_the_given_time() {
        let case = &golden_cases()[1];
        let time = parse_rfc3339(&case.signing_time);
        let a = signer(&case.region)
            .sign(&credentials(case, None), time)
            .unwrap();
        std::thread::sleep(Duration::from_millis(1100));
        let b = signer(&case.region)
            .sign(&credentials(case, None), time)
            .unwrap();
        assert_eq!(a.token(), b.token());
        let later = signer(&case.region)
            .sign(&credentials(case, None), time + Duration::from_secs(1))
            .unwrap();
        assert_ne!(a.token(), later.token());
        assert_eq!(later.expiry_ms(), a.expiry_ms() + 1000);
    }

    #[test]
    fn expiry_counts_from_the_whole_second_in_x_amz_date() {
        let case = &golden_cases()[0];
        let time = parse_rfc3339(&case.signing_time) + Duration::from_millis(999);
        let token = signer(&case.region)
            .sign(&credentials(case, None), time)
            .unwrap();
        assert_eq!(token.expiry_ms(), case.expiry_ms);
        let (_, params) = decode_token(token.token());
        let signature = param(&params, "X-Amz-Signature");
        assert_eq!(signature, &case.signature);
    }

    #[test]
    fn expiry_is_capped_by_credentials_expiry() {
        let case = &golden_cases()[0];
        let time = parse_rfc3339(&case.signing_time);
        let soon = time + Duration::from_secs(120);
        let token = signer(&case.region)
            .sign(&credentials(case, Some(soon)), time)
            .unwrap();
        assert_eq!(token.expiry_ms(), case.expiry_ms - 780_000);
        // The cap changes the lifetime, never the signed URL.
        let uncapped = signer(&case.region)
            .sign(&credentials(case, None), time)
            .unwrap();
        assert_eq!(token.token(), uncapped.token());

        let late = time + Duration::from_secs(3600);
        let token = signer(&case.region)
            .sign(&credentials(case, Some(late)), time)
            .unwrap();
        assert_eq!(token.expiry_ms(), case.expiry_ms);
    }

    #[test]
    fn expired_credentials_are_refused_without_leaking_secrets() {
        let case = &golden_cases()[0];
        let time = parse_rfc3339(&case.signing_time);
        let err = signer(&case.region)
            .sign(&credentials(case, Some(time)), time)
            .unwrap_err();
        assert!(matches!(err, MskIamError::CredentialsExpired { .. }));
        let message = err.to_string();
        assert!(message.contains("expired"), "{message}");
        assert!(!message.contains(&case.secret_access_key));
        assert!(!message.contains(case.session_token.as_deref().unwrap()));
    }

    #[test]
    fn debug_output_redacts_the_token() {
        for case in golden_cases() {
            let time = parse_rfc3339(&case.signing_time);
            let token = signer(&case.region)
                .sign(&credentials(&case, None), time)
                .unwrap();
            let debug = format!("{token:?} {:?}", signer(&case.region));
            assert!(!debug.contains(token.token()), "{debug}");
            assert!(!debug.contains(&case.secret_access_key), "{debug}");
            assert!(!debug.contains(&case.signature), "{debug}");
            if let Some(session_token) = &case.session_token {
                assert!(!debug.contains(session_token.as_str()), "{debug}");
            }
            assert!(debug.contains("redacted"), "{debug}");
            assert!(debug.contains(token.amz_date()), "{debug}");
        }
    }

    /// MSK Serverless tokens are the official signer's tokens, byte for byte in their signed
    /// part: the same `kafka.<region>` host, hence the same signature as the golden vectors.
    #[test]
    fn serverless_tokens_are_signed_like_the_official_signers() {
        for case in golden_cases() {
            let time = parse_rfc3339(&case.signing_time);
            let serverless = MskIamSigner::new(MskTarget {
                region: case.region.clone(),
                serverless: true,
            });
            let token = serverless.sign(&credentials(&case, None), time).unwrap();
            let (base, params) = decode_token(token.token());
            assert_eq!(base, format!("https://{}/", case.host), "{}", case.name);
            assert!(!base.contains("serverless"), "{base}");
            let signature = param(&params, "X-Amz-Signature");
            assert_eq!(signature, &case.signature, "{}", case.name);
        }
    }

    #[test]
    fn region_from_cluster_arn_wins() {
        let target = resolve_target(
            Some("arn:aws:kafka:eu-central-1:123456789012:cluster/logs/0a1b2c3d-aaaa-bbbb-cccc-0123456789ab-2"),
            &["b-1.other.abc123.c2.kafka.us-west-2.amazonaws.com:9098"],
            Some("ap-south-1"),
        )
        .unwrap();
        assert_eq!(
            target,
            MskTarget {
                region: "eu-central-1".into(),
                serverless: false
            }
        );
        let china = resolve_target(
            Some("arn:aws-cn:kafka:cn-north-1:123456789012:cluster/logs/uuid-1"),
            &[] as &[&str],
            None,
        )
        .unwrap();
        assert_eq!(china.region, "cn-north-1");
    }

    #[test]
    fn malformed_cluster_arns_are_reported() {
        for arn in [
            "arn:aws:kinesis:us-east-1:123456789012:stream/logs",
            "arn:aws:kafka:us-east-1:123456789012:topic/logs/uuid/t",
            "arn:aws:kafka::123456789012:cluster/logs/uuid",
            "kafka:us-east-1:123456789012:cluster/logs/uuid",
            "arn:aws:kafka:useast1:123456789012:cluster/logs/uuid",
        ] {
            let err = resolve_target(Some(arn), &[] as &[&str], Some("us-east-1")).unwrap_err();
            assert!(
                matches!(err, MskIamError::InvalidClusterArn { .. }),
                "{arn}: {err}"
            );
            assert!(err.to_string().contains(arn));
        }
    }

    #[test]
    fn region_from_broker_hosts() {
        let cases: &[(&[&str], &str, bool)] = &[
            (
                &["b-1.logs.a1b2c3.c2.kafka.us-east-1.amazonaws.com:9098"],
                "us-east-1",
                false,
            ),
            (
                &[
                    "b-1-public.logs.a1b2c3.c2.kafka.eu-west-1.amazonaws.com:9198",
                    "b-2-public.logs.a1b2c3.c2.kafka.eu-west-1.amazonaws.com:9198",
                ],
                "eu-west-1",
                false,
            ),
            (
                &["b-1.logs.a1b2c3.c2.kafka.us-gov-west-1.amazonaws.com:9098,b-2.logs.a1b2c3.c2.kafka.us-gov-west-1.amazonaws.com:9098"],
                "us-gov-west-1",
                false,
            ),
            (
                &["boot-abcd1234.c1.kafka-serverless.ap-southeast-2.amazonaws.com:9098"],
                "ap-southeast-2",
                true,
            ),
            (
                &["B-1.Logs.A1B2C3.C2.KAFKA.US-EAST-2.AMAZONAWS.COM"],
                "us-east-2",
                false,
            ),
            (
                &["b-1.logs.a1b2c3.c2.kafka.cn-northwest-1.amazonaws.com.cn:9098"],
                "cn-northwest-1",
                false,
            ),
            (
                // A proxy first, then a real broker: the broker still names the region.
                &["127.0.0.1:9092", "b-3.logs.a1b2c3.c2.kafka.sa-east-1.amazonaws.com:9098"],
                "sa-east-1",
                false,
            ),
        ];
        for (brokers, region, serverless) in cases {
            let target = resolve_target(None, brokers, None).unwrap();
            assert_eq!(target.region, *region, "{brokers:?}");
            assert_eq!(target.serverless, *serverless, "{brokers:?}");
        }
    }

    #[test]
    fn serverless_is_detected_from_hosts_even_with_an_arn() {
        let target = resolve_target(
            Some("arn:aws:kafka:us-east-1:123456789012:cluster/logs/uuid-s1"),
            &["boot-abcd1234.c3.kafka-serverless.us-east-1.amazonaws.com:9098"],
            None,
        )
        .unwrap();
        assert!(target.serverless);
        assert_eq!(target.signing_host(), "kafka.us-east-1.amazonaws.com");
    }

    #[test]
    fn explicit_region_is_the_fallback() {
        let target = resolve_target(
            None,
            &["127.0.0.1:9092", "kafka.internal:9098"],
            Some("us-west-1"),
        )
        .unwrap();
        assert_eq!(
            target,
            MskTarget {
                region: "us-west-1".into(),
                serverless: false
            }
        );
        assert_eq!(target.signing_host(), "kafka.us-west-1.amazonaws.com");
        let err = resolve_target(None, &["localhost:9092"], Some("US East 1")).unwrap_err();
        assert!(matches!(err, MskIamError::InvalidRegion(_)), "{err}");
    }

    #[test]
    fn no_region_is_a_clear_error() {
        for brokers in [
            &["localhost:9092"][..],
            &["kafka.amazonaws.com:9098"][..],
            &["b-1.logs.a1b2c3.c2.kinesis.us-east-1.amazonaws.com:9098"][..],
            &["[::1]:9092"][..],
            &[][..],
        ] {
            let err = resolve_target(None, brokers, None).unwrap_err();
            assert!(matches!(err, MskIamError::NoRegion), "{brokers:?}: {err}");
            assert!(err.to_string().contains("aws_msk_iam_cluster_arn"));
        }
        let err = resolve_target(
            None,
            &["b-1.x.y.c2.kafka.us-east-1.amazonaws.com:9098"],
            None,
        )
        .map(|_| ())
        .and_then(|()| {
            resolve_target(
                None,
                &[
                    "b-1.x.y.c2.kafka.us-east-1.amazonaws.com:9098",
                    "b-2.x.y.c2.kafka.us-west-2.amazonaws.com:9098",
                ],
                None,
            )
        })
        .unwrap_err();
        assert!(
            matches!(err, MskIamError::ConflictingBrokerRegions { .. }),
            "{err}"
        );
    }
}
