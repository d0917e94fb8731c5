//! Loopback networking for tests: free ports, waiting for a listener, one HTTP request.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::Child;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};

/// A TCP port free on 127.0.0.1 a moment ago, taken from below the kernel's ephemeral range.
///
/// Why not port 0: a port the kernel hands out for `bind(0)` comes from the ephemeral range, the
/// same range it draws the local ports of outgoing connections from. Between this call and the
/// test's server binding it, any connection made by a parallel test (a loadgen, an SDK client, a
/// stand-in) can take it, and the server fails with "Address already in use" (CI saw exactly
/// that). Ports below the range are never used for outgoing connections, so only another
/// listener can take them; each test process walks its own slice of them (offset by its pid)
/// and a port is handed out only once per process.
pub fn free_port() -> u16 {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let (low, high) = listener_port_window();
    let span = usize::from(high.saturating_sub(low)).max(1);
    let offset = (std::process::id() as usize).wrapping_mul(7919) % span;
    for _ in 0..span {
        let step = NEXT.fetch_add(1, Ordering::Relaxed);
        let port = low + ((offset + step) % span) as u16;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|addr| addr.port())
        .expect("no free TCP port on 127.0.0.1")
}

/// Ports `[low, high)` outside the kernel's ephemeral range (`ip_local_port_range`): the 12,000
/// below it, or above it when it starts too low to leave room.
fn listener_port_window() -> (u16, u16) {
    let range =
        std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range").unwrap_or_default();
    let mut bounds = range
        .split_whitespace()
        .filter_map(|n| n.parse::<u16>().ok());
    let (first, last) = match (bounds.next(), bounds.next()) {
        (Some(first), Some(last)) => (first, last),
        _ => (32768, 60999),
    };
    if first >= 10_000 {
        (first.saturating_sub(12_000).max(8_000), first)
    } else {
        (last.saturating_add(1).min(64_000), u16::MAX)
    }
}

/// Waits until `child`, just started, accepts TCP connections on `addr`. Fails at once when it
/// exits first (a bad config, a port taken) rather than after `timeout`; the error says which.
pub fn wait_listening(
    child: &mut Child,
    addr: SocketAddr,
    timeout: Duration,
) -> Result<(), String> {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if let Ok(Some(status)) = child.try_wait() {
            return Err(format!("exited with {status} before listening"));
        }
        if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            return Ok(());
        }
        thread::sleep(Duration::from_millis(50));
    }
    Err(format!("did not listen on {addr} within {timeout:?}"))
}

/// Connects to `addr`, retrying for up to `timeout` while it refuses: logferry's HTTP port (what
/// a launch waits for) comes up before its sources listen, so a test that connects to the
/// forward source right after start can be refused on a loaded machine. Unlike
/// [`wait_port`], no probe connection is made first.
pub fn connect_when_listening(addr: SocketAddr, timeout: Duration) -> TcpStream {
    let deadline = Instant::now() + timeout;
    loop {
        match TcpStream::connect(addr) {
            Ok(stream) => return stream,
            Err(e) if Instant::now() >= deadline => panic!("connect to {addr}: {e}"),
            Err(_) => thread::sleep(Duration::from_millis(20)),
        }
    }
}

/// Waits until `addr` accepts TCP connections; false after `timeout`.
pub fn wait_port(addr: SocketAddr, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            return true;
        }
        thread::sleep(Duration::from_millis(50));
    }
    false
}

/// True when something accepts connections at `addr`.
pub fn listening(addr: SocketAddr) -> bool {
    TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok()
}

/// `127.0.0.1:PORT` on a [`free_port`].
pub fn free_addr() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], free_port()))
}

/// One HTTP/1.1 request with `Connection: close`; returns (status, body). Enough for the
/// emulators' control endpoints, so tests need no HTTP client crate.
pub fn http_request(addr: SocketAddr, method: &str, path: &str, body: &[u8]) -> (u16, Vec<u8>) {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))
        .unwrap_or_else(|err| panic!("cannot connect to {addr}: {err}"));
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .expect("set_read_timeout");
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream
        .write_all(head.as_bytes())
        .and_then(|()| stream.write_all(body))
        .expect("send request");
    let mut response = Vec::new();
    stream.read_to_end(&mut response).expect("read response");
    let status_line_end = response
        .iter()
        .position(|&b| b == b'\n')
        .unwrap_or(response.len());
    let status_line = String::from_utf8_lossy(&response[..status_line_end]);
    let status = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("bad HTTP status line from {addr}: {status_line:?}"));
    let body_start = response
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map_or(response.len(), |i| i + 4);
    (status, response[body_start..].to_vec())
}

/// One turn of the accept loop of a stand-in whose port an outage can take away. While `down`,
/// the listener is closed, so connections are refused as by a host that is gone; once up again,
/// the same port is bound again (std sets SO_REUSEADDR). Returns the connection accepted, or
/// `None` after a short pause when there was none. `listener` must be non-blocking.
pub fn accept_unless_down(
    addr: SocketAddr,
    listener: &mut Option<TcpListener>,
    down: bool,
) -> Option<TcpStream> {
    if down {
        *listener = None;
        thread::sleep(Duration::from_millis(10));
        return None;
    }
    let bound = match listener {
        Some(bound) => bound,
        None => match TcpListener::bind(addr) {
            Ok(bound) if bound.set_nonblocking(true).is_ok() => listener.insert(bound),
            _ => {
                thread::sleep(Duration::from_millis(10));
                return None;
            }
        },
    };
    match bound.accept() {
        Ok((stream, _)) => Some(stream),
        Err(_) => {
            thread::sleep(Duration::from_millis(5));
            None
        }
    }
}
