//! Prometheus metrics: per-component counters, rendered in the text format on `GET /metrics`.
//!
//! Components fetch their counters once ([`Metrics::component`]) and then only touch atomics on
//! the hot path. Drops and errors carry a `reason` label and are looked up when they happen,
//! which is rare by design.
//!
//! Every sink reports the same operational metrics under the same names, so one dashboard
//! (`infra/grafana/logferry.json`) covers them all: request latency
//! (`request_duration_seconds{operation}`, observed per request or batch, never per record),
//! retries by reason, token refreshes and authentication failures, and the buffer gauges that
//! [`crate::buffer::monitor`] keeps up to date. docs/operations.md lists every metric.

use std::any::Any;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::AtomicU64;
use std::sync::Mutex;

use prometheus_client::encoding::text::encode;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// Bucket bounds (seconds) of `request_duration_seconds`: from a fast local write (1 ms) to a
/// request that ran into a long timeout (60 s).
pub const LATENCY_BUCKETS: [f64; 15] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];

fn latency_histogram() -> Histogram {
    Histogram::new(LATENCY_BUCKETS)
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ComponentLabels {
    component: String,
    kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    component: String,
    kind: String,
    reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OperationLabels {
    component: String,
    kind: String,
    operation: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TokenLabels {
    component: String,
    kind: String,
    token: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HealthLabels {
    component: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BufferLabels {
    component: String,
    kind: String,
    buffer: String,
}

/// The process's metrics registry.
pub struct Metrics {
    registry: Mutex<Registry>,
    records_in: Family<ComponentLabels, Counter>,
    records_out: Family<ComponentLabels, Counter>,
    bytes_in: Family<ComponentLabels, Counter>,
    bytes_out: Family<ComponentLabels, Counter>,
    queue_bytes: Family<ComponentLabels, Gauge>,
    errors: Family<ReasonLabels, Counter>,
    dropped: Family<ReasonLabels, Counter>,
    buffer_disk_bytes: Family<ComponentLabels, Gauge>,
    buffer_disk_records: Family<ComponentLabels, Gauge>,
    buffer_memory_records: Family<ComponentLabels, Gauge>,
    buffer_oldest_unacked: Family<ComponentLabels, Gauge<f64, AtomicU64>>,
    buffer_limit: Family<BufferLabels, Gauge>,
    buffer_fill: Family<BufferLabels, Gauge<f64, AtomicU64>>,
    request_duration: HistogramFamily<OperationLabels>,
    retries: Family<ReasonLabels, Counter>,
    token_refreshes: Family<TokenLabels, Counter>,
    auth_failures: Family<ReasonLabels, Counter>,
    connections_open: Family<ComponentLabels, Gauge>,
    connections_refused: Family<ReasonLabels, Counter>,
    connections_timed_out: Family<ReasonLabels, Counter>,
    healthy: Gauge,
    unhealthy: Family<HealthLabels, Gauge>,
    /// Components ever reported unhealthy, so that their gauge goes back to 0 when they recover.
    unhealthy_seen: Mutex<BTreeSet<String>>,
    /// Metrics registered by name through [`Metrics::shared`], so that several components of
    /// one kind share one family instead of registering the name twice.
    shared: Mutex<HashMap<String, Box<dyn Any + Send + Sync>>>,
}

/// A sink's buffer gauges (memory bytes are the sink's `queue_bytes`).
#[derive(Clone, Debug, Default)]
pub struct BufferMetrics {
    /// Bytes of unacknowledged frames on disk.
    pub disk_bytes: Gauge,
    /// Unacknowledged records on disk.
    pub disk_records: Gauge,
    /// Records in memory and not yet delivered: the whole queue in memory mode, the records
    /// read back from disk in disk mode.
    pub memory_records: Gauge,
    /// Age of the oldest record the sink still waits for, in seconds (0 when none).
    pub oldest_unacked_seconds: Gauge<f64, AtomicU64>,
    /// `buffer_limit` in bytes.
    pub memory_limit_bytes: Gauge,
    /// `buffer_max_size` in bytes (disk mode only; 0 otherwise).
    pub disk_limit_bytes: Gauge,
    /// `queue_bytes / buffer_limit`.
    pub memory_fill_ratio: Gauge<f64, AtomicU64>,
    /// `buffer_disk_bytes / buffer_max_size` (disk mode only).
    pub disk_fill_ratio: Gauge<f64, AtomicU64>,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("logferry");
        let m = Metrics {
            registry: Mutex::new(Registry::default()),
            records_in: Family::default(),
            records_out: Family::default(),
            bytes_in: Family::default(),
            bytes_out: Family::default(),
            queue_bytes: Family::default(),
            errors: Family::default(),
            dropped: Family::default(),
            buffer_disk_bytes: Family::default(),
            buffer_disk_records: Family::default(),
            buffer_memory_records: Family::default(),
            buffer_oldest_unacked: Family::default(),
            buffer_limit: Family::default(),
            buffer_fill: Family::default(),
            request_duration: Family::new_with_constructor(latency_histogram),
            retries: Family::default(),
            token_refreshes: Family::default(),
            auth_failures: Family::default(),
            connections_open: Family::default(),
            connections_refused: Family::default(),
            connections_timed_out: Family::default(),
            healthy: Gauge::default(),
            unhealthy: Family::default(),
            unhealthy_seen: Mutex::new(BTreeSet::new()),
            shared: Mutex::new(HashMap::new()),
        };
        registry.register(
            "records_in",
            "Records received by a component",
            m.records_in.clone(),
        );
        registry.register(
            "records_out",
            "Records a component passed on (sinks: delivered)",
            m.records_out.clone(),
        );
        registry.register(
            "bytes_in",
            "Bytes received by a component",
            m.bytes_in.clone(),
        );
        registry.register(
            "bytes_out",
            "Bytes a component passed on (sinks: delivered payload bytes)",
            m.bytes_out.clone(),
        );
        registry.register(
            "queue_bytes",
            "Bytes of records waiting in a sink's queue",
            m.queue_bytes.clone(),
        );
        registry.register("errors", "Errors by component and reason", m.errors.clone());
        registry.register(
            "dropped_records",
            "Records a component dropped, by reason",
            m.dropped.clone(),
        );
        registry.register(
            "buffer_disk_bytes",
            "Bytes of unacknowledged records in a sink's disk buffer",
            m.buffer_disk_bytes.clone(),
        );
        registry.register(
            "buffer_disk_records",
            "Unacknowledged records in a sink's disk buffer",
            m.buffer_disk_records.clone(),
        );
        registry.register(
            "buffer_memory_records",
            "Records a sink holds in memory and has not delivered yet (memory buffer: the whole queue; disk buffer: records read back)",
            m.buffer_memory_records.clone(),
        );
        registry.register(
            "buffer_oldest_unacked_seconds",
            "Age of the oldest record a sink's buffer (memory or disk) holds and is still waiting for",
            m.buffer_oldest_unacked.clone(),
        );
        registry.register(
            "buffer_limit_bytes",
            "A sink's buffer bound: buffer_limit (buffer=\"memory\") or buffer_max_size (buffer=\"disk\")",
            m.buffer_limit.clone(),
        );
        registry.register(
            "buffer_fill_ratio",
            "How full a sink's buffer is (0 to 1): bytes held over the bound",
            m.buffer_fill.clone(),
        );
        registry.register(
            "request_duration_seconds",
            "Latency of a sink's requests (Kinesis PutRecords calls, Kafka batches from enqueue to the last delivery report, file writes)",
            m.request_duration.clone(),
        );
        registry.register(
            "retries",
            "Records or entries a sink sends again, by reason",
            m.retries.clone(),
        );
        registry.register(
            "token_refreshes",
            "Credentials and tokens obtained (msk_iam: MSK IAM tokens signed; aws_credentials: AWS credentials fetched)",
            m.token_refreshes.clone(),
        );
        registry.register(
            "auth_failures",
            "Authentication and authorization failures, by reason",
            m.auth_failures.clone(),
        );
        registry.register(
            "connections_open",
            "Client connections a source (forward) holds open",
            m.connections_open.clone(),
        );
        registry.register(
            "connections_refused",
            "Client connections a source closed at once, by reason (max_connections: the limit was reached)",
            m.connections_refused.clone(),
        );
        registry.register(
            "connections_timed_out",
            "Client connections a source closed after a timeout, by reason (idle: idle_timeout between messages; incomplete_message: message_timeout in the middle of a message; unread_acks: an ack not taken within message_timeout)",
            m.connections_timed_out.clone(),
        );
        registry.register(
            "healthy",
            "1 when /health answers 200, 0 when it answers 503",
            m.healthy.clone(),
        );
        registry.register(
            "unhealthy",
            "1 while /health reports this component (a sink, <sink>.buffer, <sink>.buffer_fill), else 0",
            m.unhealthy.clone(),
        );
        if let Ok(mut slot) = m.registry.lock() {
            *slot = registry;
        }
        m
    }

    /// Registers an extra metric (sink-specific counters) under the `logferry_` prefix.
    pub fn register(
        &self,
        name: &str,
        help: &str,
        metric: impl prometheus_client::registry::Metric,
    ) {
        if let Ok(mut registry) = self.registry.lock() {
            registry.register(name, help, metric);
        }
    }

    /// The metric registered under `name` (a family every sink of one type shares), registered
    /// with `help` on first use. Asking for a name with another type gives a fresh, unregistered
    /// metric rather than failing.
    pub fn shared<M>(&self, name: &str, help: &str) -> M
    where
        M: prometheus_client::registry::Metric + Clone + Default,
    {
        let Ok(mut shared) = self.shared.lock() else {
            return M::default();
        };
        if let Some(existing) = shared.get(name) {
            return existing.downcast_ref::<M>().cloned().unwrap_or_default();
        }
        let metric = M::default();
        shared.insert(name.to_string(), Box::new(metric.clone()));
        drop(shared);
        self.register(name, help, metric.clone());
        metric
    }

    /// The counters of one component (`kind` is `source`, `transform` or `sink`).
    pub fn component(&self, name: &str, kind: &str) -> ComponentMetrics {
        let labels = ComponentLabels {
            component: name.to_string(),
            kind: kind.to_string(),
        };
        ComponentMetrics {
            name: name.to_string(),
            kind: kind.to_string(),
            records_in: self.records_in.get_or_create(&labels).clone(),
            records_out: self.records_out.get_or_create(&labels).clone(),
            bytes_in: self.bytes_in.get_or_create(&labels).clone(),
            bytes_out: self.bytes_out.get_or_create(&labels).clone(),
            queue_bytes: self.queue_bytes.get_or_create(&labels).clone(),
            errors: self.errors.clone(),
            dropped: self.dropped.clone(),
            request_duration: self.request_duration.clone(),
            retries: self.retries.clone(),
            token_refreshes: self.token_refreshes.clone(),
            auth_failures: self.auth_failures.clone(),
            connections_open: self.connections_open.clone(),
            connections_refused: self.connections_refused.clone(),
            connections_timed_out: self.connections_timed_out.clone(),
        }
    }

    /// The buffer gauges of a sink with a disk buffer.
    pub fn buffer(&self, name: &str) -> BufferMetrics {
        self.buffer_for(name, true)
    }

    /// The buffer gauges of one sink. The `buffer="disk"` limit and fill series are created
    /// only for disk buffers, so a memory-buffered sink shows none.
    pub fn buffer_for(&self, name: &str, disk: bool) -> BufferMetrics {
        let labels = ComponentLabels {
            component: name.to_string(),
            kind: "sink".to_string(),
        };
        let buffer = |buffer: &str| BufferLabels {
            component: name.to_string(),
            kind: "sink".to_string(),
            buffer: buffer.to_string(),
        };
        let (disk_limit_bytes, disk_fill_ratio) = if disk {
            (
                self.buffer_limit.get_or_create(&buffer("disk")).clone(),
                self.buffer_fill.get_or_create(&buffer("disk")).clone(),
            )
        } else {
            Default::default()
        };
        BufferMetrics {
            disk_bytes: self.buffer_disk_bytes.get_or_create(&labels).clone(),
            disk_records: self.buffer_disk_records.get_or_create(&labels).clone(),
            memory_records: self.buffer_memory_records.get_or_create(&labels).clone(),
            oldest_unacked_seconds: self.buffer_oldest_unacked.get_or_create(&labels).clone(),
            memory_limit_bytes: self.buffer_limit.get_or_create(&buffer("memory")).clone(),
            memory_fill_ratio: self.buffer_fill.get_or_create(&buffer("memory")).clone(),
            disk_limit_bytes,
            disk_fill_ratio,
        }
    }

    /// Mirrors `/health` into `healthy` and `unhealthy{component}` (called before each scrape,
    /// so the gauges are exactly what `/health` would answer).
    pub fn observe_health(&self, problems: &BTreeMap<String, String>) {
        self.healthy.set(i64::from(problems.is_empty()));
        let Ok(mut seen) = self.unhealthy_seen.lock() else {
            return;
        };
        seen.extend(problems.keys().cloned());
        for component in seen.iter() {
            let on = problems.contains_key(component);
            self.unhealthy
                .get_or_create(&HealthLabels {
                    component: component.clone(),
                })
                .set(i64::from(on));
        }
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut out = String::new();
        if let Ok(registry) = self.registry.lock() {
            // Writing into a String cannot fail.
            let _ = encode(&mut out, &registry);
        }
        out
    }
}

/// The `reason` values of `retries_total`, shared by every sink so that one dashboard panel
/// reads them all.
pub mod retry_reason {
    /// The destination asked us to slow down (Kinesis ProvisionedThroughputExceeded,
    /// ThrottlingException, KMS throttling).
    pub const THROTTLED: &str = "throttled";
    /// The destination failed on its side (InternalFailure, HTTP 5xx, Kafka broker errors).
    pub const INTERNAL: &str = "internal";
    /// No answer in time (request timeout, Kafka message timeout).
    pub const TIMEOUT: &str = "timeout";
    /// The connection failed or broke (DNS, connect, reset, unreadable answer).
    pub const NETWORK: &str = "network";
    /// The credentials were refused or expired; retried once they are refreshed.
    pub const CREDENTIALS: &str = "credentials";
    /// Not permitted (AccessDenied, topic authorization); retried slowly until fixed.
    pub const ACCESS_DENIED: &str = "access_denied";
    /// The destination does not exist (stream, topic); retried slowly until fixed.
    pub const NOT_FOUND: &str = "not_found";
    /// A local queue was full (librdkafka's), so the record waited and was offered again.
    pub const QUEUE_FULL: &str = "queue_full";
    /// Retries librdkafka made itself, from its statistics (`txretries`).
    pub const BROKER_RETRY: &str = "broker_retry";
    /// A local write failed (file and stdout sinks).
    pub const WRITE_ERROR: &str = "write_error";
    /// Anything else.
    pub const OTHER: &str = "other";
}

/// One component's counters; cheap to clone.
#[derive(Clone, Debug)]
pub struct ComponentMetrics {
    name: String,
    kind: String,
    pub records_in: Counter,
    pub records_out: Counter,
    pub bytes_in: Counter,
    pub bytes_out: Counter,
    pub queue_bytes: Gauge,
    errors: Family<ReasonLabels, Counter>,
    dropped: Family<ReasonLabels, Counter>,
    request_duration: HistogramFamily<OperationLabels>,
    retries: Family<ReasonLabels, Counter>,
    token_refreshes: Family<TokenLabels, Counter>,
    auth_failures: Family<ReasonLabels, Counter>,
    connections_open: Family<ComponentLabels, Gauge>,
    connections_refused: Family<ReasonLabels, Counter>,
    connections_timed_out: Family<ReasonLabels, Counter>,
}

/// The connection metrics of a source that accepts connections (forward); cheap to clone.
#[derive(Clone, Debug, Default)]
pub struct ConnectionMetrics {
    /// `connections_open`: connections currently held.
    pub open: Gauge,
    /// `connections_refused_total{reason="max_connections"}`.
    pub refused_limit: Counter,
    /// `connections_timed_out_total{reason="idle"}`.
    pub idle: Counter,
    /// `connections_timed_out_total{reason="incomplete_message"}`.
    pub incomplete_message: Counter,
    /// `connections_timed_out_total{reason="unread_acks"}`.
    pub unread_acks: Counter,
}

impl ComponentMetrics {
    /// A standalone set of counters for tests and tools that run without a registry.
    pub fn detached(name: &str, kind: &str) -> ComponentMetrics {
        Metrics::new().component(name, kind)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Counts an error with a short machine-readable reason (`malformed_frame`, `throttled`).
    pub fn error(&self, reason: &str) {
        self.errors.get_or_create(&self.reason(reason)).inc();
    }

    /// The error counter for one reason, to fetch once when the errors may be frequent (a
    /// parser transform's unmatched lines).
    pub fn error_counter(&self, reason: &str) -> Counter {
        self.errors.get_or_create(&self.reason(reason)).clone()
    }

    /// Counts `n` records dropped for `reason` (`too_large`, `unmatched`, ...).
    pub fn dropped(&self, reason: &str, n: u64) {
        self.dropped.get_or_create(&self.reason(reason)).inc_by(n);
    }

    /// Total dropped for a reason (for tests and shutdown reports).
    pub fn dropped_count(&self, reason: &str) -> u64 {
        self.dropped.get_or_create(&self.reason(reason)).get()
    }

    /// Total errors for a reason.
    pub fn error_count(&self, reason: &str) -> u64 {
        self.errors.get_or_create(&self.reason(reason)).get()
    }

    /// The latency histogram of one kind of request (`PutRecords`, `produce`, `write`); fetch
    /// it once and observe per request.
    pub fn request_duration(&self, operation: &str) -> Histogram {
        self.request_duration
            .get_or_create(&OperationLabels {
                component: self.name.clone(),
                kind: self.kind.clone(),
                operation: operation.to_string(),
            })
            .clone()
    }

    /// The retry counter for one reason (one of [`retry_reason`]); fetch
    /// it once when retries are frequent.
    pub fn retries(&self, reason: &str) -> Counter {
        self.retries.get_or_create(&self.reason(reason)).clone()
    }

    /// Counts `n` records or entries sent again for `reason`.
    pub fn retried(&self, reason: &str, n: u64) {
        self.retries.get_or_create(&self.reason(reason)).inc_by(n);
    }

    /// Counts one token or set of credentials obtained (`msk_iam`, `aws_credentials`).
    pub fn token_refreshed(&self, token: &str) {
        self.token_refreshes
            .get_or_create(&TokenLabels {
                component: self.name.clone(),
                kind: self.kind.clone(),
                token: token.to_string(),
            })
            .inc();
    }

    /// Counts one authentication or authorization failure (`access_denied`, `credentials`,
    /// `msk_token`, `sasl`).
    pub fn auth_failure(&self, reason: &str) {
        self.auth_failures.get_or_create(&self.reason(reason)).inc();
    }

    /// Total retries for a reason (for tests).
    pub fn retry_count(&self, reason: &str) -> u64 {
        self.retries.get_or_create(&self.reason(reason)).get()
    }

    /// Total authentication failures for a reason (for tests).
    pub fn auth_failure_count(&self, reason: &str) -> u64 {
        self.auth_failures.get_or_create(&self.reason(reason)).get()
    }

    /// This component's connection metrics, created (at 0) on the first call so that a
    /// dashboard sees them before anything happens.
    pub fn connections(&self) -> ConnectionMetrics {
        let labels = ComponentLabels {
            component: self.name.clone(),
            kind: self.kind.clone(),
        };
        // One statement each: `get_or_create` returns a read guard of its family, which must be
        // released before the next series of the same family is created.
        let open = self.connections_open.get_or_create(&labels).clone();
        let refused_limit = self
            .connections_refused
            .get_or_create(&self.reason("max_connections"))
            .clone();
        let idle = self
            .connections_timed_out
            .get_or_create(&self.reason("idle"))
            .clone();
        let incomplete_message = self
            .connections_timed_out
            .get_or_create(&self.reason("incomplete_message"))
            .clone();
        let unread_acks = self
            .connections_timed_out
            .get_or_create(&self.reason("unread_acks"))
            .clone();
        ConnectionMetrics {
            open,
            refused_limit,
            idle,
            incomplete_message,
            unread_acks,
        }
    }

    fn reason(&self, reason: &str) -> ReasonLabels {
        ReasonLabels {
            component: self.name.clone(),
            kind: self.kind.clone(),
            reason: reason.to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_component_counters_with_labels() {
        let m = Metrics::new();
        let c = m.component("in_forward", "source");
        c.records_in.inc_by(3);
        c.dropped("malformed_frame", 2);
        let text = m.render();
        assert!(
            text.contains("logferry_records_in_total{component=\"in_forward\",kind=\"source\"} 3")
        );
        assert!(text.contains("logferry_dropped_records_total{component=\"in_forward\",kind=\"source\",reason=\"malformed_frame\"} 2"));
        assert_eq!(c.dropped_count("malformed_frame"), 2);
    }

    #[test]
    fn renders_operational_metrics_with_shared_names() {
        let m = Metrics::new();
        let a = m.component("kinesis.0", "sink");
        let b = m.component("kafka.0", "sink");
        let latency = a.request_duration("PutRecords");
        latency.observe(0.02);
        latency.observe(3.0);
        b.request_duration("produce").observe(0.004);
        a.retried(retry_reason::THROTTLED, 5);
        b.retries(retry_reason::BROKER_RETRY).inc_by(2);
        b.token_refreshed("msk_iam");
        a.auth_failure("access_denied");
        let buffers = m.buffer_for("kinesis.0", false);
        buffers.memory_limit_bytes.set(1000);
        let text = m.render();
        assert!(
            text.contains("# TYPE logferry_request_duration_seconds histogram"),
            "{text}"
        );
        assert!(text.contains("logferry_request_duration_seconds_count{component=\"kinesis.0\",kind=\"sink\",operation=\"PutRecords\"} 2"), "{text}");
        assert!(text.contains("logferry_request_duration_seconds_bucket{le=\"0.025\",component=\"kinesis.0\",kind=\"sink\",operation=\"PutRecords\"} 1"), "{text}");
        assert!(text.contains(
            "logferry_retries_total{component=\"kinesis.0\",kind=\"sink\",reason=\"throttled\"} 5"
        ));
        assert!(text.contains(
            "logferry_retries_total{component=\"kafka.0\",kind=\"sink\",reason=\"broker_retry\"} 2"
        ));
        assert!(text.contains("logferry_token_refreshes_total{component=\"kafka.0\",kind=\"sink\",token=\"msk_iam\"} 1"));
        assert!(text.contains("logferry_auth_failures_total{component=\"kinesis.0\",kind=\"sink\",reason=\"access_denied\"} 1"));
        assert!(text.contains("logferry_buffer_limit_bytes{component=\"kinesis.0\",kind=\"sink\",buffer=\"memory\"} 1000"));
        assert!(
            !text.contains("buffer=\"disk\"}"),
            "no disk series without a disk buffer: {text}"
        );
        assert_eq!(a.retry_count(retry_reason::THROTTLED), 5);
    }

    #[test]
    fn renders_connection_metrics_of_a_source() {
        let m = Metrics::new();
        let c = m.component("forward.0", "source").connections();
        c.open.inc();
        c.refused_limit.inc_by(2);
        c.incomplete_message.inc();
        let text = m.render();
        assert!(
            text.contains("logferry_connections_open{component=\"forward.0\",kind=\"source\"} 1"),
            "{text}"
        );
        assert!(text.contains("logferry_connections_refused_total{component=\"forward.0\",kind=\"source\",reason=\"max_connections\"} 2"), "{text}");
        assert!(text.contains("logferry_connections_timed_out_total{component=\"forward.0\",kind=\"source\",reason=\"idle\"} 0"), "{text}");
        assert!(text.contains("logferry_connections_timed_out_total{component=\"forward.0\",kind=\"source\",reason=\"incomplete_message\"} 1"), "{text}");
    }

    #[test]
    fn health_is_mirrored_into_gauges() {
        let m = Metrics::new();
        let mut problems = BTreeMap::new();
        m.observe_health(&problems);
        assert!(m.render().contains("logferry_healthy 1"));
        problems.insert("k.buffer_fill".to_string(), "full".to_string());
        m.observe_health(&problems);
        let text = m.render();
        assert!(text.contains("logferry_healthy 0"));
        assert!(text.contains("logferry_unhealthy{component=\"k.buffer_fill\"} 1"));
        problems.clear();
        m.observe_health(&problems);
        assert!(m
            .render()
            .contains("logferry_unhealthy{component=\"k.buffer_fill\"} 0"));
    }
}
