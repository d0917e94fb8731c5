//! What the Kafka sink and the Kafka source share.
//!
//! - [`options`]: broker and topic lists, `[rdkafka]` properties, and the MSK IAM options with
//!   their checks.
//! - [`auth`]: AWS credentials and MSK IAM tokens at run time; `logferry msk-token`.
//! - [`msk_iam`]: the MSK IAM token itself (a SigV4 presigned URL) and region resolution.

pub mod auth;
pub mod msk_iam;
pub mod options;

use rdkafka::config::RDKafkaLogLevel;

/// The error and its causes on one line (SDK and HTTP client errors keep the useful part in
/// their sources): for credential failures and schema registry requests.
pub(crate) fn error_chain(error: &dyn std::error::Error) -> String {
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

/// Which side of logferry a librdkafka client serves: names the component in its log lines.
#[derive(Debug, Clone, Copy)]
pub enum Role {
    Sink,
    Source,
}

/// Forwards one of librdkafka's own log lines to ours (target `librdkafka`), at its level,
/// naming the sink or source it belongs to.
pub fn forward_log(role: Role, name: &str, level: RDKafkaLogLevel, facility: &str, message: &str) {
    macro_rules! at_level {
        ($($field:tt)+) => {
            match level {
                RDKafkaLogLevel::Emerg
                | RDKafkaLogLevel::Alert
                | RDKafkaLogLevel::Critical
                | RDKafkaLogLevel::Error => {
                    tracing::error!(target: "librdkafka", $($field)+, facility, "{message}")
                }
                RDKafkaLogLevel::Warning => {
                    tracing::warn!(target: "librdkafka", $($field)+, facility, "{message}")
                }
                RDKafkaLogLevel::Notice | RDKafkaLogLevel::Info => {
                    tracing::info!(target: "librdkafka", $($field)+, facility, "{message}")
                }
                RDKafkaLogLevel::Debug => {
                    tracing::debug!(target: "librdkafka", $($field)+, facility, "{message}")
                }
            }
        };
    }
    match role {
        Role::Sink => at_level!(sink = %name),
        Role::Source => at_level!(source = %name),
    }
}
