//! KPL deaggregation of arbitrary record data (what the Lambda forwarder reads from a Kinesis
//! trigger). Nothing may panic; an aggregate that decodes must re-check its own digest.
#![no_main]

use libfuzzer_sys::fuzz_target;
use logferry::sink::kinesis::batch::Record;
use logferry::sink::kinesis::kpl::deaggregate;

fuzz_target!(|data: &[u8]| {
    let record = Record {
        partition_key: "pk".to_string(),
        explicit_hash_key: None,
        data: bytes::Bytes::copy_from_slice(data),
    };
    let _ = deaggregate(record);
});
