"""Kinesis and CloudWatch Logs helper for lambda/tests/kinesis_moto.rs (boto3 against moto).

Usage (AWS_ENDPOINT_URL points at moto):
  kinesis_tool.py create-stream NAME            create a 1-shard stream, wait until ACTIVE
  kinesis_tool.py read-stream NAME              print every user record (KPL deaggregated) as
                                                JSON lines {"partition_key", "data"}
  kinesis_tool.py cwl-chain STREAM MESSAGES...  subscribe log group /ecs/web to STREAM, put the
                                                messages as log events, read what CloudWatch Logs
                                                wrote to STREAM and print a Lambda Kinesis
                                                trigger event built from those records
"""
import base64
import json
import sys
import time

import boto3
from aws_kinesis_agg.deaggregator import iter_deaggregate_records

REGION = "us-east-1"


def client(service):
    return boto3.client(service, region_name=REGION)


def create_stream(name):
    k = client("kinesis")
    k.create_stream(StreamName=name, ShardCount=1)
    for _ in range(100):
        s = k.describe_stream_summary(StreamName=name)["StreamDescriptionSummary"]
        if s["StreamStatus"] == "ACTIVE":
            return s["StreamARN"]
        time.sleep(0.1)
    raise SystemExit(f"stream {name} never became ACTIVE")


def shard_records(name):
    k = client("kinesis")
    out = []
    for shard in k.list_shards(StreamName=name)["Shards"]:
        it = k.get_shard_iterator(StreamName=name, ShardId=shard["ShardId"],
                                  ShardIteratorType="TRIM_HORIZON")["ShardIterator"]
        while it:
            r = k.get_records(ShardIterator=it, Limit=10000)
            out.extend(r["Records"])
            if not r["Records"]:
                break
            it = r.get("NextShardIterator")
    return out


def read_stream(name):
    # The Lambda event shape (base64 data in, base64 data out) for both plain and aggregated.
    lambda_records = [{"kinesis": {"kinesisSchemaVersion": "1.0",
                                   "partitionKey": r["PartitionKey"],
                                   "sequenceNumber": r["SequenceNumber"],
                                   "approximateArrivalTimestamp":
                                       r["ApproximateArrivalTimestamp"].timestamp(),
                                   "data": base64.b64encode(r["Data"]).decode()}}
                      for r in shard_records(name)]
    for rec in iter_deaggregate_records(lambda_records):
        data = base64.b64decode(rec["kinesis"]["data"])
        print(json.dumps({"partition_key": rec["kinesis"]["partitionKey"],
                          "aggregated": rec["kinesis"].get("aggregated", False),
                          "data": data.decode("utf-8", "replace")}))


def cwl_chain(stream, messages):
    arn = create_stream(stream)
    logs = client("logs")
    logs.create_log_group(logGroupName="/ecs/web")
    logs.create_log_stream(logGroupName="/ecs/web", logStreamName="web/app/0123")
    logs.put_subscription_filter(logGroupName="/ecs/web", filterName="to-logferry",
                                 filterPattern="", destinationArn=arn,
                                 roleArn="arn:aws:iam::123456789012:role/x")
    now = int(time.time() * 1000)
    logs.put_log_events(logGroupName="/ecs/web", logStreamName="web/app/0123",
                        logEvents=[{"timestamp": now + i, "message": m}
                                   for i, m in enumerate(messages)])
    records = shard_records(stream)
    if not records:
        raise SystemExit("CloudWatch Logs wrote nothing to the stream")
    event = {"Records": [{
        "kinesis": {
            "kinesisSchemaVersion": "1.0",
            "partitionKey": r["PartitionKey"],
            "sequenceNumber": r["SequenceNumber"],
            "data": base64.b64encode(r["Data"]).decode(),
            "approximateArrivalTimestamp": r["ApproximateArrivalTimestamp"].timestamp(),
        },
        "eventSource": "aws:kinesis",
        "eventVersion": "1.0",
        "eventID": f"shardId-000000000000:{r['SequenceNumber']}",
        "eventName": "aws:kinesis:record",
        "invokeIdentityArn": "arn:aws:iam::123456789012:role/logferry-lambda",
        "awsRegion": REGION,
        "eventSourceARN": arn,
    } for r in records]}
    print(json.dumps(event))


def main():
    cmd, args = sys.argv[1], sys.argv[2:]
    if cmd == "create-stream":
        create_stream(args[0])
    elif cmd == "read-stream":
        read_stream(args[0])
    elif cmd == "cwl-chain":
        cwl_chain(args[0], args[1:])
    else:
        raise SystemExit(f"unknown command {cmd}")


if __name__ == "__main__":
    main()
