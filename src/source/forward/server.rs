//! Forward protocol listeners and connections.
//!
//! Each connection is one task: it reads into a buffer, cuts complete messages off its front
//! (zero-copy: records keep slices of the received bytes), and hands them to the router. While
//! the router waits (a sink queue is full) the task does not read, so the kernel's socket
//! buffers fill and the client slows down: backpressure without unbounded memory.
//!
//! Docker's driver sends one message per log line; consecutive messages with the same tag and
//! no `chunk` are handed over as one batch, so per-batch costs are paid per read, not per line.
//! A message with `chunk` is routed alone and answered with `{"ack": chunk}` by a writer task
//! once every sink delivered it, in the order messages arrived.
//!
//! On shutdown the listeners stop accepting, but open connections are read until the client
//! closes them or stays quiet for a second: when ECS stops a task, the app containers stop
//! first and Docker's driver flushes its queue to the log router, which must still take it.
//!
//! A TCP connection first passes the TLS handshake (with `tls`) and the forward handshake (with
//! a shared key), both within `handshake_timeout`; one that fails is logged with its peer and
//! the reason, counted, and closed before any message of it is decoded. The same connection
//! code then serves a `TcpStream`, a `TlsStream` or a `UnixStream`.
//!
//! Limits, so that clients cannot hold unbounded memory: at most `max_connections` connections
//! (TCP and unix together) are served; one beyond it is accepted and closed at once. A connection
//! that stops in the middle of a message for `message_timeout`, or (when set) sends nothing for
//! `idle_timeout` while no ack is pending, is closed; complete messages before it are delivered
//! and acknowledged first. TCP connections get keepalive probes, so peers that vanished are
//! found even with `idle_timeout` off.

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use bytes::{BufMut, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UnixListener};
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;
use tokio_rustls::TlsAcceptor;
use tokio_util::task::TaskTracker;

use super::handshake::{self, HandshakeError, MetricKind, Outcome, Security};
use super::protocol::{
    encode_ack, Decoder, FrameFinder, FrameStatus, Limits, Message, ProtocolError,
};
use super::{tls, ForwardConfig};
use crate::buffer::{AckRef, AckWaiter};
use crate::event::{Event, Tag};
use crate::metrics::ConnectionMetrics;
use crate::source::{SourceContext, SourceError};

/// Records gathered from consecutive messages before they are routed as one batch.
const MAX_COALESCED: usize = 4096;

/// A read stops at the end of the message being received when at least this much of it is
/// missing; below, the message's size is not known yet (or the rest is small) and a whole
/// `buffer_chunk_size` is read.
const EXACT_READ_MIN: usize = 4096;

/// While shutting down, a connection that sends nothing for this long is closed.
const DRAIN_IDLE: std::time::Duration = std::time::Duration::from_secs(1);

/// TCP keepalive of accepted connections: the first probe after this much silence, then one
/// every [`KEEPALIVE_INTERVAL`]; the kernel closes the connection after its probe count (9 on
/// Linux) goes unanswered, so a peer that vanished (host gone, NAT entry dropped) frees its slot
/// in about 10 minutes. A live but quiet client answers the probes and is not disturbed.
const KEEPALIVE_TIME: std::time::Duration = std::time::Duration::from_secs(300);
const KEEPALIVE_INTERVAL: std::time::Duration = std::time::Duration::from_secs(30);

/// Binds the configured listeners and returns the task serving them until shutdown.
pub async fn start(
    config: ForwardConfig,
    cx: SourceContext,
) -> Result<tokio::task::JoinHandle<()>, SourceError> {
    // Certificates first: a bad path stops start-up before anything listens.
    let tls = match &config.tls {
        Some(t) => Some(tls::acceptor(t).map_err(|e| SourceError::Setup {
            name: cx.name.clone(),
            message: e.to_string(),
        })?),
        None => None,
    };
    let tcp = match config.tcp_listen() {
        Some(addr) => Some(
            TcpListener::bind(&addr)
                .await
                .map_err(|source| SourceError::Bind {
                    name: cx.name.clone(),
                    address: addr.clone(),
                    source,
                })?,
        ),
        None => None,
    };
    let unix = match &config.unix_path {
        Some(path) => Some(bind_unix(path, config.unix_mode(), &cx.name)?),
        None => None,
    };
    let security = config.security();
    if let Some(l) = &tcp {
        if let Ok(addr) = l.local_addr() {
            tracing::info!(source = %cx.name, %addr, tls = tls.is_some(),
                client_certificates = config.tls.as_ref().is_some_and(|t| t.ca_file.is_some()),
                shared_key = security.is_some(),
                users = security.as_ref().map_or(0, |s| s.users.len()),
                "forward input listening on TCP");
            if tls.is_none() && security.is_none() && !addr.ip().is_loopback() {
                tracing::warn!(source = %cx.name, %addr,
                    "the forward input accepts anyone who can reach this address, in plain text; \
                     on a network you do not trust, set tls and shared_key");
            }
        }
    }
    if let Some(path) = &config.unix_path {
        tracing::info!(source = %cx.name, path = %path.display(), "forward input listening on a unix socket");
    }
    let limits = Limits {
        max_frame_bytes: config.buffer_max_size.as_usize(),
        max_decompressed_bytes: config.buffer_max_size.as_usize().saturating_mul(4),
    };
    let chunk = config.buffer_chunk_size.as_usize().clamp(4096, 16 << 20);
    let unix_path = config.unix_path.clone();
    let connections = cx.metrics.connections();
    tracing::debug!(source = %cx.name, max_connections = config.max_connections,
        idle_timeout = ?config.idle_timeout(), message_timeout = ?config.message_timeout(),
        "forward input connection limits");
    Ok(tokio::spawn(async move {
        let tracker = TaskTracker::new();
        let metadata_key = config.metadata_key.clone().map(bytes::Bytes::from);
        let server = Server {
            cx,
            limits,
            chunk,
            metadata_key,
            tls,
            security,
            handshake_timeout: config.handshake_timeout.get(),
            slots: Arc::new(Semaphore::new(config.max_connections)),
            max_connections: config.max_connections,
            idle_timeout: config.idle_timeout(),
            message_timeout: config.message_timeout(),
            connections,
        };
        let server = Arc::new(server);
        tokio::join!(
            accept_tcp(tcp, server.clone(), &tracker),
            accept_unix(unix, server.clone(), &tracker),
        );
        tracker.close();
        tracker.wait().await;
        if let Some(path) = unix_path {
            let _ = std::fs::remove_file(path);
        }
    }))
}

/// Binds a unix socket, replacing a stale socket file but never another kind of file.
fn bind_unix(path: &Path, mode: Option<u32>, name: &str) -> Result<UnixListener, SourceError> {
    use std::os::unix::fs::{FileTypeExt, PermissionsExt};
    let bind_error = |source| SourceError::Bind {
        name: name.to_string(),
        address: format!("unix:{}", path.display()),
        source,
    };
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        if meta.file_type().is_socket() {
            std::fs::remove_file(path).map_err(bind_error)?;
        } else {
            return Err(SourceError::Setup {
                name: name.to_string(),
                message: format!(
                    "{} exists and is not a socket; refusing to replace it",
                    path.display()
                ),
            });
        }
    }
    let listener = UnixListener::bind(path).map_err(bind_error)?;
    if let Some(mode) = mode {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).map_err(
            |source| SourceError::Bind {
                name: name.to_string(),
                address: format!("unix:{} (chmod {mode:o})", path.display()),
                source,
            },
        )?;
    }
    Ok(listener)
}

struct Server {
    cx: SourceContext,
    limits: Limits,
    chunk: usize,
    /// Record key for Fluent Bit's event metadata (`None`: dropped).
    metadata_key: Option<bytes::Bytes>,
    /// TLS of the TCP listener.
    tls: Option<TlsAcceptor>,
    /// The shared_key handshake of TCP connections.
    security: Option<Security>,
    handshake_timeout: std::time::Duration,
    /// One permit per connection served (`max_connections`).
    slots: Arc<Semaphore>,
    max_connections: usize,
    idle_timeout: Option<std::time::Duration>,
    message_timeout: Option<std::time::Duration>,
    connections: ConnectionMetrics,
}

/// A connection's place under `max_connections`; counted in `connections_open` while held.
struct Slot {
    _permit: OwnedSemaphorePermit,
    open: prometheus_client::metrics::gauge::Gauge,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.open.dec();
    }
}

async fn accept_tcp(listener: Option<TcpListener>, server: Arc<Server>, tracker: &TaskTracker) {
    let Some(listener) = listener else { return };
    accept_loop(&server, tracker, || async {
        let (stream, peer) = listener.accept().await?;
        let peer = peer.to_string();
        // Dropping the stream closes a connection beyond the limit.
        let Some(slot) = server.admit(&peer) else {
            return Ok(None);
        };
        let _ = stream.set_nodelay(true);
        let keepalive = socket2::TcpKeepalive::new()
            .with_time(KEEPALIVE_TIME)
            .with_interval(KEEPALIVE_INTERVAL);
        if let Err(e) = socket2::SockRef::from(&stream).set_tcp_keepalive(&keepalive) {
            tracing::debug!(source = %server.cx.name, %peer, error = %e, "cannot set TCP keepalive");
        }
        let server = server.clone();
        Ok(Some(async move {
            let _slot = slot;
            server.tcp_connection(stream, peer).await
        }))
    })
    .await
}

async fn accept_unix(listener: Option<UnixListener>, server: Arc<Server>, tracker: &TaskTracker) {
    let Some(listener) = listener else { return };
    accept_loop(&server, tracker, || async {
        let (stream, _) = listener.accept().await?;
        let Some(slot) = server.admit("unix") else {
            return Ok(None);
        };
        let server = server.clone();
        Ok(Some(async move {
            let _slot = slot;
            server
                .connection(stream, "unix".to_string(), BytesMut::new())
                .await
        }))
    })
    .await
}

/// Accepts connections until shutdown; `accept` returns the task serving each, run on its own
/// (`None`: the connection was refused and is already closed).
async fn accept_loop<F, Fut, C>(server: &Arc<Server>, tracker: &TaskTracker, mut accept: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = std::io::Result<Option<C>>>,
    C: std::future::Future<Output = ()> + Send + 'static,
{
    loop {
        let accepted = tokio::select! {
            a = accept() => a,
            _ = server.cx.shutdown.cancelled() => return,
        };
        match accepted {
            Ok(Some(serve)) => {
                tracker.spawn(serve);
            }
            Ok(None) => {}
            Err(e) => accept_failed(server, e).await,
        }
    }
}

/// Why a TCP connection was closed before its first message.
#[derive(Debug, thiserror::Error)]
enum Refused {
    #[error("TLS handshake failed: {0}; is the client sending plain text to this TLS port, or does it not trust our certificate (or, with tls.ca_file, present none)?")]
    Tls(std::io::Error),
    #[error("no complete handshake within handshake_timeout ({0:?})")]
    Timeout(std::time::Duration),
    #[error(transparent)]
    Handshake(#[from] HandshakeError),
}

impl Refused {
    fn metric(&self) -> (MetricKind, &'static str) {
        match self {
            // Closed before the TLS handshake finished: a port probe, most likely.
            Refused::Tls(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                (MetricKind::Error, "handshake_closed")
            }
            Refused::Tls(_) => (MetricKind::Error, "tls_handshake"),
            Refused::Timeout(_) => (MetricKind::Error, "handshake_timeout"),
            Refused::Handshake(e) => e.metric(),
        }
    }
}

/// Out of file descriptors and the like: wait a little instead of spinning.
async fn accept_failed(server: &Server, e: std::io::Error) {
    server.cx.metrics.error("accept");
    tracing::warn!(source = %server.cx.name, error = %e, "accepting a connection failed");
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
}

/// The address part of `host:port` (log keys: one line per client host, not per connection).
fn peer_host(peer: &str) -> &str {
    peer.rsplit_once(':').map_or(peer, |(host, _)| host)
}

/// Records of consecutive messages that share a tag and ask for no ack.
struct Pending {
    tag: Option<Tag>,
    events: Vec<Event>,
    bytes: usize,
}

/// Why a connection was closed by a timeout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TimedOut {
    /// Nothing received between messages for `idle_timeout`, no ack pending.
    Idle,
    /// Nothing received for the timeout in the middle of a message.
    IncompleteMessage,
}

impl Server {
    /// Takes a slot under `max_connections`, or counts and logs the refusal (the caller then
    /// drops, and so closes, the connection).
    fn admit(&self, peer: &str) -> Option<Slot> {
        match self.slots.clone().try_acquire_owned() {
            Ok(permit) => {
                self.connections.open.inc();
                Some(Slot {
                    _permit: permit,
                    open: self.connections.open.clone(),
                })
            }
            Err(_) => {
                self.connections.refused_limit.inc();
                if let Some(suppressed) = crate::log_limit::allow(&self.cx.name, "max_connections")
                {
                    tracing::warn!(source = %self.cx.name, %peer, max_connections = self.max_connections,
                        suppressed,
                        "closing a new forward connection: max_connections connections are open; \
                         the client must retry later. Raise max_connections if these clients are \
                         expected, or find the client that opens so many");
                }
                None
            }
        }
    }

    /// How long the next read may wait, and what it means when it expires: `partial` when the
    /// buffer holds the start of a message.
    fn read_deadline(&self, partial: bool) -> Option<(std::time::Duration, TimedOut)> {
        if partial {
            let limit = match (self.idle_timeout, self.message_timeout) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            limit.map(|d| (d, TimedOut::IncompleteMessage))
        } else {
            self.idle_timeout.map(|d| (d, TimedOut::Idle))
        }
    }

    /// Counts and logs a connection closed by a timeout.
    fn timed_out(&self, peer: &str, why: TimedOut, after: std::time::Duration, buffered: usize) {
        match why {
            TimedOut::Idle => {
                self.connections.idle.inc();
                tracing::debug!(source = %self.cx.name, %peer, idle_timeout = ?after,
                    "closing an idle forward connection");
            }
            TimedOut::IncompleteMessage => {
                self.connections.incomplete_message.inc();
                if let Some(suppressed) = crate::log_limit::allow(
                    &self.cx.name,
                    &format!("incomplete_message {}", peer_host(peer)),
                ) {
                    tracing::warn!(source = %self.cx.name, %peer, timeout = ?after,
                        bytes = buffered, suppressed,
                        "closing a forward connection that stopped in the middle of a message; \
                         the incomplete message is dropped (a client that waits for acks sends \
                         it again)");
                }
            }
        }
    }

    /// A TCP connection: TLS, then the handshake, then messages.
    async fn tcp_connection(&self, stream: TcpStream, peer: String) {
        let deadline = Instant::now() + self.handshake_timeout;
        let Some(acceptor) = &self.tls else {
            return self.handshake_then_serve(stream, peer, deadline).await;
        };
        let accepted = tokio::select! {
            r = tokio::time::timeout_at(deadline, acceptor.accept(stream)) => r,
            _ = self.cx.shutdown.cancelled() => return,
        };
        match accepted {
            Ok(Ok(tls)) => self.handshake_then_serve(tls, peer, deadline).await,
            Ok(Err(e)) => self.refuse(&peer, Refused::Tls(e)),
            Err(_) => self.refuse(&peer, Refused::Timeout(self.handshake_timeout)),
        }
    }

    async fn handshake_then_serve<S>(&self, mut stream: S, peer: String, deadline: Instant)
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let mut buf = BytesMut::with_capacity(self.chunk);
        if let Some(security) = &self.security {
            let shook = tokio::select! {
                r = tokio::time::timeout_at(
                    deadline,
                    handshake::server(&mut stream, &mut buf, security),
                ) => r,
                _ = self.cx.shutdown.cancelled() => return,
            };
            match shook {
                Ok(Ok(Outcome::Authenticated)) => {
                    tracing::debug!(source = %self.cx.name, %peer, "forward client authenticated");
                }
                Ok(Ok(Outcome::Unauthenticated)) => {
                    self.cx.metrics.auth_failure("no_handshake");
                    if let Some(suppressed) = crate::log_limit::allow(
                        &self.cx.name,
                        &format!("unauthenticated {}", peer_host(&peer)),
                    ) {
                        tracing::warn!(source = %self.cx.name, %peer, suppressed,
                            "accepting a forward client that skipped the shared_key handshake \
                             (require_auth = false)");
                    }
                }
                Ok(Err(e)) => return self.refuse(&peer, Refused::Handshake(e)),
                Err(_) => return self.refuse(&peer, Refused::Timeout(self.handshake_timeout)),
            }
        }
        self.connection(stream, peer, buf).await
    }

    /// Counts and logs a connection closed during TLS or the handshake (dropping the stream
    /// closes it). The log names the peer and the reason, never a key or digest.
    fn refuse(&self, peer: &str, why: Refused) {
        let (kind, reason) = why.metric();
        match kind {
            MetricKind::AuthFailure => self.cx.metrics.auth_failure(reason),
            MetricKind::Error => self.cx.metrics.error(reason),
        }
        // A client that hangs up mid-handshake (TCP health checks and port probes connect and
        // close) is counted but not worth a warning.
        if reason == "handshake_closed" {
            tracing::debug!(source = %self.cx.name, %peer, reason, error = %why,
                "a forward client closed the connection during the handshake");
            return;
        }
        if let Some(suppressed) = crate::log_limit::allow(
            &self.cx.name,
            &format!("refused {reason} {}", peer_host(peer)),
        ) {
            tracing::warn!(source = %self.cx.name, %peer, reason, error = %why, suppressed,
                "closing a forward connection: handshake failed");
        }
    }

    async fn connection<S>(&self, stream: S, peer: String, buf: BytesMut)
    where
        S: AsyncRead + AsyncWrite + Send + 'static,
    {
        let (mut reader, writer) = tokio::io::split(stream);
        let (acks_tx, acks_rx) = mpsc::unbounded_channel();
        let acks = Acks {
            tx: acks_tx,
            pending: Arc::new(AtomicUsize::new(0)),
        };
        let ack_writer = tokio::spawn(write_acks(
            writer,
            acks_rx,
            acks.pending.clone(),
            self.message_timeout,
        ));
        if let Err(e) = self.read_loop(&mut reader, buf, &acks, &peer).await {
            let reason = match e {
                ProtocolError::FrameTooLarge { .. }
                | ProtocolError::DecompressedTooLarge { .. } => "frame_too_large",
                _ => "malformed_frame",
            };
            self.cx.metrics.error(reason);
            tracing::warn!(source = %self.cx.name, %peer, error = %e,
                "closing a forward connection: bad message");
        }
        drop(acks);
        if let Ok(AckWriter::Stuck(after)) = ack_writer.await {
            self.connections.unread_acks.inc();
            if let Some(suppressed) =
                crate::log_limit::allow(&self.cx.name, &format!("unread_acks {}", peer_host(&peer)))
            {
                tracing::warn!(source = %self.cx.name, %peer, timeout = ?after, suppressed,
                    "closing a forward connection whose client does not read its acks");
            }
        }
    }

    async fn read_loop<R: AsyncRead + Unpin>(
        &self,
        reader: &mut R,
        mut buf: BytesMut,
        acks: &Acks,
        peer: &str,
    ) -> Result<(), ProtocolError> {
        let mut finder = FrameFinder::new(&self.limits);
        let mut decoder = Decoder::new(self.limits).with_metadata_key(self.metadata_key.clone());
        let mut needed = 0usize;
        // Size of the last complete message: a new buffer gets room for one more like it.
        let mut last_len = 0usize;
        let mut pending = Pending {
            tag: None,
            events: Vec::new(),
            bytes: 0,
        };
        loop {
            // Take every complete message already received.
            let mut failure = None;
            while !buf.is_empty() && buf.len() >= needed {
                match finder.find(&buf) {
                    Ok(FrameStatus::Complete(len)) => {
                        needed = 0;
                        last_len = len;
                        let frame = buf.split_to(len).freeze();
                        match decoder.decode(frame) {
                            Ok(Message::Keepalive) => {}
                            Ok(Message::Events { events, chunk, .. }) => {
                                if !self.take(&mut pending, events, len, chunk, acks).await {
                                    return Ok(());
                                }
                            }
                            Err(e) => {
                                failure = Some(e);
                                break;
                            }
                        }
                    }
                    Ok(FrameStatus::Incomplete { needed: n }) => {
                        needed = n;
                        break;
                    }
                    Err(e) => {
                        failure = Some(e);
                        break;
                    }
                }
            }
            // Whatever was good before a bad message is still delivered.
            if !self.flush(&mut pending).await {
                return Ok(());
            }
            if let Some(e) = failure {
                return Err(e);
            }
            // Complete messages are split off the buffer and live on in their records, so bytes
            // read past a message's end (the next one's start) are copied to a new buffer when
            // it is reserved, and a buffer too small for its message is grown by copying: 1.9%
            // of the CPU of a no-ack forward -> Kinesis run. So a read that a message's size is
            // known for stops at its end, and a new buffer has room for a message as large as
            // the last one (at most 4 reads) plus `EXACT_READ_MIN`: a message's size is known
            // exactly only once its entries are in (the options map after them is read next),
            // and without that room its last bytes would not fit and the whole message would
            // be copied to a larger buffer (a copy of nearly every message of the bench's
            // no-ack run).
            let rest = needed.saturating_sub(buf.len());
            let limit = if rest >= EXACT_READ_MIN {
                buf.reserve(rest + EXACT_READ_MIN);
                rest
            } else {
                if buf.is_empty() {
                    buf.reserve(
                        self.chunk
                            .max(last_len.min(4 * self.chunk) + EXACT_READ_MIN),
                    );
                } else if buf.capacity() - buf.len() < rest.max(1) {
                    // Grown (copied) only when the missing bytes do not fit.
                    buf.reserve(self.chunk.max(rest));
                }
                usize::MAX
            };
            let before = buf.len();
            let mut into = (&mut buf).limit(limit);
            let read = if self.cx.shutdown.is_cancelled() {
                // Draining: what clients already sent (Docker's driver flushing its queue as
                // the task stops) is still read, until they close or go quiet.
                match tokio::time::timeout(DRAIN_IDLE, reader.read_buf(&mut into)).await {
                    Ok(r) => r,
                    Err(_) => return Ok(()),
                }
            } else {
                let deadline = self.read_deadline(before > 0);
                let timer = async {
                    match deadline {
                        Some((after, _)) => tokio::time::sleep(after).await,
                        None => std::future::pending().await,
                    }
                };
                tokio::select! {
                    r = reader.read_buf(&mut into) => r,
                    _ = self.cx.shutdown.cancelled() => continue,
                    // The ack writer gave up (the client does not take its acks): close.
                    _ = acks.tx.closed() => return Ok(()),
                    _ = timer => {
                        let Some((after, why)) = deadline else { continue };
                        // A client waiting for acks is quiet because of us: not idle.
                        if why == TimedOut::Idle && acks.pending.load(Ordering::Acquire) > 0 {
                            continue;
                        }
                        self.timed_out(peer, why, after, before);
                        return Ok(());
                    }
                }
            };
            match read {
                Ok(0) => {
                    if !buf.is_empty() {
                        self.cx.metrics.error("truncated_frame");
                        tracing::warn!(source = %self.cx.name, bytes = buf.len(),
                            "a forward client closed the connection in the middle of a message");
                    }
                    return Ok(());
                }
                Ok(n) => {
                    self.cx.metrics.bytes_in.inc_by(n as u64);
                }
                Err(e) => {
                    tracing::debug!(source = %self.cx.name, error = %e, "forward connection read error");
                    return Ok(());
                }
            }
        }
    }

    /// Adds a message's records to the pending batch, or routes them with an ack. Returns false
    /// when the pipeline is shutting down its queues.
    async fn take(
        &self,
        pending: &mut Pending,
        events: Vec<Event>,
        bytes: usize,
        chunk: Option<bytes::Bytes>,
        acks: &Acks,
    ) -> bool {
        self.cx.metrics.records_in.inc_by(events.len() as u64);
        let Some(first) = events.first() else {
            if let Some(chunk) = chunk {
                let (ack, waiter) = AckRef::new();
                ack.complete();
                acks.send(waiter, chunk);
            }
            return true;
        };
        let tag = first.tag.clone();
        if let Some(chunk) = chunk {
            if !self.flush(pending).await {
                return false;
            }
            let (ack, waiter) = AckRef::new();
            if self
                .cx
                .router
                .submit(tag, events, bytes, Some(ack))
                .await
                .is_err()
            {
                return false;
            }
            acks.send(waiter, chunk);
            return true;
        }
        if pending.tag.as_ref() != Some(&tag) || pending.events.len() >= MAX_COALESCED {
            if !self.flush(pending).await {
                return false;
            }
            pending.tag = Some(tag);
        }
        if pending.events.is_empty() {
            pending.events = events;
        } else {
            pending.events.extend(events);
        }
        pending.bytes += bytes;
        true
    }

    async fn flush(&self, pending: &mut Pending) -> bool {
        if pending.events.is_empty() {
            return true;
        }
        let events = std::mem::take(&mut pending.events);
        let bytes = std::mem::take(&mut pending.bytes);
        let Some(tag) = pending.tag.clone() else {
            return true;
        };
        self.cx
            .router
            .submit(tag, events, bytes, None)
            .await
            .is_ok()
    }
}

/// The acks a connection owes, in arrival order, and how many are not written yet.
struct Acks {
    tx: mpsc::UnboundedSender<(AckWaiter, bytes::Bytes)>,
    pending: Arc<AtomicUsize>,
}

impl Acks {
    fn send(&self, waiter: AckWaiter, chunk: bytes::Bytes) {
        self.pending.fetch_add(1, Ordering::AcqRel);
        if self.tx.send((waiter, chunk)).is_err() {
            self.pending.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

/// How [`write_acks`] ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum AckWriter {
    /// Every ack owed was written (or the connection broke).
    Done,
    /// Writing an ack did not finish within this time: the client does not read.
    Stuck(std::time::Duration),
}

/// Sends `{"ack": chunk}` for each acknowledged message, in arrival order. A message whose
/// delivery failed gets no ack, so the client sends it again. `pending` counts the acks still
/// owed (the read side does not time out an idle client while it waits for one). An ack that
/// cannot be written within `timeout` (`message_timeout`: the client does not read, its
/// socket buffers are full) ends the writer, which ends the connection.
async fn write_acks<W: AsyncWrite + Unpin>(
    mut writer: W,
    mut acks: mpsc::UnboundedReceiver<(AckWaiter, bytes::Bytes)>,
    pending: Arc<AtomicUsize>,
    timeout: Option<std::time::Duration>,
) -> AckWriter {
    /// Counts one owed ack as settled when dropped, whichever way the loop goes on.
    struct Settled<'a>(&'a AtomicUsize);
    impl Drop for Settled<'_> {
        fn drop(&mut self) {
            self.0.fetch_sub(1, Ordering::AcqRel);
        }
    }
    while let Some((waiter, chunk)) = acks.recv().await {
        let _settled = Settled(&pending);
        if !waiter.wait().await {
            if let Some(suppressed) = crate::log_limit::allow("forward", "not_acknowledged") {
                tracing::warn!(
                    suppressed,
                    "a forward message was not delivered; not acknowledging it"
                );
            }
            continue;
        }
        // TLS buffers what is written: flush so the ack leaves now.
        let write = async {
            writer.write_all(&encode_ack(&chunk)).await?;
            writer.flush().await
        };
        let written = match timeout {
            Some(after) => match tokio::time::timeout(after, write).await {
                Ok(written) => written,
                Err(_) => return AckWriter::Stuck(after),
            },
            None => write.await,
        };
        if written.is_err() {
            return AckWriter::Done;
        }
    }
    let _ = writer.shutdown().await;
    AckWriter::Done
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A client that never reads its acks: once its buffer is full the writer gives up after
    /// the timeout instead of holding the connection forever.
    #[tokio::test]
    async fn an_ack_writer_gives_up_on_a_client_that_does_not_read() {
        let (server, _client) = tokio::io::duplex(64);
        let (tx, rx) = mpsc::unbounded_channel();
        let pending = Arc::new(AtomicUsize::new(0));
        for i in 0..100 {
            let (ack, waiter) = AckRef::new();
            ack.complete();
            pending.fetch_add(1, Ordering::AcqRel);
            tx.send((waiter, bytes::Bytes::from(format!("chunk-{i}"))))
                .unwrap();
        }
        let timeout = std::time::Duration::from_millis(100);
        let ended = tokio::time::timeout(
            std::time::Duration::from_secs(10),
            write_acks(server, rx, pending.clone(), Some(timeout)),
        )
        .await
        .expect("the writer must not wait forever");
        assert_eq!(ended, AckWriter::Stuck(timeout));
        // The read side sees the writer gone.
        assert!(tx.is_closed());
    }

    #[tokio::test]
    async fn an_ack_writer_writes_every_ack_to_a_reading_client() {
        let (server, mut client) = tokio::io::duplex(64);
        let (tx, rx) = mpsc::unbounded_channel();
        let pending = Arc::new(AtomicUsize::new(0));
        let mut want = Vec::new();
        for i in 0..100 {
            let (ack, waiter) = AckRef::new();
            ack.complete();
            pending.fetch_add(1, Ordering::AcqRel);
            let chunk = bytes::Bytes::from(format!("chunk-{i}"));
            want.extend_from_slice(&encode_ack(&chunk));
            tx.send((waiter, chunk)).unwrap();
        }
        drop(tx);
        let writer = tokio::spawn(write_acks(
            server,
            rx,
            pending.clone(),
            Some(std::time::Duration::from_millis(100)),
        ));
        let mut got = Vec::new();
        client.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, want);
        assert_eq!(writer.await.unwrap(), AckWriter::Done);
        assert_eq!(pending.load(Ordering::Acquire), 0);
    }
}
