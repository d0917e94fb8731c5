//! An ordered `key = "value"` table from the config (`records`, `rename`).
//!
//! Order matters: record_modifier adds keys in the order they were written, and renames apply in
//! order. A plain `HashMap` would shuffle them, so the table is read entry by entry into a vector
//! (the loader's `toml` is built with `preserve_order`, which hands entries over as written).

use std::fmt;

use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;

/// `key -> value` string pairs in written order.
///
/// Accepts a table (`{ ecs_cluster = "prod" }`) or, as Fluent Bit writes `Record` lines, a list
/// of `"KEY VALUE"` strings split at the first space.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct OrderedPairs(pub Vec<(String, String)>);

impl OrderedPairs {
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }
}

impl<'de> Deserialize<'de> for OrderedPairs {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(PairsVisitor)
    }
}

struct PairsVisitor;

impl<'de> Visitor<'de> for PairsVisitor {
    type Value = OrderedPairs;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a table of key = \"value\" strings, or a list of \"KEY VALUE\" strings")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<OrderedPairs, A::Error> {
        let mut pairs = Vec::with_capacity(map.size_hint().unwrap_or(0));
        while let Some((k, v)) = map.next_entry::<String, String>()? {
            pairs.push((k, v));
        }
        Ok(OrderedPairs(pairs))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<OrderedPairs, A::Error> {
        let mut pairs = Vec::with_capacity(seq.size_hint().unwrap_or(0));
        while let Some(line) = seq.next_element::<String>()? {
            let line = line.trim();
            let Some((k, v)) = line.split_once(char::is_whitespace) else {
                return Err(de::Error::custom(format!(
                    "`{line}` is not \"KEY VALUE\": a key, a space, then the value"
                )));
            };
            pairs.push((k.to_string(), v.trim_start().to_string()));
        }
        Ok(OrderedPairs(pairs))
    }
}

/// One string or a list of strings (`wildcard = "kube_*"` or `wildcard = ["a*", "b"]`): Fluent
/// Bit's repeatable keys, written once or many times.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StringOrList(pub Vec<String>);

impl StringOrList {
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = &str> {
        self.0.iter().map(String::as_str)
    }
}

impl<'de> Deserialize<'de> for StringOrList {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(StringOrListVisitor)
    }
}

struct StringOrListVisitor;

impl<'de> Visitor<'de> for StringOrListVisitor {
    type Value = StringOrList;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a string or a list of strings")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<StringOrList, E> {
        Ok(StringOrList(vec![v.to_string()]))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<StringOrList, A::Error> {
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0));
        while let Some(item) = seq.next_element::<String>()? {
            items.push(item);
        }
        Ok(StringOrList(items))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Deserialize)]
    struct Holder {
        p: OrderedPairs,
    }

    fn parse(src: &str) -> Result<OrderedPairs, toml::de::Error> {
        toml::from_str::<Holder>(src).map(|h| h.p)
    }

    #[test]
    fn keeps_written_order() {
        let p = parse("p = { zeta = \"1\", alpha = \"2\", mid = \"3\" }").unwrap();
        let keys: Vec<_> = p.iter().map(|(k, _)| k).collect();
        assert_eq!(keys, ["zeta", "alpha", "mid"]);
    }

    #[test]
    fn accepts_fluent_bit_record_lines() {
        let p = parse("p = [\"ecs_cluster prod\", \"msg hello  world\"]").unwrap();
        assert_eq!(
            p.0,
            vec![
                ("ecs_cluster".to_string(), "prod".to_string()),
                ("msg".to_string(), "hello  world".to_string())
            ]
        );
        assert!(parse("p = [\"lonely\"]").is_err());
    }

    #[test]
    fn string_or_list_takes_both_forms() {
        #[derive(Deserialize)]
        struct L {
            l: StringOrList,
        }
        let one: L = toml::from_str("l = \"a*\"").unwrap();
        assert_eq!(one.l.0, ["a*"]);
        let many: L = toml::from_str("l = [\"a\", \"b\"]").unwrap();
        assert_eq!(many.l.0, ["a", "b"]);
        assert!(toml::from_str::<L>("l = 3").is_err());
    }

    #[test]
    fn rejects_non_string_values() {
        let err = parse("p = { port = 8080 }").unwrap_err().to_string();
        assert!(err.contains("string"), "{err}");
    }
}
