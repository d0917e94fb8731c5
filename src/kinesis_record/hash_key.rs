//! Which hash key a Kinesis record is routed by.
//!
//! Kinesis routes a record to the open shard whose hash key range holds its hash key: the
//! record's ExplicitHashKey when given, else MD5 of the UTF-8 partition key read as an unsigned
//! 128-bit big-endian integer.

/// Longest decimal form of a 128-bit hash key (2^128 - 1 has 39 digits).
const MAX_HASH_KEY_DIGITS: usize = 39;

/// The hash key Kinesis computes for a partition key: MD5 of its UTF-8 bytes, big-endian.
pub fn hash_key(partition_key: &str) -> u128 {
    u128::from_be_bytes(md5_many::md5(partition_key.as_bytes()))
}

/// The hash key a record is routed by: its explicit hash key if it has one, else the MD5 of its
/// partition key.
pub fn effective_hash_key(
    partition_key: &str,
    explicit_hash_key: Option<&str>,
) -> Result<u128, HashKeyError> {
    match explicit_hash_key {
        Some(explicit) => parse_hash_key(explicit),
        None => Ok(hash_key(partition_key)),
    }
}

/// Why a decimal hash key string was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HashKeyError {
    #[error("hash key is empty: expected a decimal integer from 0 to 2^128-1")]
    Empty,
    #[error(
        "hash key {0:?} is not a plain decimal integer (digits only, no sign, no leading zero), \
         which is the only form Kinesis accepts"
    )]
    NotDecimal(String),
    #[error("hash key {0:?} is 2^128 or larger; Kinesis hash keys are unsigned 128-bit integers")]
    TooLarge(String),
}

/// Parses a hash key as Kinesis writes and accepts it: `0|[1-9][0-9]{0,38}`, below 2^128.
///
/// Strict on purpose: an explicit hash key Kinesis would refuse fails the whole PutRecords
/// request, so it must be caught per record before it is batched.
pub fn parse_hash_key(text: &str) -> Result<u128, HashKeyError> {
    let shown = || shorten(text);
    if text.is_empty() {
        return Err(HashKeyError::Empty);
    }
    let bytes = text.as_bytes();
    if !bytes.iter().all(u8::is_ascii_digit) || (bytes.len() > 1 && bytes[0] == b'0') {
        return Err(HashKeyError::NotDecimal(shown()));
    }
    if bytes.len() > MAX_HASH_KEY_DIGITS {
        return Err(HashKeyError::TooLarge(shown()));
    }
    bytes.iter().try_fold(0u128, |acc, digit| {
        acc.checked_mul(10)
            .and_then(|acc| acc.checked_add(u128::from(digit - b'0')))
            .ok_or_else(|| HashKeyError::TooLarge(shown()))
    })
}

/// Keeps error messages readable when a record carries a huge bogus key.
fn shorten(text: &str) -> String {
    const MAX_SHOWN: usize = 48;
    match text.char_indices().nth(MAX_SHOWN) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    fn python() -> String {
        crate::kinesis_record::kpl::tests::test_python()
    }

    #[test]
    fn hash_key_matches_published_md5_digests() {
        // RFC 1321 appendix A.5 test suite, hex digests read as big-endian integers.
        let published = [
            ("", "d41d8cd98f00b204e9800998ecf8427e"),
            ("a", "0cc175b9c0f1b6a831c399e269772661"),
            ("abc", "900150983cd24fb0d6963f7d28e17f72"),
            ("message digest", "f96b697d7cb7938d525a2f31aaf161d0"),
        ];
        for (key, hex) in published {
            assert_eq!(
                hash_key(key),
                u128::from_str_radix(hex, 16).unwrap(),
                "{key:?}"
            );
        }
    }

    #[test]
    fn hash_key_matches_python_hashlib() {
        let keys = [
            "pk-0",
            "kubernetes-pod-7f9c",
            "ключ-日本",
            "emoji-🚀",
            "a much longer partition key with spaces and punctuation: {}[]->",
        ];
        let script = "import hashlib, json, sys\n\
                      keys = json.load(sys.stdin)\n\
                      print(json.dumps([str(int.from_bytes(hashlib.md5(k.encode('utf-8')).digest(), 'big')) for k in keys]))";
        let mut child = Command::new(python())
            .args(["-c", script])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("run python (set LOGFERRY_PYTHON to a Python 3 interpreter)");
        serde_json::to_writer(child.stdin.take().unwrap(), &keys).unwrap();
        let output = child.wait_with_output().unwrap();
        assert!(output.status.success());
        let expected: Vec<String> = serde_json::from_slice(&output.stdout).unwrap();
        for (key, expected) in keys.iter().zip(expected) {
            assert_eq!(hash_key(key).to_string(), expected, "{key:?}");
        }
    }

    #[test]
    fn parses_only_what_kinesis_accepts() {
        assert_eq!(parse_hash_key("0"), Ok(0));
        assert_eq!(parse_hash_key("42"), Ok(42));
        assert_eq!(
            parse_hash_key("340282366920938463463374607431768211455"),
            Ok(u128::MAX)
        );
        assert_eq!(parse_hash_key(""), Err(HashKeyError::Empty));
        for bad in ["007", "-1", "+1", "1.0", " 1", "1e3", "٣"] {
            assert!(
                matches!(parse_hash_key(bad), Err(HashKeyError::NotDecimal(_))),
                "{bad:?}"
            );
        }
        for too_large in [
            "340282366920938463463374607431768211456",
            "999999999999999999999999999999999999999",
            "1000000000000000000000000000000000000000",
        ] {
            assert!(
                matches!(parse_hash_key(too_large), Err(HashKeyError::TooLarge(_))),
                "{too_large}"
            );
        }
    }

    #[test]
    fn effective_hash_key_prefers_the_explicit_one() {
        assert_eq!(effective_hash_key("abc", Some("5")), Ok(5));
        assert_eq!(effective_hash_key("abc", None), Ok(hash_key("abc")));
        assert!(effective_hash_key("abc", Some("x")).is_err());
    }
}
