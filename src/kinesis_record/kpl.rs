//! KPL aggregated records: many user records packed into one Kinesis record, in the format the
//! KCL, the KPL and the aws-kinesis-agg libraries read.
//!
//! Data layout: magic `F3 89 9A C2`, a protobuf `AggregatedRecord`, then the 16-byte MD5 of the
//! protobuf bytes.
//!
//! ```text
//! AggregatedRecord { repeated string partition_key_table = 1;
//!                    repeated string explicit_hash_key_table = 2;
//!                    repeated Record records = 3; }
//! Record { required uint64 partition_key_index = 1; optional uint64 explicit_hash_key_index = 2;
//!          required bytes data = 3; repeated Tag tags = 4; }
//! Tag    { required string key = 1; optional string value = 2; }
//! ```
//!
//! The encoder is written by hand: it must know a container's exact size before each user record
//! goes in (to fill a container right up to the record limit and never over), it writes the
//! protobuf straight into the output buffer (each data byte is copied once, no intermediate
//! message), and its key tables keep the partition key strings they are given instead of
//! copying them into a message. The prost-derived messages are used to decode, where a
//! well-tested parser matters more (Lambda forwarder input is untrusted), and in tests as an
//! independent oracle of the encoding and its size.

use std::borrow::Borrow;
use std::collections::HashMap;
use std::hash::Hash;
use std::sync::OnceLock;

use bytes::Bytes;
use prost::encoding::{encode_varint, encoded_len_varint};
use prost::Message;

use super::hash_key::{self, HashKeyError};
use super::{validate_partition_key, validate_record, PartitionKey, Record, RejectReason};

/// First bytes of every aggregated record's data.
pub const MAGIC: [u8; 4] = [0xF3, 0x89, 0x9A, 0xC2];
const DIGEST_LEN: usize = 16;
/// Magic plus digest: what a container costs before any protobuf byte.
pub const FRAMING_LEN: usize = MAGIC.len() + DIGEST_LEN;

// Protobuf field keys: field number << 3 | wire type (0 = varint, 2 = length-delimited).
// All field numbers are below 16, so every key is one byte.
const PARTITION_KEY_TABLE: u8 = 1 << 3 | 2;
const EXPLICIT_HASH_KEY_TABLE: u8 = 2 << 3 | 2;
const RECORDS: u8 = 3 << 3 | 2;
const RECORD_PARTITION_KEY_INDEX: u8 = 1 << 3;
const RECORD_EXPLICIT_HASH_KEY_INDEX: u8 = 2 << 3;
const RECORD_DATA: u8 = 3 << 3 | 2;

/// The KPL messages, for decoding (and as the tests' oracle).
mod wire {
    use bytes::Bytes;

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct AggregatedRecord {
        #[prost(string, repeated, tag = "1")]
        pub partition_key_table: Vec<String>,
        #[prost(string, repeated, tag = "2")]
        pub explicit_hash_key_table: Vec<String>,
        #[prost(message, repeated, tag = "3")]
        pub records: Vec<UserRecord>,
    }

    /// `Record` in the KPL's .proto.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct UserRecord {
        #[prost(uint64, required, tag = "1")]
        pub partition_key_index: u64,
        #[prost(uint64, optional, tag = "2")]
        pub explicit_hash_key_index: Option<u64>,
        #[prost(bytes = "bytes", required, tag = "3")]
        pub data: Bytes,
        #[prost(message, repeated, tag = "4")]
        pub tags: Vec<Tag>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Tag {
        #[prost(string, required, tag = "1")]
        pub key: String,
        #[prost(string, optional, tag = "2")]
        pub value: Option<String>,
    }
}

/// What went wrong building or reading an aggregated record.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KplError {
    #[error(
        "aggregated record is corrupt: its MD5 digest does not match its contents \
         (it was truncated or altered after the producer wrote it)"
    )]
    DigestMismatch,
    #[error("aggregated record is corrupt: its protobuf body does not decode: {0}")]
    Decode(#[from] prost::DecodeError),
    #[error(
        "aggregated record is corrupt: user record {position} refers to {table} #{index}, \
         but the table has {len} entries"
    )]
    KeyIndex {
        position: usize,
        table: &'static str,
        index: u64,
        len: usize,
    },
    #[error(
        "record size limit of {max_record_size} bytes leaves no room to aggregate: the outer \
         partition key and KPL framing alone take {needed} bytes; raise the limit"
    )]
    LimitTooSmall {
        max_record_size: usize,
        needed: usize,
    },
    #[error("outer partition key of aggregated records is invalid: {0}")]
    OuterPartitionKey(RejectReason),
    #[error("outer explicit hash key of aggregated records is invalid: {0}")]
    OuterExplicitHashKey(HashKeyError),
}

/// Checks that containers sent with `outer_partition_key` under `max_record_size` can hold user
/// records at all.
pub fn check_limit(max_record_size: usize, outer_partition_key: &str) -> Result<(), KplError> {
    validate_partition_key(outer_partition_key).map_err(KplError::OuterPartitionKey)?;
    let needed = outer_partition_key.len() + FRAMING_LEN;
    if max_record_size <= needed {
        return Err(KplError::LimitTooSmall {
            max_record_size,
            needed,
        });
    }
    Ok(())
}

/// The keys an aggregated record is sent with. The explicit hash key decides the shard (use one
/// inside the shard all its user records map to); the partition key then only counts toward the
/// record size.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OuterKeys {
    pub partition_key: String,
    pub explicit_hash_key: Option<String>,
}

/// Why [`Aggregator::try_add`] did not take a record; the record is handed back.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AddError {
    /// The container has no room left: finish it, then add the record to the fresh one.
    #[error("aggregated record is full")]
    Full(Record),
    /// The record can never be sent, aggregated or not.
    #[error("user record refused: {reason}")]
    Rejected {
        record: Record,
        reason: RejectReason,
    },
}

/// Distinct keys of one container in first-seen order, so each user record keeps its own key
/// and the output is deterministic.
#[derive(Debug, Default)]
struct KeyTable<K> {
    keys: Vec<K>,
    positions: HashMap<K, u64>,
}

/// Where a user record's key goes in a table.
#[derive(Debug, Clone, Copy)]
enum Slot {
    Existing(u64),
    New(u64),
}

impl Slot {
    fn index(self) -> u64 {
        match self {
            Slot::Existing(index) | Slot::New(index) => index,
        }
    }
}

impl<K: Borrow<str> + Hash + Eq + Clone> KeyTable<K> {
    fn slot(&self, key: &str) -> Slot {
        // Records with a shared key (the sink's spread keys) come one after another.
        if self.keys.last().is_some_and(|last| last.borrow() == key) {
            return Slot::Existing(self.keys.len() as u64 - 1);
        }
        match self.positions.get(key) {
            Some(&index) => Slot::Existing(index),
            None => Slot::New(self.keys.len() as u64),
        }
    }

    /// Records a key that [`KeyTable::slot`] reported as new.
    fn push(&mut self, key: K) {
        self.positions.insert(key.clone(), self.keys.len() as u64);
        self.keys.push(key);
    }

    fn clear(&mut self) {
        self.keys.clear();
        self.positions.clear();
    }
}

/// A user record in a container: its table indexes, and where its data is in the buffer.
#[derive(Debug)]
struct Pending {
    partition_key_index: u64,
    explicit_hash_key_index: Option<u64>,
    data: std::ops::Range<usize>,
}

/// Bytes of a length-delimited field with a one-byte key.
fn delimited_len(payload: usize) -> usize {
    1 + encoded_len_varint(payload as u64) + payload
}

/// Bytes of an embedded `Record` message's body (without its own key and length).
fn record_body_len(
    partition_key_index: u64,
    explicit_hash_key_index: Option<u64>,
    data_len: usize,
) -> usize {
    1 + encoded_len_varint(partition_key_index)
        + explicit_hash_key_index.map_or(0, |index| 1 + encoded_len_varint(index))
        + delimited_len(data_len)
}

/// Writes `payload` as a length-delimited field ending at `end` in `buf`; returns where it
/// starts.
fn put_delimited_before(buf: &mut [u8], end: usize, key: u8, payload: &[u8]) -> usize {
    let start = end - delimited_len(payload.len());
    buf[start] = key;
    let mut len = [0u8; 10];
    let mut slot = &mut len[..];
    encode_varint(payload.len() as u64, &mut slot);
    let varint_len = encoded_len_varint(payload.len() as u64);
    buf[start + 1..start + 1 + varint_len].copy_from_slice(&len[..varint_len]);
    buf[start + 1 + varint_len..end].copy_from_slice(payload);
    start
}

/// Where a user record would go and what it would cost.
struct Placement {
    partition_key: Slot,
    explicit_hash_key: Option<Slot>,
    added_len: usize,
}

/// Room kept in front of a fresh container's records for the magic and the key tables (one
/// spread key, or a shard's few partition keys, take a few dozen bytes); a container whose
/// tables need more leaves that much room in the next.
const MIN_TABLE_ROOM: usize = 256;
/// Capacity of the first container's buffer; later ones start at their predecessor's size, or
/// this if that was smaller (a container the flush deadline sealed early).
const FIRST_CAPACITY: usize = 64 << 10;

/// One aggregated record being filled.
///
/// Its size is tracked exactly as records go in, so it is filled to the record limit (data +
/// outer partition key) and never over it. A container holding one user record is sent as that
/// plain record, so any record Kinesis would accept alone is accepted into an empty container.
/// The aggregator is reused after [`Aggregator::finish`], keeping its key tables' allocations.
///
/// Each user record is written into the container's buffer as a protobuf `Record` when it is
/// added, while its data is still in cache; the key tables, which must come first, are written
/// at sealing into room left in front of the records. Sealing thus copies no record again, and
/// the sent data is a slice of that one buffer.
///
/// Mixing user records with and without an explicit hash key in one container is valid (the KCL
/// reads it right), but aws-kinesis-agg's deaggregator then reports the table's first explicit
/// hash key for the records that had none; [`crate::sink::kinesis::aggregators::ShardAggregators`] keeps them apart.
#[derive(Debug)]
pub struct Aggregator {
    max_record_size: usize,
    outer: OuterKeys,
    partition_keys: KeyTable<PartitionKey>,
    explicit_hash_keys: KeyTable<Box<str>>,
    records: Vec<Pending>,
    /// The first user record's data as given: sent as is when it stays alone.
    first: Option<Bytes>,
    /// `table_room` bytes kept for magic and key tables, then the `Record` fields; empty (no
    /// allocation) between containers.
    buf: Vec<u8>,
    table_room: usize,
    /// The last sealed container's length: the next buffer's capacity, so a container filled
    /// to the limit as its predecessor was grows without copying.
    capacity_hint: usize,
    /// Length of the aggregated form: magic + protobuf + digest.
    aggregated_len: usize,
}

impl Aggregator {
    pub fn new(max_record_size: usize, outer: OuterKeys) -> Result<Self, KplError> {
        check_limit(max_record_size, &outer.partition_key)?;
        if let Some(explicit) = &outer.explicit_hash_key {
            hash_key::parse_hash_key(explicit).map_err(KplError::OuterExplicitHashKey)?;
        }
        Ok(Aggregator {
            max_record_size,
            outer,
            partition_keys: KeyTable::default(),
            explicit_hash_keys: KeyTable::default(),
            records: Vec::new(),
            first: None,
            buf: Vec::new(),
            table_room: MIN_TABLE_ROOM,
            capacity_hint: FIRST_CAPACITY,
            aggregated_len: FRAMING_LEN,
        })
    }

    pub fn outer_keys(&self) -> &OuterKeys {
        &self.outer
    }

    pub fn len(&self) -> usize {
        self.records.len()
    }

    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// Length of the data [`Aggregator::finish`] would produce now: 0 when empty, the user
    /// record's own data when it holds one, else the aggregated bytes.
    pub fn data_len(&self) -> usize {
        match (self.records.len(), &self.first) {
            (0, _) => 0,
            (1, Some(only)) => only.len(),
            _ => self.aggregated_len,
        }
    }

    /// What Kinesis would count for the record [`Aggregator::finish`] would produce now: its
    /// data plus its partition key.
    pub fn record_size(&self) -> usize {
        match (self.records.len(), &self.first) {
            (0, _) => 0,
            (1, Some(only)) => only.len() + self.partition_keys.keys[0].len(),
            _ => self.aggregated_len + self.outer.partition_key.len(),
        }
    }

    /// Whether [`Aggregator::try_add`] would take `record` now.
    pub fn would_fit(&self, record: &Record) -> bool {
        validate_record(record, self.max_record_size).is_ok()
            && (self.is_empty() || self.fits(self.place(record).added_len))
    }

    /// Adds a user record, unless it would push the container over the record limit.
    pub fn try_add(&mut self, record: Record) -> Result<(), AddError> {
        if let Err(reason) = validate_record(&record, self.max_record_size) {
            return Err(AddError::Rejected { record, reason });
        }
        let placement = self.place(&record);
        if !self.is_empty() && !self.fits(placement.added_len) {
            return Err(AddError::Full(record));
        }
        let partition_key_index = placement.partition_key.index();
        let explicit_hash_key_index = placement.explicit_hash_key.map(Slot::index);
        if let Slot::New(_) = placement.partition_key {
            self.partition_keys.push(record.partition_key);
        }
        if let (Some(Slot::New(_)), Some(key)) =
            (placement.explicit_hash_key, record.explicit_hash_key)
        {
            self.explicit_hash_keys.push(key);
        }
        if self.buf.capacity() == 0 {
            let capacity = self.capacity_hint.min(self.max_record_size) + self.table_room;
            self.buf = Vec::with_capacity(capacity);
            self.buf.resize(self.table_room, 0);
        }
        let buf = &mut self.buf;
        buf.push(RECORDS);
        let body_len = record_body_len(
            partition_key_index,
            explicit_hash_key_index,
            record.data.len(),
        );
        encode_varint(body_len as u64, buf);
        buf.push(RECORD_PARTITION_KEY_INDEX);
        encode_varint(partition_key_index, buf);
        if let Some(index) = explicit_hash_key_index {
            buf.push(RECORD_EXPLICIT_HASH_KEY_INDEX);
            encode_varint(index, buf);
        }
        buf.push(RECORD_DATA);
        encode_varint(record.data.len() as u64, buf);
        let data_start = buf.len();
        buf.extend_from_slice(&record.data);
        self.records.push(Pending {
            partition_key_index,
            explicit_hash_key_index,
            data: data_start..buf.len(),
        });
        self.first = match self.records.len() {
            1 => Some(record.data),
            _ => None,
        };
        self.aggregated_len += placement.added_len;
        Ok(())
    }

    /// Produces the record to send and empties the container: `None` when empty; the user record
    /// itself (own key, own explicit hash key, data untouched) when it holds one; else the
    /// aggregated bytes with the outer keys.
    pub fn finish(&mut self) -> Option<Record> {
        self.seal().map(Sealed::finish)
    }

    /// As [`Aggregator::finish`], without the digest yet: [`finish_all`] computes the digests of
    /// several containers at once.
    pub fn seal(&mut self) -> Option<Sealed> {
        let sealed = match (self.records.len(), self.first.take()) {
            (0, _) => return None,
            (1, Some(only)) => Sealed {
                partition_key: std::mem::take(&mut self.partition_keys.keys[0]),
                explicit_hash_key: self.explicit_hash_keys.keys.first_mut().map(std::mem::take),
                form: Form::Plain(only),
            },
            _ => {
                let (buf, start) = self.frame();
                Sealed {
                    partition_key: PartitionKey::from(&self.outer.partition_key),
                    explicit_hash_key: self.outer.explicit_hash_key.as_deref().map(Box::from),
                    form: Form::Aggregated { buf, start },
                }
            }
        };
        self.clear();
        Some(sealed)
    }

    /// Takes the buffer of a container of two or more records, with magic and key tables
    /// written in front of its records and room for the digest at its end; returns it with
    /// where the aggregated record starts in it.
    fn frame(&mut self) -> (Vec<u8>, usize) {
        let mut buf = std::mem::take(&mut self.buf);
        let records = self.table_room;
        // Magic and key tables: what the tracked length holds besides the records and digest.
        let head = self.aggregated_len - DIGEST_LEN - (buf.len() - records);
        let start = match records.checked_sub(head) {
            Some(start) => start,
            None => {
                // Tables larger than the room: move the records once, and leave the next
                // container as much room.
                let mut moved = Vec::with_capacity(head + buf.len() - records + DIGEST_LEN);
                moved.resize(head, 0);
                moved.extend_from_slice(&buf[records..]);
                buf = moved;
                0
            }
        };
        let mut at = start + head;
        for key in self.explicit_hash_keys.keys.iter().rev() {
            at = put_delimited_before(&mut buf, at, EXPLICIT_HASH_KEY_TABLE, key.as_bytes());
        }
        for key in self.partition_keys.keys.iter().rev() {
            at = put_delimited_before(&mut buf, at, PARTITION_KEY_TABLE, key.as_bytes());
        }
        debug_assert_eq!(at, start + MAGIC.len());
        buf[start..at].copy_from_slice(&MAGIC);
        buf.resize(buf.len() + DIGEST_LEN, 0);
        debug_assert_eq!(buf.len() - start, self.aggregated_len);
        self.table_room = head.max(MIN_TABLE_ROOM);
        self.capacity_hint = self.aggregated_len.max(FIRST_CAPACITY);
        (buf, start)
    }

    /// Empties the container, handing back its user records in order (to route them again).
    pub fn take_records(&mut self) -> Vec<Record> {
        let records = match (self.records.len(), self.first.take()) {
            (0, _) => Vec::new(),
            (1, Some(only)) => vec![Record {
                partition_key: std::mem::take(&mut self.partition_keys.keys[0]),
                explicit_hash_key: self.explicit_hash_keys.keys.first_mut().map(std::mem::take),
                data: only,
            }],
            _ => self
                .records
                .iter()
                .map(|pending| Record {
                    partition_key: self.partition_keys.keys[pending.partition_key_index as usize]
                        .clone(),
                    explicit_hash_key: pending
                        .explicit_hash_key_index
                        .map(|index| self.explicit_hash_keys.keys[index as usize].clone()),
                    data: Bytes::copy_from_slice(&self.buf[pending.data.clone()]),
                })
                .collect(),
        };
        self.clear();
        records
    }

    fn clear(&mut self) {
        self.partition_keys.clear();
        self.explicit_hash_keys.clear();
        self.records.clear();
        self.first = None;
        self.buf.truncate(self.table_room.min(self.buf.len()));
        self.aggregated_len = FRAMING_LEN;
    }

    fn fits(&self, added_len: usize) -> bool {
        self.aggregated_len + added_len + self.outer.partition_key.len() <= self.max_record_size
    }

    fn place(&self, record: &Record) -> Placement {
        let mut added_len = 0;
        let partition_key = self.partition_keys.slot(&record.partition_key);
        if let Slot::New(_) = partition_key {
            added_len += delimited_len(record.partition_key.len());
        }
        let explicit_hash_key = record.explicit_hash_key.as_deref().map(|key| {
            let slot = self.explicit_hash_keys.slot(key);
            if let Slot::New(_) = slot {
                added_len += delimited_len(key.len());
            }
            slot
        });
        let body = record_body_len(
            partition_key.index(),
            explicit_hash_key.map(Slot::index),
            record.data.len(),
        );
        added_len += delimited_len(body);
        Placement {
            partition_key,
            explicit_hash_key,
            added_len,
        }
    }
}

/// A finished container whose digest is not written yet (see [`Aggregator::seal`]).
#[derive(Debug)]
pub struct Sealed {
    partition_key: PartitionKey,
    explicit_hash_key: Option<Box<str>>,
    form: Form,
}

#[derive(Debug)]
enum Form {
    /// A container of one user record: that record, as is.
    Plain(Bytes),
    /// From `start`: magic, protobuf, and room for the digest.
    Aggregated { buf: Vec<u8>, start: usize },
}

impl Sealed {
    /// What Kinesis counts for the record: data and partition key.
    pub fn size(&self) -> usize {
        let data = match &self.form {
            Form::Plain(data) => data.len(),
            Form::Aggregated { buf, start } => buf.len() - start,
        };
        data + self.partition_key.len()
    }

    /// The record, its digest computed alone.
    pub fn finish(self) -> Record {
        self.into_record(None)
    }

    /// The record, with `digest` when it was computed already (else computed here).
    fn into_record(self, digest: Option<[u8; DIGEST_LEN]>) -> Record {
        let data = match self.form {
            Form::Plain(data) => data,
            Form::Aggregated { mut buf, start } => {
                let digest = digest.unwrap_or_else(|| md5_many::md5(digested_part(&buf[start..])));
                let at = buf.len() - DIGEST_LEN;
                buf[at..].copy_from_slice(&digest);
                Bytes::from(buf).slice(start..)
            }
        };
        Record {
            partition_key: self.partition_key,
            explicit_hash_key: self.explicit_hash_key,
            data,
        }
    }
}

/// The part of an aggregated record its digest covers: the protobuf, between magic and digest.
fn digested_part(buf: &[u8]) -> &[u8] {
    &buf[MAGIC.len()..buf.len() - DIGEST_LEN]
}

/// The MD5 engine of this CPU, detected once.
fn digest_engine() -> md5_many::Md5Many {
    static ENGINE: OnceLock<md5_many::Md5Many> = OnceLock::new();
    *ENGINE.get_or_init(md5_many::Md5Many::new)
}

/// How many digests [`finish_all`] computes for the price of one: the SIMD lanes of this CPU
/// (16 with AVX-512, 8 with AVX2, 4 with SSE or NEON).
pub fn digest_lanes() -> usize {
    digest_engine().lanes()
}

/// The records of `sealed`, in order, the digests of the aggregated ones computed together:
/// MD5 has one chain of dependent steps per message, so one message leaves most of a core's
/// SIMD width idle, and several take each a lane (8 with AVX2, 16 with AVX-512). Five 1 MiB
/// aggregates hash about 4x as fast together as one after another (docs/performance.md).
pub fn finish_all(sealed: Vec<Sealed>) -> impl Iterator<Item = Record> {
    let parts: Vec<&[u8]> = sealed
        .iter()
        .filter_map(|s| match &s.form {
            Form::Aggregated { buf, start } => Some(digested_part(&buf[*start..])),
            Form::Plain(_) => None,
        })
        .collect();
    let mut digests = vec![[0u8; DIGEST_LEN]; parts.len()];
    if !parts.is_empty() {
        digest_engine().hash_many(&parts, &mut digests);
    }
    drop(parts);
    let mut digests = digests.into_iter();
    sealed.into_iter().map(move |s| {
        let digest = match s.form {
            Form::Aggregated { .. } => digests.next(),
            Form::Plain(_) => None,
        };
        s.into_record(digest)
    })
}

/// Whether `data` is framed as an aggregated record (magic, at least one protobuf byte, digest).
pub fn is_aggregated(data: &[u8]) -> bool {
    data.len() > FRAMING_LEN && data.starts_with(&MAGIC)
}

/// Splits a Kinesis record into its user records; a record that is not aggregated comes back
/// alone, untouched. User record data are slices of the input (no copy).
///
/// Unlike the KCL and aws-kinesis-agg, which pass a record with the magic but a wrong digest
/// through as plain data, this reports it: no log line starts with those bytes (they are not
/// UTF-8), so it is a damaged aggregate, and forwarding its raw bytes would hide the damage.
pub fn deaggregate(record: Record) -> Result<Vec<Record>, KplError> {
    if !is_aggregated(&record.data) {
        return Ok(vec![record]);
    }
    let data = record.data;
    let digest_at = data.len() - DIGEST_LEN;
    let body = data.slice(MAGIC.len()..digest_at);
    if md5_many::md5(&body)[..] != data[digest_at..] {
        return Err(KplError::DigestMismatch);
    }
    let wire::AggregatedRecord {
        partition_key_table,
        explicit_hash_key_table,
        records,
    } = wire::AggregatedRecord::decode(body)?;
    let key = |table: &[String], name, position, index: u64| {
        table
            .get(usize::try_from(index).unwrap_or(usize::MAX))
            .cloned()
            .ok_or(KplError::KeyIndex {
                position,
                table: name,
                index,
                len: table.len(),
            })
    };
    records
        .into_iter()
        .enumerate()
        .map(|(position, user)| {
            Ok(Record {
                partition_key: key(
                    &partition_key_table,
                    "partition key",
                    position,
                    user.partition_key_index,
                )?
                .into(),
                explicit_hash_key: user
                    .explicit_hash_key_index
                    .map(|index| {
                        key(
                            &explicit_hash_key_table,
                            "explicit hash key",
                            position,
                            index,
                        )
                    })
                    .transpose()?
                    .map(Box::from),
                data: user.data,
            })
        })
        .collect()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use base64::engine::general_purpose::STANDARD as BASE64;
    use base64::Engine;
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};
    use serde::Deserialize;
    use std::io::Write;
    use std::process::{Command, Stdio};

    const FIXTURE: &str = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/kpl/aggregated.json"
    );

    #[derive(Deserialize)]
    struct Case {
        name: String,
        max_size: usize,
        input: Vec<FixtureRecord>,
        aggregated_records: Vec<FixtureAggregate>,
    }

    #[derive(Deserialize)]
    struct FixtureRecord {
        partition_key: String,
        explicit_hash_key: Option<String>,
        data_b64: String,
    }

    #[derive(Deserialize)]
    struct FixtureAggregate {
        outer_partition_key: String,
        outer_explicit_hash_key: Option<String>,
        data_b64: String,
        size: usize,
        user_records: Vec<FixtureRecord>,
    }

    impl FixtureRecord {
        fn record(&self) -> Record {
            Record {
                partition_key: self.partition_key.clone().into(),
                explicit_hash_key: self.explicit_hash_key.as_deref().map(Box::from),
                data: BASE64.decode(&self.data_b64).unwrap().into(),
            }
        }
    }

    /// Records aggregated by aws-kinesis-agg 1.2.3, in the shared folder beside the repository.
    fn fixture() -> Vec<Case> {
        let text = std::fs::read_to_string(FIXTURE)
            .unwrap_or_else(|error| panic!("read {FIXTURE}: {error}"));
        serde_json::from_str(&text).unwrap()
    }

    fn outer(partition_key: &str, explicit_hash_key: Option<&str>) -> OuterKeys {
        OuterKeys {
            partition_key: partition_key.into(),
            explicit_hash_key: explicit_hash_key.map(str::to_owned),
        }
    }

    /// Feeds records through one aggregator the way a sink does: finish when full, add again.
    fn aggregate_all(
        max_record_size: usize,
        outer: OuterKeys,
        records: &[Record],
    ) -> Vec<(Record, Vec<Record>)> {
        let mut aggregator = Aggregator::new(max_record_size, outer).unwrap();
        let mut out = Vec::new();
        let mut members = Vec::new();
        for record in records {
            match aggregator.try_add(record.clone()) {
                Ok(()) => {}
                Err(AddError::Full(record)) => {
                    let predicted = aggregator.data_len();
                    let finished = aggregator.finish().unwrap();
                    assert_eq!(finished.data.len(), predicted);
                    out.push((finished, std::mem::take(&mut members)));
                    aggregator.try_add(record).unwrap();
                }
                Err(other) => panic!("{other}"),
            }
            members.push(record.clone());
        }
        let predicted = aggregator.data_len();
        if let Some(finished) = aggregator.finish() {
            assert_eq!(finished.data.len(), predicted);
            out.push((finished, members));
        }
        out
    }

    /// The container as prost would encode it, built from user records independently of
    /// [`Aggregator`]: key tables deduplicated in first-seen order.
    fn oracle_message(records: &[Record]) -> wire::AggregatedRecord {
        fn index(table: &mut Vec<String>, key: &str) -> u64 {
            match table.iter().position(|known| known == key) {
                Some(position) => position as u64,
                None => {
                    table.push(key.to_owned());
                    table.len() as u64 - 1
                }
            }
        }
        let mut message = wire::AggregatedRecord::default();
        for record in records {
            let partition_key_index =
                index(&mut message.partition_key_table, &record.partition_key);
            let explicit_hash_key_index = record
                .explicit_hash_key
                .as_deref()
                .map(|key| index(&mut message.explicit_hash_key_table, key));
            message.records.push(wire::UserRecord {
                partition_key_index,
                explicit_hash_key_index,
                data: record.data.clone(),
                tags: Vec::new(),
            });
        }
        message
    }

    fn oracle_len(records: &[Record]) -> usize {
        FRAMING_LEN + oracle_message(records).encoded_len()
    }

    #[test]
    fn fixtures_deaggregate_into_their_user_records() {
        for case in fixture() {
            let mut all = Vec::new();
            for aggregate in &case.aggregated_records {
                let record = Record {
                    partition_key: aggregate.outer_partition_key.clone().into(),
                    explicit_hash_key: aggregate.outer_explicit_hash_key.as_deref().map(Box::from),
                    data: BASE64.decode(&aggregate.data_b64).unwrap().into(),
                };
                assert_eq!(record.data.len(), aggregate.size, "{}", case.name);
                let users = deaggregate(record).unwrap();
                let expected: Vec<Record> =
                    aggregate.user_records.iter().map(|r| r.record()).collect();
                assert_eq!(users, expected, "{}", case.name);
                all.extend(users);
            }
            let inputs: Vec<Record> = case.input.iter().map(|r| r.record()).collect();
            assert_eq!(all, inputs, "{}", case.name);
        }
    }

    /// The fixture's `max_size` bounds the data only (aws-kinesis-agg does not count the outer
    /// partition key); ours bounds data + outer partition key, as Kinesis does. With the limit
    /// raised by the outer key's length both split at the same points, and the bytes match.
    #[test]
    fn aggregating_fixture_inputs_reproduces_the_official_bytes() {
        for case in fixture() {
            let first = &case.aggregated_records[0];
            let outer_keys = outer(
                &first.outer_partition_key,
                first.outer_explicit_hash_key.as_deref(),
            );
            let inputs: Vec<Record> = case.input.iter().map(|r| r.record()).collect();
            let max = case.max_size + first.outer_partition_key.len();
            let ours = aggregate_all(max, outer_keys, &inputs);
            assert_eq!(ours.len(), case.aggregated_records.len(), "{}", case.name);
            for ((record, _), theirs) in ours.iter().zip(&case.aggregated_records) {
                assert_eq!(record.data.len(), theirs.size, "{}", case.name);
                assert_eq!(
                    BASE64.encode(&record.data),
                    theirs.data_b64,
                    "{}",
                    case.name
                );
                assert_eq!(record.partition_key, theirs.outer_partition_key);
                assert_eq!(
                    record.explicit_hash_key.as_deref(),
                    theirs.outer_explicit_hash_key.as_deref()
                );
            }
        }
    }

    #[test]
    fn fixture_split_is_tight() {
        // The 4 KiB case splits after 5 records: a sixth would not have fitted.
        let case = fixture()
            .into_iter()
            .find(|case| case.name == "split-at-4KiB-limit")
            .unwrap();
        let inputs: Vec<Record> = case.input.iter().map(|r| r.record()).collect();
        assert!(oracle_len(&inputs[..5]) <= case.max_size);
        assert!(oracle_len(&inputs[..6]) > case.max_size);
    }

    fn random_key(rng: &mut StdRng, pool: usize) -> String {
        const STEMS: [&str; 4] = ["pod-", "ключ-", "日本-", "🚀"];
        let n = rng.random_range(0..pool);
        format!("{}{n}", STEMS[n % STEMS.len()])
    }

    fn random_record(rng: &mut StdRng, key_pool: usize) -> Record {
        // Sizes around the varint boundaries of the data length and of the record body.
        let data_len = match rng.random_range(0..6) {
            0 => rng.random_range(0..8),
            1 => rng.random_range(110..140),
            2 => rng.random_range(16_370..16_400),
            3 => rng.random_range(0..3000),
            _ => rng.random_range(0..300),
        };
        let mut data = vec![0u8; data_len];
        rng.fill(&mut data[..]);
        let mut record = Record::new(random_key(rng, key_pool), data);
        if rng.random_bool(0.3) {
            let hash: u128 = match rng.random_range(0..3) {
                0 => rng.random_range(0..200),
                1 => u128::MAX - rng.random_range(0..200),
                _ => rng.random(),
            };
            record.explicit_hash_key = Some(hash.to_string().into());
        }
        record
    }

    /// The reference MD5 (md-5), against which md5-many is checked.
    fn reference_md5(data: &[u8]) -> [u8; 16] {
        <md5::Md5 as md5::Digest>::digest(data).into()
    }

    /// md5-many is young (pinned in Cargo.toml): compared with md-5 for every length up to five
    /// blocks and lengths around larger sizes, alone, and in batches of 1 to 17 messages of
    /// mixed lengths (more than the 16 lanes of AVX-512).
    #[test]
    fn md5_many_matches_the_reference_alone_and_in_batches() {
        let mut rng = StdRng::seed_from_u64(0x6d6435);
        let data: Vec<u8> = (0..1_100_000).map(|_| rng.random()).collect();
        let lengths = (0..=320).chain([1023, 1024, 1025, 65_535, 65_536, 65_537, 1_048_576]);
        for len in lengths {
            assert_eq!(
                md5_many::md5(&data[..len]),
                reference_md5(&data[..len]),
                "{len}"
            );
        }
        let engine = md5_many::Md5Many::new();
        for count in 1..=17 {
            for _ in 0..6 {
                let messages: Vec<&[u8]> = (0..count)
                    .map(|_| {
                        let start = rng.random_range(0..64);
                        let len = match rng.random_range(0..10) {
                            0..3 => rng.random_range(0..130),
                            3..6 => rng.random_range(0..5_000),
                            6..9 => rng.random_range(60_000..70_000),
                            _ => rng.random_range(1_000_000..1_048_576),
                        };
                        &data[start..start + len]
                    })
                    .collect();
                let mut digests = vec![[0u8; 16]; count];
                engine.hash_many(&messages, &mut digests);
                for (message, digest) in messages.iter().zip(&digests) {
                    assert_eq!(*digest, reference_md5(message), "{} bytes", message.len());
                }
            }
        }
    }

    /// Containers sealed and finished together come out as each would alone: same bytes, the
    /// reference digest, and single-record containers untouched.
    #[test]
    fn containers_finished_together_equal_containers_finished_alone() {
        let mut rng = StdRng::seed_from_u64(0x7365616c);
        let outer_keys = outer("shardId-000000000001", Some("12345"));
        for count in [1, 2, 5, 9, 17] {
            let mut together = Vec::new();
            let mut alone = Vec::new();
            for k in 0..count {
                let mut a = Aggregator::new(200_000, outer_keys.clone()).unwrap();
                let mut b = Aggregator::new(200_000, outer_keys.clone()).unwrap();
                // Every third container holds a single record: it passes through as is.
                let records = if k % 3 == 2 {
                    1
                } else {
                    rng.random_range(2..60)
                };
                for _ in 0..records {
                    let record = random_record(&mut rng, 20);
                    if a.try_add(record.clone()).is_ok() {
                        b.try_add(record).unwrap();
                    }
                }
                together.extend(a.seal());
                alone.extend(b.finish());
            }
            let finished: Vec<Record> = finish_all(together).collect();
            assert_eq!(finished, alone);
            for record in &finished {
                if is_aggregated(&record.data) {
                    let at = record.data.len() - DIGEST_LEN;
                    let body = &record.data[MAGIC.len()..at];
                    assert_eq!(record.data[at..], reference_md5(body));
                }
            }
        }
    }

    /// Random records into containers of random limits: every `try_add` decision agrees with
    /// the prost oracle's size, every finished record has exactly the predicted length, never
    /// exceeds the limit, and decodes back to its user records.
    #[test]
    fn size_accounting_is_exact() {
        let mut rng = StdRng::seed_from_u64(0x6b706c);
        for round in 0..36 {
            let max = match round % 3 {
                0 => rng.random_range(200..2_000),
                1 => rng.random_range(2_000..40_000),
                _ => rng.random_range(40_000..300_000),
            };
            let key_pool = [3, 40, 400][round % 3];
            let outer_keys = outer(&random_key(&mut rng, 10), Some("12345"));
            let outer_len = outer_keys.partition_key.len();
            let mut aggregator = Aggregator::new(max, outer_keys.clone()).unwrap();
            let mut members: Vec<Record> = Vec::new();
            let mut finished = Vec::new();
            let mut most_keys = 0;
            for _ in 0..250 {
                let mut record = random_record(&mut rng, key_pool);
                if round % 3 == 2 {
                    // Small records, many keys: key indices past one varint byte.
                    record.data.truncate(64);
                }
                if record.size() > max {
                    assert!(matches!(
                        aggregator.try_add(record),
                        Err(AddError::Rejected { reason, .. }) if reason.is_too_large()
                    ));
                    continue;
                }
                let mut with = members.clone();
                with.push(record.clone());
                let oracle_fits = with.len() == 1 || oracle_len(&with) + outer_len <= max;
                assert_eq!(aggregator.would_fit(&record), oracle_fits);
                match aggregator.try_add(record.clone()) {
                    Ok(()) => {
                        assert!(oracle_fits);
                        members = with;
                    }
                    Err(AddError::Full(back)) => {
                        assert!(!oracle_fits);
                        assert_eq!(back, record);
                        let predicted = aggregator.data_len();
                        let done = aggregator.finish().unwrap();
                        assert_eq!(done.data.len(), predicted);
                        let done_members = std::mem::replace(&mut members, vec![record.clone()]);
                        check_finished(&done, &done_members, &outer_keys, max);
                        finished.push(done);
                        aggregator.try_add(record).unwrap();
                    }
                    Err(other) => panic!("{other}"),
                }
                most_keys = most_keys.max(oracle_message(&members).partition_key_table.len());
                if members.len() > 1 {
                    assert_eq!(aggregator.data_len(), oracle_len(&members));
                    assert_eq!(aggregator.record_size(), oracle_len(&members) + outer_len);
                }
            }
            let predicted = aggregator.data_len();
            let last = aggregator.finish().unwrap();
            assert_eq!(last.data.len(), predicted);
            check_finished(&last, &members, &outer_keys, max);
            assert!(aggregator.finish().is_none());
            assert!(finished.len() > 1 || round % 3 == 2, "round {round}");
            assert!(
                most_keys > 128 || round % 3 != 2,
                "round {round}: {most_keys} keys"
            );
        }
    }

    fn check_finished(record: &Record, members: &[Record], outer_keys: &OuterKeys, max: usize) {
        assert!(record.size() <= max);
        if let [only] = members {
            assert_eq!(record, only);
            return;
        }
        assert_eq!(record.partition_key, outer_keys.partition_key);
        assert_eq!(
            record.explicit_hash_key.as_deref(),
            outer_keys.explicit_hash_key.as_deref()
        );
        assert_eq!(record.data.len(), oracle_len(members));
        // Byte for byte what prost encodes for the same message.
        let body = oracle_message(members).encode_to_vec();
        assert_eq!(&record.data[4..record.data.len() - 16], &body[..]);
        assert_eq!(deaggregate(record.clone()).unwrap(), members);
    }

    #[test]
    fn key_tables_of_any_size_go_in_front_of_the_records() {
        // The tables are written into room left before the records: too little room (many
        // keys after few), much more than needed (few after many), and exactly enough.
        let outer_keys = outer("o", None);
        let mut aggregator = Aggregator::new(1 << 20, outer_keys.clone()).unwrap();
        for keys in [1usize, 300, 2, 300, 300, 7, 1] {
            let members: Vec<Record> = (0..keys.max(2))
                .map(|i| Record::new(format!("key-{:04}", i % keys), format!("data {i}")))
                .collect();
            for record in &members {
                aggregator.try_add(record.clone()).unwrap();
            }
            let done = aggregator.finish().unwrap();
            check_finished(&done, &members, &outer_keys, 1 << 20);
        }
    }

    #[test]
    fn fills_exactly_to_the_limit() {
        let outer_keys = outer("o", None);
        let first = Record::new("k", vec![1u8; 100]);
        for second_len in [0usize, 1, 100, 127, 128, 129, 5000] {
            let second = Record::new("k", vec![2u8; second_len]);
            let exact = oracle_len(&[first.clone(), second.clone()]) + 1;
            let mut at_limit = Aggregator::new(exact, outer_keys.clone()).unwrap();
            at_limit.try_add(first.clone()).unwrap();
            at_limit.try_add(second.clone()).unwrap();
            assert_eq!(at_limit.record_size(), exact);
            let out = at_limit.finish().unwrap();
            assert_eq!(out.size(), exact);

            let mut below = Aggregator::new(exact - 1, outer_keys.clone()).unwrap();
            below.try_add(first.clone()).unwrap();
            assert!(!below.would_fit(&second));
            assert_eq!(below.try_add(second.clone()), Err(AddError::Full(second)));
        }
    }

    #[test]
    fn a_record_too_big_to_aggregate_still_goes_alone() {
        // 60 bytes of data + 2 of key = 62 <= 62, but aggregated it would need 20 + 4 + 66 + 1.
        let mut aggregator = Aggregator::new(62, outer("o", None)).unwrap();
        let big = Record::new("kk", vec![7u8; 60]).with_explicit_hash_key("99");
        aggregator.try_add(big.clone()).unwrap();
        assert_eq!(aggregator.record_size(), 62);
        let small = Record::new("k", "x");
        assert!(matches!(aggregator.try_add(small), Err(AddError::Full(_))));
        assert_eq!(aggregator.finish(), Some(big));
        // Over the limit even alone: refused as too large, whatever the container holds.
        let too_big = Record::new("kk", vec![7u8; 61]);
        assert!(matches!(
            aggregator.try_add(too_big),
            Err(AddError::Rejected {
                reason: RejectReason::TooLarge { size: 63, max: 62 },
                ..
            })
        ));
    }

    #[test]
    fn key_table_keeps_first_seen_order_and_each_records_own_key() {
        let keys = ["zeta", "alpha", "zeta", "mid", "alpha", "zeta", "omega"];
        let records: Vec<Record> = keys
            .iter()
            .enumerate()
            .map(|(i, key)| Record::new(*key, format!("line {i}")))
            .collect();
        let (aggregate, _) = aggregate_all(1 << 20, outer("o", Some("0")), &records).remove(0);
        let data = aggregate.data.clone();
        let message = wire::AggregatedRecord::decode(&data[4..data.len() - 16]).unwrap();
        assert_eq!(
            message.partition_key_table,
            ["zeta", "alpha", "mid", "omega"]
        );
        let indices: Vec<u64> = message
            .records
            .iter()
            .map(|r| r.partition_key_index)
            .collect();
        assert_eq!(indices, [0, 1, 0, 2, 1, 0, 3]);
        assert_eq!(deaggregate(aggregate).unwrap(), records);
    }

    #[test]
    fn single_record_container_is_the_plain_record() {
        let record = Record::new("own-key", "payload").with_explicit_hash_key("42");
        let mut aggregator = Aggregator::new(1000, outer("outer", Some("7"))).unwrap();
        aggregator.try_add(record.clone()).unwrap();
        assert_eq!(aggregator.data_len(), 7);
        let plain = aggregator.finish().unwrap();
        assert_eq!(plain, record);
        assert_eq!(plain.data.as_ptr(), record.data.as_ptr(), "data copied");
        // The aggregator is reusable and starts clean.
        aggregator.try_add(Record::new("a", "1")).unwrap();
        aggregator.try_add(Record::new("b", "2")).unwrap();
        let users = deaggregate(aggregator.finish().unwrap()).unwrap();
        assert_eq!(users, [Record::new("a", "1"), Record::new("b", "2")]);
    }

    #[test]
    fn take_records_hands_back_the_user_records() {
        let records = [
            Record::new("a", "1").with_explicit_hash_key("5"),
            Record::new("b", "2"),
            Record::new("a", "3"),
        ];
        let mut aggregator = Aggregator::new(1000, outer("o", None)).unwrap();
        for record in &records {
            aggregator.try_add(record.clone()).unwrap();
        }
        assert_eq!(aggregator.take_records(), records);
        assert!(aggregator.is_empty());
        assert_eq!(aggregator.record_size(), 0);
    }

    #[test]
    fn invalid_configuration_is_refused() {
        assert!(matches!(
            Aggregator::new(21, outer("o", None)),
            Err(KplError::LimitTooSmall { needed: 21, .. })
        ));
        assert!(Aggregator::new(22, outer("o", None)).is_ok());
        assert!(matches!(
            Aggregator::new(1000, outer("", None)),
            Err(KplError::OuterPartitionKey(RejectReason::EmptyPartitionKey))
        ));
        assert!(matches!(
            Aggregator::new(1000, outer("o", Some("01"))),
            Err(KplError::OuterExplicitHashKey(_))
        ));
    }

    fn framed(body: &[u8]) -> Bytes {
        let mut data = MAGIC.to_vec();
        data.extend_from_slice(body);
        // The reference implementation, not the one under test.
        data.extend_from_slice(&reference_md5(body));
        data.into()
    }

    #[test]
    fn deaggregate_passes_plain_records_through() {
        for data in [
            &b""[..],
            b"plain log line",
            &MAGIC,
            &[0x1f, 0x8b, 8, 0],
            &framed(b"")[..], // magic + digest, nothing inside: not an aggregate
        ] {
            let record = Record::new("pk", data.to_vec()).with_explicit_hash_key("3");
            assert_eq!(deaggregate(record.clone()).unwrap(), [record]);
        }
    }

    #[test]
    fn deaggregate_reports_damage() {
        let mut aggregator = Aggregator::new(1000, outer("o", None)).unwrap();
        aggregator.try_add(Record::new("a", "one")).unwrap();
        aggregator.try_add(Record::new("b", "two")).unwrap();
        let good = aggregator.finish().unwrap();

        let mut flipped = good.data.to_vec();
        flipped[10] ^= 1;
        let damaged = Record::new("o", flipped);
        assert_eq!(deaggregate(damaged), Err(KplError::DigestMismatch));

        let truncated = Record::new("o", good.data.slice(..good.data.len() - 1));
        assert_eq!(deaggregate(truncated), Err(KplError::DigestMismatch));

        // Valid digest over a body that is not protobuf (field 3 claims 100 bytes).
        let garbage = Record::new("o", framed(&[RECORDS, 100, 1, 2]));
        assert!(matches!(deaggregate(garbage), Err(KplError::Decode(_))));

        let dangling = wire::AggregatedRecord {
            partition_key_table: vec!["a".into()],
            explicit_hash_key_table: vec![],
            records: vec![wire::UserRecord {
                partition_key_index: 0,
                explicit_hash_key_index: Some(0),
                data: Bytes::from_static(b"x"),
                tags: vec![],
            }],
        };
        let dangling = Record::new("o", framed(&dangling.encode_to_vec()));
        assert_eq!(
            deaggregate(dangling),
            Err(KplError::KeyIndex {
                position: 0,
                table: "explicit hash key",
                index: 0,
                len: 0
            })
        );
    }

    #[test]
    fn deaggregate_ignores_tags_and_does_not_copy_data() {
        let message = wire::AggregatedRecord {
            partition_key_table: vec!["a".into(), "b".into()],
            explicit_hash_key_table: vec!["9".into()],
            records: vec![
                wire::UserRecord {
                    partition_key_index: 1,
                    explicit_hash_key_index: None,
                    data: Bytes::from_static(b"first"),
                    tags: vec![wire::Tag {
                        key: "env".into(),
                        value: Some("prod".into()),
                    }],
                },
                wire::UserRecord {
                    partition_key_index: 0,
                    explicit_hash_key_index: Some(0),
                    data: Bytes::from_static(b"second"),
                    tags: vec![],
                },
            ],
        };
        let data = framed(&message.encode_to_vec());
        let range = data.as_ptr_range();
        let users = deaggregate(Record::new("outer", data.clone())).unwrap();
        assert_eq!(
            users,
            [
                Record::new("b", "first"),
                Record::new("a", "second").with_explicit_hash_key("9")
            ]
        );
        for user in &users {
            assert!(range.contains(&user.data.as_ptr()), "data was copied");
        }
    }

    // ---- the official deaggregator (aws-kinesis-agg) ----

    /// A user record as the official deaggregator reports it.
    #[derive(Debug, Deserialize, PartialEq)]
    pub(crate) struct Official {
        pub partition_key: String,
        pub explicit_hash_key: Option<String>,
        pub data_b64: String,
        pub aggregated: bool,
        pub source_index: usize,
    }

    /// Runs tests/support/kpl_deaggregate.py (aws-kinesis-agg 1.2.3) over `records`, written to
    /// a temporary file and fed on stdin, with the interpreter [`test_python`] finds
    /// (it must have aws-kinesis-agg installed).
    pub(crate) fn official_deaggregate(records: &[Record]) -> Vec<Official> {
        let script = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/support/kpl_deaggregate.py"
        );
        let python = test_python();
        let input: Vec<serde_json::Value> = records
            .iter()
            .map(|record| {
                serde_json::json!({
                    "partition_key": record.partition_key,
                    "explicit_hash_key": record.explicit_hash_key,
                    "data_b64": BASE64.encode(&record.data),
                })
            })
            .collect();
        let mut file = tempfile::NamedTempFile::new().unwrap();
        serde_json::to_writer(&mut file, &input).unwrap();
        file.flush().unwrap();
        let output = Command::new(&python)
            .arg(script)
            .stdin(Stdio::from(file.reopen().unwrap()))
            .output()
            .unwrap_or_else(|error| {
                panic!("cannot run {python} (run scripts/setup: it installs aws-kinesis-agg==1.2.3 into the venv): {error}")
            });
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            output.status.success() && stderr.trim().is_empty(),
            "{python} {script} failed (needs aws-kinesis-agg==1.2.3; run scripts/setup): {stderr}"
        );
        serde_json::from_slice(&output.stdout).unwrap()
    }

    /// The Python that has aws-kinesis-agg: `LOGFERRY_PYTHON`, else the project venv that
    /// scripts/setup creates (`LOGFERRY_VENV`, default `<repo>/.venv`), else `python3`.
    pub(crate) fn test_python() -> String {
        if let Some(python) = std::env::var_os("LOGFERRY_PYTHON").filter(|p| !p.is_empty()) {
            return python.to_string_lossy().into_owned();
        }
        let venv = std::env::var_os("LOGFERRY_VENV")
            .filter(|v| !v.is_empty())
            .map(std::path::PathBuf::from)
            .unwrap_or_else(|| std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv"));
        let python = venv.join("bin").join("python");
        if python.exists() {
            python.to_string_lossy().into_owned()
        } else {
            "python3".into()
        }
    }

    /// Asserts the official deaggregator turns `sent` into exactly the user records of each
    /// entry, keys included, and recognises every multi-record entry as aggregated.
    pub(crate) fn assert_official_roundtrip(sent: &[Record], expected: &[Vec<Record>]) {
        let official = official_deaggregate(sent);
        let mut position = 0;
        for (index, members) in expected.iter().enumerate() {
            for member in members {
                let got = &official[position];
                position += 1;
                assert_eq!(got.source_index, index);
                assert_eq!(got.aggregated, members.len() > 1, "record {index}");
                assert_eq!(got.partition_key, member.partition_key, "record {index}");
                assert_eq!(
                    got.explicit_hash_key.as_deref(),
                    member.explicit_hash_key.as_deref(),
                    "record {index}"
                );
                assert_eq!(got.data_b64, BASE64.encode(&member.data), "record {index}");
            }
        }
        assert_eq!(position, official.len(), "extra user records");
    }

    #[test]
    fn official_deaggregator_reads_back_exactly_what_we_aggregated() {
        let mut rng = StdRng::seed_from_u64(0xa55);
        let mut sent = Vec::new();
        let mut expected = Vec::new();
        // Without explicit hash keys, with them on every record, and with many distinct keys
        // (indices past one varint byte); limits small enough to split often and leave lone
        // records that go out plain.
        for (count, with_hash, key_pool, max) in [
            (300, false, 40, 4_000),
            (200, true, 10, 3_000),
            (400, false, 400, 1_000_000),
            (30, false, 5, 200),
        ] {
            let records: Vec<Record> = (0..count)
                .map(|_| {
                    let mut record = random_record(&mut rng, key_pool);
                    record.data.truncate(rng.random_range(0..150));
                    if with_hash {
                        record.explicit_hash_key = Some(rng.random::<u128>().to_string().into());
                    } else {
                        record.explicit_hash_key = None;
                    }
                    record
                })
                .collect();
            for (record, members) in
                aggregate_all(max, outer("outer-pk", Some("123456789")), &records)
            {
                sent.push(record);
                expected.push(members);
            }
        }
        assert!(expected.iter().any(|members| members.len() == 1));
        assert!(expected.iter().any(|members| members.len() > 100));
        assert_official_roundtrip(&sent, &expected);
    }
}
