//! Per-shard write limits, kept before Kinesis enforces them.
//!
//! A shard takes at most 1000 records/s and 1 MiB/s of data + partition keys, in provisioned
//! and on-demand streams alike. Sending faster only buys `ProvisionedThroughputExceeded`
//! answers, retries and their calls. As the KPL does, [`ShardLimiter`] keeps one pair of token
//! buckets per shard of the shard map (refilled continuously, holding at most one second's
//! worth, full at start) and holds back each entry whose shard lacks a token until the shard
//! has one. A KPL aggregate is one record against records/s and its full size against bytes/s,
//! which is why aggregation lifts the record limit.
//!
//! Entries of one shard leave in the order they came; a shard that waits holds back no other.
//! An entry whose hash key no listed shard holds passes at once (Kinesis routes it).
//!
//! A shard is held to its limits once it is *engaged*: from the start (`shard_rate_limit =
//! true`), or (`auto`, the default) from the first entry Kinesis throttled on it, with an empty
//! bucket then, since Kinesis just said it has none. Until a shard is engaged its entries pass
//! without their hash key being computed, so a stream that never throttles (one with spare
//! capacity, or a local stand-in that enforces nothing) costs nothing and is never slowed.

use std::collections::VecDeque;
use std::time::Duration;

use tokio::time::Instant;

use super::batch::Entry;
use super::shard_map::ShardMap;
use crate::kinesis_record::hash_key::effective_hash_key;
use crate::kinesis_record::Record;

/// What one shard takes per second.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ShardRates {
    pub records_per_second: f64,
    pub bytes_per_second: f64,
}

impl ShardRates {
    /// The Kinesis limits: 1000 records/s and 1 MiB/s per shard.
    pub const KINESIS: ShardRates = ShardRates {
        records_per_second: 1000.0,
        bytes_per_second: 1024.0 * 1024.0,
    };
}

/// One shard's tokens.
#[derive(Debug, Clone)]
struct Bucket {
    records: f64,
    bytes: f64,
    updated: Instant,
}

impl Bucket {
    fn full(rates: &ShardRates, now: Instant) -> Bucket {
        Bucket {
            records: rates.records_per_second,
            bytes: rates.bytes_per_second,
            updated: now,
        }
    }

    fn refill(&mut self, rates: &ShardRates, now: Instant) {
        let elapsed = now.saturating_duration_since(self.updated).as_secs_f64();
        self.records =
            (self.records + elapsed * rates.records_per_second).min(rates.records_per_second);
        self.bytes = (self.bytes + elapsed * rates.bytes_per_second).min(rates.bytes_per_second);
        self.updated = now;
    }

    /// Bytes an entry of `size` needs: an entry bigger than a second's worth (only possible
    /// with a lowered `shard_bytes_per_second`) waits for a full bucket instead of forever.
    fn bytes_needed(size: usize, rates: &ShardRates) -> f64 {
        (size as f64).min(rates.bytes_per_second)
    }

    fn try_take(&mut self, size: usize, rates: &ShardRates) -> bool {
        let bytes = Self::bytes_needed(size, rates);
        if self.records >= 1.0 && self.bytes >= bytes {
            self.records -= 1.0;
            self.bytes -= bytes;
            true
        } else {
            false
        }
    }

    /// How long until an entry of `size` fits (zero if it does).
    fn wait(&self, size: usize, rates: &ShardRates) -> Duration {
        let records = (1.0 - self.records).max(0.0) / rates.records_per_second;
        let bytes =
            (Self::bytes_needed(size, rates) - self.bytes).max(0.0) / rates.bytes_per_second;
        Duration::from_secs_f64(records.max(bytes))
    }
}

/// Holds entries back to each shard's write limits; see the module docs.
pub struct ShardLimiter<T> {
    rates: ShardRates,
    map: ShardMap,
    buckets: Vec<Bucket>,
    held: Vec<VecDeque<Entry<T>>>,
    /// Per shard: bytes of the entries held for it.
    held_shard_bytes: Vec<usize>,
    held_entries: usize,
    held_bytes: usize,
    /// Since when entries are held (none while nothing is).
    held_since: Option<Instant>,
    /// Time entries were held, not yet reported by [`ShardLimiter::take_held_time`].
    held_time: Duration,
    /// Per shard: held to its limits.
    engaged: Vec<bool>,
    /// Every shard is engaged from the start (`shard_rate_limit = true`).
    always: bool,
}

impl<T> ShardLimiter<T> {
    /// A limiter for the shards of `map`; with `always`, every shard is engaged from the start,
    /// else each one once Kinesis throttles it ([`ShardLimiter::throttled`]).
    pub fn new(map: ShardMap, rates: ShardRates, always: bool, now: Instant) -> ShardLimiter<T> {
        let shards = map.len();
        ShardLimiter {
            engaged: vec![always; shards],
            always,
            rates,
            map,
            buckets: vec![Bucket::full(&rates, now); shards],
            held: (0..shards).map(|_| VecDeque::new()).collect(),
            held_shard_bytes: vec![0; shards],
            held_entries: 0,
            held_bytes: 0,
            held_since: None,
            held_time: Duration::ZERO,
        }
    }

    pub fn shard_map(&self) -> &ShardMap {
        &self.map
    }

    pub fn rates(&self) -> &ShardRates {
        &self.rates
    }

    /// The entry back if its shard takes it now (its tokens are taken), else `None`: it is
    /// held until [`ShardLimiter::release`] lets it go.
    pub fn admit(&mut self, entry: Entry<T>, now: Instant) -> Option<Entry<T>> {
        if !self.is_engaged() {
            return Some(entry);
        }
        let Some(index) = self.shard_of(&entry.record) else {
            return Some(entry);
        };
        if !self.engaged[index] {
            return Some(entry);
        }
        if self.held[index].is_empty() {
            let bucket = &mut self.buckets[index];
            bucket.refill(&self.rates, now);
            if bucket.try_take(entry.record.size(), &self.rates) {
                return Some(entry);
            }
        }
        self.hold(index, entry, now);
        None
    }

    fn hold(&mut self, index: usize, entry: Entry<T>, now: Instant) {
        self.held_entries += 1;
        self.held_bytes += entry.record.size();
        self.held_shard_bytes[index] += entry.record.size();
        self.held_since.get_or_insert(now);
        self.held[index].push_back(entry);
    }

    /// Lets go, in order per shard, every held entry its shard has tokens for.
    pub fn release(&mut self, now: Instant, out: &mut Vec<Entry<T>>) {
        for ((queue, bucket), shard_bytes) in self
            .held
            .iter_mut()
            .zip(&mut self.buckets)
            .zip(&mut self.held_shard_bytes)
        {
            if queue.is_empty() {
                continue;
            }
            bucket.refill(&self.rates, now);
            while let Some(entry) = queue.front() {
                if !bucket.try_take(entry.record.size(), &self.rates) {
                    break;
                }
                if let Some(entry) = queue.pop_front() {
                    self.held_entries -= 1;
                    self.held_bytes -= entry.record.size();
                    *shard_bytes -= entry.record.size();
                    out.push(entry);
                }
            }
        }
        if self.held_entries == 0 {
            if let Some(since) = self.held_since.take() {
                self.held_time += now.saturating_duration_since(since);
            }
        }
    }

    /// When the first held entry can go, if any is held.
    pub fn next_release(&self) -> Option<Instant> {
        self.held
            .iter()
            .zip(&self.buckets)
            .filter_map(|(queue, bucket)| {
                let entry = queue.front()?;
                Some(bucket.updated + bucket.wait(entry.record.size(), &self.rates))
            })
            .min()
    }

    /// When every held entry can go (or, for a shard holding more than its bucket takes, when
    /// its bucket is full), if any is held. Letting held entries go at this time rather than
    /// as soon as the first can fills calls: the shards' tokens arrive one record at a time.
    pub fn all_released_at(&self) -> Option<Instant> {
        self.held
            .iter()
            .zip(&self.buckets)
            .zip(&self.held_shard_bytes)
            .filter(|((queue, _), _)| !queue.is_empty())
            .map(|((queue, bucket), &bytes)| {
                let records = (queue.len() as f64).min(self.rates.records_per_second);
                let bytes = (bytes as f64).min(self.rates.bytes_per_second);
                let wait = ((records - bucket.records) / self.rates.records_per_second)
                    .max((bytes - bucket.bytes) / self.rates.bytes_per_second)
                    .max(0.0);
                bucket.updated + Duration::from_secs_f64(wait)
            })
            .max()
    }

    /// Kinesis throttled `record`: its shard is held to its limits from now on, starting with
    /// an empty bucket. Returns the shard's id when it was not engaged yet.
    pub fn throttled(&mut self, record: &Record, now: Instant) -> Option<&str> {
        let index = self.shard_of(record)?;
        if self.engaged[index] {
            return None;
        }
        self.engaged[index] = true;
        self.buckets[index] = Bucket {
            records: 0.0,
            bytes: 0.0,
            updated: now,
        };
        Some(self.map.shards()[index].id())
    }

    /// Whether any shard is held to its limits.
    pub fn is_engaged(&self) -> bool {
        self.engaged.contains(&true)
    }

    /// Switches to a new shard listing: new buckets (full: the new shards have their own
    /// capacity), and every held entry handed back to be admitted again by the new map. The
    /// new shards are engaged if any shard was (split children of a throttled shard are likely
    /// as busy as it was).
    pub fn replace_shard_map(&mut self, map: ShardMap, now: Instant) -> Vec<Entry<T>> {
        let shards = map.len();
        let engaged = self.always || self.is_engaged();
        self.engaged = vec![engaged; shards];
        self.map = map;
        self.buckets = vec![Bucket::full(&self.rates, now); shards];
        let held = std::mem::replace(
            &mut self.held,
            (0..shards).map(|_| VecDeque::new()).collect(),
        );
        self.held_shard_bytes = vec![0; shards];
        self.held_entries = 0;
        self.held_bytes = 0;
        if let Some(since) = self.held_since.take() {
            self.held_time += now.saturating_duration_since(since);
        }
        held.into_iter().flatten().collect()
    }

    /// Since when entries are held without a pause, if any are.
    pub fn held_since(&self) -> Option<Instant> {
        self.held_since
    }

    pub fn held_entries(&self) -> usize {
        self.held_entries
    }

    /// Bytes (data + partition keys) held.
    pub fn held_bytes(&self) -> usize {
        self.held_bytes
    }

    /// Time entries spent held since the last call (counting a hold still going up to `now`).
    pub fn take_held_time(&mut self, now: Instant) -> Duration {
        if let Some(since) = self.held_since.as_mut() {
            self.held_time += now.saturating_duration_since(*since);
            *since = now;
        }
        std::mem::take(&mut self.held_time)
    }

    fn shard_of(&self, record: &Record) -> Option<usize> {
        let hash =
            effective_hash_key(&record.partition_key, record.explicit_hash_key.as_deref()).ok()?;
        self.map.index_for(hash)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sink::kinesis::shard_map::even_map;

    const RATES: ShardRates = ShardRates {
        records_per_second: 10.0,
        bytes_per_second: 1000.0,
    };

    /// A record that routes to shard `shard` of an even two-shard map, `size` bytes in all.
    fn entry(shard: usize, size: usize, id: u32) -> Entry<u32> {
        let start = (u128::MAX / 2 + 1) * shard as u128;
        let key = start.to_string();
        let data = vec![b'x'; size - 1];
        Entry {
            record: Record::new("k", data).with_explicit_hash_key(key),
            token: id,
        }
    }

    #[test]
    fn a_shard_takes_a_second_of_burst_then_its_rate_in_order() {
        let t0 = Instant::now();
        let mut limiter = ShardLimiter::new(even_map(2), RATES, true, t0);
        let mut passed = Vec::new();
        for id in 0..15 {
            if let Some(e) = limiter.admit(entry(0, 10, id), t0) {
                passed.push(e.token);
            }
        }
        assert_eq!(passed, (0..10).collect::<Vec<_>>(), "the burst: one second");
        assert_eq!(limiter.held_entries(), 5);
        // The other shard is not held back by this one.
        assert!(limiter.admit(entry(1, 10, 100), t0).is_some());
        let next = limiter.next_release().expect("held");
        assert_eq!(next, t0 + Duration::from_millis(100), "1 record at 10/s");
        let mut out = Vec::new();
        limiter.release(t0 + Duration::from_millis(250), &mut out);
        let released: Vec<u32> = out.iter().map(|e| e.token).collect();
        assert_eq!(released, [10, 11], "in order, as tokens come");
        // A new entry of a waiting shard queues behind the held ones.
        assert!(limiter
            .admit(entry(0, 10, 50), t0 + Duration::from_secs(5))
            .is_none());
        out.clear();
        limiter.release(t0 + Duration::from_secs(5), &mut out);
        let released: Vec<u32> = out.iter().map(|e| e.token).collect();
        assert_eq!(released, [12, 13, 14, 50]);
        assert_eq!(limiter.held_entries(), 0);
        let held = limiter.take_held_time(t0 + Duration::from_secs(6));
        assert_eq!(held, Duration::from_secs(5));
    }

    #[test]
    fn all_held_entries_can_go_once_every_shard_has_their_tokens() {
        let t0 = Instant::now();
        let mut limiter = ShardLimiter::new(even_map(2), RATES, true, t0);
        assert_eq!(limiter.all_released_at(), None, "nothing held");
        // Shard 0: 10 records pass (the burst), 3 are held; shard 1: 10 pass, 6 are held.
        for id in 0..13 {
            limiter.admit(entry(0, 10, id), t0);
        }
        for id in 0..16 {
            limiter.admit(entry(1, 10, 100 + id), t0);
        }
        assert_eq!(limiter.held_entries(), 9);
        assert_eq!(limiter.held_since(), Some(t0));
        assert_eq!(
            limiter.next_release(),
            Some(t0 + Duration::from_millis(100))
        );
        // The slowest shard sets it: 6 records at 10/s.
        assert_eq!(
            limiter.all_released_at(),
            Some(t0 + Duration::from_millis(600))
        );
        let mut out = Vec::new();
        limiter.release(t0 + Duration::from_millis(600), &mut out);
        assert_eq!(out.len(), 9, "all of them at that time");
        assert_eq!(limiter.all_released_at(), None);
        assert_eq!(limiter.held_since(), None);
        // More than a bucket holds: when the bucket is full (one second), not never.
        for id in 0..25 {
            limiter.admit(entry(0, 10, 200 + id), t0 + Duration::from_secs(2));
        }
        assert_eq!(limiter.held_entries(), 15);
        assert_eq!(limiter.all_released_at(), Some(t0 + Duration::from_secs(3)));
    }

    #[test]
    fn bytes_limit_aggregates_and_oversized_entries_wait_for_a_full_bucket() {
        let t0 = Instant::now();
        let mut limiter = ShardLimiter::new(even_map(2), RATES, true, t0);
        assert!(limiter.admit(entry(0, 600, 1), t0).is_some());
        assert!(
            limiter.admit(entry(0, 600, 2), t0).is_none(),
            "400 bytes left"
        );
        assert_eq!(limiter.held_bytes(), 600);
        assert_eq!(
            limiter.next_release(),
            Some(t0 + Duration::from_millis(200))
        );
        let mut out = Vec::new();
        limiter.release(t0 + Duration::from_millis(200), &mut out);
        assert_eq!(out.len(), 1);
        // Bigger than a second's bytes: goes once the bucket is full again.
        assert!(limiter
            .admit(entry(0, 5000, 3), t0 + Duration::from_millis(200))
            .is_none());
        assert_eq!(
            limiter.next_release(),
            Some(t0 + Duration::from_millis(1200)),
            "empty at 200 ms, full a second later"
        );
    }

    #[test]
    fn a_new_shard_map_hands_back_what_was_held() {
        let t0 = Instant::now();
        let mut limiter = ShardLimiter::new(even_map(2), RATES, true, t0);
        for id in 0..12 {
            let _ = limiter.admit(entry(1, 10, id), t0);
        }
        let back = limiter.replace_shard_map(even_map(4), t0);
        assert_eq!(back.iter().map(|e| e.token).collect::<Vec<_>>(), [10, 11]);
        assert_eq!(limiter.held_entries(), 0);
        assert_eq!(limiter.next_release(), None);
    }

    #[test]
    fn in_auto_mode_only_a_throttled_shard_is_held_starting_empty() {
        let t0 = Instant::now();
        let mut limiter = ShardLimiter::new(even_map(2), RATES, false, t0);
        for id in 0..50 {
            assert!(limiter.admit(entry(0, 10, id), t0).is_some(), "not engaged");
        }
        let throttled = entry(1, 10, 99);
        assert_eq!(
            limiter.throttled(&throttled.record, t0),
            Some("shardId-000000000001")
        );
        assert_eq!(limiter.throttled(&throttled.record, t0), None, "once");
        assert!(
            limiter.admit(entry(0, 10, 100), t0).is_some(),
            "shard 0 stays free"
        );
        assert!(limiter.admit(throttled, t0).is_none(), "an empty bucket");
        assert_eq!(
            limiter.next_release(),
            Some(t0 + Duration::from_millis(100))
        );
        // A new map engages every shard once one was.
        let back = limiter.replace_shard_map(even_map(4), t0);
        assert_eq!(back.len(), 1);
        let mut admitted = 0;
        for id in 0..15 {
            admitted += usize::from(limiter.admit(entry(0, 10, id), t0).is_some());
        }
        assert_eq!(admitted, 10, "held to its limits after the new listing");
    }
}
