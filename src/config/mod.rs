//! Typed configuration: the native TOML file, `${ENV}` interpolation and validation that names
//! the file, the line and the key of every problem.
//!
//! The file has four parts: `[service]`, `[[sources]]`, `[[transforms]]` and `[[sinks]]`. Every
//! entry has a `type`; transforms and sinks select records with `match` (a Fluent Bit glob on the
//! tag) or `match_regex`. The keys every entry shares are handled here; the rest of an entry is
//! deserialized by the component's own config struct (with `deny_unknown_fields`), so each
//! component documents its options next to its code.

pub mod env;
pub mod field;
pub mod fluent_bit;
pub mod units;

use std::fmt;
use std::net::SocketAddr;
use std::ops::Range;
use std::path::{Path, PathBuf};

use serde::de::IntoDeserializer;
use serde::Deserialize;
use toml::de::{DeTable, DeValue};
use toml::Spanned;

use crate::buffer::disk::{DiskSettings, FsyncPolicy, WhenFull};
use crate::buffer::BufferKind;
use crate::route::TagMatcher;
use crate::sink::dead_letter::DeadLetterSettings;
use crate::sink::SinkConfig;
use crate::source::SourceConfig;
use crate::transform::Transform;
use field::{EntryError, FieldError};
use units::{ByteSize, Duration};

/// The whole configuration, validated.
pub struct Config {
    pub service: ServiceConfig,
    pub sources: Vec<SourceEntry>,
    pub transforms: Vec<TransformEntry>,
    pub sinks: Vec<SinkEntry>,
}

/// `[service]`: process-wide settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServiceConfig {
    /// How long SIGTERM/SIGINT may take to drain and flush every sink before the process exits
    /// anyway. ECS waits 30 s between SIGTERM and SIGKILL by default.
    pub grace_period: Duration,
    /// Address of the HTTP server for `/health` and `/metrics`; `"off"` disables it.
    pub http_listen: String,
    /// `error`, `warn`, `info`, `debug` or `trace`; `RUST_LOG` overrides it.
    pub log_level: String,
    /// `text` or `json`.
    pub log_format: LogFormat,
    /// `/health` reports a sink unhealthy (`<sink>.buffer_fill`) while its buffer is at least
    /// this full (0 < x <= 1): the memory queue against `buffer_limit`, or the disk buffer
    /// against `buffer_max_size`. Default 0.9.
    pub health_buffer_threshold: f64,
    /// Threads that run the sources, transforms and sinks (the async runtime's workers); `0`:
    /// one per CPU core. Default 1: one thread carries hundreds of thousands of records per
    /// second, and records handed between threads cost wake-ups and cache misses (measured in
    /// docs/performance.md: 17% less CPU per record with acks, 7-9% on the tail paths). Blocking
    /// work (file reads of `tail`, the disk buffer, librdkafka) has threads of its own anyway.
    pub worker_threads: usize,
}

impl Default for ServiceConfig {
    fn default() -> Self {
        ServiceConfig {
            grace_period: Duration::from_secs(30),
            http_listen: "127.0.0.1:2020".to_string(),
            log_level: "info".to_string(),
            log_format: LogFormat::Text,
            health_buffer_threshold: crate::buffer::monitor::DEFAULT_THRESHOLD,
            worker_threads: 1,
        }
    }
}

impl ServiceConfig {
    /// The HTTP listen address, or `None` when disabled.
    pub fn http_addr(&self) -> Option<SocketAddr> {
        match self.http_listen.trim() {
            "" | "off" | "false" | "disabled" => None,
            addr => addr.parse().ok(),
        }
    }

    /// The runtime's worker count: `None` for one per CPU core.
    pub fn workers(&self) -> Option<usize> {
        (self.worker_threads > 0).then_some(self.worker_threads)
    }

    fn validate(&self) -> Vec<FieldError> {
        let mut problems = Vec::new();
        if self.worker_threads > MAX_WORKER_THREADS {
            problems.push(FieldError::new(
                "worker_threads",
                format!(
                    "`{}` threads is more than {MAX_WORKER_THREADS}: give a thread count such \
                     as 1 or 4, or 0 for one per CPU core",
                    self.worker_threads
                ),
            ));
        }
        let listen = self.http_listen.trim();
        if !matches!(listen, "" | "off" | "false" | "disabled")
            && listen.parse::<SocketAddr>().is_err()
        {
            problems.push(FieldError::new(
                "http_listen",
                format!("`{listen}` is not an address such as \"127.0.0.1:2020\" (or \"off\")"),
            ));
        }
        let threshold = self.health_buffer_threshold;
        if !(threshold > 0.0 && threshold <= 1.0) {
            problems.push(FieldError::new(
                "health_buffer_threshold",
                format!(
                    "`{threshold}` is not a fraction of the buffer: give a number above 0 and \
                     at most 1, such as 0.9 (1 reports only a full buffer)"
                ),
            ));
        }
        if !matches!(
            self.log_level.as_str(),
            "error" | "warn" | "info" | "debug" | "trace"
        ) {
            problems.push(FieldError::new(
                "log_level",
                format!(
                    "`{}` is not one of error, warn, info, debug, trace",
                    self.log_level
                ),
            ));
        }
        problems
    }
}

/// Upper bound of `worker_threads`: a larger number is a typo, not a machine.
const MAX_WORKER_THREADS: usize = 1024;

/// Format of logferry's own log lines.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

/// One `[[sources]]` entry.
pub struct SourceEntry {
    /// `name`, or `<type>.<index>`: how metrics and logs refer to it.
    pub name: String,
    pub config: SourceConfig,
}

/// One `[[transforms]]` entry, built.
pub struct TransformEntry {
    pub name: String,
    pub matcher: TagMatcher,
    pub transform: Box<dyn Transform>,
}

/// One `[[sinks]]` entry.
pub struct SinkEntry {
    pub name: String,
    pub matcher: TagMatcher,
    /// Bytes of records that may wait in this sink's queue before sources are paused.
    pub buffer_limit: ByteSize,
    /// `buffer` (`memory` or `disk`) with the disk buffer's `buffer_path`, `buffer_max_size`,
    /// `fsync` and `when_full`.
    pub buffer: BufferKind,
    /// `dead_letter_path` and `dead_letter_max_size`: where records that can never be
    /// delivered go. `None` (the default): they are counted as dropped and logged.
    pub dead_letter: Option<DeadLetterSettings>,
    pub config: SinkConfig,
}

/// Default bound of a sink's in-memory queue.
pub const DEFAULT_BUFFER_LIMIT: ByteSize = ByteSize::mib(16);

/// One problem found in a config file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub file: PathBuf,
    /// 1-based line, when the problem has a place in the file.
    pub line: Option<usize>,
    /// The entry, e.g. `sinks[1] (file)`, when the problem is inside one.
    pub entry: Option<String>,
    /// The key, when one is to blame.
    pub key: Option<String>,
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
        }
        f.write_str(": ")?;
        if let Some(entry) = &self.entry {
            write!(f, "{entry}: ")?;
        }
        if let Some(key) = &self.key {
            write!(f, "`{key}`: ")?;
        }
        f.write_str(&self.message)
    }
}

/// Every problem found in a config file, one per line when displayed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigError {
    pub problems: Vec<Problem>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.problems.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{p}")?;
        }
        Ok(())
    }
}

impl Config {
    /// Reads, interpolates and validates a config file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            problems: vec![Problem {
                file: path.to_path_buf(),
                line: None,
                entry: None,
                key: None,
                message: format!("cannot read the config file: {e}"),
            }],
        })?;
        Config::parse(path, &text, &|name| std::env::var(name).ok())
    }

    /// Parses config text; `path` is only used in messages. `lookup` resolves `${VAR}`.
    pub fn parse(
        path: &Path,
        text: &str,
        lookup: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Config, ConfigError> {
        let mut cx = Loader {
            file: path.to_path_buf(),
            text,
            problems: Vec::new(),
        };
        let config = cx.load(lookup);
        match config {
            Some(config) if cx.problems.is_empty() => Ok(config),
            _ => Err(ConfigError {
                problems: cx.problems,
            }),
        }
    }
}

/// Keys every transform and sink entry may have, besides its component's own.
const MATCH_KEYS: [&str; 2] = ["match", "match_regex"];

struct Loader<'t> {
    file: PathBuf,
    text: &'t str,
    problems: Vec<Problem>,
}

impl<'t> Loader<'t> {
    fn line_of(&self, offset: usize) -> usize {
        let offset = offset.min(self.text.len());
        self.text.as_bytes()[..offset]
            .iter()
            .filter(|&&b| b == b'\n')
            .count()
            + 1
    }

    fn problem(
        &mut self,
        span: Option<Range<usize>>,
        entry: Option<&str>,
        key: Option<&str>,
        message: impl Into<String>,
    ) {
        let line = span.map(|s| self.line_of(s.start));
        self.problems.push(Problem {
            file: self.file.clone(),
            line,
            entry: entry.map(str::to_string),
            key: key.map(str::to_string),
            message: message.into(),
        });
    }

    fn load(&mut self, lookup: &dyn Fn(&str) -> Option<String>) -> Option<Config> {
        let mut root = match DeTable::parse(self.text) {
            Ok(root) => root,
            Err(e) => {
                self.problem(
                    e.span(),
                    None,
                    None,
                    format!("not valid TOML: {}", e.message()),
                );
                return None;
            }
        };
        root.get_mut().make_owned();
        let mut root = root.into_inner();
        for (key, value) in root.iter_mut() {
            let mut path = key.get_ref().to_string();
            self.interpolate(value, &mut path, lookup);
        }

        let mut service = None;
        let mut sources = Vec::new();
        let mut transforms = Vec::new();
        let mut sinks = Vec::new();
        for (key, value) in root {
            let span = value.span();
            match key.get_ref().as_ref() {
                "service" => service = self.service(value),
                "sources" => {
                    for (i, t) in self.entries("sources", value).into_iter().enumerate() {
                        if let Some(e) = self.source(i, t) {
                            sources.push(e);
                        }
                    }
                }
                "transforms" => {
                    for (i, t) in self.entries("transforms", value).into_iter().enumerate() {
                        if let Some(e) = self.transform(i, t) {
                            transforms.push(e);
                        }
                    }
                }
                "sinks" => {
                    for (i, t) in self.entries("sinks", value).into_iter().enumerate() {
                        if let Some(e) = self.sink(i, t) {
                            sinks.push(e);
                        }
                    }
                }
                other => {
                    let other = other.to_string();
                    self.problem(
                        Some(key.span()),
                        None,
                        Some(&other),
                        "unknown top-level key; expected [service], [[sources]], [[transforms]] or [[sinks]]",
                    );
                    let _ = span;
                }
            }
        }
        if sources.is_empty() && self.problems.is_empty() {
            self.problem(None, None, None, "no [[sources]]: nothing would be read");
        }
        if sinks.is_empty() && self.problems.is_empty() {
            self.problem(
                None,
                None,
                None,
                "no [[sinks]]: records would have nowhere to go",
            );
        }
        self.check_unique_names(&sources, &sinks);
        Some(Config {
            service: service.unwrap_or_default(),
            sources,
            transforms,
            sinks,
        })
    }

    fn check_unique_names(&mut self, sources: &[SourceEntry], sinks: &[SinkEntry]) {
        let mut seen = std::collections::HashSet::new();
        let names = sources
            .iter()
            .map(|s| &s.name)
            .chain(sinks.iter().map(|s| &s.name));
        let mut dups = Vec::new();
        for name in names {
            if !seen.insert(name.clone()) {
                dups.push(name.clone());
            }
        }
        for name in dups {
            self.problem(
                None,
                None,
                Some("name"),
                format!("`{name}` names more than one source or sink; names must be unique"),
            );
        }
        let mut dead_letter_paths = std::collections::HashMap::new();
        for sink in sinks {
            let Some(d) = &sink.dead_letter else { continue };
            let buffer_dir = sinks.iter().find_map(|s| match &s.buffer {
                BufferKind::Disk(b) if b.path == d.path => Some(s.name.clone()),
                _ => None,
            });
            let other = dead_letter_paths.insert(d.path.clone(), sink.name.clone());
            if let Some(other) = other.or(buffer_dir) {
                self.problem(
                    None,
                    Some(&sink.name),
                    Some("dead_letter_path"),
                    format!(
                        "{} is also used by `{other}`; give each sink its own dead-letter directory",
                        d.path.display()
                    ),
                );
            }
        }
        let mut paths = std::collections::HashMap::new();
        for sink in sinks {
            if let BufferKind::Disk(d) = &sink.buffer {
                if let Some(other) = paths.insert(d.path.clone(), sink.name.clone()) {
                    self.problem(
                        None,
                        Some(&sink.name),
                        Some("buffer_path"),
                        format!(
                            "{} is also the disk buffer of `{other}`; give each sink its own directory",
                            d.path.display()
                        ),
                    );
                }
            }
        }
    }

    /// Interpolates `${VAR}` in every string value, recording problems with the key's path.
    fn interpolate(
        &mut self,
        value: &mut Spanned<DeValue<'_>>,
        path: &mut String,
        lookup: &dyn Fn(&str) -> Option<String>,
    ) {
        let span = value.span();
        match value.get_mut() {
            DeValue::String(s) => match env::interpolate(s, lookup) {
                Ok(std::borrow::Cow::Owned(new)) => *s = std::borrow::Cow::Owned(new),
                Ok(std::borrow::Cow::Borrowed(_)) => {}
                Err(e) => {
                    let key = path.clone();
                    self.problem(Some(span), None, Some(&key), e.to_string());
                }
            },
            DeValue::Array(items) => {
                for item in items.iter_mut() {
                    self.interpolate(item, path, lookup);
                }
            }
            DeValue::Table(table) => {
                for (k, v) in table.iter_mut() {
                    let len = path.len();
                    if !path.is_empty() {
                        path.push('.');
                    }
                    path.push_str(k.get_ref());
                    self.interpolate(v, path, lookup);
                    path.truncate(len);
                }
            }
            _ => {}
        }
    }

    fn service(&mut self, value: Spanned<DeValue<'_>>) -> Option<ServiceConfig> {
        let span = value.span();
        let DeValue::Table(table) = value.into_inner() else {
            self.problem(
                Some(span),
                None,
                Some("service"),
                "must be a table: [service]",
            );
            return None;
        };
        let lines = KeyLines::of(&table);
        let config: ServiceConfig =
            match ServiceConfig::deserialize(Spanned::new(span.clone(), table).into_deserializer())
            {
                Ok(c) => c,
                Err(e) => {
                    self.parse_problem(&e, span, "service", &lines);
                    return None;
                }
            };
        for f in config.validate() {
            let at = lines.span(&f.key).or(Some(span.clone()));
            self.problem(at, Some("service"), Some(&f.key), f.message);
        }
        Some(config)
    }

    /// The tables of an array of tables (`[[sources]]`).
    fn entries<'i>(
        &mut self,
        what: &str,
        value: Spanned<DeValue<'i>>,
    ) -> Vec<Spanned<DeTable<'i>>> {
        let span = value.span();
        let DeValue::Array(items) = value.into_inner() else {
            self.problem(
                Some(span),
                None,
                Some(what),
                format!("must be an array of tables: write [[{what}]] above each entry"),
            );
            return Vec::new();
        };
        let mut out = Vec::new();
        for item in items {
            let span = item.span();
            match item.into_inner() {
                DeValue::Table(t) => out.push(Spanned::new(span, t)),
                _ => self.problem(
                    Some(span),
                    None,
                    Some(what),
                    format!("every entry must be a table: write [[{what}]] above each entry"),
                ),
            }
        }
        out
    }

    /// Removes a string-valued common key from an entry.
    fn take_string(
        &mut self,
        table: &mut DeTable<'_>,
        key: &str,
        entry: &str,
    ) -> Option<(String, Range<usize>)> {
        let value = table.remove(key)?;
        let span = value.span();
        match value.into_inner() {
            DeValue::String(s) => Some((s.into_owned(), span)),
            other => {
                self.problem(
                    Some(span),
                    Some(entry),
                    Some(key),
                    format!("must be a string, found {}", other.type_str()),
                );
                None
            }
        }
    }

    /// Splits off `type` and `name` and labels the entry for messages.
    fn head(
        &mut self,
        section: &str,
        index: usize,
        entry: &mut Spanned<DeTable<'_>>,
    ) -> Option<(String, String, String)> {
        let span = entry.span();
        let label = format!("{section}[{index}]");
        let kind = self.take_string(entry.get_mut(), "type", &label);
        let name = self.take_string(entry.get_mut(), "name", &label);
        let Some((kind, _)) = kind else {
            if !self
                .problems
                .iter()
                .any(|p| p.entry.as_deref() == Some(&label))
            {
                self.problem(
                    Some(span),
                    Some(&label),
                    Some("type"),
                    "missing: every entry needs a `type`",
                );
            }
            return None;
        };
        let label = format!("{label} ({kind})");
        let name = name
            .map(|(n, _)| n)
            .unwrap_or_else(|| format!("{kind}.{index}"));
        Some((kind, name, label))
    }

    fn matcher(&mut self, entry: &mut Spanned<DeTable<'_>>, label: &str) -> Option<TagMatcher> {
        let span = entry.span();
        let glob = self.take_string(entry.get_mut(), MATCH_KEYS[0], label);
        let regex = self.take_string(entry.get_mut(), MATCH_KEYS[1], label);
        match (glob, regex) {
            (Some(_), Some((_, at))) => {
                self.problem(
                    Some(at),
                    Some(label),
                    Some("match_regex"),
                    "give either `match` or `match_regex`, not both",
                );
                None
            }
            (Some((glob, _)), None) => Some(TagMatcher::glob(&glob)),
            (None, Some((re, at))) => match TagMatcher::regex(&re) {
                Ok(m) => Some(m),
                Err(e) => {
                    self.problem(Some(at), Some(label), Some("match_regex"), e.to_string());
                    None
                }
            },
            (None, None) => {
                self.problem(
                    Some(span),
                    Some(label),
                    Some("match"),
                    "missing: give `match` (a tag glob such as \"app.*\" or \"*\") or `match_regex`",
                );
                None
            }
        }
    }

    fn source(&mut self, index: usize, mut entry: Spanned<DeTable<'_>>) -> Option<SourceEntry> {
        let (kind, name, label) = self.head("sources", index, &mut entry)?;
        let span = entry.span();
        let lines = KeyLines::of(entry.get_ref());
        let result = SourceConfig::parse(&kind, entry.into_deserializer());
        let config = self.entry_result(result, span, &label, &lines)?;
        Some(SourceEntry { name, config })
    }

    fn transform(
        &mut self,
        index: usize,
        mut entry: Spanned<DeTable<'_>>,
    ) -> Option<TransformEntry> {
        let (kind, name, label) = self.head("transforms", index, &mut entry)?;
        let matcher = self.matcher(&mut entry, &label);
        let span = entry.span();
        let lines = KeyLines::of(entry.get_ref());
        let result = crate::transform::build(&kind, entry.into_deserializer());
        let transform = self.entry_result(result, span, &label, &lines)?;
        Some(TransformEntry {
            name,
            matcher: matcher?,
            transform,
        })
    }

    fn sink(&mut self, index: usize, mut entry: Spanned<DeTable<'_>>) -> Option<SinkEntry> {
        let (kind, name, label) = self.head("sinks", index, &mut entry)?;
        let matcher = self.matcher(&mut entry, &label);
        let buffer_limit = match self.take_string(entry.get_mut(), "buffer_limit", &label) {
            Some((text, at)) => match text.parse::<ByteSize>() {
                Ok(size) if size.bytes() > 0 => Some(size),
                Ok(_) => {
                    self.problem(Some(at), Some(&label), Some("buffer_limit"), "must be > 0");
                    None
                }
                Err(e) => {
                    self.problem(Some(at), Some(&label), Some("buffer_limit"), e);
                    None
                }
            },
            None => Some(DEFAULT_BUFFER_LIMIT),
        };
        let buffer = self.buffer_kind(&mut entry, &label);
        let dead_letter = self.dead_letter(&mut entry, &label);
        let span = entry.span();
        let lines = KeyLines::of(entry.get_ref());
        let result = SinkConfig::parse(&kind, entry.into_deserializer());
        let config = self.entry_result(result, span, &label, &lines)?;
        Some(SinkEntry {
            name,
            matcher: matcher?,
            buffer_limit: buffer_limit?,
            buffer: buffer?,
            dead_letter: dead_letter?,
            config,
        })
    }

    /// Takes `dead_letter_path` and `dead_letter_max_size` off a sink entry.
    fn dead_letter(
        &mut self,
        entry: &mut Spanned<DeTable<'_>>,
        label: &str,
    ) -> Option<Option<DeadLetterSettings>> {
        let path = self.take_string(entry.get_mut(), "dead_letter_path", label);
        let max_size = self.take_string(entry.get_mut(), "dead_letter_max_size", label);
        let max_size = match max_size {
            None => crate::sink::dead_letter::DEFAULT_MAX_SIZE,
            Some((text, at)) => match text.parse::<ByteSize>() {
                Ok(size) if size.bytes() > 0 && path.is_some() => size.bytes(),
                Ok(size) if size.bytes() > 0 => {
                    self.problem(
                        Some(at),
                        Some(label),
                        Some("dead_letter_max_size"),
                        "applies to dead-letter files only: add dead_letter_path",
                    );
                    return None;
                }
                Ok(_) => {
                    let key = Some("dead_letter_max_size");
                    self.problem(Some(at), Some(label), key, "must be > 0");
                    return None;
                }
                Err(e) => {
                    self.problem(Some(at), Some(label), Some("dead_letter_max_size"), e);
                    return None;
                }
            },
        };
        match path {
            None => Some(None),
            Some((p, at)) if p.trim().is_empty() => {
                let message = "must name a directory (one per sink)";
                self.problem(Some(at), Some(label), Some("dead_letter_path"), message);
                None
            }
            Some((p, _)) => Some(Some(DeadLetterSettings {
                path: PathBuf::from(p),
                max_size,
            })),
        }
    }

    /// Takes the disk buffer keys (`buffer`, `buffer_path`, `buffer_max_size`, `fsync`,
    /// `when_full`) off a sink entry.
    fn buffer_kind(&mut self, entry: &mut Spanned<DeTable<'_>>, label: &str) -> Option<BufferKind> {
        let span = entry.span();
        let kind = self.take_string(entry.get_mut(), "buffer", label);
        let path = self.take_string(entry.get_mut(), "buffer_path", label);
        let max_size = self.take_string(entry.get_mut(), "buffer_max_size", label);
        let fsync = self.take_string(entry.get_mut(), "fsync", label);
        let when_full = self.take_string(entry.get_mut(), "when_full", label);
        let disk = match &kind {
            None => false,
            Some((k, _)) if k == "memory" => false,
            Some((k, _)) if k == "disk" => true,
            Some((k, at)) => {
                self.problem(
                    Some(at.clone()),
                    Some(label),
                    Some("buffer"),
                    format!("`{k}` is not one of memory, disk"),
                );
                return None;
            }
        };
        if !disk {
            let mut ok = true;
            for (key, value) in [
                ("buffer_path", &path),
                ("buffer_max_size", &max_size),
                ("fsync", &fsync),
                ("when_full", &when_full),
            ] {
                if let Some((_, at)) = value {
                    self.problem(
                        Some(at.clone()),
                        Some(label),
                        Some(key),
                        "applies to the disk buffer only: add buffer = \"disk\"",
                    );
                    ok = false;
                }
            }
            return ok.then_some(BufferKind::Memory);
        }
        let path = match path {
            Some((p, _)) => Some(PathBuf::from(p)),
            None => {
                let at = kind.as_ref().map(|(_, at)| at.clone()).unwrap_or(span);
                self.problem(
                    Some(at),
                    Some(label),
                    Some("buffer_path"),
                    "missing: the directory of this sink's disk buffer (one directory per sink)",
                );
                None
            }
        };
        let max_size = match max_size {
            None => Some(crate::buffer::disk::DEFAULT_MAX_SIZE),
            Some((text, at)) => match text.parse::<ByteSize>() {
                Ok(size) if size.bytes() > 0 => Some(size.bytes()),
                Ok(_) => {
                    self.problem(
                        Some(at),
                        Some(label),
                        Some("buffer_max_size"),
                        "must be > 0",
                    );
                    None
                }
                Err(e) => {
                    self.problem(Some(at), Some(label), Some("buffer_max_size"), e);
                    None
                }
            },
        };
        let fsync = match fsync {
            None => Some(FsyncPolicy::Interval(
                crate::buffer::disk::DEFAULT_FSYNC_INTERVAL,
            )),
            Some((text, _)) if text == "always" => Some(FsyncPolicy::Always),
            Some((text, at)) => match text.parse::<Duration>() {
                Ok(d) if !d.get().is_zero() => Some(FsyncPolicy::Interval(d.get())),
                Ok(_) => {
                    self.problem(
                        Some(at),
                        Some(label),
                        Some("fsync"),
                        "must be \"always\" or an interval > 0 such as \"200ms\"",
                    );
                    None
                }
                Err(e) => {
                    self.problem(
                        Some(at),
                        Some(label),
                        Some("fsync"),
                        format!("{e}; or write \"always\""),
                    );
                    None
                }
            },
        };
        let when_full = match when_full {
            None => Some(WhenFull::Block),
            Some((text, _)) if text == "block" => Some(WhenFull::Block),
            Some((text, _)) if text == "drop_newest" => Some(WhenFull::DropNewest),
            Some((text, at)) => {
                self.problem(
                    Some(at),
                    Some(label),
                    Some("when_full"),
                    format!("`{text}` is not one of block, drop_newest"),
                );
                None
            }
        };
        Some(BufferKind::Disk(DiskSettings {
            path: path?,
            max_size: max_size?,
            fsync: fsync?,
            when_full: when_full?,
        }))
    }

    fn entry_result<T>(
        &mut self,
        result: Result<T, EntryError>,
        span: Range<usize>,
        label: &str,
        lines: &KeyLines,
    ) -> Option<T> {
        match result {
            Ok(v) => Some(v),
            Err(EntryError::UnknownType { given, known }) => {
                let at = lines.span("type").or(Some(span));
                self.problem(
                    at,
                    Some(label),
                    Some("type"),
                    format!("unknown type `{given}`; known types: {}", known.join(", ")),
                );
                None
            }
            Err(EntryError::Parse(e)) => {
                self.parse_problem(&e, span, label, lines);
                None
            }
            Err(EntryError::Fields(fields)) => {
                for f in fields {
                    let at = lines.span(&f.key).or(Some(span.clone()));
                    self.problem(at, Some(label), Some(&f.key), f.message);
                }
                None
            }
        }
    }

    /// A serde error: find the key it is about, from its span or its message.
    fn parse_problem(
        &mut self,
        e: &toml::de::Error,
        entry_span: Range<usize>,
        label: &str,
        lines: &KeyLines,
    ) {
        let message = e.message().to_string();
        let named = backticked(&message);
        let by_span = e.span().and_then(|s| lines.key_at(s.start));
        let key = match (&by_span, &named) {
            // "unknown field `x`" / "missing field `x`": the message names the key.
            (_, Some(n))
                if message.starts_with("unknown field") || message.starts_with("missing field") =>
            {
                Some(n.clone())
            }
            (Some(k), _) => Some(k.clone()),
            (None, Some(n)) => Some(n.clone()),
            (None, None) => None,
        };
        let at = key
            .as_deref()
            .and_then(|k| lines.span(k))
            .or(e.span())
            .or(Some(entry_span));
        let message = if message.starts_with("unknown field") {
            format!(
                "unknown key: {}",
                message.trim_start_matches("unknown field ")
            )
        } else if message.starts_with("missing field") {
            "missing: this option is required".to_string()
        } else {
            message
        };
        self.problem(at, Some(label), key.as_deref(), message);
    }
}

/// The first `...`-quoted word of a serde message (`unknown field `foo``).
fn backticked(message: &str) -> Option<String> {
    let start = message.find('`')? + 1;
    let end = message[start..].find('`')? + start;
    Some(message[start..end].to_string())
}

/// Where each top-level key of an entry is, to point at the right line.
struct KeyLines {
    keys: Vec<(String, Range<usize>, Range<usize>)>,
}

impl KeyLines {
    fn of(table: &DeTable<'_>) -> KeyLines {
        KeyLines {
            keys: table
                .iter()
                .map(|(k, v)| (k.get_ref().to_string(), k.span(), v.span()))
                .collect(),
        }
    }

    fn span(&self, key: &str) -> Option<Range<usize>> {
        let top = key.split('.').next().unwrap_or(key);
        self.keys
            .iter()
            .find(|(k, _, _)| k == top)
            .map(|(_, ks, _)| ks.clone())
    }

    fn key_at(&self, offset: usize) -> Option<String> {
        self.keys
            .iter()
            .find(|(_, ks, vs)| ks.contains(&offset) || vs.contains(&offset) || vs.start == offset)
            .map(|(k, _, _)| k.clone())
    }
}

#[cfg(test)]
mod tests;
