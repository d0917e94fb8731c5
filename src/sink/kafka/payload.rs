//! What the Kafka sink writes as a message value: the shared encoders (`json`, `msgpack`,
//! `raw`), or Avro in the Confluent wire format ([`super::avro`]), whose schema id may first
//! have to come from the schema registry.
//!
//! With Avro and a registry, the id is resolved before the first record is produced: at start,
//! and while the registry cannot be reached, records wait (the sink is reported unhealthy with
//! the registry's error, which is logged at most once per 10 s, and retried with a backoff up
//! to 30 s). Once known, the id is kept: a registry that goes away later changes nothing.

use std::time::Duration;

use super::avro::{parse_record_schema, AvroError, AvroWriter};
use super::producer::{Problem, Shared};
use super::schema_registry::{Registry, RegistryError, RegistrySettings};
use crate::encode::Encoder;
use crate::event::Event;
use crate::sink::backoff::Backoff;

/// Backoff of schema registry retries.
const REGISTRY_BACKOFF: Backoff = Backoff::new(Duration::from_millis(500), Duration::from_secs(30));

/// The validated Avro options.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AvroSettings {
    /// The writer schema (`schema_str`, or the contents of `schema_file`), when given.
    pub schema: Option<String>,
    /// `schema_id`: use this id rather than registering.
    pub schema_id: Option<u32>,
    /// The subject registered or looked up under (default `<first topic>-value`).
    pub subject: String,
    /// Register the schema (true, default) or only look it up (false).
    pub auto_register: bool,
    pub registry: Option<RegistrySettings>,
    /// `timestamp_key`: the schema field that gets the record time, if the schema has it.
    pub timestamp_key: Option<String>,
}

/// Encodes message values.
pub enum PayloadEncoder {
    Plain(Encoder),
    Avro(Box<AvroPayload>),
}

/// Avro, with the id resolved lazily.
pub struct AvroPayload {
    settings: AvroSettings,
    registry: Option<Registry>,
    writer: Option<AvroWriter>,
}

/// Why a value could not be encoded.
#[derive(Debug, thiserror::Error)]
pub enum PayloadError {
    #[error(transparent)]
    Encode(#[from] crate::encode::EncodeError),
    #[error(transparent)]
    Avro(#[from] AvroError),
    #[error("the Avro schema id is not known yet")]
    NotReady,
}

impl PayloadEncoder {
    /// The Avro encoder for `settings`; opens the registry client (no request yet).
    pub fn avro(settings: AvroSettings) -> Result<PayloadEncoder, String> {
        let registry = match &settings.registry {
            Some(r) => Some(Registry::new(r.clone()).map_err(|e| e.to_string())?),
            None => None,
        };
        let writer = match (&settings.schema, settings.schema_id) {
            (Some(schema), Some(id)) => Some(AvroWriter::new(
                parse_record_schema(schema)?,
                id,
                settings.timestamp_key.as_deref(),
            )),
            _ => None,
        };
        Ok(PayloadEncoder::Avro(Box::new(AvroPayload {
            settings,
            registry,
            writer,
        })))
    }

    /// Waits until values can be encoded: resolves the Avro schema id through the registry
    /// (retrying while it cannot be reached). Immediate for the other formats.
    pub async fn ready(&mut self, shared: &Shared) {
        let PayloadEncoder::Avro(avro) = self else {
            return;
        };
        let mut attempt = 0u32;
        while avro.writer.is_none() {
            match avro.resolve().await {
                Ok(writer) => {
                    tracing::info!(sink = %shared.name, id = writer.id(),
                        subject = %avro.settings.subject, "Avro schema id resolved");
                    avro.writer = Some(writer);
                    if attempt > 0 {
                        shared.clear(&[Problem::Delivery]);
                    }
                }
                Err(e) => {
                    shared.metrics.error("schema_registry");
                    if let Some(suppressed) =
                        crate::log_limit::allow(&shared.name, "schema_registry")
                    {
                        tracing::error!(sink = %shared.name, error = %e, suppressed,
                            "cannot get the Avro schema id from the schema registry; records \
                             wait, retrying");
                    }
                    shared.set_problem(
                        Problem::Delivery,
                        format!("cannot get the Avro schema id: {e}"),
                    );
                    tokio::time::sleep(REGISTRY_BACKOFF.delay(attempt)).await;
                    attempt = attempt.saturating_add(1);
                }
            }
        }
    }

    pub fn encode(&self, event: &Event, out: &mut Vec<u8>) -> Result<(), PayloadError> {
        match self {
            PayloadEncoder::Plain(encoder) => Ok(encoder.encode(event, out)?),
            PayloadEncoder::Avro(avro) => match &avro.writer {
                Some(writer) => Ok(writer.encode(event, out)?),
                None => Err(PayloadError::NotReady),
            },
        }
    }
}

/// Why the schema id could not be resolved.
#[derive(Debug, thiserror::Error)]
enum ResolveError {
    #[error(transparent)]
    Registry(#[from] RegistryError),
    #[error("{0}")]
    Schema(String),
}

impl AvroPayload {
    async fn resolve(&self) -> Result<AvroWriter, ResolveError> {
        let s = &self.settings;
        let registry = self.registry.as_ref().ok_or_else(|| {
            ResolveError::Schema("schema_registry_url is needed to resolve the schema id".into())
        })?;
        let (schema, id) = match (&s.schema, s.schema_id) {
            (Some(schema), Some(id)) => (schema.clone(), id),
            (None, Some(id)) => (registry.schema(id).await?, id),
            (Some(schema), None) if s.auto_register => {
                (schema.clone(), registry.register(&s.subject, schema).await?)
            }
            (Some(schema), None) => (schema.clone(), registry.lookup(&s.subject, schema).await?),
            (None, None) => {
                return Err(ResolveError::Schema(
                    "no schema: set schema_str, schema_file or schema_id".into(),
                ))
            }
        };
        let parsed = parse_record_schema(&schema).map_err(ResolveError::Schema)?;
        Ok(AvroWriter::new(parsed, id, s.timestamp_key.as_deref()))
    }
}
