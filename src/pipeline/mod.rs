//! Builds the running pipeline from a [`Config`] and runs it until a signal or the end of input.
//!
//! Shutdown order matters for "nothing lost": sources stop first (no new records, and forward
//! connections finish what they already read), held-back transform state is flushed, then the
//! sink queues close and each sink drains what is left. All of it must fit in the grace period;
//! whatever is still queued when it runs out is reported.

pub mod router;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::buffer::disk::DiskError;
use crate::buffer::open_queue;
use crate::config::Config;
use crate::health::Health;
use crate::metrics::Metrics;
use crate::shutdown::CancellationToken;
use crate::sink::dead_letter::DeadLetters;
use crate::sink::{SinkContext, SinkError};
use crate::source::{SourceContext, SourceError};
use router::{Router, SinkRoute, TransformStage};

/// How often transforms that hold records back (partial messages) are asked to flush.
const TRANSFORM_FLUSH_INTERVAL: Duration = Duration::from_secs(1);

/// Why the pipeline could not run.
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    #[error(transparent)]
    Sink(#[from] SinkError),
    #[error(transparent)]
    Source(#[from] SourceError),
    #[error("sink `{name}`: {source}")]
    Buffer { name: String, source: DiskError },
    #[error("sink `{name}`: {source}")]
    DeadLetters {
        name: String,
        source: crate::sink::dead_letter::DeadLetterError,
    },
    #[error("cannot serve HTTP on {address}: {source}; change [service] http_listen or set it to \"off\"")]
    Http {
        address: String,
        source: std::io::Error,
    },
}

/// How a run ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunReport {
    /// Records still queued when the grace period ran out (0 on a clean stop).
    pub undelivered: usize,
    /// What stopped the run: a signal name or `end of input`.
    pub reason: String,
}

/// Handles a caller (tests, the CLI) can use while the pipeline runs.
pub struct Running {
    pub metrics: Arc<Metrics>,
    pub health: Arc<Health>,
    /// The HTTP address actually bound (useful with port 0).
    pub http_addr: Option<std::net::SocketAddr>,
    task: JoinHandle<RunReport>,
}

impl Running {
    /// Waits for the run to end.
    pub async fn wait(self) -> RunReport {
        match self.task.await {
            Ok(report) => report,
            Err(e) => RunReport {
                undelivered: 0,
                reason: format!("the pipeline task failed: {e}"),
            },
        }
    }
}

/// Starts every component. Returns once everything is bound and running; the run stops when
/// `stop` resolves (a signal) or every source has reached the end of its input.
pub async fn start(
    config: Config,
    stop: impl std::future::Future<Output = String> + Send + 'static,
) -> Result<Running, PipelineError> {
    let metrics = Arc::new(Metrics::new());
    let health = Arc::new(Health::default());
    let shutdown = CancellationToken::new();

    let Built {
        router,
        sink_tasks,
        pending,
        buffers,
    } = build(config.sinks, config.transforms, &metrics, &health).await?;

    let http_shutdown = CancellationToken::new();
    let http_addr = match config.service.http_addr() {
        Some(addr) => {
            let (bound, _task) =
                crate::http::start(addr, metrics.clone(), health.clone(), http_shutdown.clone())
                    .await
                    .map_err(|source| PipelineError::Http {
                        address: addr.to_string(),
                        source,
                    })?;
            Some(bound)
        }
        None => None,
    };

    let buffer_monitor = crate::buffer::monitor::BufferMonitor::new(
        buffers,
        config.service.health_buffer_threshold,
        health.clone(),
    )
    .spawn();

    let mut source_tasks = Vec::new();
    for entry in &config.sources {
        let cx = SourceContext {
            name: entry.name.clone(),
            router: router.clone(),
            shutdown: shutdown.clone(),
            metrics: metrics.component(&entry.name, "source"),
        };
        match entry.config.start(cx).await {
            Ok(task) => source_tasks.push(task),
            Err(e) => {
                shutdown.cancel();
                http_shutdown.cancel();
                buffer_monitor.abort();
                return Err(e.into());
            }
        }
    }

    let flusher = {
        let router = router.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(TRANSFORM_FLUSH_INTERVAL);
            loop {
                tick.tick().await;
                if router.flush_transforms(false).await.is_err() {
                    return;
                }
            }
        })
    };

    let grace = config.service.grace_period.get();
    let task = tokio::spawn(async move {
        let sources_done = futures_join_all(source_tasks);
        tokio::pin!(sources_done);
        let mut sources_finished = false;
        let reason = tokio::select! {
            reason = stop => reason,
            _ = &mut sources_done => {
                sources_finished = true;
                "end of input".to_string()
            }
        };
        let deadline = Instant::now() + grace;
        tracing::info!(%reason, grace_period = ?grace, "stopping: draining every sink");
        shutdown.cancel();
        if !sources_finished {
            let _ = tokio::time::timeout_at(deadline, &mut sources_done).await;
        }
        flusher.abort();
        let _ = flusher.await;
        if tokio::time::timeout_at(deadline, router.flush_transforms(true))
            .await
            .is_err()
        {
            tracing::warn!("held-back partial messages could not be flushed before the deadline");
        }
        // The last router reference closes the sink queues; sinks then drain and stop.
        drop(router);
        let sinks_done = tokio::time::timeout_at(deadline, futures_join_all(sink_tasks)).await;
        buffer_monitor.abort();
        http_shutdown.cancel();
        let mut undelivered = 0;
        if sinks_done.is_err() {
            for (name, counter, on_disk) in &pending {
                let n = counter.load(Ordering::Relaxed);
                if *on_disk {
                    tracing::warn!(sink = %name,
                        "grace period over: whatever this sink has not delivered stays in its disk buffer and is delivered after a restart");
                    continue;
                }
                if n > 0 {
                    tracing::error!(sink = %name, records = n,
                        "grace period over: records not delivered");
                }
                undelivered += n;
            }
        }
        if sinks_done.is_ok() {
            tracing::info!("stopped cleanly: every accepted record was delivered");
        } else if undelivered == 0 {
            tracing::info!(
                "stopped: every accepted record was delivered or is persisted in a disk buffer"
            );
        }
        RunReport {
            undelivered,
            reason,
        }
    });

    Ok(Running {
        metrics,
        health,
        http_addr,
        task,
    })
}

/// The delivery half of a pipeline: the router with its transforms, and the running sinks.
pub struct Built {
    /// Where sources submit records; dropping the last reference closes the sink queues.
    pub router: Arc<Router>,
    /// One task per sink; each ends once its queue is closed and drained.
    pub sink_tasks: Vec<JoinHandle<()>>,
    /// Per sink: its name, the count of records waiting in its queue, and whether those
    /// records are safe in a disk buffer.
    pub pending: Vec<(String, Arc<AtomicUsize>, bool)>,
    /// Per sink: what [`crate::buffer::monitor::BufferMonitor`] watches (fill, age, health).
    pub buffers: Vec<crate::buffer::monitor::BufferWatch>,
}

/// Builds and starts every sink and the router in front of them. The sidecar ([`start`]) and
/// the Lambda forwarder (`logferry-lambda`) share it, so delivery is written once.
pub async fn build(
    sinks: Vec<crate::config::SinkEntry>,
    transforms: Vec<crate::config::TransformEntry>,
    metrics: &Arc<Metrics>,
    health: &Arc<Health>,
) -> Result<Built, PipelineError> {
    let mut sink_tasks = Vec::new();
    // Per sink: records not yet delivered, and whether they are safe in a disk buffer.
    let mut pending: Vec<(String, Arc<AtomicUsize>, bool)> = Vec::new();
    let mut buffers = Vec::new();
    let mut routes = Vec::new();
    for entry in sinks {
        let component = metrics.component(&entry.name, "sink");
        let (tx, rx) = open_queue(
            &entry.name,
            &entry.buffer,
            entry.buffer_limit.as_usize(),
            metrics,
            &component,
            health.clone(),
        )
        .map_err(|source| PipelineError::Buffer {
            name: entry.name.clone(),
            source,
        })?;
        let dead_letters = match &entry.dead_letter {
            Some(settings) => Some(
                DeadLetters::start(&entry.name, settings, metrics, health.clone()).map_err(
                    |source| PipelineError::DeadLetters {
                        name: entry.name.clone(),
                        source,
                    },
                )?,
            ),
            None => None,
        };
        let queue_bytes = component.queue_bytes.clone();
        let cx = SinkContext {
            name: entry.name.clone(),
            metrics: component,
            health: health.clone(),
            registry: metrics.clone(),
            dead_letters,
        };
        let sink = entry.config.build(cx).await?;
        let disk_limit = match &entry.buffer {
            crate::buffer::BufferKind::Disk(settings) => Some(settings.max_size),
            crate::buffer::BufferKind::Memory => None,
        };
        buffers.push(crate::buffer::monitor::BufferWatch::new(
            &entry.name,
            metrics.buffer_for(&entry.name, disk_limit.is_some()),
            queue_bytes,
            entry.buffer_limit.bytes(),
            disk_limit,
            rx.pending_counter(),
            rx.ages(),
        ));
        let on_disk = matches!(entry.buffer, crate::buffer::BufferKind::Disk(_));
        pending.push((entry.name.clone(), rx.pending_counter(), on_disk));
        sink_tasks.push(tokio::spawn(sink.run(rx)));
        routes.push(SinkRoute {
            name: entry.name,
            matcher: entry.matcher,
            queue: tx,
        });
    }
    let stages = transforms
        .into_iter()
        .map(|mut t| {
            let stage_metrics = metrics.component(&t.name, "transform");
            t.transform.attach_metrics(&stage_metrics);
            TransformStage {
                metrics: stage_metrics,
                name: t.name,
                matcher: t.matcher,
                transform: t.transform,
            }
        })
        .collect();
    let router = Arc::new(Router::new(
        stages,
        routes,
        metrics.component("router", "router"),
    ));
    Ok(Built {
        router,
        sink_tasks,
        pending,
        buffers,
    })
}

/// Awaits every task (a tiny join_all, to avoid a dependency for one function).
async fn futures_join_all(tasks: Vec<JoinHandle<()>>) {
    for t in tasks {
        let _ = t.await;
    }
}
