//! The Kinesis sink with the disk buffer, process level (the real binary, `logferry loadgen
//! --ack` as the forward client, the fault-injecting Kinesis of tests/support/fault_kinesis.rs):
//!
//! - the endpoint down for a sustained period under load: memory stays under a bound derived
//!   from the config while the disk buffer grows; it drains after recovery; nothing lost;
//! - kill -9 with `max_in_flight = 4` and slow answers: every acknowledged record arrives, and
//!   the duplicates stay within the bound docs/configuration.md states (several batches with
//!   concurrent requests, never more than the `buffer_limit` window).
//!
//! Each prints its figures: sent, acknowledged by logferry, delivered, lost, duplicates.

use logferry_test_kit::fault_kinesis as fault;
use support::faults;
use support::kinesis::AcceptedUserSeqs;
use support::outage;
mod support;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use fault::{FaultKinesis, Faults, RequestFault, AWS_ENV};
use faults::{acked_messages, assert_ok, counts, crash_duplicate_bound, loadgen_ack, Figures};
use logferry_test_kit::logferry::Logferry;

const COMPONENT: &str = "component=\"kinesis.0\"";

fn config(endpoint: &str, work: &Path, extra: &str) -> String {
    format!(
        r#"
[service]
http_listen = "{{http}}"
grace_period = "20s"

[[sources]]
type = "forward"
listen = "{{forward}}"

[[sinks]]
type = "kinesis"
match = "*"
stream = "faulty"
endpoint = "{endpoint}"
flush = "100ms"
http_request_timeout = "10s"
buffer = "disk"
buffer_path = "{}/buffer"
{extra}
"#,
        work.display()
    )
}

fn metric(lf: &Logferry, name: &str) -> f64 {
    lf.metric(&format!("{name}{{{COMPONENT}")).unwrap_or(0.0)
}

#[test]
fn kinesis_down_under_load_spills_to_disk_with_bounded_memory_and_drains_after() {
    let kinesis = FaultKinesis::start(Faults::default());
    let work = tempfile::tempdir().unwrap();
    let lf = Logferry::start_with_env(
        &config(
            &kinesis.endpoint(),
            work.path(),
            // 16 MiB segments (buffer_max_size / 8), so drained ones are deleted in the test.
            "aggregation = true\nbuffer_limit = \"1MiB\"\nbuffer_max_size = \"128MiB\"",
        ),
        AWS_ENV,
    );
    let accepted_before = std::cell::Cell::new(0);
    outage::spills_to_disk_and_drains(
        &lf,
        &work.path().join("buffer"),
        1024 * 1024,
        outage::Destination {
            title: "Kinesis down with the disk buffer",
            component: "kinesis.0",
            go_down: Box::new(|| {
                kinesis.go_down();
                accepted_before.set(kinesis.seen(|s| s.accepted.len()));
            }),
            check_down: Box::new(|| {
                assert_eq!(
                    kinesis.seen(|s| s.accepted.len()),
                    accepted_before.get(),
                    "nothing gets through while down"
                )
            }),
            come_up: Box::new(|| kinesis.come_up()),
            delivered_seqs: Box::new(|_| kinesis.accepted_user_seqs()),
            unhealthy_during: true,
        },
    );
}

#[test]
fn kill_9_with_concurrent_requests_repeats_at_most_the_documented_window() {
    // Slow answers (accepted, then answered 200 ms later) with up to 4 requests of 500
    // records in flight: at the kill, several batches are accepted by Kinesis but not yet
    // acknowledged in the log.
    let kinesis = FaultKinesis::start(Faults {
        request_cycle: vec![RequestFault::Slow(Duration::from_millis(200))],
        ..Faults::default()
    });
    let work = tempfile::tempdir().unwrap();
    let buffer_limit: u64 = 1024 * 1024;
    let config = config(
        &kinesis.endpoint(),
        work.path(),
        "buffer_limit = \"1MiB\"\nmax_in_flight = 4",
    );
    let total = 100_000u64;
    let batch = 200u64;
    let mut lf = Logferry::start_with_env(&config, AWS_ENV);
    let target = lf.forward.to_string();
    let client = std::thread::spawn(move || loadgen_ack(&target, 0, total, batch, 200));
    lf.wait_until("some records delivered", Duration::from_secs(60), || {
        metric(&lf, "logferry_records_out_total") >= 500.0 || client.is_finished()
    });
    let pid = lf.pid().to_string();
    assert!(Command::new("kill")
        .args(["-KILL", &pid])
        .status()
        .unwrap()
        .success());
    lf.wait(Duration::from_secs(10));
    let (bound, bound_frames) = crash_duplicate_bound(&work.path().join("buffer"), buffer_limit);
    let first = client.join().unwrap();
    assert!(
        !first.status.success(),
        "the client must have been cut off mid-stream"
    );
    let acked = acked_messages(&first) * batch;
    let (accepted_at_kill, calls_at_kill) = kinesis.seen(|s| (s.accepted.len(), s.put_calls));

    let lf = Logferry::start_with_env(&config, AWS_ENV);
    assert_ok(&loadgen_ack(
        &lf.forward.to_string(),
        acked,
        total - acked,
        batch,
        200,
    ));
    lf.wait_until("every record delivered", Duration::from_secs(60), || {
        metric(&lf, "logferry_buffer_disk_records") == 0.0
            && kinesis.seen(|s| s.accepted.len()) as u64 >= total
    });
    let counts = counts(kinesis.accepted_user_seqs(), total);
    let fig = Figures::from_counts(total, acked, &counts);
    let dup_acked: u64 = counts[..acked as usize]
        .iter()
        .map(|&c| u64::from(c.saturating_sub(1)))
        .sum();
    // Frames done out of order are not sent again, so what repeats is tied to the calls in
    // flight, not to `buffer_limit`: the entries of up to `max_in_flight` unanswered calls,
    // the answered parts of the two frames each of them cuts through, and of the frame the
    // batch being assembled cuts through (docs/configuration.md).
    let in_flight_bound = 4 * (500 + 2 * batch) + batch;
    fig.print(
        "kill -9, Kinesis max_in_flight = 4",
        &format!(
            "accepted by Kinesis at the kill {accepted_at_kill} in {calls_at_kill} PutRecords \
             calls; duplicates of acknowledged \
             records {dup_acked} (documented bound at the kill: {bound} records = {bound_frames} \
             frames of {batch}, the buffer_limit window less the frames recorded done; \
             in-flight bound {in_flight_bound})"
        ),
    );
    assert!(
        lf.stderr().contains("replaying unacknowledged records"),
        "{}",
        lf.stderr()
    );
    assert_eq!(fig.lost, 0, "acknowledged records lost");
    assert_eq!(fig.delivered, total);
    assert!(
        dup_acked <= bound,
        "{dup_acked} duplicates: more than the documented bound {bound}"
    );
    assert!(
        dup_acked <= in_flight_bound,
        "{dup_acked} duplicates: more than the in-flight bound {in_flight_bound}"
    );
    // The only other repeats: the message the client resends for an ack the kill swallowed.
    assert!(fig.duplicates - dup_acked <= batch);
}
