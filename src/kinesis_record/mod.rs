//! Kinesis records and the formats they travel in, shared by the Kinesis sink and the sources
//! that read Kinesis records (CloudWatch Logs subscription payloads, the Lambda).
//!
//! - [`Record`]: partition key, optional explicit hash key, data; what Kinesis refuses of one.
//! - [`partition_key`]: the key, stored inline when short (random keys cost no allocation).
//! - [`hash_key`]: the hash key a record is routed by (MD5 of the partition key, or explicit).
//! - [`kpl`]: the KPL aggregated record format: aggregate with exact sizes, deaggregate.

pub mod hash_key;
pub mod kpl;
pub mod partition_key;

use bytes::Bytes;

use self::hash_key::HashKeyError;
pub use self::partition_key::PartitionKey;

/// Partition keys are 1 to 256 Unicode characters.
pub const MAX_PARTITION_KEY_CHARS: usize = 256;

/// One Kinesis record: what a PutRecords entry carries, and what a KPL user record holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub partition_key: PartitionKey,
    /// Boxed (16 bytes, not 24): rare, and every record carries the field.
    pub explicit_hash_key: Option<Box<str>>,
    pub data: Bytes,
}

impl Record {
    pub fn new(partition_key: impl Into<PartitionKey>, data: impl Into<Bytes>) -> Self {
        Record {
            partition_key: partition_key.into(),
            explicit_hash_key: None,
            data: data.into(),
        }
    }

    pub fn with_explicit_hash_key(mut self, explicit_hash_key: impl Into<Box<str>>) -> Self {
        self.explicit_hash_key = Some(explicit_hash_key.into());
        self
    }

    /// The size Kinesis counts against its record and request limits: data plus partition key
    /// (UTF-8 bytes; the explicit hash key is not counted).
    pub fn size(&self) -> usize {
        self.data.len() + self.partition_key.len()
    }
}

/// Why a record can never be sent as it is. Each fails the same way on every attempt, so the
/// record belongs in the dead-letter file, not in a retry loop.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RejectReason {
    #[error(
        "record is {size} bytes (data + partition key), over the stream's {max} byte record limit; \
         shrink the record or raise the stream's MaxRecordSize"
    )]
    TooLarge { size: usize, max: usize },
    #[error("partition key is empty; Kinesis needs 1 to 256 characters")]
    EmptyPartitionKey,
    #[error("partition key has {chars} characters; Kinesis accepts at most 256")]
    PartitionKeyTooLong { chars: usize },
    #[error("explicit hash key is invalid: {0}")]
    InvalidExplicitHashKey(#[from] HashKeyError),
}

impl RejectReason {
    /// The record is well-formed but too big: count it as `too_large`.
    pub fn is_too_large(&self) -> bool {
        matches!(self, RejectReason::TooLarge { .. })
    }
}

/// Checks everything Kinesis would refuse about a single record, any of which would otherwise
/// fail the whole PutRecords request. Returns the record's counted size.
pub fn validate_record(record: &Record, max_record_size: usize) -> Result<usize, RejectReason> {
    validate_partition_key(&record.partition_key)?;
    if let Some(explicit) = &record.explicit_hash_key {
        hash_key::parse_hash_key(explicit)?;
    }
    let size = record.size();
    if size > max_record_size {
        return Err(RejectReason::TooLarge {
            size,
            max: max_record_size,
        });
    }
    Ok(size)
}

pub(crate) fn validate_partition_key(key: &str) -> Result<(), RejectReason> {
    if key.is_empty() {
        return Err(RejectReason::EmptyPartitionKey);
    }
    // Counting characters is only needed when the byte length could exceed the limit.
    if key.len() > MAX_PARTITION_KEY_CHARS {
        let chars = key.chars().count();
        if chars > MAX_PARTITION_KEY_CHARS {
            return Err(RejectReason::PartitionKeyTooLong { chars });
        }
    }
    Ok(())
}
