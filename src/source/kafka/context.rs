//! The consumer's librdkafka context: logs, client errors, MSK IAM tokens, and rebalances.
//!
//! Rebalance: before partitions are revoked, the offsets already delivered for them are
//! committed (synchronously, so the next owner starts right after them) and the partitions stop
//! being tracked; records of theirs still on their way to the sinks are delivered, but not
//! committed by this consumer, so the next owner reads them again (a bounded number of
//! duplicates, never a loss). Newly assigned partitions start being tracked.

use std::error::Error;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use rdkafka::client::{ClientContext, OAuthToken};
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance};
use rdkafka::error::{KafkaError, KafkaResult, RDKafkaErrorCode};
use rdkafka::{Offset, TopicPartitionList};

use super::offsets::{Offsets, PartitionKey};
use crate::kafka::auth::MskTokenProvider;
use crate::metrics::ComponentMetrics;

/// What librdkafka calls back into.
pub struct SourceContext {
    pub name: String,
    pub metrics: ComponentMetrics,
    pub offsets: Arc<Mutex<Offsets>>,
    /// Counts the changes of the assignment (revocations and assignments), so that the
    /// consuming loop can cache which partitions are assigned instead of asking `offsets`
    /// for every message.
    pub assignment_changes: Arc<AtomicU64>,
    pub tokens: Option<Arc<MskTokenProvider>>,
}

/// The offsets as librdkafka's list.
pub fn offset_list(commits: &[(PartitionKey, i64)]) -> TopicPartitionList {
    let mut list = TopicPartitionList::new();
    for ((topic, partition), offset) in commits {
        let _ = list.add_partition_offset(topic, *partition, Offset::Offset(*offset));
    }
    list
}

fn keys(list: &TopicPartitionList) -> Vec<PartitionKey> {
    list.elements()
        .iter()
        .map(|e| (e.topic().to_string(), e.partition()))
        .collect()
}

impl ClientContext for SourceContext {
    const ENABLE_REFRESH_OAUTH_TOKEN: bool = true;

    fn log(&self, level: RDKafkaLogLevel, facility: &str, message: &str) {
        crate::kafka::forward_log(
            crate::kafka::Role::Source,
            &self.name,
            level,
            facility,
            message,
        );
    }

    fn error(&self, error: KafkaError, reason: &str) {
        let source = &self.name;
        let kind = match error.rdkafka_error_code() {
            Some(
                RDKafkaErrorCode::Authentication
                | RDKafkaErrorCode::SaslAuthenticationFailed
                | RDKafkaErrorCode::TopicAuthorizationFailed
                | RDKafkaErrorCode::GroupAuthorizationFailed
                | RDKafkaErrorCode::ClusterAuthorizationFailed,
            ) => {
                self.metrics.auth_failure("sasl");
                "auth"
            }
            Some(RDKafkaErrorCode::AllBrokersDown) => "brokers_down",
            Some(RDKafkaErrorCode::BrokerTransportFailure) => {
                tracing::debug!(source = %source, "Kafka connection problem: {reason}");
                return;
            }
            _ => "kafka",
        };
        self.metrics.error(kind);
        if let Some(suppressed) = crate::log_limit::allow(source, kind) {
            tracing::error!(source = %source, error = %error, suppressed, "Kafka consumer error: {reason}");
        }
    }

    fn generate_oauth_token(
        &self,
        _oauthbearer_config: Option<&str>,
    ) -> Result<OAuthToken, Box<dyn Error>> {
        let Some(tokens) = &self.tokens else {
            return Err(
                "OAUTHBEARER is configured but aws_msk_iam is not enabled: set \
                        aws_msk_iam = true, or configure sasl.oauthbearer.* in [sources.rdkafka]"
                    .into(),
            );
        };
        match tokens.token_now() {
            Ok(issued) => {
                self.metrics.token_refreshed("msk_iam");
                tracing::info!(source = %self.name, region = %tokens.target().region,
                    signed_at = issued.token.amz_date(), lifetime_ms = issued.lifetime_ms,
                    "MSK IAM token refreshed");
                Ok(OAuthToken {
                    token: issued.token.token().to_string(),
                    principal_name: "logferry".to_string(),
                    lifetime_ms: issued.lifetime_ms,
                })
            }
            Err(e) => {
                self.metrics.error("auth");
                self.metrics.auth_failure("msk_token");
                tracing::error!(source = %self.name, error = %e,
                    "cannot create an MSK IAM token; librdkafka retries in 10 s");
                Err(e.into())
            }
        }
    }
}

impl ConsumerContext for SourceContext {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let Rebalance::Revoke(list) = rebalance else {
            return;
        };
        let revoked = keys(list);
        let commits = match self.offsets.lock() {
            Ok(mut offsets) => offsets.revoke(&revoked),
            Err(_) => return,
        };
        self.assignment_changes.fetch_add(1, Ordering::Release);
        tracing::info!(source = %self.name, partitions = ?revoked, committing = ?commits,
            "partitions revoked: committing what was delivered");
        if commits.is_empty() || consumer.assignment_lost() {
            return;
        }
        if let Err(e) = consumer.commit(&offset_list(&commits), CommitMode::Sync) {
            self.metrics.error("commit");
            tracing::warn!(source = %self.name, error = %e,
                "committing the revoked partitions' offsets failed; their next owner reads \
                 some records again");
        }
    }

    fn post_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Assign(list) = rebalance {
            let assigned = keys(list);
            if let Ok(mut offsets) = self.offsets.lock() {
                offsets.assign(assigned.iter().map(|(t, p)| (t.as_str(), *p)));
            }
            self.assignment_changes.fetch_add(1, Ordering::Release);
            tracing::info!(source = %self.name, partitions = ?assigned, "partitions assigned");
        }
    }

    fn commit_callback(&self, result: KafkaResult<()>, offsets: &TopicPartitionList) {
        if let Err(e) = result {
            self.metrics.error("commit");
            if let Some(suppressed) = crate::log_limit::allow(&self.name, "commit") {
                tracing::warn!(source = %self.name, error = %e, suppressed,
                    partitions = offsets.count(),
                    "committing offsets failed; the next commit carries them");
            }
        }
    }
}
