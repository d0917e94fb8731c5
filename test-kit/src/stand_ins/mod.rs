//! Launchers of the services the tests run against, each a child process on 127.0.0.1 with a
//! free port, ready (accepting connections) when `start()` returns, killed and reaped when its
//! handle drops, so a failing test leaves nothing behind: moto (Kinesis, STS, IAM, CloudWatch
//! Logs), kinesalite (fast Kinesis), tansu (Kafka) and the real Fluent Bit (a forward client).

mod fluent_bit;
mod kinesalite;
mod moto;
mod tansu;

pub use fluent_bit::{fluent_bit_bin, numbered_lines, FluentBit};
pub use kinesalite::Kinesalite;
pub use moto::Moto;
pub use tansu::Tansu;

use std::fs::File;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use crate::net::{free_port, wait_listening};

/// How long a service may take to accept connections (moto imports a lot of Python).
const START_TIMEOUT: Duration = Duration::from_secs(60);
/// A port picked by `free_port` can be taken by a parallel test before our server binds it;
/// the server then exits at once and we retry with a new port.
const START_ATTEMPTS: usize = 3;

/// A running server process; killed and reaped on drop. Its stdout/stderr go to a log file
/// that is shown when it fails to start and removed on drop (kept if `LOGFERRY_KEEP_LOGS` is set).
pub(crate) struct ServerProcess {
    name: &'static str,
    child: Child,
    pub(crate) port: u16,
    log: PathBuf,
}

impl ServerProcess {
    /// Starts `command_for(port)` on a free port and waits until the port accepts connections.
    pub(crate) fn start(
        name: &'static str,
        mut command_for: impl FnMut(u16) -> Command,
    ) -> ServerProcess {
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

    pub(crate) fn log_text(&self) -> String {
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

/// A child process whose output goes to a log file: killed and reaped on drop, so a failing
/// test leaves nothing running. For helpers that start their own command line (a proxy, a
/// client) rather than a service on a free port.
pub struct Running {
    child: Child,
    log: PathBuf,
}

impl Running {
    pub fn new(child: Child, log: PathBuf) -> Running {
        Running { child, log }
    }

    /// What the process wrote to its log so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
