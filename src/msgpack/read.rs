//! Zero-copy msgpack decoding, safe against hostile input.
//!
//! Two tools share one header parser:
//! - [`Scanner`] finds where the first complete object of a stream buffer ends, without building
//!   values. It is resumable: after an [`ReadError::Incomplete`] it keeps its place, so a 16 MiB
//!   frame arriving in 64 KiB reads is scanned once in total, not once per read. Its `needed` is a
//!   lower bound on the complete length (the exact end of a string whose header has arrived, plus
//!   one byte for every element a container still promises), so a caller can wait for that many
//!   bytes before calling again.
//! - [`Reader`] decodes values out of a [`Bytes`] buffer; strings, binaries and extension payloads
//!   are `Bytes::slice`s of it, never copies.
//!
//! Both refuse nesting deeper than [`MAX_DEPTH`] containers (so the recursive [`Reader`] cannot
//! exhaust the stack), and neither trusts a length header for allocation: a container claiming
//! more elements than there are bytes left is reported as incomplete before anything is
//! allocated, and vectors are pre-sized to at most [`PREALLOC_LIMIT`] elements, growing only as
//! elements actually decode.

use bytes::Bytes;

use crate::event::{Map, Value};

/// Deepest nesting of arrays and maps accepted. Log records nest a few levels; anything near
/// this is an attack or a bug, and refusing it keeps recursion bounded.
pub const MAX_DEPTH: usize = 64;

/// Most elements reserved up front for an array or map, whatever its header claims.
pub const PREALLOC_LIMIT: usize = 256;

/// Why msgpack input could not be decoded (yet).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ReadError {
    /// The input stops before the value does. `needed` is the least total input length (counted
    /// from the start of the buffer given) at which another attempt can make progress.
    #[error("msgpack input is incomplete: at least {needed} bytes are needed")]
    Incomplete { needed: usize },
    /// The input can never decode, whatever follows.
    #[error("malformed msgpack at byte {offset}: {reason}")]
    Malformed { offset: usize, reason: &'static str },
}

impl ReadError {
    fn malformed(offset: usize, reason: &'static str) -> Self {
        ReadError::Malformed { offset, reason }
    }

    /// For input known to be complete (a whole frame, a decompressed payload): a value running
    /// past its end is malformed, not worth waiting for.
    pub fn into_truncated(self, input_len: usize) -> Self {
        match self {
            ReadError::Incomplete { .. } => ReadError::Malformed {
                offset: input_len,
                reason: "the input ends in the middle of a value",
            },
            malformed => malformed,
        }
    }
}

/// The header of one msgpack value: its type and, for strings, binaries, extensions and
/// containers, its length. Integers that fit `i64` are `Int`; only larger ones are `UInt`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Head {
    Nil,
    Bool(bool),
    Int(i64),
    UInt(u64),
    Float(f64),
    Str(u32),
    Bin(u32),
    Ext { ty: i8, len: u32 },
    Array(u32),
    Map(u32),
}

impl Head {
    /// Bytes following the header that belong to this value itself (not to child values).
    pub fn payload_len(&self) -> usize {
        match *self {
            Head::Str(n) | Head::Bin(n) | Head::Ext { len: n, .. } => n as usize,
            _ => 0,
        }
    }

    /// Child values that follow: elements of an array, keys and values of a map.
    fn child_count(&self) -> u64 {
        match *self {
            Head::Array(n) => u64::from(n),
            Head::Map(n) => 2 * u64::from(n),
            _ => 0,
        }
    }
}

/// Reads `N` bytes right after the marker at `pos`.
fn after_marker<const N: usize>(buf: &[u8], pos: usize) -> Result<[u8; N], ReadError> {
    array_at(buf, pos + 1)
}

/// The `N` bytes at `start`, copied.
fn array_at<const N: usize>(buf: &[u8], start: usize) -> Result<[u8; N], ReadError> {
    match buf.get(start..start + N) {
        Some(b) => {
            let mut out = [0u8; N];
            out.copy_from_slice(b);
            Ok(out)
        }
        None => Err(ReadError::Incomplete {
            needed: start.saturating_add(N),
        }),
    }
}

/// Parses the header at `pos`, returning it and its length in bytes.
///
/// The headers of nearly every log record (fixmaps, short keys, small integers, strings under
/// 256 bytes) are read inline here, where the caller's `match` on the result folds into the
/// parse; the rest go through [`parse_any_head`]. This runs a dozen times per record.
#[inline]
pub fn parse_head(buf: &[u8], pos: usize) -> Result<(Head, usize), ReadError> {
    if let Some(&marker) = buf.get(pos) {
        match marker {
            0x00..=0x7f => return Ok((Head::Int(i64::from(marker)), 1)),
            0x80..=0x8f => return Ok((Head::Map(u32::from(marker & 0x0f)), 1)),
            0x90..=0x9f => return Ok((Head::Array(u32::from(marker & 0x0f)), 1)),
            0xa0..=0xbf => return Ok((Head::Str(u32::from(marker & 0x1f)), 1)),
            0xd9 => {
                if let Some(&len) = buf.get(pos + 1) {
                    return Ok((Head::Str(u32::from(len)), 2));
                }
            }
            _ => {}
        }
    }
    parse_any_head(buf, pos)
}

/// Total length (marker and payload) of the scalar each marker starts when that length is
/// fixed: integers, floats, nil, booleans, fixext. 0 for strings, binaries, ext 8/16/32,
/// containers and the unused 0xc1, whose length (or refusal) needs the header parsed.
const FIXED_SCALAR_LEN: [u8; 256] = {
    let mut table = [0u8; 256];
    let mut marker = 0;
    while marker < 256 {
        table[marker] = match marker {
            0x00..=0x7f | 0xc0 | 0xc2 | 0xc3 | 0xe0..=0xff => 1,
            0xcc | 0xd0 => 2,
            0xcd | 0xd1 | 0xd4 => 3,
            0xd5 => 4,
            0xca | 0xce | 0xd2 => 5,
            0xd6 => 6,
            0xcb | 0xcf | 0xd3 => 9,
            0xd7 => 10,
            0xd8 => 18,
            _ => 0,
        };
        marker += 1;
    }
    table
};

/// Where the value at `pos` ends when it is a scalar of fixed length (see
/// [`FIXED_SCALAR_LEN`]): a table lookup instead of a parsed header, for the numbers and times
/// that [`check_value`] skips. `None` for anything else.
#[inline]
fn fixed_scalar_end(buf: &[u8], pos: usize) -> Option<Result<usize, ReadError>> {
    let len = usize::from(FIXED_SCALAR_LEN[usize::from(*buf.get(pos)?)]);
    if len == 0 {
        return None;
    }
    Some(within(buf, pos + len))
}

/// [`parse_head`] for every marker, out of line.
#[inline(never)]
fn parse_any_head(buf: &[u8], pos: usize) -> Result<(Head, usize), ReadError> {
    let Some(&marker) = buf.get(pos) else {
        return Err(ReadError::Incomplete { needed: pos + 1 });
    };
    let be16 = |b: [u8; 2]| u32::from(u16::from_be_bytes(b));
    Ok(match marker {
        0x00..=0x7f => (Head::Int(i64::from(marker)), 1),
        0x80..=0x8f => (Head::Map(u32::from(marker & 0x0f)), 1),
        0x90..=0x9f => (Head::Array(u32::from(marker & 0x0f)), 1),
        0xa0..=0xbf => (Head::Str(u32::from(marker & 0x1f)), 1),
        0xc0 => (Head::Nil, 1),
        0xc1 => return Err(ReadError::malformed(pos, "marker 0xc1 is never used")),
        0xc2 => (Head::Bool(false), 1),
        0xc3 => (Head::Bool(true), 1),
        0xc4 => (Head::Bin(u32::from(after_marker::<1>(buf, pos)?[0])), 2),
        0xc5 => (Head::Bin(be16(after_marker(buf, pos)?)), 3),
        0xc6 => (Head::Bin(u32::from_be_bytes(after_marker(buf, pos)?)), 5),
        0xc7 => {
            let [len, ty] = after_marker::<2>(buf, pos)?;
            (
                Head::Ext {
                    ty: ty as i8,
                    len: u32::from(len),
                },
                3,
            )
        }
        0xc8 => {
            let [a, b, ty] = after_marker::<3>(buf, pos)?;
            (
                Head::Ext {
                    ty: ty as i8,
                    len: be16([a, b]),
                },
                4,
            )
        }
        0xc9 => {
            let [a, b, c, d, ty] = after_marker::<5>(buf, pos)?;
            (
                Head::Ext {
                    ty: ty as i8,
                    len: u32::from_be_bytes([a, b, c, d]),
                },
                6,
            )
        }
        0xca => (
            Head::Float(f64::from(f32::from_be_bytes(after_marker(buf, pos)?))),
            5,
        ),
        0xcb => (Head::Float(f64::from_be_bytes(after_marker(buf, pos)?)), 9),
        0xcc => (Head::Int(i64::from(after_marker::<1>(buf, pos)?[0])), 2),
        0xcd => (
            Head::Int(i64::from(u16::from_be_bytes(after_marker(buf, pos)?))),
            3,
        ),
        0xce => (
            Head::Int(i64::from(u32::from_be_bytes(after_marker(buf, pos)?))),
            5,
        ),
        0xcf => {
            let u = u64::from_be_bytes(after_marker(buf, pos)?);
            match i64::try_from(u) {
                Ok(i) => (Head::Int(i), 9),
                Err(_) => (Head::UInt(u), 9),
            }
        }
        0xd0 => (
            Head::Int(i64::from(i8::from_be_bytes(after_marker(buf, pos)?))),
            2,
        ),
        0xd1 => (
            Head::Int(i64::from(i16::from_be_bytes(after_marker(buf, pos)?))),
            3,
        ),
        0xd2 => (
            Head::Int(i64::from(i32::from_be_bytes(after_marker(buf, pos)?))),
            5,
        ),
        0xd3 => (Head::Int(i64::from_be_bytes(after_marker(buf, pos)?)), 9),
        0xd4..=0xd8 => {
            let [ty] = after_marker::<1>(buf, pos)?;
            let len = 1u32 << (marker - 0xd4);
            (Head::Ext { ty: ty as i8, len }, 2)
        }
        0xd9 => (Head::Str(u32::from(after_marker::<1>(buf, pos)?[0])), 2),
        0xda => (Head::Str(be16(after_marker(buf, pos)?)), 3),
        0xdb => (Head::Str(u32::from_be_bytes(after_marker(buf, pos)?)), 5),
        0xdc => (Head::Array(be16(after_marker(buf, pos)?)), 3),
        0xdd => (Head::Array(u32::from_be_bytes(after_marker(buf, pos)?)), 5),
        0xde => (Head::Map(be16(after_marker(buf, pos)?)), 3),
        0xdf => (Head::Map(u32::from_be_bytes(after_marker(buf, pos)?)), 5),
        0xe0..=0xff => (Head::Int(i64::from(marker as i8)), 1),
    })
}

/// Converts a byte count computed in `u64` to `usize`, saturating (only matters on 32-bit).
fn saturate(n: u64) -> usize {
    usize::try_from(n).unwrap_or(usize::MAX)
}

/// Finds the end of the first complete msgpack object in a growing buffer. See the module docs.
///
/// Between calls that return [`ReadError::Incomplete`], pass the same buffer with bytes only
/// appended; after a complete object (or an error) the scanner starts over by itself, ready for
/// the next object at offset 0 of the buffer it is given next.
#[derive(Clone, Debug)]
pub struct Scanner {
    /// Start of the next value to scan.
    pos: usize,
    /// Open containers.
    depth: usize,
    /// For each open container, child values not yet scanned (the current one included).
    remaining: [u64; MAX_DEPTH],
    /// Sum of `remaining`.
    pending: u64,
}

impl Default for Scanner {
    fn default() -> Self {
        Scanner::new()
    }
}

impl Scanner {
    pub fn new() -> Self {
        Scanner {
            pos: 0,
            depth: 0,
            remaining: [0; MAX_DEPTH],
            pending: 0,
        }
    }

    /// Forgets a partial scan (e.g. when the buffer was replaced).
    pub fn reset(&mut self) {
        self.pos = 0;
        self.depth = 0;
        self.pending = 0;
    }

    /// Bytes of `buf` already scanned, i.e. not scanned again by the next call.
    pub fn progress(&self) -> usize {
        self.pos
    }

    /// Returns the length of the first complete object in `buf`, or how much input it needs
    /// at least, or why it can never be one.
    pub fn scan(&mut self, buf: &[u8]) -> Result<usize, ReadError> {
        let result = self.scan_inner(buf);
        if matches!(result, Ok(_) | Err(ReadError::Malformed { .. })) {
            self.reset();
        }
        result
    }

    fn scan_inner(&mut self, buf: &[u8]) -> Result<usize, ReadError> {
        loop {
            let pos = self.pos;
            // Values still promised after the one at `pos`, one byte each at least: all those
            // counted in `pending` except the current one and, for each enclosing level, the
            // open container whose header was read already.
            let after = self.pending.saturating_sub(self.depth as u64);
            let (head, head_len) = parse_head(buf, pos).map_err(|e| match e {
                ReadError::Incomplete { needed } => ReadError::Incomplete {
                    needed: saturate(needed as u64 + after),
                },
                malformed => malformed,
            })?;
            let end = pos as u64 + head_len as u64 + head.payload_len() as u64;
            if end > buf.len() as u64 {
                return Err(ReadError::Incomplete {
                    needed: saturate(end + after),
                });
            }
            let children = head.child_count();
            if children > 0 && self.depth == MAX_DEPTH {
                return Err(ReadError::malformed(
                    pos,
                    "arrays and maps are nested deeper than 64 levels",
                ));
            }
            self.pos = end as usize;
            if children > 0 {
                self.remaining[self.depth] = children;
                self.depth += 1;
                self.pending += children;
                continue;
            }
            // A value is complete: count it off, closing every container it completes.
            loop {
                if self.depth == 0 {
                    return Ok(self.pos);
                }
                let top = &mut self.remaining[self.depth - 1];
                *top -= 1;
                self.pending -= 1;
                if *top > 0 {
                    break;
                }
                self.depth -= 1;
            }
        }
    }
}

/// Checks the value at `pos` as [`Reader`] would decode it, without building anything: it is
/// complete, nested at most [`MAX_DEPTH`] deep (counting the `depth` containers around it), and
/// no map key is an array or a map. Returns where the value ends. A map that passes is kept
/// undecoded ([`Map::from_checked_msgpack`]) and parsed later by [`parse_checked_map`], which
/// then cannot fail.
pub fn check_value(buf: &[u8], pos: usize, depth: usize) -> Result<usize, ReadError> {
    let (head, head_len) = parse_head(buf, pos)?;
    check_after_head(buf, pos, head, head_len, depth)
}

/// [`check_value`] for a value whose header (`head`, `head_len` bytes at `pos`) is parsed.
fn check_after_head(
    buf: &[u8],
    pos: usize,
    head: Head,
    head_len: usize,
    depth: usize,
) -> Result<usize, ReadError> {
    let mut end = pos + head_len;
    match head {
        Head::Array(n) | Head::Map(n) => {
            if depth >= MAX_DEPTH {
                return Err(ReadError::malformed(
                    pos,
                    "arrays and maps are nested deeper than 64 levels",
                ));
            }
            let children = head.child_count();
            if children > (buf.len() - end) as u64 {
                return Err(ReadError::Incomplete {
                    needed: saturate(end as u64 + children),
                });
            }
            let is_map = matches!(head, Head::Map(_));
            for _ in 0..n {
                if is_map {
                    // A key is a scalar: skipped here from its one parsed header.
                    let (key, key_head_len) = parse_head(buf, end)?;
                    if let Head::Array(_) | Head::Map(_) = key {
                        return Err(ReadError::malformed(
                            end,
                            "a map key is an array or a map; keys must be strings or scalars",
                        ));
                    }
                    end = scalar_end(buf, end + key_head_len, &key)?;
                }
                end = check_child(buf, end, depth)?;
            }
        }
        _ => end = scalar_end(buf, end, &head)?,
    }
    Ok(end)
}

/// [`check_value`] for an element or map value at `pos` inside a container `depth` deep.
/// Scalars (most values of a log record) are skipped here, numbers without a parsed header;
/// only containers recurse, so a flat record is checked in one call.
#[inline]
fn check_child(buf: &[u8], pos: usize, depth: usize) -> Result<usize, ReadError> {
    if let Some(end) = fixed_scalar_end(buf, pos) {
        return end;
    }
    let (child, child_head_len) = parse_head(buf, pos)?;
    match child {
        Head::Array(_) | Head::Map(_) => {
            check_after_head(buf, pos, child, child_head_len, depth + 1)
        }
        _ => scalar_end(buf, pos + child_head_len, &child),
    }
}

/// Where the scalar `head`, whose header ends at `after_head`, ends: its payload must be in
/// `buf`.
fn scalar_end(buf: &[u8], after_head: usize, head: &Head) -> Result<usize, ReadError> {
    within(buf, after_head + head.payload_len())
}

/// `end` when a value ending there lies inside `buf`, else how much input it needs.
#[inline]
fn within(buf: &[u8], end: usize) -> Result<usize, ReadError> {
    if end > buf.len() {
        return Err(ReadError::Incomplete { needed: end });
    }
    Ok(end)
}

/// The entries of a map that [`check_value`] accepted. Cannot fail on such bytes; should it
/// anyway (a bug), the map reads as empty rather than taking the process down.
pub(crate) fn parse_checked_map(raw: Bytes) -> Vec<(Bytes, Value)> {
    let parsed = Reader::new(raw).map_entries();
    debug_assert!(parsed.is_ok(), "a checked map failed to parse: {parsed:?}");
    parsed.unwrap_or_default()
}

/// Decodes msgpack values from a [`Bytes`] buffer without copying payloads. After an error the
/// position is where it was before the failed call.
#[derive(Clone, Debug)]
pub struct Reader {
    buf: Bytes,
    pos: usize,
}

impl Reader {
    pub fn new(buf: Bytes) -> Self {
        Reader { buf, pos: 0 }
    }

    /// Offset of the next value.
    pub fn position(&self) -> usize {
        self.pos
    }

    /// Moves to `pos` (clamped to the end), e.g. back to a value skipped earlier.
    pub fn seek(&mut self, pos: usize) {
        self.pos = pos.min(self.buf.len());
    }

    pub fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    pub fn is_empty(&self) -> bool {
        self.remaining() == 0
    }

    /// The header of the next value, without moving.
    pub fn peek(&self) -> Result<Head, ReadError> {
        parse_head(&self.buf, self.pos).map(|(head, _)| head)
    }

    /// Reads the next header only. For `Str`, `Bin` and `Ext` the payload follows: take it with
    /// [`Reader::read_payload`]. For containers the child values follow.
    pub fn read_head(&mut self) -> Result<Head, ReadError> {
        let (head, len) = parse_head(&self.buf, self.pos)?;
        self.pos += len;
        Ok(head)
    }

    /// The next `len` bytes, as a slice of the buffer.
    pub fn read_payload(&mut self, len: usize) -> Result<Bytes, ReadError> {
        if len > self.remaining() {
            return Err(ReadError::Incomplete {
                needed: self.pos.saturating_add(len),
            });
        }
        let bytes = self.buf.slice(self.pos..self.pos + len);
        self.pos += len;
        Ok(bytes)
    }

    /// The next `N` bytes, copied (no reference to the buffer taken, unlike
    /// [`Reader::read_payload`]).
    pub fn read_array<const N: usize>(&mut self) -> Result<[u8; N], ReadError> {
        let out = array_at(&self.buf, self.pos)?;
        self.pos += N;
        Ok(out)
    }

    /// The payload of the next value if it is a fixext 8 of type `ty` (moving past it), else
    /// `None` without moving: a forward entry's EventTime, read without a parsed header.
    #[inline]
    pub fn read_fixext8(&mut self, ty: i8) -> Option<[u8; 8]> {
        let [marker, ext_type] = array_at(&self.buf, self.pos).ok()?;
        if marker != 0xd7 || ext_type as i8 != ty {
            return None;
        }
        let payload = array_at(&self.buf, self.pos + 2).ok()?;
        self.pos += 10;
        Some(payload)
    }

    /// The payload of a `str` or `bin` value; `Ok(None)` (without moving) for anything else.
    pub fn read_str_or_bin(&mut self) -> Result<Option<Bytes>, ReadError> {
        let start = self.pos;
        match self.peek()? {
            Head::Str(n) | Head::Bin(n) => {
                self.read_head()?;
                self.read_payload(n as usize)
                    .inspect_err(|_| self.pos = start)
                    .map(Some)
            }
            _ => Ok(None),
        }
    }

    /// Moves past the next value without decoding it.
    pub fn skip_value(&mut self) -> Result<(), ReadError> {
        let rest = &self.buf[self.pos..];
        match Scanner::new().scan(rest) {
            Ok(len) => {
                self.pos += len;
                Ok(())
            }
            Err(ReadError::Incomplete { needed }) => Err(ReadError::Incomplete {
                needed: self.pos.saturating_add(needed),
            }),
            Err(ReadError::Malformed { offset, reason }) => Err(ReadError::Malformed {
                offset: self.pos + offset,
                reason,
            }),
        }
    }

    /// Decodes the next value.
    pub fn read_value(&mut self) -> Result<Value, ReadError> {
        let start = self.pos;
        self.value(0).inspect_err(|_| self.pos = start)
    }

    /// Reads the next value, which must be a map: checked whole and kept undecoded, as
    /// [`Reader::read_value`] keeps a map (one header parse fewer than going through it: this
    /// runs once per forward record).
    pub fn read_map(&mut self) -> Result<Map, ReadError> {
        self.read_map_bytes().map(Map::from_checked_msgpack)
    }

    /// [`Reader::read_map`]'s bytes, checked, for a caller that builds the [`Map`] where it
    /// is to stay: a `Result<Map, _>` handed through a few frames was copied at each, and the
    /// forward decoder's copies (misaligned) stalled on store-to-load forwarding.
    pub fn read_map_bytes(&mut self) -> Result<Bytes, ReadError> {
        let start = self.pos;
        let (head @ Head::Map(_), head_len) = parse_head(&self.buf, start)? else {
            return Err(ReadError::malformed(start, "expected a map"));
        };
        self.checked_map_bytes(start, head, head_len, 0)
    }

    /// The map starting at `start` with its header parsed (`head`, `head_len` bytes; `depth`
    /// containers around it), checked whole and kept as a slice: parsed only if something
    /// reads it. Moves past it when it passes.
    fn checked_map(
        &mut self,
        start: usize,
        head: Head,
        head_len: usize,
        depth: usize,
    ) -> Result<Map, ReadError> {
        self.checked_map_bytes(start, head, head_len, depth)
            .map(Map::from_checked_msgpack)
    }

    /// [`Reader::checked_map`]'s bytes, before they become a [`Map`].
    fn checked_map_bytes(
        &mut self,
        start: usize,
        head: Head,
        head_len: usize,
        depth: usize,
    ) -> Result<Bytes, ReadError> {
        let end = check_after_head(&self.buf, start, head, head_len, depth)?;
        self.pos = end;
        Ok(self.buf.slice(start..end))
    }

    /// Fails with `Incomplete` unless `count` values (one byte each at least) can still follow:
    /// checked before reserving anything for them.
    fn ensure_room(&self, count: u64) -> Result<(), ReadError> {
        if count > self.remaining() as u64 {
            return Err(ReadError::Incomplete {
                needed: saturate(self.pos as u64 + count),
            });
        }
        Ok(())
    }

    /// `depth` = containers already open around this value.
    fn value(&mut self, depth: usize) -> Result<Value, ReadError> {
        let start = self.pos;
        let head = self.read_head()?;
        Ok(match head {
            Head::Nil => Value::Nil,
            Head::Bool(b) => Value::Bool(b),
            Head::Int(i) => Value::Int(i),
            Head::UInt(u) => Value::UInt(u),
            Head::Float(f) => Value::Float(f),
            Head::Str(n) => Value::Str(self.read_payload(n as usize)?),
            Head::Bin(n) => Value::Bin(self.read_payload(n as usize)?),
            Head::Ext { ty, len } => Value::Ext(ty, self.read_payload(len as usize)?),
            Head::Array(n) => {
                self.enter(depth, start, head)?;
                let mut items = Vec::with_capacity((n as usize).min(PREALLOC_LIMIT));
                for _ in 0..n {
                    items.push(self.value(depth + 1)?);
                }
                Value::Array(items)
            }
            Head::Map(_) => Value::Map(self.checked_map(start, head, self.pos - start, depth)?),
        })
    }

    /// The entries of the map at the current position (which [`check_value`] accepted).
    fn map_entries(&mut self) -> Result<Vec<(Bytes, Value)>, ReadError> {
        let start = self.pos;
        let head = self.read_head()?;
        let Head::Map(n) = head else {
            return Err(ReadError::malformed(start, "expected a map"));
        };
        self.enter(0, start, head)?;
        let mut entries = Vec::with_capacity((n as usize).min(PREALLOC_LIMIT));
        for _ in 0..n {
            let key = self.key(1)?;
            let value = self.value(1)?;
            entries.push((key, value));
        }
        Ok(entries)
    }

    fn enter(&self, depth: usize, start: usize, head: Head) -> Result<(), ReadError> {
        if depth >= MAX_DEPTH {
            return Err(ReadError::malformed(
                start,
                "arrays and maps are nested deeper than 64 levels",
            ));
        }
        self.ensure_room(head.child_count())
    }

    /// A map key: `str` and `bin` as they are, other scalars rendered as their JSON text (so a
    /// producer's integer key `1` becomes the key `1`). Arrays and maps as keys are refused:
    /// no log producer sends them, and rendering nested container keys re-escapes the text at
    /// every level, which a hostile client could make grow exponentially (found by fuzzing).
    fn key(&mut self, depth: usize) -> Result<Bytes, ReadError> {
        if let Some(bytes) = self.read_str_or_bin()? {
            return Ok(bytes);
        }
        let start = self.position();
        if matches!(self.peek()?, Head::Array(_) | Head::Map(_)) {
            return Err(ReadError::malformed(
                start,
                "a map key is an array or a map; keys must be strings or scalars",
            ));
        }
        let value = self.value(depth)?;
        let mut text = Vec::new();
        crate::encode::json::write_value(&mut text, &value);
        Ok(Bytes::from(text))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Encodes with the `rmp` crate: an implementation independent of ours.
    fn sample() -> Vec<u8> {
        let mut b = Vec::new();
        rmp::encode::write_map_len(&mut b, 9).unwrap();
        rmp::encode::write_str(&mut b, "nil").unwrap();
        rmp::encode::write_nil(&mut b).unwrap();
        rmp::encode::write_str(&mut b, "neg").unwrap();
        rmp::encode::write_sint(&mut b, -300).unwrap();
        rmp::encode::write_str(&mut b, "big").unwrap();
        rmp::encode::write_u64(&mut b, u64::MAX).unwrap();
        rmp::encode::write_str(&mut b, "f32").unwrap();
        rmp::encode::write_f32(&mut b, 1.5).unwrap();
        rmp::encode::write_str(&mut b, "f64").unwrap();
        rmp::encode::write_f64(&mut b, -0.25).unwrap();
        rmp::encode::write_str(&mut b, "bin").unwrap();
        rmp::encode::write_bin(&mut b, &[0, 1, 2, 255]).unwrap();
        rmp::encode::write_str(&mut b, "ext").unwrap();
        rmp::encode::write_ext_meta(&mut b, 3, 7).unwrap();
        b.extend_from_slice(b"abc");
        rmp::encode::write_str(&mut b, "arr").unwrap();
        rmp::encode::write_array_len(&mut b, 3).unwrap();
        rmp::encode::write_bool(&mut b, true).unwrap();
        rmp::encode::write_str(&mut b, &"x".repeat(300)).unwrap();
        rmp::encode::write_map_len(&mut b, 1).unwrap();
        rmp::encode::write_uint(&mut b, 7).unwrap();
        rmp::encode::write_i64(&mut b, i64::MIN).unwrap();
        // A str holding invalid UTF-8 (rmp's write_str takes &str, so write it by hand).
        rmp::encode::write_str(&mut b, "bad").unwrap();
        rmp::encode::write_str_len(&mut b, 3).unwrap();
        b.extend_from_slice(&[0x66, 0xe2, 0x82]);
        b
    }

    #[test]
    fn decodes_every_type_as_slices_of_the_input() {
        let input = Bytes::from(sample());
        let mut r = Reader::new(input.clone());
        let map = r.read_map().unwrap();
        assert!(r.is_empty());
        let get = |k: &str| map.get(k.as_bytes()).unwrap().clone();
        assert_eq!(get("nil"), Value::Nil);
        assert_eq!(get("neg"), Value::Int(-300));
        assert_eq!(get("big"), Value::UInt(u64::MAX));
        assert_eq!(get("f32"), Value::Float(1.5));
        assert_eq!(get("f64"), Value::Float(-0.25));
        assert_eq!(get("bin"), Value::Bin(Bytes::from_static(&[0, 1, 2, 255])));
        assert_eq!(get("ext"), Value::Ext(7, Bytes::from_static(b"abc")));
        let Value::Array(arr) = get("arr") else {
            panic!("not an array")
        };
        assert_eq!(arr[0], Value::Bool(true));
        assert_eq!(arr[1], Value::from("x".repeat(300)));
        let inner = arr[2].as_map().unwrap();
        assert_eq!(inner.get(b"7"), Some(&Value::Int(i64::MIN)));
        let Value::Str(bad) = get("bad") else {
            panic!("not a str")
        };
        assert_eq!(bad.as_ref(), &[0x66, 0xe2, 0x82]);
        // Zero copy: the payload points into the input buffer.
        let range = input.as_ptr_range();
        assert!(range.contains(&bad.as_ptr()));
    }

    #[test]
    fn scanner_finds_each_object_of_a_stream() {
        let one = sample();
        let mut stream = one.clone();
        stream.extend_from_slice(&[0xc0]);
        stream.extend_from_slice(&one);
        let mut s = Scanner::new();
        assert_eq!(s.scan(&stream), Ok(one.len()));
        assert_eq!(s.scan(&stream[one.len()..]), Ok(1));
        assert_eq!(s.scan(&stream[one.len() + 1..]), Ok(one.len()));
    }

    #[test]
    fn every_truncation_is_incomplete_with_a_sound_lower_bound() {
        let full = sample();
        for cut in 0..full.len() {
            let prefix = &full[..cut];
            for result in [
                Scanner::new().scan(prefix),
                Reader::new(Bytes::copy_from_slice(prefix))
                    .read_value()
                    .map(|_| 0),
            ] {
                match result {
                    Err(ReadError::Incomplete { needed }) => {
                        assert!(
                            needed > cut,
                            "cut {cut}: needed {needed} asks for nothing new"
                        );
                        assert!(
                            needed <= full.len(),
                            "cut {cut}: needed {needed} overshoots"
                        );
                    }
                    other => panic!("cut {cut}: {other:?}"),
                }
            }
        }
    }

    #[test]
    fn resumed_scan_byte_by_byte_matches_and_never_rescans() {
        let full = sample();
        let mut s = Scanner::new();
        let mut last_progress = 0;
        for cut in 0..full.len() {
            match s.scan(&full[..cut]) {
                Err(ReadError::Incomplete { needed }) => {
                    assert!(needed > cut && needed <= full.len());
                    assert!(s.progress() >= last_progress);
                    last_progress = s.progress();
                }
                other => panic!("cut {cut}: {other:?}"),
            }
        }
        assert_eq!(s.scan(&full), Ok(full.len()));
        assert_eq!(s.progress(), 0, "reset after a complete object");
    }

    #[test]
    fn str32_header_announces_its_whole_payload() {
        let mut b = vec![0xdb];
        b.extend_from_slice(&(16u32 << 20).to_be_bytes());
        b.extend_from_slice(&[b'a'; 100]);
        assert_eq!(
            Scanner::new().scan(&b),
            Err(ReadError::Incomplete {
                needed: 5 + (16 << 20)
            })
        );
    }

    #[test]
    fn containers_promise_one_byte_per_element() {
        // [[1, 2, <missing>], <missing>]: 2 more bytes at least after the cut.
        let b = [0x92, 0x93, 0x01, 0x02];
        assert_eq!(
            Scanner::new().scan(&b),
            Err(ReadError::Incomplete { needed: 6 })
        );
    }

    #[test]
    fn garbage_is_malformed() {
        for bad in [&[0xc1][..], &[0x92, 0x01, 0xc1], &[0x81, 0xc1, 0x01]] {
            assert!(matches!(
                Scanner::new().scan(bad),
                Err(ReadError::Malformed { .. })
            ));
            assert!(matches!(
                Reader::new(Bytes::copy_from_slice(bad)).read_value(),
                Err(ReadError::Malformed { .. })
            ));
        }
    }

    #[test]
    fn over_deep_nesting_is_malformed_even_when_truncated() {
        for depth in [MAX_DEPTH + 1, 100_000] {
            let deep = vec![0x91u8; depth];
            assert!(matches!(
                Scanner::new().scan(&deep),
                Err(ReadError::Malformed { .. })
            ));
            assert!(matches!(
                Reader::new(Bytes::from(deep)).read_value(),
                Err(ReadError::Malformed { .. })
            ));
        }
        // Exactly MAX_DEPTH levels is fine.
        let mut ok = vec![0x91u8; MAX_DEPTH];
        ok.push(0xc0);
        assert_eq!(Scanner::new().scan(&ok), Ok(ok.len()));
        assert!(Reader::new(Bytes::from(ok)).read_value().is_ok());
    }

    #[test]
    fn huge_length_headers_allocate_nothing() {
        // Were any of these pre-allocated from the header, the test would abort on allocation.
        let headers: [&[u8]; 4] = [
            &[0xdd, 0xff, 0xff, 0xff, 0xff, 0xc0, 0xc0],
            &[0xdf, 0xff, 0xff, 0xff, 0xff, 0xc0, 0xc0],
            &[0xdb, 0xff, 0xff, 0xff, 0xff, b'a'],
            &[0xc9, 0xff, 0xff, 0xff, 0xff, 0x01, 0x00],
        ];
        for h in headers {
            let r = Reader::new(Bytes::copy_from_slice(h)).read_value();
            assert!(matches!(r, Err(ReadError::Incomplete { needed }) if needed > 1 << 32));
            let truncated = r.unwrap_err().into_truncated(h.len());
            assert!(matches!(truncated, ReadError::Malformed { .. }));
            assert!(matches!(
                Scanner::new().scan(h),
                Err(ReadError::Incomplete { needed }) if needed > 1 << 32
            ));
        }
    }

    #[test]
    fn non_string_keys_become_their_text() {
        // {1: "a", nil: "b", true: "c"}
        let b = [0x83, 0x01, 0xa1, b'a', 0xc0, 0xa1, b'b', 0xc3, 0xa1, b'c'];
        let map = Reader::new(Bytes::copy_from_slice(&b)).read_map().unwrap();
        let keys: Vec<&[u8]> = map.iter().map(|(k, _)| k.as_ref()).collect();
        assert_eq!(keys, vec![&b"1"[..], b"null", b"true"]);
    }

    #[test]
    fn container_keys_are_refused() {
        // {[true]: "c"} and {{"a": 1}: "c"}
        for b in [
            &[0x81, 0x91, 0xc3, 0xa1, b'c'][..],
            &[0x81, 0x81, 0xa1, b'a', 0x01, 0xa1, b'c'],
        ] {
            let err = Reader::new(Bytes::copy_from_slice(b))
                .read_map()
                .unwrap_err();
            assert!(
                matches!(err, ReadError::Malformed { offset: 1, .. }),
                "{err:?}"
            );
        }
    }

    /// Regression (fuzzing, forward_frame): keys nested in keys re-escaped at every level took
    /// seconds for a 1.5 KB frame. 40 levels of `{{...}: 1}` are refused at the first nested
    /// key, before any of them is read or rendered.
    #[test]
    fn deeply_nested_container_keys_fail_fast() {
        // Maps of one entry whose key is the next map, then the innermost entry, then values.
        let mut b = vec![0x81u8; 40];
        b.extend_from_slice(&[0xa1, b'"', 0x01]);
        b.extend(std::iter::repeat_n(0x01u8, 39));
        let err = Reader::new(Bytes::from(b)).read_map().unwrap_err();
        assert!(
            matches!(err, ReadError::Malformed { offset: 1, .. }),
            "{err:?}"
        );
    }

    #[test]
    fn fixed_scalar_lengths_agree_with_the_header_parser_for_every_marker() {
        for marker in 0..=255u8 {
            let mut buf = vec![marker];
            buf.extend_from_slice(&[0u8; 20]);
            let fixed = usize::from(FIXED_SCALAR_LEN[usize::from(marker)]);
            match parse_head(&buf, 0) {
                Ok((head @ (Head::Array(_) | Head::Map(_)), _)) => {
                    assert_eq!(fixed, 0, "{marker:#x} is a container: {head:?}")
                }
                Ok((head @ (Head::Str(_) | Head::Bin(_)), _)) => {
                    assert_eq!(fixed, 0, "{marker:#x}: {head:?} has a variable length")
                }
                Ok((Head::Ext { .. }, _)) if (0xc7..=0xc9).contains(&marker) => {
                    assert_eq!(fixed, 0, "{marker:#x}: ext 8/16/32 have a length field")
                }
                Ok((head, head_len)) => {
                    assert_eq!(
                        fixed,
                        head_len + head.payload_len(),
                        "{marker:#x}: {head:?}"
                    );
                    assert_eq!(fixed_scalar_end(&buf, 0), Some(Ok(fixed)));
                    if fixed > 1 {
                        assert_eq!(
                            fixed_scalar_end(&buf[..fixed - 1], 0),
                            Some(Err(ReadError::Incomplete { needed: fixed }))
                        );
                    }
                }
                Err(_) => assert_eq!(fixed, 0, "{marker:#x} is never used"),
            }
        }
    }

    #[test]
    fn an_event_time_is_read_as_a_fixext8_of_its_type_only() {
        let mut b = Vec::new();
        rmp::encode::write_ext_meta(&mut b, 8, 0).unwrap();
        b.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 2]);
        b.push(0xc0);
        let mut r = Reader::new(Bytes::from(b.clone()));
        assert_eq!(r.read_fixext8(5), None);
        assert_eq!(r.position(), 0);
        assert_eq!(r.read_fixext8(0), Some([0, 0, 0, 1, 0, 0, 0, 2]));
        assert_eq!(r.position(), 10);
        assert_eq!(r.read_fixext8(0), None, "nil is not an EventTime");
        // Cut short, or a fixext of another size: left for the header parser.
        let mut r = Reader::new(Bytes::from(b[..9].to_vec()));
        assert_eq!(r.read_fixext8(0), None);
        assert_eq!(r.position(), 0);
        let mut r = Reader::new(Bytes::from_static(&[0xd6, 0, 1, 2, 3, 4, 5, 6, 7, 8]));
        assert_eq!(r.read_fixext8(0), None);
    }

    #[test]
    fn read_map_refuses_every_truncation_and_other_types_without_moving() {
        // {"key": "value", 7: [1, {"in": nil}]}
        let mut full = vec![0x82, 0xa3];
        full.extend_from_slice(b"key");
        full.push(0xa5);
        full.extend_from_slice(b"value");
        full.extend_from_slice(&[0x07, 0x92, 0x01, 0x81, 0xa2]);
        full.extend_from_slice(b"in");
        full.push(0xc0);
        for cut in 0..full.len() {
            let mut r = Reader::new(Bytes::copy_from_slice(&full[..cut]));
            match r.read_map() {
                Err(ReadError::Incomplete { needed }) => {
                    assert!(needed > cut && needed <= full.len(), "cut {cut}: {needed}");
                }
                other => panic!("cut {cut}: {other:?}"),
            }
            assert_eq!(r.position(), 0, "cut {cut}");
        }
        let mut r = Reader::new(Bytes::from(full.clone()));
        let map = r.read_map().unwrap();
        assert_eq!(r.position(), full.len());
        assert_eq!(
            map.get(b"key"),
            Some(&Value::Str(Bytes::from_static(b"value")))
        );
        let mut r = Reader::new(Bytes::from_static(&[0x92, 0x01, 0x02]));
        assert!(matches!(r.read_map(), Err(ReadError::Malformed { .. })));
        assert_eq!(r.position(), 0);
    }

    #[test]
    fn failed_read_leaves_position_unchanged() {
        let mut r = Reader::new(Bytes::from_static(&[0x01, 0x92, 0x01]));
        assert_eq!(r.read_value(), Ok(Value::Int(1)));
        assert!(r.read_value().is_err());
        assert_eq!(r.position(), 1);
    }
}
