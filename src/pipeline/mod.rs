//! Wires the running pipeline from a [`Config`]: sinks with their queues, the router and its
//! transforms, the sources, the HTTP server and the buffer monitor.
//!
//! Wiring only: once everything runs, [`start`] hands the parts to
//! [`crate::shutdown::run_until_stopped`], which owns the order they stop in (sources, then
//! transforms, then sinks, within the grace period) and reports what could not be delivered.

pub mod router;

use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinHandle;

use crate::buffer::build_queue;
use crate::buffer::disk::DiskError;
use crate::config::Config;
use crate::health::Health;
use crate::metrics::Metrics;
use crate::shutdown::{CancellationToken, PendingRecords, RunningParts};
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

    let parts = RunningParts {
        source_shutdown: shutdown,
        sources: source_tasks,
        transform_flusher: flusher,
        router,
        sinks: sink_tasks,
        pending,
        buffer_monitor,
        http_shutdown,
    };
    let grace = config.service.grace_period.get();
    let task = tokio::spawn(crate::shutdown::run_until_stopped(stop, parts, grace));

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
    /// Per sink: the records waiting in its queue, and whether they are safe in a disk buffer.
    pub pending: Vec<PendingRecords>,
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
    let mut pending = Vec::new();
    let mut buffers = Vec::new();
    let mut routes = Vec::new();
    for entry in sinks {
        let component = metrics.component(&entry.name, "sink");
        let (tx, rx) = build_queue(
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
                DeadLetters::build(&entry.name, settings, metrics, health.clone()).map_err(
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
        pending.push(PendingRecords {
            sink: entry.name.clone(),
            count: rx.pending_counter(),
            on_disk,
        });
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
