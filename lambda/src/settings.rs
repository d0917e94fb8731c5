//! Where the forwarder's configuration comes from: a TOML file (`LOGFERRY_CONFIG`, or
//! `logferry.toml` bundled in the deployment package), or environment variables only.
//!
//! Environment-only configuration is turned into TOML text and loaded by the same loader as a
//! file, so validation (and its messages) are shared with the sidecar. Every variable is
//! documented in docs/lambda.md.

use std::path::{Path, PathBuf};

use logferry::config::Config;
use logferry::source::cloudwatch::CloudwatchConfig;
use logferry::source::SourceConfig;

/// The environment variables environment-only configuration reads (anything else starting
/// with `LOGFERRY_` is refused as a probable typo).
pub const VARIABLES: &[&str] = &[
    "LOGFERRY_CONFIG",
    "LOGFERRY_SINK",
    "LOGFERRY_LOG_LEVEL",
    "LOGFERRY_PARSE_JSON",
    "LOGFERRY_SAFETY_MARGIN",
    "LOGFERRY_MAX_DECOMPRESSED_SIZE",
    "LOGFERRY_BUFFER_LIMIT",
    "LOGFERRY_TIME_KEY",
    "LOGFERRY_TIME_KEY_FORMAT",
    "LOGFERRY_FORMAT",
    "LOGFERRY_PATH",
    "LOGFERRY_STREAM",
    "LOGFERRY_PARTITION_KEY",
    "LOGFERRY_AGGREGATION",
    "LOGFERRY_REGION",
    "LOGFERRY_ROLE_ARN",
    "LOGFERRY_BROKERS",
    "LOGFERRY_TOPIC",
    "LOGFERRY_MESSAGE_KEY_FIELD",
    "LOGFERRY_MSK_IAM",
    "LOGFERRY_MSK_IAM_CLUSTER_ARN",
];

/// The configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    #[error(
        "no configuration: set LOGFERRY_CONFIG to a config file, bundle logferry.toml in the \
         deployment package, or configure with environment variables (LOGFERRY_SINK=kinesis|\
         kafka|file|stdout; see docs/lambda.md)"
    )]
    Missing,
    #[error("{0}")]
    Env(String),
    #[error("{0}")]
    Config(#[from] logferry::config::ConfigError),
    #[error(
        "{file}: logferry-lambda reads records from Lambda invocations only: it needs exactly \
         one [[sources]] entry with type = \"cloudwatch_logs\" and no other source ({found})"
    )]
    Sources { file: String, found: String },
    #[error(
        "{file}: sink {sink}: buffer = \"disk\" is not for logferry-lambda: an invocation \
         succeeds only once its records are delivered, and a disk buffer in the function's /tmp \
         would make success mean \"written to a disk that is discarded with the execution \
         environment\". Remove buffer (and buffer_path) from the sink"
    )]
    DiskBuffer { file: String, sink: String },
}

/// The loaded configuration and where it came from.
pub struct Loaded {
    pub config: Config,
    /// The `cloudwatch_logs` source's options (decoder, safety margin).
    pub source: CloudwatchConfig,
    /// A file path, or `environment`.
    pub origin: String,
}

/// Reads the configuration, as the function does at init. `lookup` reads the environment.
pub fn load(
    lookup: &dyn Fn(&str) -> Option<String>,
    vars: &[String],
    task_root: Option<&Path>,
) -> Result<Loaded, SettingsError> {
    let (mut config, origin) = if let Some(path) = lookup("LOGFERRY_CONFIG") {
        let path = PathBuf::from(path);
        (
            Config::parse(&path, &read(&path)?, lookup)?,
            path.display().to_string(),
        )
    } else if let Some(bundled) = task_root
        .map(|root| root.join("logferry.toml"))
        .filter(|p| p.is_file())
    {
        (
            Config::parse(&bundled, &read(&bundled)?, lookup)?,
            bundled.display().to_string(),
        )
    } else if lookup("LOGFERRY_SINK").is_some() {
        let text = toml_from_env(lookup, vars)?;
        let origin = "environment (LOGFERRY_* variables)".to_string();
        (Config::parse(Path::new(&origin), &text, lookup)?, origin)
    } else {
        return Err(SettingsError::Missing);
    };
    let mut sources = Vec::new();
    let mut others = Vec::new();
    for entry in std::mem::take(&mut config.sources) {
        match entry.config {
            SourceConfig::CloudwatchLogs(c) => sources.push(c),
            _ => others.push(entry.name),
        }
    }
    if sources.len() != 1 || !others.is_empty() {
        let mut found = format!("{} cloudwatch_logs", sources.len());
        if !others.is_empty() {
            found.push_str(&format!("; other sources: {}", others.join(", ")));
        }
        return Err(SettingsError::Sources {
            file: origin,
            found,
        });
    }
    if let Some(sink) = config
        .sinks
        .iter()
        .find(|s| matches!(s.buffer, logferry::buffer::BufferKind::Disk(_)))
    {
        return Err(SettingsError::DiskBuffer {
            file: origin,
            sink: sink.name.clone(),
        });
    }
    let source = sources.remove(0);
    Ok(Loaded {
        config,
        source,
        origin,
    })
}

fn read(path: &Path) -> Result<String, SettingsError> {
    std::fs::read_to_string(path).map_err(|e| {
        SettingsError::Env(format!(
            "cannot read the config file {} (LOGFERRY_CONFIG or the bundled logferry.toml): {e}",
            path.display()
        ))
    })
}

/// A TOML string literal.
fn quote(s: &str) -> String {
    toml::Value::String(s.to_string()).to_string()
}

fn boolean(name: &str, value: &str) -> Result<bool, SettingsError> {
    match value.trim().to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" | "on" => Ok(true),
        "false" | "0" | "no" | "off" | "" => Ok(false),
        other => Err(SettingsError::Env(format!(
            "{name}=`{other}` is not a boolean; use true or false"
        ))),
    }
}

fn put(text: &mut String, key: &str, value: Option<String>) {
    if let Some(v) = value {
        text.push_str(&format!("{key} = {}\n", quote(&v)));
    }
}

/// Builds config text from `LOGFERRY_*` variables. `vars` are the names of every variable set
/// (to refuse unknown `LOGFERRY_*` names).
pub fn toml_from_env(
    lookup: &dyn Fn(&str) -> Option<String>,
    vars: &[String],
) -> Result<String, SettingsError> {
    let unknown: Vec<&str> = vars
        .iter()
        .map(String::as_str)
        .filter(|v| v.starts_with("LOGFERRY_") && !VARIABLES.contains(v))
        .collect();
    if !unknown.is_empty() {
        return Err(SettingsError::Env(format!(
            "unknown variable(s) {}; logferry-lambda reads {}",
            unknown.join(", "),
            VARIABLES.join(", ")
        )));
    }
    let get = |name: &str| lookup(name).filter(|v| !v.trim().is_empty());
    let sink = get("LOGFERRY_SINK").unwrap_or_default();
    let required = |name: &str| {
        get(name).ok_or_else(|| {
            SettingsError::Env(format!("{name} is required with LOGFERRY_SINK={sink}"))
        })
    };

    let mut text = String::from("[service]\nhttp_listen = \"off\"\n");
    if let Some(level) = get("LOGFERRY_LOG_LEVEL") {
        text.push_str(&format!("log_level = {}\n", quote(&level)));
    }
    text.push_str("\n[[sources]]\ntype = \"cloudwatch_logs\"\n");
    if let Some(v) = get("LOGFERRY_PARSE_JSON") {
        let b = boolean("LOGFERRY_PARSE_JSON", &v)?;
        text.push_str(&format!("parse_json = {b}\n"));
    }
    for (var, key) in [
        ("LOGFERRY_SAFETY_MARGIN", "safety_margin"),
        ("LOGFERRY_MAX_DECOMPRESSED_SIZE", "max_decompressed_size"),
    ] {
        if let Some(v) = get(var) {
            text.push_str(&format!("{key} = {}\n", quote(&v)));
        }
    }

    text.push_str(&format!(
        "\n[[sinks]]\ntype = {}\nname = {}\nmatch = \"*\"\n",
        quote(&sink),
        quote(&sink)
    ));
    if let Some(v) = get("LOGFERRY_BUFFER_LIMIT") {
        text.push_str(&format!("buffer_limit = {}\n", quote(&v)));
    }
    let t = &mut text;
    match sink.as_str() {
        "kinesis" => {
            put(t, "stream", Some(required("LOGFERRY_STREAM")?));
            put(
                t,
                "partition_key",
                Some(get("LOGFERRY_PARTITION_KEY").unwrap_or_else(|| "logStream".to_string())),
            );
            put(t, "region", get("LOGFERRY_REGION"));
            put(t, "role_arn", get("LOGFERRY_ROLE_ARN"));
            put(t, "time_key", get("LOGFERRY_TIME_KEY"));
            put(t, "time_key_format", get("LOGFERRY_TIME_KEY_FORMAT"));
            if let Some(v) = get("LOGFERRY_AGGREGATION") {
                let b = boolean("LOGFERRY_AGGREGATION", &v)?;
                t.push_str(&format!("aggregation = {b}\n"));
            }
        }
        "kafka" => {
            put(t, "brokers", Some(required("LOGFERRY_BROKERS")?));
            put(t, "topics", Some(required("LOGFERRY_TOPIC")?));
            put(
                t,
                "message_key_field",
                Some(get("LOGFERRY_MESSAGE_KEY_FIELD").unwrap_or_else(|| "logStream".to_string())),
            );
            put(t, "format", get("LOGFERRY_FORMAT"));
            put(t, "timestamp_key", get("LOGFERRY_TIME_KEY"));
            put(t, "timestamp_format", get("LOGFERRY_TIME_KEY_FORMAT"));
            put(t, "region", get("LOGFERRY_REGION"));
            put(t, "role_arn", get("LOGFERRY_ROLE_ARN"));
            let cluster = get("LOGFERRY_MSK_IAM_CLUSTER_ARN");
            let iam = match get("LOGFERRY_MSK_IAM") {
                Some(v) => boolean("LOGFERRY_MSK_IAM", &v)?,
                None => cluster.is_some(),
            };
            if iam {
                t.push_str("aws_msk_iam = true\n");
            }
            if let Some(arn) = cluster {
                t.push_str(&format!("aws_msk_iam_cluster_arn = {}\n", quote(&arn)));
            }
        }
        "file" => {
            put(t, "path", Some(required("LOGFERRY_PATH")?));
            put(t, "format", get("LOGFERRY_FORMAT"));
            put(t, "time_key", get("LOGFERRY_TIME_KEY"));
            put(t, "time_key_format", get("LOGFERRY_TIME_KEY_FORMAT"));
        }
        "stdout" => {
            put(t, "format", get("LOGFERRY_FORMAT"));
            put(t, "time_key", get("LOGFERRY_TIME_KEY"));
            put(t, "time_key_format", get("LOGFERRY_TIME_KEY_FORMAT"));
        }
        other => {
            return Err(SettingsError::Env(format!(
                "LOGFERRY_SINK=`{other}` is not one of kinesis, kafka, file, stdout"
            )))
        }
    }
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env(pairs: &[(&str, &str)]) -> (HashMap<String, String>, Vec<String>) {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let names = map.keys().cloned().collect();
        (map, names)
    }

    fn generate(pairs: &[(&str, &str)]) -> Result<String, SettingsError> {
        let (map, names) = env(pairs);
        toml_from_env(&|k| map.get(k).cloned(), &names)
    }

    fn load_env(pairs: &[(&str, &str)]) -> Result<Loaded, SettingsError> {
        let (map, names) = env(pairs);
        load(&|k| map.get(k).cloned(), &names, None)
    }

    #[test]
    fn kinesis_from_env() {
        let text = generate(&[
            ("LOGFERRY_SINK", "kinesis"),
            ("LOGFERRY_STREAM", "logs \"main\""),
            ("LOGFERRY_AGGREGATION", "true"),
        ])
        .unwrap();
        assert!(text.contains("type = \"kinesis\"\n"), "{text}");
        assert!(
            text.contains("stream = 'logs \"main\"'\n")
                || text.contains("stream = \"logs \\\"main\\\"\"\n"),
            "{text}"
        );
        assert!(text.contains("partition_key = \"logStream\"\n"), "{text}");
        assert!(text.contains("aggregation = true\n"), "{text}");
        let parsed: toml::Table = text.parse().unwrap();
        assert_eq!(parsed["sinks"][0]["stream"].as_str(), Some("logs \"main\""));
    }

    #[test]
    fn kafka_from_env_with_msk_iam() {
        let text = generate(&[
            ("LOGFERRY_SINK", "kafka"),
            ("LOGFERRY_BROKERS", "b-1:9098,b-2:9098"),
            ("LOGFERRY_TOPIC", "logs"),
            (
                "LOGFERRY_MSK_IAM_CLUSTER_ARN",
                "arn:aws:kafka:eu-west-1:123456789012:cluster/c/1",
            ),
        ])
        .unwrap();
        let parsed: toml::Table = text.parse().unwrap();
        let sink = &parsed["sinks"][0];
        assert_eq!(sink["type"].as_str(), Some("kafka"));
        assert_eq!(sink["brokers"].as_str(), Some("b-1:9098,b-2:9098"));
        assert_eq!(sink["topics"].as_str(), Some("logs"));
        assert_eq!(sink["message_key_field"].as_str(), Some("logStream"));
        assert_eq!(sink["aws_msk_iam"].as_bool(), Some(true));
        assert_eq!(
            sink["aws_msk_iam_cluster_arn"].as_str(),
            Some("arn:aws:kafka:eu-west-1:123456789012:cluster/c/1")
        );
    }

    #[test]
    fn missing_and_unknown_variables_are_named() {
        let e = generate(&[("LOGFERRY_SINK", "kinesis")]).unwrap_err();
        assert_eq!(
            e.to_string(),
            "LOGFERRY_STREAM is required with LOGFERRY_SINK=kinesis"
        );
        let e =
            generate(&[("LOGFERRY_SINK", "kafka"), ("LOGFERRY_BROKERS", "b:9092")]).unwrap_err();
        assert_eq!(
            e.to_string(),
            "LOGFERRY_TOPIC is required with LOGFERRY_SINK=kafka"
        );
        let e = generate(&[("LOGFERRY_SINK", "s3")]).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("LOGFERRY_SINK=`s3` is not one of"),
            "{e}"
        );
        let e = generate(&[("LOGFERRY_SINK", "stdout"), ("LOGFERRY_STRAEM", "x")]).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("unknown variable(s) LOGFERRY_STRAEM;"),
            "{e}"
        );
        let e = generate(&[
            ("LOGFERRY_SINK", "stdout"),
            ("LOGFERRY_PARSE_JSON", "maybe"),
        ])
        .unwrap_err();
        assert!(e.to_string().contains("not a boolean"), "{e}");
        assert!(matches!(load_env(&[]), Err(SettingsError::Missing)));
    }

    #[test]
    fn file_and_stdout_load_through_the_normal_loader() {
        let loaded = load_env(&[
            ("LOGFERRY_SINK", "file"),
            ("LOGFERRY_PATH", "/tmp/out.json"),
            ("LOGFERRY_PARSE_JSON", "true"),
            ("LOGFERRY_SAFETY_MARGIN", "2s"),
        ])
        .unwrap();
        assert!(loaded.source.parse_json);
        assert_eq!(
            loaded.source.safety_margin.get(),
            std::time::Duration::from_secs(2)
        );
        assert_eq!(loaded.config.sinks.len(), 1);
        assert_eq!(loaded.config.sinks[0].name, "file");
        let loaded = load_env(&[("LOGFERRY_SINK", "stdout")]).unwrap();
        assert!(!loaded.source.parse_json);
        // Validation is the loader's: a bad duration is reported with its key.
        let Err(e) = load_env(&[
            ("LOGFERRY_SINK", "stdout"),
            ("LOGFERRY_SAFETY_MARGIN", "soon"),
        ]) else {
            panic!("a bad duration loaded")
        };
        assert!(e.to_string().contains("safety_margin"), "{e}");
    }

    #[test]
    fn a_config_file_needs_one_cloudwatch_logs_source_only() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("logferry.toml");
        std::fs::write(
            &path,
            "[[sources]]\ntype = \"stdin\"\n[[sinks]]\ntype = \"stdout\"\nmatch = \"*\"\n",
        )
        .unwrap();
        let Err(e) = load(&|_| None, &[], Some(dir.path())) else {
            panic!("a stdin source was accepted")
        };
        assert!(
            e.to_string()
                .contains("exactly one [[sources]] entry with type = \"cloudwatch_logs\""),
            "{e}"
        );
        std::fs::write(
            &path,
            "[[sources]]\ntype = \"cloudwatch_logs\"\nid_key = \"event_id\"\n\
             [[sinks]]\ntype = \"stdout\"\nmatch = \"*\"\n",
        )
        .unwrap();
        let loaded = load(&|_| None, &[], Some(dir.path())).unwrap();
        assert_eq!(loaded.source.id_key, "event_id");
        assert_eq!(loaded.origin, path.display().to_string());
    }

    #[test]
    fn a_disk_buffer_is_refused_naming_the_sink() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("logferry.toml");
        let buffer = dir.path().join("buf");
        std::fs::write(
            &path,
            format!(
                "[[sources]]\ntype = \"cloudwatch_logs\"\n[[sinks]]\nname = \"out\"\n\
                 type = \"stdout\"\nmatch = \"*\"\nbuffer = \"disk\"\nbuffer_path = {:?}\n",
                buffer.display().to_string()
            ),
        )
        .unwrap();
        let Err(e) = load(&|_| None, &[], Some(dir.path())) else {
            panic!("a disk buffer was accepted")
        };
        let text = e.to_string();
        assert!(text.contains("sink out"), "{text}");
        assert!(text.contains("buffer = \"disk\""), "{text}");
        assert!(text.starts_with(&path.display().to_string()), "{text}");
    }
}
