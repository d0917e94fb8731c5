//! The front every sink queue shows, whichever buffer is behind it: the [`Batch`] a source
//! hands over, the [`QueueSender`] the router holds and the [`QueueReceiver`] a sink reads.
//!
//! Kept apart from the buffers so that sources, the router and sinks depend on this one
//! shape and never on which buffer a sink was configured with: [`super::memory`] (the
//! default, bounded in bytes) and [`super::disk`] (a write-ahead log) both plug in behind it.
//! A batch carries its own acknowledgement and its hold on the queue bound, so completing or
//! failing it is all a sink does to release upstream acknowledgements and queue space.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use prometheus_client::metrics::gauge::Gauge;
use tokio::sync::{mpsc, OwnedSemaphorePermit};

use super::ack::AckRef;
use super::memory::{Ages, MemorySender};
use crate::event::{Event, Tag};

/// The sink's queue was closed (the sink stopped).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the sink's queue is closed")]
pub struct Closed;

/// Records of one tag travelling from a source to one sink.
pub struct Batch {
    pub tag: Tag,
    pub events: Vec<Event>,
    /// What the records weighed on the wire where they came from; the unit of the queue bound.
    pub bytes: usize,
    ack: Option<AckRef>,
    /// Memory mode: set by the memory queue on `send`; disk mode: set when read back.
    pub(super) reservation: Option<Reservation>,
    /// Disk buffer mode: marks the batch's frame acknowledged on completion.
    disk: Option<super::disk::DiskAck>,
}

/// A batch's hold on its queue: the bytes it counts against the bound and in the gauges,
/// given back when the batch is dropped (completed or failed).
pub(crate) struct Reservation {
    /// The batch's share of the queue bound; `None` for disk batches, whose share the disk
    /// buffer holds until their acknowledgement is recorded.
    _permit: Option<OwnedSemaphorePermit>,
    bytes: usize,
    records: usize,
    gauge: Gauge,
    queued_records: Arc<AtomicUsize>,
    /// Memory mode: the batch's entry in the queue's [`Ages`], removed when it is done.
    age: Option<(Arc<Ages>, u64)>,
}

impl Reservation {
    pub(crate) fn new(
        permit: Option<OwnedSemaphorePermit>,
        bytes: usize,
        records: usize,
        gauge: Gauge,
        queued_records: Arc<AtomicUsize>,
    ) -> Reservation {
        gauge.inc_by(bytes as i64);
        queued_records.fetch_add(records, Ordering::Relaxed);
        Reservation {
            _permit: permit,
            bytes,
            records,
            gauge,
            queued_records,
            age: None,
        }
    }

    /// Memory mode: ties the reservation to the batch's entry in its queue's [`Ages`], so the
    /// entry goes when the batch is done.
    pub(super) fn with_age(mut self, ages: Arc<Ages>, id: u64) -> Reservation {
        self.age = Some((ages, id));
        self
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        self.gauge.dec_by(self.bytes as i64);
        self.queued_records
            .fetch_sub(self.records, Ordering::Relaxed);
        if let Some((ages, id)) = self.age.take() {
            ages.remove(id);
        }
    }
}

impl Batch {
    pub fn new(tag: Tag, events: Vec<Event>, bytes: usize, ack: Option<AckRef>) -> Batch {
        Batch {
            tag,
            events,
            bytes,
            ack,
            reservation: None,
            disk: None,
        }
    }

    /// A batch read back from the disk buffer.
    pub(crate) fn from_disk(
        tag: Tag,
        events: Vec<Event>,
        bytes: usize,
        reservation: Reservation,
        disk: super::disk::DiskAck,
    ) -> Batch {
        Batch {
            tag,
            events,
            bytes,
            ack: None,
            reservation: Some(reservation),
            disk: Some(disk),
        }
    }

    pub fn len(&self) -> usize {
        self.events.len()
    }

    /// Whether a client is blocked until these records are delivered (see
    /// [`AckRef::client_waits`]): sinks send them without waiting for fuller batches.
    pub fn client_waits(&self) -> bool {
        self.ack.as_ref().is_some_and(AckRef::client_waits)
    }

    pub fn is_empty(&self) -> bool {
        self.events.is_empty()
    }

    /// Every record was delivered: acknowledge upstream and free the queue space.
    pub fn complete(mut self) {
        if let Some(ack) = self.ack.take() {
            ack.complete();
        }
        if let Some(disk) = self.disk.take() {
            disk.complete();
        }
    }

    /// The records were not delivered: the upstream acknowledgement fails.
    pub fn fail(mut self) {
        if let Some(ack) = self.ack.take() {
            ack.fail();
        }
        if let Some(disk) = self.disk.take() {
            disk.fail();
        }
    }

    /// Splits the batch into its records and a completion handle, for sinks that deliver
    /// records in several requests and acknowledge when the last one is done.
    pub fn into_parts(mut self) -> (Vec<Event>, BatchDone) {
        let events = std::mem::take(&mut self.events);
        (events, BatchDone { batch: self })
    }
}

/// The part of a [`Batch`] that acknowledges and frees queue space once done.
pub struct BatchDone {
    batch: Batch,
}

impl BatchDone {
    pub fn complete(self) {
        self.batch.complete()
    }
    pub fn fail(self) {
        self.batch.fail()
    }
}

/// The sending half, shared by every source that routes to the sink: an in-memory queue or
/// the disk buffer ([`super::disk`]) behind the same API.
#[derive(Clone)]
pub struct QueueSender {
    inner: SenderInner,
}

#[derive(Clone)]
enum SenderInner {
    Memory(MemorySender),
    Disk(super::disk::DiskSender),
}

/// The receiving half, owned by the sink.
pub struct QueueReceiver {
    inner: ReceiverInner,
    queued_records: Arc<AtomicUsize>,
    /// Memory mode: entry times of the batches held (the disk buffer tracks its own).
    ages: Option<Arc<Ages>>,
}

enum ReceiverInner {
    Memory(mpsc::UnboundedReceiver<Batch>),
    Disk(Box<super::disk::DiskReceiver>),
}

/// Wraps the halves of a disk buffer.
pub(crate) fn disk_queue(
    tx: super::disk::DiskSender,
    rx: super::disk::DiskReceiver,
    queued_records: Arc<AtomicUsize>,
) -> (QueueSender, QueueReceiver) {
    (
        QueueSender {
            inner: SenderInner::Disk(tx),
        },
        QueueReceiver {
            inner: ReceiverInner::Disk(Box::new(rx)),
            queued_records,
            ages: None,
        },
    )
}

impl QueueSender {
    /// Wraps the sending half of an in-memory queue.
    pub(super) fn memory(sender: MemorySender) -> QueueSender {
        QueueSender {
            inner: SenderInner::Memory(sender),
        }
    }
}

impl QueueReceiver {
    /// Wraps the receiving half of an in-memory queue.
    pub(super) fn memory(
        rx: mpsc::UnboundedReceiver<Batch>,
        queued_records: Arc<AtomicUsize>,
        ages: Arc<Ages>,
    ) -> QueueReceiver {
        QueueReceiver {
            inner: ReceiverInner::Memory(rx),
            queued_records,
            ages: Some(ages),
        }
    }
}

impl QueueSender {
    /// Waits for room, then queues the batch (memory), or appends it to the disk buffer and
    /// acknowledges it upstream once it is durable (disk).
    pub async fn send(&self, batch: Batch) -> Result<(), Closed> {
        match &self.inner {
            SenderInner::Memory(m) => m.send(batch).await,
            SenderInner::Disk(d) => d.send(batch).await,
        }
    }
}

impl QueueReceiver {
    /// The next batch; `None` once every sender is gone and the queue is empty.
    pub async fn recv(&mut self) -> Option<Batch> {
        match &mut self.inner {
            ReceiverInner::Memory(rx) => rx.recv().await,
            ReceiverInner::Disk(d) => d.recv().await,
        }
    }

    /// The next batch if one is ready now.
    pub fn try_recv(&mut self) -> Option<Batch> {
        match &mut self.inner {
            ReceiverInner::Memory(rx) => rx.try_recv().ok(),
            ReceiverInner::Disk(d) => d.try_recv(),
        }
    }

    /// Records queued or being delivered right now.
    pub fn pending_records(&self) -> usize {
        self.queued_records.load(Ordering::Relaxed)
    }

    /// A handle that reports the pending count after the receiver moved into a task.
    pub fn pending_counter(&self) -> Arc<AtomicUsize> {
        self.queued_records.clone()
    }

    /// Memory mode: a handle on the entry times of the batches held, for the age of the
    /// oldest undelivered record (`None` for a disk buffer, which reports its own).
    pub fn ages(&self) -> Option<Arc<Ages>> {
        self.ages.clone()
    }
}
