use std::path::Path;

use super::*;

fn parse(text: &str) -> Result<Config, ConfigError> {
    let lookup = |name: &str| match name {
        "STREAM" => Some("app-logs".to_string()),
        _ => None,
    };
    Config::parse(Path::new("test.toml"), text, &lookup)
}

fn problems(text: &str) -> Vec<Problem> {
    match parse(text) {
        Ok(_) => panic!("expected problems in:\n{text}"),
        Err(e) => e.problems,
    }
}

const GOOD: &str = r#"
[service]
grace_period = "10s"
http_listen = "off"

[[sources]]
type = "forward"
listen = "127.0.0.1:0"

[[transforms]]
type = "record_modifier"
match = "app.*"
records = { cluster = "${CLUSTER:-dev}" }

[[sinks]]
type = "file"
name = "out"
match = "*"
path = "/tmp/logferry-out-${STREAM}.log"
buffer_limit = "8MiB"
"#;

#[test]
fn a_good_config_loads_with_defaults_and_interpolation() {
    let config = parse(GOOD).unwrap();
    assert_eq!(config.service.grace_period, Duration::from_secs(10));
    assert_eq!(config.service.http_addr(), None);
    assert_eq!(config.sources.len(), 1);
    assert_eq!(config.sources[0].name, "forward.0");
    assert_eq!(config.transforms.len(), 1);
    assert_eq!(config.sinks[0].name, "out");
    assert_eq!(config.sinks[0].buffer_limit, ByteSize::mib(8));
    match &config.sinks[0].config {
        SinkConfig::File(c) => assert_eq!(
            c.path.as_deref(),
            Some(Path::new("/tmp/logferry-out-app-logs.log"))
        ),
        _ => panic!("expected a file sink"),
    }
    let default = ServiceConfig::default();
    assert_eq!(default.grace_period, Duration::from_secs(30));
    assert_eq!(default.http_listen, "127.0.0.1:2020");
}

#[test]
fn unknown_key_names_file_line_and_key() {
    let p = problems(
        r#"
[[sources]]
type = "stdin"

[[sinks]]
type = "stdout"
match = "*"
formatt = "json"
"#,
    );
    assert_eq!(p.len(), 1, "{p:?}");
    assert_eq!(p[0].line, Some(8));
    assert_eq!(p[0].key.as_deref(), Some("formatt"));
    let line = p[0].to_string();
    assert!(
        line.starts_with("test.toml:8: sinks[0] (stdout): `formatt`: unknown key"),
        "{line}"
    );
}

#[test]
fn wrong_type_is_reported_at_the_value() {
    let p = problems(
        r#"
[[sources]]
type = "forward"
buffer_max_size = true

[[sinks]]
type = "stdout"
match = "*"
"#,
    );
    assert_eq!(p.len(), 1, "{p:?}");
    assert_eq!(p[0].line, Some(4));
    assert_eq!(p[0].key.as_deref(), Some("buffer_max_size"));
}

#[test]
fn missing_required_options_are_named() {
    let p = problems(
        r#"
[[sources]]
type = "stdin"

[[sinks]]
type = "file"
match = "*"

[[sinks]]
match = "*"
"#,
    );
    let keys: Vec<_> = p
        .iter()
        .map(|p| p.key.clone().unwrap_or_default())
        .collect();
    assert!(keys.contains(&"path".to_string()), "{p:?}");
    assert!(keys.contains(&"type".to_string()), "{p:?}");
    let missing_match = problems(
        r#"
[[sources]]
type = "stdin"
[[sinks]]
type = "stdout"
"#,
    );
    assert_eq!(missing_match[0].key.as_deref(), Some("match"));
    assert_eq!(missing_match[0].line, Some(4));
}

#[test]
fn bad_regex_duration_and_size_are_each_reported() {
    let p = problems(
        r#"
[service]
grace_period = "30 parsecs"

[[sources]]
type = "stdin"

[[sinks]]
type = "stdout"
match_regex = "app.(["
buffer_limit = "lots"
"#,
    );
    let find = |key: &str| {
        p.iter()
            .find(|p| p.key.as_deref() == Some(key))
            .unwrap_or_else(|| panic!("no problem for {key} in {p:?}"))
    };
    assert_eq!(find("grace_period").line, Some(3));
    assert_eq!(find("match_regex").line, Some(10));
    assert_eq!(find("buffer_limit").line, Some(11));
}

#[test]
fn unknown_type_lists_known_types() {
    let p = problems(
        r#"
[[sources]]
type = "syslog"
[[sinks]]
type = "stdout"
match = "*"
"#,
    );
    assert_eq!(p[0].key.as_deref(), Some("type"));
    assert!(p[0].message.contains("forward"), "{}", p[0].message);
}

#[test]
fn missing_env_var_is_an_error_naming_it() {
    let p = problems(
        r#"
[[sources]]
type = "stdin"
tag = "${NOT_SET_ANYWHERE}"
[[sinks]]
type = "stdout"
match = "*"
"#,
    );
    assert_eq!(p[0].line, Some(4));
    assert!(p[0].message.contains("NOT_SET_ANYWHERE"));
}

#[test]
fn invalid_toml_points_at_the_line() {
    let p = problems("[[sources]]\ntype = \"stdin\"\nthis is not toml\n");
    assert_eq!(p[0].line, Some(3));
}

#[test]
fn unknown_top_level_key() {
    let p = problems(
        "[[sources]]\ntype = \"stdin\"\n[[sinks]]\ntype=\"stdout\"\nmatch=\"*\"\n[outputs]\n",
    );
    assert_eq!(p[0].key.as_deref(), Some("outputs"));
    assert_eq!(p[0].line, Some(6));
}

#[test]
fn disk_buffer_keys_are_common_sink_keys() {
    use crate::buffer::disk::{DiskSettings, FsyncPolicy, WhenFull};
    use crate::buffer::BufferKind;
    let config = parse(
        r#"
[[sources]]
type = "stdin"
[[sinks]]
type = "stdout"
match = "*"
buffer = "disk"
buffer_path = "/var/lib/logferry/out"
buffer_max_size = "2GiB"
fsync = "always"
when_full = "drop_newest"
[[sinks]]
type = "stdout"
match = "*"
buffer = "disk"
buffer_path = "/var/lib/logferry/two"
[[sinks]]
type = "stdout"
match = "*"
"#,
    )
    .unwrap();
    assert_eq!(
        config.sinks[0].buffer,
        BufferKind::Disk(DiskSettings {
            path: "/var/lib/logferry/out".into(),
            max_size: 2 << 30,
            fsync: FsyncPolicy::Always,
            when_full: WhenFull::DropNewest,
        })
    );
    match &config.sinks[1].buffer {
        BufferKind::Disk(d) => {
            assert_eq!(
                d.fsync,
                FsyncPolicy::Interval(std::time::Duration::from_millis(200))
            );
            assert_eq!(d.when_full, WhenFull::Block);
            assert_eq!(d.max_size, 1 << 30);
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(config.sinks[2].buffer, BufferKind::Memory);

    let p = problems(
        r#"
[[sources]]
type = "stdin"
[[sinks]]
type = "stdout"
match = "*"
buffer = "disk"
fsync = "sometimes"
when_full = "panic"
[[sinks]]
type = "stdout"
match = "*"
fsync = "always"
[[sinks]]
type = "stdout"
match = "*"
buffer = "tape"
"#,
    );
    let keys: Vec<_> = p
        .iter()
        .map(|p| (p.key.clone().unwrap_or_default(), p.line))
        .collect();
    for (key, line) in [
        ("buffer_path", Some(7)),
        ("fsync", Some(8)),
        ("when_full", Some(9)),
        ("fsync", Some(13)),
        ("buffer", Some(17)),
    ] {
        assert!(
            keys.contains(&(key.to_string(), line)),
            "no problem for {key} at {line:?} in {p:?}"
        );
    }
}

#[test]
fn two_sinks_cannot_share_a_disk_buffer() {
    let p = problems(
        r#"
[[sources]]
type = "stdin"
[[sinks]]
type = "stdout"
match = "*"
buffer = "disk"
buffer_path = "/var/lib/logferry/b"
[[sinks]]
type = "stdout"
match = "*"
buffer = "disk"
buffer_path = "/var/lib/logferry/b"
"#,
    );
    assert!(
        p.iter().any(|p| p.key.as_deref() == Some("buffer_path")
            && p.message.contains("also the disk buffer of `stdout.0`")),
        "{p:?}"
    );
}

#[test]
fn dead_letter_keys_are_taken_off_a_sink_entry() {
    let with = |extra: &str| {
        format!(
            "[[sources]]\ntype = \"stdin\"\n\n[[sinks]]\ntype = \"stdout\"\nname = \"a\"\nmatch = \"*\"\n{extra}\n"
        )
    };
    let config = parse(&with("")).unwrap();
    assert_eq!(config.sinks[0].dead_letter, None, "off by default");

    let config = parse(&with(
        "dead_letter_path = \"/var/lib/logferry/dl\"\ndead_letter_max_size = \"1MiB\"",
    ))
    .unwrap();
    assert_eq!(
        config.sinks[0].dead_letter,
        Some(DeadLetterSettings {
            path: PathBuf::from("/var/lib/logferry/dl"),
            max_size: 1024 * 1024,
        })
    );
    let config = parse(&with("dead_letter_path = \"/dl\"")).unwrap();
    assert_eq!(
        config.sinks[0].dead_letter.as_ref().map(|d| d.max_size),
        Some(crate::sink::dead_letter::DEFAULT_MAX_SIZE)
    );

    let p = problems(&with("dead_letter_max_size = \"1MiB\""));
    assert_eq!(p[0].key.as_deref(), Some("dead_letter_max_size"));
    assert!(p[0].message.contains("dead_letter_path"), "{}", p[0]);
    assert_eq!(p[0].line, Some(8));
    let p = problems(&with(
        "dead_letter_path = \"/dl\"\ndead_letter_max_size = \"0\"",
    ));
    assert_eq!(p[0].key.as_deref(), Some("dead_letter_max_size"));
    let p = problems(&with("dead_letter_path = \"\""));
    assert_eq!(p[0].key.as_deref(), Some("dead_letter_path"));
}

#[test]
fn two_sinks_cannot_share_a_dead_letter_directory() {
    let text = r#"
[[sources]]
type = "stdin"

[[sinks]]
type = "stdout"
name = "a"
match = "*"
dead_letter_path = "/dl"

[[sinks]]
type = "stdout"
name = "b"
match = "*"
buffer = "disk"
buffer_path = "/buf"
dead_letter_path = "/dl"

[[sinks]]
type = "stdout"
name = "c"
match = "*"
dead_letter_path = "/buf"
"#;
    let p = problems(text);
    let keyed: Vec<_> = p
        .iter()
        .filter(|p| p.key.as_deref() == Some("dead_letter_path"))
        .collect();
    assert_eq!(keyed.len(), 2, "{p:?}");
    assert!(keyed.iter().any(|p| p.entry.as_deref() == Some("b")));
    assert!(keyed.iter().any(|p| p.entry.as_deref() == Some("c")));
}

#[test]
fn health_buffer_threshold_defaults_and_is_checked() {
    assert_eq!(parse(GOOD).unwrap().service.health_buffer_threshold, 0.9);
    let p = problems(
        "[service]\nhealth_buffer_threshold = 1.5\n\n[[sources]]\ntype = \"stdin\"\n\n\
         [[sinks]]\ntype = \"stdout\"\nmatch = \"*\"\n",
    );
    assert_eq!(p[0].key.as_deref(), Some("health_buffer_threshold"));
    assert_eq!(p[0].line, Some(2));
    assert!(p[0].message.contains("at most 1"), "{p:?}");
}

#[test]
fn worker_threads_default_to_one_and_zero_means_one_per_core() {
    let service = parse(GOOD).unwrap().service;
    assert_eq!(service.workers(), Some(1));
    let with = |threads: &str| {
        let text = GOOD.replacen(
            "[service]\n",
            &format!("[service]\nworker_threads = {threads}\n"),
            1,
        );
        parse(&text).unwrap().service.workers()
    };
    assert_eq!(with("0"), None);
    assert_eq!(with("4"), Some(4));
    let p = problems(
        "[service]\nworker_threads = 100000\n\n[[sources]]\ntype = \"stdin\"\n\n\
         [[sinks]]\ntype = \"stdout\"\nmatch = \"*\"\n",
    );
    assert_eq!(p[0].key.as_deref(), Some("worker_threads"));
    assert_eq!(p[0].line, Some(2));
    assert!(p[0].message.contains("0 for one per CPU core"), "{p:?}");
}
