//! `time_format` as Fluent Bit's parsers read it: strptime syntax, `%L` for fractional seconds,
//! text left after the format ignored (`%Y-%m-%dT%H:%M:%S.%L` takes Docker's
//! `2024-05-14T09:30:01.123456789Z`), and times without an offset taken as UTC.
//!
//! chrono does the parsing; only the two Fluent Bit spellings are translated: `.%L` (a fraction
//! of any length) becomes chrono's `%.f`, and `,%L` (log4j's milliseconds) `,%3f`.

use chrono::{DateTime, NaiveDateTime};

use crate::event::{EventTime, Value};

/// A compiled `time_format`.
#[derive(Clone, Debug)]
pub struct TimeFormat {
    /// The format in chrono's syntax.
    chrono: String,
    /// The format reads an offset (`%z`); otherwise times are UTC.
    with_offset: bool,
    /// `%s`: a number of seconds, which may also come as a msgpack integer or float.
    epoch: bool,
}

impl TimeFormat {
    /// Compiles a strptime-style format; the error says what is wrong, without the key name.
    pub fn new(format: &str) -> Result<TimeFormat, String> {
        let chrono = format.replace(".%L", "%.f").replace(",%L", ",%3f");
        if chrono.contains("%L") {
            return Err(format!(
                "`{format}`: %L (fractional seconds) must follow a `.` or `,`"
            ));
        }
        if chrono::format::StrftimeItems::new(&chrono)
            .any(|i| matches!(i, chrono::format::Item::Error))
        {
            return Err(format!(
                "`{format}` is not a valid time format (strptime syntax, e.g. \"%d/%b/%Y:%H:%M:%S %z\")"
            ));
        }
        let with_offset = ["%z", "%:z", "%#z", "%::z"]
            .iter()
            .any(|z| chrono.contains(z));
        Ok(TimeFormat {
            epoch: chrono.trim() == "%s",
            chrono,
            with_offset,
        })
    }

    /// The time a value holds, if it reads with this format.
    pub fn parse_value(&self, value: &Value) -> Option<EventTime> {
        match value {
            Value::Str(s) | Value::Bin(s) => self.parse(s),
            Value::Int(i) if self.epoch => Some(EventTime::new(*i, 0)),
            Value::UInt(u) if self.epoch => i64::try_from(*u).ok().map(|s| EventTime::new(s, 0)),
            Value::Float(f) if self.epoch => Some(EventTime::from_f64(*f)),
            _ => None,
        }
    }

    /// Parses text; whatever follows the format is ignored, as strptime does.
    pub fn parse(&self, text: &[u8]) -> Option<EventTime> {
        let text = std::str::from_utf8(text).ok()?.trim_start();
        self.parse_str(text).or_else(|| {
            // strptime's %z takes `Z` for UTC; chrono's does not.
            (self.with_offset && text.contains('Z'))
                .then(|| self.parse_str(&text.replacen('Z', "+00:00", 1)))
                .flatten()
        })
    }

    fn parse_str(&self, text: &str) -> Option<EventTime> {
        let (secs, nanos) = if self.with_offset {
            let (t, _) = DateTime::parse_and_remainder(text, &self.chrono).ok()?;
            (t.timestamp(), t.timestamp_subsec_nanos())
        } else {
            let (t, _) = NaiveDateTime::parse_and_remainder(text, &self.chrono).ok()?;
            let t = t.and_utc();
            (t.timestamp(), t.timestamp_subsec_nanos())
        };
        Some(EventTime::new(secs, nanos))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(format: &str, text: &str) -> Option<EventTime> {
        TimeFormat::new(format).unwrap().parse(text.as_bytes())
    }

    #[test]
    fn fractions_offsets_and_trailing_text() {
        assert_eq!(
            t("%Y-%m-%dT%H:%M:%S.%L", "2024-05-14T09:30:01.123456789Z"),
            Some(EventTime::new(1715679001, 123_456_789))
        );
        assert_eq!(
            t("%Y-%m-%dT%H:%M:%S.%L%z", "2024-05-14T09:30:01.5+02:00"),
            Some(EventTime::new(1715671801, 500_000_000))
        );
        assert_eq!(
            t("%Y-%m-%dT%H:%M:%S.%L%z", "2024-05-14T09:30:01.5Z"),
            Some(EventTime::new(1715679001, 500_000_000))
        );
        assert_eq!(
            t("%d/%b/%Y:%H:%M:%S", "14/May/2024:09:30:01 x"),
            Some(EventTime::new(1715679001, 0))
        );
        assert_eq!(
            t("%Y-%m-%d %H:%M:%S,%L", "2024-05-14 09:30:01,050"),
            Some(EventTime::new(1715679001, 50_000_000))
        );
        assert_eq!(t("%d/%b/%Y:%H:%M:%S", "bad time"), None);
    }

    #[test]
    fn epoch_seconds_from_numbers() {
        let f = TimeFormat::new("%s").unwrap();
        assert_eq!(
            f.parse_value(&Value::Int(1715679001)),
            Some(EventTime::new(1715679001, 0))
        );
        assert_eq!(f.parse_value(&Value::Bool(true)), None);
    }

    #[test]
    fn bad_formats_are_rejected() {
        assert!(TimeFormat::new("%H%L").is_err());
        assert!(TimeFormat::new("%Q").is_err());
    }
}
