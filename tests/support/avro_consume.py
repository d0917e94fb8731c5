"""Reads a topic with confluent-kafka's AvroDeserializer (confluent_kafka.schema_registry), the
official Confluent deserializer, and prints one JSON line per message: {"schema_id", "partition",
"offset", "value"} (timestamps as epoch milliseconds, bytes as lists of ints). Stops after
--count messages (plus a short grace for duplicates) or --timeout seconds.
"""

import argparse
import datetime
import json
import struct
import time

from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.schema_registry import SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroDeserializer
from confluent_kafka.serialization import MessageField, SerializationContext


def plain(v):
    if isinstance(v, datetime.datetime):
        return int(v.timestamp() * 1000)
    if isinstance(v, datetime.date):
        return v.isoformat()
    if isinstance(v, bytes):
        return list(v)
    if isinstance(v, dict):
        return {k: plain(x) for k, x in v.items()}
    if isinstance(v, list):
        return [plain(x) for x in v]
    return v


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--bootstrap", required=True)
    p.add_argument("--registry", required=True)
    p.add_argument("--topic", required=True)
    p.add_argument("--partitions", type=int, default=1)
    p.add_argument("--count", type=int, required=True)
    p.add_argument("--timeout", type=float, default=60)
    a = p.parse_args()
    deserializer = AvroDeserializer(SchemaRegistryClient({"url": a.registry}))
    c = Consumer({"bootstrap.servers": a.bootstrap, "group.id": f"avro-{time.time()}",
                  "enable.auto.commit": False})
    c.assign([TopicPartition(a.topic, p, 0) for p in range(a.partitions)])
    n, end, grace = 0, time.time() + a.timeout, None
    try:
        while time.time() < end and (grace is None or time.time() < grace):
            for m in c.consume(1000, timeout=0.3):
                if m.error():
                    continue
                raw = m.value()
                magic, schema_id = struct.unpack(">bI", raw[:5])
                assert magic == 0, f"magic byte {magic}"
                value = deserializer(raw, SerializationContext(a.topic, MessageField.VALUE))
                print(json.dumps({"schema_id": schema_id, "partition": m.partition(), "offset": m.offset(),
                                  "value": plain(value)}), flush=True)
                n += 1
            if n >= a.count and grace is None:
                grace = time.time() + 0.7
    finally:
        c.close()


if __name__ == "__main__":
    main()
