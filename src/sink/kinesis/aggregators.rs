//! KPL aggregation by shard: one open container per predicted shard, so an aggregated record
//! never mixes shards, and finished containers handed over as batch entries.

use bytes::Bytes;

use super::batch::{random_partition_key, Entry, Rejected};
use super::shard_map::ShardMap;
use crate::kinesis_record::hash_key;
use crate::kinesis_record::kpl::{self, AddError, Aggregator, KplError, OuterKeys, Sealed};
use crate::kinesis_record::{validate_record, PartitionKey, Record, RejectReason};

/// A user record could not be re-routed out of an entry.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RerouteError {
    #[error("entry does not deaggregate: {0}")]
    Kpl(#[from] KplError),
    #[error(
        "entry holds {records} user records but carries {tokens} tokens; \
         it was not built by ShardAggregators"
    )]
    TokenCount { records: usize, tokens: usize },
}

/// An entry [`ShardAggregators::reroute`] could not split, handed back untouched.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cannot route the entry's user records again: {error}")]
pub struct RerouteFailed<T> {
    pub entry: Entry<Vec<T>>,
    pub error: RerouteError,
}

/// Most sealed containers that wait to have their digests computed together (bounds the
/// memory they hold: 8 × `aggregation_max_size`).
pub const MAX_WAITING_SEALED: usize = 8;

/// The containers being filled for one shard: user records with and without an explicit hash
/// key are kept apart, because the official Python deaggregator reports the first explicit hash
/// key of the table for every user record of a container that has one.
struct Lanes<T> {
    by_partition_key: Option<Open<T>>,
    by_explicit_hash_key: Option<Open<T>>,
}

struct Open<T> {
    aggregator: Aggregator,
    tokens: Vec<T>,
}

impl<T> Open<T> {
    fn seal(&mut self) -> Option<(Sealed, Vec<T>)> {
        let sealed = self.aggregator.seal()?;
        Some((sealed, std::mem::take(&mut self.tokens)))
    }
}

/// One open KPL container per predicted shard, so a container never mixes shards.
///
/// Finished containers queue up in [`ShardAggregators::drain_ready`]; drain it after adding (after
/// a batch of adds rather than each: the digests of the containers drained together are computed
/// together, [`kpl::finish_all`]) and feed the entries to a [`super::batch::Batcher`]. Each
/// finished entry's token lists the tokens of its user records in order. A container is sent
/// with the shard's StartingHashKey as explicit hash key and the shard id as partition key; a
/// container holding a single user record is sent as that plain record.
pub struct ShardAggregators<T> {
    map: ShardMap,
    max_record_size: usize,
    lanes: Vec<Lanes<T>>,
    /// Finished containers whose digests are computed together when they are drained.
    sealed: Vec<(Sealed, Vec<T>)>,
    ready: Vec<Entry<Vec<T>>>,
    /// Per shard, a random partition key that hashes into it, shared by the user records that
    /// have no key of their own ([`ShardAggregators::add_spread`]); made on first use.
    spread_keys: Vec<Option<PartitionKey>>,
    /// The shard the next keyless user record goes to (round robin).
    next_spread: usize,
}

impl<T> ShardAggregators<T> {
    /// `max_record_size` bounds each container (data + outer partition key): the stream's
    /// MaxRecordSize, or a smaller aggregation size to bound memory and latency.
    pub fn new(map: ShardMap, max_record_size: usize) -> Result<Self, KplError> {
        check_outer_keys(&map, max_record_size)?;
        let lanes = empty_lanes(map.len());
        Ok(ShardAggregators {
            spread_keys: vec![None; map.len()],
            next_spread: 0,
            map,
            max_record_size,
            lanes,
            sealed: Vec::new(),
            ready: Vec::new(),
        })
    }

    pub fn shard_map(&self) -> &ShardMap {
        &self.map
    }

    /// Adds a user record to its shard's container (by explicit hash key if it has one, else by
    /// partition key). A record whose hash key no listed shard holds is queued as a plain entry
    /// for Kinesis to route. A record that can never be sent is handed back.
    pub fn add(&mut self, record: Record, token: T) -> Result<(), Rejected<T>> {
        let reject = |record, token, reason| Rejected {
            entry: Entry { record, token },
            reason,
        };
        if let Err(reason) = validate_record(&record, self.max_record_size) {
            return Err(reject(record, token, reason));
        }
        let hash = match hash_key::effective_hash_key(
            &record.partition_key,
            record.explicit_hash_key.as_deref(),
        ) {
            Ok(hash) => hash,
            Err(error) => return Err(reject(record, token, error.into())),
        };
        let Some(index) = self.map.index_for(hash) else {
            self.ready.push(Entry {
                record,
                token: vec![token],
            });
            return Ok(());
        };
        self.add_to_shard(index, record, token)
    }

    /// Adds a user record that has no partition key of its own (the sink would give it a
    /// random one): it takes the next shard in turn and that shard's spread key, one random key
    /// that hashes into the shard. Records spread over the shards as evenly as with a random
    /// key each, without a key per record in the containers (~35 bytes each) and without hashing
    /// one per record; consumers see random keys either way.
    pub fn add_spread(&mut self, data: Bytes, token: T) -> Result<(), Rejected<T>> {
        let index = self.next_spread % self.lanes.len().max(1);
        self.next_spread = index + 1;
        let key = match self.spread_keys.get_mut(index) {
            Some(Some(key)) => key.clone(),
            Some(slot) => match spread_key(&self.map, index) {
                Some(key) => slot.insert(key).clone(),
                // A shard too narrow to hit at random: the record keeps a random key.
                None => return self.add(Record::new(random_partition_key(), data), token),
            },
            None => return self.add(Record::new(random_partition_key(), data), token),
        };
        self.add_to_shard(index, Record::new(key, data), token)
    }

    /// Adds a validated user record to the container of shard `index`, which its keys hash to.
    fn add_to_shard(&mut self, index: usize, record: Record, token: T) -> Result<(), Rejected<T>> {
        let reject = |record, token, reason| Rejected {
            entry: Entry { record, token },
            reason,
        };
        let shard = &self.map.shards()[index];
        let lanes = &mut self.lanes[index];
        let lane = if record.explicit_hash_key.is_some() {
            &mut lanes.by_explicit_hash_key
        } else {
            &mut lanes.by_partition_key
        };
        let open = match lane {
            Some(open) => open,
            None => {
                let outer = OuterKeys {
                    partition_key: shard.id().to_owned(),
                    explicit_hash_key: Some(shard.aggregate_hash_key().to_owned()),
                };
                let aggregator = match Aggregator::new(self.max_record_size, outer) {
                    Ok(aggregator) => aggregator,
                    // Unreachable: checked for every shard when the map was set.
                    Err(_) => {
                        let reason = RejectReason::TooLarge {
                            size: record.size(),
                            max: self.max_record_size,
                        };
                        return Err(reject(record, token, reason));
                    }
                };
                lane.insert(Open {
                    aggregator,
                    tokens: Vec::new(),
                })
            }
        };
        let record = match open.aggregator.try_add(record) {
            Ok(()) => {
                open.tokens.push(token);
                return Ok(());
            }
            Err(AddError::Full(record)) => {
                self.sealed.extend(open.seal());
                record
            }
            Err(AddError::Rejected { record, reason }) => {
                return Err(reject(record, token, reason))
            }
        };
        // An empty container takes every record that passed validation.
        match open.aggregator.try_add(record) {
            Ok(()) => {
                open.tokens.push(token);
                Ok(())
            }
            Err(AddError::Full(record) | AddError::Rejected { record, .. }) => {
                let reason = RejectReason::TooLarge {
                    size: record.size(),
                    max: self.max_record_size,
                };
                Err(reject(record, token, reason))
            }
        }
    }

    /// Finished entries, oldest first.
    pub fn drain_ready(&mut self) -> std::vec::Drain<'_, Entry<Vec<T>>> {
        self.finish_sealed();
        self.ready.drain(..)
    }

    /// As [`ShardAggregators::drain_ready`], but sealed containers stay sealed until there are
    /// as many as the digest's SIMD lanes ([`kpl::digest_lanes`]: 8 with AVX2; at most
    /// [`MAX_WAITING_SEALED`]). Digesting one message costs as much as digesting a full set of
    /// lanes, and a stream of four shards seals about four containers at a time: waiting for
    /// two such rounds halves the MD5 work. Whoever calls this must also call
    /// [`ShardAggregators::flush_all`] or `drain_ready` later (by a deadline), as for open
    /// containers: [`ShardAggregators::pending_records`] counts sealed ones too.
    pub fn drain_full_lanes(&mut self) -> std::vec::Drain<'_, Entry<Vec<T>>> {
        if self.sealed.len() >= kpl::digest_lanes().min(MAX_WAITING_SEALED) {
            self.finish_sealed();
        }
        self.ready.drain(..)
    }

    /// Moves the sealed containers to the ready entries, their digests computed together.
    fn finish_sealed(&mut self) {
        if self.sealed.is_empty() {
            return;
        }
        let (sealed, tokens): (Vec<Sealed>, Vec<Vec<T>>) = self.sealed.drain(..).unzip();
        let finished = kpl::finish_all(sealed).zip(tokens);
        self.ready
            .extend(finished.map(|(record, token)| Entry { record, token }));
    }

    /// Finishes every open container (on a flush interval, or at shutdown) and returns every
    /// queued entry.
    pub fn flush_all(&mut self) -> Vec<Entry<Vec<T>>> {
        for lanes in &mut self.lanes {
            for open in [&mut lanes.by_partition_key, &mut lanes.by_explicit_hash_key]
                .into_iter()
                .flatten()
            {
                self.sealed.extend(open.seal());
            }
        }
        self.finish_sealed();
        std::mem::take(&mut self.ready)
    }

    /// Switches to a new shard listing (after resharding). User records waiting in open
    /// containers are routed again by the new map, so no container is sent for a closed shard.
    pub fn replace_shard_map(&mut self, map: ShardMap) -> Result<Vec<Rejected<T>>, KplError> {
        check_outer_keys(&map, self.max_record_size)?;
        // Sealed containers are sent as they are (the caller drains them first, to predict
        // their shards by the old map).
        self.finish_sealed();
        let old_lanes = std::mem::replace(&mut self.lanes, empty_lanes(map.len()));
        self.spread_keys = vec![None; map.len()];
        self.map = map;
        let mut rejected = Vec::new();
        for lanes in old_lanes {
            for mut open in [lanes.by_partition_key, lanes.by_explicit_hash_key]
                .into_iter()
                .flatten()
            {
                let records = open.aggregator.take_records();
                for (record, token) in records.into_iter().zip(open.tokens) {
                    if let Err(refused) = self.add(record, token) {
                        rejected.push(refused);
                    }
                }
            }
        }
        Ok(rejected)
    }

    /// Routes the user records of an entry this helper built (typically one that failed and is
    /// about to be retried after the shard map changed) again by the current map. On error the
    /// entry is handed back untouched.
    pub fn reroute(
        &mut self,
        entry: Entry<Vec<T>>,
    ) -> Result<Vec<Rejected<T>>, Box<RerouteFailed<T>>> {
        let fail = |entry, error| Box::new(RerouteFailed { entry, error });
        let records = match kpl::deaggregate(entry.record.clone()) {
            Ok(records) => records,
            Err(error) => return Err(fail(entry, error.into())),
        };
        if records.len() != entry.token.len() {
            let error = RerouteError::TokenCount {
                records: records.len(),
                tokens: entry.token.len(),
            };
            return Err(fail(entry, error));
        }
        let mut rejected = Vec::new();
        for (record, token) in records.into_iter().zip(entry.token) {
            if let Err(refused) = self.add(record, token) {
                rejected.push(refused);
            }
        }
        Ok(rejected)
    }

    /// User records waiting in open and sealed containers.
    pub fn pending_records(&self) -> usize {
        let open: usize = self.open_containers().map(|open| open.tokens.len()).sum();
        open + self
            .sealed
            .iter()
            .map(|(_, tokens)| tokens.len())
            .sum::<usize>()
    }

    /// Bytes waiting in open containers and queued entries (data + partition keys).
    pub fn pending_bytes(&self) -> usize {
        let open: usize = self
            .open_containers()
            .map(|open| open.aggregator.record_size())
            .sum();
        let sealed: usize = self.sealed.iter().map(|(sealed, _)| sealed.size()).sum();
        open + sealed
            + self
                .ready
                .iter()
                .map(|entry| entry.record.size())
                .sum::<usize>()
    }

    fn open_containers(&self) -> impl Iterator<Item = &Open<T>> {
        self.lanes.iter().flat_map(|lanes| {
            [&lanes.by_partition_key, &lanes.by_explicit_hash_key]
                .into_iter()
                .flatten()
        })
    }
}

/// A random partition key whose MD5 hash falls in shard `index`'s range, or `None` when a few
/// thousand tries miss (a shard covering less than ~1/1000 of the hash key space).
fn spread_key(map: &ShardMap, index: usize) -> Option<PartitionKey> {
    (0..4096).map(|_| random_partition_key()).find(|key| {
        hash_key::effective_hash_key(key, None)
            .ok()
            .and_then(|hash| map.index_for(hash))
            == Some(index)
    })
}

fn empty_lanes<T>(count: usize) -> Vec<Lanes<T>> {
    (0..count)
        .map(|_| Lanes {
            by_partition_key: None,
            by_explicit_hash_key: None,
        })
        .collect()
}

/// Every shard's container must have room for its outer partition key and the KPL framing.
fn check_outer_keys(map: &ShardMap, max_record_size: usize) -> Result<(), KplError> {
    for shard in map.shards() {
        kpl::check_limit(max_record_size, shard.id())?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kinesis_record::hash_key::hash_key;
    use crate::sink::kinesis::batch::tests::{limits, record};
    use crate::sink::kinesis::batch::Batcher;
    use crate::sink::kinesis::shard_map::tests::FOUR_SHARDS as FOUR;
    use crate::sink::kinesis::shard_map::ShardListing;

    fn map(shards: &[(&str, &str, &str)]) -> ShardMap {
        ShardMap::from_listing(shards.iter().map(|(id, start, end)| ShardListing {
            shard_id: (*id).into(),
            starting_hash_key: (*start).into(),
            ending_hash_key: (*end).into(),
            closed: false,
        }))
        .unwrap()
    }

    /// Checks an entry from ShardAggregators: all its user records route to one shard of
    /// `map`, the entry itself routes there too, and the tokens line up with the records.
    fn check_entry(map: &ShardMap, entry: &Entry<Vec<u32>>, sent: &[(Record, u32)]) -> usize {
        let users = kpl::deaggregate(entry.record.clone()).unwrap();
        assert_eq!(users.len(), entry.token.len());
        let route = |r: &Record| {
            let hash =
                hash_key::effective_hash_key(&r.partition_key, r.explicit_hash_key.as_deref())
                    .unwrap();
            map.index_for(hash).unwrap()
        };
        let shard = route(&entry.record);
        for (user, token) in users.iter().zip(&entry.token) {
            assert_eq!(route(user), shard, "user record outside the entry's shard");
            assert_eq!(&sent[*token as usize].0, user, "token {token}");
        }
        if users.len() > 1 {
            let expected = map.shards()[shard].aggregate_hash_key();
            assert_eq!(entry.record.explicit_hash_key.as_deref(), Some(expected));
            assert_eq!(entry.record.partition_key, map.shards()[shard].id());
            let with_hash = users.iter().filter(|u| u.explicit_hash_key.is_some());
            assert!(with_hash.count() % users.len() == 0, "mixed lanes");
        }
        shard
    }

    fn sample_records(count: u32) -> Vec<(Record, u32)> {
        (0..count)
            .map(|i| {
                let mut record = Record::new(format!("pod-{}", i % 37), vec![i as u8; 50]);
                if i % 5 == 0 {
                    // An explicit hash key in a shard other than the key's own.
                    let hash = hash_key(&record.partition_key).wrapping_add(1u128 << 126);
                    record = record.with_explicit_hash_key(hash.to_string());
                }
                (record, i)
            })
            .collect()
    }

    #[test]
    fn sealed_containers_wait_for_a_full_set_of_digest_lanes() {
        let map = map(&FOUR);
        let sent = sample_records(3000);
        let lanes = kpl::digest_lanes().min(MAX_WAITING_SEALED);
        let mut aggregators = ShardAggregators::new(map.clone(), 1000).unwrap();
        let mut entries = Vec::new();
        let mut most_waiting = 0;
        for (record, token) in sent.clone() {
            aggregators.add(record, token).unwrap();
            let drained: Vec<_> = aggregators.drain_full_lanes().collect();
            let aggregated = drained.iter().filter(|e| e.token.len() > 1).count();
            assert!(
                aggregated == 0 || aggregated >= lanes,
                "{aggregated} drained"
            );
            entries.extend(drained);
            most_waiting = most_waiting.max(aggregators.sealed.len());
            // Every record added is either sent or counted as pending.
            let out: usize = entries.iter().map(|e| e.token.len()).sum();
            assert_eq!(out + aggregators.pending_records(), token as usize + 1);
        }
        assert!(
            most_waiting == lanes - 1 || lanes == 1,
            "{most_waiting} waited"
        );
        entries.extend(aggregators.flush_all());
        assert_eq!(aggregators.pending_records(), 0);
        let mut seen: Vec<u32> = Vec::new();
        for entry in &entries {
            check_entry(&map, entry, &sent);
            seen.extend(&entry.token);
        }
        seen.sort_unstable();
        assert_eq!(seen, (0..3000).collect::<Vec<u32>>());
    }

    #[test]
    fn containers_never_mix_shards_and_carry_all_tokens() {
        let map = map(&FOUR);
        let sent = sample_records(600);
        let mut aggregators = ShardAggregators::new(map.clone(), 1000).unwrap();
        let mut entries = Vec::new();
        for (record, token) in sent.clone() {
            aggregators.add(record, token).unwrap();
            entries.extend(aggregators.drain_ready());
        }
        assert!(aggregators.pending_records() > 0);
        entries.extend(aggregators.flush_all());
        assert_eq!(aggregators.pending_records(), 0);
        assert_eq!(aggregators.pending_bytes(), 0);

        let mut seen: Vec<u32> = Vec::new();
        let mut shards_used = std::collections::BTreeSet::new();
        for entry in &entries {
            assert!(entry.record.size() <= 1000);
            shards_used.insert(check_entry(&map, entry, &sent));
            seen.extend(&entry.token);
        }
        assert_eq!(shards_used.len(), 4);
        seen.sort_unstable();
        assert_eq!(seen, (0..600).collect::<Vec<_>>());
        // Aggregation did happen: far fewer entries than records.
        assert!(entries.len() < 600 / 5, "{} entries", entries.len());
        // And every entry goes through the batcher.
        let mut batcher = Batcher::new(limits(500, 5000, 1000)).unwrap();
        for entry in entries {
            batcher.push(entry).unwrap();
        }
    }

    #[test]
    fn keyless_records_spread_over_the_shards_with_one_key_each() {
        let shards = map(&FOUR);
        let mut aggregators = ShardAggregators::new(shards.clone(), 2_000).unwrap();
        for i in 0..400u32 {
            aggregators
                .add_spread(Bytes::from(vec![i as u8; 40]), i)
                .unwrap();
        }
        let entries = aggregators.flush_all();
        let mut per_shard = [0usize; 4];
        let mut keys_per_shard = vec![std::collections::BTreeSet::new(); 4];
        for entry in &entries {
            let users = kpl::deaggregate(entry.record.clone()).unwrap();
            let shard = shards
                .index_for(
                    hash_key::effective_hash_key(
                        &entry.record.partition_key,
                        entry.record.explicit_hash_key.as_deref(),
                    )
                    .unwrap(),
                )
                .unwrap();
            for (user, token) in users.iter().zip(&entry.token) {
                // Every user record's own key hashes into the shard its container goes to
                // (what the KCL checks when it deaggregates).
                let own = hash_key::effective_hash_key(&user.partition_key, None).unwrap();
                assert_eq!(shards.index_for(own), Some(shard));
                assert_eq!(user.data.as_ref(), &vec![*token as u8; 40][..]);
                keys_per_shard[shard].insert(user.partition_key.clone());
            }
            per_shard[shard] += users.len();
        }
        // Round robin: 100 records per shard, all under the shard's one spread key.
        assert_eq!(per_shard, [100; 4]);
        assert!(
            keys_per_shard.iter().all(|keys| keys.len() == 1),
            "{keys_per_shard:?}"
        );
        // A new shard map brings new keys, and re-routes waiting records correctly.
        aggregators
            .add_spread(Bytes::from_static(b"x"), 999)
            .unwrap();
        let half = map(&FOUR[..2]);
        assert!(aggregators.replace_shard_map(half).unwrap().is_empty());
        aggregators
            .add_spread(Bytes::from_static(b"y"), 1000)
            .unwrap();
        let tokens: Vec<u32> = aggregators
            .flush_all()
            .into_iter()
            .flat_map(|e| e.token)
            .collect();
        assert_eq!(tokens.len(), 2);
    }

    /// The official deaggregator (aws-kinesis-agg) reads every entry back into exactly the user
    /// records its tokens name, explicit hash keys included (lanes keep it from misreporting).
    #[test]
    fn official_deaggregator_reads_shard_containers_back() {
        let sent = sample_records(500);
        let mut aggregators = ShardAggregators::new(map(&FOUR), 2_000).unwrap();
        for (record, token) in sent.clone() {
            aggregators.add(record, token).unwrap();
        }
        let entries = aggregators.flush_all();
        let records: Vec<Record> = entries.iter().map(|e| e.record.clone()).collect();
        let expected: Vec<Vec<Record>> = entries
            .iter()
            .map(|e| {
                e.token
                    .iter()
                    .map(|t| sent[*t as usize].0.clone())
                    .collect()
            })
            .collect();
        assert!(expected.iter().any(|members| members.len() > 1));
        kpl::tests::assert_official_roundtrip(&records, &expected);
    }

    #[test]
    fn lone_record_goes_plain_and_unlisted_hash_goes_plain() {
        // Only the lower half of the key space is listed.
        let half = map(&FOUR[..2]);
        let mut aggregators = ShardAggregators::new(half, 1000).unwrap();
        let low = Record::new("a", "lone").with_explicit_hash_key("5");
        let high = Record::new("b", "high").with_explicit_hash_key(u128::MAX.to_string());
        aggregators.add(low.clone(), 1).unwrap();
        aggregators.add(high.clone(), 2).unwrap();
        let ready: Vec<_> = aggregators.drain_ready().collect();
        assert_eq!(
            ready,
            [Entry {
                record: high,
                token: vec![2]
            }]
        );
        let flushed = aggregators.flush_all();
        assert_eq!(
            flushed,
            [Entry {
                record: low,
                token: vec![1]
            }]
        );
    }

    #[test]
    fn invalid_and_oversized_records_are_handed_back() {
        let mut aggregators = ShardAggregators::new(map(&FOUR), 100).unwrap();
        let refused = aggregators.add(record("k", 100), 7).unwrap_err();
        assert!(refused.reason.is_too_large());
        assert_eq!(refused.entry.token, 7);
        let refused = aggregators.add(record("", 1), 8).unwrap_err();
        assert_eq!(refused.reason, RejectReason::EmptyPartitionKey);
        // A record too big to aggregate but small enough to send alone goes out plain.
        aggregators.add(record("k", 99), 9).unwrap();
        aggregators.add(record("k", 10), 10).unwrap();
        let ready: Vec<_> = aggregators.drain_ready().collect();
        assert_eq!(ready.len(), 1);
        assert_eq!(ready[0].record, record("k", 99));
        assert_eq!(ready[0].token, [9]);
        assert!(ShardAggregators::<u32>::new(map(&FOUR), 30).is_err());
    }

    #[test]
    fn resharding_reroutes_open_containers_and_retried_entries() {
        let one = map(&[(
            "shardId-000000000000",
            "0",
            "340282366920938463463374607431768211455",
        )]);
        let sent = sample_records(40);
        let mut aggregators = ShardAggregators::new(one, 100_000).unwrap();
        for (record, token) in sent.clone() {
            aggregators.add(record, token).unwrap();
        }
        // A container built for the old single shard, failed and waiting for retry.
        let old_entries = aggregators.flush_all();
        assert_eq!(old_entries.len(), 2); // one per lane
        for (record, token) in sent.iter().take(20).cloned() {
            aggregators.add(record, token).unwrap();
        }
        let four = map(&FOUR);
        assert!(aggregators
            .replace_shard_map(four.clone())
            .unwrap()
            .is_empty());
        for entry in old_entries {
            assert!(aggregators.reroute(entry).unwrap().is_empty());
        }
        let entries = aggregators.flush_all();
        let mut seen: Vec<u32> = Vec::new();
        for entry in &entries {
            check_entry(&four, entry, &sent);
            seen.extend(&entry.token);
        }
        seen.sort_unstable();
        let mut expected: Vec<u32> = (0..40).chain(0..20).collect();
        expected.sort_unstable();
        assert_eq!(seen, expected);
    }

    #[test]
    fn reroute_refuses_foreign_entries() {
        let mut aggregators = ShardAggregators::new(map(&FOUR), 1000).unwrap();
        let entry = Entry {
            record: record("k", 5),
            token: vec![1, 2],
        };
        let failed = aggregators.reroute(entry.clone()).unwrap_err();
        assert_eq!(failed.entry, entry);
        assert_eq!(
            failed.error,
            RerouteError::TokenCount {
                records: 1,
                tokens: 2
            }
        );
    }
}
