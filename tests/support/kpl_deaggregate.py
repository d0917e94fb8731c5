#!/usr/bin/env python3
"""Deaggregate Kinesis records with the official aws-kinesis-agg library (a test oracle).

stdin:  JSON list of Kinesis records as PutRecords sends them:
        {"partition_key": str, "explicit_hash_key": str | null, "data_b64": str}
stdout: JSON list of the user records aws_kinesis_agg.deaggregator yields, in order:
        {"partition_key", "explicit_hash_key", "data_b64",
         "aggregated": bool (false = passed through as a plain record),
         "source_index": index of the input record it came from}

Records are fed in the Lambda event shape (deaggregate_records), the form the Lambda
forwarder and most consumers use. Requires: pip install aws-kinesis-agg==1.2.3
"""

import base64
import json
import sys

from aws_kinesis_agg.deaggregator import deaggregate_records


def to_lambda_record(index, record):
    kinesis = {
        "kinesisSchemaVersion": "1.0",
        "partitionKey": record["partition_key"],
        "sequenceNumber": str(index),
        "approximateArrivalTimestamp": 0.0,
        "data": record["data_b64"],
    }
    if record.get("explicit_hash_key") is not None:
        kinesis["explicitHashKey"] = record["explicit_hash_key"]
    return {"eventSource": "aws:kinesis", "kinesis": kinesis}


def main():
    records = json.load(sys.stdin)
    out = []
    for index, record in enumerate(records):
        for user in deaggregate_records([to_lambda_record(index, record)]):
            kinesis = user["kinesis"]
            data = kinesis["data"]
            if isinstance(data, bytes):
                data = data.decode("ascii")
            # Round-trip through base64 so both branches give the canonical encoding.
            data = base64.b64encode(base64.b64decode(data)).decode("ascii")
            out.append(
                {
                    "partition_key": kinesis["partitionKey"],
                    "explicit_hash_key": kinesis.get("explicitHashKey"),
                    "data_b64": data,
                    "aggregated": bool(kinesis.get("aggregated", False)),
                    "source_index": index,
                }
            )
    json.dump(out, sys.stdout)


if __name__ == "__main__":
    main()
