//! Kinesis actions the sink can work around but must not silently do without.
//!
//! Without `kinesis:DescribeStreamSummary` the sink assumes the default per-record limit, and
//! without `kinesis:ListShards` it cannot aggregate by shard. It keeps delivering either way,
//! but a policy missing an action we document is a policy to fix: while an action is refused,
//! `/health` answers 503 under the component `<sink>/permissions`, naming the action, and the
//! log says so. The sink asks again every minute and clears the report once it is allowed.

use std::collections::BTreeMap;
use std::sync::Mutex;

use super::api::CallError;
use crate::health::Health;

/// The refused actions of one sink and why, published on `/health`.
pub struct DeniedActions {
    component: String,
    stream: String,
    denied: Mutex<BTreeMap<&'static str, String>>,
}

impl DeniedActions {
    pub fn new(sink_name: &str, stream: &str) -> DeniedActions {
        DeniedActions {
            component: format!("{sink_name}/permissions"),
            stream: stream.to_string(),
            denied: Mutex::new(BTreeMap::new()),
        }
    }

    /// Kinesis refused `action` (`DescribeStreamSummary`, `ListShards`); `meanwhile` says what
    /// the sink does instead. Returns the report (for the log).
    pub fn denied(
        &self,
        health: &Health,
        action: &'static str,
        error: &CallError,
        meanwhile: &str,
    ) -> String {
        let reason = format!(
            "not permitted to call kinesis:{action} on stream `{}` ({error}); {meanwhile}. \
             Allow kinesis:{action} on the stream in the IAM policy of the role logferry runs \
             as (see docs/kinesis.md)",
            self.stream
        );
        if let Ok(mut denied) = self.denied.lock() {
            denied.insert(action, reason.clone());
            self.publish(health, &denied);
        }
        reason
    }

    /// `action` succeeded: returns true when it had been refused before.
    pub fn allowed(&self, health: &Health, action: &str) -> bool {
        let Ok(mut denied) = self.denied.lock() else {
            return false;
        };
        let was = denied.remove(action).is_some();
        if was {
            self.publish(health, &denied);
        }
        was
    }

    pub fn is_denied(&self, action: &str) -> bool {
        self.denied
            .lock()
            .map(|d| d.contains_key(action))
            .unwrap_or(false)
    }

    fn publish(&self, health: &Health, denied: &BTreeMap<&'static str, String>) {
        if denied.is_empty() {
            health.set_healthy(&self.component);
        } else {
            let reasons: Vec<&str> = denied.values().map(String::as_str).collect();
            health.set_unhealthy(&self.component, reasons.join(" | "));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sink::kinesis::retry_policy::ErrorClass;

    #[test]
    fn a_refused_action_is_reported_until_allowed() {
        let health = Health::default();
        let denied = DeniedActions::new("kinesis.0", "logs");
        let error = CallError {
            code: "AccessDeniedException".into(),
            status: Some(400),
            message: "not authorized".into(),
            class: ErrorClass::Fatal,
            sts_action: None,
        };
        denied.denied(&health, "ListShards", &error, "sending unaggregated");
        denied.denied(&health, "DescribeStreamSummary", &error, "assuming 1 MiB");
        let (code, body) = health.report();
        assert_eq!(code, 503);
        assert!(body.contains("kinesis.0/permissions"), "{body}");
        assert!(body.contains("kinesis:ListShards"), "{body}");
        assert!(body.contains("kinesis:DescribeStreamSummary"), "{body}");
        assert!(denied.is_denied("ListShards"));
        assert!(denied.allowed(&health, "ListShards"));
        assert!(!denied.allowed(&health, "ListShards"));
        assert!(!health.report().1.contains("kinesis:ListShards"));
        assert!(denied.allowed(&health, "DescribeStreamSummary"));
        assert_eq!(health.report().0, 200);
    }
}
