//! The encoding options every sink declares, read the same way everywhere.
//!
//! Their names are each plugin's contract (Fluent Bit's `kinesis` says `time_key_format`, its
//! `kafka` says `timestamp_format`; `text` is `raw` for Kafka), so every sink keeps its own
//! config fields and maps them here, in one place per option, onto [`EncodeOptions`]
//! (`super::EncodeOptions`). Each reader takes the option's name for its error message.

use super::{Compression, Format, TimeFormat};
use crate::config::field::FieldError;
use crate::event::KeyPath;

/// A `format` value among the names a sink accepts (`names`: its spelling of each format).
pub fn format(key: &str, value: &str, names: &[(&str, Format)]) -> Result<Format, FieldError> {
    names
        .iter()
        .find(|(name, _)| *name == value)
        .map(|(_, format)| *format)
        .ok_or_else(|| {
            let known: Vec<&str> = names.iter().map(|(name, _)| *name).collect();
            FieldError::new(key, format!("`{value}` is not one of {}", known.join(", ")))
        })
}

/// `log_key`: the field to send alone. The text format sends one field, `log` unless named.
pub fn log_key(value: Option<&str>, format: Format) -> Option<KeyPath> {
    match (value, format) {
        (Some(key), _) => Some(KeyPath::parse(key)),
        (None, Format::Text) => Some(KeyPath::parse("log")),
        (None, _) => None,
    }
}

/// A time format option: a strftime pattern when it has a `%`, else a format name
/// ([`TimeFormat::from_name`]); the default (ISO 8601, whole seconds) when unset.
pub fn time_format(key: &str, value: Option<&str>) -> Result<TimeFormat, FieldError> {
    match value {
        Some(pattern) if pattern.contains('%') => Ok(TimeFormat::Strftime(pattern.to_string())),
        Some(name) => TimeFormat::from_name(key, name),
        None => Ok(TimeFormat::default()),
    }
}

/// `data_keys`: a comma-separated list of top-level keys to keep (blanks ignored).
pub fn data_keys(value: Option<&str>) -> Vec<String> {
    value
        .map(|keys| {
            keys.split(',')
                .map(str::trim)
                .filter(|k| !k.is_empty())
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default()
}

/// `compression` of each record (`gzip`, `zlib`); none when unset.
pub fn compression(key: &str, value: Option<&str>) -> Result<Compression, FieldError> {
    match value {
        Some(c) => c
            .parse::<Compression>()
            .map_err(|message| FieldError::new(key, message)),
        None => Ok(Compression::None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NAMES: &[(&str, Format)] = &[("json", Format::Json), ("raw", Format::Text)];

    #[test]
    fn a_format_outside_the_sinks_names_is_refused_with_them() {
        assert_eq!(format("format", "raw", NAMES).unwrap(), Format::Text);
        let e = format("format", "text", NAMES).unwrap_err();
        assert_eq!(e.key, "format");
        assert!(e.message.contains("json, raw"), "{}", e.message);
    }

    #[test]
    fn text_sends_log_unless_another_key_is_named() {
        assert_eq!(log_key(None, Format::Text), Some(KeyPath::parse("log")));
        assert_eq!(log_key(None, Format::Json), None);
        assert_eq!(
            log_key(Some("a->b"), Format::Json),
            Some(KeyPath::parse("a->b"))
        );
    }

    #[test]
    fn time_formats_are_patterns_or_names() {
        assert!(matches!(
            time_format("k", Some("%Y")).unwrap(),
            TimeFormat::Strftime(p) if p == "%Y"
        ));
        assert_eq!(time_format("k", Some("epoch")).unwrap(), TimeFormat::Epoch);
        assert_eq!(time_format("k", None).unwrap(), TimeFormat::default());
        assert_eq!(time_format("k", Some("nope")).unwrap_err().key, "k");
    }

    #[test]
    fn data_keys_ignore_blanks() {
        assert_eq!(data_keys(Some(" a, ,b ,")), vec!["a", "b"]);
        assert!(data_keys(None).is_empty());
    }

    #[test]
    fn compression_names_its_option() {
        assert_eq!(compression("c", None).unwrap(), Compression::None);
        assert_eq!(compression("c", Some("arrow")).unwrap_err().key, "c");
    }
}
