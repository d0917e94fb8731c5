#!/usr/bin/env python3
"""CloudWatch Logs helper for tests (boto3), independent of logferry's sink.

Usage: logs_tool.py ENDPOINT COMMAND [ARGS]
  create-group GROUP              create a log group
  create-stream GROUP STREAM      create a log stream
  group GROUP                     JSON of the group as DescribeLogGroups shows it (null if absent)
  streams GROUP                   JSON list of the group's stream names
  events GROUP STREAM             JSON list of the stream's events, every page of GetLogEvents
                                  from the head: [{"timestamp", "message"}]
  filter GROUP                    JSON list of the group's events, every page of
                                  FilterLogEvents: [{"logStreamName", "timestamp", "message"}]

Credentials and region come from the environment (AWS_ACCESS_KEY_ID, AWS_REGION, ...).
"""
import json
import sys

import boto3


def main():
    endpoint, command, args = sys.argv[1], sys.argv[2], sys.argv[3:]
    logs = boto3.client("logs", endpoint_url=endpoint)
    if command == "create-group":
        logs.create_log_group(logGroupName=args[0])
    elif command == "create-stream":
        logs.create_log_stream(logGroupName=args[0], logStreamName=args[1])
    elif command == "group":
        groups = logs.describe_log_groups(logGroupNamePrefix=args[0])["logGroups"]
        found = [g for g in groups if g["logGroupName"] == args[0]]
        print(json.dumps(found[0] if found else None))
    elif command == "streams":
        names, token = [], None
        while True:
            kwargs = {"logGroupName": args[0]}
            if token:
                kwargs["nextToken"] = token
            resp = logs.describe_log_streams(**kwargs)
            names += [s["logStreamName"] for s in resp["logStreams"]]
            token = resp.get("nextToken")
            if not token:
                break
        print(json.dumps(sorted(names)))
    elif command == "events":
        events, token = [], None
        while True:
            kwargs = {"logGroupName": args[0], "logStreamName": args[1], "startFromHead": True}
            if token:
                kwargs["nextToken"] = token
            resp = logs.get_log_events(**kwargs)
            events += [{"timestamp": e["timestamp"], "message": e["message"]} for e in resp["events"]]
            if not resp["events"] or resp.get("nextForwardToken") in (None, token):
                break
            token = resp["nextForwardToken"]
        print(json.dumps(events))
    elif command == "filter":
        events, token = [], None
        while True:
            kwargs = {"logGroupName": args[0]}
            if token:
                kwargs["nextToken"] = token
            resp = logs.filter_log_events(**kwargs)
            events += [
                {"logStreamName": e["logStreamName"], "timestamp": e["timestamp"], "message": e["message"]}
                for e in resp["events"]
            ]
            token = resp.get("nextToken")
            if not token:
                break
        print(json.dumps(events))
    else:
        raise SystemExit(f"unknown command {command}")


if __name__ == "__main__":
    main()
