//! What sits between sources and sinks: bounded queues and delivery acknowledgements.
//!
//! - [`ack`]: an upstream acknowledgement that fires once every sink a record went to has
//!   delivered it (or reported that it could not).
//! - [`queue`]: the front of every sink's queue: the [`Batch`] that travels, the
//!   [`QueueSender`] the router holds and the [`QueueReceiver`] the sink reads, the same
//!   whichever buffer is behind them, so sinks do not know which one they read.
//! - [`memory`]: the in-memory buffer, bounded in bytes; a full queue makes `send` wait, which
//!   is how backpressure reaches the socket a source reads from.
//! - [`disk`]: a per-sink write-ahead log (`buffer = "disk"`): records are acknowledged
//!   upstream once on disk, survive a crash or restart, and are replayed on start.
//! - [`monitor`]: fill and age gauges of every sink's buffer, and `/health` when a buffer is
//!   filled past `health_buffer_threshold`.

pub mod ack;
pub mod disk;
pub mod memory;
pub mod monitor;
pub mod queue;

use std::sync::Arc;

pub use ack::{AckRef, AckWaiter};
pub use queue::{Batch, BatchDone, Closed, QueueReceiver, QueueSender};

use crate::health::Health;
use crate::metrics::{ComponentMetrics, Metrics};

/// A sink's `buffer` setting.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum BufferKind {
    /// In memory only (the default): an ack means delivered.
    #[default]
    Memory,
    /// A write-ahead log on disk: an ack means durable per the fsync policy.
    Disk(disk::DiskSettings),
}

/// Builds a sink's queue. `memory_limit` is `buffer_limit`: the whole queue in memory mode,
/// the frames read back and not yet covered by the recorded ack position in disk mode.
pub fn build_queue(
    name: &str,
    kind: &BufferKind,
    memory_limit: usize,
    metrics: &Metrics,
    component: &ComponentMetrics,
    health: Arc<Health>,
) -> Result<(QueueSender, QueueReceiver), disk::DiskError> {
    match kind {
        BufferKind::Memory => Ok(memory::queue(memory_limit, component.queue_bytes.clone())),
        BufferKind::Disk(settings) => {
            let (tx, rx, queued) = disk::open(
                name,
                settings,
                memory_limit,
                component.queue_bytes.clone(),
                metrics.buffer(name),
                component.clone(),
                health,
            )?;
            Ok(queue::disk_queue(tx, rx, queued))
        }
    }
}
