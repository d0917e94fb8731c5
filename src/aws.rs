//! AWS credentials shared by the sinks that call AWS (Kinesis, and Kafka through MSK IAM): the
//! aws-config default chain, optionally through STS AssumeRole with `role_arn`, at
//! `sts_endpoint` when given, under a role session name that stays the same across refreshes
//! and restarts (MSK refuses a re-authentication that changes the principal, and CloudTrail
//! reads better with one session name per sink).

use aws_config::sts::AssumeRoleProvider;
use aws_config::{Region, SdkConfig};
use aws_credential_types::provider::SharedCredentialsProvider;

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_names_are_stable_and_valid_for_sts() {
        assert_eq!(session_name("kinesis.0"), "logferry-kinesis.0");
        assert_eq!(session_name("kafka.0"), "logferry-kafka.0");
        assert_eq!(session_name("app logs/é"), "logferry-app-logs--");
        assert_eq!(session_name("to msk/logs"), "logferry-to-msk-logs");
        assert_eq!(session_name(&"x".repeat(100)).len(), 64);
    }
}
