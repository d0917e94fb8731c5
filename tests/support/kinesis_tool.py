#!/usr/bin/env python3
"""Kinesis helper for tests and scripts (boto3 + the official aws-kinesis-agg deaggregator).

Usage: kinesis_tool.py ENDPOINT COMMAND [ARGS]
  create STREAM SHARDS            create a stream and wait until it is ACTIVE
  split STREAM                    split every open shard in two (resharding), wait until ACTIVE
  merge STREAM                    merge the open shards pairwise (adjacent hash key ranges),
                                  wait until ACTIVE after each merge
  stream-arn STREAM               prints the stream's ARN (DescribeStreamSummary)
  shards STREAM                   JSON list of every shard (open and closed) with its range
  iam-user NAME POLICY_JSON       create an IAM user with an inline policy (none when POLICY_JSON
                                  is empty); prints its access key as
                                  {"AccessKeyId", "SecretAccessKey"}
  iam-role NAME POLICY_JSON       create a role anyone may assume, with an inline policy; prints
                                  its ARN
  cwl-chain STREAM MESSAGES...    create STREAM (1 shard), subscribe log group /ecs/web to it, put the
                                  messages as log events, read what CloudWatch Logs wrote to STREAM
                                  and print a Lambda Kinesis trigger event built from those records
  read STREAM                     JSON of everything in the stream, read from every shard:
        {"shards": [{"shard_id", "start", "end", "closed"}],
         "records": [{"shard_id", "sequence_number", "partition_key", "data_b64",
                      "aggregated": bool, "arrival": ApproximateArrivalTimestamp (s),
                      "users": [{"partition_key", "explicit_hash_key", "data_b64"}]}]}
        "users" is what aws_kinesis_agg.iter_deaggregate_records yields for that record
        (a plain record yields itself).

Credentials and region come from the environment (AWS_ACCESS_KEY_ID, AWS_REGION, ...).
"""
import base64
import json
import sys
import time

import boto3
from aws_kinesis_agg.deaggregator import iter_deaggregate_records
from aws_kinesis_agg import MAGIC


def client(endpoint):
    return boto3.client("kinesis", endpoint_url=endpoint)


def wait_active(kinesis, stream):
    for _ in range(600):
        status = kinesis.describe_stream_summary(StreamName=stream)["StreamDescriptionSummary"]["StreamStatus"]
        if status == "ACTIVE":
            return
        time.sleep(0.05)
    raise SystemExit(f"stream {stream} did not become ACTIVE")


def list_shards(kinesis, stream):
    shards, token = [], None
    while True:
        resp = kinesis.list_shards(NextToken=token) if token else kinesis.list_shards(StreamName=stream)
        shards.extend(resp["Shards"])
        token = resp.get("NextToken")
        if not token:
            return shards


def shard_info(shard):
    return {
        "shard_id": shard["ShardId"],
        "start": shard["HashKeyRange"]["StartingHashKey"],
        "end": shard["HashKeyRange"]["EndingHashKey"],
        "closed": "EndingSequenceNumber" in shard["SequenceNumberRange"],
    }


def read(kinesis, stream):
    shards = list_shards(kinesis, stream)
    out = {"shards": [shard_info(s) for s in shards], "records": []}
    for shard in shards:
        iterator = kinesis.get_shard_iterator(
            StreamName=stream, ShardId=shard["ShardId"], ShardIteratorType="TRIM_HORIZON"
        )["ShardIterator"]
        while iterator:
            resp = kinesis.get_records(ShardIterator=iterator, Limit=10000)
            for record in resp["Records"]:
                users = []
                for user in iter_deaggregate_records([record], data_format="Boto3"):
                    kinesis_record = user["kinesis"]
                    data = kinesis_record["data"]
                    if kinesis_record.get("aggregated"):
                        # The library hands deaggregated data back base64-encoded.
                        data = base64.b64decode(data)
                    users.append({
                        "partition_key": kinesis_record["partitionKey"],
                        "explicit_hash_key": kinesis_record.get("explicitHashKey"),
                        "data_b64": base64.b64encode(data).decode("ascii"),
                    })
                out["records"].append({
                    "shard_id": shard["ShardId"],
                    "sequence_number": record["SequenceNumber"],
                    "partition_key": record["PartitionKey"],
                    "data_b64": base64.b64encode(record["Data"]).decode("ascii"),
                    "aggregated": record["Data"][: len(MAGIC)] == MAGIC,
                    "arrival": record["ApproximateArrivalTimestamp"].timestamp(),
                    "users": users,
                })
            if not resp["Records"] and resp.get("MillisBehindLatest", 0) == 0:
                break
            iterator = resp.get("NextShardIterator")
    return out


def cwl_chain(endpoint, kinesis, stream, messages):
    """moto's CloudWatch Logs subscription path: what a Lambda Kinesis trigger would receive."""
    kinesis.create_stream(StreamName=stream, ShardCount=1)
    wait_active(kinesis, stream)
    arn = kinesis.describe_stream_summary(StreamName=stream)["StreamDescriptionSummary"]["StreamARN"]
    logs = boto3.client("logs", endpoint_url=endpoint)
    logs.create_log_group(logGroupName="/ecs/web")
    logs.create_log_stream(logGroupName="/ecs/web", logStreamName="web/app/0123")
    logs.put_subscription_filter(logGroupName="/ecs/web", filterName="to-logferry",
                                 filterPattern="", destinationArn=arn,
                                 roleArn="arn:aws:iam::123456789012:role/x")
    now = int(time.time() * 1000)
    logs.put_log_events(logGroupName="/ecs/web", logStreamName="web/app/0123",
                        logEvents=[{"timestamp": now + i, "message": m}
                                   for i, m in enumerate(messages)])
    records = []
    for shard in list_shards(kinesis, stream):
        iterator = kinesis.get_shard_iterator(
            StreamName=stream, ShardId=shard["ShardId"], ShardIteratorType="TRIM_HORIZON"
        )["ShardIterator"]
        while iterator:
            resp = kinesis.get_records(ShardIterator=iterator, Limit=10000)
            records.extend(resp["Records"])
            if not resp["Records"]:
                break
            iterator = resp.get("NextShardIterator")
    if not records:
        raise SystemExit("CloudWatch Logs wrote nothing to the stream")
    region = kinesis.meta.region_name
    return {"Records": [{
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
        "awsRegion": region,
        "eventSourceARN": arn,
    } for r in records]}


def main():
    endpoint, command, args = sys.argv[1], sys.argv[2], sys.argv[3:]
    kinesis = client(endpoint)
    if command == "create":
        kinesis.create_stream(StreamName=args[0], ShardCount=int(args[1]))
        wait_active(kinesis, args[0])
    elif command == "split":
        stream = args[0]
        for shard in [s for s in list_shards(kinesis, stream) if not shard_info(s)["closed"]]:
            start = int(shard["HashKeyRange"]["StartingHashKey"])
            end = int(shard["HashKeyRange"]["EndingHashKey"])
            kinesis.split_shard(
                StreamName=stream,
                ShardToSplit=shard["ShardId"],
                NewStartingHashKey=str((start + end) // 2 + 1),
            )
            wait_active(kinesis, stream)
    elif command == "merge":
        stream = args[0]
        open_shards = [s for s in list_shards(kinesis, stream) if not shard_info(s)["closed"]]
        open_shards.sort(key=lambda s: int(s["HashKeyRange"]["StartingHashKey"]))
        for lower, upper in zip(open_shards[::2], open_shards[1::2]):
            kinesis.merge_shards(
                StreamName=stream,
                ShardToMerge=lower["ShardId"],
                AdjacentShardToMerge=upper["ShardId"],
            )
            wait_active(kinesis, stream)
    elif command == "iam-user":
        iam = boto3.client("iam", endpoint_url=endpoint)
        iam.create_user(UserName=args[0])
        if args[1]:
            iam.put_user_policy(UserName=args[0], PolicyName="logferry", PolicyDocument=args[1])
        key = iam.create_access_key(UserName=args[0])["AccessKey"]
        json.dump({"AccessKeyId": key["AccessKeyId"], "SecretAccessKey": key["SecretAccessKey"]}, sys.stdout)
    elif command == "iam-role":
        iam = boto3.client("iam", endpoint_url=endpoint)
        trust = {
            "Version": "2012-10-17",
            "Statement": [{
                "Effect": "Allow",
                "Principal": {"AWS": "*", "Federated": "*"},
                "Action": ["sts:AssumeRole", "sts:AssumeRoleWithWebIdentity"],
            }],
        }
        role = iam.create_role(RoleName=args[0], AssumeRolePolicyDocument=json.dumps(trust))["Role"]
        iam.put_role_policy(RoleName=args[0], PolicyName="logferry", PolicyDocument=args[1])
        sys.stdout.write(role["Arn"])
    elif command == "stream-arn":
        summary = kinesis.describe_stream_summary(StreamName=args[0])
        sys.stdout.write(summary["StreamDescriptionSummary"]["StreamARN"])
    elif command == "shards":
        json.dump([shard_info(s) for s in list_shards(kinesis, args[0])], sys.stdout)
    elif command == "cwl-chain":
        json.dump(cwl_chain(endpoint, kinesis, args[0], args[1:]), sys.stdout)
    elif command == "read":
        json.dump(read(kinesis, args[0]), sys.stdout)
    else:
        raise SystemExit(f"unknown command {command}")


if __name__ == "__main__":
    main()
