//! Exponential backoff with full jitter, for sinks retrying throttled or failed writes.
//!
//! Full jitter (a uniform draw in `[0, min(cap, base * 2^attempt)]`) spreads the retries of many
//! producers hitting the same throttled shard or broker, instead of having them retry in lockstep.

use std::time::Duration;

use rand::Rng;

const NANOS_PER_SEC: u128 = 1_000_000_000;

/// Retry delays growing from `base` to `cap`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    base: Duration,
    cap: Duration,
}

impl Backoff {
    /// `base` is the ceiling of the first retry's delay, `cap` the ceiling of every delay.
    pub const fn new(base: Duration, cap: Duration) -> Self {
        Backoff { base, cap }
    }

    pub fn base(&self) -> Duration {
        self.base
    }

    pub fn cap(&self) -> Duration {
        self.cap
    }

    /// The largest delay `attempt` (0 for the first retry) can draw: `min(cap, base * 2^attempt)`,
    /// without overflow for any attempt.
    pub fn ceiling(&self, attempt: u32) -> Duration {
        from_nanos(self.ceiling_nanos(attempt))
    }

    /// A delay drawn uniformly from `[0, ceiling(attempt)]` with the given random source
    /// (inject a seeded one for reproducible tests).
    pub fn delay_with<R: Rng + ?Sized>(&self, attempt: u32, rng: &mut R) -> Duration {
        from_nanos(rng.random_range(0..=self.ceiling_nanos(attempt)))
    }

    /// A delay drawn from the thread's random source.
    pub fn delay(&self, attempt: u32) -> Duration {
        self.delay_with(attempt, &mut rand::rng())
    }

    fn ceiling_nanos(&self, attempt: u32) -> u128 {
        let cap = self.cap.as_nanos();
        // 2^attempt overflows u128 past attempt 127; the cap is reached long before anyway.
        let growth = 1u128.checked_shl(attempt).unwrap_or(u128::MAX);
        self.base.as_nanos().saturating_mul(growth).min(cap)
    }
}

/// Nanoseconds back to a `Duration`; values come from `Duration`s, so they fit.
fn from_nanos(nanos: u128) -> Duration {
    let secs = u64::try_from(nanos / NANOS_PER_SEC).unwrap_or(u64::MAX);
    // The remainder is below 10^9, so it fits a u32.
    let subsec = (nanos % NANOS_PER_SEC) as u32;
    Duration::new(secs, subsec)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::SeedableRng;

    const BASE: Duration = Duration::from_millis(100);
    const CAP: Duration = Duration::from_secs(10);

    #[test]
    fn ceiling_doubles_until_the_cap() {
        let backoff = Backoff::new(BASE, CAP);
        let expected_ms = [100, 200, 400, 800, 1600, 3200, 6400, 10_000, 10_000];
        for (attempt, ms) in expected_ms.into_iter().enumerate() {
            assert_eq!(
                backoff.ceiling(attempt as u32),
                Duration::from_millis(ms),
                "attempt {attempt}"
            );
        }
        for attempt in [64, 127, 128, 1000, u32::MAX] {
            assert_eq!(backoff.ceiling(attempt), CAP, "attempt {attempt}");
        }
        let huge = Backoff::new(Duration::MAX, Duration::MAX);
        assert_eq!(huge.ceiling(u32::MAX), Duration::MAX);
    }

    #[test]
    fn draws_stay_within_zero_and_the_ceiling_and_spread_over_it() {
        let backoff = Backoff::new(BASE, CAP);
        let mut rng = StdRng::seed_from_u64(7);
        for attempt in 0..12 {
            let ceiling = backoff.ceiling(attempt);
            let draws: Vec<Duration> = (0..2000)
                .map(|_| backoff.delay_with(attempt, &mut rng))
                .collect();
            assert!(draws.iter().all(|delay| *delay <= ceiling));
            // Full jitter: draws reach both ends of the range, and average about half of it.
            assert!(draws.iter().any(|delay| *delay < ceiling / 10));
            assert!(draws.iter().any(|delay| *delay > ceiling * 9 / 10));
            let mean = draws.iter().sum::<Duration>() / draws.len() as u32;
            assert!(
                mean > ceiling * 4 / 10 && mean < ceiling * 6 / 10,
                "attempt {attempt}: mean {mean:?} of ceiling {ceiling:?}"
            );
        }
    }

    #[test]
    fn same_seed_same_delays() {
        let backoff = Backoff::new(BASE, CAP);
        let draw = |seed| {
            let mut rng = StdRng::seed_from_u64(seed);
            (0..20)
                .map(|attempt| backoff.delay_with(attempt, &mut rng))
                .collect::<Vec<_>>()
        };
        assert_eq!(draw(1), draw(1));
        assert_ne!(draw(1), draw(2));
    }

    #[test]
    fn zero_base_never_waits_and_thread_rng_works() {
        let backoff = Backoff::new(Duration::ZERO, CAP);
        assert_eq!(backoff.delay(5), Duration::ZERO);
        assert!(Backoff::new(BASE, CAP).delay(3) <= Duration::from_millis(800));
    }
}
