//! Kafka helpers for the integration tests: reading topics back with the rdkafka crate's own
//! consumer, tansu behind the MSK IAM proxy (tests/support/msk_iam_proxy.py), and MSK IAM
//! credentials for consumers that must pass the proxy too. Plain consumers and the checks of
//! what arrived are the test kit's, re-exported here.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, SystemTime};

use aws_credential_types::Credentials;
use logferry::sink::kafka::msk_iam::{MskIamSigner, MskTarget};
use rdkafka::client::{ClientContext, OAuthToken};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, ConsumerContext};

pub use logferry_test_kit::kafka::{assert_exactly_once, consume, seqs, Consumed};
use logferry_test_kit::kafka::{consumer_config, read_all};
use logferry_test_kit::net::free_port;
use logferry_test_kit::paths::{python, support_file};
use logferry_test_kit::stand_ins::{Running, Tansu};

/// The access key the MSK IAM tests sign with and the proxy knows.
pub const AKID: &str = "AKIDLOGFERRYTEST";
pub const SECRET: &str = "logferry-test-secret-key";
pub const REGION: &str = "us-east-1";

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

/// tansu listening on one port and advertising another (the proxy's), so that every client
/// connection, bootstrap or not, goes through the proxy.
pub struct TansuBehindProxy {
    pub broker_port: u16,
    pub proxy_port: u16,
    tansu: Tansu,
    pub dir: tempfile::TempDir,
}

impl TansuBehindProxy {
    pub fn start() -> TansuBehindProxy {
        let dir = tempfile::tempdir().expect("temp dir");
        let proxy_port = free_port();
        let tansu = Tansu::start_advertising(Some(SocketAddr::from(([127, 0, 0, 1], proxy_port))));
        TansuBehindProxy {
            broker_port: tansu.port(),
            proxy_port,
            tansu,
            dir,
        }
    }

    pub fn create_topic(&self, name: &str, partitions: u32) {
        self.tansu.create_topic(name, partitions);
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
    proc: Running,
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
        let proc = Running::new(child, log);
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

impl rdkafka::producer::ProducerContext for MskConsumerContext {
    type DeliveryOpaque = ();
    fn delivery(&self, _result: &rdkafka::producer::DeliveryResult<'_>, _opaque: ()) {}
}

/// Produces `{"seq": i, "log": "record <i>"}` for i in 0..n to `topic` through the MSK IAM
/// proxy (authenticating with [`AKID`]/[`SECRET`]), one message per producer batch.
pub fn produce_msk(bootstrap: &str, topic: &str, n: u64) {
    use rdkafka::producer::{BaseRecord, Producer, ThreadedProducer};
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", bootstrap)
        .set("security.protocol", "SASL_PLAINTEXT")
        .set("sasl.mechanism", "OAUTHBEARER")
        .set("linger.ms", "0")
        .set("batch.num.messages", "1");
    let context = MskConsumerContext {
        signer: MskIamSigner::new(MskTarget {
            region: REGION.into(),
            serverless: false,
        }),
        credentials: Credentials::new(AKID, SECRET, None, None, "test"),
    };
    let producer: ThreadedProducer<MskConsumerContext> = config
        .create_with_context(context)
        .expect("create producer");
    for i in 0..n {
        let value = serde_json::json!({"seq": i, "log": format!("record {i}")}).to_string();
        let key = format!("k{}", i % 16);
        let mut record = BaseRecord::to(topic).payload(&value).key(&key);
        loop {
            match producer.send(record) {
                Ok(()) => break,
                Err((_, back)) => {
                    record = back;
                    std::thread::sleep(Duration::from_millis(20));
                }
            }
        }
    }
    producer
        .flush(Duration::from_secs(60))
        .expect("every record produced through the proxy");
}

/// Credentials for the default chain: exactly the proxy's, nothing from the developer's machine.
pub fn aws_env() -> Vec<(&'static str, &'static str)> {
    vec![
        ("AWS_ACCESS_KEY_ID", AKID),
        ("AWS_SECRET_ACCESS_KEY", SECRET),
        ("AWS_SESSION_TOKEN", ""),
        ("AWS_PROFILE", ""),
        ("AWS_CONFIG_FILE", "/dev/null"),
        ("AWS_SHARED_CREDENTIALS_FILE", "/dev/null"),
        ("AWS_EC2_METADATA_DISABLED", "true"),
        ("RUST_LOG", "info"),
    ]
}
