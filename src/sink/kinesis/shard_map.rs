//! Which shard a record lands on, predicted on our side: the open shards' hash key ranges.
//!
//! Kinesis routes a record to the open shard whose `[StartingHashKey, EndingHashKey]` range holds
//! its hash key ([`crate::kinesis_record::hash_key`]). KPL aggregation must predict this, because
//! the KCL drops the rest of an aggregated record as soon as one user record falls outside the
//! shard the record was read from: containers are grouped per predicted shard and sent with an
//! explicit hash key inside that shard. The per-shard rate limiter counts by shard too.

use crate::kinesis_record::hash_key::{parse_hash_key, HashKeyError};

/// One shard as ListShards describes it, hash keys still in their decimal string form.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShardListing {
    pub shard_id: String,
    pub starting_hash_key: String,
    pub ending_hash_key: String,
    /// The shard has an `EndingSequenceNumber`: it was split or merged and takes no more writes.
    pub closed: bool,
}

/// An open shard with its parsed hash key range.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shard {
    id: String,
    start: u128,
    end: u128,
    aggregate_hash_key: String,
}

impl Shard {
    pub fn id(&self) -> &str {
        &self.id
    }

    pub fn starting_hash_key(&self) -> u128 {
        self.start
    }

    pub fn ending_hash_key(&self) -> u128 {
        self.end
    }

    pub fn contains(&self, hash: u128) -> bool {
        self.start <= hash && hash <= self.end
    }

    /// The ExplicitHashKey to send this shard's aggregated records with (decimal).
    ///
    /// It is the StartingHashKey: any value in the range routes the same on AWS, but moto
    /// answers HTTP 500 for an explicit hash key equal to a shard's EndingHashKey.
    pub fn aggregate_hash_key(&self) -> &str {
        &self.aggregate_hash_key
    }
}

/// Why a ListShards answer could not be turned into a shard map. Each means the listing is
/// inconsistent (or mid-resharding): list the shards again.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ShardMapError {
    #[error("shard {shard_id}: invalid {which} hash key: {source}")]
    HashKey {
        shard_id: String,
        which: &'static str,
        source: HashKeyError,
    },
    #[error("shard {shard_id}: starting hash key {start} is above its ending hash key {end}")]
    EmptyRange {
        shard_id: String,
        start: u128,
        end: u128,
    },
    #[error(
        "open shards {first} and {second} have overlapping hash key ranges; \
         the listing is inconsistent, list the shards again"
    )]
    Overlap { first: String, second: String },
}

/// The open shards of a stream, sorted by hash key range, for routing by binary search.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ShardMap {
    shards: Vec<Shard>,
}

impl ShardMap {
    /// Builds the map from a ListShards answer, skipping closed shards.
    pub fn from_listing<I>(listing: I) -> Result<Self, ShardMapError>
    where
        I: IntoIterator<Item = ShardListing>,
    {
        let mut shards = Vec::new();
        for shard in listing.into_iter().filter(|shard| !shard.closed) {
            let parse = |text: &str, which: &'static str| {
                parse_hash_key(text).map_err(|source| ShardMapError::HashKey {
                    shard_id: shard.shard_id.clone(),
                    which,
                    source,
                })
            };
            let start = parse(&shard.starting_hash_key, "starting")?;
            let end = parse(&shard.ending_hash_key, "ending")?;
            if start > end {
                return Err(ShardMapError::EmptyRange {
                    shard_id: shard.shard_id,
                    start,
                    end,
                });
            }
            shards.push(Shard {
                id: shard.shard_id,
                start,
                end,
                aggregate_hash_key: start.to_string(),
            });
        }
        shards.sort_by_key(|shard| shard.start);
        if let Some(pair) = shards.windows(2).find(|pair| pair[1].start <= pair[0].end) {
            return Err(ShardMapError::Overlap {
                first: pair[0].id.clone(),
                second: pair[1].id.clone(),
            });
        }
        Ok(ShardMap { shards })
    }

    /// The shard whose range holds `hash`, or `None` if the listing left a gap there (a stale
    /// or partial listing: send such records unaggregated and let Kinesis route them).
    pub fn shard_for(&self, hash: u128) -> Option<&Shard> {
        self.index_for(hash).map(|index| &self.shards[index])
    }

    /// Position in [`ShardMap::shards`] of the shard holding `hash`.
    pub fn index_for(&self, hash: u128) -> Option<usize> {
        let after = self.shards.partition_point(|shard| shard.start <= hash);
        let index = after.checked_sub(1)?;
        (hash <= self.shards[index].end).then_some(index)
    }

    pub fn shards(&self) -> &[Shard] {
        &self.shards
    }

    pub fn len(&self) -> usize {
        self.shards.len()
    }

    pub fn is_empty(&self) -> bool {
        self.shards.is_empty()
    }

    /// True when the open shards cover every hash key from 0 to 2^128-1 without a gap, as a
    /// consistent listing of a stream always does.
    pub fn covers_all_hash_keys(&self) -> bool {
        let (Some(first), Some(last)) = (self.shards.first(), self.shards.last()) else {
            return false;
        };
        first.start == 0
            && last.end == u128::MAX
            && self
                .shards
                .windows(2)
                .all(|pair| pair[0].end.checked_add(1) == Some(pair[1].start))
    }
}

/// A map of `shards` open shards splitting the hash key space evenly, for tests.
#[cfg(test)]
pub(crate) fn even_map(shards: usize) -> ShardMap {
    let width = u128::MAX / shards as u128 + 1;
    ShardMap::from_listing((0..shards).map(|i| {
        let start = width * i as u128;
        let end = if i + 1 == shards {
            u128::MAX
        } else {
            start + width - 1
        };
        ShardListing {
            shard_id: format!("shardId-{i:012}"),
            starting_hash_key: start.to_string(),
            ending_hash_key: end.to_string(),
            closed: false,
        }
    }))
    .unwrap_or_else(|e| panic!("an even map is consistent: {e}"))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::kinesis_record::hash_key::{hash_key, parse_hash_key};

    /// Decimal strings exactly as AWS (and moto) list a 4-shard stream: an even split of the
    /// 128-bit key space.
    pub(crate) const FOUR_SHARDS: [(&str, &str, &str); 4] = [
        (
            "shardId-000000000000",
            "0",
            "85070591730234615865843651857942052863",
        ),
        (
            "shardId-000000000001",
            "85070591730234615865843651857942052864",
            "170141183460469231731687303715884105727",
        ),
        (
            "shardId-000000000002",
            "170141183460469231731687303715884105728",
            "255211775190703847597530955573826158591",
        ),
        (
            "shardId-000000000003",
            "255211775190703847597530955573826158592",
            "340282366920938463463374607431768211455",
        ),
    ];

    fn listing(id: &str, start: &str, end: &str, closed: bool) -> ShardListing {
        ShardListing {
            shard_id: id.into(),
            starting_hash_key: start.into(),
            ending_hash_key: end.into(),
            closed,
        }
    }

    fn four_shards() -> ShardMap {
        ShardMap::from_listing(
            FOUR_SHARDS
                .iter()
                .map(|(id, start, end)| listing(id, start, end, false)),
        )
        .unwrap()
    }

    #[test]
    fn four_shard_map_routes_boundaries_to_the_right_shard() {
        let map = four_shards();
        assert_eq!(map.len(), 4);
        assert!(map.covers_all_hash_keys());
        for (index, (id, start, end)) in FOUR_SHARDS.iter().enumerate() {
            let start: u128 = start.parse().unwrap();
            let end: u128 = end.parse().unwrap();
            for hash in [start, start + 1, start + (end - start) / 2, end - 1, end] {
                assert_eq!(map.shard_for(hash).unwrap().id(), *id, "{hash}");
                assert_eq!(map.index_for(hash), Some(index));
            }
            let shard = &map.shards()[index];
            assert_eq!(shard.aggregate_hash_key(), start.to_string());
            assert!(shard.contains(parse_hash_key(shard.aggregate_hash_key()).unwrap()));
            assert_ne!(parse_hash_key(shard.aggregate_hash_key()).unwrap(), end);
        }
    }

    #[test]
    fn four_shard_map_routes_partition_keys_by_md5() {
        let map = four_shards();
        // MD5("a") = 0x0cc1..., in the first quarter; MD5("abc") = 0x9001..., in the third;
        // MD5("message digest") = 0xf96b..., in the last (leading hex digit / 4 = shard).
        for (key, shard) in [
            ("a", "shardId-000000000000"),
            ("abc", "shardId-000000000002"),
            ("message digest", "shardId-000000000003"),
        ] {
            assert_eq!(map.shard_for(hash_key(key)).unwrap().id(), shard, "{key}");
        }
        // Every top nibble lands on shard nibble / 4.
        for nibble in 0u128..16 {
            let hash = (nibble << 124) | 0x1234;
            let expected = FOUR_SHARDS[(nibble / 4) as usize].0;
            assert_eq!(map.shard_for(hash).unwrap().id(), expected);
        }
    }

    #[test]
    fn closed_shards_are_skipped_and_order_does_not_matter() {
        let mut shards: Vec<ShardListing> = FOUR_SHARDS
            .iter()
            .rev()
            .map(|(id, start, end)| listing(id, start, end, false))
            .collect();
        // The parent of shards 0 and 1 after a split: closed, overlapping both.
        shards.push(listing(
            "shardId-parent",
            "0",
            "170141183460469231731687303715884105727",
            true,
        ));
        let map = ShardMap::from_listing(shards).unwrap();
        assert_eq!(map, four_shards());
    }

    #[test]
    fn gaps_route_nowhere_and_overlaps_are_refused() {
        let map = ShardMap::from_listing([
            listing("low", "0", "99", false),
            listing(
                "high",
                "200",
                "340282366920938463463374607431768211455",
                false,
            ),
        ])
        .unwrap();
        assert!(!map.covers_all_hash_keys());
        assert_eq!(map.shard_for(99).unwrap().id(), "low");
        assert!(map.shard_for(100).is_none());
        assert!(map.shard_for(199).is_none());
        assert_eq!(map.shard_for(200).unwrap().id(), "high");
        assert!(ShardMap::default().shard_for(0).is_none());

        let overlap = ShardMap::from_listing([
            listing("a", "0", "100", false),
            listing("b", "100", "200", false),
        ]);
        assert!(matches!(overlap, Err(ShardMapError::Overlap { .. })));
        let inverted = ShardMap::from_listing([listing("a", "10", "5", false)]);
        assert!(matches!(inverted, Err(ShardMapError::EmptyRange { .. })));
        let bad = ShardMap::from_listing([listing("a", "0", "-1", false)]);
        assert!(matches!(bad, Err(ShardMapError::HashKey { .. })));
    }

    #[test]
    fn single_shard_covers_everything() {
        let map = ShardMap::from_listing([listing(
            "only",
            "0",
            "340282366920938463463374607431768211455",
            false,
        )])
        .unwrap();
        assert!(map.covers_all_hash_keys());
        assert_eq!(map.shard_for(u128::MAX).unwrap().id(), "only");
        assert_eq!(map.shard_for(0).unwrap().id(), "only");
    }
}
