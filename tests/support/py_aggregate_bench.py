#!/usr/bin/env python3
"""The official Python KPL aggregator (aws_kinesis_agg.RecordAggregator) aggregating N records
of ~200 bytes, the same JSON records logferry sends for `logferry loadgen`; prints one JSON
line: records, seconds, records_per_sec, cpu_seconds, peak_rss_kib, aggregated_records.

Usage: py_aggregate_bench.py RECORDS [SIZE]
Only the aggregation step is measured (plus serializing each full aggregate, which a producer
must do before PutRecords); logferry's figures cover the whole path.
"""
import json
import resource
import sys
import time

from aws_kinesis_agg.aggregator import RecordAggregator


def main():
    records = int(sys.argv[1])
    size = int(sys.argv[2]) if len(sys.argv) > 2 else 200
    padding = "x" * max(size - 24, 1)
    # Build the inputs first: not part of what is measured.
    inputs = [(str(seq), ('{"seq":%d,"log":"%s"}' % (seq, padding)).encode()) for seq in range(records)]
    usage0 = resource.getrusage(resource.RUSAGE_SELF)
    start = time.perf_counter()
    aggregator = RecordAggregator()
    out = 0
    for key, data in inputs:
        full = aggregator.add_user_record(key, data)
        if full is not None:
            full.get_contents()
            out += 1
    last = aggregator.clear_and_get()
    if last is not None:
        last.get_contents()
        out += 1
    seconds = time.perf_counter() - start
    usage1 = resource.getrusage(resource.RUSAGE_SELF)
    cpu = (usage1.ru_utime - usage0.ru_utime) + (usage1.ru_stime - usage0.ru_stime)
    print(json.dumps({
        "records": records,
        "seconds": round(seconds, 3),
        "records_per_sec": round(records / seconds),
        "cpu_seconds": round(cpu, 3),
        "peak_rss_kib": usage1.ru_maxrss,
        "aggregated_records": out,
    }))


if __name__ == "__main__":
    main()
