//! JSON written straight from a [`Value`] into a byte vector: no intermediate `serde_json::Value`,
//! no `String` per field.
//!
//! Mapping of the msgpack data model onto JSON:
//! - `Str` and `Bin` become JSON strings. Their bytes are not guaranteed UTF-8 (Docker splits long
//!   lines on byte boundaries), so each invalid sequence becomes one U+FFFD, exactly as
//!   `String::from_utf8_lossy` does; valid text is copied as is. Only `"`, `\` and control
//!   characters below U+0020 are escaped (`\n`, `\t`, ... or `\u00XX`); other characters,
//!   non-ASCII included, are written as UTF-8.
//! - `Float` is written in Rust's shortest round-trip form (`1.5`, `1e300`); NaN and infinities,
//!   which JSON cannot express, become `null`.
//! - `Ext` (a msgpack extension other than a time we decoded) becomes its payload in standard
//!   padded base64, as a string: the type code is lost, but the data reaches the consumer rather
//!   than vanishing as `null`.
//! - Map keys are strings, rendered like `Str`.

use std::borrow::Cow;

use base64::Engine;

use crate::event::{Map, Value};
use crate::msgpack::read::{parse_head, Head, ReadError};

/// What follows a backslash for bytes that must be escaped; 0 = written as is, `u` = `\u00XX`.
const ESCAPE: [u8; 256] = {
    let mut table = [0u8; 256];
    let mut i = 0;
    while i < 0x20 {
        table[i] = b'u';
        i += 1;
    }
    table[0x08] = b'b';
    table[0x09] = b't';
    table[0x0a] = b'n';
    table[0x0c] = b'f';
    table[0x0d] = b'r';
    table[b'"' as usize] = b'"';
    table[b'\\' as usize] = b'\\';
    table
};

const HEX: &[u8; 16] = b"0123456789abcdef";
const REPLACEMENT: &str = "\u{FFFD}";

/// Appends `v` as JSON.
pub fn write_value(out: &mut Vec<u8>, v: &Value) {
    write_value_with(out, v, None);
}

/// Appends a map as a JSON object.
pub fn write_map(out: &mut Vec<u8>, map: &Map) {
    write_map_with(out, map, None);
}

/// Appends bytes as a quoted, escaped JSON string (invalid UTF-8 replaced, see module docs).
pub fn write_str(out: &mut Vec<u8>, s: &[u8]) {
    out.push(b'"');
    write_str_body(out, s);
    out.push(b'"');
}

/// Like [`write_value`], with every `.` in every map key (at any depth) replaced by `dots`.
pub(crate) fn write_value_with(out: &mut Vec<u8>, v: &Value, dots: Option<&[u8]>) {
    match v {
        Value::Nil => out.extend_from_slice(b"null"),
        Value::Bool(true) => out.extend_from_slice(b"true"),
        Value::Bool(false) => out.extend_from_slice(b"false"),
        Value::Int(i) => write_i64(out, *i),
        Value::UInt(u) => write_u64(out, *u),
        Value::Float(f) => write_f64(out, *f),
        Value::Str(s) | Value::Bin(s) => write_str(out, s),
        Value::Ext(_, data) => write_base64(out, data),
        Value::Array(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_value_with(out, item, dots);
            }
            out.push(b']');
        }
        Value::Map(map) => write_map_with(out, map, dots),
    }
}

pub(crate) fn write_map_with(out: &mut Vec<u8>, map: &Map, dots: Option<&[u8]>) {
    if let Some(raw) = map.raw() {
        // Checked when decoded, so this cannot fail; should it, the parsed path below runs.
        let start = out.len();
        match write_msgpack_with(out, raw, 0, dots) {
            Ok(_) => return,
            Err(_) => out.truncate(start),
        }
    }
    out.push(b'{');
    for (i, (k, v)) in map.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        write_key(out, k, dots);
        out.push(b':');
        write_value_with(out, v, dots);
    }
    out.push(b'}');
}

/// Writes the msgpack value at `pos` of `buf` as JSON, straight from the bytes: exactly what
/// [`write_value_with`] writes for the value [`crate::msgpack::Reader`] would decode there, with
/// nothing decoded or allocated (but for the rare key that is not a string). Returns where the
/// value ends. For bytes that [`crate::msgpack::read::check_value`] accepted.
pub(crate) fn write_msgpack_with(
    out: &mut Vec<u8>,
    buf: &[u8],
    pos: usize,
    dots: Option<&[u8]>,
) -> Result<usize, ReadError> {
    let (head, head_len) = parse_head(buf, pos)?;
    let mut end = pos + head_len;
    match head {
        Head::Nil => out.extend_from_slice(b"null"),
        Head::Bool(true) => out.extend_from_slice(b"true"),
        Head::Bool(false) => out.extend_from_slice(b"false"),
        Head::Int(i) => write_i64(out, i),
        Head::UInt(u) => write_u64(out, u),
        Head::Float(f) => write_f64(out, f),
        Head::Str(_) | Head::Bin(_) | Head::Ext { .. } => {
            let payload = payload(buf, end, head)?;
            end += payload.len();
            match head {
                Head::Ext { .. } => write_base64(out, payload),
                _ => write_str(out, payload),
            }
        }
        Head::Array(n) => {
            out.push(b'[');
            for i in 0..n {
                if i > 0 {
                    out.push(b',');
                }
                end = write_msgpack_with(out, buf, end, dots)?;
            }
            out.push(b']');
        }
        Head::Map(n) => {
            out.push(b'{');
            for i in 0..n {
                if i > 0 {
                    out.push(b',');
                }
                end = write_msgpack_key(out, buf, end, dots)?;
                out.push(b':');
                end = write_msgpack_with(out, buf, end, dots)?;
            }
            out.push(b'}');
        }
    }
    Ok(end)
}

/// The payload of a `str`, `bin` or `ext` value whose header ends at `at`.
fn payload(buf: &[u8], at: usize, head: Head) -> Result<&[u8], ReadError> {
    buf.get(at..at + head.payload_len())
        .ok_or(ReadError::Incomplete {
            needed: at + head.payload_len(),
        })
}

/// A map key at `pos` as a quoted JSON key. Returns where the key ends.
pub(crate) fn write_msgpack_key(
    out: &mut Vec<u8>,
    buf: &[u8],
    pos: usize,
    dots: Option<&[u8]>,
) -> Result<usize, ReadError> {
    let (key, end) = msgpack_key(buf, pos)?;
    write_key(out, &key, dots);
    Ok(end)
}

/// The map key at `pos` as the reader makes it: the bytes of a `str` or `bin` key (borrowed),
/// the JSON text of any other scalar (rare: a producer's integer key). Returns where it ends.
pub(crate) fn msgpack_key(buf: &[u8], pos: usize) -> Result<(Cow<'_, [u8]>, usize), ReadError> {
    let (head, head_len) = parse_head(buf, pos)?;
    if let Head::Str(_) | Head::Bin(_) = head {
        let key = payload(buf, pos + head_len, head)?;
        return Ok((Cow::Borrowed(key), pos + head_len + key.len()));
    }
    let mut text = Vec::new();
    let end = write_msgpack_with(&mut text, buf, pos, None)?;
    Ok((Cow::Owned(text), end))
}

/// A map key at `pos` of `buf` that JSON takes as it is: a msgpack fixstr (up to 31 bytes, how
/// nearly every log record's keys come) of plain ASCII (see [`plain_prefix_len`]). Returns the
/// key and where it ends; `None` for any other key, which [`msgpack_key`] and [`write_key`]
/// then read and write.
///
/// Why: keys are short, and the general path (a parsed header, a `Cow`, the scan built for long
/// text, a push per quote) cost ~200 instructions per key (callgrind), a third of encoding a
/// record of three fields.
#[inline]
pub(crate) fn plain_fixstr_key(buf: &[u8], pos: usize) -> Option<(&[u8], usize)> {
    if *buf.get(pos)? & 0xe0 != 0xa0 {
        return None;
    }
    let (key, end) = short_str_value(buf, pos)?;
    let start = end - key.len();
    short_plain(buf, start, key.len())
        .unwrap_or_else(|| plain_prefix_len(key) == key.len())
        .then_some((key, end))
}

/// Whether the `len` bytes at `start` of `buf` are plain (as [`plain_prefix_len`] counts them),
/// checked with one 16-byte load when `len` is at most 16 and `buf` holds 16 bytes from `start`
/// (a key is followed by its value, so it nearly always does); `None` otherwise.
#[inline]
fn short_plain(buf: &[u8], start: usize, len: usize) -> Option<bool> {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{
            __m128i, _mm_cmpeq_epi8, _mm_cmplt_epi8, _mm_loadu_si128, _mm_movemask_epi8,
            _mm_or_si128, _mm_set1_epi8,
        };
        if len > 16 || buf.len().checked_sub(start)? < 16 {
            return None;
        }
        // SAFETY: SSE2 is always present on x86_64; the load reads `buf[start..start + 16]`,
        // inside `buf` (checked above).
        let special = unsafe {
            let v = _mm_loadu_si128(buf.as_ptr().add(start).cast::<__m128i>());
            // Signed compare: bytes 0x80-0xff are negative, so "below 0x20" flags them too.
            let below_space = _mm_cmplt_epi8(v, _mm_set1_epi8(0x20));
            let quote = _mm_cmpeq_epi8(v, _mm_set1_epi8(b'"' as i8));
            let backslash = _mm_cmpeq_epi8(v, _mm_set1_epi8(b'\\' as i8));
            _mm_movemask_epi8(_mm_or_si128(below_space, _mm_or_si128(quote, backslash))) as u32
        };
        Some(special & ((1u32 << len) - 1) == 0)
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = (buf, start, len);
        None
    }
}

/// A `str` value at `pos` of `buf` written as a fixstr or str8 (up to 255 bytes: most values of
/// a log record) and where it ends; `None` for anything else, or a string cut short, which
/// [`write_msgpack_with`] then writes or refuses. Read without a parsed header: the general
/// path's header, payload lookup and result cost ~60 instructions per value.
#[inline]
pub(crate) fn short_str_value(buf: &[u8], pos: usize) -> Option<(&[u8], usize)> {
    let (start, len) = match *buf.get(pos)? {
        marker @ 0xa0..=0xbf => (pos + 1, usize::from(marker & 0x1f)),
        0xd9 => (pos + 2, usize::from(*buf.get(pos + 1)?)),
        _ => return None,
    };
    let end = start + len;
    Some((buf.get(start..end)?, end))
}

/// `"key":` for a key [`plain_fixstr_key`] found plain (nothing to escape or replace).
#[inline]
pub(crate) fn write_plain_key(out: &mut Vec<u8>, key: &[u8]) {
    out.reserve(key.len() + 3);
    out.push(b'"');
    out.extend_from_slice(key);
    out.extend_from_slice(b"\":");
}

/// A quoted key, with `.` replaced by `dots` when given.
pub(crate) fn write_key(out: &mut Vec<u8>, key: &[u8], dots: Option<&[u8]>) {
    out.push(b'"');
    match dots {
        Some(replacement) if key.contains(&b'.') => {
            // `.` is ASCII, so splitting on it never cuts a UTF-8 sequence: replacing invalid
            // bytes per part gives the same result as on the whole key.
            for (i, part) in key.split(|&b| b == b'.').enumerate() {
                if i > 0 {
                    write_str_body(out, replacement);
                }
                write_str_body(out, part);
            }
        }
        _ => write_str_body(out, key),
    }
    out.push(b'"');
}

/// The escaped contents of a JSON string, without quotes.
///
/// Log text is nearly always plain ASCII without quotes or control characters: that prefix is
/// found eight bytes at a time and copied in one go. What follows it is checked for UTF-8 once;
/// valid text (the usual case) is only escaped, and the lossy pass runs only for invalid bytes.
pub(crate) fn write_str_body(out: &mut Vec<u8>, s: &[u8]) {
    let plain = plain_prefix_len(s);
    out.extend_from_slice(&s[..plain]);
    let rest = &s[plain..];
    if rest.is_empty() {
        return;
    }
    if std::str::from_utf8(rest).is_ok() {
        write_escaped(out, rest);
        return;
    }
    for chunk in rest.utf8_chunks() {
        write_escaped(out, chunk.valid().as_bytes());
        if !chunk.invalid().is_empty() {
            out.extend_from_slice(REPLACEMENT.as_bytes());
        }
    }
}

const ONES: u64 = 0x0101_0101_0101_0101;
const HIGH: u64 = 0x8080_8080_8080_8080;

/// High bit set in each byte of `v` that is zero. Exact up to the first such byte (a borrow may
/// flag bytes above it), which is all the scans below use: "some byte matched", then located
/// byte by byte.
const fn zero_bytes(v: u64) -> u64 {
    v.wrapping_sub(ONES) & !v & HIGH
}

/// High bit set in the bytes of `w` JSON escapes: below 0x20, `"` and `\` (exact up to the
/// first, as [`zero_bytes`]; bytes from 0x80 up are not flagged).
const fn escaped_bytes(w: u64) -> u64 {
    (w.wrapping_sub(ONES * 0x20) & !w & HIGH)
        | zero_bytes(w ^ (ONES * b'"' as u64))
        | zero_bytes(w ^ (ONES * b'\\' as u64))
}

/// Length of the longest prefix of `s` none of whose words has a byte `special` flags, eight
/// bytes per step (SWAR), then of bytes that are `plain`.
fn run_len(s: &[u8], special: impl Fn(u64) -> u64, plain: impl Fn(u8) -> bool) -> usize {
    let mut i = 0;
    while let Some(chunk) = s.get(i..i + 8) {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        if special(u64::from_le_bytes(word)) != 0 {
            break;
        }
        i += 8;
    }
    while i < s.len() && plain(s[i]) {
        i += 1;
    }
    i
}

/// Length of the longest prefix of `s` made of bytes JSON takes as they are: ASCII from
/// U+0020 up, except `"` and `\`.
///
/// Every string of every record goes through here: on x86_64, sixteen bytes per step with
/// SSE2 (part of the architecture's baseline), the rest eight at a time.
fn plain_prefix_len(s: &[u8]) -> usize {
    #[cfg(target_arch = "x86_64")]
    let done = {
        use std::arch::x86_64::{
            __m128i, _mm_cmpeq_epi8, _mm_cmplt_epi8, _mm_loadu_si128, _mm_movemask_epi8,
            _mm_or_si128, _mm_set1_epi8,
        };
        let mut i = 0;
        // SAFETY: SSE2 is always present on x86_64; each unaligned load reads 16 bytes that
        // lie inside `s` (`i + 16 <= s.len()`).
        unsafe {
            // Signed compare: bytes 0x80-0xff are negative, so "below 0x20" also flags them.
            let space = _mm_set1_epi8(0x20);
            let quote = _mm_set1_epi8(b'"' as i8);
            let backslash = _mm_set1_epi8(b'\\' as i8);
            while i + 16 <= s.len() {
                let v = _mm_loadu_si128(s.as_ptr().add(i).cast::<__m128i>());
                let special = _mm_or_si128(
                    _mm_cmplt_epi8(v, space),
                    _mm_or_si128(_mm_cmpeq_epi8(v, quote), _mm_cmpeq_epi8(v, backslash)),
                );
                let mask = _mm_movemask_epi8(special);
                if mask != 0 {
                    return i + mask.trailing_zeros() as usize;
                }
                i += 16;
            }
        }
        i
    };
    #[cfg(not(target_arch = "x86_64"))]
    let done = 0;
    done + run_len(
        &s[done..],
        |w| (w & HIGH) | escaped_bytes(w),
        |b| b < 0x80 && ESCAPE[b as usize] == 0,
    )
}

/// Length of the longest prefix of valid UTF-8 `s` that JSON takes as it is: no `"`, `\` or
/// control character (multi-byte characters are written as they are).
fn unescaped_run_len(s: &[u8]) -> usize {
    run_len(s, escaped_bytes, |b| ESCAPE[b as usize] == 0)
}

/// True when `s` would be changed by [`write_str_body`].
pub(crate) fn needs_escaping(s: &[u8]) -> bool {
    s.iter().any(|&b| ESCAPE[b as usize] != 0) || std::str::from_utf8(s).is_err()
}

/// Escapes valid UTF-8, copying runs of plain bytes in one go (found eight bytes at a time:
/// a log line's quotes each end a run, and the text between them is long).
fn write_escaped(out: &mut Vec<u8>, s: &[u8]) {
    let mut i = 0;
    loop {
        let run = unescaped_run_len(&s[i..]);
        out.extend_from_slice(&s[i..i + run]);
        i += run;
        let Some(&b) = s.get(i) else {
            return;
        };
        let esc = ESCAPE[b as usize];
        if esc == b'u' {
            out.extend_from_slice(&[
                b'\\',
                b'u',
                b'0',
                b'0',
                HEX[(b >> 4) as usize],
                HEX[(b & 0xf) as usize],
            ]);
        } else {
            out.extend_from_slice(&[b'\\', esc]);
        }
        i += 1;
    }
}

pub(crate) fn write_u64(out: &mut Vec<u8>, mut u: u64) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (u % 10) as u8;
        u /= 10;
        if u == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[i..]);
}

pub(crate) fn write_i64(out: &mut Vec<u8>, i: i64) {
    if i < 0 {
        out.push(b'-');
    }
    write_u64(out, i.unsigned_abs());
}

fn write_f64(out: &mut Vec<u8>, f: f64) {
    if f.is_finite() {
        use std::io::Write;
        // Writing into a Vec cannot fail.
        let _ = write!(out, "{f:?}");
    } else {
        out.extend_from_slice(b"null");
    }
}

fn write_base64(out: &mut Vec<u8>, data: &[u8]) {
    let engine = &base64::engine::general_purpose::STANDARD;
    out.push(b'"');
    if let Some(len) = base64::encoded_len(data.len(), true) {
        let start = out.len();
        out.resize(start + len, 0);
        match engine.encode_slice(data, &mut out[start..]) {
            Ok(written) => out.truncate(start + written),
            Err(_) => out.truncate(start),
        }
    }
    out.push(b'"');
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn json(v: &Value) -> String {
        let mut out = Vec::new();
        write_value(&mut out, v);
        String::from_utf8(out).expect("our JSON is always valid UTF-8")
    }

    #[test]
    fn strings_escape_like_serde_json() {
        let mut all_controls: String = (0u8..0x20).map(char::from).collect();
        all_controls.push_str("\"\\/\u{7f}é€😀\u{2028}");
        for s in [
            "",
            "plain",
            "quote\" backslash\\",
            "tab\tnl\ncr\r",
            &all_controls,
        ] {
            let ours = json(&Value::from(s));
            // serde_json is an independent escaper; both must read back to the same string.
            let back: String = serde_json::from_str(&ours).unwrap();
            assert_eq!(back, s);
            assert_eq!(ours, serde_json::to_string(s).unwrap());
        }
    }

    #[test]
    fn invalid_utf8_becomes_one_replacement_per_sequence() {
        let cases: [&[u8]; 5] = [
            b"ok\xe2",               // truncated 3-byte char at the end (a Docker split)
            b"\x82\xacrest",         // its continuation bytes at the start of the next chunk
            b"a\xffb\xfe\xfdc",      // stray bytes
            b"\xf0\x9f\x98\x80\xf0", // valid emoji then a lone lead byte
            b"\xed\xa0\x80",         // an encoded surrogate: invalid in UTF-8
        ];
        for bytes in cases {
            let ours = json(&Value::Str(Bytes::from_static(bytes)));
            let back: String = serde_json::from_str(&ours).unwrap();
            assert_eq!(back, String::from_utf8_lossy(bytes), "{bytes:?}");
        }
    }

    #[test]
    fn every_value_type_parses_back() {
        let mut nested = Map::new();
        nested.push(Bytes::from("k\"ey"), Value::Array(vec![Value::Nil]));
        let mut map = Map::new();
        map.push(Bytes::from("s"), Value::from("x"));
        map.push(Bytes::from("t"), Value::Bool(true));
        map.push(Bytes::from("f"), Value::Bool(false));
        map.push(Bytes::from("i"), Value::Int(i64::MIN));
        map.push(Bytes::from("u"), Value::UInt(u64::MAX));
        map.push(Bytes::from("x"), Value::Float(0.1));
        map.push(Bytes::from("big"), Value::Float(1e300));
        map.push(Bytes::from("tiny"), Value::Float(-1e-7));
        map.push(Bytes::from("nan"), Value::Float(f64::NAN));
        map.push(Bytes::from("inf"), Value::Float(f64::INFINITY));
        map.push(Bytes::from("bin"), Value::Bin(Bytes::from_static(b"\x00a")));
        map.push(
            Bytes::from("ext"),
            Value::Ext(5, Bytes::from_static(b"\x01\x02\x03\x04")),
        );
        map.push(Bytes::from("m"), Value::Map(nested));
        let mut out = Vec::new();
        write_map(&mut out, &map);
        let parsed: serde_json::Value = serde_json::from_slice(&out).unwrap();
        let expected = serde_json::json!({
            "s": "x", "t": true, "f": false, "i": i64::MIN, "u": u64::MAX,
            "x": 0.1, "big": 1e300, "tiny": -1e-7, "nan": null, "inf": null,
            "bin": "\u{0}a", "ext": "AQIDBA==", "m": {"k\"ey": [null]}
        });
        assert_eq!(parsed, expected);
    }

    #[test]
    fn escaping_finds_every_special_byte_past_the_first() {
        // After a first quote, runs are found eight bytes at a time: every special character at
        // every position of a string of ASCII and multi-byte text, twice, escapes exactly like
        // serde_json.
        for special in ['\0', '\u{1f}', '\n', '"', '\\'] {
            for at in 0..24 {
                for filler in ["a", "é", "€a", "😀"] {
                    let mut s = String::from("\"");
                    for k in 0..24 {
                        s.push_str(filler);
                        if k == at || k == (at * 7) % 24 {
                            s.push(special);
                        }
                    }
                    assert_eq!(
                        json(&Value::from(s.as_str())),
                        serde_json::to_string(&s).unwrap()
                    );
                }
            }
        }
        assert_eq!(unescaped_run_len("é€😀abcdefgh\u{7f}".as_bytes()), 18);
        assert_eq!(unescaped_run_len(b"abcdefgh\\"), 8);
    }

    #[test]
    fn plain_prefix_stops_at_the_first_byte_that_needs_care() {
        // Every special byte at every position of a 20-byte string.
        for special in [0u8, 0x1f, b'"', b'\\', 0x80, 0xff] {
            for at in 0..20 {
                let mut s = vec![b'a'; 20];
                s[at] = special;
                assert_eq!(plain_prefix_len(&s), at, "byte {special:#x} at {at}");
            }
        }
        // Every byte value at every position of strings across the 16- and 8-byte steps and
        // their tails, against the definition.
        let plain = |b: u8| (0x20..0x80).contains(&b) && b != b'"' && b != b'\\';
        for len in [1, 7, 8, 15, 16, 17, 31, 33, 47, 70] {
            for at in 0..len {
                for byte in 0..=255u8 {
                    let mut s = vec![b'x'; len];
                    s[at] = byte;
                    let expected = if plain(byte) { len } else { at };
                    assert_eq!(plain_prefix_len(&s), expected, "{byte:#x} at {at} of {len}");
                }
            }
        }
        assert_eq!(plain_prefix_len(b" !#~[]{}0123456789"), 18);
        assert_eq!(plain_prefix_len(b""), 0);
        // Mixed strings still escape exactly like serde_json.
        for s in [
            "0123456789abcdef\"",
            "abcdefgh\u{7f}\t12345678é",
            "😀abcdefghijkl\n",
        ] {
            assert_eq!(json(&Value::from(s)), serde_json::to_string(s).unwrap());
        }
    }

    #[test]
    fn plain_fixstr_keys_are_exactly_the_plain_ones() {
        let plain = |b: u8| (0x20..0x80).contains(&b) && b != b'"' && b != b'\\';
        for len in 0..=31usize {
            // Followed by a value of 20 bytes (room for the 16-byte check), or by nothing.
            for tail in [20usize, 0] {
                for at in 0..len.max(1) {
                    for byte in [0u8, 0x1f, b' ', b'"', b'\\', b'a', 0x7f, 0x80, 0xc3, 0xff] {
                        let mut buf = vec![0xa0 | len as u8];
                        let mut key = vec![b'k'; len];
                        if len > 0 {
                            key[at] = byte;
                        }
                        buf.extend_from_slice(&key);
                        buf.extend(std::iter::repeat_n(b'"', tail));
                        let expected = key.iter().all(|&b| plain(b)).then_some((&key[..], len + 1));
                        assert_eq!(
                            plain_fixstr_key(&buf, 0),
                            expected,
                            "{byte:#x} at {at} of {len}, {tail} bytes after"
                        );
                    }
                }
            }
        }
        // Not a fixstr (str8, an integer), or cut short: the general path takes it.
        assert_eq!(plain_fixstr_key(&[0xd9, 3, b'a', b'b', b'c'], 0), None);
        assert_eq!(plain_fixstr_key(&[0x07], 0), None);
        assert_eq!(plain_fixstr_key(&[0xa3, b'a', b'b'], 0), None);
        assert_eq!(plain_fixstr_key(&[], 0), None);
        let mut out = Vec::new();
        write_plain_key(&mut out, b"container_id");
        assert_eq!(out, b"\"container_id\":");
    }

    #[test]
    fn short_str_values_are_read_like_the_general_path_reads_them() {
        for len in [0usize, 1, 31, 32, 200, 255] {
            let text = vec![b'v'; len];
            let mut buf = Vec::new();
            rmp::encode::write_str_len(&mut buf, len as u32).unwrap();
            buf.extend_from_slice(&text);
            buf.push(0xc0); // what follows the value
            let expected_end = buf.len() - 1;
            assert_eq!(
                short_str_value(&buf, 0),
                Some((&text[..], expected_end)),
                "{len}"
            );
            let mut general = Vec::new();
            assert_eq!(
                write_msgpack_with(&mut general, &buf, 0, None).unwrap(),
                expected_end
            );
            let mut fast = Vec::new();
            write_str(&mut fast, &text);
            assert_eq!(fast, general, "{len}");
            // Cut short: left to the general path, which refuses it.
            assert_eq!(short_str_value(&buf[..expected_end - 1], 0), None);
        }
        // str16 and longer, binaries, other types: the general path.
        assert_eq!(short_str_value(&[0xda, 0, 1, b'a'], 0), None);
        assert_eq!(short_str_value(&[0xc4, 1, b'a'], 0), None);
        assert_eq!(short_str_value(&[0x07], 0), None);
        assert_eq!(short_str_value(&[0xd9], 0), None);
        assert_eq!(short_str_value(&[], 0), None);
    }

    #[test]
    fn integers_at_the_edges() {
        for i in [0i64, 9, 10, -1, i64::MAX, i64::MIN] {
            assert_eq!(json(&Value::Int(i)), i.to_string());
        }
        assert_eq!(json(&Value::UInt(u64::MAX)), u64::MAX.to_string());
    }

    #[test]
    fn keys_get_dots_replaced() {
        let mut out = Vec::new();
        write_key(&mut out, b"a.b..c", Some(b"_"));
        assert_eq!(out, br#""a_b__c""#);
        out.clear();
        write_key(&mut out, b"a.b", Some(b"\""));
        assert_eq!(out, br#""a\"b""#);
    }
}
