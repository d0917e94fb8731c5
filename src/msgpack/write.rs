//! msgpack encoding of [`Value`]s into a `Vec<u8>`, always in the smallest form for each value
//! (as every common encoder does), `str` and `bin` kept apart.
//!
//! Writing to a vector cannot fail; the only error is a string, binary or container longer than
//! the format's 32-bit length fields, which no record we decode can reach (frames are bounded far
//! below 4 GiB) but a function taking any `Value` must still refuse rather than corrupt output.

use crate::event::{Map, Value};

/// A length beyond what msgpack can express.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("a msgpack {what} of length {len} is over the format's limit of 4294967295")]
pub struct WriteError {
    pub what: &'static str,
    pub len: usize,
}

fn len32(what: &'static str, len: usize) -> Result<u32, WriteError> {
    u32::try_from(len).map_err(|_| WriteError { what, len })
}

/// Writes a length-prefixed header: `fix` when the length fits its low bits (`fix_max`),
/// otherwise the 8/16/32-bit marker that fits (`m8` may be 0 when the type has no 8-bit form).
fn write_len(out: &mut Vec<u8>, len: u32, fix: Option<(u8, u32)>, m8: u8, m16: u8, m32: u8) {
    match fix {
        Some((fix_marker, fix_max)) if len <= fix_max => out.push(fix_marker | len as u8),
        _ if m8 != 0 && len <= 0xff => out.extend_from_slice(&[m8, len as u8]),
        _ if len <= 0xffff => {
            out.push(m16);
            out.extend_from_slice(&(len as u16).to_be_bytes());
        }
        _ => {
            out.push(m32);
            out.extend_from_slice(&len.to_be_bytes());
        }
    }
}

pub fn write_nil(out: &mut Vec<u8>) {
    out.push(0xc0);
}

pub fn write_bool(out: &mut Vec<u8>, b: bool) {
    out.push(if b { 0xc3 } else { 0xc2 });
}

pub fn write_uint(out: &mut Vec<u8>, u: u64) {
    if u < 0x80 {
        out.push(u as u8);
    } else if u <= 0xff {
        out.extend_from_slice(&[0xcc, u as u8]);
    } else if u <= 0xffff {
        out.push(0xcd);
        out.extend_from_slice(&(u as u16).to_be_bytes());
    } else if u <= 0xffff_ffff {
        out.push(0xce);
        out.extend_from_slice(&(u as u32).to_be_bytes());
    } else {
        out.push(0xcf);
        out.extend_from_slice(&u.to_be_bytes());
    }
}

pub fn write_int(out: &mut Vec<u8>, i: i64) {
    if i >= 0 {
        write_uint(out, i as u64);
    } else if i >= -32 {
        out.push(i as i8 as u8);
    } else if i >= i64::from(i8::MIN) {
        out.extend_from_slice(&[0xd0, i as i8 as u8]);
    } else if i >= i64::from(i16::MIN) {
        out.push(0xd1);
        out.extend_from_slice(&(i as i16).to_be_bytes());
    } else if i >= i64::from(i32::MIN) {
        out.push(0xd2);
        out.extend_from_slice(&(i as i32).to_be_bytes());
    } else {
        out.push(0xd3);
        out.extend_from_slice(&i.to_be_bytes());
    }
}

pub fn write_f64(out: &mut Vec<u8>, f: f64) {
    out.push(0xcb);
    out.extend_from_slice(&f.to_be_bytes());
}

/// The header of a `str` of `len` bytes; the caller appends exactly `len` bytes after it.
pub fn write_str_len(out: &mut Vec<u8>, len: usize) -> Result<(), WriteError> {
    let len = len32("str", len)?;
    write_len(out, len, Some((0xa0, 31)), 0xd9, 0xda, 0xdb);
    Ok(())
}

pub fn write_str(out: &mut Vec<u8>, s: &[u8]) -> Result<(), WriteError> {
    write_str_len(out, s.len())?;
    out.extend_from_slice(s);
    Ok(())
}

pub fn write_bin(out: &mut Vec<u8>, b: &[u8]) -> Result<(), WriteError> {
    let len = len32("bin", b.len())?;
    write_len(out, len, None, 0xc4, 0xc5, 0xc6);
    out.extend_from_slice(b);
    Ok(())
}

pub fn write_ext(out: &mut Vec<u8>, ty: i8, data: &[u8]) -> Result<(), WriteError> {
    let len = len32("ext", data.len())?;
    match len {
        1 => out.push(0xd4),
        2 => out.push(0xd5),
        4 => out.push(0xd6),
        8 => out.push(0xd7),
        16 => out.push(0xd8),
        _ => write_len(out, len, None, 0xc7, 0xc8, 0xc9),
    }
    out.push(ty as u8);
    out.extend_from_slice(data);
    Ok(())
}

/// The header of an array; the caller writes `len` values after it.
pub fn write_array_len(out: &mut Vec<u8>, len: usize) -> Result<(), WriteError> {
    let len = len32("array", len)?;
    write_len(out, len, Some((0x90, 15)), 0, 0xdc, 0xdd);
    Ok(())
}

/// The header of a map; the caller writes `len` key/value pairs after it.
pub fn write_map_len(out: &mut Vec<u8>, len: usize) -> Result<(), WriteError> {
    let len = len32("map", len)?;
    write_len(out, len, Some((0x80, 15)), 0, 0xde, 0xdf);
    Ok(())
}

pub fn write_value(out: &mut Vec<u8>, v: &Value) -> Result<(), WriteError> {
    match v {
        Value::Nil => write_nil(out),
        Value::Bool(b) => write_bool(out, *b),
        Value::Int(i) => write_int(out, *i),
        Value::UInt(u) => write_uint(out, *u),
        Value::Float(f) => write_f64(out, *f),
        Value::Str(s) => write_str(out, s)?,
        Value::Bin(b) => write_bin(out, b)?,
        Value::Ext(ty, data) => write_ext(out, *ty, data)?,
        Value::Array(items) => {
            write_array_len(out, items.len())?;
            for item in items {
                write_value(out, item)?;
            }
        }
        Value::Map(map) => write_map(out, map)?,
    }
    Ok(())
}

/// A map with `str` keys (keys are bytes in our model; msgpack producers send them as `str`).
/// An unchanged map decoded from msgpack is copied as it was received.
pub fn write_map(out: &mut Vec<u8>, map: &Map) -> Result<(), WriteError> {
    if let Some(raw) = map.raw() {
        out.extend_from_slice(raw);
        return Ok(());
    }
    write_map_len(out, map.len())?;
    for (k, v) in map.iter() {
        write_str(out, k)?;
        write_value(out, v)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    /// Our output must equal the `rmp` crate's (an independent encoder that also picks the
    /// smallest form) for every boundary of every length class.
    #[test]
    fn matches_rmp_byte_for_byte() {
        let ints: [i64; 16] = [
            0,
            127,
            128,
            255,
            256,
            65535,
            65536,
            u32::MAX as i64,
            u32::MAX as i64 + 1,
            i64::MAX,
            -1,
            -32,
            -33,
            -128,
            -129,
            i64::MIN,
        ];
        for i in ints {
            let (mut ours, mut theirs) = (Vec::new(), Vec::new());
            write_int(&mut ours, i);
            rmp::encode::write_sint(&mut theirs, i).unwrap();
            assert_eq!(ours, theirs, "int {i}");
        }
        let (mut ours, mut theirs) = (Vec::new(), Vec::new());
        write_uint(&mut ours, u64::MAX);
        rmp::encode::write_uint(&mut theirs, u64::MAX).unwrap();
        assert_eq!(ours, theirs);

        for len in [0usize, 1, 15, 16, 31, 32, 255, 256, 65535, 65536] {
            let data = vec![b'z'; len];
            let (mut ours, mut theirs) = (Vec::new(), Vec::new());
            write_str(&mut ours, &data).unwrap();
            rmp::encode::write_str(&mut theirs, std::str::from_utf8(&data).unwrap()).unwrap();
            assert_eq!(ours, theirs, "str {len}");

            let (mut ours, mut theirs) = (Vec::new(), Vec::new());
            write_bin(&mut ours, &data).unwrap();
            rmp::encode::write_bin(&mut theirs, &data).unwrap();
            assert_eq!(ours, theirs, "bin {len}");

            let (mut ours, mut theirs) = (Vec::new(), Vec::new());
            write_ext(&mut ours, -5, &data).unwrap();
            rmp::encode::write_ext_meta(&mut theirs, len as u32, -5).unwrap();
            theirs.extend_from_slice(&data);
            assert_eq!(ours, theirs, "ext {len}");

            let (mut ours, mut theirs) = (Vec::new(), Vec::new());
            write_array_len(&mut ours, len).unwrap();
            write_map_len(&mut ours, len).unwrap();
            rmp::encode::write_array_len(&mut theirs, len as u32).unwrap();
            rmp::encode::write_map_len(&mut theirs, len as u32).unwrap();
            assert_eq!(ours, theirs, "containers {len}");
        }
    }

    #[test]
    fn values_round_trip_through_the_reader() {
        let mut inner = Map::new();
        inner.push(Bytes::from("k"), Value::Ext(0, Bytes::from_static(&[1; 8])));
        let mut map = Map::new();
        map.push(
            Bytes::from("bad"),
            Value::Str(Bytes::from_static(&[0xff, 0xfe])),
        );
        map.push(
            Bytes::from("bin"),
            Value::Bin(Bytes::from_static(b"\0\x01")),
        );
        map.push(
            Bytes::from("arr"),
            Value::Array(vec![
                Value::Nil,
                Value::Bool(false),
                Value::Int(-70000),
                Value::UInt(u64::MAX),
                Value::Float(2.5),
                Value::Map(inner),
            ]),
        );
        let mut out = Vec::new();
        write_map(&mut out, &map).unwrap();
        let back = crate::msgpack::Reader::new(Bytes::from(out))
            .read_map()
            .unwrap();
        assert_eq!(back, map);
    }
}
