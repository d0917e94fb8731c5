//! Routing: records run through the transforms whose `match` accepts their tag, then go to the
//! queue of every sink whose `match` accepts it.

use std::sync::Mutex;
use std::time::Instant;

use crate::buffer::{AckRef, Batch, Closed, QueueSender};
use crate::event::{Event, Tag};
use crate::metrics::ComponentMetrics;
use crate::route::TagMatcher;
use crate::transform::Transform;

/// Queue weight, in bytes, of each record a transform releases on flush. Those records no
/// longer have the wire size their source counted (their frames were accounted, and released,
/// when the chunks first passed through), so they are charged a nominal size to still count
/// against the sink's bound.
const FLUSHED_RECORD_WEIGHT: usize = 256;

/// A transform with its match rule.
pub struct TransformStage {
    pub name: String,
    pub matcher: TagMatcher,
    pub transform: Box<dyn Transform>,
    pub metrics: ComponentMetrics,
}

/// A sink's queue with its match rule.
pub struct SinkRoute {
    pub name: String,
    pub matcher: TagMatcher,
    pub queue: QueueSender,
}

/// Shared by every source: applies transforms and hands records to sink queues.
///
/// A transform may hold records back (a partial line waiting for its next chunk). The message
/// they came from must not be acknowledged before they are delivered, so while anything is held
/// the router keeps a share of each such message's acknowledgement in `held_acks` and ties
/// those shares to every batch it dispatches until nothing is held any more: the held records
/// are in one of those batches, so the acknowledgements complete only once all of them did.
pub struct Router {
    transforms: Mutex<Vec<TransformStage>>,
    sinks: Vec<SinkRoute>,
    metrics: ComponentMetrics,
    held_acks: Mutex<Vec<AckRef>>,
}

impl Router {
    pub fn new(
        transforms: Vec<TransformStage>,
        sinks: Vec<SinkRoute>,
        metrics: ComponentMetrics,
    ) -> Router {
        Router {
            transforms: Mutex::new(transforms),
            sinks,
            metrics,
            held_acks: Mutex::new(Vec::new()),
        }
    }

    /// Routes records of one tag. Waits while a target sink's queue is full (backpressure).
    ///
    /// `ack`, when given, completes once every sink the records went to delivered them. Records
    /// that no sink matches are counted as dropped (`unmatched`) and acknowledged: they were
    /// handled as configured.
    pub async fn submit(
        &self,
        tag: Tag,
        events: Vec<Event>,
        bytes: usize,
        ack: Option<AckRef>,
    ) -> Result<(), Closed> {
        let (events, holding) = self.apply_transforms(0, &tag, events);
        let ack = self.tie_held_acks(ack, holding);
        self.dispatch(tag, events, bytes, ack).await
    }

    /// Runs `events` through the transforms from stage `from` on; also says whether any
    /// transform holds records afterwards.
    fn apply_transforms(
        &self,
        from: usize,
        tag: &str,
        mut events: Vec<Event>,
    ) -> (Vec<Event>, bool) {
        let Ok(mut stages) = self.transforms.lock() else {
            return (events, false);
        };
        for stage in stages.iter_mut().skip(from) {
            if events.is_empty() {
                break;
            }
            if stage.matcher.matches(tag) {
                stage.metrics.records_in.inc_by(events.len() as u64);
                stage.transform.apply(&mut events);
                stage.metrics.records_out.inc_by(events.len() as u64);
            }
        }
        let holding = any_holding(&stages);
        (events, holding)
    }

    fn holding(&self) -> bool {
        self.transforms
            .lock()
            .map(|stages| any_holding(&stages))
            .unwrap_or(false)
    }

    /// Lets go of the router's shares of held acknowledgements: nothing is held any more, and
    /// the batches that carried them decide.
    fn release_held_acks(&self) {
        if let Ok(mut held) = self.held_acks.lock() {
            release(&mut held);
        }
    }

    /// The acknowledgement for the next dispatched batch. While transforms hold records, the
    /// message's `ack` keeps a share in `held_acks`, and the batch carries the outcome to every
    /// held share as well; once nothing is held (`holding` false), the router's own shares are
    /// let go, leaving the batches that carry them to decide.
    fn tie_held_acks(&self, ack: Option<AckRef>, holding: bool) -> Option<AckRef> {
        let Ok(mut held) = self.held_acks.lock() else {
            return ack;
        };
        if held.is_empty() && !holding {
            return ack;
        }
        let mut carried: Vec<AckRef> = held.iter().cloned().collect();
        if let Some(ack) = ack {
            if holding {
                held.push(ack.clone());
            }
            carried.push(ack);
        }
        if !holding {
            release(&mut held);
        }
        if carried.is_empty() {
            return None;
        }
        Some(join_acks(carried))
    }

    async fn dispatch(
        &self,
        tag: Tag,
        mut events: Vec<Event>,
        bytes: usize,
        ack: Option<AckRef>,
    ) -> Result<(), Closed> {
        if events.is_empty() {
            if let Some(ack) = ack {
                ack.complete();
            }
            return Ok(());
        }
        let targets: Vec<usize> = (0..self.sinks.len())
            .filter(|&i| self.sinks[i].matcher.matches(&tag))
            .collect();
        if targets.is_empty() {
            self.metrics.dropped("unmatched", events.len() as u64);
            if let Some(ack) = ack {
                ack.complete();
            }
            return Ok(());
        }
        let last = targets.len() - 1;
        for (n, &i) in targets.iter().enumerate() {
            let batch_events = if n < last {
                events.clone()
            } else {
                std::mem::take(&mut events)
            };
            let batch = Batch::new(tag.clone(), batch_events, bytes, ack.clone());
            self.sinks[i].queue.send(batch).await?;
        }
        if let Some(ack) = ack {
            ack.complete();
        }
        Ok(())
    }

    /// Emits what transforms hold back (partial messages) once it is older than their timeout,
    /// or everything when `force` (shutdown), through the remaining transforms to the sinks.
    pub async fn flush_transforms(&self, force: bool) -> Result<(), Closed> {
        let now = Instant::now();
        let count = self.transforms.lock().map(|s| s.len()).unwrap_or(0);
        for i in 0..count {
            let mut held = Vec::new();
            if let Ok(mut stages) = self.transforms.lock() {
                if let Some(stage) = stages.get_mut(i) {
                    stage.transform.flush(now, force, &mut held);
                    stage.metrics.records_out.inc_by(held.len() as u64);
                }
            }
            // Group consecutive records of one tag, as sources do.
            let mut rest = held.into_iter().peekable();
            while let Some(first) = rest.next() {
                let tag = first.tag.clone();
                let mut group = vec![first];
                while let Some(next) = rest.next_if(|e| e.tag == tag) {
                    group.push(next);
                }
                let (group, _) = self.apply_transforms(i + 1, &tag, group);
                let bytes = group.len() * FLUSHED_RECORD_WEIGHT;
                let ack = self.tie_held_acks(None, true);
                self.dispatch(tag, group, bytes, ack).await?;
            }
        }
        // Everything released has been dispatched: acknowledgements waiting only for released
        // records now rest on the batches that carry them.
        if !self.holding() {
            self.release_held_acks();
        }
        Ok(())
    }
}

fn any_holding(stages: &[TransformStage]) -> bool {
    stages.iter().any(|s| s.transform.holds_records())
}

fn release(held: &mut Vec<AckRef>) {
    for share in held.drain(..) {
        share.complete();
    }
}

/// One acknowledgement standing for several: when it resolves, each of `acks` completes (or
/// fails) with it.
fn join_acks(mut acks: Vec<AckRef>) -> AckRef {
    if acks.len() == 1 {
        if let Some(ack) = acks.pop() {
            return ack;
        }
    }
    let (ack, waiter) = AckRef::new();
    tokio::spawn(async move {
        let delivered = waiter.wait().await;
        for a in acks {
            if delivered {
                a.complete();
            } else {
                a.fail();
            }
        }
    });
    ack
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use bytes::Bytes;

    use super::*;
    use crate::buffer::{memory, AckWaiter, QueueReceiver};
    use crate::event::{EventTime, Map, Value};
    use crate::metrics::Metrics;
    use crate::transform::partial_message::PartialMessage;

    fn router() -> (Router, QueueReceiver) {
        let metrics = Metrics::new();
        let component = metrics.component("out", "sink");
        let (queue, rx) = memory::queue(1 << 20, component.queue_bytes.clone());
        let transform = PartialMessage::build(toml::from_str("flush_timeout = \"1h\"").unwrap())
            .map_err(|e| format!("{e:?}"))
            .unwrap();
        let router = Router::new(
            vec![TransformStage {
                name: "partial".into(),
                matcher: TagMatcher::glob("*"),
                transform: Box::new(transform),
                metrics: metrics.component("partial", "transform"),
            }],
            vec![SinkRoute {
                name: "out".into(),
                matcher: TagMatcher::glob("*"),
                queue,
            }],
            metrics.component("router", "router"),
        );
        (router, rx)
    }

    /// A Docker chunk of line `id`.
    fn chunk(ordinal: u64, last: bool, log: &str) -> Vec<Event> {
        let mut m = Map::new();
        m.insert("log", Value::Str(Bytes::copy_from_slice(log.as_bytes())));
        m.insert("partial_message", Value::from("true"));
        m.insert("partial_id", Value::from("a"));
        m.insert("partial_ordinal", Value::from(ordinal.to_string()));
        m.insert(
            "partial_last",
            Value::from(if last { "true" } else { "false" }),
        );
        vec![Event::new("app".into(), EventTime::new(1, 0), m)]
    }

    async fn submit(router: &Router, events: Vec<Event>) -> AckWaiter {
        let (ack, waiter) = AckRef::new();
        router
            .submit("app".into(), events, 10, Some(ack))
            .await
            .unwrap();
        waiter
    }

    async fn still_open(waiter: &mut std::pin::Pin<Box<impl std::future::Future<Output = bool>>>) {
        assert!(
            tokio::time::timeout(Duration::from_millis(100), waiter.as_mut())
                .await
                .is_err(),
            "the acknowledgement resolved while its records were not delivered"
        );
    }

    async fn resolved(waiter: std::pin::Pin<Box<impl std::future::Future<Output = bool>>>) -> bool {
        tokio::time::timeout(Duration::from_secs(5), waiter)
            .await
            .expect("the acknowledgement resolves")
    }

    #[tokio::test]
    async fn a_message_whose_chunk_is_held_is_acknowledged_only_once_the_joined_line_is_delivered()
    {
        let (router, mut rx) = router();
        let mut first = Box::pin(submit(&router, chunk(1, false, "hel")).await.wait());
        still_open(&mut first).await;
        let mut second = Box::pin(submit(&router, chunk(2, true, "lo")).await.wait());
        let batch = rx.recv().await.expect("the joined line");
        assert_eq!(batch.events.len(), 1);
        assert_eq!(
            batch.events[0].record.get(b"log"),
            Some(&Value::from("hello"))
        );
        still_open(&mut first).await;
        still_open(&mut second).await;
        batch.complete();
        assert!(resolved(first).await);
        assert!(resolved(second).await);
    }

    #[tokio::test]
    async fn a_held_message_whose_line_fails_is_not_acknowledged_as_delivered() {
        let (router, mut rx) = router();
        let first = Box::pin(submit(&router, chunk(1, false, "hel")).await.wait());
        let second = Box::pin(submit(&router, chunk(2, true, "lo")).await.wait());
        rx.recv().await.expect("the joined line").fail();
        assert!(!resolved(first).await);
        assert!(!resolved(second).await);
    }

    #[tokio::test]
    async fn chunks_released_by_a_flush_carry_their_message_acknowledgement() {
        let (router, mut rx) = router();
        let mut first = Box::pin(submit(&router, chunk(1, false, "hel")).await.wait());
        router.flush_transforms(true).await.unwrap();
        let batch = rx.recv().await.expect("the unjoined chunk");
        still_open(&mut first).await;
        batch.complete();
        assert!(resolved(first).await);
        // Nothing is held any more: a plain message is acknowledged with its own batch alone.
        let mut m = Map::new();
        m.insert("log", Value::from("plain"));
        let plain = Box::pin(
            submit(
                &router,
                vec![Event::new("app".into(), EventTime::new(1, 0), m)],
            )
            .await
            .wait(),
        );
        rx.recv().await.expect("the plain line").complete();
        assert!(resolved(plain).await);
    }

    /// The lean record path: a record whose tag no transform takes reaches the sink still in
    /// its msgpack form, never parsed; the same record under a matched tag is parsed.
    #[tokio::test]
    async fn records_no_transform_takes_stay_unparsed() {
        let metrics = Metrics::new();
        let (queue, mut rx) = memory::queue(1 << 20, metrics.component("out", "sink").queue_bytes);
        let stages = [
            ("parser", "[[parsers]]\nformat = \"json\""),
            ("nest", "operation = \"lift\"\nnested_under = \"k\""),
            ("modify", "set = { a = \"b\" }"),
        ]
        .into_iter()
        .map(|(kind, options)| TransformStage {
            name: kind.into(),
            matcher: TagMatcher::glob("app.*"),
            transform: crate::transform::build(kind, options.parse::<toml::Table>().unwrap())
                .map_err(|e| format!("{e:?}"))
                .unwrap(),
            metrics: metrics.component(kind, "transform"),
        })
        .collect();
        let router = Router::new(
            stages,
            vec![SinkRoute {
                name: "out".into(),
                matcher: TagMatcher::glob("*"),
                queue,
            }],
            metrics.component("router", "router"),
        );
        for tag in ["other", "app.web"] {
            let mut record = Map::new();
            record.insert("log", Value::from("{\"x\":1}"));
            let mut events = vec![Event::new(tag.into(), EventTime::new(1, 0), record)];
            crate::event::pack(&mut events);
            router.submit(tag.into(), events, 10, None).await.unwrap();
        }
        let untouched = rx.recv().await.expect("the other record");
        assert!(untouched.events[0].record.raw().is_some());
        assert!(!untouched.events[0].record.is_parsed(), "never parsed");
        let parsed = rx.recv().await.expect("the app record");
        assert_eq!(parsed.events[0].record.get(b"x"), Some(&Value::Int(1)));
        assert_eq!(parsed.events[0].record.get(b"a"), Some(&Value::from("b")));
    }
}
