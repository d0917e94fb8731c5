//! A per-sink queue backed by a write-ahead log on disk (`buffer = "disk"`).
//!
//! `send` appends the batch as one checksummed [`frame`] to the current segment file
//! (`<buffer_path>/<id>.seg`), fsyncs per the [`FsyncPolicy`], and only then completes the
//! upstream acknowledgement: an acknowledged record is on disk. The receiver reads frames back
//! in order into [`Batch`]es; completing a batch marks its frame acknowledged. The position up to
//! which every frame is acknowledged is kept in `<buffer_path>/ack`, an append-only log
//! ([`ack_log`]) fsynced per the same policy. A segment file is deleted once every frame in it
//! is acknowledged. On start, frames after the acknowledged position are replayed before new ones;
//! a torn or corrupt tail (a crash in the middle of an append) is found by its checksum,
//! truncated away, logged and counted (`errors{reason="buffer_corrupt"}`).
//!
//! Memory stays bounded: the receiver holds at most `buffer_limit` bytes of frames read back
//! and not yet covered by the recorded ack position (a frame's share is released only once the
//! position has moved past it and is written to the ack log), and reads one frame at a time.
//! That is also the duplicate bound after a crash: only frames in that window can have been
//! delivered without their acknowledgement being recorded. The disk holds at most
//! `buffer_max_size` bytes of unacknowledged frames; beyond that `send` waits (`when_full =
//! "block"`) or drops the batch and counts it (`"drop_newest"`).
//!
//! When a write fails at run time (disk full, I/O error) the sender keeps the batch, marks
//! `<sink>.buffer` unhealthy, and retries with backoff, which holds sources back like a full
//! queue; it never crashes. A partly written frame is left behind a sealed segment's committed
//! size and the writer moves to a new segment.

pub mod ack_log;
pub mod frame;

use std::collections::{BTreeMap, VecDeque};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use bytes::Bytes;
use prometheus_client::metrics::gauge::Gauge;
use tokio::sync::{Notify, Semaphore};

use super::queue::{Batch, Closed, Reservation};
use crate::health::Health;
use crate::metrics::{BufferMetrics, ComponentMetrics};

/// When appended frames are forced to stable storage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FsyncPolicy {
    /// fsync after every append, before the upstream ack: survives power loss.
    Always,
    /// fsync at most this often: an ack is given once the frame is in the OS page cache, which
    /// survives a crash or kill of logferry but not of the machine.
    Interval(Duration),
}

/// What `send` does when the disk buffer holds `buffer_max_size` unacknowledged bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WhenFull {
    /// Wait for space: sources stop reading (backpressure).
    Block,
    /// Drop the incoming batch, count it (`dropped_records{reason="buffer_full"}`), ack it.
    DropNewest,
}

/// The disk buffer's settings (the sink keys `buffer_path`, `buffer_max_size`, `fsync`,
/// `when_full`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiskSettings {
    pub path: PathBuf,
    pub max_size: u64,
    pub fsync: FsyncPolicy,
    pub when_full: WhenFull,
}

/// Default `fsync`: a short interval.
pub const DEFAULT_FSYNC_INTERVAL: Duration = Duration::from_millis(200);
/// Default `buffer_max_size`.
pub const DEFAULT_MAX_SIZE: u64 = 1024 * 1024 * 1024;

/// The disk buffer cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("the disk buffer at {path} is unusable: {what}: {source}; make it a writable directory on a volume with free space, or set buffer = \"memory\"")]
pub struct DiskError {
    pub path: String,
    pub what: &'static str,
    pub source: io::Error,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn seg_path(dir: &Path, id: u64) -> PathBuf {
    dir.join(format!("{id:020}.seg"))
}

#[derive(Debug, Clone, Copy)]
struct SegMeta {
    /// Bytes of whole, committed frames.
    size: u64,
    /// The writer moved on: nothing more is appended.
    sealed: bool,
}

struct Inflight {
    /// This frame's share of `buffer_limit`, held until the recorded ack position passes it.
    permit: Option<tokio::sync::OwnedSemaphorePermit>,
    seg: u64,
    end: u64,
    bytes: u64,
    records: u64,
    written_ms: u64,
    done: bool,
}

struct State {
    segments: BTreeMap<u64, SegMeta>,
    /// Everything before this position is acknowledged.
    ack: (u64, u64),
    unacked_bytes: u64,
    unacked_records: u64,
    /// Frames handed to the sink, in read order; `inflight_base` is the token of the first.
    inflight: VecDeque<Inflight>,
    inflight_base: u64,
    /// Write time of a frame read but waiting for memory room (for the age metric).
    pending_ms: Option<u64>,
    /// Tokens of in-flight frames the sink failed, due for another delivery.
    retry: VecDeque<u64>,
}

struct Writer {
    file: Option<File>,
    seg: u64,
    off: u64,
    dirty: bool,
}

struct Shared {
    name: String,
    dir: PathBuf,
    settings: DiskSettings,
    segment_size: u64,
    state: Mutex<State>,
    writer: Mutex<Writer>,
    ack_log: Mutex<ack_log::AckLog>,
    data: Notify,
    space: Notify,
    closed: AtomicBool,
    /// Holds the directory's lock for as long as the buffer is open.
    _lock: File,
    /// Records handed to the sink and not yet completed.
    queued: Arc<AtomicUsize>,
    metrics: BufferMetrics,
    component: ComponentMetrics,
    health: Arc<Health>,
}

impl Shared {
    fn health_name(&self) -> String {
        format!("{}.buffer", self.name)
    }

    fn update_gauges(&self, st: &State) {
        self.metrics.disk_bytes.set(st.unacked_bytes as i64);
        self.metrics.disk_records.set(st.unacked_records as i64);
    }

    /// Appends one encoded frame (blocking I/O). On failure the current segment is abandoned
    /// at its last whole frame and the next attempt starts a new one.
    fn append(&self, frame: &[u8], records: u64) -> io::Result<()> {
        let mut w = lock(&self.writer);
        if w.file.is_none() || (w.off > 0 && w.off + frame.len() as u64 > self.segment_size) {
            self.roll(&mut w)?;
        }
        let result = match w.file.as_mut() {
            Some(file) => file.write_all(frame).and_then(|()| {
                if self.settings.fsync == FsyncPolicy::Always {
                    file.sync_data()
                } else {
                    Ok(())
                }
            }),
            None => Err(io::Error::other("no open segment")),
        };
        if let Err(e) = result {
            // Whatever part of the frame reached the file lies past the committed size.
            w.file = None;
            return Err(e);
        }
        w.off += frame.len() as u64;
        w.dirty = self.settings.fsync != FsyncPolicy::Always;
        let mut st = lock(&self.state);
        if let Some(meta) = st.segments.get_mut(&w.seg) {
            meta.size = w.off;
        }
        st.unacked_bytes += frame.len() as u64;
        st.unacked_records += records;
        self.update_gauges(&st);
        drop(st);
        drop(w);
        self.data.notify_one();
        Ok(())
    }

    /// Seals the current segment and opens the next one.
    fn roll(&self, w: &mut Writer) -> io::Result<()> {
        if let Some(file) = w.file.take() {
            let _ = file.sync_data();
        }
        let next = {
            let st = lock(&self.state);
            st.segments
                .keys()
                .next_back()
                .copied()
                .unwrap_or(0)
                .max(st.ack.0)
                .max(w.seg)
                + 1
        };
        let file = OpenOptions::new()
            .create(true)
            .truncate(true)
            .write(true)
            .open(seg_path(&self.dir, next))?;
        if self.settings.fsync == FsyncPolicy::Always {
            File::open(&self.dir)?.sync_all()?;
        }
        let old = w.seg;
        w.file = Some(file);
        w.seg = next;
        w.off = 0;
        let deletable = {
            let mut st = lock(&self.state);
            if let Some(meta) = st.segments.get_mut(&old) {
                meta.sealed = true;
            }
            st.segments.insert(
                next,
                SegMeta {
                    size: 0,
                    sealed: false,
                },
            );
            collect_deletable(&mut st)
        };
        self.delete(deletable);
        // The reader may be waiting at the end of the sealed segment: it moves on (and closes
        // it, so its space is freed once deleted).
        self.data.notify_one();
        Ok(())
    }

    fn delete(&self, ids: Vec<u64>) {
        for id in ids {
            if let Err(e) = fs::remove_file(seg_path(&self.dir, id)) {
                if e.kind() != io::ErrorKind::NotFound {
                    self.component.error("buffer_delete");
                    tracing::warn!(sink = %self.name, segment = id, error = %e,
                        "cannot delete an acknowledged disk buffer segment");
                }
            }
        }
    }

    /// Marks the frame of `token` acknowledged (or failed) and moves the ack position.
    fn acknowledge(self: &Arc<Self>, token: u64, ok: bool) {
        let mut released = Vec::new();
        let (advanced, deletable, done_ahead) = {
            let mut st = lock(&self.state);
            let Some(idx) = token.checked_sub(st.inflight_base) else {
                return;
            };
            let end = match st.inflight.get_mut(idx as usize) {
                Some(entry) if ok => {
                    entry.done = true;
                    (entry.seg, entry.end)
                }
                Some(entry) => {
                    if let Some(suppressed) =
                        crate::log_limit::allow(&self.name, "buffer_redeliver")
                    {
                        tracing::warn!(sink = %self.name, segment = entry.seg, suppressed,
                            "a batch from the disk buffer was not delivered; it is delivered again in 1 s (or after a restart)");
                    }
                    self.schedule_retry(token);
                    return;
                }
                None => return,
            };
            let mut advanced = false;
            while st.inflight.front().is_some_and(|e| e.done) {
                if let Some(mut e) = st.inflight.pop_front() {
                    released.push(e.permit.take());
                    st.inflight_base += 1;
                    st.ack = (e.seg, e.end);
                    st.unacked_bytes = st.unacked_bytes.saturating_sub(e.bytes);
                    st.unacked_records = st.unacked_records.saturating_sub(e.records);
                    advanced = true;
                }
            }
            self.update_gauges(&st);
            let deletable = if advanced {
                collect_deletable(&mut st)
            } else {
                Vec::new()
            };
            (advanced, deletable, (!advanced).then_some(end))
        };
        if let Some(end) = done_ahead {
            // Delivered behind a frame still pending: recorded so that a crash does not send
            // it again (see ack_log).
            if let Err(e) = lock(&self.ack_log).record_done(end, || self.done_ahead()) {
                self.component.error("buffer_ack_write");
                if let Some(suppressed) = crate::log_limit::allow(&self.name, "buffer_ack_write") {
                    tracing::warn!(sink = %self.name, error = %e, suppressed,
                        "cannot record a delivered frame in the disk buffer's ack log; it may be sent again after a restart");
                }
            }
        }
        if advanced {
            self.persist_ack();
            // Only now may the reader take more frames: the window of frames delivered but
            // not covered by the recorded position stays within `buffer_limit`.
            drop(released);
            self.delete(deletable);
            self.space.notify_waiters();
        }
    }

    /// Hands a failed frame to the sink again after a pause. Without a runtime (shutting down)
    /// the frame simply stays unacknowledged and is replayed on the next start.
    fn schedule_retry(self: &Arc<Self>, token: u64) {
        let Ok(handle) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let weak = Arc::downgrade(self);
        handle.spawn(async move {
            tokio::time::sleep(Duration::from_secs(1)).await;
            if let Some(s) = weak.upgrade() {
                lock(&s.state).retry.push_back(token);
                s.data.notify_one();
            }
        });
    }

    /// The in-flight frames (by their end) delivered ahead of the ack position.
    fn done_ahead(&self) -> Vec<ack_log::Position> {
        lock(&self.state)
            .inflight
            .iter()
            .filter(|e| e.done)
            .map(|e| (e.seg, e.end))
            .collect()
    }

    /// Appends the current ack position to the ack log.
    fn persist_ack(&self) {
        let mut log = lock(&self.ack_log);
        let pos = lock(&self.state).ack;
        if let Err(e) = log.record(pos, || self.done_ahead()) {
            self.component.error("buffer_ack_write");
            if let Some(suppressed) = crate::log_limit::allow(&self.name, "buffer_ack_write") {
                tracing::warn!(sink = %self.name, error = %e, suppressed,
                    "cannot record the disk buffer's ack position; acknowledged records may be sent again after a restart");
            }
        }
    }

    /// fsyncs the current segment and the ack log when something was appended since the last
    /// sync.
    fn sync_if_dirty(&self) {
        if let Err(e) = lock(&self.ack_log).sync() {
            self.component.error("buffer_fsync");
            if let Some(suppressed) = crate::log_limit::allow(&self.name, "buffer_fsync_ack_log") {
                tracing::warn!(sink = %self.name, error = %e, suppressed, "fsync of the disk buffer's ack log failed");
            }
        }
        let mut w = lock(&self.writer);
        if !w.dirty {
            return;
        }
        if let Some(file) = w.file.as_ref() {
            if let Err(e) = file.sync_data() {
                self.component.error("buffer_fsync");
                if let Some(suppressed) = crate::log_limit::allow(&self.name, "buffer_fsync") {
                    tracing::warn!(sink = %self.name, error = %e, suppressed, "fsync of the disk buffer failed");
                }
                return;
            }
        }
        w.dirty = false;
    }

    fn oldest_unacked_ms(&self) -> Option<u64> {
        let st = lock(&self.state);
        let inflight = st.inflight.front().map(|e| e.written_ms);
        match (inflight, st.pending_ms) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }
}

impl Drop for Shared {
    fn drop(&mut self) {
        self.sync_if_dirty();
    }
}

/// Segments every frame of which is acknowledged, removed from the state.
fn collect_deletable(st: &mut State) -> Vec<u64> {
    let (ack_seg, ack_off) = st.ack;
    let ids: Vec<u64> = st
        .segments
        .iter()
        .filter(|(&id, m)| id < ack_seg || (id == ack_seg && m.sealed && m.size <= ack_off))
        .map(|(&id, _)| id)
        .collect();
    for id in &ids {
        st.segments.remove(id);
    }
    ids
}

/// What a scan of one segment found.
struct Scan {
    end: u64,
    bytes: u64,
    records: u64,
    corrupt: Option<String>,
}

/// Reads the frames of a segment from `start`, verifying each; stops at the first bad one.
fn scan_segment(path: &Path, start: u64) -> io::Result<Scan> {
    let mut file = io::BufReader::with_capacity(256 * 1024, File::open(path)?);
    file.seek(SeekFrom::Start(start))?;
    let mut pos = start;
    let mut scan = Scan {
        end: start,
        bytes: 0,
        records: 0,
        corrupt: None,
    };
    let mut payload = Vec::new();
    loop {
        let mut h = [0u8; frame::HEADER];
        match read_full(&mut file, &mut h)? {
            0 => break,
            n if n < frame::HEADER => {
                scan.corrupt = Some(format!("a torn frame header ({n} bytes)"));
                break;
            }
            _ => {}
        }
        let header = match frame::Header::parse(&h) {
            Ok(h) => h,
            Err(e) => {
                scan.corrupt = Some(e);
                break;
            }
        };
        payload.resize(header.len, 0);
        let n = read_full(&mut file, &mut payload)?;
        if n < header.len {
            scan.corrupt = Some(format!(
                "a torn frame ({n} of {} payload bytes)",
                header.len
            ));
            break;
        }
        if !header.verify(&payload) {
            scan.corrupt = Some("a checksum mismatch".to_string());
            break;
        }
        let records = match frame::count(&payload) {
            Ok(n) => n as u64,
            Err(e) => {
                scan.corrupt = Some(format!("an undecodable frame: {e}"));
                break;
            }
        };
        let len = (frame::HEADER + header.len) as u64;
        pos += len;
        scan.end = pos;
        scan.bytes += len;
        scan.records += records;
    }
    Ok(scan)
}

/// Reads until `buf` is full or the end of input; returns the bytes read.
fn read_full(r: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// Keeps the queue open while any sender exists.
struct SenderGuard {
    shared: Arc<Shared>,
}

impl Drop for SenderGuard {
    fn drop(&mut self) {
        self.shared.closed.store(true, Ordering::Release);
        self.shared.data.notify_one();
    }
}

/// The sending half of a disk queue.
#[derive(Clone)]
pub struct DiskSender {
    guard: Arc<SenderGuard>,
}

/// The receiving half of a disk queue.
pub struct DiskReceiver {
    shared: Arc<Shared>,
    seg: u64,
    off: u64,
    file: Option<File>,
    permits: Arc<Semaphore>,
    limit: usize,
    gauge: Gauge,
    queued_records: Arc<AtomicUsize>,
    /// A frame read but not yet handed out (waiting for memory room).
    pending: Option<Frame>,
    /// Frames (by their end) that the ack log says were delivered before a restart, ahead of
    /// the recorded position: acknowledged when read back, not sent again.
    delivered_before: std::collections::BTreeSet<ack_log::Position>,
    /// The last read failed with an I/O error (e.g. too many open files): the receiver tries
    /// the same position again after [`READ_RETRY`] instead of skipping acknowledged frames.
    read_failed: bool,
}

/// Pause before reading again after an I/O error on a segment.
const READ_RETRY: Duration = Duration::from_millis(500);

/// Why a frame could not be read back.
enum ReadFailure {
    /// Opening, seeking or reading failed: the data may be fine, so try again later.
    Io(String),
    /// The bytes are there but wrong (a committed frame failing its checksum).
    Corrupt(String),
}

/// Opens (creating or recovering) the disk buffer in `settings.path`.
///
/// `memory_limit` bounds the bytes of batches handed to the sink and not yet completed;
/// `gauge` tracks them (the sink's `queue_bytes`).
pub fn open(
    name: &str,
    settings: &DiskSettings,
    memory_limit: usize,
    gauge: Gauge,
    metrics: BufferMetrics,
    component: ComponentMetrics,
    health: Arc<Health>,
) -> Result<(DiskSender, DiskReceiver, Arc<AtomicUsize>), DiskError> {
    let dir = settings.path.clone();
    let err = |what: &'static str| {
        let path = dir.display().to_string();
        move |source: io::Error| DiskError { path, what, source }
    };
    fs::create_dir_all(&dir).map_err(err("cannot create the directory"))?;
    // One process per buffer: a second logferry on the same directory would corrupt it.
    let lock_file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(dir.join("lock"))
        .map_err(err("cannot create its lock file"))?;
    if let Err(e) = lock_file.try_lock() {
        let source = match e {
            fs::TryLockError::WouldBlock => io::Error::new(
                io::ErrorKind::ResourceBusy,
                "another process (a second logferry?) holds its lock",
            ),
            fs::TryLockError::Error(e) => e,
        };
        return Err(err("cannot lock it")(source));
    }
    let probe = dir.join(".probe");
    fs::write(&probe, b"probe").map_err(err("cannot write a file in it"))?;
    let _ = fs::remove_file(&probe);

    let recovered = match ack_log::read_recovered(&dir) {
        Ok(r) => r,
        Err(e) => {
            component.error("buffer_corrupt");
            tracing::warn!(sink = %name, path = %dir.display(), error = %e,
                "the disk buffer's ack file is unreadable; replaying every segment (records may be sent twice)");
            ack_log::Recovered::default()
        }
    };
    let ack = recovered.pos;
    if !recovered.done.is_empty() {
        tracing::info!(sink = %name, frames = recovered.done.len(),
            "frames delivered ahead of the acknowledged position before the restart are not sent again");
    }
    let mut ids: Vec<u64> = fs::read_dir(&dir)
        .map_err(err("cannot list it"))?
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name();
            let name = name.to_str()?;
            name.strip_suffix(".seg")?.parse::<u64>().ok()
        })
        .collect();
    ids.sort_unstable();
    let (ack_seg, ack_off) = ack.unwrap_or((0, 0));
    let mut segments = BTreeMap::new();
    let (mut bytes, mut records) = (0u64, 0u64);
    let mut start = None;
    for id in ids {
        let path = seg_path(&dir, id);
        if id < ack_seg {
            let _ = fs::remove_file(&path);
            continue;
        }
        let mut from = if id == ack_seg { ack_off } else { 0 };
        let len = fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
        if from > len {
            component.error("buffer_corrupt");
            tracing::warn!(sink = %name, segment = %path.display(),
                "the ack position lies past the segment's end; replaying it from the start");
            from = 0;
        }
        let scan = scan_segment(&path, from).map_err(err("cannot read a segment"))?;
        if let Some(what) = &scan.corrupt {
            component.error("buffer_corrupt");
            tracing::warn!(sink = %name, segment = %path.display(), offset = scan.end,
                discarded_bytes = len.saturating_sub(scan.end),
                "the disk buffer segment ends in {what} (a crash during a write); the tail is skipped");
            OpenOptions::new()
                .write(true)
                .open(&path)
                .and_then(|f| f.set_len(scan.end))
                .map_err(err("cannot truncate a corrupt segment"))?;
        }
        bytes += scan.bytes;
        records += scan.records;
        if start.is_none() {
            start = Some((id, from));
        }
        segments.insert(
            id,
            SegMeta {
                size: scan.end,
                sealed: true,
            },
        );
    }
    if records > 0 {
        tracing::info!(sink = %name, records, bytes, path = %dir.display(),
            "replaying unacknowledged records from the disk buffer");
    }
    let ack_log = ack_log::AckLog::open(&dir, ack, settings.fsync == FsyncPolicy::Always)
        .map_err(err("cannot write its ack file"))?;
    let segment_size = (settings.max_size / 8).clamp(64 * 1024, 64 * 1024 * 1024);
    let queued_records = Arc::new(AtomicUsize::new(0));
    // The first segment id is set by `roll`; `start` is fixed up below when nothing is left.
    let shared = Arc::new(Shared {
        name: name.to_string(),
        dir: dir.clone(),
        settings: settings.clone(),
        segment_size,
        state: Mutex::new(State {
            segments,
            ack: (ack_seg, ack_off),
            unacked_bytes: bytes,
            unacked_records: records,
            inflight: VecDeque::new(),
            inflight_base: 0,
            pending_ms: None,
            retry: VecDeque::new(),
        }),
        writer: Mutex::new(Writer {
            file: None,
            seg: 0,
            off: 0,
            dirty: false,
        }),
        ack_log: Mutex::new(ack_log),
        data: Notify::new(),
        space: Notify::new(),
        closed: AtomicBool::new(false),
        _lock: lock_file,
        queued: queued_records.clone(),
        metrics,
        component,
        health,
    });
    {
        let mut w = lock(&shared.writer);
        shared
            .roll(&mut w)
            .map_err(err("cannot create a segment file"))?;
        shared.update_gauges(&lock(&shared.state));
        if start.is_none() {
            start = Some((w.seg, 0));
        }
    }
    let (seg, off) = start.unwrap_or((0, 0));
    spawn_ticker(Arc::downgrade(&shared));
    let limit = memory_limit.clamp(1, u32::MAX as usize);
    let receiver = DiskReceiver {
        shared: shared.clone(),
        seg,
        off,
        file: None,
        permits: Arc::new(Semaphore::new(limit)),
        limit,
        gauge,
        queued_records: queued_records.clone(),
        pending: None,
        read_failed: false,
        delivered_before: recovered.done,
    };
    let sender = DiskSender {
        guard: Arc::new(SenderGuard { shared }),
    };
    Ok((sender, receiver, queued_records))
}

/// Periodic fsync (interval policy) and the age / memory gauges.
fn spawn_ticker(shared: Weak<Shared>) {
    let Ok(handle) = tokio::runtime::Handle::try_current() else {
        return;
    };
    let period = match shared.upgrade().map(|s| s.settings.fsync) {
        Some(FsyncPolicy::Interval(d)) => d.min(Duration::from_secs(1)),
        _ => Duration::from_secs(1),
    };
    let period = period.max(Duration::from_millis(1));
    handle.spawn(async move {
        let mut tick = tokio::time::interval(period);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let Some(s) = shared.upgrade() else { return };
            let age = s
                .oldest_unacked_ms()
                .map(|t| now_ms().saturating_sub(t) as f64 / 1000.0)
                .unwrap_or(0.0);
            s.metrics.oldest_unacked_seconds.set(age);
            s.metrics
                .memory_records
                .set(s.queued.load(Ordering::Relaxed) as i64);
            let interval = matches!(s.settings.fsync, FsyncPolicy::Interval(_));
            // Never hold the buffer across an await: closing it must release it (and its lock).
            drop(s);
            if interval {
                let weak = shared.clone();
                let _ = tokio::task::spawn_blocking(move || {
                    if let Some(s) = weak.upgrade() {
                        s.sync_if_dirty();
                    }
                })
                .await;
            }
        }
    });
}

impl DiskSender {
    /// Appends the batch to the log and then acknowledges it upstream. Waits while the buffer
    /// is full (`when_full = "block"`) or while writes fail.
    pub async fn send(&self, batch: Batch) -> Result<(), Closed> {
        let shared = &self.guard.shared;
        let records = batch.len() as u64;
        let mut buf = Vec::with_capacity(batch.bytes + frame::HEADER + 64);
        if let Err(e) = frame::encode(&mut buf, &batch.tag, &batch.events, now_ms()) {
            shared.component.dropped("unencodable", records);
            tracing::warn!(sink = %shared.name, error = %e, "batch dropped: it cannot be written to the disk buffer");
            batch.fail();
            return Ok(());
        }
        let len = buf.len() as u64;
        loop {
            let notified = shared.space.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            {
                let st = lock(&shared.state);
                if st.unacked_bytes == 0 || st.unacked_bytes + len <= shared.settings.max_size {
                    break;
                }
            }
            match shared.settings.when_full {
                WhenFull::DropNewest => {
                    shared.component.dropped("buffer_full", records);
                    batch.complete();
                    return Ok(());
                }
                WhenFull::Block => notified.await,
            }
        }
        let mut buf = Arc::new(buf);
        let mut delay = Duration::from_millis(100);
        let mut failed = false;
        loop {
            let guard = self.guard.clone();
            let data = buf.clone();
            let result =
                tokio::task::spawn_blocking(move || guard.shared.append(&data, records)).await;
            let e = match result {
                Ok(Ok(())) => break,
                Ok(Err(e)) => e,
                Err(e) => io::Error::other(e.to_string()),
            };
            shared.component.error("buffer_write");
            shared.health.set_unhealthy(
                &shared.health_name(),
                format!(
                    "cannot write the disk buffer at {}: {e}; input is held back until it works",
                    shared.dir.display()
                ),
            );
            if !failed || delay >= Duration::from_secs(5) {
                tracing::error!(sink = %shared.name, path = %shared.dir.display(), error = %e,
                    "disk buffer write failed; holding input and retrying in {delay:?}");
            }
            failed = true;
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(Duration::from_secs(5));
            buf = Arc::new(Arc::try_unwrap(buf).unwrap_or_else(|b| (*b).clone()));
        }
        if failed {
            shared.health.set_healthy(&shared.health_name());
            tracing::info!(sink = %shared.name, "disk buffer writes work again");
        }
        batch.complete();
        Ok(())
    }
}

/// A frame read from the log.
struct Frame {
    seg: u64,
    end: u64,
    len: u64,
    written_ms: u64,
    payload: Vec<u8>,
    /// A redelivery of the in-flight frame with this token.
    retry_of: Option<u64>,
}

/// Where a frame lies, without its payload.
#[derive(Clone, Copy)]
struct FrameMeta {
    seg: u64,
    end: u64,
    len: u64,
    written_ms: u64,
}

impl Frame {
    fn meta(&self) -> FrameMeta {
        FrameMeta {
            seg: self.seg,
            end: self.end,
            len: self.len,
            written_ms: self.written_ms,
        }
    }
}

impl DiskReceiver {
    /// The next batch; `None` once every sender is gone and every frame was read.
    /// Cancel-safe: a frame read while waiting for memory room is kept for the next call.
    pub async fn recv(&mut self) -> Option<Batch> {
        let shared = self.shared.clone();
        loop {
            let notified = shared.data.notified();
            let closed = shared.closed.load(Ordering::Acquire);
            if self.pending.is_none() {
                self.pending = self.read_next();
            }
            let Some(frame) = self.pending.as_ref() else {
                if std::mem::take(&mut self.read_failed) {
                    tokio::time::sleep(READ_RETRY).await;
                    continue;
                }
                if closed {
                    return None;
                }
                notified.await;
                continue;
            };
            let need = self.need(frame);
            lock(&self.shared.state).pending_ms = Some(frame.written_ms);
            let permit = self.permits.clone().acquire_many_owned(need).await.ok()?;
            lock(&self.shared.state).pending_ms = None;
            if let Some(frame) = self.pending.take() {
                if let Some(batch) = self.make_batch(frame, permit) {
                    return Some(batch);
                }
            }
        }
    }

    /// The next batch if one can be read now without waiting.
    pub fn try_recv(&mut self) -> Option<Batch> {
        loop {
            if self.pending.is_none() {
                self.pending = self.read_next();
            }
            let frame = self.pending.as_ref()?;
            let need = self.need(frame);
            let permit = self.permits.clone().try_acquire_many_owned(need).ok()?;
            let frame = self.pending.take()?;
            if let Some(b) = self.make_batch(frame, permit) {
                return Some(b);
            }
        }
    }

    /// A frame's share of `buffer_limit`; a redelivered frame still holds its share.
    fn need(&self, frame: &Frame) -> u32 {
        if frame.retry_of.is_some() {
            0
        } else {
            frame.payload.len().clamp(1, self.limit) as u32
        }
    }

    /// Puts a frame read for the first time in flight; returns its token.
    fn track(
        &self,
        frame: FrameMeta,
        permit: tokio::sync::OwnedSemaphorePermit,
        records: u64,
    ) -> u64 {
        let mut st = lock(&self.shared.state);
        let token = st.inflight_base + st.inflight.len() as u64;
        st.inflight.push_back(Inflight {
            permit: Some(permit),
            seg: frame.seg,
            end: frame.end,
            bytes: frame.len,
            records,
            written_ms: frame.written_ms,
            done: false,
        });
        token
    }

    fn make_batch(
        &mut self,
        frame: Frame,
        permit: tokio::sync::OwnedSemaphorePermit,
    ) -> Option<Batch> {
        if frame.retry_of.is_none() && self.delivered_before.remove(&(frame.seg, frame.end)) {
            let records = frame::count(&frame.payload).unwrap_or(0) as u64;
            let token = self.track(frame.meta(), permit, records);
            self.shared.acknowledge(token, true);
            return None;
        }
        let bytes = frame.payload.len();
        let meta = frame.meta();
        let decoded = frame::decode(Bytes::from(frame.payload));
        let records = decoded.as_ref().map(|(_, e)| e.len() as u64).unwrap_or(0);
        let token = if let Some(token) = frame.retry_of {
            token
        } else {
            self.track(meta, permit, records)
        };
        let ack = DiskAck {
            shared: Some(self.shared.clone()),
            token,
        };
        match decoded {
            Ok((tag, events)) => {
                let reservation = Reservation::new(
                    None,
                    bytes,
                    events.len(),
                    self.gauge.clone(),
                    self.queued_records.clone(),
                );
                Some(Batch::from_disk(tag, events, bytes, reservation, ack))
            }
            Err(e) => {
                self.shared.component.error("buffer_corrupt");
                tracing::error!(sink = %self.shared.name, segment = frame.seg, error = %e,
                    "a disk buffer frame passed its checksum but cannot be decoded; skipped");
                ack.complete();
                None
            }
        }
    }

    /// Reads the next committed frame, moving across sealed segments. `None` when caught up.
    fn read_next(&mut self) -> Option<Frame> {
        if let Some(frame) = self.read_retry() {
            return Some(frame);
        }
        loop {
            let (size, sealed, next) = {
                let st = lock(&self.shared.state);
                let meta = st.segments.get(&self.seg).copied();
                let next = st.segments.range(self.seg + 1..).next().map(|(&id, _)| id);
                match meta {
                    Some(m) => (m.size, m.sealed, next),
                    None => (0, true, next),
                }
            };
            if self.off >= size {
                match (sealed, next) {
                    (true, Some(id)) => {
                        self.seg = id;
                        self.off = 0;
                        self.file = None;
                        continue;
                    }
                    _ => return None,
                }
            }
            match self.read_frame(size) {
                Ok(frame) => return Some(frame),
                Err(ReadFailure::Io(e)) => {
                    self.shared.component.error("buffer_read");
                    if let Some(suppressed) =
                        crate::log_limit::allow(&self.shared.name, "buffer_read")
                    {
                        tracing::error!(sink = %self.shared.name, segment = self.seg, offset = self.off,
                            error = %e, suppressed, "cannot read the disk buffer; trying again");
                    }
                    self.file = None;
                    self.read_failed = true;
                    return None;
                }
                Err(ReadFailure::Corrupt(e)) => {
                    self.shared.component.error("buffer_corrupt");
                    tracing::error!(sink = %self.shared.name, segment = self.seg, offset = self.off,
                        error = %e, "a committed disk buffer frame is corrupt; skipping the rest of the segment");
                    self.file = None;
                    match next.filter(|_| sealed) {
                        Some(id) => {
                            self.seg = id;
                            self.off = 0;
                        }
                        None => {
                            self.off = size;
                            return None;
                        }
                    }
                }
            }
        }
    }

    /// A failed in-flight frame due for redelivery, read again from its segment.
    fn read_retry(&mut self) -> Option<Frame> {
        loop {
            let (token, seg, start, end) = {
                let mut st = lock(&self.shared.state);
                let token = st.retry.pop_front()?;
                let Some(e) = token
                    .checked_sub(st.inflight_base)
                    .and_then(|i| st.inflight.get(i as usize))
                else {
                    continue;
                };
                (token, e.seg, e.end - e.bytes, e.end)
            };
            let read = File::open(seg_path(&self.shared.dir, seg))
                .map_err(io_failure)
                .and_then(|mut f| {
                    f.seek(SeekFrom::Start(start)).map_err(io_failure)?;
                    read_one(&mut f, start, end)
                });
            match read {
                Ok((header, payload)) => {
                    return Some(Frame {
                        seg,
                        end,
                        len: end - start,
                        written_ms: header.written_ms,
                        payload,
                        retry_of: Some(token),
                    })
                }
                Err(ReadFailure::Io(e)) => {
                    // Put it back: the frame is redelivered once the segment can be read again.
                    lock(&self.shared.state).retry.push_front(token);
                    self.shared.component.error("buffer_read");
                    if let Some(suppressed) =
                        crate::log_limit::allow(&self.shared.name, "buffer_read")
                    {
                        tracing::error!(sink = %self.shared.name, segment = seg, error = %e, suppressed,
                            "cannot read a batch again for redelivery; trying again");
                    }
                    self.read_failed = true;
                    return None;
                }
                Err(ReadFailure::Corrupt(e)) => {
                    self.shared.component.error("buffer_corrupt");
                    tracing::error!(sink = %self.shared.name, segment = seg, error = %e,
                        "cannot read a batch again for redelivery; it is replayed on the next start");
                }
            }
        }
    }

    fn read_frame(&mut self, size: u64) -> Result<Frame, ReadFailure> {
        if self.file.is_none() {
            let mut f = File::open(seg_path(&self.shared.dir, self.seg)).map_err(io_failure)?;
            f.seek(SeekFrom::Start(self.off)).map_err(io_failure)?;
            self.file = Some(f);
        }
        let Some(file) = self.file.as_mut() else {
            return Err(ReadFailure::Io("no open segment".to_string()));
        };
        let (header, payload) = read_one(file, self.off, size)?;
        let len = (frame::HEADER + header.len) as u64;
        let frame = Frame {
            seg: self.seg,
            end: self.off + len,
            len,
            written_ms: header.written_ms,
            payload,
            retry_of: None,
        };
        self.off += len;
        Ok(frame)
    }
}

/// Reads and verifies the frame at `off` (where `file` is positioned); it must end by `size`.
fn read_one(file: &mut File, off: u64, size: u64) -> Result<(frame::Header, Vec<u8>), ReadFailure> {
    let mut h = [0u8; frame::HEADER];
    file.read_exact(&mut h).map_err(io_failure)?;
    let header = frame::Header::parse(&h).map_err(ReadFailure::Corrupt)?;
    let len = (frame::HEADER + header.len) as u64;
    if off + len > size {
        return Err(ReadFailure::Corrupt(
            "a frame runs past the committed end".to_string(),
        ));
    }
    let mut payload = vec![0u8; header.len];
    file.read_exact(&mut payload).map_err(io_failure)?;
    if !header.verify(&payload) {
        return Err(ReadFailure::Corrupt("checksum mismatch".to_string()));
    }
    Ok((header, payload))
}

/// An I/O error, except that a committed frame ending early means the file was cut short.
fn io_failure(e: io::Error) -> ReadFailure {
    if e.kind() == io::ErrorKind::UnexpectedEof {
        ReadFailure::Corrupt(format!("the segment ends inside a committed frame ({e})"))
    } else {
        ReadFailure::Io(e.to_string())
    }
}

/// Acknowledges one frame of the disk buffer when its batch completes.
pub struct DiskAck {
    shared: Option<Arc<Shared>>,
    token: u64,
}

impl DiskAck {
    pub fn complete(mut self) {
        if let Some(s) = self.shared.take() {
            s.acknowledge(self.token, true);
        }
    }

    pub fn fail(mut self) {
        if let Some(s) = self.shared.take() {
            s.acknowledge(self.token, false);
        }
    }
}

impl Drop for DiskAck {
    fn drop(&mut self) {
        if let Some(s) = self.shared.take() {
            s.acknowledge(self.token, false);
        }
    }
}

#[cfg(test)]
mod tests;
