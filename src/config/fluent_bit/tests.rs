//! Translation tests on small classic files; the FireLens fixtures are tested in
//! tests/firelens.rs.

use std::path::Path;

use super::*;

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

fn problems(text: &str) -> Vec<String> {
    let dir = tempfile::tempdir().unwrap();
    let path = write(dir.path(), "fluent-bit.conf", text);
    match parse(&path, &|_| None) {
        Ok(_) => Vec::new(),
        Err(e) => e
            .problems
            .iter()
            .map(|p| {
                p.to_string()
                    .replace(&format!("{}", dir.path().display()), "DIR")
            })
            .collect(),
    }
}

const INPUT: &str = "[INPUT]\n    Name forward\n    unix_path /tmp/x.sock\n";

#[test]
fn minimal_config_loads() {
    assert_eq!(
        problems(&format!("{INPUT}[OUTPUT]\n    Name null\n    Match *\n")),
        Vec::<String>::new()
    );
}

#[test]
fn unknown_key_names_file_line_section_and_key() {
    let p = problems(&format!(
        "{INPUT}\n[OUTPUT]\n    Name kinesis_streams\n    Match *\n    stream s\n    \
         streem typo\n"
    ));
    assert_eq!(p.len(), 1, "{p:?}");
    assert!(
        p[0].starts_with("DIR/fluent-bit.conf:9: [OUTPUT] kinesis_streams: `streem`: unknown key"),
        "{}",
        p[0]
    );
    assert!(
        p[0].contains("partition_key"),
        "lists the known keys: {}",
        p[0]
    );
}

#[test]
fn unknown_plugins_are_errors() {
    let p = problems(&format!(
        "{INPUT}[FILTER]\n    Name lua\n    Match *\n[OUTPUT]\n    Name s3\n    Match *\n"
    ));
    assert_eq!(p.len(), 2, "{p:?}");
    assert!(
        p[0].starts_with(
            "DIR/fluent-bit.conf:5: [FILTER] lua: `Name`: the filter plugin `lua` is not supported"
        ),
        "{}",
        p[0]
    );
    assert!(p[1].contains(":8: [OUTPUT] s3: `Name`"), "{}", p[1]);
}

#[test]
fn loader_problems_point_at_the_classic_line() {
    // An invalid regex is found by the grep transform itself.
    let p = problems(&format!(
        "{INPUT}[FILTER]\n    Name grep\n    Match *\n    Regex log (\n[OUTPUT]\n    Name null\n    Match *\n"
    ));
    assert_eq!(p.len(), 1, "{p:?}");
    assert!(
        p[0].starts_with("DIR/fluent-bit.conf:7: [FILTER] grep: `Regex`:"),
        "{}",
        p[0]
    );
    // A missing option: the section header.
    let p = problems(&format!(
        "{INPUT}\n[OUTPUT]\n    Name kinesis\n    Match *\n"
    ));
    assert!(
        p[0].starts_with("DIR/fluent-bit.conf:5: [OUTPUT] kinesis: `stream`:"),
        "{}",
        p[0]
    );
}

#[test]
fn service_keys_are_mapped_or_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(
        dir.path(),
        "fluent-bit.conf",
        &format!(
            "[SERVICE]\n    Flush 5\n    Grace 20\n    Log_Level debug\n    Daemon Off\n    \
             HTTP_Server On\n    HTTP_Listen 127.0.0.1\n    HTTP_Port 2021\n{INPUT}[OUTPUT]\n    \
             Name kinesis\n    Match *\n    stream s\n"
        ),
    );
    let config = parse(&path, &|_| None).unwrap();
    assert_eq!(config.service.grace_period.get().as_secs(), 20);
    assert_eq!(config.service.log_level, "debug");
    assert_eq!(config.service.http_listen, "127.0.0.1:2021");
    let crate::sink::SinkConfig::Kinesis(k) = &config.sinks[0].config else {
        panic!("kinesis sink expected");
    };
    assert_eq!(
        k.flush.get().as_secs(),
        5,
        "Flush is the sink's batching delay"
    );

    let p = problems(&format!(
        "[SERVICE]\n    Parsers_File parsers.conf\n    Daemon On\n    HTTP_Server Off\n{INPUT}[OUTPUT]\n    Name null\n    Match *\n"
    ));
    assert_eq!(p.len(), 2, "{p:?}");
    assert!(p[0].contains(":2: [SERVICE]: `Parsers_File`:"), "{}", p[0]);
    assert!(p[1].contains(":3: [SERVICE]: `Daemon`:"), "{}", p[1]);
}

#[test]
fn http_server_off_disables_the_http_listener() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(
        dir.path(),
        "fluent-bit.conf",
        &format!("[SERVICE]\n    HTTP_Server Off\n{INPUT}[OUTPUT]\n    Name null\n    Match *\n"),
    );
    let config = parse(&path, &|_| None).unwrap();
    assert_eq!(config.service.http_addr(), None);
}

#[test]
fn mem_buf_limit_is_shared_by_the_sinks_that_hold_records() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(
        dir.path(),
        "fluent-bit.conf",
        "[INPUT]\n    Name forward\n    Mem_Buf_Limit 100MB\n    unix_path /tmp/a.sock\n\
         [OUTPUT]\n    Name null\n    Match x\n\
         [OUTPUT]\n    Name stdout\n    Match a\n[OUTPUT]\n    Name stdout\n    Match b\n",
    );
    let config = parse(&path, &|_| None).unwrap();
    let limits: Vec<u64> = config
        .sinks
        .iter()
        .map(|s| s.buffer_limit.bytes())
        .collect();
    assert_eq!(
        limits,
        [
            crate::config::DEFAULT_BUFFER_LIMIT.bytes(),
            50_000_000,
            50_000_000
        ]
    );
}

#[test]
fn repeated_single_keys_are_errors_and_repeated_list_keys_accumulate() {
    let p = problems(&format!(
        "{INPUT}[OUTPUT]\n    Name kinesis\n    Match *\n    stream a\n    stream b\n"
    ));
    assert_eq!(p.len(), 1, "{p:?}");
    assert!(
        p[0].contains(":8: [OUTPUT] kinesis: `stream`: is given more than once (first on line 7)"),
        "{}",
        p[0]
    );
}

#[test]
fn endpoint_forms_and_time_format_reach_the_sink() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(
        dir.path(),
        "fluent-bit.conf",
        &format!(
            "{INPUT}[OUTPUT]\n    Name kinesis_streams\n    Match a\n    stream s\n    endpoint \
             127.0.0.1\n    port 4566\n    time_key t\n    time_key_format %H:%M:%S.%L\n\
             [OUTPUT]\n    Name kinesis\n    Match b\n    stream s\n    endpoint http://127.0.0.1:4566\n    \
             time_key t\n    time_key_format %H:%M:%S.%L\n    sts_endpoint sts.example\n"
        ),
    );
    let config = parse(&path, &|_| None).unwrap();
    let kinesis = |i: usize| match &config.sinks[i].config {
        crate::sink::SinkConfig::Kinesis(k) => k.clone(),
        _ => panic!("kinesis expected"),
    };
    let c = kinesis(0);
    assert_eq!(c.endpoint.as_deref(), Some("https://127.0.0.1:4566"));
    assert_eq!(c.time_key_format.as_deref(), Some("%H:%M:%S.%9N"));
    let go = kinesis(1);
    assert_eq!(go.endpoint.as_deref(), Some("http://127.0.0.1:4566"));
    assert_eq!(go.time_key_format.as_deref(), Some("%H:%M:%S.%L"));
    assert_eq!(go.sts_endpoint.as_deref(), Some("https://sts.example"));
}

#[test]
fn kafka_rdkafka_properties_and_booleans() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(
        dir.path(),
        "fluent-bit.conf",
        &format!(
            "{INPUT}[OUTPUT]\n    Name kafka\n    Match *\n    Brokers 127.0.0.1:9092\n    Topics \
             logs\n    Format JSON\n    rdkafka.linger.ms 50\n    rdkafka.compression.codec \
             zstd\n    dynamic_topic off\n    queue_full_retries 3\n"
        ),
    );
    let config = parse(&path, &|_| None).unwrap();
    let crate::sink::SinkConfig::Kafka(k) = &config.sinks[0].config else {
        panic!("kafka expected");
    };
    let settings = k.validate().unwrap();
    assert_eq!(settings.property("linger.ms"), Some("50"));
    assert_eq!(settings.property("compression.type"), Some("zstd"));
    assert_eq!(settings.queue_full_retries, 3);
    let p = problems(&format!(
        "{INPUT}[OUTPUT]\n    Name kafka\n    Match *\n    Brokers b:1\n    Topics t\n    \
         rdkafka.no.such.property 1\n"
    ));
    assert!(
        p[0].contains(":9: [OUTPUT] kafka: `rdkafka.no.such.property`:"),
        "{p:?}"
    );
}

#[test]
fn dollar_braces_survive_translation_literally() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(
        dir.path(),
        "fluent-bit.conf",
        &format!(
            "@SET cluster=prod\n{INPUT}[FILTER]\n    Name record_modifier\n    Match *\n    Record c \
             ${{cluster}}\n    Record literal $${{x}}\n[OUTPUT]\n    Name null\n    Match *\n"
        ),
    );
    let t = translate(&path, &|_| None).unwrap();
    assert!(t.toml.contains("\"c prod\""), "{}", t.toml);
    assert!(parse(&path, &|_| None).is_ok());
}

#[test]
fn classic_and_loader_problems_are_reported_together() {
    let p = problems(&format!(
        "{INPUT}[OUTPUT]\n    Name kinesis\n    Match a\n    stream s\n    aggregation maybe\n\
         [OUTPUT]\n    Name kafka\n    Match b\n    Brokers b:1\n    Topics bad topic\n"
    ));
    assert_eq!(p.len(), 2, "{p:?}");
    assert!(
        p[0].contains(":8: [OUTPUT] kinesis: `aggregation`:"),
        "{}",
        p[0]
    );
    assert!(
        p[1].contains(":13: [OUTPUT] kafka: `Topics`: `bad topic`"),
        "{}",
        p[1]
    );
}

#[test]
fn refused_keys_say_why_and_are_not_offered_as_known() {
    let p = problems(&format!(
        "[SERVICE]\n    Log_File /var/log/fb.log\n    Nope 1\n{INPUT}[OUTPUT]\n    Name null\n    Match *\n"
    ));
    assert_eq!(p.len(), 2, "{p:?}");
    assert!(
        p[0].contains(":2: [SERVICE]: `Log_File`: logferry logs to standard error"),
        "{}",
        p[0]
    );
    assert!(
        p[1].contains("`Nope`: unknown key") && !p[1].contains("log_file"),
        "{}",
        p[1]
    );
}

#[test]
fn tcp_input_defaults_follow_fluent_bit_and_the_health_check_gets_an_idle_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(
        dir.path(),
        "fluent-bit.conf",
        "[INPUT]\n    Name tcp\n    Format none\n    Separator \\r\\n\n    Chunk_Size 64\n\
         [INPUT]\n    Name tcp\n    Tag firelens-healthcheck\n    Listen 127.0.0.1\n    Port 8877\n\
         [OUTPUT]\n    Name null\n    Match *\n",
    );
    let config = parse(&path, &|_| None).unwrap();
    let tcp = |i: usize| match &config.sources[i].config {
        crate::source::SourceConfig::Tcp(c) => c.clone(),
        _ => panic!("tcp expected"),
    };
    let plain = tcp(0);
    assert_eq!(plain.address(), "0.0.0.0:5170");
    assert_eq!(plain.tag, "tcp.0");
    assert_eq!(plain.separator, "\r\n");
    assert_eq!(plain.chunk_size.bytes(), 64 * 1024);
    assert_eq!(plain.idle_timeout, None);
    let health = tcp(1);
    assert_eq!(health.address(), "127.0.0.1:8877");
    assert_eq!(health.idle_timeout.map(|d| d.get().as_secs()), Some(1));
}

#[test]
fn kafka_without_topics_writes_to_fluent_bits_default_topic() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(
        dir.path(),
        "fluent-bit.conf",
        &format!("{INPUT}[OUTPUT]\n    Name kafka\n    Match *\n    Brokers 127.0.0.1:9092\n"),
    );
    let config = parse(&path, &|_| None).unwrap();
    let crate::sink::SinkConfig::Kafka(k) = &config.sinks[0].config else {
        panic!("kafka expected");
    };
    assert_eq!(k.validate().unwrap().topics, ["fluent-bit"]);
}

/// Every option of both Kinesis plugins and of the kafka output, written as a FireLens task
/// definition would, reaches the native sink under its native name with its value; the result
/// also loads (so the native loader accepts each one).
#[test]
fn every_mapped_kinesis_and_kafka_option_reaches_the_native_sink() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(
        dir.path(),
        "fluent-bit.conf",
        &format!(
            "{INPUT}[OUTPUT]\n    Name kinesis\n    Match a\n    region eu-west-1\n    stream s\n    \
             partition_key kubernetes->pod_name\n    data_keys log,level\n    log_key log\n    \
             role_arn arn:aws:iam::123456789012:role/r\n    external_id ext\n    time_key t\n    \
             time_key_format %Y\n    replace_dots _\n    compression gzip\n    append_newline true\n    \
             aggregation true\n    experimental_concurrency 4\n    experimental_concurrency_retries 2\n    \
             http_request_timeout 7\n    auto_retry_requests true\n    simple_aggregation false\n\
             [OUTPUT]\n    Name kafka\n    Match b\n    Brokers b1:9098,b2:9098\n    Topics logs\n    \
             topic_key team\n    message_key fixed\n    message_key_field container_id\n    \
             timestamp_key ts\n    timestamp_format iso8601\n    format msgpack\n    \
             aws_msk_iam true\n    aws_msk_iam_cluster_arn \
             arn:aws:kafka:us-east-1:123456789012:cluster/logs/abcd-1\n    dynamic_topic on\n    \
             rdkafka.linger.ms 20\n"
        ),
    );
    let translated = translate(&path, &|_| None).unwrap();
    let value: toml::Value = toml::from_str(&translated.toml).unwrap();
    let sinks = value["sinks"].as_array().unwrap();
    let get = |i: usize, key: &str| -> toml::Value {
        sinks[i]
            .get(key)
            .unwrap_or_else(|| panic!("sink {i} has no `{key}`:\n{}", translated.toml))
            .clone()
    };
    let s = |v: &str| toml::Value::String(v.to_string());
    for (key, want) in [
        ("type", s("kinesis")),
        ("region", s("eu-west-1")),
        ("stream", s("s")),
        ("partition_key", s("kubernetes->pod_name")),
        ("data_keys", s("log,level")),
        ("log_key", s("log")),
        ("role_arn", s("arn:aws:iam::123456789012:role/r")),
        ("external_id", s("ext")),
        ("time_key", s("t")),
        ("time_key_format", s("%Y")),
        ("replace_dots", s("_")),
        ("compression", s("gzip")),
        ("append_newline", toml::Value::Boolean(true)),
        ("aggregation", toml::Value::Boolean(true)),
        ("max_in_flight", toml::Value::Integer(4)),
        ("http_request_timeout", s("7s")),
    ] {
        assert_eq!(get(0, key), want, "kinesis `{key}`");
    }
    for (key, want) in [
        ("type", s("kafka")),
        ("brokers", s("b1:9098,b2:9098")),
        ("topics", s("logs")),
        ("topic_key", s("team")),
        ("message_key", s("fixed")),
        ("message_key_field", s("container_id")),
        ("timestamp_key", s("ts")),
        ("timestamp_format", s("iso8601")),
        ("format", s("msgpack")),
        ("aws_msk_iam", toml::Value::Boolean(true)),
        (
            "aws_msk_iam_cluster_arn",
            s("arn:aws:kafka:us-east-1:123456789012:cluster/logs/abcd-1"),
        ),
        ("dynamic_topic", toml::Value::Boolean(true)),
    ] {
        assert_eq!(get(1, key), want, "kafka `{key}`");
    }
    assert_eq!(get(1, "rdkafka")["linger.ms"], s("20"));
    let loaded = parse(&path, &|_| None);
    assert!(loaded.is_ok(), "{:?}", loaded.err().map(|e| e.to_string()));
    // Refused keys of the Kinesis plugins name the key and say why.
    for (option, why) in [
        ("profile p", "AWS_PROFILE"),
        ("simple_aggregation true", "aggregation true"),
        ("port 4566", "needs `endpoint`"),
    ] {
        let p = problems(&format!(
            "{INPUT}[OUTPUT]\n    Name kinesis_streams\n    Match *\n    stream s\n    {option}\n"
        ));
        assert_eq!(p.len(), 1, "{option}: {p:?}");
        let key = option.split(' ').next().unwrap();
        assert!(
            p[0].contains(&format!("`{key}`")) && p[0].contains(why),
            "{p:?}"
        );
        assert!(p[0].contains(":8: [OUTPUT] kinesis_streams"), "{p:?}");
    }
}

/// A parsers file next to the config, and a config whose [FILTER] sections are `filters`.
fn filter_config(dir: &Path, parsers: &str, filters: &str) -> PathBuf {
    write(dir, "parsers.conf", parsers);
    write(
        dir,
        "fluent-bit.conf",
        &format!(
            "[SERVICE]\n    Parsers_File parsers.conf\n{INPUT}{filters}[OUTPUT]\n    Name null\n    \
             Match *\n"
        ),
    )
}

const PARSERS: &str = "[PARSER]\n    Name apache\n    Format regex\n    Regex ^(?<host>\\S+) \
                       (?<code>\\d+)$\n    Types code:integer\n    Time_Keep On\n[PARSER]\n    \
                       Name ltsv\n    Format ltsv\n";

#[test]
fn parser_filter_copies_the_named_parsers_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let path = filter_config(
        dir.path(),
        PARSERS,
        "[FILTER]\n    Name parser\n    Match *\n    Key_Name log\n    Parser apache\n    \
         Reserve_Data On\n",
    );
    let t = translate(&path, &|_| None).unwrap_or_else(|e| panic!("{e}"));
    assert!(t.toml.contains("type = \"parser\""), "{}", t.toml);
    assert!(
        t.toml.contains("{ name = \"apache\", regex = \"^(?<host>\\\\S+) (?<code>\\\\d+)$\", types = \"code:integer\", format = \"regex\", time_keep = true }"),
        "{}",
        t.toml
    );
    assert!(parse(&path, &|_| None).is_ok());
}

#[test]
fn parser_filter_problems_name_the_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = filter_config(
        dir.path(),
        PARSERS,
        "[FILTER]\n    Name parser\n    Match *\n    Key_Name log\n    Parser nope\n    \
         Parser ltsv\n",
    );
    let problems: Vec<String> = match parse(&path, &|_| None) {
        Ok(_) => Vec::new(),
        Err(e) => e.problems.iter().map(ToString::to_string).collect(),
    };
    assert_eq!(problems.len(), 2, "{problems:?}");
    assert!(
        problems
            .iter()
            .any(|p| p.contains("fluent-bit.conf:10:") && p.contains("`nope`")),
        "{problems:?}"
    );
    assert!(
        problems
            .iter()
            .any(|p| p.contains("parsers.conf:9:") && p.contains("ltsv")),
        "{problems:?}"
    );
}

#[test]
fn modify_rules_keep_their_interleaved_order_and_nest_maps_its_keys() {
    let dir = tempfile::tempdir().unwrap();
    let path = filter_config(
        dir.path(),
        "",
        "[FILTER]\n    Name modify\n    Match *\n    Condition Key_exists a\n    Set a 1\n    \
         Rename a b\n    Add c \"x y\"\n[FILTER]\n    Name nest\n    Match *\n    Operation \
         nest\n    Wildcard k_*\n    Wildcard j\n    Nest_under inner\n",
    );
    let t = translate(&path, &|_| None).unwrap_or_else(|e| panic!("{e}"));
    assert!(
        t.toml.contains(
            "rules = [\n    \"set a 1\",\n    \"rename a b\",\n    \"add c \\\"x y\\\"\",\n]"
        ),
        "{}",
        t.toml
    );
    assert!(
        t.toml.contains("condition = [\n    \"Key_exists a\",\n]"),
        "{}",
        t.toml
    );
    assert!(
        t.toml.contains("wildcard = [\n    \"k_*\",\n    \"j\",\n]"),
        "{}",
        t.toml
    );
    assert!(parse(&path, &|_| None).is_ok());

    let path = filter_config(
        dir.path(),
        "",
        "[FILTER]\n    Name modify\n    Match *\n    Move_to_start a\n    Condition \
         A_key_matches x\n",
    );
    let problems: Vec<String> = match parse(&path, &|_| None) {
        Ok(_) => Vec::new(),
        Err(e) => e.problems.iter().map(ToString::to_string).collect(),
    };
    assert_eq!(problems.len(), 2, "{problems:?}");
    assert!(
        problems[0].contains(":9:") && problems[0].contains("Move_to_start"),
        "{problems:?}"
    );
    assert!(
        problems[1].contains(":10:") && problems[1].contains("a_key_matches"),
        "{problems:?}"
    );
}

const OUTPUT: &str = "[OUTPUT]\n    Name null\n    Match *\n";

fn forward_source(text: &str) -> crate::source::forward::ForwardConfig {
    let dir = tempfile::tempdir().unwrap();
    let path = write(dir.path(), "fluent-bit.conf", text);
    let config = parse(&path, &|_| None).unwrap_or_else(|e| panic!("{e}"));
    match &config.sources[0].config {
        crate::source::SourceConfig::Forward(f) => f.clone(),
        _ => panic!("forward expected"),
    }
}

#[test]
fn forward_secure_options_reach_the_native_source() {
    let f = forward_source(&format!(
        "[INPUT]\n    Name forward\n    Port 24224\n    tls on\n    tls.verify on\n    \
         tls.crt_file /etc/tls/server.crt\n    tls.key_file /etc/tls/server.key\n    \
         tls.ca_file /etc/tls/ca.crt\n    tls.debug 1\n    Shared_Key s3cret\n    \
         Self_Hostname agg-1\n    Security.Users alice pass word\n    \
         security.users bob p2\n{OUTPUT}"
    ));
    let tls = f.tls.as_ref().expect("tls");
    assert_eq!(tls.crt_file, PathBuf::from("/etc/tls/server.crt"));
    assert_eq!(tls.key_file, PathBuf::from("/etc/tls/server.key"));
    assert_eq!(tls.ca_file, Some(PathBuf::from("/etc/tls/ca.crt")));
    let sec = f.security().expect("handshake configured");
    assert_eq!(sec.shared_key.expose(), "s3cret");
    assert_eq!(sec.self_hostname, "agg-1");
    let users: Vec<(&str, &str)> = sec
        .users
        .iter()
        .map(|(u, p)| (u.as_str(), p.expose()))
        .collect();
    // The password is the rest of the line, as Fluent Bit splits it.
    assert_eq!(users, [("alice", "pass word"), ("bob", "p2")]);
    assert!(sec.require_auth);

    let f = forward_source(&format!(
        "[INPUT]\n    Name forward\n    Empty_Shared_Key on\n    Security.Users u p\n{OUTPUT}"
    ));
    assert!(f.tls.is_none());
    assert_eq!(f.security().expect("handshake").shared_key.expose(), "");
}

#[test]
fn forward_net_io_timeout_is_the_idle_timeout() {
    let f = forward_source(&format!(
        "[INPUT]\n    Name forward\n    net.io_timeout 90\n{OUTPUT}"
    ));
    assert_eq!(f.idle_timeout(), Some(std::time::Duration::from_secs(90)));
    let f = forward_source(&format!("[INPUT]\n    Name forward\n{OUTPUT}"));
    assert_eq!(f.idle_timeout(), None, "off unless set, as in Fluent Bit");
    let p = problems(&format!(
        "[INPUT]\n    Name forward\n    net.io_timeout soon\n    net.backlog 512\n{OUTPUT}"
    ));
    assert_eq!(p.len(), 2, "{p:?}");
    assert!(
        p[0].contains(":3: [INPUT] forward: `net.io_timeout`"),
        "{}",
        p[0]
    );
    assert!(
        p[1].contains(":4: [INPUT] forward: `net.backlog`"),
        "{}",
        p[1]
    );
}

#[test]
fn forward_secure_problems_name_file_line_and_key() {
    let p = problems(&format!(
        "[INPUT]\n    Name forward\n    tls on\n    tls.crt_file /c\n    tls.key_file /k\n    \
         tls.verify off\n    tls.ca_file /ca\n    tls.key_passwd x\n{OUTPUT}"
    ));
    assert_eq!(p.len(), 2, "{p:?}");
    assert!(
        p[0].contains(":6: [INPUT] forward: `tls.verify`: with tls.ca_file"),
        "{}",
        p[0]
    );
    assert!(
        p[1].contains(":8: [INPUT] forward: `tls.key_passwd`: not supported"),
        "{}",
        p[1]
    );
    let p = problems(&format!(
        "[INPUT]\n    Name forward\n    tls on\n    tls.crt_file /c\n{OUTPUT}"
    ));
    assert_eq!(p.len(), 1, "{p:?}");
    assert!(
        p[0].contains(":3: [INPUT] forward: `tls`: `tls on` needs tls.key_file"),
        "{}",
        p[0]
    );

    let p = problems(&format!(
        "[INPUT]\n    Name forward\n    tls.crt_file /c\n    Security.Users lonely\n    \
         tls.verify_client_cert on\n{OUTPUT}"
    ));
    assert!(
        p.iter()
            .any(|m| m.contains(":3: [INPUT] forward: `tls.crt_file`: TLS is off")),
        "{p:?}"
    );
    assert!(
        p.iter().any(|m| m
            .contains(":4: [INPUT] forward: `Security.Users`: expected `<username> <password>`")),
        "{p:?}"
    );

    // Found by the native source: users without a shared key, on the Security.Users line.
    let p = problems(&format!(
        "[INPUT]\n    Name forward\n    Listen 127.0.0.1\n    Security.Users a b\n{OUTPUT}"
    ));
    assert_eq!(p.len(), 1, "{p:?}");
    assert!(
        p[0].contains(":4: [INPUT] forward: `Security.Users`: needs shared_key"),
        "{}",
        p[0]
    );
    // tls on a unix-socket-only input.
    let p = problems(&format!(
        "[INPUT]\n    Name forward\n    unix_path /tmp/f.sock\n    Shared_Key k\n{OUTPUT}"
    ));
    assert!(
        p[0].contains(":4: [INPUT] forward: `Shared_Key`: applies to the TCP listener"),
        "{p:?}"
    );
}

#[test]
fn cloudwatch_logs_and_cloudwatch_reach_the_cloudwatch_logs_sink() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(
        dir.path(),
        "fluent-bit.conf",
        &format!(
            "[SERVICE]\n    Flush 2\n{INPUT}[OUTPUT]\n    Name cloudwatch_logs\n    Match a\n    \
             region us-west-2\n    log_group_name fallback\n    log_group_template \
             /ecs/$kubernetes['namespace_name']\n    log_stream_prefix fb-\n    log_key log\n    \
             log_format json/emf\n    auto_create_group On\n    log_retention_days 30\n    \
             log_group_class INFREQUENT_ACCESS\n    endpoint logs.us-west-2.amazonaws.com\n    \
             sts_endpoint https://sts.us-west-2.amazonaws.com\n    extra_user_agent ecs\n    \
             auto_retry_requests true\n    Retry_Limit 5\n    role_arn \
             arn:aws:iam::123456789012:role/logs\n\
             [OUTPUT]\n    Name cloudwatch\n    Match b\n    region us-east-1\n    \
             log_group_name /aws/ecs/$(ecs_cluster)\n    default_log_group_name ecs\n    \
             log_stream_name $(tag[1])\n    auto_create_group true\n    \
             auto_create_stream true\n    log_retention_days 0\n"
        ),
    );
    let config = parse(&path, &|_| None).unwrap();
    let cwl = |i: usize| match &config.sinks[i].config {
        crate::sink::SinkConfig::CloudWatchLogs(c) => c.clone(),
        other => panic!("cloudwatch_logs expected: {other:?}"),
    };
    let c = cwl(0);
    assert_eq!(config.sinks[0].name, "cloudwatch_logs.0");
    assert_eq!(c.region.as_deref(), Some("us-west-2"));
    assert_eq!(c.log_group_name.as_deref(), Some("fallback"));
    assert_eq!(
        c.log_group_template.as_deref(),
        Some("/ecs/$kubernetes['namespace_name']")
    );
    assert_eq!(c.log_stream_prefix.as_deref(), Some("fb-"));
    assert_eq!(c.log_format.as_deref(), Some("json/emf"));
    assert!(c.auto_create_group);
    assert_eq!(c.log_retention_days, Some(30));
    assert_eq!(
        c.endpoint.as_deref(),
        Some("https://logs.us-west-2.amazonaws.com")
    );
    assert_eq!(c.retry_limit, Some(5));
    assert_eq!(c.flush.get().as_secs(), 2);
    let go = cwl(1);
    assert_eq!(config.sinks[1].name, "cloudwatch.0");
    assert_eq!(
        go.log_group_template.as_deref(),
        Some("/aws/ecs/$(ecs_cluster)")
    );
    assert_eq!(go.log_group_name.as_deref(), Some("ecs"));
    assert_eq!(go.log_stream_template.as_deref(), Some("$(tag[1])"));
    assert_eq!(
        go.log_stream_name.as_deref(),
        Some("/fluentbit-default"),
        "the Go plugin's own fallback"
    );
    assert_eq!(go.log_retention_days, None, "0: leave the retention alone");

    let p = problems(&format!(
        "{INPUT}[OUTPUT]\n    Name cloudwatch_logs\n    Match *\n    log_group_name g\n    \
         log_stream_prefix p\n    metric_namespace ns\n    profile dev\n\
         [OUTPUT]\n    Name cloudwatch\n    Match *\n    log_group_name g\n    \
         log_stream_prefix p\n    auto_create_stream false\n    new_log_group_tags a=b\n    \
         default_log_group_name d\n"
    ));
    assert_eq!(p.len(), 5, "{p:?}");
    assert!(
        p[0].contains(":9: [OUTPUT] cloudwatch_logs: `metric_namespace`:"),
        "{p:?}"
    );
    assert!(
        p[1].contains(":10: [OUTPUT] cloudwatch_logs: `profile`:"),
        "{p:?}"
    );
    assert!(
        p[2].contains(":16: [OUTPUT] cloudwatch: `auto_create_stream`:"),
        "{p:?}"
    );
    assert!(
        p[3].contains(":17: [OUTPUT] cloudwatch: `new_log_group_tags`:"),
        "{p:?}"
    );
    assert!(
        p[4].contains(":18: [OUTPUT] cloudwatch: `default_log_group_name`:"),
        "{p:?}"
    );
    // Without auto_create_group, retention and class are ignored, as Fluent Bit does.
    let dir2 = tempfile::tempdir().unwrap();
    let path = write(
        dir2.path(),
        "fluent-bit.conf",
        &format!(
            "{INPUT}[OUTPUT]\n    Name cloudwatch_logs\n    Match *\n    log_group_name g\n    \
             log_stream_prefix p\n    log_retention_days 7\n    log_group_class STANDARD\n"
        ),
    );
    let config = parse(&path, &|_| None).unwrap();
    let crate::sink::SinkConfig::CloudWatchLogs(c) = &config.sinks[0].config else {
        panic!("cloudwatch_logs expected");
    };
    assert_eq!(
        (c.log_retention_days, c.log_group_class.as_deref()),
        (None, None)
    );
    // A problem of the native sink's own checks names the classic line and key.
    let p = problems(&format!(
        "{INPUT}[OUTPUT]\n    Name cloudwatch_logs\n    Match *\n    log_group_name g\n    \
         log_stream_prefix p\n    log_retention_days 8\n    auto_create_group true\n"
    ));
    assert_eq!(p.len(), 1, "{p:?}");
    assert!(
        p[0].contains(":9: [OUTPUT] cloudwatch_logs: `log_retention_days`:"),
        "{p:?}"
    );
}

#[test]
fn kinesis_firehose_and_firehose_reach_the_firehose_sink() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(
        dir.path(),
        "fluent-bit.conf",
        &format!(
            "{INPUT}[OUTPUT]\n    Name kinesis_firehose\n    Match a\n    region us-east-1\n    \
             delivery_stream app\n    time_key ts\n    time_key_format %Y-%m-%dT%H:%M:%S.%L\n    \
             log_key log\n    compression gzip\n    simple_aggregation On\n    endpoint \
             firehose.us-east-1.amazonaws.com\n    role_arn arn:aws:iam::123456789012:role/f\n    \
             sts_endpoint sts.us-east-1.amazonaws.com\n    auto_retry_requests true\n\
             [OUTPUT]\n    Name firehose\n    Match b\n    region us-east-1\n    \
             delivery_stream app\n    data_keys log,seq\n    time_key_format %H:%M:%S.%L\n    \
             time_key t\n    replace_dots _\n    experimental_concurrency 3\n    Retry_Limit 2\n"
        ),
    );
    let config = parse(&path, &|_| None).unwrap();
    let fh = |i: usize| match &config.sinks[i].config {
        crate::sink::SinkConfig::KinesisFirehose(c) => c.clone(),
        other => panic!("kinesis_firehose expected: {other:?}"),
    };
    let c = fh(0);
    assert_eq!(config.sinks[0].name, "kinesis_firehose.0");
    assert_eq!(c.delivery_stream, "app");
    assert_eq!(c.time_key_format.as_deref(), Some("%Y-%m-%dT%H:%M:%S.%9N"));
    assert_eq!(c.compression.as_deref(), Some("gzip"));
    assert!(c.simple_aggregation && c.append_newline);
    assert_eq!(
        c.endpoint.as_deref(),
        Some("https://firehose.us-east-1.amazonaws.com")
    );
    let go = fh(1);
    assert_eq!(config.sinks[1].name, "firehose.0");
    assert!(
        !go.append_newline,
        "the Go plugin sends records as they are"
    );
    assert_eq!(go.time_key_format.as_deref(), Some("%H:%M:%S.%L"));
    assert_eq!(go.data_keys.as_deref(), Some("log,seq"));
    assert_eq!(go.max_in_flight, 3);
    assert_eq!(go.retry_limit, Some(2));

    let p = problems(&format!(
        "{INPUT}[OUTPUT]\n    Name kinesis_firehose\n    Match *\n    delivery_stream d\n    \
         compression arrow\n    profile p\n"
    ));
    assert_eq!(p.len(), 2, "{p:?}");
    assert!(
        p[0].contains(":8: [OUTPUT] kinesis_firehose: `compression`: `arrow` is not supported"),
        "{p:?}"
    );
    assert!(
        p[1].contains(":9: [OUTPUT] kinesis_firehose: `profile`:"),
        "{p:?}"
    );
}

#[test]
fn kafka_input_maps_to_the_kafka_source() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(
        dir.path(),
        "fluent-bit.conf",
        "[INPUT]\n    Name kafka\n    Brokers b-1.logs.abc.c2.kafka.eu-west-1.amazonaws.com:9098\n\
         \x20   Topics app,audit\n    Group_Id shippers\n    Format json\n    Poll_Ms 200\n\
         \x20   Buffer_Max_Size 2M\n    aws_msk_iam true\n    rdkafka.fetch.wait.max.ms 100\n\
         \x20   enable_auto_commit false\n\
         [INPUT]\n    Name kafka\n    Tag k\n    Brokers 127.0.0.1:9092\n    Topics raw\n\
         [OUTPUT]\n    Name null\n    Match *\n",
    );
    let config = parse(&path, &|_| None).unwrap();
    let kafka = |i: usize| match &config.sources[i].config {
        crate::source::SourceConfig::Kafka(c) => c.validate().unwrap(),
        _ => panic!("kafka expected"),
    };
    let json = kafka(0);
    assert_eq!(json.topics, ["app", "audit"]);
    assert_eq!(json.tag, "kafka.0");
    assert_eq!(json.property("group.id"), Some("shippers"));
    assert_eq!(json.property("fetch.wait.max.ms"), Some("100"));
    assert_eq!(json.format, crate::source::kafka::config::ValueFormat::Json);
    assert_eq!(json.poll.as_millis(), 200);
    assert_eq!(json.buffer_max_size, 2_000_000);
    assert_eq!(json.msk_iam.unwrap().target.region, "eu-west-1");
    let raw = kafka(1);
    assert_eq!(raw.tag, "k");
    assert_eq!(raw.log_key, "payload", "Fluent Bit's name for the value");
    assert_eq!(raw.format, crate::source::kafka::config::ValueFormat::Raw);
    let p = problems(
        "[INPUT]\n    Name kafka\n    Brokers a:1\n    Topics t\n    enable_auto_commit on\n\
         [OUTPUT]\n    Name null\n    Match *\n",
    );
    assert_eq!(p.len(), 1, "{p:?}");
    assert!(p[0].contains("enable_auto_commit"), "{p:?}");
}

#[test]
fn kafka_avro_schema_str_and_schema_id_map_across() {
    let dir = tempfile::tempdir().unwrap();
    let schema = r#"{"type":"record","name":"Log","fields":[{"name":"log","type":"string"}]}"#;
    let path = write(
        dir.path(),
        "fluent-bit.conf",
        &format!(
            "{INPUT}[OUTPUT]\n    Name kafka\n    Match *\n    Brokers 127.0.0.1:9092\n    Topics logs\n\
             \x20   Format avro\n    schema_str {schema}\n    schema_id 42\n"
        ),
    );
    let config = parse(&path, &|_| None).unwrap();
    let crate::sink::SinkConfig::Kafka(k) = &config.sinks[0].config else {
        panic!("kafka expected");
    };
    let avro = k.validate().unwrap().avro.expect("avro settings");
    assert_eq!(avro.schema.as_deref(), Some(schema));
    assert_eq!(avro.schema_id, Some(42));
    assert!(avro.registry.is_none(), "schema and id: no registry needed");
    let p = problems(&format!(
        "{INPUT}[OUTPUT]\n    Name kafka\n    Match *\n    Brokers a:1\n    Format avro\n    schema_id abc\n"
    ));
    assert!(p.iter().any(|m| m.contains("schema_id")), "{p:?}");
}

#[test]
fn tail_input_keeps_its_read_sizes() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(
        dir.path(),
        "fluent-bit.conf",
        "[INPUT]\n    Name tail\n    Path /var/log/containers/*.log\n    Buffer_Chunk_Size 32k\n\
         \x20   Buffer_Max_Size 256k\n\
         [INPUT]\n    Name tail\n    Path /var/log/other/*.log\n\
         [OUTPUT]\n    Name null\n    Match *\n",
    );
    let config = parse(&path, &|_| None).unwrap();
    let tail = |i: usize| match &config.sources[i].config {
        crate::source::SourceConfig::Tail(c) => c.clone(),
        _ => panic!("tail expected"),
    };
    assert_eq!(tail(0).buffer_chunk_size.bytes(), 32_000);
    assert_eq!(tail(0).buffer_max_size.bytes(), 256_000);
    let defaults = crate::source::tail::TailConfig::default();
    assert_eq!(
        tail(1).buffer_chunk_size.bytes(),
        defaults.buffer_chunk_size.bytes()
    );
    assert_eq!(
        tail(1).buffer_max_size.bytes(),
        defaults.buffer_max_size.bytes()
    );
}
