//! The native entries a Fluent Bit file translates into, written out as the TOML text the
//! native loader reads, with the classic file's place of every key kept for error messages.

use std::fmt::Write as _;
use std::path::PathBuf;

/// Where a native key came from in the classic file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct At {
    pub file: PathBuf,
    pub line: usize,
    /// The classic key as written (`Mem_Buf_Limit`).
    pub key: String,
}

/// A native value.
#[derive(Clone, Debug)]
pub enum Val {
    Str(String),
    Bool(bool),
    Int(u64),
    /// An array of strings, one element per classic line (`Record`, `Regex`).
    List(Vec<(String, At)>),
    /// A table of strings, one entry per classic line (`rdkafka.*`).
    Table(Vec<(String, String, At)>),
    /// An array of inline tables of scalars (a parser filter's `parsers`, one per `Parser`).
    Tables(Vec<Vec<(String, Val)>>),
    /// An array of tables of strings, one table per classic line (`Security.Users`).
    Records(Vec<(Vec<(String, String)>, At)>),
}

/// One native key with its value and origin.
#[derive(Clone, Debug)]
pub struct Key {
    pub native: String,
    pub value: Val,
    pub at: At,
}

/// Which native array an entry goes to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Part {
    Source,
    Transform,
    Sink,
}

impl Part {
    fn array(self) -> &'static str {
        match self {
            Part::Source => "sources",
            Part::Transform => "transforms",
            Part::Sink => "sinks",
        }
    }
}

/// One native entry (`[[sinks]]`, ...) built from one classic section.
#[derive(Clone, Debug)]
pub struct Native {
    pub part: Part,
    /// `[OUTPUT] kinesis_streams`: how messages name the section.
    pub label: String,
    pub file: PathBuf,
    /// Line of the section header.
    pub line: usize,
    pub keys: Vec<Key>,
}

impl Native {
    pub fn new(part: Part, label: String, file: PathBuf, line: usize) -> Native {
        Native {
            part,
            label,
            file,
            line,
            keys: Vec::new(),
        }
    }

    pub fn set(&mut self, native: &str, value: Val, at: At) {
        self.keys.push(Key {
            native: native.to_string(),
            value,
            at,
        });
    }

    pub fn has(&self, native: &str) -> bool {
        self.keys.iter().any(|k| k.native == native)
    }

    /// The origin of a native key: the key itself (`tls.crt_file`), else its first part for
    /// dotted keys and list items (`rdkafka.x`, `users[0].username`), if set.
    pub fn origin(&self, native: &str) -> Option<&At> {
        let top = native.split(['.', '[']).next().unwrap_or(native);
        self.keys
            .iter()
            .find(|k| k.native == native)
            .or_else(|| self.keys.iter().find(|k| k.native == top))
            .map(|k| &k.at)
    }
}

/// The `[service]` keys.
#[derive(Clone, Debug, Default)]
pub struct Service {
    pub keys: Vec<Key>,
}

/// The translated file as native TOML text.
pub struct Document {
    pub text: String,
    /// For each native entry, its loader label (`sinks[0]`) and index into `entries`.
    pub labels: Vec<(String, usize)>,
}

/// Writes the native TOML: `[service]`, then sources, transforms and sinks, each array in the
/// classic file's order.
pub fn write(service: &Service, entries: &[Native]) -> Document {
    let mut text = String::new();
    let mut labels = Vec::new();
    if !service.keys.is_empty() {
        text.push_str("[service]\n");
        for key in &service.keys {
            write_key(&mut text, key);
        }
    }
    for part in [Part::Source, Part::Transform, Part::Sink] {
        for (index, (i, entry)) in entries
            .iter()
            .enumerate()
            .filter(|(_, e)| e.part == part)
            .enumerate()
        {
            labels.push((format!("{}[{index}]", part.array()), i));
            let _ = writeln!(text, "\n[[{}]]", part.array());
            for key in &entry.keys {
                write_key(&mut text, key);
            }
        }
    }
    Document { text, labels }
}

fn write_key(text: &mut String, key: &Key) {
    match &key.value {
        Val::Str(s) => {
            let _ = writeln!(text, "{} = {}", key.native, quote(s));
        }
        Val::Bool(b) => {
            let _ = writeln!(text, "{} = {b}", key.native);
        }
        Val::Int(n) => {
            let _ = writeln!(text, "{} = {n}", key.native);
        }
        Val::List(items) => {
            let _ = writeln!(text, "{} = [", key.native);
            for (item, _) in items {
                let _ = writeln!(text, "    {},", quote(item));
            }
            text.push_str("]\n");
        }
        Val::Table(items) => {
            for (name, value, _) in items {
                let _ = writeln!(text, "{}.{} = {}", key.native, quote(name), quote(value));
            }
        }
        Val::Tables(tables) => {
            let _ = writeln!(text, "{} = [", key.native);
            for table in tables {
                let fields: Vec<String> = table
                    .iter()
                    .filter_map(|(name, value)| {
                        inline_scalar(value).map(|v| format!("{name} = {v}"))
                    })
                    .collect();
                let _ = writeln!(text, "    {{ {} }},", fields.join(", "));
            }
            text.push_str("]\n");
        }
        Val::Records(records) => {
            let _ = writeln!(text, "{} = [", key.native);
            for (fields, _) in records {
                let fields: Vec<String> = fields
                    .iter()
                    .map(|(name, value)| format!("{} = {}", quote(name), quote(value)))
                    .collect();
                let _ = writeln!(text, "    {{ {} }},", fields.join(", "));
            }
            text.push_str("]\n");
        }
    }
}

/// A scalar as a TOML value; lists and tables are not written inline.
fn inline_scalar(value: &Val) -> Option<String> {
    match value {
        Val::Str(s) => Some(quote(s)),
        Val::Bool(b) => Some(b.to_string()),
        Val::Int(n) => Some(n.to_string()),
        _ => None,
    }
}

/// A TOML basic string. `${` is doubled to `$${` so the native loader, which interpolates
/// `${VAR}` itself, keeps the value as it is (variables were substituted already).
pub fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '$' if chars.peek() == Some(&'{') => out.push_str("$$"),
            c if c.is_control() => {
                let _ = write!(out, "\\u{:04X}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting_survives_the_toml_parser_and_interpolation() {
        for s in [
            "plain",
            "a \"b\" \\c",
            "tab\there\nnl",
            "${NOT_A_VAR} $x",
            "é\u{1}",
        ] {
            let text = format!("v = {}", quote(s));
            let table: toml::Table = text.parse().unwrap();
            let parsed = table["v"].as_str().unwrap();
            let restored = crate::config::env::interpolate(parsed, |_| None).unwrap();
            assert_eq!(restored, s);
        }
    }
}
