//! The shard map changing under the sink: listing the shards again, regrouping aggregates
//! built from the old map, and aggregates that landed on another shard than predicted.

use tokio::time::Instant;

use super::super::aggregators::ShardAggregators;
use super::super::api::{self, CallError};
use super::super::batch::{Entry, Rejected};
use super::super::rate_limit::ShardLimiter;
use super::super::settle::Tokens;
use super::super::shard_map::ShardMap;
use super::super::ShardRateLimit;
use crate::kinesis_record::kpl;
use crate::kinesis_record::{hash_key, Record};

use super::Task;

impl Task {
    /// Aggregates the user records of an aggregated entry again by the current shard map
    /// (one that failed, or landed on another shard, after the map changed). An entry that
    /// cannot be split goes back as it is.
    pub(super) fn reaggregate(&mut self, entry: Entry<Tokens>) {
        let Some(aggregators) = self.aggregators.as_mut() else {
            return self.push(entry, "");
        };
        let Entry { record, token } = entry;
        let Tokens {
            users,
            attempts,
            expected,
            size,
        } = token;
        match aggregators.reroute(Entry {
            record,
            token: users.into_vec(),
        }) {
            Ok(rejected) => {
                for Rejected { entry, reason } in rejected {
                    self.reject(entry.record.size(), vec![entry.token], &reason, "");
                }
            }
            Err(failed) => {
                let entry = Entry {
                    token: Tokens {
                        users: failed.entry.token.into(),
                        attempts,
                        expected,
                        size,
                    },
                    record: failed.entry.record,
                };
                self.push(entry, "");
            }
        }
        self.drain_aggregators();
    }

    /// After a shard listing (whatever its outcome), for each aggregate that landed on another
    /// shard than predicted: if the listing shows that shard and its range holds every user
    /// record of the aggregate, a KCL consumer keeps it: acknowledged. Otherwise the consumer
    /// drops the aggregate whole, so every user record in it goes again: regrouped by the
    /// current map if it is newer than the one the aggregate was built from, else unaggregated
    /// (Kinesis routes plain records by their own keys; every consumer reads them in range).
    pub(super) fn resend_misplaced(&mut self) {
        if self.misplaced.is_empty() {
            return;
        }
        let misplaced = std::mem::take(&mut self.misplaced);
        let mut client_waits = false;
        let mut resent = 0usize;
        for (entry, landed) in misplaced {
            let users = kpl::deaggregate(entry.record.clone())
                .ok()
                .filter(|users| users.len() == entry.token.users.len());
            if users
                .as_deref()
                .is_some_and(|users| self.landed_in_range(users, &landed))
            {
                let tokens = &entry.token;
                self.sink
                    .metrics
                    .sent_after_check(tokens.size, tokens.users.len());
                self.acknowledge(tokens);
                continue;
            }
            resent += 1;
            client_waits |= entry.token.client_waits();
            let regroup = entry
                .token
                .expected
                .as_ref()
                .is_some_and(|expected| expected.epoch != self.epoch);
            match users {
                _ if regroup => self.reaggregate(entry),
                Some(users) => self.unaggregate(entry, users),
                None => self.push(entry, ""),
            }
        }
        if resent > 0 {
            tracing::info!(sink = %self.name(), aggregates = resent,
                "aggregates that landed on a shard not holding all their user records: \
                 sending their user records again");
        }
        self.mark_pending(Instant::now(), client_waits);
    }

    /// Whether the shard `shard_id`, as the current map lists it, holds the hash key of every
    /// one of an aggregate's user records.
    pub(super) fn landed_in_range(&self, users: &[Record], shard_id: &str) -> bool {
        let Some(aggregators) = self.aggregators.as_ref() else {
            return false;
        };
        let Some(shard) = aggregators
            .shard_map()
            .shards()
            .iter()
            .find(|shard| shard.id() == shard_id)
        else {
            return false;
        };
        users.iter().all(|user| {
            hash_key::effective_hash_key(&user.partition_key, user.explicit_hash_key.as_deref())
                .is_ok_and(|hash| shard.contains(hash))
        })
    }

    /// Sends the user records of an aggregate (`records`, deaggregated, one per token) as plain
    /// entries, each with its own keys.
    pub(super) fn unaggregate(&mut self, entry: Entry<Tokens>, records: Vec<Record>) {
        let attempts = entry.token.attempts;
        for (record, user) in records.into_iter().zip(entry.token.users) {
            let entry = Entry {
                token: Tokens {
                    users: smallvec::smallvec![user],
                    attempts,
                    expected: None,
                    size: record.size(),
                },
                record,
            };
            self.push(entry, "");
        }
    }

    pub(super) fn start_refresh(&mut self) {
        self.refresh_wanted = false;
        self.last_refresh = Instant::now();
        let client = self.sink.client.clone();
        let stream = self.sink.config.stream.clone();
        self.refresh = Some(tokio::spawn(async move {
            api::list_shards(&client, &stream).await
        }));
    }

    /// Asks for DescribeStreamSummary again while it is refused, to clear the report.
    pub(super) fn start_recheck(&mut self) {
        if self.recheck.is_some() || !self.sink.denied.is_denied("DescribeStreamSummary") {
            return;
        }
        let client = self.sink.client.clone();
        let stream = self.sink.config.stream.clone();
        self.recheck = Some(tokio::spawn(async move {
            api::describe(&client, &stream).await
        }));
    }

    pub(super) fn apply_recheck(&mut self, checked: Result<api::StreamSummary, CallError>) {
        match checked {
            Ok(summary) => {
                if self
                    .sink
                    .denied
                    .allowed(&self.sink.cx.health, "DescribeStreamSummary")
                {
                    tracing::info!(sink = %self.name(), stream = %self.sink.config.stream,
                        max_record_size = ?summary.max_record_size,
                        current_limit = self.limits.max_record_size,
                        "kinesis:DescribeStreamSummary is allowed now; a restart applies the \
                         stream's per-record limit if it differs from the current one");
                }
            }
            Err(e) if e.is_access_denied() => {}
            Err(e) => tracing::debug!(sink = %self.name(), error = %e,
                "DescribeStreamSummary check failed; asking again in a minute"),
        }
    }

    pub(super) fn apply_refresh(&mut self, listed: Result<ShardMap, api::ListError>) {
        let map = match listed {
            Ok(map) => {
                if self.sink.denied.allowed(&self.sink.cx.health, "ListShards") {
                    tracing::info!(sink = %self.name(), stream = %self.sink.config.stream,
                        "kinesis:ListShards is allowed now");
                }
                map
            }
            Err(api::ListError::Call(e)) if e.is_access_denied() => {
                let report = self.sink.denied.denied(
                    &self.sink.cx.health,
                    "ListShards",
                    &e,
                    "keeping the previous shard map, if any",
                );
                tracing::error!(sink = %self.name(), stream = %self.sink.config.stream,
                    "{report}");
                return;
            }
            Err(e) => {
                tracing::warn!(sink = %self.name(), error = %e,
                    "cannot refresh the shard map; keeping the previous one");
                return;
            }
        };
        let current = match (&self.aggregators, &self.limiter) {
            (Some(aggregators), _) => Some(aggregators.shard_map()),
            (None, Some(limiter)) => Some(limiter.shard_map()),
            (None, None) => None,
        };
        if current == Some(&map) {
            return;
        }
        self.sink.metrics.shard_map_refreshes.inc();
        tracing::info!(sink = %self.name(), shards = map.len(), "shard map updated");
        self.limit_by(&map);
        if self.sink.config.aggregation {
            self.aggregate_by(map);
        }
    }

    /// Gives the rate limiter a new shard map (or starts it, if it waited for a first one);
    /// what it held is admitted again by the new map.
    pub(super) fn limit_by(&mut self, map: &ShardMap) {
        let Some(rates) = self.sink.config.shard_rates() else {
            return;
        };
        let now = Instant::now();
        let Some(limiter) = self.limiter.as_mut() else {
            tracing::info!(sink = %self.name(), shards = map.len(),
                "shard listing available: holding records to each shard's write limits from now on");
            let always = self.sink.config.shard_rate_limit == ShardRateLimit::On;
            self.limiter = Some(ShardLimiter::new(map.clone(), rates, always, now));
            return;
        };
        if limiter.shard_map() == map {
            return;
        }
        for entry in limiter.replace_shard_map(map.clone(), now) {
            self.push(entry, "");
        }
    }

    /// Gives the aggregators a new shard map (or starts aggregating, if aggregation waited for
    /// a first listing); user records in open containers are routed again by it.
    pub(super) fn aggregate_by(&mut self, map: ShardMap) {
        let Some(aggregators) = self.aggregators.as_mut() else {
            match ShardAggregators::new(map, self.aggregation_max_size) {
                Ok(aggregators) => {
                    tracing::info!(sink = %self.name(), shards = aggregators.shard_map().len(),
                        "shard listing available: aggregating by shard from now on");
                    self.aggregators = Some(aggregators);
                    self.epoch += 1;
                }
                Err(e) => tracing::warn!(sink = %self.name(), error = %e,
                    "cannot aggregate with this shard listing"),
            }
            return;
        };
        if *aggregators.shard_map() == map {
            return;
        }
        // Containers sealed under the old map go on first, expected on its shards.
        self.drain_aggregators();
        let Some(aggregators) = self.aggregators.as_mut() else {
            return;
        };
        match aggregators.replace_shard_map(map) {
            Ok(rejected) => {
                self.epoch += 1;
                for Rejected { entry, reason } in rejected {
                    self.reject(entry.record.size(), vec![entry.token], &reason, "");
                }
                self.drain_aggregators();
            }
            Err(e) => {
                tracing::warn!(sink = %self.name(), error = %e,
                    "cannot aggregate with the new shard map; keeping the previous one");
            }
        }
    }
}
