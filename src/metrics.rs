//! Prometheus metrics: per-component counters, rendered in the text format on `GET /metrics`.
//!
//! Components fetch their counters once ([`Metrics::component`]) and then only touch atomics on
//! the hot path. Drops and errors carry a `reason` label and are looked up when they happen,
//! which is rare by design.

use std::any::Any;
use std::collections::HashMap;
use std::sync::atomic::AtomicU64;
use std::sync::Mutex;

use prometheus_client::encoding::text::encode;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

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
    /// Metrics registered by name through [`Metrics::shared`], so that several components of
    /// one kind share one family instead of registering the name twice.
    shared: Mutex<HashMap<String, Box<dyn Any + Send + Sync>>>,
}

/// A disk buffer's gauges (memory bytes are the sink's `queue_bytes`).
#[derive(Clone, Debug, Default)]
pub struct BufferMetrics {
    /// Bytes of unacknowledged frames on disk.
    pub disk_bytes: Gauge,
    /// Unacknowledged records on disk.
    pub disk_records: Gauge,
    /// Records read back into memory and not yet delivered.
    pub memory_records: Gauge,
    /// Age of the oldest unacknowledged record that was read back, in seconds (0 when none).
    pub oldest_unacked_seconds: Gauge<f64, AtomicU64>,
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
            "Records of a disk buffer read back into memory and not yet delivered",
            m.buffer_memory_records.clone(),
        );
        registry.register(
            "buffer_oldest_unacked_seconds",
            "Age of the oldest record a sink's disk buffer handed out and is still waiting for",
            m.buffer_oldest_unacked.clone(),
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
        }
    }

    /// The disk buffer gauges of one sink.
    pub fn buffer(&self, name: &str) -> BufferMetrics {
        let labels = ComponentLabels {
            component: name.to_string(),
            kind: "sink".to_string(),
        };
        BufferMetrics {
            disk_bytes: self.buffer_disk_bytes.get_or_create(&labels).clone(),
            disk_records: self.buffer_disk_records.get_or_create(&labels).clone(),
            memory_records: self.buffer_memory_records.get_or_create(&labels).clone(),
            oldest_unacked_seconds: self.buffer_oldest_unacked.get_or_create(&labels).clone(),
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
}
