//! One invocation: decode the event, hand the records to the core pipeline's router with an
//! acknowledgement, and wait until every sink confirmed delivery or the deadline passes.
//!
//! The router and sinks are the sidecar's (built once per container by
//! [`logferry::pipeline::build`]); this module only decides what an invocation answers.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use lambda_runtime::Diagnostic;
use logferry::buffer::{AckRef, AckWaiter};
use logferry::event::Event;
use logferry::metrics::ComponentMetrics;
use logferry::pipeline::router::Router;
use logferry::source::cloudwatch::{CloudwatchError, Decoded, Decoder, LambdaInput};
use serde_json::{json, Value};
use tokio::time::Instant;

/// Why an invocation failed. CloudWatch Logs retries a failed asynchronous invocation with the
/// whole batch, so records delivered before the failure arrive again (dedupe on `id`).
#[derive(Debug, thiserror::Error)]
pub enum InvocationError {
    #[error("cannot decode the event: {0}")]
    Decode(#[from] CloudwatchError),
    #[error(
        "{records} records were not confirmed delivered within the function's remaining time \
         minus safety_margin ({margin:?}); failing so the batch is retried (records already \
         delivered will be duplicates: dedupe on `id`)"
    )]
    Deadline { records: usize, margin: Duration },
    #[error(
        "{records} records could not be delivered (a sink gave up on them; see its log lines); \
         failing so the batch is retried"
    )]
    Failed { records: usize },
    #[error("the sinks stopped; the function must be restarted")]
    Closed,
}

impl From<InvocationError> for Diagnostic {
    fn from(e: InvocationError) -> Diagnostic {
        let error_type = match &e {
            InvocationError::Decode(_) => "logferry.DecodeError",
            InvocationError::Deadline { .. } => "logferry.DeliveryTimeout",
            InvocationError::Failed { .. } => "logferry.DeliveryFailed",
            InvocationError::Closed => "logferry.SinksClosed",
        };
        Diagnostic {
            error_type: error_type.to_string(),
            error_message: e.to_string(),
        }
    }
}

/// The per-container state every invocation uses.
pub struct Forwarder {
    pub router: Arc<Router>,
    pub decoder: Decoder,
    pub safety_margin: Duration,
    pub metrics: ComponentMetrics,
}

/// How a submission ended.
enum Outcome {
    TimedOut,
    Closed,
}

impl Forwarder {
    /// The instant by which delivery must be confirmed: the invocation's deadline minus the
    /// safety margin.
    fn deadline(&self, invocation_deadline: SystemTime) -> Instant {
        let remaining = invocation_deadline
            .duration_since(SystemTime::now())
            .unwrap_or_default();
        Instant::now() + remaining.saturating_sub(self.safety_margin)
    }

    /// Handles one event; `deadline` is the invocation's (from `Lambda-Runtime-Deadline-Ms`).
    pub async fn handle(
        &self,
        event: &Value,
        invocation_deadline: SystemTime,
    ) -> Result<Value, InvocationError> {
        let deadline = self.deadline(invocation_deadline);
        let input = match self.decoder.decode_event(event) {
            Ok(input) => input,
            Err(e) => {
                self.metrics.error("decode");
                tracing::error!(error = %e, "event refused: it cannot be decoded");
                return Err(e.into());
            }
        };
        match input {
            LambdaInput::Awslogs(decoded) => self.awslogs(decoded, deadline).await,
            LambdaInput::Kinesis(records) => self.kinesis(records, deadline).await,
        }
    }

    async fn awslogs(&self, decoded: Decoded, deadline: Instant) -> Result<Value, InvocationError> {
        self.count_control(decoded.control_messages);
        let records = decoded.events.len();
        if records == 0 {
            return Ok(json!({"records": 0, "control_messages": decoded.control_messages}));
        }
        self.metrics.records_in.inc_by(records as u64);
        let waiter = match self.submit(decoded.events, decoded.bytes, deadline).await {
            Ok(waiter) => waiter,
            Err(Outcome::Closed) => return Err(InvocationError::Closed),
            Err(Outcome::TimedOut) => return Err(self.timeout(records)),
        };
        match tokio::time::timeout_at(deadline, waiter.wait()).await {
            Ok(true) => {
                self.metrics.records_out.inc_by(records as u64);
                Ok(json!({"records": records, "control_messages": decoded.control_messages}))
            }
            Ok(false) => {
                self.metrics.error("delivery");
                let e = InvocationError::Failed { records };
                tracing::error!(error = %e, "invocation failed");
                Err(e)
            }
            Err(_) => Err(self.timeout(records)),
        }
    }

    /// Kinesis trigger: each record is acknowledged on its own, and the ones not delivered (or
    /// not decodable) are reported as `batchItemFailures`, so only they (and, as Lambda
    /// checkpoints by sequence number, the records after the first of them) are retried.
    async fn kinesis(
        &self,
        records: Vec<logferry::source::cloudwatch::KinesisTriggerRecord>,
        deadline: Instant,
    ) -> Result<Value, InvocationError> {
        let total = records.len();
        let mut failures: Vec<String> = Vec::new();
        let mut pending: Vec<(String, usize, AckWaiter)> = Vec::new();
        for (index, record) in records.into_iter().enumerate() {
            let decoded = match record.decoded {
                Ok(d) => d,
                Err(e) => {
                    self.metrics.error("decode");
                    tracing::error!(record = index, sequence_number = %record.sequence_number,
                        error = %e, "Kinesis record refused: it cannot be decoded");
                    failures.push(record.sequence_number);
                    continue;
                }
            };
            self.count_control(decoded.control_messages);
            let n = decoded.events.len();
            if n == 0 {
                continue;
            }
            self.metrics.records_in.inc_by(n as u64);
            match self.submit(decoded.events, decoded.bytes, deadline).await {
                Ok(waiter) => pending.push((record.sequence_number, n, waiter)),
                Err(Outcome::Closed) => return Err(InvocationError::Closed),
                Err(_) => failures.push(record.sequence_number),
            }
        }
        for (sequence_number, n, waiter) in pending {
            match tokio::time::timeout_at(deadline, waiter.wait()).await {
                Ok(true) => {
                    self.metrics.records_out.inc_by(n as u64);
                }
                Ok(false) => {
                    self.metrics.error("delivery");
                    failures.push(sequence_number);
                }
                Err(_) => {
                    self.metrics.error("deadline");
                    failures.push(sequence_number);
                }
            }
        }
        if !failures.is_empty() {
            tracing::warn!(
                failed = failures.len(),
                total,
                "Kinesis records not delivered; reported as batchItemFailures"
            );
        }
        Ok(json!({
            "batchItemFailures": failures
                .into_iter()
                .map(|id| json!({"itemIdentifier": id}))
                .collect::<Vec<_>>()
        }))
    }

    /// Hands records to the router (waiting while a sink queue is full, up to the deadline).
    async fn submit(
        &self,
        events: Vec<Event>,
        bytes: usize,
        deadline: Instant,
    ) -> Result<AckWaiter, Outcome> {
        let (ack, waiter) = AckRef::new();
        let tag = self.decoder.tag().clone();
        match tokio::time::timeout_at(deadline, self.router.submit(tag, events, bytes, Some(ack)))
            .await
        {
            Ok(Ok(())) => Ok(waiter),
            Ok(Err(_)) => Err(Outcome::Closed),
            Err(_) => Err(Outcome::TimedOut),
        }
    }

    fn count_control(&self, n: usize) {
        if n > 0 {
            self.metrics.dropped("control_message", n as u64);
            tracing::info!(count = n, "CONTROL_MESSAGE skipped");
        }
    }

    fn timeout(&self, records: usize) -> InvocationError {
        self.metrics.error("deadline");
        let e = InvocationError::Deadline {
            records,
            margin: self.safety_margin,
        };
        tracing::error!(error = %e, "invocation failed");
        e
    }
}
