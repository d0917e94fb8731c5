//! A problem with one option of one config entry, before the loader adds file and line.

use std::fmt;

/// A semantic config problem (bad regex, conflicting options) found by a component's own
/// validation. The loader turns it into `file:line: key: message` using the key's position.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldError {
    /// The option's name as written in the config (`regex`, `partition_key`).
    pub key: String,
    /// What is wrong and what to do, without the key name.
    pub message: String,
}

impl FieldError {
    pub fn new(key: impl Into<String>, message: impl Into<String>) -> Self {
        FieldError {
            key: key.into(),
            message: message.into(),
        }
    }
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.key, self.message)
    }
}

impl std::error::Error for FieldError {}

/// Why one `[[sources]]` / `[[transforms]]` / `[[sinks]]` entry could not be built.
#[derive(Debug)]
pub enum EntryError {
    /// `type = "..."` names no component of that kind.
    UnknownType {
        given: String,
        known: &'static [&'static str],
    },
    /// The options did not deserialize (unknown key, wrong type, missing key).
    Parse(toml::de::Error),
    /// The options deserialized but make no sense together or have bad values.
    Fields(Vec<FieldError>),
}

impl From<toml::de::Error> for EntryError {
    fn from(e: toml::de::Error) -> Self {
        EntryError::Parse(e)
    }
}

impl From<FieldError> for EntryError {
    fn from(e: FieldError) -> Self {
        EntryError::Fields(vec![e])
    }
}

impl From<Vec<FieldError>> for EntryError {
    fn from(e: Vec<FieldError>) -> Self {
        EntryError::Fields(e)
    }
}

/// Several problems as one line (`key: message; key: message`), for errors raised when a
/// component is built from an already-parsed config.
pub fn join(problems: &[FieldError]) -> String {
    problems
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}
