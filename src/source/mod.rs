//! Sources: where records come from.
//!
//! - [`forward`]: the Fluent forward protocol server (FireLens, Docker's fluentd driver, Fluent
//!   Bit / Fluentd forwarders), on TCP and/or a unix socket.
//! - [`stdin`]: one record per line of standard input.
//! - [`cloudwatch`]: CloudWatch Logs subscription payloads, read by `logferry-lambda` (the
//!   Lambda forwarder) from its invocations; the `logferry` binary cannot run it.
//! - [`tail`]: follows log files (rotation, checkpoints, docker / cri / json / regex parsers).
//! - [`kafka`]: consumes Kafka / Amazon MSK topics as a consumer group member, committing
//!   offsets only once the records were delivered.
//! - [`tcp`]: JSON records or text lines over TCP (Fluent Bit's `tcp` input; the FireLens
//!   health check).
//!
//! A source knows nothing about sinks: it hands records to the [`Router`] and waits when the
//! router waits (backpressure).
//!
//! Every source has the same two verbs: its config's `validate()`, called by
//! [`SourceConfig::parse`] so a bad option stops the config load with its key, and
//! `start(config, cx) -> Result<JoinHandle<()>, SourceError>`, which binds or opens what the
//! source needs (failing start-up) and returns the spawned task that runs it until
//! `cx.shutdown` or the end of its input.

pub mod cloudwatch;
pub mod forward;
pub mod kafka;
pub mod stdin;
pub mod tail;
pub mod tcp;

use std::sync::Arc;

use serde::Deserialize;

use crate::config::field::EntryError;
use crate::metrics::ComponentMetrics;
use crate::pipeline::router::Router;
use crate::shutdown::CancellationToken;

/// A source's configuration, by `type`.
#[derive(Debug, Clone)]
pub enum SourceConfig {
    Forward(forward::ForwardConfig),
    Stdin(stdin::StdinConfig),
    CloudwatchLogs(cloudwatch::CloudwatchConfig),
    Tail(Box<tail::TailConfig>),
    Tcp(tcp::TcpConfig),
    Kafka(Box<kafka::config::KafkaSourceConfig>),
}

/// The `type` values of sources.
pub const TYPES: &[&str] = &[
    "forward",
    "stdin",
    "tail",
    "tcp",
    "kafka",
    "cloudwatch_logs",
];

impl SourceConfig {
    /// Deserializes a `[[sources]]` entry's own options (common keys already removed).
    pub fn parse(kind: &str, de: toml::Deserializer<'_>) -> Result<SourceConfig, EntryError> {
        match kind {
            "forward" => {
                let c = forward::ForwardConfig::deserialize(de)?;
                c.validate()?;
                Ok(SourceConfig::Forward(c))
            }
            "stdin" => {
                let c = stdin::StdinConfig::deserialize(de)?;
                c.validate()?;
                Ok(SourceConfig::Stdin(c))
            }
            "cloudwatch_logs" => {
                let c = cloudwatch::CloudwatchConfig::deserialize(de)?;
                c.validate()?;
                Ok(SourceConfig::CloudwatchLogs(c))
            }
            "tail" => {
                let c = tail::TailConfig::deserialize(de)?;
                c.validate()?;
                Ok(SourceConfig::Tail(Box::new(c)))
            }
            "tcp" => {
                let c = tcp::TcpConfig::deserialize(de)?;
                c.validate()?;
                Ok(SourceConfig::Tcp(c))
            }
            "kafka" => {
                let c = kafka::config::KafkaSourceConfig::deserialize(de)?;
                c.validate()?;
                Ok(SourceConfig::Kafka(Box::new(c)))
            }
            other => Err(EntryError::UnknownType {
                given: other.to_string(),
                known: TYPES,
            }),
        }
    }

    /// Binds what the source listens on (so start-up fails early on a taken port) and returns
    /// the task that runs it until `cx.shutdown` or the end of its input.
    pub async fn start(
        &self,
        cx: SourceContext,
    ) -> Result<tokio::task::JoinHandle<()>, SourceError> {
        match self {
            SourceConfig::Forward(c) => forward::start(c.clone(), cx).await,
            SourceConfig::Stdin(c) => stdin::start(c.clone(), cx).await,
            SourceConfig::CloudwatchLogs(_) => Err(SourceError::Setup {
                name: cx.name,
                message: "a cloudwatch_logs source receives Lambda invocations: deploy this \
                          config with logferry-lambda (see docs/lambda.md), not logferry"
                    .to_string(),
            }),
            SourceConfig::Tail(c) => tail::start((**c).clone(), cx).await,
            SourceConfig::Tcp(c) => tcp::start(c.clone(), cx).await,
            SourceConfig::Kafka(c) => kafka::start((**c).clone(), cx).await,
        }
    }
}

/// What a running source needs.
#[derive(Clone)]
pub struct SourceContext {
    pub name: String,
    pub router: Arc<Router>,
    pub shutdown: CancellationToken,
    pub metrics: ComponentMetrics,
}

/// A source could not start.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("source `{name}`: cannot listen on {address}: {source}")]
    Bind {
        name: String,
        address: String,
        source: std::io::Error,
    },
    #[error("source `{name}`: {message}")]
    Setup { name: String, message: String },
}
