#!/usr/bin/env python3
"""Kinesis Data Firehose helper for tests (boto3), independent of logferry's sink.

Usage: firehose_tool.py ENDPOINT COMMAND [ARGS]
  create STREAM BUCKET     create the S3 bucket and a Firehose stream (DirectPut) delivering to
                           it (moto writes one S3 object per PutRecordBatch call)
  arn STREAM               prints the stream's ARN (DescribeDeliveryStream)
  read BUCKET              JSON list of the bucket's objects, in key order:
                           [{"key", "last_modified" (ISO), "data_b64"}]

Credentials and region come from the environment (AWS_ACCESS_KEY_ID, AWS_REGION, ...).
"""
import base64
import json
import sys

import boto3


def main():
    endpoint, command, args = sys.argv[1], sys.argv[2], sys.argv[3:]
    s3 = boto3.client("s3", endpoint_url=endpoint)
    if command == "create":
        stream, bucket = args
        s3.create_bucket(Bucket=bucket)
        firehose = boto3.client("firehose", endpoint_url=endpoint)
        firehose.create_delivery_stream(
            DeliveryStreamName=stream,
            DeliveryStreamType="DirectPut",
            ExtendedS3DestinationConfiguration={
                "RoleARN": "arn:aws:iam::123456789012:role/firehose-to-s3",
                "BucketARN": f"arn:aws:s3:::{bucket}",
            },
        )
    elif command == "arn":
        firehose = boto3.client("firehose", endpoint_url=endpoint)
        desc = firehose.describe_delivery_stream(DeliveryStreamName=args[0])
        print(desc["DeliveryStreamDescription"]["DeliveryStreamARN"], end="")
    elif command == "read":
        (bucket,) = args
        objects, token = [], None
        while True:
            kwargs = {"Bucket": bucket}
            if token:
                kwargs["ContinuationToken"] = token
            resp = s3.list_objects_v2(**kwargs)
            for o in resp.get("Contents", []):
                body = s3.get_object(Bucket=bucket, Key=o["Key"])["Body"].read()
                objects.append({
                    "key": o["Key"],
                    "last_modified": o["LastModified"].isoformat(),
                    "data_b64": base64.b64encode(body).decode(),
                })
            token = resp.get("NextContinuationToken")
            if not token:
                break
        print(json.dumps(objects))
    else:
        raise SystemExit(f"unknown command {command}")


if __name__ == "__main__":
    main()
