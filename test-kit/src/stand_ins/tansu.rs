//! tansu, a Kafka-compatible broker, with in-memory storage.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};

use super::ServerProcess;
use crate::paths::tansu_bin;

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
