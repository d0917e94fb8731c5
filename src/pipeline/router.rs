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
pub struct Router {
    transforms: Mutex<Vec<TransformStage>>,
    sinks: Vec<SinkRoute>,
    metrics: ComponentMetrics,
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
        let events = self.apply_transforms(0, &tag, events);
        self.dispatch(tag, events, bytes, ack).await
    }

    fn apply_transforms(&self, from: usize, tag: &str, mut events: Vec<Event>) -> Vec<Event> {
        let Ok(mut stages) = self.transforms.lock() else {
            return events;
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
        events
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
                let group = self.apply_transforms(i + 1, &tag, group);
                let bytes = group.len() * FLUSHED_RECORD_WEIGHT;
                self.dispatch(tag, group, bytes, None).await?;
            }
        }
        Ok(())
    }
}
