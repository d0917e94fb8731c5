//! One frame of the write-ahead log: a batch of records of one tag with a checksum.
//!
//! ```text
//! len: u32 LE | crc32: u32 LE | written_ms: u64 LE | payload (len bytes)
//! payload = msgpack: tag (str), count (uint), then count × (secs (int), nanos (uint), record (map))
//! ```
//!
//! The CRC covers `written_ms` and the payload, so a torn write (a crash in the middle of an
//! append) or a flipped bit is detected when the log is read back.

use bytes::Bytes;

use crate::event::{Event, EventTime, Tag};
use crate::msgpack::read::{parse_head, Head, Reader};
use crate::msgpack::write::{write_int, write_map, write_str, write_uint, WriteError};

/// Bytes before the payload.
pub const HEADER: usize = 16;

/// A frame longer than this is treated as corrupt (a length field read from garbage).
pub const MAX_PAYLOAD: usize = 512 * 1024 * 1024;

/// Encodes a batch into `out` (cleared first), header included.
pub fn encode(
    out: &mut Vec<u8>,
    tag: &str,
    events: &[Event],
    written_ms: u64,
) -> Result<(), WriteError> {
    out.clear();
    out.extend_from_slice(&[0u8; HEADER]);
    write_str(out, tag.as_bytes())?;
    write_uint(out, events.len() as u64);
    for e in events {
        write_int(out, e.time.secs);
        write_uint(out, u64::from(e.time.nanos));
        write_map(out, &e.record)?;
    }
    let len = out.len() - HEADER;
    if len > MAX_PAYLOAD {
        return Err(WriteError {
            what: "disk buffer frame",
            len,
        });
    }
    out[8..16].copy_from_slice(&written_ms.to_le_bytes());
    let crc = crc32fast::hash(&out[8..]);
    out[0..4].copy_from_slice(&(len as u32).to_le_bytes());
    out[4..8].copy_from_slice(&crc.to_le_bytes());
    Ok(())
}

/// A parsed frame header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub len: usize,
    pub crc: u32,
    pub written_ms: u64,
}

impl Header {
    pub fn parse(h: &[u8; HEADER]) -> Result<Header, String> {
        let len = u32::from_le_bytes([h[0], h[1], h[2], h[3]]) as usize;
        if len > MAX_PAYLOAD {
            return Err(format!("frame length {len} is implausible"));
        }
        Ok(Header {
            len,
            crc: u32::from_le_bytes([h[4], h[5], h[6], h[7]]),
            written_ms: u64::from_le_bytes([h[8], h[9], h[10], h[11], h[12], h[13], h[14], h[15]]),
        })
    }

    /// Whether `payload` matches the checksum.
    pub fn verify(&self, payload: &[u8]) -> bool {
        let mut h = crc32fast::Hasher::new();
        h.update(&self.written_ms.to_le_bytes());
        h.update(payload);
        h.finalize() == self.crc
    }
}

fn int(r: &mut Reader) -> Result<i64, String> {
    match r.read_head().map_err(|e| e.to_string())? {
        Head::Int(i) => Ok(i),
        other => Err(format!("expected an integer, found {other:?}")),
    }
}

/// How many records a payload holds, without decoding (or copying) them: the tag's header is
/// read and its bytes skipped, whatever its length (forward tags have no length limit).
pub fn count(payload: &[u8]) -> Result<usize, String> {
    let (tag_len, head_len) = match parse_head(payload, 0).map_err(|e| e.to_string())? {
        (Head::Str(n) | Head::Bin(n), head_len) => (n as usize, head_len),
        _ => return Err("expected the tag".to_string()),
    };
    let at = head_len
        .checked_add(tag_len)
        .filter(|&at| at <= payload.len())
        .ok_or("the tag runs past the end of the frame")?;
    match parse_head(payload, at).map_err(|e| e.to_string())? {
        (Head::Int(n), _) => usize::try_from(n).map_err(|_| "negative record count".to_string()),
        (other, _) => Err(format!("expected an integer, found {other:?}")),
    }
}

/// Decodes a payload into its tag and records. The records' strings share `payload`.
pub fn decode(payload: Bytes) -> Result<(Tag, Vec<Event>), String> {
    let mut r = Reader::new(payload);
    let tag = r
        .read_str_or_bin()
        .map_err(|e| e.to_string())?
        .ok_or("expected the tag")?;
    let tag: Tag = std::str::from_utf8(&tag)
        .map_err(|_| "the tag is not UTF-8".to_string())?
        .into();
    let n = usize::try_from(int(&mut r)?).map_err(|_| "negative record count".to_string())?;
    let mut events = Vec::with_capacity(n.min(1 << 16));
    for _ in 0..n {
        let secs = int(&mut r)?;
        let nanos = u32::try_from(int(&mut r)?).map_err(|_| "nanoseconds out of range")?;
        let record = r.read_map().map_err(|e| e.to_string())?;
        events.push(Event::new(tag.clone(), EventTime::new(secs, nanos), record));
    }
    if !r.is_empty() {
        return Err("trailing bytes after the records".to_string());
    }
    Ok((tag, events))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{Map, Value};

    #[test]
    fn round_trip_and_checksum() {
        let mut m = Map::new();
        m.insert("seq", Value::Int(7));
        m.insert("log", Value::string("héllo"));
        let ev = Event::new("app.web".into(), EventTime::new(1700000000, 123), m);
        let mut buf = Vec::new();
        encode(&mut buf, "app.web", &[ev.clone(), ev.clone()], 42).unwrap();
        let mut h = [0u8; HEADER];
        h.copy_from_slice(&buf[..HEADER]);
        let header = Header::parse(&h).unwrap();
        assert_eq!(header.len, buf.len() - HEADER);
        assert_eq!(header.written_ms, 42);
        assert!(header.verify(&buf[HEADER..]));
        assert_eq!(count(&buf[HEADER..]).unwrap(), 2);
        let (tag, events) = decode(Bytes::copy_from_slice(&buf[HEADER..])).unwrap();
        assert_eq!(&*tag, "app.web");
        assert_eq!(events, vec![ev.clone(), ev]);
        let mut bad = buf[HEADER..].to_vec();
        bad[3] ^= 1;
        assert!(!header.verify(&bad));
    }

    #[test]
    fn count_reads_past_a_long_tag_and_refuses_a_truncated_one() {
        let mut m = Map::new();
        m.insert("log", Value::string("x"));
        let tag = "a".repeat(70_000);
        let ev = Event::new(tag.as_str().into(), EventTime::new(1, 0), m);
        let mut buf = Vec::new();
        encode(&mut buf, &tag, &[ev.clone(), ev.clone(), ev], 1).unwrap();
        assert_eq!(count(&buf[HEADER..]).unwrap(), 3);
        assert!(count(&buf[HEADER..HEADER + 1000]).is_err());
        assert!(count(&[]).is_err());
    }
}
