//! Polling with a deadline: the one way the tests wait for something to happen.

use std::time::{Duration, Instant};

/// How often a condition is checked again.
const POLL: Duration = Duration::from_millis(50);

/// Checks `check` until it holds; panics after `timeout`, naming `what`.
pub fn wait_until(what: &str, timeout: Duration, check: impl FnMut() -> bool) {
    wait_until_or(what, timeout, check, String::new);
}

/// As [`wait_until`]; the panic message also carries `context()` (a log, metrics), which is
/// computed only when the wait fails.
pub fn wait_until_or(
    what: &str,
    timeout: Duration,
    mut check: impl FnMut() -> bool,
    context: impl FnOnce() -> String,
) {
    let deadline = Instant::now() + timeout;
    while !check() {
        if Instant::now() > deadline {
            panic!(
                "timed out after {timeout:?} waiting for {what}\n{}",
                context()
            );
        }
        std::thread::sleep(POLL);
    }
}

/// Waits for `child` to exit; kills it and panics with `context()` after `timeout`.
pub fn wait_for_exit(
    child: &mut std::process::Child,
    timeout: Duration,
    context: impl FnOnce() -> String,
) -> std::process::ExitStatus {
    let deadline = Instant::now() + timeout;
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "the process did not exit within {timeout:?}:\n{}",
                context()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The last `lines` lines of `text` (for panic messages).
pub fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}
