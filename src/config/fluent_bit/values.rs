//! Fluent Bit value forms turned into logferry's: booleans, seconds, sizes in KiB, endpoints,
//! time formats, escaped separators. Each returns a message (without the key) on a bad value.

/// `true`/`on`/`yes`/`1` and `false`/`off`/`no`/`0`, any case, as Fluent Bit reads booleans.
pub fn boolean(value: &str) -> Result<bool, String> {
    match value.trim().to_ascii_lowercase().as_str() {
        "true" | "on" | "yes" | "1" => Ok(true),
        "false" | "off" | "no" | "0" => Ok(false),
        _ => Err(format!(
            "`{value}` is not a boolean; write true or false (on/off, yes/no)"
        )),
    }
}

/// A non-negative integer.
pub fn integer(value: &str) -> Result<u64, String> {
    value
        .trim()
        .parse()
        .map_err(|_| format!("`{value}` is not a whole number"))
}

/// Fluent Bit durations are seconds (`5`, `1.5`); logferry's are written `5s`. A value that
/// already has a unit (`500ms`) is kept.
pub fn seconds(value: &str) -> Result<String, String> {
    let v = value.trim();
    if let Ok(secs) = v.parse::<f64>() {
        if secs.is_finite() && secs >= 0.0 {
            return Ok(format!("{v}s"));
        }
    }
    match v.parse::<crate::config::units::Duration>() {
        Ok(_) => Ok(v.to_string()),
        Err(_) => Err(format!("`{value}` is not a number of seconds")),
    }
}

/// Sizes that Fluent Bit reads as KiB when bare (`Chunk_Size 32` = 32 KiB in the tcp input);
/// with a unit (`64k`, `1M`) they are kept.
pub fn kib_size(value: &str) -> Result<String, String> {
    let v = value.trim();
    if let Ok(n) = v.parse::<u64>() {
        return Ok(format!("{n}KiB"));
    }
    match v.parse::<crate::config::units::ByteSize>() {
        Ok(_) => Ok(v.to_string()),
        Err(e) => Err(e),
    }
}

/// A size as Fluent Bit writes it (`256MB`, `25M`, `32k`; decimal units as in Fluent Bit).
pub fn size(value: &str) -> Result<crate::config::units::ByteSize, String> {
    value.trim().parse()
}

/// An endpoint as a full URL. Fluent Bit's C AWS plugins take a host name (`endpoint
/// kinesis.eu-west-1.amazonaws.com`, `port 443`, always HTTPS); the Go plugins and logferry take
/// a URL (`http://127.0.0.1:4566`). `port` is added to either form when the URL has none.
pub fn endpoint(value: &str, port: Option<&str>) -> Result<String, String> {
    let v = value.trim();
    let port = match port {
        Some(p) => {
            let n: u16 = p
                .trim()
                .parse()
                .map_err(|_| format!("port `{p}` is not a TCP port number"))?;
            Some(n)
        }
        None => None,
    };
    let (scheme, rest) = match v.split_once("://") {
        Some((s, r)) if s.eq_ignore_ascii_case("http") || s.eq_ignore_ascii_case("https") => {
            (s.to_ascii_lowercase(), r)
        }
        Some((s, _)) => {
            return Err(format!(
                "`{value}` has scheme `{s}`; use an https:// (or http://) URL or a host name"
            ))
        }
        None => ("https".to_string(), v),
    };
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], rest[i..].trim_end_matches('/')),
        None => (rest, ""),
    };
    if authority.is_empty() || authority.contains(char::is_whitespace) {
        return Err(format!("`{value}` has no host name"));
    }
    let host_end = if authority.starts_with('[') {
        authority.find(']').map_or(authority.len(), |i| i + 1)
    } else {
        authority.rfind(':').unwrap_or(authority.len())
    };
    let has_port = authority[host_end..]
        .strip_prefix(':')
        .is_some_and(|p| !p.is_empty() && p.chars().all(|c| c.is_ascii_digit()));
    match (has_port, port) {
        (true, Some(p)) => Err(format!(
            "`{value}` already has a port; remove `port {p}` or the port in the endpoint"
        )),
        (false, Some(p)) => Ok(format!("{scheme}://{authority}:{p}{path}")),
        _ => Ok(format!("{scheme}://{authority}{path}")),
    }
}

/// Which AWS plugin's strftime dialect a `time_key_format` is written in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TimeDialect {
    /// Fluent Bit's C plugin (`kinesis_streams`): `%3N` ms, `%9N` and `%L` ns.
    FluentBitC,
    /// aws-for-fluent-bit's Go plugin (`kinesis`, lestrrat-go/strftime): `%L` ms, `%f` µs.
    GoPlugin,
}

/// Rewrites a `time_key_format` into logferry's syntax (see [`crate::encode`]: `%L` ms, `%f`
/// µs, `%3N`/`%6N`/`%9N`). The Go plugin's conversions are already ours; the C plugin's `%L`
/// (nanoseconds) becomes `%9N`. `%%` stays a literal percent sign.
pub fn time_key_format(format: &str, dialect: TimeDialect) -> Result<String, String> {
    if dialect == TimeDialect::GoPlugin {
        return Ok(format.to_string());
    }
    let mut out = String::with_capacity(format.len() + 2);
    let mut chars = format.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('L') => out.push_str("%9N"),
            Some('f') => {
                return Err(format!(
                    "`{format}`: the kinesis_streams plugin has no %f; write %3N (milliseconds) \
                     or %9N (nanoseconds)"
                ))
            }
            Some(other) => {
                out.push('%');
                out.push(other);
            }
            None => out.push('%'),
        }
    }
    Ok(out)
}

/// Fluent Bit's `Separator` with `\n`, `\r`, `\t` and `\\` escapes.
pub fn unescape(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    let mut chars = value.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('n') => out.push('\n'),
            Some('r') => out.push('\r'),
            Some('t') => out.push('\t'),
            Some('\\') => out.push('\\'),
            Some(other) => {
                out.push('\\');
                out.push(other);
            }
            None => out.push('\\'),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn booleans_seconds_and_sizes() {
        assert_eq!(boolean("On"), Ok(true));
        assert_eq!(boolean("no"), Ok(false));
        assert!(boolean("maybe").is_err());
        assert_eq!(seconds("5").unwrap(), "5s");
        assert_eq!(seconds("1.5").unwrap(), "1.5s");
        assert_eq!(seconds("250ms").unwrap(), "250ms");
        assert!(seconds("soon").is_err());
        assert_eq!(kib_size("32").unwrap(), "32KiB");
        assert_eq!(kib_size("1M").unwrap(), "1M");
        assert_eq!(size("256MB").unwrap().bytes(), 256_000_000);
    }

    #[test]
    fn endpoint_url_and_host_forms() {
        assert_eq!(
            endpoint("http://127.0.0.1:4566", None).unwrap(),
            "http://127.0.0.1:4566"
        );
        assert_eq!(
            endpoint("http://127.0.0.1", Some("4566")).unwrap(),
            "http://127.0.0.1:4566"
        );
        assert_eq!(
            endpoint("kinesis.eu-west-1.amazonaws.com", None).unwrap(),
            "https://kinesis.eu-west-1.amazonaws.com"
        );
        assert_eq!(
            endpoint("vpce-1.kinesis.us-east-1.vpce.amazonaws.com", Some("8443")).unwrap(),
            "https://vpce-1.kinesis.us-east-1.vpce.amazonaws.com:8443"
        );
        assert_eq!(
            endpoint("HTTPS://host.example/", None).unwrap(),
            "https://host.example"
        );
        assert!(endpoint("http://127.0.0.1:4566", Some("4567"))
            .unwrap_err()
            .contains("already has a port"));
        assert!(endpoint("host", Some("http")).is_err());
        assert!(endpoint("ftp://host", None).is_err());
        assert!(endpoint("http://", None).is_err());
    }

    #[test]
    fn c_plugin_percent_l_is_nanoseconds_go_plugin_is_kept() {
        assert_eq!(
            time_key_format("%Y-%m-%dT%H:%M:%S.%L", TimeDialect::FluentBitC).unwrap(),
            "%Y-%m-%dT%H:%M:%S.%9N"
        );
        assert_eq!(
            time_key_format("%S.%3N %%L", TimeDialect::FluentBitC).unwrap(),
            "%S.%3N %%L"
        );
        assert!(time_key_format("%S.%f", TimeDialect::FluentBitC).is_err());
        assert_eq!(
            time_key_format("%S.%L", TimeDialect::GoPlugin).unwrap(),
            "%S.%L"
        );
    }

    #[test]
    fn separator_escapes() {
        assert_eq!(unescape("\\n"), "\n");
        assert_eq!(unescape("\\r\\n"), "\r\n");
        assert_eq!(unescape("||"), "||");
    }
}
