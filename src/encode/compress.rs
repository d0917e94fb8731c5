//! Whole-record compression (`compression = zlib | gzip`), applied last, after newline.
//!
//! A deflate state is a few hundred KiB that must be zeroed on creation, so building one per
//! record would dominate the cost of compressing a small record. Each thread keeps one per kind
//! and resets it between records. gzip is written as its fixed 10-byte header, raw deflate and
//! the CRC-32 + length trailer (RFC 1952), which lets the raw deflate state be reused as well.

use std::cell::RefCell;
use std::str::FromStr;

use flate2::{Compress, Crc, FlushCompress, Status};

use super::EncodeError;

/// How each encoded record is compressed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Compression {
    #[default]
    None,
    /// RFC 1950, what the aws-for-fluent-bit `kinesis` plugin's `compression zlib` produces.
    Zlib,
    /// RFC 1952, one gzip member per record.
    Gzip,
}

impl FromStr for Compression {
    type Err = String;

    /// `none`, `zlib` or `gzip` (case-insensitive).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "none" | "" => Ok(Compression::None),
            "zlib" => Ok(Compression::Zlib),
            "gzip" => Ok(Compression::Gzip),
            _ => Err(format!(
                "`{s}` is not a compression; use none, zlib or gzip"
            )),
        }
    }
}

#[derive(Default)]
struct Deflaters {
    zlib: Option<Compress>,
    raw: Option<Compress>,
}

thread_local! {
    static DEFLATERS: RefCell<Deflaters> = RefCell::new(Deflaters::default());
}

/// gzip header: magic, deflate, no flags, no mtime, no extra flags, OS unknown.
const GZIP_HEADER: [u8; 10] = [0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff];

/// Appends `input` compressed as `kind` (which must not be `None`) to `out`.
pub(crate) fn compress_into(
    kind: Compression,
    input: &[u8],
    out: &mut Vec<u8>,
) -> Result<(), EncodeError> {
    let start = out.len();
    let result = DEFLATERS.with(|cell| match cell.try_borrow_mut() {
        Ok(mut deflaters) => compress_with(kind, &mut deflaters, input, out),
        // Not reachable (no re-entry), but a fresh state is a correct fallback.
        Err(_) => compress_with(kind, &mut Deflaters::default(), input, out),
    });
    if result.is_err() {
        out.truncate(start);
    }
    result
}

fn compress_with(
    kind: Compression,
    deflaters: &mut Deflaters,
    input: &[u8],
    out: &mut Vec<u8>,
) -> Result<(), EncodeError> {
    let level = flate2::Compression::default();
    match kind {
        Compression::None => {
            out.extend_from_slice(input);
            Ok(())
        }
        Compression::Zlib => {
            let state = deflaters
                .zlib
                .get_or_insert_with(|| Compress::new(level, true));
            deflate(state, input, out)
        }
        Compression::Gzip => {
            let state = deflaters
                .raw
                .get_or_insert_with(|| Compress::new(level, false));
            out.extend_from_slice(&GZIP_HEADER);
            deflate(state, input, out)?;
            let mut crc = Crc::new();
            crc.update(input);
            out.extend_from_slice(&crc.sum().to_le_bytes());
            // ISIZE is the input length modulo 2^32 by definition.
            out.extend_from_slice(&(input.len() as u32).to_le_bytes());
            Ok(())
        }
    }
}

/// Runs one complete deflate stream of `input` into `out`, growing `out` as needed.
fn deflate(state: &mut Compress, input: &[u8], out: &mut Vec<u8>) -> Result<(), EncodeError> {
    state.reset();
    let mut consumed = 0usize;
    loop {
        if out.capacity() - out.len() < 1024 {
            out.reserve(input.len() / 2 + 1024);
        }
        let before_in = state.total_in();
        let status = state
            .compress_vec(&input[consumed..], out, FlushCompress::Finish)
            .map_err(|e| EncodeError::Compress(e.to_string()))?;
        consumed += (state.total_in() - before_in) as usize;
        if status == Status::StreamEnd {
            return Ok(());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn sample(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 7 % 251) as u8).collect()
    }

    #[test]
    fn zlib_and_gzip_round_trip_through_flate2_decoders() {
        for len in [0usize, 1, 1000, 300_000] {
            let input = sample(len);
            for kind in [Compression::Zlib, Compression::Gzip] {
                // Twice: the second run reuses the thread's reset state.
                for _ in 0..2 {
                    let mut out = b"prefix".to_vec();
                    compress_into(kind, &input, &mut out).unwrap();
                    assert_eq!(&out[..6], b"prefix");
                    let mut back = Vec::new();
                    match kind {
                        Compression::Zlib => {
                            flate2::read::ZlibDecoder::new(&out[6..])
                                .read_to_end(&mut back)
                                .unwrap();
                        }
                        _ => {
                            let mut decoder = flate2::read::GzDecoder::new(&out[6..]);
                            decoder.read_to_end(&mut back).unwrap();
                        }
                    }
                    assert_eq!(back, input, "{kind:?} {len}");
                }
            }
        }
    }

    #[test]
    fn names_parse() {
        assert_eq!("GZIP".parse(), Ok(Compression::Gzip));
        assert_eq!("none".parse(), Ok(Compression::None));
        assert!("brotli".parse::<Compression>().is_err());
    }
}
