//! JSON straight to msgpack: a message value that is a JSON object becomes the record's msgpack
//! map without building a tree of values first (the lean record form every source hands on;
//! see [`crate::event::pack`]).

use std::fmt;

use serde::de::{DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};

use crate::msgpack::write;

/// Writes the JSON object `json` as a msgpack map to `out`, with `extra` (an already encoded
/// key and value) appended as one more entry. `None` when `json` is not one JSON object (then
/// `out` is left as it was).
pub fn object_to_msgpack(json: &[u8], extra: Option<&[u8]>, out: &mut Vec<u8>) -> Option<()> {
    let start = out.len();
    let first = json.iter().find(|b| !b.is_ascii_whitespace())?;
    if *first != b'{' {
        return None;
    }
    let mut de = serde_json::Deserializer::from_slice(json);
    let result = Writer { out, extra }
        .deserialize(&mut de)
        .and_then(|()| de.end());
    if result.is_err() {
        out.truncate(start);
        return None;
    }
    Some(())
}

/// Writes one JSON value as msgpack; a map gets `extra` appended (top level only).
struct Writer<'a, 'e> {
    out: &'a mut Vec<u8>,
    extra: Option<&'e [u8]>,
}

impl<'de> DeserializeSeed<'de> for Writer<'_, '_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

fn too_long<E: serde::de::Error>(_: write::WriteError) -> E {
    E::custom("too long for msgpack")
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
        let mut items = Vec::new();
        let mut n = 0usize;
        while seq
            .next_element_seed(Writer {
                out: &mut items,
                extra: None,
            })?
            .is_some()
        {
            n += 1;
        }
        write::write_array_len(self.out, n).map_err(too_long)?;
        self.out.extend_from_slice(&items);
        Ok(())
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let mut entries = Vec::new();
        let mut n = 0usize;
        while let Some(key) = map.next_key::<std::borrow::Cow<'de, str>>()? {
            write::write_str(&mut entries, key.as_bytes()).map_err(too_long)?;
            map.next_value_seed(Writer {
                out: &mut entries,
                extra: None,
            })?;
            n += 1;
        }
        if let Some(extra) = self.extra {
            entries.extend_from_slice(extra);
            n += 1;
        }
        write::write_map_len(self.out, n).map_err(too_long)?;
        self.out.extend_from_slice(&entries);
        Ok(())
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
}
