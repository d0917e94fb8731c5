//! The harness that runs the real `logferry` binary: its config in a temp dir, a forward port
//! and an HTTP port picked free, `/health` and `/metrics`, its log, SIGTERM and kill -9; and
//! `logferry loadgen`, the client most tests send records with.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

use crate::metrics;
use crate::net::{free_addr, http_request, wait_listening};
use crate::paths::cargo_bin;
use crate::wait::{tail, wait_for_exit, wait_until_or};

/// The binary under test.
pub fn logferry_bin() -> PathBuf {
    cargo_bin("logferry")
}

/// The addresses and folder a config is written for.
pub struct Places<'a> {
    /// Where the forward source listens.
    pub forward: SocketAddr,
    /// `[service] http_listen`.
    pub http: SocketAddr,
    /// The test's temp dir (logferry's working files: outputs, buffers).
    pub dir: &'a Path,
}

/// Which port must accept connections before the harness hands logferry to the test.
#[derive(Debug, Clone, Copy)]
pub enum Ready {
    /// `/health` and `/metrics` (every source is open by then).
    Http,
    /// The forward source (for configs without an HTTP server).
    Forward,
}

/// How to start logferry beyond its config.
pub struct Launch<'a> {
    /// Added to (or overriding) the inherited environment, after `configure`.
    pub env: &'a [(&'a str, &'a str)],
    /// Adjusts the command first (e.g. the AWS test environment).
    pub configure: &'a dyn Fn(&mut Command),
    pub ready: Ready,
    pub timeout: Duration,
    /// Whether stdout goes to the log too (else it is discarded).
    pub stdout_to_log: bool,
}

impl Default for Launch<'_> {
    fn default() -> Self {
        Launch {
            env: &[],
            configure: &|_| {},
            ready: Ready::Http,
            timeout: Duration::from_secs(20),
            stdout_to_log: false,
        }
    }
}

/// A running `logferry run`, killed and reaped on drop.
pub struct Logferry {
    child: Option<Child>,
    pub dir: tempfile::TempDir,
    pub forward: SocketAddr,
    pub http: SocketAddr,
    log: PathBuf,
}

impl Logferry {
    /// Starts logferry with `config`, in which `{forward}` (a TCP address), `{http}`, and
    /// `{dir}` (the test's temp dir) are substituted. Waits until the HTTP port accepts.
    pub fn start(config: &str) -> Logferry {
        Self::start_with_env(config, &[])
    }

    /// As [`Logferry::start`], with `env` added to the environment.
    pub fn start_with_env(config: &str, env: &[(&str, &str)]) -> Logferry {
        Self::launch(
            |at| {
                config
                    .replace("{forward}", &at.forward.to_string())
                    .replace("{http}", &at.http.to_string())
                    .replace("{dir}", &at.dir.display().to_string())
            },
            Launch {
                env,
                ..Launch::default()
            },
        )
    }

    /// Writes the config `config` makes for the chosen places, starts logferry on it and waits
    /// until it is ready; panics with its log when it exits or does not listen in time.
    pub fn launch(config: impl FnOnce(&Places) -> String, launch: Launch) -> Logferry {
        let dir = tempfile::tempdir().expect("temp dir");
        let forward = free_addr();
        let http = free_addr();
        let text = config(&Places {
            forward,
            http,
            dir: dir.path(),
        });
        let config_path = dir.path().join("logferry.toml");
        std::fs::write(&config_path, text).expect("write config");
        let log = dir.path().join("logferry.log");
        let log_file = std::fs::File::create(&log).expect("log file");
        let mut cmd = Command::new(logferry_bin());
        cmd.arg("run").arg("--config").arg(&config_path);
        (launch.configure)(&mut cmd);
        for (k, v) in launch.env {
            cmd.env(k, v);
        }
        let stdout = if launch.stdout_to_log {
            Stdio::from(log_file.try_clone().expect("log file"))
        } else {
            Stdio::null()
        };
        cmd.stdin(Stdio::null()).stdout(stdout).stderr(log_file);
        let child = cmd.spawn().expect("spawn logferry");
        let mut lf = Logferry {
            child: Some(child),
            dir,
            forward,
            http,
            log,
        };
        let addr = match launch.ready {
            Ready::Http => http,
            Ready::Forward => forward,
        };
        let child = lf.child.as_mut().expect("spawned above");
        if let Err(reason) = wait_listening(child, addr, launch.timeout) {
            panic!("logferry {reason}:\n{}", lf.stderr());
        }
        lf
    }

    /// A path in the test's temp dir.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(|c| c.id()).unwrap_or(0)
    }

    /// What logferry logged so far.
    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// `GET /metrics`.
    pub fn metrics(&self) -> String {
        let (code, body) = http_request(self.http, "GET", "/metrics", b"");
        assert_eq!(code, 200);
        String::from_utf8_lossy(&body).into_owned()
    }

    /// The value of the first metric line starting with `prefix`.
    pub fn metric(&self, prefix: &str) -> Option<f64> {
        metrics::first(&self.metrics(), prefix)
    }

    /// The values of every metric line starting with `prefix`, added up (0 when none).
    pub fn metric_sum(&self, prefix: &str) -> f64 {
        metrics::sum(&self.metrics(), prefix)
    }

    /// `GET /health`: status code and body.
    pub fn health(&self) -> (u16, String) {
        let (code, body) = http_request(self.http, "GET", "/health", b"");
        (code, String::from_utf8_lossy(&body).into_owned())
    }

    /// Resident and peak resident memory in KiB, from /proc.
    pub fn memory_kib(&self) -> (u64, u64) {
        memory_kib(self.pid())
    }

    /// Waits until `check` holds; panics with the end of logferry's log after `timeout`.
    pub fn wait_until(&self, what: &str, timeout: Duration, check: impl FnMut() -> bool) {
        wait_until_or(what, timeout, check, || {
            format!("--- logferry log:\n{}", tail(&self.stderr(), 60))
        });
    }

    /// Sends SIGTERM and waits (bounded) for the exit status.
    pub fn terminate(&mut self) -> ExitStatus {
        self.terminate_within(Duration::from_secs(60))
    }

    /// Sends SIGTERM and waits up to `timeout` for the exit status.
    pub fn terminate_within(&mut self, timeout: Duration) -> ExitStatus {
        let pid = self.pid().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        self.wait(timeout)
    }

    /// Waits for exit; kills and panics after `timeout`.
    pub fn wait(&mut self, timeout: Duration) -> ExitStatus {
        let log = self.log.clone();
        let child = self.child.as_mut().expect("already waited");
        let status = wait_for_exit(child, timeout, || {
            format!(
                "logferry:\n{}",
                std::fs::read_to_string(&log).unwrap_or_default()
            )
        });
        self.child = None;
        status
    }
}

impl Drop for Logferry {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Resident memory of `pid` in KiB: (VmRSS, VmHWM = the peak since start).
pub fn memory_kib(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// Runs `logferry loadgen` with these arguments to completion.
pub fn loadgen(target: &str, args: &[&str]) -> Output {
    let out = Command::new(logferry_bin())
        .arg("loadgen")
        .arg("--target")
        .arg(target)
        .args(args)
        .output()
        .expect("run loadgen");
    assert!(
        out.status.success(),
        "loadgen failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Runs `logferry` with arguments (validate etc.).
pub fn logferry(args: &[&str]) -> Output {
    Command::new(logferry_bin())
        .args(args)
        .output()
        .expect("run logferry")
}

/// The JSON lines of a file.
pub fn read_jsonl(path: &Path) -> Vec<serde_json::Value> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad JSON line {l:?}: {e}")))
        .collect()
}

/// Waits until `path` holds at least `n` lines, or panics after `timeout`.
pub fn wait_for_lines(path: &Path, n: usize, timeout: Duration) -> usize {
    let deadline = Instant::now() + timeout;
    loop {
        let count = std::fs::read(path)
            .map(|b| b.iter().filter(|&&c| c == b'\n').count())
            .unwrap_or(0);
        if count >= n {
            return count;
        }
        if Instant::now() > deadline {
            panic!(
                "only {count} of {n} lines in {} after {timeout:?}",
                path.display()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Checks that the records carry `seq` 0..n exactly once each; returns the duplicates count.
pub fn check_sequence(records: &[serde_json::Value], n: u64) {
    let mut seen = vec![0u32; n as usize];
    for r in records {
        let seq = r["seq"]
            .as_u64()
            .unwrap_or_else(|| panic!("record without seq: {r}"));
        assert!(seq < n, "unexpected seq {seq}");
        seen[seq as usize] += 1;
    }
    let missing = seen.iter().filter(|&&c| c == 0).count();
    let duplicated = seen.iter().filter(|&&c| c > 1).count();
    assert_eq!(
        (missing, duplicated),
        (0, 0),
        "of {n} records: {missing} missing, {duplicated} duplicated"
    );
}

/// Makes a FIFO at `path` and opens it read-write. That open does not block, and holding it lets
/// logferry open the FIFO as a `file` sink; nothing is read until the test reads the returned
/// handle, so the sink stalls once the pipe's 64 KiB are full: a stand-in for a stuck output.
pub fn stalled_fifo(path: &Path) -> std::fs::File {
    assert!(
        Command::new("mkfifo")
            .arg(path)
            .status()
            .expect("mkfifo")
            .success(),
        "mkfifo {}",
        path.display()
    );
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .expect("open the FIFO")
}
