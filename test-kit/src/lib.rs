//! The test kit of logferry's integration tests (`tests/` and `lambda/tests/`): one copy of
//! everything the tests need around the code under test.
//!
//! - [`logferry`]: the harness that runs the real `logferry` binary (config in a temp dir,
//!   free ports, `/health`, `/metrics`, SIGTERM, its log), and `logferry loadgen`.
//! - [`stand_ins`]: launchers for the services the tests run against (moto, kinesalite, tansu,
//!   Fluent Bit), each on a free loopback port and killed on drop.
//! - [`fault_kinesis`]: a Kinesis stand-in in Rust that injects the faults no emulator produces;
//!   [`expiring_sts`]: a proxy in front of moto that shortens credentials (IRSA refresh);
//!   [`fault_proxy`]: a proxy in front of moto that throttles calls and refuses single
//!   Firehose records.
//! - [`kinesis`], [`kafka`], [`cloudwatch_logs`] and [`firehose`]: reading a stream, a topic, a
//!   log group or a Firehose stream's S3 objects back, independently of the sinks.
//! - [`wait`], [`metrics`], [`forward_ack`], [`net`], [`paths`]: polling with a deadline,
//!   reading Prometheus text, the forward protocol's ack, ports and HTTP, tool locations.
//!
//! A missing tool panics with a pointer to `scripts/setup` instead of skipping, so a test can
//! never pass by not running (Fluent Bit, which `scripts/setup` does not install, is the one
//! exception: its tests print a loud SKIPPED line).

pub mod cloudwatch_logs;
pub mod expiring_sts;
pub mod fault_kinesis;
pub mod fault_proxy;
pub mod firehose;
pub mod forward_ack;
pub mod kafka;
pub mod kinesis;
pub mod logferry;
pub mod metrics;
pub mod net;
pub mod paths;
pub mod stand_ins;
pub mod wait;
