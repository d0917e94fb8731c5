//! The Kinesis hot path, per 1000 records of ~200 bytes: a forward PackedForward frame is
//! decoded, each record is encoded as JSON, given its partition key, and packed into KPL
//! aggregated records grouped by shard (4 shards), ready for PutRecords.
//!
//! `cargo bench --bench kinesis_hot_path`

use std::hint::black_box;

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use logferry::encode::{EncodeOptions, Encoder};
use logferry::event::Event;
use logferry::sink::kinesis::batch::{Record, ShardAggregators};
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
fn encode(encoder: &Encoder, events: &[Event], buf: &mut Vec<u8>) -> Vec<Record> {
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
        .map(|(event, (start, end))| {
            let key = event
                .record
                .get(b"seq")
                .map(|v| v.to_text())
                .unwrap_or_default();
            Record::new(key, data.slice(start..end))
        })
        .collect()
}

fn aggregate(aggregators: &mut ShardAggregators<u32>, records: Vec<Record>) -> usize {
    let mut out = 0;
    for record in records {
        aggregators.add(record, 0).expect("fits");
        out += aggregators.drain_ready().count();
    }
    out + aggregators.flush_all().len()
}

fn bench(c: &mut Criterion) {
    let frame = frame();
    let limits = Limits::default();
    let encoder = Encoder::new(&EncodeOptions::default()).unwrap();
    let mut aggregators = ShardAggregators::new(four_shards(), 1024 * 1024).unwrap();
    let mut buf = Vec::with_capacity(256 * 1024);

    let mut group = c.benchmark_group("kinesis_hot_path");
    group.throughput(Throughput::Elements(RECORDS as u64));
    group.bench_function("decode_encode_aggregate_1000x200B", |b| {
        b.iter(|| {
            let events = decode(black_box(&frame), &limits);
            let records = encode(&encoder, &events, &mut buf);
            black_box(aggregate(&mut aggregators, records))
        })
    });
    group.bench_function("decode_1000x200B", |b| {
        b.iter(|| black_box(decode(black_box(&frame), &limits)))
    });
    let events = decode(&frame, &limits);
    group.bench_function("json_encode_1000x200B", |b| {
        b.iter(|| black_box(encode(&encoder, black_box(&events), &mut buf)))
    });
    let records = encode(&encoder, &events, &mut buf);
    group.bench_function("kpl_aggregate_1000x200B", |b| {
        b.iter(|| black_box(aggregate(&mut aggregators, black_box(records.clone()))))
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
