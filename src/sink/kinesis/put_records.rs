//! PutRecords on the wire: the request body logferry writes, the answer it reads.
//!
//! The call itself goes out through [`super::direct`] (SigV4 and the SDK's HTTPS connector,
//! without the SDK's orchestrator). The SDK's generic (de)serialization is not used either,
//! because it cost more than everything else the sink does per record (measured:
//! docs/performance.md):
//!
//! - **Request.** The SDK would copy each record into a `Blob`, then base64 it into its JSON.
//!   [`put_records_body`] writes the body in one pass over the entries (base64 straight into
//!   it, sized up front).
//! - **Answer.** The SDK would build an owned entry with up to four `String`s per record (13% of
//!   the CPU of the forward → Kinesis path). [`read_answer`] reads the entries with borrowed
//!   strings, and settles an answer without failures by counting (see there). Error answers
//!   (status other than 200) become a [`CallError`] in [`super::direct`].

use bytes::Bytes;
use serde::Deserialize;

use super::api::{sanitize, CallError};
use super::batch::{Batch, EntryResult};
use super::direct::PutRecordsClient;
use super::retry_policy::ErrorClass;
use crate::encode::json;
use crate::kinesis_record::Record;

/// Sends one PutRecords request. Returns the batch (to pair results with entries) and one
/// result per entry, or the whole call's error. Delivered results carry the shard id only
/// when `shard_ids` asks for it (see [`read_answer`]).
pub async fn put_records<T>(
    client: PutRecordsClient,
    stream: &str,
    batch: Batch<T>,
    shard_ids: bool,
) -> (Batch<T>, Result<Vec<EntryResult>, CallError>) {
    let body = put_records_body(stream, batch.entries().iter().map(|e| &e.record));
    let result = match client.send(body).await {
        Ok(answer) => read_answer(&answer, batch.len(), shard_ids),
        Err(error) => Err(error),
    };
    (batch, result)
}

/// The JSON body of a PutRecords call (the `application/x-amz-json-1.1` form the SDK sends):
/// `{"StreamName": ..., "Records": [{"Data": base64, "PartitionKey": ..., "ExplicitHashKey":
/// ...}, ...]}`, sized up front so it is allocated once.
pub fn put_records_body<'a>(
    stream: &str,
    records: impl Iterator<Item = &'a Record> + Clone,
) -> Bytes {
    let size: usize = records
        .clone()
        .map(|r| {
            r.data.len().div_ceil(3) * 4
                + 2 * r.partition_key.len()
                + r.explicit_hash_key.as_ref().map_or(0, |k| k.len() + 20)
                + 40
        })
        .sum();
    let mut out = Vec::with_capacity(size + 2 * stream.len() + 32);
    out.extend_from_slice(b"{\"StreamName\":");
    json::write_str(&mut out, stream.as_bytes());
    out.extend_from_slice(b",\"Records\":[");
    for (i, record) in records.enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(b"{\"Data\":\"");
        base64_simd::STANDARD.encode_append(&record.data, &mut out);
        out.extend_from_slice(b"\",\"PartitionKey\":");
        json::write_str(&mut out, record.partition_key.as_bytes());
        if let Some(key) = &record.explicit_hash_key {
            out.extend_from_slice(b",\"ExplicitHashKey\":");
            json::write_str(&mut out, key.as_bytes());
        }
        out.push(b'}');
    }
    out.extend_from_slice(b"]}");
    Bytes::from(out)
}

/// A PutRecords answer, strings borrowed from the body (unescaped only where they hold
/// escapes, which Kinesis's sequence numbers and shard ids never do).
#[derive(Deserialize)]
struct Answer<'a> {
    #[serde(rename = "Records", borrow)]
    records: Vec<AnswerEntry<'a>>,
}

#[derive(Deserialize)]
struct AnswerEntry<'a> {
    #[serde(rename = "SequenceNumber", borrow, default)]
    sequence_number: Option<std::borrow::Cow<'a, str>>,
    #[serde(rename = "ShardId", borrow, default)]
    shard_id: Option<std::borrow::Cow<'a, str>>,
    #[serde(rename = "ErrorCode", borrow, default)]
    error_code: Option<std::borrow::Cow<'a, str>>,
    #[serde(rename = "ErrorMessage", borrow, default)]
    error_message: Option<std::borrow::Cow<'a, str>>,
}

/// One result per entry, from a successful answer's body of `entries` entries.
///
/// When no entry failed and the caller needs no shard ids (they only check where aggregates
/// landed), the entries are not parsed: `"FailedRecordCount": 0` and one `"SequenceNumber"`
/// per entry settle it (an answer without failures holds no error messages, and sequence
/// numbers and shard ids are digits and plain names, so the key cannot appear inside a value).
/// Parsing 500 entries of ~100 bytes costs more than building the request did. Delivered
/// results then carry an empty shard id.
pub fn read_answer(
    body: &[u8],
    entries: usize,
    shard_ids: bool,
) -> Result<Vec<EntryResult>, CallError> {
    if !shard_ids && all_delivered(body, entries) {
        return Ok(vec![
            EntryResult::Delivered {
                shard_id: String::new()
            };
            entries
        ]);
    }
    let answer: Answer<'_> = serde_json::from_slice(body).map_err(|e| CallError {
        code: "InvalidResponse".into(),
        status: Some(200),
        message: sanitize(&format!("cannot read the PutRecords answer: {e}")),
        class: ErrorClass::Retryable,
        sts_action: None,
    })?;
    Ok(answer
        .records
        .iter()
        .map(|entry| {
            EntryResult::from_parts(
                entry.sequence_number.is_some(),
                entry.shard_id.as_deref(),
                entry.error_code.as_deref(),
                entry.error_message.as_deref(),
            )
        })
        .collect())
}

/// Whether the answer reports no failed record and holds one sequence number per entry.
fn all_delivered(body: &[u8], entries: usize) -> bool {
    use memchr::memmem;
    const FAILED: &[u8] = b"\"FailedRecordCount\"";
    let Some(at) = memmem::find(body, FAILED) else {
        return false;
    };
    let rest = &body[at + FAILED.len()..];
    let rest = rest.trim_ascii_start();
    let Some(rest) = rest.strip_prefix(b":") else {
        return false;
    };
    let rest = rest.trim_ascii_start();
    let zero = rest.first() == Some(&b'0') && !rest.get(1).is_some_and(u8::is_ascii_digit);
    zero && sequence_numbers(body) == entries
}

/// How many `"SequenceNumber"` keys the answer holds (one per delivered entry). Found from its
/// `q`: no other key of a PutRecords answer has one, nor do the values of delivered entries
/// (digits, shard ids), so the byte search stops about once per entry and each stop is
/// checked in place; `memmem::find_iter` cost ~150 instructions per entry.
fn sequence_numbers(body: &[u8]) -> usize {
    const KEY: &[u8] = b"\"SequenceNumber\"";
    const Q_AT: usize = 3;
    memchr::memchr_iter(b'q', body)
        .filter(|&q| {
            q.checked_sub(Q_AT)
                .and_then(|start| body.get(start..start + KEY.len()))
                .is_some_and(|candidate| candidate == KEY)
        })
        .count()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn put_records_body_reads_back_as_the_sdk_shape() {
        let records = [
            Record::new("pk-\"quoted\"-é", Bytes::from_static(b"{\"log\":\"a\"}\n")),
            Record::new("k", Bytes::from_static(b"\x00\xff binary")).with_explicit_hash_key("42"),
            Record::new("empty", Bytes::new()),
        ];
        let body = put_records_body("my-stream", records.iter());
        let parsed: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(parsed["StreamName"], "my-stream");
        let sent = parsed["Records"].as_array().unwrap();
        assert_eq!(sent.len(), 3);
        use base64::Engine;
        let engine = &base64::engine::general_purpose::STANDARD;
        for (record, sent) in records.iter().zip(sent) {
            let data = engine.decode(sent["Data"].as_str().unwrap()).unwrap();
            assert_eq!(data, record.data.as_ref());
            assert_eq!(sent["PartitionKey"], record.partition_key.as_str());
            assert_eq!(
                sent.get("ExplicitHashKey").and_then(|k| k.as_str()),
                record.explicit_hash_key.as_deref()
            );
        }
        assert_eq!(
            put_records_body("s", std::iter::empty()).as_ref(),
            br#"{"StreamName":"s","Records":[]}"#
        );
    }

    #[test]
    fn answers_are_read_entry_by_entry() {
        // As Kinesis (and fake-kinesis) answer: delivered, throttled, failed without message.
        let body = br#"{"FailedRecordCount":2,"EncryptionType":"NONE","Records":[
            {"SequenceNumber":"49590338271490256608559692538361571095921575989136588898","ShardId":"shardId-000000000001"},
            {"ErrorCode":"ProvisionedThroughputExceededException","ErrorMessage":"Rate exceeded for shard shardId-000000000001 in stream s under account 123456789012."},
            {"ErrorCode":"InternalFailure"}
        ]}"#;
        let results = read_answer(body, 3, true).unwrap();
        assert_eq!(
            results[0],
            EntryResult::Delivered {
                shard_id: "shardId-000000000001".into()
            }
        );
        assert!(matches!(&results[1], EntryResult::Failed { code, message }
            if code == "ProvisionedThroughputExceededException" && message.starts_with("Rate exceeded")));
        assert!(
            matches!(&results[2], EntryResult::Failed { code, .. } if code == "InternalFailure")
        );
        let bad = read_answer(b"{\"Records\": [", 1, false).unwrap_err();
        assert_eq!(bad.class, ErrorClass::Retryable);
        assert_eq!(
            read_answer(br#"{"FailedRecordCount":0,"Records":[]}"#, 0, true).unwrap(),
            Vec::new()
        );
        // Failures are read entry by entry even when no shard ids are wanted.
        assert_eq!(read_answer(body, 3, false).unwrap(), results);
    }

    #[test]
    fn an_answer_without_failures_is_settled_by_its_count() {
        let one = r#"{"SequenceNumber":"4959033827149025660855969253836157","ShardId":"shardId-000000000002"}"#;
        let all = |n: usize, failed: &str| {
            let entries = vec![one; n].join(",");
            format!(r#"{{"FailedRecordCount" : {failed},"Records":[{entries}]}}"#).into_bytes()
        };
        let delivered = EntryResult::Delivered {
            shard_id: String::new(),
        };
        assert_eq!(
            read_answer(&all(500, "0"), 500, false).unwrap(),
            vec![delivered; 500]
        );
        // With shard ids wanted, the entries are parsed.
        assert!(matches!(&read_answer(&all(2, "0"), 2, true).unwrap()[1],
            EntryResult::Delivered { shard_id } if shard_id == "shardId-000000000002"));
        // A count that does not match, or a non-zero failure count, is never taken on trust.
        assert!(!all_delivered(&all(499, "0"), 500));
        assert!(!all_delivered(&all(500, "01"), 500));
        assert!(!all_delivered(&all(500, "1"), 500));
        assert!(!all_delivered(b"{}", 0));
        assert!(all_delivered(&all(0, "0"), 0));
    }

    #[test]
    fn sequence_numbers_are_counted_whatever_else_has_a_q() {
        assert_eq!(sequence_numbers(br#""SequenceNumber""#), 1);
        assert_eq!(
            sequence_numbers(
                br#"{"Records":[{"SequenceNumber":"1","ShardId":"s"},{"ErrorCode":"x",
                "ErrorMessage":"request quota"},{"SequenceNumber":"2"}],"q":"Seq"}"#
            ),
            2
        );
        assert_eq!(sequence_numbers(b"qqq SequenceNumber \"Sequence"), 0);
    }
}
