//! The forward client that waits for acks: `logferry loadgen --ack` (what the fault tests count
//! acknowledged records with) and, for hand-built frames, reading one `{"ack": chunk}` reply.

use std::io::Read;
use std::net::TcpStream;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use crate::paths::cargo_bin;

/// `logferry loadgen --ack` against `target`; returns its output whether it succeeded or not
/// (a fault test may cut it off).
pub fn loadgen_ack(target: &str, start: u64, records: u64, batch: u64, size: u64) -> Output {
    Command::new(cargo_bin("logferry"))
        .args(["loadgen", "--target", target, "--ack"])
        .args(["--start-seq", &start.to_string()])
        .args(["--records", &records.to_string()])
        .args(["--batch", &batch.to_string()])
        .args(["--size", &size.to_string()])
        .stdin(Stdio::null())
        .output()
        .expect("run loadgen")
}

/// Panics with loadgen's error output unless it succeeded.
pub fn assert_ok(out: &Output) {
    assert!(
        out.status.success(),
        "loadgen: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A number field of loadgen's JSON report, which it prints on stdout when it finishes and
/// includes in its error when the server goes away.
pub fn report_field(out: &Output, name: &str) -> u64 {
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let key = format!("\"{name}\":");
    let at = text
        .find(&key)
        .unwrap_or_else(|| panic!("no {name} in {text}"))
        + key.len();
    text[at..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect::<String>()
        .parse()
        .unwrap()
}

/// Messages acknowledged, from loadgen's report.
pub fn acked_messages(out: &Output) -> u64 {
    report_field(out, "acked_messages")
}

/// Reads one reply (an ack) from a forward connection, waiting up to 20 s.
pub fn read_ack(stream: &mut TcpStream) -> Vec<u8> {
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let mut buf = [0u8; 128];
    let n = stream.read(&mut buf).expect("an ack");
    buf[..n].to_vec()
}

/// The bytes of `{"ack": chunk}`, as logferry answers a message with that `chunk` option.
pub fn expected_ack(chunk: &str) -> Vec<u8> {
    let mut out = Vec::new();
    rmp::encode::write_map_len(&mut out, 1).unwrap();
    rmp::encode::write_str(&mut out, "ack").unwrap();
    rmp::encode::write_str(&mut out, chunk).unwrap();
    out
}
