//! Which offsets the Kafka source may commit: per partition, the batches in the order they were
//! consumed, each settled when every sink it was routed to delivered it (or failed). The offset
//! to commit only moves past a batch once it and every earlier batch of that partition were
//! delivered, so a commit never skips an undelivered record, whatever order the sinks finish in.
//!
//! Partitions are tracked only while assigned: a revoked partition's state is dropped (after
//! its delivered offsets were committed), so a late acknowledgement for it commits nothing —
//! the partition's new owner decides its offsets from then on.

use std::collections::{HashMap, VecDeque};

/// A topic and partition.
pub type PartitionKey = (String, i32);

/// The batch ids are unique for the life of the source, so an acknowledgement for a batch of
/// an earlier assignment never matches an entry of a later one.
pub type BatchId = u64;

#[derive(Debug, Default)]
struct Partition {
    /// Batches not yet passed by the commit point, oldest first: (batch, offset after the
    /// batch's last record of this partition, settled).
    pending: VecDeque<(BatchId, i64, Settled)>,
    /// The next offset to commit (the offset after the last delivered record), once it moved.
    deliverable: Option<i64>,
    /// What was last handed out for committing.
    committed: Option<i64>,
    /// A batch of this partition was not delivered: nothing after it may be committed.
    stuck: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Settled {
    Waiting,
    Delivered,
    Failed,
}

/// The commit bookkeeping of every assigned partition.
#[derive(Debug, Default)]
pub struct Offsets {
    partitions: HashMap<PartitionKey, Partition>,
    next_batch: BatchId,
    /// Batches handed to the router and not settled yet.
    in_flight: usize,
}

impl Offsets {
    /// Starts tracking newly assigned partitions.
    pub fn assign<'a>(&mut self, partitions: impl IntoIterator<Item = (&'a str, i32)>) {
        for (topic, partition) in partitions {
            self.partitions
                .entry((topic.to_string(), partition))
                .or_default();
        }
    }

    /// Whether records of this partition may be routed (it is assigned to this consumer).
    pub fn is_assigned(&self, topic: &str, partition: i32) -> bool {
        self.partitions
            .keys()
            .any(|(t, p)| *p == partition && t == topic)
    }

    /// Registers a batch holding records of `ends`: each partition with the offset after its
    /// last record in the batch. Partitions not assigned are left out (their records are not
    /// routed). Returns the batch's id.
    pub fn register(&mut self, ends: &[(PartitionKey, i64)]) -> BatchId {
        self.next_batch += 1;
        let id = self.next_batch;
        for (key, end) in ends {
            if let Some(partition) = self.partitions.get_mut(key) {
                partition.pending.push_back((id, *end, Settled::Waiting));
            }
        }
        self.in_flight += 1;
        id
    }

    /// Records the outcome of batch `id`; returns the partitions that just became stuck (an
    /// undelivered batch), to be logged.
    pub fn settle(&mut self, id: BatchId, delivered: bool) -> Vec<PartitionKey> {
        self.in_flight = self.in_flight.saturating_sub(1);
        let mut stuck = Vec::new();
        for (key, partition) in self.partitions.iter_mut() {
            let Some(entry) = partition.pending.iter_mut().find(|(b, _, _)| *b == id) else {
                continue;
            };
            entry.2 = if delivered {
                Settled::Delivered
            } else {
                Settled::Failed
            };
            while let Some(&(_, end, settled)) = partition.pending.front() {
                match settled {
                    Settled::Delivered if !partition.stuck => {
                        partition.deliverable = Some(end);
                        partition.pending.pop_front();
                    }
                    Settled::Failed if !partition.stuck => {
                        partition.stuck = true;
                        stuck.push(key.clone());
                        break;
                    }
                    _ => break,
                }
            }
        }
        stuck.sort();
        stuck
    }

    /// The offsets that moved since the last call, to commit, marked as handed out.
    pub fn take_commits(&mut self) -> Vec<(PartitionKey, i64)> {
        self.take_where(|_| true)
    }

    /// As [`Offsets::take_commits`] for the given partitions only, which then stop being
    /// tracked (a revocation: their delivered offsets are committed once, and nothing after).
    pub fn revoke(&mut self, revoked: &[PartitionKey]) -> Vec<(PartitionKey, i64)> {
        let commits = self.take_where(|key| revoked.contains(key));
        for key in revoked {
            self.partitions.remove(key);
        }
        commits
    }

    fn take_where(&mut self, wanted: impl Fn(&PartitionKey) -> bool) -> Vec<(PartitionKey, i64)> {
        let mut out = Vec::new();
        for (key, partition) in self.partitions.iter_mut() {
            if !wanted(key) {
                continue;
            }
            if let Some(next) = partition.deliverable {
                if partition.committed != Some(next) {
                    partition.committed = Some(next);
                    out.push((key.clone(), next));
                }
            }
        }
        out.sort();
        out
    }

    /// Batches routed and not settled yet.
    pub fn in_flight(&self) -> usize {
        self.in_flight
    }

    /// Every assigned partition.
    pub fn assigned(&self) -> Vec<PartitionKey> {
        let mut keys: Vec<PartitionKey> = self.partitions.keys().cloned().collect();
        keys.sort();
        keys
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(p: i32) -> PartitionKey {
        ("t".to_string(), p)
    }

    #[test]
    fn commits_move_in_order_only_past_delivered_batches() {
        let mut o = Offsets::default();
        o.assign([("t", 0), ("t", 1)]);
        let a = o.register(&[(key(0), 10), (key(1), 5)]);
        let b = o.register(&[(key(0), 20)]);
        let c = o.register(&[(key(0), 30), (key(1), 8)]);
        // The later batches finish first: nothing can be committed for partition 0 yet.
        o.settle(c, true);
        o.settle(b, true);
        assert_eq!(o.take_commits(), vec![]);
        o.settle(a, true);
        assert_eq!(o.take_commits(), vec![(key(0), 30), (key(1), 8)]);
        assert_eq!(o.take_commits(), vec![], "handed out once");
        assert_eq!(o.in_flight(), 0);
    }

    #[test]
    fn a_failed_batch_stops_its_partitions_for_good() {
        let mut o = Offsets::default();
        o.assign([("t", 0), ("t", 1)]);
        let a = o.register(&[(key(0), 10)]);
        let b = o.register(&[(key(0), 20), (key(1), 3)]);
        let c = o.register(&[(key(0), 30), (key(1), 6)]);
        o.settle(a, true);
        assert_eq!(o.settle(b, false), vec![key(0), key(1)]);
        o.settle(c, true);
        assert_eq!(o.take_commits(), vec![(key(0), 10)]);
    }

    #[test]
    fn revoked_partitions_commit_what_was_delivered_and_ignore_late_acks() {
        let mut o = Offsets::default();
        o.assign([("t", 0), ("t", 1)]);
        let a = o.register(&[(key(0), 10), (key(1), 4)]);
        let b = o.register(&[(key(0), 20)]);
        o.settle(a, true);
        assert_eq!(o.revoke(&[key(0)]), vec![(key(0), 10)]);
        assert!(!o.is_assigned("t", 0));
        assert!(o.is_assigned("t", 1));
        o.settle(b, true);
        assert_eq!(o.take_commits(), vec![(key(1), 4)]);
        // Assigned again later: a fresh start, the old batch is not matched.
        o.assign([("t", 0)]);
        let c = o.register(&[(key(0), 25)]);
        o.settle(b, true);
        assert_eq!(o.take_commits(), vec![]);
        o.settle(c, true);
        assert_eq!(o.take_commits(), vec![(key(0), 25)]);
    }

    #[test]
    fn records_of_unassigned_partitions_are_not_tracked() {
        let mut o = Offsets::default();
        o.assign([("t", 1)]);
        let a = o.register(&[(key(0), 10), (key(1), 2)]);
        o.settle(a, true);
        assert_eq!(o.take_commits(), vec![(key(1), 2)]);
    }
}
