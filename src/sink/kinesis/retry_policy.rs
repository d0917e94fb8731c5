//! What a Kinesis error means and how long to wait before trying again: every Kinesis error
//! code is classified here, once — retryable or fatal (an operator must act), which shared
//! `retries_total` / `auth_failures_total` reason it counts under — together with the backoffs
//! of failed entries and calls and when repeated failures make the sink unhealthy.

use std::time::Duration;

use crate::metrics::retry_reason as reason;
use crate::sink::backoff::Backoff;

/// Throttling: the shard, the stream or an account limit has no capacity for now.
const THROTTLING: &[&str] = &[
    "ProvisionedThroughputExceededException",
    "ThrottlingException",
    "Throttling",
    "LimitExceededException",
    "KMSThrottlingException",
    "SlowDown",
];
/// A transient fault on the service's side.
const SERVICE_FAULT: &[&str] = &[
    "InternalFailure",
    "InternalServerError",
    "ServiceUnavailable",
    "ServiceUnavailableException",
];
/// The service timed the request out.
const SERVICE_TIMEOUT: &[&str] = &["RequestTimeout", "RequestTimeoutException"];
/// The credentials expired (they are refreshed before the next attempt).
const EXPIRED_CREDENTIALS: &[&str] = &["ExpiredToken", "ExpiredTokenException", "RequestExpired"];
/// The credentials were refused: unknown key, wrong secret, broken signature.
pub(super) const REFUSED_CREDENTIALS: &[&str] = &[
    "UnrecognizedClientException",
    "InvalidClientTokenId",
    "InvalidSignatureException",
    "SignatureDoesNotMatch",
    "IncompleteSignature",
    "MissingAuthenticationToken",
];
/// Valid credentials that are not allowed to do this.
pub(super) const NOT_PERMITTED: &[&str] =
    &["AccessDeniedException", "AccessDenied", "NotAuthorized"];

/// Delays between retries of throttled or failed entries, and of failed calls.
pub(crate) const RETRY_BACKOFF: Backoff =
    Backoff::new(Duration::from_millis(100), Duration::from_secs(10));

/// Delays while a configuration error (permissions, missing stream) lasts: slow, so a broken
/// sink does not hammer the API or flood the log.
pub(super) const FATAL_BACKOFF: Backoff =
    Backoff::new(Duration::from_secs(1), Duration::from_secs(60));

/// Consecutive failed calls (of the retryable kind) before the sink reports itself unhealthy.
pub(crate) const UNHEALTHY_AFTER: u32 = 3;

/// A delay for configuration errors: half the ceiling plus jitter, so never near zero.
pub(crate) fn slow_delay(attempt: u32) -> Duration {
    let ceiling = FATAL_BACKOFF.ceiling(attempt);
    ceiling / 2 + FATAL_BACKOFF.delay(attempt) / 2
}

/// Whether sending the same entry again can succeed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorClass {
    /// Throttling or a transient service fault: retry with backoff.
    Retryable,
    /// A configuration problem (permissions, KMS key, missing stream, invalid request) that
    /// fails the same way until an operator acts: report it loudly, do not retry silently.
    Fatal,
}

/// Classifies a Kinesis error code, per entry or for a whole request.
///
/// PutRecords documents ProvisionedThroughputExceededException and InternalFailure per entry;
/// the KMS, permission and validation codes come from the operation's error list. Unknown codes
/// are retryable: with at-least-once delivery, a bounded retry of an unexpected code is safer
/// than dropping records.
pub fn classify(code: &str) -> ErrorClass {
    const FATAL: &[&str] = &[
        "KMSAccessDeniedException",
        "KMSDisabledException",
        "KMSInvalidStateException",
        "KMSNotFoundException",
        "KMSOptInRequired",
        "AccessDeniedException",
        "ResourceNotFoundException",
        "InvalidArgumentException",
        "ValidationException",
        "UnrecognizedClientException",
        "InvalidSignatureException",
        "IncompleteSignature",
        "MissingAuthenticationToken",
        "InvalidClientTokenId",
        "SerializationException",
        "NotAuthorized",
        "OptInRequired",
    ];
    if FATAL.contains(&code) {
        ErrorClass::Fatal
    } else {
        // ProvisionedThroughputExceededException, InternalFailure, KMSThrottlingException,
        // ThrottlingException, ServiceUnavailable, LimitExceededException, ExpiredToken
        // (credentials refresh), and anything unknown.
        ErrorClass::Retryable
    }
}

/// Whether a per-entry error code is about the record itself (it fails the same way on every
/// attempt and nothing an operator changes in the stream fixes it), as opposed to throttling,
/// a transient fault, or a configuration problem (KMS key, permissions, missing stream) that
/// affects every record and is reported on `/health`. Such records go to the dead-letter file.
pub fn is_record_error(code: &str) -> bool {
    let configuration = code.starts_with("KMS")
        || code.contains("AccessDenied")
        || code.contains("NotFound")
        || code.contains("Signature")
        || code.contains("Token")
        || code.contains("Authoriz")
        || matches!(
            code,
            "UnrecognizedClientException" | "NotAuthorized" | "OptInRequired"
        );
    classify(code) == ErrorClass::Fatal && !configuration
}

/// Classifies a whole-request failure by HTTP status: 5xx and 429 are transient, other 4xx are
/// the request's or the configuration's fault.
pub fn classify_status(status: u16) -> ErrorClass {
    match status {
        429 | 500..=599 => ErrorClass::Retryable,
        400..=499 => ErrorClass::Fatal,
        _ => ErrorClass::Retryable,
    }
}

/// The shared `retries_total` reason of a Kinesis error code (an entry's `ErrorCode`, or a
/// failed call's code and HTTP status).
pub fn retry_reason(code: &str, status: Option<u16>) -> &'static str {
    if THROTTLING.contains(&code) {
        reason::THROTTLED
    } else if SERVICE_FAULT.contains(&code) {
        reason::INTERNAL
    } else if code == "timeout" || SERVICE_TIMEOUT.contains(&code) {
        reason::TIMEOUT
    } else if matches!(code, "dispatch" | "response" | "request") {
        reason::NETWORK
    } else if code == "ResourceNotFoundException" {
        reason::NOT_FOUND
    } else {
        match auth_reason(code, status) {
            Some(auth) => auth,
            None if status.is_some_and(|s| s >= 500) => reason::INTERNAL,
            None => reason::OTHER,
        }
    }
}

/// The `auth_failures_total` reason of a Kinesis error, if it is one: `access_denied` (the
/// credentials are valid but not allowed) or `credentials` (refused, unknown or expired).
pub fn auth_reason(code: &str, status: Option<u16>) -> Option<&'static str> {
    if NOT_PERMITTED.contains(&code) || code == "KMSAccessDeniedException" {
        Some(reason::ACCESS_DENIED)
    } else if REFUSED_CREDENTIALS.contains(&code) || EXPIRED_CREDENTIALS.contains(&code) {
        Some(reason::CREDENTIALS)
    } else if status == Some(403) {
        Some(reason::ACCESS_DENIED)
    } else {
        None
    }
}

/// Codes that mean "try again later" whatever the HTTP status says.
fn retryable_code(code: &str) -> bool {
    [
        THROTTLING,
        SERVICE_FAULT,
        SERVICE_TIMEOUT,
        EXPIRED_CREDENTIALS,
    ]
    .iter()
    .any(|codes| codes.contains(&code))
}

/// Classifies a failed call by code and status.
pub fn classify_call(code: &str, status: Option<u16>) -> ErrorClass {
    if classify(code) == ErrorClass::Fatal {
        return ErrorClass::Fatal;
    }
    if retryable_code(code) {
        return ErrorClass::Retryable;
    }
    status.map_or(ErrorClass::Retryable, classify_status)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classification() {
        for code in [
            "ProvisionedThroughputExceededException",
            "InternalFailure",
            "KMSThrottlingException",
            "ThrottlingException",
            "ServiceUnavailable",
            "SomethingNew",
            "",
        ] {
            assert_eq!(classify(code), ErrorClass::Retryable, "{code}");
        }
        for code in [
            "KMSAccessDeniedException",
            "KMSDisabledException",
            "KMSNotFoundException",
            "KMSInvalidStateException",
            "KMSOptInRequired",
            "AccessDeniedException",
            "ResourceNotFoundException",
            "ValidationException",
        ] {
            assert_eq!(classify(code), ErrorClass::Fatal, "{code}");
        }
        for code in [
            "ValidationException",
            "InvalidArgumentException",
            "SerializationException",
        ] {
            assert!(is_record_error(code), "{code}");
        }
        for code in [
            "ProvisionedThroughputExceededException",
            "InternalFailure",
            "KMSAccessDeniedException",
            "KMSNotFoundException",
            "AccessDeniedException",
            "ResourceNotFoundException",
            "InvalidSignatureException",
            "MissingAuthenticationToken",
            "SomethingNew",
        ] {
            assert!(!is_record_error(code), "{code}");
        }
        assert_eq!(classify_status(500), ErrorClass::Retryable);
        assert_eq!(classify_status(503), ErrorClass::Retryable);
        assert_eq!(classify_status(429), ErrorClass::Retryable);
        assert_eq!(classify_status(400), ErrorClass::Fatal);
        assert_eq!(classify_status(403), ErrorClass::Fatal);
    }

    #[test]
    fn error_codes_map_onto_shared_reasons() {
        let r = |code: &str, status| retry_reason(code, status);
        assert_eq!(
            r("ProvisionedThroughputExceededException", None),
            "throttled"
        );
        assert_eq!(r("KMSThrottlingException", Some(400)), "throttled");
        assert_eq!(r("InternalFailure", None), "internal");
        assert_eq!(r("HTTP502", Some(502)), "internal");
        assert_eq!(r("timeout", None), "timeout");
        assert_eq!(r("dispatch", None), "network");
        assert_eq!(r("AccessDeniedException", Some(400)), "access_denied");
        assert_eq!(r("ExpiredTokenException", Some(400)), "credentials");
        assert_eq!(r("ResourceNotFoundException", Some(400)), "not_found");
        assert_eq!(r("SomethingNew", Some(400)), "other");
        assert_eq!(
            auth_reason("InvalidSignatureException", Some(400)),
            Some("credentials")
        );
        assert_eq!(auth_reason("HTTP403", Some(403)), Some("access_denied"));
        assert_eq!(auth_reason("InternalFailure", Some(500)), None);
    }
}
