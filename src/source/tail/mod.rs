//! The `tail` source: follows log files the way Fluent Bit's `in_tail` does, for EKS sidecars
//! (an app's log files on a shared volume) and DaemonSets (`/var/log/containers/*.log`).
//!
//! - [`files`]: globs, identity by device + inode, fingerprints, rotation searches, tags,
//!   Kubernetes metadata from container log file names.
//! - [`parser`]: `none`, `json`, `docker`, `cri`, `regex` line parsers and time formats.
//! - [`multiline`]: joining `cri` partial lines and Docker's split `log` pieces.
//! - [`checkpoint`]: the `db` file, advanced only after every sink acknowledged the records.
//! - [`reader`]: the polling loop. One thread per source reads every file in turn through one
//!   bounded buffer, with a bounded number of open handles; it waits while the router waits.

pub mod checkpoint;
pub mod files;
pub mod multiline;
pub mod parser;
pub mod reader;

use std::path::PathBuf;

use bytes::Bytes;
use serde::Deserialize;

use crate::config::field::FieldError;
use crate::config::units::{ByteSize, Duration};
use multiline::Mode;
use parser::{Parser, TimeParse, TimeRule};

pub use reader::start;

/// One path or glob, a comma-separated list of them, or an array.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(untagged)]
pub enum PathList {
    #[default]
    None,
    One(String),
    Many(Vec<String>),
}

impl PathList {
    /// The patterns, split on commas and trimmed, empty ones dropped.
    pub fn patterns(&self) -> Vec<String> {
        let items: Vec<&str> = match self {
            PathList::None => Vec::new(),
            PathList::One(s) => vec![s.as_str()],
            PathList::Many(v) => v.iter().map(String::as_str).collect(),
        };
        items
            .iter()
            .flat_map(|s| s.split(','))
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect()
    }
}

/// Options of `type = "tail"`. Names follow Fluent Bit's `in_tail` where it has them.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TailConfig {
    /// Files to follow: a glob, a comma-separated list of globs, or an array of them
    /// (required). `*` does not cross `/`. Symlinks are followed.
    pub path: PathList,
    /// Globs of paths never to read, matched against the whole path (`*` crosses `/`, so
    /// `*.gz` excludes every compressed file). Default none.
    pub exclude_path: PathList,
    /// Tag of the records. Each `*` becomes the file's path with `/` turned into `.`
    /// (`kube.*` -> `kube.var.log.containers.<file>`). Default `tail.*`.
    pub tag: String,
    /// For files already there when logferry starts and unknown to `db`: read them from the
    /// start (true) or only what is written from now on (false, the default). Files that
    /// appear later are always read from their start.
    pub read_from_head: bool,
    /// How often the globs are expanded again to find new files. Default 10s.
    pub refresh_interval: Duration,
    /// How often followed files are checked for new data, rotation and truncation.
    /// Default 250ms.
    pub poll_interval: Duration,
    /// After a file was renamed away or deleted, how long it is still followed before it is
    /// read to its end and closed. Default 5s.
    pub rotate_wait: Duration,
    /// Checkpoint file: where each file was read up to (and delivered). Without it, a restart
    /// starts over as configured by `read_from_head`. Default none.
    pub db: Option<PathBuf>,
    /// `none` (default), `json`, `docker`, `cri` or `regex` (with `regex`).
    pub parser: String,
    /// `parser = "regex"`: the pattern; named groups `(?<name>...)` become fields.
    pub regex: Option<String>,
    /// `json` / `regex`: the field holding the record's time. Default `time`.
    pub time_key: String,
    /// `json` / `regex`: strptime format of `time_key` (`%L` = fraction of a second after a
    /// `.`); without it the time is when the line was read.
    pub time_format: Option<String>,
    /// `json` / `regex`: keep `time_key` in the record once parsed. Default false.
    pub time_keep: bool,
    /// Field of the line when it is not parsed (`none`, or a line the parser rejects) and of
    /// the text for `cri`. Default `log`.
    pub key: String,
    /// Adds the file's path under this field. Default none.
    pub path_key: Option<String>,
    /// Longest line. A longer line is split into pieces of this size, or skipped with
    /// `skip_long_lines`. Also the longest joined multiline record. Default 1MiB.
    pub buffer_max_size: ByteSize,
    /// Bytes asked for by one read of a file, grown (doubling) up to `buffer_max_size` while a
    /// line is longer. One read's lines are records in memory at once before they are packed,
    /// so this, not `buffer_max_size`, sets what a backlog costs per read. Default 128KiB.
    pub buffer_chunk_size: ByteSize,
    /// Skip lines longer than `buffer_max_size` (counted and logged) instead of splitting them.
    pub skip_long_lines: bool,
    /// Join split lines: `cri` (`P` pieces up to the `F` line), `docker` (`log` pieces up to
    /// the one ending with a newline) or `off`. Default: `cri` with the `cri` parser, `docker`
    /// with the `docker` parser, otherwise off.
    pub multiline: Option<String>,
    /// A split line whose next piece has not come after this long is passed on as it is.
    /// Default 4s.
    pub multiline_flush: Duration,
    /// Most files kept open at once. Files beyond are reopened when they have new data;
    /// rotated files being finished are always kept open. Default 1024.
    pub max_open_files: usize,
    /// Most bytes of records read from the files and not yet delivered (or written to a disk
    /// buffer) by every sink they went to; reading pauses above it, and the files hold the
    /// rest. Keeps a node agent that finds a backlog at the size of this window instead of
    /// its sinks' `buffer_limit` (measured in docs/performance.md, "Memory"). Default
    /// [`DEFAULT_READ_AHEAD_LIMIT`], or `buffer_max_size` when that is larger (one line must
    /// fit): see [`TailConfig::effective_read_ahead_limit`].
    pub read_ahead_limit: Option<ByteSize>,
}

/// The default `read_ahead_limit`: 2 MiB. Each byte of the window costs about 2.2 bytes of
/// memory when the sinks send records as they come, and about 4 when an aggregating Kinesis
/// sink holds them in its aggregates until they are sent; at 4 MiB the aggregated 500k-line
/// backlog of `tail_side_by_side.py` peaked at 40-45 MiB, at 2 MiB at 31-33 MiB, at the same
/// CPU per line and a wall time from the same to ~40% longer (docs/performance.md, "Memory").
pub const DEFAULT_READ_AHEAD_LIMIT: ByteSize = ByteSize::mib(2);

impl TailConfig {
    /// `read_ahead_limit`, or the default: [`DEFAULT_READ_AHEAD_LIMIT`], raised to
    /// `buffer_max_size` so that the longest line always fits (a Fluent Bit config with a
    /// large `Buffer_Max_Size` then needs no window of its own).
    pub fn effective_read_ahead_limit(&self) -> ByteSize {
        self.read_ahead_limit.unwrap_or_else(|| {
            if self.buffer_max_size.bytes() > DEFAULT_READ_AHEAD_LIMIT.bytes() {
                self.buffer_max_size
            } else {
                DEFAULT_READ_AHEAD_LIMIT
            }
        })
    }
}

impl Default for TailConfig {
    fn default() -> Self {
        TailConfig {
            path: PathList::None,
            exclude_path: PathList::None,
            tag: "tail.*".to_string(),
            read_from_head: false,
            refresh_interval: Duration::from_secs(10),
            poll_interval: Duration::from_millis(250),
            rotate_wait: Duration::from_secs(5),
            db: None,
            parser: "none".to_string(),
            regex: None,
            time_key: "time".to_string(),
            time_format: None,
            time_keep: false,
            key: "log".to_string(),
            path_key: None,
            buffer_max_size: ByteSize::mib(1),
            buffer_chunk_size: ByteSize::kib(128),
            skip_long_lines: false,
            multiline: None,
            multiline_flush: Duration::from_secs(4),
            max_open_files: 1024,
            read_ahead_limit: None,
        }
    }
}

/// The options turned into what the reader uses.
#[derive(Debug, Clone)]
pub struct Compiled {
    pub include: Vec<glob::Pattern>,
    pub exclude: Vec<glob::Pattern>,
    pub parser: Parser,
    pub multiline: Mode,
    pub key: Bytes,
    pub path_key: Option<Bytes>,
}

impl TailConfig {
    /// Checks every option and returns them compiled (path patterns, parsers, multiline mode),
    /// which is what the reader runs with.
    pub fn validate(&self) -> Result<Compiled, Vec<FieldError>> {
        let mut problems = Vec::new();
        let mut globs = |key: &str, list: &PathList, required: bool| {
            let patterns = list.patterns();
            if required && patterns.is_empty() {
                problems.push(FieldError::new(
                    key,
                    "is required: the files to follow, e.g. \"/var/log/containers/*.log\"",
                ));
            }
            patterns
                .iter()
                .filter_map(|p| match glob::Pattern::new(p) {
                    Ok(g) => Some(g),
                    Err(e) => {
                        problems.push(FieldError::new(key, format!("`{p}` is not a glob: {e}")));
                        None
                    }
                })
                .collect::<Vec<_>>()
        };
        let include = globs("path", &self.path, true);
        let exclude = globs("exclude_path", &self.exclude_path, false);
        for p in &include {
            if !p.as_str().starts_with('/') {
                problems.push(FieldError::new(
                    "path",
                    format!("`{}` must be an absolute path", p.as_str()),
                ));
            }
        }
        let time = match &self.time_format {
            Some(f) => match TimeParse::new("time_format", f) {
                Ok(t) => Some(t),
                Err(e) => {
                    problems.push(e);
                    None
                }
            },
            None => None,
        };
        let rule = TimeRule {
            key: Bytes::copy_from_slice(self.time_key.as_bytes()),
            format: time,
            keep: self.time_keep,
        };
        let parser = match self.parser.as_str() {
            "none" => Parser::None,
            "json" => Parser::Json(rule),
            "docker" => Parser::Docker,
            "cri" => Parser::Cri,
            "regex" => match &self.regex {
                Some(r) => match Parser::regex(r, rule) {
                    Ok(p) => p,
                    Err(e) => {
                        problems.push(e);
                        Parser::None
                    }
                },
                None => {
                    problems.push(FieldError::new(
                        "regex",
                        "is required with parser = \"regex\": a pattern with named groups",
                    ));
                    Parser::None
                }
            },
            other => {
                problems.push(FieldError::new(
                    "parser",
                    format!("`{other}` is not a parser; use none, json, docker, cri or regex"),
                ));
                Parser::None
            }
        };
        if self.regex.is_some() && self.parser != "regex" {
            problems.push(FieldError::new("regex", "needs parser = \"regex\""));
        }
        if (self.time_format.is_some() || self.time_keep)
            && !matches!(self.parser.as_str(), "json" | "regex")
        {
            let key = if self.time_format.is_some() {
                "time_format"
            } else {
                "time_keep"
            };
            problems.push(FieldError::new(
                key,
                "applies to parser = \"json\" or \"regex\" (docker and cri times are always read)",
            ));
        }
        let multiline = match (self.multiline.as_deref(), self.parser.as_str()) {
            (None, "cri") | (Some("cri"), "cri") => Mode::Cri,
            (None, "docker") | (Some("docker"), "docker") => Mode::Docker,
            (None, _) | (Some("off"), _) => Mode::Off,
            (Some(m @ ("cri" | "docker")), _) => {
                problems.push(FieldError::new(
                    "multiline",
                    format!("`{m}` joins lines of parser = \"{m}\"; set that parser"),
                ));
                Mode::Off
            }
            (Some(other), _) => {
                problems.push(FieldError::new(
                    "multiline",
                    format!("`{other}` is not a multiline mode; use cri, docker or off"),
                ));
                Mode::Off
            }
        };
        if self.buffer_max_size.bytes() < 1024 || self.buffer_max_size.bytes() > 64 << 20 {
            problems.push(FieldError::new(
                "buffer_max_size",
                "must be between 1KiB and 64MiB (the default is 1MiB)",
            ));
        }
        if self.buffer_chunk_size.bytes() < 1024 || self.buffer_chunk_size.bytes() > 64 << 20 {
            problems.push(FieldError::new(
                "buffer_chunk_size",
                "must be between 1KiB and 64MiB (the default is 128KiB; reads never ask for more \
                 than buffer_max_size)",
            ));
        }
        let read_ahead = self.effective_read_ahead_limit().bytes();
        if read_ahead < self.buffer_max_size.bytes() || read_ahead > 1 << 30 {
            problems.push(FieldError::new(
                "read_ahead_limit",
                "must be between buffer_max_size (one line must fit) and 1GiB (the default is \
                 2MiB, or buffer_max_size when that is larger)",
            ));
        }
        if self.key.is_empty() {
            problems.push(FieldError::new("key", "must not be empty"));
        }
        if self.tag.is_empty() {
            problems.push(FieldError::new("tag", "must not be empty"));
        }
        if self.max_open_files == 0 {
            problems.push(FieldError::new("max_open_files", "must be at least 1"));
        }
        for (key, d) in [
            ("refresh_interval", self.refresh_interval),
            ("poll_interval", self.poll_interval),
        ] {
            if d.get() < std::time::Duration::from_millis(10) {
                problems.push(FieldError::new(key, "must be at least 10ms"));
            }
        }
        if !problems.is_empty() {
            return Err(problems);
        }
        Ok(Compiled {
            include,
            exclude,
            parser,
            multiline,
            key: Bytes::copy_from_slice(self.key.as_bytes()),
            path_key: self
                .path_key
                .as_ref()
                .map(|k| Bytes::copy_from_slice(k.as_bytes())),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Compiled, Vec<FieldError>> {
        let c: TailConfig =
            toml::from_str(text).map_err(|e| vec![FieldError::new("toml", e.to_string())])?;
        c.validate()
    }

    fn keys(r: Result<Compiled, Vec<FieldError>>) -> Vec<String> {
        r.err()
            .unwrap_or_default()
            .into_iter()
            .map(|e| e.key)
            .collect()
    }

    #[test]
    fn paths_as_comma_list_or_array() {
        let c = parse("path = \"/a/*.log, /b/x.log\"").unwrap();
        assert_eq!(c.include.len(), 2);
        let c = parse("path = [\"/a/*.log\", \"/c/*.log,/d/*\"]\nexclude_path = \"*.gz\"").unwrap();
        assert_eq!(c.include.len(), 3);
        assert_eq!(c.exclude.len(), 1);
    }

    #[test]
    fn defaults_and_parser_specific_multiline() {
        let c = parse("path = \"/a\"\nparser = \"cri\"").unwrap();
        assert_eq!(c.multiline, Mode::Cri);
        let c = parse("path = \"/a\"\nparser = \"docker\"\nmultiline = \"off\"").unwrap();
        assert_eq!(c.multiline, Mode::Off);
        let c = parse("path = \"/a\"").unwrap();
        assert_eq!(c.multiline, Mode::Off);
        assert!(matches!(c.parser, Parser::None));
    }

    #[test]
    fn problems_name_their_keys() {
        assert_eq!(keys(parse("tag = \"x\"")), ["path"]);
        assert_eq!(keys(parse("path = \"relative/*.log\"")), ["path"]);
        assert_eq!(keys(parse("path = \"/a\"\nparser = \"xml\"")), ["parser"]);
        assert_eq!(keys(parse("path = \"/a\"\nparser = \"regex\"")), ["regex"]);
        assert_eq!(
            keys(parse("path = \"/a\"\nparser = \"regex\"\nregex = \"(\"")),
            ["regex"]
        );
        assert_eq!(
            keys(parse(
                "path = \"/a\"\nparser = \"none\"\nmultiline = \"cri\""
            )),
            ["multiline"]
        );
        assert_eq!(
            keys(parse(
                "path = \"/a\"\nparser = \"cri\"\ntime_format = \"%s\""
            )),
            ["time_format"]
        );
        assert_eq!(
            keys(parse("path = \"/a\"\nbuffer_max_size = \"10\"")),
            ["buffer_max_size"]
        );
        assert_eq!(
            keys(parse("path = \"/a\"\nread_ahead_limit = \"512KiB\"")),
            ["read_ahead_limit"],
            "smaller than the default buffer_max_size (1MiB)"
        );
        assert!(keys(parse(
            "path = \"/a\"\nread_ahead_limit = \"512KiB\"\nbuffer_max_size = \"64KiB\""
        ))
        .is_empty());
        // Not given: 2 MiB, or buffer_max_size when that is larger (a long line must fit).
        let window = |text: &str| {
            toml::from_str::<TailConfig>(text)
                .unwrap()
                .effective_read_ahead_limit()
                .bytes()
        };
        assert_eq!(window("path = \"/a\""), 2 << 20);
        assert_eq!(window("path = \"/a\"\nbuffer_max_size = \"5MiB\""), 5 << 20);
        assert_eq!(
            window("path = \"/a\"\nbuffer_max_size = \"5MiB\"\nread_ahead_limit = \"8MiB\""),
            8 << 20
        );
        assert!(keys(parse("path = \"/a\"\nbuffer_max_size = \"5MiB\"")).is_empty());
        assert_eq!(
            keys(parse(
                "path = \"/a\"\nbuffer_max_size = \"5MiB\"\nread_ahead_limit = \"2MiB\""
            )),
            ["read_ahead_limit"]
        );
        assert_eq!(
            keys(parse("path = \"/a\"\nbuffer_chunk_size = \"512\"")),
            ["buffer_chunk_size"]
        );
        assert!(
            keys(parse(
                "path = \"/a\"\nbuffer_chunk_size = \"2MiB\"\nbuffer_max_size = \"64KiB\""
            ))
            .is_empty(),
            "a chunk larger than the longest line is used as the longest line"
        );
        assert!(parse("path = \"/a\"\nbogus = 1").is_err());
    }
}
