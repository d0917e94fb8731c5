//! Rate limiting of repeated error logs.
//!
//! A sink that cannot deliver fails every request or batch the same way, and logging each one
//! floods the log (and whatever ships it) without telling an operator anything new. A call site
//! asks [`allow`] with its component and a short key for the kind of error (`put_records:
//! throttled`); the first occurrence logs, repeats within [`INTERVAL`] are counted instead, and
//! the next line logged for that key carries how many were suppressed. Counters and `/health`
//! still see every occurrence; only the log lines are thinned.
//!
//! The limiter takes the current time as an argument ([`LogLimiter::check_at`]), so its tests
//! drive a clock of their own instead of sleeping.

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

/// How often one kind of error from one component is logged at most.
pub const INTERVAL: Duration = Duration::from_secs(10);

/// Most keys remembered; beyond this, keys not seen for an interval are forgotten first (error
/// keys are few per component, so this only guards against a key built from unbounded input).
const MAX_KEYS: usize = 1024;

struct Slot {
    logged_at: Instant,
    suppressed: u64,
}

/// Remembers when each (component, key) was last logged and how many repeats were dropped.
pub struct LogLimiter {
    interval: Duration,
    slots: Mutex<HashMap<String, HashMap<String, Slot>>>,
}

impl LogLimiter {
    pub fn new(interval: Duration) -> LogLimiter {
        LogLimiter {
            interval,
            slots: Mutex::new(HashMap::new()),
        }
    }

    /// Whether an occurrence at `now` should be logged: `Some(n)` with the number of repeats
    /// suppressed since the last line for this key, or `None` to stay quiet.
    pub fn check_at(&self, component: &str, key: &str, now: Instant) -> Option<u64> {
        let Ok(mut slots) = self.slots.lock() else {
            // A poisoned lock must not silence errors.
            return Some(0);
        };
        // Looked up by reference first: a repeat allocates nothing.
        if let Some(slot) = slots.get_mut(component).and_then(|keys| keys.get_mut(key)) {
            if now.saturating_duration_since(slot.logged_at) < self.interval {
                slot.suppressed += 1;
                return None;
            }
            let suppressed = slot.suppressed;
            slot.logged_at = now;
            slot.suppressed = 0;
            return Some(suppressed);
        }
        let total: usize = slots.values().map(HashMap::len).sum();
        if total >= MAX_KEYS {
            let interval = self.interval;
            for keys in slots.values_mut() {
                keys.retain(|_, s| now.saturating_duration_since(s.logged_at) < interval);
            }
            slots.retain(|_, keys| !keys.is_empty());
            if slots.values().map(HashMap::len).sum::<usize>() >= MAX_KEYS {
                slots.clear();
            }
        }
        slots.entry(component.to_string()).or_default().insert(
            key.to_string(),
            Slot {
                logged_at: now,
                suppressed: 0,
            },
        );
        Some(0)
    }

    /// [`LogLimiter::check_at`] with the current time.
    pub fn check(&self, component: &str, key: &str) -> Option<u64> {
        self.check_at(component, key, Instant::now())
    }
}

/// The process's limiter, with [`INTERVAL`].
pub fn global() -> &'static LogLimiter {
    static GLOBAL: OnceLock<LogLimiter> = OnceLock::new();
    GLOBAL.get_or_init(|| LogLimiter::new(INTERVAL))
}

/// Whether to log this occurrence of `key` from `component` now; `Some(suppressed)` to log
/// (put `suppressed` in the line), `None` to skip it.
pub fn allow(component: &str, key: &str) -> Option<u64> {
    global().check(component, key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeats_within_the_interval_are_counted_and_reported_with_the_next_line() {
        let limiter = LogLimiter::new(Duration::from_secs(10));
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        assert_eq!(limiter.check_at("kinesis.0", "throttled", at(0)), Some(0));
        assert_eq!(limiter.check_at("kinesis.0", "throttled", at(1)), None);
        assert_eq!(limiter.check_at("kinesis.0", "throttled", at(9)), None);
        // Another key and another component are limited separately.
        assert_eq!(limiter.check_at("kinesis.0", "timeout", at(9)), Some(0));
        assert_eq!(limiter.check_at("kinesis.1", "throttled", at(9)), Some(0));
        // The interval is over: log again, with the two suppressed repeats.
        assert_eq!(limiter.check_at("kinesis.0", "throttled", at(10)), Some(2));
        assert_eq!(limiter.check_at("kinesis.0", "throttled", at(11)), None);
        assert_eq!(limiter.check_at("kinesis.0", "throttled", at(40)), Some(1));
        // A quiet key starts over with nothing suppressed.
        assert_eq!(limiter.check_at("kinesis.0", "throttled", at(100)), Some(0));
    }

    #[test]
    fn a_clock_going_backwards_does_not_log_more() {
        let limiter = LogLimiter::new(Duration::from_secs(10));
        let t0 = Instant::now() + Duration::from_secs(100);
        assert_eq!(limiter.check_at("s", "k", t0), Some(0));
        assert_eq!(
            limiter.check_at("s", "k", t0 - Duration::from_secs(50)),
            None
        );
    }

    #[test]
    fn keys_stay_bounded() {
        let limiter = LogLimiter::new(Duration::from_secs(10));
        let t0 = Instant::now();
        for i in 0..(MAX_KEYS + 10) {
            assert_eq!(limiter.check_at("s", &i.to_string(), t0), Some(0));
        }
        let total: usize = limiter
            .slots
            .lock()
            .unwrap()
            .values()
            .map(HashMap::len)
            .sum();
        assert!(total <= MAX_KEYS);
    }
}
