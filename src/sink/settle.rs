//! Settlement: how every sink turns per-record outcomes into the acknowledgement of the input
//! batch the records came in.
//!
//! A sink takes a batch from its queue ([`crate::buffer::queue`]) and gets its records plus a
//! [`BatchDone`]. It wraps the `BatchDone` in a [`Tracker`] that counts the records still on their
//! way, and hands each record a [`Token`] (the tracker and the record's place in the batch). A
//! record is settled exactly once: delivered, dead-lettered once on disk, or dropped for a counted
//! reason (`ok`), or given up on (`!ok`). When the last one is settled the batch completes, which
//! acknowledges it upstream (forward acks, the disk buffer's commit, Kafka offsets) and frees its
//! queue space; if any record was given up on, the batch fails instead, so nothing is
//! acknowledged that was not delivered. A tracker dropped before every record is settled (the
//! sink stopped) fails its batch for the same reason.
//!
//! A sink may hold shares of its own besides the records' (a guard released once every record
//! is handed to a client library, so that early answers cannot complete a batch still being
//! sent): a tracker counts `shares`, not records.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use crate::buffer::queue::BatchDone;
use crate::event::Event;

/// Called once when a tracker completes (`true`) or fails (`false`), after the batch's own
/// acknowledgement: a sink's bookkeeping of batches in flight and their latency.
pub type OnFinish = Box<dyn FnOnce(bool) + Send + Sync>;

/// The shares of one input batch still open; completes the batch when the last is settled.
pub struct Tracker {
    remaining: AtomicUsize,
    failed: AtomicBool,
    /// A client sends nothing more until this batch is acknowledged (forward `chunk` acks):
    /// sinks send its records without waiting for fuller requests.
    client_waits: bool,
    finish: Mutex<Option<Finish>>,
    /// The batch's records, kept only with a dead-letter file: what a dead letter holds.
    events: Option<Vec<Event>>,
    /// A tracker standing for one record of another batch ([`Tracker::record`]).
    parent: Option<Token>,
}

struct Finish {
    done: Option<BatchDone>,
    then: Option<OnFinish>,
}

impl Finish {
    fn run(self, ok: bool) {
        if let Some(done) = self.done {
            if ok {
                done.complete();
            } else {
                done.fail();
            }
        }
        if let Some(then) = self.then {
            then(ok);
        }
    }
}

impl Tracker {
    /// A tracker for `shares` settlements (the batch's records, plus any share the sink keeps
    /// for itself). `events`: the batch's records, kept for dead letters.
    pub fn new(done: BatchDone, shares: usize, events: Option<Vec<Event>>) -> Arc<Tracker> {
        Tracker::build(done, shares, events, false, None)
    }

    /// [`Tracker::new`] with everything a sink may ask for: whether a client waits on the batch,
    /// and what to run when it finishes.
    pub fn build(
        done: BatchDone,
        shares: usize,
        events: Option<Vec<Event>>,
        client_waits: bool,
        then: Option<OnFinish>,
    ) -> Arc<Tracker> {
        let tracker = Arc::new(Tracker {
            remaining: AtomicUsize::new(shares),
            failed: AtomicBool::new(false),
            client_waits,
            finish: Mutex::new(Some(Finish {
                done: Some(done),
                then,
            })),
            events,
            parent: None,
        });
        if shares == 0 {
            tracker.finish();
        }
        tracker
    }

    /// A tracker of its own for record `index` of this batch, for a client library that carries
    /// one pointer per record (librdkafka's delivery opaque) where a [`Token`] does not fit.
    /// Settling it settles that record here.
    pub fn record(self: &Arc<Self>, index: usize) -> Arc<Tracker> {
        Arc::new(Tracker {
            remaining: AtomicUsize::new(1),
            failed: AtomicBool::new(false),
            client_waits: self.client_waits,
            finish: Mutex::new(None),
            events: None,
            parent: Some(Token {
                tracker: self.clone(),
                index,
            }),
        })
    }

    /// One share is settled: delivered, dead-lettered or dropped for a counted reason (`ok`),
    /// or given up on (`!ok`, which fails the batch's acknowledgement).
    pub fn settle(&self, ok: bool) {
        self.settle_many(1, ok);
    }

    /// `shares` shares are settled at once, all `ok` or all not: one atomic update instead of
    /// one per record (see [`Settlement`]).
    pub fn settle_many(&self, shares: usize, ok: bool) {
        if shares == 0 {
            return;
        }
        if !ok {
            self.failed.store(true, Ordering::Release);
        }
        let before = self.remaining.fetch_sub(shares, Ordering::AcqRel);
        debug_assert!(
            before >= shares,
            "more shares settled than the tracker holds"
        );
        if before == shares {
            match &self.parent {
                Some(parent) => parent.settle(!self.failed.load(Ordering::Acquire)),
                None => self.finish(),
            }
        }
    }

    /// Whether a client is blocked until this batch is acknowledged.
    pub fn client_waits(&self) -> bool {
        self.client_waits
    }

    /// Record `index` of the batch, when the sink keeps records for dead letters.
    pub fn event(&self, index: usize) -> Option<&Event> {
        self.events.as_ref()?.get(index)
    }

    /// The records kept for dead letters (empty when none are kept).
    pub fn events(&self) -> &[Event] {
        self.events.as_deref().unwrap_or(&[])
    }

    /// For a tracker made by [`Tracker::record`]: the record it stands for.
    pub fn own_event(&self) -> Option<&Event> {
        self.parent.as_ref()?.event()
    }

    fn finish(&self) {
        let finish = self.finish.lock().ok().and_then(|mut f| f.take());
        if let Some(finish) = finish {
            finish.run(!self.failed.load(Ordering::Acquire));
        }
    }
}

impl Drop for Tracker {
    fn drop(&mut self) {
        // Dropped with shares open (the sink stopped before delivering): the batch fails, so
        // nothing is acknowledged that was not delivered. A record's own tracker leaves its
        // parent open, which fails when it is dropped in turn.
        let finish = self.finish.get_mut().ok().and_then(Option::take);
        if let Some(finish) = finish {
            finish.run(false);
        }
    }
}

/// An input batch as a sink takes it from its queue: the tracker of its records (one share
/// each), and the records themselves, kept by the tracker when they may become dead letters.
pub struct Tracked {
    pub tracker: Arc<Tracker>,
    /// The records when the tracker does not keep them.
    loose: Vec<Event>,
}

impl Tracked {
    /// Tracks `batch`: `keep` when the sink has a dead-letter file (a letter holds its record,
    /// so the records stay until the batch is settled).
    pub fn batch(batch: crate::buffer::Batch, keep: bool) -> Tracked {
        let client_waits = batch.client_waits();
        let (events, done) = batch.into_parts();
        let records = events.len();
        let (kept, loose) = if keep {
            (Some(events), Vec::new())
        } else {
            (None, events)
        };
        Tracked {
            tracker: Tracker::build(done, records, kept, client_waits, None),
            loose,
        }
    }

    /// The batch's records, in order; record `i` is settled through `self.token(i)`.
    pub fn events(&self) -> &[Event] {
        if self.tracker.events.is_some() {
            self.tracker.events()
        } else {
            &self.loose
        }
    }

    /// The token of record `index`.
    pub fn token(&self, index: usize) -> Token {
        Token::new(&self.tracker, index)
    }
}

/// Tokens settled together: consecutive tokens of the same tracker (a sink's request holds
/// the records of one or two input batches, in order) become one [`Tracker::settle_many`].
///
/// Why: settling record by record cost an atomic read-modify-write per record on the answer
/// path, which at a few nanoseconds each was a measurable share of a no-ack run's CPU.
#[derive(Default)]
pub struct Settlement {
    runs: smallvec::SmallVec<[(Arc<Tracker>, usize); 2]>,
}

impl Settlement {
    /// Adds `token` to the settlement (nothing is settled before [`Settlement::settle`]).
    pub fn add(&mut self, token: &Token) {
        match self.runs.last_mut() {
            Some((tracker, shares)) if Arc::ptr_eq(tracker, &token.tracker) => *shares += 1,
            _ => self.runs.push((token.tracker.clone(), 1)),
        }
    }

    /// Settles every token added, as delivered (`ok`) or given up on.
    pub fn settle(self, ok: bool) {
        for (tracker, shares) in self.runs {
            tracker.settle_many(shares, ok);
        }
    }
}

/// One record: its batch's tracker and its place in the batch.
#[derive(Clone)]
pub struct Token {
    pub tracker: Arc<Tracker>,
    pub index: usize,
}

impl Token {
    /// Token `index` of `tracker`.
    pub fn new(tracker: &Arc<Tracker>, index: usize) -> Token {
        Token {
            tracker: tracker.clone(),
            index,
        }
    }

    pub fn settle(&self, ok: bool) {
        self.tracker.settle(ok);
    }

    /// The record itself, when the sink keeps records for dead letters.
    pub fn event(&self) -> Option<&Event> {
        self.tracker.event(self.index)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicU32;
    use std::time::Duration;

    use super::*;
    use crate::buffer::ack::{AckRef, AckWaiter};
    use crate::buffer::Batch;
    use crate::event::{EventTime, Map};

    fn batch(records: usize) -> (Vec<Event>, BatchDone, AckWaiter) {
        let (ack, waiter) = AckRef::new();
        let ev = Event::new("t".into(), EventTime::default(), Map::new());
        let (events, done) = Batch::new("t".into(), vec![ev; records], 10, Some(ack)).into_parts();
        (events, done, waiter)
    }

    async fn still_open(waiter: &mut std::pin::Pin<Box<impl std::future::Future<Output = bool>>>) {
        assert!(
            tokio::time::timeout(Duration::from_millis(20), waiter)
                .await
                .is_err(),
            "the batch is still open"
        );
    }

    #[tokio::test]
    async fn a_batch_completes_only_once_every_record_is_settled() {
        let (events, done, waiter) = batch(2);
        let tracker = Tracker::new(done, events.len(), None);
        tracker.settle(true);
        let mut waiter = Box::pin(waiter.wait());
        still_open(&mut waiter).await;
        tracker.settle(true);
        assert!(waiter.await);
    }

    #[tokio::test]
    async fn a_record_given_up_on_fails_the_batch() {
        let (events, done, waiter) = batch(2);
        let tracker = Tracker::new(done, events.len(), None);
        tracker.settle(false);
        tracker.settle(true);
        assert!(!waiter.wait().await, "a record given up on fails the ack");
    }

    #[tokio::test]
    async fn a_tracker_dropped_with_records_open_fails_its_batch_and_says_so_once() {
        let (events, done, waiter) = batch(3);
        let finished = Arc::new(AtomicU32::new(0));
        let seen = finished.clone();
        let tracker = Tracker::build(
            done,
            events.len(),
            None,
            false,
            Some(Box::new(move |ok| {
                assert!(!ok);
                seen.fetch_add(1, Ordering::SeqCst);
            })),
        );
        tracker.settle(true);
        drop(tracker);
        assert!(!waiter.wait().await);
        assert_eq!(finished.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_settlement_settles_runs_of_tokens_together_and_completes_each_batch_once() {
        let (events, done, first) = batch(3);
        let one = Tracker::new(done, events.len(), None);
        let (events, done, second) = batch(2);
        let two = Tracker::new(done, events.len(), None);
        let mut settlement = Settlement::default();
        for token in [
            Token::new(&one, 0),
            Token::new(&one, 1),
            Token::new(&two, 0),
            Token::new(&one, 2),
        ] {
            settlement.add(&token);
        }
        assert_eq!(settlement.runs.len(), 3, "one run per change of tracker");
        let mut first = Box::pin(first.wait());
        let mut second = Box::pin(second.wait());
        still_open(&mut first).await;
        settlement.settle(true);
        assert!(
            first.await,
            "all three records of the first batch are settled"
        );
        still_open(&mut second).await;
        let mut rest = Settlement::default();
        rest.add(&Token::new(&two, 1));
        rest.settle(false);
        assert!(!second.await, "a record given up on fails its batch");
        Settlement::default().settle(true);
    }

    #[tokio::test]
    async fn an_empty_batch_completes_at_once() {
        let (_, done, waiter) = batch(0);
        let _tracker = Tracker::new(done, 0, None);
        assert!(waiter.wait().await);
    }

    #[tokio::test]
    async fn a_records_own_tracker_settles_its_record_in_the_batch() {
        let (events, done, waiter) = batch(2);
        // One extra share: the sink's guard while it hands records out.
        let tracker = Tracker::new(done, events.len() + 1, Some(events));
        let first = tracker.record(0);
        let second = tracker.record(1);
        assert!(
            first.own_event().is_some(),
            "the record is kept for dead letters"
        );
        first.settle(true);
        second.settle(true);
        let mut waiter = Box::pin(waiter.wait());
        still_open(&mut waiter).await;
        tracker.settle(true);
        assert!(waiter.await);

        let (events, done, waiter) = batch(1);
        let tracker = Tracker::new(done, events.len(), None);
        tracker.record(0).settle(false);
        assert!(!waiter.wait().await, "a record's failure fails its batch");
    }

    #[tokio::test]
    async fn a_records_own_tracker_dropped_unsettled_fails_the_batch_once_all_are_gone() {
        let (events, done, waiter) = batch(1);
        let tracker = Tracker::new(done, events.len(), None);
        let own = tracker.record(0);
        drop(tracker);
        let mut waiter = Box::pin(waiter.wait());
        still_open(&mut waiter).await;
        drop(own);
        assert!(!waiter.await);
    }
}
