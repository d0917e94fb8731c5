//! The destination-outage scenario shared by the Kinesis and Kafka disk-buffer fault tests:
//! load while the destination is up, a sustained outage under load (every record acknowledged
//! from disk), recovery under more load, then the figures and the assertions: 0 lost, the disk
//! buffer grew and drained, resident memory stayed under a bound derived from the config.

use std::path::Path;
use std::time::{Duration, Instant};

use super::faults::{assert_ok, counts, loadgen_ack, memory_kib, segment_bytes, Figures, Sampler};
use logferry_test_kit::logferry::Logferry;

/// Records sent before, during and after the outage.
pub const BEFORE: u64 = 20_000;
pub const DURING: u64 = 150_000;
pub const AFTER: u64 = 20_000;

/// How the test reaches its destination.
pub struct Destination<'a> {
    /// How the figures line names the scenario.
    pub title: &'static str,
    /// The sink's `component` label, e.g. `kinesis.0`.
    pub component: &'static str,
    /// Makes the destination unreachable.
    pub go_down: Box<dyn FnMut() + 'a>,
    /// Checks, at the end of the outage, that nothing got through.
    pub check_down: Box<dyn FnMut() + 'a>,
    /// Makes it reachable again.
    pub come_up: Box<dyn FnMut() + 'a>,
    /// The `seq` of every record the destination holds at the end (`n` records expected).
    pub delivered_seqs: Box<dyn FnMut(u64) -> Vec<u64> + 'a>,
    /// Whether `/health` must answer 503 during the outage.
    pub unhealthy_during: bool,
}

fn metric(lf: &Logferry, component: &str, name: &str) -> f64 {
    lf.metric(&format!("{name}{{component=\"{component}\""))
        .unwrap_or(0.0)
}

/// Runs the scenario against a logferry whose only sink is `dest`, disk-buffered in
/// `buffer_dir` with `buffer_limit` bytes of memory queue (and 16 MiB segments, so drained
/// ones are deleted during the test).
pub fn spills_to_disk_and_drains(
    lf: &Logferry,
    buffer_dir: &Path,
    buffer_limit: u64,
    mut dest: Destination<'_>,
) {
    let c = dest.component;
    let target = lf.forward.to_string();
    std::thread::sleep(Duration::from_millis(300));
    let idle_kib = memory_kib(lf.pid()).0;
    let sampler = Sampler::start(lf.pid(), buffer_dir.to_path_buf());
    let (a, b) = (BEFORE, DURING);
    let n = BEFORE + DURING + AFTER;

    // Up: the first part is delivered.
    assert_ok(&loadgen_ack(&target, 0, a, 500, 200));
    lf.wait_until("the first part delivered", Duration::from_secs(30), || {
        metric(lf, c, "logferry_records_out_total") >= a as f64
    });

    // Down for ~8 s while 150k more records (~37 MB) arrive: all acknowledged from disk.
    (dest.go_down)();
    let down_at = Instant::now();
    let out_before = metric(lf, c, "logferry_records_out_total");
    assert_ok(&loadgen_ack(&target, a, b, 500, 200));
    let offered_during = down_at.elapsed();
    let on_disk_records = metric(lf, c, "logferry_buffer_disk_records");
    let on_disk_bytes = segment_bytes(buffer_dir);
    while down_at.elapsed() < Duration::from_secs(8) {
        std::thread::sleep(Duration::from_millis(100));
    }
    let health_during = lf.health();
    let out_during = metric(lf, c, "logferry_records_out_total") - out_before;
    (dest.check_down)();
    let outage = down_at.elapsed();
    let during = sampler.peaks();

    // Back up, more load while the backlog drains.
    (dest.come_up)();
    let up_at = Instant::now();
    assert_ok(&loadgen_ack(&target, a + b, AFTER, 500, 200));
    lf.wait_until("the backlog drained", Duration::from_secs(60), || {
        metric(lf, c, "logferry_records_out_total") >= n as f64
            && metric(lf, c, "logferry_buffer_disk_records") == 0.0
    });
    let drained_in = up_at.elapsed();
    let peaks = sampler.finish();
    let hwm_kib = memory_kib(lf.pid()).1;
    let disk_after = segment_bytes(buffer_dir);

    let fig = Figures::from_counts(n, n, &counts((dest.delivered_seqs)(n), n));
    // What may be in memory, from the config: the frames read back (buffer_limit) and their
    // copies on the way out (decoded records, encoded records, aggregates or librdkafka's
    // message copies, the request body and the client's copy of it): 8 × buffer_limit, plus
    // 32 MiB of runtime, client threads and allocator slack over the idle process. The
    // backlog (37 MB) is not part of it.
    let bound_kib = idle_kib + 32 * 1024 + 8 * buffer_limit / 1024;
    let peak_kib = peaks.rss_kib.max(hwm_kib);
    fig.print(
        dest.title,
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
    if dest.unhealthy_during {
        assert_eq!(health_during.0, 503, "the outage shows on /health");
    }
}
