//! logferry ships log records from where they are produced (an ECS task, an EKS pod, a
//! CloudWatch Logs subscription) to Kinesis Data Streams and Kafka / Amazon MSK.
//!
//! The data path, and the module that owns each step:
//!
//! ```text
//! source ──► decode ──► transforms ──► route ──► buffer (per sink) ──► encode ──► sink ──► ack
//! source/     msgpack/   transform/     pipeline/  buffer/               encode/    sink/     buffer/ack
//!             source/forward/protocol   route.rs
//! ```
//!
//! - [`event`]: the record model (tag, nanosecond time, ordered map of msgpack values). A record
//!   stays in the msgpack form it arrived in (a slice of the forward frame, or of one packed
//!   buffer per read for tail, tcp and stdin) until something reads a field; encoders write from
//!   those bytes, so a record nothing looks into is never parsed.
//! - [`config`]: the TOML config, `${ENV}` interpolation, validation with file/line/key, and
//!   `config::fluent_bit`, the Fluent Bit classic config (FireLens) translated to the same.
//! - [`source`]: forward protocol server (TCP + unix socket), tcp (JSON lines), stdin, tail (log
//!   files), CloudWatch Logs subscription payloads.
//! - [`transform`]: record_modifier, grep, rename, parser, nest, modify, Docker partial message
//!   reassembly.
//! - [`route`]: Fluent Bit style tag matching.
//! - [`pipeline`]: wiring, the router, and the shutdown sequence.
//! - [`buffer`]: byte-bounded queues between router and sinks (memory or the disk write-ahead
//!   log), delivery acknowledgements, the fill monitor behind `/health`.
//! - [`encode`]: JSON / msgpack / text encoding shared by every sink.
//! - [`kinesis_record`]: the Kinesis record, its routing hash key and the KPL aggregated format,
//!   shared by the Kinesis sink and the sources that read Kinesis records.
//! - [`sink`]: Kinesis, Kafka/MSK, stdout, file, null; `sink::dead_letter` for records that can
//!   never be delivered, and their replay.
//!   `sink::kinesis::put_records` writes the PutRecords body and reads the answer itself.
//! - [`metrics`], [`health`], [`http`]: what operators see on `/metrics` and `/health`.
//! - [`log_limit`]: at most one log line per interval for a repeated error.
//! - [`shutdown`]: signals and the cancellation token.
//! - [`loadgen`]: a forward-protocol load generator for benchmarks.

pub mod buffer;
pub mod config;
pub mod encode;
pub mod event;
pub mod health;
pub mod http;
pub mod kinesis_record;
pub mod loadgen;
pub mod log_limit;
pub mod metrics;
pub mod msgpack;
pub mod pipeline;
pub mod route;
pub mod shutdown;
pub mod sink;
pub mod source;
pub mod transform;

/// The crate version, as `logferry --version` prints it.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
