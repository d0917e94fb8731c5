"""Produces numbered JSON records to a Kafka topic with confluent-kafka (librdkafka 2.16), the
reference client the Kafka source tests feed logferry with.

Record i is {"seq": start+i, "log": "record <i>", "n": i}, key "k<i % keys>"; with
--bad-every N, every Nth record is the text "not json <seq>" instead (a poison message).
--one-per-batch makes every message its own producer batch: tansu cannot fetch from an offset
in the middle of a batch (TESTING.md), and a consumer resuming at a committed offset must not
skip anything. Prints {"produced": n} once every record was acknowledged by the broker.
"""

import argparse
import json
import sys

from confluent_kafka import Producer


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--bootstrap", required=True)
    p.add_argument("--topic", required=True)
    p.add_argument("--count", type=int, required=True)
    p.add_argument("--start", type=int, default=0)
    p.add_argument("--keys", type=int, default=16)
    p.add_argument("--bad-every", type=int, default=0)
    p.add_argument("--size", type=int, default=0, help="pad the log field to this many bytes")
    p.add_argument("--one-per-batch", action="store_true")
    args = p.parse_args()

    config = {"bootstrap.servers": args.bootstrap, "linger.ms": 5, "acks": "all"}
    if args.one_per_batch:
        config.update({"linger.ms": 0, "batch.num.messages": 1})
    producer = Producer(config)
    failed = []

    def report(err, _msg):
        if err is not None:
            failed.append(str(err))

    pad = "x" * max(0, args.size)
    for i in range(args.count):
        seq = args.start + i
        if args.bad_every and (i + 1) % args.bad_every == 0:
            value = f"not json {seq}".encode()
        else:
            value = json.dumps({"seq": seq, "log": f"record {seq}{pad}", "n": i}).encode()
        while True:
            try:
                producer.produce(args.topic, value=value, key=f"k{i % args.keys}".encode(),
                                 on_delivery=report)
                break
            except BufferError:
                producer.poll(0.1)
        producer.poll(0)
    left = producer.flush(60)
    if left or failed:
        print(json.dumps({"produced": args.count - left - len(failed), "errors": failed[:5]}))
        sys.exit(1)
    print(json.dumps({"produced": args.count}))


if __name__ == "__main__":
    main()
