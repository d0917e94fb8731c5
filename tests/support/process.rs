//! Running the real `logferry` binary in tests: config in a temp dir, free ports, SIGTERM, logs.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

use super::services::{free_port, http_request, wait_listening};

/// The binary under test.
pub fn logferry_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_logferry"))
}

/// A running logferry process.
pub struct Logferry {
    child: Option<Child>,
    pub dir: tempfile::TempDir,
    pub forward: SocketAddr,
    pub http: SocketAddr,
    stderr_path: PathBuf,
}

impl Logferry {
    /// Starts logferry with `config`, in which `{forward}` (a TCP address), `{http}`, and
    /// `{dir}` (the test's temp dir) are substituted. Waits until the forward port accepts.
    pub fn start(config: &str) -> Logferry {
        Self::start_with_env(config, &[])
    }

    pub fn start_with_env(config: &str, env: &[(&str, &str)]) -> Logferry {
        let dir = tempfile::tempdir().expect("temp dir");
        let forward: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let http: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let text = config
            .replace("{forward}", &forward.to_string())
            .replace("{http}", &http.to_string())
            .replace("{dir}", &dir.path().display().to_string());
        let config_path = dir.path().join("logferry.toml");
        std::fs::write(&config_path, text).expect("write config");
        let stderr_path = dir.path().join("logferry.stderr");
        let stderr = std::fs::File::create(&stderr_path).expect("stderr file");
        let mut cmd = Command::new(logferry_bin());
        cmd.arg("run")
            .arg("--config")
            .arg(&config_path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = cmd.spawn().expect("spawn logferry");
        let mut lf = Logferry {
            child: Some(child),
            dir,
            forward,
            http,
            stderr_path,
        };
        let child = lf.child.as_mut().expect("spawned above");
        if let Err(reason) = wait_listening(child, http, Duration::from_secs(20)) {
            panic!("logferry {reason}:\n{}", lf.stderr());
        }
        lf
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(|c| c.id()).unwrap_or(0)
    }

    /// What logferry logged so far.
    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr_path).unwrap_or_default()
    }

    /// `GET /metrics`.
    pub fn metrics(&self) -> String {
        let (code, body) = http_request(self.http, "GET", "/metrics", b"");
        assert_eq!(code, 200);
        String::from_utf8_lossy(&body).into_owned()
    }

    /// The value of one metric line (the first whose text starts with `prefix`).
    pub fn metric(&self, prefix: &str) -> Option<f64> {
        self.metrics()
            .lines()
            .find(|l| l.starts_with(prefix))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
    }

    /// `GET /health`: status code and body.
    pub fn health(&self) -> (u16, String) {
        let (code, body) = http_request(self.http, "GET", "/health", b"");
        (code, String::from_utf8_lossy(&body).into_owned())
    }

    /// Resident and peak resident memory in KiB, from /proc.
    pub fn memory_kib(&self) -> (u64, u64) {
        let status =
            std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap_or_default();
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

    /// Sends SIGTERM and waits (bounded) for the exit status.
    pub fn terminate(&mut self) -> ExitStatus {
        let pid = self.pid().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        self.wait(Duration::from_secs(60))
    }

    /// Waits for exit; kills and panics after `timeout`.
    pub fn wait(&mut self, timeout: Duration) -> ExitStatus {
        let deadline = Instant::now() + timeout;
        let child = self.child.as_mut().expect("already waited");
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                self.child = None;
                return status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!(
                    "logferry did not exit within {timeout:?}:\n{}",
                    self.stderr()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
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
