//! Which upstream acknowledgements a Kinesis answer settles: each user record holds a
//! [`Token`] of its input batch's [`Tracker`](crate::sink::settle::Tracker) (see
//! [`crate::sink::settle`]), and each Kinesis entry the [`Tokens`] of the user records it
//! carries (one, or an aggregate's).

use std::sync::Arc;

use smallvec::SmallVec;

use super::metrics::SentTally;
use crate::sink::settle::{Settlement, Token};

/// The tokens of an entry's user records: inline for one (an unaggregated record), on the heap
/// for an aggregate's.
pub(super) type Users = SmallVec<[Token; 1]>;

/// What travels with a Kinesis entry: the trackers of its user records (one per record, in
/// order), how often it was retried, and the shard it was aggregated for.
pub(super) struct Tokens {
    pub(super) users: Users,
    pub(super) attempts: u32,
    /// The shard the entry is expected to land on, when it comes from the aggregators.
    pub(super) expected: Option<Expected>,
    /// What Kinesis counts for the entry (data + partition key), for the metrics.
    pub(super) size: usize,
}

impl Tokens {
    pub(super) fn settle(&self, ok: bool) {
        for user in &self.users {
            user.settle(ok);
        }
    }

    /// Whether a client is blocked until one of these records is acknowledged.
    pub(super) fn client_waits(&self) -> bool {
        self.users.iter().any(|user| user.tracker.client_waits())
    }

    /// Whether the entry was predicted to land on a shard other than `shard_id`: the stream was
    /// resharded since the shard map it was built from. For an aggregate (more than one user
    /// record) that matters: a KCL consumer drops it whole if any of its user records is
    /// outside the shard's range.
    pub(super) fn landed_elsewhere(&self, shard_id: &str) -> bool {
        self.expected
            .as_ref()
            .is_some_and(|expected| *expected.shard_id != *shard_id)
    }
}

/// Where the aggregators predicted an entry to land: the shard map it was built from (its
/// epoch) and the shard's id.
pub(super) struct Expected {
    pub(super) epoch: u64,
    pub(super) shard_id: Arc<str>,
}

/// The entries one answer delivered: counted and settled together once the whole answer is
/// read ([`SentTally`], [`Settlement`]), so the counters and the trackers take one atomic update
/// per answer instead of several per entry.
#[derive(Default)]
pub(super) struct Delivered {
    pub(super) tally: SentTally,
    pub(super) settlement: Settlement,
}

impl Delivered {
    pub(super) fn add(&mut self, tokens: &Tokens) {
        self.tally.add(tokens.size, tokens.users.len());
        for user in &tokens.users {
            self.settlement.add(user);
        }
    }
}
