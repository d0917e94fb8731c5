//! Delivery failure at the destination: a Kinesis stand-in that refuses every PutRecords makes
//! the invocation fail (before its deadline), and the retry CloudWatch Logs would make after
//! the destination recovers delivers every log event.

mod support;

use std::collections::HashSet;
use std::time::Duration;

use logferry_test_kit::fault_kinesis::{FaultKinesis, Faults, RequestFault};
use serde_json::Value;
use support::{awslogs_event, data_message, Function};

#[test]
fn a_refusing_destination_fails_the_invocation_and_the_retry_delivers_everything() {
    let kinesis = FaultKinesis::start(Faults {
        request_cycle: vec![RequestFault::ServerError],
        ..Faults::default()
    });
    let endpoint = kinesis.endpoint();
    let dir = tempfile::tempdir().unwrap();
    let f = Function::start(
        dir.path(),
        &[
            ("AWS_ENDPOINT_URL", endpoint.as_str()),
            ("AWS_ACCESS_KEY_ID", "testing"),
            ("AWS_SECRET_ACCESS_KEY", "testing"),
            ("AWS_REGION", "us-east-1"),
            ("AWS_EC2_METADATA_DISABLED", "true"),
            ("LOGFERRY_SINK", "kinesis"),
            ("LOGFERRY_STREAM", "logs"),
            ("LOGFERRY_AGGREGATION", "false"),
            ("LOGFERRY_SAFETY_MARGIN", "1s"),
        ],
    );
    let n = 300;
    let event = awslogs_event(&data_message(n, 100));

    let error = f.invoke(&event, Duration::from_secs(4)).error();
    assert_eq!(error["errorType"], "logferry.DeliveryTimeout", "{error}");
    let (calls, accepted) = kinesis.seen(|s| (s.put_calls, s.accepted.len()));
    assert!(calls > 0, "the sink tried to deliver");
    assert_eq!(accepted, 0, "the stand-in accepted nothing");

    // The destination recovers; CloudWatch Logs retries the same event.
    kinesis.set(Faults::default());
    let reply = f.invoke(&event, Duration::from_secs(30)).response();
    assert_eq!(reply["records"], n, "{reply}");
    let ids: HashSet<String> = kinesis.seen(|s| {
        s.accepted
            .keys()
            .filter_map(|data| serde_json::from_slice::<Value>(data).ok())
            .filter_map(|r| r["id"].as_str().map(str::to_string))
            .collect()
    });
    for i in 0..n {
        assert!(ids.contains(&format!("ev-{i}")), "ev-{i} never delivered");
    }
}
