//! The polling loop of a `tail` source.
//!
//! One thread per source (file reads are blocking system calls; a thread keeps them off the
//! async workers) does, every `poll_interval`:
//! 1. every `refresh_interval`, expand the globs and start following new files;
//! 2. `stat` each followed path: a different inode (or none) there means the file was rotated
//!    (renamed or deleted): it is followed through its open handle for `rotate_wait`, then read
//!    to its end and closed, and the new file at the path is followed from its start; a size
//!    below the read offset means it was truncated;
//! 3. read each file with new data, one bounded window at a time, cut lines, parse and join
//!    them, and hand them to the router, waiting while the router waits (backpressure).
//!
//! Every read starts [`FP_LEN`] bytes before the offset and checks they are the bytes read
//! before: a file truncated and rewritten past our offset between two polls (copytruncate
//! under load) is noticed even though its size never looked smaller. A truncated file's unread
//! end is looked for in the copy that copytruncate left next to it (a file of the same
//! directory holding the same bytes before our offset) before reading the file from 0.
//!
//! Offsets only ever rest at the start of a line (or of a long line's next piece): an
//! incomplete last line is read again once its newline arrives, so no line state is kept
//! between reads except the multiline groups and the skipping of an over-long line.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use tokio::sync::{mpsc, oneshot};

use super::checkpoint::{self, Entry, Message};
use super::files::{self, FileId, Fingerprint, FP_LEN};
use super::multiline::{Joiner, Output};
use super::{Compiled, TailConfig};
use crate::buffer::AckRef;
use crate::event::{Event, EventTime, Map, Tag, Value};
use crate::metrics::ComponentMetrics;
use crate::pipeline::router::Router;
use crate::shutdown::CancellationToken;
use crate::source::{SourceContext, SourceError};

/// How long a stopping source waits for the acks of what it routed before it reports done.
const FINAL_CHECKPOINT_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// Distinct problems remembered so each is logged once (cleared past this many).
const MAX_WARNED: usize = 10_000;

/// Starts the source: loads and checks the checkpoint db (a db that cannot be written fails
/// start-up), then runs the reader thread until shutdown.
pub async fn start(
    config: TailConfig,
    cx: SourceContext,
) -> Result<tokio::task::JoinHandle<()>, SourceError> {
    let setup = |message: String| SourceError::Setup {
        name: cx.name.clone(),
        message,
    };
    let compiled = config
        .validate()
        .map_err(|problems| setup(crate::config::field::join(&problems)))?;
    let mut resume = HashMap::new();
    let mut checkpointer = None;
    let mut db_written_at = None;
    if let Some(db) = &config.db {
        db_written_at = std::fs::metadata(db).and_then(|m| m.modified()).ok();
        let entries = match checkpoint::load(db) {
            Ok(e) => e,
            Err(e @ checkpoint::DbError::Invalid { .. }) => {
                let mut aside = db.as_os_str().to_owned();
                aside.push(".invalid");
                let _ = std::fs::rename(db, &aside);
                tracing::error!(source = %cx.name, error = %e, moved_to = %PathBuf::from(&aside).display(),
                    "ignoring the checkpoint db: files are read as if it did not exist");
                cx.metrics.error("db_invalid");
                db_written_at = None;
                Vec::new()
            }
            Err(e) => return Err(setup(e.to_string())),
        };
        checkpoint::store(db, &entries).map_err(|e| setup(e.to_string()))?;
        let (tx, rx) = mpsc::unbounded_channel();
        let task = tokio::spawn(checkpoint::run(db.clone(), rx, cx.metrics.clone()));
        checkpointer = Some((tx, task));
        resume = entries.into_iter().map(|e| (e.id, e)).collect();
    }
    tracing::info!(source = %cx.name, paths = ?compiled.include.iter().map(|p| p.as_str()).collect::<Vec<_>>(),
        db = ?config.db, "tail input started");
    let (cp_tx, cp_task) = match checkpointer {
        Some((tx, task)) => (Some(tx), Some(task)),
        None => (None, None),
    };
    // Reads are `buffer_chunk_size` long; one that holds no line end grows (doubling) up to
    // the longest line plus one byte, so a long line is still found whole or split at
    // `buffer_max_size`.
    let max_window = config.buffer_max_size.as_usize().saturating_add(1);
    let window = config.buffer_chunk_size.as_usize().clamp(1, max_window);
    let read_ahead_limit = config.effective_read_ahead_limit().as_usize();
    let reader = Reader {
        max_line: config.buffer_max_size.as_usize(),
        tag_template: config.tag.clone(),
        config,
        c: compiled,
        name: cx.name.clone(),
        metrics: cx.metrics.clone(),
        router: Some(cx.router.clone()),
        shutdown: cx.shutdown.clone(),
        handle: tokio::runtime::Handle::current(),
        cp: cp_tx,
        files: BTreeMap::new(),
        by_id: HashMap::new(),
        resume,
        next_uid: 1,
        first_scan: true,
        last_scan: None,
        open_active: 0,
        warned: HashSet::new(),
        window,
        max_window,
        read_ahead_limit,
        read_ahead: Arc::new(tokio::sync::Semaphore::new(read_ahead_limit)),
        stopped: false,
        db_written_at,
    };
    let (done_tx, done_rx) = oneshot::channel::<()>();
    std::thread::Builder::new()
        .name(format!("tail:{}", cx.name))
        .spawn(move || {
            let name = reader.name.clone();
            let metrics = reader.metrics.clone();
            if std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| reader.run())).is_err() {
                metrics.error("reader_crashed");
                tracing::error!(source = %name,
                    "the tail reader stopped on an internal error (a bug: please report it); \
                     this source reads nothing more until logferry restarts");
            }
            let _ = done_tx.send(());
        })
        .map_err(|e| setup(format!("cannot start the reader thread: {e}")))?;
    let name = cx.name.clone();
    drop(cx);
    Ok(tokio::spawn(async move {
        let _ = done_rx.await;
        if let Some(task) = cp_task {
            // The last acks resolve as the sinks deliver what is queued. A sink that only
            // delivers once its queue closes (which happens after the sources stopped) must
            // not hold the shutdown: past this bound the checkpointer finishes on its own if
            // there is still time, and a restart reads the rest again (at-least-once).
            if tokio::time::timeout(FINAL_CHECKPOINT_WAIT, task)
                .await
                .is_err()
            {
                tracing::info!(source = %name,
                    "records are still being delivered; the checkpoint db is updated as they are");
            }
        }
    }))
}

/// One followed file.
struct Tracked {
    /// Names this reading of the file for the checkpointer; a new one after a truncation.
    uid: u64,
    id: FileId,
    path: PathBuf,
    tag: Tag,
    kubernetes: Option<Map>,
    path_value: Option<Value>,
    file: Option<File>,
    /// The next byte to read: always the start of a line (or of a long line's next piece).
    offset: u64,
    /// The bytes before `offset`.
    fp: Fingerprint,
    /// Size at the last look.
    size: u64,
    /// Inside a line longer than `buffer_max_size` that is being skipped.
    skipping: bool,
    joiner: Joiner,
    /// When the file left its path (renamed or deleted).
    rotated_at: Option<Instant>,
    last_active: Instant,
    /// An open failure was already reported.
    open_warned: bool,
    /// A split long line was already reported.
    split_warned: bool,
    /// Bytes the next read asks for: `window`, or more while a line longer than that is read.
    window: usize,
}

struct Reader {
    config: TailConfig,
    c: Compiled,
    name: String,
    metrics: ComponentMetrics,
    router: Option<Arc<Router>>,
    shutdown: CancellationToken,
    handle: tokio::runtime::Handle,
    cp: Option<mpsc::UnboundedSender<Message>>,
    /// By uid: discovery order.
    files: BTreeMap<u64, Tracked>,
    by_id: HashMap<FileId, u64>,
    /// Checkpoints from `db` not yet matched to a file.
    resume: HashMap<FileId, Entry>,
    next_uid: u64,
    first_scan: bool,
    last_scan: Option<Instant>,
    open_active: usize,
    warned: HashSet<String>,
    /// Bytes asked for by a read (`buffer_chunk_size`): what one read turns into records at once,
    /// so what it costs in memory before the records are packed.
    window: usize,
    /// The largest read: the longest line (`buffer_max_size`) and one byte to see it is longer.
    max_window: usize,
    /// `read_ahead_limit`, and the budget of bytes routed and not yet settled by every sink.
    read_ahead_limit: usize,
    read_ahead: Arc<tokio::sync::Semaphore>,
    max_line: usize,
    tag_template: String,
    /// The router is closed or shutdown came while waiting: stop reading.
    stopped: bool,
    /// When the db found at start-up was last written (None without db or on a first run).
    db_written_at: Option<std::time::SystemTime>,
}

/// How reading a window ended.
enum ReadOutcome {
    /// Nothing new.
    Idle,
    /// Some bytes were consumed (more may be waiting).
    Progress,
    /// The file no longer holds what was read before its offset.
    Truncated,
}

impl Reader {
    fn run(mut self) {
        while !self.shutdown.is_cancelled() && !self.stopped {
            let now = Instant::now();
            if self
                .last_scan
                .is_none_or(|t| now.duration_since(t) >= self.config.refresh_interval.get())
            {
                self.rescan();
                self.last_scan = Some(Instant::now());
            }
            self.check_paths();
            let mut busy = false;
            // Rotated files first: their last lines come before the new file's first ones.
            let mut order: Vec<(bool, u64)> = self
                .files
                .values()
                .map(|t| (t.rotated_at.is_none(), t.uid))
                .collect();
            order.sort_unstable();
            for (_, uid) in order {
                if self.stopped || self.shutdown.is_cancelled() {
                    break;
                }
                busy |= self.read_once(uid, false);
            }
            self.flush_multiline(Instant::now(), false);
            self.finish_rotated(Instant::now());
            if !busy {
                self.sleep(self.config.poll_interval.get());
            }
        }
        tracing::debug!(source = %self.name, "tail input stopping");
        if self.cp.is_none() && !self.stopped {
            // Without a db nothing would read held split lines again: pass them on.
            self.flush_multiline(Instant::now(), true);
        }
        // Pending acks resolve as sinks deliver; the checkpointer writes the final offsets once
        // the reader's sender is gone. Dropping the router lets the pipeline close the queues.
        self.router = None;
        self.cp = None;
    }

    fn sleep(&self, d: std::time::Duration) {
        let until = Instant::now() + d;
        while !self.shutdown.is_cancelled() {
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return;
            }
            std::thread::sleep(left.min(std::time::Duration::from_millis(50)));
        }
    }

    fn warn_once(&mut self, key: String, f: impl FnOnce()) {
        if self.warned.len() >= MAX_WARNED {
            self.warned.clear();
        }
        if self.warned.insert(key) {
            f();
        }
    }

    fn checkpoint(&self, msg: Message) {
        if let Some(cp) = &self.cp {
            let _ = cp.send(msg);
        }
    }

    /// Expands the globs and follows files not followed yet.
    fn rescan(&mut self) {
        let result = files::scan(&self.c.include, &self.c.exclude);
        for (what, why) in result.problems {
            let name = self.name.clone();
            let metrics = self.metrics.clone();
            self.warn_once(format!("scan {what}: {why}"), || {
                metrics.error("scan");
                tracing::warn!(source = %name, path = %what, error = %why,
                    "cannot look at this path; files under it are not read (checked again every refresh_interval)");
            });
        }
        let first = self.first_scan;
        for files::Found {
            path,
            id,
            size,
            born,
        } in result.files
        {
            match self.by_id.get(&id).copied() {
                Some(uid) => {
                    if let Some(t) = self.files.get_mut(&uid) {
                        if t.rotated_at.is_some() && t.path != path {
                            // Renamed to a name the globs match: it goes on as a followed file.
                            tracing::debug!(source = %self.name, from = %t.path.display(), to = %path.display(),
                                "rotated file is matched under its new name; still following it");
                            t.rotated_at = None;
                            t.path = path;
                            if t.file.is_some() {
                                self.open_active += 1;
                            }
                        }
                    }
                }
                None => {
                    let start = match self.resume.remove(&id) {
                        Some(e) => Start::Checkpoint(e.offset, e.fp),
                        // Created after the db's last write: it appeared while logferry was
                        // down, and all of it is new.
                        None if self.db_written_at.is_some_and(|t| born >= t) => Start::Head,
                        None if first && !self.config.read_from_head => Start::End,
                        None => Start::Head,
                    };
                    self.track(path, id, size, start, false);
                }
            }
        }
        if first {
            // Checkpointed files the globs no longer match may have been renamed while we were
            // down: find them next to their old name and finish them.
            let left: Vec<Entry> = self.resume.drain().map(|(_, e)| e).collect();
            for e in left {
                let Some(dir) = e.path.parent() else { continue };
                if let Some(found) = files::find_by_id(dir, e.id) {
                    if files::is_excluded(&found, &self.c.exclude) {
                        continue;
                    }
                    let size = std::fs::metadata(&found).map(|m| m.len()).unwrap_or(0);
                    tracing::info!(source = %self.name, was = %e.path.display(), now = %found.display(),
                        "a checkpointed file was rotated while logferry was down; reading its end");
                    let orig = e.path.clone();
                    self.track_as(
                        found,
                        orig,
                        e.id,
                        size,
                        Start::Checkpoint(e.offset, e.fp),
                        true,
                    );
                }
            }
            self.first_scan = false;
        }
    }

    fn track(&mut self, path: PathBuf, id: FileId, size: u64, start: Start, rotated: bool) {
        let named = path.clone();
        self.track_as(path, named, id, size, start, rotated)
    }

    /// Starts following the file at `path`; its tag and metadata come from `named` (the name
    /// it had when it was being written).
    fn track_as(
        &mut self,
        path: PathBuf,
        named: PathBuf,
        id: FileId,
        size: u64,
        start: Start,
        rotated: bool,
    ) {
        let (offset, fp) = match start {
            Start::Head => (0, Fingerprint::default()),
            Start::Checkpoint(o, fp) => (o, fp),
            Start::End => match start_at_end(&path, size, self.max_line) {
                Ok(p) => p,
                Err(e) => {
                    tracing::debug!(source = %self.name, path = %path.display(), error = %e,
                        "cannot read the end of a file; reading it from its start");
                    (0, Fingerprint::default())
                }
            },
        };
        let uid = self.next_uid;
        self.next_uid += 1;
        tracing::info!(source = %self.name, path = %path.display(), offset, "following file");
        self.checkpoint(Message::Track {
            uid,
            id,
            path: path.clone(),
            offset,
            fp,
        });
        let tag: Tag = files::expand_tag(&self.tag_template, &named).into();
        let t = Tracked {
            uid,
            id,
            kubernetes: files::kubernetes_metadata(&named).map(Map::into_shared),
            path_value: self
                .c
                .path_key
                .as_ref()
                .map(|_| Value::from(named.to_string_lossy().into_owned())),
            path,
            tag,
            file: None,
            offset,
            fp,
            size,
            skipping: false,
            joiner: Joiner::new(self.c.multiline, &self.c.key, self.max_line),
            rotated_at: rotated.then(Instant::now),
            last_active: Instant::now(),
            open_warned: false,
            split_warned: false,
            window: self.window,
        };
        self.by_id.insert(id, uid);
        self.files.insert(uid, t);
        // Open at once while under the limit: a file deleted before it is read is then still
        // read to its end.
        if rotated {
            if let Some(t) = self.files.get_mut(&uid) {
                match File::open(&t.path) {
                    Ok(f) if f.metadata().is_ok_and(|m| FileId::of(&m) == id) => t.file = Some(f),
                    _ => {}
                }
            }
        } else if self.open_active < self.config.max_open_files {
            self.ensure_open(uid);
        }
    }

    /// Looks at each followed path: growth, truncation, rotation, deletion.
    fn check_paths(&mut self) {
        let uids: Vec<u64> = self.files.keys().copied().collect();
        let mut appeared = Vec::new();
        for uid in uids {
            let Some(t) = self.files.get_mut(&uid) else {
                continue;
            };
            if t.rotated_at.is_some() {
                if let Some(f) = &t.file {
                    if let Ok(meta) = f.metadata() {
                        t.size = meta.len();
                    }
                }
                continue;
            }
            match std::fs::metadata(&t.path) {
                Ok(meta) if FileId::of(&meta) == t.id => {
                    t.size = meta.len();
                }
                Ok(meta) => {
                    if meta.is_file() {
                        appeared.push((t.path.clone(), FileId::of(&meta), meta.len()));
                    }
                    self.rotated(uid);
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => self.rotated(uid),
                Err(e) => {
                    let key = format!("stat {}: {e}", t.path.display());
                    let (name, metrics, path) =
                        (self.name.clone(), self.metrics.clone(), t.path.clone());
                    self.warn_once(key, || {
                        metrics.error("stat");
                        tracing::warn!(source = %name, path = %path.display(), error = %e,
                            "cannot look at a followed file");
                    });
                }
            }
        }
        for (path, id, size) in appeared {
            if !self.by_id.contains_key(&id) {
                self.track(path, id, size, Start::Head, false);
            }
        }
    }

    /// The file left its path: keep it (through its handle) for `rotate_wait`.
    fn rotated(&mut self, uid: u64) {
        let Some(t) = self.files.get_mut(&uid) else {
            return;
        };
        t.rotated_at = Some(Instant::now());
        if let Some(f) = &t.file {
            // What was written just before the rotation is read before the new file.
            t.size = f.metadata().map(|m| m.len()).unwrap_or(t.size);
            self.open_active = self.open_active.saturating_sub(1);
            tracing::info!(source = %self.name, path = %t.path.display(),
                "file rotated or deleted; reading it to its end");
            return;
        }
        // Its handle was closed (max_open_files): it can still be found if it was renamed
        // within its directory.
        let found = t
            .path
            .parent()
            .and_then(|dir| files::find_by_id(dir, t.id))
            .and_then(|p| File::open(&p).ok().map(|f| (p, f)));
        match found {
            Some((p, f)) => {
                tracing::info!(source = %self.name, path = %t.path.display(), now = %p.display(),
                    "file rotated; reading it to its end");
                t.size = f.metadata().map(|m| m.len()).unwrap_or(t.size);
                t.file = Some(f);
            }
            None if t.offset < t.size => {
                self.metrics.error("rotated_unread");
                tracing::warn!(source = %self.name, path = %t.path.display(), offset = t.offset,
                    size = t.size,
                    "file deleted or moved away while not open (max_open_files): its unread end is lost");
            }
            None => {}
        }
    }

    /// Closes the least recently active followed file that is open.
    fn make_room(&mut self) {
        while self.open_active >= self.config.max_open_files {
            let victim = self
                .files
                .values()
                .filter(|t| t.rotated_at.is_none() && t.file.is_some())
                .min_by_key(|t| (t.offset < t.size, t.last_active))
                .map(|t| t.uid);
            let Some(uid) = victim else { return };
            if let Some(t) = self.files.get_mut(&uid) {
                t.file = None;
                self.open_active = self.open_active.saturating_sub(1);
            }
        }
    }

    /// Opens the file if needed. False when it cannot be read now.
    fn ensure_open(&mut self, uid: u64) -> bool {
        let needs_open = match self.files.get(&uid) {
            Some(t) => t.file.is_none() && t.rotated_at.is_none(),
            None => return false,
        };
        if !needs_open {
            return self.files.get(&uid).is_some_and(|t| t.file.is_some());
        }
        self.make_room();
        let Some(t) = self.files.get_mut(&uid) else {
            return false;
        };
        match File::open(&t.path) {
            Ok(f) => match f.metadata() {
                Ok(meta) if FileId::of(&meta) == t.id => {
                    if t.open_warned {
                        tracing::info!(source = %self.name, path = %t.path.display(), "file readable again");
                        t.open_warned = false;
                    }
                    t.file = Some(f);
                    self.open_active += 1;
                    true
                }
                // Replaced between stat and open: the next poll sees the rotation.
                _ => false,
            },
            Err(e) => {
                if !t.open_warned {
                    t.open_warned = true;
                    self.metrics.error("open");
                    tracing::warn!(source = %self.name, path = %t.path.display(), error = %e,
                        "cannot open a file to follow; retrying while it exists");
                }
                false
            }
        }
    }

    /// Reads one window of a file and routes its lines. Returns whether bytes were consumed.
    /// `last`: the file will not grow any more; an unterminated last line is passed on.
    fn read_once(&mut self, uid: u64, last: bool) -> bool {
        let has_data = self
            .files
            .get(&uid)
            .is_some_and(|t| t.size != t.offset || last);
        if !has_data || !self.ensure_open(uid) {
            return false;
        }
        match self.read_window(uid, last) {
            ReadOutcome::Idle => false,
            ReadOutcome::Progress => true,
            ReadOutcome::Truncated => {
                self.truncated(uid);
                true
            }
        }
    }

    fn read_window(&mut self, uid: u64, last: bool) -> ReadOutcome {
        let Some(t) = self.files.get_mut(&uid) else {
            return ReadOutcome::Idle;
        };
        let Some(file) = &t.file else {
            return ReadOutcome::Idle;
        };
        let size = match file.metadata() {
            Ok(m) => m.len(),
            Err(_) => t.size,
        };
        t.size = size;
        if size < t.offset {
            return ReadOutcome::Truncated;
        }
        let fp_len = t.fp.len();
        let start = t.offset - fp_len as u64;
        let want = fp_len + ((size - t.offset) as usize).min(t.window);
        let mut buf = vec![0u8; want];
        let n = match read_fully_at(file, &mut buf, start) {
            Ok(n) => n,
            Err(e) => {
                let key = format!("read {}: {e}", t.path.display());
                let (name, metrics, path) =
                    (self.name.clone(), self.metrics.clone(), t.path.clone());
                self.warn_once(key, || {
                    metrics.error("read");
                    tracing::warn!(source = %name, path = %path.display(), error = %e, "reading a file failed");
                });
                return ReadOutcome::Idle;
            }
        };
        buf.truncate(n);
        if n < fp_len || buf[..fp_len] != *t.fp.bytes() {
            return ReadOutcome::Truncated;
        }
        if n == fp_len {
            return ReadOutcome::Idle;
        }
        // An unterminated last line is passed on only when the read reached the end of a file
        // that will not grow: a read that ends inside the file ends inside a line.
        let at_end = start + n as u64 >= size;
        let full = n == want;
        let buf = Bytes::from(buf);
        let before = t.offset;
        self.consume(uid, buf, start, last && at_end);
        let (chunk, max_window) = (self.window, self.max_window);
        let Some(t) = self.files.get_mut(&uid) else {
            return ReadOutcome::Idle;
        };
        t.last_active = Instant::now();
        if t.offset > before {
            t.window = chunk;
            ReadOutcome::Progress
        } else if full && !at_end && t.window < max_window {
            // No line ends in this read and the file holds more: the line is longer than the
            // read. Read again, twice as much, up to the longest line.
            t.window = t.window.saturating_mul(2).min(max_window);
            ReadOutcome::Progress
        } else {
            ReadOutcome::Idle
        }
    }

    /// Cuts `buf` (file bytes from `start`, which is the fingerprint's first byte) into lines,
    /// parses and routes them, and moves the file's offset past what was consumed.
    fn consume(&mut self, uid: u64, buf: Bytes, start: u64, last: bool) {
        let max = self.max_line;
        let skip_long = self.config.skip_long_lines;
        let Some(t) = self.files.get_mut(&uid) else {
            return;
        };
        let data_from = (t.offset - start) as usize;
        let mut pos = data_from;
        let mut out: Vec<Output> = Vec::new();
        let now = EventTime::now();
        let now_i = Instant::now();
        let mut cx = LineCx {
            parser: &self.c.parser,
            key: &self.c.key,
            metrics: &self.metrics,
            max,
            skip_long,
            now,
            now_i,
            name: &self.name,
            path: t.path.clone(),
        };
        while pos < buf.len() {
            match memchr::memchr(b'\n', &buf[pos..]) {
                Some(i) => {
                    let end = pos + i;
                    if t.skipping {
                        t.skipping = false;
                    } else {
                        cx.line(t, &buf, start, pos, end, &mut out);
                    }
                    pos = end + 1;
                }
                None => {
                    if t.skipping {
                        pos = buf.len();
                        break;
                    }
                    let rest = buf.len() - pos;
                    if rest > max {
                        if skip_long {
                            cx.long_line_skipped(rest);
                            t.skipping = true;
                            pos = buf.len();
                            break;
                        }
                        cx.long_line_split(t, rest);
                        while buf.len() - pos > max {
                            cx.piece(t, &buf, start, pos, pos + max, &mut out);
                            pos += max;
                        }
                    }
                    if last && pos < buf.len() {
                        cx.line(t, &buf, start, pos, buf.len(), &mut out);
                        pos = buf.len();
                    }
                    break;
                }
            }
        }
        let consumed = pos - data_from;
        t.offset += consumed as u64;
        t.fp = Fingerprint::from_tail(&buf[..pos]);
        self.submit(uid, out, consumed);
    }

    /// Routes finished records of a file and tells the checkpointer how far it is done.
    fn submit(&mut self, uid: u64, out: Vec<Output>, bytes: usize) {
        let Some(t) = self.files.get(&uid) else {
            return;
        };
        let (safe, safe_fp) = t.joiner.held_from().unwrap_or((t.offset, t.fp));
        if out.is_empty() {
            if bytes > 0 {
                self.checkpoint(Message::Advance {
                    uid,
                    offset: safe,
                    fp: safe_fp,
                    waiter: None,
                });
            }
            return;
        }
        let mut events: Vec<Event> = out
            .into_iter()
            .map(|(mut record, time)| {
                if let Some(meta) = &t.kubernetes {
                    if record.get(b"kubernetes").is_none() {
                        record.push(Bytes::from_static(b"kubernetes"), Value::Map(meta.clone()));
                    }
                }
                if let (Some(k), Some(v)) = (&self.c.path_key, &t.path_value) {
                    record.insert(k.clone(), v.clone());
                }
                Event::new(t.tag.clone(), time, record)
            })
            .collect();
        let tag = t.tag.clone();
        self.metrics.records_in.inc_by(events.len() as u64);
        self.metrics.bytes_in.inc_by(bytes as u64);
        let Some(router) = self.router.clone() else {
            return;
        };
        let shutdown = self.shutdown.clone();
        // The records in their lean form: one msgpack buffer for the read, weighed as held.
        let weight = crate::event::pack(&mut events);
        // Their share of `read_ahead_limit`, held until every sink is done with them.
        let share = u32::try_from(weight.min(self.read_ahead_limit)).unwrap_or(u32::MAX);
        let budget = self.read_ahead.clone();
        let half = self.read_ahead_limit / 2;
        let cp = self.cp.is_some();
        let routed = self.handle.block_on(async move {
            let permit = tokio::select! {
                biased;
                p = budget.clone().acquire_many_owned(share) => match p {
                    Ok(permit) => permit,
                    Err(_) => return None,
                },
                _ = shutdown.cancelled() => return None,
            };
            // Past half the budget, reading is about to wait for these records: sinks are told
            // so, or records held for fuller aggregates would stall the reading until `flush`.
            let (ack, waiter) = AckRef::holding(permit, budget.available_permits() < half);
            tokio::select! {
                biased;
                r = router.submit(tag, events, weight, Some(ack)) => r.is_ok().then_some(waiter),
                _ = shutdown.cancelled() => None,
            }
            .map(|waiter| cp.then_some(waiter))
        });
        let Some(waiter) = routed else {
            // Not routed (or not completely): not acknowledged either, so not checkpointed.
            self.stopped = true;
            return;
        };
        self.checkpoint(Message::Advance {
            uid,
            offset: safe,
            fp: safe_fp,
            waiter,
        });
    }

    /// Passes on multiline groups that waited too long (all with `all`).
    fn flush_multiline(&mut self, now: Instant, all: bool) {
        let timeout = if all {
            std::time::Duration::ZERO
        } else {
            self.config.multiline_flush.get()
        };
        let uids: Vec<u64> = self
            .files
            .values()
            .filter(|t| t.joiner.is_holding())
            .map(|t| t.uid)
            .collect();
        for uid in uids {
            self.flush_file(uid, now, timeout);
        }
    }

    fn flush_file(&mut self, uid: u64, now: Instant, timeout: std::time::Duration) {
        let mut out = Vec::new();
        if let Some(t) = self.files.get_mut(&uid) {
            t.joiner.flush(now, timeout, &mut out);
        }
        if !out.is_empty() {
            self.submit(uid, out, 0);
        }
    }

    /// Rotated files whose `rotate_wait` is over: read to the end, then closed and forgotten.
    fn finish_rotated(&mut self, now: Instant) {
        let wait = self.config.rotate_wait.get();
        let done: Vec<u64> = self
            .files
            .values()
            .filter(|t| t.rotated_at.is_some_and(|r| now.duration_since(r) >= wait))
            .map(|t| t.uid)
            .collect();
        for uid in done {
            self.finish(uid);
        }
    }

    /// Reads a file to its end, passes on what it holds, and stops following it.
    fn finish(&mut self, uid: u64) {
        let mut rounds = 0;
        while !self.stopped && !self.shutdown.is_cancelled() && rounds < 100_000 {
            rounds += 1;
            if let Some(t) = self.files.get_mut(&uid) {
                if let Some(f) = &t.file {
                    t.size = f.metadata().map(|m| m.len()).unwrap_or(t.size);
                }
            }
            match self.read_window(uid, true) {
                ReadOutcome::Progress => continue,
                ReadOutcome::Idle | ReadOutcome::Truncated => break,
            }
        }
        if self.stopped || self.shutdown.is_cancelled() {
            return;
        }
        self.flush_file(uid, Instant::now(), std::time::Duration::ZERO);
        if let Some(t) = self.files.remove(&uid) {
            if t.rotated_at.is_none() && t.file.is_some() {
                self.open_active = self.open_active.saturating_sub(1);
            }
            if self.by_id.get(&t.id) == Some(&uid) {
                self.by_id.remove(&t.id);
            }
            tracing::info!(source = %self.name, path = %t.path.display(), offset = t.offset,
                "finished a rotated file");
            self.checkpoint(Message::Forget { uid });
        }
    }

    /// The file no longer holds what was read: recover its unread end from a copytruncate copy
    /// if there is one, then read it again from its start.
    fn truncated(&mut self, uid: u64) {
        let Some(t) = self.files.get(&uid) else {
            return;
        };
        let copy = t
            .path
            .parent()
            .and_then(|dir| files::find_copy(dir, t.id, t.offset, &t.fp));
        let (path, offset) = (t.path.clone(), t.offset);
        if let Some((copy_path, copy)) = copy {
            tracing::info!(source = %self.name, path = %path.display(), copy = %copy_path.display(),
                offset, "file truncated; reading its unread end from the copy made by copytruncate");
            let original = self.files.get_mut(&uid).and_then(|t| t.file.replace(copy));
            let saved_rotated = self.files.get(&uid).and_then(|t| t.rotated_at);
            if let Some(t) = self.files.get_mut(&uid) {
                // Read the copy as a finished file, through the same state.
                t.rotated_at = Some(Instant::now());
            }
            let mut rounds = 0;
            while !self.stopped && rounds < 100_000 {
                rounds += 1;
                if !matches!(self.read_window(uid, true), ReadOutcome::Progress) {
                    break;
                }
            }
            self.flush_file(uid, Instant::now(), std::time::Duration::ZERO);
            if let Some(t) = self.files.get_mut(&uid) {
                t.file = original;
                t.rotated_at = saved_rotated;
            }
        } else {
            self.flush_file(uid, Instant::now(), std::time::Duration::ZERO);
            if offset > 0 {
                tracing::info!(source = %self.name, path = %path.display(), offset,
                    "file truncated; reading it again from its start");
            }
        }
        self.metrics.error("truncated");
        // A new reading of the same file: acks of the old one can no longer move its checkpoint.
        let Some(mut t) = self.files.remove(&uid) else {
            return;
        };
        self.checkpoint(Message::Forget { uid });
        let new_uid = self.next_uid;
        self.next_uid += 1;
        t.uid = new_uid;
        t.offset = 0;
        t.fp = Fingerprint::default();
        t.skipping = false;
        t.size = t
            .file
            .as_ref()
            .and_then(|f| f.metadata().ok())
            .map(|m| m.len())
            .unwrap_or(0);
        self.checkpoint(Message::Track {
            uid: new_uid,
            id: t.id,
            path: t.path.clone(),
            offset: 0,
            fp: Fingerprint::default(),
        });
        self.by_id.insert(t.id, new_uid);
        self.files.insert(new_uid, t);
    }
}

/// Where reading a newly followed file starts.
enum Start {
    Head,
    End,
    Checkpoint(u64, Fingerprint),
}

/// Bytes looked at from the end of a file read from its end.
const END_PROBE: usize = 64 * 1024;

/// The start of the line being written at the end of the file (after the last newline among
/// its last bytes, at most `max` and [`END_PROBE`]), with the fingerprint before it.
fn start_at_end(path: &Path, size: u64, max: usize) -> std::io::Result<(u64, Fingerprint)> {
    if size == 0 {
        return Ok((0, Fingerprint::default()));
    }
    let file = File::open(path)?;
    let take = (size as usize).min(max.clamp(FP_LEN, END_PROBE));
    let from = size - take as u64;
    let mut buf = vec![0u8; take];
    let n = read_fully_at(&file, &mut buf, from)?;
    buf.truncate(n);
    let offset = match memchr::memrchr(b'\n', &buf) {
        Some(i) => from + i as u64 + 1,
        None => from + n as u64,
    };
    let before = (offset - from) as usize;
    let mut fp = Fingerprint::from_tail(&buf[..before]);
    if fp.len() < FP_LEN.min(offset as usize) {
        // Too few bytes were read before the offset: read the fingerprint itself.
        let fl = FP_LEN.min(offset as usize);
        let mut b = vec![0u8; fl];
        let n = read_fully_at(&file, &mut b, offset - fl as u64)?;
        fp = Fingerprint::from_tail(&b[..n]);
    }
    Ok((offset, fp))
}

fn read_fully_at(file: &File, buf: &mut [u8], offset: u64) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match file.read_at(&mut buf[n..], offset + n as u64) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// What cutting lines needs, borrowed from the reader.
struct LineCx<'a> {
    parser: &'a super::parser::Parser,
    key: &'a Bytes,
    metrics: &'a ComponentMetrics,
    max: usize,
    skip_long: bool,
    now: EventTime,
    now_i: Instant,
    name: &'a str,
    path: PathBuf,
}

impl LineCx<'_> {
    /// One complete line `buf[from..to]` (without its newline).
    fn line(
        &mut self,
        t: &mut Tracked,
        buf: &Bytes,
        start: u64,
        from: usize,
        to: usize,
        out: &mut Vec<Output>,
    ) {
        let mut to = to;
        if to > from && buf[to - 1] == b'\r' {
            to -= 1;
        }
        if to == from {
            return;
        }
        if to - from > self.max {
            if self.skip_long {
                self.long_line_skipped(to - from);
                return;
            }
            self.long_line_split(t, to - from);
            let mut p = from;
            while p < to {
                let e = (p + self.max).min(to);
                self.piece(t, buf, start, p, e, out);
                p = e;
            }
            return;
        }
        self.piece(t, buf, start, from, to, out);
    }

    /// Parses `buf[from..to]` as one line.
    fn piece(
        &mut self,
        t: &mut Tracked,
        buf: &Bytes,
        start: u64,
        from: usize,
        to: usize,
        out: &mut Vec<Output>,
    ) {
        let parsed = self.parser.parse(buf.slice(from..to), self.key, self.now);
        if let Some(e) = parsed.error {
            self.metrics.error(e);
        }
        let line_start = start + from as u64;
        t.joiner.push(
            parsed,
            line_start,
            || Fingerprint::from_tail(&buf[..from]),
            self.now_i,
            out,
        );
    }

    fn long_line_split(&mut self, t: &mut Tracked, len: usize) {
        self.metrics.error("long_line_split");
        if !t.split_warned {
            t.split_warned = true;
            tracing::warn!(source = %self.name, path = %self.path.display(), at_least = len, max = self.max,
                "splitting a line longer than buffer_max_size into pieces (reported once per file; \
                 see logferry_errors_total{{reason=\"long_line_split\"}})");
        }
    }

    fn long_line_skipped(&mut self, len: usize) {
        self.metrics.dropped("long_line", 1);
        tracing::warn!(source = %self.name, path = %self.path.display(), at_least = len, max = self.max,
            "skipping a line longer than buffer_max_size (skip_long_lines = true)");
    }
}
