//! The forwarder into a Kafka topic on tansu, through the shared Kafka sink.

mod support;

use std::time::Duration;

use logferry_test_kit::kafka::consume;
use logferry_test_kit::stand_ins::Tansu;
use serde_json::{json, Value};
use support::{fixture, Function};

#[test]
fn data_message_into_a_kafka_topic_on_tansu() {
    let tansu = Tansu::start();
    tansu.create_topic("logs", 1);
    let dir = tempfile::tempdir().unwrap();
    let f = Function::start(
        dir.path(),
        &[
            ("LOGFERRY_SINK", "kafka"),
            ("LOGFERRY_BROKERS", &tansu.bootstrap()),
            ("LOGFERRY_TOPIC", "logs"),
        ],
    );
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
    let decoded: Value =
        serde_json::from_slice(&fixture("lambda-data-message-realistic.decoded.json")).unwrap();
    let events = decoded["logEvents"].as_array().unwrap();
    let got = consume(&tansu.bootstrap(), "logs", 5, Duration::from_secs(30));
    assert_eq!(got.len(), 5);
    for (message, event) in got.iter().zip(events) {
        assert_eq!(
            message.key.as_deref(),
            Some(&b"web/app/0123"[..]),
            "message key = logStream by default"
        );
        let record = message.json();
        assert_eq!(record["message"], event["message"]);
        assert_eq!(record["id"], event["id"]);
        assert_eq!(record["logGroup"], "/ecs/web");
        assert_eq!(record["subscriptionFilters"], json!(["to-logferry"]));
    }
}
