//! A per-sink queue bounded in bytes.
//!
//! Space is reserved with a semaphore whose permits are bytes: `send` waits until the batch
//! fits, so a stalled sink stops its sources instead of growing memory. The reservation travels
//! inside the [`Batch`] and is given back when the sink is done with it (delivered or failed),
//! so the bound covers records being sent as well as records waiting.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use prometheus_client::metrics::gauge::Gauge;
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};

use super::ack::AckRef;
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
    reservation: Option<Reservation>,
    /// Disk buffer mode: marks the batch's frame acknowledged on completion.
    disk: Option<super::disk::DiskAck>,
}

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

/// When each batch still held by a memory queue (waiting or being delivered) entered it, so
/// that the age of the oldest undelivered record can be reported. One entry per batch, added
/// on `send` and removed when the batch is completed or failed.
#[derive(Default)]
pub struct Ages {
    entries: Mutex<(u64, BTreeMap<u64, Instant>)>,
}

impl Ages {
    fn insert(&self, at: Instant) -> u64 {
        let Ok(mut e) = self.entries.lock() else {
            return 0;
        };
        e.0 += 1;
        let id = e.0;
        e.1.insert(id, at);
        id
    }

    fn remove(&self, id: u64) {
        if let Ok(mut e) = self.entries.lock() {
            e.1.remove(&id);
        }
    }

    /// When the oldest batch still held entered the queue (ids grow with time).
    pub fn oldest(&self) -> Option<Instant> {
        let e = self.entries.lock().ok()?;
        e.1.values().next().copied()
    }
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

#[derive(Clone)]
struct MemorySender {
    tx: mpsc::UnboundedSender<Batch>,
    permits: Arc<Semaphore>,
    limit: usize,
    gauge: Gauge,
    queued_records: Arc<AtomicUsize>,
    ages: Arc<Ages>,
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

/// A queue holding at most `limit` bytes of batches. `gauge` tracks the bytes queued.
pub fn queue(limit: usize, gauge: Gauge) -> (QueueSender, QueueReceiver) {
    // Semaphore permits are counted in u32 per acquisition; keep the bound representable.
    let limit = limit.clamp(1, u32::MAX as usize);
    let (tx, rx) = mpsc::unbounded_channel();
    let queued_records = Arc::new(AtomicUsize::new(0));
    let ages = Arc::new(Ages::default());
    (
        QueueSender {
            inner: SenderInner::Memory(MemorySender {
                tx,
                permits: Arc::new(Semaphore::new(limit)),
                limit,
                gauge,
                queued_records: queued_records.clone(),
                ages: ages.clone(),
            }),
        },
        QueueReceiver {
            inner: ReceiverInner::Memory(rx),
            queued_records,
            ages: Some(ages),
        },
    )
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
    /// Waits for room, then queues the batch (memory), or appends it to the disk buffer and
    /// acknowledges it upstream once it is durable (disk).
    pub async fn send(&self, batch: Batch) -> Result<(), Closed> {
        match &self.inner {
            SenderInner::Memory(m) => m.send(batch).await,
            SenderInner::Disk(d) => d.send(batch).await,
        }
    }
}

impl MemorySender {
    /// Waits for room, then queues the batch. A batch larger than the whole bound waits for an
    /// empty queue and then goes alone, so an oversized batch cannot wedge the queue.
    async fn send(&self, mut batch: Batch) -> Result<(), Closed> {
        let need = batch.bytes.clamp(1, self.limit) as u32;
        let permit = self
            .permits
            .clone()
            .acquire_many_owned(need)
            .await
            .map_err(|_| Closed)?;
        self.gauge.inc_by(batch.bytes as i64);
        self.queued_records
            .fetch_add(batch.events.len(), Ordering::Relaxed);
        batch.reservation = Some(Reservation {
            _permit: Some(permit),
            bytes: batch.bytes,
            records: batch.events.len(),
            gauge: self.gauge.clone(),
            queued_records: self.queued_records.clone(),
            age: Some((self.ages.clone(), self.ages.insert(Instant::now()))),
        });
        self.tx.send(batch).map_err(|_| Closed)
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{EventTime, Map};
    use std::time::Duration;

    fn batch(bytes: usize) -> Batch {
        let ev = Event::new("t".into(), EventTime::default(), Map::new());
        Batch::new("t".into(), vec![ev], bytes, None)
    }

    #[tokio::test]
    async fn send_waits_while_full_and_resumes_when_space_frees() {
        let (tx, mut rx) = queue(100, Gauge::default());
        tx.send(batch(60)).await.unwrap();
        let blocked = tokio::time::timeout(Duration::from_millis(50), tx.send(batch(60))).await;
        assert!(
            blocked.is_err(),
            "a second 60-byte batch must wait on a 100-byte queue"
        );
        let first = rx.recv().await.unwrap();
        assert_eq!(rx.pending_records(), 1);
        first.complete();
        tokio::time::timeout(Duration::from_secs(1), tx.send(batch(60)))
            .await
            .expect("space was freed")
            .unwrap();
    }

    #[tokio::test]
    async fn the_oldest_batch_held_is_known_until_it_is_done() {
        let (tx, mut rx) = queue(1000, Gauge::default());
        let ages = rx.ages().unwrap();
        assert_eq!(ages.oldest(), None);
        let before = Instant::now();
        tx.send(batch(10)).await.unwrap();
        let first = ages.oldest().unwrap();
        assert!(first >= before);
        tx.send(batch(10)).await.unwrap();
        assert_eq!(ages.oldest(), Some(first), "the older batch counts");
        let a = rx.recv().await.unwrap();
        let b = rx.recv().await.unwrap();
        assert_eq!(
            ages.oldest(),
            Some(first),
            "handed to the sink is not delivered"
        );
        a.complete();
        assert!(ages.oldest().unwrap() >= first);
        b.fail();
        assert_eq!(ages.oldest(), None);
    }

    #[tokio::test]
    async fn oversized_batch_goes_alone() {
        let (tx, mut rx) = queue(10, Gauge::default());
        tx.send(batch(1000)).await.unwrap();
        assert_eq!(rx.recv().await.unwrap().bytes, 1000);
    }
}
