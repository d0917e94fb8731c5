//! Options of the Kafka source (`type = "kafka"` under `[[sources]]`), in Fluent Bit
//! `in_kafka`'s names where it has them, their checks, and the librdkafka consumer properties
//! they turn into.

use serde::Deserialize;

use crate::config::field::FieldError;
use crate::config::units::ByteSize;
use crate::kafka::options::{self, check_topics, MskIamOptions, MskIamSettings, StringList};

/// `type = "kafka"` under `[[sources]]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaSourceConfig {
    /// Bootstrap brokers, `host:port`: a comma-separated string or an array. Required unless
    /// `rdkafka."bootstrap.servers"` is given.
    #[serde(default)]
    pub brokers: Option<StringList>,
    /// Topics to consume: one name, a comma-separated list, or an array. Required.
    #[serde(default)]
    pub topics: Option<StringList>,
    /// Consumer group. Default `logferry`.
    #[serde(default = "default_group_id")]
    pub group_id: String,
    /// Kafka client id. Default `logferry`.
    #[serde(default = "default_client_id")]
    pub client_id: String,
    /// Tag of the records; `${topic}` is replaced by the message's topic. Default `kafka`.
    #[serde(default = "default_tag")]
    pub tag: String,
    /// `json`: the message value is parsed as a JSON object, which becomes the record (a value
    /// that is not a JSON object is a poison message, see `invalid_tag`). `raw` or `none`
    /// (default, as Fluent Bit): the value as a string under `log_key`.
    #[serde(default = "default_format")]
    pub format: String,
    /// Key of the message value with `raw`/`none`, and of a poison message's value. Default
    /// `log`.
    #[serde(default = "default_log_key")]
    pub log_key: String,
    /// Adds the message's Kafka metadata (`topic`, `partition`, `offset`, `key`, `timestamp` in
    /// ms) as a map under this key. Default: none.
    #[serde(default)]
    pub metadata_key: Option<String>,
    /// Tag of poison messages (not a JSON object with `format = "json"`), delivered as
    /// `{log_key: value}`: route this tag to a file sink to keep them aside (a dead-letter
    /// file). Default: poison messages keep the normal tag.
    #[serde(default)]
    pub invalid_tag: Option<String>,
    /// The longest a consumed message waits to be routed with others, in ms. Default 500.
    #[serde(default = "default_poll_ms")]
    pub poll_ms: u64,
    /// The most message bytes routed together (one batch, one commit step). Default 4MiB.
    #[serde(default = "default_buffer_max_size")]
    pub buffer_max_size: ByteSize,
    /// librdkafka consumer properties, passed through as given; they override logferry's
    /// defaults. `[sources.rdkafka]` with quoted names: `"auto.offset.reset" = "latest"`.
    #[serde(default)]
    pub rdkafka: toml::Table,
    /// Authenticate to Amazon MSK with IAM (SASL/OAUTHBEARER with SigV4-signed tokens), as the
    /// Kafka sink does. Default false.
    #[serde(default)]
    pub aws_msk_iam: bool,
    /// The MSK cluster's ARN: the region tokens are signed for is read from it.
    #[serde(default)]
    pub aws_msk_iam_cluster_arn: Option<String>,
    /// The cluster's AWS region, when neither the cluster ARN nor the broker host names tell it.
    #[serde(default)]
    pub region: Option<String>,
    /// A role to assume (STS AssumeRole) for MSK IAM, with a stable session name.
    #[serde(default)]
    pub role_arn: Option<String>,
    /// STS endpoint URL for `role_arn` (VPC endpoints, tests).
    #[serde(default)]
    pub sts_endpoint: Option<String>,
}

fn default_group_id() -> String {
    "logferry".into()
}
fn default_client_id() -> String {
    "logferry".into()
}
fn default_tag() -> String {
    "kafka".into()
}
fn default_format() -> String {
    "none".into()
}
fn default_log_key() -> String {
    "log".into()
}
fn default_poll_ms() -> u64 {
    500
}
fn default_buffer_max_size() -> ByteSize {
    ByteSize::mib(4)
}

/// librdkafka consumer defaults; every one can be overridden in `[sources.rdkafka]`.
///
/// - `enable.auto.commit = false`, `enable.auto.offset.store = false`: offsets are committed
///   by the source itself, only once every sink delivered the records before them.
/// - `auto.offset.reset = earliest`: a new group starts from the beginning of each partition
///   (nothing is skipped).
/// - `queued.max.messages.kbytes = 16384`: librdkafka prefetches at most 16 MiB per
///   consumer, so a paused pipeline holds little.
pub const DEFAULT_PROPERTIES: &[(&str, &str)] = &[
    ("enable.auto.commit", "false"),
    ("enable.auto.offset.store", "false"),
    ("auto.offset.reset", "earliest"),
    ("enable.partition.eof", "false"),
    ("queued.max.messages.kbytes", "16384"),
];

/// How the message value becomes a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ValueFormat {
    Json,
    Raw,
}

/// The validated source settings.
#[derive(Debug, Clone)]
pub struct KafkaSourceSettings {
    pub topics: Vec<String>,
    pub tag: String,
    pub format: ValueFormat,
    pub log_key: String,
    pub metadata_key: Option<String>,
    pub invalid_tag: Option<String>,
    pub poll: std::time::Duration,
    pub buffer_max_size: usize,
    /// Final librdkafka properties: defaults, then the options, then MSK IAM, then `rdkafka`.
    pub properties: Vec<(String, String)>,
    pub msk_iam: Option<MskIamSettings>,
    pub warnings: Vec<String>,
}

impl KafkaSourceSettings {
    /// The value of a property as it will be given to librdkafka (any alias).
    pub fn property(&self, name: &str) -> Option<&str> {
        options::property(&self.properties, name)
    }
}

impl KafkaSourceConfig {
    /// Checks every option; all problems are reported, not just the first.
    pub fn validate(&self) -> Result<KafkaSourceSettings, Vec<FieldError>> {
        let mut problems = Vec::new();
        let mut warnings = Vec::new();
        let topics = self
            .topics
            .as_ref()
            .map(StringList::items)
            .unwrap_or_default();
        if topics.is_empty() {
            problems.push(FieldError::new(
                "topics",
                "missing: name the topic(s) to consume, e.g. topics = \"logs\"",
            ));
        }
        check_topics("topics", &topics, &mut problems);
        let format = match self.format.as_str() {
            "json" => Some(ValueFormat::Json),
            "raw" | "none" => Some(ValueFormat::Raw),
            other => {
                problems.push(FieldError::new(
                    "format",
                    format!("`{other}` is not one of json, raw, none"),
                ));
                None
            }
        };
        for (key, value) in [
            ("tag", Some(&self.tag)),
            ("group_id", Some(&self.group_id)),
            ("client_id", Some(&self.client_id)),
            ("log_key", Some(&self.log_key)),
            ("metadata_key", self.metadata_key.as_ref()),
            ("invalid_tag", self.invalid_tag.as_ref()),
        ] {
            if value.is_some_and(|v| v.is_empty()) {
                problems.push(FieldError::new(key, "must not be empty"));
            }
        }
        if self.poll_ms == 0 {
            problems.push(FieldError::new(
                "poll_ms",
                "must be above 0 (the longest a message waits to be routed, in ms)",
            ));
        }
        if self.buffer_max_size.bytes() < 1024 {
            problems.push(FieldError::new(
                "buffer_max_size",
                "must be at least 1KiB (the default is 4MiB)",
            ));
        }

        let user = options::user_properties(&self.rdkafka, &mut problems);
        let brokers = self
            .brokers
            .as_ref()
            .map(StringList::items)
            .unwrap_or_default();
        let user_bootstrap = options::user_bootstrap(&user);
        if brokers.is_empty() && user_bootstrap.is_none() {
            problems.push(FieldError::new(
                "brokers",
                "missing: the bootstrap brokers, e.g. brokers = \"b-1.example:9098,b-2.example:9098\"",
            ));
        }
        for (key, _) in &user {
            if matches!(
                options::canonical(key),
                "enable.auto.commit" | "enable.auto.offset.store"
            ) {
                problems.push(FieldError::new(
                    "rdkafka",
                    format!(
                        "\"{key}\" cannot be set: the source commits offsets itself, only once \
                         the records were delivered"
                    ),
                ));
            }
        }
        let msk_iam = MskIamOptions {
            enabled: self.aws_msk_iam,
            cluster_arn: self.aws_msk_iam_cluster_arn.as_deref(),
            region: self.region.as_deref(),
            role_arn: self.role_arn.as_deref(),
            sts_endpoint: self.sts_endpoint.as_deref(),
        }
        .resolve(&brokers, user_bootstrap.as_deref(), &mut problems);

        let mut properties: Vec<(String, String)> = DEFAULT_PROPERTIES
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        properties.push(("group.id".into(), self.group_id.clone()));
        properties.push(("client.id".into(), self.client_id.clone()));
        if !brokers.is_empty() {
            properties.push(("bootstrap.servers".into(), brokers.join(",")));
        }
        if msk_iam.is_some() {
            options::add_msk_iam_properties(&mut properties, &user, &mut warnings, &mut problems);
        }
        options::merge_user_properties(&mut properties, user);
        options::check_with_librdkafka(&properties, &mut problems);

        match format {
            Some(format) if problems.is_empty() => Ok(KafkaSourceSettings {
                topics,
                tag: self.tag.clone(),
                format,
                log_key: self.log_key.clone(),
                metadata_key: self.metadata_key.clone(),
                invalid_tag: self.invalid_tag.clone(),
                poll: std::time::Duration::from_millis(self.poll_ms),
                buffer_max_size: self.buffer_max_size.as_usize(),
                properties,
                msk_iam,
                warnings,
            }),
            _ => Err(problems),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<KafkaSourceSettings, Vec<String>> {
        let config: KafkaSourceConfig = toml::from_str(text).map_err(|e| vec![e.to_string()])?;
        config
            .validate()
            .map_err(|p| p.iter().map(|f| f.key.clone()).collect())
    }

    #[test]
    fn defaults_commit_only_by_hand_and_start_at_the_beginning() {
        let s = parse("brokers = \"a:9092\"\ntopics = [\"logs\", \"audit\"]").unwrap();
        assert_eq!(s.topics, ["logs", "audit"]);
        assert_eq!(s.property("enable.auto.commit"), Some("false"));
        assert_eq!(s.property("enable.auto.offset.store"), Some("false"));
        assert_eq!(s.property("auto.offset.reset"), Some("earliest"));
        assert_eq!(s.property("group.id"), Some("logferry"));
        assert_eq!(s.property("bootstrap.servers"), Some("a:9092"));
        assert_eq!(s.format, ValueFormat::Raw);
        assert_eq!(s.tag, "kafka");
        assert!(s.msk_iam.is_none());
    }

    #[test]
    fn problems_name_their_keys() {
        let keys = parse(
            "topics = \"a b\"\nformat = \"xml\"\npoll_ms = 0\nrole_arn = \"arn:aws:iam::1:role/r\"\n\
             [rdkafka]\n\"enable.auto.commit\" = true\n\"no.such.property\" = 1",
        )
        .unwrap_err();
        for key in [
            "topics", "format", "poll_ms", "brokers", "role_arn", "rdkafka",
        ] {
            assert!(keys.iter().any(|k| k == key), "{key} in {keys:?}");
        }
    }

    #[test]
    fn msk_iam_takes_the_sinks_options() {
        let s = parse(
            "brokers = \"b-1.logs.abc.c2.kafka.eu-west-1.amazonaws.com:9098\"\ntopics = \"logs\"\n\
             aws_msk_iam = true",
        )
        .unwrap();
        assert_eq!(s.msk_iam.as_ref().unwrap().target.region, "eu-west-1");
        assert_eq!(s.property("sasl.mechanism"), Some("OAUTHBEARER"));
        assert_eq!(s.property("security.protocol"), Some("SASL_SSL"));
        let keys = parse("brokers = \"localhost:9092\"\ntopics = \"logs\"\naws_msk_iam = true")
            .unwrap_err();
        assert_eq!(keys, ["aws_msk_iam"]);
    }
}
