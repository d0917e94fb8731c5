//! The container image, as built by `scripts/build-image` (the Dockerfile's runtime stage, built
//! with buildah and exported as an OCI archive), run with podman as ECS runs a FireLens log
//! router: the ECS-generated Fluent Bit config mounted at `/fluent-bit/etc/fluent-bit.conf`, the
//! socket directory mounted at `/var/run` (owned by the router's user, as the ECS agent's
//! non-root FireLens mode makes it), a read-only root file system, the image's own user
//! (10001), and the documented health check run inside the container.
//!
//! `LOGFERRY_IMAGE_ARCHIVE` names the archive (`scripts/test` builds it and sets it). Without it
//! these tests print a loud SKIPPED line and pass, so that a plain `cargo test` does not need the
//! image; with it, a missing podman or a broken image fails them.
//!
//! How podman runs here: with `runc`, because crun 1.8 refuses this machine's hybrid cgroup
//! layout ("cgroups in hybrid mode not supported"), and with explicit `--ulimit`s no higher
//! than this process's, because podman's default (`nofile=1048576`) needs CAP_SYS_RESOURCE.
//! The containers share the host's network namespace (`--network host`): the stand-ins listen
//! on loopback only, so the config's ports are rewritten to free ones (nothing else in it is).
//!
//! Also: librdkafka's TLS in the image (its OpenSSL linked statically) trusts the CA that
//! `SSL_CERT_FILE` names, as the AWS SDK's rustls does.

mod support;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use logferry_test_kit::fault_kinesis::{FaultKinesis, Faults, RequestFault, AWS_ENV};
use logferry_test_kit::kafka::{assert_exactly_once, consumer_config, read_all, seqs};
use logferry_test_kit::kinesis::{create_stream, read_stream};
use logferry_test_kit::metrics;
use logferry_test_kit::net::{free_port, http_request, wait_port};
use logferry_test_kit::paths::repo_root;
use logferry_test_kit::stand_ins::{Moto, Tansu};
use logferry_test_kit::wait::{tail, wait_until_or};
use rdkafka::consumer::{BaseConsumer, DefaultConsumerContext};
use support::tls::{make_certs, TlsProxy};

/// The image's user, set by `USER` in the Dockerfile.
const IMAGE_UID: u32 = 10001;

/// The archive to test, or None (after a loud SKIPPED line) when none was built.
fn archive(test: &str) -> Option<PathBuf> {
    match std::env::var_os("LOGFERRY_IMAGE_ARCHIVE").filter(|v| !v.is_empty()) {
        Some(path) => {
            let path = PathBuf::from(path);
            assert!(
                path.is_file(),
                "LOGFERRY_IMAGE_ARCHIVE={} does not exist: run scripts/build-image",
                path.display()
            );
            Some(path)
        }
        None => {
            eprintln!(
                "*** SKIPPED {test}: LOGFERRY_IMAGE_ARCHIVE is not set (scripts/test builds the \
                 image with scripts/build-image and sets it) ***"
            );
            None
        }
    }
}

fn podman() -> Command {
    let mut c = Command::new("podman");
    c.args(["--runtime", "runc"]);
    c
}

fn run(command: &mut Command) -> Output {
    command
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {command:?}: {e} (run scripts/setup)"))
}

fn run_ok(command: &mut Command) -> String {
    let out = run(command);
    assert!(
        out.status.success(),
        "{command:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Loads the archive into podman's storage once per test binary; the image's ID.
fn image(archive: &Path) -> String {
    static IMAGE: OnceLock<String> = OnceLock::new();
    IMAGE
        .get_or_init(|| {
            let out = run_ok(podman().args(["load", "--quiet", "--input"]).arg(archive));
            let name = out
                .lines()
                .find_map(|l| l.strip_prefix("Loaded image: "))
                .or_else(|| {
                    out.lines()
                        .find_map(|l| l.strip_prefix("Loaded image(s): "))
                })
                .unwrap_or_else(|| panic!("podman load said: {out}"))
                .trim()
                .to_string();
            run_ok(podman().args(["image", "inspect", "--format", "{{.Id}}", &name]))
                .trim()
                .to_string()
        })
        .clone()
}

/// A limit of this process from /proc/self/limits ("Max open files", ...): (soft, hard).
fn own_limit(name: &str) -> (String, String) {
    let limits = std::fs::read_to_string("/proc/self/limits").unwrap();
    let line = limits
        .lines()
        .find(|l| l.starts_with(name))
        .unwrap_or_else(|| panic!("no {name} in /proc/self/limits"));
    let fields: Vec<&str> = line[name.len()..].split_whitespace().collect();
    (fields[0].to_string(), fields[1].to_string())
}

/// A running container of the image, removed on drop.
struct Container {
    name: String,
}

impl Container {
    /// `podman run -d` with the router's settings: host network, read-only root file system
    /// (and no tmpfs podman would add), the image's user; plus `args` (mounts, environment).
    fn start(archive: &Path, args: &[String]) -> Container {
        static COUNT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let name = format!(
            "logferry-test-{}-{}",
            std::process::id(),
            COUNT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        );
        let image = image(archive);
        let (nofile, _) = own_limit("Max open files");
        let mut command = podman();
        command
            .args(["run", "--detach", "--name", &name, "--network", "host"])
            .args(["--read-only", "--read-only-tmpfs=false"])
            .args(["--ulimit", &format!("nofile={nofile}:{nofile}")])
            .args(["--ulimit", "nproc=4096:4096"])
            .args(args)
            .arg(&image);
        run_ok(&mut command);
        Container { name }
    }

    fn logs(&self) -> String {
        let out = run(podman().args(["logs", &self.name]));
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    }

    /// `podman exec` in the container (as the image's user).
    fn exec(&self, args: &[&str]) -> Output {
        run(podman().args(["exec", &self.name]).args(args))
    }

    /// The documented FireLens health check, run by the image's `sh` with the image's `nc`.
    fn health_check(&self, port: u16) -> Output {
        let script = format!("echo '{{\"health\": \"check\"}}' | nc 127.0.0.1 {port} || exit 1");
        self.exec(&["sh", "-c", &script])
    }

    /// The uid the container's main process runs as, read from the host's /proc.
    fn process_uid(&self) -> u32 {
        let pid = run_ok(podman().args(["inspect", "--format", "{{.State.Pid}}", &self.name]));
        let status = std::fs::read_to_string(format!("/proc/{}/status", pid.trim())).unwrap();
        let uid = status.lines().find(|l| l.starts_with("Uid:")).unwrap();
        uid.split_whitespace().nth(1).unwrap().parse().unwrap()
    }

    /// `podman stop` with ECS's default stop timeout (SIGTERM, SIGKILL after 30 s); the exit
    /// code (137 if it had to be killed).
    fn stop(&self) -> i64 {
        run_ok(podman().args(["stop", "--time", "30", &self.name]));
        run_ok(podman().args(["inspect", "--format", "{{.State.ExitCode}}", &self.name]))
            .trim()
            .parse()
            .unwrap()
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        let _ = run(podman().args(["rm", "--force", "--time", "0", &self.name]));
    }
}

fn metrics_text(http: u16) -> String {
    let (code, body) = http_request(([127, 0, 0, 1], http).into(), "GET", "/metrics", b"");
    assert_eq!(code, 200);
    String::from_utf8_lossy(&body).into_owned()
}

fn metric(http: u16, parts: &[&str]) -> f64 {
    metrics::first_containing(&metrics_text(http), parts).unwrap_or(0.0)
}

fn wait_for(container: &Container, what: &str, check: impl FnMut() -> bool) {
    wait_until_or(what, Duration::from_secs(60), check, || {
        tail(&container.logs(), 60)
    });
}

fn aws_env_args(extra: &[(&str, &str)]) -> Vec<String> {
    let mut args = Vec::new();
    for (k, v) in AWS_ENV.iter().chain(extra) {
        args.push("--env".to_string());
        args.push(format!("{k}={v}"));
    }
    args
}

/// A directory the container's user owns, like the socket directory the ECS agent chowns to a
/// non-root FireLens router.
fn owned_dir(parent: &Path, name: &str) -> PathBuf {
    let dir = parent.join(name);
    std::fs::create_dir(&dir).unwrap();
    std::os::unix::fs::chown(&dir, Some(IMAGE_UID), Some(IMAGE_UID)).unwrap();
    dir
}

#[test]
fn firelens_router_in_the_image_ships_docker_frames_to_kinesis_and_answers_the_health_check() {
    let Some(archive) = archive("firelens_router_in_the_image") else {
        return;
    };
    let moto = Moto::start();
    create_stream(&moto.endpoint(), "app-logs", 2);

    let dir = tempfile::tempdir().unwrap();
    let sockets = owned_dir(dir.path(), "socket");
    let (forward, healthcheck, http) = (free_port(), free_port(), free_port());
    let fixtures = repo_root().join("tests/fixtures/firelens");
    let original = std::fs::read_to_string(fixtures.join("awsvpc-kinesis.conf")).unwrap();
    for needle in [
        "unix_path /var/run/fluent.sock\n",
        "Port 24224\n",
        "Port 8877\n",
    ] {
        assert!(original.contains(needle), "fixture changed: {needle}");
    }
    // The socket path stays /var/run/fluent.sock (the mounted directory); only the TCP ports
    // move, since the container shares the host's network, and the Kinesis endpoint is moto.
    let text = format!(
        "[SERVICE]\n    HTTP_Listen 127.0.0.1\n    HTTP_Port {http}\n    Grace 10\n{}    endpoint {}\n",
        original
            .replace("Port 24224\n", &format!("Port {forward}\n"))
            .replace("Port 8877\n", &format!("Port {healthcheck}\n")),
        moto.endpoint()
    );
    let conf = dir.path().join("fluent-bit.conf");
    std::fs::write(&conf, text).unwrap();

    let mut args = vec![
        "--volume".to_string(),
        format!("{}:/var/run", sockets.display()),
        "--volume".to_string(),
        format!("{}:/fluent-bit/etc/fluent-bit.conf:ro", conf.display()),
    ];
    args.extend(aws_env_args(&[]));
    let router = Container::start(&archive, &args);
    wait_listening(&router, &[forward, healthcheck, http]);
    let logs = router.logs();
    assert!(
        logs.contains("reading it as Fluent Bit config"),
        "the mounted Fluent Bit config is the one read:\n{logs}"
    );

    // The image's user, and a root file system it cannot write to, not even where it owns the
    // directory.
    assert_eq!(router.process_uid(), IMAGE_UID);
    let write = router.exec(&["sh", "-c", "echo x > /var/lib/logferry/probe"]);
    assert!(!write.status.success());
    assert!(
        String::from_utf8_lossy(&write.stderr).contains("Read-only file system"),
        "{}",
        String::from_utf8_lossy(&write.stderr)
    );

    // The documented health check, inside the container: exits 0, its record reaches the null
    // output; against a port nobody listens on it fails.
    let check = router.health_check(healthcheck);
    assert!(check.status.success(), "{check:?}\n{}", router.logs());
    wait_for(&router, "the health-check record in null.0", || {
        metric(http, &["records_out", "null.0"]) >= 1.0
    });
    assert!(!router.health_check(free_port()).status.success());
    // The image's HEALTHCHECK command (plain docker run) against /health.
    let out = router.exec(&[
        "logferry",
        "healthcheck",
        "--url",
        &format!("http://127.0.0.1:{http}/health"),
    ]);
    assert!(out.status.success(), "{out:?}");

    // Docker's fluentd driver frames on the socket in the shared directory (written from the
    // host side, as dockerd does), and an app's fluent logger on TCP: the image's own loadgen.
    let frames = std::fs::read(fixtures.join("docker-fluentd-frames.bin")).unwrap();
    let mut unix = std::os::unix::net::UnixStream::connect(sockets.join("fluent.sock")).unwrap();
    unix.write_all(&frames).unwrap();
    drop(unix);
    let tag = "web-firelens-0123456789abcdef0123456789abcdef";
    loadgen(
        &router,
        forward,
        &[
            "--records",
            "200",
            "--size",
            "150",
            "--batch",
            "50",
            "--tag",
            tag,
        ],
    );

    wait_for(&router, "205 records in Kinesis", || {
        metric(http, &["logferry_kinesis_user_records_sent_total"]) >= 205.0
    });
    let logs = router.logs();
    assert_eq!(router.stop(), 0, "{}", tail(&logs, 40));

    let contents = read_stream(&moto.endpoint(), "app-logs");
    let users = contents.users();
    assert_eq!(users.len(), 205);
    let container_id = "5f1c2b3a4d5e6f708192a3b4c5d6e7f80112233445566778899aabbccddeeff0";
    let mut docker = 0;
    let mut seqs = Vec::new();
    for (_, user) in users {
        let record = user.json();
        assert_eq!(record["ecs_cluster"], "prod", "{record}");
        assert_eq!(record["ecs_task_definition"], "web:7");
        assert!(record["@timestamp"].is_string(), "time_key added: {record}");
        if record.get("container_id").is_some() {
            docker += 1;
            assert_eq!(record["container_id"], container_id);
            assert_eq!(user.partition_key, container_id);
        } else {
            seqs.push(record["seq"].as_u64().expect("loadgen seq"));
        }
    }
    assert_eq!(docker, 5, "the five Docker frames");
    seqs.sort_unstable();
    assert_eq!(seqs, (0..200).collect::<Vec<u64>>());
}

#[test]
fn sigterm_drains_what_the_image_holds_within_the_grace_period() {
    let Some(archive) = archive("sigterm_drains_what_the_image_holds") else {
        return;
    };
    // Every PutRecords answer takes 2 s, and records wait up to 30 s for a batch: at SIGTERM
    // they are still in logferry, which must send them all before its 20 s grace period ends
    // (exit 0; 2 if records were left; 137 if podman had to kill it after 30 s).
    let kinesis = FaultKinesis::start(Faults {
        request_cycle: vec![RequestFault::Slow(Duration::from_secs(2))],
        ..Faults::default()
    });
    let dir = tempfile::tempdir().unwrap();
    let (forward, http) = (free_port(), free_port());
    let config = dir.path().join("logferry.toml");
    std::fs::write(
        &config,
        format!(
            "[service]\ngrace_period = \"20s\"\nhttp_listen = \"127.0.0.1:{http}\"\n\n\
             [[sources]]\ntype = \"forward\"\nlisten = \"127.0.0.1:{forward}\"\n\n\
             [[sinks]]\ntype = \"kinesis\"\nmatch = \"*\"\nstream = \"drain\"\n\
             endpoint = \"{}\"\nflush = \"30s\"\nshard_rate_limit = false\n",
            kinesis.endpoint()
        ),
    )
    .unwrap();
    let mut args = vec![
        "--volume".to_string(),
        format!("{}:/etc/logferry/logferry.toml:ro", config.display()),
    ];
    args.extend(aws_env_args(&[]));
    let router = Container::start(&archive, &args);
    wait_listening(&router, &[forward]);
    // 300 records without acks: fewer than a PutRecords batch, so they wait for the flush.
    loadgen(
        &router,
        forward,
        &["--records", "300", "--size", "100", "--batch", "100"],
    );
    wait_for(&router, "300 records taken in", || {
        metrics::sum_containing(&metrics_text(http), &["records_in", "source"]) >= 300.0
    });
    let accepted_before = kinesis.seen(|s| s.accepted.len());
    assert!(
        accepted_before < 300,
        "the records were still in logferry at SIGTERM"
    );

    let code = router.stop();
    let logs = router.logs();
    assert_eq!(
        code,
        0,
        "drained within the grace period:\n{}",
        tail(&logs, 40)
    );
    let (accepted, resent) = kinesis.seen(|s| (s.accepted.len(), s.resent_after_success));
    assert_eq!(
        accepted,
        300,
        "every record delivered:\n{}",
        tail(&logs, 40)
    );
    assert_eq!(resent, 0);
}

#[test]
fn kafka_tls_in_the_image_trusts_the_ca_of_ssl_cert_file() {
    let Some(archive) = archive("kafka_tls_in_the_image") else {
        return;
    };
    // A broker reachable only over TLS, with a certificate a test CA signed: a TLS proxy in
    // front of tansu, which advertises the proxy's address.
    let dir = tempfile::tempdir().unwrap();
    let certs = make_certs(dir.path());
    let proxy = TlsProxy::start(&certs);
    let tansu = Tansu::start_advertising(Some(proxy.addr()));
    proxy.set_upstream(tansu.addr());
    tansu.create_topic("tls-logs", 1);
    let (forward, http) = (free_port(), free_port());
    let config = dir.path().join("logferry.toml");
    std::fs::write(
        &config,
        format!(
            "[service]\ngrace_period = \"10s\"\nhttp_listen = \"127.0.0.1:{http}\"\n\n\
             [[sources]]\ntype = \"forward\"\nlisten = \"127.0.0.1:{forward}\"\n\n\
             [[sinks]]\ntype = \"kafka\"\nmatch = \"*\"\nbrokers = \"{}\"\ntopics = \"tls-logs\"\n\
             [sinks.rdkafka]\n\"security.protocol\" = \"SSL\"\n",
            proxy.addr()
        ),
    )
    .unwrap();
    let mounts = vec![
        "--volume".to_string(),
        format!("{}:/etc/logferry/logferry.toml:ro", config.display()),
        "--volume".to_string(),
        format!("{}:/etc/logferry/test-ca.crt:ro", certs.ca.display()),
    ];
    let send = |router: &Container, first: u64, records: u64| {
        let (records, first) = (records.to_string(), first.to_string());
        let args = [
            "--records",
            &records,
            "--start-seq",
            &first,
            "--size",
            "100",
        ];
        loadgen(router, forward, &args);
    };
    let started = |router: &Container| wait_listening(router, &[forward]);

    // The image's own SSL_CERT_FILE (the system bundle) does not hold the test CA: the broker's
    // certificate is refused.
    let router = Container::start(&archive, &mounts);
    started(&router);
    send(&router, 1000, 5);
    wait_for(&router, "the broker's certificate refused", || {
        router.logs().contains("certificate verify failed")
    });
    drop(router);

    // SSL_CERT_FILE naming the test CA: librdkafka trusts it (logferry passes it on as
    // ssl.ca.location), every record arrives.
    let mut args = mounts.clone();
    args.extend([
        "--env".to_string(),
        "SSL_CERT_FILE=/etc/logferry/test-ca.crt".to_string(),
    ]);
    let router = Container::start(&archive, &args);
    started(&router);
    assert!(
        router.logs().contains("CA certificates from SSL_CERT_FILE"),
        "{}",
        router.logs()
    );
    send(&router, 0, 200);
    wait_for(&router, "200 records in Kafka", || {
        metric(http, &["records_out", "kafka.0"]) >= 200.0
    });
    let logs = router.logs();
    assert_eq!(router.stop(), 0, "{}", tail(&logs, 40));

    let consumer: BaseConsumer<DefaultConsumerContext> = consumer_config(&proxy.addr().to_string())
        .set("security.protocol", "SSL")
        .set("ssl.ca.location", certs.ca.to_str().unwrap())
        .create()
        .expect("TLS consumer");
    let records = read_all(&consumer, "tls-logs", 200, Duration::from_secs(30));
    assert_exactly_once(&seqs(&records), 0..200);
}

/// Waits until something in `router` (host network) listens on each of `ports`; fails the test
/// with the container's log otherwise.
fn wait_listening(router: &Container, ports: &[u16]) {
    for &port in ports {
        if !wait_port(([127, 0, 0, 1], port).into(), Duration::from_secs(30)) {
            panic!("port {port} not listening:\n{}", router.logs());
        }
    }
}

/// Runs the image's own `logferry loadgen` inside `router` against the forward port `port`,
/// with `args` after the target; fails the test if it fails.
fn loadgen(router: &Container, port: u16, args: &[&str]) {
    let target = format!("127.0.0.1:{port}");
    let mut command = vec!["logferry", "loadgen", "--target", &target];
    command.extend_from_slice(args);
    let out = router.exec(&command);
    assert!(out.status.success(), "{out:?}");
}
