//! PutLogEvents within every limit CloudWatch Logs sets: at most 10,000 events and 1,048,576
//! bytes per call (each event's UTF-8 message plus 26 bytes), events in time order, no call
//! spanning more than 24 hours; an event no larger than 256 KiB with its 26 bytes; nothing
//! older than 14 days (or the group's retention) or more than 2 hours in the future. Also what
//! an answer's `rejectedLogEventsInfo` says about each event.

use std::sync::Arc;

/// Most events in one PutLogEvents call.
pub const MAX_EVENTS: usize = 10_000;
/// Most bytes in one call: messages plus [`EVENT_OVERHEAD`] per event.
pub const MAX_REQUEST_BYTES: usize = 1_048_576;
/// What CloudWatch Logs counts per event on top of its message.
pub const EVENT_OVERHEAD: usize = 26;
/// Largest event by default, overhead included: 256 KiB, the limit AWS documented for years and
/// Fluent Bit's; `max_event_size` raises it up to [`MAX_EVENT_BYTES_LIMIT`].
pub const MAX_EVENT_BYTES: usize = 256 * 1024;
/// The most `max_event_size` can be: 1 MiB, CloudWatch Logs' current per-event limit (which
/// also makes the event a call of its own).
pub const MAX_EVENT_BYTES_LIMIT: usize = MAX_REQUEST_BYTES;
/// Longest time between the first and the last event of a call.
pub const MAX_SPAN_MS: i64 = 24 * 3600 * 1000;
/// Oldest event CloudWatch Logs takes, without a shorter retention.
pub const MAX_AGE_MS: i64 = 14 * 24 * 3600 * 1000;
/// Furthest into the future an event may be.
pub const MAX_AHEAD_MS: i64 = 2 * 3600 * 1000;

/// A log group and stream.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Dest {
    pub group: String,
    pub stream: String,
}

impl std::fmt::Display for Dest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.group, self.stream)
    }
}

/// One event waiting to be sent, with what settles it.
#[derive(Debug)]
pub struct LogEvent<T> {
    /// Milliseconds since the epoch.
    pub timestamp: i64,
    pub message: String,
    pub token: T,
}

impl<T> LogEvent<T> {
    /// What CloudWatch Logs counts for it.
    pub fn size(&self) -> usize {
        self.message.len() + EVENT_OVERHEAD
    }
}

/// Why an event can never be sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refused {
    /// Its size, and the limit.
    TooLarge(usize, usize),
    Empty,
    TooOld {
        age_days: i64,
        limit_days: i64,
    },
    TooNew {
        ahead_minutes: i64,
    },
}

impl Refused {
    /// The dead-letter reason.
    pub fn reason(&self) -> &'static str {
        use crate::sink::dead_letter::reason;
        match self {
            Refused::TooLarge(..) => reason::TOO_LARGE,
            Refused::Empty => reason::INVALID,
            Refused::TooOld { .. } => reason::TOO_OLD,
            Refused::TooNew { .. } => reason::TOO_NEW,
        }
    }
}

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refused::TooLarge(size, max) => write!(
                f,
                "the event is {size} bytes with CloudWatch's 26 bytes of overhead; the sink \
                 sends at most {max} (max_event_size)"
            ),
            Refused::Empty => write!(
                f,
                "the event is empty; CloudWatch Logs refuses empty events"
            ),
            Refused::TooOld {
                age_days,
                limit_days,
            } => write!(
                f,
                "the event is {age_days} days old; CloudWatch Logs takes events up to \
                 {limit_days} days old here"
            ),
            Refused::TooNew { ahead_minutes } => write!(
                f,
                "the event is {ahead_minutes} minutes in the future; CloudWatch Logs takes \
                 events up to 2 hours ahead"
            ),
        }
    }
}

/// The per-event limits: size (overhead included) and retention.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventLimits {
    pub max_size: usize,
    /// The group's retention, which shortens the age limit (older events are expired).
    pub retention_days: Option<u32>,
}

impl Default for EventLimits {
    fn default() -> Self {
        EventLimits {
            max_size: MAX_EVENT_BYTES,
            retention_days: None,
        }
    }
}

/// Checks an event against the per-event limits at `now_ms`.
pub fn check(timestamp: i64, size: usize, now_ms: i64, limits: EventLimits) -> Result<(), Refused> {
    let retention_days = limits.retention_days;
    if size <= EVENT_OVERHEAD {
        return Err(Refused::Empty);
    }
    if size > limits.max_size {
        return Err(Refused::TooLarge(size, limits.max_size));
    }
    let day = 24 * 3600 * 1000;
    let max_age = retention_days.map_or(MAX_AGE_MS, |d| (i64::from(d) * day).min(MAX_AGE_MS));
    if now_ms.saturating_sub(timestamp) > max_age {
        return Err(Refused::TooOld {
            age_days: now_ms.saturating_sub(timestamp) / day,
            limit_days: max_age / day,
        });
    }
    if timestamp.saturating_sub(now_ms) > MAX_AHEAD_MS {
        return Err(Refused::TooNew {
            ahead_minutes: timestamp.saturating_sub(now_ms) / 60_000,
        });
    }
    Ok(())
}

/// Whether one more event of `size` bytes fits a call holding `events` events of `bytes`.
pub fn fits(events: usize, bytes: usize, size: usize) -> bool {
    events < MAX_EVENTS && bytes + size <= MAX_REQUEST_BYTES
}

/// Sorts `events` by time (keeping arrival order among equal times) and cuts them into calls
/// within every limit.
pub fn cut<T>(mut events: Vec<LogEvent<T>>) -> Vec<Vec<LogEvent<T>>> {
    events.sort_by_key(|e| e.timestamp);
    let mut calls = Vec::new();
    let mut call: Vec<LogEvent<T>> = Vec::new();
    let mut bytes = 0;
    for event in events {
        let size = event.size();
        let first = call.first().map(|e| e.timestamp);
        let spans = first.is_some_and(|first| event.timestamp - first > MAX_SPAN_MS);
        if !call.is_empty() && (spans || !fits(call.len(), bytes, size)) {
            calls.push(std::mem::take(&mut call));
            bytes = 0;
        }
        bytes += size;
        call.push(event);
    }
    if !call.is_empty() {
        calls.push(call);
    }
    calls
}

/// The reason CloudWatch gave for refusing some events of a call.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RejectedInfo {
    /// Events from this index on are too new.
    pub too_new_start: Option<usize>,
    /// Events before this index are too old.
    pub too_old_end: Option<usize>,
    /// Events before this index are older than the group's retention.
    pub expired_end: Option<usize>,
}

impl RejectedInfo {
    /// Why the event at `index` was refused, if it was.
    pub fn refused(&self, index: usize) -> Option<(&'static str, &'static str)> {
        use crate::sink::dead_letter::reason;
        if self.too_new_start.is_some_and(|start| index >= start) {
            Some((
                reason::TOO_NEW,
                "CloudWatch Logs refused the event as too new",
            ))
        } else if self.expired_end.is_some_and(|end| index < end) {
            Some((
                reason::TOO_OLD,
                "CloudWatch Logs refused the event as older than the group's retention",
            ))
        } else if self.too_old_end.is_some_and(|end| index < end) {
            Some((
                reason::TOO_OLD,
                "CloudWatch Logs refused the event as too old",
            ))
        } else {
            None
        }
    }
}

/// A call's worth of events for one destination, with how often it was tried.
pub struct Call<T> {
    pub dest: Arc<Dest>,
    pub events: Vec<LogEvent<T>>,
    pub attempts: u32,
}

impl<T> Call<T> {
    pub fn bytes(&self) -> usize {
        self.events.iter().map(LogEvent::size).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(timestamp: i64, len: usize, id: usize) -> LogEvent<usize> {
        LogEvent {
            timestamp,
            message: "x".repeat(len),
            token: id,
        }
    }

    #[test]
    fn calls_hold_at_most_10000_events_and_1_mib_with_26_bytes_each() {
        let events: Vec<_> = (0..25_000).map(|i| ev(1000, 10, i)).collect();
        let calls = cut(events);
        assert_eq!(
            calls.iter().map(Vec::len).collect::<Vec<_>>(),
            vec![10_000, 10_000, 5_000]
        );
        // 1,048,576 / (1000 + 26) = 1022.0: 1022 events per call (1,048,572 bytes).
        let events: Vec<_> = (0..3000).map(|i| ev(1000, 1000, i)).collect();
        let calls = cut(events);
        assert_eq!(
            calls.iter().map(Vec::len).collect::<Vec<_>>(),
            vec![1022, 1022, 956]
        );
        for call in &calls {
            assert!(call.iter().map(LogEvent::size).sum::<usize>() <= MAX_REQUEST_BYTES);
        }
        // Exactly full: 4 events of 262,118 + 26 = 1,048,576.
        let events: Vec<_> = (0..5).map(|i| ev(1000, MAX_EVENT_BYTES - 26, i)).collect();
        assert_eq!(
            cut(events).iter().map(Vec::len).collect::<Vec<_>>(),
            vec![4, 1]
        );
    }

    #[test]
    fn events_are_sorted_by_time_stably_and_no_call_spans_more_than_24_hours() {
        let hour = 3600 * 1000;
        let events = vec![
            ev(5 * hour, 1, 0),
            ev(hour, 1, 1),
            ev(5 * hour, 1, 2),
            ev(26 * hour, 1, 3),
            ev(25 * hour, 1, 4),
            ev(hour + MAX_SPAN_MS, 1, 5),
        ];
        let calls = cut(events);
        let ids: Vec<Vec<usize>> = calls
            .iter()
            .map(|c| c.iter().map(|e| e.token).collect())
            .collect();
        // 25 h - 1 h is exactly 24 hours: still one call; 26 h starts the next.
        assert_eq!(ids, vec![vec![1, 0, 2, 4, 5], vec![3]]);
        for call in &calls {
            assert!(call.windows(2).all(|w| w[0].timestamp <= w[1].timestamp));
            assert!(call.last().unwrap().timestamp - call[0].timestamp <= MAX_SPAN_MS);
        }
    }

    #[test]
    fn per_event_limits() {
        let now = 100 * 24 * 3600 * 1000;
        let day = 24 * 3600 * 1000;
        let none = EventLimits::default();
        let days = |d| EventLimits {
            retention_days: Some(d),
            ..none
        };
        assert_eq!(check(now, 26, now, none), Err(Refused::Empty));
        assert_eq!(check(now, MAX_EVENT_BYTES, now, none), Ok(()));
        assert_eq!(
            check(now, MAX_EVENT_BYTES + 1, now, none),
            Err(Refused::TooLarge(MAX_EVENT_BYTES + 1, MAX_EVENT_BYTES))
        );
        let large = EventLimits {
            max_size: MAX_EVENT_BYTES_LIMIT,
            ..none
        };
        assert_eq!(check(now, MAX_EVENT_BYTES_LIMIT, now, large), Ok(()));
        assert_eq!(check(now - 14 * day, 100, now, none), Ok(()));
        assert!(matches!(
            check(now - 14 * day - 1, 100, now, none),
            Err(Refused::TooOld { limit_days: 14, .. })
        ));
        assert!(matches!(
            check(now - 4 * day, 100, now, days(3)),
            Err(Refused::TooOld { limit_days: 3, .. })
        ));
        assert_eq!(check(now - 4 * day, 100, now, days(30)), Ok(()));
        assert_eq!(check(now + MAX_AHEAD_MS, 100, now, none), Ok(()));
        assert!(matches!(
            check(now + MAX_AHEAD_MS + 60_000, 100, now, none),
            Err(Refused::TooNew { ahead_minutes: 121 })
        ));
    }

    #[test]
    fn rejected_info_indexes() {
        let info = RejectedInfo {
            too_new_start: Some(8),
            too_old_end: Some(2),
            expired_end: Some(1),
        };
        let reasons: Vec<_> = (0..10).map(|i| info.refused(i).map(|r| r.0)).collect();
        assert_eq!(
            reasons,
            vec![
                Some("too_old"),
                Some("too_old"),
                None,
                None,
                None,
                None,
                None,
                None,
                Some("too_new"),
                Some("too_new")
            ]
        );
        assert_eq!(RejectedInfo::default().refused(0), None);
    }
}
