//! Real stand-in services for integration tests: moto (Kinesis, STS, IAM, CloudWatch Logs),
//! kinesalite (fast Kinesis) and tansu (Kafka).
//!
//! Each one runs as a child process on 127.0.0.1 with a free port, is ready (accepting
//! connections) when `start()` returns, and is killed and reaped when its handle drops, so a
//! failing test leaves nothing behind. The tools come from `scripts/setup`; their locations follow
//! the same environment variables and defaults as `scripts/lib/common.sh`. A missing tool panics
//! with a pointer to `scripts/setup` instead of skipping, so a test can never pass by not running.
#![allow(dead_code)] // every test file compiles this module but uses only some of it

use std::fs::File;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};

/// How long a service may take to accept connections (moto imports a lot of Python).
const START_TIMEOUT: Duration = Duration::from_secs(60);
/// A port picked by `free_port` can be taken by a parallel test before our server binds it;
/// the server then exits at once and we retry with a new port.
const START_ATTEMPTS: usize = 3;

// --- locations (same variables and defaults as scripts/lib/common.sh) ---------------------------

/// The repository root: `LOGFERRY_REPO`, else the manifest directory of the crate compiling
/// this file, or its parent for a workspace member such as lambda/ (which has no scripts/).
pub fn repo_root() -> PathBuf {
    env_path("LOGFERRY_REPO").unwrap_or_else(|| {
        let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
        if manifest.join("scripts").is_dir() {
            manifest
        } else {
            manifest.parent().map(PathBuf::from).unwrap_or(manifest)
        }
    })
}

/// The Python venv with moto, boto3, confluent-kafka, aws-kinesis-agg, ...
pub fn venv_dir() -> PathBuf {
    env_path("LOGFERRY_VENV").unwrap_or_else(|| repo_root().join(".venv"))
}

/// Cache shared by clones; tansu is built into its `bin/`.
pub fn cache_dir() -> PathBuf {
    env_path("LOGFERRY_CACHE").unwrap_or_else(|| {
        let home = env_path("HOME").unwrap_or_else(|| PathBuf::from("/root"));
        home.join(".cache").join("logferry")
    })
}

/// Folder whose `node_modules` holds kinesalite.
pub fn kinesalite_dir() -> PathBuf {
    env_path("LOGFERRY_KINESALITE_DIR").unwrap_or_else(|| repo_root().join(".tools").join("node"))
}

/// The venv's Python interpreter (panics with a pointer to scripts/setup when missing).
pub fn python() -> PathBuf {
    installed(venv_dir().join("bin").join("python"), "the Python venv")
}

/// The tansu binary (panics with a pointer to scripts/setup when missing).
pub fn tansu_bin() -> PathBuf {
    installed(cache_dir().join("bin").join("tansu"), "tansu")
}

/// A TCP port free on 127.0.0.1 a moment ago, taken from below the kernel's ephemeral range.
///
/// Why not port 0: a port the kernel hands out for `bind(0)` comes from the ephemeral range, the
/// same range it draws the local ports of outgoing connections from. Between this call and the
/// test's server binding it, any connection made by a parallel test (a loadgen, an SDK client, a
/// stand-in) can take it, and the server fails with "Address already in use" (CI saw exactly
/// that). Ports below the range are never used for outgoing connections, so only another
/// listener can take them; each test process walks its own slice of them (offset by its pid)
/// and a port is handed out only once per process.
pub fn free_port() -> u16 {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let (low, high) = listener_port_window();
    let span = usize::from(high.saturating_sub(low)).max(1);
    let offset = (std::process::id() as usize).wrapping_mul(7919) % span;
    for _ in 0..span {
        let step = NEXT.fetch_add(1, Ordering::Relaxed);
        let port = low + ((offset + step) % span) as u16;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|addr| addr.port())
        .expect("no free TCP port on 127.0.0.1")
}

/// Ports `[low, high)` outside the kernel's ephemeral range (`ip_local_port_range`): the 12,000
/// below it, or above it when it starts too low to leave room.
fn listener_port_window() -> (u16, u16) {
    let range =
        std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range").unwrap_or_default();
    let mut bounds = range
        .split_whitespace()
        .filter_map(|n| n.parse::<u16>().ok());
    let (first, last) = match (bounds.next(), bounds.next()) {
        (Some(first), Some(last)) => (first, last),
        _ => (32768, 60999),
    };
    if first >= 10_000 {
        (first.saturating_sub(12_000).max(8_000), first)
    } else {
        (last.saturating_add(1).min(64_000), u16::MAX)
    }
}

/// Waits until `child`, just started, accepts TCP connections on `addr`. Fails at once when it
/// exits first (a bad config, a port taken) rather than after `timeout`; the error says which.
pub fn wait_listening(
    child: &mut Child,
    addr: SocketAddr,
    timeout: Duration,
) -> Result<(), String> {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if let Ok(Some(status)) = child.try_wait() {
            return Err(format!("exited with {status} before listening"));
        }
        if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            return Ok(());
        }
        thread::sleep(Duration::from_millis(50));
    }
    Err(format!("did not listen on {addr} within {timeout:?}"))
}

/// Waits until `addr` accepts TCP connections; false after `timeout`.
pub fn wait_port(addr: SocketAddr, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            return true;
        }
        thread::sleep(Duration::from_millis(50));
    }
    false
}

fn env_path(name: &str) -> Option<PathBuf> {
    std::env::var_os(name)
        .filter(|value| !value.is_empty())
        .map(PathBuf::from)
}

fn installed(path: PathBuf, what: &str) -> PathBuf {
    assert!(
        path.exists(),
        "{what} is not installed: {} is missing. Run scripts/setup (it installs the test tools; \
         see scripts/lib/common.sh for the LOGFERRY_* variables that move them)",
        path.display()
    );
    path
}

// --- a child process bound to a port -------------------------------------------------------------

/// A running server process; killed and reaped on drop. Its stdout/stderr go to a log file
/// that is shown when it fails to start and removed on drop (kept if `LOGFERRY_KEEP_LOGS` is set).
struct ServerProcess {
    name: &'static str,
    child: Child,
    port: u16,
    log: PathBuf,
}

impl ServerProcess {
    /// Starts `command_for(port)` on a free port and waits until the port accepts connections.
    fn start(name: &'static str, mut command_for: impl FnMut(u16) -> Command) -> ServerProcess {
        let mut last_log = String::new();
        for _ in 0..START_ATTEMPTS {
            let port = free_port();
            let log = log_path(name, port);
            let log_file = File::create(&log)
                .unwrap_or_else(|err| panic!("cannot create {}: {err}", log.display()));
            let stderr = log_file.try_clone().expect("cannot clone log file handle");
            let mut command = command_for(port);
            command
                .stdin(Stdio::null())
                .stdout(Stdio::from(log_file))
                .stderr(Stdio::from(stderr));
            let child = command
                .spawn()
                .unwrap_or_else(|err| panic!("cannot start {name} ({command:?}): {err}"));
            let mut server = ServerProcess {
                name,
                child,
                port,
                log,
            };
            match server.wait_ready() {
                Ok(()) => return server,
                Err(reason) => {
                    last_log = format!(
                        "{reason}\n--- {} ---\n{}",
                        server.log.display(),
                        server.log_text()
                    );
                    // Drop kills it; try again on another port (the usual cause is a port race).
                }
            }
        }
        panic!("{name} did not start after {START_ATTEMPTS} attempts: {last_log}");
    }

    fn wait_ready(&mut self) -> Result<(), String> {
        let addr = SocketAddr::from(([127, 0, 0, 1], self.port));
        wait_listening(&mut self.child, addr, START_TIMEOUT)
            .map_err(|reason| format!("{} {reason}", self.name))
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::env::var_os("LOGFERRY_KEEP_LOGS").is_none() {
            let _ = std::fs::remove_file(&self.log);
        }
    }
}

fn log_path(name: &str, port: u16) -> PathBuf {
    static COUNTER: AtomicUsize = AtomicUsize::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    std::env::temp_dir().join(format!(
        "logferry-{name}-{}-{n}-{port}.log",
        std::process::id()
    ))
}

/// One HTTP/1.1 request with `Connection: close`; returns (status, body). Enough for the
/// emulators' control endpoints, so tests need no HTTP client crate.
pub fn http_request(addr: SocketAddr, method: &str, path: &str, body: &[u8]) -> (u16, Vec<u8>) {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))
        .unwrap_or_else(|err| panic!("cannot connect to {addr}: {err}"));
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .expect("set_read_timeout");
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream
        .write_all(head.as_bytes())
        .and_then(|()| stream.write_all(body))
        .expect("send request");
    let mut response = Vec::new();
    stream.read_to_end(&mut response).expect("read response");
    let status_line_end = response
        .iter()
        .position(|&b| b == b'\n')
        .unwrap_or(response.len());
    let status_line = String::from_utf8_lossy(&response[..status_line_end]);
    let status = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("bad HTTP status line from {addr}: {status_line:?}"));
    let body_start = response
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map_or(response.len(), |i| i + 4);
    (status, response[body_start..].to_vec())
}

// --- moto ----------------------------------------------------------------------------------------

/// moto's server: Kinesis, STS, IAM and CloudWatch Logs in one process (`moto_server`).
/// Auth is off when it starts (any credentials work); see [`Moto::enforce_auth`].
pub struct Moto {
    process: ServerProcess,
}

impl Moto {
    pub fn start() -> Moto {
        let moto_server = installed(venv_dir().join("bin").join("moto_server"), "moto");
        let process = ServerProcess::start("moto", |port| {
            let mut command = Command::new(&moto_server);
            command.args(["-H", "127.0.0.1", "-p", &port.to_string()]);
            command
        });
        Moto { process }
    }

    pub fn port(&self) -> u16 {
        self.process.port
    }

    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port()))
    }

    /// `http://127.0.0.1:PORT`, the endpoint URL for every AWS service moto serves.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr())
    }

    /// `POST /moto-api/reset-auth`: from now on, the first `unauthenticated_requests` requests
    /// pass unchecked, and every later one has its SigV4 signature recomputed and its IAM
    /// policies evaluated (403 SignatureDoesNotMatch / AccessDenied, XML bodies).
    pub fn reset_auth(&self, unauthenticated_requests: u64) {
        self.post_control(
            "/moto-api/reset-auth",
            unauthenticated_requests.to_string().as_bytes(),
        );
    }

    /// Turns SigV4 and IAM policy enforcement on now. Set up users, roles and policies first.
    pub fn enforce_auth(&self) {
        self.reset_auth(0);
    }

    /// Turns enforcement off again (moto's default). Needed for unsigned calls such as
    /// AssumeRoleWithWebIdentity, which crash moto while enforcement is on.
    pub fn disable_auth(&self) {
        self.post_control("/moto-api/reset-auth", b"inf");
    }

    /// `POST /moto-api/reset`: forgets every stream, user, role and log group.
    pub fn reset(&self) {
        self.post_control("/moto-api/reset", b"");
    }

    /// The server's output so far (useful in assertion messages).
    pub fn log(&self) -> String {
        self.process.log_text()
    }

    fn post_control(&self, path: &str, body: &[u8]) {
        let (status, response) = http_request(self.addr(), "POST", path, body);
        assert_eq!(
            status,
            200,
            "moto {path} answered {status}: {}",
            String::from_utf8_lossy(&response)
        );
    }
}

// --- kinesalite ----------------------------------------------------------------------------------

/// kinesalite: in-memory Kinesis, fast enough for volume tests. Streams become ACTIVE at once.
/// Enforces 500 records and 1 MiB per record, not 5 MiB per request.
pub struct Kinesalite {
    process: ServerProcess,
}

impl Kinesalite {
    pub fn start() -> Kinesalite {
        let dir = kinesalite_dir();
        installed(dir.join("node_modules").join("kinesalite"), "kinesalite");
        let launcher = support_file("kinesalite.js");
        let process = ServerProcess::start("kinesalite", |port| {
            let mut command = Command::new("node");
            command.arg(&launcher).arg(port.to_string()).arg(&dir);
            command
        });
        Kinesalite { process }
    }

    pub fn port(&self) -> u16 {
        self.process.port
    }

    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port()))
    }

    /// `http://127.0.0.1:PORT`, the Kinesis endpoint URL.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr())
    }

    pub fn log(&self) -> String {
        self.process.log_text()
    }
}

// --- tansu ---------------------------------------------------------------------------------------

/// tansu: an Apache-Kafka-compatible broker with in-memory storage. No topic auto-creation:
/// call [`Tansu::create_topic`]. No usable SASL or TLS.
pub struct Tansu {
    process: ServerProcess,
    bin: PathBuf,
}

impl Tansu {
    pub fn start() -> Tansu {
        Self::start_advertising(None)
    }

    /// A broker that tells clients (in metadata) to connect to `advertised` instead of its own
    /// port: a proxy in front of it, which a fault test can cut.
    pub fn start_advertising(advertised: Option<SocketAddr>) -> Tansu {
        let bin = tansu_bin();
        let process = ServerProcess::start("tansu", |port| {
            let url = format!("tcp://127.0.0.1:{port}");
            let advertised = advertised.map_or_else(|| url.clone(), |a| format!("tcp://{a}"));
            let mut command = Command::new(&bin);
            command
                .arg("broker")
                .args(["--listener-url", &url])
                .args(["--advertised-listener-url", &advertised])
                .args(["--storage-engine", "memory://tansu/"]);
            command
        });
        Tansu { process, bin }
    }

    pub fn port(&self) -> u16 {
        self.process.port
    }

    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port()))
    }

    /// `127.0.0.1:PORT`, for `bootstrap.servers`.
    pub fn bootstrap(&self) -> String {
        self.addr().to_string()
    }

    /// `tcp://127.0.0.1:PORT`, the form tansu's own CLI takes.
    pub fn url(&self) -> String {
        format!("tcp://{}", self.addr())
    }

    /// Creates a topic with `tansu topic create`; panics with the CLI's output when it fails.
    pub fn create_topic(&self, name: &str, partitions: u32) {
        let output = self.cli(&[
            "topic",
            "create",
            "--broker",
            &self.url(),
            "--partitions",
            &partitions.to_string(),
            name,
        ]);
        assert!(
            output.status.success(),
            "tansu topic create {name} failed ({}): {}{}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }

    /// `tansu topic list` output: a JSON array of Metadata topics (name, partitions, ...).
    pub fn list_topics_json(&self) -> String {
        let output = self.cli(&["topic", "list", "--broker", &self.url()]);
        assert!(
            output.status.success(),
            "tansu topic list failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    /// Runs the tansu CLI with `args` and returns its output (for `topic list`, `cat`, ...).
    pub fn cli(&self, args: &[&str]) -> Output {
        Command::new(&self.bin)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|err| panic!("cannot run {}: {err}", self.bin.display()))
    }

    pub fn log(&self) -> String {
        self.process.log_text()
    }
}

/// A file under tests/support (helper scripts such as kinesalite.js).
pub fn support_file(name: &str) -> PathBuf {
    repo_root().join("tests").join("support").join(name)
}
