"""Reads COUNT messages from TOPIC (all partitions, from the beginning) with confluent-kafka
and prints them as JSON lines {"key", "value"}. Exits non-zero if fewer arrive within TIMEOUT s.

Usage: kafka_consume.py BOOTSTRAP TOPIC COUNT TIMEOUT
"""
import json
import sys
import time

from confluent_kafka import Consumer


def main():
    bootstrap, topic, count, timeout = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "logferry-lambda-test",
                  "auto.offset.reset": "earliest", "enable.auto.commit": False})
    c.subscribe([topic])
    got = []
    until = time.time() + timeout
    while len(got) < count and time.time() < until:
        m = c.poll(0.5)
        if m is None or m.error():
            continue
        got.append({"key": (m.key() or b"").decode("utf-8", "replace"),
                    "value": m.value().decode("utf-8", "replace")})
    c.close()
    for g in got:
        print(json.dumps(g))
    if len(got) < count:
        raise SystemExit(f"only {len(got)} of {count} messages arrived")


if __name__ == "__main__":
    main()
