//! The `tcp` source: JSON records (or separated lines) over plain TCP, as Fluent Bit's `tcp`
//! input reads them. It is what the FireLens container health check talks to
//! (`echo '{"health": "check"}' | nc 127.0.0.1 8877`), and it never writes anything back.
//!
//! Behaviour, following Fluent Bit's `in_tcp`:
//! - `format = "json"`: the stream is a sequence of JSON values, concatenated or separated by
//!   whitespace/newlines. An object is a record; an array becomes `{"msg": [...]}`; any other
//!   value is skipped and counted (`invalid_json`). Records are timestamped when read.
//! - Bad JSON: counted (`invalid_json`) and logged; what was buffered from that point on is
//!   discarded and the connection stays open (Fluent Bit does the same). Valid records received
//!   before the bad bytes are still delivered.
//! - `format = "none"`: every piece ending with `separator` becomes `{"log": piece}`; empty
//!   pieces are skipped.
//! - A message longer than `buffer_size` closes the connection (`message_too_large`).
//! - `idle_timeout` (not a Fluent Bit option) closes a connection that has sent nothing for that
//!   long. Debian's netcat (`netcat-openbsd`) does not half-close the socket when its input
//!   ends, so without it the documented health check would wait forever for the server to hang
//!   up; nmap's `ncat` (Amazon Linux) half-closes, which ends the connection at once.

use std::sync::Arc;

use bytes::Bytes;
use serde::Deserialize;
use tokio::io::AsyncReadExt;
use tokio::net::{TcpListener, TcpStream};
use tokio_util::task::TaskTracker;

use super::{SourceContext, SourceError};
use crate::config::field::FieldError;
use crate::config::units::{ByteSize, Duration};
use crate::event::{Event, EventTime, Map, Tag, Value};

/// Options of `type = "tcp"`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TcpConfig {
    /// Address (host or IP) to listen on. Default `127.0.0.1` (Fluent Bit's default is
    /// `0.0.0.0`; the FireLens translation passes the file's `Listen`).
    pub listen: String,
    /// TCP port. Default 5170, Fluent Bit's.
    pub port: u16,
    /// Tag of the records. Default `tcp`.
    pub tag: String,
    /// `json` (default): JSON objects, concatenated or one per line. `none`: text pieces cut at
    /// `separator`, each becoming `{"log": piece}`.
    pub format: TcpFormat,
    /// With `format = "none"`: what ends a record. Default `"\n"`.
    pub separator: String,
    /// Largest message held while waiting for its end; a longer one closes the connection.
    /// Default 1MiB (Fluent Bit's default is 32KiB).
    pub buffer_size: ByteSize,
    /// Bytes read from a connection at a time. Default 32KiB.
    pub chunk_size: ByteSize,
    /// Close a connection that sends nothing for this long. Default: never (as Fluent Bit).
    pub idle_timeout: Option<Duration>,
}

impl Default for TcpConfig {
    fn default() -> Self {
        TcpConfig {
            listen: "127.0.0.1".to_string(),
            port: 5170,
            tag: "tcp".to_string(),
            format: TcpFormat::Json,
            separator: "\n".to_string(),
            buffer_size: ByteSize::mib(1),
            chunk_size: ByteSize::kib(32),
            idle_timeout: None,
        }
    }
}

/// How the byte stream is cut into records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TcpFormat {
    Json,
    None,
}

impl TcpConfig {
    /// `host:port`, with brackets around an IPv6 host.
    pub fn address(&self) -> String {
        let host = self.listen.trim();
        if host.contains(':') && !host.starts_with('[') {
            format!("[{host}]:{}", self.port)
        } else {
            format!("{host}:{}", self.port)
        }
    }

    pub fn validate(&self) -> Result<(), Vec<FieldError>> {
        let mut problems = Vec::new();
        if self.listen.trim().is_empty() {
            problems.push(FieldError::new(
                "listen",
                "must be an address such as \"127.0.0.1\"",
            ));
        }
        if self.format == TcpFormat::None && self.separator.is_empty() {
            problems.push(FieldError::new(
                "separator",
                "must not be empty with format = \"none\"",
            ));
        }
        if self.chunk_size.bytes() == 0 {
            problems.push(FieldError::new("chunk_size", "must be > 0"));
        }
        if self.buffer_size.bytes() < 64 {
            problems.push(FieldError::new(
                "buffer_size",
                "must be at least 64 bytes (the default is 1MiB)",
            ));
        }
        if matches!(self.idle_timeout, Some(d) if d.get().is_zero()) {
            problems.push(FieldError::new(
                "idle_timeout",
                "must be above 0 (e.g. \"1s\"), or removed to keep idle connections open",
            ));
        }
        if self.tag.is_empty() {
            problems.push(FieldError::new("tag", "must not be empty"));
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(problems)
        }
    }
}

/// Binds the listener and returns the task serving it until shutdown.
pub async fn start(
    config: TcpConfig,
    cx: SourceContext,
) -> Result<tokio::task::JoinHandle<()>, SourceError> {
    let address = config.address();
    let listener = TcpListener::bind(&address)
        .await
        .map_err(|source| SourceError::Bind {
            name: cx.name.clone(),
            address: address.clone(),
            source,
        })?;
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(source = %cx.name, %addr, "tcp input listening");
    }
    let server = Arc::new(Server {
        tag: config.tag.as_str().into(),
        separator: Bytes::copy_from_slice(config.separator.as_bytes()),
        config,
        cx,
    });
    Ok(tokio::spawn(async move {
        let tracker = TaskTracker::new();
        loop {
            let accepted = tokio::select! {
                a = listener.accept() => a,
                _ = server.cx.shutdown.cancelled() => break,
            };
            match accepted {
                Ok((stream, peer)) => {
                    let server = server.clone();
                    tracker.spawn(async move { server.connection(stream, peer.to_string()).await });
                }
                Err(e) => {
                    server.cx.metrics.error("accept");
                    tracing::warn!(source = %server.cx.name, error = %e, "accepting a connection failed");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                }
            }
        }
        tracker.close();
        tracker.wait().await;
    }))
}

struct Server {
    config: TcpConfig,
    tag: Tag,
    separator: Bytes,
    cx: SourceContext,
}

/// Why a connection's read loop ended.
enum End {
    /// The client closed, went idle, or the process is stopping.
    Done,
    /// The router is shutting down its queues.
    Closed,
}

impl Server {
    async fn connection(&self, mut stream: TcpStream, peer: String) {
        let chunk = self.config.chunk_size.as_usize().clamp(512, 16 << 20);
        let limit = self.config.buffer_size.as_usize();
        let mut buf: Vec<u8> = Vec::with_capacity(chunk.min(limit));
        loop {
            buf.reserve(chunk);
            let read = self.read(&mut stream, &mut buf).await;
            let n = match read {
                Ok(Some(n)) => n,
                Ok(None) => break,
                Err(e) => {
                    tracing::debug!(source = %self.cx.name, %peer, error = %e, "tcp connection read error");
                    break;
                }
            };
            if n == 0 {
                if !is_blank(&buf) {
                    self.cx.metrics.error("truncated_message");
                    tracing::warn!(source = %self.cx.name, %peer, bytes = buf.len(),
                        "a tcp client closed the connection in the middle of a record; it is dropped");
                }
                break;
            }
            self.cx.metrics.bytes_in.inc_by(n as u64);
            if let End::Closed = self.take_records(&mut buf, &peer).await {
                return;
            }
            if buf.len() > limit {
                self.cx.metrics.error("message_too_large");
                tracing::warn!(source = %self.cx.name, %peer, limit,
                    "closing a tcp connection: a record is longer than buffer_size");
                return;
            }
        }
        // What was complete in the buffer was taken already; nothing is ever written back.
    }

    /// Reads more bytes; `None` when the connection should end (idle, shutdown).
    async fn read(
        &self,
        stream: &mut TcpStream,
        buf: &mut Vec<u8>,
    ) -> std::io::Result<Option<usize>> {
        let idle = self.config.idle_timeout.map(|d| d.get());
        tokio::select! {
            r = async {
                match idle {
                    Some(limit) => match tokio::time::timeout(limit, stream.read_buf(buf)).await {
                        Ok(r) => r.map(Some),
                        Err(_) => Ok(None),
                    },
                    None => stream.read_buf(buf).await.map(Some),
                }
            } => r,
            _ = self.cx.shutdown.cancelled() => Ok(None),
        }
    }

    /// Cuts every complete record off the front of `buf` and routes them.
    async fn take_records(&self, buf: &mut Vec<u8>, peer: &str) -> End {
        let mut events = Vec::new();
        let consumed = match self.config.format {
            TcpFormat::Json => self.parse_json(buf, &mut events, peer),
            TcpFormat::None => self.parse_separated(buf, &mut events),
        };
        buf.drain(..consumed);
        if events.is_empty() {
            return End::Done;
        }
        self.cx.metrics.records_in.inc_by(events.len() as u64);
        // The lean form (one msgpack buffer), weighed as held.
        let bytes = crate::event::pack(&mut events);
        match self
            .cx
            .router
            .submit(self.tag.clone(), events, bytes, None)
            .await
        {
            Ok(()) => End::Done,
            Err(_) => End::Closed,
        }
    }

    fn parse_json(&self, buf: &[u8], events: &mut Vec<Event>, peer: &str) -> usize {
        cut_json(buf, &self.tag, events, &mut |problem| {
            self.cx.metrics.error("invalid_json");
            tracing::warn!(source = %self.cx.name, %peer, "tcp input: {problem}");
        })
    }

    fn parse_separated(&self, buf: &[u8], events: &mut Vec<Event>) -> usize {
        cut_separated(buf, &self.separator, &self.tag, events)
    }
}

/// Parses the complete JSON values at the front of `buf` into events; returns the bytes
/// consumed. On bad JSON, everything held is consumed (discarded), as Fluent Bit does, and
/// `invalid` is told why; an incomplete value at the end is left for the next read.
pub fn cut_json(
    buf: &[u8],
    tag: &Tag,
    events: &mut Vec<Event>,
    invalid: &mut dyn FnMut(&str),
) -> usize {
    let mut stream = serde_json::Deserializer::from_slice(buf).into_iter::<serde_json::Value>();
    let mut consumed = 0;
    loop {
        match stream.next() {
            None => return buf.len(),
            Some(Ok(value)) => {
                consumed = stream.byte_offset();
                match value {
                    serde_json::Value::Object(_) => {
                        if let Value::Map(record) = Value::from(value) {
                            events.push(Event::new(tag.clone(), EventTime::now(), record));
                        }
                    }
                    serde_json::Value::Array(_) => {
                        let mut record = Map::with_capacity(1);
                        record.push(Bytes::from_static(b"msg"), Value::from(value));
                        events.push(Event::new(tag.clone(), EventTime::now(), record));
                    }
                    _ => invalid("a JSON value that is not an object or an array was skipped"),
                }
            }
            Some(Err(e)) if e.is_eof() => return consumed,
            Some(Err(e)) => {
                invalid(&format!(
                    "invalid JSON ({e}); discarding the {} bytes buffered after the last good \
                     record and keeping the connection",
                    buf.len() - consumed
                ));
                return buf.len();
            }
        }
    }
}

/// Cuts the pieces ending with `separator` off the front of `buf` into `{"log": piece}` events
/// (empty pieces skipped); returns the bytes consumed.
pub fn cut_separated(buf: &[u8], separator: &[u8], tag: &Tag, events: &mut Vec<Event>) -> usize {
    let mut start = 0;
    while let Some(pos) = find(&buf[start..], separator) {
        let piece = &buf[start..start + pos];
        start += pos + separator.len();
        if piece.is_empty() {
            continue;
        }
        let mut record = Map::with_capacity(1);
        record.push(
            Bytes::from_static(b"log"),
            Value::Str(Bytes::copy_from_slice(piece)),
        );
        events.push(Event::new(tag.clone(), EventTime::now(), record));
    }
    start
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.len() == 1 {
        return memchr::memchr(needle[0], haystack);
    }
    memchr::memmem::find(haystack, needle)
}

fn is_blank(buf: &[u8]) -> bool {
    buf.iter().all(u8::is_ascii_whitespace)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_validate_and_ipv6_is_bracketed() {
        let c = TcpConfig::default();
        c.validate().unwrap();
        assert_eq!(c.address(), "127.0.0.1:5170");
        let c = TcpConfig {
            listen: "::1".into(),
            port: 8877,
            ..TcpConfig::default()
        };
        assert_eq!(c.address(), "[::1]:8877");
    }

    fn json(buf: &[u8]) -> (usize, Vec<String>, usize) {
        let tag: Tag = "t".into();
        let mut events = Vec::new();
        let mut invalid = 0;
        let n = cut_json(buf, &tag, &mut events, &mut |_| invalid += 1);
        let records = events
            .iter()
            .map(|e| {
                let mut out = Vec::new();
                crate::encode::json::write_value(&mut out, &Value::Map(e.record.clone()));
                String::from_utf8(out).unwrap()
            })
            .collect();
        (n, records, invalid)
    }

    #[test]
    fn json_values_concatenated_or_per_line_and_partial_tail_kept() {
        let input = b"{\"health\": \"check\"}\n{\"a\":1}{\"b\":[1,2]}\n[3]\n{\"c\":";
        let (n, records, invalid) = json(input);
        assert_eq!(
            records,
            vec![
                r#"{"health":"check"}"#,
                r#"{"a":1}"#,
                r#"{"b":[1,2]}"#,
                r#"{"msg":[3]}"#
            ]
        );
        assert_eq!(invalid, 0);
        assert_eq!(
            &input[n..],
            b"\n{\"c\":",
            "the incomplete record waits for more bytes"
        );
    }

    #[test]
    fn bad_json_is_counted_and_discarded_after_the_good_records() {
        let input = b"{\"ok\":true}\nnot json {\"x\":1}\n";
        let (n, records, invalid) = json(input);
        assert_eq!(records, vec![r#"{"ok":true}"#]);
        assert_eq!(invalid, 1);
        assert_eq!(n, input.len(), "everything buffered is dropped");
        let (_, records, invalid) = json(b"42\n\"s\"\n");
        assert!(records.is_empty());
        assert_eq!(invalid, 2);
    }

    #[test]
    fn separated_pieces() {
        let tag: Tag = "t".into();
        let mut events = Vec::new();
        let n = cut_separated(b"a\n\nbb\nccc", b"\n", &tag, &mut events);
        assert_eq!(n, 6);
        assert_eq!(events.len(), 2);
        assert_eq!(
            events[1].record.get(b"log").and_then(Value::as_bytes),
            Some(&b"bb"[..])
        );
    }

    #[test]
    fn bad_options_name_their_key() {
        let c: TcpConfig = toml::from_str("format = \"none\"\nseparator = \"\"").unwrap();
        assert_eq!(c.validate().unwrap_err()[0].key, "separator");
        let c: TcpConfig = toml::from_str("idle_timeout = \"0s\"").unwrap();
        assert_eq!(c.validate().unwrap_err()[0].key, "idle_timeout");
        assert!(toml::from_str::<TcpConfig>("format = \"xml\"").is_err());
        assert!(toml::from_str::<TcpConfig>("prot = 1").is_err());
    }
}
