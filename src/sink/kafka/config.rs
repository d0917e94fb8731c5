//! Options of `type = "kafka"` (names follow Fluent Bit's `out_kafka`), their validation, and
//! the librdkafka properties they turn into.
//!
//! Validation happens at config load, so every problem is reported with its file, line and key:
//! topic names, formats, the MSK region (from the cluster ARN, the broker host names or
//! `region`), and every `[sinks.rdkafka]` property, which is checked by librdkafka itself.

use rdkafka::ClientConfig;
use serde::Deserialize;

use super::avro_options::avro_settings;
use super::payload::AvroSettings;
use crate::config::field::FieldError;
use crate::encode::options as encode_options;
use crate::encode::{EncodeOptions, Format, Subsecond, TimeFormat};
use crate::event::KeyPath;
use crate::kafka::options::{self, check_topics, MskIamOptions};
pub use crate::kafka::options::{is_valid_topic, MskIamSettings, StringList};

/// `type = "kafka"`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaConfig {
    /// Bootstrap brokers, `host:port`: a comma-separated string or an array. Required unless
    /// `rdkafka."bootstrap.servers"` is given.
    #[serde(default)]
    pub brokers: Option<StringList>,
    /// Topic(s) to write to: one name, a comma-separated list, or an array. The first one is the
    /// default topic. Required.
    #[serde(default)]
    pub topics: Option<StringList>,
    /// Record key (nested paths as `a->b`) whose value names the topic of that record. A value
    /// that is not one of `topics` (or a record without the key) goes to the first topic, unless
    /// `dynamic_topic` is true. Default: none (every record goes to the first topic).
    #[serde(default)]
    pub topic_key: Option<String>,
    /// With `topic_key`: write to whatever topic the record names, even one not listed in
    /// `topics` (it must exist, or the broker must auto-create it). Default false.
    #[serde(default)]
    pub dynamic_topic: bool,
    /// A static message key for every record. Default: none (records are spread over
    /// partitions by librdkafka's partitioner).
    #[serde(default)]
    pub message_key: Option<String>,
    /// Record key (nested paths as `a->b`) whose value is the message key; records without it
    /// use `message_key`. Records with the same key go to the same partition, in order.
    #[serde(default)]
    pub message_key_field: Option<String>,
    /// `json` (default): the record as a JSON object. `msgpack`: the record as a msgpack map.
    /// `raw`: the value of `log_key` alone, as is.
    #[serde(default = "default_format")]
    pub format: String,
    /// With `raw`: the field to send (default `log`). With `json`/`msgpack`: send only that
    /// field's value instead of the whole record.
    #[serde(default)]
    pub log_key: Option<String>,
    /// Key under which the record's time is added (`json` and `msgpack`). Default
    /// `@timestamp`, as Fluent Bit; `""` adds no time.
    #[serde(default = "default_timestamp_key")]
    pub timestamp_key: String,
    /// How `timestamp_key` is written: `double` (default: seconds with a fraction), `iso8601`
    /// (`2024-05-14T09:30:01.123Z`, UTC, milliseconds), `epoch_ms` (integer milliseconds); also
    /// `epoch`, `iso8601_ns`.
    #[serde(default = "default_timestamp_format")]
    pub timestamp_format: String,
    /// How many times in a row (about one second apart) the sink may find librdkafka's local
    /// queue full before it reports itself unhealthy. Records are never dropped for a full queue:
    /// the sink keeps waiting, and its own buffer pauses the sources. `0`: never report. Default 10.
    #[serde(default = "default_queue_full_retries")]
    pub queue_full_retries: u32,
    /// librdkafka properties, passed through as given; they override logferry's defaults.
    /// `[sinks.rdkafka]` with quoted names: `"compression.type" = "zstd"`.
    #[serde(default)]
    pub rdkafka: toml::Table,
    /// Authenticate to Amazon MSK with IAM (SASL/OAUTHBEARER with SigV4-signed tokens). Default
    /// false.
    #[serde(default)]
    pub aws_msk_iam: bool,
    /// The MSK cluster's ARN: the region tokens are signed for is read from it.
    #[serde(default)]
    pub aws_msk_iam_cluster_arn: Option<String>,
    /// The cluster's AWS region, when neither the cluster ARN nor the broker host names tell it.
    #[serde(default)]
    pub region: Option<String>,
    /// A role to assume (STS AssumeRole) for MSK IAM, with a session name that stays the same
    /// across refreshes. Default: the credentials of the default chain are used directly.
    #[serde(default)]
    pub role_arn: Option<String>,
    /// STS endpoint URL for `role_arn` (VPC endpoints, tests). Default: the regional endpoint.
    #[serde(default)]
    pub sts_endpoint: Option<String>,
    /// `format = "avro"`: the Confluent schema registry, `http(s)://host:port`. Needed unless
    /// both `schema_str`/`schema_file` and `schema_id` are given.
    #[serde(default)]
    pub schema_registry_url: Option<String>,
    /// `format = "avro"`: the Avro record schema (JSON) records are written with.
    #[serde(default)]
    pub schema_str: Option<String>,
    /// `format = "avro"`: a file holding the Avro record schema (instead of `schema_str`).
    #[serde(default)]
    pub schema_file: Option<std::path::PathBuf>,
    /// `format = "avro"`: an existing schema id to write (with a schema: no registry call;
    /// alone: the schema is fetched from the registry by id).
    #[serde(default)]
    pub schema_id: Option<u32>,
    /// `format = "avro"`: the subject to register (or look up) the schema under. Default
    /// `<first topic>-value` (Confluent's topic name strategy).
    #[serde(default)]
    pub subject: Option<String>,
    /// `format = "avro"`: register the schema under `subject` (true, default), or only look
    /// up its id (false: the schema must have been registered before).
    #[serde(default)]
    pub auto_register: Option<bool>,
    /// Basic auth user of the schema registry.
    #[serde(default)]
    pub schema_registry_username: Option<String>,
    /// Basic auth password of the schema registry.
    #[serde(default)]
    pub schema_registry_password: Option<String>,
    /// PEM CA certificate(s) for an `https` schema registry, besides the system's.
    #[serde(default)]
    pub schema_registry_ca_file: Option<std::path::PathBuf>,
}

fn default_format() -> String {
    "json".to_string()
}

fn default_timestamp_key() -> String {
    "@timestamp".to_string()
}

fn default_timestamp_format() -> String {
    "double".to_string()
}

fn default_queue_full_retries() -> u32 {
    10
}

/// librdkafka defaults chosen to not lose data; every one can be overridden in `[sinks.rdkafka]`.
///
/// - `acks = all` and `enable.idempotence = true`: a record counts as delivered only once every
///   in-sync replica has it, and librdkafka's retries cannot duplicate or reorder it.
/// - `message.timeout.ms = 0`: librdkafka retries without a time limit, so records wait through
///   a broker outage instead of failing; the sink's bounded buffer pauses the sources meanwhile.
/// - `compression.type = lz4`, `linger.ms = 10`: cheap compression, small batching delay.
/// - `statistics.interval.ms = 5000`: lets the sink notice that brokers are reachable again
///   (and clear its unhealthy state) even when no records flow.
pub const DEFAULT_PROPERTIES: &[(&str, &str)] = &[
    ("client.id", "logferry"),
    ("acks", "all"),
    ("enable.idempotence", "true"),
    ("message.timeout.ms", "0"),
    ("compression.type", "lz4"),
    ("linger.ms", "10"),
    ("statistics.interval.ms", "5000"),
];

/// The validated sink settings.
#[derive(Debug, Clone)]
pub struct KafkaSettings {
    /// Every topic in `topics`; the first is the default.
    pub topics: Vec<String>,
    pub topic_key: Option<KeyPath>,
    pub dynamic_topic: bool,
    pub message_key: Option<Vec<u8>>,
    pub message_key_field: Option<KeyPath>,
    pub encode: EncodeOptions,
    pub queue_full_retries: u32,
    /// Final librdkafka properties: defaults, then `brokers`, then MSK IAM, then `rdkafka`.
    pub properties: Vec<(String, String)>,
    pub msk_iam: Option<MskIamSettings>,
    /// `format = "avro"`: the schema, its id or subject, the registry.
    pub avro: Option<AvroSettings>,
    /// Things the operator should know at start-up (logged when the sink is built).
    pub warnings: Vec<String>,
}

impl KafkaSettings {
    /// The librdkafka client configuration.
    pub fn client_config(&self) -> ClientConfig {
        options::client_config(&self.properties)
    }

    /// The value of a property as it will be given to librdkafka (any alias).
    pub fn property(&self, name: &str) -> Option<&str> {
        options::property(&self.properties, name)
    }
}

impl KafkaConfig {
    /// Checks every option; all problems are reported, not just the first.
    pub fn validate(&self) -> Result<KafkaSettings, Vec<FieldError>> {
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
                "missing: name the topic(s) to write to, e.g. topics = \"logs\"",
            ));
        }
        check_topics("topics", &topics, &mut problems);
        let topic_key = self.path_option("topic_key", &self.topic_key, &mut problems);
        if self.dynamic_topic && topic_key.is_none() {
            problems.push(FieldError::new(
                "dynamic_topic",
                "needs topic_key: the record key that names each record's topic",
            ));
        }
        let message_key_field =
            self.path_option("message_key_field", &self.message_key_field, &mut problems);

        let avro = avro_settings(self, &topics, &mut problems);
        let encode = match self.encode_options() {
            Ok(options) => match crate::encode::Encoder::new(&options) {
                Ok(_) => Some(options),
                Err(e) => {
                    problems.push(e);
                    None
                }
            },
            Err(e) => {
                problems.push(e);
                None
            }
        };

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
        if !brokers.is_empty() {
            properties.push(("bootstrap.servers".into(), brokers.join(",")));
        }
        if msk_iam.is_some() {
            options::add_msk_iam_properties(&mut properties, &user, &mut warnings, &mut problems);
        }
        options::merge_user_properties(&mut properties, user);
        options::check_with_librdkafka(&properties, &mut problems);

        if !problems.is_empty() {
            return Err(problems);
        }
        let Some(encode) = encode else {
            return Err(problems);
        };
        Ok(KafkaSettings {
            topics,
            topic_key,
            dynamic_topic: self.dynamic_topic,
            message_key: self
                .message_key
                .as_ref()
                .filter(|k| !k.is_empty())
                .map(|k| k.as_bytes().to_vec()),
            message_key_field,
            encode,
            queue_full_retries: self.queue_full_retries,
            properties,
            msk_iam,
            avro,
            warnings,
        })
    }

    fn path_option(
        &self,
        key: &str,
        value: &Option<String>,
        problems: &mut Vec<FieldError>,
    ) -> Option<KeyPath> {
        let value = value.as_ref()?;
        if value.is_empty() || value.split("->").any(str::is_empty) {
            problems.push(FieldError::new(
                key,
                "must name a record key (nested keys as `a->b`)",
            ));
            return None;
        }
        Some(KeyPath::parse(value))
    }

    fn encode_options(&self) -> Result<EncodeOptions, FieldError> {
        let format = encode_options::format(
            "format",
            &self.format,
            &[
                ("json", Format::Json),
                ("msgpack", Format::Msgpack),
                ("raw", Format::Text),
                // Avro records are written by the Avro encoder; these options are not used.
                ("avro", Format::Json),
            ],
        )?;
        let log_key = encode_options::log_key(self.log_key.as_deref(), format);
        let time_format = timestamp_format(&self.timestamp_format)?;
        let time_key = match (self.timestamp_key.as_str(), format, &log_key) {
            ("", _, _) | (_, Format::Text, _) | (_, _, Some(_)) => None,
            (key, _, None) => Some(key.to_string()),
        };
        Ok(EncodeOptions {
            format,
            log_key,
            time_key,
            time_format,
            append_newline: false,
            ..EncodeOptions::default()
        })
    }
}

/// `timestamp_format`: as [`TimeFormat::from_name`], except that `iso8601` carries milliseconds
/// (the Kafka sink's contract), where Fluent Bit writes microseconds.
fn timestamp_format(name: &str) -> Result<TimeFormat, FieldError> {
    if name.eq_ignore_ascii_case("iso8601") {
        return Ok(TimeFormat::Iso8601(Subsecond::Millis));
    }
    TimeFormat::from_name("timestamp_format", name)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<KafkaSettings, Vec<FieldError>> {
        let config: KafkaConfig =
            toml::from_str(text).map_err(|e| vec![FieldError::new("<parse>", e.to_string())])?;
        config.validate()
    }

    fn keys(e: &[FieldError]) -> Vec<&str> {
        e.iter().map(|f| f.key.as_str()).collect()
    }

    #[test]
    fn defaults_favour_not_losing_data() {
        let s = parse("brokers = \"a:9092, b:9092\"\ntopics = \"logs\"").unwrap();
        assert_eq!(s.property("bootstrap.servers"), Some("a:9092,b:9092"));
        assert_eq!(s.property("acks"), Some("all"));
        assert_eq!(s.property("enable.idempotence"), Some("true"));
        assert_eq!(s.property("compression.type"), Some("lz4"));
        assert_eq!(s.property("message.timeout.ms"), Some("0"));
        assert_eq!(s.property("linger.ms"), Some("10"));
        assert_eq!(s.property("security.protocol"), None);
        assert_eq!(s.topics, vec!["logs"]);
        assert_eq!(s.encode.format, Format::Json);
        assert_eq!(s.encode.time_key.as_deref(), Some("@timestamp"));
        assert_eq!(s.encode.time_format, TimeFormat::Double);
        assert!(!s.encode.append_newline);
        assert_eq!(s.queue_full_retries, 10);
        assert!(s.msk_iam.is_none());
    }

    #[test]
    fn rdkafka_entries_override_defaults_and_aliases_replace_them() {
        let s = parse(
            r#"
            brokers = ["a:9092"]
            topics = ["logs", "audit"]
            [rdkafka]
            "compression.codec" = "zstd"
            "queue.buffering.max.ms" = 50
            "enable.idempotence" = false
            "acks" = "1"
            "#,
        )
        .unwrap();
        assert_eq!(s.property("compression.type"), Some("zstd"));
        assert_eq!(s.property("linger.ms"), Some("50"));
        assert_eq!(s.property("enable.idempotence"), Some("false"));
        assert_eq!(s.property("acks"), Some("1"));
        // Exactly one entry per property, whatever name the user chose.
        let compression: Vec<_> = s
            .properties
            .iter()
            .filter(|(k, _)| options::canonical(k) == "compression.type")
            .collect();
        assert_eq!(compression.len(), 1);
        assert_eq!(s.topics, vec!["logs", "audit"]);
    }

    #[test]
    fn unknown_or_invalid_rdkafka_properties_are_config_errors() {
        let e =
            parse("brokers = \"a:1\"\ntopics = \"t\"\n[rdkafka]\n\"compresion.type\" = \"lz4\"")
                .unwrap_err();
        assert_eq!(keys(&e), vec!["rdkafka"]);
        assert!(e[0].message.contains("compresion.type"), "{}", e[0].message);
        let e =
            parse("brokers = \"a:1\"\ntopics = \"t\"\n[rdkafka]\n\"compression.type\" = \"lz5\"")
                .unwrap_err();
        assert_eq!(keys(&e), vec!["rdkafka"]);
        let e = parse("brokers = \"a:1\"\ntopics = \"t\"\n[rdkafka]\n\"x\" = [1]").unwrap_err();
        assert!(e[0].message.contains("string, number or boolean"));
    }

    #[test]
    fn required_options_and_topic_rules() {
        let e = parse("").unwrap_err();
        assert_eq!(keys(&e), vec!["topics", "brokers"]);
        let e = parse("brokers = \"a:1\"\ntopics = \"bad topic\"").unwrap_err();
        assert_eq!(keys(&e), vec!["topics"]);
        let e = parse("brokers = \"a:1\"\ntopics = \"t\"\ndynamic_topic = true").unwrap_err();
        assert_eq!(keys(&e), vec!["dynamic_topic"]);
        let s = parse("topics = \"t\"\n[rdkafka]\n\"metadata.broker.list\" = \"x:1\"").unwrap();
        assert_eq!(s.property("bootstrap.servers"), Some("x:1"));
        let e = parse("brokers = \"a:1\"\ntopics = \"t\"\ntopic_key = \"a->\"").unwrap_err();
        assert_eq!(keys(&e), vec!["topic_key"]);
    }

    #[test]
    fn formats_and_timestamps() {
        let s = parse("brokers = \"a:1\"\ntopics = \"t\"\nformat = \"raw\"").unwrap();
        assert_eq!(s.encode.format, Format::Text);
        assert_eq!(s.encode.log_key.as_ref().map(KeyPath::as_str), Some("log"));
        assert_eq!(s.encode.time_key, None);
        let s = parse(
            "brokers = \"a:1\"\ntopics = \"t\"\nformat = \"msgpack\"\ntimestamp_format = \"iso8601\"",
        )
        .unwrap();
        assert_eq!(s.encode.time_format, TimeFormat::Iso8601(Subsecond::Millis));
        let s = parse("brokers = \"a:1\"\ntopics = \"t\"\ntimestamp_format = \"epoch_ms\"\ntimestamp_key = \"ts\"").unwrap();
        assert_eq!(s.encode.time_format, TimeFormat::EpochMillis);
        assert_eq!(s.encode.time_key.as_deref(), Some("ts"));
        let s = parse("brokers = \"a:1\"\ntopics = \"t\"\ntimestamp_key = \"\"").unwrap();
        assert_eq!(s.encode.time_key, None);
        let e = parse("brokers = \"a:1\"\ntopics = \"t\"\nformat = \"gelf\"").unwrap_err();
        assert_eq!(keys(&e), vec!["format"]);
        let e = parse("brokers = \"a:1\"\ntopics = \"t\"\ntimestamp_format = \"rfc\"").unwrap_err();
        assert_eq!(keys(&e), vec!["timestamp_format"]);
    }

    #[test]
    fn msk_iam_defaults_and_region_resolution() {
        let s = parse(
            "brokers = \"b-1.logs.abc.c2.kafka.eu-west-1.amazonaws.com:9098\"\ntopics = \"t\"\naws_msk_iam = true",
        )
        .unwrap();
        assert_eq!(s.property("security.protocol"), Some("SASL_SSL"));
        assert_eq!(s.property("sasl.mechanism"), Some("OAUTHBEARER"));
        assert_eq!(s.msk_iam.as_ref().unwrap().target.region, "eu-west-1");
        assert!(s.warnings.is_empty());

        let s = parse(
            "brokers = \"127.0.0.1:1\"\ntopics = \"t\"\naws_msk_iam = true\n\
             aws_msk_iam_cluster_arn = \"arn:aws:kafka:us-west-2:123456789012:cluster/c/u-1\"\n\
             [rdkafka]\n\"security.protocol\" = \"SASL_PLAINTEXT\"",
        )
        .unwrap();
        assert_eq!(s.msk_iam.as_ref().unwrap().target.region, "us-west-2");
        assert_eq!(s.property("security.protocol"), Some("SASL_PLAINTEXT"));
        assert_eq!(s.warnings.len(), 1);

        let s = parse("brokers = \"127.0.0.1:1\"\ntopics = \"t\"\naws_msk_iam = true\nregion = \"ap-south-1\"").unwrap();
        assert_eq!(s.msk_iam.as_ref().unwrap().target.region, "ap-south-1");

        let e = parse("brokers = \"127.0.0.1:1\"\ntopics = \"t\"\naws_msk_iam = true").unwrap_err();
        assert_eq!(keys(&e), vec!["aws_msk_iam"]);
        assert!(e[0].message.contains("region"), "{}", e[0].message);

        let e = parse(
            "brokers = \"127.0.0.1:1\"\ntopics = \"t\"\naws_msk_iam = true\nregion = \"us-east-1\"\n\
             [rdkafka]\n\"sasl.mechanisms\" = \"SCRAM-SHA-512\"\n\"sasl.oauthbearer.method\" = \"oidc\"",
        )
        .unwrap_err();
        assert!(keys(&e).iter().all(|k| *k == "rdkafka"), "{e:?}");
        assert_eq!(
            e.iter()
                .filter(|f| f.message.contains("conflicts with aws_msk_iam"))
                .count(),
            2,
            "{e:?}"
        );

        let e = parse("brokers = \"a:1\"\ntopics = \"t\"\nrole_arn = \"arn:aws:iam::1:role/r\"")
            .unwrap_err();
        assert_eq!(keys(&e), vec!["role_arn"]);
        let e = parse(
            "brokers = \"a:1\"\ntopics = \"t\"\naws_msk_iam = true\nregion = \"us-east-1\"\n\
             role_arn = \"nope\"\nsts_endpoint = \"sts.local\"",
        )
        .unwrap_err();
        assert_eq!(keys(&e), vec!["role_arn", "sts_endpoint"]);
    }

    #[test]
    fn topic_name_rules() {
        assert!(is_valid_topic(b"logs.app-1_x"));
        assert!(!is_valid_topic(b""));
        assert!(!is_valid_topic(b".."));
        assert!(!is_valid_topic(b"a/b"));
        assert!(!is_valid_topic(&[b'a'; 250]));
    }
}
