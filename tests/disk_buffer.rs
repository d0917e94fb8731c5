//! The disk buffer end to end: the real binary, `logferry loadgen --ack` as the forward client,
//! a `file` sink. Fault tests: kill -9 mid-stream, a stalled sink with a growing backlog, disk
//! full, an unwritable buffer path, SIGTERM under load. Each prints its figures.

use support::faults;
mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use logferry_test_kit::forward_ack::{loadgen_ack, report_field};
use logferry_test_kit::logferry::{logferry_bin, Logferry};
use logferry_test_kit::wait::wait_until;

/// `WORK` is replaced by a directory that outlives restarts of logferry.
const DISK_TO_FILE: &str = r#"
[service]
http_listen = "{http}"
grace_period = "30s"

[[sources]]
type = "forward"
listen = "{forward}"

[[sinks]]
type = "file"
match = "*"
path = "WORK/out.jsonl"
buffer = "disk"
buffer_path = "WORK/buffer"
buffer_limit = "4MiB"
"#;

fn config(template: &str, work: &Path) -> String {
    template.replace("WORK", &work.display().to_string())
}

/// `(records sent, messages acknowledged)` from loadgen's report, which it prints on stdout
/// when it finishes and includes in its error when the server goes away.
fn loadgen_figures(out: &Output) -> (u64, u64) {
    (
        report_field(out, "records"),
        report_field(out, "acked_messages"),
    )
}

/// How often each `seq` occurs in the output file (every occurrence on a line counts, so a
/// line torn by a crash does not hide the records after it).
fn seq_counts(path: &Path, n: u64) -> Vec<u32> {
    let text = std::fs::read(path).unwrap_or_default();
    let mut counts = vec![0u32; n as usize];
    let key = b"\"seq\":";
    let mut i = 0;
    while i + key.len() <= text.len() {
        if &text[i..i + key.len()] == key {
            i += key.len();
            let mut v: u64 = 0;
            let mut digits = 0;
            while i < text.len() && text[i].is_ascii_digit() {
                v = v * 10 + u64::from(text[i] - b'0');
                i += 1;
                digits += 1;
            }
            if digits > 0 && v < n {
                counts[v as usize] += 1;
            }
        } else {
            i += 1;
        }
    }
    counts
}

fn line_count(path: &Path) -> usize {
    std::fs::read(path)
        .map(|b| b.iter().filter(|&&c| c == b'\n').count())
        .unwrap_or(0)
}

fn kill9(lf: &mut Logferry) {
    let pid = lf.pid().to_string();
    assert!(Command::new("kill")
        .args(["-KILL", &pid])
        .status()
        .unwrap()
        .success());
    lf.wait(Duration::from_secs(10));
}

fn segment_files(dir: &Path) -> usize {
    std::fs::read_dir(dir)
        .map(|d| {
            d.filter_map(|e| e.ok())
                .filter(|e| e.path().extension().is_some_and(|x| x == "seg"))
                .count()
        })
        .unwrap_or(0)
}

/// A FIFO the sink writes to, read by a thread that counts every `seq` it sees: slowly (about
/// 5k records/s, slower than the load, so a backlog builds) until `fast` is set.
struct SlowPipe {
    path: PathBuf,
    counts: std::sync::Arc<std::sync::Mutex<Vec<u32>>>,
    fast: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl SlowPipe {
    fn new(dir: &Path, n: u64) -> SlowPipe {
        use std::io::BufRead;
        use std::sync::atomic::{AtomicBool, Ordering};
        use std::sync::{Arc, Mutex};
        let path = dir.join("out.pipe");
        let reader = logferry_test_kit::logferry::stalled_fifo(&path);
        let counts = Arc::new(Mutex::new(vec![0u32; n as usize]));
        let fast = Arc::new(AtomicBool::new(false));
        let (c, f) = (counts.clone(), fast.clone());
        std::thread::spawn(move || {
            let mut lines = 0u64;
            for line in std::io::BufReader::new(reader).lines() {
                let Ok(line) = line else { return };
                let mut rest = line.as_str();
                while let Some(at) = rest.find("\"seq\":") {
                    rest = &rest[at + 6..];
                    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
                    if let Ok(seq) = digits.parse::<usize>() {
                        if let Some(x) = c.lock().unwrap().get_mut(seq) {
                            *x += 1;
                        }
                    }
                }
                lines += 1;
                if lines.is_multiple_of(500) && !f.load(Ordering::Relaxed) {
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
        });
        SlowPipe { path, counts, fast }
    }

    fn go_fast(&self) {
        self.fast.store(true, std::sync::atomic::Ordering::Relaxed);
    }

    fn counts(&self) -> Vec<u32> {
        self.counts.lock().unwrap().clone()
    }

    fn delivered(&self) -> usize {
        self.counts
            .lock()
            .unwrap()
            .iter()
            .filter(|&&c| c > 0)
            .count()
    }
}

/// kill -9 while the sink has a backlog (it writes to a pipe read slowly), then a restart on
/// the same buffer: every record the client got an ack for arrives; the only repeats are the
/// batch the sink was writing at the kill and the message the client resends for a lost ack.
#[test]
fn kill_9_mid_stream_then_restart_delivers_every_acknowledged_record() {
    let work = tempfile::tempdir().unwrap();
    // LOGFERRY_KILL9_RECORDS sets a longer run (for benchmarks); 200k by default.
    let total: u64 = std::env::var("LOGFERRY_KILL9_RECORDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200_000u64)
        .max(200_000);
    let batch = 500u64;
    let pipe = SlowPipe::new(work.path(), total);
    let config = config(DISK_TO_FILE, work.path()).replace("out.jsonl", "out.pipe");
    assert!(pipe.path.ends_with("out.pipe"));

    let mut lf = Logferry::start(&config);
    let target = lf.forward.to_string();
    let client = std::thread::spawn(move || loadgen_ack(&target, 0, total, batch, 150));
    // Kill once a good part of the stream was acknowledged, while it is still flowing.
    wait_until(
        "half the records acknowledged",
        Duration::from_secs(600),
        || {
            lf.metric("logferry_buffer_disk_records{component=\"file.0\"")
                .unwrap_or(0.0)
                + pipe.delivered() as f64
                >= (total / 2 + 10 * batch) as f64
                || client.is_finished()
        },
    );
    kill9(&mut lf);
    let delivered_at_kill = pipe.delivered();
    // The most a crash now can repeat, per the documented rule (frames after the recorded ack
    // position whose shares fit in buffer_limit = 4MiB), read from the buffer directory.
    let (bound, bound_frames) =
        faults::crash_duplicate_bound(&work.path().join("buffer"), 4 * 1024 * 1024);
    let first = client.join().unwrap();
    let (sent_first, acked_messages) = loadgen_figures(&first);
    let acked = acked_messages * batch;
    assert!(
        !first.status.success(),
        "the client must have been cut off mid-stream (raise `total`)"
    );

    // Restart on the same buffer; the client resends what it got no ack for.
    pipe.go_fast();
    let mut lf = Logferry::start(&config);
    let resend = loadgen_ack(&lf.forward.to_string(), acked, total - acked, batch, 150);
    assert!(
        resend.status.success(),
        "{}",
        String::from_utf8_lossy(&resend.stderr)
    );
    wait_until("every record", Duration::from_secs(600), || {
        pipe.counts().iter().all(|&c| c > 0)
    });
    assert!(lf.terminate().success(), "{}", lf.stderr());
    assert!(
        lf.stderr().contains("replaying unacknowledged records"),
        "the restart replays the backlog:\n{}",
        lf.stderr()
    );

    let counts = pipe.counts();
    let lost_acked = counts[..acked as usize].iter().filter(|&&c| c == 0).count();
    let missing = counts.iter().filter(|&&c| c == 0).count();
    let dup_acked: u32 = counts[..acked as usize]
        .iter()
        .map(|&c| c.saturating_sub(1))
        .sum();
    let dup_resent: u32 = counts[acked as usize..]
        .iter()
        .map(|&c| c.saturating_sub(1))
        .sum();
    crate::support::figures::report(format!(
        "kill -9: sent {} (first run {sent_first}), acknowledged before the kill {acked}, \
         delivered at the kill {delivered_at_kill}, delivered in the end {}, lost acknowledged \
         {lost_acked}, missing {missing}, duplicates {} ({dup_acked} replayed by the sink, \
         {dup_resent} resent by the client for a lost ack); documented crash bound at the kill \
         {bound} records ({bound_frames} frames)",
        sent_first + (total - acked),
        counts.iter().map(|&c| u64::from(c)).sum::<u64>(),
        dup_acked + dup_resent
    ));
    assert!(
        acked >= total / 2,
        "only {acked} acknowledged before the kill"
    );
    assert!(
        (delivered_at_kill as u64) < acked,
        "the sink must have had a backlog at the kill"
    );
    assert_eq!(lost_acked, 0, "acknowledged records were lost");
    assert_eq!(missing, 0);
    assert!(
        u64::from(dup_acked) <= bound,
        "{dup_acked} duplicates: more than the documented bound ({bound} records)"
    );
    // The file sink writes one batch at a time: at most that batch is repeated.
    assert!(
        u64::from(dup_acked) <= batch,
        "{dup_acked} duplicates: more than one in-flight batch ({batch})"
    );
    assert!(u64::from(dup_resent) <= batch);
}

#[test]
fn a_stalled_sink_grows_the_disk_buffer_with_bounded_memory_and_loses_nothing() {
    use std::io::BufRead;
    let work = tempfile::tempdir().unwrap();
    let pipe = work.path().join("out.pipe");
    let reader = logferry_test_kit::logferry::stalled_fifo(&pipe);
    let config = config(DISK_TO_FILE, work.path())
        .replace("out.jsonl", "out.pipe")
        .replace("\"4MiB\"", "\"2MiB\"");
    let mut lf = Logferry::start(&config);
    let n = 300_000u64;
    // 300k records of 200 bytes: ~60 MB offered while the sink is stalled. The disk absorbs
    // them, so the client is not held back and every message is acknowledged.
    let sent = loadgen_ack(&lf.forward.to_string(), 0, n, 500, 200);
    assert!(
        sent.status.success(),
        "{}",
        String::from_utf8_lossy(&sent.stderr)
    );
    let (rss, peak) = lf.memory_kib();
    let disk_bytes = lf
        .metric("logferry_buffer_disk_bytes{component=\"file.0\"")
        .unwrap_or(0.0);
    let disk_records = lf
        .metric("logferry_buffer_disk_records{component=\"file.0\"")
        .unwrap_or(0.0);
    let in_memory = lf
        .metric("logferry_queue_bytes{component=\"file.0\"")
        .unwrap_or(0.0);
    std::thread::sleep(Duration::from_millis(1100));
    let age = lf
        .metric("logferry_buffer_oldest_unacked_seconds{component=\"file.0\"")
        .unwrap_or(0.0);
    crate::support::figures::report(format!(
        "stalled sink: sent {n}, acknowledged {n}; on disk {disk_records} records / \
         {disk_bytes} bytes in {} segments; in memory {in_memory} bytes; oldest unacked {age} s; \
         rss {rss} KiB, peak {peak} KiB",
        segment_files(&work.path().join("buffer"))
    ));
    assert!(
        disk_records > (n as f64) * 0.9,
        "the backlog is on disk: {disk_records}"
    );
    assert!(disk_bytes > 40e6, "{disk_bytes} bytes on disk");
    assert!(in_memory <= 2.0 * 1048576.0, "{in_memory} bytes in memory");
    assert!(age >= 1.0, "oldest unacknowledged age {age}");
    assert!(peak < 64 * 1024, "peak RSS {peak} KiB with a 60 MB backlog");

    // Unstall: every record arrives exactly once, and the buffer empties.
    let mut seen = vec![0u8; n as usize];
    let mut lines = std::io::BufReader::new(reader).lines();
    for _ in 0..n {
        let line = lines.next().expect("more lines").unwrap();
        let at = line.find("\"seq\":").expect("seq") + 6;
        let seq: usize = line[at..]
            .chars()
            .take_while(char::is_ascii_digit)
            .collect::<String>()
            .parse()
            .unwrap();
        seen[seq] += 1;
    }
    wait_until("an empty disk buffer", Duration::from_secs(20), || {
        lf.metric("logferry_buffer_disk_records{component=\"file.0\"") == Some(0.0)
    });
    assert!(segment_files(&work.path().join("buffer")) <= 1);
    assert!(lf.terminate().success(), "{}", lf.stderr());
    let missing = seen.iter().filter(|&&c| c == 0).count();
    let dup = seen.iter().filter(|&&c| c > 1).count();
    crate::support::figures::report(format!(
        "after unstalling: delivered {n}, missing {missing}, duplicates {dup}"
    ));
    assert_eq!((missing, dup), (0, 0), "missing, duplicated");
}

/// A tmpfs mounted for the test and unmounted on drop.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(at: &Path, size: &str) -> Option<Tmpfs> {
        std::fs::create_dir_all(at).ok()?;
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(at)
            .stderr(Stdio::null())
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        ok.then(|| Tmpfs(at.to_path_buf()))
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// Disk full: a small tmpfs when the test may mount one (root), else a full `buffer_max_size`.
/// Either way the client is held back (no crash, no loss), and everything arrives once the
/// sink drains the buffer.
#[test]
fn a_full_disk_holds_input_back_marks_the_buffer_unhealthy_and_recovers() {
    use std::io::BufRead;
    let work = tempfile::tempdir().unwrap();
    let pipe = work.path().join("out.pipe");
    let reader = logferry_test_kit::logferry::stalled_fifo(&pipe);
    let mount_at = work.path().join("small");
    // LOGFERRY_TEST_NO_TMPFS=1 forces the unprivileged variant.
    let tmpfs = if std::env::var_os("LOGFERRY_TEST_NO_TMPFS").is_some() {
        None
    } else {
        Tmpfs::mount(&mount_at, "6m")
    };
    let mut config = config(DISK_TO_FILE, work.path())
        .replace("out.jsonl", "out.pipe")
        .replace("\"4MiB\"", "\"1MiB\"");
    match &tmpfs {
        Some(_) => {
            config = config.replace(
                &format!("{}/buffer\"", work.path().display()),
                &format!("{}/small/buffer\"", work.path().display()),
            );
            crate::support::figures::report("disk full: a 6 MiB tmpfs holds the buffer");
        }
        None => {
            config.push_str("buffer_max_size = \"6MiB\"\n");
            crate::support::figures::report(
                "disk full: cannot mount a tmpfs here (not root?); testing a full buffer_max_size instead",
            );
        }
    }
    let mut lf = Logferry::start(&config);
    let n = 100_000u64; // ~20 MB: more than the 6 MiB that fit
    let target = lf.forward.to_string();
    let client = std::thread::spawn(move || loadgen_ack(&target, 0, n, 500, 200));
    if tmpfs.is_some() {
        wait_until("an unhealthy buffer", Duration::from_secs(60), || {
            let (code, body) = lf.health();
            code == 503 && body.contains("file.0.buffer")
        });
        let (_, body) = lf.health();
        eprintln!("health while the disk is full: {body}");
        assert!(body.contains("No space left"), "{body}");
        assert!(
            lf.metric(
                "logferry_errors_total{component=\"file.0\",kind=\"sink\",reason=\"buffer_write\"}"
            )
            .unwrap_or(0.0)
                >= 1.0
        );
    } else {
        wait_until("a full buffer", Duration::from_secs(60), || {
            lf.metric("logferry_buffer_disk_bytes{component=\"file.0\"")
                .unwrap_or(0.0)
                > 5.0 * 1048576.0
        });
    }
    std::thread::sleep(Duration::from_secs(1));
    assert!(!client.is_finished(), "the client must be held back");
    let delivered_blocked = lf
        .metric("logferry_buffer_disk_records{component=\"file.0\"")
        .unwrap_or(0.0);
    crate::support::figures::report(format!(
        "held back with {delivered_blocked} records in the buffer"
    ));

    // Drain: space frees, writes resume, every record arrives once.
    let drain = std::thread::spawn(move || {
        let mut seen = vec![0u8; n as usize];
        let mut lines = std::io::BufReader::new(reader).lines();
        for _ in 0..n {
            let line = lines.next().expect("more lines").unwrap();
            let at = line.find("\"seq\":").expect("seq") + 6;
            let seq: usize = line[at..]
                .chars()
                .take_while(char::is_ascii_digit)
                .collect::<String>()
                .parse()
                .unwrap();
            seen[seq] += 1;
        }
        seen
    });
    let out = client.join().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (sent, acked_messages) = loadgen_figures(&out);
    let seen = drain.join().unwrap();
    wait_until("healthy again", Duration::from_secs(20), || {
        lf.health().0 == 200
    });
    assert!(lf.terminate().success(), "{}", lf.stderr());
    let missing = seen.iter().filter(|&&c| c == 0).count();
    let dup = seen.iter().filter(|&&c| c > 1).count();
    crate::support::figures::report(format!(
        "disk full: sent {sent}, acknowledged {}, delivered {}, missing {missing}, duplicates {dup}",
        acked_messages * 500,
        n as usize - missing
    ));
    assert_eq!((missing, dup), (0, 0));
    drop(tmpfs);
}

#[test]
fn an_unwritable_buffer_path_is_a_clear_error_at_start() {
    let work = tempfile::tempdir().unwrap();
    std::fs::write(work.path().join("plain-file"), b"x").unwrap();
    let config = config(DISK_TO_FILE, work.path())
        .replace("{http}", "127.0.0.1:0")
        .replace("{forward}", "127.0.0.1:0");
    let config = config.replace(
        &format!("{}/buffer\"", work.path().display()),
        &format!("{}/plain-file/buffer\"", work.path().display()),
    );
    let path = work.path().join("logferry.toml");
    std::fs::write(&path, config).unwrap();
    let out = Command::new(logferry_bin())
        .arg("run")
        .arg("--config")
        .arg(&path)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    eprintln!("{stderr}");
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("plain-file/buffer"), "{stderr}");
    assert!(stderr.contains("disk buffer"), "{stderr}");
}

#[test]
fn sigterm_under_load_delivers_or_persists_everything_acknowledged() {
    let work = tempfile::tempdir().unwrap();
    let config = config(DISK_TO_FILE, work.path());
    let out = work.path().join("out.jsonl");
    let total = 300_000u64;
    let batch = 500u64;
    let mut lf = Logferry::start(&config);
    let target = lf.forward.to_string();
    let client = std::thread::spawn(move || loadgen_ack(&target, 0, total, batch, 150));
    wait_until("load flowing", Duration::from_secs(60), || {
        line_count(&out) >= 30_000 || client.is_finished()
    });
    let asked = Instant::now();
    let status = lf.terminate();
    let took = asked.elapsed();
    let first = client.join().unwrap();
    let (sent, acked_messages) = loadgen_figures(&first);
    let acked = acked_messages * batch;
    let delivered = seq_counts(&out, total).iter().filter(|&&c| c > 0).count() as u64;
    assert!(status.success(), "{}", lf.stderr());
    assert!(took < Duration::from_secs(30), "stopping took {took:?}");

    // Whatever was not delivered before exit is in the disk buffer: a restart delivers it.
    let persisted_files = segment_files(&work.path().join("buffer"));
    let lf = Logferry::start(&config);
    std::thread::sleep(Duration::from_secs(2));
    let counts = seq_counts(&out, total);
    drop(lf);
    let after_restart = counts.iter().filter(|&&c| c > 0).count() as u64;
    let lost_acked = counts[..acked as usize].iter().filter(|&&c| c == 0).count();
    let dups: u32 = counts.iter().map(|&c| c.saturating_sub(1)).sum();
    crate::support::figures::report(format!(
        "SIGTERM: sent {sent}, acknowledged {acked}, delivered before exit {delivered}, \
         delivered after restart {after_restart} ({persisted_files} segment files left), \
         lost acknowledged {lost_acked}, duplicates {dups}, stop took {took:?}"
    ));
    assert!(!first.status.success() || sent == total);
    assert_eq!(lost_acked, 0, "acknowledged records were lost");
    assert_eq!(dups, 0, "a clean stop leaves no duplicates");
}

/// SIGTERM with a 30 s grace while the sink cannot keep up (it writes to a pipe read slowly):
/// the grace period ends with a backlog, which stays in the disk buffer; logferry exits cleanly
/// and a restart delivers the rest. At most the one batch being written at exit is repeated.
#[test]
fn sigterm_with_a_slow_sink_persists_the_backlog_for_the_next_start() {
    let work = tempfile::tempdir().unwrap();
    let total = 300_000u64;
    let batch = 500u64;
    let pipe = SlowPipe::new(work.path(), total);
    let config = config(DISK_TO_FILE, work.path()).replace("out.jsonl", "out.pipe");
    let mut lf = Logferry::start(&config);
    let target = lf.forward.to_string();
    let client = std::thread::spawn(move || loadgen_ack(&target, 0, total, batch, 150));
    std::thread::sleep(Duration::from_secs(2));
    let asked = Instant::now();
    let status = lf.terminate();
    let took = asked.elapsed();
    let delivered_before_exit = pipe.delivered();
    let first = client.join().unwrap();
    let (sent, acked_messages) = loadgen_figures(&first);
    let acked = acked_messages * batch;
    let stderr = lf.stderr();
    assert!(status.success(), "{stderr}");
    assert!(took < Duration::from_secs(40), "stopping took {took:?}");
    assert!(
        stderr.contains("stays in its disk buffer"),
        "the backlog is reported as persisted:\n{stderr}"
    );

    pipe.go_fast();
    let mut lf = Logferry::start(&config);
    wait_until(
        "every acknowledged record",
        Duration::from_secs(120),
        || pipe.counts()[..acked as usize].iter().all(|&c| c > 0),
    );
    assert!(lf.terminate().success(), "{}", lf.stderr());
    let counts = pipe.counts();
    let lost_acked = counts[..acked as usize].iter().filter(|&&c| c == 0).count();
    let dups: u32 = counts.iter().map(|&c| c.saturating_sub(1)).sum();
    crate::support::figures::report(format!(
        "SIGTERM, slow sink: sent {sent}, acknowledged {acked}, delivered before exit \
         {delivered_before_exit}, delivered after restart {}, lost acknowledged {lost_acked}, \
         duplicates {dups}, stop took {took:?}",
        counts.iter().filter(|&&c| c > 0).count()
    ));
    assert!(
        (delivered_before_exit as u64) < acked,
        "the sink must still have had a backlog at exit"
    );
    assert_eq!(lost_acked, 0, "acknowledged records were lost");
    assert!(
        u64::from(dups) <= batch,
        "{dups} duplicates: more than the one batch in flight at exit"
    );
}
