//! Delivery acknowledgements that span several sinks.
//!
//! A source that must answer its client (forward `chunk` acks, a tail checkpoint) asks for an
//! [`AckWaiter`]. Every sink copy of the records holds an [`AckRef`]; the waiter resolves when
//! the last reference is gone, with `true` only if every sink called [`AckRef::complete`]. A
//! reference dropped without completing (shutdown deadline, a crash of a sink task) counts as a
//! failure, so an ack is never sent for records that were not delivered.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::oneshot;

struct AckInner {
    failed: AtomicBool,
    tx: Mutex<Option<oneshot::Sender<bool>>>,
    /// A client is blocked until this resolves (a forward client waiting for its `chunk` ack),
    /// rather than a source that only records progress (a tail checkpoint): sinks then send
    /// what they hold at once instead of letting it wait for fuller batches.
    client_waits: bool,
    /// Released when the last holder is done (see [`AckRef::holding`]).
    _held: Option<Box<dyn Send + Sync>>,
}

impl Drop for AckInner {
    fn drop(&mut self) {
        let ok = !self.failed.load(Ordering::Acquire);
        if let Ok(mut tx) = self.tx.lock() {
            if let Some(tx) = tx.take() {
                let _ = tx.send(ok);
            }
        }
    }
}

/// One holder's share of an acknowledgement.
pub struct AckRef {
    inner: Option<Arc<AckInner>>,
}

impl AckRef {
    /// A new acknowledgement with its first reference and the waiter for the result; a client
    /// is blocked until it resolves.
    pub fn new() -> (AckRef, AckWaiter) {
        Self::new_inner(true, None)
    }

    /// An acknowledgement nobody is blocked on: the source only records its progress when it
    /// resolves (a tail checkpoint), so sinks may keep filling batches meanwhile.
    pub fn for_progress() -> (AckRef, AckWaiter) {
        Self::new_inner(false, None)
    }

    /// An acknowledgement that holds `held` until every holder is done with the records
    /// (delivered or failed): the share of a source's read-ahead budget they use. With
    /// `source_waits`, the source stops reading until the acknowledgement resolves (its budget
    /// is nearly spent), and sinks treat it as a waiting client: they send what they hold once
    /// nothing more is queued instead of waiting for `flush`.
    pub fn holding(held: impl Send + Sync + 'static, source_waits: bool) -> (AckRef, AckWaiter) {
        Self::new_inner(source_waits, Some(Box::new(held)))
    }

    fn new_inner(client_waits: bool, held: Option<Box<dyn Send + Sync>>) -> (AckRef, AckWaiter) {
        let (tx, rx) = oneshot::channel();
        let inner = Arc::new(AckInner {
            failed: AtomicBool::new(false),
            tx: Mutex::new(Some(tx)),
            client_waits,
            _held: held,
        });
        (AckRef { inner: Some(inner) }, AckWaiter { rx })
    }

    /// Whether a client is blocked until this acknowledgement resolves.
    pub fn client_waits(&self) -> bool {
        self.inner.as_ref().is_some_and(|inner| inner.client_waits)
    }

    /// This holder delivered its records.
    pub fn complete(mut self) {
        self.inner.take();
    }

    /// This holder could not deliver its records.
    pub fn fail(mut self) {
        if let Some(inner) = self.inner.take() {
            inner.failed.store(true, Ordering::Release);
        }
    }
}

impl Clone for AckRef {
    fn clone(&self) -> Self {
        AckRef {
            inner: self.inner.clone(),
        }
    }
}

impl Drop for AckRef {
    fn drop(&mut self) {
        if let Some(inner) = self.inner.take() {
            inner.failed.store(true, Ordering::Release);
        }
    }
}

/// Resolves to `true` once every holder completed, `false` if any failed.
pub struct AckWaiter {
    rx: oneshot::Receiver<bool>,
}

impl AckWaiter {
    pub async fn wait(self) -> bool {
        self.rx.await.unwrap_or(false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn resolves_true_when_all_complete() {
        let (a, waiter) = AckRef::new();
        let b = a.clone();
        a.complete();
        b.complete();
        assert!(waiter.wait().await);
    }

    #[tokio::test]
    async fn one_failure_or_drop_fails_the_ack() {
        let (a, waiter) = AckRef::new();
        let b = a.clone();
        a.complete();
        b.fail();
        assert!(!waiter.wait().await);

        let (a, waiter) = AckRef::new();
        drop(a);
        assert!(!waiter.wait().await);
    }

    #[tokio::test]
    async fn what_an_ack_holds_is_released_when_the_last_holder_is_done() {
        let budget = Arc::new(tokio::sync::Semaphore::new(10));
        let permit = budget.clone().try_acquire_many_owned(10).unwrap();
        let (a, waiter) = AckRef::holding(permit, false);
        assert!(!a.client_waits());
        let b = a.clone();
        a.complete();
        assert_eq!(
            budget.available_permits(),
            0,
            "one holder still has the records"
        );
        b.complete();
        assert_eq!(budget.available_permits(), 10);
        assert!(waiter.wait().await);
    }
}
