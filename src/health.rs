//! Component health, served on `GET /health`: 200 when every component can deliver, 503 with
//! the reasons otherwise (auth failures, missing streams, stalled sinks).

use std::collections::BTreeMap;
use std::sync::RwLock;

/// Health of every component that reported one.
#[derive(Default)]
pub struct Health {
    problems: RwLock<BTreeMap<String, String>>,
}

impl Health {
    /// Marks `component` unhealthy with a reason an operator can act on.
    pub fn set_unhealthy(&self, component: &str, reason: impl Into<String>) {
        if let Ok(mut p) = self.problems.write() {
            p.insert(component.to_string(), reason.into());
        }
    }

    /// Marks `component` healthy again.
    pub fn set_healthy(&self, component: &str) {
        if let Ok(mut p) = self.problems.write() {
            p.remove(component);
        }
    }

    /// The unhealthy components and why; empty when all is well.
    pub fn problems(&self) -> BTreeMap<String, String> {
        self.problems.read().map(|p| p.clone()).unwrap_or_default()
    }

    /// The `/health` answer: HTTP status and JSON body.
    pub fn report(&self) -> (u16, String) {
        let problems = self.problems();
        if problems.is_empty() {
            (200, r#"{"status":"ok"}"#.to_string())
        } else {
            let body = serde_json::json!({ "status": "unhealthy", "components": problems });
            (503, body.to_string())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unhealthy_until_cleared() {
        let h = Health::default();
        assert_eq!(h.report().0, 200);
        h.set_unhealthy("kinesis.0", "AccessDenied on PutRecords");
        let (code, body) = h.report();
        assert_eq!(code, 503);
        assert!(body.contains("AccessDenied"));
        h.set_healthy("kinesis.0");
        assert_eq!(h.report().0, 200);
    }
}
