//! Watches every sink's buffer: keeps the fill and age gauges up to date and reports a buffer
//! filled past `health_buffer_threshold` on `/health`.
//!
//! A full buffer means sources are being held back (or, with `when_full = "drop_newest"`,
//! records dropped): the destination is slower than the input or not reachable. Operators want
//! to hear about it before that happens, so a sink whose buffer is more than the threshold full
//! is reported as `<sink>.buffer_fill` with its fill, and cleared once it drains below. The
//! buffer that counts is the one that fills up first when the sink stalls: the memory queue
//! (`buffer_limit`) for `buffer = "memory"`, the log on disk (`buffer_max_size`) for
//! `buffer = "disk"` (whose memory part is only a read-ahead window and is full by design
//! whenever the sink is slower than the disk).
//!
//! It runs once a second and reads only gauges and counters the buffers keep anyway.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use prometheus_client::metrics::gauge::Gauge;

use super::memory::Ages;
use crate::health::Health;
use crate::metrics::BufferMetrics;

/// Default `health_buffer_threshold`.
pub const DEFAULT_THRESHOLD: f64 = 0.9;

/// How often the buffers are looked at.
pub const PERIOD: Duration = Duration::from_secs(1);

/// One sink's buffer, as the monitor sees it.
pub struct BufferWatch {
    name: String,
    metrics: BufferMetrics,
    /// The sink's `queue_bytes`: bytes in memory.
    queue_bytes: Gauge,
    memory_limit: u64,
    /// `buffer_max_size` of a disk buffer.
    disk_limit: Option<u64>,
    /// Records in memory not yet delivered.
    pending: Arc<AtomicUsize>,
    /// Memory mode: entry times of the batches held.
    ages: Option<Arc<Ages>>,
}

impl BufferWatch {
    /// `disk_limit` is `Some(buffer_max_size)` for a disk buffer; `ages` comes from the
    /// memory queue ([`super::QueueReceiver::ages`]).
    pub fn new(
        name: &str,
        metrics: BufferMetrics,
        queue_bytes: Gauge,
        memory_limit: u64,
        disk_limit: Option<u64>,
        pending: Arc<AtomicUsize>,
        ages: Option<Arc<Ages>>,
    ) -> BufferWatch {
        metrics
            .memory_limit_bytes
            .set(i64::try_from(memory_limit).unwrap_or(i64::MAX));
        if let Some(limit) = disk_limit {
            metrics
                .disk_limit_bytes
                .set(i64::try_from(limit).unwrap_or(i64::MAX));
        }
        BufferWatch {
            name: name.to_string(),
            metrics,
            queue_bytes,
            memory_limit: memory_limit.max(1),
            disk_limit: disk_limit.map(|l| l.max(1)),
            pending,
            ages,
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Updates the gauges as of `now` and returns what counts for health: (fill ratio,
    /// bytes held, bound, where).
    fn sample(&self, now: Instant) -> (f64, u64, u64, &'static str) {
        let memory_bytes = self.queue_bytes.get().max(0) as u64;
        let memory_fill = memory_bytes as f64 / self.memory_limit as f64;
        self.metrics.memory_fill_ratio.set(memory_fill);
        if let Some(ages) = &self.ages {
            // Memory mode; a disk buffer's ticker sets these two itself.
            self.metrics
                .memory_records
                .set(self.pending.load(Ordering::Relaxed) as i64);
            let age = ages
                .oldest()
                .map_or(0.0, |t| now.saturating_duration_since(t).as_secs_f64());
            self.metrics.oldest_unacked_seconds.set(age);
        }
        match self.disk_limit {
            Some(limit) => {
                let disk_bytes = self.metrics.disk_bytes.get().max(0) as u64;
                let fill = disk_bytes as f64 / limit as f64;
                self.metrics.disk_fill_ratio.set(fill);
                (fill, disk_bytes, limit, "on disk")
            }
            None => (memory_fill, memory_bytes, self.memory_limit, "in memory"),
        }
    }
}

/// Every sink's [`BufferWatch`], the threshold, and which sinks are reported now.
pub struct BufferMonitor {
    watches: Vec<BufferWatch>,
    threshold: f64,
    health: Arc<Health>,
    reported: Vec<bool>,
}

impl BufferMonitor {
    pub fn new(watches: Vec<BufferWatch>, threshold: f64, health: Arc<Health>) -> BufferMonitor {
        let reported = vec![false; watches.len()];
        BufferMonitor {
            watches,
            threshold,
            health,
            reported,
        }
    }

    /// The `/health` component name of a sink's buffer fill.
    pub fn health_name(sink: &str) -> String {
        format!("{sink}.buffer_fill")
    }

    /// Looks at every buffer once.
    pub fn check(&mut self, now: Instant) {
        for (watch, reported) in self.watches.iter().zip(self.reported.iter_mut()) {
            let (fill, held, limit, place) = watch.sample(now);
            let name = Self::health_name(&watch.name);
            if fill >= self.threshold {
                let reason = format!(
                    "buffer {:.0}% full ({held} of {limit} bytes {place}; health_buffer_threshold \
                     = {}): the destination does not keep up or cannot be reached, and sources \
                     are held back once it is full",
                    fill * 100.0,
                    self.threshold
                );
                if !*reported {
                    tracing::warn!(sink = %watch.name, fill = format!("{:.2}", fill), held, limit,
                        "the sink's buffer is over health_buffer_threshold");
                }
                self.health.set_unhealthy(&name, reason);
                *reported = true;
            } else if *reported {
                tracing::info!(sink = %watch.name, fill = format!("{:.2}", fill),
                    "the sink's buffer drained below health_buffer_threshold");
                self.health.set_healthy(&name);
                *reported = false;
            }
        }
    }

    /// Checks every [`PERIOD`] until the task is aborted or the runtime stops.
    pub fn spawn(mut self) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(PERIOD);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                self.check(Instant::now());
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::buffer::memory::queue;
    use crate::buffer::queue::Batch;
    use crate::event::{Event, EventTime, Map};
    use crate::metrics::Metrics;

    fn value(text: &str, prefix: &str) -> f64 {
        text.lines()
            .find(|l| l.starts_with(prefix))
            .and_then(|l| l.rsplit(' ').next()?.parse().ok())
            .unwrap_or(f64::NAN)
    }

    fn batch(bytes: usize) -> Batch {
        let ev = Event::new("t".into(), EventTime::default(), Map::new());
        Batch::new("t".into(), vec![ev], bytes, None)
    }

    #[tokio::test]
    async fn a_memory_buffer_over_the_threshold_is_unhealthy_until_it_drains() {
        let metrics = Metrics::new();
        let health = Arc::new(Health::default());
        let component = metrics.component("k", "sink");
        let (tx, mut rx) = queue(100, component.queue_bytes.clone());
        let watch = BufferWatch::new(
            "k",
            metrics.buffer_for("k", false),
            component.queue_bytes.clone(),
            100,
            None,
            rx.pending_counter(),
            rx.ages(),
        );
        let mut monitor = BufferMonitor::new(vec![watch], 0.9, health.clone());
        let t0 = Instant::now();
        tx.send(batch(50)).await.unwrap();
        monitor.check(t0);
        assert_eq!(health.report().0, 200, "50% is under 90%");
        tx.send(batch(45)).await.unwrap();
        monitor.check(t0 + Duration::from_secs(3));
        let (code, body) = health.report();
        assert_eq!(code, 503);
        assert!(
            body.contains("k.buffer_fill") && body.contains("95% full"),
            "{body}"
        );
        let text = metrics.render();
        assert!(text.contains("logferry_buffer_memory_records{component=\"k\",kind=\"sink\"} 2"));
        assert!(text.contains(
            "logferry_buffer_fill_ratio{component=\"k\",kind=\"sink\",buffer=\"memory\"} 0.95"
        ));
        let age = value(
            &text,
            "logferry_buffer_oldest_unacked_seconds{component=\"k\"",
        );
        assert!(age > 2.5 && age <= 3.0, "{text}");
        rx.recv().await.unwrap().complete();
        monitor.check(t0 + Duration::from_secs(4));
        assert_eq!(health.report().0, 200, "drained to 45%");
        rx.recv().await.unwrap().complete();
        monitor.check(t0 + Duration::from_secs(5));
        let text = metrics.render();
        let age = value(
            &text,
            "logferry_buffer_oldest_unacked_seconds{component=\"k\"",
        );
        assert_eq!(age, 0.0, "nothing held: {text}");
    }

    #[test]
    fn a_disk_buffer_counts_its_disk_fill() {
        let metrics = Metrics::new();
        let health = Arc::new(Health::default());
        let buffers = metrics.buffer_for("d", true);
        let queue_bytes = Gauge::default();
        // The read-ahead window is full, which is normal for a disk buffer.
        queue_bytes.set(100);
        let watch = BufferWatch::new(
            "d",
            buffers.clone(),
            queue_bytes,
            100,
            Some(1000),
            Arc::new(AtomicUsize::new(0)),
            None,
        );
        let mut monitor = BufferMonitor::new(vec![watch], 0.5, health.clone());
        buffers.disk_bytes.set(400);
        monitor.check(Instant::now());
        assert_eq!(health.report().0, 200);
        buffers.disk_bytes.set(600);
        monitor.check(Instant::now());
        let (code, body) = health.report();
        assert_eq!(code, 503);
        assert!(body.contains("600 of 1000 bytes on disk"), "{body}");
        buffers.disk_bytes.set(0);
        monitor.check(Instant::now());
        assert_eq!(health.report().0, 200);
    }
}
