//! Dead letters: records a sink can never deliver as they are (too large after encoding,
//! unencodable, refused by the destination as invalid, a topic that is not allowed), kept in
//! JSON-lines files per sink instead of being dropped, and sent again by
//! `logferry replay-dead-letters` once the cause is fixed.
//!
//! - [`line`]: the line format (exact round trip of every record, non-UTF-8 bytes included).
//! - [`replay`]: the `replay-dead-letters` command.
//!
//! `dead_letter_path` is a directory, one per sink. logferry writes
//! `dead-letters-<UTC time>-<pid>-<n>.jsonl` files there and starts a new one when the current
//! one would grow past `dead_letter_max_size`. The file being written is locked (`flock`), so
//! a replay running at the same time leaves it alone. Files are never deleted by logferry: they
//! hold the only copy of their records.
//!
//! The writing happens on a thread of its own, so a slow disk never stalls a sink's task. A
//! sink hands over a record with a callback; the callback runs once the line is written and
//! `fdatasync`ed (`true`), or could not be (`false`). Sinks settle the record's batch in that
//! callback, so a batch is acknowledged upstream only after its dead letters are on disk, and
//! a failed dead-letter write fails the batch's acknowledgement instead of losing the record
//! quietly.

pub mod line;
pub mod replay;

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use tokio::sync::Notify;

use crate::event::Event;
use crate::health::Health;
use crate::metrics::Metrics;

/// Default `dead_letter_max_size`: the size at which a dead-letter file is closed and the next
/// one started.
pub const DEFAULT_MAX_SIZE: u64 = 64 * 1024 * 1024;

/// Extension of dead-letter files; a replayed file is renamed to `<name>.jsonl.replayed`.
pub const EXTENSION: &str = "jsonl";

/// Most letters written (and synced) together.
const MAX_GROUP: usize = 1024;

/// A sink's `dead_letter_path` and `dead_letter_max_size`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetterSettings {
    /// The directory of this sink's dead-letter files (created when missing).
    pub path: PathBuf,
    /// Bytes after which the current file is closed and a new one started.
    pub max_size: u64,
}

/// Why a record was dead-lettered (the `reason` field and metric label).
pub mod reason {
    /// Over the destination's size limit after encoding (and aggregation).
    pub const TOO_LARGE: &str = "too_large";
    /// The encoder cannot produce it as configured (missing `log_key`, time out of range).
    pub const UNENCODABLE: &str = "unencodable";
    /// Refused by the destination with a non-retryable per-record error.
    pub const REJECTED: &str = "rejected";
    /// Not a valid record for the destination (bad partition key, compacted topic without key).
    pub const INVALID: &str = "invalid";
    /// Its `topic_key` names a topic that does not exist or the producer may not write.
    pub const TOPIC_NOT_ALLOWED: &str = "topic_not_allowed";
    /// Still failing after `retry_limit` retries.
    pub const RETRY_LIMIT: &str = "retry_limit";
    /// Older than the destination keeps (CloudWatch Logs: 14 days, or the group's retention).
    pub const TOO_OLD: &str = "too_old";
    /// Too far in the future for the destination (CloudWatch Logs: more than 2 hours).
    pub const TOO_NEW: &str = "too_new";
}

/// What runs once a letter is on disk (`true`) or could not be written (`false`).
pub type OnWritten = Box<dyn FnOnce(bool) + Send>;

/// One record on its way to the dead-letter file.
pub struct Letter {
    pub reason: &'static str,
    /// The destination's or encoder's message.
    pub error: Option<String>,
    pub event: Event,
    pub on_written: OnWritten,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Labels {
    component: String,
    reason: String,
}

struct Inner {
    sink: String,
    tx: mpsc::Sender<Letter>,
    /// Letters handed over and not yet written (or failed).
    pending: AtomicUsize,
    idle: Notify,
    /// Letters written so far by this process.
    written: AtomicU64,
    failed: AtomicU64,
}

/// A sink's dead-letter writer; cheap to clone. The writing thread stops once every clone is
/// dropped and the last letter is written.
#[derive(Clone)]
pub struct DeadLetters {
    inner: Arc<Inner>,
}

/// The dead-letter directory cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("dead_letter_path {path}: {source}; create it or make it writable by logferry's user")]
pub struct DeadLetterError {
    pub path: String,
    pub source: std::io::Error,
}

impl DeadLetters {
    /// Creates the directory if needed, checks that a file can be created in it, and starts
    /// the writing thread. The first dead-letter file is only created with the first letter.
    pub fn build(
        sink: &str,
        settings: &DeadLetterSettings,
        metrics: &Metrics,
        health: Arc<Health>,
    ) -> Result<DeadLetters, DeadLetterError> {
        let error = |source| DeadLetterError {
            path: settings.path.display().to_string(),
            source,
        };
        std::fs::create_dir_all(&settings.path).map_err(error)?;
        // Fail at start, not at the first dead letter, when the directory is not writable.
        let probe = settings
            .path
            .join(format!(".write-check-{}", std::process::id()));
        OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&probe)
            .map_err(error)?;
        let _ = std::fs::remove_file(&probe);
        let records: Family<Labels, Counter> = metrics.shared(
            "dead_letter_records",
            "Records a sink wrote to its dead-letter file, by reason",
        );
        let failures: Family<Labels, Counter> = metrics.shared(
            "dead_letter_failures",
            "Records a sink could not write to its dead-letter file (their batch is not acknowledged)",
        );
        let (tx, rx) = mpsc::channel();
        let inner = Arc::new(Inner {
            sink: sink.to_string(),
            tx,
            pending: AtomicUsize::new(0),
            idle: Notify::new(),
            written: AtomicU64::new(0),
            failed: AtomicU64::new(0),
        });
        let mut writer = Writer {
            sink: sink.to_string(),
            health_key: format!("{sink} dead letters"),
            dir: settings.path.clone(),
            max_size: settings.max_size.max(1),
            file: None,
            sequence: 0,
            health,
            records,
            failures,
            failing: false,
            inner: Arc::downgrade(&inner),
        };
        std::thread::Builder::new()
            .name(format!("dead-letters-{sink}"))
            .spawn(move || writer.run(rx))
            .map_err(error)?;
        Ok(DeadLetters { inner })
    }

    /// Hands a record over. Never blocks; `on_written` runs on the writing thread.
    pub fn send(&self, letter: Letter) {
        self.inner.pending.fetch_add(1, Ordering::AcqRel);
        if let Err(mpsc::SendError(letter)) = self.inner.tx.send(letter) {
            // The thread is gone (it cannot be, short of a panic in it): the record is not
            // written, and its batch must not be acknowledged.
            tracing::error!(sink = %self.inner.sink, "the dead-letter writer has stopped");
            self.inner.failed.fetch_add(1, Ordering::Relaxed);
            (letter.on_written)(false);
            self.done(1);
        }
    }

    fn done(&self, n: usize) {
        if self.inner.pending.fetch_sub(n, Ordering::AcqRel) == n {
            self.inner.idle.notify_waiters();
        }
    }

    /// Waits until every letter handed over so far is written or failed. Sinks call it before
    /// they report themselves drained.
    pub async fn drained(&self) {
        loop {
            let idle = self.inner.idle.notified();
            if self.inner.pending.load(Ordering::Acquire) == 0 {
                return;
            }
            idle.await;
        }
    }

    /// Letters written so far by this process.
    pub fn written(&self) -> u64 {
        self.inner.written.load(Ordering::Relaxed)
    }

    /// Letters that could not be written so far.
    pub fn failed(&self) -> u64 {
        self.inner.failed.load(Ordering::Relaxed)
    }
}

/// The open dead-letter file.
struct Current {
    file: File,
    path: PathBuf,
    size: u64,
}

/// The writing thread's state.
struct Writer {
    sink: String,
    health_key: String,
    dir: PathBuf,
    max_size: u64,
    file: Option<Current>,
    sequence: u64,
    health: Arc<Health>,
    records: Family<Labels, Counter>,
    failures: Family<Labels, Counter>,
    failing: bool,
    inner: std::sync::Weak<Inner>,
}

impl Writer {
    fn run(&mut self, rx: mpsc::Receiver<Letter>) {
        let mut buf = Vec::with_capacity(64 * 1024);
        while let Ok(first) = rx.recv() {
            let mut group = vec![first];
            while group.len() < MAX_GROUP {
                match rx.try_recv() {
                    Ok(letter) => group.push(letter),
                    Err(_) => break,
                }
            }
            let ok = match self.write_group(&group, &mut buf) {
                Ok(()) => {
                    if self.failing {
                        self.failing = false;
                        self.health.set_healthy(&self.health_key);
                        tracing::info!(sink = %self.sink, dir = %self.dir.display(),
                            "dead letters are written again");
                    }
                    true
                }
                Err(e) => {
                    let message = format!(
                        "cannot write dead letters to {}: {e}; the {} records' batches are not \
                         acknowledged (free space or fix permissions of dead_letter_path)",
                        self.dir.display(),
                        group.len()
                    );
                    if let Some(suppressed) =
                        crate::log_limit::allow(&self.sink, "dead_letter_write")
                    {
                        tracing::error!(sink = %self.sink, dir = %self.dir.display(), error = %e,
                            records = group.len(), suppressed, "dead-letter write failed");
                    }
                    self.health.set_unhealthy(&self.health_key, message);
                    self.failing = true;
                    false
                }
            };
            let inner = self.inner.upgrade();
            for letter in group {
                let labels = Labels {
                    component: self.sink.clone(),
                    reason: letter.reason.to_string(),
                };
                if ok {
                    self.records.get_or_create(&labels).inc();
                } else {
                    self.failures.get_or_create(&labels).inc();
                }
                if let Some(inner) = &inner {
                    let counter = if ok { &inner.written } else { &inner.failed };
                    counter.fetch_add(1, Ordering::Relaxed);
                }
                (letter.on_written)(ok);
                if let Some(inner) = &inner {
                    if inner.pending.fetch_sub(1, Ordering::AcqRel) == 1 {
                        inner.idle.notify_waiters();
                    }
                }
            }
        }
    }

    /// Writes and syncs a group of letters. On failure, the current file is cut back to where
    /// the group started (best effort) and closed, so the next group starts a fresh file.
    fn write_group(&mut self, group: &[Letter], buf: &mut Vec<u8>) -> std::io::Result<()> {
        let now = chrono::Utc::now();
        buf.clear();
        let mut start = self.file.as_ref().map_or(0, |c| c.size);
        for letter in group {
            let before = buf.len();
            let meta = line::Meta {
                sink: &self.sink,
                reason: letter.reason,
                error: letter.error.as_deref(),
            };
            line::write_line(buf, now, &meta, &letter.event);
            let line_len = (buf.len() - before) as u64;
            if let Some(current) = &self.file {
                let size = current.size + before as u64;
                if size > 0 && size + line_len > self.max_size {
                    // This line starts the next file: finish the current one first.
                    if let Err(e) = self.append(&buf[..before]) {
                        self.abandon(start);
                        return Err(e);
                    }
                    self.file = None;
                    buf.drain(..before);
                }
            }
            if self.file.is_none() {
                self.file = Some(self.open()?);
                start = 0;
            }
        }
        if let Err(e) = self.append(buf) {
            self.abandon(start);
            return Err(e);
        }
        Ok(())
    }

    fn append(&mut self, data: &[u8]) -> std::io::Result<()> {
        let Some(current) = self.file.as_mut() else {
            return Err(std::io::Error::other("no dead-letter file open"));
        };
        current.file.write_all(data)?;
        current.file.sync_data()?;
        current.size += data.len() as u64;
        Ok(())
    }

    /// After a failed write: cut the file back to `len` and close it.
    fn abandon(&mut self, len: u64) {
        if let Some(current) = self.file.take() {
            if current.file.set_len(len).is_err() {
                tracing::warn!(sink = %self.sink, file = %current.path.display(),
                    "cannot cut back a partly written dead-letter file; its last lines may \
                     repeat records that are delivered again");
            }
        }
    }

    /// Creates and locks the next file.
    fn open(&mut self) -> std::io::Result<Current> {
        std::fs::create_dir_all(&self.dir)?;
        loop {
            self.sequence += 1;
            let name = format!(
                "dead-letters-{}-{}-{}.{EXTENSION}",
                chrono::Utc::now().format("%Y%m%dT%H%M%S%.6fZ"),
                std::process::id(),
                self.sequence
            );
            let path = self.dir.join(name);
            let file = match OpenOptions::new().append(true).create_new(true).open(&path) {
                Ok(file) => file,
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(e),
            };
            // Held while the file is written: `replay-dead-letters` skips locked files.
            if file.try_lock().is_err() {
                continue;
            }
            if let Ok(dir) = File::open(&self.dir) {
                let _ = dir.sync_all();
            }
            tracing::info!(sink = %self.sink, file = %path.display(), "new dead-letter file");
            return Ok(Current {
                file,
                path,
                size: 0,
            });
        }
    }
}

/// The dead-letter files of a directory, oldest first (by name, which starts with the time).
/// Replayed files (`*.jsonl.replayed`) and other files are not listed.
pub fn list_files(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == EXTENSION) && path.is_file() {
            files.push(path);
        }
    }
    files.sort();
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{EventTime, Map, Value};
    use std::sync::Mutex;

    fn event(n: usize, size: usize) -> Event {
        let mut map = Map::new();
        map.insert("n", Value::Int(n as i64));
        map.insert("log", Value::string("x".repeat(size)));
        Event::new("t".into(), EventTime::new(1, 0), map)
    }

    fn start(dir: &Path, max_size: u64) -> (DeadLetters, Arc<Health>, Arc<Metrics>) {
        let health = Arc::new(Health::default());
        let metrics = Arc::new(Metrics::new());
        let settings = DeadLetterSettings {
            path: dir.to_path_buf(),
            max_size,
        };
        let dl = DeadLetters::build("s", &settings, &metrics, health.clone()).unwrap();
        (dl, health, metrics)
    }

    fn send(dl: &DeadLetters, ev: Event, results: &Arc<Mutex<Vec<bool>>>) {
        let results = results.clone();
        dl.send(Letter {
            reason: reason::TOO_LARGE,
            error: Some("big".into()),
            event: ev,
            on_written: Box::new(move |ok| results.lock().unwrap().push(ok)),
        });
    }

    #[tokio::test]
    async fn letters_are_written_rotated_by_size_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let (dl, health, metrics) = start(dir.path(), 1000);
        let results = Arc::new(Mutex::new(Vec::new()));
        for n in 0..20 {
            send(&dl, event(n, 300), &results);
        }
        dl.drained().await;
        assert_eq!(*results.lock().unwrap(), vec![true; 20]);
        assert_eq!(dl.written(), 20);
        let files = list_files(dir.path()).unwrap();
        assert!(files.len() >= 7, "rotated: {files:?}");
        let mut seen = Vec::new();
        for f in &files {
            let text = std::fs::read(f).unwrap();
            assert!(
                text.len() <= 1000,
                "{} is {} bytes",
                f.display(),
                text.len()
            );
            for l in text.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
                let letter = line::parse_line(l).unwrap();
                assert_eq!(letter.reason, "too_large");
                seen.push(letter.event.record.get(b"n").cloned());
            }
        }
        let expected: Vec<_> = (0..20).map(|n| Some(Value::Int(n))).collect();
        assert_eq!(seen, expected, "every record once, in order");
        assert_eq!(health.report().0, 200);
        let text = metrics.render();
        assert!(
            text.contains(
                r#"logferry_dead_letter_records_total{component="s",reason="too_large"} 20"#
            ),
            "{text}"
        );
    }

    #[tokio::test]
    async fn an_unwritable_directory_fails_the_letters_and_reports_unhealthy() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("dl");
        let (dl, health, _) = start(&target, 1000);
        // Replace the directory by a file: every open fails from now on.
        std::fs::remove_dir(&target).unwrap();
        std::fs::write(&target, b"not a directory").unwrap();
        let results = Arc::new(Mutex::new(Vec::new()));
        send(&dl, event(1, 10), &results);
        dl.drained().await;
        assert_eq!(*results.lock().unwrap(), vec![false]);
        assert_eq!(dl.failed(), 1);
        let (code, body) = health.report();
        assert_eq!(code, 503);
        assert!(body.contains("s dead letters"), "{body}");
        // Fixed: the next letter is written and health recovers.
        std::fs::remove_file(&target).unwrap();
        std::fs::create_dir(&target).unwrap();
        send(&dl, event(2, 10), &results);
        dl.drained().await;
        assert_eq!(*results.lock().unwrap(), vec![false, true]);
        assert_eq!(health.report().0, 200);
    }

    #[tokio::test]
    async fn the_file_being_written_is_locked() {
        let dir = tempfile::tempdir().unwrap();
        let (dl, _, _) = start(dir.path(), 1 << 20);
        let results = Arc::new(Mutex::new(Vec::new()));
        send(&dl, event(1, 10), &results);
        dl.drained().await;
        let files = list_files(dir.path()).unwrap();
        assert_eq!(files.len(), 1);
        let f = File::open(&files[0]).unwrap();
        assert!(f.try_lock().is_err(), "locked by the writer");
        drop(dl);
        // The thread closes the file once every handle is gone.
        for _ in 0..100 {
            if f.try_lock().is_ok() {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        panic!("the lock was never released");
    }
}
