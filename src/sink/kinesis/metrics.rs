//! Kinesis-specific metrics, on top of the records/bytes counters every sink has.
//!
//! | metric (`logferry_` prefix) | labels | meaning |
//! |---|---|---|
//! | `kinesis_put_records_requests_total` | component | PutRecords calls made |
//! | `kinesis_records_sent_total` | component | Kinesis records accepted (aggregates count once) |
//! | `kinesis_user_records_sent_total` | component | log records accepted (inside aggregates too) |
//! | `kinesis_bytes_sent_total` | component | data + partition key bytes accepted |
//! | `kinesis_put_payload_units_total` | component | 25 KB PUT payload units used |
//! | `kinesis_aggregation_ratio` | component | user records per Kinesis record, so far |
//! | `kinesis_failed_entries_total` | component, code | entries a PutRecords answer refused |
//! | `kinesis_failed_requests_total` | component, code | whole calls that failed |
//! | `kinesis_retries_total` | component, kind (`entry`/`request`) | entries sent again |
//! | `kinesis_random_partition_keys_total` | component | records given a random key because `partition_key` was missing or empty |
//! | `kinesis_shard_map_refreshes_total` | component | ListShards refreshes applied |
//! | `kinesis_rate_limited_entries_total` | component | entries held back by the per-shard rate limiter |
//! | `kinesis_rate_limited_seconds_total` | component | time during which the limiter held entries back |
//! | `kinesis_misplaced_aggregates_total` | component | aggregates that landed on another shard than predicted (resharding): acknowledged once the refreshed map shows that shard's range holds all their user records, else sent again |
//!
//! The metrics every sink shares ([`crate::metrics`]) are fed from here too:
//! `request_duration_seconds{operation="PutRecords"}`, `retries_total{reason}` (with
//! [`super::retry_policy::retry_reason`] mapping Kinesis error codes onto the shared reasons),
//! `auth_failures_total{reason}` ([`super::retry_policy::auth_reason`]) and
//! `token_refreshes_total{token="aws_credentials"}` (the client's credentials provider).

use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;

use crate::metrics::Metrics;

/// One PUT payload unit: 25 KB.
pub const PAYLOAD_UNIT: usize = 25 * 1024;

/// The PUT payload units a Kinesis record of `size` bytes is billed.
fn payload_units(size: usize) -> u64 {
    size.div_ceil(PAYLOAD_UNIT).max(1) as u64
}

/// Accepted Kinesis records counted for [`KinesisMetrics::sent`].
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct SentTally {
    pub records: u64,
    pub user_records: u64,
    pub bytes: u64,
    pub payload_units: u64,
}

impl SentTally {
    /// One accepted Kinesis record of `size` bytes holding `user_records` log records.
    pub fn add(&mut self, size: usize, user_records: usize) {
        self.records += 1;
        self.user_records += user_records as u64;
        self.bytes += size as u64;
        self.payload_units += payload_units(size);
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Component {
    component: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Coded {
    component: String,
    code: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Kind {
    component: String,
    kind: String,
}

/// The counters of one Kinesis sink.
#[derive(Clone, Debug)]
pub struct KinesisMetrics {
    component: String,
    pub requests: Counter,
    pub records_sent: Counter,
    pub user_records_sent: Counter,
    pub bytes_sent: Counter,
    pub payload_units: Counter,
    pub aggregation_ratio: Gauge<f64, AtomicU64>,
    pub entry_retries: Counter,
    pub request_retries: Counter,
    pub random_keys: Counter,
    pub shard_map_refreshes: Counter,
    pub misplaced_aggregates: Counter,
    pub rate_limited_entries: Counter,
    pub rate_limited_seconds: Counter<f64, AtomicU64>,
    failed_entries: Family<Coded, Counter>,
    failed_requests: Family<Coded, Counter>,
}

impl KinesisMetrics {
    pub fn new(registry: &Metrics, component: &str) -> Self {
        let c = || Component {
            component: component.to_string(),
        };
        let counter = |name: &str, help: &str| {
            registry
                .shared::<Family<Component, Counter>>(name, help)
                .get_or_create(&c())
                .clone()
        };
        let retries = registry.shared::<Family<Kind, Counter>>(
            "kinesis_retries",
            "Kinesis entries sent again, by kind (entry: failed entries of a partial failure; request: entries of a failed call)",
        );
        let kind = |kind: &str| {
            retries
                .get_or_create(&Kind {
                    component: component.to_string(),
                    kind: kind.to_string(),
                })
                .clone()
        };
        KinesisMetrics {
            component: component.to_string(),
            requests: counter("kinesis_put_records_requests", "PutRecords calls made"),
            records_sent: counter(
                "kinesis_records_sent",
                "Kinesis records accepted (an aggregated record counts once)",
            ),
            user_records_sent: counter(
                "kinesis_user_records_sent",
                "Log records accepted by Kinesis, inside aggregated records or not",
            ),
            bytes_sent: counter(
                "kinesis_bytes_sent",
                "Bytes (data + partition key) of the Kinesis records accepted",
            ),
            payload_units: counter(
                "kinesis_put_payload_units",
                "PUT payload units (25 KB) used by the records accepted",
            ),
            aggregation_ratio: registry
                .shared::<Family<Component, Gauge<f64, AtomicU64>>>(
                    "kinesis_aggregation_ratio",
                    "Log records per Kinesis record accepted so far (1 without aggregation)",
                )
                .get_or_create(&c())
                .clone(),
            entry_retries: kind("entry"),
            request_retries: kind("request"),
            random_keys: counter(
                "kinesis_random_partition_keys",
                "Records sent with a random partition key because partition_key was missing or empty",
            ),
            shard_map_refreshes: counter(
                "kinesis_shard_map_refreshes",
                "Shard maps (ListShards) applied for aggregation",
            ),
            misplaced_aggregates: counter(
                "kinesis_misplaced_aggregates",
                "Aggregated records accepted on another shard than predicted (the stream was \
                 resharded): their user records are sent again",
            ),
            rate_limited_entries: counter(
                "kinesis_rate_limited_entries",
                "Entries held back to a shard's write limits (records/s, bytes/s) before sending",
            ),
            rate_limited_seconds: registry
                .shared::<Family<Component, Counter<f64, AtomicU64>>>(
                    "kinesis_rate_limited_seconds",
                    "Time during which the per-shard rate limiter held entries back",
                )
                .get_or_create(&c())
                .clone(),
            failed_entries: registry.shared(
                "kinesis_failed_entries",
                "PutRecords entries refused, by error code",
            ),
            failed_requests: registry.shared(
                "kinesis_failed_requests",
                "Kinesis calls that failed as a whole, by error code",
            ),
        }
    }

    pub fn failed_entry(&self, code: &str) {
        self.failed_entries
            .get_or_create(&Coded {
                component: self.component.clone(),
                code: code.to_string(),
            })
            .inc();
    }

    pub fn failed_request(&self, code: &str) {
        self.failed_requests
            .get_or_create(&Coded {
                component: self.component.clone(),
                code: code.to_string(),
            })
            .inc();
    }

    /// Counts the accepted Kinesis records of `tally` (one answer's): each counter is updated
    /// once per answer, not once per record.
    pub fn sent(&self, tally: &SentTally) {
        self.records_sent.inc_by(tally.records);
        self.user_records_sent.inc_by(tally.user_records);
        self.bytes_sent.inc_by(tally.bytes);
        self.payload_units.inc_by(tally.payload_units);
    }

    /// Counts an aggregate of `size` bytes Kinesis accepted on another shard than predicted:
    /// billed, but its user records are not delivered until they are sent again.
    pub fn misplaced(&self, size: usize) {
        self.misplaced_aggregates.inc();
        self.billed(size);
    }

    /// Counts a misplaced aggregate found, once the shard map was refreshed, to lie within the
    /// range of the shard it landed on: delivered after all (already billed).
    pub fn sent_after_check(&self, size: usize, user_records: usize) {
        self.records_sent.inc();
        self.user_records_sent.inc_by(user_records as u64);
        self.bytes_sent.inc_by(size as u64);
    }

    fn billed(&self, size: usize) {
        self.payload_units.inc_by(payload_units(size));
    }

    /// Recomputes the aggregation ratio gauge.
    pub fn update_ratio(&self) {
        let records = self.records_sent.get();
        if records > 0 {
            self.aggregation_ratio
                .set(self.user_records_sent.get() as f64 / records as f64);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_sinks_share_families_and_render_once() {
        let registry = Metrics::new();
        let a = KinesisMetrics::new(&registry, "a");
        let b = KinesisMetrics::new(&registry, "b");
        let mut tally = SentTally::default();
        tally.add(30 * 1024, 10);
        a.sent(&tally);
        a.update_ratio();
        b.failed_entry("ProvisionedThroughputExceededException");
        let text = registry.render();
        assert_eq!(
            text.matches("# TYPE logferry_kinesis_records_sent counter")
                .count(),
            1,
            "{text}"
        );
        assert!(text.contains("logferry_kinesis_put_payload_units_total{component=\"a\"} 2"));
        assert!(text.contains("logferry_kinesis_aggregation_ratio{component=\"a\"} 10"));
        assert!(text.contains(
            "logferry_kinesis_failed_entries_total{component=\"b\",code=\"ProvisionedThroughputExceededException\"} 1"
        ));
    }
}
