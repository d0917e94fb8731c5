//! What the Kafka sink and the Kafka source share.
//!
//! - [`options`]: broker and topic lists, `[rdkafka]` properties, and the MSK IAM options with
//!   their checks.
//! - [`auth`]: AWS credentials and MSK IAM tokens at run time; `logferry msk-token`.
//! - [`msk_iam`]: the MSK IAM token itself (a SigV4 presigned URL) and region resolution.

pub mod auth;
pub mod msk_iam;
pub mod options;
