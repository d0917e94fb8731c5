//! Rendering of a record's time under `time_key` (Kinesis) or `timestamp_key` (Kafka): one enum
//! for both option styles, compiled once into a [`TimeWriter`].
//!
//! Times are always rendered in UTC, as Fluent Bit and its AWS plugins do.
//!
//! `Strftime` takes chrono's strftime syntax plus the sub-second conversions the aws-for-fluent-bit
//! Go plugins (`kinesis`, `firehose`) document: `%L` = milliseconds (3 digits) and `%f` =
//! microseconds (6 digits, where plain chrono would print nanoseconds), and the ones Fluent Bit's
//! C plugins (`kinesis_streams`, `firehose`, `s3`) document: `%3N` = milliseconds and `%9N` =
//! nanoseconds; `%6N` = microseconds and `%N` = nanoseconds (9 digits) are our extensions.
//! All are zero-padded and truncated, never rounded. Note the C plugins read `%L` as nanoseconds;
//! we follow the Go plugins' (and Ruby's) milliseconds.
//! The default format is `%Y-%m-%dT%H:%M:%S`, both AWS plugins' default.

use std::cell::RefCell;
use std::sync::atomic::{AtomicU64, Ordering};

use chrono::format::{Item, Numeric, Pad, StrftimeItems};
use chrono::{DateTime, Utc};

use super::civil::Civil;
use super::{json, EncodeError};
use crate::config::field::FieldError;
use crate::event::EventTime;
use crate::msgpack::write;

/// Both AWS plugins' default `time_key_format`.
pub const DEFAULT_STRFTIME: &str = "%Y-%m-%dT%H:%M:%S";

/// How many fraction-of-a-second digits an ISO 8601 time carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Subsecond {
    None,
    Millis,
    Micros,
    Nanos,
}

impl Subsecond {
    fn digits(self) -> u32 {
        match self {
            Subsecond::None => 0,
            Subsecond::Millis => 3,
            Subsecond::Micros => 6,
            Subsecond::Nanos => 9,
        }
    }
}

/// How a record's time is written.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TimeFormat {
    /// A strftime pattern (see the module docs for the sub-second conversions); a string.
    Strftime(String),
    /// `2024-05-14T09:30:01.123456Z`: RFC 3339 in UTC with this many fraction digits; a string.
    Iso8601(Subsecond),
    /// Seconds since the epoch with a fraction: in JSON the exact decimal with 9 digits
    /// (`1715679001.123456789`), in msgpack a float64.
    Double,
    /// Whole seconds since the epoch, an integer.
    Epoch,
    /// Milliseconds since the epoch, an integer.
    EpochMillis,
}

impl Default for TimeFormat {
    fn default() -> Self {
        TimeFormat::Strftime(DEFAULT_STRFTIME.to_string())
    }
}

impl TimeFormat {
    /// Parses a Fluent Bit `timestamp_format` / `json_date_format` name (case-insensitive):
    /// `double`, `epoch`, `epoch_ms`, `iso8601` (microseconds, as Fluent Bit's Kafka and HTTP
    /// outputs write it), `iso8601_ns` (nanoseconds), and our `iso8601_ms` (milliseconds).
    /// `key` names the option in the error.
    pub fn from_name(key: &str, name: &str) -> Result<TimeFormat, FieldError> {
        Ok(match name.to_ascii_lowercase().as_str() {
            "double" => TimeFormat::Double,
            "epoch" => TimeFormat::Epoch,
            "epoch_ms" => TimeFormat::EpochMillis,
            "iso8601" => TimeFormat::Iso8601(Subsecond::Micros),
            "iso8601_ms" => TimeFormat::Iso8601(Subsecond::Millis),
            "iso8601_ns" => TimeFormat::Iso8601(Subsecond::Nanos),
            _ => {
                return Err(FieldError::new(
                    key,
                    format!(
                        "`{name}` is not a time format; use one of double, epoch, epoch_ms, \
                         iso8601, iso8601_ms, iso8601_ns"
                    ),
                ))
            }
        })
    }
}

/// One part of a compiled strftime pattern.
#[derive(Debug)]
enum Piece {
    /// Parsed chrono items.
    Chrono(Vec<Item<'static>>),
    /// A segment of only literal text and zero-padded `%Y %m %d %H %M %S` (so also `%F`, `%T`):
    /// written from [`Civil`] fields, without chrono's formatter, for years 0 to 9999 (chrono
    /// writes 4 digits there too). `items` is the same segment for chrono, used outside that
    /// range and for leap seconds.
    Civil {
        fields: Vec<CivilField>,
        items: Vec<Item<'static>>,
    },
    /// A segment of literal text only (`.` and `Z` of `iso8601`), written as it is.
    Text(Box<[u8]>),
    /// The fraction of the second with this many digits.
    Fraction(u32),
}

/// One element of a [`Piece::Civil`] segment.
#[derive(Debug)]
enum CivilField {
    Text(Box<[u8]>),
    Year,
    Month,
    Day,
    Hour,
    Minute,
    Second,
}

impl Piece {
    /// A chrono segment, as [`Piece::Civil`] when every item has a civil field.
    fn of_items(items: Vec<Item<'static>>) -> Piece {
        let field = |item: &Item<'_>| {
            Some(match item {
                Item::Literal(text) | Item::Space(text) => CivilField::Text(text.as_bytes().into()),
                Item::OwnedLiteral(text) | Item::OwnedSpace(text) => {
                    CivilField::Text(text.as_bytes().into())
                }
                Item::Numeric(numeric, Pad::Zero) => match numeric {
                    Numeric::Year => CivilField::Year,
                    Numeric::Month => CivilField::Month,
                    Numeric::Day => CivilField::Day,
                    Numeric::Hour => CivilField::Hour,
                    Numeric::Minute => CivilField::Minute,
                    Numeric::Second => CivilField::Second,
                    _ => return None,
                },
                _ => return None,
            })
        };
        match items.iter().map(field).collect::<Option<Vec<_>>>() {
            Some(fields) => {
                let text: Option<Vec<u8>> = fields.iter().try_fold(Vec::new(), |mut all, f| {
                    match f {
                        CivilField::Text(text) => all.extend_from_slice(text),
                        _ => return None,
                    }
                    Some(all)
                });
                match text {
                    Some(text) => Piece::Text(text.into()),
                    None => Piece::Civil { fields, items },
                }
            }
            None => Piece::Chrono(items),
        }
    }

    /// True when what the piece writes never needs JSON escaping: digits, and literal text
    /// that JSON takes as it is ([`json::needs_escaping`]). Chrono's output is not looked at.
    fn writes_plain_json(&self) -> bool {
        let plain = |text: &[u8]| !json::needs_escaping(text);
        match self {
            Piece::Chrono(_) => false,
            Piece::Civil { fields, .. } => fields.iter().all(|f| match f {
                CivilField::Text(text) => plain(text),
                _ => true,
            }),
            Piece::Text(text) => plain(text),
            Piece::Fraction(_) => true,
        }
    }
}

/// Appends `value` (below 10^`width`) as `width` zero-padded digits.
fn write_padded(out: &mut Vec<u8>, value: u32, width: usize) {
    let start = out.len();
    out.resize(start + width, b'0');
    let mut value = value;
    for slot in out[start..].iter_mut().rev() {
        *slot = b'0' + (value % 10) as u8;
        value /= 10;
    }
}

/// "00" to "99", two bytes each: a field is written with one lookup instead of a division per
/// digit.
const DIGIT_PAIRS: &[u8; 200] = b"\
    0001020304050607080910111213141516171819\
    2021222324252627282930313233343536373839\
    4041424344454647484950515253545556575859\
    6061626364656667686970717273747576777879\
    8081828384858687888990919293949596979899";

/// Appends `value` (below 100) as two digits.
fn push_pair(out: &mut Vec<u8>, value: u32) {
    let at = (value as usize % 100) * 2;
    out.extend_from_slice(&DIGIT_PAIRS[at..at + 2]);
}

/// Writes a [`Piece::Civil`] segment; the year is within 0..=9999.
fn write_civil(fields: &[CivilField], civil: &Civil, out: &mut Vec<u8>) {
    out.reserve(32);
    for field in fields {
        match field {
            CivilField::Text(text) => out.extend_from_slice(text),
            CivilField::Year => {
                let year = civil.year as u32;
                push_pair(out, year / 100);
                push_pair(out, year % 100);
            }
            CivilField::Month => push_pair(out, civil.month),
            CivilField::Day => push_pair(out, civil.day),
            CivilField::Hour => push_pair(out, civil.hour),
            CivilField::Minute => push_pair(out, civil.minute),
            CivilField::Second => push_pair(out, civil.second),
        }
    }
}

/// Names each compiled pattern for [`LAST_SECOND`], so that two writers never share an entry.
static NEXT_PATTERN_ID: AtomicU64 = AtomicU64::new(1);

/// Longest leading segment text kept by [`LAST_SECOND`].
const CACHED_TEXT: usize = 48;

/// The text a pattern's leading [`Piece::Civil`] segment had for one second.
struct LastSecond {
    /// [`Compiled::Pattern`]'s `id`; 0 for none.
    pattern: u64,
    secs: i64,
    len: usize,
    text: [u8; CACHED_TEXT],
}

thread_local! {
    /// Per thread, the last second written by a pattern that starts with a civil segment (as
    /// `iso8601` and `%Y-%m-%dT%H:%M:%S` do). Records of a batch mostly share their second, so
    /// most copy these ~19 bytes instead of computing the calendar fields and writing them
    /// digit by digit (~4% of the CPU of the forward → Kafka run, which writes `@timestamp`).
    static LAST_SECOND: RefCell<LastSecond> = const {
        RefCell::new(LastSecond {
            pattern: 0,
            secs: 0,
            len: 0,
            text: [0; CACHED_TEXT],
        })
    };
}

#[derive(Debug)]
enum Compiled {
    Pattern {
        /// Distinct per compiled pattern: the key of [`LAST_SECOND`].
        id: u64,
        pieces: Vec<Piece>,
        /// The pattern refers to the offset (`%z`, `%Z`, `%+`, ...): formatting must go through
        /// `DateTime<Utc>`, which costs one small allocation per call; otherwise the naive UTC
        /// time is formatted with no allocation.
        with_offset: bool,
    },
    Double,
    Epoch,
    EpochMillis,
}

/// A [`TimeFormat`] compiled once: patterns parsed and validated up front.
#[derive(Debug)]
pub struct TimeWriter {
    compiled: Compiled,
    /// The pattern's text never needs JSON escaping, so [`TimeWriter::write_json`] does not
    /// look at what it wrote.
    plain_json: bool,
}

/// The sub-second conversions we handle ourselves, longest first.
const FRACTIONS: [(&str, u32); 6] = [
    ("3N", 3),
    ("6N", 6),
    ("9N", 9),
    ("L", 3),
    ("f", 6),
    ("N", 9),
];

fn parse_chrono(segment: &str, key: &str, whole: &str) -> Result<Vec<Item<'static>>, FieldError> {
    StrftimeItems::new(segment).parse_to_owned().map_err(|_| {
        FieldError::new(
            key,
            format!(
                "`{whole}` is not a valid strftime format (unknown or incomplete % conversion); \
                 write a literal % as %%"
            ),
        )
    })
}

/// Splits a pattern into chrono segments and our fraction conversions.
fn compile_pattern(pattern: &str, key: &str) -> Result<Vec<Piece>, FieldError> {
    let mut pieces = Vec::new();
    let mut segment = String::new();
    let mut rest = pattern;
    while let Some(at) = rest.find('%') {
        segment.push_str(&rest[..at]);
        let after = &rest[at + 1..];
        if let Some(escaped) = after.strip_prefix('%') {
            segment.push_str("%%");
            rest = escaped;
            continue;
        }
        if let Some((spec, digits)) = FRACTIONS.iter().find(|(spec, _)| after.starts_with(spec)) {
            if !segment.is_empty() {
                pieces.push(Piece::of_items(parse_chrono(&segment, key, pattern)?));
                segment.clear();
            }
            pieces.push(Piece::Fraction(*digits));
            rest = &after[spec.len()..];
            continue;
        }
        segment.push('%');
        rest = after;
    }
    segment.push_str(rest);
    if !segment.is_empty() {
        pieces.push(Piece::of_items(parse_chrono(&segment, key, pattern)?));
    }
    Ok(pieces)
}

/// Lets chrono write into a byte vector.
struct VecWriter<'a>(&'a mut Vec<u8>);

impl std::fmt::Write for VecWriter<'_> {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        self.0.extend_from_slice(s.as_bytes());
        Ok(())
    }
}

fn write_fraction(out: &mut Vec<u8>, nanos: u32, digits: u32) {
    // The usual widths with constant divisors, which compile to multiplications.
    match digits {
        3 => write_padded(out, nanos / 1_000_000, 3),
        6 => write_padded(out, nanos / 1_000, 6),
        9 => write_padded(out, nanos, 9),
        _ => write_padded(out, nanos / 10u32.pow(9 - digits), digits as usize),
    }
}

impl TimeWriter {
    /// Compiles `format`; `key` names the option in errors (`time_key_format`).
    pub fn new(format: &TimeFormat, key: &str) -> Result<TimeWriter, FieldError> {
        let compiled = match format {
            TimeFormat::Strftime(pattern) => {
                let pieces = compile_pattern(pattern, key)?;
                Self::pattern(pieces, pattern, key)?
            }
            TimeFormat::Iso8601(sub) => {
                let mut pieces = vec![Piece::of_items(parse_chrono(
                    "%Y-%m-%dT%H:%M:%S",
                    key,
                    "iso8601",
                )?)];
                if *sub != Subsecond::None {
                    pieces.push(Piece::of_items(vec![Item::Literal(".")]));
                    pieces.push(Piece::Fraction(sub.digits()));
                }
                pieces.push(Piece::of_items(vec![Item::Literal("Z")]));
                Self::pattern(pieces, "iso8601", key)?
            }
            TimeFormat::Double => Compiled::Double,
            TimeFormat::Epoch => Compiled::Epoch,
            TimeFormat::EpochMillis => Compiled::EpochMillis,
        };
        let plain_json = match &compiled {
            Compiled::Pattern { pieces, .. } => pieces.iter().all(Piece::writes_plain_json),
            _ => true,
        };
        Ok(TimeWriter {
            compiled,
            plain_json,
        })
    }

    /// Decides between the naive and the offset-aware path by formatting a sample time: the
    /// naive path fails on conversions that need an offset.
    fn pattern(pieces: Vec<Piece>, pattern: &str, key: &str) -> Result<Compiled, FieldError> {
        let sample = EventTime::new(1_715_679_001, 123_456_789);
        let mut scratch = Vec::new();
        let mut compiled = Compiled::Pattern {
            id: NEXT_PATTERN_ID.fetch_add(1, Ordering::Relaxed),
            pieces,
            with_offset: false,
        };
        for with_offset in [false, true] {
            if let Compiled::Pattern {
                with_offset: flag, ..
            } = &mut compiled
            {
                *flag = with_offset;
            }
            scratch.clear();
            if write_compiled(&compiled, sample, &mut scratch).is_ok() {
                return Ok(compiled);
            }
        }
        Err(FieldError::new(
            key,
            format!("`{pattern}` cannot be formatted for a sample time"),
        ))
    }

    /// True when the time is written as a string (patterns), false for numbers.
    pub fn is_text(&self) -> bool {
        matches!(self.compiled, Compiled::Pattern { .. })
    }

    /// Appends the rendering without quotes: the text of a pattern, or the JSON number.
    pub fn write_bare(&self, t: EventTime, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        write_compiled(&self.compiled, t, out)
    }

    /// Appends the time as a JSON value.
    pub fn write_json(&self, t: EventTime, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        if !self.is_text() {
            return self.write_bare(t, out);
        }
        out.push(b'"');
        let start = out.len();
        if let Err(e) = self.write_bare(t, out) {
            out.truncate(start - 1);
            return Err(e);
        }
        // Literal text of a pattern may hold quotes or control characters.
        if !self.plain_json && json::needs_escaping(&out[start..]) {
            let raw = out.split_off(start);
            json::write_str_body(out, &raw);
        }
        out.push(b'"');
        Ok(())
    }

    /// Appends the time as a msgpack value: `str` for patterns, float64 for `Double`, integers
    /// for the epoch forms.
    pub fn write_msgpack(&self, t: EventTime, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        match self.compiled {
            Compiled::Pattern { .. } => {
                let start = out.len();
                self.write_bare(t, out)?;
                let len = out.len() - start;
                // The length is known only now: append the header, then rotate it in front.
                if let Err(e) = write::write_str_len(out, len) {
                    out.truncate(start);
                    return Err(e.into());
                }
                let header_len = out.len() - start - len;
                out[start..].rotate_right(header_len);
            }
            Compiled::Double => write::write_f64(out, t.as_f64()),
            Compiled::Epoch => write::write_int(out, t.secs),
            Compiled::EpochMillis => write::write_int(out, epoch_millis(t)),
        }
        Ok(())
    }
}

fn write_compiled(compiled: &Compiled, t: EventTime, out: &mut Vec<u8>) -> Result<(), EncodeError> {
    let start = out.len();
    let result = match compiled {
        Compiled::Pattern {
            id,
            pieces,
            with_offset,
        } => write_pattern(*id, pieces, *with_offset, t, out),
        Compiled::Double => {
            write_decimal_seconds(out, t);
            Ok(())
        }
        Compiled::Epoch => {
            json::write_i64(out, t.secs);
            Ok(())
        }
        Compiled::EpochMillis => {
            json::write_i64(out, epoch_millis(t));
            Ok(())
        }
    };
    if result.is_err() {
        out.truncate(start);
    }
    result
}

/// Milliseconds since the epoch, saturating for absurd times rather than overflowing.
fn epoch_millis(t: EventTime) -> i64 {
    t.secs
        .saturating_mul(1000)
        .saturating_add(i64::from(t.nanos / 1_000_000))
}

/// `secs.nnnnnnnnn`, exact; negative times (whole seconds rounded down, positive nanos) are
/// written as the signed decimal they stand for.
fn write_decimal_seconds(out: &mut Vec<u8>, t: EventTime) {
    let (negative, whole, frac) = match (t.secs < 0, t.nanos) {
        (false, nanos) => (false, t.secs.unsigned_abs(), nanos),
        (true, 0) => (true, t.secs.unsigned_abs(), 0),
        (true, nanos) => (true, (t.secs + 1).unsigned_abs(), 1_000_000_000 - nanos),
    };
    if negative {
        out.push(b'-');
    }
    json::write_u64(out, whole);
    out.push(b'.');
    write_fraction(out, frac, 9);
}

/// Writes the leading civil segment `fields` of pattern `id` for `secs` from [`LAST_SECOND`],
/// or computes it and keeps it there. False (nothing written) when the year is outside
/// 0..=9999, which the civil writer does not handle.
fn write_leading_civil(id: u64, fields: &[CivilField], secs: i64, out: &mut Vec<u8>) -> bool {
    LAST_SECOND.with_borrow_mut(|last| {
        if last.pattern == id && last.secs == secs {
            out.extend_from_slice(&last.text[..last.len]);
            return true;
        }
        let civil = Civil::from_unix(secs);
        if !(0..=9999).contains(&civil.year) {
            return false;
        }
        let start = out.len();
        write_civil(fields, &civil, out);
        let text = &out[start..];
        if text.len() <= CACHED_TEXT {
            last.text[..text.len()].copy_from_slice(text);
            (last.pattern, last.secs, last.len) = (id, secs, text.len());
        }
        true
    })
}

fn write_pattern(
    id: u64,
    pieces: &[Piece],
    with_offset: bool,
    t: EventTime,
    out: &mut Vec<u8>,
) -> Result<(), EncodeError> {
    let out_of_range = || EncodeError::TimeOutOfRange { secs: t.secs };
    let nanos_fit = t.nanos < 1_000_000_000;
    let mut rest = pieces;
    if let [Piece::Civil { fields, .. }, after @ ..] = pieces {
        if nanos_fit && write_leading_civil(id, fields, t.secs, out) {
            rest = after;
        }
    }
    // Computed on the first civil segment with a calendar field only: after the cached
    // leading segment, the usual patterns have none left (`.`, the fraction, `Z`).
    let mut civil: Option<(Civil, bool)> = None;
    let mut civil_of = || {
        *civil.get_or_insert_with(|| {
            let civil = Civil::from_unix(t.secs);
            (civil, (0..=9999).contains(&civil.year) && nanos_fit)
        })
    };
    // Built on the first chrono segment only: the usual patterns have none.
    let mut chrono_time = None;
    for piece in rest {
        match piece {
            Piece::Fraction(digits) => write_fraction(out, t.nanos, *digits),
            Piece::Text(text) => out.extend_from_slice(text),
            Piece::Civil { fields, .. } if civil_of().1 => write_civil(fields, &civil_of().0, out),
            Piece::Civil { items, .. } | Piece::Chrono(items) => {
                let utc = match chrono_time {
                    Some(utc) => utc,
                    None => {
                        let utc = DateTime::<Utc>::from_timestamp(t.secs, t.nanos)
                            .ok_or_else(out_of_range)?;
                        *chrono_time.insert(utc)
                    }
                };
                let naive = utc.naive_utc();
                let written = if with_offset {
                    utc.format_with_items(items.iter())
                        .write_to(&mut VecWriter(out))
                } else {
                    naive
                        .format_with_items(items.iter())
                        .write_to(&mut VecWriter(out))
                };
                written.map_err(|_| out_of_range())?;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn render(pattern: &str, t: EventTime) -> String {
        let writer = TimeWriter::new(&TimeFormat::Strftime(pattern.into()), "k").unwrap();
        let mut out = Vec::new();
        writer.write_bare(t, &mut out).unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn fractions_are_truncated_and_zero_padded() {
        let t = EventTime::new(0, 1_999_999);
        assert_eq!(render("%L|%f|%N", t), "001|001999|001999999");
        assert_eq!(
            render("%3N%6N%9N", EventTime::new(0, 0)),
            "000000000000000000"
        );
    }

    #[test]
    fn percent_escapes_are_not_conversions() {
        let t = EventTime::new(0, 5_000_000);
        assert_eq!(render("%%L %%f %%%L", t), "%L %f %005");
        assert_eq!(render("no conversions", t), "no conversions");
        assert_eq!(render("", t), "");
    }

    #[test]
    fn only_patterns_with_an_offset_take_the_allocating_path() {
        let with_offset =
            |pattern: &str| match TimeWriter::new(&TimeFormat::Strftime(pattern.into()), "k")
                .unwrap()
                .compiled
            {
                Compiled::Pattern { with_offset, .. } => with_offset,
                _ => unreachable!(),
            };
        assert!(!with_offset(DEFAULT_STRFTIME));
        assert!(!with_offset("%s.%L %a %b"));
        assert!(with_offset("%Y%z"));
        assert!(with_offset("%Z"));
        assert!(with_offset("%+"));
        let iso = TimeWriter::new(&TimeFormat::Iso8601(Subsecond::Nanos), "k").unwrap();
        assert!(matches!(
            iso.compiled,
            Compiled::Pattern {
                with_offset: false,
                ..
            }
        ));
    }

    /// The usual patterns never reach chrono's formatter; the rest keep it.
    #[test]
    fn common_patterns_take_the_civil_path() {
        let civil_only = |format: &TimeFormat| match TimeWriter::new(format, "k").unwrap().compiled
        {
            Compiled::Pattern { pieces, .. } => pieces
                .iter()
                .all(|p| matches!(p, Piece::Civil { .. } | Piece::Text(_) | Piece::Fraction(_))),
            _ => unreachable!(),
        };
        for format in [
            TimeFormat::default(),
            TimeFormat::Iso8601(Subsecond::None),
            TimeFormat::Iso8601(Subsecond::Micros),
            TimeFormat::Strftime("%F %T.%L".into()),
            TimeFormat::Strftime("[%d/%m/%Y:%H:%M:%S %%]".into()),
        ] {
            assert!(civil_only(&format), "{format:?}");
        }
        for pattern in ["%b %e %H:%M:%S", "%s", "%Y%z", "%-m/%d", "%y"] {
            assert!(
                !civil_only(&TimeFormat::Strftime(pattern.into())),
                "{pattern}"
            );
        }
    }

    /// Rendered through the civil fields or through chrono, the text is the same: every pattern
    /// is written once with its civil segments and once forced through chrono, over times from
    /// year 1 to past 9999 (where the civil path hands over to chrono), negative times, and a
    /// leap second.
    #[test]
    fn civil_segments_render_as_chrono_does() {
        let patterns = [
            DEFAULT_STRFTIME,
            "%Y-%m-%dT%H:%M:%S.%fZ",
            "%F %T",
            "%d/%m/%Y %H.%M.%S %L%%",
            "%H:%M:%S on %Y-%m-%d, %a",
        ];
        let mut times = vec![
            EventTime::new(0, 0),
            EventTime::new(-1, 999_999_999),
            EventTime::new(-62_135_596_800, 1), // 0001-01-01
            EventTime::new(-62_167_219_200, 0), // 0000-01-01
            EventTime::new(253_402_300_799, 5), // 9999-12-31T23:59:59
            EventTime::new(253_402_300_800, 5), // 10000-01-01: chrono's +10000
            EventTime::new(1_483_228_799, 1_500_000_000), // a leap second
        ];
        let mut secs: i64 = -70_000_000_000;
        while secs < 300_000_000_000 {
            times.push(EventTime::new(
                secs,
                (secs.unsigned_abs() % 1_000_000_000) as u32,
            ));
            secs += 86_399 * 1_009;
        }
        for pattern in patterns {
            let writer = TimeWriter::new(&TimeFormat::Strftime(pattern.into()), "k").unwrap();
            let Compiled::Pattern {
                id,
                pieces,
                with_offset,
            } = &writer.compiled
            else {
                unreachable!()
            };
            let through_chrono: Vec<Piece> = pieces
                .iter()
                .map(|p| match p {
                    Piece::Civil { items, .. } => Piece::Chrono(items.clone()),
                    Piece::Text(text) => Piece::Text(text.clone()),
                    Piece::Chrono(items) => Piece::Chrono(items.clone()),
                    Piece::Fraction(d) => Piece::Fraction(*d),
                })
                .collect();
            let (mut fast, mut slow) = (Vec::new(), Vec::new());
            // Each time twice, the second from the per-thread cache of the last second.
            for &t in times.iter().flat_map(|t| [t, t]) {
                fast.clear();
                slow.clear();
                let a = write_pattern(*id, pieces, *with_offset, t, &mut fast);
                let b = write_pattern(0, &through_chrono, *with_offset, t, &mut slow);
                assert_eq!(a.is_ok(), b.is_ok(), "{pattern} {t:?}");
                assert_eq!(
                    String::from_utf8_lossy(&fast),
                    String::from_utf8_lossy(&slow),
                    "{pattern} {t:?}"
                );
            }
        }
    }

    /// Only patterns whose literal text is plain skip the escaping check of `write_json`.
    #[test]
    fn plain_patterns_are_known_at_compile_time() {
        let plain = |format: TimeFormat| TimeWriter::new(&format, "k").unwrap().plain_json;
        assert!(plain(TimeFormat::Iso8601(Subsecond::Millis)));
        assert!(plain(TimeFormat::default()));
        assert!(plain(TimeFormat::Epoch));
        assert!(!plain(TimeFormat::Strftime("%Y.%L\"".into())));
        assert!(!plain(TimeFormat::Strftime("\t%Y".into())));
        assert!(
            !plain(TimeFormat::Strftime("%a %Y".into())),
            "chrono's text"
        );
    }

    /// The per-thread cache of the last second is per pattern: writers taking turns on the
    /// same second, and a writer going back to an earlier second, each get their own text.
    #[test]
    fn writers_taking_turns_keep_their_own_text() {
        let iso = TimeWriter::new(&TimeFormat::Iso8601(Subsecond::Millis), "k").unwrap();
        let slashes =
            TimeWriter::new(&TimeFormat::Strftime("%d/%m/%Y %H:%M:%S".into()), "k").unwrap();
        let write = |w: &TimeWriter, t: EventTime| {
            let mut out = Vec::new();
            w.write_bare(t, &mut out).unwrap();
            String::from_utf8(out).unwrap()
        };
        let (a, b) = (
            EventTime::new(1_715_679_001, 5_000_000),
            EventTime::new(1_715_679_002, 6_000_000),
        );
        for _ in 0..2 {
            assert_eq!(write(&iso, a), "2024-05-14T09:30:01.005Z");
            assert_eq!(write(&slashes, a), "14/05/2024 09:30:01");
            assert_eq!(write(&iso, b), "2024-05-14T09:30:02.006Z");
            assert_eq!(write(&iso, b), "2024-05-14T09:30:02.006Z");
            assert_eq!(write(&iso, a), "2024-05-14T09:30:01.005Z");
            assert_eq!(write(&slashes, b), "14/05/2024 09:30:02");
        }
    }

    #[test]
    fn numbers_for_negative_times() {
        let writer = TimeWriter::new(&TimeFormat::Double, "k").unwrap();
        let mut out = Vec::new();
        for (t, expected) in [
            (EventTime::new(-2, 500_000_000), -1.5),
            (EventTime::new(-1, 0), -1.0),
            (EventTime::new(-1, 999_999_999), -0.000_000_001),
        ] {
            out.clear();
            writer.write_bare(t, &mut out).unwrap();
            let text = std::str::from_utf8(&out).unwrap();
            assert_eq!(text.parse::<f64>().unwrap(), expected, "{text}");
        }
        assert_eq!(epoch_millis(EventTime::new(i64::MIN, 0)), i64::MIN);
    }
}
