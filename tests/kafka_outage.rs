//! The Kafka sink with the disk buffer while the broker is unreachable for a sustained period
//! under load, process level: the real binary, `logferry loadgen --ack`, tansu behind a
//! loopback proxy (tests/support/faults.rs `CutProxy`) that the test cuts — live connections
//! reset, new ones refused — and restores. tansu advertises the proxy's address, so every
//! connection of logferry (bootstrap and partition leaders) goes through the cut link, and its
//! in-memory log survives the outage.
//!
//! Prints its figures: sent, acknowledged by logferry, delivered, lost, duplicates.

use support::faults;
use support::kafka;
use support::outage;
mod support;

use std::path::Path;
use std::time::Duration;

use faults::CutProxy;
use logferry_test_kit::logferry::Logferry;
use logferry_test_kit::stand_ins::Tansu;

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

#[test]
fn broker_unreachable_under_load_spills_to_disk_with_bounded_memory_and_drains_after() {
    let proxy = CutProxy::start();
    let tansu = Tansu::start_advertising(Some(proxy.addr()));
    proxy.set_upstream(tansu.addr());
    tansu.create_topic("logs", 3);
    let bootstrap = proxy.addr().to_string();
    let work = tempfile::tempdir().unwrap();
    let lf = Logferry::start(&config(&bootstrap, work.path()));
    let read_from = bootstrap.clone();
    outage::spills_to_disk_and_drains(
        &lf,
        &work.path().join("buffer"),
        1024 * 1024,
        outage::Destination {
            title: "Kafka broker unreachable with the disk buffer",
            component: "kafka.0",
            go_down: Box::new(|| proxy.cut()),
            // Requests already on the wire may complete: the figures line reports them.
            check_down: Box::new(|| {}),
            come_up: Box::new(|| proxy.restore()),
            delivered_seqs: Box::new(move |n| {
                let records =
                    kafka::consume(&read_from, "logs", n as usize, Duration::from_secs(60));
                kafka::seqs(&records)
            }),
            unhealthy_during: false,
        },
    );
}
