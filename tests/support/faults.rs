//! Shared by the fault tests (destination outages, throttling, kill -9):
//!
//! - [`loadgen_ack`]: `logferry loadgen --ack`, the forward client that counts acknowledgements
//!   (the test kit's, re-exported here with [`memory_kib`]).
//! - [`Figures`]: the line every fault test prints: records sent, acknowledged by logferry,
//!   delivered, lost (acknowledged but never delivered), duplicates.
//! - [`Sampler`]: polls logferry's resident memory (/proc) and its disk buffer's bytes on disk
//!   while a fault lasts, keeping the peaks.
//! - [`crash_duplicate_bound`]: the most records a crash can make the disk buffer deliver
//!   twice, computed from the buffer directory itself (the bound docs/configuration.md states).
//! - [`CutProxy`]: a loopback TCP proxy whose link can be cut (connections reset, new ones
//!   refused) and restored: a broker that is unreachable for a while.
#![allow(dead_code)]

use std::io;
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::Duration;

use logferry_test_kit::net::accept_unless_down;

// --- figures --------------------------------------------------------------------------------------

/// What a fault test reports.
#[derive(Debug, Clone)]
pub struct Figures {
    pub sent: u64,
    pub acked: u64,
    /// Distinct records delivered.
    pub delivered: u64,
    /// Acknowledged records never delivered.
    pub lost: u64,
    /// Extra copies delivered (a record delivered 3 times counts 2).
    pub duplicates: u64,
}

impl Figures {
    /// From how often each `seq` (0..counts.len()) was delivered; the records with
    /// `seq < acked` are the acknowledged ones.
    pub fn from_counts(sent: u64, acked: u64, counts: &[u32]) -> Figures {
        let acked_part = &counts[..(acked as usize).min(counts.len())];
        Figures {
            sent,
            acked,
            delivered: counts.iter().filter(|&&c| c > 0).count() as u64,
            lost: acked_part.iter().filter(|&&c| c == 0).count() as u64,
            duplicates: counts.iter().map(|&c| u64::from(c.saturating_sub(1))).sum(),
        }
    }

    /// Prints `name: sent .., acknowledged .., delivered .., lost .., duplicates ..; extra`.
    pub fn print(&self, name: &str, extra: &str) {
        super::figures::report(format!(
            "{name}: sent {}, acknowledged {}, delivered {}, lost {}, duplicates {}{}{extra}",
            self.sent,
            self.acked,
            self.delivered,
            self.lost,
            self.duplicates,
            if extra.is_empty() { "" } else { "; " },
        ));
    }
}

/// `seq` counts from an iterator of seqs, for `n` records.
pub fn counts(seqs: impl IntoIterator<Item = u64>, n: u64) -> Vec<u32> {
    let mut counts = vec![0u32; n as usize];
    for s in seqs {
        assert!(s < n, "unexpected seq {s}");
        counts[s as usize] += 1;
    }
    counts
}

// --- the forward client and memory: the kit's ---------------------------------------------------

pub use logferry_test_kit::forward_ack::{acked_messages, assert_ok, loadgen_ack};
pub use logferry_test_kit::logferry::memory_kib;

// --- disk sampling -------------------------------------------------------------------------------

/// Bytes of segment files in a disk buffer directory.
pub fn segment_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|d| {
            d.filter_map(|e| e.ok())
                .filter(|e| e.path().extension().is_some_and(|x| x == "seg"))
                .filter_map(|e| e.metadata().ok())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0)
}

/// Polls a process's RSS and a buffer directory's size every 50 ms until stopped.
pub struct Sampler {
    stop: Arc<AtomicBool>,
    peak_rss_kib: Arc<AtomicU64>,
    peak_disk: Arc<AtomicU64>,
    handle: Option<JoinHandle<()>>,
}

/// Peaks seen by a [`Sampler`].
#[derive(Debug, Clone, Copy)]
pub struct Peaks {
    pub rss_kib: u64,
    pub disk_bytes: u64,
}

impl Sampler {
    pub fn start(pid: u32, buffer_dir: PathBuf) -> Sampler {
        let stop = Arc::new(AtomicBool::new(false));
        let peak_rss_kib = Arc::new(AtomicU64::new(0));
        let peak_disk = Arc::new(AtomicU64::new(0));
        let (s, r, d) = (stop.clone(), peak_rss_kib.clone(), peak_disk.clone());
        let handle = thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                r.fetch_max(memory_kib(pid).0, Ordering::Relaxed);
                d.fetch_max(segment_bytes(&buffer_dir), Ordering::Relaxed);
                thread::sleep(Duration::from_millis(50));
            }
        });
        Sampler {
            stop,
            peak_rss_kib,
            peak_disk,
            handle: Some(handle),
        }
    }

    /// The peaks so far (sampling goes on).
    pub fn peaks(&self) -> Peaks {
        Peaks {
            rss_kib: self.peak_rss_kib.load(Ordering::Relaxed),
            disk_bytes: self.peak_disk.load(Ordering::Relaxed),
        }
    }

    /// Stops sampling; returns the peaks.
    pub fn finish(mut self) -> Peaks {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
        self.peaks()
    }
}

impl Drop for Sampler {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

// --- the crash duplicate bound -----------------------------------------------------------------

/// Set in the segment field of an ack-log record that names one frame delivered ahead of the
/// position (a "done frame", see src/buffer/disk/ack_log.rs), not the position itself.
const DONE_FLAG: u64 = 1 << 63;

/// The whole 20-byte records of `<dir>/ack` whose checksum holds (segment u64 LE, offset u64
/// LE, CRC32 of both u32 LE).
fn ack_records(dir: &Path) -> Vec<(u64, u64)> {
    let Ok(bytes) = std::fs::read(dir.join("ack")) else {
        return Vec::new();
    };
    bytes
        .chunks_exact(20)
        .filter(|r| crc32fast::hash(&r[..16]) == u32::from_le_bytes([r[16], r[17], r[18], r[19]]))
        .map(|r| {
            (
                u64::from_le_bytes(r[0..8].try_into().unwrap()),
                u64::from_le_bytes(r[8..16].try_into().unwrap()),
            )
        })
        .collect()
}

/// The acknowledged position recorded in `<dir>/ack`: the greatest (segment, offset) among
/// its position records (done-frame records left out).
pub fn recorded_ack_position(dir: &Path) -> Option<(u64, u64)> {
    ack_records(dir)
        .into_iter()
        .filter(|(seg, _)| seg & DONE_FLAG == 0)
        .max()
}

/// The frames `<dir>/ack` records as delivered ahead of the position, by (segment, end).
fn recorded_done_frames(dir: &Path) -> std::collections::BTreeSet<(u64, u64)> {
    ack_records(dir)
        .into_iter()
        .filter(|(seg, _)| seg & DONE_FLAG != 0)
        .map(|(seg, end)| (seg & !DONE_FLAG, end))
        .collect()
}

/// The record count of a frame payload: msgpack tag string, then the count as an unsigned int.
fn frame_records(payload: &[u8]) -> u64 {
    let (skip, at) = match payload[0] {
        b @ 0xa0..=0xbf => ((b & 0x1f) as usize, 1),
        0xd9 => (payload[1] as usize, 2),
        0xda => (u16::from_be_bytes([payload[1], payload[2]]) as usize, 3),
        0xdb => (
            u32::from_be_bytes(payload[1..5].try_into().unwrap()) as usize,
            5,
        ),
        other => panic!("a frame payload starting with {other:#x}, not a tag string"),
    };
    let p = &payload[at + skip..];
    match p[0] {
        b @ 0x00..=0x7f => u64::from(b),
        0xcc => u64::from(p[1]),
        0xcd => u64::from(u16::from_be_bytes([p[1], p[2]])),
        0xce => u64::from(u32::from_be_bytes(p[1..5].try_into().unwrap())),
        0xcf => u64::from_be_bytes(p[1..9].try_into().unwrap()),
        other => panic!("a frame record count starting with {other:#x}"),
    }
}

/// The most records a crash (kill -9) at this moment can make the disk buffer in `dir` deliver
/// again after a restart, per the rule in docs/configuration.md: only frames after the recorded
/// ack position can have been delivered unrecorded, and the frames read back past it hold
/// shares of `buffer_limit` (min(payload, buffer_limit) bytes each) until the position passes
/// them. So: the records of the frames after the recorded position, in log order, while their
/// shares add up to at most `buffer_limit`, less those of the frames the log records as done
/// (they hold their share until the position passes them, but are not sent again). Call it with logferry stopped (after the kill).
pub fn crash_duplicate_bound(dir: &Path, buffer_limit: u64) -> (u64, u64) {
    let (ack_seg, ack_off) = recorded_ack_position(dir).unwrap_or((0, 0));
    let done = recorded_done_frames(dir);
    let mut ids: Vec<u64> = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            e.file_name()
                .to_str()?
                .strip_suffix(".seg")?
                .parse::<u64>()
                .ok()
        })
        .filter(|&id| id >= ack_seg)
        .collect();
    ids.sort_unstable();
    let (mut shares, mut records, mut frames) = (0u64, 0u64, 0u64);
    for id in ids {
        let bytes = std::fs::read(dir.join(format!("{id:020}.seg"))).unwrap();
        let mut at = if id == ack_seg { ack_off as usize } else { 0 };
        while at + 16 <= bytes.len() {
            let len = u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap()) as usize;
            if at + 16 + len > bytes.len() {
                break; // a torn tail: never acknowledged upstream, never delivered
            }
            let share = (len as u64).clamp(1, buffer_limit);
            if shares + share > buffer_limit {
                return (records, frames);
            }
            shares += share;
            let end = (at + 16 + len) as u64;
            if !done.contains(&(id, end)) {
                records += frame_records(&bytes[at + 16..at + 16 + len]);
                frames += 1;
            }
            at = end as usize;
        }
    }
    (records, frames)
}

// --- a proxy whose link can be cut --------------------------------------------------------------

struct ProxyState {
    upstream: Option<SocketAddr>,
    down: bool,
    /// Both ends of every relayed connection, to reset them on a cut.
    streams: Vec<TcpStream>,
}

/// A TCP proxy on 127.0.0.1. While cut, live connections are reset and the port refuses new
/// ones (its listener is closed, then bound again on the same port when restored).
pub struct CutProxy {
    addr: SocketAddr,
    state: Arc<Mutex<ProxyState>>,
    stop: Arc<AtomicBool>,
}

impl CutProxy {
    /// Binds a free port now; relays to the upstream set with [`CutProxy::set_upstream`].
    pub fn start() -> CutProxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind proxy");
        listener
            .set_nonblocking(true)
            .expect("a non-blocking proxy listener");
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(Mutex::new(ProxyState {
            upstream: None,
            down: false,
            streams: Vec::new(),
        }));
        let stop = Arc::new(AtomicBool::new(false));
        let (st, sp) = (state.clone(), stop.clone());
        thread::spawn(move || accept_loop(Some(listener), addr, st, sp));
        CutProxy { addr, state, stop }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn set_upstream(&self, upstream: SocketAddr) {
        self.state.lock().unwrap().upstream = Some(upstream);
    }

    /// Cuts the link: every relayed connection is shut down, new ones are refused.
    pub fn cut(&self) {
        let mut st = self.state.lock().unwrap();
        st.down = true;
        for s in st.streams.drain(..) {
            let _ = s.shutdown(Shutdown::Both);
        }
    }

    /// Restores the link.
    pub fn restore(&self) {
        self.state.lock().unwrap().down = false;
    }
}

impl Drop for CutProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        self.cut();
    }
}

fn accept_loop(
    mut listener: Option<TcpListener>,
    addr: SocketAddr,
    state: Arc<Mutex<ProxyState>>,
    stop: Arc<AtomicBool>,
) {
    while !stop.load(Ordering::Relaxed) {
        let down = state.lock().unwrap().down;
        let Some(client) = accept_unless_down(addr, &mut listener, down) else {
            continue;
        };
        if let Err(e) = relay(client, &state) {
            eprintln!("proxy: cannot relay a connection: {e}");
        }
    }
}

fn relay(client: TcpStream, state: &Arc<Mutex<ProxyState>>) -> io::Result<()> {
    client.set_nonblocking(false)?;
    let upstream = state
        .lock()
        .unwrap()
        .upstream
        .ok_or_else(|| io::Error::other("no upstream yet"))?;
    let server = TcpStream::connect_timeout(&upstream, Duration::from_secs(2))?;
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    {
        let mut st = state.lock().unwrap();
        if st.down {
            return Ok(()); // dropped: the link was cut meanwhile
        }
        st.streams.push(client.try_clone()?);
        st.streams.push(server.try_clone()?);
    }
    for (mut from, mut to) in [(client.try_clone()?, server.try_clone()?), (server, client)] {
        thread::spawn(move || {
            let _ = io::copy(&mut from, &mut to);
            let _ = from.shutdown(Shutdown::Both);
            let _ = to.shutdown(Shutdown::Both);
        });
    }
    Ok(())
}
