//! The Kafka sink with the disk buffer while the broker is unreachable for a sustained period
//! under load, process level: the real binary, `logferry loadgen --ack`, tansu behind a
//! loopback proxy (tests/support/faults.rs `CutProxy`) that the test cuts — live connections
//! reset, new ones refused — and restores. tansu advertises the proxy's address, so every
//! connection of logferry (bootstrap and partition leaders) goes through the cut link, and its
//! in-memory log survives the outage.
//!
//! Prints its figures: sent, acknowledged by logferry, delivered, lost, duplicates.

#[path = "support/faults.rs"]
mod faults;
#[path = "support/kafka.rs"]
mod kafka;
mod support;

use std::path::Path;
use std::time::{Duration, Instant};

use faults::{
    assert_ok, counts, loadgen_ack, memory_kib, segment_bytes, CutProxy, Figures, Sampler,
};
use support::process::Logferry;
use support::services::Tansu;

const COMPONENT: &str = "component=\"kafka.0\"";

fn config(bootstrap: &str, work: &Path) -> String {
    format!(
        r#"
[service]
http_listen = "{{http}}"
grace_period = "20s"

[[sources]]
type = "forward"
listen = "{{forward}}"

[[sinks]]
type = "kafka"
match = "*"
brokers = "{bootstrap}"
topics = "logs"
buffer = "disk"
buffer_path = "{}/buffer"
buffer_limit = "1MiB"
buffer_max_size = "128MiB"
"#,
        work.display()
    )
}

fn metric(lf: &Logferry, name: &str) -> f64 {
    lf.metric(&format!("{name}{{{COMPONENT}")).unwrap_or(0.0)
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

#[test]
fn broker_unreachable_under_load_spills_to_disk_with_bounded_memory_and_drains_after() {
    let proxy = CutProxy::start();
    let tansu = Tansu::start_advertising(Some(proxy.addr()));
    proxy.set_upstream(tansu.addr());
    tansu.create_topic("logs", 3);
    let bootstrap = proxy.addr().to_string();
    let work = tempfile::tempdir().unwrap();
    let buffer_limit: u64 = 1024 * 1024;
    let lf = Logferry::start(&config(&bootstrap, work.path()));
    let target = lf.forward.to_string();
    let buffer_dir = work.path().join("buffer");
    std::thread::sleep(Duration::from_millis(300));
    let idle_kib = memory_kib(lf.pid()).0;
    let sampler = Sampler::start(lf.pid(), buffer_dir.clone());
    let (a, b, c) = (20_000u64, 150_000u64, 20_000u64);
    let n = a + b + c;

    assert_ok(&loadgen_ack(&target, 0, a, 500, 200));
    wait_until(
        "the first part delivered",
        Duration::from_secs(30),
        &lf,
        || metric(&lf, "logferry_records_out_total") >= a as f64,
    );

    // Cut for ~8 s while 150k more records (~37 MB) arrive: acknowledged once on disk.
    proxy.cut();
    let cut_at = Instant::now();
    let out_before = metric(&lf, "logferry_records_out_total");
    assert_ok(&loadgen_ack(&target, a, b, 500, 200));
    let offered_during = cut_at.elapsed();
    let on_disk_records = metric(&lf, "logferry_buffer_disk_records");
    let on_disk_bytes = segment_bytes(&buffer_dir);
    while cut_at.elapsed() < Duration::from_secs(8) {
        std::thread::sleep(Duration::from_millis(100));
    }
    let health_during = lf.health();
    let out_during = metric(&lf, "logferry_records_out_total") - out_before;
    let outage = cut_at.elapsed();
    let during = sampler.peaks();

    proxy.restore();
    let up_at = Instant::now();
    assert_ok(&loadgen_ack(&target, a + b, c, 500, 200));
    wait_until("the backlog drained", Duration::from_secs(60), &lf, || {
        metric(&lf, "logferry_records_out_total") >= n as f64
            && metric(&lf, "logferry_buffer_disk_records") == 0.0
    });
    let drained_in = up_at.elapsed();
    let peaks = sampler.finish();
    let hwm_kib = memory_kib(lf.pid()).1;
    let disk_after = segment_bytes(&buffer_dir);

    let records = kafka::consume(&bootstrap, "logs", n as usize, Duration::from_secs(60));
    let fig = Figures::from_counts(n, n, &counts(kafka::seqs(&records), n));
    // Same derivation as the Kinesis outage test: frames read back (buffer_limit) and their
    // copies on the way out (decoded, encoded, librdkafka's message copies and produce
    // requests): 8 × buffer_limit, plus 32 MiB of runtime, librdkafka threads and allocator
    // slack over the idle process. The backlog (37 MB) is not part of it.
    let bound_kib = idle_kib + 32 * 1024 + 8 * buffer_limit / 1024;
    let peak_kib = peaks.rss_kib.max(hwm_kib);
    fig.print(
        "Kafka broker unreachable with the disk buffer",
        &format!(
            "outage {outage:.1?} ({b} records offered in {offered_during:.1?}, all acknowledged \
             from disk; {out_during} delivered during it; {on_disk_records} records / \
             {on_disk_bytes} bytes on disk after them, peak {} bytes); drained \
             {drained_in:.1?} after recovery, {disk_after} bytes left on disk; RSS idle \
             {idle_kib} KiB, peak {peak_kib} KiB (during the outage {} KiB), bound {bound_kib} \
             KiB = idle + 32 MiB + 8 × buffer_limit; /health during: {}",
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
}
