//! PutRecords batches: building them within Kinesis' limits, and sorting out what a partial
//! failure means for each entry.
//!
//! Every entry carries an opaque caller token (`T`) so the sink can acknowledge upstream exactly
//! the records whose entry Kinesis accepted. Only failed entries are handed back for retry:
//! resending a whole batch after a partial failure duplicates the entries that succeeded.
//!
//! With KPL aggregation, [`super::aggregators::ShardAggregators`] fills the entries: one per
//! aggregated record, its token the list of the user records' tokens.

use super::retry_policy::{classify, ErrorClass};
use crate::kinesis_record::{validate_record, PartitionKey, Record, RejectReason};

/// PutRecords takes at most this many entries per request.
pub const MAX_ENTRIES: usize = 500;
/// Request size limit (data + partition keys of all entries) of a standard stream.
pub const DEFAULT_MAX_REQUEST_BYTES: usize = 5 * 1024 * 1024;
/// Per-record limit (data + partition key) of a stream whose MaxRecordSize was not raised;
/// read the stream's own from DescribeStreamSummary.
pub const DEFAULT_MAX_RECORD_SIZE: usize = 1024 * 1024;

/// A record on its way to Kinesis with the caller's token for acknowledging it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry<T> {
    pub record: Record,
    pub token: T,
}

/// A record that can never be sent, handed back with its token and the reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("record refused: {reason}")]
pub struct Rejected<T> {
    pub entry: Entry<T>,
    pub reason: RejectReason,
}

/// PutRecords limits a batch respects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchLimits {
    /// Entries per request, at most [`MAX_ENTRIES`].
    pub max_entries: usize,
    /// Bytes per request, counting data + partition key of each entry.
    pub max_request_bytes: usize,
    /// Bytes per entry (data + partition key): the stream's MaxRecordSize.
    pub max_record_size: usize,
}

impl Default for BatchLimits {
    fn default() -> Self {
        BatchLimits {
            max_entries: MAX_ENTRIES,
            max_request_bytes: DEFAULT_MAX_REQUEST_BYTES,
            max_record_size: DEFAULT_MAX_RECORD_SIZE,
        }
    }
}

/// Limits that cannot produce a valid request.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LimitsError {
    #[error("max_entries is {0}; PutRecords takes 1 to 500 entries per request")]
    Entries(usize),
    #[error(
        "record size limit ({record} bytes) is above the request size limit ({request} bytes); \
         a request must be able to hold at least one record"
    )]
    RecordOverRequest { record: usize, request: usize },
    #[error("record size limit is 0 bytes; use the stream's MaxRecordSize")]
    ZeroRecordSize,
}

impl BatchLimits {
    pub fn validate(&self) -> Result<(), LimitsError> {
        if self.max_entries == 0 || self.max_entries > MAX_ENTRIES {
            return Err(LimitsError::Entries(self.max_entries));
        }
        if self.max_record_size == 0 {
            return Err(LimitsError::ZeroRecordSize);
        }
        if self.max_record_size > self.max_request_bytes {
            return Err(LimitsError::RecordOverRequest {
                record: self.max_record_size,
                request: self.max_request_bytes,
            });
        }
        Ok(())
    }
}

/// The entries of one PutRecords request, in request order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Batch<T> {
    entries: Vec<Entry<T>>,
    bytes: usize,
}

impl<T> Default for Batch<T> {
    fn default() -> Self {
        Batch {
            entries: Vec::new(),
            bytes: 0,
        }
    }
}

impl<T> Batch<T> {
    pub fn entries(&self) -> &[Entry<T>] {
        &self.entries
    }

    pub fn into_entries(self) -> Vec<Entry<T>> {
        self.entries
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Bytes Kinesis counts against the request limit (data + partition keys).
    pub fn bytes(&self) -> usize {
        self.bytes
    }
}

/// Accumulates entries into batches that PutRecords accepts.
#[derive(Debug)]
pub struct Batcher<T> {
    limits: BatchLimits,
    current: Batch<T>,
}

impl<T> Batcher<T> {
    pub fn new(limits: BatchLimits) -> Result<Self, LimitsError> {
        limits.validate()?;
        Ok(Batcher {
            limits,
            current: Batch::default(),
        })
    }

    pub fn limits(&self) -> &BatchLimits {
        &self.limits
    }

    /// Adds an entry. Returns a batch when one is complete: either the entry did not fit (the
    /// returned batch holds the entries before it, the entry starts the next batch) or it filled
    /// the batch to the entry limit (the returned batch includes it).
    #[inline(always)]
    pub fn push(&mut self, entry: Entry<T>) -> Result<Option<Batch<T>>, Rejected<T>> {
        let size = match validate_record(&entry.record, self.limits.max_record_size) {
            Ok(size) => size,
            Err(reason) => return Err(Rejected { entry, reason }),
        };
        let mut full = None;
        if !self.current.is_empty() && self.current.bytes + size > self.limits.max_request_bytes {
            full = Some(std::mem::take(&mut self.current));
        }
        if self.current.entries.capacity() == 0 {
            // A whole batch's room at once: growing from empty moved every entry ~once more
            // (realloc copies), ~1% of a no-ack run's CPU. Reserved on the first entry, so an
            // idle batcher holds nothing.
            self.current.entries.reserve_exact(self.limits.max_entries);
        }
        self.current.entries.push(entry);
        self.current.bytes += size;
        if full.is_none() && self.current.len() >= self.limits.max_entries {
            full = Some(std::mem::take(&mut self.current));
        }
        Ok(full)
    }

    /// Takes the batch in progress, if it has any entry.
    pub fn flush(&mut self) -> Option<Batch<T>> {
        (!self.current.is_empty()).then(|| std::mem::take(&mut self.current))
    }

    pub fn pending_entries(&self) -> usize {
        self.current.len()
    }

    pub fn pending_bytes(&self) -> usize {
        self.current.bytes
    }
}

/// What PutRecords answered for one entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EntryResult {
    Delivered {
        /// The shard the record landed on, as Kinesis names it (`shardId-000000000001`).
        shard_id: String,
    },
    Failed {
        code: String,
        message: String,
    },
}

impl EntryResult {
    /// Builds a result from the optional fields of a PutRecordsResultEntry. An entry with an
    /// error code failed; one with neither error code nor sequence number is treated as failed
    /// (and retried) rather than acknowledged on a guess.
    pub fn from_parts(
        has_sequence_number: bool,
        shard_id: Option<&str>,
        error_code: Option<&str>,
        error_message: Option<&str>,
    ) -> Self {
        match error_code {
            None if has_sequence_number => EntryResult::Delivered {
                shard_id: shard_id.unwrap_or_default().to_owned(),
            },
            code => EntryResult::Failed {
                code: code.unwrap_or_default().to_owned(),
                message: error_message.map_or_else(
                    || "no sequence number and no error code".into(),
                    super::api::sanitize,
                ),
            },
        }
    }
}

/// An entry Kinesis refused, with its error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failed<T> {
    pub entry: Entry<T>,
    pub code: String,
    pub message: String,
}

/// The entries of a batch that PutRecords refused, sorted by what to do with them, and the
/// delivered ones the caller asked to keep (the others were handed to the caller one by one and
/// dropped where they were, see [`split_results`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome<T> {
    /// Throttled or transient failures: send again (only these) after a backoff.
    pub retry: Vec<Failed<T>>,
    /// Failures that need an operator (see [`ErrorClass::Fatal`]).
    pub fatal: Vec<Failed<T>>,
    /// Delivered entries for which `delivered` answered `true`, with the shard each landed on.
    pub kept: Vec<(Entry<T>, String)>,
}

impl<T> Outcome<T> {
    pub fn all_delivered(&self) -> bool {
        self.retry.is_empty() && self.fatal.is_empty()
    }
}

/// The response did not list one result per entry, so which entries succeeded is unknown.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "PutRecords answered {results} results for {entries} entries; \
     treat the whole batch as failed and retry it"
)]
pub struct ResultCountMismatch<T> {
    pub batch: Batch<T>,
    pub entries: usize,
    pub results: usize,
}

/// Pairs each entry of `batch` with its result (PutRecords answers in request order): shows
/// each delivered entry and the shard it landed on to `delivered` as it goes, which answers
/// whether to keep it (then it comes back in [`Outcome::kept`]); sorts the others into to retry
/// and fatal.
///
/// Only the entries that come back are moved: delivered ones are looked at where they lie and
/// dropped there with the batch. At 500 entries per call, moving each out (and, before that,
/// gathering them into a list) was a measurable share of the sink's copying.
pub fn split_results<T>(
    batch: Batch<T>,
    results: Vec<EntryResult>,
    mut delivered: impl FnMut(&Entry<T>, &str) -> bool,
) -> Result<Outcome<T>, Box<ResultCountMismatch<T>>> {
    if results.len() != batch.len() {
        return Err(Box::new(ResultCountMismatch {
            entries: batch.len(),
            results: results.len(),
            batch,
        }));
    }
    let mut entries = batch.entries;
    let mut results = results.into_iter();
    // The results of the entries taken out, in the same order.
    let mut taken_results = Vec::new();
    let taken: Vec<Entry<T>> = entries
        .extract_if(.., |entry| {
            // As many results as entries (checked above): `None` cannot happen.
            let Some(result) = results.next() else {
                return false;
            };
            let take = match &result {
                EntryResult::Delivered { shard_id } => delivered(entry, shard_id),
                EntryResult::Failed { .. } => true,
            };
            if take {
                taken_results.push(result);
            }
            take
        })
        .collect();
    let mut outcome = Outcome {
        retry: Vec::new(),
        fatal: Vec::new(),
        kept: Vec::new(),
    };
    for (entry, result) in taken.into_iter().zip(taken_results) {
        match result {
            EntryResult::Delivered { shard_id } => outcome.kept.push((entry, shard_id)),
            EntryResult::Failed { code, message } => {
                let failed = Failed {
                    entry,
                    code,
                    message,
                };
                match classify(&failed.code) {
                    ErrorClass::Retryable => outcome.retry.push(failed),
                    ErrorClass::Fatal => outcome.fatal.push(failed),
                }
            }
        }
    }
    Ok(outcome)
}

/// Length of a random partition key: 16 hex digits, 64 random bits.
pub const RANDOM_KEY_LEN: usize = 16;

/// [`RANDOM_KEY_LEN`] random hex digits: spreads records evenly over the shards' hash key
/// range (Kinesis routes by the MD5 of the key, so 64 random bits cover the range as evenly as
/// more would). The keys need to be uniform, not unpredictable: a small per-thread generator
/// (seeded from the thread's secure one) makes them, at a fraction of the cost of ChaCha for
/// every record. Every byte of the key is sent, signed and encrypted with its record: 16 digits
/// instead of the 32 of earlier versions make the body 3% smaller for 200-byte records.
pub fn random_partition_key() -> PartitionKey {
    PartitionKey::inline_ascii(&hex_digits(random_bits())).unwrap_or_default()
}

/// 64 random bits from a per-thread SplitMix64 generator, seeded from the thread's secure
/// generator on first use. A `Cell` of one word with a constant initial value is read without
/// the lazy-initialisation check and the `RefCell` borrow that a `SmallRng` in a thread local
/// needs (those were ~40 instructions per key, once per record); SplitMix64's output is
/// uniform, which is all a partition key needs.
fn random_bits() -> u64 {
    use rand::Rng;
    thread_local! {
        static STATE: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
    }
    STATE.with(|state| {
        let mut s = state.get();
        if s == 0 {
            s = rand::rng().random::<u64>() | 1;
        }
        s = s.wrapping_add(0x9e37_79b9_7f4a_7c15);
        state.set(s);
        let mut z = s;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    })
}

/// The 16 nibbles of `bits` as lowercase hex digits, eight at a time in a `u64` (a loop of
/// digit by digit took ~150 instructions per key, once per record). The digits come in the
/// order of the words' bytes, not most significant first: for a random key any fixed order is
/// as good.
fn hex_digits(bits: u64) -> [u8; RANDOM_KEY_LEN] {
    const BYTES: u64 = 0x0101_0101_0101_0101;
    // One nibble per byte: 0x0000_0000_abcd_efgh -> 0x0g0h_0e0f_0c0d_0a0b (by bytes).
    let spread = |half: u32| {
        let x = u64::from(half);
        let x = (x | (x << 16)) & 0x0000_ffff_0000_ffff;
        let x = (x | (x << 8)) & 0x00ff_00ff_00ff_00ff;
        (x | (x << 4)) & (BYTES * 0x0f)
    };
    // Per byte n (0-15): '0' + n, and 'a' - '0' - 10 = 0x27 more when n >= 10 (n + 6 carries
    // into bit 4 exactly then). No byte overflows into the next.
    let hex = |nibbles: u64| {
        let letters = ((nibbles + BYTES * 6) >> 4) & BYTES;
        nibbles + BYTES * u64::from(b'0') + letters * 0x27
    };
    let mut key = [0u8; RANDOM_KEY_LEN];
    key[..8].copy_from_slice(&hex(spread(bits as u32)).to_le_bytes());
    key[8..].copy_from_slice(&hex(spread((bits >> 32) as u32)).to_le_bytes());
    key
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::kinesis_record::hash_key::HashKeyError;

    pub(crate) fn record(key: &str, size: usize) -> Record {
        Record::new(key, vec![b'x'; size])
    }

    #[test]
    fn random_keys_are_distinct_and_spread_evenly_over_the_hash_key_range() {
        let keys: Vec<PartitionKey> = (0..8000).map(|_| random_partition_key()).collect();
        let distinct: std::collections::HashSet<&str> = keys.iter().map(|k| k.as_str()).collect();
        assert_eq!(distinct.len(), keys.len());
        // Kinesis routes by the MD5 of the key: each quarter of the range (4 even shards)
        // gets its share, within 10%, for a uniform generator (2000 ± ~5 standard deviations).
        let mut quarters = [0usize; 4];
        for key in &keys {
            quarters[(crate::kinesis_record::hash_key::hash_key(key) >> 126) as usize] += 1;
        }
        assert!(
            quarters.iter().all(|&n| (1800..=2200).contains(&n)),
            "{quarters:?}"
        );
    }

    #[test]
    fn hex_digits_are_each_nibble_once_as_lowercase_hex() {
        for bits in [
            0u64,
            u64::MAX,
            0x0123_4567_89ab_cdef,
            0xa5a5_5a5a_f00f_0ff0,
            1 << 63,
        ] {
            let key = hex_digits(bits);
            // The bytes of each 32-bit half in little-endian order, each low nibble first.
            let mut expected = Vec::new();
            for half in [bits as u32, (bits >> 32) as u32] {
                for byte in half.to_le_bytes() {
                    expected.extend(format!("{byte:02x}").bytes().rev());
                }
            }
            assert_eq!(key.to_vec(), expected, "{bits:#x}");
            assert!(key.iter().all(|b| b"0123456789abcdef".contains(b)));
        }
    }

    fn entry(key: &str, size: usize, token: u32) -> Entry<u32> {
        Entry {
            record: record(key, size),
            token,
        }
    }

    pub(crate) fn limits(
        max_entries: usize,
        max_request_bytes: usize,
        max_record_size: usize,
    ) -> BatchLimits {
        BatchLimits {
            max_entries,
            max_request_bytes,
            max_record_size,
        }
    }

    /// Pushes everything, then flushes; checks every batch against the limits.
    fn batches(limits: BatchLimits, entries: Vec<Entry<u32>>) -> Vec<Batch<u32>> {
        let mut batcher = Batcher::new(limits).unwrap();
        let mut out = Vec::new();
        for entry in entries {
            out.extend(batcher.push(entry).unwrap());
        }
        out.extend(batcher.flush());
        for batch in &out {
            assert!(!batch.is_empty());
            assert!(batch.len() <= limits.max_entries);
            assert!(batch.bytes() <= limits.max_request_bytes);
            let counted: usize = batch.entries().iter().map(|e| e.record.size()).sum();
            assert_eq!(batch.bytes(), counted);
        }
        out
    }

    fn tokens(batches: &[Batch<u32>]) -> Vec<Vec<u32>> {
        batches
            .iter()
            .map(|batch| batch.entries().iter().map(|e| e.token).collect())
            .collect()
    }

    #[test]
    fn defaults_are_the_documented_kinesis_limits() {
        let defaults = BatchLimits::default();
        assert_eq!(defaults.max_entries, 500);
        assert_eq!(defaults.max_request_bytes, 5 * 1024 * 1024);
        assert_eq!(defaults.max_record_size, 1024 * 1024);
        assert!(defaults.validate().is_ok());
        assert!(limits(501, 10, 10).validate().is_err());
        assert!(limits(0, 10, 10).validate().is_err());
        assert!(limits(10, 10, 11).validate().is_err());
        assert!(limits(10, 10, 0).validate().is_err());
    }

    #[test]
    fn splits_at_500_entries() {
        let entries = (0..1234).map(|i| entry("k", 10, i)).collect();
        let out = batches(BatchLimits::default(), entries);
        let sizes: Vec<usize> = out.iter().map(Batch::len).collect();
        assert_eq!(sizes, [500, 500, 234]);
        let all: Vec<u32> = tokens(&out).concat();
        assert_eq!(all, (0..1234).collect::<Vec<_>>());
    }

    #[test]
    fn batch_reaching_the_entry_limit_is_returned_at_once() {
        let mut batcher = Batcher::new(limits(3, 1000, 100)).unwrap();
        assert!(batcher.push(entry("k", 1, 0)).unwrap().is_none());
        assert!(batcher.push(entry("k", 1, 1)).unwrap().is_none());
        let full = batcher.push(entry("k", 1, 2)).unwrap().unwrap();
        assert_eq!(full.len(), 3);
        assert_eq!(batcher.pending_entries(), 0);
        assert!(batcher.flush().is_none());
    }

    #[test]
    fn request_bytes_count_data_and_partition_key_and_fill_exactly() {
        // 5 MiB request, 1 MiB records: five records of exactly 1 MiB (data + 3-byte key) fill a
        // request to the byte; the sixth starts the next one.
        let mib = 1024 * 1024;
        let entries = (0..11).map(|i| entry("key", mib - 3, i)).collect();
        let out = batches(BatchLimits::default(), entries);
        assert_eq!(
            tokens(&out),
            [vec![0, 1, 2, 3, 4], vec![5, 6, 7, 8, 9], vec![10]]
        );
        assert_eq!(out[0].bytes(), 5 * mib);

        // One byte of partition key more and only four fit.
        let entries = (0..5).map(|i| entry("key", mib - 3, i)).collect::<Vec<_>>();
        let mut entries = entries;
        entries.insert(1, entry("k", 1, 99));
        let out = batches(BatchLimits::default(), entries);
        assert_eq!(out[0].len(), 5);
        assert_eq!(out[0].bytes(), 4 * mib + 2);
        assert_eq!(out[1].len(), 1);
    }

    #[test]
    fn configurable_request_size() {
        let entries = (0..10).map(|i| entry("kk", 98, i)).collect();
        let out = batches(limits(500, 350, 100), entries);
        assert_eq!(
            tokens(&out),
            [vec![0, 1, 2], vec![3, 4, 5], vec![6, 7, 8], vec![9]]
        );
    }

    #[test]
    fn records_over_the_record_limit_are_rejected_as_too_large() {
        let mut batcher = Batcher::new(limits(500, 1000, 100)).unwrap();
        assert!(batcher.push(entry("k", 99, 1)).unwrap().is_none()); // 100: at the limit
        let refused = batcher.push(entry("kk", 99, 2)).unwrap_err(); // 101
        assert_eq!(refused.entry.token, 2);
        assert!(refused.reason.is_too_large());
        assert_eq!(
            refused.reason,
            RejectReason::TooLarge {
                size: 101,
                max: 100
            }
        );
        // A multi-byte key counts its UTF-8 bytes.
        let refused = batcher.push(entry("é", 99, 3)).unwrap_err();
        assert!(refused.reason.is_too_large());
        assert_eq!(batcher.pending_entries(), 1);
    }

    #[test]
    fn invalid_keys_are_rejected_with_their_own_reason() {
        let mut batcher = Batcher::<u32>::new(BatchLimits::default()).unwrap();
        let refused = batcher.push(entry("", 1, 0)).unwrap_err();
        assert_eq!(refused.reason, RejectReason::EmptyPartitionKey);
        assert!(!refused.reason.is_too_large());

        let long = "日".repeat(257);
        let refused = batcher.push(entry(&long, 1, 0)).unwrap_err();
        assert_eq!(
            refused.reason,
            RejectReason::PartitionKeyTooLong { chars: 257 }
        );
        // 256 characters are fine, even at 768 bytes.
        assert!(batcher.push(entry(&"日".repeat(256), 1, 0)).is_ok());

        let bad_hash = Entry {
            record: record("k", 1).with_explicit_hash_key("12a"),
            token: 0,
        };
        let refused = batcher.push(bad_hash).unwrap_err();
        assert!(matches!(
            refused.reason,
            RejectReason::InvalidExplicitHashKey(HashKeyError::NotDecimal(_))
        ));
        assert_eq!(batcher.pending_entries(), 1);
    }

    fn delivered(n: u32) -> EntryResult {
        EntryResult::Delivered {
            shard_id: format!("shardId-00000000000{n}"),
        }
    }

    fn failed(code: &str) -> EntryResult {
        EntryResult::Failed {
            code: code.into(),
            message: format!("{code} happened"),
        }
    }

    #[test]
    fn partial_failure_retries_only_the_failed_entries() {
        let out = batches(
            BatchLimits::default(),
            (0..6).map(|i| entry("k", 5, i)).collect(),
        );
        let batch = out.into_iter().next().unwrap();
        let results = vec![
            delivered(0),
            failed("ProvisionedThroughputExceededException"),
            delivered(2),
            failed("InternalFailure"),
            failed("KMSAccessDeniedException"),
            failed("KMSThrottlingException"),
        ];
        let mut acked: Vec<(u32, String)> = Vec::new();
        let outcome = split_results(batch, results, |entry, shard| {
            acked.push((entry.token, shard.to_string()));
            false
        })
        .unwrap();
        assert!(outcome.kept.is_empty());
        assert_eq!(
            acked,
            [
                (0, "shardId-000000000000".to_string()),
                (2, "shardId-000000000002".to_string())
            ]
        );
        let retry: Vec<(u32, &str)> = outcome
            .retry
            .iter()
            .map(|f| (f.entry.token, f.code.as_str()))
            .collect();
        assert_eq!(
            retry,
            [
                (1, "ProvisionedThroughputExceededException"),
                (3, "InternalFailure"),
                (5, "KMSThrottlingException")
            ]
        );
        assert_eq!(outcome.fatal.len(), 1);
        assert_eq!(outcome.fatal[0].entry.token, 4);
        assert_eq!(
            outcome.fatal[0].message,
            "KMSAccessDeniedException happened"
        );
        assert!(!outcome.all_delivered());

        // Retrying the failed entries through a batcher sends exactly those again.
        let mut batcher = Batcher::new(BatchLimits::default()).unwrap();
        for failed in outcome.retry {
            assert!(batcher.push(failed.entry).unwrap().is_none());
        }
        let again = batcher.flush().unwrap();
        assert_eq!(tokens(&[again]), [vec![1, 3, 5]]);
    }

    #[test]
    fn delivered_entries_asked_for_come_back_in_order_with_their_shards() {
        let batch = batches(
            BatchLimits::default(),
            (0..5).map(|i| entry("k", 5, i)).collect(),
        )
        .remove(0);
        let results = vec![
            delivered(0),
            delivered(1),
            failed("InternalFailure"),
            delivered(3),
            delivered(4),
        ];
        let mut seen = Vec::new();
        let outcome = split_results(batch, results, |entry, _| {
            seen.push(entry.token);
            entry.token % 2 == 1
        })
        .unwrap();
        assert_eq!(seen, [0, 1, 3, 4]);
        let kept: Vec<(u32, &str)> = outcome
            .kept
            .iter()
            .map(|(entry, shard)| (entry.token, shard.as_str()))
            .collect();
        assert_eq!(
            kept,
            [(1, "shardId-000000000001"), (3, "shardId-000000000003")]
        );
        assert_eq!(outcome.retry.len(), 1);
        assert_eq!(outcome.retry[0].entry.token, 2);
    }

    #[test]
    fn all_delivered_and_count_mismatch() {
        let batch = batches(
            BatchLimits::default(),
            (0..2).map(|i| entry("k", 5, i)).collect(),
        )
        .remove(0);
        let mut acked = 0;
        let outcome = split_results(batch.clone(), vec![delivered(0), delivered(1)], |_, _| {
            acked += 1;
            false
        })
        .unwrap();
        assert!(outcome.all_delivered());
        assert!(outcome.kept.is_empty());
        assert_eq!(acked, 2);
        let mismatch = split_results(batch.clone(), vec![delivered(0)], |_, _| {
            panic!("nothing is delivered from a mismatched answer")
        })
        .unwrap_err();
        assert_eq!((mismatch.entries, mismatch.results), (2, 1));
        assert_eq!(mismatch.batch, batch);
    }

    #[test]
    fn entry_result_from_sdk_parts() {
        assert_eq!(
            EntryResult::from_parts(true, Some("s"), None, None),
            EntryResult::Delivered {
                shard_id: "s".into()
            }
        );
        assert_eq!(
            EntryResult::from_parts(false, None, Some("InternalFailure"), None),
            EntryResult::Failed {
                code: "InternalFailure".into(),
                message: "no sequence number and no error code".into()
            }
        );
        let neither = EntryResult::from_parts(false, None, None, None);
        assert!(matches!(neither, EntryResult::Failed { ref code, .. } if code.is_empty()));
    }
}
