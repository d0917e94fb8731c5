//! The Kinesis Data Streams sink.
//!
//! - [`kpl`]: the KPL aggregated record format (exact size accounting, deaggregation).
//! - [`shard_map`]: MD5 hash keys and the open shards' hash key ranges.
//! - [`batch`]: PutRecords batches within every limit, partial-failure bookkeeping, and
//!   per-shard aggregation containers.

pub mod batch;
pub mod kpl;
pub mod shard_map;
