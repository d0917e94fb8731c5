//! The Lambda forwarder's input: an invocation event (CloudWatch Logs `awslogs` or a Kinesis
//! trigger), then the raw gzip payload path. Nothing may panic, whatever the bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use logferry::source::cloudwatch::{CloudwatchConfig, Decoder};

fuzz_target!(|data: &[u8]| {
    let config = CloudwatchConfig {
        parse_json: true,
        ..CloudwatchConfig::default()
    };
    let decoder = Decoder::new(&config);
    let _ = decoder.decode_event_bytes(data);
    let _ = decoder.decode_gzip(data);
});
