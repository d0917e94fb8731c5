//! Kafka helpers for the integration tests: reading topics back with the rdkafka crate's own
//! consumer, tansu behind the MSK IAM proxy (tests/support/msk_iam_proxy.py), and MSK IAM
//! credentials for consumers that must pass the proxy too.
//!
//! Test files use it as `mod support;` plus `#[path = "support/kafka.rs"] mod kafka;`.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use aws_credential_types::Credentials;
use logferry::sink::kafka::msk_iam::{MskIamSigner, MskTarget};
use rdkafka::client::{ClientContext, OAuthToken};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, DefaultConsumerContext};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};

use crate::support::services::{free_port, python, support_file, tansu_bin, wait_port};

/// The access key the MSK IAM tests sign with and the proxy knows.
pub const AKID: &str = "AKIDLOGFERRYTEST";
pub const SECRET: &str = "logferry-test-secret-key";
pub const REGION: &str = "us-east-1";

/// One record read back from Kafka.
#[derive(Debug, Clone)]
pub struct Consumed {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    pub key: Option<Vec<u8>>,
    pub payload: Vec<u8>,
}

impl Consumed {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.payload).unwrap_or_else(|e| {
            panic!(
                "payload is not JSON ({e}): {:?}",
                String::from_utf8_lossy(&self.payload)
            )
        })
    }
}

/// Signs OAUTHBEARER tokens for a test consumer that goes through the MSK IAM proxy.
pub struct MskConsumerContext {
    signer: MskIamSigner,
    credentials: Credentials,
}

impl ClientContext for MskConsumerContext {
    const ENABLE_REFRESH_OAUTH_TOKEN: bool = true;

    fn generate_oauth_token(
        &self,
        _config: Option<&str>,
    ) -> Result<OAuthToken, Box<dyn std::error::Error>> {
        let token = self.signer.sign(&self.credentials, SystemTime::now())?;
        Ok(OAuthToken {
            token: token.token().to_string(),
            principal_name: "test-consumer".into(),
            lifetime_ms: token.expiry_ms(),
        })
    }
}

impl ConsumerContext for MskConsumerContext {}

fn consumer_config(bootstrap: &str) -> ClientConfig {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", bootstrap)
        .set("group.id", "logferry-tests")
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "false")
        .set("reconnect.backoff.max.ms", "500");
    config
}

/// Reads `topic` from the beginning of every partition until `want` records arrived (plus a
/// short grace period, so duplicates show up too) or `timeout` passed.
pub fn consume(bootstrap: &str, topic: &str, want: usize, timeout: Duration) -> Vec<Consumed> {
    let consumer: BaseConsumer<DefaultConsumerContext> = consumer_config(bootstrap)
        .create()
        .expect("create consumer");
    read_all(&consumer, topic, want, timeout)
}

/// As [`consume`], authenticating to the MSK IAM proxy with [`AKID`]/[`SECRET`].
pub fn consume_msk(bootstrap: &str, topic: &str, want: usize, timeout: Duration) -> Vec<Consumed> {
    let mut config = consumer_config(bootstrap);
    config
        .set("security.protocol", "SASL_PLAINTEXT")
        .set("sasl.mechanism", "OAUTHBEARER");
    let context = MskConsumerContext {
        signer: MskIamSigner::new(MskTarget {
            region: REGION.into(),
            serverless: false,
        }),
        credentials: Credentials::new(AKID, SECRET, None, None, "test"),
    };
    let consumer: BaseConsumer<MskConsumerContext> = config
        .create_with_context(context)
        .expect("create consumer");
    read_all(&consumer, topic, want, timeout)
}

fn read_all<C: ConsumerContext>(
    consumer: &BaseConsumer<C>,
    topic: &str,
    want: usize,
    timeout: Duration,
) -> Vec<Consumed> {
    let deadline = Instant::now() + timeout;
    let partitions = loop {
        // Token refresh callbacks are served by polling; poll while waiting for metadata.
        let _ = consumer.poll(Duration::from_millis(50));
        match consumer.fetch_metadata(Some(topic), Duration::from_secs(2)) {
            Ok(metadata) => {
                let count = metadata
                    .topics()
                    .first()
                    .map(|t| t.partitions().len())
                    .unwrap_or(0);
                if count > 0 {
                    break count;
                }
            }
            Err(e) if Instant::now() > deadline => panic!("no metadata for {topic}: {e}"),
            Err(_) => {}
        }
        assert!(Instant::now() < deadline, "topic {topic} has no partitions");
        std::thread::sleep(Duration::from_millis(100));
    };
    let mut assignment = TopicPartitionList::new();
    for p in 0..partitions {
        assignment
            .add_partition_offset(topic, p as i32, Offset::Beginning)
            .expect("assignment");
    }
    consumer.assign(&assignment).expect("assign");
    let mut out = Vec::new();
    let mut grace_until: Option<Instant> = None;
    loop {
        let now = Instant::now();
        if now > deadline || grace_until.is_some_and(|g| now > g) {
            break;
        }
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(message)) => out.push(Consumed {
                topic: message.topic().to_string(),
                partition: message.partition(),
                offset: message.offset(),
                key: message.key().map(<[u8]>::to_vec),
                payload: message.payload().map(<[u8]>::to_vec).unwrap_or_default(),
            }),
            Some(Err(e)) => eprintln!("consumer: {e}"),
            None => {}
        }
        if out.len() >= want && grace_until.is_none() {
            grace_until = Some(Instant::now() + Duration::from_millis(700));
        }
    }
    out
}

/// `seq` of each JSON record.
pub fn seqs(records: &[Consumed]) -> Vec<u64> {
    records
        .iter()
        .map(|r| {
            r.json()["seq"]
                .as_u64()
                .unwrap_or_else(|| panic!("no seq in {}", r.json()))
        })
        .collect()
}

/// Asserts that `seqs` holds `range` exactly once each.
pub fn assert_exactly_once(seqs: &[u64], range: std::ops::Range<u64>) {
    let mut counts: BTreeMap<u64, u32> = BTreeMap::new();
    for s in seqs {
        *counts.entry(*s).or_default() += 1;
    }
    let missing: Vec<u64> = range.clone().filter(|s| !counts.contains_key(s)).collect();
    let duplicated: Vec<u64> = counts
        .iter()
        .filter(|(_, &c)| c > 1)
        .map(|(s, _)| *s)
        .collect();
    let unexpected: Vec<u64> = counts
        .keys()
        .filter(|s| !range.contains(s))
        .copied()
        .collect();
    assert!(
        missing.is_empty() && duplicated.is_empty() && unexpected.is_empty(),
        "of {:?}: {} missing (first {:?}), {} duplicated (first {:?}), {} unexpected",
        range,
        missing.len(),
        missing.iter().take(10).collect::<Vec<_>>(),
        duplicated.len(),
        duplicated.iter().take(10).collect::<Vec<_>>(),
        unexpected.len()
    );
}

/// A child process killed and reaped on drop.
pub struct Proc {
    child: Child,
    pub log: PathBuf,
}

impl Proc {
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// tansu listening on one port and advertising another (the proxy's), so that every client
/// connection, bootstrap or not, goes through the proxy.
pub struct TansuBehindProxy {
    pub broker_port: u16,
    pub proxy_port: u16,
    _tansu: Proc,
    pub dir: tempfile::TempDir,
}

impl TansuBehindProxy {
    pub fn start() -> TansuBehindProxy {
        let dir = tempfile::tempdir().expect("temp dir");
        let broker_port = free_port();
        let proxy_port = free_port();
        let log = dir.path().join("tansu.log");
        let child = Command::new(tansu_bin())
            .arg("broker")
            .args(["--listener-url", &format!("tcp://127.0.0.1:{broker_port}")])
            .args([
                "--advertised-listener-url",
                &format!("tcp://127.0.0.1:{proxy_port}"),
            ])
            .args(["--storage-engine", "memory://tansu/"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log file"))
            .spawn()
            .expect("start tansu");
        let tansu = Proc { child, log };
        assert!(
            wait_port(
                format!("127.0.0.1:{broker_port}").parse().unwrap(),
                Duration::from_secs(20)
            ),
            "tansu did not listen: {}",
            tansu.log_text()
        );
        TansuBehindProxy {
            broker_port,
            proxy_port,
            _tansu: tansu,
            dir,
        }
    }

    pub fn create_topic(&self, name: &str, partitions: u32) {
        let out = Command::new(tansu_bin())
            .args(["topic", "create", "--broker"])
            .arg(format!("tcp://127.0.0.1:{}", self.broker_port))
            .args(["--partitions", &partitions.to_string(), name])
            .output()
            .expect("run tansu topic create");
        assert!(
            out.status.success(),
            "tansu topic create: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Starts the MSK IAM proxy on the advertised port, knowing `secret` for [`AKID`].
    pub fn proxy(&self, secret: &str, extra_args: &[&str]) -> MskProxy {
        MskProxy::start(self, secret, extra_args)
    }

    pub fn bootstrap(&self) -> String {
        format!("127.0.0.1:{}", self.proxy_port)
    }
}

/// A running msk_iam_proxy.py.
pub struct MskProxy {
    proc: Proc,
    pub stats_file: PathBuf,
}

impl MskProxy {
    fn start(stack: &TansuBehindProxy, secret: &str, extra_args: &[&str]) -> MskProxy {
        static COUNTER: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let stats_file = stack.dir.path().join(format!("proxy-stats-{n}.json"));
        let log = stack.dir.path().join(format!("proxy-{n}.log"));
        let credentials = serde_json::json!({ AKID: secret }).to_string();
        let mut child = Command::new(python())
            .arg(support_file("msk_iam_proxy.py"))
            .args(["--listen", &format!("127.0.0.1:{}", stack.proxy_port)])
            .args(["--upstream", &format!("127.0.0.1:{}", stack.broker_port)])
            .args(["--region", REGION])
            .arg("--stats-file")
            .arg(&stats_file)
            .args(extra_args)
            .env("MSK_IAM_PROXY_CREDENTIALS", credentials)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).expect("log file"))
            .spawn()
            .expect("start msk_iam_proxy.py");
        let stdout = child.stdout.take().expect("proxy stdout");
        let proc = Proc { child, log };
        let mut line = String::new();
        let _ = BufReader::new(stdout).read_line(&mut line);
        assert!(
            line.contains("listening"),
            "the MSK IAM proxy did not start (port {} taken?): {line}\n{}",
            stack.proxy_port,
            proc.log_text()
        );
        MskProxy { proc, stats_file }
    }

    /// The proxy's counters (auth_ok, auth_failed, failures_by_reason, reauth_ok, ...).
    pub fn stats(&self) -> serde_json::Value {
        let text = std::fs::read_to_string(&self.stats_file).unwrap_or_else(|_| "{}".into());
        serde_json::from_str(&text).unwrap_or_default()
    }

    pub fn stat(&self, name: &str) -> u64 {
        self.stats()[name].as_u64().unwrap_or(0)
    }

    pub fn log(&self) -> String {
        self.proc.log_text()
    }
}

/// Polls `check` until it holds, panicking with `what` (and `context()`) after `timeout`.
pub fn wait_until(
    what: &str,
    timeout: Duration,
    mut check: impl FnMut() -> bool,
    context: impl Fn() -> String,
) {
    let deadline = Instant::now() + timeout;
    while !check() {
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}\n{}",
            context()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}
