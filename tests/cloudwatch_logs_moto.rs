//! The CloudWatch Logs sink end to end against moto: the real binary, records sent with
//! `logferry loadgen` (forward protocol) or fed on stdin, and the log groups read back with
//! boto3 (GetLogEvents from the head, every page; FilterLogEvents; DescribeLogGroups).

use support::kinesis as kin;
mod support;

use std::process::{Command, Stdio};
use std::time::Duration;

use kin::{aws_env, Logferry};
use logferry_test_kit::cloudwatch_logs as cwl;
use logferry_test_kit::fault_proxy::{self, FaultProxy};
use logferry_test_kit::logferry::logferry_bin;
use logferry_test_kit::metrics::first_containing;
use logferry_test_kit::stand_ins::Moto;
use logferry_test_kit::wait::wait_for_exit;

/// `records_out_total` of the sink (its default name).
const OUT: &str = "logferry_records_out_total{component=\"cloudwatch_logs.0\"";

fn sink(moto: &Moto, group: &str, extra: &str) -> String {
    format!(
        "endpoint = \"{}\"\nlog_group_name = \"{group}\"\nflush = \"200ms\"\n{extra}",
        moto.endpoint()
    )
}

fn wait_delivered(lf: &Logferry, n: u64) {
    lf.wait_for(
        &format!("{n} events delivered"),
        Duration::from_secs(90),
        |lf| lf.metric(OUT) >= n as f64,
    );
}

fn stop_clean(lf: Logferry) -> String {
    let (code, log) = lf.stop();
    assert_eq!(code, 0, "{}", kin::tail(&log, 40));
    log
}

/// The `seq` of each event, in the order read back.
fn seqs(events: &[cwl::LogEventOut]) -> Vec<u64> {
    events.iter().map(cwl::LogEventOut::seq).collect()
}

#[test]
fn events_arrive_in_order_exactly_once_in_a_group_and_stream_created_once() {
    let moto = Moto::start();
    let group = cwl::unique_group("order");
    let lf = Logferry::start_typed(
        "cloudwatch_logs",
        &sink(
            &moto,
            &group,
            "log_stream_prefix = \"from-\"\nauto_create_group = true\nlog_retention_days = 7\n\
             log_group_class = \"STANDARD\"\nextra_user_agent = \"firelens-test\"",
        ),
        &[],
    );
    lf.loadgen(0, 3000, 200);
    wait_delivered(&lf, 3000);
    // More after the stream exists: no second creation.
    lf.loadgen(3000, 500, 200);
    wait_delivered(&lf, 3500);
    let log = stop_clean(lf);

    let events = cwl::events(&moto.endpoint(), &group, "from-loadgen");
    assert_eq!(
        seqs(&events),
        (0..3500).collect::<Vec<u64>>(),
        "every event once, in order"
    );
    assert!(
        events.windows(2).all(|w| w[0].timestamp <= w[1].timestamp),
        "timestamps are the records' times, in order"
    );
    let first = events[0].json();
    assert!(
        first["log"].is_string(),
        "the whole record as JSON: {first}"
    );
    let info = cwl::group(&moto.endpoint(), &group).expect("the group was created");
    assert_eq!(info["retentionInDays"], 7, "{info}");
    assert_eq!(
        log.matches("created the log group").count(),
        1,
        "the group is created once"
    );
    assert_eq!(
        log.matches("log stream ready").count(),
        1,
        "the stream is made sure of once:\n{}",
        kin::tail(&log, 30)
    );
    assert_eq!(cwl::streams(&moto.endpoint(), &group), vec!["from-loadgen"]);
}

/// Every PutLogEvents call the sink made, as its debug log reports them: (events, bytes).
fn calls(log: &str) -> Vec<(usize, usize)> {
    let field = |line: &str, name: &str| -> usize {
        let at = line.find(&format!("{name}=")).expect(name) + name.len() + 1;
        line[at..]
            .split(|c: char| !c.is_ascii_digit())
            .next()
            .and_then(|n| n.parse().ok())
            .expect("a number")
    };
    log.lines()
        .filter(|l| l.contains("PutLogEvents accepted"))
        .map(|l| (field(l, "events"), field(l, "bytes")))
        .collect()
}

#[test]
fn calls_stay_within_10000_events_and_1_mib_counting_26_bytes_per_event() {
    let moto = Moto::start();
    let group = cwl::unique_group("limits");
    cwl::create_group(&moto.endpoint(), &group);
    // Small events fill calls by count, large ones by bytes; flush is long enough for the
    // sink to hold more than a call's worth.
    let lf = Logferry::start_typed(
        "cloudwatch_logs",
        &format!(
            "endpoint = \"{}\"\nlog_group_name = \"{group}\"\nlog_stream_name = \"s\"\n\
             flush = \"3s\"",
            moto.endpoint()
        ),
        &[],
    );
    lf.loadgen_no_ack(0, 25_000, 20);
    wait_delivered(&lf, 25_000);
    lf.loadgen_no_ack(25_000, 3_000, 1_000);
    wait_delivered(&lf, 28_000);
    let log = stop_clean(lf);
    let calls = calls(&log);
    assert!(
        !calls.is_empty(),
        "calls are logged:\n{}",
        kin::tail(&log, 20)
    );
    assert!(
        calls.iter().all(|&(n, b)| n <= 10_000 && b <= 1_048_576),
        "{calls:?}"
    );
    assert!(
        calls.iter().any(|&(n, _)| n == 10_000),
        "small events fill calls to 10,000: {calls:?}"
    );
    assert!(
        calls.iter().any(|&(n, b)| b > 1_000_000 && n < 10_000),
        "large events fill calls to ~1 MiB: {calls:?}"
    );
    assert_eq!(calls.iter().map(|c| c.0).sum::<usize>(), 28_000);
    let events = cwl::events(&moto.endpoint(), &group, "s");
    let mut got = seqs(&events);
    got.sort_unstable();
    assert_eq!(got, (0..28_000).collect::<Vec<u64>>(), "every event once");
}

/// Runs logferry with a stdin source (JSON lines, tag `app.web`) and `sink` (with its
/// header) until it drains; returns its log.
fn run_stdin(extra_config: &str, lines: &[&str]) -> String {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("logferry.toml");
    std::fs::write(
        &config,
        format!(
            "[service]\nhttp_listen = \"off\"\ngrace_period = \"20s\"\n\n\
             [[sources]]\ntype = \"stdin\"\nformat = \"json\"\ntag = \"app.web\"\n\n{extra_config}"
        ),
    )
    .unwrap();
    let mut command = Command::new(logferry_bin());
    command.arg("run").arg("--config").arg(&config);
    aws_env(&mut command);
    command.env("RUST_LOG", "logferry=debug,info");
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start logferry");
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().unwrap();
        for line in lines {
            writeln!(stdin, "{line}").unwrap();
        }
    }
    wait_for_exit(&mut child, Duration::from_secs(60), || {
        "logferry fed on stdin did not drain and exit".to_string()
    });
    let output = child.wait_with_output().expect("output");
    let log = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(output.status.success(), "{}", kin::tail(&log, 40));
    log
}

#[test]
fn templates_route_by_tag_and_record_fields_and_fall_back_to_the_names() {
    let moto = Moto::start();
    let base = cwl::unique_group("tpl");
    let lines = [
        r#"{"seq": 0, "team": "pay", "kubernetes": {"pod_name": "web-1"}}"#,
        r#"{"seq": 1, "team": "pay", "kubernetes": {"pod_name": "web-2"}}"#,
        r#"{"seq": 2, "team": "pay"}"#,
        r#"{"seq": 3, "kubernetes": {"pod_name": "web-1"}}"#,
        r#"{"seq": 4, "team": "pay", "kubernetes": {"pod_name": "web-1"}}"#,
    ];
    run_stdin(
        &format!(
            "[[sinks]]\ntype = \"cloudwatch_logs\"\nmatch = \"*\"\nendpoint = \"{}\"\n\
             auto_create_group = true\n\
             log_group_template = \"{base}-$(team)\"\nlog_group_name = \"{base}-none\"\n\
             log_stream_template = \"$(tag[1]).$(kubernetes['pod_name'])\"\n\
             log_stream_name = \"no-pod\"\nlog_key = \"seq\"\n",
            moto.endpoint()
        ),
        &lines,
    );
    let pay = cwl::filter(&moto.endpoint(), &format!("{base}-pay"));
    let placed: Vec<(String, String)> = pay
        .iter()
        .map(|e| (e.log_stream_name.clone().unwrap(), e.message.clone()))
        .collect();
    let mut placed = placed;
    placed.sort();
    assert_eq!(
        placed,
        vec![
            ("no-pod".to_string(), "2".to_string()),
            ("web.web-1".to_string(), "0".to_string()),
            ("web.web-1".to_string(), "4".to_string()),
            ("web.web-2".to_string(), "1".to_string()),
        ],
        "log_key sends the value alone; streams from the tag and the pod name"
    );
    let none = cwl::events(&moto.endpoint(), &format!("{base}-none"), "web.web-1");
    assert_eq!(
        none.iter().map(|e| e.message.as_str()).collect::<Vec<_>>(),
        vec!["3"],
        "no team: the log_group_name fallback"
    );
}

#[test]
fn too_old_and_too_new_events_are_dead_lettered_with_the_reason_and_the_rest_delivered() {
    let moto = Moto::start();
    let group = cwl::unique_group("age");
    cwl::create_group(&moto.endpoint(), &group);
    let dead = tempfile::tempdir().unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let lines = [
        format!(r#"{{"seq": 0, "t": "{}"}}"#, now - 60),
        format!(r#"{{"seq": 1, "t": "{}"}}"#, now - 20 * 86_400),
        format!(r#"{{"seq": 2, "t": "{}"}}"#, now + 3 * 3600),
        format!(r#"{{"seq": 3, "t": "{}"}}"#, now - 13 * 86_400),
        format!(r#"{{"seq": 4, "t": "{}"}}"#, now + 3600),
    ];
    let lines: Vec<&str> = lines.iter().map(String::as_str).collect();
    let log = run_stdin(
        &format!(
            "[[transforms]]\ntype = \"parser\"\nmatch = \"*\"\nkey_name = \"t\"\n\
             reserve_data = true\n\n[[transforms.parsers]]\nname = \"epoch\"\nformat = \"regex\"\n\
             regex = '^(?<t>\\d+)$'\ntime_key = \"t\"\ntime_format = \"%s\"\n\n\
             [[sinks]]\ntype = \"cloudwatch_logs\"\nmatch = \"*\"\nendpoint = \"{}\"\n\
             log_group_name = \"{group}\"\nlog_stream_name = \"s\"\n\
             dead_letter_path = \"{}\"\n",
            moto.endpoint(),
            dead.path().display()
        ),
        &lines,
    );
    let events = cwl::events(&moto.endpoint(), &group, "s");
    assert_eq!(
        seqs(&events),
        vec![3, 0, 4],
        "the others, sorted by time:\n{}",
        kin::tail(&log, 20)
    );
    let letters: String = std::fs::read_dir(dead.path())
        .unwrap()
        .map(|f| std::fs::read_to_string(f.unwrap().path()).unwrap())
        .collect();
    let reasons: Vec<(u64, String)> = letters
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            let record = &v["record"];
            (
                record["seq"].as_u64().unwrap_or(u64::MAX),
                v["reason"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(
        reasons,
        vec![(1, "too_old".to_string()), (2, "too_new".to_string())],
        "{letters}"
    );
}

#[test]
fn a_missing_group_is_reported_on_health_and_delivery_resumes_once_it_exists() {
    let moto = Moto::start();
    let group = cwl::unique_group("missing");
    let lf = Logferry::start_typed(
        "cloudwatch_logs",
        &sink(&moto, &group, "log_stream_name = \"s\""),
        &[],
    );
    lf.loadgen_no_ack(0, 100, 100);
    lf.wait_for(
        "/health 503 naming the group",
        Duration::from_secs(30),
        |lf| {
            let (code, body) = lf.health();
            code == 503 && body.contains(&group) && body.contains("does not exist")
        },
    );
    assert_eq!(lf.metric(OUT), 0.0);
    cwl::create_group(&moto.endpoint(), &group);
    wait_delivered(&lf, 100);
    lf.wait_for("/health 200 again", Duration::from_secs(10), |lf| {
        lf.health().0 == 200
    });
    stop_clean(lf);
    let events = cwl::events(&moto.endpoint(), &group, "s");
    assert_eq!(seqs(&events), (0..100).collect::<Vec<u64>>());
}

/// moto never throttles: a proxy in front of it answers the first four PutLogEvents calls with
/// ThrottlingException. The calls are retried after backoffs, counted as throttled retries, and
/// every event still arrives once, in order.
#[test]
fn throttled_calls_are_retried_with_backoff_and_every_event_arrives_once_in_order() {
    let moto = Moto::start();
    let group = cwl::unique_group("throttled");
    cwl::create_group(&moto.endpoint(), &group);
    let proxy = FaultProxy::start(
        moto.addr(),
        fault_proxy::Faults {
            refuse_first: [(
                "PutLogEvents".to_string(),
                (4, "ThrottlingException".to_string(), 400),
            )]
            .into(),
            ..Default::default()
        },
    );
    let lf = Logferry::start_typed(
        "cloudwatch_logs",
        &format!(
            "endpoint = \"{}\"\nlog_group_name = \"{group}\"\nlog_stream_name = \"s\"\n\
             flush = \"200ms\"",
            proxy.endpoint()
        ),
        &[],
    );
    lf.loadgen(0, 500, 100);
    wait_delivered(&lf, 500);
    let throttled = first_containing(
        &lf.metrics(),
        &[
            "logferry_retries_total",
            "cloudwatch_logs.0",
            "reason=\"throttled\"",
        ],
    )
    .unwrap_or(0.0);
    assert!(throttled >= 4.0, "throttled retries counted: {throttled}");
    let log = stop_clean(lf);
    assert_eq!(
        proxy.seen(|s| s.refused_calls.get("PutLogEvents").copied()),
        Some(4),
        "{}",
        kin::tail(&log, 30)
    );
    assert!(
        log.contains("PutLogEvents failed; retrying the call") && log.contains("retry_in"),
        "the retries are logged with their backoff:\n{}",
        kin::tail(&log, 30)
    );
    let events = cwl::events(&moto.endpoint(), &group, "s");
    assert_eq!(
        seqs(&events),
        (0..500).collect::<Vec<u64>>(),
        "once each, in order"
    );
}

/// `log_format = "json/emf"` sends the `x-amzn-logs-format: json/emf` header CloudWatch reads
/// Embedded Metric Format from, and `extra_user_agent` goes into the User-Agent (seen by a
/// proxy in front of moto), on PutLogEvents only.
#[test]
fn emf_header_and_extra_user_agent_are_sent() {
    let moto = Moto::start();
    let group = cwl::unique_group("emf");
    cwl::create_group(&moto.endpoint(), &group);
    let proxy = FaultProxy::start(moto.addr(), fault_proxy::Faults::default());
    let lf = Logferry::start_typed(
        "cloudwatch_logs",
        &format!(
            "endpoint = \"{}\"\nlog_group_name = \"{group}\"\nlog_stream_name = \"s\"\n\
             log_format = \"json/emf\"\nextra_user_agent = \"firelens-test\"\nflush = \"200ms\"",
            proxy.endpoint()
        ),
        &[],
    );
    lf.loadgen(0, 10, 100);
    wait_delivered(&lf, 10);
    stop_clean(lf);
    let headers = proxy
        .seen(|s| s.last_headers.get("PutLogEvents").cloned())
        .expect("a PutLogEvents call");
    let header = |name: &str| {
        headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.clone())
            .collect::<Vec<_>>()
            .join(" ")
    };
    assert_eq!(header("x-amzn-logs-format"), "json/emf", "{headers:?}");
    assert!(
        format!("{} {}", header("user-agent"), header("x-amz-user-agent"))
            .contains("firelens-test"),
        "{headers:?}"
    );
    let create = proxy
        .seen(|s| s.last_headers.get("CreateLogStream").cloned())
        .expect("CreateLogStream");
    assert!(
        !create
            .iter()
            .any(|(n, _)| n.eq_ignore_ascii_case("x-amzn-logs-format")),
        "only PutLogEvents carries the format"
    );
    assert_eq!(cwl::events(&moto.endpoint(), &group, "s").len(), 10);
}
