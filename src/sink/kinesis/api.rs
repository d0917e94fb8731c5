//! The Kinesis calls the sink makes (DescribeStreamSummary, ListShards, PutRecords) and what
//! their failures mean: retry, or stop and tell an operator what to fix.

use std::fmt;

use aws_credential_types::provider::error::CredentialsError;
use aws_sdk_kinesis::config::http::HttpResponse;
use aws_sdk_kinesis::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_kinesis::Client;
use aws_sdk_sts::operation::assume_role::AssumeRoleError;
use aws_sdk_sts::operation::assume_role_with_web_identity::AssumeRoleWithWebIdentityError;

use super::retry_policy::{classify_call, ErrorClass, NOT_PERMITTED, REFUSED_CREDENTIALS};
use super::shard_map::{ShardListing, ShardMap, ShardMapError};

/// A whole call failed.
#[derive(Debug, Clone)]
pub struct CallError {
    /// The service's error code (`AccessDeniedException`), or what went wrong on the way
    /// (`timeout`, `dispatch`, `response`) when the service did not answer.
    pub code: String,
    /// HTTP status, when the service answered.
    pub status: Option<u16>,
    /// What happened, without secrets (see [`sanitize`]).
    pub message: String,
    pub class: ErrorClass,
    /// Set when the call never reached Kinesis because STS refused or failed the credentials
    /// it needs: the STS action (`sts:AssumeRole` for `role_arn`,
    /// `sts:AssumeRoleWithWebIdentity` for IRSA). `code` and `message` are then STS's.
    pub sts_action: Option<&'static str>,
}

impl fmt::Display for CallError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.status {
            Some(status) => write!(f, "{} (HTTP {status}): {}", self.code, self.message),
            None => write!(f, "{}: {}", self.code, self.message),
        }
    }
}

impl CallError {
    /// Kinesis refused the call for lack of permission (not a credentials problem).
    pub fn is_access_denied(&self) -> bool {
        self.sts_action.is_none() && self.is_permission_code()
    }

    fn is_permission_code(&self) -> bool {
        NOT_PERMITTED.contains(&self.code.as_str())
    }

    /// What an operator should do about this error for `stream`.
    pub fn hint(&self, stream: &str, action: &str) -> String {
        let code = self.code.as_str();
        if let Some(sts_action) = self.sts_action {
            return sts_hint(
                sts_action,
                self.is_permission_code() || self.status == Some(403),
            );
        }
        if code == "credentials" {
            return "no usable AWS credentials: configure one source of the default chain \
                    (environment keys, profile, ECS task role, IRSA, EKS Pod Identity, IMDS); \
                    retrying"
                .to_string();
        }
        if self.is_access_denied() {
            return format!(
                "the credentials are not allowed to call kinesis:{action} on stream `{stream}`: \
                 allow it in the IAM policy of the role logferry runs as (see docs/kinesis.md)"
            );
        }
        if code == "ResourceNotFoundException" {
            return format!(
                "stream `{stream}` does not exist in this region/account: create it, or fix \
                 `stream`, `region` or `endpoint`"
            );
        }
        if code.starts_with("KMS") {
            return format!(
                "stream `{stream}` is encrypted with a KMS key these credentials cannot use: \
                 allow kms:GenerateDataKey on the key and check that the key is enabled"
            );
        }
        if REFUSED_CREDENTIALS.contains(&code) || self.status == Some(403) {
            return "the AWS credentials were refused (wrong secret key, or an unknown or \
                    expired access key): check where they come from (environment, profile, \
                    role_arn, IRSA)"
                .to_string();
        }
        if code == "timeout" || code == "dispatch" || code == "response" {
            return "check the network path to the Kinesis endpoint (and `endpoint`); retrying"
                .to_string();
        }
        format!("Kinesis refused the request for stream `{stream}`; retrying")
    }
}

/// What to do when STS did not give the credentials the sink needs.
fn sts_hint(sts_action: &str, refused: bool) -> String {
    match (sts_action, refused) {
        ("sts:AssumeRole", true) => "STS refused sts:AssumeRole on the role in `role_arn`: allow \
            sts:AssumeRole on that role in the IAM policy of the credentials logferry starts with \
            (see infra/iam/assume-delivery-role.json), and check that the role's trust policy \
            names them"
            .to_string(),
        (_, true) => format!(
            "STS refused {sts_action} for AWS_ROLE_ARN: the role's trust policy must allow \
             {sts_action} for this service account (see infra/iam/eks-irsa-role.trust.json); \
             check AWS_ROLE_ARN and AWS_WEB_IDENTITY_TOKEN_FILE"
        ),
        (_, false) => format!(
            "cannot get credentials through {sts_action}: check the network path to STS \
             (`sts_endpoint`, AWS_ENDPOINT_URL_STS); retrying"
        ),
    }
}

/// Keeps an error message useful and free of secrets: one line, at most 300 characters, and
/// nothing from a signature-mismatch explanation (AWS can echo the canonical request, which
/// holds the session token header).
pub fn sanitize(message: &str) -> String {
    let mut text = message;
    for marker in ["The Canonical String", "The String-to-Sign", "\n"] {
        if let Some(at) = text.find(marker) {
            text = &text[..at];
        }
    }
    let text = text.trim();
    match text.char_indices().nth(300) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text.to_string(),
    }
}

/// Turns an SDK error into a [`CallError`].
pub fn call_error<E, R>(error: &SdkError<E, R>) -> CallError
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
    R: fmt::Debug + HttpStatus + 'static,
{
    if let Some(sts) = sts_failure(error) {
        return sts;
    }
    let (code, status, message) = match error {
        SdkError::ServiceError(context) => {
            let status = context.raw().http_status();
            // moto answers STS errors in a document the SDK does not parse
            // (`<ErrorResponse><Errors><Error>`): read the code from the body then.
            let code = context
                .err()
                .code()
                .map(str::to_owned)
                .or_else(|| xml_tag(&context.raw().body_text(), "Code").map(str::to_owned))
                .unwrap_or_else(|| format!("HTTP{status}"));
            let message = context
                .err()
                .message()
                .map(sanitize)
                .unwrap_or_else(|| sanitize(&context.raw().body_snippet()));
            (code, Some(status), message)
        }
        SdkError::TimeoutError(_) => (
            "timeout".to_string(),
            None,
            "no answer within http_request_timeout".to_string(),
        ),
        SdkError::DispatchFailure(_) if caused_by::<CredentialsError>(error) => (
            "credentials".to_string(),
            None,
            sanitize(&DisplayErrorContext(error).to_string()),
        ),
        SdkError::DispatchFailure(_) => (
            "dispatch".to_string(),
            None,
            sanitize(&DisplayErrorContext(error).to_string()),
        ),
        SdkError::ResponseError(context) => {
            // An error answer the SDK could not parse (moto and some endpoints answer JSON
            // protocols with XML error documents): read code and message from the body.
            let status = context.raw().http_status();
            let body = context.raw().body_text();
            match (xml_tag(&body, "Code"), status) {
                (Some(code), _) => (
                    code.to_string(),
                    Some(status),
                    sanitize(xml_tag(&body, "Message").unwrap_or(&body)),
                ),
                (None, 400..=599) => (format!("HTTP{status}"), Some(status), sanitize(&body)),
                (None, _) => (
                    "response".to_string(),
                    Some(status),
                    sanitize(&DisplayErrorContext(error).to_string()),
                ),
            }
        }
        _ => (
            "request".to_string(),
            None,
            sanitize(&DisplayErrorContext(error).to_string()),
        ),
    };
    CallError::new(code, status, message)
}

impl CallError {
    /// An error with the class its code and status give.
    pub fn new(code: String, status: Option<u16>, message: String) -> CallError {
        let class = match code.as_str() {
            "timeout" | "dispatch" | "response" | "request" | "credentials" => {
                ErrorClass::Retryable
            }
            "AccessDenied" => ErrorClass::Fatal,
            code => classify_call(code, status),
        };
        CallError {
            code,
            status,
            message,
            class,
            sts_action: None,
        }
    }

    /// The error answer (`status` other than 200) of a call in AWS's JSON protocol, as the SDK
    /// reads one: the code from the `x-amzn-ErrorType` header or the body's `__type` (or
    /// `code`), without the namespace before `#` or the URL after `:`; the message from
    /// `message` (or `Message`). An XML error document (moto, some proxies) gives `<Code>` and
    /// `<Message>`; anything else is `HTTP<status>` with the start of the body.
    pub fn from_answer(status: u16, error_type: Option<&str>, body: &[u8]) -> CallError {
        #[derive(serde::Deserialize, Default)]
        struct JsonError {
            #[serde(rename = "__type")]
            type_: Option<String>,
            code: Option<String>,
            #[serde(alias = "Message")]
            message: Option<String>,
        }
        let text = String::from_utf8_lossy(&body[..body.len().min(2000)]);
        let json: JsonError = serde_json::from_slice(body).unwrap_or_default();
        let code = error_type
            .or(json.type_.as_deref())
            .or(json.code.as_deref())
            .map(|code| {
                let code = code.split(':').next().unwrap_or(code);
                code.rsplit('#').next().unwrap_or(code).trim()
            })
            .filter(|code| !code.is_empty())
            .or_else(|| xml_tag(&text, "Code"))
            .map_or_else(|| format!("HTTP{status}"), str::to_owned);
        let message = json
            .message
            .as_deref()
            .or_else(|| xml_tag(&text, "Message"))
            .unwrap_or(&text);
        CallError::new(code, Some(status), sanitize(message))
    }

    /// Credentials could not be had for a call: STS's answer when STS refused or failed them
    /// (the STS action and its answer), else `credentials`.
    pub fn from_credentials(error: &CredentialsError) -> CallError {
        sts_failure(error).unwrap_or_else(|| {
            CallError::new(
                "credentials".to_string(),
                None,
                sanitize(&DisplayErrorContext(error).to_string()),
            )
        })
    }
}

/// When a call failed because STS did not give the credentials it needs (`role_arn`:
/// AssumeRole; IRSA: AssumeRoleWithWebIdentity), STS's answer, found in the error's causes.
fn sts_failure(error: &(dyn std::error::Error + 'static)) -> Option<CallError> {
    let mut cause = error.source();
    while let Some(e) = cause {
        let found = if let Some(sts) = e.downcast_ref::<SdkError<AssumeRoleError, HttpResponse>>() {
            Some((call_error(sts), "sts:AssumeRole"))
        } else {
            e.downcast_ref::<SdkError<AssumeRoleWithWebIdentityError, HttpResponse>>()
                .map(|sts| (call_error(sts), "sts:AssumeRoleWithWebIdentity"))
        };
        if let Some((sts, action)) = found {
            return Some(CallError {
                message: format!(
                    "getting credentials through {action} failed: {}",
                    sts.message
                ),
                sts_action: Some(action),
                ..sts
            });
        }
        cause = e.source();
    }
    None
}

/// True when `T` is among the causes of `error`.
fn caused_by<T: std::error::Error + 'static>(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut cause = error.source();
    while let Some(e) = cause {
        if e.is::<T>() {
            return true;
        }
        cause = e.source();
    }
    false
}

/// What the sink needs from an HTTP response: its status and a readable start of its body.
pub trait HttpStatus {
    fn http_status(&self) -> u16;
    fn body_snippet(&self) -> String;
    fn body_text(&self) -> String;
}

/// The text of `<tag>...</tag>` in an XML error document.
fn xml_tag<'a>(body: &'a str, tag: &str) -> Option<&'a str> {
    let open = format!("<{tag}>");
    let start = body.find(&open)? + open.len();
    let end = body[start..].find(&format!("</{tag}>"))? + start;
    Some(body[start..end].trim())
}

impl HttpStatus for HttpResponse {
    fn http_status(&self) -> u16 {
        self.status().as_u16()
    }

    fn body_snippet(&self) -> String {
        let text = self.body_text();
        // moto and some AWS services answer JSON protocols with an XML error document.
        xml_tag(&text, "Message").map_or(text.clone(), str::to_owned)
    }

    fn body_text(&self) -> String {
        let bytes = self.body().bytes().unwrap_or_default();
        String::from_utf8_lossy(&bytes[..bytes.len().min(2000)]).into_owned()
    }
}

/// What DescribeStreamSummary told us.
#[derive(Debug, Clone)]
pub struct StreamSummary {
    pub status: String,
    pub open_shards: i32,
    /// MaxRecordSizeInKiB, when the service reports it.
    pub max_record_size: Option<usize>,
    pub arn: String,
}

pub async fn describe(client: &Client, stream: &str) -> Result<StreamSummary, CallError> {
    let out = client
        .describe_stream_summary()
        .stream_name(stream)
        .send()
        .await
        .map_err(|e| call_error(&e))?;
    let Some(summary) = out.stream_description_summary() else {
        return Err(CallError {
            code: "response".into(),
            status: None,
            message: "DescribeStreamSummary answered without a stream summary".into(),
            class: ErrorClass::Retryable,
            sts_action: None,
        });
    };
    Ok(StreamSummary {
        status: summary.stream_status().as_str().to_string(),
        open_shards: summary.open_shard_count(),
        max_record_size: summary
            .max_record_size_in_kib()
            .and_then(|kib| usize::try_from(kib).ok())
            .filter(|&kib| kib > 0)
            .map(|kib| kib * 1024),
        arn: summary.stream_arn().to_string(),
    })
}

/// Why the shard map could not be read.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ListError {
    #[error("ListShards failed: {0}")]
    Call(CallError),
    #[error("ListShards answered an inconsistent listing: {0}")]
    Map(#[from] ShardMapError),
}

/// Lists the stream's shards (every page) and keeps the open ones.
pub async fn list_shards(client: &Client, stream: &str) -> Result<ShardMap, ListError> {
    let mut listing = Vec::new();
    let mut next_token: Option<String> = None;
    loop {
        let request = match &next_token {
            // With a NextToken, the stream name must not be given again.
            Some(token) => client.list_shards().next_token(token),
            None => client.list_shards().stream_name(stream),
        };
        let out = request
            .send()
            .await
            .map_err(|e| ListError::Call(call_error(&e)))?;
        for shard in out.shards() {
            let Some(range) = shard.hash_key_range() else {
                continue;
            };
            listing.push(ShardListing {
                shard_id: shard.shard_id().to_string(),
                starting_hash_key: range.starting_hash_key().to_string(),
                ending_hash_key: range.ending_hash_key().to_string(),
                closed: shard
                    .sequence_number_range()
                    .is_some_and(|r| r.ending_sequence_number().is_some()),
            });
        }
        match out.next_token() {
            Some(token) if !token.is_empty() => next_token = Some(token.to_string()),
            _ => break,
        }
    }
    Ok(ShardMap::from_listing(listing)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_answers_are_read_as_the_sdk_reads_json_protocol_errors() {
        // Kinesis: the code in `__type` with its namespace, the message in `message`.
        let e = CallError::from_answer(
            400,
            None,
            br#"{"__type":"com.amazonaws.kinesis.v20131202#ResourceNotFoundException","message":"Stream s under account 1 not found."}"#,
        );
        assert_eq!(e.code, "ResourceNotFoundException");
        assert_eq!(e.status, Some(400));
        assert_eq!(e.message, "Stream s under account 1 not found.");
        assert_eq!(e.class, ErrorClass::Fatal);
        // The header wins, without the URL after `:`; `Message` is read too.
        let e = CallError::from_answer(
            400,
            Some("ProvisionedThroughputExceededException:http://internal.amazon.com/coral/"),
            br#"{"__type":"Other","Message":"Rate exceeded"}"#,
        );
        assert_eq!(e.code, "ProvisionedThroughputExceededException");
        assert_eq!(e.message, "Rate exceeded");
        assert_eq!(e.class, ErrorClass::Retryable);
        // An XML error document (moto, proxies).
        let e = CallError::from_answer(
            403,
            None,
            b"<ErrorResponse><Error><Code>AccessDenied</Code><Message>not allowed</Message></Error></ErrorResponse>",
        );
        assert_eq!(
            (e.code.as_str(), e.message.as_str()),
            ("AccessDenied", "not allowed")
        );
        assert_eq!(e.class, ErrorClass::Fatal);
        assert!(e.is_access_denied());
        // Nothing readable: the status, and the start of the body without secrets.
        let e = CallError::from_answer(
            503,
            None,
            b"upstream unavailable\nThe Canonical String for this request should have been",
        );
        assert_eq!(e.code, "HTTP503");
        assert_eq!(e.message, "upstream unavailable");
        assert_eq!(e.class, ErrorClass::Retryable);
    }

    #[test]
    fn call_classification() {
        assert_eq!(
            classify_call("AccessDeniedException", Some(400)),
            ErrorClass::Fatal
        );
        assert_eq!(
            classify_call("ResourceNotFoundException", Some(400)),
            ErrorClass::Fatal
        );
        assert_eq!(
            classify_call("ProvisionedThroughputExceededException", Some(400)),
            ErrorClass::Retryable
        );
        assert_eq!(
            classify_call("ThrottlingException", Some(400)),
            ErrorClass::Retryable
        );
        assert_eq!(
            classify_call("SignatureDoesNotMatch", Some(403)),
            ErrorClass::Fatal
        );
        assert_eq!(classify_call("HTTP503", Some(503)), ErrorClass::Retryable);
        assert_eq!(
            classify_call("ExpiredTokenException", Some(400)),
            ErrorClass::Retryable
        );
    }

    #[test]
    fn xml_error_documents_are_read() {
        let body = "<ErrorResponse><Error><Code>SignatureDoesNotMatch</Code>\
                    <Message>The request signature we calculated does not match</Message></Error></ErrorResponse>";
        assert_eq!(xml_tag(body, "Code"), Some("SignatureDoesNotMatch"));
        assert_eq!(
            xml_tag(body, "Message"),
            Some("The request signature we calculated does not match")
        );
        assert_eq!(xml_tag("{}", "Code"), None);
    }

    #[test]
    fn sanitize_keeps_one_short_line_without_signature_details() {
        let m = "The request signature we calculated does not match the signature you provided. \
                 The Canonical String for this request should have been\n'POST\n/\nx-amz-security-token:SECRET'";
        let s = sanitize(m);
        assert!(!s.contains("SECRET") && !s.contains("Canonical"), "{s}");
        assert!(s.starts_with("The request signature"));
        assert_eq!(sanitize(&"y".repeat(1000)).chars().count(), 301);
    }

    #[test]
    fn hints_say_what_to_fix() {
        let e = |code: &str, status| CallError {
            code: code.into(),
            status,
            message: String::new(),
            class: ErrorClass::Fatal,
            sts_action: None,
        };
        assert!(e("AccessDeniedException", Some(400))
            .hint("logs", "PutRecords")
            .contains("kinesis:PutRecords on stream `logs`"));
        assert!(e("ResourceNotFoundException", Some(400))
            .hint("logs", "PutRecords")
            .contains("does not exist"));
        assert!(e("KMSAccessDeniedException", Some(400))
            .hint("logs", "PutRecords")
            .contains("kms:GenerateDataKey"));
        assert!(e("HTTP403", Some(403))
            .hint("logs", "PutRecords")
            .contains("credentials were refused"));
        let sts = |action| CallError {
            sts_action: Some(action),
            ..e("AccessDenied", Some(403))
        };
        let hint = sts("sts:AssumeRole").hint("logs", "PutRecords");
        assert!(
            hint.contains("sts:AssumeRole") && !hint.contains("kinesis:"),
            "{hint}"
        );
        assert!(sts("sts:AssumeRoleWithWebIdentity")
            .hint("logs", "PutRecords")
            .contains("trust policy must allow sts:AssumeRoleWithWebIdentity"));
        assert!(
            !sts("sts:AssumeRole").is_access_denied(),
            "not a Kinesis refusal"
        );
    }
}
