//! Joining container runtimes' split lines.
//!
//! - `cri`: containerd and CRI-O write a line longer than 16 KiB as several lines tagged `P`
//!   (partial) and a last one tagged `F`.
//! - `docker`: Docker's json-file driver writes it as several entries whose `log` lacks the
//!   trailing `\n`; the last piece has it.
//!
//! Pieces are joined per stream (stdout and stderr interleave in one file). The joined record is
//! the first piece's record and time with the text of every piece. A group is passed on as it is
//! when it would grow past `max` bytes, when no piece came for the flush timeout (the container
//! died mid-line) or when the file is closed. While a group is held, the checkpoint of its file
//! stays at the group's first byte, so a restart reads it again.

use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};

use super::files::Fingerprint;
use super::parser::{Parsed, LOG, PARTIAL, STREAM};
use crate::event::{EventTime, Map, Value};

/// Which split-line convention to join.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Off,
    Cri,
    Docker,
}

/// A record ready to go, before the tag and file metadata are added.
pub type Output = (Map, EventTime);

struct Group {
    record: Map,
    time: EventTime,
    text: BytesMut,
    start: u64,
    start_fp: Fingerprint,
    updated: Instant,
}

/// Per-file joining state.
pub struct Joiner {
    mode: Mode,
    /// The field holding the text (`key` for cri, `log` for docker).
    text_key: Bytes,
    max: usize,
    /// Held groups: `[stdout, other streams]`.
    groups: [Option<Group>; 2],
}

impl Joiner {
    pub fn new(mode: Mode, key: &Bytes, max: usize) -> Joiner {
        let text_key = match mode {
            Mode::Docker => Bytes::from_static(LOG),
            _ => key.clone(),
        };
        Joiner {
            mode,
            text_key,
            max,
            groups: [None, None],
        }
    }

    /// Takes one parsed line that starts at file offset `start`; `fp` gives the fingerprint
    /// before `start` should this line open a group. Finished records go to `out`.
    pub fn push(
        &mut self,
        parsed: Parsed,
        start: u64,
        fp: impl FnOnce() -> Fingerprint,
        now: Instant,
        out: &mut Vec<Output>,
    ) {
        if self.mode == Mode::Off || parsed.error.is_some() {
            out.push((parsed.record, parsed.time));
            return;
        }
        let slot = match parsed.record.get(STREAM).and_then(Value::as_bytes) {
            Some(b"stdout") => 0,
            _ => 1,
        };
        let text: &[u8] = parsed
            .record
            .get(&self.text_key)
            .and_then(Value::as_bytes)
            .unwrap_or_default();
        if let Some(group) = &mut self.groups[slot] {
            if group.text.len() + text.len() > self.max {
                // Too long to join: pass on what is held; this piece starts afresh.
                if let Some(g) = self.groups[slot].take() {
                    out.push(self.finish(g, false));
                }
            } else {
                group.text.extend_from_slice(text);
                group.updated = now;
                if !parsed.partial {
                    if let Some(g) = self.groups[slot].take() {
                        out.push(self.finish(g, true));
                    }
                }
                return;
            }
        }
        if parsed.partial {
            let mut buf = BytesMut::with_capacity(text.len().max(1024).min(self.max));
            buf.extend_from_slice(text);
            self.groups[slot] = Some(Group {
                text: buf,
                record: parsed.record,
                time: parsed.time,
                start,
                start_fp: fp(),
                updated: now,
            });
        } else {
            out.push((parsed.record, parsed.time));
        }
    }

    fn finish(&self, mut g: Group, complete: bool) -> Output {
        g.record
            .insert(self.text_key.clone(), Value::Str(g.text.freeze()));
        if self.mode == Mode::Cri && complete {
            g.record.insert(
                Bytes::from_static(PARTIAL),
                Value::Str(Bytes::from_static(b"F")),
            );
        }
        (g.record, g.time)
    }

    /// Passes on groups that waited longer than `timeout` (all of them when `timeout` is zero).
    pub fn flush(&mut self, now: Instant, timeout: Duration, out: &mut Vec<Output>) {
        for slot in 0..2 {
            let expired = self.groups[slot]
                .as_ref()
                .is_some_and(|g| now.saturating_duration_since(g.updated) >= timeout);
            if expired {
                if let Some(g) = self.groups[slot].take() {
                    out.push(self.finish(g, false));
                }
            }
        }
    }

    /// The first byte of the oldest held group, with its fingerprint: the checkpoint may not
    /// pass it.
    pub fn held_from(&self) -> Option<(u64, Fingerprint)> {
        self.groups
            .iter()
            .flatten()
            .min_by_key(|g| g.start)
            .map(|g| (g.start, g.start_fp))
    }

    pub fn is_holding(&self) -> bool {
        self.groups.iter().any(Option::is_some)
    }
}

#[cfg(test)]
mod tests {
    use super::super::parser::Parser;
    use super::*;

    fn run(mode: Mode, parser: Parser, lines: &[&str], max: usize) -> (Vec<Output>, Joiner) {
        let key = Bytes::from_static(b"log");
        let mut j = Joiner::new(mode, &key, max);
        let mut out = Vec::new();
        let now = Instant::now();
        for (i, l) in lines.iter().enumerate() {
            let p = parser.parse(
                Bytes::copy_from_slice(l.as_bytes()),
                &key,
                EventTime::default(),
            );
            j.push(p, i as u64 * 100, Fingerprint::default, now, &mut out);
        }
        (out, j)
    }

    fn text(o: &Output, k: &[u8]) -> String {
        o.0.get(k).unwrap().to_text()
    }

    #[test]
    fn cri_partials_join_per_stream() {
        let (out, j) = run(
            Mode::Cri,
            Parser::Cri,
            &[
                "2024-05-14T09:30:01Z stdout P hel",
                "2024-05-14T09:30:02Z stderr F err line",
                "2024-05-14T09:30:03Z stdout P lo ",
                "2024-05-14T09:30:04Z stdout F world",
                "2024-05-14T09:30:05Z stdout P dangling",
            ],
            1 << 20,
        );
        assert_eq!(out.len(), 2);
        assert_eq!(text(&out[0], b"log"), "err line");
        assert_eq!(text(&out[1], b"log"), "hello world");
        assert_eq!(text(&out[1], b"_p"), "F");
        assert_eq!(
            out[1].1,
            EventTime::new(1715679001, 0),
            "first piece's time"
        );
        assert_eq!(j.held_from().map(|h| h.0), Some(400));
    }

    #[test]
    fn docker_pieces_join_until_the_newline() {
        let (out, j) = run(
            Mode::Docker,
            Parser::Docker,
            &[
                r#"{"log":"a","stream":"stdout","time":"2024-05-14T09:30:01Z"}"#,
                r#"{"log":"b","stream":"stdout","time":"2024-05-14T09:30:02Z"}"#,
                r#"{"log":"c\n","stream":"stdout","time":"2024-05-14T09:30:03Z"}"#,
                r#"{"log":"whole\n","stream":"stdout","time":"2024-05-14T09:30:04Z"}"#,
            ],
            1 << 20,
        );
        assert_eq!(out.len(), 2);
        assert_eq!(text(&out[0], b"log"), "abc\n");
        assert_eq!(text(&out[1], b"log"), "whole\n");
        assert!(!j.is_holding());
    }

    #[test]
    fn groups_past_max_and_stale_groups_are_passed_on() {
        let (out, mut j) = run(
            Mode::Cri,
            Parser::Cri,
            &[
                "2024-05-14T09:30:01Z stdout P 12345",
                "2024-05-14T09:30:01Z stdout P 67890",
                "2024-05-14T09:30:01Z stdout F x",
            ],
            8,
        );
        assert_eq!(out.len(), 2);
        assert_eq!(text(&out[0], b"log"), "12345");
        assert_eq!(text(&out[0], b"_p"), "P");
        assert_eq!(text(&out[1], b"log"), "67890x");
        let key = Bytes::from_static(b"log");
        let mut out = Vec::new();
        let p = Parser::Cri.parse(
            Bytes::from_static(b"2024-05-14T09:30:01Z stdout P lonely"),
            &key,
            EventTime::default(),
        );
        let t0 = Instant::now();
        j.push(p, 0, Fingerprint::default, t0, &mut out);
        j.flush(t0, Duration::from_secs(5), &mut out);
        assert!(out.is_empty());
        j.flush(
            t0 + Duration::from_secs(5),
            Duration::from_secs(5),
            &mut out,
        );
        assert_eq!(out.len(), 1);
        assert!(!j.is_holding());
    }
}
