//! The `parser`, `nest` and `modify` transforms against Fluent Bit's own filters: the same JSON
//! lines go through the real Fluent Bit binary (`FLUENT_BIT_BIN`, which `scripts/test` points at
//! `../shared/bench/peers/fluent-bit`) and through logferry, twice: with a native TOML config
//! and with `--fluent-bit-config` on the very file Fluent Bit ran. Each side tails the input
//! file (with a plain `json` parser) and prints JSON lines on stdout (Fluent Bit's
//! `stdout` output with `Format json_lines`, its record time under `date`). The records must be
//! equal, key order included; the times too where a parser read one (elsewhere they are the
//! times the lines were read, which legitimately differ).

mod support;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use logferry_test_kit::logferry::logferry_bin;
use logferry_test_kit::stand_ins::fluent_bit_bin;
use serde_json::Value;

/// One comparison: input lines, Fluent Bit `[FILTER]`/`[PARSER]` sections and the native TOML
/// transforms meant to be equivalent.
struct Case {
    input: &'static [&'static str],
    filters: &'static str,
    parsers: &'static str,
    transforms: &'static str,
}

/// The tail input's own parser: each line is a JSON record.
const INPUT_PARSER: &str = "
[PARSER]
    Name   json
    Format json
";

fn fluent_bit_config(dir: &Path, case: &Case) -> PathBuf {
    std::fs::write(
        dir.join("parsers.conf"),
        format!("{INPUT_PARSER}{}", case.parsers),
    )
    .unwrap();
    let text = format!(
        "[SERVICE]
    Flush        0.2
    Grace        1
    Log_Level    warn
    HTTP_Server  Off
    Parsers_File parsers.conf

[INPUT]
    Name           tail
    Path           {dir}/in.txt
    Read_From_Head On
    Parser         json
    Tag            app.test
{filters}
[OUTPUT]
    Name   stdout
    Match  *
    Format json_lines
",
        dir = dir.display(),
        filters = case.filters
    );
    let path = dir.join("fluent-bit.conf");
    std::fs::write(&path, text).unwrap();
    path
}

fn native_config(dir: &Path, case: &Case) -> PathBuf {
    let text = format!(
        r#"[service]
http_listen = "off"
grace_period = "1s"

[[sources]]
type = "tail"
path = "{dir}/in.txt"
read_from_head = true
parser = "json"
tag = "app.test"
{transforms}
[[sinks]]
type = "stdout"
match = "*"
time_key = "date"
time_key_format = "double"
"#,
        dir = dir.display(),
        transforms = case.transforms
    );
    let path = dir.join("logferry.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// Runs a command whose stdout gets the records until it printed `n` JSON lines (or 30 s
/// passed), then stops it; returns those lines and what it logged.
fn collect(mut cmd: Command, out: &Path, n: usize) -> (Vec<Value>, String) {
    let log = out.with_extension("log");
    let child: Child = cmd
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(out).unwrap())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .expect("spawn");
    let records = || -> Vec<Value> {
        std::fs::read_to_string(out)
            .unwrap_or_default()
            .lines()
            .filter(|l| l.starts_with('{') && l.ends_with('}'))
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while records().len() < n && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    // Anything beyond n would be a duplicate: give it a moment to show.
    std::thread::sleep(Duration::from_millis(500));
    let pid = child.id().to_string();
    let _ = Command::new("kill").args(["-TERM", &pid]).status();
    let mut child = child;
    let stop = Instant::now() + Duration::from_secs(10);
    while child.try_wait().ok().flatten().is_none() && Instant::now() < stop {
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
    let mut text = std::fs::read_to_string(&log).unwrap_or_default();
    text.push_str(&std::fs::read_to_string(out).unwrap_or_default());
    (records(), text)
}

/// A record without its time, as text (key order kept), and the time.
fn split_time(record: &Value) -> (String, f64) {
    let mut map = record.as_object().cloned().unwrap_or_default();
    let time = map
        .shift_remove("date")
        .and_then(|d| d.as_f64())
        .unwrap_or(f64::NAN);
    (Value::Object(map).to_string(), time)
}

fn compare(label: &str, expected: &[Value], got: &[Value], log: &str) {
    assert_eq!(
        got.len(),
        expected.len(),
        "{label}: record count\nexpected {expected:#?}\ngot {got:#?}\n--- log:\n{log}"
    );
    // Times the lines were read are within the last hour; a time a parser read is from 2024.
    let read_recently = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
        - 3600.0;
    for (i, (e, g)) in expected.iter().zip(got).enumerate() {
        let (e_record, e_time) = split_time(e);
        let (g_record, g_time) = split_time(g);
        assert_eq!(g_record, e_record, "{label}: record {i}\n--- log:\n{log}");
        if e_time < read_recently {
            assert!(
                (g_time - e_time).abs() < 1e-3,
                "{label}: record {i}: time {g_time} where Fluent Bit has {e_time}"
            );
        } else {
            assert!(
                g_time >= read_recently,
                "{label}: record {i}: time {g_time}"
            );
        }
    }
}

/// Runs one case through Fluent Bit and through logferry twice; the outputs must be equal.
fn check(name: &str, case: Case) {
    let Some(bin) = fluent_bit_bin("Fluent Bit transform comparison") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let mut input = case.input.join("\n");
    input.push('\n');
    std::fs::write(d.join("in.txt"), input).unwrap();
    let n = case.input.len();
    let fb_conf = fluent_bit_config(d, &case);
    let native = native_config(d, &case);

    let mut fb = Command::new(&bin);
    fb.arg("-c").arg(&fb_conf);
    let (expected, fb_log) = collect(fb, &d.join("fluent-bit.out"), n);
    assert_eq!(expected.len(), n, "{name}: Fluent Bit printed\n{fb_log}");

    let mut translated = Command::new(logferry_bin());
    translated
        .args(["run", "--fluent-bit-config"])
        .arg(&fb_conf);
    let (got, log) = collect(translated, &d.join("translated.out"), n);
    compare(
        &format!("{name} (--fluent-bit-config)"),
        &expected,
        &got,
        &log,
    );

    let mut toml = Command::new(logferry_bin());
    toml.args(["run", "--config"]).arg(&native);
    let (got, log) = collect(toml, &d.join("native.out"), n);
    compare(&format!("{name} (native TOML)"), &expected, &got, &log);
}

#[test]
fn parser_json_with_time_reserve_data_and_unmatched_lines() {
    check(
        "json",
        Case {
            input: &[
                r#"{"log":"{\"a\":1,\"ts\":\"2024-05-14T09:30:01.250+02:00\"}","other":"x"}"#,
                r#"{"log":"{\"a\":2,\"other\":\"parsed\"}","other":"x","z":true}"#,
                r#"{"log":"{\"a\":3,\"ts\":\"not a time\"}","z":1}"#,
                r#"{"log":"plain text no parser takes","o":6}"#,
                r#"{"log":{"a":1},"o":7}"#,
                r#"{"nolog":"x"}"#,
            ],
            filters: "
[FILTER]
    Name         parser
    Match        app.*
    Key_Name     log
    Parser       ts_json
    Reserve_Data On
",
            parsers: "
[PARSER]
    Name        ts_json
    Format      json
    Time_Key    ts
    Time_Format %Y-%m-%dT%H:%M:%S.%L%z
",
            transforms: r#"
[[transforms]]
type = "parser"
match = "app.*"
key_name = "log"
reserve_data = true
[[transforms.parsers]]
format = "json"
time_key = "ts"
time_format = "%Y-%m-%dT%H:%M:%S.%L%z"
"#,
        },
    );
}

#[test]
fn parser_regex_types_time_keep_and_preserve_key() {
    check(
        "regex",
        Case {
            input: &[
                r#"{"log":"14/May/2024:09:30:01 WARN 12 1.5 true ff","o":1}"#,
                r#"{"log":"14/May/2024:09:30:02 +0000 INFO abc x yes zz","o":2}"#,
                r#"{"log":"bad time ERROR 1 2 false 10","o":3}"#,
                r#"{"log":"h1 200  hello there","o":4}"#,
                r#"{"log":"nothing matches","o":5}"#,
            ],
            filters: "
[FILTER]
    Name         parser
    Match        *
    Key_Name     log
    Parser       typed
    Parser       access
    Preserve_Key On
",
            parsers: r"
[PARSER]
    Name        typed
    Format      regex
    Regex       ^(?<time>\S+(?: \+\d{4})?|bad time) (?<level>[A-Z]+) (?<n>\S+) (?<f>\S+) (?<b>\S+) (?<h>\S+)$
    Time_Key    time
    Time_Format %d/%b/%Y:%H:%M:%S
    Time_Keep   On
    Types       n:integer f:float b:bool h:hex
[PARSER]
    Name   access
    Format regex
    Regex  ^(?<host>\S+) (?<code>\d+) (?<size>\d*) (?<msg>.*)$
    Types  code:integer size:integer
",
            transforms: r#"
[[transforms]]
type = "parser"
match = "*"
key_name = "log"
preserve_key = true
[[transforms.parsers]]
format = "regex"
regex = '^(?<time>\S+(?: \+\d{4})?|bad time) (?<level>[A-Z]+) (?<n>\S+) (?<f>\S+) (?<b>\S+) (?<h>\S+)$'
time_key = "time"
time_format = "%d/%b/%Y:%H:%M:%S"
time_keep = true
types = "n:integer f:float b:bool h:hex"
[[transforms.parsers]]
format = "regex"
regex = '^(?<host>\S+) (?<code>\d+) (?<size>\d*) (?<msg>.*)$'
types = ["code:integer", "size:integer"]
"#,
        },
    );
}

#[test]
fn parser_logfmt_docker_and_cri() {
    check(
        "logfmt, docker, cri",
        Case {
            input: &[
                r#"{"log":"{\"log\":\"hi\\n\",\"stream\":\"stdout\",\"time\":\"2024-05-14T09:30:01.123456Z\"}","o":1}"#,
                r#"{"log":"2024-05-14T09:30:01.5+02:00 stderr F hello world","o":2}"#,
                r#"{"log":"level=info msg=\"disk full\" retry dur=","o":3}"#,
                r#"{"z":1,"log":"k=v log=inner"}"#,
            ],
            filters: "
[FILTER]
    Name         parser
    Match        *
    Key_Name     log
    Parser       docker
    Parser       cri
    Parser       logfmt
    Reserve_Data On
",
            parsers: r"
[PARSER]
    Name         docker
    Format       json
    Time_Key     time
    Time_Format  %Y-%m-%dT%H:%M:%S.%L
    Time_Keep    On
[PARSER]
    Name        cri
    Format      regex
    Regex       ^(?<time>[^ ]+) (?<stream>stdout|stderr) (?<logtag>[^ ]*) (?<message>.*)$
    Time_Key    time
    Time_Format %Y-%m-%dT%H:%M:%S.%L%z
    Time_Keep   On
[PARSER]
    Name   logfmt
    Format logfmt
",
            transforms: r#"
[[transforms]]
type = "parser"
match = "*"
reserve_data = true
[[transforms.parsers]]
format = "docker"
[[transforms.parsers]]
format = "cri"
[[transforms.parsers]]
format = "logfmt"
"#,
        },
    );
}

#[test]
fn nest_and_lift_with_prefixes() {
    check(
        "nest",
        Case {
            input: &[
                r#"{"a":"A","k_1":1,"b":"xb","k_2":{"x":1},"z":1,"inner":{"x_1":1,"y":2}}"#,
                r#"{"a":"A","bb":2}"#,
                r#"{"inner":"not a map","k_3":3}"#,
                r#"{"y":0,"inner":{"y":1}}"#,
            ],
            filters: "
[FILTER]
    Name          nest
    Match         *
    Operation     lift
    Nested_under  inner
    Remove_prefix x_
[FILTER]
    Name       nest
    Match      *
    Operation  nest
    Wildcard   k_*
    Wildcard   b
    Nest_under kept
    Add_prefix p.
",
            parsers: "",
            transforms: r#"
[[transforms]]
type = "nest"
match = "*"
operation = "lift"
nested_under = "inner"
remove_prefix = "x_"

[[transforms]]
type = "nest"
match = "*"
operation = "nest"
wildcard = ["k_*", "b"]
nest_under = "kept"
add_prefix = "p."
"#,
        },
    );
}

#[test]
fn modify_rules_in_order_under_conditions() {
    check(
        "modify",
        Case {
            input: &[
                r#"{"a":"A","b":"xb","c":"C","d":"D","k_1":1,"k_2":2,"e":"E","z":1}"#,
                r#"{"a":"A","b":"yb"}"#,
                r#"{"b":"xb"}"#,
                r#"{"a":"A","b":"xb","s1":"pre","k":"kk","bcopy":"exists"}"#,
                r#"{"a":"A","b":"xb","level":"warn"}"#,
            ],
            filters: r#"
[FILTER]
    Name      modify
    Match     *
    Condition Key_exists a
    Condition Key_value_matches b ^x.*
    Condition Key_does_not_exist nope
    Set       s1 v1
    Rename    a a2
    Add       a newa
    Copy      b bcopy
    Hard_copy c b
    Remove    d
    Remove_wildcard k_
    Hard_rename e c
    Set       a "set over"
    Add       s1 addedlater
[FILTER]
    Name      modify
    Match     *
    Condition Key_value_equals level warn
    Rename    level severity
"#,
            parsers: "",
            transforms: r#"
[[transforms]]
type = "modify"
match = "*"
key_exists = "a"
key_value_matches = { b = "^x.*" }
key_does_not_exist = "nope"
set = { s1 = "v1" }
rename = { a = "a2" }
add = { a = "newa" }
copy = { b = "bcopy" }
hard_copy = { c = "b" }
remove = "d"
remove_wildcard = "k_"
hard_rename = { e = "c" }
rules = ['Set a "set over"', "Add s1 addedlater"]

[[transforms]]
type = "modify"
match = "*"
key_value_equals = { level = "warn" }
rename = { level = "severity" }
"#,
        },
    );
}

#[test]
fn parser_reserve_data_with_preserve_key_and_colliding_fields() {
    check(
        "reserve_data + preserve_key",
        Case {
            input: &[
                r#"{"a":"0","log":"a=1 log=inner other=parsed b","other":"orig","z":2}"#,
                r#"{"log":"","o":1}"#,
                r#"{"o":2,"log":"x=\"quoted value\" y"}"#,
            ],
            filters: "
[FILTER]
    Name         parser
    Match        *
    Key_Name     log
    Parser       logfmt
    Reserve_Data On
    Preserve_Key On
",
            parsers: "
[PARSER]
    Name   logfmt
    Format logfmt
",
            transforms: r#"
[[transforms]]
type = "parser"
match = "*"
reserve_data = true
preserve_key = true
[[transforms.parsers]]
format = "logfmt"
"#,
        },
    );
}
