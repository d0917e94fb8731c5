//! Decoding every fixture in tests/fixtures/cwlogs/ (exact records or errors), and the
//! options and edge cases the fixtures do not cover.

use std::io::Write;
use std::path::PathBuf;

use super::*;

fn fixtures() -> PathBuf {
    PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/cwlogs"
    ))
}

fn read(name: &str) -> Vec<u8> {
    let path = fixtures().join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("cannot read fixture {}: {e}", path.display()))
}

fn decoder() -> Decoder {
    Decoder::new(&CloudwatchConfig::default())
}

/// The 20 000-byte message of event 3: `BIG 000`, ` 0000001` … ` 0002498`, ` 0002END.`.
fn big_message() -> String {
    let mut s = String::from("BIG 000");
    for i in 1..=2498 {
        s.push_str(&format!(" {i:07}"));
    }
    s.push_str(" 0002END.");
    assert_eq!(s.len(), 20_000);
    s
}

fn messages() -> Vec<String> {
    vec![
        "GET /healthz 200 1.2ms".to_string(),
        r#"{"level":"info","msg":"order placed","order_id":8812,"amount":12.5,"tags":["a","b"]}"#
            .to_string(),
        "utilisateur connecté: Zoë — 東京 ✓ 🚀".to_string(),
        big_message(),
        r#"level=warn msg="slow query" elapsed_ms=1203"#.to_string(),
    ]
}

fn record(message: &str, id: &str) -> Map {
    let mut m = Map::new();
    m.insert("message", Value::from(message));
    m.insert("logGroup", Value::from("/ecs/web"));
    m.insert("logStream", Value::from("web/app/0123"));
    m.insert("owner", Value::from("123456789012"));
    m.insert(
        "subscriptionFilters",
        Value::Array(vec![Value::from("to-logferry")]),
    );
    m.insert("id", Value::from(id));
    m
}

fn expected(ids: &[&str], timestamps: &[i64]) -> Vec<Event> {
    messages()
        .iter()
        .zip(ids)
        .zip(timestamps)
        .map(|((message, id), &ts)| {
            Event::new(
                Arc::from("cloudwatch_logs"),
                EventTime::from_millis(ts),
                record(message, id),
            )
        })
        .collect()
}

/// moto's payload: integer ids 0..4, timestamps 1795316388232..236.
fn expected_moto() -> Vec<Event> {
    expected(
        &["0", "1", "2", "3", "4"],
        &[
            1795316388232,
            1795316388233,
            1795316388234,
            1795316388235,
            1795316388236,
        ],
    )
}

/// The realistic payload: 56-digit ids.
fn expected_realistic() -> Vec<Event> {
    expected(
        &[
            "38260920246519012333835124682124673415244250676231759308",
            "38260920246568201049525804815290915827790128557119883548",
            "38260920251358720872010367036990483039299139352619659011",
            "38260920266114687251779674786624909818525505139675789564",
            "38260920277610720458590025008672273376752528381095463370",
        ],
        &[
            1715679001123,
            1715679001125,
            1715679001340,
            1715679002001,
            1715679002517,
        ],
    )
}

fn awslogs(input: LambdaInput) -> Decoded {
    match input {
        LambdaInput::Awslogs(d) => d,
        LambdaInput::Kinesis(_) => panic!("expected an awslogs event"),
    }
}

fn event_error(name: &str) -> CloudwatchError {
    match decoder().decode_event_bytes(&read(name)) {
        Ok(other) => panic!("{name} decoded: {other:?}"),
        Err(e) => e,
    }
}

/// Every file of the fixture folder is covered by one test below: a new fixture fails here
/// until a test decodes it.
#[test]
fn every_fixture_is_covered() {
    let covered = [
        "README.md",
        "bad-json-inside.json",
        "bad-missing-awslogs.json",
        "bad-not-base64.json",
        "bad-not-gzip.json",
        "bad-truncated-gzip.json",
        "kinesis-record-1.gz",
        "kinesis-record-1.json",
        "lambda-control-message.decoded.json",
        "lambda-control-message.json",
        "lambda-data-message-realistic.decoded.json",
        "lambda-data-message-realistic.json",
        "lambda-data-message.json",
        "lambda-kinesis-trigger.json",
    ];
    let mut found: Vec<String> = std::fs::read_dir(fixtures())
        .expect("the fixture folder tests/fixtures/cwlogs")
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    found.sort();
    assert_eq!(found, covered);
}

#[test]
fn moto_kinesis_record_gzip() {
    let d = decoder().decode_gzip(&read("kinesis-record-1.gz")).unwrap();
    assert_eq!(d.events, expected_moto());
    assert_eq!(d.control_messages, 0);
}

#[test]
fn moto_kinesis_record_json() {
    let d = decoder()
        .decode_json(&read("kinesis-record-1.json"))
        .unwrap();
    assert_eq!(d.events, expected_moto());
}

#[test]
fn moto_kinesis_record_as_kinesis_data() {
    let d = decoder()
        .decode_kinesis_data(
            Bytes::from(read("kinesis-record-1.gz")),
            "wcbvccd8do25grhdzrsdgyrjexmeyicv",
            EventTime::default(),
        )
        .unwrap();
    assert_eq!(d.events, expected_moto());
}

#[test]
fn lambda_data_message_from_moto() {
    let d = awslogs(
        decoder()
            .decode_event_bytes(&read("lambda-data-message.json"))
            .unwrap(),
    );
    assert_eq!(d.events, expected_moto());
    assert!(d.bytes >= 20_000 + 22 + 84 + 47 + 43);
}

#[test]
fn lambda_data_message_realistic() {
    let d = awslogs(
        decoder()
            .decode_event_bytes(&read("lambda-data-message-realistic.json"))
            .unwrap(),
    );
    assert_eq!(d.events, expected_realistic());
}

#[test]
fn realistic_decoded_json() {
    let d = decoder()
        .decode_json(&read("lambda-data-message-realistic.decoded.json"))
        .unwrap();
    assert_eq!(d.events, expected_realistic());
}

#[test]
fn control_message_is_skipped_and_counted() {
    let d = awslogs(
        decoder()
            .decode_event_bytes(&read("lambda-control-message.json"))
            .unwrap(),
    );
    assert!(d.events.is_empty());
    assert_eq!(d.control_messages, 1);
    let d = decoder()
        .decode_json(&read("lambda-control-message.decoded.json"))
        .unwrap();
    assert!(d.events.is_empty());
    assert_eq!(d.control_messages, 1);
}

#[test]
fn kinesis_trigger_event() {
    let LambdaInput::Kinesis(records) = decoder()
        .decode_event_bytes(&read("lambda-kinesis-trigger.json"))
        .unwrap()
    else {
        panic!("expected a Kinesis trigger event");
    };
    assert_eq!(records.len(), 2);
    assert_eq!(
        records[0].sequence_number,
        "49651874017433946285613417651362183614285710235861532674"
    );
    assert_eq!(
        records[1].sequence_number,
        "49651874017433946285613417651363392540105324865036238850"
    );
    let control = records[0].decoded.as_ref().unwrap();
    assert!(control.events.is_empty());
    assert_eq!(control.control_messages, 1);
    let data = records[1].decoded.as_ref().unwrap();
    assert_eq!(data.events, expected_realistic());
    assert_eq!(data.control_messages, 0);
}

#[test]
fn bad_not_base64() {
    let e = event_error("bad-not-base64.json");
    assert!(
        matches!(
            e,
            CloudwatchError::Base64 {
                what: "`awslogs.data`",
                ..
            }
        ),
        "{e:?}"
    );
    assert!(
        e.to_string()
            .starts_with("`awslogs.data` is not valid base64: "),
        "{e}"
    );
}

#[test]
fn bad_not_gzip() {
    let e = event_error("bad-not-gzip.json");
    assert!(matches!(e, CloudwatchError::NotGzip { .. }), "{e:?}");
    // "this" in hex.
    assert_eq!(
        e.to_string(),
        "the payload is not gzip: it starts with 74 68 69 73, not the gzip magic 1f 8b"
    );
}

#[test]
fn bad_truncated_gzip() {
    let e = event_error("bad-truncated-gzip.json");
    let CloudwatchError::Gzip(io) = &e else {
        panic!("{e:?}")
    };
    assert_eq!(io.kind(), std::io::ErrorKind::UnexpectedEof, "{io}");
    assert!(
        e.to_string()
            .starts_with("the gzip payload is truncated or corrupt: "),
        "{e}"
    );
}

#[test]
fn bad_json_inside() {
    let e = event_error("bad-json-inside.json");
    let CloudwatchError::Json(json) = &e else {
        panic!("{e:?}")
    };
    assert!(json.is_eof(), "{json}");
    assert!(
        e.to_string().starts_with(
            "the decompressed payload is not a CloudWatch Logs message (bad JSON): EOF while"
        ),
        "{e}"
    );
}

#[test]
fn bad_missing_awslogs() {
    let e = event_error("bad-missing-awslogs.json");
    assert!(matches!(e, CloudwatchError::MissingAwslogs), "{e:?}");
    assert_eq!(
        e.to_string(),
        "the event has no `awslogs` object (nor Kinesis `Records`): it is not a CloudWatch Logs \
         subscription event"
    );
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    enc.write_all(data).unwrap();
    enc.finish().unwrap()
}

#[test]
fn multi_member_gzip_is_one_stream() {
    let json = read("lambda-data-message-realistic.decoded.json");
    let (a, b) = json.split_at(1000);
    let mut gz = gzip(a);
    gz.extend(gzip(b));
    let d = decoder().decode_gzip(&gz).unwrap();
    assert_eq!(d.events, expected_realistic());
}

#[test]
fn decompressed_size_is_bounded() {
    let json = read("lambda-data-message-realistic.decoded.json");
    let config = CloudwatchConfig {
        max_decompressed_size: ByteSize(json.len() as u64 - 1),
        ..CloudwatchConfig::default()
    };
    let e = Decoder::new(&config).decode_gzip(&gzip(&json)).unwrap_err();
    assert!(
        matches!(e, CloudwatchError::TooLarge { limit } if limit == json.len() - 1),
        "{e:?}"
    );
    let config = CloudwatchConfig {
        max_decompressed_size: ByteSize(json.len() as u64),
        ..CloudwatchConfig::default()
    };
    assert_eq!(
        Decoder::new(&config)
            .decode_gzip(&gzip(&json))
            .unwrap()
            .events
            .len(),
        5
    );
}

#[test]
fn empty_and_odd_inputs_are_errors() {
    let d = decoder();
    assert!(matches!(
        d.decode_gzip(b""),
        Err(CloudwatchError::NotGzip { .. })
    ));
    assert!(matches!(
        d.decode_json(br#"{"messageType":"SOMETHING_ELSE"}"#),
        Err(CloudwatchError::UnknownMessageType(t)) if t == "SOMETHING_ELSE"
    ));
    assert!(matches!(
        d.decode_event_bytes(b"not json"),
        Err(CloudwatchError::EventJson(_))
    ));
    assert!(matches!(
        d.decode_event_bytes(br#"{"awslogs":{}}"#),
        Err(CloudwatchError::MissingData)
    ));
    assert!(matches!(
        d.decode_event_bytes(br#"{"Records":[{"eventSource":"aws:sqs"}]}"#),
        Err(CloudwatchError::MissingAwslogs)
    ));
    let LambdaInput::Kinesis(records) = d
        .decode_event_bytes(br#"{"Records":[{"kinesis":{"sequenceNumber":"7","data":"%%"}}]}"#)
        .unwrap()
    else {
        panic!()
    };
    assert_eq!(records[0].sequence_number, "7");
    assert!(matches!(
        records[0].decoded,
        Err(CloudwatchError::Base64 {
            what: "`kinesis.data`",
            ..
        })
    ));
}

#[test]
fn parse_json_uses_the_object_and_keeps_other_messages() {
    let config = CloudwatchConfig {
        parse_json: true,
        ..CloudwatchConfig::default()
    };
    let d = Decoder::new(&config)
        .decode_json(&read("lambda-data-message-realistic.decoded.json"))
        .unwrap();
    let mut want = expected_realistic();
    let mut parsed = Map::new();
    parsed.insert("level", Value::from("info"));
    parsed.insert("msg", Value::from("order placed"));
    parsed.insert("order_id", Value::Int(8812));
    parsed.insert("amount", Value::Float(12.5));
    parsed.insert(
        "tags",
        Value::Array(vec![Value::from("a"), Value::from("b")]),
    );
    for (k, v) in want[1].record.iter().skip(1) {
        parsed.insert(k.clone(), v.clone());
    }
    want[1].record = parsed;
    assert_eq!(d.events, want);

    // A message that looks like an object but is not valid JSON stays as it is.
    let json = br#"{"messageType":"DATA_MESSAGE","logEvents":[{"id":"9","timestamp":1,"message":"{broken"}]}"#;
    let d = Decoder::new(&config).decode_json(json).unwrap();
    assert_eq!(
        d.events[0].record.get(b"message"),
        Some(&Value::from("{broken"))
    );
    // Metadata wins over a same-named key of the message: `id` stays the dedupe key.
    let json = br#"{"messageType":"DATA_MESSAGE","logEvents":[{"id":"9","timestamp":1,"message":"{\"id\":1}"}]}"#;
    let d = Decoder::new(&config).decode_json(json).unwrap();
    assert_eq!(d.events[0].record.get(b"id"), Some(&Value::from("9")));
}

#[test]
fn field_names_are_configurable_and_can_be_left_out() {
    let config = CloudwatchConfig {
        tag: "cw".to_string(),
        message_key: "log".to_string(),
        log_group_key: "group".to_string(),
        log_stream_key: String::new(),
        owner_key: String::new(),
        subscription_filters_key: String::new(),
        id_key: "event_id".to_string(),
        ..CloudwatchConfig::default()
    };
    let json = br#"{"messageType":"DATA_MESSAGE","logGroup":"g","logStream":"s","logEvents":[{"id":"9","timestamp":1500,"message":"hi"}]}"#;
    let d = Decoder::new(&config).decode_json(json).unwrap();
    let mut want = Map::new();
    want.insert("log", Value::from("hi"));
    want.insert("group", Value::from("g"));
    want.insert("event_id", Value::from("9"));
    assert_eq!(
        d.events,
        vec![Event::new(
            Arc::from("cw"),
            EventTime::new(1, 500_000_000),
            want
        )]
    );
}

#[test]
fn logferry_kinesis_records_plain_and_aggregated() {
    let arrival = EventTime::new(1_715_679_000, 0);
    let d = decoder();
    // Plain JSON record as the Kinesis sink writes it.
    let plain = d
        .decode_kinesis_data(
            Bytes::from_static(b"{\"log\":\"a\",\"n\":1}\n"),
            "k",
            arrival,
        )
        .unwrap();
    let mut want = Map::new();
    want.insert("log", Value::from("a"));
    want.insert("n", Value::Int(1));
    assert_eq!(
        plain.events,
        vec![Event::new(Arc::from("cloudwatch_logs"), arrival, want)]
    );
    // Plain text record.
    let text = d
        .decode_kinesis_data(Bytes::from_static(b"hello"), "k", arrival)
        .unwrap();
    assert_eq!(
        text.events[0].record.get(b"message"),
        Some(&Value::from("hello"))
    );
    // KPL aggregate of two user records.
    let outer = kpl::OuterKeys {
        partition_key: "outer".to_string(),
        explicit_hash_key: None,
    };
    let mut agg = kpl::Aggregator::new(1 << 20, outer).unwrap();
    agg.try_add(Record::new("a", Bytes::from_static(b"{\"log\":\"one\"}")))
        .unwrap();
    agg.try_add(Record::new("b", Bytes::from_static(b"two")))
        .unwrap();
    let container = agg.finish().unwrap();
    assert!(kpl::is_aggregated(&container.data));
    let out = d
        .decode_kinesis_data(container.data.clone(), "outer", arrival)
        .unwrap();
    assert_eq!(out.events.len(), 2);
    assert_eq!(out.events[0].record.get(b"log"), Some(&Value::from("one")));
    assert_eq!(
        out.events[1].record.get(b"message"),
        Some(&Value::from("two"))
    );
    // A damaged aggregate is an error, not garbage records.
    let mut damaged = container.data.to_vec();
    let at = damaged.len() - 20;
    damaged[at] ^= 0xFF;
    assert!(matches!(
        d.decode_kinesis_data(Bytes::from(damaged), "outer", arrival),
        Err(CloudwatchError::Kpl(KplError::DigestMismatch))
    ));
}

#[test]
fn config_validation() {
    let bad = CloudwatchConfig {
        tag: String::new(),
        message_key: String::new(),
        max_decompressed_size: ByteSize(0),
        ..CloudwatchConfig::default()
    };
    let problems = bad.validate().unwrap_err();
    assert_eq!(problems.len(), 3);
    assert!(CloudwatchConfig::default().validate().is_ok());
}

#[test]
fn the_config_loader_accepts_the_source_and_names_bad_keys() {
    use crate::config::Config;
    use std::path::Path;
    let ok = "[[sources]]\ntype = \"cloudwatch_logs\"\nparse_json = true\nsafety_margin = \"2s\"\n\
              [[sinks]]\ntype = \"stdout\"\nmatch = \"*\"\n";
    let config = Config::parse(Path::new("t.toml"), ok, &|_| None).unwrap();
    let crate::source::SourceConfig::CloudwatchLogs(c) = &config.sources[0].config else {
        panic!("not a cloudwatch_logs source")
    };
    assert!(c.parse_json);
    assert_eq!(c.safety_margin.get(), std::time::Duration::from_secs(2));

    let bad = "[[sources]]\ntype = \"cloudwatch_logs\"\nparse_jsn = true\n\
               [[sinks]]\ntype = \"stdout\"\nmatch = \"*\"\n";
    let Err(e) = Config::parse(Path::new("t.toml"), bad, &|_| None) else {
        panic!("an unknown key was accepted")
    };
    let text = e.to_string();
    assert!(text.contains("parse_jsn"), "{text}");
    assert!(text.starts_with("t.toml:"), "{text}");
}

#[tokio::test]
async fn the_sidecar_refuses_to_run_a_cloudwatch_logs_source() {
    let cx_name = "cloudwatch_logs.0".to_string();
    let config = crate::source::SourceConfig::CloudwatchLogs(CloudwatchConfig::default());
    let metrics = crate::metrics::Metrics::new();
    let router = std::sync::Arc::new(crate::pipeline::router::Router::new(
        Vec::new(),
        Vec::new(),
        metrics.component("router", "router"),
    ));
    let cx = crate::source::SourceContext {
        name: cx_name,
        router,
        shutdown: crate::shutdown::CancellationToken::new(),
        metrics: metrics.component("cloudwatch_logs.0", "source"),
    };
    let Err(e) = config.start(cx).await else {
        panic!("the sidecar started a cloudwatch_logs source")
    };
    assert!(e.to_string().contains("logferry-lambda"), "{e}");
}
