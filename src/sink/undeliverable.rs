//! The one step every sink takes with a record it can never deliver as it is (it cannot be
//! encoded, it is too large, the service refuses it for good, it ran out of retries).
//!
//! With `dead_letter_path` the record goes to the sink's dead-letter file
//! ([`super::dead_letter`]) and is settled once the letter is on disk (as failed if it could not
//! be written, so the batch is not acknowledged). Without one it is counted in
//! `logferry_dropped_records_total{reason}` and settled at once. Either way the sink logs it,
//! at most once per interval per reason with the number of repeats suppressed, so a stream of
//! bad records cannot flood the log.

use std::fmt;

use super::dead_letter::{DeadLetters, Letter};
use super::settle::{Token, Tracker};
use super::SinkContext;
use crate::metrics::ComponentMetrics;

/// Why a record cannot be delivered.
pub struct Why<'a> {
    /// The dead letter's `reason` ([`super::dead_letter::reason`]).
    pub reason: &'static str,
    /// The `reason` label of `logferry_dropped_records_total` when there is no dead-letter
    /// file (usually `reason` itself; kept apart where a sink's documented label differs).
    pub dropped_as: &'static str,
    /// What went wrong, as the sink or the service said it (kept in the dead letter).
    pub error: &'a dyn fmt::Display,
    /// What happened, for the log line (`"PutRecords refused the record"`).
    pub what: &'a str,
    /// Where the record was going or came from (`` "stream `logs`" ``, `` "topic `app`" ``,
    /// `` "tag `app`" ``): in the log line, and before the error in the dead letter.
    pub target: &'a str,
    /// The records' tag, when the sink knows it (logged; a dead letter keeps its record's).
    pub tag: &'a str,
    /// How a dropped record is settled: `true` acknowledges it (it was counted and logged and
    /// will never be deliverable), `false` fails its batch (the client may send it again).
    pub ack_dropped: bool,
}

impl<'a> Why<'a> {
    /// A record dropped (or dead-lettered) for `reason`, counted under the same label and
    /// acknowledged.
    pub fn new(
        reason: &'static str,
        what: &'a str,
        target: &'a str,
        error: &'a dyn fmt::Display,
    ) -> Why<'a> {
        Why {
            reason,
            dropped_as: reason,
            error,
            what,
            target,
            tag: "",
            ack_dropped: true,
        }
    }

    /// The same, for records with this tag.
    pub fn tagged(self, tag: &'a str) -> Why<'a> {
        Why { tag, ..self }
    }
}

/// What a sink does with records it gives up on; one per sink, from its [`SinkContext`].
#[derive(Clone)]
pub struct Undeliverable {
    name: String,
    metrics: ComponentMetrics,
    dead_letters: Option<DeadLetters>,
}

/// What became of records given up on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    DeadLettered,
    Dropped,
}

impl Undeliverable {
    pub fn new(cx: &SinkContext) -> Undeliverable {
        Undeliverable {
            name: cx.name.clone(),
            metrics: cx.metrics.clone(),
            dead_letters: cx.dead_letters.clone(),
        }
    }

    /// Without a dead-letter file or a registry: for unit tests of sinks.
    #[cfg(test)]
    pub fn detached(name: &str) -> Undeliverable {
        Undeliverable {
            name: name.to_string(),
            metrics: ComponentMetrics::detached(name, "sink"),
            dead_letters: None,
        }
    }

    /// Whether records go to a dead-letter file (then sinks keep each batch's records until it
    /// is settled, since a letter holds the record).
    pub fn keeps_records(&self) -> bool {
        self.dead_letters.is_some()
    }

    /// The sink's dead-letter file, to wait for its writes at shutdown.
    pub fn dead_letters(&self) -> Option<&DeadLetters> {
        self.dead_letters.as_ref()
    }

    /// Gives up on records, each known by its [`Token`].
    pub fn give_up(&self, records: impl IntoIterator<Item = Token>, why: &Why<'_>) -> Outcome {
        self.give_up_each(records, why, |token, ok| token.settle(ok), Token::event)
    }

    /// Gives up on one record known by its own tracker ([`Tracker::record`]).
    pub fn give_up_tracked(&self, record: std::sync::Arc<Tracker>, why: &Why<'_>) -> Outcome {
        self.give_up_each(
            std::iter::once(record),
            why,
            |tracker, ok| tracker.settle(ok),
            |tracker| tracker.own_event(),
        )
    }

    fn give_up_each<R: Send + Sync + 'static>(
        &self,
        records: impl IntoIterator<Item = R>,
        why: &Why<'_>,
        settle: fn(&R, bool),
        event: fn(&R) -> Option<&crate::event::Event>,
    ) -> Outcome {
        let mut count = 0u64;
        let outcome = match &self.dead_letters {
            Some(dead_letters) => {
                let error = if why.target.is_empty() {
                    why.error.to_string()
                } else {
                    format!("{}: {}", why.target, why.error)
                };
                for record in records {
                    count += 1;
                    let Some(letter_event) = event(&record).cloned() else {
                        // Unreachable: sinks keep records whenever a dead-letter file is set.
                        settle(&record, false);
                        continue;
                    };
                    dead_letters.send(Letter {
                        reason: why.reason,
                        error: Some(error.clone()),
                        event: letter_event,
                        on_written: Box::new(move |ok| settle(&record, ok)),
                    });
                }
                Outcome::DeadLettered
            }
            None => {
                for record in records {
                    count += 1;
                    settle(&record, why.ack_dropped);
                }
                self.metrics.dropped(why.dropped_as, count);
                Outcome::Dropped
            }
        };
        self.log(why, count, outcome);
        outcome
    }

    fn log(&self, why: &Why<'_>, records: u64, outcome: Outcome) {
        let key = match outcome {
            Outcome::DeadLettered => "dead_letter",
            Outcome::Dropped => "dropped",
        };
        let Some(suppressed) =
            crate::log_limit::allow(&self.name, &format!("{key}_{}", why.reason))
        else {
            return;
        };
        match outcome {
            Outcome::DeadLettered => {
                tracing::warn!(sink = %self.name, target = why.target, tag = %why.tag,
                records, suppressed, reason = why.reason, error = %why.error,
                "{}: written to the dead-letter file", why.what)
            }
            Outcome::Dropped => {
                tracing::error!(sink = %self.name, target = why.target, tag = %why.tag,
                records, suppressed, reason = why.dropped_as, error = %why.error,
                "{}: record dropped (set dead_letter_path to keep such records)", why.what)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::buffer::ack::AckRef;
    use crate::buffer::Batch;
    use crate::event::{Event, EventTime, Map};

    fn tracked(records: usize) -> (std::sync::Arc<Tracker>, crate::buffer::ack::AckWaiter) {
        let (ack, waiter) = AckRef::new();
        let ev = Event::new("t".into(), EventTime::default(), Map::new());
        let (events, done) = Batch::new("t".into(), vec![ev; records], 10, Some(ack)).into_parts();
        (Tracker::new(done, events.len(), None), waiter)
    }

    #[tokio::test]
    async fn without_a_dead_letter_file_records_are_counted_and_settled() {
        let undeliverable = Undeliverable::detached("s");
        let (tracker, waiter) = tracked(3);
        let outcome = undeliverable.give_up(
            [Token::new(&tracker, 0), Token::new(&tracker, 1)],
            &Why::new("too_large", "record too large", "stream s", &"1 MiB"),
        );
        assert_eq!(outcome, Outcome::Dropped);
        assert_eq!(undeliverable.metrics.dropped_count("too_large"), 2);
        tracker.settle(true);
        assert!(waiter.wait().await, "dropped records are acknowledged");
    }

    #[tokio::test]
    async fn a_drop_that_must_not_be_acknowledged_fails_the_batch_under_its_own_label() {
        let undeliverable = Undeliverable::detached("s");
        let (tracker, waiter) = tracked(1);
        undeliverable.give_up_tracked(
            tracker.record(0),
            &Why {
                dropped_as: "invalid_record",
                ack_dropped: false,
                ..Why::new("invalid", "refused", "topic `t`", &"INVALID_RECORD")
            },
        );
        assert_eq!(undeliverable.metrics.dropped_count("invalid_record"), 1);
        assert_eq!(undeliverable.metrics.dropped_count("invalid"), 0);
        drop(tracker);
        assert!(!waiter.wait().await);
    }
}
