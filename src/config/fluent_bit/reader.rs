//! Reads Fluent Bit's classic config format into sections of `key value` entries, each with the
//! file and line it came from.
//!
//! What it accepts, as Fluent Bit does:
//! - `[SERVICE]`, `[INPUT]`, `[FILTER]`, `[OUTPUT]` headers (any case); any indentation before
//!   keys (FireLens writes 4 spaces); a key, a run of spaces or tabs, then the value verbatim
//!   (`#`, `|`, commas and quotes are part of it; trailing spaces are not).
//! - Lines whose first non-blank character is `#` are comments; blank lines are ignored; CRLF
//!   line ends are fine.
//! - `@INCLUDE path` (relative to the including file; `*` globs allowed) inlines a file;
//!   `@SET name=value` defines a variable for `${name}` in later values.
//! - `${VAR}` in values (and `@INCLUDE` paths): `@SET` variables first, then the environment;
//!   `${VAR:-default}` gives a default. An undefined variable is an error (Fluent Bit would
//!   silently use an empty string).
//!
//! Other section kinds (`[MULTILINE_PARSER]`, `[PLUGINS]`, `[UPSTREAM]`, ...) and other `@`
//! commands are errors naming the file and line. `[PARSER]` sections are read only from the file
//! `Parsers_File` names ([`read_parsers`]), as Fluent Bit reads them.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use crate::config::env;
use crate::config::Problem;

/// The kinds of section logferry translates.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SectionKind {
    Service,
    Input,
    Filter,
    Output,
    /// A parser definition, only in a parsers file.
    Parser,
}

impl SectionKind {
    /// `SERVICE`, `INPUT`, `FILTER`, `OUTPUT`, `PARSER`.
    pub fn name(self) -> &'static str {
        match self {
            SectionKind::Service => "SERVICE",
            SectionKind::Input => "INPUT",
            SectionKind::Filter => "FILTER",
            SectionKind::Output => "OUTPUT",
            SectionKind::Parser => "PARSER",
        }
    }
}

/// One `key value` line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// The key as written (`Mem_Buf_Limit`).
    pub key: String,
    /// The key in lower case, for matching (keys are case-insensitive).
    pub lower: String,
    /// The value, variables substituted.
    pub value: String,
    pub file: PathBuf,
    pub line: usize,
}

/// One section with its entries in written order.
#[derive(Clone, Debug)]
pub struct Section {
    pub kind: SectionKind,
    pub file: PathBuf,
    /// Line of the `[HEADER]`.
    pub line: usize,
    pub entries: Vec<Entry>,
}

/// Includes nested deeper than this are taken for a loop.
const MAX_INCLUDE_DEPTH: usize = 16;

/// Reads `path` and everything it includes. Problems are collected, not stopped at.
pub fn read(path: &Path, lookup: &dyn Fn(&str) -> Option<String>) -> (Vec<Section>, Vec<Problem>) {
    read_kind(path, lookup, false)
}

/// Reads a parsers file (`Parsers_File`): `[PARSER]` sections only.
pub fn read_parsers(
    path: &Path,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> (Vec<Section>, Vec<Problem>) {
    read_kind(path, lookup, true)
}

fn read_kind(
    path: &Path,
    lookup: &dyn Fn(&str) -> Option<String>,
    parsers_file: bool,
) -> (Vec<Section>, Vec<Problem>) {
    let mut reader = Reader {
        lookup,
        vars: HashMap::new(),
        sections: Vec::new(),
        problems: Vec::new(),
        stack: Vec::new(),
        parsers_file,
    };
    reader.file(path, None);
    (reader.sections, reader.problems)
}

struct Reader<'l> {
    lookup: &'l dyn Fn(&str) -> Option<String>,
    vars: HashMap<String, String>,
    sections: Vec<Section>,
    problems: Vec<Problem>,
    /// Files being read, outermost first (include loop detection).
    stack: Vec<PathBuf>,
    /// Reading a parsers file: `[PARSER]` sections are taken, the main sections are not.
    parsers_file: bool,
}

/// Where the reader is: in a translated section, in one it refuses (keys skipped), or outside.
enum Current {
    None,
    Section,
    Refused,
}

impl Reader<'_> {
    fn problem(&mut self, file: &Path, line: Option<usize>, key: Option<&str>, message: String) {
        self.problems.push(Problem {
            file: file.to_path_buf(),
            line,
            entry: None,
            key: key.map(str::to_string),
            message,
        });
    }

    /// Reads one file; `from` is the `@INCLUDE` line that named it.
    fn file(&mut self, path: &Path, from: Option<(&Path, usize)>) {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) => {
                match from {
                    Some((file, line)) => self.problem(
                        file,
                        Some(line),
                        None,
                        format!("@INCLUDE {}: cannot read it: {e}", path.display()),
                    ),
                    None => self.problem(
                        path,
                        None,
                        None,
                        format!("cannot read the Fluent Bit config file: {e}"),
                    ),
                }
                return;
            }
        };
        let identity = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
        if self.stack.contains(&identity) || self.stack.len() >= MAX_INCLUDE_DEPTH {
            if let Some((file, line)) = from {
                self.problem(
                    file,
                    Some(line),
                    None,
                    format!(
                        "@INCLUDE {}: the file includes itself (directly or through other files)",
                        path.display()
                    ),
                );
            }
            return;
        }
        self.stack.push(identity);
        self.text(path, &text);
        self.stack.pop();
    }

    fn text(&mut self, path: &Path, text: &str) {
        let mut current = Current::None;
        for (index, raw) in text.split('\n').enumerate() {
            let line_no = index + 1;
            let line = raw.strip_suffix('\r').unwrap_or(raw);
            let trimmed = line.trim();
            if trimmed.is_empty() || trimmed.starts_with('#') {
                continue;
            }
            if let Some(rest) = trimmed.strip_prefix('[') {
                current = self.header(path, line_no, rest);
                continue;
            }
            if trimmed.starts_with('@') {
                self.command(path, line_no, trimmed);
                // Keys after an @INCLUDE would belong to whatever section the included file
                // ended with; ask for a header instead of guessing.
                current = Current::None;
                continue;
            }
            match current {
                Current::Refused => continue,
                Current::None => {
                    let key = trimmed.split_whitespace().next().unwrap_or(trimmed);
                    self.problem(
                        path,
                        Some(line_no),
                        Some(key),
                        "is outside any section: put it under [SERVICE], [INPUT], [FILTER] or \
                         [OUTPUT]"
                            .to_string(),
                    );
                }
                Current::Section => self.entry(path, line_no, trimmed),
            }
        }
    }

    fn header(&mut self, path: &Path, line: usize, rest: &str) -> Current {
        let Some(name) = rest.strip_suffix(']') else {
            self.problem(
                path,
                Some(line),
                None,
                format!("`[{rest}` is not a section header such as [OUTPUT]"),
            );
            return Current::Refused;
        };
        let name = name.trim().to_ascii_uppercase();
        let kind = match name.as_str() {
            "PARSER" if self.parsers_file => SectionKind::Parser,
            _ if self.parsers_file => {
                self.problem(
                    path,
                    Some(line),
                    None,
                    format!(
                        "[{name}] sections are not supported in a parsers file; logferry reads \
                         [PARSER] sections there"
                    ),
                );
                return Current::Refused;
            }
            "SERVICE" => SectionKind::Service,
            "INPUT" => SectionKind::Input,
            "FILTER" => SectionKind::Filter,
            "OUTPUT" => SectionKind::Output,
            "PARSER" => {
                self.problem(
                    path,
                    Some(line),
                    None,
                    "[PARSER] sections belong in the file `Parsers_File` (in [SERVICE]) names; \
                     move them there"
                        .to_string(),
                );
                return Current::Refused;
            }
            "MULTILINE_PARSER" => {
                self.problem(
                    path,
                    Some(line),
                    None,
                    "[MULTILINE_PARSER] sections are not supported (the tail input has built-in \
                     docker and cri multiline parsers)"
                        .to_string(),
                );
                return Current::Refused;
            }
            other => {
                self.problem(
                    path,
                    Some(line),
                    None,
                    format!(
                        "[{other}] sections are not supported; logferry reads [SERVICE], [INPUT], \
                         [FILTER] and [OUTPUT]"
                    ),
                );
                return Current::Refused;
            }
        };
        self.sections.push(Section {
            kind,
            file: path.to_path_buf(),
            line,
            entries: Vec::new(),
        });
        Current::Section
    }

    fn entry(&mut self, path: &Path, line: usize, trimmed: &str) {
        let (key, value) = match trimmed.split_once([' ', '\t']) {
            Some((k, v)) => (k, v.trim()),
            None => (trimmed, ""),
        };
        if value.is_empty() {
            self.problem(
                path,
                Some(line),
                Some(key),
                "has no value: write the key, a space, then its value".to_string(),
            );
            return;
        }
        let Some(value) = self.substitute(path, line, Some(key), value) else {
            return;
        };
        if let Some(section) = self.sections.last_mut() {
            section.entries.push(Entry {
                key: key.to_string(),
                lower: key.to_ascii_lowercase(),
                value,
                file: path.to_path_buf(),
                line,
            });
        }
    }

    /// `${VAR}`: `@SET` variables, then the environment.
    fn substitute(
        &mut self,
        path: &Path,
        line: usize,
        key: Option<&str>,
        value: &str,
    ) -> Option<String> {
        let vars = &self.vars;
        let lookup = self.lookup;
        match env::interpolate(value, |name| {
            vars.get(name).cloned().or_else(|| lookup(name))
        }) {
            Ok(v) => Some(v.into_owned()),
            Err(e) => {
                let message = match e {
                    env::InterpolationError::Missing(name) => format!(
                        "`${{{name}}}` is neither set with @SET nor in the environment; set it or \
                         write `${{{name}:-default}}`"
                    ),
                    other => other.to_string(),
                };
                self.problem(path, Some(line), key, message);
                None
            }
        }
    }

    fn command(&mut self, path: &Path, line: usize, trimmed: &str) {
        let (command, rest) = match trimmed.split_once(char::is_whitespace) {
            Some((c, r)) => (c, r.trim()),
            None => (trimmed, ""),
        };
        match command.to_ascii_uppercase().as_str() {
            "@INCLUDE" => self.include(path, line, rest),
            "@SET" => {
                let Some((name, value)) = rest.split_once('=') else {
                    self.problem(
                        path,
                        Some(line),
                        None,
                        format!("`@SET {rest}` is not `@SET name=value`"),
                    );
                    return;
                };
                let name = name.trim();
                if name.is_empty() {
                    self.problem(
                        path,
                        Some(line),
                        None,
                        "@SET needs a variable name: `@SET name=value`".to_string(),
                    );
                    return;
                }
                if let Some(value) = self.substitute(path, line, None, value.trim()) {
                    self.vars.insert(name.to_string(), value);
                }
            }
            other => self.problem(
                path,
                Some(line),
                None,
                format!("unknown command `{other}`; logferry understands @INCLUDE and @SET"),
            ),
        }
    }

    fn include(&mut self, path: &Path, line: usize, rest: &str) {
        if rest.is_empty() {
            self.problem(
                path,
                Some(line),
                None,
                "@INCLUDE needs a file: `@INCLUDE other.conf`".to_string(),
            );
            return;
        }
        let Some(target) = self.substitute(path, line, None, rest) else {
            return;
        };
        let target = PathBuf::from(target);
        let relative = !target.is_absolute();
        let target = if !relative {
            target
        } else {
            path.parent().map(|dir| dir.join(&target)).unwrap_or(target)
        };
        let text = target.to_string_lossy();
        if !text.contains(['*', '?', '[']) {
            if !target.exists() {
                let hint = if relative {
                    format!(
                        " (a relative path is taken from the directory of {})",
                        path.display()
                    )
                } else {
                    String::new()
                };
                self.problem(
                    path,
                    Some(line),
                    None,
                    format!("@INCLUDE {}: no such file{hint}", target.display()),
                );
                return;
            }
            self.file(&target, Some((path, line)));
            return;
        }
        let mut matches: Vec<PathBuf> = match glob::glob(&text) {
            Ok(paths) => paths.filter_map(Result::ok).collect(),
            Err(e) => {
                self.problem(
                    path,
                    Some(line),
                    None,
                    format!("@INCLUDE {text}: not a valid pattern: {e}"),
                );
                return;
            }
        };
        if matches.is_empty() {
            self.problem(
                path,
                Some(line),
                None,
                format!("@INCLUDE {text}: no file matches"),
            );
            return;
        }
        matches.sort();
        for m in matches {
            self.file(&m, Some((path, line)));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read_text(text: &str, env: &[(&str, &str)]) -> (Vec<Section>, Vec<Problem>) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("fluent-bit.conf");
        std::fs::write(&path, text).unwrap();
        let env: HashMap<String, String> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        read(&path, &|name| env.get(name).cloned())
    }

    #[test]
    fn sections_keys_odd_spacing_comments_and_crlf() {
        let (sections, problems) = read_text(
            "\n# comment\n[input]\n    Name forward\n\tMem_Buf_Limit\t 25MB  \r\n\n[FILTER]\n    \
             Name   grep\n    Regex  log ERROR|WARN # not a comment\n    Exclude log DEBUG\n",
            &[],
        );
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(sections.len(), 2);
        assert_eq!(sections[0].kind, SectionKind::Input);
        assert_eq!(sections[0].line, 3);
        let e = &sections[0].entries[1];
        assert_eq!(
            (e.key.as_str(), e.lower.as_str(), e.value.as_str(), e.line),
            ("Mem_Buf_Limit", "mem_buf_limit", "25MB", 5)
        );
        let grep = &sections[1].entries;
        assert_eq!(grep[0].value, "grep");
        assert_eq!(grep[1].value, "log ERROR|WARN # not a comment");
        assert_eq!(grep[2].value, "log DEBUG");
    }

    #[test]
    fn set_and_env_variables() {
        let (sections, problems) = read_text(
            "@SET region=eu-west-1\n[OUTPUT]\n    region ${region}\n    stream ${STREAM}\n    \
             other ${NOPE:-x}\n",
            &[("STREAM", "logs"), ("region", "env-loses")],
        );
        assert!(problems.is_empty(), "{problems:?}");
        let values: Vec<&str> = sections[0]
            .entries
            .iter()
            .map(|e| e.value.as_str())
            .collect();
        assert_eq!(values, ["eu-west-1", "logs", "x"]);
    }

    #[test]
    fn undefined_variable_names_file_line_and_key() {
        let (_, problems) = read_text("[OUTPUT]\n    Name null\n    stream ${MISSING}\n", &[]);
        assert_eq!(problems.len(), 1);
        let p = &problems[0];
        assert_eq!(p.line, Some(3));
        assert_eq!(p.key.as_deref(), Some("stream"));
        assert!(p.message.contains("${MISSING}"), "{}", p.message);
    }

    #[test]
    fn include_is_relative_to_the_including_file_and_a_missing_one_is_named() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        std::fs::write(
            dir.path().join("sub/extra.conf"),
            "[OUTPUT]\n    Name null\n    Match x\n@INCLUDE more.conf\n",
        )
        .unwrap();
        std::fs::write(
            dir.path().join("sub/more.conf"),
            "[OUTPUT]\n    Name null\n",
        )
        .unwrap();
        let main = dir.path().join("main.conf");
        std::fs::write(&main, "[INPUT]\n    Name tcp\n@INCLUDE sub/extra.conf\n").unwrap();
        let (sections, problems) = read(&main, &|_| None);
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(sections.len(), 3);
        assert!(sections[2].file.ends_with("sub/more.conf"));

        std::fs::write(&main, "[INPUT]\n    Name tcp\n\n@INCLUDE gone.conf\n").unwrap();
        let (_, problems) = read(&main, &|_| None);
        assert_eq!(problems.len(), 1);
        assert_eq!(problems[0].file, main);
        assert_eq!(problems[0].line, Some(4));
        assert!(problems[0].message.contains("gone.conf"));
    }

    #[test]
    fn include_loops_and_globs() {
        let dir = tempfile::tempdir().unwrap();
        let main = dir.path().join("main.conf");
        std::fs::write(&main, "@INCLUDE main.conf\n").unwrap();
        let (_, problems) = read(&main, &|_| None);
        assert!(
            problems[0].message.contains("includes itself"),
            "{problems:?}"
        );

        std::fs::write(dir.path().join("out_b.conf"), "[OUTPUT]\n Name b\n").unwrap();
        std::fs::write(dir.path().join("out_a.conf"), "[OUTPUT]\n Name a\n").unwrap();
        std::fs::write(&main, "@INCLUDE out_*.conf\n").unwrap();
        let (sections, problems) = read(&main, &|_| None);
        assert!(problems.is_empty(), "{problems:?}");
        let names: Vec<&str> = sections
            .iter()
            .map(|s| s.entries[0].value.as_str())
            .collect();
        assert_eq!(names, ["a", "b"]);
    }

    #[test]
    fn refused_sections_commands_and_stray_keys() {
        let (sections, problems) = read_text(
            "Name x\n[PARSER]\n    Name docker\n    Format json\n[UPSTREAM]\n@UNSET a\n[OUTPUT]\n    \
             Name\n",
            &[],
        );
        assert_eq!(sections.len(), 1);
        let lines: Vec<Option<usize>> = problems.iter().map(|p| p.line).collect();
        assert_eq!(
            lines,
            [Some(1), Some(2), Some(5), Some(6), Some(8)],
            "{problems:?}"
        );
        assert!(problems[1].message.contains("[PARSER]"));
    }
}
