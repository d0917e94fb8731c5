//! Classic sections → native entries, one plugin at a time. Every key of every section is
//! decided: mapped to a native option, accepted as a documented no-op, or refused with a
//! message. A key nobody decided is an "unknown key" error listing the keys that plugin takes.
//! docs/firelens.md lists the same decisions for users.

mod aws_outputs;

use std::path::{Path, PathBuf};

use super::native::{At, Native, Part, Service, Val};
use super::reader::{Entry, Section, SectionKind};
use super::values::{self, TimeDialect};
use crate::config::units::ByteSize;
use crate::config::Problem;

/// The tag FireLens gives its health-check `tcp` input.
pub const HEALTHCHECK_TAG: &str = "firelens-healthcheck";

/// How long the translated health-check input keeps a silent connection (see
/// [`crate::source::tcp`]: Debian's netcat waits for the server to hang up).
pub const HEALTHCHECK_IDLE_TIMEOUT: &str = "1s";

/// Smallest per-sink queue bound derived from `Mem_Buf_Limit`.
const MIN_SINK_BUFFER: ByteSize = ByteSize::mib(1);

/// The result of translating every section.
pub struct Translated {
    pub service: Service,
    pub entries: Vec<Native>,
    pub problems: Vec<Problem>,
}

/// Translates the sections read from a file.
pub fn translate(sections: &[Section]) -> Translated {
    let mut t = Translator {
        problems: Vec::new(),
        service: Service::default(),
        entries: Vec::new(),
        counters: Vec::new(),
        mem_buf_limit: 0,
        flush: None,
        parsers: Vec::new(),
    };
    // [SERVICE] first: its Flush applies to the outputs.
    for section in sections.iter().filter(|s| s.kind == SectionKind::Service) {
        t.service_section(section);
    }
    for section in sections.iter().filter(|s| s.kind != SectionKind::Service) {
        t.section(section);
    }
    t.apply_mem_buf_limit();
    Translated {
        service: t.service,
        entries: t.entries,
        problems: t.problems,
    }
}

struct Translator {
    problems: Vec<Problem>,
    service: Service,
    entries: Vec<Native>,
    /// Instances per plugin, for Fluent Bit style names (`tcp.0`).
    counters: Vec<(String, usize)>,
    /// Sum of the inputs' `Mem_Buf_Limit`, in bytes.
    mem_buf_limit: u64,
    /// `[SERVICE] Flush`, as a logferry duration, with its origin.
    flush: Option<(String, At)>,
    /// The `[PARSER]` sections of the `Parsers_File`s, for the parser filters to name.
    parsers: Vec<Section>,
}

/// The entries of one section not yet handled, and the keys the plugin was asked about (for
/// the "unknown key" message).
struct Keys<'s> {
    label: String,
    left: Vec<&'s Entry>,
    known: Vec<&'static str>,
    problems: Vec<Problem>,
}

impl<'s> Keys<'s> {
    fn new(label: String, section: &'s Section) -> Keys<'s> {
        Keys {
            label,
            left: section.entries.iter().collect(),
            known: Vec::new(),
            problems: Vec::new(),
        }
    }

    fn problem(&mut self, entry: &Entry, message: impl Into<String>) {
        self.problems.push(Problem {
            file: entry.file.clone(),
            line: Some(entry.line),
            entry: Some(self.label.clone()),
            key: Some(entry.key.clone()),
            message: message.into(),
        });
    }

    /// Takes every entry of `key` (repeatable keys: `Record`, `Regex`).
    fn all(&mut self, key: &'static str) -> Vec<&'s Entry> {
        self.known.push(key);
        let (taken, left) = self.left.iter().partition(|e| e.lower == key);
        self.left = left;
        taken
    }

    /// Takes every entry of any of `keys`, in written order (`modify` rules of several kinds).
    fn all_of(&mut self, keys: &[&'static str]) -> Vec<&'s Entry> {
        self.known.extend_from_slice(keys);
        let (taken, left) = self
            .left
            .iter()
            .partition(|e| keys.contains(&e.lower.as_str()));
        self.left = left;
        taken
    }

    /// Takes the one entry of `key`; a second one is an error.
    fn one(&mut self, key: &'static str) -> Option<&'s Entry> {
        let mut all = self.all(key);
        if all.len() > 1 {
            let first = all[0].line;
            for extra in all.drain(1..).collect::<Vec<_>>() {
                self.problem(
                    extra,
                    format!("is given more than once (first on line {first}); keep one"),
                );
            }
        }
        all.into_iter().next()
    }

    /// A documented no-op: accepted, changes nothing.
    fn no_op(&mut self, key: &'static str) {
        self.all(key);
    }

    /// Refused keys: each present one is an error with `message`. They are not listed among
    /// the keys the plugin understands.
    fn refuse(&mut self, key: &'static str, message: &str) {
        let (taken, left): (Vec<&Entry>, Vec<&Entry>) =
            self.left.iter().partition(|e| e.lower == key);
        self.left = left;
        for e in taken {
            self.problem(e, message.to_string());
        }
    }

    /// Whatever is left is unknown.
    fn finish(mut self, plugin: &str, problems: &mut Vec<Problem>) {
        let mut known = self.known.clone();
        known.sort_unstable();
        known.dedup();
        for e in std::mem::take(&mut self.left) {
            self.problem(
                e,
                format!(
                    "unknown key for `{plugin}` (or not supported by logferry); keys logferry \
                     understands here: {}",
                    known.join(", ")
                ),
            );
        }
        self.problems.sort_by_key(|p| p.line);
        problems.append(&mut self.problems);
    }
}

fn at(entry: &Entry) -> At {
    At {
        file: entry.file.clone(),
        line: entry.line,
        key: entry.key.clone(),
    }
}

impl Translator {
    fn next_index(&mut self, plugin: &str) -> usize {
        match self.counters.iter_mut().find(|(p, _)| p == plugin) {
            Some((_, n)) => {
                *n += 1;
                *n
            }
            None => {
                self.counters.push((plugin.to_string(), 0));
                0
            }
        }
    }

    fn service_section(&mut self, section: &Section) {
        let mut keys = Keys::new("[SERVICE]".to_string(), section);
        let set = |native: &str, value: String, e: &Entry, svc: &mut Service| {
            svc.keys.push(super::native::Key {
                native: native.to_string(),
                value: Val::Str(value),
                at: at(e),
            });
        };
        if let Some(e) = keys.one("flush") {
            match values::seconds(&e.value) {
                Ok(d) => self.flush = Some((d, at(e))),
                Err(m) => keys.problem(e, m),
            }
        }
        if let Some(e) = keys.one("grace") {
            match values::seconds(&e.value) {
                Ok(d) => set("grace_period", d, e, &mut self.service),
                Err(m) => keys.problem(e, m),
            }
        }
        if let Some(e) = keys.one("log_level") {
            match e.value.to_ascii_lowercase().as_str() {
                "off" => keys.problem(
                    e,
                    "`off` is not supported: logferry always logs errors; use `error`",
                ),
                level => set("log_level", level.to_string(), e, &mut self.service),
            }
        }
        if let Some(e) = keys.one("daemon") {
            match values::boolean(&e.value) {
                Ok(false) => {}
                Ok(true) => keys.problem(
                    e,
                    "logferry does not daemonize; run it in the foreground (as a container does)",
                ),
                Err(m) => keys.problem(e, m),
            }
        }
        let server = keys.one("http_server");
        let listen = keys.one("http_listen");
        let port = keys.one("http_port");
        let enabled = match server.map(|e| (e, values::boolean(&e.value))) {
            Some((e, Err(m))) => {
                keys.problem(e, m);
                None
            }
            Some((_, Ok(on))) => Some(on),
            None => None,
        };
        if enabled == Some(false) {
            if let Some(e) = server {
                set("http_listen", "off".to_string(), e, &mut self.service);
            }
        } else if enabled == Some(true) || listen.is_some() || port.is_some() {
            let host = listen.map_or("0.0.0.0", |e| e.value.as_str());
            let host = if host.contains(':') && !host.starts_with('[') {
                format!("[{host}]")
            } else {
                host.to_string()
            };
            let port_value = port.map_or("2020", |e| e.value.as_str());
            let origin = listen.or(port).or(server);
            if let Some(e) = origin {
                set(
                    "http_listen",
                    format!("{host}:{port_value}"),
                    e,
                    &mut self.service,
                );
            }
        }
        for key in [
            "health_check",
            "hc_errors_count",
            "hc_retry_failure_count",
            "hc_period",
        ] {
            keys.no_op(key);
        }
        keys.no_op("coro_stack_size");
        keys.no_op("storage.metrics");
        keys.no_op("scheduler.cap");
        keys.no_op("scheduler.base");
        for e in keys.all("parsers_file") {
            // Relative to the file that names it, as Fluent Bit resolves it against the
            // config file's directory.
            let path = match e.file.parent() {
                Some(dir) => dir.join(&e.value),
                None => PathBuf::from(&e.value),
            };
            let (sections, problems) =
                super::reader::read_parsers(&path, &|name| std::env::var(name).ok());
            self.parsers.extend(sections);
            for mut p in problems {
                if p.line.is_none() && p.file == path {
                    // The file itself could not be read: say where it was named.
                    p.message = format!("Parsers_File {}: {}", path.display(), p.message);
                    p.file = e.file.clone();
                    p.line = Some(e.line);
                    p.entry = Some("[SERVICE]".to_string());
                    p.key = Some(e.key.clone());
                }
                keys.problems.push(p);
            }
        }
        keys.refuse("log_file", "logferry logs to standard error; remove it");
        keys.refuse(
            "plugins_file",
            "external plugins are not supported; remove it",
        );
        keys.refuse(
            "streams_file",
            "stream processing is not supported; remove it",
        );
        for key in [
            "storage.path",
            "storage.sync",
            "storage.checksum",
            "storage.backlog.mem_limit",
            "storage.max_chunks_up",
            "storage.delete_irrecoverable_chunks",
        ] {
            keys.refuse(
                key,
                "Fluent Bit filesystem buffering is not translated; use a native config with a \
                 disk buffer (buffer = \"disk\") instead",
            );
        }
        keys.finish("SERVICE", &mut self.problems);
    }

    fn section(&mut self, section: &Section) {
        let kind = section.kind.name();
        let mut names = section.entries.iter().filter(|e| e.lower == "name");
        let Some(name_entry) = names.next() else {
            self.problems.push(Problem {
                file: section.file.clone(),
                line: Some(section.line),
                entry: Some(format!("[{kind}]")),
                key: Some("Name".to_string()),
                message: "missing: every section needs `Name <plugin>`".to_string(),
            });
            return;
        };
        let plugin = name_entry.value.to_ascii_lowercase();
        let label = format!("[{kind}] {plugin}");
        let mut keys = Keys::new(label.clone(), section);
        keys.one("name");
        let index = self.next_index(&plugin);
        let mut native = Native::new(
            match section.kind {
                SectionKind::Input => Part::Source,
                SectionKind::Filter => Part::Transform,
                _ => Part::Sink,
            },
            label,
            section.file.clone(),
            section.line,
        );
        let name_at = at(name_entry);
        let (native_type, supported) = match (section.kind, plugin.as_str()) {
            (SectionKind::Input, "forward") => ("forward", true),
            (SectionKind::Input, "tcp") => ("tcp", true),
            (SectionKind::Input, "tail") => ("tail", true),
            (SectionKind::Input, "kafka") => ("kafka", true),
            (SectionKind::Filter, "record_modifier") => ("record_modifier", true),
            (SectionKind::Filter, "grep") => ("grep", true),
            (SectionKind::Filter, "parser") => ("parser", true),
            (SectionKind::Filter, "nest") => ("nest", true),
            (SectionKind::Filter, "modify") => ("modify", true),
            (SectionKind::Output, "kinesis_streams" | "kinesis") => ("kinesis", true),
            (SectionKind::Output, "kafka") => ("kafka", true),
            (SectionKind::Output, "cloudwatch_logs" | "cloudwatch") => ("cloudwatch_logs", true),
            (SectionKind::Output, "kinesis_firehose" | "firehose") => ("kinesis_firehose", true),
            (SectionKind::Output, "stdout") => ("stdout", true),
            (SectionKind::Output, "file") => ("file", true),
            (SectionKind::Output, "null") => ("null", true),
            _ => ("", false),
        };
        if !supported {
            let known = match section.kind {
                SectionKind::Input => "forward, tcp, tail, kafka",
                SectionKind::Filter => "record_modifier, grep, parser, nest, modify",
                _ => {
                    "kinesis_streams, kinesis, cloudwatch_logs, cloudwatch, kinesis_firehose, \
                     firehose, kafka, stdout, file, null"
                }
            };
            self.problems.push(Problem {
                file: name_entry.file.clone(),
                line: Some(name_entry.line),
                entry: Some(format!("[{kind}] {plugin}")),
                key: Some(name_entry.key.clone()),
                message: format!(
                    "the {} plugin `{plugin}` is not supported by logferry; supported here: {known}",
                    kind.to_ascii_lowercase()
                ),
            });
            return;
        }
        native.set("type", Val::Str(native_type.to_string()), name_at.clone());
        let default_name = format!("{plugin}.{index}");
        match keys.one("alias") {
            Some(e) => native.set("name", Val::Str(e.value.clone()), at(e)),
            None => native.set("name", Val::Str(default_name.clone()), name_at),
        }
        keys.no_op("log_level");
        match section.kind {
            SectionKind::Input => {
                keys.no_op("threaded");
                if let Some(e) = keys.one("mem_buf_limit") {
                    match values::size(&e.value) {
                        Ok(size) => self.mem_buf_limit += size.bytes(),
                        Err(m) => keys.problem(e, m),
                    }
                }
                if let Some(e) = keys.one("storage.type") {
                    if !e.value.eq_ignore_ascii_case("memory") {
                        keys.problem(
                            e,
                            "only `memory` is translated; for a disk buffer write a native \
                             config (buffer = \"disk\")",
                        );
                    }
                }
                match plugin.as_str() {
                    "forward" => forward(&mut keys, &mut native),
                    "tcp" => tcp(&mut keys, &mut native, &default_name),
                    "kafka" => kafka_input(&mut keys, &mut native, &default_name),
                    _ => tail(&mut keys, &mut native, &default_name),
                }
            }
            SectionKind::Filter => {
                matchers(&mut keys, &mut native);
                match plugin.as_str() {
                    "record_modifier" => record_modifier(&mut keys, &mut native),
                    "parser" => parser(&mut keys, &mut native, &self.parsers),
                    "nest" => nest(&mut keys, &mut native),
                    "modify" => modify(&mut keys, &mut native),
                    _ => grep(&mut keys, &mut native),
                }
            }
            _ => {
                matchers(&mut keys, &mut native);
                keys.no_op("workers");
                keys.refuse(
                    "storage.total_limit_size",
                    "Fluent Bit filesystem buffering is not translated; use a native config \
                     with a disk buffer (buffer = \"disk\", buffer_max_size) instead",
                );
                let retry = keys.one("retry_limit");
                match plugin.as_str() {
                    "kinesis_streams" | "kinesis" => {
                        let dialect = if plugin == "kinesis" {
                            TimeDialect::GoPlugin
                        } else {
                            TimeDialect::FluentBitC
                        };
                        if let Some(e) = retry {
                            retry_limit(&mut keys, &mut native, e);
                        }
                        if let Some((d, origin)) = &self.flush {
                            native.set("flush", Val::Str(d.clone()), origin.clone());
                        }
                        kinesis(&mut keys, &mut native, dialect);
                    }
                    "cloudwatch_logs" | "cloudwatch" => {
                        if let Some(e) = retry {
                            retry_limit(&mut keys, &mut native, e);
                        }
                        if let Some((d, origin)) = &self.flush {
                            native.set("flush", Val::Str(d.clone()), origin.clone());
                        }
                        let dialect = if plugin == "cloudwatch" {
                            aws_outputs::CloudWatchPlugin::Go
                        } else {
                            aws_outputs::CloudWatchPlugin::C
                        };
                        aws_outputs::cloudwatch_logs(&mut keys, &mut native, dialect);
                    }
                    "kinesis_firehose" | "firehose" => {
                        if let Some(e) = retry {
                            retry_limit(&mut keys, &mut native, e);
                        }
                        if let Some((d, origin)) = &self.flush {
                            native.set("flush", Val::Str(d.clone()), origin.clone());
                        }
                        let go = (plugin == "firehose").then(|| at(name_entry));
                        aws_outputs::kinesis_firehose(&mut keys, &mut native, go);
                    }
                    "kafka" => kafka(&mut keys, &mut native),
                    "stdout" => stdout(&mut keys, &mut native),
                    "file" => file(&mut keys, &mut native),
                    _ => {}
                }
            }
        }
        let before = self.problems.len();
        keys.finish(&plugin, &mut self.problems);
        // An entry with problems is left out, so that the native loader can still check the
        // others without reporting consequences of what was refused here.
        if self.problems.len() == before {
            self.entries.push(native);
        }
    }

    /// `Mem_Buf_Limit` bounds what an input may hold in memory before Fluent Bit pauses it.
    /// logferry bounds each sink's queue instead (sources wait when a queue is full), so the
    /// inputs' total is shared out between the sinks that hold records (not `null`): their
    /// queues together stay within it.
    fn apply_mem_buf_limit(&mut self) {
        if self.mem_buf_limit == 0 {
            return;
        }
        let holding = self
            .entries
            .iter()
            .filter(|e| e.part == Part::Sink && !is_null(e))
            .count()
            .max(1) as u64;
        let share = (self.mem_buf_limit / holding).max(MIN_SINK_BUFFER.bytes());
        for entry in self
            .entries
            .iter_mut()
            .filter(|e| e.part == Part::Sink && !is_null(e))
        {
            let origin = At {
                file: entry.file.clone(),
                line: entry.line,
                key: "Mem_Buf_Limit".to_string(),
            };
            entry.set("buffer_limit", Val::Str(share.to_string()), origin);
        }
    }
}

fn is_null(entry: &Native) -> bool {
    entry
        .keys
        .iter()
        .any(|k| k.native == "type" && matches!(&k.value, Val::Str(s) if s == "null"))
}

/// `Match` / `Match_Regex`.
fn matchers(keys: &mut Keys, native: &mut Native) {
    if let Some(e) = keys.one("match") {
        native.set("match", Val::Str(e.value.clone()), at(e));
    }
    if let Some(e) = keys.one("match_regex") {
        native.set("match_regex", Val::Str(e.value.clone()), at(e));
    }
}

/// Copies a string option.
fn string(keys: &mut Keys, native: &mut Native, key: &'static str, to: &str) {
    if let Some(e) = keys.one(key) {
        native.set(to, Val::Str(e.value.clone()), at(e));
    }
}

/// Copies a boolean option.
fn boolean(keys: &mut Keys, native: &mut Native, key: &'static str, to: &str) {
    if let Some(e) = keys.one(key) {
        match values::boolean(&e.value) {
            Ok(b) => native.set(to, Val::Bool(b), at(e)),
            Err(m) => keys.problem(e, m),
        }
    }
}

/// Copies a repeatable option into a list.
fn list(keys: &mut Keys, native: &mut Native, key: &'static str, to: &str) {
    let entries = keys.all(key);
    if let Some(first) = entries.first() {
        let origin = at(first);
        let items = entries.iter().map(|e| (e.value.clone(), at(e))).collect();
        match native.keys.iter_mut().find(|k| k.native == to) {
            Some(existing) => {
                if let Val::List(list) = &mut existing.value {
                    if let Val::List(more) = Val::List(items) {
                        list.extend(more);
                    }
                }
            }
            None => native.set(to, Val::List(items), origin),
        }
    }
}

fn forward(keys: &mut Keys, native: &mut Native) {
    let unix = keys.one("unix_path");
    let listen = keys.one("listen");
    let port = keys.one("port");
    match unix {
        Some(u) => {
            native.set("unix_path", Val::Str(u.value.clone()), at(u));
            for e in [listen, port].into_iter().flatten() {
                keys.problem(
                    e,
                    "Fluent Bit listens only on the unix socket when unix_path is set; remove \
                     this, or add a second forward [INPUT] for TCP",
                );
            }
        }
        None => {
            let host = listen.map_or("0.0.0.0", |e| e.value.as_str());
            let host = if host.contains(':') && !host.starts_with('[') {
                format!("[{host}]")
            } else {
                host.to_string()
            };
            let port_value = port.map_or("24224", |e| e.value.as_str());
            let origin = listen.or(port).map(at).unwrap_or_else(|| At {
                file: native.file.clone(),
                line: native.line,
                key: "Listen".to_string(),
            });
            native.set("listen", Val::Str(format!("{host}:{port_value}")), origin);
        }
    }
    string(keys, native, "unix_perm", "unix_perm");
    string(keys, native, "buffer_chunk_size", "buffer_chunk_size");
    string(keys, native, "buffer_max_size", "buffer_max_size");
    // Fluent Bit's listening inputs close a connection idle for `net.io_timeout` (default 0s:
    // never), as logferry's idle_timeout does; its other net.* keys have no equivalent.
    if let Some(e) = keys.one("net.io_timeout") {
        match values::seconds(&e.value) {
            Ok(d) => native.set("idle_timeout", Val::Str(d), at(e)),
            Err(m) => keys.problem(e, m),
        }
    }
    forward_security(keys, native);
    forward_tls(keys, native);
    for key in ["tag", "tag_prefix"] {
        keys.refuse(
            key,
            "logferry's forward input keeps the tags clients send; remove it (and match on the \
             clients' tags)",
        );
    }
}

/// `Shared_Key`, `Empty_Shared_Key`, `Self_Hostname`, `Security.Users` (each `<username>
/// <password>`, the password being the rest of the line, as Fluent Bit splits it).
fn forward_security(keys: &mut Keys, native: &mut Native) {
    string(keys, native, "shared_key", "shared_key");
    boolean(keys, native, "empty_shared_key", "empty_shared_key");
    string(keys, native, "self_hostname", "self_hostname");
    let users = keys.all("security.users");
    let mut records = Vec::new();
    for e in &users {
        match e.value.trim().split_once(char::is_whitespace) {
            Some((user, password)) if !password.trim().is_empty() => records.push((
                vec![
                    ("username".to_string(), user.to_string()),
                    ("password".to_string(), password.trim().to_string()),
                ],
                at(e),
            )),
            _ => keys.problem(
                e,
                "expected `<username> <password>` (one user per Security.Users line)",
            ),
        }
    }
    if let Some(first) = users.first() {
        native.set("users", Val::Records(records), at(first));
    }
}

/// `tls on` with `tls.crt_file`, `tls.key_file` and optional `tls.ca_file` (client certificates
/// then required). `tls.verify` / `tls.verify_client_cert` are accepted where they agree with
/// that; what logferry cannot honour is an error.
fn forward_tls(keys: &mut Keys, native: &mut Native) {
    let tls = keys.one("tls");
    let on = match tls.map(|e| (e, values::boolean(&e.value))) {
        Some((_, Ok(on))) => on,
        Some((e, Err(m))) => {
            keys.problem(e, m);
            false
        }
        None => false,
    };
    let crt = keys.one("tls.crt_file");
    let key = keys.one("tls.key_file");
    let ca = keys.one("tls.ca_file");
    let verify = keys.one("tls.verify");
    let verify_client = keys.one("tls.verify_client_cert");
    keys.no_op("tls.debug");
    for refused in [
        "tls.key_passwd",
        "tls.min_version",
        "tls.max_version",
        "tls.ciphers",
    ] {
        keys.refuse(
            refused,
            "not supported by logferry's forward input (TLS 1.2 and 1.3 with rustls' defaults, \
             unencrypted key files); remove it",
        );
    }
    for refused in ["tls.vhost", "tls.verify_hostname", "tls.ca_path"] {
        keys.refuse(
            refused,
            "not supported by logferry's forward input; remove it (client certificates are \
             checked against tls.ca_file)",
        );
    }
    if !on {
        // Certificate files without TLS are most likely a forgotten `tls on`; the verify flags
        // mean nothing then (Fluent Bit ignores them too).
        for e in [crt, key, ca].into_iter().flatten() {
            keys.problem(
                e,
                "TLS is off in this section: add `tls on`, or remove this",
            );
        }
        return;
    }
    let Some(tls) = tls else { return };
    let (Some(crt), Some(key)) = (crt, key) else {
        let missing = if crt.is_none() {
            "tls.crt_file"
        } else {
            "tls.key_file"
        };
        keys.problem(
            tls,
            format!("`tls on` needs {missing} (a PEM file) in this section"),
        );
        return;
    };
    native.set("tls.crt_file", Val::Str(crt.value.clone()), at(crt));
    native.set("tls.key_file", Val::Str(key.value.clone()), at(key));
    let flag = |keys: &mut Keys, e: Option<&Entry>| match e.map(|e| (e, values::boolean(&e.value)))
    {
        Some((_, Ok(b))) => Some(b),
        Some((e, Err(m))) => {
            keys.problem(e, m);
            None
        }
        None => None,
    };
    let verify_value = flag(keys, verify);
    let verify_client_value = flag(keys, verify_client);
    match ca {
        Some(ca) => {
            native.set("tls.ca_file", Val::Str(ca.value.clone()), at(ca));
            for (e, value) in [(verify, verify_value), (verify_client, verify_client_value)] {
                if let (Some(e), Some(false)) = (e, value) {
                    keys.problem(
                        e,
                        "with tls.ca_file logferry always requires and verifies client \
                         certificates; remove tls.ca_file to accept clients without one, or \
                         remove this",
                    );
                }
            }
        }
        None => {
            if let (Some(e), Some(true)) = (verify_client, verify_client_value) {
                keys.problem(
                    e,
                    "verifying client certificates needs tls.ca_file (the CA that signed them)",
                );
            }
        }
    }
}

fn tcp(keys: &mut Keys, native: &mut Native, default_tag: &str) {
    let listen = keys.one("listen");
    let (file, line) = (native.file.clone(), native.line);
    let origin = |e: Option<&Entry>, key: &str| {
        e.map(at).unwrap_or_else(|| At {
            file: file.clone(),
            line,
            key: key.to_string(),
        })
    };
    let listen_at = origin(listen, "Listen");
    let host = listen.map_or("0.0.0.0", |e| e.value.as_str()).to_string();
    native.set("listen", Val::Str(host), listen_at);
    let port = keys.one("port");
    let port_at = origin(port, "Port");
    match port.map(|e| (e, values::integer(&e.value))) {
        Some((_, Ok(p))) if p <= u64::from(u16::MAX) => native.set("port", Val::Int(p), port_at),
        Some((e, _)) => keys.problem(e, format!("`{}` is not a TCP port number", e.value)),
        None => native.set("port", Val::Int(5170), port_at),
    }
    let tag = keys.one("tag");
    let tag_value = tag.map_or(default_tag, |e| e.value.as_str()).to_string();
    let tag_at = origin(tag, "Tag");
    if tag_value == HEALTHCHECK_TAG {
        native.set(
            "idle_timeout",
            Val::Str(HEALTHCHECK_IDLE_TIMEOUT.to_string()),
            tag_at.clone(),
        );
    }
    native.set("tag", Val::Str(tag_value), tag_at);
    if let Some(e) = keys.one("format") {
        native.set("format", Val::Str(e.value.to_ascii_lowercase()), at(e));
    }
    if let Some(e) = keys.one("separator") {
        native.set("separator", Val::Str(values::unescape(&e.value)), at(e));
    }
    for (key, to) in [("buffer_size", "buffer_size"), ("chunk_size", "chunk_size")] {
        if let Some(e) = keys.one(key) {
            match values::kib_size(&e.value) {
                Ok(s) => native.set(to, Val::Str(s), at(e)),
                Err(m) => keys.problem(e, m),
            }
        }
    }
    keys.refuse(
        "source_address_key",
        "not supported by logferry's tcp input; remove it",
    );
}

fn tail(keys: &mut Keys, native: &mut Native, default_tag: &str) {
    string(keys, native, "path", "path");
    string(keys, native, "exclude_path", "exclude_path");
    match keys.one("tag") {
        Some(e) => native.set("tag", Val::Str(e.value.clone()), at(e)),
        None => {
            let origin = At {
                file: native.file.clone(),
                line: native.line,
                key: "Tag".to_string(),
            };
            native.set("tag", Val::Str(default_tag.to_string()), origin);
        }
    }
    boolean(keys, native, "read_from_head", "read_from_head");
    boolean(keys, native, "skip_long_lines", "skip_long_lines");
    for (key, to) in [
        ("refresh_interval", "refresh_interval"),
        ("rotate_wait", "rotate_wait"),
    ] {
        if let Some(e) = keys.one(key) {
            match values::seconds(&e.value) {
                Ok(d) => native.set(to, Val::Str(d), at(e)),
                Err(m) => keys.problem(e, m),
            }
        }
    }
    if let Some(e) = keys.one("db") {
        // Fluent Bit's DB is SQLite; logferry's checkpoints have their own format, kept next to
        // it so an existing Fluent Bit database is never overwritten.
        native.set("db", Val::Str(format!("{}.logferry", e.value)), at(e));
    }
    for key in ["db.sync", "db.locking", "db.journal_mode"] {
        keys.no_op(key);
    }
    string(keys, native, "path_key", "path_key");
    string(keys, native, "key", "key");
    string(keys, native, "buffer_max_size", "buffer_max_size");
    string(keys, native, "buffer_chunk_size", "buffer_chunk_size");
    if let Some(e) = keys.one("parser") {
        match e.value.to_ascii_lowercase().as_str() {
            p @ ("json" | "docker" | "cri") => native.set("parser", Val::Str(p.to_string()), at(e)),
            _ => keys.problem(
                e,
                format!(
                    "parser `{}` is not built in; logferry's tail input knows json, docker and cri",
                    e.value
                ),
            ),
        }
    }
    if let Some(e) = keys.one("multiline.parser") {
        match e.value.to_ascii_lowercase().as_str() {
            p @ ("docker" | "cri") => native.set("multiline", Val::Str(p.to_string()), at(e)),
            _ => keys.problem(
                e,
                "only the built-in `docker` and `cri` multiline parsers are supported",
            ),
        }
    }
    keys.refuse(
        "docker_mode",
        "use `multiline.parser docker` (logferry rejoins Docker's split lines with it)",
    );
}

fn record_modifier(keys: &mut Keys, native: &mut Native) {
    list(keys, native, "record", "records");
    list(keys, native, "remove_key", "remove_keys");
    list(keys, native, "allowlist_key", "allowlist_keys");
    list(keys, native, "whitelist_key", "allowlist_keys");
    keys.refuse(
        "uuid_key",
        "not supported by logferry's record_modifier; remove it",
    );
}

fn grep(keys: &mut Keys, native: &mut Native) {
    list(keys, native, "regex", "regex");
    list(keys, native, "exclude", "exclude");
    string(keys, native, "logical_op", "logical_op");
}

/// `[FILTER] parser`: the named parsers are looked up among the `[PARSER]` sections of the
/// `Parsers_File` and written inline, in the filter's order.
fn parser(keys: &mut Keys, native: &mut Native, parsers: &[Section]) {
    match keys.one("key_name") {
        Some(e) => native.set("key_name", Val::Str(e.value.clone()), at(e)),
        None => keys.problems.push(Problem {
            file: native.file.clone(),
            line: Some(native.line),
            entry: Some(native.label.clone()),
            key: Some("Key_Name".to_string()),
            message: "missing: Fluent Bit's parser filter needs `Key_Name` (the field to parse)"
                .to_string(),
        }),
    }
    boolean(keys, native, "reserve_data", "reserve_data");
    boolean(keys, native, "preserve_key", "preserve_key");
    // Deprecated in Fluent Bit and without effect there.
    keys.no_op("unescape_key");
    let named = keys.all("parser");
    let mut tables = Vec::with_capacity(named.len());
    for e in &named {
        let definition = parsers.iter().find(|p| {
            p.entries
                .iter()
                .any(|k| k.lower == "name" && k.value == e.value)
        });
        match definition {
            Some(section) => {
                if let Some(table) = parser_definition(section, &mut keys.problems) {
                    tables.push(table);
                }
            }
            None => keys.problem(
                e,
                format!(
                    "parser `{}` is not defined: add a [PARSER] section with `Name {}` to the \
                     file `Parsers_File` (in [SERVICE]) names",
                    e.value, e.value
                ),
            ),
        }
    }
    match named.first() {
        Some(first) => native.set("parsers", Val::Tables(tables), at(first)),
        None => keys.problems.push(Problem {
            file: native.file.clone(),
            line: Some(native.line),
            entry: Some(native.label.clone()),
            key: Some("Parser".to_string()),
            message: "missing: name at least one parser (`Parser <name>`, defined in the \
                      Parsers_File)"
                .to_string(),
        }),
    }
}

/// One `[PARSER]` section as a native parser table; its problems are reported against it.
fn parser_definition(section: &Section, problems: &mut Vec<Problem>) -> Option<Vec<(String, Val)>> {
    let name = section
        .entries
        .iter()
        .find(|e| e.lower == "name")
        .map_or("", |e| e.value.as_str());
    let mut keys = Keys::new(format!("[PARSER] {name}"), section);
    let mut table = Vec::new();
    for key in ["name", "regex", "time_key", "time_format", "types"] {
        if let Some(e) = keys.one(key) {
            table.push((key.to_string(), Val::Str(e.value.clone())));
        }
    }
    match keys.one("format") {
        Some(e) => match e.value.to_ascii_lowercase().as_str() {
            f @ ("json" | "regex" | "logfmt") => {
                table.push(("format".to_string(), Val::Str(f.to_string())))
            }
            other => keys.problem(
                e,
                format!(
                    "format `{other}` is not supported; logferry parses json, regex and logfmt"
                ),
            ),
        },
        None => keys.problems.push(Problem {
            file: section.file.clone(),
            line: Some(section.line),
            entry: Some(keys.label.clone()),
            key: Some("Format".to_string()),
            message: "missing: every [PARSER] needs a `Format`".to_string(),
        }),
    }
    for key in ["time_keep", "skip_empty_values"] {
        if let Some(e) = keys.one(key) {
            match values::boolean(&e.value) {
                Ok(b) => table.push((key.to_string(), Val::Bool(b))),
                Err(m) => keys.problem(e, m),
            }
        }
    }
    for key in [
        "time_offset",
        "time_system_timezone",
        "time_strict",
        "decode_field",
        "decode_field_as",
    ] {
        keys.refuse(
            key,
            "not supported by logferry's parser transform (times without an offset are UTC); \
             remove it",
        );
    }
    let before = problems.len();
    keys.finish("PARSER", problems);
    (problems.len() == before).then_some(table)
}

/// `[FILTER] nest`.
fn nest(keys: &mut Keys, native: &mut Native) {
    if let Some(e) = keys.one("operation") {
        native.set("operation", Val::Str(e.value.to_ascii_lowercase()), at(e));
    }
    list(keys, native, "wildcard", "wildcard");
    for key in ["nest_under", "nested_under", "add_prefix", "remove_prefix"] {
        string(keys, native, key, key);
    }
}

/// The `modify` rules logferry runs, by their Fluent Bit key.
const MODIFY_RULES: &[&str] = &[
    "set",
    "add",
    "remove",
    "remove_wildcard",
    "rename",
    "hard_rename",
    "copy",
    "hard_copy",
];

/// `[FILTER] modify`: rules keep their written order across kinds as `rules` lines
/// (`"Set key value"`), conditions go to `condition`.
fn modify(keys: &mut Keys, native: &mut Native) {
    let rules = keys.all_of(MODIFY_RULES);
    if let Some(first) = rules.first() {
        let items = rules
            .iter()
            .map(|e| (format!("{} {}", e.lower, e.value), at(e)))
            .collect();
        native.set("rules", Val::List(items), at(first));
    }
    let conditions = keys.all("condition");
    for e in &conditions {
        let kind = e
            .value
            .split_whitespace()
            .next()
            .unwrap_or_default()
            .to_ascii_lowercase();
        if !matches!(
            kind.as_str(),
            "key_exists" | "key_does_not_exist" | "key_value_equals" | "key_value_matches"
        ) {
            keys.problem(
                e,
                format!(
                    "condition `{kind}` is not supported; logferry's modify supports \
                     Key_exists, Key_does_not_exist, Key_value_equals and Key_value_matches"
                ),
            );
        }
    }
    if let Some(first) = conditions.first() {
        let items = conditions
            .iter()
            .map(|e| (e.value.clone(), at(e)))
            .collect();
        native.set("condition", Val::List(items), at(first));
    }
    for key in [
        "remove_regex",
        "move_to_start",
        "move_to_end",
        "add_if_not_present",
    ] {
        keys.refuse(
            key,
            "not supported by logferry's modify; use set, add, remove, remove_wildcard, rename, \
             hard_rename, copy or hard_copy",
        );
    }
}

fn retry_limit(keys: &mut Keys, native: &mut Native, e: &Entry) {
    match e.value.to_ascii_lowercase().as_str() {
        "false" | "no_limits" | "off" => {}
        "no_retries" => native.set("retry_limit", Val::Int(0), at(e)),
        v => match values::integer(v) {
            Ok(n) => native.set("retry_limit", Val::Int(n), at(e)),
            Err(_) => keys.problem(
                e,
                format!(
                    "`{}` is not a number of retries, `False`/`no_limits` or `no_retries`",
                    e.value
                ),
            ),
        },
    }
}

/// `endpoint` (with `port`: the AWS output plugins take the host and port apart) and
/// `sts_endpoint` of the AWS outputs, as full URLs.
fn endpoints(keys: &mut Keys, native: &mut Native) {
    let port = keys.one("port");
    match keys.one("endpoint") {
        Some(e) => match values::endpoint(&e.value, port.map(|p| p.value.as_str())) {
            Ok(url) => native.set("endpoint", Val::Str(url), at(e)),
            Err(m) => keys.problem(e, m),
        },
        None => {
            if let Some(p) = port {
                if p.value.trim() != "443" {
                    keys.problem(
                        p,
                        "a port other than 443 needs `endpoint` (the host to connect to)",
                    );
                }
            }
        }
    }
    if let Some(e) = keys.one("sts_endpoint") {
        match values::endpoint(&e.value, None) {
            Ok(url) => native.set("sts_endpoint", Val::Str(url), at(e)),
            Err(m) => keys.problem(e, m),
        }
    }
}

fn kinesis(keys: &mut Keys, native: &mut Native, dialect: TimeDialect) {
    for key in [
        "region",
        "stream",
        "partition_key",
        "data_keys",
        "log_key",
        "role_arn",
        "external_id",
        "time_key",
        "replace_dots",
    ] {
        string(keys, native, key, key);
    }
    endpoints(keys, native);
    if let Some(e) = keys.one("time_key_format") {
        match values::time_key_format(&e.value, dialect) {
            Ok(f) => native.set("time_key_format", Val::Str(f), at(e)),
            Err(m) => keys.problem(e, m),
        }
    }
    if let Some(e) = keys.one("compression") {
        native.set("compression", Val::Str(e.value.to_ascii_lowercase()), at(e));
    }
    boolean(keys, native, "append_newline", "append_newline");
    boolean(keys, native, "aggregation", "aggregation");
    if let Some(e) = keys.one("simple_aggregation") {
        match values::boolean(&e.value) {
            Ok(false) => {}
            Ok(true) => keys.problem(
                e,
                "not supported; use `aggregation true` (KPL aggregation, which consumers \
                 deaggregate with the KCL)",
            ),
            Err(m) => keys.problem(e, m),
        }
    }
    if let Some(e) = keys.one("experimental_concurrency") {
        match values::integer(&e.value) {
            Ok(0) => {}
            Ok(n) => native.set("max_in_flight", Val::Int(n), at(e)),
            Err(m) => keys.problem(e, m),
        }
    }
    // logferry retries failed records without dropping them (see Retry_Limit).
    keys.no_op("experimental_concurrency_retries");
    // logferry always retries with backoff.
    keys.no_op("auto_retry_requests");
    if let Some(e) = keys.one("http_request_timeout") {
        match values::integer(&e.value) {
            Ok(0) => {}
            Ok(n) => native.set("http_request_timeout", Val::Str(format!("{n}s")), at(e)),
            Err(m) => keys.problem(e, m),
        }
    }
    keys.refuse(
        "profile",
        "not supported; set AWS_PROFILE in the environment (the default credential chain reads it)",
    );
}

fn kafka(keys: &mut Keys, native: &mut Native) {
    // Fluent Bit's default topic.
    if keys.left.iter().all(|e| e.lower != "topics") {
        let origin = At {
            file: native.file.clone(),
            line: native.line,
            key: "Topics".to_string(),
        };
        native.set("topics", Val::Str("fluent-bit".to_string()), origin);
    }
    for key in [
        "brokers",
        "topics",
        "topic_key",
        "message_key",
        "message_key_field",
        "timestamp_key",
        "timestamp_format",
        "aws_msk_iam_cluster_arn",
    ] {
        string(keys, native, key, key);
    }
    if let Some(e) = keys.one("format") {
        native.set("format", Val::Str(e.value.to_ascii_lowercase()), at(e));
    }
    string(keys, native, "raw_log_key", "log_key");
    boolean(keys, native, "dynamic_topic", "dynamic_topic");
    boolean(keys, native, "aws_msk_iam", "aws_msk_iam");
    if let Some(e) = keys.one("queue_full_retries") {
        match values::integer(&e.value) {
            Ok(n) => native.set("queue_full_retries", Val::Int(n), at(e)),
            Err(m) => keys.problem(e, m),
        }
    }
    rdkafka_properties(keys, native);
    // Avro: Fluent Bit writes the Confluent wire format with the given schema and id, without
    // a registry; both map across (with both, logferry calls no registry either).
    string(keys, native, "schema_str", "schema_str");
    if let Some(e) = keys.one("schema_id") {
        match values::integer(&e.value) {
            Ok(n) => native.set("schema_id", Val::Int(n), at(e)),
            Err(m) => keys.problem(e, m),
        }
    }
    for key in [
        "gelf_short_message_key",
        "gelf_full_message_key",
        "gelf_level_key",
        "gelf_timestamp_key",
        "gelf_host_key",
    ] {
        keys.refuse(
            key,
            "the GELF format is not supported; use format json, msgpack, raw or avro",
        );
    }
}

/// `rdkafka.<property>` entries: passed to librdkafka as given (`[rdkafka]` table).
fn rdkafka_properties(keys: &mut Keys, native: &mut Native) {
    keys.known.push("rdkafka.*");
    let (props, left): (Vec<&Entry>, Vec<&Entry>) = keys
        .left
        .iter()
        .partition(|e| e.lower.starts_with("rdkafka.") && e.lower.len() > "rdkafka.".len());
    keys.left = left;
    if let Some(first) = props.first() {
        let items = props
            .iter()
            .map(|e| {
                (
                    e.key["rdkafka.".len()..].to_string(),
                    e.value.clone(),
                    at(e),
                )
            })
            .collect();
        native.set("rdkafka", Val::Table(items), at(first));
    }
}

/// `[INPUT] Name kafka` (Fluent Bit's `in_kafka`) to the Kafka source. Fluent Bit keeps the
/// value under `payload` (parsed with `format json`) next to `topic`, `partition`, `offset`,
/// `error` and `key`; logferry makes a JSON value the record itself and a raw value
/// `{"payload": value}`, and adds the metadata only with the native `metadata_key`.
fn kafka_input(keys: &mut Keys, native: &mut Native, default_tag: &str) {
    let origin = At {
        file: native.file.clone(),
        line: native.line,
        key: "Tag".to_string(),
    };
    match keys.one("tag") {
        Some(e) => native.set("tag", Val::Str(e.value.clone()), at(e)),
        None => native.set("tag", Val::Str(default_tag.to_string()), origin.clone()),
    }
    for key in [
        "brokers",
        "topics",
        "group_id",
        "client_id",
        "aws_msk_iam_cluster_arn",
    ] {
        string(keys, native, key, key);
    }
    match keys.one("format") {
        Some(e) => {
            let format = e.value.to_ascii_lowercase();
            if format != "json" {
                native.set("log_key", Val::Str("payload".into()), at(e));
            }
            native.set("format", Val::Str(format), at(e));
        }
        None => native.set("log_key", Val::Str("payload".into()), origin),
    }
    if let Some(e) = keys.one("poll_ms") {
        match values::integer(&e.value) {
            Ok(n) => native.set("poll_ms", Val::Int(n), at(e)),
            Err(m) => keys.problem(e, m),
        }
    }
    if let Some(e) = keys.one("buffer_max_size") {
        match values::size(&e.value) {
            Ok(size) => native.set(
                "buffer_max_size",
                Val::Str(format!("{}B", size.bytes())),
                at(e),
            ),
            Err(m) => keys.problem(e, m),
        }
    }
    boolean(keys, native, "aws_msk_iam", "aws_msk_iam");
    keys.no_op("poll_timeout_ms");
    if let Some(e) = keys.one("enable_auto_commit") {
        if values::boolean(&e.value).unwrap_or(true) {
            keys.problem(
                e,
                "logferry commits offsets itself, once the records were delivered; remove                  enable_auto_commit (or set it to false)",
            );
        }
    }
    rdkafka_properties(keys, native);
}

fn stdout(keys: &mut Keys, native: &mut Native) {
    let format = keys.one("format");
    let origin = format.map(at).unwrap_or_else(|| At {
        file: native.file.clone(),
        line: native.line,
        key: "Format".to_string(),
    });
    match format.map(|e| e.value.to_ascii_lowercase()) {
        // Fluent Bit's default prints a debug rendering of each chunk; JSON lines carry the same
        // records in a form tools can read.
        None => native.set("format", Val::Str("json".into()), origin.clone()),
        Some(f)
            if matches!(
                f.as_str(),
                "msgpack" | "json" | "json_lines" | "json_stream"
            ) =>
        {
            native.set("format", Val::Str("json".into()), origin.clone())
        }
        Some(f) => {
            if let Some(e) = format {
                keys.problem(
                    e,
                    format!("`{f}` is not supported; use json_lines (one JSON record a line)"),
                );
            }
        }
    }
    let date_key = keys.one("json_date_key");
    match date_key.map(|e| (e, e.value.to_ascii_lowercase())) {
        Some((_, v)) if v == "false" || v == "off" => {}
        Some((e, _)) => native.set("time_key", Val::Str(e.value.clone()), at(e)),
        None => native.set("time_key", Val::Str("date".into()), origin.clone()),
    }
    match keys.one("json_date_format") {
        Some(e) => native.set(
            "time_key_format",
            Val::Str(e.value.to_ascii_lowercase()),
            at(e),
        ),
        None => {
            if date_key
                .is_none_or(|e| !matches!(e.value.to_ascii_lowercase().as_str(), "false" | "off"))
            {
                native.set("time_key_format", Val::Str("double".into()), origin);
            }
        }
    }
}

fn file(keys: &mut Keys, native: &mut Native) {
    let dir = keys.one("path");
    let name = keys.one("file");
    match name {
        Some(f) => {
            let path: PathBuf = match dir {
                Some(d) => Path::new(&d.value).join(&f.value),
                None => PathBuf::from(&f.value),
            };
            native.set("path", Val::Str(path.to_string_lossy().into_owned()), at(f));
        }
        None => {
            let origin = dir.map(|d| (*d).clone());
            let message = "`File` is required: logferry writes one file per output (Fluent Bit \
                           would name files after tags)";
            match origin {
                Some(d) => keys.problem(&d, message),
                None => keys.problems.push(Problem {
                    file: native.file.clone(),
                    line: Some(native.line),
                    entry: Some(native.label.clone()),
                    key: Some("File".to_string()),
                    message: message.to_string(),
                }),
            }
        }
    }
    let format = keys.one("format");
    match format.map(|e| (e, e.value.to_ascii_lowercase())) {
        Some((e, f)) if f == "plain" => native.set("format", Val::Str("json".into()), at(e)),
        Some((e, f)) if f == "msgpack" => native.set("format", Val::Str("msgpack".into()), at(e)),
        Some((e, f)) => keys.problem(
            e,
            format!("`{f}` is not supported; use `plain` (one JSON record a line) or `msgpack`"),
        ),
        None => keys.problems.push(Problem {
            file: native.file.clone(),
            line: Some(native.line),
            entry: Some(native.label.clone()),
            key: Some("Format".to_string()),
            message: "Fluent Bit's default `tag: [time, record]` lines are not supported; add \
                      `Format plain` (one JSON record a line) or `Format msgpack`"
                .to_string(),
        }),
    }
    if let Some(e) = keys.one("mkdir") {
        match values::boolean(&e.value) {
            Ok(false) => {}
            Ok(true) => keys.problem(e, "not supported: create the directory beforehand"),
            Err(m) => keys.problem(e, m),
        }
    }
    for key in ["delimiter", "label_delimiter", "template"] {
        keys.refuse(
            key,
            "only the plain and msgpack formats are supported; remove it",
        );
    }
}
