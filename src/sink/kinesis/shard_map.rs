//! Which shard a record lands on, predicted on our side.
//!
//! Kinesis routes a record to the open shard whose `[StartingHashKey, EndingHashKey]` range holds
//! its hash key: the record's ExplicitHashKey when given, else MD5 of the UTF-8 partition key read
//! as an unsigned 128-bit big-endian integer. KPL aggregation must predict this, because the KCL
//! drops the rest of an aggregated record as soon as one user record falls outside the shard the
//! record was read from: containers are grouped per predicted shard and sent with an explicit hash
//! key inside that shard.

use md5::{Digest, Md5};

/// Longest decimal form of a 128-bit hash key (2^128 - 1 has 39 digits).
const MAX_HASH_KEY_DIGITS: usize = 39;

/// The hash key Kinesis computes for a partition key: MD5 of its UTF-8 bytes, big-endian.
pub fn hash_key(partition_key: &str) -> u128 {
    u128::from_be_bytes(Md5::digest(partition_key.as_bytes()).into())
}

/// The hash key a record is routed by: its explicit hash key if it has one, else the MD5 of its
/// partition key.
pub fn effective_hash_key(
    partition_key: &str,
    explicit_hash_key: Option<&str>,
) -> Result<u128, HashKeyError> {
    match explicit_hash_key {
        Some(explicit) => parse_hash_key(explicit),
        None => Ok(hash_key(partition_key)),
    }
}

/// Why a decimal hash key string was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HashKeyError {
    #[error("hash key is empty: expected a decimal integer from 0 to 2^128-1")]
    Empty,
    #[error(
        "hash key {0:?} is not a plain decimal integer (digits only, no sign, no leading zero), \
         which is the only form Kinesis accepts"
    )]
    NotDecimal(String),
    #[error("hash key {0:?} is 2^128 or larger; Kinesis hash keys are unsigned 128-bit integers")]
    TooLarge(String),
}

/// Parses a hash key as Kinesis writes and accepts it: `0|[1-9][0-9]{0,38}`, below 2^128.
///
/// Strict on purpose: an explicit hash key Kinesis would refuse fails the whole PutRecords
/// request, so it must be caught per record before it is batched.
pub fn parse_hash_key(text: &str) -> Result<u128, HashKeyError> {
    let shown = || shorten(text);
    if text.is_empty() {
        return Err(HashKeyError::Empty);
    }
    let bytes = text.as_bytes();
    if !bytes.iter().all(u8::is_ascii_digit) || (bytes.len() > 1 && bytes[0] == b'0') {
        return Err(HashKeyError::NotDecimal(shown()));
    }
    if bytes.len() > MAX_HASH_KEY_DIGITS {
        return Err(HashKeyError::TooLarge(shown()));
    }
    bytes.iter().try_fold(0u128, |acc, digit| {
        acc.checked_mul(10)
            .and_then(|acc| acc.checked_add(u128::from(digit - b'0')))
            .ok_or_else(|| HashKeyError::TooLarge(shown()))
    })
}

/// Keeps error messages readable when a record carries a huge bogus key.
fn shorten(text: &str) -> String {
    const MAX_SHOWN: usize = 48;
    match text.char_indices().nth(MAX_SHOWN) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text.to_owned(),
    }
}

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
mod tests {
    use super::*;
    use std::process::Command;

    /// Decimal strings exactly as AWS (and moto) list a 4-shard stream: an even split of the
    /// 128-bit key space.
    const FOUR_SHARDS: [(&str, &str, &str); 4] = [
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

    fn python() -> String {
        crate::sink::kinesis::kpl::tests::test_python()
    }

    #[test]
    fn hash_key_matches_published_md5_digests() {
        // RFC 1321 appendix A.5 test suite, hex digests read as big-endian integers.
        let published = [
            ("", "d41d8cd98f00b204e9800998ecf8427e"),
            ("a", "0cc175b9c0f1b6a831c399e269772661"),
            ("abc", "900150983cd24fb0d6963f7d28e17f72"),
            ("message digest", "f96b697d7cb7938d525a2f31aaf161d0"),
        ];
        for (key, hex) in published {
            assert_eq!(
                hash_key(key),
                u128::from_str_radix(hex, 16).unwrap(),
                "{key:?}"
            );
        }
    }

    #[test]
    fn hash_key_matches_python_hashlib() {
        let keys = [
            "pk-0",
            "kubernetes-pod-7f9c",
            "ключ-日本",
            "emoji-🚀",
            "a much longer partition key with spaces and punctuation: {}[]->",
        ];
        let script = "import hashlib, json, sys\n\
                      keys = json.load(sys.stdin)\n\
                      print(json.dumps([str(int.from_bytes(hashlib.md5(k.encode('utf-8')).digest(), 'big')) for k in keys]))";
        let mut child = Command::new(python())
            .args(["-c", script])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("run python (set LOGFERRY_PYTHON to a Python 3 interpreter)");
        serde_json::to_writer(child.stdin.take().unwrap(), &keys).unwrap();
        let output = child.wait_with_output().unwrap();
        assert!(output.status.success());
        let expected: Vec<String> = serde_json::from_slice(&output.stdout).unwrap();
        for (key, expected) in keys.iter().zip(expected) {
            assert_eq!(hash_key(key).to_string(), expected, "{key:?}");
        }
    }

    #[test]
    fn parses_only_what_kinesis_accepts() {
        assert_eq!(parse_hash_key("0"), Ok(0));
        assert_eq!(parse_hash_key("42"), Ok(42));
        assert_eq!(
            parse_hash_key("340282366920938463463374607431768211455"),
            Ok(u128::MAX)
        );
        assert_eq!(parse_hash_key(""), Err(HashKeyError::Empty));
        for bad in ["007", "-1", "+1", "1.0", " 1", "1e3", "٣"] {
            assert!(
                matches!(parse_hash_key(bad), Err(HashKeyError::NotDecimal(_))),
                "{bad:?}"
            );
        }
        for too_large in [
            "340282366920938463463374607431768211456",
            "999999999999999999999999999999999999999",
            "1000000000000000000000000000000000000000",
        ] {
            assert!(
                matches!(parse_hash_key(too_large), Err(HashKeyError::TooLarge(_))),
                "{too_large}"
            );
        }
    }

    #[test]
    fn effective_hash_key_prefers_the_explicit_one() {
        assert_eq!(effective_hash_key("abc", Some("5")), Ok(5));
        assert_eq!(effective_hash_key("abc", None), Ok(hash_key("abc")));
        assert!(effective_hash_key("abc", Some("x")).is_err());
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
