//! Shutdown: which signals stop the process, and the sequence that stops a running pipeline
//! without losing what it accepted.
//!
//! [`crate::pipeline::start`] wires the components and hands them to [`run_until_stopped`],
//! which owns the order they stop in:
//!
//! 1. wait for a signal, or for every source to reach the end of its input;
//! 2. stop the sources (`stop_sources`): no new records, and forward connections finish what
//!    they already read (their records must reach the router before it closes);
//! 3. flush the transforms (`flush_transforms`): records held back (partial messages) are
//!    routed, because nothing else will release them once the sources are gone;
//! 4. drain the sinks (`drain_sinks`): dropping the router closes the sink queues, and each sink
//!    delivers what is left and stops;
//! 5. stop the buffer monitor and the HTTP server last, so `/metrics` and `/health` stay up
//!    while the pipeline drains;
//! 6. report (`report_undelivered`) what was still queued if the grace period ran out.
//!
//! Steps 2 to 4 share one deadline, the grace period: the orchestrator (ECS, Kubernetes) kills
//! the process when it ends, so every step gives up at the same instant rather than each
//! taking its own allowance.

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio::time::Instant;
pub use tokio_util::sync::CancellationToken;

use crate::pipeline::router::Router;
use crate::pipeline::RunReport;

/// Waits for SIGTERM (what ECS and Kubernetes send) or SIGINT (Ctrl-C) and names it.
pub async fn signal() -> std::io::Result<&'static str> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    Ok(tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
    })
}

/// A sink's records not yet delivered, as the final report needs them.
pub struct PendingRecords {
    /// The sink's name.
    pub sink: String,
    /// Records queued or being delivered right now.
    pub count: Arc<AtomicUsize>,
    /// Whether those records are safe in a disk buffer (delivered after a restart).
    pub on_disk: bool,
}

/// The running parts of a pipeline, handed over by [`crate::pipeline::start`] to be stopped.
pub struct RunningParts {
    /// Cancelled to tell every source to stop.
    pub source_shutdown: CancellationToken,
    /// One task per source; each ends once it stopped (or its input ended).
    pub sources: Vec<JoinHandle<()>>,
    /// The periodic flush of held-back transform records.
    pub transform_flusher: JoinHandle<()>,
    /// Where sources submit records; the last reference closes the sink queues.
    pub router: Arc<Router>,
    /// One task per sink; each ends once its queue is closed and drained.
    pub sinks: Vec<JoinHandle<()>>,
    /// Per sink: what is still undelivered.
    pub pending: Vec<PendingRecords>,
    /// The buffer fill monitor behind `/health`.
    pub buffer_monitor: JoinHandle<()>,
    /// Cancelled to stop the HTTP server (`/metrics`, `/health`).
    pub http_shutdown: CancellationToken,
}

/// Runs until `stop` resolves (a signal) or every source reached the end of its input, then
/// stops every part in the order the module docs give, within `grace`.
pub async fn run_until_stopped(
    stop: impl Future<Output = String>,
    parts: RunningParts,
    grace: Duration,
) -> RunReport {
    let RunningParts {
        source_shutdown,
        sources,
        transform_flusher,
        router,
        sinks,
        pending,
        buffer_monitor,
        http_shutdown,
    } = parts;
    let sources_done = join_all(sources);
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
    stop_sources(&source_shutdown, sources_done, sources_finished, deadline).await;
    flush_transforms(transform_flusher, &router, deadline).await;
    let drained = drain_sinks(router, sinks, deadline).await;
    buffer_monitor.abort();
    http_shutdown.cancel();
    let undelivered = report_undelivered(&pending, drained);
    RunReport {
        undelivered,
        reason,
    }
}

/// Tells every source to stop and waits (until `deadline`) for them to finish: a forward
/// connection first routes what it already read, so those records are not lost. Sources stop
/// before anything downstream, because a record they still hand over needs a router and open
/// sink queues to go to.
async fn stop_sources(
    shutdown: &CancellationToken,
    sources_done: impl Future<Output = ()>,
    already_finished: bool,
    deadline: Instant,
) {
    shutdown.cancel();
    if !already_finished {
        let _ = tokio::time::timeout_at(deadline, sources_done).await;
    }
}

/// Stops the periodic flush and releases every record transforms still hold (partial
/// messages), once the sources are stopped (nothing new can join a held message) and while
/// the sink queues are still open to take them.
async fn flush_transforms(flusher: JoinHandle<()>, router: &Router, deadline: Instant) {
    flusher.abort();
    let _ = flusher.await;
    if tokio::time::timeout_at(deadline, router.flush_transforms(true))
        .await
        .is_err()
    {
        tracing::warn!("held-back partial messages could not be flushed before the deadline");
    }
}

/// Drops the last router reference, which closes the sink queues; each sink then delivers what
/// is left and stops. Last of the data path, so that everything upstream had its chance to
/// reach a queue. Returns whether every sink finished before `deadline`.
async fn drain_sinks(router: Arc<Router>, sinks: Vec<JoinHandle<()>>, deadline: Instant) -> bool {
    drop(router);
    tokio::time::timeout_at(deadline, join_all(sinks))
        .await
        .is_ok()
}

/// Logs how the stop went and counts the records lost: those still in a memory buffer when
/// the grace period ran out (records in a disk buffer are delivered after a restart).
fn report_undelivered(pending: &[PendingRecords], drained: bool) -> usize {
    let mut undelivered = 0;
    if !drained {
        for sink in pending {
            let n = sink.count.load(Ordering::Relaxed);
            if sink.on_disk {
                tracing::warn!(sink = %sink.sink,
                    "grace period over: whatever this sink has not delivered stays in its disk buffer and is delivered after a restart");
                continue;
            }
            if n > 0 {
                tracing::error!(sink = %sink.sink, records = n,
                    "grace period over: records not delivered");
            }
            undelivered += n;
        }
    }
    if drained {
        tracing::info!("stopped cleanly: every accepted record was delivered");
    } else if undelivered == 0 {
        tracing::info!(
            "stopped: every accepted record was delivered or is persisted in a disk buffer"
        );
    }
    undelivered
}

/// Awaits every task (a tiny join_all, to avoid a dependency for one function).
async fn join_all(tasks: Vec<JoinHandle<()>>) {
    for t in tasks {
        let _ = t.await;
    }
}
