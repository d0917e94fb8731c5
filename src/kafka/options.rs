//! Options the Kafka sink and the Kafka source share, and their checks: broker and topic lists,
//! `[rdkafka]` properties (with librdkafka's aliases), topic names, and the MSK IAM options
//! (`aws_msk_iam`, `aws_msk_iam_cluster_arn`, `region`, `role_arn`, `sts_endpoint`) with the
//! librdkafka properties they imply.

use rdkafka::ClientConfig;
use serde::Deserialize;

use super::msk_iam::{resolve_target, MskIamError, MskTarget};
use crate::config::field::FieldError;

/// One string, a comma-separated string, or an array of strings.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum StringList {
    One(String),
    Many(Vec<String>),
}

impl StringList {
    /// The non-empty items, trimmed, commas splitting every string.
    pub fn items(&self) -> Vec<String> {
        let parts: Vec<&str> = match self {
            StringList::One(s) => s.split(',').collect(),
            StringList::Many(v) => v.iter().flat_map(|s| s.split(',')).collect(),
        };
        parts
            .into_iter()
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect()
    }
}

/// librdkafka's alternative names for properties logferry sets, so that a user setting either
/// name replaces the default (librdkafka would otherwise see both, in no defined order).
const ALIASES: &[(&str, &str)] = &[
    ("acks", "request.required.acks"),
    ("compression.type", "compression.codec"),
    ("linger.ms", "queue.buffering.max.ms"),
    ("bootstrap.servers", "metadata.broker.list"),
    ("sasl.mechanism", "sasl.mechanisms"),
];

/// The canonical name of a property (its first name in [`ALIASES`], or itself).
pub fn canonical(name: &str) -> &str {
    ALIASES
        .iter()
        .find(|(canonical, alias)| name == *canonical || name == *alias)
        .map(|(canonical, _)| *canonical)
        .unwrap_or(name)
}

/// Properties that would break MSK IAM when set together with `aws_msk_iam = true`.
const MSK_IAM_CONFLICTS: &[(&str, &str)] = &[
    (
        "sasl.oauthbearer.method",
        "MSK IAM tokens are made by logferry, not by librdkafka's OIDC client",
    ),
    (
        "enable.sasl.oauthbearer.unsecure.jwt",
        "MSK IAM needs signed tokens, not librdkafka's unsecured test JWTs",
    ),
    (
        "sasl.oauthbearer.config",
        "MSK IAM tokens are made by logferry and take no librdkafka token config",
    ),
];

/// The longest legal Kafka topic name.
pub const MAX_TOPIC_LEN: usize = 249;

/// True for names Kafka accepts as topics: 1..=249 of `[a-zA-Z0-9._-]`, not `.` or `..`.
pub fn is_valid_topic(name: &[u8]) -> bool {
    !name.is_empty()
        && name.len() <= MAX_TOPIC_LEN
        && name != b"."
        && name != b".."
        && name
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// Reports every topic of `topics` that Kafka would refuse, under `key`.
pub fn check_topics(key: &str, topics: &[String], problems: &mut Vec<FieldError>) {
    for topic in topics {
        if !is_valid_topic(topic.as_bytes()) {
            problems.push(FieldError::new(
                key,
                format!(
                    "`{topic}` is not a valid Kafka topic name (1 to {MAX_TOPIC_LEN} of \
                     a-z A-Z 0-9 . _ -)"
                ),
            ));
        }
    }
}

/// What MSK IAM needs at run time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MskIamSettings {
    pub target: MskTarget,
    pub role_arn: Option<String>,
    pub sts_endpoint: Option<String>,
}

/// The MSK IAM options of a Kafka sink or source, as written.
pub struct MskIamOptions<'a> {
    pub enabled: bool,
    pub cluster_arn: Option<&'a str>,
    pub region: Option<&'a str>,
    pub role_arn: Option<&'a str>,
    pub sts_endpoint: Option<&'a str>,
}

impl MskIamOptions<'_> {
    /// The MSK IAM settings when `aws_msk_iam = true` (`None` otherwise, or on a problem, which
    /// is pushed with its key). `brokers` and `user_bootstrap` (an `[rdkafka]
    /// "bootstrap.servers"`) are where the region may be read from.
    pub fn resolve(
        &self,
        brokers: &[String],
        user_bootstrap: Option<&str>,
        problems: &mut Vec<FieldError>,
    ) -> Option<MskIamSettings> {
        if !self.enabled {
            for (key, value) in [
                ("aws_msk_iam_cluster_arn", self.cluster_arn),
                ("role_arn", self.role_arn),
                ("sts_endpoint", self.sts_endpoint),
            ] {
                if value.is_some() {
                    problems.push(FieldError::new(
                        key,
                        "only applies with aws_msk_iam = true; set that too, or remove this",
                    ));
                }
            }
            return None;
        }
        let mut hosts: Vec<&str> = brokers.iter().map(String::as_str).collect();
        hosts.extend(user_bootstrap);
        let target = match resolve_target(self.cluster_arn, &hosts, self.region) {
            Ok(target) => target,
            Err(e) => {
                let key = match &e {
                    MskIamError::InvalidClusterArn { .. } => "aws_msk_iam_cluster_arn",
                    MskIamError::InvalidRegion(_) => "region",
                    _ => "aws_msk_iam",
                };
                let mut message = e.to_string();
                if matches!(e, MskIamError::NoRegion) {
                    message.push_str(" with `region = \"<region>\"`");
                }
                problems.push(FieldError::new(key, message));
                return None;
            }
        };
        if let Some(arn) = self.role_arn {
            if !arn.starts_with("arn:") || !arn.contains(":role/") {
                problems.push(FieldError::new(
                    "role_arn",
                    format!("`{arn}` is not a role ARN (arn:aws:iam::<account>:role/<name>)"),
                ));
            }
        }
        if let Some(endpoint) = self.sts_endpoint {
            if !(endpoint.starts_with("https://") || endpoint.starts_with("http://")) {
                problems.push(FieldError::new(
                    "sts_endpoint",
                    format!("`{endpoint}` is not a URL (https://sts.<region>.amazonaws.com)"),
                ));
            }
            if self.role_arn.is_none() {
                problems.push(FieldError::new(
                    "sts_endpoint",
                    "only applies with role_arn (the role to assume through STS)",
                ));
            }
        }
        Some(MskIamSettings {
            target,
            role_arn: self.role_arn.map(str::to_string),
            sts_endpoint: self.sts_endpoint.map(str::to_string),
        })
    }
}

/// `[rdkafka]` as (name, value) strings, in file order; values that are not scalars are
/// reported.
pub fn user_properties(
    table: &toml::Table,
    problems: &mut Vec<FieldError>,
) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for (key, value) in table {
        let text = match value {
            toml::Value::String(s) => s.clone(),
            toml::Value::Integer(i) => i.to_string(),
            toml::Value::Float(f) => f.to_string(),
            toml::Value::Boolean(b) => b.to_string(),
            _ => {
                problems.push(FieldError::new(
                    "rdkafka",
                    format!(
                        "\"{key}\" must be a string, number or boolean (librdkafka \
                         properties are flat; quote dotted names: \"{key}\" = ...)"
                    ),
                ));
                continue;
            }
        };
        out.push((key.clone(), text));
    }
    out
}

/// The `bootstrap.servers` given in `[rdkafka]` (under any alias).
pub fn user_bootstrap(user: &[(String, String)]) -> Option<String> {
    user.iter()
        .find(|(k, _)| canonical(k) == "bootstrap.servers")
        .map(|(_, v)| v.clone())
}

/// With MSK IAM: adds SASL_SSL and OAUTHBEARER to `properties`, and checks the user's
/// properties against them (a conflicting one is a problem, a plaintext override a warning).
pub fn add_msk_iam_properties(
    properties: &mut Vec<(String, String)>,
    user: &[(String, String)],
    warnings: &mut Vec<String>,
    problems: &mut Vec<FieldError>,
) {
    properties.push(("security.protocol".into(), "SASL_SSL".into()));
    properties.push(("sasl.mechanism".into(), "OAUTHBEARER".into()));
    for (key, value) in user {
        match canonical(key) {
            "security.protocol" => warnings.push(format!(
                "rdkafka.\"{key}\" = \"{value}\" overrides SASL_SSL, which MSK IAM \
                 always uses in AWS; only do this for local tests"
            )),
            "sasl.mechanism" if !value.eq_ignore_ascii_case("OAUTHBEARER") => {
                problems.push(FieldError::new(
                    "rdkafka",
                    format!(
                        "\"{key}\" = \"{value}\" conflicts with aws_msk_iam, which \
                         authenticates with OAUTHBEARER; remove it"
                    ),
                ))
            }
            name => {
                if let Some((_, why)) = MSK_IAM_CONFLICTS.iter().find(|(k, _)| *k == name) {
                    problems.push(FieldError::new(
                        "rdkafka",
                        format!("\"{key}\" conflicts with aws_msk_iam: {why}; remove it"),
                    ));
                }
            }
        }
    }
}

/// Puts the user's properties last, each replacing logferry's value of the same property
/// (under any alias).
pub fn merge_user_properties(properties: &mut Vec<(String, String)>, user: Vec<(String, String)>) {
    for (key, value) in user {
        let name = canonical(&key).to_string();
        properties.retain(|(k, _)| canonical(k) != name);
        properties.push((key, value));
    }
}

/// librdkafka knows its properties best: lets it check names and values now, so that a typo is
/// a config error with a line number rather than a failure at start-up.
pub fn check_with_librdkafka(properties: &[(String, String)], problems: &mut Vec<FieldError>) {
    let mut probe = ClientConfig::new();
    for (key, value) in properties {
        probe.set(key, value);
    }
    if let Err(e) = probe.create_native_config() {
        problems.push(FieldError::new(
            "rdkafka",
            format!("librdkafka refused the configuration: {e}"),
        ));
    }
}

/// The value of a property in `properties` (any alias).
pub fn property<'a>(properties: &'a [(String, String)], name: &str) -> Option<&'a str> {
    let name = canonical(name);
    properties
        .iter()
        .find(|(k, _)| canonical(k) == name)
        .map(|(_, v)| v.as_str())
}

/// The librdkafka client configuration of `properties`, with `ssl.ca.location` from
/// `SSL_CERT_FILE` / `SSL_CERT_DIR` when the config names no CA ([`ca_from_environment`]).
pub fn client_config(properties: &[(String, String)]) -> ClientConfig {
    let mut config = ClientConfig::new();
    for (key, value) in properties {
        config.set(key, value);
    }
    match ca_from_environment(properties, &|name| std::env::var(name).ok()) {
        Some(CaFromEnvironment::Location { var, path }) => {
            tracing::info!(ca = %path, "kafka TLS: CA certificates from {var} (ssl.ca.location                 is not set)");
            config.set("ssl.ca.location", path);
        }
        Some(CaFromEnvironment::Missing { var, path }) => {
            tracing::warn!(ca = %path, "kafka TLS: {var} names a path that does not exist;                 librdkafka looks for CA certificates in the usual places instead");
        }
        None => {}
    }
    config
}

/// The CA certificates the environment names for librdkafka's TLS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CaFromEnvironment {
    /// `var` names `path`, which exists: it becomes `ssl.ca.location`.
    Location { var: &'static str, path: String },
    /// `var` names `path`, which does not exist: left alone.
    Missing { var: &'static str, path: String },
}

/// Where librdkafka should find CA certificates when the config does not say: `SSL_CERT_FILE`,
/// else `SSL_CERT_DIR` (one directory), as OpenSSL's default paths read them. Only for TLS
/// (`security.protocol` `SSL` or `SASL_SSL`) and only when none of `ssl.ca.location`,
/// `ssl.ca.pem` and `ssl.ca.certificate.stores` is set.
///
/// Needed because librdkafka linked with a static OpenSSL (the container image, the Lambda
/// zips) does not ask OpenSSL for its default paths when it finds a bundle at one of the
/// distributions' usual locations (`/etc/ssl/certs/ca-certificates.crt`, ...): without this,
/// `SSL_CERT_FILE` would be honoured by the AWS SDK (rustls) but not by the Kafka client.
pub fn ca_from_environment(
    properties: &[(String, String)],
    env: &dyn Fn(&str) -> Option<String>,
) -> Option<CaFromEnvironment> {
    let tls = property(properties, "security.protocol")
        .is_some_and(|p| p.eq_ignore_ascii_case("ssl") || p.eq_ignore_ascii_case("sasl_ssl"));
    let named = ["ssl.ca.location", "ssl.ca.pem", "ssl.ca.certificate.stores"]
        .iter()
        .any(|name| property(properties, name).is_some());
    if !tls || named {
        return None;
    }
    let (var, path) = ["SSL_CERT_FILE", "SSL_CERT_DIR"]
        .into_iter()
        .find_map(|var| env(var).filter(|v| !v.is_empty()).map(|v| (var, v)))?;
    // SSL_CERT_DIR may list several directories (`a:b`); ssl.ca.location takes one.
    if var == "SSL_CERT_DIR" && path.contains(':') {
        return None;
    }
    if std::path::Path::new(&path).exists() {
        Some(CaFromEnvironment::Location { var, path })
    } else {
        Some(CaFromEnvironment::Missing { var, path })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn props(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn ssl_cert_file_becomes_the_ca_location_of_tls_clients_that_name_none() {
        let dir = tempfile::tempdir().unwrap();
        let bundle = dir.path().join("ca.pem");
        std::fs::write(&bundle, "").unwrap();
        let bundle = bundle.display().to_string();
        let certs = dir.path().display().to_string();
        let env = |file: Option<&str>, certs_dir: Option<&str>| {
            let (file, certs_dir) = (file.map(str::to_string), certs_dir.map(str::to_string));
            move |name: &str| match name {
                "SSL_CERT_FILE" => file.clone(),
                "SSL_CERT_DIR" => certs_dir.clone(),
                _ => None,
            }
        };
        let tls = props(&[("security.protocol", "SASL_SSL")]);
        assert_eq!(
            ca_from_environment(&tls, &env(Some(&bundle), Some(&certs))),
            Some(CaFromEnvironment::Location {
                var: "SSL_CERT_FILE",
                path: bundle.clone()
            })
        );
        assert_eq!(
            ca_from_environment(
                &props(&[("security.protocol", "ssl")]),
                &env(Some(""), Some(&certs))
            ),
            Some(CaFromEnvironment::Location {
                var: "SSL_CERT_DIR",
                path: certs.clone()
            })
        );
        assert_eq!(
            ca_from_environment(&tls, &env(None, Some("/a:/b"))),
            None,
            "a list of directories is not one location"
        );
        assert_eq!(
            ca_from_environment(&tls, &env(Some("/nonexistent/ca.pem"), None)),
            Some(CaFromEnvironment::Missing {
                var: "SSL_CERT_FILE",
                path: "/nonexistent/ca.pem".into()
            })
        );
        assert_eq!(ca_from_environment(&tls, &env(None, None)), None);
        // Not TLS, or a CA the config names: left to the config.
        for properties in [
            props(&[]),
            props(&[("security.protocol", "SASL_PLAINTEXT")]),
            props(&[("security.protocol", "SSL"), ("ssl.ca.location", "probe")]),
            props(&[("security.protocol", "SSL"), ("ssl.ca.pem", "-----BEGIN")]),
        ] {
            assert_eq!(
                ca_from_environment(&properties, &env(Some(&bundle), None)),
                None,
                "{properties:?}"
            );
        }
        let config = client_config(&props(&[
            ("security.protocol", "SSL"),
            ("ssl.ca.location", &bundle),
        ]));
        assert_eq!(config.get("ssl.ca.location"), Some(bundle.as_str()));
    }
}
