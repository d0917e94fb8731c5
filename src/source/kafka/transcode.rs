//! JSON straight to msgpack: a message value that is a JSON object becomes the record's msgpack
//! map without building a tree of values first (the lean record form every source hands on;
//! see [`crate::event::pack`]).
//!
//! Written in place, in one pass: a container gets a one-byte header (`fixmap` / `fixarray`)
//! that is patched once its length is known, and widened (the rest moved up by 2 or 4 bytes)
//! only for the rare container of more than 15 entries. Keys are written from the parser's
//! borrowed slices, not allocated. The output is well-formed msgpack by construction and
//! nested at most [`MAX_DEPTH`] containers deep, so it needs no second check before it becomes
//! a record (what [`crate::msgpack::read::check_value`] would verify).

use std::fmt;

use serde::de::{DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};

use crate::msgpack::read::MAX_DEPTH;
use crate::msgpack::write;

/// Writes the JSON object `json` as a msgpack map to `out`, with `extra` (an already encoded
/// key and value) appended as one more entry. `None` when `json` is not one JSON object, or
/// nests deeper than a record may (then `out` is left as it was).
pub fn object_to_msgpack(json: &[u8], extra: Option<&[u8]>, out: &mut Vec<u8>) -> Option<()> {
    let start = out.len();
    let first = json.iter().find(|b| !b.is_ascii_whitespace())?;
    if *first != b'{' {
        return None;
    }
    let mut de = serde_json::Deserializer::from_slice(json);
    let result = Writer {
        out,
        extra,
        depth: 0,
    }
    .deserialize(&mut de)
    .and_then(|()| de.end());
    if result.is_err() {
        out.truncate(start);
        return None;
    }
    Some(())
}

/// Writes one JSON value as msgpack; a map gets `extra` appended (top level only). `depth`:
/// the containers around the value.
struct Writer<'a, 'e> {
    out: &'a mut Vec<u8>,
    extra: Option<&'e [u8]>,
    depth: usize,
}

impl<'de> DeserializeSeed<'de> for Writer<'_, '_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

/// Writes a map key (a JSON string) as a msgpack string.
struct Key<'a>(&'a mut Vec<u8>);

impl<'de> DeserializeSeed<'de> for Key<'_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for Key<'_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a string key")
    }
    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<(), E> {
        write::write_str(self.0, v.as_bytes()).map_err(too_long)
    }
}

fn too_long<E: serde::de::Error>(_: write::WriteError) -> E {
    E::custom("too long for msgpack")
}

/// Sets the one-byte container header written at `at` (`fix`: 0x80 for a map, 0x90 for an
/// array) to `n` entries, widening it when `n` does not fit in four bits.
fn finish_header<E: serde::de::Error>(
    out: &mut Vec<u8>,
    at: usize,
    fix: u8,
    n: usize,
) -> Result<(), E> {
    if n <= 15 {
        out[at] = fix | n as u8;
        return Ok(());
    }
    let mut header = Vec::with_capacity(5);
    if fix == 0x80 {
        write::write_map_len(&mut header, n).map_err(too_long)?;
    } else {
        write::write_array_len(&mut header, n).map_err(too_long)?;
    }
    out.splice(at..at + 1, header);
    Ok(())
}

/// Starts a container at `depth`: refused beyond [`MAX_DEPTH`], as the msgpack reader would.
fn open<E: serde::de::Error>(out: &mut Vec<u8>, depth: usize, fix: u8) -> Result<usize, E> {
    if depth >= MAX_DEPTH {
        return Err(E::custom("nested deeper than a record may be"));
    }
    out.push(fix);
    Ok(out.len() - 1)
}

impl<'de> Visitor<'de> for Writer<'_, '_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_bool<E>(self, v: bool) -> Result<(), E> {
        write::write_bool(self.out, v);
        Ok(())
    }
    fn visit_i64<E>(self, v: i64) -> Result<(), E> {
        write::write_int(self.out, v);
        Ok(())
    }
    fn visit_u64<E>(self, v: u64) -> Result<(), E> {
        write::write_uint(self.out, v);
        Ok(())
    }
    fn visit_f64<E>(self, v: f64) -> Result<(), E> {
        write::write_f64(self.out, v);
        Ok(())
    }
    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<(), E> {
        write::write_str(self.out, v.as_bytes()).map_err(too_long)
    }
    fn visit_unit<E>(self) -> Result<(), E> {
        write::write_nil(self.out);
        Ok(())
    }
    fn visit_none<E>(self) -> Result<(), E> {
        write::write_nil(self.out);
        Ok(())
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let at = open(self.out, self.depth, 0x90)?;
        let mut n = 0usize;
        while seq
            .next_element_seed(Writer {
                out: &mut *self.out,
                extra: None,
                depth: self.depth + 1,
            })?
            .is_some()
        {
            n += 1;
        }
        finish_header(self.out, at, 0x90, n)
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let at = open(self.out, self.depth, 0x80)?;
        let mut n = 0usize;
        while map.next_key_seed(Key(&mut *self.out))?.is_some() {
            map.next_value_seed(Writer {
                out: &mut *self.out,
                extra: None,
                depth: self.depth + 1,
            })?;
            n += 1;
        }
        if let Some(extra) = self.extra {
            self.out.extend_from_slice(extra);
            n += 1;
        }
        finish_header(self.out, at, 0x80, n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{Map, Value};

    fn back(bytes: Vec<u8>) -> serde_json::Value {
        let map = Map::from_checked_msgpack(bytes::Bytes::from(bytes));
        let mut out = Vec::new();
        crate::encode::json::write_value(&mut out, &Value::Map(map));
        serde_json::from_slice(&out).unwrap()
    }

    #[test]
    fn objects_transcode_with_every_json_type_and_the_extra_entry() {
        let json = br#" {"s":"a\"b","i":-3,"u":18446744073709551615,"f":1.5,"t":true,"n":null,
            "a":[1,[2],{"k":"v"}],"o":{"x":{}}} "#;
        let mut extra = Vec::new();
        write::write_str(&mut extra, b"meta").unwrap();
        write::write_value(&mut extra, &Value::Map(Map::new())).unwrap();
        let mut out = Vec::new();
        object_to_msgpack(json, Some(&extra), &mut out).unwrap();
        assert_eq!(
            back(out),
            serde_json::json!({"s":"a\"b","i":-3,"u":18446744073709551615u64,"f":1.5,"t":true,
                "n":null,"a":[1,[2],{"k":"v"}],"o":{"x":{}},"meta":{}})
        );
    }

    #[test]
    fn anything_but_one_object_is_refused() {
        for bad in [
            &b"[1]"[..],
            b"\"s\"",
            b"{\"a\":1",
            b"{} {}",
            b"",
            b"not json",
            b"{\"a\":1}x",
        ] {
            let mut out = vec![7];
            assert!(object_to_msgpack(bad, None, &mut out).is_none(), "{bad:?}");
            assert_eq!(out, [7]);
        }
    }

    /// Checks the output as every received record is checked, and reads it back.
    fn checked(json: &str) -> Option<serde_json::Value> {
        let mut out = vec![0xc0];
        object_to_msgpack(json.as_bytes(), None, &mut out)?;
        let out = out.split_off(1);
        assert_eq!(
            crate::msgpack::read::check_value(&out, 0, 0),
            Ok(out.len()),
            "{json}"
        );
        Some(back(out))
    }

    #[test]
    fn containers_of_more_than_15_entries_get_wider_headers() {
        for n in [15usize, 16, 255, 256, 65_535, 65_536] {
            let map = (0..n)
                .map(|i| format!("\"k{i}\":[{}]", vec!["1"; n % 17 + 14].join(",")))
                .collect::<Vec<_>>()
                .join(",");
            let json = format!("{{{map},\"last\":{{\"a\":[{}]}}}}", vec!["0"; n].join(","));
            let value = checked(&json).expect("an object");
            assert_eq!(
                value,
                serde_json::from_str::<serde_json::Value>(&json).unwrap()
            );
        }
    }

    #[test]
    fn nesting_is_bounded_as_the_msgpack_reader_bounds_it() {
        let nested = |levels: usize| {
            format!(
                "{}{}{}",
                "{\"a\":".repeat(levels - 1),
                "[]",
                "}".repeat(levels - 1)
            )
        };
        // MAX_DEPTH containers in all (the objects and the innermost array) are a record.
        assert!(checked(&nested(MAX_DEPTH)).is_some());
        assert!(checked(&nested(MAX_DEPTH + 1)).is_none());
        assert!(checked(&nested(100)).is_none());
    }

    #[test]
    fn keys_with_escapes_are_written_unescaped() {
        assert_eq!(
            checked(r#"{"a\"b\u00e9":1,"":{"\n":true}}"#).unwrap(),
            serde_json::json!({"a\"b\u{e9}": 1, "": {"\n": true}})
        );
    }
}
