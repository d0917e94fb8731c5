//! `types` (`code:integer size:integer`): the conversions Fluent Bit applies to the string
//! fields a `regex` or `logfmt` parser produces. They behave like the C functions Fluent Bit
//! calls, so the same text gives the same value: `integer` and `hex` read the leading digits
//! (`"12ms"` is 12, `"abc"` is 0), `float` the leading number (`"x"` is 0.0), and `bool` takes
//! `true` / `false` (any case) and leaves anything else as the string.

use bytes::Bytes;

use crate::event::Value;

/// One target type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FieldType {
    String,
    Integer,
    Float,
    Bool,
    Hex,
}

/// `key:type` pairs, parsed from `types` (space-separated, as Fluent Bit writes them).
pub fn parse(entries: &[String]) -> Result<Vec<(Bytes, FieldType)>, String> {
    let mut out = Vec::new();
    for item in entries.iter().flat_map(|e| e.split_whitespace()) {
        let Some((key, kind)) = item.rsplit_once(':') else {
            return Err(format!(
                "`{item}` is not KEY:TYPE (e.g. \"code:integer size:integer\")"
            ));
        };
        let kind = match kind.to_ascii_lowercase().as_str() {
            "string" => FieldType::String,
            "integer" => FieldType::Integer,
            "float" => FieldType::Float,
            "bool" => FieldType::Bool,
            "hex" => FieldType::Hex,
            other => {
                return Err(format!(
                    "`{item}`: unknown type `{other}`; use string, integer, float, bool or hex"
                ))
            }
        };
        if key.is_empty() {
            return Err(format!("`{item}` has no key before the `:`"));
        }
        out.push((Bytes::copy_from_slice(key.as_bytes()), kind));
    }
    Ok(out)
}

/// Converts a string value; other values are left alone.
pub fn convert(value: &Value, kind: FieldType) -> Option<Value> {
    let text = match value {
        Value::Str(s) => s,
        _ => return None,
    };
    let text = std::str::from_utf8(text).unwrap_or("");
    match kind {
        FieldType::String => None,
        FieldType::Integer => Some(Value::Int(leading_integer(text, 10))),
        FieldType::Hex => Some(Value::Int(leading_integer(text, 16))),
        FieldType::Float => Some(Value::Float(leading_float(text))),
        FieldType::Bool => {
            if text.eq_ignore_ascii_case("true") {
                Some(Value::Bool(true))
            } else if text.eq_ignore_ascii_case("false") {
                Some(Value::Bool(false))
            } else {
                None
            }
        }
    }
}

/// `strtoll`: optional spaces and sign, then digits of `radix` as far as they go; 0 if none.
fn leading_integer(text: &str, radix: u32) -> i64 {
    let t = text.trim_start();
    let (negative, digits) = match t.as_bytes().first() {
        Some(b'-') => (true, &t[1..]),
        Some(b'+') => (false, &t[1..]),
        _ => (false, t),
    };
    let digits = if radix == 16 {
        digits
            .strip_prefix("0x")
            .or_else(|| digits.strip_prefix("0X"))
            .unwrap_or(digits)
    } else {
        digits
    };
    let end = digits
        .char_indices()
        .find(|(_, c)| !c.is_digit(radix))
        .map_or(digits.len(), |(i, _)| i);
    let magnitude =
        i64::from_str_radix(&digits[..end], radix).unwrap_or(if end == 0 { 0 } else { i64::MAX });
    if negative {
        magnitude.saturating_neg()
    } else {
        magnitude
    }
}

/// `strtod`: the longest leading number; 0.0 if none.
fn leading_float(text: &str) -> f64 {
    let t = text.trim_start();
    let end = t
        .char_indices()
        .find(|(_, c)| !(c.is_ascii_digit() || matches!(c, '+' | '-' | '.' | 'e' | 'E')))
        .map_or(t.len(), |(i, _)| i);
    (1..=end)
        .rev()
        .find_map(|n| t[..n].parse::<f64>().ok())
        .unwrap_or(0.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(text: &str, kind: FieldType) -> Option<Value> {
        convert(&Value::from(text), kind)
    }

    #[test]
    fn conversions_read_like_the_c_library() {
        assert_eq!(c("12", FieldType::Integer), Some(Value::Int(12)));
        assert_eq!(c("12ms", FieldType::Integer), Some(Value::Int(12)));
        assert_eq!(c("-3", FieldType::Integer), Some(Value::Int(-3)));
        assert_eq!(c("abc", FieldType::Integer), Some(Value::Int(0)));
        assert_eq!(c("ff", FieldType::Hex), Some(Value::Int(255)));
        assert_eq!(c("zz", FieldType::Hex), Some(Value::Int(0)));
        assert_eq!(c("1.5", FieldType::Float), Some(Value::Float(1.5)));
        assert_eq!(c("2e3x", FieldType::Float), Some(Value::Float(2000.0)));
        assert_eq!(c("x", FieldType::Float), Some(Value::Float(0.0)));
        assert_eq!(c("TRUE", FieldType::Bool), Some(Value::Bool(true)));
        assert_eq!(c("false", FieldType::Bool), Some(Value::Bool(false)));
        assert_eq!(c("yes", FieldType::Bool), None);
        assert_eq!(convert(&Value::Int(3), FieldType::Integer), None);
    }

    #[test]
    fn type_lists_parse_and_errors_name_the_item() {
        let t = parse(&["code:integer size:integer".into(), "ok:bool".into()]).unwrap();
        assert_eq!(t.len(), 3);
        assert_eq!(t[2], (Bytes::from_static(b"ok"), FieldType::Bool));
        assert!(parse(&["code".into()]).unwrap_err().contains("code"));
        assert!(parse(&["code:int".into()]).unwrap_err().contains("int"));
    }
}
