//! The record model: a tag, a timestamp with nanoseconds and an ordered map of values.
//!
//! Strings and binaries are [`Bytes`] slices, normally of the very buffer a source read from the
//! network, so decoding a forward frame copies no field and an encoder can write straight from
//! the received bytes. A msgpack `str` is kept as bytes rather than `String` on purpose: Docker's
//! fluentd driver cuts long lines on byte boundaries, so a `str` may hold invalid UTF-8 and must
//! still pass through intact.

use std::fmt;
use std::sync::{Arc, OnceLock};

use bytes::Bytes;

/// The tag a record was produced under (`app.web`, `web-firelens-<task id>`). Shared by every
/// record of one forward message, hence reference counted.
pub type Tag = Arc<str>;

/// A point in time with nanosecond precision (what the forward protocol's EventTime carries).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct EventTime {
    /// Seconds since the Unix epoch.
    pub secs: i64,
    /// Nanoseconds within the second, `0..1_000_000_000`.
    pub nanos: u32,
}

impl EventTime {
    /// Builds a time from seconds and nanoseconds, carrying nanoseconds over a full second.
    pub fn new(secs: i64, nanos: u32) -> Self {
        EventTime {
            secs: secs + i64::from(nanos / 1_000_000_000),
            nanos: nanos % 1_000_000_000,
        }
    }

    /// The current wall-clock time.
    pub fn now() -> Self {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        EventTime {
            secs: now.as_secs() as i64,
            nanos: now.subsec_nanos(),
        }
    }

    /// From a floating point number of seconds (Fluent's "double" time form).
    pub fn from_f64(secs: f64) -> Self {
        if !secs.is_finite() {
            return EventTime::default();
        }
        let whole = secs.floor();
        let nanos = ((secs - whole) * 1e9).round().clamp(0.0, 999_999_999.0) as u32;
        EventTime {
            secs: whole as i64,
            nanos,
        }
    }

    /// From milliseconds since the epoch (CloudWatch Logs' timestamps).
    pub fn from_millis(ms: i64) -> Self {
        EventTime {
            secs: ms.div_euclid(1000),
            nanos: (ms.rem_euclid(1000) as u32) * 1_000_000,
        }
    }

    /// Milliseconds since the epoch.
    pub fn as_millis(&self) -> i64 {
        self.secs
            .saturating_mul(1000)
            .saturating_add(i64::from(self.nanos / 1_000_000))
    }

    /// Seconds since the epoch as a float.
    pub fn as_f64(&self) -> f64 {
        self.secs as f64 + f64::from(self.nanos) / 1e9
    }
}

/// One value of a record: the msgpack data model.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    Nil,
    Bool(bool),
    /// Signed integers (msgpack negative and small positive ints).
    Int(i64),
    /// Unsigned integers above `i64::MAX` keep their full range.
    UInt(u64),
    Float(f64),
    /// A msgpack `str`: UTF-8 in the normal case, but not guaranteed (see the module docs).
    Str(Bytes),
    Bin(Bytes),
    Array(Vec<Value>),
    Map(Map),
    /// A msgpack extension value other than a timestamp we decoded: type and payload.
    Ext(i8, Bytes),
}

impl Value {
    /// A string value from anything string-like.
    pub fn string(s: impl Into<Bytes>) -> Value {
        Value::Str(s.into())
    }

    /// The bytes of a `str` or `bin` value.
    pub fn as_bytes(&self) -> Option<&[u8]> {
        match self {
            Value::Str(b) | Value::Bin(b) => Some(b),
            _ => None,
        }
    }

    /// The map inside a `Map` value.
    pub fn as_map(&self) -> Option<&Map> {
        match self {
            Value::Map(m) => Some(m),
            _ => None,
        }
    }

    /// True for `Nil`, empty strings/binaries, arrays and maps.
    pub fn is_empty(&self) -> bool {
        match self {
            Value::Nil => true,
            Value::Str(b) | Value::Bin(b) => b.is_empty(),
            Value::Array(a) => a.is_empty(),
            Value::Map(m) => m.is_empty(),
            _ => false,
        }
    }

    /// Appends a plain-text rendering of the value: strings and binaries as their bytes,
    /// scalars in their usual decimal form, arrays and maps as JSON. This is what a partition
    /// key, a message key or a `log_key` in text format uses.
    pub fn write_text(&self, out: &mut Vec<u8>) {
        match self {
            Value::Str(b) | Value::Bin(b) => out.extend_from_slice(b),
            Value::Nil => {}
            other => crate::encode::json::write_value(out, other),
        }
    }

    /// The plain-text rendering as a (lossily decoded) `String`.
    pub fn to_text(&self) -> String {
        let mut out = Vec::new();
        self.write_text(&mut out);
        match String::from_utf8(out) {
            Ok(s) => s,
            Err(e) => String::from_utf8_lossy(e.as_bytes()).into_owned(),
        }
    }
}

impl From<serde_json::Value> for Value {
    /// Converts parsed JSON (stdin `format = "json"`, CloudWatch Logs messages). Strings move
    /// into `Bytes` without copying.
    fn from(v: serde_json::Value) -> Self {
        match v {
            serde_json::Value::Null => Value::Nil,
            serde_json::Value::Bool(b) => Value::Bool(b),
            serde_json::Value::Number(n) => {
                if let Some(i) = n.as_i64() {
                    Value::Int(i)
                } else if let Some(u) = n.as_u64() {
                    Value::UInt(u)
                } else {
                    Value::Float(n.as_f64().unwrap_or(f64::NAN))
                }
            }
            serde_json::Value::String(s) => Value::Str(Bytes::from(s)),
            serde_json::Value::Array(a) => Value::Array(a.into_iter().map(Value::from).collect()),
            serde_json::Value::Object(o) => Value::Map(
                o.into_iter()
                    .map(|(k, v)| (Bytes::from(k), Value::from(v)))
                    .collect(),
            ),
        }
    }
}

impl From<&str> for Value {
    fn from(s: &str) -> Self {
        Value::Str(Bytes::copy_from_slice(s.as_bytes()))
    }
}

impl From<String> for Value {
    fn from(s: String) -> Self {
        Value::Str(Bytes::from(s))
    }
}

impl From<i64> for Value {
    fn from(i: i64) -> Self {
        Value::Int(i)
    }
}

/// An ordered map with byte-string keys. Records hold a handful of keys, so lookups are linear
/// scans over a vector: faster than hashing at this size and it keeps the producer's order.
///
/// A map decoded from msgpack keeps the bytes it was decoded from (`raw`, a slice of the
/// received frame) and parses them into entries only when something reads a field: a record
/// that no transform and no option looks into goes from the forward frame to the sink's
/// encoder without a single allocation, the encoder writing JSON or msgpack straight from the
/// received bytes. Any change drops `raw`, so it always matches the entries. Nested maps are
/// lazy in the same way.
#[derive(Default)]
pub struct Map {
    /// The map's msgpack encoding, well-formed and checked by [`crate::msgpack::read`] (no
    /// container keys, bounded depth), so parsing it cannot fail. `None` once modified.
    raw: Option<Bytes>,
    /// The entries, parsed from `raw` on first read, or built directly.
    parsed: OnceLock<Vec<(Bytes, Value)>>,
}

impl Clone for Map {
    /// A map still in msgpack form clones as its bytes alone (a reference count), not its
    /// parsed entries: the clone parses them again if it is read.
    fn clone(&self) -> Self {
        match &self.raw {
            Some(raw) => Map::from_checked_msgpack(raw.clone()),
            None => Map {
                raw: None,
                parsed: self.parsed.clone(),
            },
        }
    }
}

impl PartialEq for Map {
    fn eq(&self, other: &Self) -> bool {
        match (&self.raw, &other.raw) {
            (Some(a), Some(b)) if a == b => true,
            _ => self.entries() == other.entries(),
        }
    }
}

impl fmt::Debug for Map {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map()
            .entries(self.entries().iter().map(|(k, v)| (ByteStr(k), v)))
            .finish()
    }
}

/// Shows a key as text when it is UTF-8.
struct ByteStr<'a>(&'a [u8]);

impl fmt::Debug for ByteStr<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match std::str::from_utf8(self.0) {
            Ok(s) => fmt::Debug::fmt(s, f),
            Err(_) => fmt::Debug::fmt(self.0, f),
        }
    }
}

impl Map {
    pub fn new() -> Self {
        Map::default()
    }

    pub fn with_capacity(n: usize) -> Self {
        Map {
            raw: None,
            parsed: OnceLock::from(Vec::with_capacity(n)),
        }
    }

    /// A map over its msgpack encoding, parsed on first read. Only for bytes that
    /// [`crate::msgpack::read::check_value`] accepted: see [`Map::raw`].
    pub(crate) fn from_checked_msgpack(raw: Bytes) -> Self {
        Map {
            raw: Some(raw),
            parsed: OnceLock::new(),
        }
    }

    /// This map in its msgpack form: clones then share one buffer rather than copying every
    /// entry. For a map attached to many records (a tailed file's Kubernetes metadata, which
    /// cost ~1 KiB per line when each record had its own copy).
    pub fn into_shared(self) -> Map {
        let mut out = Vec::new();
        if crate::msgpack::write::write_map(&mut out, &self).is_err() {
            return self;
        }
        let len = out.len();
        Map::from_written(&Bytes::from(out), 0, len).unwrap_or(self)
    }

    /// The map that [`crate::msgpack::write::write_map`] wrote at `start..end` of `buf`, in
    /// msgpack form, if the reader would take it (a map built in memory may nest deeper than a
    /// received record may).
    fn from_written(buf: &Bytes, start: usize, end: usize) -> Option<Map> {
        (end > start && crate::msgpack::read::check_value(buf, start, 0) == Ok(end))
            .then(|| Map::from_checked_msgpack(buf.slice(start..end)))
    }

    /// The msgpack bytes this map was decoded from, while it is unchanged: an encoder may
    /// write from them instead of walking the entries.
    pub fn raw(&self) -> Option<&Bytes> {
        self.raw.as_ref()
    }

    /// Whether the entries were parsed (or built) already; for tests of the lean path.
    pub fn is_parsed(&self) -> bool {
        self.parsed.get().is_some()
    }

    fn entries(&self) -> &Vec<(Bytes, Value)> {
        self.parsed.get_or_init(|| match &self.raw {
            Some(raw) => crate::msgpack::read::parse_checked_map(raw.clone()),
            None => Vec::new(),
        })
    }

    fn entries_mut(&mut self) -> &mut Vec<(Bytes, Value)> {
        self.entries();
        self.raw = None;
        match self.parsed.get_mut() {
            Some(entries) => entries,
            // entries() initialised the cell just above.
            None => unreachable!("map entries are initialised before mutation"),
        }
    }

    pub fn len(&self) -> usize {
        self.entries().len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries().is_empty()
    }

    /// The value under `key` (the first one, should a producer have sent a key twice).
    pub fn get(&self, key: &[u8]) -> Option<&Value> {
        self.entries()
            .iter()
            .find(|(k, _)| k.as_ref() == key)
            .map(|(_, v)| v)
    }

    pub fn get_mut(&mut self, key: &[u8]) -> Option<&mut Value> {
        self.entries_mut()
            .iter_mut()
            .find(|(k, _)| k.as_ref() == key)
            .map(|(_, v)| v)
    }

    /// The value at a nested path (`kubernetes->pod_name`).
    pub fn get_path(&self, path: &KeyPath) -> Option<&Value> {
        let (first, rest) = path.parts.split_first()?;
        let mut current = self.get(first)?;
        for part in rest {
            current = current.as_map()?.get(part)?;
        }
        Some(current)
    }

    /// Sets `key`, replacing an existing value in place (keeping its position) or appending.
    pub fn insert(&mut self, key: impl Into<Bytes>, value: Value) {
        let key = key.into();
        match self.get_mut(&key) {
            Some(slot) => *slot = value,
            None => self.entries_mut().push((key, value)),
        }
    }

    /// Appends without checking for an existing key: for decoders filling a fresh map.
    pub fn push(&mut self, key: Bytes, value: Value) {
        self.entries_mut().push((key, value));
    }

    /// Sets a nested path, creating intermediate maps (replacing non-map values on the way).
    pub fn insert_path(&mut self, path: &KeyPath, value: Value) {
        let Some((last, parents)) = path.parts.split_last() else {
            return;
        };
        let mut current = self;
        for part in parents {
            if !matches!(current.get(part), Some(Value::Map(_))) {
                current.insert(part.clone(), Value::Map(Map::new()));
            }
            current = match current.get_mut(part) {
                Some(Value::Map(m)) => m,
                _ => return,
            };
        }
        current.insert(last.clone(), value);
    }

    /// Removes `key`, returning its value.
    pub fn remove(&mut self, key: &[u8]) -> Option<Value> {
        let pos = self.entries().iter().position(|(k, _)| k.as_ref() == key)?;
        Some(self.entries_mut().remove(pos).1)
    }

    /// Removes a nested path, returning its value.
    pub fn remove_path(&mut self, path: &KeyPath) -> Option<Value> {
        let (last, parents) = path.parts.split_last()?;
        let mut current = self;
        for part in parents {
            current = match current.get_mut(part) {
                Some(Value::Map(m)) => m,
                _ => return None,
            };
        }
        current.remove(last)
    }

    /// Renames `from` to `to` in place. Returns false when `from` is absent.
    pub fn rename(&mut self, from: &[u8], to: Bytes) -> bool {
        if from == to.as_ref() {
            return self.get(from).is_some();
        }
        if self.get(from).is_none() {
            return false;
        }
        self.remove(&to);
        if let Some(entry) = self
            .entries_mut()
            .iter_mut()
            .find(|(k, _)| k.as_ref() == from)
        {
            entry.0 = to;
        }
        true
    }

    /// Keeps the entries for which `keep` returns true.
    pub fn retain(&mut self, mut keep: impl FnMut(&[u8], &Value) -> bool) {
        self.entries_mut().retain(|(k, v)| keep(k, v));
    }

    pub fn iter(&self) -> impl ExactSizeIterator<Item = (&Bytes, &Value)> {
        self.entries().iter().map(|(k, v)| (k, v))
    }

    pub fn iter_mut(&mut self) -> impl ExactSizeIterator<Item = (&mut Bytes, &mut Value)> {
        self.entries_mut().iter_mut().map(|(k, v)| (k, v))
    }
}

impl FromIterator<(Bytes, Value)> for Map {
    fn from_iter<I: IntoIterator<Item = (Bytes, Value)>>(iter: I) -> Self {
        Map {
            raw: None,
            parsed: OnceLock::from(iter.into_iter().collect::<Vec<_>>()),
        }
    }
}

/// A key path into nested maps, written `a->b->c` in configuration (the Fluent Bit convention).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct KeyPath {
    parts: Vec<Bytes>,
    display: String,
}

impl KeyPath {
    /// Parses `a->b->c`. Empty parts are kept verbatim so that a key literally named `` still
    /// works; config validation rejects an empty path.
    pub fn parse(s: &str) -> KeyPath {
        KeyPath {
            parts: s
                .split("->")
                .map(|p| Bytes::copy_from_slice(p.as_bytes()))
                .collect(),
            display: s.to_string(),
        }
    }

    /// The first (top-level) key.
    pub fn first(&self) -> &[u8] {
        self.parts.first().map(|b| b.as_ref()).unwrap_or_default()
    }

    pub fn is_nested(&self) -> bool {
        self.parts.len() > 1
    }

    pub fn as_str(&self) -> &str {
        &self.display
    }
}

impl fmt::Display for KeyPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.display)
    }
}

/// One log record.
#[derive(Clone, Debug, PartialEq)]
pub struct Event {
    pub tag: Tag,
    pub time: EventTime,
    pub record: Map,
}

impl Event {
    pub fn new(tag: Tag, time: EventTime, record: Map) -> Self {
        Event { tag, time, record }
    }
}

/// Packs the records of a batch into one msgpack buffer, each record then a slice of it: the
/// lean form the forward source gets for free, for sources that build their records field by
/// field (tail, tcp, stdin). A packed record costs its msgpack bytes and nothing per field,
/// keeps nothing else alive (a read buffer its strings pointed into), and is encoded straight
/// from those bytes. Returns the bytes packed (at least one per record): the weight of the
/// batch in a sink's queue. A record that cannot be packed (nested deeper than msgpack records
/// may be) stays as it is.
pub fn pack(events: &mut [Event]) -> usize {
    let mut buf = Vec::new();
    let mut ends = Vec::with_capacity(events.len());
    for event in events.iter() {
        let start = buf.len();
        if crate::msgpack::write::write_map(&mut buf, &event.record).is_err() {
            buf.truncate(start);
        }
        ends.push(buf.len());
    }
    let packed = Bytes::from(buf);
    let mut start = 0;
    let mut checked = CheckedRaw::default();
    for (event, end) in events.iter_mut().zip(ends) {
        if end > start && checked.fits(&event.record, 0) {
            event.record = Map::from_checked_msgpack(packed.slice(start..end));
        }
        start = end;
    }
    packed.len().max(events.len())
}

/// Whether maps that [`crate::msgpack::write::write_map`] writes would pass
/// [`crate::msgpack::read::check_value`]: it writes every key as a string, so the one thing
/// to check is the depth. An in-memory map is walked; a map still in msgpack form is checked
/// as bytes, once per [`pack`] call for maps that many records share (a tailed file's
/// Kubernetes metadata): re-reading every packed record's bytes cost 4% of the tail source's
/// CPU.
#[derive(Default)]
struct CheckedRaw {
    /// (address, length, depth) of msgpack maps found to fit at that depth.
    fits: Vec<(usize, usize, usize)>,
}

impl CheckedRaw {
    fn fits(&mut self, map: &Map, depth: usize) -> bool {
        if let Some(raw) = map.raw() {
            let key = (raw.as_ptr() as usize, raw.len(), depth);
            if self.fits.contains(&key) {
                return true;
            }
            let fits = crate::msgpack::read::check_value(raw, 0, depth) == Ok(raw.len());
            if fits && self.fits.len() < 8 {
                self.fits.push(key);
            }
            return fits;
        }
        depth < crate::msgpack::MAX_DEPTH && map.iter().all(|(_, v)| self.value_fits(v, depth + 1))
    }

    fn value_fits(&mut self, value: &Value, depth: usize) -> bool {
        match value {
            Value::Map(map) => self.fits(map, depth),
            Value::Array(items) => {
                depth < crate::msgpack::MAX_DEPTH
                    && items.iter().all(|item| self.value_fits(item, depth + 1))
            }
            _ => true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &str) -> Value {
        Value::from(v)
    }

    #[test]
    fn nested_paths_get_insert_remove() {
        let mut m = Map::new();
        let p = KeyPath::parse("kubernetes->pod_name");
        assert!(m.get_path(&p).is_none());
        m.insert_path(&p, s("web-1"));
        assert_eq!(m.get_path(&p), Some(&s("web-1")));
        m.insert_path(&KeyPath::parse("kubernetes->namespace_name"), s("prod"));
        assert_eq!(
            m.get(b"kubernetes").and_then(Value::as_map).map(Map::len),
            Some(2)
        );
        assert_eq!(m.remove_path(&p), Some(s("web-1")));
        assert!(m.get_path(&p).is_none());
    }

    #[test]
    fn insert_replaces_in_place_and_rename_keeps_order() {
        let mut m = Map::new();
        m.insert("a", s("1"));
        m.insert("b", s("2"));
        m.insert("a", s("3"));
        let keys: Vec<_> = m.iter().map(|(k, _)| k.clone()).collect();
        assert_eq!(keys, vec![Bytes::from("a"), Bytes::from("b")]);
        assert!(m.rename(b"a", Bytes::from("c")));
        let keys: Vec<_> = m.iter().map(|(k, _)| k.clone()).collect();
        assert_eq!(keys, vec![Bytes::from("c"), Bytes::from("b")]);
        assert!(!m.rename(b"zzz", Bytes::from("y")));
    }

    #[test]
    fn a_shared_map_reads_the_same_and_clones_without_copying_entries() {
        let mut m = Map::new();
        m.insert("pod_name", s("web-1"));
        m.insert(
            "labels",
            Value::Map(Map::from_iter([(Bytes::from("app"), s("web"))])),
        );
        let shared = m.clone().into_shared();
        assert_eq!(shared, m);
        let clone = shared.clone();
        assert!(
            !clone.is_parsed(),
            "a clone shares the msgpack, nothing parsed"
        );
        assert_eq!(
            clone.raw().map(|r| r.as_ptr()),
            shared.raw().map(|r| r.as_ptr())
        );
        assert_eq!(clone.get(b"pod_name"), Some(&s("web-1")));
        // A change drops the shared form, so it never disagrees with the entries.
        let mut changed = clone;
        changed.insert("pod_name", s("web-2"));
        assert!(changed.raw().is_none());
        assert_eq!(changed.get(b"pod_name"), Some(&s("web-2")));
    }

    #[test]
    fn packed_records_read_and_encode_as_before() {
        let mut nested = Map::new();
        nested.insert("pod_name", s("web-1"));
        let records: Vec<Map> = (0..3)
            .map(|i| {
                let mut m = Map::new();
                m.insert("log", s(&format!("line {i}")));
                m.insert("kubernetes", Value::Map(nested.clone()));
                m.insert("n", Value::Int(i));
                m
            })
            .collect();
        let mut events: Vec<Event> = records
            .iter()
            .map(|r| Event::new(Tag::from("t"), EventTime::new(1, 0), r.clone()))
            .collect();
        let packed = pack(&mut events);
        let mut expected = Vec::new();
        for r in &records {
            crate::msgpack::write::write_map(&mut expected, r).unwrap();
        }
        assert_eq!(packed, expected.len());
        for (event, record) in events.iter().zip(&records) {
            assert!(event.record.raw().is_some() && !event.record.is_parsed());
            assert_eq!(&event.record, record);
        }
        // All three share one buffer.
        let first = events[0].record.raw().unwrap().as_ptr();
        let last = events[2].record.raw().unwrap();
        assert_eq!(
            byte_distance(first, last.as_ptr()),
            expected.len() - last.len()
        );
    }

    #[test]
    fn packing_keeps_records_the_reader_would_refuse_as_they_are() {
        // Nested `levels` maps deep inside a record; the reader takes at most MAX_DEPTH.
        let nested = |levels: usize, inner: Map| {
            let mut map = inner;
            for _ in 0..levels {
                let mut outer = Map::new();
                outer.insert("n", Value::Map(map));
                map = outer;
            }
            map
        };
        let leaf = || {
            let mut m = Map::new();
            m.insert("log", s("x"));
            m
        };
        let max = crate::msgpack::MAX_DEPTH;
        // A shared msgpack-form map (as a tailed file's metadata) nested inside records.
        let shared = nested(3, leaf()).into_shared();
        assert!(shared.raw().is_some());
        let records = [
            nested(max - 1, leaf()),
            nested(max, leaf()),
            nested(max - 4, shared.clone()),
            nested(max - 3, shared.clone()),
            nested(max - 4, shared.clone()),
        ];
        let mut events: Vec<Event> = records
            .iter()
            .map(|r| Event::new(Tag::from("t"), EventTime::new(1, 0), r.clone()))
            .collect();
        pack(&mut events);
        let packed: Vec<bool> = events.iter().map(|e| e.record.raw().is_some()).collect();
        assert_eq!(packed, [true, false, true, false, true]);
        for (event, record) in events.iter().zip(&records) {
            assert_eq!(&event.record, record);
        }
        // What was packed is what the reader takes.
        for event in events.iter().filter(|e| e.record.raw().is_some()) {
            let raw = event.record.raw().unwrap();
            assert_eq!(crate::msgpack::read::check_value(raw, 0, 0), Ok(raw.len()));
        }
    }

    /// Byte distance between two pointers into one buffer.
    fn byte_distance(a: *const u8, b: *const u8) -> usize {
        (b as usize) - (a as usize)
    }

    #[test]
    fn time_conversions() {
        assert_eq!(EventTime::from_millis(1715679001123).nanos, 123_000_000);
        assert_eq!(EventTime::from_millis(-1).secs, -1);
        assert_eq!(EventTime::from_f64(1.5), EventTime::new(1, 500_000_000));
        assert_eq!(
            EventTime::new(1, 1_500_000_000),
            EventTime::new(2, 500_000_000)
        );
        assert_eq!(EventTime::new(10, 999_000_000).as_millis(), 10_999);
    }
}
