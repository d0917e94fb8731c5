//! A fault-injecting Kinesis stand-in: an HTTP/1.1 server on 127.0.0.1 speaking the Kinesis
//! JSON 1.1 protocol for DescribeStreamSummary, ListShards (one shard) and PutRecords.
//!
//! No emulator produces ProvisionedThroughputExceededException or InternalFailure, so this one
//! does, on a chosen fraction of entries, and can also fail whole requests (HTTP 500, request
//! throttling, AccessDenied), answer slowly, time out (never answer, records not kept) or drop
//! the connection (records not kept). It counts what it accepted, and notices any entry that is
//! sent again after it was accepted (a duplicate caused by retrying successes).
#![allow(dead_code)]

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use base64::Engine;

use crate::net::accept_unless_down;

/// What to do with a whole request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestFault {
    /// Process normally (per-entry faults still apply).
    Ok,
    /// HTTP 500 InternalFailure, nothing kept.
    ServerError,
    /// HTTP 400 ProvisionedThroughputExceededException for the whole call, nothing kept.
    Throttle,
    /// HTTP 400 AccessDeniedException, nothing kept.
    AccessDenied,
    /// Process normally, but answer after this delay.
    Slow(Duration),
    /// Read the request, keep nothing, wait this long, then close without answering.
    Timeout(Duration),
    /// Read the request, keep nothing, close the connection at once.
    Drop,
}

/// The stand-in's behaviour; change it while it runs with [`FaultKinesis::set`].
#[derive(Debug, Clone)]
pub struct Faults {
    /// Fraction (0..=1) of entries failed per PutRecords call, alternating
    /// ProvisionedThroughputExceededException and InternalFailure.
    pub entry_failure_rate: f64,
    /// Whole-request faults applied in turn to successive PutRecords calls (empty: all Ok).
    pub request_cycle: Vec<RequestFault>,
    /// Answer DescribeStreamSummary with AccessDeniedException.
    pub deny_describe: bool,
}

impl Default for Faults {
    fn default() -> Self {
        Faults {
            entry_failure_rate: 0.0,
            request_cycle: Vec::new(),
            deny_describe: false,
        }
    }
}

/// What the stand-in saw.
#[derive(Debug, Default)]
pub struct Seen {
    /// Every accepted entry's data, with how often it was accepted.
    pub accepted: HashMap<Vec<u8>, u32>,
    /// Accepted entries' data in acceptance order.
    pub accepted_order: Vec<Vec<u8>>,
    /// Entries received again after having been accepted.
    pub resent_after_success: u64,
    /// Entries received in total (all attempts).
    pub entries_received: u64,
    /// Entries failed per entry, by code.
    pub entry_failures: HashMap<String, u64>,
    /// PutRecords calls received.
    pub put_calls: u64,
    /// Calls by operation name.
    pub calls: HashMap<String, u64>,
    /// When each failed entry's data was failed (for backoff checks).
    pub failed_at: HashMap<Vec<u8>, Instant>,
    /// Gaps between an entry failing and the same data arriving again.
    pub retry_gaps: Vec<Duration>,
    /// Times of every PutRecords call.
    pub put_times: Vec<Instant>,
}

struct State {
    faults: Faults,
    seen: Seen,
    calls: u64,
    entry_counter: u64,
}

pub struct FaultKinesis {
    addr: SocketAddr,
    state: Arc<Mutex<State>>,
    stop: Arc<AtomicBool>,
    /// Down: the port refuses connections and open ones are closed at their next request.
    down: Arc<AtomicBool>,
}

impl FaultKinesis {
    pub fn start(faults: Faults) -> FaultKinesis {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind fault stand-in");
        let addr = listener.local_addr().unwrap();
        listener.set_nonblocking(true).unwrap();
        let state = Arc::new(Mutex::new(State {
            faults,
            seen: Seen::default(),
            calls: 0,
            entry_counter: 0,
        }));
        let stop = Arc::new(AtomicBool::new(false));
        let down = Arc::new(AtomicBool::new(false));
        {
            let state = state.clone();
            let stop = stop.clone();
            let down = down.clone();
            thread::spawn(move || {
                let mut listener = Some(listener);
                while !stop.load(Ordering::Relaxed) {
                    let is_down = down.load(Ordering::Relaxed);
                    let Some(stream) = accept_unless_down(addr, &mut listener, is_down) else {
                        continue;
                    };
                    let state = state.clone();
                    let stop = stop.clone();
                    let down = down.clone();
                    thread::spawn(move || serve(stream, state, stop, down));
                }
            });
        }
        FaultKinesis {
            addr,
            state,
            stop,
            down,
        }
    }

    /// Takes the stand-in down (a Kinesis endpoint that cannot be reached): its port refuses
    /// connections, and a request on a connection opened before is read and left unanswered
    /// (the connection is closed, nothing kept).
    pub fn go_down(&self) {
        self.down.store(true, Ordering::Relaxed);
    }

    /// Brings it back on the same port, with what it had accepted before.
    pub fn come_up(&self) {
        self.down.store(false, Ordering::Relaxed);
    }

    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn set(&self, faults: Faults) {
        self.state.lock().unwrap().faults = faults;
    }

    /// Runs `f` on what was seen so far.
    pub fn seen<R>(&self, f: impl FnOnce(&Seen) -> R) -> R {
        f(&self.state.lock().unwrap().seen)
    }
}

impl Drop for FaultKinesis {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

struct Request {
    target: String,
    body: Vec<u8>,
}

fn read_request(reader: &mut BufReader<TcpStream>) -> Option<Request> {
    let mut line = String::new();
    if reader.read_line(&mut line).ok()? == 0 {
        return None;
    }
    let mut length = 0usize;
    let mut target = String::new();
    loop {
        let mut header = String::new();
        if reader.read_line(&mut header).ok()? == 0 {
            return None;
        }
        let header = header.trim_end();
        if header.is_empty() {
            break;
        }
        let (name, value) = header.split_once(':')?;
        let value = value.trim();
        match name.to_ascii_lowercase().as_str() {
            "content-length" => length = value.parse().ok()?,
            "x-amz-target" => target = value.to_string(),
            _ => {}
        }
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body).ok()?;
    Some(Request { target, body })
}

fn respond(stream: &mut TcpStream, status: u16, body: &str) -> std::io::Result<()> {
    let reason = match status {
        200 => "OK",
        400 => "Bad Request",
        _ => "Internal Server Error",
    };
    write!(
        stream,
        "HTTP/1.1 {status} {reason}\r\nContent-Type: application/x-amz-json-1.1\r\n\
         x-amzn-RequestId: 00000000-0000-0000-0000-000000000000\r\n\
         Content-Length: {}\r\n\r\n{body}",
        body.len()
    )?;
    stream.flush()
}

fn error_body(code: &str, message: &str) -> String {
    serde_json::json!({ "__type": code, "message": message }).to_string()
}

const MAX_HASH: &str = "340282366920938463463374607431768211455";

fn serve(
    stream: TcpStream,
    state: Arc<Mutex<State>>,
    stop: Arc<AtomicBool>,
    down: Arc<AtomicBool>,
) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(30)));
    let mut writer = match stream.try_clone() {
        Ok(w) => w,
        Err(_) => return,
    };
    let mut reader = BufReader::new(stream);
    while !stop.load(Ordering::Relaxed) {
        let Some(request) = read_request(&mut reader) else {
            return;
        };
        if down.load(Ordering::Relaxed) {
            return;
        }
        let operation = request
            .target
            .rsplit('.')
            .next()
            .unwrap_or_default()
            .to_string();
        *state
            .lock()
            .unwrap()
            .seen
            .calls
            .entry(operation.clone())
            .or_default() += 1;
        let (status, body, delay) = match operation.as_str() {
            "DescribeStreamSummary" => {
                if state.lock().unwrap().faults.deny_describe {
                    (
                        400,
                        error_body(
                            "AccessDeniedException",
                            "not authorized: kinesis:DescribeStreamSummary",
                        ),
                        None,
                    )
                } else {
                    (200, describe_body(), None)
                }
            }
            "ListShards" => (200, list_shards_body(), None),
            "PutRecords" => {
                let fault = {
                    let mut st = state.lock().unwrap();
                    st.seen.put_calls += 1;
                    st.seen.put_times.push(Instant::now());
                    let cycle = st.faults.request_cycle.clone();
                    let fault = if cycle.is_empty() {
                        RequestFault::Ok
                    } else {
                        cycle[(st.calls % cycle.len() as u64) as usize]
                    };
                    st.calls += 1;
                    fault
                };
                match fault {
                    RequestFault::Ok => (200, put_records(&state, &request.body), None),
                    RequestFault::Slow(d) => (200, put_records(&state, &request.body), Some(d)),
                    RequestFault::ServerError => {
                        (500, error_body("InternalFailure", "injected server error"), None)
                    }
                    RequestFault::Throttle => (
                        400,
                        error_body(
                            "ProvisionedThroughputExceededException",
                            "Rate exceeded for stream (injected)",
                        ),
                        None,
                    ),
                    RequestFault::AccessDenied => (
                        400,
                        error_body(
                            "AccessDeniedException",
                            "User: arn:aws:iam::123456789012:user/test is not authorized to perform: kinesis:PutRecords",
                        ),
                        None,
                    ),
                    RequestFault::Timeout(d) => {
                        thread::sleep(d);
                        return;
                    }
                    RequestFault::Drop => return,
                }
            }
            other => (400, error_body("UnknownOperationException", other), None),
        };
        if let Some(delay) = delay {
            thread::sleep(delay);
        }
        if respond(&mut writer, status, &body).is_err() {
            return;
        }
    }
}

fn describe_body() -> String {
    serde_json::json!({
        "StreamDescriptionSummary": {
            "StreamName": "faulty",
            "StreamARN": "arn:aws:kinesis:us-east-1:123456789012:stream/faulty",
            "StreamStatus": "ACTIVE",
            "RetentionPeriodHours": 24,
            "StreamCreationTimestamp": 1700000000.0,
            "EnhancedMonitoring": [{"ShardLevelMetrics": []}],
            "EncryptionType": "NONE",
            "OpenShardCount": 1,
            "ConsumerCount": 0
        }
    })
    .to_string()
}

fn list_shards_body() -> String {
    serde_json::json!({
        "Shards": [{
            "ShardId": "shardId-000000000000",
            "HashKeyRange": {"StartingHashKey": "0", "EndingHashKey": MAX_HASH},
            "SequenceNumberRange": {"StartingSequenceNumber": "1"}
        }]
    })
    .to_string()
}

fn put_records(state: &Mutex<State>, body: &[u8]) -> String {
    let request: serde_json::Value = serde_json::from_slice(body).expect("PutRecords JSON body");
    let records = request["Records"].as_array().cloned().unwrap_or_default();
    let mut st = state.lock().unwrap();
    let rate = st.faults.entry_failure_rate;
    let mut results = Vec::new();
    let mut failed = 0;
    for record in records {
        let data = base64::engine::general_purpose::STANDARD
            .decode(record["Data"].as_str().unwrap_or_default())
            .expect("base64 data");
        st.seen.entries_received += 1;
        if st.seen.accepted.contains_key(&data) {
            st.seen.resent_after_success += 1;
        }
        if let Some(at) = st.seen.failed_at.remove(&data) {
            st.seen.retry_gaps.push(at.elapsed());
        }
        st.entry_counter += 1;
        // A deterministic spread: entry n fails when floor(n * rate) moves.
        let n = st.entry_counter as f64;
        let fail = rate > 0.0 && ((n * rate).floor() != ((n - 1.0) * rate).floor());
        if fail {
            failed += 1;
            let code = if st.entry_counter.is_multiple_of(2) {
                "ProvisionedThroughputExceededException"
            } else {
                "InternalFailure"
            };
            *st.seen.entry_failures.entry(code.to_string()).or_default() += 1;
            st.seen.failed_at.insert(data, Instant::now());
            results.push(serde_json::json!({"ErrorCode": code, "ErrorMessage": "injected"}));
        } else {
            *st.seen.accepted.entry(data.clone()).or_default() += 1;
            st.seen.accepted_order.push(data);
            results.push(serde_json::json!({
                "SequenceNumber": format!("{:056}", st.entry_counter),
                "ShardId": "shardId-000000000000"
            }));
        }
    }
    serde_json::json!({"FailedRecordCount": failed, "Records": results}).to_string()
}

impl FaultKinesis {
    /// Entries answered with ProvisionedThroughputExceededException so far.
    pub fn throttled_entries(&self) -> u64 {
        self.seen(|s| {
            s.entry_failures
                .get("ProvisionedThroughputExceededException")
                .copied()
                .unwrap_or(0)
        })
    }
}

/// Environment for a logferry talking to the stand-in: static keys (any are accepted), a
/// region, and nothing from the host's AWS config.
pub const AWS_ENV: &[(&str, &str)] = &[
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
