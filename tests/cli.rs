//! The command line contract: subcommands, `validate` messages, exit codes, shipped examples.

mod support;

use std::path::PathBuf;

use logferry_test_kit::logferry::{logferry, Logferry};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn version_and_help() {
    let out = logferry(&["--version"]);
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        format!("logferry {}", env!("CARGO_PKG_VERSION"))
    );
    let help = String::from_utf8_lossy(&logferry(&["--help"]).stdout).into_owned();
    for word in ["run", "validate", "loadgen", "Exit codes"] {
        assert!(help.contains(word), "help lacks {word}:\n{help}");
    }
}

#[test]
fn every_shipped_example_validates() {
    let mut checked = 0;
    for entry in std::fs::read_dir(repo().join("examples")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "toml") {
            let out = logferry(&["validate", "--config", path.to_str().unwrap()]);
            assert!(
                out.status.success(),
                "{}: {}",
                path.display(),
                String::from_utf8_lossy(&out.stderr)
            );
            checked += 1;
        }
    }
    assert!(checked >= 2, "examples/ has config files");
}

/// The TOML examples of docs/configuration.md load: a snippet without sources or sinks gets a
/// stdin source and a null sink around it; the secrets an example reads from the environment
/// (`${NAME}`) are set to placeholders.
#[test]
fn configuration_md_toml_examples_validate() {
    let text = std::fs::read_to_string(repo().join("docs/configuration.md")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut checked = 0;
    for (i, block) in text.split("```toml\n").skip(1).enumerate() {
        let body = block.split("```").next().unwrap_or_default();
        let mut config = body.to_string();
        if !config.contains("[[sources]]") {
            config = format!("[[sources]]\ntype = \"stdin\"\n\n{config}");
        }
        if !config.contains("[[sinks]]") {
            config.push_str("\n[[sinks]]\ntype = \"null\"\nmatch = \"*\"\n");
        }
        let path = dir.path().join(format!("example{i}.toml"));
        std::fs::write(&path, &config).unwrap();
        let mut validate = std::process::Command::new(logferry_test_kit::logferry::logferry_bin());
        validate.args(["validate", "--config", path.to_str().unwrap()]);
        for name in config
            .split("${")
            .skip(1)
            .filter_map(|rest| rest.split('}').next())
        {
            if !name.contains(":-") {
                validate.env(name, "placeholder-from-the-docs-test");
            }
        }
        let out = validate.output().unwrap();
        assert!(
            out.status.success(),
            "docs/configuration.md TOML example {i}:\n{config}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        checked += 1;
    }
    assert!(
        checked >= 3,
        "the parser, nest and modify examples are checked"
    );
}

#[test]
fn validate_names_file_line_and_key_for_each_problem() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    std::fs::write(
        &path,
        r#"[service]
grace_period = "soon"

[[sources]]
type = "forward"
listen = "127.0.0.1:24224"
buffer_max_size = "huge"

[[transforms]]
type = "grep"
match = "*"
regex = ["log (unclosed"]

[[sinks]]
type = "file"
match_regex = "app.(["
colour = "blue"
"#,
    )
    .unwrap();
    let out = logferry(&["validate", "--config", path.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let file = path.display().to_string();
    for (line, key) in [
        (2, "grace_period"),
        (7, "buffer_max_size"),
        (12, "regex"),
        (16, "match_regex"),
        (17, "colour"),
    ] {
        let prefix = format!("{file}:{line}: ");
        assert!(
            stderr
                .lines()
                .any(|l| l.starts_with(&prefix) && l.contains(&format!("`{key}`"))),
            "no line for `{key}` at line {line} in:\n{stderr}"
        );
    }
}

#[test]
fn run_exits_1_on_config_errors_and_2_on_runtime_failures() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "[[sources]]\ntype = \"nope\"\n").unwrap();
    let out = logferry(&["run", "--config", bad.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));

    // A port already taken is a runtime failure.
    let holder = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = holder.local_addr().unwrap().port();
    let taken = dir.path().join("taken.toml");
    std::fs::write(
        &taken,
        format!(
            "[service]\nhttp_listen = \"off\"\n[[sources]]\ntype = \"forward\"\nlisten = \"127.0.0.1:{port}\"\n[[sinks]]\ntype = \"stdout\"\nmatch = \"*\"\n"
        ),
    )
    .unwrap();
    let out = logferry(&["run", "--config", taken.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot listen"));
}

#[test]
fn stdin_json_lines_to_stdout_and_clean_exit_at_end_of_input() {
    use std::io::Write;
    use std::process::{Command, Stdio};
    let mut child = Command::new(logferry_test_kit::logferry::logferry_bin())
        .args(["run", "--config"])
        .arg(repo().join("examples/stdin-to-stdout.toml"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin
        .write_all(b"{\"msg\":\"hello\",\"n\":1}\nnot json\n{\"msg\":\"bye\"}\n")
        .unwrap();
    drop(stdin);
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 3);
    assert_eq!(lines[0]["message"], "hello");
    assert_eq!(lines[0]["n"], 1);
    assert!(lines[0]["time"].as_str().is_some_and(|t| t.ends_with('Z')));
    // A line that is not JSON is kept as text, not dropped.
    assert_eq!(lines[1]["log"], "not json");
    assert_eq!(lines[2]["message"], "bye");
}

#[test]
fn health_and_metrics_endpoints() {
    let mut lf = Logferry::start(
        "[service]\nhttp_listen = \"{http}\"\n[[sources]]\ntype = \"forward\"\nlisten = \"{forward}\"\n[[sinks]]\ntype = \"file\"\nmatch = \"*\"\npath = \"{dir}/o\"\n",
    );
    let (code, body) = lf.health();
    assert_eq!((code, body.as_str()), (200, "{\"status\":\"ok\"}"));
    let url = format!("http://{}/health", lf.http);
    assert!(logferry(&["healthcheck", "--url", &url]).status.success());
    logferry_test_kit::logferry::loadgen(&lf.forward.to_string(), &["--records", "10"]);
    logferry_test_kit::logferry::wait_for_lines(
        &lf.path("o"),
        10,
        std::time::Duration::from_secs(10),
    );
    // The sink counts a batch right after writing it: poll briefly.
    let want = [
        "logferry_records_in_total{component=\"forward.0\",kind=\"source\"} 10",
        "logferry_records_out_total{component=\"file.0\",kind=\"sink\"} 10",
    ];
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    let mut m = lf.metrics();
    while !want.iter().all(|w| m.contains(w)) && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(20));
        m = lf.metrics();
    }
    for w in want {
        assert!(m.contains(w), "{w} missing from:\n{m}");
    }
    assert!(lf.terminate().success());
    // Nothing listens any more: the healthcheck fails.
    assert_eq!(
        logferry(&["healthcheck", "--url", &url]).status.code(),
        Some(1)
    );
}
