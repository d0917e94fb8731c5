//! The UTC calendar fields of a Unix time, computed with plain integer arithmetic.
//!
//! A sink with a time key renders one timestamp per record; through chrono's general formatter
//! (an iterator of items, `fmt::Write`, a date type built and validated per call) that was ~9% of
//! the CPU of the forward → Kafka run. The common patterns (`iso8601`, the AWS plugins' default
//! `%Y-%m-%dT%H:%M:%S`) need only these six numbers, which [`Civil::from_unix`] gets with
//! Howard Hinnant's `civil_from_days` (public domain, <https://howardhinnant.github.io/date_algorithms.html>)
//! and [`TimeWriter`](super::time_format::TimeWriter) writes as digits.

/// Seconds in a day.
const DAY: i64 = 86_400;
/// Days from 0000-03-01 to 1970-01-01: the algorithm counts from a 1 March so that the leap
/// day ends a year.
const EPOCH_SHIFT: i64 = 719_468;
/// Days in a 400-year Gregorian cycle.
const ERA_DAYS: i64 = 146_097;

/// One second of the proleptic Gregorian calendar in UTC.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Civil {
    pub year: i64,
    pub month: u32,
    pub day: u32,
    pub hour: u32,
    pub minute: u32,
    pub second: u32,
}

impl Civil {
    /// The calendar fields of `secs` seconds since 1970-01-01T00:00:00Z. Defined for every
    /// `i64` (no overflow: the day count stays within ±1.1e14); leap seconds do not exist here,
    /// as in Unix time.
    pub fn from_unix(secs: i64) -> Civil {
        let days = secs.div_euclid(DAY);
        let of_day = secs.rem_euclid(DAY);
        let z = days + EPOCH_SHIFT;
        let era = z.div_euclid(ERA_DAYS);
        let day_of_era = z.rem_euclid(ERA_DAYS); // [0, 146096]
        let year_of_era =
            (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
        let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
        let month_from_march = (5 * day_of_year + 2) / 153; // [0, 11], 0 = March
        let day = day_of_year - (153 * month_from_march + 2) / 5 + 1;
        let month = if month_from_march < 10 {
            month_from_march + 3
        } else {
            month_from_march - 9
        };
        let year = year_of_era + era * 400 + i64::from(month <= 2);
        Civil {
            year,
            month: month as u32,
            day: day as u32,
            hour: (of_day / 3600) as u32,
            minute: (of_day / 60 % 60) as u32,
            second: (of_day % 60) as u32,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{DateTime, Datelike, Timelike};

    fn chrono_fields(secs: i64) -> Civil {
        let t = DateTime::from_timestamp(secs, 0).unwrap().naive_utc();
        Civil {
            year: i64::from(t.year()),
            month: t.month(),
            day: t.day(),
            hour: t.hour(),
            minute: t.minute(),
            second: t.second(),
        }
    }

    #[test]
    fn known_dates() {
        let at = |secs| Civil::from_unix(secs);
        assert_eq!(
            at(0),
            Civil {
                year: 1970,
                month: 1,
                day: 1,
                hour: 0,
                minute: 0,
                second: 0
            }
        );
        assert_eq!(
            at(-1),
            Civil {
                year: 1969,
                month: 12,
                day: 31,
                hour: 23,
                minute: 59,
                second: 59
            }
        );
        // 2024-02-29T12:34:56Z, a leap day.
        assert_eq!(
            at(1_709_210_096),
            Civil {
                year: 2024,
                month: 2,
                day: 29,
                hour: 12,
                minute: 34,
                second: 56
            }
        );
        // 2000-03-01, the day after a leap day of a year divisible by 400.
        assert_eq!(at(951_868_800).day, 1);
        assert_eq!(at(951_868_800).month, 3);
    }

    /// Against chrono over its whole range at a prime stride, and every day boundary around the
    /// epoch and the century years.
    #[test]
    fn agrees_with_chrono() {
        let first = DateTime::<chrono::Utc>::MIN_UTC.timestamp();
        let last = DateTime::<chrono::Utc>::MAX_UTC.timestamp();
        let mut secs = first;
        while secs <= last {
            assert_eq!(Civil::from_unix(secs), chrono_fields(secs), "{secs}");
            secs += 7_919_993_777; // ~251 years: ~2,000 samples over chrono's ±262,000 years
        }
        for start in [
            0i64,
            -2_208_988_800,
            946_684_800,
            4_102_444_800,
            -62_135_596_800,
        ] {
            for day in -800..800 {
                for secs in [
                    start + day * DAY - 1,
                    start + day * DAY,
                    start + day * DAY + 43_201,
                ] {
                    assert_eq!(Civil::from_unix(secs), chrono_fields(secs), "{secs}");
                }
            }
        }
    }

    #[test]
    fn extreme_inputs_do_not_overflow() {
        for secs in [i64::MIN, i64::MAX, i64::MIN + 1, i64::MAX - 1] {
            let c = Civil::from_unix(secs);
            assert!(
                (1..=12).contains(&c.month) && (1..=31).contains(&c.day),
                "{c:?}"
            );
        }
    }
}
