//! FireLens drop-in: the Fluent Bit configs ECS generates (tests/fixtures/firelens, read in
//! place), their translation compared with hand-written native TOML, the error messages, and
//! the real binary run on a (path-rewritten) copy of awsvpc-kinesis.conf: Docker's recorded
//! fluentd frames on the unix socket, loadgen over TCP, records read back from moto's Kinesis,
//! and the documented health check run with the real `nc`.

use support::kinesis as kin;
mod support;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use logferry::config::fluent_bit;
use logferry::config::{Config, ConfigError};
use logferry::event::{Event, EventTime, Map, Value};
use logferry_test_kit::metrics;
use logferry_test_kit::net::{free_port, http_request, wait_port};
use logferry_test_kit::paths::repo_root;
use logferry_test_kit::stand_ins::Moto;
use logferry_test_kit::wait::wait_until_or;

fn fixtures() -> PathBuf {
    let dir = repo_root().join("tests/fixtures/firelens");
    assert!(
        dir.join("README.md").is_file(),
        "the FireLens fixtures are missing: {} (they are part of the repository)",
        dir.display()
    );
    dir
}

fn fixture_text(name: &str) -> String {
    std::fs::read_to_string(fixtures().join(name)).unwrap()
}

fn no_env(_: &str) -> Option<String> {
    None
}

fn problems(e: ConfigError) -> Vec<String> {
    e.problems.iter().map(ToString::to_string).collect()
}

// --- translation -----------------------------------------------------------------------------

/// What awsvpc-kinesis.conf means, written by hand in the native format.
const AWSVPC_NATIVE: &str = r#"
[[sources]]
type = "forward"
name = "forward.0"
unix_path = "/var/run/fluent.sock"

[[sources]]
type = "forward"
name = "forward.1"
listen = "127.0.0.1:24224"

[[sources]]
type = "tcp"
name = "tcp.0"
listen = "127.0.0.1"
port = 8877
tag = "firelens-healthcheck"
idle_timeout = "1s"

[[transforms]]
type = "record_modifier"
name = "record_modifier.0"
match = "*"
records = { ecs_cluster = "prod", ecs_task_arn = "arn:aws:ecs:us-east-1:123456789012:task/prod/0123456789abcdef0123456789abcdef", ecs_task_definition = "web:7" }

[[sinks]]
type = "null"
name = "null.0"
match = "firelens-healthcheck"

[[sinks]]
type = "kinesis"
name = "kinesis_streams.0"
match = "web-firelens*"
buffer_limit = "256MB"
partition_key = "container_id"
region = "us-east-1"
stream = "app-logs"
time_key = "@timestamp"
"#;

/// The parts of a config that can be compared (transforms are compared by what they do).
fn summary(config: &Config) -> (String, Vec<String>, Vec<String>, Vec<String>) {
    let sources = config
        .sources
        .iter()
        .map(|s| format!("{} {:?}", s.name, s.config))
        .collect();
    let transforms = config
        .transforms
        .iter()
        .map(|t| format!("{} {:?}", t.name, t.matcher))
        .collect();
    let sinks = config
        .sinks
        .iter()
        .map(|s| {
            format!(
                "{} {:?} {} {:?} {:?}",
                s.name,
                s.matcher,
                s.buffer_limit.bytes(),
                s.buffer,
                s.config
            )
        })
        .collect();
    (format!("{:?}", config.service), sources, transforms, sinks)
}

fn docker_event() -> Event {
    let mut record = Map::new();
    record.push("container_id".into(), Value::from("5f1c"));
    record.push("log".into(), Value::from("hello"));
    Event::new(
        "web-firelens-0123".into(),
        EventTime::new(1_715_679_001, 0),
        record,
    )
}

#[test]
fn awsvpc_kinesis_translates_to_the_hand_written_native_config() {
    let path = fixtures().join("awsvpc-kinesis.conf");
    let mut translated = fluent_bit::parse(&path, &no_env).unwrap_or_else(|e| panic!("{e}"));
    let mut expected = Config::parse(Path::new("expected.toml"), AWSVPC_NATIVE, &no_env)
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(summary(&translated), summary(&expected));
    let mut a = vec![docker_event()];
    let mut b = vec![docker_event()];
    translated.transforms[0].transform.apply(&mut a);
    expected.transforms[0].transform.apply(&mut b);
    assert_eq!(a[0].record, b[0].record);
    assert_eq!(
        a[0].record.get(b"ecs_task_definition"),
        Some(&Value::from("web:7"))
    );
}

/// What fargate-minimal.conf means, written by hand in the native format.
const FARGATE_NATIVE: &str = r#"
[[sources]]
type = "forward"
name = "forward.0"
unix_path = "/var/run/fluent.sock"

[[sources]]
type = "forward"
name = "forward.1"
listen = "127.0.0.1:24224"

[[sources]]
type = "tcp"
name = "tcp.0"
listen = "127.0.0.1"
port = 8877
tag = "firelens-healthcheck"
idle_timeout = "1s"

[[sinks]]
type = "null"
name = "null.0"
match = "firelens-healthcheck"

[[sinks]]
type = "cloudwatch_logs"
name = "cloudwatch_logs.0"
match = "app-firelens*"
buffer_limit = "25MB"
auto_create_group = true
log_group_name = "app"
log_stream_prefix = "fb-"
region = "us-west-2"
"#;

#[test]
fn fargate_minimal_with_cloudwatch_logs_translates_to_the_hand_written_native_config() {
    let path = fixtures().join("fargate-minimal.conf");
    let (sections, read_problems) = fluent_bit::reader::read(&path, &no_env);
    assert!(read_problems.is_empty(), "{read_problems:?}");
    assert_eq!(sections.len(), 5);
    let translated = fluent_bit::parse(&path, &no_env).unwrap_or_else(|e| panic!("{e}"));
    let expected = Config::parse(Path::new("expected.toml"), FARGATE_NATIVE, &no_env)
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(summary(&translated), summary(&expected));
    // The same through the command line.
    let out = logferry_test_kit::logferry::logferry(&[
        "validate",
        "--fluent-bit-config",
        path.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// bridge-kafka-include.conf with its @INCLUDE pointed at `include` (the rest verbatim).
fn bridge_copy(dir: &Path, include: &str) -> PathBuf {
    let text = fixture_text("bridge-kafka-include.conf");
    assert!(text.contains("@INCLUDE /fluent-bit/etc/extra.conf\n"));
    let text = text.replace(
        "@INCLUDE /fluent-bit/etc/extra.conf\n",
        &format!("@INCLUDE {include}\n"),
    );
    let path = dir.join("fluent-bit.conf");
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn bridge_kafka_include_works_with_its_include_and_names_a_missing_one() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("etc")).unwrap();
    std::fs::write(
        dir.path().join("etc/extra.conf"),
        "# the user's own file\n[OUTPUT]\n    Name  stdout\n    Match jobs-*\n    Format json_lines\n",
    )
    .unwrap();
    let path = bridge_copy(dir.path(), "etc/extra.conf");
    let config = fluent_bit::parse(&path, &no_env).unwrap_or_else(|e| panic!("{e}"));
    let (_, sources, transforms, sinks) = summary(&config);
    assert_eq!(sources.len(), 3);
    assert!(
        sources[1].contains("listen: Some(\"0.0.0.0:24224\")"),
        "{sources:?}"
    );
    assert_eq!(
        transforms
            .iter()
            .map(|t| t.split(' ').next().unwrap())
            .collect::<Vec<_>>(),
        ["grep.0", "grep.1", "record_modifier.0"]
    );
    let names: Vec<&str> = sinks.iter().map(|s| s.split(' ').next().unwrap()).collect();
    assert_eq!(names, ["stdout.0", "null.0", "kafka.0", "kinesis.0"]);
    let kafka = &sinks[2];
    assert!(kafka.contains("aws_msk_iam: true"), "{kafka}");
    assert!(
        kafka.contains("b-1.msk.example:9098,b-2.msk.example:9098"),
        "{kafka}"
    );
    assert!(sinks[3].contains("aggregation: true"), "{}", sinks[3]);
    // 25MB shared by the three sinks that hold records.
    let limits: Vec<u64> = config
        .sinks
        .iter()
        .map(|s| s.buffer_limit.bytes())
        .collect();
    let default = logferry::config::DEFAULT_BUFFER_LIMIT.bytes();
    assert_eq!(limits, [8_333_333, default, 8_333_333, 8_333_333]);

    // The grep filters keep ERROR|WARN for api and drop DEBUG for jobs.
    let mut config = config;
    let event = |tag: &str, log: &str| {
        let mut record = Map::new();
        record.push("log".into(), Value::from(log));
        Event::new(tag.into(), EventTime::default(), record)
    };
    let mut api = vec![
        event("api-firelens-1", "an ERROR"),
        event("api-firelens-1", "info"),
    ];
    config.transforms[0].transform.apply(&mut api);
    assert_eq!(api.len(), 1);
    let mut jobs = vec![
        event("jobs-firelens-1", "DEBUG x"),
        event("jobs-firelens-1", "y"),
    ];
    config.transforms[1].transform.apply(&mut jobs);
    assert_eq!(jobs.len(), 1);

    // Missing include: the including file and line, and the path.
    let missing = bridge_copy(dir.path(), "etc/gone.conf");
    let err = fluent_bit::parse(&missing, &no_env)
        .err()
        .expect("must fail");
    let p = problems(err);
    assert_eq!(p.len(), 1, "{p:?}");
    assert!(
        p[0].starts_with(&format!("{}:36: @INCLUDE ", missing.display()))
            && p[0].contains("gone.conf"),
        "{}",
        p[0]
    );
    // The verbatim fixture: its absolute include does not exist here.
    let err = fluent_bit::parse(&fixtures().join("bridge-kafka-include.conf"), &no_env)
        .err()
        .expect("must fail");
    assert!(problems(err)[0].contains(":36: @INCLUDE /fluent-bit/etc/extra.conf: no such file"));
}

#[test]
fn both_config_flags_at_once_are_refused() {
    let out = logferry_test_kit::logferry::logferry(&[
        "validate",
        "--config",
        "a.toml",
        "--fluent-bit-config",
        "b.conf",
    ]);
    assert_eq!(out.status.code(), Some(2), "clap usage error");
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot be used with"));
}

#[test]
fn without_flags_the_mounted_fluent_bit_file_wins_else_the_native_default() {
    let dir = tempfile::tempdir().unwrap();
    let fb = dir.path().join("fluent-bit.conf");
    let native = dir.path().join("logferry.toml");
    std::fs::write(
        &native,
        "[[sources]]\ntype = \"stdin\"\n[[sinks]]\ntype = \"null\"\nmatch = \"*\"\n",
    )
    .unwrap();
    let validate = || {
        Command::new(logferry_test_kit::logferry::logferry_bin())
            .arg("validate")
            .env_remove("LOGFERRY_CONFIG")
            .env_remove("LOGFERRY_FLUENT_BIT_CONFIG")
            .env("LOGFERRY_DEFAULT_FLUENT_BIT_CONFIG", &fb)
            .env("LOGFERRY_DEFAULT_CONFIG", &native)
            .output()
            .unwrap()
    };
    let out = validate();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        format!("{}: ok", native.display())
    );
    std::fs::write(&fb, "[OUTPUT]\n    Name opensearch\n").unwrap();
    let out = validate();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr.contains("reading it as Fluent Bit config"),
        "{stderr}"
    );
    assert!(
        stderr.contains("fluent-bit.conf:2: [OUTPUT] opensearch: `Name`"),
        "{stderr}"
    );
}

// --- end to end ------------------------------------------------------------------------------

/// A running `logferry run` (no flags: the default Fluent Bit path, moved by the environment).
struct Router {
    child: Child,
    log: PathBuf,
    http: std::net::SocketAddr,
}

impl Router {
    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn metrics(&self) -> String {
        let (code, body) = http_request(self.http, "GET", "/metrics", b"");
        assert_eq!(code, 200);
        String::from_utf8_lossy(&body).into_owned()
    }

    /// The first metric line containing every one of `parts`.
    fn metric(&self, parts: &[&str]) -> f64 {
        metrics::first_containing(&self.metrics(), parts).unwrap_or(0.0)
    }

    fn wait_for(&self, what: &str, mut check: impl FnMut(&Router) -> bool) {
        wait_until_or(
            what,
            Duration::from_secs(60),
            || check(self),
            || kin::tail(&self.log(), 60),
        );
    }

    fn stop(mut self) -> i32 {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(40);
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status.code().unwrap_or(-1);
            }
            assert!(
                Instant::now() < deadline,
                "logferry did not stop:\n{}",
                kin::tail(&self.log(), 40)
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Router {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs `logferry run` with no flags on `text` written as the mounted Fluent Bit config in
/// `dir` (AWS test environment), and waits until `ports` and the HTTP port listen.
fn start_router(dir: &Path, text: &str, http: u16, ports: &[u16]) -> Router {
    let conf = dir.join("fluent-bit.conf");
    std::fs::write(&conf, text).unwrap();
    let log = dir.join("logferry.log");
    let mut command = Command::new(logferry_test_kit::logferry::logferry_bin());
    command.arg("run");
    kin::aws_env(&mut command);
    command
        .env_remove("LOGFERRY_CONFIG")
        .env_remove("LOGFERRY_FLUENT_BIT_CONFIG")
        .env("LOGFERRY_DEFAULT_FLUENT_BIT_CONFIG", &conf)
        .env("LOGFERRY_DEFAULT_CONFIG", dir.join("absent.toml"))
        .stdin(Stdio::null())
        .stdout(Stdio::from(std::fs::File::create(&log).unwrap()))
        .stderr(Stdio::from(
            std::fs::OpenOptions::new().append(true).open(&log).unwrap(),
        ));
    let router = Router {
        child: command.spawn().unwrap(),
        log,
        http: ([127, 0, 0, 1], http).into(),
    };
    for &port in ports.iter().chain([&http]) {
        assert!(
            wait_port(([127, 0, 0, 1], port).into(), Duration::from_secs(30)),
            "port {port} not listening:\n{}",
            router.log()
        );
    }
    router
}

/// The documented FireLens container health check, run by `sh` with a real netcat: `nc` is
/// Debian's netcat-openbsd, `ncat` is nmap's (what `nc` is on Amazon Linux, the aws-for-fluent-bit
/// base). The image's own `nc`, busybox's, is run inside the built image by tests/image.rs.
fn health_check(nc: &str, port: u16) -> std::process::ExitStatus {
    assert!(
        Command::new("sh")
            .args(["-c", &format!("command -v {nc}")])
            .stdout(Stdio::null())
            .status()
            .unwrap()
            .success(),
        "`{nc}` is not installed: run scripts/setup (it installs netcat-openbsd and ncat)"
    );
    let script =
        format!("echo '{{\"health\": \"check\"}}' | timeout 20 {nc} 127.0.0.1 {port} || exit 1");
    Command::new("sh").args(["-c", &script]).status().unwrap()
}

#[test]
fn awsvpc_router_ships_docker_frames_and_loadgen_records_to_kinesis_and_answers_the_health_check() {
    let moto = Moto::start();
    kin::create_stream(&moto.endpoint(), "app-logs", 2);

    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("fluent.sock");
    let (forward, healthcheck, http) = (free_port(), free_port(), free_port());
    let original = fixture_text("awsvpc-kinesis.conf");
    for needle in [
        "unix_path /var/run/fluent.sock\n",
        "Port 24224\n",
        "Port 8877\n",
    ] {
        assert!(original.contains(needle), "fixture changed: {needle}");
    }
    let text = format!(
        "[SERVICE]\n    HTTP_Listen 127.0.0.1\n    HTTP_Port {http}\n    Grace 10\n{}    endpoint {}\n",
        original
            .replace("/var/run/fluent.sock", socket.to_str().unwrap())
            .replace("Port 24224\n", &format!("Port {forward}\n"))
            .replace("Port 8877\n", &format!("Port {healthcheck}\n")),
        moto.endpoint()
    );
    let router = start_router(dir.path(), &text, http, &[forward, healthcheck]);
    assert!(
        router.log().contains("reading it as Fluent Bit config"),
        "the log says which file was chosen:\n{}",
        router.log()
    );

    // The documented health check exits 0 and its record reaches the null output, with either
    // netcat; against a port nobody listens on it fails.
    assert!(
        health_check("nc", healthcheck).success(),
        "{}",
        router.log()
    );
    router.wait_for("the health-check record in null.0", |r| {
        r.metric(&["records_out", "null.0"]) >= 1.0
    });
    assert!(
        health_check("ncat", healthcheck).success(),
        "{}",
        router.log()
    );
    router.wait_for("the ncat health-check record in null.0", |r| {
        r.metric(&["records_out", "null.0"]) >= 2.0
    });
    assert!(!health_check("ncat", free_port()).success());

    // Bad JSON is counted, the connection stays usable.
    let mut conn = std::net::TcpStream::connect(("127.0.0.1", healthcheck)).unwrap();
    conn.write_all(b"this is not json\n").unwrap();
    router.wait_for("an invalid_json error", |r| {
        r.metric(&["errors", "tcp.0", "invalid_json"]) >= 1.0
    });
    conn.write_all(b"{\"after\": \"bad\"}\n").unwrap();
    router.wait_for("the record after the bad one", |r| {
        r.metric(&["records_out", "null.0"]) >= 3.0
    });
    drop(conn);

    // Docker's fluentd driver frames on the unix socket.
    let frames = std::fs::read(fixtures().join("docker-fluentd-frames.bin")).unwrap();
    let mut unix = std::os::unix::net::UnixStream::connect(&socket).unwrap();
    unix.write_all(&frames).unwrap();
    drop(unix);
    // An app with its own fluent logger on TCP 24224.
    let tag = "web-firelens-0123456789abcdef0123456789abcdef";
    let out = Command::new(logferry_test_kit::logferry::logferry_bin())
        .args(["loadgen", "--target", &format!("127.0.0.1:{forward}")])
        .args([
            "--records",
            "200",
            "--size",
            "150",
            "--batch",
            "50",
            "--tag",
            tag,
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    router.wait_for("205 records in Kinesis", |r| {
        r.metric(&["logferry_kinesis_user_records_sent_total"]) >= 205.0
    });
    let log = router.log();
    assert_eq!(router.stop(), 0, "{}", kin::tail(&log, 40));

    let contents = kin::read_stream(&moto.endpoint(), "app-logs");
    let users = contents.users();
    assert_eq!(users.len(), 205);
    let task_arn = "arn:aws:ecs:us-east-1:123456789012:task/prod/0123456789abcdef0123456789abcdef";
    let container_id = "5f1c2b3a4d5e6f708192a3b4c5d6e7f80112233445566778899aabbccddeeff0";
    let mut docker = 0;
    let mut seqs = Vec::new();
    for (_, user) in users {
        let record = user.json();
        assert_eq!(record["ecs_cluster"], "prod", "{record}");
        assert_eq!(record["ecs_task_arn"], task_arn);
        assert_eq!(record["ecs_task_definition"], "web:7");
        let stamp = record["@timestamp"].as_str().expect("time_key added");
        if record.get("container_id").is_some() {
            docker += 1;
            assert_eq!(record["container_id"], container_id);
            assert_eq!(
                user.partition_key, container_id,
                "partition_key container_id"
            );
            assert!(stamp.starts_with("2024-05-14T09:30:0"), "{stamp}");
            assert_eq!(stamp.len(), "2024-05-14T09:30:01".len(), "{stamp}");
        } else {
            seqs.push(record["seq"].as_u64().expect("loadgen seq"));
        }
    }
    assert_eq!(docker, 5, "the five Docker frames");
    seqs.sort_unstable();
    assert_eq!(seqs, (0..200).collect::<Vec<u64>>());
}

/// fargate-minimal.conf, exactly as ECS renders it for a task whose app container logs to
/// CloudWatch Logs (`cloudwatch_logs`, group `app` created on demand, streams `fb-<tag>`),
/// run with only the socket path and ports moved and `endpoint` pointed at moto: the app's
/// records arrive in the group, in order, each once.
#[test]
fn fargate_router_ships_app_records_to_cloudwatch_logs_with_the_config_unchanged() {
    let moto = Moto::start();
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("fluent.sock");
    let (forward, healthcheck, http) = (free_port(), free_port(), free_port());
    let original = fixture_text("fargate-minimal.conf");
    let text = format!(
        "[SERVICE]\n    HTTP_Listen 127.0.0.1\n    HTTP_Port {http}\n    Grace 10\n{}    endpoint {}\n",
        original
            .replace("/var/run/fluent.sock", socket.to_str().unwrap())
            .replace("Port 24224\n", &format!("Port {forward}\n"))
            .replace("Port 8877\n", &format!("Port {healthcheck}\n")),
        moto.endpoint()
    );
    assert!(text.ends_with(&format!(
        "region us-west-2\n    endpoint {}\n",
        moto.endpoint()
    )));
    let router = start_router(dir.path(), &text, http, &[forward, healthcheck]);
    assert!(
        health_check("nc", healthcheck).success(),
        "{}",
        router.log()
    );

    let tag = "app-firelens-0123456789abcdef0123456789abcdef";
    let out = Command::new(logferry_test_kit::logferry::logferry_bin())
        .args(["loadgen", "--target", &format!("127.0.0.1:{forward}")])
        .args([
            "--records",
            "500",
            "--size",
            "150",
            "--batch",
            "50",
            "--ack",
            "--tag",
            tag,
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    router.wait_for("500 events in CloudWatch Logs", |r| {
        r.metric(&["records_out", "cloudwatch_logs.0"]) >= 500.0
    });
    let log = router.log();
    assert_eq!(router.stop(), 0, "{}", kin::tail(&log, 40));

    let events = logferry_test_kit::cloudwatch_logs::events_in(
        "us-west-2",
        &moto.endpoint(),
        "app",
        &format!("fb-{tag}"),
    );
    let seqs: Vec<u64> = events.iter().map(|e| e.seq()).collect();
    assert_eq!(seqs, (0..500).collect::<Vec<u64>>(), "in order, each once");
}

/// awsvpc-cloudwatch-firehose.conf as ECS renders it (aws-for-fluent-bit's `cloudwatch` with
/// its `$(ecs_cluster)` / `$(ecs_task_id)` templates, and `kinesis_firehose`), run with only
/// the socket path, the ports and each output's `endpoint` (moto) added: each container's
/// records arrive, once, where the task definition sends them.
#[test]
fn awsvpc_router_ships_to_cloudwatch_and_firehose_with_the_config_unchanged() {
    let moto = Moto::start();
    logferry_test_kit::firehose::create_stream(&moto.endpoint(), "app-logs", "app-logs-bucket");
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("fluent.sock");
    let (forward, healthcheck, http) = (free_port(), free_port(), free_port());
    let original = fixture_text("awsvpc-cloudwatch-firehose.conf");
    assert_eq!(
        original.matches("    region us-east-1\n").count(),
        2,
        "fixture changed"
    );
    let text = format!(
        "[SERVICE]\n    HTTP_Listen 127.0.0.1\n    HTTP_Port {http}\n    Grace 10\n{}",
        original
            .replace("/var/run/fluent.sock", socket.to_str().unwrap())
            .replace("Port 24224\n", &format!("Port {forward}\n"))
            .replace("Port 8877\n", &format!("Port {healthcheck}\n"))
            .replace(
                "    region us-east-1\n",
                &format!("    region us-east-1\n    endpoint {}\n", moto.endpoint()),
            )
    );
    let router = start_router(dir.path(), &text, http, &[forward, healthcheck]);
    let send = |tag: &str, records: &str| {
        let out = Command::new(logferry_test_kit::logferry::logferry_bin())
            .args(["loadgen", "--target", &format!("127.0.0.1:{forward}")])
            .args([
                "--records",
                records,
                "--size",
                "150",
                "--batch",
                "50",
                "--ack",
            ])
            .args(["--tag", tag])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    send("api-firelens-0123456789abcdef0123456789abcdef", "300");
    send("web-firelens-0123456789abcdef0123456789abcdef", "400");
    router.wait_for(
        "300 events in CloudWatch Logs and 400 records in Firehose",
        |r| {
            r.metric(&["records_out", "cloudwatch.0"]) >= 300.0
                && r.metric(&["records_out", "kinesis_firehose.0"]) >= 400.0
        },
    );
    let log = router.log();
    assert_eq!(router.stop(), 0, "{}", kin::tail(&log, 40));

    // cloudwatch: group /ecs/$(ecs_cluster), stream $(ecs_task_id), from the ECS metadata
    // the record_modifier added.
    let events = logferry_test_kit::cloudwatch_logs::events(
        &moto.endpoint(),
        "/ecs/prod",
        "0123456789abcdef0123456789abcdef",
    );
    let seqs: Vec<u64> = events.iter().map(|e| e.seq()).collect();
    assert_eq!(seqs, (0..300).collect::<Vec<u64>>(), "in order, each once");
    assert_eq!(events[0].json()["ecs_task_definition"], "web:9");

    // kinesis_firehose: JSON lines with @timestamp, in the stream's S3 bucket.
    let mut seqs = Vec::new();
    for object in logferry_test_kit::firehose::read_bucket(&moto.endpoint(), "app-logs-bucket") {
        let text = String::from_utf8(object.data()).unwrap();
        assert!(text.ends_with('\n'), "newline-delimited records");
        for line in text.lines() {
            let record: serde_json::Value = serde_json::from_str(line).unwrap();
            assert_eq!(record["ecs_cluster"], "prod", "{record}");
            assert!(record["@timestamp"].is_string(), "{record}");
            seqs.push(record["seq"].as_u64().unwrap());
        }
    }
    seqs.sort_unstable();
    assert_eq!(seqs, (0..400).collect::<Vec<u64>>(), "each once");
}
