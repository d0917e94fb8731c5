//! Record transforms between decoding and routing: add/remove keys, filter by pattern, rename,
//! rejoin Docker's split long lines, parse a text field into fields (`parser`), move keys in and
//! out of maps (`nest`) and Fluent Bit's `modify` rules.
//!
//! Each `[[transforms]]` entry names a `type`; the config loader strips the common keys (`type`,
//! `match`, `match_regex`) and hands the rest of the table to [`build`], which deserializes it
//! into that type's config struct (unknown keys rejected) and calls the type's
//! `build(config) -> Result<Self, Vec<FieldError>>`. Building is the validation: it compiles
//! patterns and opens nothing, so the config loader builds every transform to check it. The
//! pipeline applies a transform to the batches whose tag its [`crate::route::TagMatcher`] takes.

pub mod fluent_regex;
pub mod grep;
pub mod modify;
pub mod nest;
pub mod pairs;
pub mod parser;
pub mod partial_message;
pub mod path;
pub mod record_modifier;
pub mod rename;

use serde::Deserialize;

use crate::config::field::EntryError;
use crate::event::Event;

/// A step of the pipeline that changes, drops or merges records.
pub trait Transform: Send {
    /// Applies the transform to a batch in place (modify, drop, merge events).
    fn apply(&mut self, events: &mut Vec<Event>);

    /// Emits events held back (partial messages) that are older than the timeout, or all of
    /// them when `force` (shutdown). Default: nothing.
    fn flush(&mut self, _now: std::time::Instant, _force: bool, _out: &mut Vec<Event>) {}

    /// Whether records are held back now, waiting for [`Transform::apply`] or
    /// [`Transform::flush`] to release them. The router keeps the acknowledgements of the
    /// messages those records came from open until they are released and delivered.
    fn holds_records(&self) -> bool {
        false
    }

    /// Hands the transform its component's counters, once, before the first batch (the
    /// `parser` transform counts the lines no parser matched). Default: nothing to count.
    fn attach_metrics(&mut self, _metrics: &crate::metrics::ComponentMetrics) {}
}

/// The transform types [`build`] knows, as written in `type = "..."`.
pub const TYPES: &[&str] = &[
    "record_modifier",
    "grep",
    "rename",
    "partial_message",
    "parser",
    "nest",
    "modify",
];

/// Builds the transform `type_name` from its options (the entry's table with the common keys
/// removed; a `toml::Deserializer` keeps spans for error positions, a `toml::Table` works too).
///
/// Errors: [`EntryError::UnknownType`] for an unknown `type`, [`EntryError::Parse`] when the
/// options do not deserialize (the message names the unknown, missing or mistyped key), and
/// [`EntryError::Fields`] for values that parse but make no sense (a bad regex), one per key.
pub fn build<'de, D>(type_name: &str, options: D) -> Result<Box<dyn Transform>, EntryError>
where
    D: serde::Deserializer<'de, Error = toml::de::Error>,
{
    Ok(match type_name {
        "record_modifier" => Box::new(record_modifier::RecordModifier::build(
            record_modifier::RecordModifierConfig::deserialize(options)?,
        )?),
        "grep" => Box::new(grep::Grep::build(grep::GrepConfig::deserialize(options)?)?),
        "rename" => Box::new(rename::Rename::build(rename::RenameConfig::deserialize(
            options,
        )?)?),
        "partial_message" => Box::new(partial_message::PartialMessage::build(
            partial_message::PartialMessageConfig::deserialize(options)?,
        )?),
        "parser" => Box::new(parser::ParserTransform::build(
            parser::ParserConfig::deserialize(options)?,
        )?),
        "nest" => Box::new(nest::Nest::build(nest::NestConfig::deserialize(options)?)?),
        "modify" => Box::new(modify::Modify::build(modify::ModifyConfig::deserialize(
            options,
        )?)?),
        other => {
            return Err(EntryError::UnknownType {
                given: other.to_string(),
                known: TYPES,
            })
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Builds the way the config loader does: from a `toml::Deserializer` over the options.
    fn build_src(name: &str, src: &str) -> Result<Box<dyn Transform>, EntryError> {
        build(name, toml::Deserializer::parse(src).unwrap())
    }

    #[test]
    fn every_listed_type_builds() {
        let examples = [
            ("record_modifier", "records = { a = \"1\" }"),
            ("grep", "regex = [\"log x\"]"),
            ("rename", "rename = { a = \"b\" }"),
            ("partial_message", ""),
            ("parser", "[[parsers]]\nformat = \"json\""),
            ("nest", "operation = \"lift\"\nnested_under = \"k\""),
            ("modify", "set = { a = \"b\" }"),
        ];
        for (name, src) in examples {
            assert!(TYPES.contains(&name));
            if let Err(e) = build_src(name, src) {
                panic!("{name}: {e:?}");
            }
            // A plain table works as well.
            assert!(build(name, src.parse::<toml::Table>().unwrap()).is_ok());
        }
        assert_eq!(examples.len(), TYPES.len());
    }

    #[test]
    fn unknown_type_lists_the_known_ones() {
        match build_src("lua", "") {
            Err(EntryError::UnknownType { given, known }) => {
                assert_eq!(given, "lua");
                assert_eq!(known, TYPES);
            }
            other => panic!("{:?}", other.err()),
        }
    }

    #[test]
    fn unknown_option_is_a_serde_error_naming_the_key() {
        for (name, src, bad_key) in [
            ("record_modifier", "recordz = { a = \"1\" }", "recordz"),
            ("grep", "regexp = [\"log x\"]", "regexp"),
            (
                "rename",
                "rename = { a = \"b\" }\nrenam = { c = \"d\" }",
                "renam",
            ),
            ("partial_message", "flush_timout = \"1s\"", "flush_timout"),
            (
                "parser",
                "key_nam = \"log\"\n[[parsers]]\nformat = \"json\"",
                "key_nam",
            ),
            (
                "nest",
                "operation = \"nest\"\nwildcards = \"a\"",
                "wildcards",
            ),
            ("modify", "sett = { a = \"b\" }", "sett"),
        ] {
            match build_src(name, src) {
                Err(EntryError::Parse(e)) => {
                    assert!(
                        e.message().contains(bad_key),
                        "{name}: `{e}` should name `{bad_key}`"
                    );
                    let span = e.span().expect("error carries the key's position");
                    assert_eq!(&src[span], bad_key, "{name}");
                }
                other => panic!("{name}: {:?}", other.err()),
            }
        }
    }

    #[test]
    fn mistyped_option_is_a_serde_error() {
        let cases = [
            ("partial_message", "flush_timeout = true", "flush_timeout"),
            ("grep", "logical_op = \"xor\"", "xor"),
            ("record_modifier", "records = { port = 8080 }", "string"),
        ];
        for (name, src, needle) in cases {
            match build_src(name, src) {
                Err(EntryError::Parse(e)) => assert!(e.to_string().contains(needle), "{name}: {e}"),
                other => panic!("{name}: {:?}", other.err()),
            }
        }
    }

    #[test]
    fn semantic_errors_name_the_key() {
        match build_src("grep", "regex = [\"log (\"]") {
            Err(EntryError::Fields(f)) => {
                assert_eq!(f[0].key, "regex");
                assert!(f[0].message.contains("log ("), "{}", f[0].message);
            }
            other => panic!("{:?}", other.err()),
        }
    }
}
