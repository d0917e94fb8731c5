//! Checks of the Kafka sink's Avro options (`format = "avro"`), at config load.

use super::avro::parse_record_schema;
use super::config::KafkaConfig;
use super::payload::AvroSettings;
use super::schema_registry::RegistrySettings;
use crate::config::field::FieldError;

/// The Avro settings with `format = "avro"` (problems pushed with their keys); with another
/// format, any Avro option is a problem.
pub fn avro_settings(
    c: &KafkaConfig,
    topics: &[String],
    problems: &mut Vec<FieldError>,
) -> Option<AvroSettings> {
    if c.format != "avro" {
        let set = [
            ("schema_registry_url", c.schema_registry_url.is_some()),
            ("schema_str", c.schema_str.is_some()),
            ("schema_file", c.schema_file.is_some()),
            ("schema_id", c.schema_id.is_some()),
            ("subject", c.subject.is_some()),
            ("auto_register", c.auto_register.is_some()),
            (
                "schema_registry_username",
                c.schema_registry_username.is_some(),
            ),
            (
                "schema_registry_password",
                c.schema_registry_password.is_some(),
            ),
            (
                "schema_registry_ca_file",
                c.schema_registry_ca_file.is_some(),
            ),
        ];
        for (key, _) in set.iter().filter(|(_, is_set)| *is_set) {
            problems.push(FieldError::new(
                *key,
                "only applies with format = \"avro\"; set that too, or remove this",
            ));
        }
        return None;
    }
    let before = problems.len();
    let schema = match (&c.schema_str, &c.schema_file) {
        (Some(_), Some(_)) => {
            problems.push(FieldError::new(
                "schema_file",
                "give the schema once: schema_str or schema_file, not both",
            ));
            None
        }
        (Some(text), None) => Some(text.clone()),
        (None, Some(path)) => match std::fs::read_to_string(path) {
            Ok(text) => Some(text),
            Err(e) => {
                problems.push(FieldError::new(
                    "schema_file",
                    format!("cannot read {}: {e}", path.display()),
                ));
                None
            }
        },
        (None, None) => None,
    };
    if let Some(text) = &schema {
        let key = if c.schema_str.is_some() {
            "schema_str"
        } else {
            "schema_file"
        };
        if let Err(message) = parse_record_schema(text) {
            problems.push(FieldError::new(key, message));
        }
    }
    if schema.is_none() && c.schema_id.is_none() && problems.len() == before {
        problems.push(FieldError::new(
            "schema_str",
            "format = \"avro\" needs the record schema (schema_str or schema_file) or an \
             existing schema_id",
        ));
    }
    let needs_registry = !(schema.is_some() && c.schema_id.is_some());
    let registry = match &c.schema_registry_url {
        Some(url) if !(url.starts_with("http://") || url.starts_with("https://")) => {
            problems.push(FieldError::new(
                "schema_registry_url",
                format!("`{url}` is not an http:// or https:// URL"),
            ));
            None
        }
        Some(url) => Some(RegistrySettings {
            url: url.clone(),
            username: c.schema_registry_username.clone(),
            password: c.schema_registry_password.clone(),
            ca_file: c.schema_registry_ca_file.clone(),
        }),
        None if needs_registry => {
            problems.push(FieldError::new(
                "schema_registry_url",
                "missing: format = \"avro\" registers or looks up the schema id there (or give \
                 both the schema and schema_id)",
            ));
            None
        }
        None => None,
    };
    if c.schema_registry_password.is_some() && c.schema_registry_username.is_none() {
        problems.push(FieldError::new(
            "schema_registry_password",
            "needs schema_registry_username",
        ));
    }
    if let Some(path) = &c.schema_registry_ca_file {
        if !path.is_file() {
            problems.push(FieldError::new(
                "schema_registry_ca_file",
                format!("{} is not a readable file", path.display()),
            ));
        }
    }
    let subject = match (&c.subject, topics.first()) {
        (Some(subject), _) if subject.is_empty() => {
            problems.push(FieldError::new("subject", "must not be empty"));
            return None;
        }
        (Some(subject), _) => subject.clone(),
        (None, Some(topic)) => format!("{topic}-value"),
        (None, None) => return None,
    };
    if problems.len() > before {
        return None;
    }
    Some(AvroSettings {
        schema,
        schema_id: c.schema_id,
        subject,
        auto_register: c.auto_register.unwrap_or(true),
        registry,
        timestamp_key: Some(c.timestamp_key.clone()).filter(|k| !k.is_empty()),
    })
}
