//! Fluent Bit classic config (what FireLens generates) read as a logferry [`Config`], so the
//! logferry image can replace aws-for-fluent-bit as a FireLens log router with the task
//! definition unchanged.
//!
//! How: [`reader`] reads the classic file (sections, `@INCLUDE`, `@SET`, `${VAR}`), [`translate`]
//! turns each section into a native entry (deciding every key: mapped, documented no-op, or
//! refused), [`native`] writes those entries as native TOML, and the native loader
//! ([`Config::parse`]) builds and validates them with the same component structs as a TOML file.
//! Every problem, whether found here or by the native loader, is reported against the classic
//! file: `fluent-bit.conf:LINE: [OUTPUT] kinesis_streams: `key`: message`.
//!
//! docs/firelens.md lists what is mapped, what is a no-op and what is refused.

pub mod defaults;
pub mod native;
pub mod reader;
pub mod translate;
pub mod values;

use std::path::{Path, PathBuf};

use super::{Config, ConfigError, Problem};
use native::Native;

/// A classic file translated to native TOML (for `logferry validate` output and tests).
pub struct Translation {
    /// The classic file that was read.
    pub path: PathBuf,
    /// The equivalent native TOML text.
    pub toml: String,
    entries: Vec<Native>,
    labels: Vec<(String, usize)>,
    service: native::Service,
}

/// Reads, translates and validates a Fluent Bit classic config file; `${VAR}` comes from
/// `@SET` and then the process environment.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    parse(path, &|name| std::env::var(name).ok())
}

/// Like [`load`], with `lookup` resolving `${VAR}` after `@SET` variables.
///
/// Every problem is reported at once: those of the classic file itself, and those the native
/// loader finds in the sections that translated cleanly.
pub fn parse(path: &Path, lookup: &dyn Fn(&str) -> Option<String>) -> Result<Config, ConfigError> {
    let (translation, mut problems) = translate_all(path, lookup);
    let virtual_path = path.with_extension("translated.toml");
    match Config::parse(&virtual_path, &translation.toml, &|_| None) {
        Ok(config) if problems.is_empty() => Ok(config),
        Ok(_) => Err(ConfigError { problems }),
        Err(e) => {
            let translation_failed = !problems.is_empty();
            for p in e.problems {
                // "no [[sinks]]" and the like follow from sections refused above.
                if translation_failed && p.entry.is_none() {
                    continue;
                }
                problems.push(translation.classic_problem(p));
            }
            problems.sort_by(|a, b| (&a.file, a.line).cmp(&(&b.file, b.line)));
            Err(ConfigError { problems })
        }
    }
}

/// Reads and translates a classic file into native TOML without building it.
pub fn translate(
    path: &Path,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<Translation, ConfigError> {
    match translate_all(path, lookup) {
        (translation, problems) if problems.is_empty() => Ok(translation),
        (_, problems) => Err(ConfigError { problems }),
    }
}

/// The translation of every section that translated cleanly, and the problems of the others.
fn translate_all(
    path: &Path,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> (Translation, Vec<Problem>) {
    let (sections, mut problems) = reader::read(path, lookup);
    let translated = translate::translate(&sections);
    problems.extend(translated.problems);
    if problems.is_empty() && !sections.is_empty() {
        let has = |part| translated.entries.iter().any(|e| e.part == part);
        if !has(native::Part::Source) {
            problems.push(top_problem(
                path,
                "no [INPUT] section: nothing would be read",
            ));
        }
        if !has(native::Part::Sink) {
            problems.push(top_problem(
                path,
                "no [OUTPUT] section: records would have nowhere to go",
            ));
        }
    } else if problems.is_empty() {
        problems.push(top_problem(
            path,
            "no [INPUT] or [OUTPUT] section: nothing to run",
        ));
    }
    let doc = native::write(&translated.service, &translated.entries);
    let translation = Translation {
        path: path.to_path_buf(),
        toml: doc.text,
        entries: translated.entries,
        labels: doc.labels,
        service: translated.service,
    };
    (translation, problems)
}

fn top_problem(path: &Path, message: &str) -> Problem {
    Problem {
        file: path.to_path_buf(),
        line: None,
        entry: None,
        key: None,
        message: message.to_string(),
    }
}

impl Translation {
    /// Turns a problem the native loader found in the translated TOML into one about the
    /// classic file: its file and line, the `[OUTPUT] plugin` section and the classic key.
    fn classic_problem(&self, p: Problem) -> Problem {
        let entry_label = p
            .entry
            .as_deref()
            .map(|e| e.split(' ').next().unwrap_or(e).to_string());
        let native = entry_label.as_deref().and_then(|label| {
            self.labels
                .iter()
                .find(|(l, _)| l == label)
                .and_then(|(_, i)| self.entries.get(*i))
        });
        if let Some(native) = native {
            let origin = p.key.as_deref().and_then(|k| native.origin(k));
            return Problem {
                file: origin.map_or(native.file.clone(), |o| o.file.clone()),
                line: Some(origin.map_or(native.line, |o| o.line)),
                entry: Some(native.label.clone()),
                key: origin.map(|o| o.key.clone()).or(p.key),
                message: p.message,
            };
        }
        if entry_label.as_deref() == Some("service") {
            let origin = p.key.as_deref().and_then(|k| {
                self.service
                    .keys
                    .iter()
                    .find(|key| key.native == k)
                    .map(|key| &key.at)
            });
            return Problem {
                file: origin.map_or(self.path.clone(), |o| o.file.clone()),
                line: origin.map(|o| o.line),
                entry: Some("[SERVICE]".to_string()),
                key: origin.map(|o| o.key.clone()).or(p.key),
                message: p.message,
            };
        }
        let message = if p.key.as_deref() == Some("name") {
            format!("{} (set a different `Alias` on one of them)", p.message)
        } else {
            p.message
        };
        Problem {
            file: self.path.clone(),
            line: None,
            entry: None,
            key: p
                .key
                .map(|k| if k == "name" { "Alias".to_string() } else { k }),
            message,
        }
    }
}

#[cfg(test)]
mod tests;
