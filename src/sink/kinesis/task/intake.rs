//! Records into entries: each input batch encoded into one buffer (records are slices of it),
//! given partition and explicit hash keys, aggregated by shard or batched as they are, and what
//! can never be sent rejected (dead-lettered or dropped, counted either way).

use std::sync::Arc;

use bytes::Bytes;
use tokio::time::Instant;

use super::super::batch::{random_partition_key, Entry, Rejected};
use super::super::settle::{Expected, Tokens};
use crate::event::Event;
use crate::kinesis_record::{
    hash_key, PartitionKey, Record, RejectReason, MAX_PARTITION_KEY_CHARS,
};
use crate::sink::dead_letter;
use crate::sink::settle::{Token, Tracked};
use crate::sink::undeliverable::Why;

use super::Task;

impl Task {
    /// Encodes an input batch and routes its records into containers / the batcher.
    pub(super) fn accept(&mut self, batch: crate::buffer::Batch) {
        let tag = batch.tag.clone();
        let client_waits = batch.client_waits();
        let tracked = Tracked::batch(batch, self.sink.undeliverable.keeps_records());
        let events = tracked.events();
        self.sink.cx.metrics.records_in.inc_by(events.len() as u64);
        let mut buf = Vec::with_capacity(self.encode_capacity);
        let mut ends = Vec::with_capacity(events.len());
        for event in events {
            let start = buf.len();
            match self.sink.encoder.encode(event, &mut buf) {
                Ok(()) => ends.push(Ok((start, buf.len()))),
                Err(e) => {
                    buf.truncate(start);
                    ends.push(Err(e));
                }
            }
        }
        self.encode_capacity = buf.len().clamp(4096, 8 << 20);
        let data = Bytes::from(buf);
        self.accepting_at = Some(Instant::now());
        for (index, (event, range)) in events.iter().zip(ends).enumerate() {
            let token = tracked.token(index);
            let (start, end) = match range {
                Ok(range) => range,
                Err(e) => {
                    self.sink.undeliverable.give_up(
                        [token],
                        &Why::new(
                            dead_letter::reason::UNENCODABLE,
                            "record cannot be encoded as configured",
                            &self.sink.stream_target,
                            &e,
                        )
                        .tagged(&tag),
                    );
                    continue;
                }
            };
            let record = self.record_for(event, data.slice(start..end));
            match record {
                Ok(record) => self.route(record, token, &tag),
                Err(data) => self.spread(data, token, &tag),
            }
        }
        // The containers this batch finished go on together: their digests are computed in one
        // pass, several at once (`kpl::finish_all`), once there are enough to fill the SIMD
        // lanes (a waiting client or the flush deadline takes the rest: `flush_all`).
        self.drain_full_digest_lanes();
        self.accepting_at = None;
        if self.pending_since.is_none()
            && (self.batcher.pending_entries() > 0
                || self
                    .aggregators
                    .as_ref()
                    .is_some_and(|a| a.pending_records() > 0))
        {
            self.pending_since = Some(Instant::now());
        }
        if client_waits && self.pending_since.is_some() {
            self.client_waiting_since = Some(Instant::now());
        }
    }

    /// The Kinesis record for an encoded event: its partition key and explicit hash key. A
    /// record that gets neither while aggregating is handed back (`Err`) for
    /// [`Task::spread`]: it needs no key of its own.
    pub(super) fn record_for(&mut self, event: &Event, data: Bytes) -> Result<Record, Bytes> {
        let spread = self.aggregators.is_some()
            && self.sink.explicit_hash_key.is_none()
            && data.len() + 32 <= self.aggregation_max_size;
        let partition_key = match &self.sink.partition_key {
            Some(path) => {
                let key = event.record.get_path(path).and_then(|value| {
                    self.key_scratch.clear();
                    value.write_text(&mut self.key_scratch);
                    (!self.key_scratch.is_empty())
                        .then(|| truncate_key(String::from_utf8_lossy(&self.key_scratch)))
                });
                match key {
                    Some(key) => PartitionKey::from(key),
                    None => {
                        self.sink.metrics.random_keys.inc();
                        if spread {
                            return Err(data);
                        }
                        random_partition_key()
                    }
                }
            }
            None if spread => return Err(data),
            None => random_partition_key(),
        };
        let mut record = Record::new(partition_key, data);
        if let Some(path) = &self.sink.explicit_hash_key {
            if let Some(value) = event.record.get_path(path) {
                let text = value.to_text();
                match hash_key::parse_hash_key(text.trim()) {
                    Ok(_) => record.explicit_hash_key = Some(text.trim().into()),
                    Err(e) => {
                        self.sink.cx.metrics.error("invalid_explicit_hash_key");
                        tracing::debug!(sink = %self.name(), error = %e,
                            "ignoring the record's explicit hash key: routing by partition key");
                    }
                }
            }
        }
        Ok(record)
    }

    /// Aggregates a record without a key of its own, spread over the shards in turn.
    pub(super) fn spread(&mut self, data: Bytes, token: Token, tag: &str) {
        let refused = self
            .aggregators
            .as_mut()
            .and_then(|aggregators| aggregators.add_spread(data, token).err());
        self.aggregated(refused, tag);
    }

    /// After adding a user record to the aggregators: rejects what they refused. The containers
    /// it finished move on once the whole input batch is in ([`Task::accept`]).
    pub(super) fn aggregated(&mut self, refused: Option<Rejected<Token>>, tag: &str) {
        if let Some(Rejected { entry, reason }) = refused {
            self.reject(entry.record.size(), vec![entry.token], &reason, tag);
        }
    }

    pub(super) fn route(&mut self, record: Record, token: Token, tag: &str) {
        let aggregate = self
            .aggregators
            .as_ref()
            .is_some_and(|_| record.size() <= self.aggregation_max_size);
        if aggregate {
            let refused = self
                .aggregators
                .as_mut()
                .and_then(|aggregators| aggregators.add(record, token).err());
            self.aggregated(refused, tag);
        } else {
            let entry = Entry {
                token: Tokens {
                    users: smallvec::smallvec![token],
                    attempts: 0,
                    expected: None,
                    size: record.size(),
                },
                record,
            };
            self.push(entry, tag);
        }
    }

    /// Moves finished containers into the batcher.
    pub(super) fn drain_aggregators(&mut self) {
        let Some(aggregators) = self.aggregators.as_mut() else {
            return;
        };
        let finished: Vec<Entry<Vec<Token>>> = aggregators.drain_ready().collect();
        self.push_finished(finished);
    }

    /// As [`Task::drain_aggregators`], but sealed containers wait until they fill the digest's
    /// SIMD lanes ([`crate::sink::kinesis::aggregators::ShardAggregators::drain_full_lanes`]).
    fn drain_full_digest_lanes(&mut self) {
        let Some(aggregators) = self.aggregators.as_mut() else {
            return;
        };
        let finished: Vec<Entry<Vec<Token>>> = aggregators.drain_full_lanes().collect();
        self.push_finished(finished);
    }

    fn push_finished(&mut self, finished: Vec<Entry<Vec<Token>>>) {
        for entry in finished {
            let entry = self.with_expected_shard(entry);
            self.push(entry, "");
        }
    }

    /// Wraps an entry from the aggregators with the shard it is expected to land on.
    pub(super) fn with_expected_shard(&self, entry: Entry<Vec<Token>>) -> Entry<Tokens> {
        let expected = self.aggregators.as_ref().and_then(|a| {
            let hash = hash_key::effective_hash_key(
                &entry.record.partition_key,
                entry.record.explicit_hash_key.as_deref(),
            )
            .ok()?;
            let map = a.shard_map();
            let shard = map.shards().get(map.index_for(hash)?)?;
            Some(Expected {
                epoch: self.epoch,
                shard_id: Arc::from(shard.id()),
            })
        });
        Entry {
            token: Tokens {
                users: entry.token.into(),
                attempts: 0,
                expected,
                size: entry.record.size(),
            },
            record: entry.record,
        }
    }

    /// Queues an entry for sending: into the batcher, once the per-shard rate limiter (if
    /// any) lets it go.
    ///
    /// Inlined, with `batch` and `Batcher::push`, into the loop of [`Task::accept`]: an entry
    /// is 136 bytes, and each call boundary (and each rebinding of it) was a copy, three per
    /// record before. The limiter is asked first, so that while no shard is throttled (the
    /// usual case) the entry goes straight on instead of through `admit` and back.
    #[inline(always)]
    pub(super) fn push(&mut self, entry: Entry<Tokens>, tag: &str) {
        if let Some(limiter) = self.limiter.as_mut().filter(|l| l.is_engaged()) {
            match limiter.admit(entry, self.accepting_at.unwrap_or_else(Instant::now)) {
                Some(entry) => self.batch(entry, tag),
                None => {
                    self.sink.metrics.rate_limited_entries.inc();
                }
            }
            return;
        }
        self.batch(entry, tag);
    }

    /// Adds an entry to the batcher (a full batch moves to `ready`).
    #[inline(always)]
    pub(super) fn batch(&mut self, entry: Entry<Tokens>, tag: &str) {
        match self.batcher.push(entry) {
            Ok(Some(full)) => self.ready.push_back(full),
            Ok(None) => {}
            Err(rejected) => {
                let Rejected { entry, reason } = rejected;
                self.reject(
                    entry.record.size(),
                    entry.token.users.into_vec(),
                    &reason,
                    tag,
                );
            }
        }
    }

    /// A record that can never be sent: dead-lettered or dropped (counted and logged either
    /// way), and settled so it blocks nothing.
    pub(super) fn reject(&self, size: usize, users: Vec<Token>, reason: &RejectReason, tag: &str) {
        let why = if reason.is_too_large() {
            dead_letter::reason::TOO_LARGE
        } else {
            dead_letter::reason::INVALID
        };
        let what = format!(
            "record of {size} bytes cannot be sent (max_record_size {})",
            self.limits.max_record_size
        );
        self.sink.undeliverable.give_up(
            users,
            &Why::new(why, &what, &self.sink.stream_target, reason).tagged(tag),
        );
    }

    /// Sends everything waiting (the `flush` deadline, or the end of input).
    pub(super) fn flush_all(&mut self) {
        if let Some(aggregators) = self.aggregators.as_mut() {
            let entries = aggregators.flush_all();
            for entry in entries {
                let entry = self.with_expected_shard(entry);
                self.push(entry, "");
            }
        }
        if let Some(batch) = self.batcher.flush() {
            self.ready.push_back(batch);
        }
        self.pending_since = None;
        self.client_waiting_since = None;
    }
}

/// Truncates a partition key to 256 characters.
fn truncate_key(key: std::borrow::Cow<'_, str>) -> String {
    match key.char_indices().nth(MAX_PARTITION_KEY_CHARS) {
        Some((cut, _)) => key[..cut].to_string(),
        None => key.into_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_truncated_to_256_characters_and_random_keys_are_valid() {
        let long = "é".repeat(300);
        let key = truncate_key(std::borrow::Cow::Borrowed(&long));
        assert_eq!(key.chars().count(), 256);
        assert_eq!(truncate_key(std::borrow::Cow::Borrowed("web-1")), "web-1");
        let a = random_partition_key();
        assert_eq!(a.len(), super::super::super::batch::RANDOM_KEY_LEN);
        assert!(a.bytes().all(|b| b.is_ascii_hexdigit()));
        assert_ne!(a, random_partition_key());
    }
}
