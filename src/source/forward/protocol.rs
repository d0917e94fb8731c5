//! The Fluent forward protocol: finding message frames in a stream and decoding one message into
//! events. No I/O here; the connection handler owns the socket and the acks.
//!
//! A message is one msgpack object. Its mode is told by the second array element:
//! - Message `[tag, time, record, option?]` (all Docker's fluentd driver ever sends),
//! - Forward `[tag, [[time, record], ...], option?]`,
//! - PackedForward `[tag, bin|str of concatenated [time, record] entries, option?]`,
//! - CompressedPackedForward: PackedForward with `option.compressed == "gzip"`, the payload
//!   being one or more concatenated gzip members.
//!
//! A lone `nil` is a keepalive. Time is an integer or float of seconds, or an EventTime: ext
//! type 0 with 8 bytes (u32 seconds and u32 nanoseconds, big-endian), as `fixext8` or `ext8`.
//!
//! Fluent Bit 2.1+ sends its own event format by default (`retain_metadata_in_forward_mode`):
//! where a time stands, it puts `[time, metadata]`, so an entry is `[[time, {metadata}],
//! record]` and a Message-mode message `[tag, [time, {metadata}], record, option?]`. Every mode
//! accepts both forms. The metadata map is dropped unless the source names a key to keep it
//! under ([`Decoder::with_metadata_key`]).
//! The option may be missing, nil or a map; `chunk` (str or bin) asks for an ack, `compressed`
//! is read, anything else (`size`, ...) ignored.
//!
//! Decoding copies nothing: record strings are slices of the frame (or of the decompressed
//! payload), so a `str` holding invalid UTF-8 passes through byte for byte. Tags are decoded
//! lossily (invalid UTF-8 becomes U+FFFD) into a shared [`Tag`]. The shared_key handshake that
//! may precede the messages is in [`super::handshake`].

use std::io::Read;
use std::sync::Arc;

use bytes::Bytes;
use flate2::read::MultiGzDecoder;

use crate::event::{Event, EventTime, Map, Tag};
use crate::msgpack::read::PREALLOC_LIMIT;
use crate::msgpack::{write, Head, ReadError, Reader, Scanner};

/// Size bounds that keep a hostile or broken client from exhausting memory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Largest message accepted, in bytes as received.
    pub max_frame_bytes: usize,
    /// Largest decompressed payload of a CompressedPackedForward message.
    pub max_decompressed_bytes: usize,
}

impl Default for Limits {
    /// 16 MiB frames (Fluentd's and Fluent Bit's forward outputs send chunks of a few MiB;
    /// Docker sends one line per message), 64 MiB decompressed.
    fn default() -> Self {
        Limits {
            max_frame_bytes: 16 << 20,
            max_decompressed_bytes: 64 << 20,
        }
    }
}

/// Which of the protocol's message forms carried the events.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Message,
    Forward,
    PackedForward,
    CompressedPackedForward,
}

/// One decoded forward message.
#[derive(Clone, Debug, PartialEq)]
pub enum Message {
    /// A lone `nil`: the client checking the connection. Nothing to do.
    Keepalive,
    Events {
        mode: Mode,
        events: Vec<Event>,
        /// The client wants `{"ack": chunk}` (see [`encode_ack`]) once the events are durable.
        chunk: Option<Bytes>,
    },
}

/// Why a message was refused. Each is fatal for the connection: after a bad frame the stream
/// cannot be resynchronised.
#[derive(Debug, thiserror::Error)]
pub enum ProtocolError {
    #[error("invalid msgpack from a forward client: {0}")]
    Msgpack(ReadError),
    #[error("a forward message of at least {size} bytes is over the {limit}-byte limit; raise the frame limit if the client legitimately sends such large chunks")]
    FrameTooLarge { size: usize, limit: usize },
    #[error("not a valid Fluent forward message: {0}")]
    Shape(&'static str),
    #[error("a forward message uses compression `{0}`; only gzip is defined by the protocol")]
    UnsupportedCompression(String),
    #[error("the gzip payload of a CompressedPackedForward message is corrupt: {0}")]
    Gzip(std::io::Error),
    #[error("the gzip payload of a CompressedPackedForward message decompresses to more than {limit} bytes; raise the decompressed-size limit if the client legitimately sends such large chunks")]
    DecompressedTooLarge { limit: usize },
}

/// What the front of a stream buffer holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FrameStatus {
    /// A complete message of this many bytes.
    Complete(usize),
    /// Not yet; don't look again before the buffer holds at least `needed` bytes.
    Incomplete { needed: usize },
}

/// Finds message boundaries in a connection's receive buffer. Resumable: while a message is
/// incomplete it remembers how far it got, so each received byte is scanned once. Call
/// [`FrameFinder::find`] with the same buffer (only appended to) until `Complete`; after
/// taking the frame off the buffer, the next call starts afresh at its front.
#[derive(Clone, Debug)]
pub struct FrameFinder {
    scanner: Scanner,
    max_frame_bytes: usize,
}

impl FrameFinder {
    pub fn new(limits: &Limits) -> Self {
        FrameFinder {
            scanner: Scanner::new(),
            max_frame_bytes: limits.max_frame_bytes,
        }
    }

    pub fn find(&mut self, buf: &[u8]) -> Result<FrameStatus, ProtocolError> {
        let limit = self.max_frame_bytes;
        match self.scanner.scan(buf) {
            Ok(len) if len > limit => Err(ProtocolError::FrameTooLarge { size: len, limit }),
            Ok(len) => Ok(FrameStatus::Complete(len)),
            Err(ReadError::Incomplete { needed }) if needed > limit => {
                self.scanner.reset();
                Err(ProtocolError::FrameTooLarge {
                    size: needed,
                    limit,
                })
            }
            Err(ReadError::Incomplete { needed }) => Ok(FrameStatus::Incomplete { needed }),
            Err(malformed) => Err(ProtocolError::Msgpack(malformed)),
        }
    }
}

/// One-shot [`FrameFinder::find`] (scans from the start every time).
pub fn frame_len(buf: &[u8], limits: &Limits) -> Result<FrameStatus, ProtocolError> {
    FrameFinder::new(limits).find(buf)
}

/// Decodes one complete message (as delimited by [`FrameFinder`]).
pub fn decode_message(frame: Bytes, limits: &Limits) -> Result<Message, ProtocolError> {
    Decoder::new(*limits).decode(frame)
}

/// `{"ack": chunk}`, the reply to a message that carried `chunk` (as `str`, as Fluentd sends it).
pub fn encode_ack(chunk: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(chunk.len() + 10);
    write::write_map_len(&mut out, 1).ok();
    write::write_str(&mut out, b"ack").ok();
    // Cannot fail: a chunk read from msgpack is at most u32::MAX bytes, the str limit.
    write::write_str(&mut out, chunk).ok();
    out
}

/// A connection's decoder: like [`decode_message`], but it reuses the previous message's [`Tag`]
/// when the tag repeats (Docker sends one message per line, always with the same tag), saving
/// an allocation per message.
#[derive(Clone, Debug)]
pub struct Decoder {
    limits: Limits,
    last_tag: Option<Tag>,
    /// Where Fluent Bit's per-event metadata goes in the record; `None` drops it.
    metadata_key: Option<Bytes>,
    /// Entries of the last packed message: the next one's list is sized for as many (a
    /// client sends batches of a similar size), instead of growing from empty by copies.
    last_packed_entries: usize,
}

/// Most entries a packed message's list is sized for from the last message's count.
const PACKED_ENTRIES_HINT_MAX: usize = 4096;

/// The option map's fields we act on.
#[derive(Default)]
struct Options {
    chunk: Option<Bytes>,
    compressed: Option<Bytes>,
}

impl Decoder {
    pub fn new(limits: Limits) -> Self {
        Decoder {
            limits,
            last_tag: None,
            metadata_key: None,
            last_packed_entries: 0,
        }
    }

    /// Keeps the metadata of Fluent Bit's event format (`[[time, metadata], record]`) in each
    /// record, as a map under `key`. A record that already has `key` keeps its own value.
    pub fn with_metadata_key(mut self, key: Option<Bytes>) -> Self {
        self.metadata_key = key;
        self
    }

    pub fn decode(&mut self, frame: Bytes) -> Result<Message, ProtocolError> {
        let frame_len = frame.len();
        if frame_len > self.limits.max_frame_bytes {
            return Err(ProtocolError::FrameTooLarge {
                size: frame_len,
                limit: self.limits.max_frame_bytes,
            });
        }
        let mut r = Reader::new(frame);
        let message = self.message(&mut r).map_err(|e| truncated(e, frame_len))?;
        if !r.is_empty() {
            return Err(ProtocolError::Shape(
                "bytes follow the message inside its frame",
            ));
        }
        Ok(message)
    }

    fn message(&mut self, r: &mut Reader) -> Result<Message, ProtocolError> {
        let len = match r.read_head()? {
            Head::Nil => return Ok(Message::Keepalive),
            Head::Array(len @ 2..=4) => len,
            Head::Array(_) => {
                return Err(ProtocolError::Shape(
                    "a message is an array of 2 to 4 elements",
                ))
            }
            _ => {
                return Err(ProtocolError::Shape(
                    "a message is an array [tag, ...] or nil",
                ))
            }
        };
        let tag = self.tag(r)?;
        let second = r.peek()?;
        let message_mode = match second {
            Head::Int(_) | Head::UInt(_) | Head::Float(_) | Head::Ext { .. } => true,
            Head::Array(2) => is_time_with_metadata(r)?,
            _ => false,
        };
        if message_mode {
            if len < 3 {
                return Err(ProtocolError::Shape(
                    "a Message-mode message is [tag, time, record, option?]",
                ));
            }
            let mut events = Vec::with_capacity(1);
            self.entry_body(r, &tag, &mut events)?;
            let options = read_options_if(r, len == 4)?;
            return Ok(Message::Events {
                mode: Mode::Message,
                events,
                chunk: options.chunk,
            });
        }
        match second {
            Head::Array(count) => {
                if len > 3 {
                    return Err(ProtocolError::Shape(
                        "a Forward-mode message is [tag, entries, option?]",
                    ));
                }
                // Entries come before the option but are decoded after it, like the packed
                // modes: skip them, read the option, come back.
                let entries_at = r.position();
                r.skip_value()?;
                let entries_end = r.position();
                let options = read_options_if(r, len == 3)?;
                let end = r.position();
                r.seek(entries_at);
                r.read_head()?;
                let mut events = Vec::with_capacity((count as usize).min(PREALLOC_LIMIT));
                for _ in 0..count {
                    self.entry(r, &tag, &mut events)?;
                }
                if r.position() != entries_end {
                    return Err(ProtocolError::Shape(
                        "the entries of a Forward-mode message are inconsistent",
                    ));
                }
                r.seek(end);
                Ok(Message::Events {
                    mode: Mode::Forward,
                    events,
                    chunk: options.chunk,
                })
            }
            Head::Str(_) | Head::Bin(_) => {
                if len > 3 {
                    return Err(ProtocolError::Shape(
                        "a PackedForward-mode message is [tag, entries, option?]",
                    ));
                }
                let payload = r.read_str_or_bin()?.unwrap_or_default();
                let options = read_options_if(r, len == 3)?;
                let (mode, entries) = match options.compressed.as_deref() {
                    None | Some(b"text") => (Mode::PackedForward, payload),
                    Some(b"gzip") => (
                        Mode::CompressedPackedForward,
                        gunzip(&payload, self.limits.max_decompressed_bytes)?,
                    ),
                    Some(other) => {
                        return Err(ProtocolError::UnsupportedCompression(
                            String::from_utf8_lossy(other).into_owned(),
                        ))
                    }
                };
                let entries_len = entries.len();
                let mut pr = Reader::new(entries);
                // Queued events are counted by their payload's bytes (`buffer_limit`), so the
                // room reserved stays in proportion to the payload: at most one entry per 16
                // bytes, at most `PACKED_ENTRIES_HINT_MAX`, and given back below when the
                // message had far fewer entries than the last.
                let hint = self
                    .last_packed_entries
                    .min(entries_len / 16)
                    .min(PACKED_ENTRIES_HINT_MAX);
                let mut events = Vec::with_capacity(hint);
                while !pr.is_empty() {
                    self.entry(&mut pr, &tag, &mut events)
                        .map_err(|e| truncated(e, entries_len))?;
                }
                if hint > 2 * events.len() {
                    events.shrink_to_fit();
                }
                self.last_packed_entries = events.len();
                Ok(Message::Events {
                    mode,
                    events,
                    chunk: options.chunk,
                })
            }
            _ => Err(ProtocolError::Shape(
                "the second element of a message must be a time, an array of entries or a \
                 packed binary",
            )),
        }
    }

    fn tag(&mut self, r: &mut Reader) -> Result<Tag, ProtocolError> {
        let raw = r
            .read_str_or_bin()?
            .ok_or(ProtocolError::Shape("the tag must be a string"))?;
        if let Some(last) = &self.last_tag {
            if last.as_bytes() == raw.as_ref() {
                return Ok(last.clone());
            }
        }
        let tag: Tag = Arc::from(String::from_utf8_lossy(&raw).as_ref());
        self.last_tag = Some(tag.clone());
        Ok(tag)
    }

    /// An entry `[time, record]` or `[[time, metadata], record]`, decoded onto `out`.
    fn entry(&self, r: &mut Reader, tag: &Tag, out: &mut Vec<Event>) -> Result<(), ProtocolError> {
        match r.read_head()? {
            Head::Array(2) => self.entry_body(r, tag, out),
            _ => Err(ProtocolError::Shape(
                "an entry must be an array [time, record] or [[time, metadata], record]",
            )),
        }
    }

    /// The time (with or without metadata) and record of an entry or a Message-mode message,
    /// pushed onto `out` as an event. Returned instead, the event was copied through two
    /// frames and the vector's push (see below for why that was slow).
    fn entry_body(
        &self,
        r: &mut Reader,
        tag: &Tag,
        out: &mut Vec<Event>,
    ) -> Result<(), ProtocolError> {
        let (time, metadata) = if let Some(raw) = r.read_fixext8(EVENT_TIME) {
            // The usual case (Fluent Bit, Docker, fluent-logger): an EventTime, read without
            // a parsed header.
            (event_time(raw), None)
        } else {
            match r.peek()? {
                Head::Array(2) => {
                    r.read_head()?;
                    let time = read_time(r)?;
                    let metadata = match r.peek()? {
                        Head::Map(_) if self.metadata_key.is_some() => Some(r.read_value()?),
                        Head::Map(_) | Head::Nil => {
                            r.skip_value()?;
                            None
                        }
                        _ => return Err(ProtocolError::Shape(
                            "the metadata of an event `[[time, metadata], record]` must be a map",
                        )),
                    };
                    (time, metadata)
                }
                Head::Array(_) => {
                    return Err(ProtocolError::Shape(
                        "an event's header must be a time or [time, metadata]",
                    ))
                }
                _ => (read_time(r)?, None),
            }
        };
        // The record's header is parsed inline here and again in `read_map_bytes` (a few
        // instructions): this check keeps the error's text about records.
        let raw = match r.peek()? {
            Head::Map(_) => r.read_map_bytes()?,
            _ => return Err(ProtocolError::Shape("a record must be a map")),
        };
        if let (Some(key), Some(metadata)) = (&self.metadata_key, metadata) {
            let mut record = Map::from_checked_msgpack(raw);
            if record.get(key).is_none() {
                record.push(key.clone(), metadata);
            }
            out.push(Event::new(tag.clone(), time, record));
            return Ok(());
        }
        // The usual case: the event is written straight into the vector's next slot. Through
        // `push` it was built on the stack with word-sized stores, then copied with 16-byte
        // loads, each of which waited for the stores it overlapped (store-to-load forwarding
        // fails across stores): the decoder's share of the no-ack bench's CPU was 4.3-4.9%
        // with those copies, 2.3-2.7% without.
        out.reserve(1);
        let len = out.len();
        // SAFETY: `reserve(1)` made room for one more element at `len`; it is written in full
        // before the length covers it.
        unsafe {
            out.as_mut_ptr().add(len).write(Event::new(
                tag.clone(),
                time,
                Map::from_checked_msgpack(raw),
            ));
            out.set_len(len + 1);
        }
        Ok(())
    }
}

/// Tells, at a two-element array in second place, Message mode with Fluent Bit's metadata
/// (`[time, {metadata}]`: a time first) from Forward mode with two entries (`[[...], [...]]`:
/// an entry first). Leaves the reader where it was.
fn is_time_with_metadata(r: &mut Reader) -> Result<bool, ProtocolError> {
    let at = r.position();
    r.read_head()?;
    let first = r.peek();
    r.seek(at);
    Ok(matches!(
        first?,
        Head::Int(_) | Head::UInt(_) | Head::Float(_) | Head::Ext { .. }
    ))
}

impl From<ReadError> for ProtocolError {
    fn from(e: ReadError) -> Self {
        ProtocolError::Msgpack(e)
    }
}

/// Inside a complete frame or payload, "incomplete" means the data is cut short: malformed.
fn truncated(e: ProtocolError, input_len: usize) -> ProtocolError {
    match e {
        ProtocolError::Msgpack(read) => ProtocolError::Msgpack(read.into_truncated(input_len)),
        other => other,
    }
}

/// The msgpack extension type of Fluentd's EventTime (8 bytes: seconds, nanoseconds).
const EVENT_TIME: i8 = 0;

/// An EventTime's payload: big-endian seconds and nanoseconds.
fn event_time(raw: [u8; 8]) -> EventTime {
    let secs = u32::from_be_bytes([raw[0], raw[1], raw[2], raw[3]]);
    let nanos = u32::from_be_bytes([raw[4], raw[5], raw[6], raw[7]]);
    EventTime::new(i64::from(secs), nanos)
}

fn read_time(r: &mut Reader) -> Result<EventTime, ProtocolError> {
    Ok(match r.read_head()? {
        Head::Int(secs) => EventTime::new(secs, 0),
        Head::Float(secs) => EventTime::from_f64(secs),
        Head::Ext {
            ty: EVENT_TIME,
            len: 8,
        } => event_time(r.read_array()?),
        Head::UInt(_) => return Err(ProtocolError::Shape("the time is out of range")),
        Head::Ext { .. } => {
            return Err(ProtocolError::Shape(
                "a time extension must be an EventTime: type 0 with 8 bytes",
            ))
        }
        _ => {
            return Err(ProtocolError::Shape(
                "the time must be an integer, a float or an EventTime",
            ))
        }
    })
}

/// Reads the option map when `present`.
fn read_options_if(r: &mut Reader, present: bool) -> Result<Options, ProtocolError> {
    let mut options = Options::default();
    if !present {
        return Ok(options);
    }
    let count = match r.read_head()? {
        Head::Nil => return Ok(options),
        Head::Map(count) => count,
        _ => {
            return Err(ProtocolError::Shape(
                "the option of a message must be a map or nil",
            ))
        }
    };
    for _ in 0..count {
        let Some(key) = r.read_str_or_bin()? else {
            r.skip_value()?;
            r.skip_value()?;
            continue;
        };
        match key.as_ref() {
            b"chunk" => {
                options.chunk = Some(
                    r.read_str_or_bin()?
                        .ok_or(ProtocolError::Shape("the option `chunk` must be a string"))?,
                );
            }
            b"compressed" => {
                options.compressed = Some(r.read_str_or_bin()?.ok_or(ProtocolError::Shape(
                    "the option `compressed` must be a string",
                ))?);
            }
            _ => r.skip_value()?,
        }
    }
    Ok(options)
}

/// Decompresses all gzip members of `payload`, refusing output over `limit` bytes.
fn gunzip(payload: &[u8], limit: usize) -> Result<Bytes, ProtocolError> {
    let mut out = Vec::with_capacity(payload.len().saturating_mul(4).min(limit));
    let mut decoder = MultiGzDecoder::new(payload).take(limit as u64 + 1);
    decoder.read_to_end(&mut out).map_err(ProtocolError::Gzip)?;
    if out.len() > limit {
        return Err(ProtocolError::DecompressedTooLarge { limit });
    }
    Ok(Bytes::from(out))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::Value;
    use std::io::Write;

    const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/firelens");

    fn hex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    fn events(m: Message) -> (Mode, Vec<Event>, Option<Bytes>) {
        match m {
            Message::Events {
                mode,
                events,
                chunk,
            } => (mode, events, chunk),
            Message::Keepalive => panic!("keepalive"),
        }
    }

    fn decode(frame: Vec<u8>) -> Result<Message, ProtocolError> {
        decode_message(Bytes::from(frame), &Limits::default())
    }

    fn s(v: &str) -> Value {
        Value::from(v)
    }

    // Independent encodings, built with the `rmp` crate rather than our writer.
    fn w_str(b: &mut Vec<u8>, v: &str) {
        rmp::encode::write_str(b, v).unwrap();
    }
    fn w_event_time(b: &mut Vec<u8>, secs: u32, nanos: u32, fixext: bool) {
        if fixext {
            rmp::encode::write_ext_meta(b, 8, 0).unwrap(); // d7 00
        } else {
            b.extend_from_slice(&[0xc7, 8, 0]); // ext8, which rmp never picks for 8 bytes
        }
        b.extend_from_slice(&secs.to_be_bytes());
        b.extend_from_slice(&nanos.to_be_bytes());
    }
    fn w_record(b: &mut Vec<u8>, pairs: &[(&str, &str)]) {
        rmp::encode::write_map_len(b, pairs.len() as u32).unwrap();
        for (k, v) in pairs {
            w_str(b, k);
            w_str(b, v);
        }
    }
    fn w_entry(b: &mut Vec<u8>, secs: u32, pairs: &[(&str, &str)]) {
        rmp::encode::write_array_len(b, 2).unwrap();
        w_event_time(b, secs, 7, true);
        w_record(b, pairs);
    }

    fn message_frame(time: impl Fn(&mut Vec<u8>), option: Option<&[u8]>) -> Vec<u8> {
        let mut b = Vec::new();
        rmp::encode::write_array_len(&mut b, 3 + u32::from(option.is_some())).unwrap();
        w_str(&mut b, "app.web");
        time(&mut b);
        w_record(&mut b, &[("log", "hello"), ("source", "stdout")]);
        if let Some(option) = option {
            b.extend_from_slice(option);
        }
        b
    }

    #[test]
    fn message_mode_with_every_time_form() {
        type WriteTime = Box<dyn Fn(&mut Vec<u8>)>;
        let cases: Vec<(WriteTime, EventTime)> = vec![
            (
                Box::new(|b| w_event_time(b, 1715679001, 123456789, true)),
                EventTime::new(1715679001, 123456789),
            ),
            (
                Box::new(|b| w_event_time(b, 1715679001, 123456789, false)),
                EventTime::new(1715679001, 123456789),
            ),
            (
                Box::new(|b| w_event_time(b, u32::MAX, 0, true)),
                EventTime::new(i64::from(u32::MAX), 0),
            ),
            (
                Box::new(|b| rmp::encode::write_uint(b, 1715679001).map(|_| ()).unwrap()),
                EventTime::new(1715679001, 0),
            ),
            (
                Box::new(|b| rmp::encode::write_sint(b, -5).map(|_| ()).unwrap()),
                EventTime::new(-5, 0),
            ),
            (
                Box::new(|b| rmp::encode::write_f64(b, 1715679001.5).unwrap()),
                EventTime::new(1715679001, 500_000_000),
            ),
            (
                Box::new(|b| rmp::encode::write_f32(b, 2.25).unwrap()),
                EventTime::new(2, 250_000_000),
            ),
        ];
        for (i, (time, expected)) in cases.into_iter().enumerate() {
            let (mode, evs, chunk) = events(decode(message_frame(time, Some(&[0x80]))).unwrap());
            assert_eq!(mode, Mode::Message, "case {i}");
            assert_eq!(chunk, None);
            assert_eq!(evs.len(), 1);
            assert_eq!(evs[0].time, expected, "case {i}");
            assert_eq!(&*evs[0].tag, "app.web");
            assert_eq!(evs[0].record.get(b"log"), Some(&s("hello")));
            assert_eq!(evs[0].record.get(b"source"), Some(&s("stdout")));
        }
    }

    #[test]
    fn option_missing_nil_or_with_chunk() {
        let time = |b: &mut Vec<u8>| w_event_time(b, 1, 2, true);
        for option in [None, Some(&[0xc0][..])] {
            let (_, evs, chunk) = events(decode(message_frame(time, option)).unwrap());
            assert_eq!((evs.len(), chunk), (1, None));
        }
        let mut option = Vec::new();
        rmp::encode::write_map_len(&mut option, 3).unwrap();
        w_str(&mut option, "size");
        rmp::encode::write_uint(&mut option, 1).unwrap();
        rmp::encode::write_uint(&mut option, 42).unwrap(); // a non-string key: skipped
        rmp::encode::write_array_len(&mut option, 1).unwrap();
        rmp::encode::write_nil(&mut option).unwrap();
        w_str(&mut option, "chunk");
        w_str(&mut option, "p8n9gmxTQVC8/nh2wlKKeQ==");
        let (_, _, chunk) = events(decode(message_frame(time, Some(&option))).unwrap());
        assert_eq!(chunk.as_deref(), Some(&b"p8n9gmxTQVC8/nh2wlKKeQ=="[..]));
    }

    #[test]
    fn forward_mode_from_python_msgpack() {
        let frame = hex("93a76170702e7765629292d70066432f190000000582a36c6f67a161a16e0192ce66432f1a82a36c6f67a162a66e657374656481a1789301c0c382a56368756e6ba859326831626d7378a473697a6502");
        let (mode, evs, chunk) = events(decode(frame).unwrap());
        assert_eq!(mode, Mode::Forward);
        assert_eq!(chunk.as_deref(), Some(&b"Y2h1bmsx"[..]));
        assert_eq!(evs.len(), 2);
        assert_eq!(evs[0].time, EventTime::new(1715679001, 5));
        assert_eq!(evs[0].record.get(b"n"), Some(&Value::Int(1)));
        assert_eq!(evs[1].time, EventTime::new(1715679002, 0));
        let nested = evs[1].record.get(b"nested").unwrap().as_map().unwrap();
        assert_eq!(
            nested.get(b"x"),
            Some(&Value::Array(vec![
                Value::Int(1),
                Value::Nil,
                Value::Bool(true)
            ]))
        );
        assert!(Arc::ptr_eq(&evs[0].tag, &evs[1].tag));
    }

    #[test]
    fn compressed_packed_forward_with_two_gzip_members_from_python() {
        let frame = hex("93a66170702e677ac4691f8b08000000000002039b749d21cd595f9a818181b171714e7efad2b4cca2e29249a71d6f4e387d5c8081012cb8ac3835393f2f05008f1e3d092c0000001f8b08000000000002039b749d21cd595fd67ad6c9ff8d8b73f2d39796646416a50000a309a70e1600000083aa636f6d70726573736564a4677a6970a56368756e6bc4020102a473697a6503");
        let (mode, evs, chunk) = events(decode(frame.clone()).unwrap());
        assert_eq!(mode, Mode::CompressedPackedForward);
        assert_eq!(chunk.as_deref(), Some(&[1u8, 2][..]));
        let logs: Vec<_> = evs.iter().map(|e| e.record.get(b"log").cloned()).collect();
        assert_eq!(
            logs,
            vec![Some(s("first")), Some(s("second")), Some(s("third"))]
        );
        let times: Vec<_> = evs.iter().map(|e| e.time).collect();
        assert_eq!(
            times,
            vec![
                EventTime::new(1715679003, 1),
                EventTime::new(1715679004, 250_000_000),
                EventTime::new(1715679005, 999_999_999)
            ]
        );
        // The decompressed payload is 44 + 22 bytes: a lower limit refuses it.
        let tight = Limits {
            max_decompressed_bytes: 65,
            ..Limits::default()
        };
        assert!(matches!(
            decode_message(Bytes::from(frame), &tight),
            Err(ProtocolError::DecompressedTooLarge { limit: 65 })
        ));
    }

    fn packed_frame(payload: &[u8], as_bin: bool, option: &[u8]) -> Vec<u8> {
        let mut b = Vec::new();
        rmp::encode::write_array_len(&mut b, 3).unwrap();
        w_str(&mut b, "packed");
        if as_bin {
            rmp::encode::write_bin(&mut b, payload).unwrap();
        } else {
            rmp::encode::write_str_len(&mut b, payload.len() as u32).unwrap();
            b.extend_from_slice(payload);
        }
        b.extend_from_slice(option);
        b
    }

    fn entries(n: u32) -> Vec<u8> {
        let mut payload = Vec::new();
        for i in 0..n {
            w_entry(&mut payload, 1000 + i, &[("log", &format!("line {i}"))]);
        }
        payload
    }

    #[test]
    fn packed_forward_as_bin_and_str_is_zero_copy() {
        let payload = entries(3);
        for as_bin in [true, false] {
            let frame = Bytes::from(packed_frame(&payload, as_bin, &[0x80]));
            let (mode, evs, _) = events(decode_message(frame.clone(), &Limits::default()).unwrap());
            assert_eq!(mode, Mode::PackedForward);
            assert_eq!(evs.len(), 3);
            assert_eq!(evs[2].record.get(b"log"), Some(&s("line 2")));
            assert_eq!(evs[2].time, EventTime::new(1002, 7));
            let Some(Value::Str(log)) = evs[0].record.get(b"log") else {
                panic!()
            };
            assert!(frame.as_ptr_range().contains(&log.as_ptr()));
        }
    }

    /// An entry in Fluent Bit 2.1+'s event format: `[[time, metadata], record]`.
    fn w_meta_entry(b: &mut Vec<u8>, secs: u32, meta: &[(&str, &str)], pairs: &[(&str, &str)]) {
        rmp::encode::write_array_len(b, 2).unwrap();
        w_meta_header(b, secs, meta);
        w_record(b, pairs);
    }
    fn w_meta_header(b: &mut Vec<u8>, secs: u32, meta: &[(&str, &str)]) {
        rmp::encode::write_array_len(b, 2).unwrap();
        w_event_time(b, secs, 9, true);
        w_record(b, meta);
    }

    fn meta_entries(n: u32) -> Vec<u8> {
        let mut payload = Vec::new();
        for i in 0..n {
            let meta: &[(&str, &str)] = if i == 1 { &[("otel", "x")] } else { &[] };
            w_meta_entry(
                &mut payload,
                2000 + i,
                meta,
                &[("log", &format!("line {i}"))],
            );
        }
        payload
    }

    fn with_metadata(frame: Vec<u8>, key: Option<&str>) -> (Mode, Vec<Event>, Option<Bytes>) {
        let mut decoder = Decoder::new(Limits::default())
            .with_metadata_key(key.map(|k| Bytes::copy_from_slice(k.as_bytes())));
        events(decoder.decode(Bytes::from(frame)).unwrap())
    }

    fn check_meta_events(evs: &[Event], key: Option<&str>) {
        assert_eq!(evs.len(), 3);
        for (i, ev) in evs.iter().enumerate() {
            assert_eq!(ev.time, EventTime::new(2000 + i as i64, 9));
            assert_eq!(ev.record.get(b"log"), Some(&s(&format!("line {i}"))));
            match key {
                None => assert_eq!(ev.record.len(), 1, "metadata dropped by default"),
                Some(k) => {
                    let meta = ev.record.get(k.as_bytes()).unwrap().as_map().unwrap();
                    let expected = if i == 1 { Some(&s("x")) } else { None };
                    assert_eq!(meta.get(b"otel"), expected);
                    assert_eq!(meta.len(), usize::from(i == 1));
                }
            }
        }
    }

    #[test]
    fn fluent_bit_event_format_in_forward_and_packed_modes() {
        let payload = meta_entries(3);
        for key in [None, Some("_meta")] {
            // Forward: [tag, [entries], option]
            let mut forward = Vec::new();
            rmp::encode::write_array_len(&mut forward, 3).unwrap();
            w_str(&mut forward, "fb");
            rmp::encode::write_array_len(&mut forward, 3).unwrap();
            forward.extend_from_slice(&payload);
            forward.extend_from_slice(&[0x80]);
            let (mode, evs, _) = with_metadata(forward, key);
            assert_eq!(mode, Mode::Forward);
            check_meta_events(&evs, key);

            let (mode, evs, _) = with_metadata(packed_frame(&payload, true, &[0x80]), key);
            assert_eq!(mode, Mode::PackedForward);
            check_meta_events(&evs, key);

            let mut option = Vec::new();
            rmp::encode::write_map_len(&mut option, 2).unwrap();
            w_str(&mut option, "compressed");
            w_str(&mut option, "gzip");
            w_str(&mut option, "chunk");
            w_str(&mut option, "abc");
            let gz = {
                let mut enc = flate2::write::GzEncoder::new(Vec::new(), Default::default());
                enc.write_all(&payload).unwrap();
                enc.finish().unwrap()
            };
            let (mode, evs, chunk) = with_metadata(packed_frame(&gz, true, &option), key);
            assert_eq!(mode, Mode::CompressedPackedForward);
            assert_eq!(chunk.as_deref(), Some(&b"abc"[..]));
            check_meta_events(&evs, key);
        }
    }

    #[test]
    fn fluent_bit_event_format_in_message_mode() {
        for (len, key) in [(3, None), (4, Some("_meta")), (3, Some("_meta"))] {
            let mut b = Vec::new();
            rmp::encode::write_array_len(&mut b, len).unwrap();
            w_str(&mut b, "fb");
            w_meta_header(&mut b, 2001, &[("otel", "x")]);
            w_record(&mut b, &[("log", "line 1")]);
            if len == 4 {
                option_with_chunk(&mut b, "c1");
            }
            let (mode, evs, chunk) = with_metadata(b, key);
            assert_eq!(mode, Mode::Message);
            assert_eq!(chunk.is_some(), len == 4);
            assert_eq!(evs.len(), 1);
            assert_eq!(evs[0].time, EventTime::new(2001, 9));
            let meta = evs[0].record.get(b"_meta");
            assert_eq!(meta.is_some(), key.is_some());
        }
    }

    fn option_with_chunk(b: &mut Vec<u8>, chunk: &str) {
        rmp::encode::write_map_len(b, 1).unwrap();
        w_str(b, "chunk");
        w_str(b, chunk);
    }

    #[test]
    fn forward_mode_with_two_entries_is_not_taken_for_metadata() {
        // [tag, [[t, r], [t, r]]]: the second element is a 2-array, as a Message-mode
        // [time, metadata] header would be; its first element is an entry, not a time.
        let mut b = Vec::new();
        rmp::encode::write_array_len(&mut b, 2).unwrap();
        w_str(&mut b, "fb");
        rmp::encode::write_array_len(&mut b, 2).unwrap();
        w_entry(&mut b, 1, &[("log", "a")]);
        w_meta_entry(&mut b, 2, &[], &[("log", "b")]);
        let (mode, evs, _) = with_metadata(b, None);
        assert_eq!(mode, Mode::Forward);
        assert_eq!(evs.len(), 2);
        assert_eq!(evs[1].record.get(b"log"), Some(&s("b")));
    }

    #[test]
    fn metadata_key_never_overwrites_a_record_field_and_bad_metadata_is_refused() {
        let mut payload = Vec::new();
        w_meta_entry(&mut payload, 1, &[("otel", "x")], &[("_meta", "mine")]);
        let (_, evs, _) = with_metadata(packed_frame(&payload, true, &[0x80]), Some("_meta"));
        assert_eq!(evs[0].record.get(b"_meta"), Some(&s("mine")));

        // [[time, "not a map"], record]
        let mut bad = Vec::new();
        rmp::encode::write_array_len(&mut bad, 2).unwrap();
        rmp::encode::write_array_len(&mut bad, 2).unwrap();
        w_event_time(&mut bad, 1, 0, true);
        w_str(&mut bad, "not a map");
        w_record(&mut bad, &[("log", "a")]);
        let err = decode(packed_frame(&bad, true, &[0x80])).unwrap_err();
        assert!(err.to_string().contains("metadata"), "{err}");
        // [[time], record]
        let mut bad = Vec::new();
        rmp::encode::write_array_len(&mut bad, 2).unwrap();
        rmp::encode::write_array_len(&mut bad, 1).unwrap();
        w_event_time(&mut bad, 1, 0, true);
        w_record(&mut bad, &[("log", "a")]);
        assert!(decode(packed_frame(&bad, true, &[0x80])).is_err());
    }

    #[test]
    fn gzip_compression_built_with_flate2_and_bad_compressions() {
        let mut gz = Vec::new();
        for part in [entries(2), entries(1)] {
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            e.write_all(&part).unwrap();
            gz.extend(e.finish().unwrap());
        }
        let mut option = Vec::new();
        rmp::encode::write_map_len(&mut option, 1).unwrap();
        w_str(&mut option, "compressed");
        w_str(&mut option, "gzip");
        let (mode, evs, _) = events(decode(packed_frame(&gz, true, &option)).unwrap());
        assert_eq!(mode, Mode::CompressedPackedForward);
        assert_eq!(evs.len(), 3);

        let mut corrupt = gz.clone();
        corrupt[20] ^= 0xff;
        assert!(matches!(
            decode(packed_frame(&corrupt, true, &option)),
            Err(ProtocolError::Gzip(_) | ProtocolError::Msgpack(_))
        ));

        let mut zstd = Vec::new();
        rmp::encode::write_map_len(&mut zstd, 1).unwrap();
        w_str(&mut zstd, "compressed");
        w_str(&mut zstd, "zstd");
        assert!(matches!(
            decode(packed_frame(&gz, true, &zstd)),
            Err(ProtocolError::UnsupportedCompression(c)) if c == "zstd"
        ));
    }

    #[test]
    fn keepalive_and_shape_errors() {
        assert_eq!(decode(vec![0xc0]).unwrap(), Message::Keepalive);
        let bad: [&[u8]; 7] = [
            &[0xc0, 0xc0],                         // two objects in one frame
            &[0x01],                               // not an array
            &[0x91, 0xa1, b't'],                   // one element
            &[0x92, 0xa1, b't', 0xc0],             // nil where the time/entries go
            &[0x93, 0xa1, b't', 0x01, 0x01],       // record not a map
            &[0x93, 0x01, 0x01, 0x80],             // tag not a string
            &[0x94, 0xa1, b't', 0x01, 0x80, 0x01], // option not a map
        ];
        for frame in bad {
            assert!(
                matches!(decode(frame.to_vec()), Err(ProtocolError::Shape(_))),
                "{frame:?}"
            );
        }
        // An EventTime must be ext type 0 with 8 bytes.
        let wrong_ext = message_frame(
            |b| {
                rmp::encode::write_ext_meta(b, 4, 0).unwrap();
                b.extend_from_slice(&[0; 4]);
            },
            None,
        );
        assert!(matches!(decode(wrong_ext), Err(ProtocolError::Shape(_))));
    }

    #[test]
    fn invalid_utf8_in_str_passes_through_byte_exact() {
        let mut b = Vec::new();
        rmp::encode::write_array_len(&mut b, 4).unwrap();
        rmp::encode::write_str_len(&mut b, 3).unwrap();
        b.extend_from_slice(b"t\xff.");
        w_event_time(&mut b, 1, 0, true);
        rmp::encode::write_map_len(&mut b, 1).unwrap();
        w_str(&mut b, "log");
        let raw = [b'x', 0xe2, 0x82, 0xff, 0x00, b'"'];
        rmp::encode::write_str_len(&mut b, raw.len() as u32).unwrap();
        b.extend_from_slice(&raw);
        b.push(0x80);
        let (_, evs, _) = events(decode(b).unwrap());
        assert_eq!(&*evs[0].tag, "t\u{FFFD}.");
        assert_eq!(
            evs[0].record.get(b"log"),
            Some(&Value::Str(Bytes::copy_from_slice(&raw)))
        );
    }

    /// Valid frames of every mode, for the truncation test.
    fn sample_frames() -> Vec<Vec<u8>> {
        let docker = std::fs::read(format!("{FIXTURES}/docker-fluentd-frames.bin")).unwrap();
        vec![
            docker[..311].to_vec(),
            hex("93a76170702e7765629292d70066432f190000000582a36c6f67a161a16e0192ce66432f1a82a36c6f67a162a66e657374656481a1789301c0c382a56368756e6ba859326831626d7378a473697a6502"),
            hex("93a66170702e677ac4691f8b08000000000002039b749d21cd595f9a818181b171714e7efad2b4cca2e29249a71d6f4e387d5c8081012cb8ac3835393f2f05008f1e3d092c0000001f8b08000000000002039b749d21cd595fd67ad6c9ff8d8b73f2d39796646416a50000a309a70e1600000083aa636f6d70726573736564a4677a6970a56368756e6bc4020102a473697a6503"),
            packed_frame(&entries(4), true, &[0xc0]),
        ]
    }

    #[test]
    fn truncation_at_every_offset_is_incomplete_never_malformed() {
        let limits = Limits::default();
        for frame in sample_frames() {
            assert_eq!(
                frame_len(&frame, &limits).unwrap(),
                FrameStatus::Complete(frame.len())
            );
            for cut in 0..frame.len() {
                match frame_len(&frame[..cut], &limits) {
                    Ok(FrameStatus::Incomplete { needed }) => {
                        assert!(needed > cut && needed <= frame.len(), "cut {cut}: {needed}");
                    }
                    other => panic!("cut {cut} of {}: {other:?}", frame.len()),
                }
                // Decoding a cut frame is refused, without panicking.
                assert!(decode(frame[..cut].to_vec()).is_err());
            }
        }
    }

    #[test]
    fn garbage_deep_and_huge_headers_are_refused_without_allocating() {
        let limits = Limits::default();
        for garbage in [&[0xc1][..], &[0x94, 0xa1, b't', 0xc1]] {
            assert!(matches!(
                frame_len(garbage, &limits),
                Err(ProtocolError::Msgpack(ReadError::Malformed { .. }))
            ));
        }
        let mut deep = vec![0x93, 0xa1, b't', 0x01];
        deep.extend(std::iter::repeat_n(0x81u8, 10_000));
        assert!(matches!(
            frame_len(&deep, &limits),
            Err(ProtocolError::Msgpack(ReadError::Malformed { .. }))
        ));
        assert!(decode(deep).is_err());
        // Length headers far beyond the frame limit: refused as soon as the header is seen.
        let huge: [&[u8]; 3] = [
            &[0x93, 0xa1, b't', 0xdb, 0xff, 0xff, 0xff, 0xff],
            &[0x93, 0xa1, b't', 0xdd, 0xff, 0xff, 0xff, 0xff],
            &[0x93, 0xa1, b't', 0xdf, 0x7f, 0xff, 0xff, 0xff],
        ];
        for h in huge {
            assert!(matches!(
                frame_len(h, &limits),
                Err(ProtocolError::FrameTooLarge { .. })
            ));
            // Handed over as a "complete" frame anyway, the decoder allocates nothing for it.
            assert!(decode(h.to_vec()).is_err());
        }
    }

    #[test]
    fn finder_resumes_across_reads_and_respects_the_frame_limit() {
        let stream = std::fs::read(format!("{FIXTURES}/docker-fluentd-frames.bin")).unwrap();
        let mut finder = FrameFinder::new(&Limits::default());
        let (mut offset, mut received, mut frames) = (0usize, 0usize, Vec::new());
        while offset < stream.len() {
            match finder.find(&stream[offset..received]).unwrap() {
                FrameStatus::Complete(len) => {
                    frames.push((offset, len));
                    offset += len;
                }
                FrameStatus::Incomplete { needed } => {
                    assert!(offset + needed > received);
                    received = (received + 1000).min(stream.len());
                }
            }
        }
        assert_eq!(
            frames,
            vec![
                (0, 311),
                (311, 278),
                (589, 16731),
                (17320, 16731),
                (34051, 7578)
            ]
        );
        let small = Limits {
            max_frame_bytes: 1000,
            ..Limits::default()
        };
        assert!(matches!(
            decode_message(Bytes::copy_from_slice(&stream[589..17320]), &small),
            Err(ProtocolError::FrameTooLarge {
                size: 16731,
                limit: 1000
            })
        ));
        // Refused as soon as the 16 KiB `log` header shows the frame cannot fit.
        assert!(matches!(
            frame_len(&stream[589..2000], &small),
            Err(ProtocolError::FrameTooLarge { size, limit: 1000 }) if size > 16384 && size <= 16731
        ));
    }

    #[test]
    fn ack_matches_python_msgpack() {
        assert_eq!(encode_ack(b"Y2h1bmsx"), hex("81a361636ba859326831626d7378"));
    }

    #[test]
    fn decoder_reuses_a_repeated_tag() {
        let frame = Bytes::from(message_frame(|b| w_event_time(b, 1, 0, true), None));
        let mut decoder = Decoder::new(Limits::default());
        let (_, a, _) = events(decoder.decode(frame.clone()).unwrap());
        let (_, b, _) = events(decoder.decode(frame).unwrap());
        assert!(Arc::ptr_eq(&a[0].tag, &b[0].tag));
    }

    fn sha256_hex(data: &[u8]) -> String {
        use sha2::Digest;
        sha2::Sha256::digest(data)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }

    fn bytes_hex(data: &[u8]) -> String {
        data.iter().map(|b| format!("{b:02x}")).collect()
    }

    #[test]
    fn docker_frames_decode_into_the_expected_records() {
        let stream =
            Bytes::from(std::fs::read(format!("{FIXTURES}/docker-fluentd-frames.bin")).unwrap());
        let expected: serde_json::Value = serde_json::from_slice(
            &std::fs::read(format!("{FIXTURES}/docker-fluentd-frames.expected.json")).unwrap(),
        )
        .unwrap();
        assert_eq!(
            stream.len() as u64,
            expected["total_bytes"].as_u64().unwrap()
        );
        let limits = Limits::default();
        let mut decoder = Decoder::new(limits);
        let mut offset = 0;
        let mut joined = Vec::new();
        let frames = expected["frames"].as_array().unwrap();
        assert_eq!(
            frames.len() as u64,
            expected["frame_count"].as_u64().unwrap()
        );
        for want in frames {
            let FrameStatus::Complete(len) = frame_len(&stream[offset..], &limits).unwrap() else {
                panic!("incomplete frame at {offset}")
            };
            assert_eq!(offset as u64, want["offset"].as_u64().unwrap());
            assert_eq!(len as u64, want["length"].as_u64().unwrap());
            let (mode, evs, chunk) =
                events(decoder.decode(stream.slice(offset..offset + len)).unwrap());
            offset += len;
            assert_eq!(mode, Mode::Message);
            assert_eq!(chunk, None, "Docker sends an empty option map");
            assert_eq!(want["option"], serde_json::json!({}));
            let [event] = &evs[..] else {
                panic!("one event per frame")
            };
            assert_eq!(&*event.tag, want["tag"].as_str().unwrap());
            assert_eq!(event.time.secs, want["time"]["sec"].as_i64().unwrap());
            assert_eq!(
                u64::from(event.time.nanos),
                want["time"]["nsec"].as_u64().unwrap()
            );
            let want_record = want["record"].as_object().unwrap();
            let log = event.record.get(b"log").and_then(Value::as_bytes).unwrap();
            // Every field but `log` is listed; `log` is listed too unless omitted for size.
            let listed = want_record.len() + usize::from(!want_record.contains_key("log"));
            assert_eq!(event.record.len(), listed);
            for (key, value) in want_record {
                assert_eq!(
                    event.record.get(key.as_bytes()),
                    Some(&s(value.as_str().unwrap())),
                    "{key}"
                );
            }
            assert_eq!(log.len() as u64, want["log_len"].as_u64().unwrap());
            assert_eq!(sha256_hex(log), want["log_sha256"].as_str().unwrap());
            assert_eq!(bytes_hex(&log[..8]), want["log_head_hex"].as_str().unwrap());
            assert_eq!(
                bytes_hex(&log[log.len() - 8..]),
                want["log_tail_hex"].as_str().unwrap()
            );
            assert_eq!(
                std::str::from_utf8(log).is_ok(),
                want["log_valid_utf8"].as_bool().unwrap()
            );
            if event.record.get(b"partial_message").is_some() {
                joined.extend_from_slice(log);
            }
        }
        assert_eq!(offset, stream.len());
        let whole = &expected["reassembled_long_line"];
        assert_eq!(joined.len() as u64, whole["length"].as_u64().unwrap());
        assert_eq!(sha256_hex(&joined), whole["sha256"].as_str().unwrap());
        assert!(std::str::from_utf8(&joined).is_ok());
    }
}
