//! The forwarder into Kinesis on moto, and the real chain (moto's CloudWatch Logs subscription
//! filter -> stream -> Kinesis trigger event -> function -> second stream).

mod support;

use std::time::Duration;

use logferry_test_kit::kinesis::{create_stream, read_stream as read_kinesis, tool};
use logferry_test_kit::stand_ins::Moto;
use serde_json::{json, Value};
use support::{fixture, Function};

fn messages() -> Vec<String> {
    let decoded: Value =
        serde_json::from_slice(&fixture("lambda-data-message-realistic.decoded.json")).unwrap();
    decoded["logEvents"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["message"].as_str().unwrap().to_string())
        .collect()
}

fn kinesis_function(
    dir: &std::path::Path,
    moto: &Moto,
    stream: &str,
    aggregation: &str,
) -> Function {
    let aws = moto.aws_env();
    let mut env: Vec<(&str, &str)> = aws.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    env.extend([
        ("LOGFERRY_SINK", "kinesis"),
        ("LOGFERRY_STREAM", stream),
        ("LOGFERRY_AGGREGATION", aggregation),
    ]);
    Function::start(dir, &env)
}

/// Every user record in `stream` (deaggregated by aws-kinesis-agg): (partition key, whether
/// it came out of an aggregated record, parsed JSON data).
fn read_stream_records(moto: &Moto, stream: &str) -> Vec<(String, bool, Value)> {
    read_kinesis(&moto.endpoint(), stream)
        .records
        .iter()
        .flat_map(|r| {
            r.users
                .iter()
                .map(|u| (u.partition_key.clone(), r.aggregated, u.json()))
        })
        .collect()
}

fn read_stream(moto: &Moto, stream: &str) -> Vec<(String, Value)> {
    read_stream_records(moto, stream)
        .into_iter()
        .map(|(k, _, d)| (k, d))
        .collect()
}

fn data_message_into_kinesis(aggregation: &str) {
    let moto = Moto::start();
    create_stream(&moto.endpoint(), "out", 1);
    let dir = tempfile::tempdir().unwrap();
    let f = kinesis_function(dir.path(), &moto, "out", aggregation);
    let reply = f
        .invoke(
            &fixture("lambda-data-message-realistic.json"),
            Duration::from_secs(30),
        )
        .response();
    assert_eq!(
        reply,
        json!({"records": 5, "control_messages": 0}),
        "{}",
        f.log_text()
    );
    let got = read_stream_records(&moto, "out");
    assert_eq!(got.len(), 5, "{got:?}");
    let aggregated = got.iter().filter(|(_, a, _)| *a).count();
    if aggregation == "true" {
        assert_eq!(aggregated, 5, "all 5 fit one aggregated record");
    } else {
        assert_eq!(aggregated, 0);
    }
    for ((key, _, record), message) in got.iter().zip(messages()) {
        assert_eq!(key, "web/app/0123");
        assert_eq!(record["message"], json!(message));
        assert_eq!(record["logGroup"], "/ecs/web");
        assert_eq!(record["id"].as_str().unwrap().len(), 56);
    }
}

#[test]
fn data_message_into_kinesis_plain() {
    data_message_into_kinesis("false");
}

#[test]
fn data_message_into_kinesis_aggregated() {
    data_message_into_kinesis("true");
}

#[test]
fn the_real_chain_from_a_subscription_filter_through_a_kinesis_trigger() {
    let moto = Moto::start();
    let sent = ["first line", "{\"level\":\"info\"}", "third — ✓"];
    let event = tool(
        &moto.endpoint(),
        &[&["cwl-chain", "cwl"][..], &sent[..]].concat(),
    );
    create_stream(&moto.endpoint(), "out", 1);
    let dir = tempfile::tempdir().unwrap();
    let f = kinesis_function(dir.path(), &moto, "out", "false");
    let reply = f.invoke(&event, Duration::from_secs(30)).response();
    assert_eq!(reply, json!({"batchItemFailures": []}), "{}", f.log_text());
    let got: Vec<Value> = read_stream(&moto, "out")
        .into_iter()
        .map(|(_, r)| r)
        .collect();
    let messages: Vec<&str> = got.iter().map(|r| r["message"].as_str().unwrap()).collect();
    assert_eq!(messages, sent);
    for r in &got {
        assert_eq!(r["logGroup"], "/ecs/web");
        assert_eq!(r["logStream"], "web/app/0123");
        assert_eq!(r["subscriptionFilters"], json!(["to-logferry"]));
    }
}
