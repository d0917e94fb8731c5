//! The `null` sink: discards every record and acknowledges it at once, counting what it took
//! (`records_out`). FireLens routes its health-check records to one (`[OUTPUT] Name null`).

use serde::Deserialize;

use super::{SinkContext, SinkError};
use crate::buffer::QueueReceiver;
use crate::config::field::FieldError;

/// Options of `type = "null"`: none.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NullConfig {}

impl NullConfig {
    /// Nothing to check: the sink has no options. Here so every sink config has the same verbs.
    pub fn validate(&self) -> Result<(), Vec<FieldError>> {
        Ok(())
    }
}

/// A running `null` sink.
pub struct NullSink {
    cx: SinkContext,
}

impl NullSink {
    /// Builds the sink; it opens nothing, so it cannot fail (the `Result` keeps the shape
    /// every sink's `build` has).
    pub async fn build(_config: &NullConfig, cx: SinkContext) -> Result<NullSink, SinkError> {
        Ok(NullSink { cx })
    }

    /// Takes batches until the queue is closed and empty; each is complete as soon as it is
    /// taken, which releases upstream acknowledgements.
    pub async fn run(self, mut input: QueueReceiver) {
        while let Some(batch) = input.recv().await {
            self.cx.metrics.records_out.inc_by(batch.len() as u64);
            batch.complete();
        }
    }
}
