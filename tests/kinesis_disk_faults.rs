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

#[path = "support/fault_kinesis.rs"]
mod fault;
#[path = "support/faults.rs"]
mod faults;
mod support;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use fault::{FaultKinesis, Faults, RequestFault};
use faults::{
    acked_messages, assert_ok, counts, crash_duplicate_bound, loadgen_ack, memory_kib,
    segment_bytes, Figures, Sampler,
};
use support::process::Logferry;

const AWS_ENV: &[(&str, &str)] = &[
    ("AWS_ACCESS_KEY_ID", "AKIAIOSFODNN7EXAMPLE"),
    (
        "AWS_SECRET_ACCESS_KEY",
        "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
    ),
    ("AWS_REGION", "us-east-1"),
    ("AWS_EC2_METADATA_DISABLED", "true"),
    ("AWS_CONFIG_FILE", "/nonexistent/logferry-test-config"),
    (
        "AWS_SHARED_CREDENTIALS_FILE",
        "/nonexistent/logferry-test-credentials",
    ),
    ("AWS_PROFILE", ""),
];

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

fn wait_until(what: &str, timeout: Duration, lf: &Logferry, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !f() {
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}:\n{}",
            lf.stderr()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn metric(lf: &Logferry, name: &str) -> f64 {
    lf.metric(&format!("{name}{{{COMPONENT}")).unwrap_or(0.0)
}

#[test]
fn kinesis_down_under_load_spills_to_disk_with_bounded_memory_and_drains_after() {
    let kinesis = FaultKinesis::start(Faults::default());
    let work = tempfile::tempdir().unwrap();
    let buffer_limit: u64 = 1024 * 1024;
    let lf = Logferry::start_with_env(
        &config(
            &kinesis.endpoint(),
            work.path(),
            // 16 MiB segments (buffer_max_size / 8), so drained ones are deleted in the test.
            "aggregation = true\nbuffer_limit = \"1MiB\"\nbuffer_max_size = \"128MiB\"",
        ),
        AWS_ENV,
    );
    let target = lf.forward.to_string();
    let buffer_dir = work.path().join("buffer");
    std::thread::sleep(Duration::from_millis(300));
    let idle_kib = memory_kib(lf.pid()).0;
    let sampler = Sampler::start(lf.pid(), buffer_dir.clone());
    let (a, b, c) = (20_000u64, 150_000u64, 20_000u64);
    let n = a + b + c;

    // Up: the first part is delivered.
    assert_ok(&loadgen_ack(&target, 0, a, 500, 200));
    wait_until(
        "the first part delivered",
        Duration::from_secs(30),
        &lf,
        || metric(&lf, "logferry_records_out_total") >= a as f64,
    );

    // Down for ~8 s while 150k more records (~37 MB) arrive: all acknowledged from disk.
    kinesis.go_down();
    let down_at = Instant::now();
    let accepted_before = kinesis.seen(|s| s.accepted.len());
    assert_ok(&loadgen_ack(&target, a, b, 500, 200));
    let offered_during = down_at.elapsed();
    let on_disk_records = metric(&lf, "logferry_buffer_disk_records");
    let on_disk_bytes = segment_bytes(&buffer_dir);
    while down_at.elapsed() < Duration::from_secs(8) {
        std::thread::sleep(Duration::from_millis(100));
    }
    let health_during = lf.health();
    assert_eq!(
        kinesis.seen(|s| s.accepted.len()),
        accepted_before,
        "nothing gets through while down"
    );
    let outage = down_at.elapsed();
    let during = sampler.peaks();

    // Back up, more load while the backlog drains.
    kinesis.come_up();
    let up_at = Instant::now();
    let t2 = target.clone();
    let late = std::thread::spawn(move || loadgen_ack(&t2, a + b, c, 500, 200));
    assert_ok(&late.join().unwrap());
    wait_until("the backlog drained", Duration::from_secs(60), &lf, || {
        metric(&lf, "logferry_records_out_total") >= n as f64
            && metric(&lf, "logferry_buffer_disk_records") == 0.0
    });
    let drained_in = up_at.elapsed();
    let peaks = sampler.finish();
    let hwm_kib = memory_kib(lf.pid()).1;
    let disk_after = segment_bytes(&buffer_dir);

    let seqs = kinesis.accepted_user_seqs();
    let fig = Figures::from_counts(n, n, &counts(seqs, n));
    // What may be in memory, from the config: the frames read back (buffer_limit) and their
    // copies on the way out (decoded records, encoded records, aggregates, the request body
    // and the SDK's copy of it): 8 × buffer_limit, plus 32 MiB of runtime, HTTP client and
    // allocator slack over the idle process. The backlog (37 MB) is not part of it.
    let bound_kib = idle_kib + 32 * 1024 + 8 * buffer_limit / 1024;
    let peak_kib = peaks.rss_kib.max(hwm_kib);
    fig.print(
        "Kinesis down with the disk buffer",
        &format!(
            "outage {outage:.1?} ({b} records offered in {offered_during:.1?}, all acknowledged \
             from disk; {on_disk_records} records / {on_disk_bytes} bytes on disk after them, \
             peak {} bytes); drained {drained_in:.1?} after recovery, {disk_after} bytes left \
             on disk; RSS idle {idle_kib} KiB, peak {peak_kib} KiB (during the outage {} KiB), \
             bound {bound_kib} KiB = idle + 32 MiB + 8 × buffer_limit; /health during: {}",
            peaks.disk_bytes, during.rss_kib, health_during.0
        ),
    );
    assert_eq!(fig.lost, 0, "acknowledged records lost");
    assert_eq!(fig.delivered, n);
    assert!(
        on_disk_records >= b as f64 * 0.9,
        "the outage's records wait on disk: {on_disk_records}"
    );
    assert!(
        peaks.disk_bytes >= 30_000_000,
        "the disk buffer grew: {}",
        peaks.disk_bytes
    );
    assert!(
        disk_after <= 16 * 1024 * 1024,
        "the disk buffer drained: {disk_after} bytes left"
    );
    assert!(
        peak_kib <= bound_kib,
        "peak RSS {peak_kib} KiB over the bound {bound_kib} KiB"
    );
    assert_eq!(health_during.0, 503, "the outage shows on /health");
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
    wait_until(
        "some records delivered",
        Duration::from_secs(60),
        &lf,
        || metric(&lf, "logferry_records_out_total") >= 500.0 || client.is_finished(),
    );
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
    wait_until(
        "every record delivered",
        Duration::from_secs(60),
        &lf,
        || {
            metric(&lf, "logferry_buffer_disk_records") == 0.0
                && kinesis.seen(|s| s.accepted.len()) as u64 >= total
        },
    );
    let counts = counts(kinesis.accepted_user_seqs(), total);
    let fig = Figures::from_counts(total, acked, &counts);
    let dup_acked: u64 = counts[..acked as usize]
        .iter()
        .map(|&c| u64::from(c.saturating_sub(1)))
        .sum();
    fig.print(
        "kill -9, Kinesis max_in_flight = 4",
        &format!(
            "accepted by Kinesis at the kill {accepted_at_kill} in {calls_at_kill} PutRecords \
             calls; duplicates of acknowledged \
             records {dup_acked} (documented bound at the kill: {bound} records = {bound_frames} \
             frames of {batch}, the buffer_limit window)"
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
    // The only other repeats: the message the client resends for an ack the kill swallowed.
    assert!(fig.duplicates - dup_acked <= batch);
}
