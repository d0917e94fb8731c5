//! A record's partition key, kept without an allocation when the sink makes it up.
//!
//! Most records sent to Kinesis carry no key of their own and get 16 random hex digits (see
//! `sink::kinesis::batch::random_partition_key`). Held in a `String`, each of those cost an
//! allocation and a free per record; the key is therefore stored inline when it is at most
//! [`INLINE_CAPACITY`] bytes, and in a `String` only when it is longer (keys read from records
//! or configuration may be up to 256 characters).

use std::borrow::Borrow;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::ops::Deref;

/// Keys up to this many bytes are stored in the record itself: the hex digits of a random key,
/// and most keys taken from records (ids, host names).
pub const INLINE_CAPACITY: usize = 32;

/// A partition key: dereferences to `str`.
#[derive(Clone)]
pub struct PartitionKey(Repr);

#[derive(Clone)]
enum Repr {
    Inline { len: u8, bytes: InlineBytes },
    Owned(String),
}

/// An inline key's bytes, aligned to 8: a key is moved several times on its way into a
/// request (made, put in its record, the record in its entry, the entry in its batch), and at
/// an odd offset each move read words that had just been written at other offsets, which the
/// CPU cannot forward from its store buffer (a stall per word; ~1% of a no-ack run's CPU).
#[derive(Clone, Copy)]
#[repr(align(8))]
struct InlineBytes([u8; INLINE_CAPACITY]);

impl PartitionKey {
    /// A key of at most [`INLINE_CAPACITY`] bytes of text, stored inline; `None` if it is longer.
    pub fn inline(key: &str) -> Option<PartitionKey> {
        let len = key.len();
        if len > INLINE_CAPACITY {
            return None;
        }
        let mut bytes = InlineBytes([0; INLINE_CAPACITY]);
        bytes.0[..len].copy_from_slice(key.as_bytes());
        Some(PartitionKey(Repr::Inline {
            len: len as u8,
            bytes,
        }))
    }

    /// A key of ASCII bytes (such as hex digits), stored inline; `None` if it is longer than
    /// [`INLINE_CAPACITY`] or not ASCII. Checking ASCII takes a few instructions for a short key,
    /// a UTF-8 validation ~40 (this runs once per record for random keys).
    pub fn inline_ascii(key: &[u8]) -> Option<PartitionKey> {
        let len = key.len();
        if len > INLINE_CAPACITY || !key.is_ascii() {
            return None;
        }
        let mut bytes = InlineBytes([0; INLINE_CAPACITY]);
        bytes.0[..len].copy_from_slice(key);
        Some(PartitionKey(Repr::Inline {
            len: len as u8,
            bytes,
        }))
    }

    /// The key's bytes, without the UTF-8 check `as_str` makes on an inline key: the request
    /// body and the record's size read them for every record.
    pub fn as_bytes(&self) -> &[u8] {
        match &self.0 {
            Repr::Inline { len, bytes } => &bytes.0[..*len as usize],
            Repr::Owned(key) => key.as_bytes(),
        }
    }

    /// Length in bytes (what Kinesis counts), without the UTF-8 check.
    pub fn len(&self) -> usize {
        match &self.0 {
            Repr::Inline { len, .. } => *len as usize,
            Repr::Owned(key) => key.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn as_str(&self) -> &str {
        match &self.0 {
            Repr::Inline { len, bytes } => {
                let text = &bytes.0[..*len as usize];
                debug_assert!(std::str::from_utf8(text).is_ok());
                // SAFETY: an inline key is only ever made by `inline` (or empty, by `default`),
                // which copies a whole `&str` of exactly `len` bytes: `text` is that string; or
                // by `inline_ascii`, whose bytes are ASCII, which is UTF-8.
                // Checking it again cost two UTF-8 validations per record in the aggregator's
                // key table (~2% of the aggregated run's CPU).
                unsafe { std::str::from_utf8_unchecked(text) }
            }
            Repr::Owned(key) => key,
        }
    }
}

impl Default for PartitionKey {
    fn default() -> Self {
        PartitionKey(Repr::Inline {
            len: 0,
            bytes: InlineBytes([0; INLINE_CAPACITY]),
        })
    }
}

impl Deref for PartitionKey {
    type Target = str;

    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl AsRef<str> for PartitionKey {
    fn as_ref(&self) -> &str {
        self.as_str()
    }
}

impl Borrow<str> for PartitionKey {
    fn borrow(&self) -> &str {
        self.as_str()
    }
}

impl From<&str> for PartitionKey {
    fn from(key: &str) -> Self {
        PartitionKey::inline(key).unwrap_or_else(|| PartitionKey(Repr::Owned(key.to_owned())))
    }
}

impl From<&String> for PartitionKey {
    fn from(key: &String) -> Self {
        PartitionKey::from(key.as_str())
    }
}

impl From<String> for PartitionKey {
    fn from(key: String) -> Self {
        PartitionKey::inline(&key).unwrap_or(PartitionKey(Repr::Owned(key)))
    }
}

impl PartialEq for PartitionKey {
    fn eq(&self, other: &Self) -> bool {
        self.as_str() == other.as_str()
    }
}

impl Eq for PartitionKey {}

impl PartialEq<str> for PartitionKey {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}

impl PartialEq<&str> for PartitionKey {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

impl PartialEq<String> for PartitionKey {
    fn eq(&self, other: &String) -> bool {
        self.as_str() == other
    }
}

impl PartialEq<PartitionKey> for String {
    fn eq(&self, other: &PartitionKey) -> bool {
        self.as_str() == other.as_str()
    }
}

impl PartialOrd for PartitionKey {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for PartitionKey {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.as_str().cmp(other.as_str())
    }
}

impl serde::Serialize for PartitionKey {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl Hash for PartitionKey {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.as_str().hash(state)
    }
}

impl fmt::Debug for PartitionKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl fmt::Display for PartitionKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_keys_are_inline_and_long_ones_owned() {
        let hex = "0123456789abcdef0123456789abcdef";
        let key = PartitionKey::from(hex);
        assert!(matches!(key.0, Repr::Inline { len: 32, .. }));
        assert_eq!(&*key, hex);
        assert_eq!((key.len(), key.as_bytes()), (32, hex.as_bytes()));
        let long = "k".repeat(256);
        let key = PartitionKey::from(long.clone());
        assert!(matches!(key.0, Repr::Owned(_)));
        assert_eq!(key, long);
        assert_eq!((key.len(), key.as_bytes()), (256, long.as_bytes()));
        // Multi-byte text is cut at its own length, never inside a character.
        let accented = "clé-é";
        assert_eq!(PartitionKey::from(accented), accented);
        assert!(PartitionKey::default().is_empty());
    }

    #[test]
    fn equal_keys_compare_and_hash_alike_whatever_their_storage() {
        use std::collections::HashSet;
        let long = "x".repeat(40);
        let mut set = HashSet::new();
        set.insert(PartitionKey::from(long.as_str()));
        assert!(set.contains(long.as_str()));
        assert_eq!(
            PartitionKey::from("a"),
            PartitionKey::from(String::from("a"))
        );
    }
}
