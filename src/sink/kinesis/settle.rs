//! Which upstream acknowledgements a Kinesis answer settles: each input batch has a
//! [`Tracker`] counting its records still on their way, each user record a [`Token`] of it,
//! and each Kinesis entry the [`Tokens`] of the user records it carries (one, or an aggregate's).

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use crate::buffer::queue::BatchDone;
use crate::event::Event;

/// The records of one input batch still on their way; completes the batch when the last one
/// is settled.
pub(crate) struct Tracker {
    pub(crate) remaining: AtomicUsize,
    pub(crate) failed: AtomicBool,
    /// A client sends nothing more until this batch is acknowledged (forward `chunk` acks):
    /// its records, retried ones included, go out without waiting for fuller batches.
    pub(crate) client_waits: bool,
    pub(crate) done: Mutex<Option<BatchDone>>,
    /// The batch's records, kept only with a dead-letter file: what a dead letter holds.
    pub(crate) events: Option<Vec<Event>>,
}

/// One user record: its batch's tracker and its place in the batch.
#[derive(Clone)]
pub(crate) struct Token {
    pub(crate) tracker: Arc<Tracker>,
    pub(crate) index: usize,
}

impl Token {
    pub(crate) fn settle(&self, ok: bool) {
        self.tracker.settle(ok);
    }

    /// The record itself, when the sink keeps records for dead letters.
    pub(crate) fn event(&self) -> Option<&Event> {
        self.tracker.events.as_ref()?.get(self.index)
    }
}

impl Tracker {
    pub(crate) fn new(
        records: usize,
        done: BatchDone,
        events: Option<Vec<Event>>,
        client_waits: bool,
    ) -> Arc<Tracker> {
        let tracker = Arc::new(Tracker {
            remaining: AtomicUsize::new(records),
            failed: AtomicBool::new(false),
            client_waits,
            done: Mutex::new(Some(done)),
            events,
        });
        if records == 0 {
            tracker.finish();
        }
        tracker
    }

    /// One record is settled: delivered or dropped for good (`ok`), or given up on (`!ok`,
    /// which fails the upstream acknowledgement).
    pub(crate) fn settle(&self, ok: bool) {
        if !ok {
            self.failed.store(true, Ordering::Release);
        }
        if self.remaining.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.finish();
        }
    }

    pub(crate) fn finish(&self) {
        let done = self.done.lock().ok().and_then(|mut d| d.take());
        if let Some(done) = done {
            if self.failed.load(Ordering::Acquire) {
                done.fail();
            } else {
                done.complete();
            }
        }
    }
}

/// What travels with a Kinesis entry: the trackers of its user records (one per record, in
/// order), how often it was retried, and the shard it was aggregated for.
pub(crate) struct Tokens {
    pub(crate) users: Vec<Token>,
    pub(crate) attempts: u32,
    /// The shard the entry is expected to land on, when it comes from the aggregators.
    pub(crate) expected: Option<Expected>,
    /// What Kinesis counts for the entry (data + partition key), for the metrics.
    pub(crate) size: usize,
}

impl Tokens {
    pub(crate) fn settle(&self, ok: bool) {
        for user in &self.users {
            user.settle(ok);
        }
    }

    /// Whether a client is blocked until one of these records is acknowledged.
    pub(crate) fn client_waits(&self) -> bool {
        self.users.iter().any(|user| user.tracker.client_waits)
    }

    /// Whether the entry was predicted to land on a shard other than `shard_id`: the stream was
    /// resharded since the shard map it was built from. For an aggregate (more than one user
    /// record) that matters: a KCL consumer drops it whole if any of its user records is
    /// outside the shard's range.
    pub(crate) fn landed_elsewhere(&self, shard_id: &str) -> bool {
        self.expected
            .as_ref()
            .is_some_and(|expected| *expected.shard_id != *shard_id)
    }
}

/// Where the aggregators predicted an entry to land: the shard map it was built from (its
/// epoch) and the shard's id.
pub(crate) struct Expected {
    pub(crate) epoch: u64,
    pub(crate) shard_id: Arc<str>,
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::buffer::ack::AckRef;
    use crate::event::{EventTime, Map};

    #[tokio::test]
    async fn a_batch_completes_only_once_every_record_is_settled() {
        let (ack, waiter) = AckRef::new();
        let ev = Event::new("t".into(), EventTime::default(), Map::new());
        let batch = crate::buffer::Batch::new("t".into(), vec![ev.clone(), ev], 10, Some(ack));
        let (events, done) = batch.into_parts();
        let tracker = Tracker::new(events.len(), done, None, false);
        tracker.settle(true);
        let mut waiter = Box::pin(waiter.wait());
        assert!(
            tokio::time::timeout(Duration::from_millis(20), &mut waiter)
                .await
                .is_err(),
            "one record is still on its way"
        );
        tracker.settle(true);
        assert!(waiter.await);

        let (ack, waiter) = AckRef::new();
        let ev = Event::new("t".into(), EventTime::default(), Map::new());
        let (events, done) =
            crate::buffer::Batch::new("t".into(), vec![ev.clone(), ev], 10, Some(ack)).into_parts();
        let tracker = Tracker::new(events.len(), done, None, false);
        tracker.settle(false);
        tracker.settle(true);
        assert!(!waiter.wait().await, "a record given up on fails the ack");
    }
}
