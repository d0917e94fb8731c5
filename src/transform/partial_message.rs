//! `partial_message`: rejoins long lines that Docker's log drivers split into 16 KiB chunks.
//!
//! Docker's fluentd driver (FireLens) sends each chunk of a long line as its own record carrying
//! `partial_message = "true"`, `partial_id` (the same for every chunk of the line),
//! `partial_ordinal` (`"1"`, `"2"`, ...) and `partial_last` (`"true"` on the final chunk). This
//! transform buffers the chunks per tag and `partial_id` and, once every ordinal from 1 to the
//! last is there, emits one record: the first chunk's record and time, with `log` (the `key`
//! option) set to the chunks' bytes joined in ordinal order and the four `partial_*` keys
//! removed. It works like Fluent Bit's multiline filter in `partial_message` mode, with two
//! differences: chunks are ordered by `partial_ordinal` rather than by arrival, and the joined
//! key keeps its position in the record.
//!
//! Chunks are joined as bytes: Docker cuts lines on byte boundaries, so a chunk can end inside
//! a UTF-8 character; joining the bytes puts the character back together.
//!
//! Nothing is dropped. A line that cannot be joined goes on as the original chunks, untouched
//! (in ordinal order): when no chunk arrived for `flush_timeout` (Docker dropped one, or the
//! container died), when the joined line would exceed `max_message_size` (later chunks of that
//! line then pass through as they come), or when all buffered lines together exceed
//! `buffer_limit` (the oldest line goes first). The only record ever discarded is a repeated
//! chunk identical to one already held (a resend).

use std::collections::HashMap;
use std::time::Instant;

use bytes::Bytes;
use serde::Deserialize;

use super::Transform;
use crate::config::field::FieldError;
use crate::config::units::{ByteSize, Duration};
use crate::event::{Event, Map, Tag, Value};

const PARTIAL_MESSAGE: &[u8] = b"partial_message";
const PARTIAL_ID: &[u8] = b"partial_id";
const PARTIAL_ORDINAL: &[u8] = b"partial_ordinal";
const PARTIAL_LAST: &[u8] = b"partial_last";

/// Bytes counted against `buffer_limit` for each held chunk besides its text: the record's
/// other fields, roughly, so that many empty chunks still count.
const CHUNK_OVERHEAD: usize = 256;

/// Options of a `partial_message` transform.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PartialMessageConfig {
    /// The key holding the split text (Docker: `log`).
    #[serde(default = "default_key")]
    pub key: String,
    /// How long an incomplete line waits for its next chunk before its chunks are passed on
    /// unjoined (default 5s).
    #[serde(default = "default_flush_timeout")]
    pub flush_timeout: Duration,
    /// Longest joined line; a longer one is passed on as its chunks (default 1MiB, Kinesis'
    /// default record size).
    #[serde(default = "default_max_message_size")]
    pub max_message_size: ByteSize,
    /// Memory for all incomplete lines together; past it the oldest line is passed on
    /// unjoined (default 16MiB).
    #[serde(default = "default_buffer_limit")]
    pub buffer_limit: ByteSize,
}

fn default_key() -> String {
    "log".to_string()
}

fn default_flush_timeout() -> Duration {
    Duration::from_secs(5)
}

fn default_max_message_size() -> ByteSize {
    ByteSize::mib(1)
}

fn default_buffer_limit() -> ByteSize {
    ByteSize::mib(16)
}

impl Default for PartialMessageConfig {
    fn default() -> Self {
        PartialMessageConfig {
            key: default_key(),
            flush_timeout: default_flush_timeout(),
            max_message_size: default_max_message_size(),
            buffer_limit: default_buffer_limit(),
        }
    }
}

/// Chunks are grouped per tag and `partial_id`, like Fluent Bit (which also keys on the input).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct GroupKey {
    tag: Tag,
    id: Bytes,
}

#[derive(Debug)]
enum Group {
    /// Chunks held until the line is complete.
    Collecting(Collecting),
    /// The line was given up on (too large, or evicted): its remaining chunks pass through.
    PassThrough { last_seen: Instant },
}

impl Group {
    fn last_seen(&self) -> Instant {
        match self {
            Group::Collecting(c) => c.last_seen,
            Group::PassThrough { last_seen } => *last_seen,
        }
    }
}

#[derive(Debug)]
struct Collecting {
    /// Sorted by ordinal, no two alike.
    chunks: Vec<Chunk>,
    /// The ordinal of the chunk marked `partial_last`, once seen.
    last_ordinal: Option<u64>,
    /// Sum of the chunks' text lengths.
    text_len: usize,
    /// What this group counts against `buffer_limit`.
    accounted: usize,
    first_seen: Instant,
    last_seen: Instant,
}

impl Collecting {
    fn is_complete(&self) -> bool {
        match (self.last_ordinal, self.chunks.first(), self.chunks.last()) {
            (Some(n), Some(first), Some(last)) => {
                first.ordinal == 1 && last.ordinal == n && self.chunks.len() as u64 == n
            }
            _ => false,
        }
    }

    fn into_events(self) -> impl Iterator<Item = Event> {
        self.chunks.into_iter().map(|c| c.event)
    }
}

#[derive(Debug)]
struct Chunk {
    ordinal: u64,
    event: Event,
}

/// What a chunk says about itself.
struct PartialInfo {
    id: Bytes,
    ordinal: Option<u64>,
    last: bool,
    len: usize,
}

/// The `partial_message` transform.
#[derive(Debug)]
pub struct PartialMessage {
    key: Bytes,
    flush_timeout: std::time::Duration,
    max_message_size: usize,
    buffer_limit: usize,
    groups: HashMap<GroupKey, Group>,
    /// Bytes accounted by all collecting groups.
    buffered: usize,
    /// The previous batch's vector, reused so a batch with chunks costs no new allocation.
    spare: Vec<Event>,
}

impl PartialMessage {
    pub fn build(config: PartialMessageConfig) -> Result<PartialMessage, Vec<FieldError>> {
        let mut errors = Vec::new();
        if config.key.is_empty() {
            errors.push(FieldError::new(
                "key",
                "must name the key holding the text, e.g. \"log\"",
            ));
        }
        if config.flush_timeout.get().is_zero() {
            errors.push(FieldError::new(
                "flush_timeout",
                "must be above zero, or chunks could never be joined; Docker sends a line's \
                 chunks back to back, so \"1s\" to \"5s\" is plenty",
            ));
        }
        if config.max_message_size.bytes() == 0 {
            errors.push(FieldError::new("max_message_size", "must be above zero"));
        }
        if config.buffer_limit < config.max_message_size {
            errors.push(FieldError::new(
                "buffer_limit",
                format!(
                    "({}) must be at least max_message_size ({}), or a line of that size \
                     could never be held",
                    config.buffer_limit, config.max_message_size
                ),
            ));
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        Ok(PartialMessage {
            key: Bytes::copy_from_slice(config.key.as_bytes()),
            flush_timeout: config.flush_timeout.get(),
            max_message_size: config.max_message_size.as_usize(),
            buffer_limit: config.buffer_limit.as_usize(),
            groups: HashMap::new(),
            buffered: 0,
            spare: Vec::new(),
        })
    }

    /// Number of lines being held (for tests and metrics).
    pub fn pending_lines(&self) -> usize {
        self.groups
            .values()
            .filter(|g| matches!(g, Group::Collecting(_)))
            .count()
    }

    /// Reads the partial markers of a record; `None` when it is not a usable chunk (not
    /// partial, no id, or no text under `key`), which then passes through untouched.
    fn partial_info(&self, record: &Map) -> Option<PartialInfo> {
        if !is_true(record.get(PARTIAL_MESSAGE)) {
            return None;
        }
        let id = match record.get(PARTIAL_ID) {
            Some(Value::Str(b)) | Some(Value::Bin(b)) if !b.is_empty() => b.clone(),
            _ => return None,
        };
        let len = record.get(&self.key)?.as_bytes()?.len();
        Some(PartialInfo {
            id,
            ordinal: record.get(PARTIAL_ORDINAL).and_then(ordinal),
            last: is_true(record.get(PARTIAL_LAST)),
            len,
        })
    }

    /// Takes one record of a batch, pushing whatever is ready to `out`.
    fn accept(&mut self, event: Event, now: Instant, out: &mut Vec<Event>) {
        let Some(info) = self.partial_info(&event.record) else {
            out.push(event);
            return;
        };
        let key = GroupKey {
            tag: event.tag.clone(),
            id: info.id.clone(),
        };
        let group = match self.groups.get_mut(&key) {
            Some(Group::PassThrough { last_seen }) => {
                *last_seen = now;
                out.push(event);
                if info.last {
                    self.groups.remove(&key);
                }
                return;
            }
            Some(Group::Collecting(c)) => c,
            None => {
                if info.len > self.max_message_size {
                    self.give_up(
                        key,
                        None,
                        Some(event),
                        now,
                        out,
                        "the chunk alone exceeds max_message_size",
                    );
                    return;
                }
                let fresh = Group::Collecting(Collecting {
                    chunks: Vec::new(),
                    last_ordinal: None,
                    text_len: 0,
                    accounted: 0,
                    first_seen: now,
                    last_seen: now,
                });
                match self.groups.entry(key.clone()).or_insert(fresh) {
                    Group::Collecting(c) => c,
                    Group::PassThrough { .. } => {
                        out.push(event);
                        return;
                    }
                }
            }
        };

        group.last_seen = now;
        let ordinal = info
            .ordinal
            .unwrap_or_else(|| group.chunks.last().map_or(1, |c| c.ordinal + 1));
        let pos = match group.chunks.binary_search_by_key(&ordinal, |c| c.ordinal) {
            Ok(i) => {
                // A chunk we already hold: a resend is dropped, anything else passes as is.
                let held = group.chunks[i].event.record.get(&self.key);
                if held != event.record.get(&self.key) {
                    tracing::debug!(tag = %key.tag, ordinal, "conflicting partial chunk passed through");
                    out.push(event);
                }
                return;
            }
            Err(pos) => pos,
        };
        if group.text_len + info.len > self.max_message_size {
            let Some(Group::Collecting(collecting)) = self.groups.remove(&key) else {
                out.push(event);
                return;
            };
            self.give_up(
                key,
                Some(collecting),
                Some(event),
                now,
                out,
                "the line exceeds max_message_size",
            );
            return;
        }
        group.text_len += info.len;
        group.accounted += info.len + CHUNK_OVERHEAD;
        self.buffered += info.len + CHUNK_OVERHEAD;
        if info.last {
            group.last_ordinal = Some(ordinal);
        }
        group.chunks.insert(pos, Chunk { ordinal, event });

        if group.is_complete() {
            if let Some(Group::Collecting(c)) = self.groups.remove(&key) {
                self.buffered -= c.accounted;
                out.push(self.join(c));
            }
        }
        self.enforce_buffer_limit(now, out);
    }

    /// Emits a group's chunks (and `extra`, a chunk of the same line) unjoined, in ordinal
    /// order, and lets the line's later chunks pass through.
    fn give_up(
        &mut self,
        key: GroupKey,
        held: Option<Collecting>,
        extra: Option<Event>,
        now: Instant,
        out: &mut Vec<Event>,
        reason: &str,
    ) {
        let mut events: Vec<(u64, Event)> = Vec::new();
        if let Some(c) = held {
            self.buffered -= c.accounted;
            events.extend(c.chunks.into_iter().map(|ch| (ch.ordinal, ch.event)));
        }
        if let Some(e) = extra {
            let ord = e
                .record
                .get(PARTIAL_ORDINAL)
                .and_then(ordinal)
                .unwrap_or(u64::MAX);
            events.push((ord, e));
        }
        events.sort_by_key(|(ord, _)| *ord);
        tracing::warn!(
            tag = %key.tag,
            chunks = events.len(),
            "partial message not joined ({reason}); passing its chunks on as they are"
        );
        out.extend(events.into_iter().map(|(_, e)| e));
        self.groups
            .insert(key, Group::PassThrough { last_seen: now });
    }

    /// Past `buffer_limit`, gives up on the oldest lines until the rest fits.
    fn enforce_buffer_limit(&mut self, now: Instant, out: &mut Vec<Event>) {
        while self.buffered > self.buffer_limit {
            let oldest = self
                .groups
                .iter()
                .filter_map(|(k, g)| match g {
                    Group::Collecting(c) => Some((c.first_seen, k)),
                    Group::PassThrough { .. } => None,
                })
                .min_by_key(|(t, _)| *t)
                .map(|(_, k)| k.clone());
            let Some(key) = oldest else {
                // Nothing left to evict: the accounting is off; resynchronise.
                self.buffered = 0;
                return;
            };
            if let Some(Group::Collecting(c)) = self.groups.remove(&key) {
                self.give_up(key, Some(c), None, now, out, "buffer_limit reached");
            }
        }
    }

    /// The joined record: the first chunk's record with the joined text and no partial keys.
    fn join(&self, group: Collecting) -> Event {
        let mut text = Vec::with_capacity(group.text_len);
        for chunk in &group.chunks {
            if let Some(b) = chunk.event.record.get(&self.key).and_then(Value::as_bytes) {
                text.extend_from_slice(b);
            }
        }
        let mut chunks = group.chunks.into_iter();
        let Some(first) = chunks.next() else {
            unreachable!("a complete group holds at least one chunk");
        };
        let mut event = first.event;
        let joined = Bytes::from(text);
        let value = match event.record.get(&self.key) {
            Some(Value::Bin(_)) => Value::Bin(joined),
            _ => Value::Str(joined),
        };
        event.record.insert(self.key.clone(), value);
        event.record.retain(|k, _| {
            ![PARTIAL_MESSAGE, PARTIAL_ID, PARTIAL_ORDINAL, PARTIAL_LAST].contains(&k)
        });
        event
    }
}

/// `"true"` in any case, as a string or binary.
fn is_true(v: Option<&Value>) -> bool {
    v.and_then(Value::as_bytes)
        .is_some_and(|b| b.eq_ignore_ascii_case(b"true"))
}

/// A decimal ordinal, as Docker writes it (a string); integers are accepted too.
fn ordinal(v: &Value) -> Option<u64> {
    match v {
        Value::Str(b) | Value::Bin(b) => std::str::from_utf8(b).ok()?.trim().parse().ok(),
        Value::Int(i) => u64::try_from(*i).ok(),
        Value::UInt(u) => Some(*u),
        _ => None,
    }
}

impl Transform for PartialMessage {
    fn apply(&mut self, events: &mut Vec<Event>) {
        if !events
            .iter()
            .any(|e| is_true(e.record.get(PARTIAL_MESSAGE)))
        {
            return;
        }
        let now = Instant::now();
        let mut input = std::mem::take(&mut self.spare);
        std::mem::swap(events, &mut input);
        events.reserve(input.len());
        for event in input.drain(..) {
            self.accept(event, now, events);
        }
        self.spare = input;
    }

    /// O(1) on the hot path: every held chunk adds to `buffered` (its length plus overhead).
    fn holds_records(&self) -> bool {
        self.buffered > 0
    }

    fn flush(&mut self, now: Instant, force: bool, out: &mut Vec<Event>) {
        if self.groups.is_empty() {
            return;
        }
        let mut expired: Vec<(Instant, GroupKey)> = self
            .groups
            .iter()
            .filter(|(_, g)| {
                force || now.saturating_duration_since(g.last_seen()) >= self.flush_timeout
            })
            .map(|(k, g)| match g {
                Group::Collecting(c) => (c.first_seen, k.clone()),
                Group::PassThrough { last_seen } => (*last_seen, k.clone()),
            })
            .collect();
        expired.sort_by_key(|(t, _)| *t);
        for (_, key) in expired {
            if let Some(Group::Collecting(c)) = self.groups.remove(&key) {
                self.buffered -= c.accounted;
                tracing::warn!(
                    tag = %key.tag,
                    chunks = c.chunks.len(),
                    "partial message incomplete after flush_timeout; passing its chunks on as they are"
                );
                out.extend(c.into_events());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::EventTime;

    const ID_A: &str = "c0ffee1234567890abcdef0123456789abcdef0123456789abcdef0123456789";
    const ID_B: &str = "b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0";

    fn transform() -> PartialMessage {
        PartialMessage::build(PartialMessageConfig::default()).unwrap()
    }

    fn with(src: &str) -> PartialMessage {
        PartialMessage::build(toml::from_str(src).unwrap()).unwrap()
    }

    fn line(tag: &str, log: &[u8]) -> Event {
        let mut m = Map::new();
        m.insert("container_id", Value::from("5f1c"));
        m.insert("source", Value::from("stdout"));
        m.insert("log", Value::Str(Bytes::copy_from_slice(log)));
        Event::new(tag.into(), EventTime::new(1715679002, 1234), m)
    }

    /// A chunk as Docker builds it: the line's fields plus the four partial keys, as strings.
    fn chunk(tag: &str, id: &str, ordinal: u64, last: bool, log: &[u8]) -> Event {
        let mut e = line(tag, log);
        e.record.insert("partial_message", Value::from("true"));
        e.record.insert("partial_id", Value::from(id));
        e.record
            .insert("partial_ordinal", Value::from(ordinal.to_string()));
        e.record.insert(
            "partial_last",
            Value::from(if last { "true" } else { "false" }),
        );
        e
    }

    /// Splits `text` into `size`-byte chunks as Docker's copier does.
    fn split(tag: &str, id: &str, text: &[u8], size: usize) -> Vec<Event> {
        let n = text.len().div_ceil(size);
        text.chunks(size)
            .enumerate()
            .map(|(i, c)| chunk(tag, id, i as u64 + 1, i + 1 == n, c))
            .collect()
    }

    fn log_of(e: &Event) -> &[u8] {
        e.record.get(b"log").and_then(Value::as_bytes).unwrap()
    }

    fn has_partial_keys(e: &Event) -> bool {
        e.record.iter().any(|(k, _)| k.starts_with(b"partial_"))
    }

    #[test]
    fn joins_in_order_chunks_into_the_original_line() {
        let text: Vec<u8> = (0..40)
            .flat_map(|i| format!("{i:08},").into_bytes())
            .collect();
        let mut events = split("web", ID_A, &text, 64);
        assert_eq!(events.len(), 6, "360 bytes in 64-byte chunks");
        let mut t = transform();
        t.apply(&mut events);
        assert_eq!(events.len(), 1);
        let e = &events[0];
        assert_eq!(log_of(e), &text[..]);
        assert!(!has_partial_keys(e));
        assert_eq!(e.record.get(b"container_id"), Some(&Value::from("5f1c")));
        assert_eq!(e.time, EventTime::new(1715679002, 1234));
        let keys: Vec<_> = e.record.iter().map(|(k, _)| k.clone()).collect();
        assert_eq!(keys, ["container_id", "source", "log"]);
        assert_eq!(t.pending_lines(), 0);
    }

    #[test]
    fn joins_out_of_order_chunks_across_batches() {
        let text = b"first-part|second-part|third-part".to_vec();
        let chunks = split("web", ID_A, &text, 11);
        let mut t = transform();
        let mut b1 = vec![chunks[2].clone(), line("web", b"short 1")];
        t.apply(&mut b1);
        assert_eq!(b1.len(), 1);
        assert_eq!(log_of(&b1[0]), b"short 1");
        let mut b2 = vec![
            chunks[0].clone(),
            line("web", b"short 2"),
            chunks[1].clone(),
        ];
        t.apply(&mut b2);
        assert_eq!(b2.len(), 2);
        assert_eq!(log_of(&b2[0]), b"short 2");
        assert_eq!(log_of(&b2[1]), &text[..]);
    }

    #[test]
    fn interleaved_ids_and_tags_do_not_mix() {
        let a = split("web", ID_A, b"AAAAAAAAAAaaaaaaaaaa", 10);
        let b = split("web", ID_B, b"BBBBBBBBBBbbbbbbbbbbBB", 10);
        // Same id under another tag is another line.
        let c = split("api", ID_A, b"CCCCCCCCCCcc", 10);
        let mut events = vec![
            a[0].clone(),
            b[0].clone(),
            c[0].clone(),
            line("web", b"plain"),
            b[1].clone(),
            a[1].clone(),
            c[1].clone(),
            b[2].clone(),
        ];
        let mut t = transform();
        t.apply(&mut events);
        let logs: Vec<_> = events
            .iter()
            .map(|e| (e.tag.to_string(), log_of(e).to_vec()))
            .collect();
        assert_eq!(
            logs,
            vec![
                ("web".to_string(), b"plain".to_vec()),
                ("web".to_string(), b"AAAAAAAAAAaaaaaaaaaa".to_vec()),
                ("api".to_string(), b"CCCCCCCCCCcc".to_vec()),
                ("web".to_string(), b"BBBBBBBBBBbbbbbbbbbbBB".to_vec()),
            ]
        );
    }

    #[test]
    fn utf8_character_split_between_chunks_is_rejoined() {
        let text = "price: 100€ and ünïcödé ✓".as_bytes();
        let euro = text.iter().position(|&b| b == 0xe2).unwrap();
        // Cut one byte into the 3-byte euro sign, as Docker's byte-wise cut does.
        let (head, tail) = text.split_at(euro + 1);
        assert!(std::str::from_utf8(head).is_err());
        assert!(std::str::from_utf8(tail).is_err());
        let mut events = vec![
            chunk("web", ID_A, 2, true, tail),
            chunk("web", ID_A, 1, false, head),
        ];
        let mut t = transform();
        t.apply(&mut events);
        assert_eq!(events.len(), 1);
        assert_eq!(
            std::str::from_utf8(log_of(&events[0])).unwrap(),
            "price: 100€ and ünïcödé ✓"
        );
    }

    #[test]
    fn timeout_passes_incomplete_lines_on_unjoined() {
        let chunks = split("web", ID_A, b"0123456789abcdefghij012", 10);
        let mut t = with("flush_timeout = \"2s\"");
        let mut batch = vec![chunks[1].clone(), chunks[0].clone()];
        t.apply(&mut batch);
        assert!(batch.is_empty());
        let mut out = Vec::new();
        let start = Instant::now();
        t.flush(start, false, &mut out);
        assert!(out.is_empty(), "not yet timed out");
        t.flush(start + std::time::Duration::from_secs(3), false, &mut out);
        assert_eq!(out.len(), 2);
        assert_eq!(
            out[0], chunks[0],
            "emitted exactly as received, in ordinal order"
        );
        assert_eq!(out[1], chunks[1]);
        assert_eq!(t.pending_lines(), 0);
        // The late last chunk cannot be joined either, and is not lost.
        let mut late = vec![chunks[2].clone()];
        t.apply(&mut late);
        assert!(late.is_empty());
        let mut out = Vec::new();
        t.flush(Instant::now(), true, &mut out);
        assert_eq!(out, vec![chunks[2].clone()]);
    }

    #[test]
    fn forced_flush_emits_everything_held() {
        let mut t = transform();
        let mut batch = vec![
            chunk("web", ID_A, 1, false, b"a"),
            chunk("web", ID_B, 1, false, b"b"),
        ];
        t.apply(&mut batch);
        let mut out = Vec::new();
        t.flush(Instant::now(), true, &mut out);
        assert_eq!(out.len(), 2);
        assert_eq!(t.pending_lines(), 0);
    }

    #[test]
    fn oversized_line_passes_through_as_chunks() {
        let mut t = with("max_message_size = 25\nbuffer_limit = 1000");
        let chunks = split("web", ID_A, &[b'x'; 40], 10);
        let mut b1 = chunks[..2].to_vec();
        t.apply(&mut b1);
        assert!(b1.is_empty());
        let mut b2 = chunks[2..].to_vec();
        t.apply(&mut b2);
        assert_eq!(b2, chunks, "all four chunks, untouched and in order");
        assert_eq!(t.pending_lines(), 0);
    }

    #[test]
    fn buffer_limit_evicts_the_oldest_line_unjoined() {
        let mut t = with("max_message_size = 100\nbuffer_limit = 700");
        // Each chunk counts 10 + 256 bytes: two fit, the third pushes the oldest line out.
        let mut b1 = vec![chunk("web", ID_A, 1, false, &[b'a'; 10])];
        t.apply(&mut b1);
        let mut b2 = vec![chunk("web", ID_B, 1, false, &[b'b'; 10])];
        t.apply(&mut b2);
        assert!(b1.is_empty() && b2.is_empty());
        let mut b3 = vec![chunk("web", ID_B, 2, false, &[b'B'; 10])];
        t.apply(&mut b3);
        assert_eq!(b3.len(), 1);
        assert_eq!(log_of(&b3[0]), &[b'a'; 10]);
        // The evicted line's last chunk passes straight through.
        let mut b4 = vec![chunk("web", ID_A, 2, true, b"end")];
        t.apply(&mut b4);
        assert_eq!(log_of(&b4[0]), b"end");
        assert!(has_partial_keys(&b4[0]));
        let mut b5 = vec![chunk("web", ID_B, 3, true, b"!")];
        t.apply(&mut b5);
        assert_eq!(log_of(&b5[0]), b"bbbbbbbbbbBBBBBBBBBB!");
    }

    #[test]
    fn resent_chunk_is_dropped_conflicting_one_kept() {
        let mut t = transform();
        let mut batch = vec![
            chunk("web", ID_A, 1, false, b"abc"),
            chunk("web", ID_A, 1, false, b"abc"),
            chunk("web", ID_A, 1, false, b"xyz"),
            chunk("web", ID_A, 2, true, b"def"),
        ];
        t.apply(&mut batch);
        assert_eq!(batch.len(), 2);
        assert_eq!(log_of(&batch[0]), b"xyz");
        assert!(has_partial_keys(&batch[0]));
        assert_eq!(log_of(&batch[1]), b"abcdef");
    }

    #[test]
    fn records_that_are_not_usable_chunks_pass_untouched() {
        let mut no_id = chunk("web", ID_A, 1, false, b"x");
        no_id.record.remove(b"partial_id");
        let mut not_text = chunk("web", ID_A, 1, true, b"x");
        not_text.record.insert("log", Value::Int(5));
        let mut false_flag = chunk("web", ID_A, 1, false, b"x");
        false_flag
            .record
            .insert("partial_message", Value::from("false"));
        let input = vec![no_id, not_text, false_flag, line("web", b"plain")];
        let mut events = input.clone();
        let mut t = transform();
        t.apply(&mut events);
        assert_eq!(events, input);
        assert_eq!(t.pending_lines(), 0);
    }

    #[test]
    fn missing_ordinals_fall_back_to_arrival_order() {
        let mut events = vec![
            chunk("web", ID_A, 1, false, b"one "),
            chunk("web", ID_A, 2, true, b"two"),
        ];
        for e in &mut events {
            e.record.remove(b"partial_ordinal");
        }
        let mut t = transform();
        t.apply(&mut events);
        assert_eq!(events.len(), 1);
        assert_eq!(log_of(&events[0]), b"one two");
    }

    #[test]
    fn custom_key() {
        let mut t = with("key = \"message\"");
        let mut events = Vec::new();
        for (i, part) in [&b"he"[..], b"llo"].iter().enumerate() {
            let mut e = chunk("web", ID_A, i as u64 + 1, i == 1, b"");
            e.record.remove(b"log");
            e.record
                .insert("message", Value::Str(Bytes::copy_from_slice(part)));
            events.push(e);
        }
        t.apply(&mut events);
        assert_eq!(events.len(), 1);
        assert_eq!(
            events[0].record.get(b"message"),
            Some(&Value::from("hello"))
        );
    }

    #[test]
    fn config_validation() {
        let err = |src: &str| PartialMessage::build(toml::from_str(src).unwrap()).unwrap_err();
        assert_eq!(err("key = ''")[0].key, "key");
        assert_eq!(err("flush_timeout = '0s'")[0].key, "flush_timeout");
        assert_eq!(
            err("max_message_size = '2MiB'\nbuffer_limit = '1MiB'")[0].key,
            "buffer_limit"
        );
        let unknown = toml::from_str::<PartialMessageConfig>("flush_ms = 100")
            .unwrap_err()
            .to_string();
        assert!(unknown.contains("flush_ms"), "{unknown}");
    }

    mod fixture {
        //! The long line of `firelens/docker-fluentd-frames.*`: three chunks as Docker's
        //! fluentd driver really sends them, the first ending in the middle of a `€`.
        use super::*;
        use sha2::{Digest, Sha256};
        use std::path::PathBuf;

        fn fixtures_dir() -> PathBuf {
            let candidates =
                [PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/firelens")];
            candidates
                .iter()
                .find(|p| p.join("docker-fluentd-frames.expected.json").exists())
                .cloned()
                .unwrap_or_else(|| panic!("firelens fixtures not found in {candidates:?}"))
        }

        fn hex(b: &[u8]) -> String {
            b.iter().map(|x| format!("{x:02x}")).collect()
        }

        /// The `log` bytes of one Message-mode frame, read with `rmp`'s msgpack decoder
        /// (independent of logferry's own forward decoder).
        fn log_of_frame(mut frame: &[u8]) -> Vec<u8> {
            assert_eq!(rmp::decode::read_array_len(&mut frame).unwrap(), 4);
            let tag_len = rmp::decode::read_str_len(&mut frame).unwrap() as usize;
            frame = &frame[tag_len..];
            let (ext_type, _) = rmp::decode::read_fixext8(&mut frame).unwrap();
            assert_eq!(ext_type, 0, "EventTime");
            let entries = rmp::decode::read_map_len(&mut frame).unwrap();
            let mut log = None;
            for _ in 0..entries {
                let klen = rmp::decode::read_str_len(&mut frame).unwrap() as usize;
                let (k, rest) = frame.split_at(klen);
                frame = rest;
                let vlen = rmp::decode::read_str_len(&mut frame).unwrap() as usize;
                let (v, rest) = frame.split_at(vlen);
                frame = rest;
                if k == b"log" {
                    log = Some(v.to_vec());
                }
            }
            log.expect("frame has a log field")
        }

        /// Events built from the JSON description, with each `log` taken from the raw frame.
        fn events() -> (Vec<Event>, serde_json::Value) {
            let dir = fixtures_dir();
            let expected: serde_json::Value = serde_json::from_slice(
                &std::fs::read(dir.join("docker-fluentd-frames.expected.json")).unwrap(),
            )
            .unwrap();
            let bin = std::fs::read(dir.join("docker-fluentd-frames.bin")).unwrap();
            let frames = expected["frames"].as_array().unwrap();
            let events = frames
                .iter()
                .map(|f| {
                    let off = f["offset"].as_u64().unwrap() as usize;
                    let len = f["length"].as_u64().unwrap() as usize;
                    let log = log_of_frame(&bin[off..off + len]);
                    assert_eq!(log.len() as u64, f["log_len"].as_u64().unwrap());
                    assert_eq!(
                        hex(&Sha256::digest(&log)),
                        f["log_sha256"].as_str().unwrap()
                    );
                    let mut record = Map::new();
                    for (k, v) in f["record"].as_object().unwrap() {
                        record.insert(k.clone(), Value::from(v.as_str().unwrap()));
                    }
                    record.insert("log", Value::Str(Bytes::from(log)));
                    let time = EventTime::new(
                        f["time"]["sec"].as_i64().unwrap(),
                        f["time"]["nsec"].as_u64().unwrap() as u32,
                    );
                    Event::new(f["tag"].as_str().unwrap().into(), time, record)
                })
                .collect();
            (events, expected)
        }

        #[test]
        fn docker_frames_reassemble_into_the_original_line() {
            let (frames, expected) = events();
            let whole = &expected["reassembled_long_line"];
            // Out of order, with the short lines in between: 3, short, 1, short, 2.
            let mut batch = vec![
                frames[4].clone(),
                frames[0].clone(),
                frames[2].clone(),
                frames[1].clone(),
                frames[3].clone(),
            ];
            let mut t = transform();
            t.apply(&mut batch);
            assert_eq!(batch.len(), 3);
            assert_eq!(batch[0], frames[0], "short lines are untouched");
            assert_eq!(batch[1], frames[1]);
            let joined = &batch[2];
            let log = log_of(joined);
            assert_eq!(log.len() as u64, whole["length"].as_u64().unwrap());
            assert_eq!(hex(&Sha256::digest(log)), whole["sha256"].as_str().unwrap());
            let text = std::str::from_utf8(log).expect("joined line is valid UTF-8");
            assert!(text.starts_with(whole["head"].as_str().unwrap()));
            assert!(text.ends_with(whole["tail"].as_str().unwrap()));
            assert!(serde_json::from_str::<serde_json::Value>(text).is_ok());
            assert!(!has_partial_keys(joined));
            assert_eq!(joined.time, frames[2].time);
            assert_eq!(joined.tag, frames[2].tag);
            for k in ["container_id", "container_name", "source"] {
                assert_eq!(
                    joined.record.get(k.as_bytes()),
                    frames[2].record.get(k.as_bytes())
                );
            }
        }
    }
}
