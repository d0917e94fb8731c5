//! The in-memory buffer (the default): a per-sink queue bounded in bytes.
//!
//! Space is reserved with a semaphore whose permits are bytes: `send` waits until the batch
//! fits, so a stalled sink stops its sources instead of growing memory. The reservation travels
//! inside the [`Batch`] and is given back when the sink is done with it (delivered or failed),
//! so the bound covers records being sent as well as records waiting. The halves are handed out
//! as the shared [`QueueSender`] / [`QueueReceiver`] ([`super::queue`]).

use std::collections::BTreeMap;
use std::sync::atomic::AtomicUsize;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use prometheus_client::metrics::gauge::Gauge;
use tokio::sync::{mpsc, Semaphore};

use super::queue::{Batch, Closed, QueueReceiver, QueueSender, Reservation};

/// When each batch still held by a memory queue (waiting or being delivered) entered it, so
/// that the age of the oldest undelivered record can be reported. One entry per batch, added
/// on `send` and removed when the batch is completed or failed.
#[derive(Default)]
pub struct Ages {
    entries: Mutex<(u64, BTreeMap<u64, Instant>)>,
}

impl Ages {
    pub(super) fn insert(&self, at: Instant) -> u64 {
        let Ok(mut e) = self.entries.lock() else {
            return 0;
        };
        e.0 += 1;
        let id = e.0;
        e.1.insert(id, at);
        id
    }

    pub(super) fn remove(&self, id: u64) {
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

/// The sending half of an in-memory queue, behind [`QueueSender`].
#[derive(Clone)]
pub(super) struct MemorySender {
    tx: mpsc::UnboundedSender<Batch>,
    permits: Arc<Semaphore>,
    limit: usize,
    gauge: Gauge,
    queued_records: Arc<AtomicUsize>,
    ages: Arc<Ages>,
}

/// A queue holding at most `limit` bytes of batches. `gauge` tracks the bytes queued.
pub fn queue(limit: usize, gauge: Gauge) -> (QueueSender, QueueReceiver) {
    // Semaphore permits are counted in u32 per acquisition; keep the bound representable.
    let limit = limit.clamp(1, u32::MAX as usize);
    let (tx, rx) = mpsc::unbounded_channel();
    let queued_records = Arc::new(AtomicUsize::new(0));
    let ages = Arc::new(Ages::default());
    (
        QueueSender::memory(MemorySender {
            tx,
            permits: Arc::new(Semaphore::new(limit)),
            limit,
            gauge,
            queued_records: queued_records.clone(),
            ages: ages.clone(),
        }),
        QueueReceiver::memory(rx, queued_records, ages),
    )
}

impl MemorySender {
    /// Waits for room, then queues the batch. A batch larger than the whole bound waits for an
    /// empty queue and then goes alone, so an oversized batch cannot wedge the queue.
    pub(super) async fn send(&self, mut batch: Batch) -> Result<(), Closed> {
        let need = batch.bytes.clamp(1, self.limit) as u32;
        let permit = self
            .permits
            .clone()
            .acquire_many_owned(need)
            .await
            .map_err(|_| Closed)?;
        let reservation = Reservation::new(
            Some(permit),
            batch.bytes,
            batch.events.len(),
            self.gauge.clone(),
            self.queued_records.clone(),
        )
        .with_age(self.ages.clone(), self.ages.insert(Instant::now()));
        batch.reservation = Some(reservation);
        self.tx.send(batch).map_err(|_| Closed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::Event;
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
