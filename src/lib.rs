//! logferry ships log records from where they are produced (an ECS task, an EKS pod, a
//! CloudWatch Logs subscription) to Kinesis Data Streams, Kafka / Amazon MSK, CloudWatch Logs
//! and Kinesis Data Firehose.
//!
//! The data path, and the module that owns each step:
//!
//! ```text
//! source ──► decode ──► transforms ──► route ──► buffer (per sink) ──► encode ──► sink ──► ack
//! source/     msgpack/   transform/     pipeline/  buffer/queue          encode/    sink/     buffer/ack
//!             source/forward/protocol   route.rs   (memory or disk)
//! ```
//!
//! Every component has the same shape, so reading one tells how to read the others:
//!
//! - its config struct's `validate()` checks every option without opening anything and names
//!   each bad key (`Result<(), Vec<FieldError>>`, or the checked form the component then runs
//!   with: tail's compiled patterns, Kafka's producer settings);
//! - a sink's or a transform's `build(config, ..)` opens what it needs (files, clients,
//!   compiled patterns), so start-up fails on what cannot work; a sink's `run(self, queue)`
//!   then delivers until its queue is closed and drained;
//! - a source's `start(config, cx)` is its build and run in one call: it binds what it
//!   listens on (failing start-up on a taken port) and returns its spawned task, because
//!   nothing is wired to a source after it is built, while a sink is built before its queue is
//!   handed to it;
//! - health is reported through the one [`health::Health`] every component gets in its
//!   context, and counters through [`metrics::ComponentMetrics`].
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
//! - [`pipeline`]: wiring (sinks and their queues, the router and its transforms, sources),
//!   and the router.
//! - [`buffer`]: between router and sinks: `buffer::queue`, the [`buffer::Batch`], sender and
//!   receiver every sink queue shows; behind it the in-memory buffer bounded in bytes
//!   (`buffer::memory`) or the disk write-ahead log (`buffer::disk`); delivery
//!   acknowledgements; the fill monitor behind `/health`.
//! - [`encode`]: JSON / msgpack / text encoding shared by every sink.
//! - [`kinesis_record`]: the Kinesis record, its routing hash key and the KPL aggregated format,
//!   shared by the Kinesis sink and the sources that read Kinesis records.
//! - [`sink`]: Kinesis, Kafka/MSK, CloudWatch Logs, Kinesis Data Firehose, stdout, file, null.
//!   What every sink shares: `sink::settle` (per-record outcomes into the acknowledgement of
//!   the batch they came in), `sink::undeliverable` (the one "dead-letter or drop, count and
//!   log" step), `sink::dead_letter` (the dead-letter files and their replay), `sink::backoff`.
//!   `sink::kinesis::put_records` writes the PutRecords body and reads the answer itself, and
//!   `sink::kinesis::direct` signs and sends the call without the SDK's orchestrator.
//! - [`kafka`]: what the Kafka sink and source share: options, MSK IAM tokens and credentials.
//! - [`aws`]: AWS credentials the sinks share (default chain, `role_arn` through STS
//!   AssumeRole, stable session names) and the SDK's HTTPS client and connector.
//! - [`metrics`], [`health`], [`http`]: what operators see on `/metrics` and `/health`.
//! - [`log_limit`]: at most one log line per interval for a repeated error.
//! - [`tls`]: the one rustls crypto provider (*ring*) every TLS client and server uses.
//! - [`shutdown`]: signals, the cancellation token, and the shutdown sequence (stop sources,
//!   flush transforms, drain sinks, within the grace period), with why it runs in that order.
//! - [`loadgen`]: a forward-protocol load generator for benchmarks.

pub mod aws;
pub mod buffer;
pub mod config;
pub mod encode;
pub mod event;
pub mod health;
pub mod http;
pub mod kafka;
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
pub mod tls;
pub mod transform;

/// The crate version, as `logferry --version` prints it.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
