//! The forward source's connection limits against the real binary: `max_connections` (refused
//! connections are closed at once and counted, open ones keep working, TCP and the unix socket
//! share the limit), `idle_timeout` (an idle connection is closed and counted, a client waiting
//! for an ack is not idle) and `message_timeout` (a client that stops in the middle of a message
//! is closed, and the complete messages before it are delivered and acknowledged).

mod support;

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use logferry_test_kit::logferry::{read_jsonl, stalled_fifo, wait_for_lines, Logferry};

/// Long enough for anything these tests wait for; the timeouts under test are 1-2 s.
const WAIT: Duration = Duration::from_secs(20);

fn config(extra: &str, path: &str) -> String {
    format!(
        r#"
[service]
http_listen = "{{http}}"
grace_period = "5s"

[[sources]]
type = "forward"
listen = "{{forward}}"
unix_path = "{{dir}}/fluent.sock"
{extra}

[[sinks]]
type = "file"
match = "*"
path = "{path}"
"#
    )
}

/// `[tag, [[time, {"msg": m}], ...], {"chunk": c}]` (Forward mode), with an ack asked for when
/// `chunk` is given.
fn message(tag: &str, msgs: &[&str], chunk: Option<&str>) -> Vec<u8> {
    use rmp::encode::*;
    let mut out = Vec::new();
    write_array_len(&mut out, if chunk.is_some() { 3 } else { 2 }).unwrap();
    write_str(&mut out, tag).unwrap();
    write_array_len(&mut out, msgs.len() as u32).unwrap();
    for m in msgs {
        write_array_len(&mut out, 2).unwrap();
        write_uint(&mut out, 1_715_679_001).unwrap();
        write_map_len(&mut out, 1).unwrap();
        write_str(&mut out, "msg").unwrap();
        write_str(&mut out, m).unwrap();
    }
    if let Some(chunk) = chunk {
        write_map_len(&mut out, 1).unwrap();
        write_str(&mut out, "chunk").unwrap();
        write_str(&mut out, chunk).unwrap();
    }
    out
}

fn expected_ack(chunk: &str) -> Vec<u8> {
    let mut out = Vec::new();
    rmp::encode::write_map_len(&mut out, 1).unwrap();
    rmp::encode::write_str(&mut out, "ack").unwrap();
    rmp::encode::write_str(&mut out, chunk).unwrap();
    out
}

/// Sends one message asking for an ack and reads the ack.
fn send_acked<S: Read + Write>(stream: &mut S, msg: &str, chunk: &str) {
    stream
        .write_all(&message("limits", &[msg], Some(chunk)))
        .expect("send");
    let want = expected_ack(chunk);
    let mut got = vec![0u8; want.len()];
    stream.read_exact(&mut got).expect("an ack");
    assert_eq!(got, want, "ack of {chunk}");
}

/// True once the peer closed the connection (EOF or reset) within `timeout`; false if it is
/// still open then. Panics if the server sends data instead.
fn closed_within<S: Read>(stream: &mut S, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    let mut buf = [0u8; 64];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return true,
            Ok(n) => panic!("unexpected {n} bytes from the server"),
            Err(e) if e.kind() == ErrorKind::ConnectionReset => return true,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                if Instant::now() >= deadline {
                    return false;
                }
            }
            Err(e) => panic!("read: {e}"),
        }
    }
}

fn tcp(lf: &Logferry) -> TcpStream {
    let s = TcpStream::connect(lf.forward).expect("connect");
    s.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    s
}

fn tcp_blocking(lf: &Logferry) -> TcpStream {
    let s = TcpStream::connect(lf.forward).expect("connect");
    s.set_read_timeout(Some(WAIT)).unwrap();
    s
}

fn metric(lf: &Logferry, name: &str, reason: Option<&str>) -> f64 {
    let labels = match reason {
        Some(r) => format!("{{component=\"forward.0\",kind=\"source\",reason=\"{r}\"}}"),
        None => "{component=\"forward.0\",kind=\"source\"}".to_string(),
    };
    lf.metric(&format!("logferry_{name}{labels}"))
        .unwrap_or_else(|| panic!("no metric {name}{labels}:\n{}", lf.metrics()))
}

fn wait_metric(lf: &Logferry, name: &str, reason: Option<&str>, want: f64) {
    let deadline = Instant::now() + WAIT;
    while metric(lf, name, reason) != want {
        assert!(
            Instant::now() < deadline,
            "{name} {reason:?} stayed at {}, want {want}",
            metric(lf, name, reason)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn messages(lf: &Logferry, file: &str) -> Vec<String> {
    read_jsonl(&lf.path(file))
        .iter()
        .map(|r| r["msg"].as_str().unwrap_or_default().to_string())
        .collect()
}

#[test]
fn connections_beyond_the_limit_are_refused_and_counted_while_open_ones_keep_working() {
    let mut lf = Logferry::start(&config("max_connections = 2", "{dir}/out.jsonl"));
    assert_eq!(metric(&lf, "connections_open", None), 0.0);
    assert_eq!(
        metric(&lf, "connections_refused_total", Some("max_connections")),
        0.0
    );
    let mut a = tcp_blocking(&lf);
    send_acked(&mut a, "a1", "a1");
    let mut b = UnixStream::connect(lf.path("fluent.sock")).expect("connect unix");
    b.set_read_timeout(Some(WAIT)).unwrap();
    send_acked(&mut b, "b1", "b1");
    wait_metric(&lf, "connections_open", None, 2.0);

    // Over the limit, by TCP and by the unix socket (they share it): closed at once.
    let mut c = tcp(&lf);
    // What it sends is not taken.
    let _ = c.write_all(&message("limits", &["refused-tcp"], Some("c1")));
    assert!(
        closed_within(&mut c, WAIT),
        "a third connection must be closed"
    );
    let mut d = UnixStream::connect(lf.path("fluent.sock")).expect("connect unix");
    d.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let _ = d.write_all(&message("limits", &["refused-unix"], Some("d1")));
    assert!(
        closed_within(&mut d, WAIT),
        "a third connection must be closed"
    );
    wait_metric(
        &lf,
        "connections_refused_total",
        Some("max_connections"),
        2.0,
    );
    assert_eq!(metric(&lf, "connections_open", None), 2.0);

    // The open connections keep working.
    send_acked(&mut a, "a2", "a2");
    send_acked(&mut b, "b2", "b2");

    // A slot freed is a slot for the next client.
    drop(a);
    wait_metric(&lf, "connections_open", None, 1.0);
    let mut e = tcp_blocking(&lf);
    send_acked(&mut e, "e1", "e1");
    drop((b, e));
    wait_metric(&lf, "connections_open", None, 0.0);

    let stderr = lf.stderr();
    assert!(
        stderr.contains("max_connections connections are open"),
        "{stderr}"
    );
    assert!(lf.terminate().success(), "{}", lf.stderr());
    let mut got = messages(&lf, "out.jsonl");
    got.sort();
    assert_eq!(got, ["a1", "a2", "b1", "b2", "e1"]);
}

#[test]
fn an_idle_connection_is_closed_after_idle_timeout_and_counted() {
    let mut lf = Logferry::start(&config("idle_timeout = \"1s\"", "{dir}/out.jsonl"));
    let mut tcp_client = tcp(&lf);
    tcp_client
        .write_all(&message("limits", &["before idle"], None))
        .unwrap();
    let mut unix_client = UnixStream::connect(lf.path("fluent.sock")).expect("connect unix");
    unix_client
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    wait_for_lines(&lf.path("out.jsonl"), 1, WAIT);
    assert!(closed_within(&mut tcp_client, WAIT), "idle TCP connection");
    assert!(
        closed_within(&mut unix_client, WAIT),
        "idle unix connection"
    );
    wait_metric(&lf, "connections_timed_out_total", Some("idle"), 2.0);
    wait_metric(&lf, "connections_open", None, 0.0);
    assert_eq!(
        metric(
            &lf,
            "connections_timed_out_total",
            Some("incomplete_message")
        ),
        0.0
    );
    // Closing an idle connection is routine: logged at debug level only.
    assert!(
        !lf.stderr().contains("idle forward connection"),
        "{}",
        lf.stderr()
    );
    assert!(lf.terminate().success(), "{}", lf.stderr());
    assert_eq!(messages(&lf, "out.jsonl"), ["before idle"]);
}

#[test]
fn a_client_waiting_for_an_ack_is_not_idle() {
    let work = tempfile::tempdir().unwrap();
    let pipe = work.path().join("out.pipe");
    let mut reader = stalled_fifo(&pipe);
    let mut lf = Logferry::start(&config(
        "idle_timeout = \"1s\"",
        &pipe.display().to_string(),
    ));
    let mut client = tcp_blocking(&lf);
    // More than the pipe holds: the sink stalls and the ack waits for the test to read.
    let big = "x".repeat(1000);
    let msgs: Vec<&str> = std::iter::repeat_n(big.as_str(), 200).collect();
    client
        .write_all(&message("limits", &msgs, Some("big")))
        .unwrap();
    // Well past idle_timeout with nothing sent: the connection is kept while the ack is owed.
    std::thread::sleep(Duration::from_secs(4));
    assert_eq!(
        metric(&lf, "connections_timed_out_total", Some("idle")),
        0.0
    );
    assert_eq!(metric(&lf, "connections_open", None), 1.0);
    // Unstall the sink: the ack arrives on the same connection.
    let drain = std::thread::spawn(move || {
        let mut sink = Vec::new();
        let mut buf = [0u8; 65536];
        while sink.len() < 200 * 1000 {
            match reader.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => sink.extend_from_slice(&buf[..n]),
            }
        }
        sink
    });
    let want = expected_ack("big");
    let mut got = vec![0u8; want.len()];
    client.read_exact(&mut got).expect("the ack, late");
    assert_eq!(got, want);
    let written = drain.join().unwrap();
    assert_eq!(
        written.iter().filter(|&&c| c == b'\n').count(),
        200,
        "every record reached the sink"
    );
    // Now it is idle, and closed.
    client
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    assert!(closed_within(&mut client, WAIT));
    wait_metric(&lf, "connections_timed_out_total", Some("idle"), 1.0);
    assert!(lf.terminate().success(), "{}", lf.stderr());
}

#[test]
fn a_client_stalled_in_the_middle_of_a_message_is_closed_and_complete_messages_are_kept() {
    let mut lf = Logferry::start(&config("message_timeout = \"1s\"", "{dir}/out.jsonl"));
    let mut client = tcp_blocking(&lf);
    send_acked(&mut client, "acked", "c1");
    // A complete message without ack, then the first half of the next one, in one write.
    let mut bytes = message("limits", &["unacked"], None);
    let partial = message("limits", &["never complete"], Some("c3"));
    bytes.extend_from_slice(&partial[..partial.len() / 2]);
    client.write_all(&bytes).unwrap();
    client
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    assert!(
        closed_within(&mut client, WAIT),
        "a client stalled mid-message must be disconnected"
    );
    wait_metric(
        &lf,
        "connections_timed_out_total",
        Some("incomplete_message"),
        1.0,
    );
    assert_eq!(
        metric(&lf, "connections_timed_out_total", Some("idle")),
        0.0
    );
    // idle_timeout is off by default: a quiet connection between messages stays open.
    let mut quiet = tcp_blocking(&lf);
    send_acked(&mut quiet, "quiet", "q1");
    quiet
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    assert!(
        !closed_within(&mut quiet, Duration::from_secs(3)),
        "no idle timeout by default"
    );
    quiet.set_read_timeout(Some(WAIT)).unwrap();
    send_acked(&mut quiet, "still open", "q2");

    let stderr = lf.stderr();
    assert!(
        stderr.contains("stopped in the middle of a message"),
        "{stderr}"
    );
    assert!(lf.terminate().success(), "{}", lf.stderr());
    assert_eq!(
        messages(&lf, "out.jsonl"),
        ["acked", "unacked", "quiet", "still open"]
    );
}
