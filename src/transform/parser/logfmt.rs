//! logfmt (`level=info msg="disk full" retry`) the way Fluent Bit's `logfmt` parser reads it.
//!
//! A key is a run of bytes that are not blank, `=` or `"`; `key=value` gives a string (quoted
//! values may hold spaces, `\"` and `\\` escapes), and a key without a value (or with an empty
//! one) becomes `true`. Bytes that cannot start a key (a stray `"`) are skipped. So almost any
//! text parses: only a line without a single key fails. Put `logfmt` last among several parsers.

use bytes::Bytes;

use crate::event::{Map, Value};

fn is_key_byte(b: u8) -> bool {
    b > b' ' && b != b'=' && b != b'"'
}

/// The pairs of `line`, or `None` when it holds no key at all.
pub fn parse(line: &Bytes) -> Option<Map> {
    let b = line.as_ref();
    let mut map = Map::new();
    let mut i = 0;
    while i < b.len() {
        if b[i] <= b' ' {
            i += 1;
            continue;
        }
        let key_start = i;
        while i < b.len() && is_key_byte(b[i]) {
            i += 1;
        }
        if i == key_start {
            i += 1;
            continue;
        }
        let key = line.slice(key_start..i);
        let mut value = Value::Bool(true);
        if i < b.len() && b[i] == b'=' {
            i += 1;
            if i < b.len() && b[i] == b'"' {
                i += 1;
                let start = i;
                let mut escaped = false;
                while i < b.len() && b[i] != b'"' {
                    escaped |= b[i] == b'\\';
                    i += if b[i] == b'\\' { 2 } else { 1 };
                }
                let end = i.min(b.len());
                let text = if escaped {
                    Bytes::from(unescape(&b[start..end]))
                } else {
                    line.slice(start..end)
                };
                value = Value::Str(text);
                i = end + 1;
            } else {
                let start = i;
                while i < b.len() && is_key_byte(b[i]) {
                    i += 1;
                }
                if i > start {
                    value = Value::Str(line.slice(start..i));
                }
            }
        }
        map.insert(key, value);
    }
    (!map.is_empty()).then_some(map)
}

fn unescape(raw: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(raw.len());
    let mut iter = raw.iter();
    while let Some(&c) = iter.next() {
        match (c, iter.as_slice().first()) {
            (b'\\', Some(&next)) if next == b'"' || next == b'\\' => {
                out.push(next);
                iter.next();
            }
            _ => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(text: &'static str) -> Vec<(String, Value)> {
        parse(&Bytes::from_static(text.as_bytes()))
            .map(|m| {
                m.iter()
                    .map(|(k, v)| (String::from_utf8_lossy(k).into_owned(), v.clone()))
                    .collect()
            })
            .unwrap_or_default()
    }

    #[test]
    fn values_quotes_and_bare_keys() {
        assert_eq!(
            pairs(r#"a=1 b="two words" c y= d="q\"x""#),
            vec![
                ("a".into(), Value::from("1")),
                ("b".into(), Value::from("two words")),
                ("c".into(), Value::Bool(true)),
                ("y".into(), Value::Bool(true)),
                ("d".into(), Value::from("q\"x")),
            ]
        );
    }

    #[test]
    fn almost_anything_parses_but_nothing_does_not() {
        assert_eq!(
            pairs("plain text"),
            vec![
                ("plain".into(), Value::Bool(true)),
                ("text".into(), Value::Bool(true))
            ]
        );
        assert_eq!(pairs(r#"{"a":1}"#)[0].0, "{");
        assert!(parse(&Bytes::from_static(b"   ")).is_none());
        assert!(parse(&Bytes::from_static(b"\"\"")).is_none());
    }
}
