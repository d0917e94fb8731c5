//! How long the sink waits before trying again: the backoffs of failed entries and calls, and
//! when repeated failures make the sink unhealthy.

use std::time::Duration;

use crate::sink::backoff::Backoff;

/// Delays between retries of throttled or failed entries, and of failed calls.
pub(super) const RETRY_BACKOFF: Backoff =
    Backoff::new(Duration::from_millis(100), Duration::from_secs(10));

/// Delays while a configuration error (permissions, missing stream) lasts: slow, so a broken
/// sink does not hammer the API or flood the log.
pub(super) const FATAL_BACKOFF: Backoff =
    Backoff::new(Duration::from_secs(1), Duration::from_secs(60));

/// Consecutive failed calls (of the retryable kind) before the sink reports itself unhealthy.
pub(super) const UNHEALTHY_AFTER: u32 = 3;

/// A delay for configuration errors: half the ceiling plus jitter, so never near zero.
pub(super) fn slow_delay(attempt: u32) -> Duration {
    let ceiling = FATAL_BACKOFF.ceiling(attempt);
    ceiling / 2 + FATAL_BACKOFF.delay(attempt) / 2
}
