//! The record path, per 1000 records of ~200 bytes, one variant per destination format:
//! - `plain_json`: a forward PackedForward frame is decoded, each record encoded as JSON with a
//!   random partition key (no `partition_key` option), and the PutRecords bodies written
//!   (two calls of 500).
//! - `kpl_aggregation`: decoded, encoded, and packed into KPL aggregated records by shard
//!   (4 shards), keyless records spread over the shards as the sink does.
//! - `kafka_payload`: decoded and encoded as the JSON message payloads the Kafka sink produces.
//! - `kafka_payload_iso8601_time`: the same with `timestamp_key` and `timestamp_format =
//!   "iso8601"`, as `../shared/bench/kafka_side_by_side.py` configures both shippers.
//! - `keyed_kpl_aggregation`: aggregation with a partition key read from a field (`seq`), the
//!   one variant that parses records.
//!
//! `cargo bench --bench kinesis_hot_path`

use std::hint::black_box;

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use logferry::encode::time_format::{Subsecond, TimeFormat};
use logferry::encode::{EncodeOptions, Encoder};
use logferry::event::Event;
use logferry::kinesis_record::{PartitionKey, Record};
use logferry::sink::kinesis::aggregators::ShardAggregators;
use logferry::sink::kinesis::batch::random_partition_key;
use logferry::sink::kinesis::put_records::put_records_body;
use logferry::sink::kinesis::shard_map::{ShardListing, ShardMap};
use logferry::source::forward::protocol::{decode_message, Limits, Message};

const RECORDS: usize = 1000;
const RECORD_SIZE: usize = 200;

/// A PackedForward frame of `RECORDS` entries `{"seq": n, "log": "xxx…"}` of ~200 bytes each,
/// as `logferry loadgen` sends them.
fn frame() -> Bytes {
    use rmp::encode::*;
    let padding = "x".repeat(RECORD_SIZE - 24);
    let mut entries = Vec::new();
    for seq in 0..RECORDS as u64 {
        write_array_len(&mut entries, 2).unwrap();
        write_ext_meta(&mut entries, 8, 0).unwrap();
        entries.extend_from_slice(&1_715_679_001u32.to_be_bytes());
        entries.extend_from_slice(&123_456_789u32.to_be_bytes());
        write_map_len(&mut entries, 2).unwrap();
        write_str(&mut entries, "seq").unwrap();
        write_uint(&mut entries, seq).unwrap();
        write_str(&mut entries, "log").unwrap();
        write_str(&mut entries, &padding).unwrap();
    }
    let mut out = Vec::new();
    write_array_len(&mut out, 3).unwrap();
    write_str(&mut out, "app").unwrap();
    write_bin_len(&mut out, entries.len() as u32).unwrap();
    out.extend_from_slice(&entries);
    write_map_len(&mut out, 1).unwrap();
    write_str(&mut out, "size").unwrap();
    write_uint(&mut out, RECORDS as u64).unwrap();
    Bytes::from(out)
}

fn four_shards() -> ShardMap {
    let step = u128::MAX / 4;
    ShardMap::from_listing((0..4u128).map(|i| ShardListing {
        shard_id: format!("shardId-00000000000{i}"),
        starting_hash_key: (i * step + i.min(1) * i).to_string(),
        ending_hash_key: if i == 3 {
            u128::MAX.to_string()
        } else {
            ((i + 1) * step + i).to_string()
        },
        closed: false,
    }))
    .expect("a valid 4-shard map")
}

fn decode(frame: &Bytes, limits: &Limits) -> Vec<Event> {
    match decode_message(frame.clone(), limits).expect("frame decodes") {
        Message::Events { events, .. } => events,
        Message::Keepalive => unreachable!(),
    }
}

/// JSON-encodes every event into one buffer; records are slices of it (as the sink does).
/// `key` gives each record its partition key.
fn encode(
    encoder: &Encoder,
    events: &[Event],
    buf: &mut Vec<u8>,
    key: impl Fn(&Event) -> PartitionKey,
) -> Vec<Record> {
    buf.clear();
    let mut ends = Vec::with_capacity(events.len());
    for event in events {
        let start = buf.len();
        encoder.encode(event, buf).expect("encodes");
        ends.push((start, buf.len()));
    }
    let data = Bytes::copy_from_slice(buf);
    events
        .iter()
        .zip(ends)
        .map(|(event, (start, end))| Record::new(key(event), data.slice(start..end)))
        .collect()
}

fn seq_key(event: &Event) -> PartitionKey {
    event
        .record
        .get(b"seq")
        .map(|v| v.to_text())
        .unwrap_or_default()
        .into()
}

fn aggregate(aggregators: &mut ShardAggregators<u32>, records: Vec<Record>) -> usize {
    let mut out = 0;
    for record in records {
        aggregators.add(record, 0).expect("fits");
        out += aggregators.drain_ready().count();
    }
    out + aggregators.flush_all().len()
}

fn spread(aggregators: &mut ShardAggregators<u32>, records: Vec<Record>) -> usize {
    let mut out = 0;
    for record in records {
        aggregators.add_spread(record.data, 0).expect("fits");
        out += aggregators.drain_ready().count();
    }
    out + aggregators.flush_all().len()
}

fn bench(c: &mut Criterion) {
    let frame = frame();
    let limits = Limits::default();
    let encoder = Encoder::new(&EncodeOptions::default()).unwrap();
    let timed_encoder = Encoder::new(&EncodeOptions {
        time_key: Some("@timestamp".into()),
        time_format: TimeFormat::Iso8601(Subsecond::Micros),
        ..EncodeOptions::default()
    })
    .unwrap();
    let mut aggregators = ShardAggregators::new(four_shards(), 1024 * 1024).unwrap();
    let mut buf = Vec::with_capacity(256 * 1024);
    let mut payload = Vec::with_capacity(512);

    let mut group = c.benchmark_group("kinesis_hot_path");
    group.throughput(Throughput::Elements(RECORDS as u64));
    group.bench_function("plain_json_1000x200B", |b| {
        b.iter(|| {
            let events = decode(black_box(&frame), &limits);
            let records = encode(&encoder, &events, &mut buf, |_| random_partition_key());
            let bodies: usize = records
                .chunks(500)
                .map(|call| put_records_body("bench", call.iter()).len())
                .sum();
            black_box(bodies)
        })
    });
    group.bench_function("kpl_aggregation_1000x200B", |b| {
        b.iter(|| {
            let events = decode(black_box(&frame), &limits);
            let records = encode(&encoder, &events, &mut buf, |_| PartitionKey::default());
            black_box(spread(&mut aggregators, records))
        })
    });
    group.bench_function("kafka_payload_1000x200B", |b| {
        b.iter(|| {
            let events = decode(black_box(&frame), &limits);
            black_box(payloads(&encoder, &events, &mut payload))
        })
    });
    group.bench_function("kafka_payload_iso8601_time_1000x200B", |b| {
        b.iter(|| {
            let events = decode(black_box(&frame), &limits);
            black_box(payloads(&timed_encoder, &events, &mut payload))
        })
    });
    group.bench_function("keyed_kpl_aggregation_1000x200B", |b| {
        b.iter(|| {
            let events = decode(black_box(&frame), &limits);
            let records = encode(&encoder, &events, &mut buf, seq_key);
            black_box(aggregate(&mut aggregators, records))
        })
    });
    group.bench_function("decode_1000x200B", |b| {
        b.iter(|| black_box(decode(black_box(&frame), &limits)))
    });
    group.finish();
}

/// Encodes each record as the Kafka sink does (one payload at a time, the buffer reused);
/// returns the bytes written.
fn payloads(encoder: &Encoder, events: &[Event], payload: &mut Vec<u8>) -> usize {
    let mut bytes = 0;
    for event in events {
        payload.clear();
        encoder.encode(event, payload).expect("encodes");
        bytes += payload.len();
    }
    bytes
}

criterion_group!(benches, bench);
criterion_main!(benches);
