//! A fault-injecting proxy in front of moto for the AWS JSON 1.1 services (CloudWatch Logs,
//! Firehose): no emulator throttles or refuses single records, so this one does, and forwards
//! everything else to moto unchanged.
//!
//! - Whole calls: the first `n` calls of an operation are answered with an error (e.g.
//!   `ThrottlingException`), nothing forwarded.
//! - Firehose PutRecordBatch: every `k`-th record seen for the first time is refused with
//!   `ServiceUnavailableException`; the others are forwarded to moto in one call, and the
//!   answer merges both, as Firehose's partial failures look. Each record's data is counted,
//!   so a test can tell that exactly the refused records were sent again.
//!
//! It also keeps the headers of each operation's last call (a test can check what the client
//! sent). Requests are forwarded with their signature untouched: use it with moto's auth enforcement
//! off.
#![allow(dead_code)]

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use base64::Engine;

/// What the proxy does.
#[derive(Debug, Clone, Default)]
pub struct Faults {
    /// Operation (the `X-Amz-Target` suffix, e.g. `PutLogEvents`) → (calls to refuse first,
    /// error code, HTTP status).
    pub refuse_first: HashMap<String, (u32, String, u16)>,
    /// Firehose PutRecordBatch: refuse every k-th new record once (0: none).
    pub refuse_every_kth_record: u64,
}

/// What the proxy saw.
#[derive(Debug, Default)]
pub struct Seen {
    /// Calls by operation.
    pub calls: HashMap<String, u64>,
    /// Calls refused whole, by operation.
    pub refused_calls: HashMap<String, u64>,
    /// Firehose records by data: how often each was received.
    pub records_received: HashMap<Vec<u8>, u32>,
    /// Firehose records refused (data), each once.
    pub records_refused: Vec<Vec<u8>>,
    /// The headers of the last call of each operation.
    pub last_headers: HashMap<String, Vec<(String, String)>>,
}

struct State {
    faults: Faults,
    seen: Seen,
    new_records: u64,
}

/// The running proxy; stops when dropped.
pub struct FaultProxy {
    addr: SocketAddr,
    state: Arc<Mutex<State>>,
    stop: Arc<AtomicBool>,
}

impl FaultProxy {
    /// Starts the proxy in front of `upstream` (moto's address).
    pub fn start(upstream: SocketAddr, faults: Faults) -> FaultProxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind fault proxy");
        let addr = listener.local_addr().unwrap();
        listener.set_nonblocking(true).unwrap();
        let state = Arc::new(Mutex::new(State {
            faults,
            seen: Seen::default(),
            new_records: 0,
        }));
        let stop = Arc::new(AtomicBool::new(false));
        {
            let state = state.clone();
            let stop = stop.clone();
            thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    match listener.accept() {
                        Ok((stream, _)) => {
                            let _ = stream.set_nonblocking(false);
                            let state = state.clone();
                            let stop = stop.clone();
                            thread::spawn(move || serve(stream, upstream, state, stop));
                        }
                        Err(_) => thread::sleep(Duration::from_millis(5)),
                    }
                }
            });
        }
        FaultProxy { addr, state, stop }
    }

    /// `http://127.0.0.1:PORT`.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Runs `f` on what was seen so far.
    pub fn seen<R>(&self, f: impl FnOnce(&Seen) -> R) -> R {
        f(&self.state.lock().unwrap().seen)
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

struct Request {
    head: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Request {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

fn read_request(reader: &mut BufReader<TcpStream>) -> Option<Request> {
    let mut head = String::new();
    if reader.read_line(&mut head).ok()? == 0 {
        return None;
    }
    let mut headers = Vec::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).ok()? == 0 {
            return None;
        }
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        let (name, value) = line.split_once(':')?;
        headers.push((name.trim().to_string(), value.trim().to_string()));
    }
    let length: usize = headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0);
    let mut body = vec![0; length];
    reader.read_exact(&mut body).ok()?;
    Some(Request {
        head: head.trim_end().to_string(),
        headers,
        body,
    })
}

/// Sends `request` (with `body`) to moto on a connection of its own; its status, content type
/// and body.
fn forward(upstream: SocketAddr, request: &Request, body: &[u8]) -> Option<(u16, String, Vec<u8>)> {
    let mut conn = TcpStream::connect(upstream).ok()?;
    let mut out = format!("{}\r\n", request.head);
    for (name, value) in &request.headers {
        if ["content-length", "connection", "host"].contains(&name.to_ascii_lowercase().as_str()) {
            continue;
        }
        out.push_str(&format!("{name}: {value}\r\n"));
    }
    out.push_str(&format!(
        "Host: {upstream}\r\nConnection: close\r\nContent-Length: {}\r\n\r\n",
        body.len()
    ));
    conn.write_all(out.as_bytes()).ok()?;
    conn.write_all(body).ok()?;
    let mut response = Vec::new();
    conn.read_to_end(&mut response).ok()?;
    let split = response.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = String::from_utf8_lossy(&response[..split]).into_owned();
    let mut body = response[split + 4..].to_vec();
    let status = head.split_whitespace().nth(1)?.parse().ok()?;
    let mut content_type = "application/x-amz-json-1.1".to_string();
    let mut length = None;
    for line in head.lines().skip(1) {
        if let Some((name, value)) = line.split_once(':') {
            match name.trim().to_ascii_lowercase().as_str() {
                "content-type" => content_type = value.trim().to_string(),
                "content-length" => length = value.trim().parse::<usize>().ok(),
                _ => {}
            }
        }
    }
    if let Some(length) = length {
        body.truncate(length);
    }
    Some((status, content_type, body))
}

fn respond(stream: &mut TcpStream, status: u16, content_type: &str, body: &[u8]) -> bool {
    let head = format!(
        "HTTP/1.1 {status} X\r\nContent-Type: {content_type}\r\n\
         x-amzn-RequestId: 00000000-0000-0000-0000-000000000000\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).is_ok() && stream.write_all(body).is_ok()
}

fn serve(stream: TcpStream, upstream: SocketAddr, state: Arc<Mutex<State>>, stop: Arc<AtomicBool>) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(30)));
    let Ok(mut writer) = stream.try_clone() else {
        return;
    };
    let mut reader = BufReader::new(stream);
    while !stop.load(Ordering::Relaxed) {
        let Some(request) = read_request(&mut reader) else {
            return;
        };
        let operation = request
            .header("x-amz-target")
            .and_then(|t| t.rsplit('.').next())
            .unwrap_or_default()
            .to_string();
        let refusal = {
            let mut st = state.lock().unwrap();
            st.seen
                .last_headers
                .insert(operation.clone(), request.headers.clone());
            let call = {
                let n = st.seen.calls.entry(operation.clone()).or_default();
                *n += 1;
                *n
            };
            match st.faults.refuse_first.get(&operation).cloned() {
                Some((first, code, status)) if call <= u64::from(first) => {
                    *st.seen.refused_calls.entry(operation.clone()).or_default() += 1;
                    Some((code, status))
                }
                _ => None,
            }
        };
        let answer = match refusal {
            Some((code, status)) => {
                let body = serde_json::json!({"__type": code, "message": "injected"}).to_string();
                Some((
                    status,
                    "application/x-amz-json-1.1".to_string(),
                    body.into_bytes(),
                ))
            }
            None if operation == "PutRecordBatch" => put_record_batch(upstream, &request, &state),
            None => forward(upstream, &request, &request.body),
        };
        let Some((status, content_type, body)) = answer else {
            return;
        };
        if !respond(&mut writer, status, &content_type, &body) {
            return;
        }
    }
}

/// Refuses every k-th new record, forwards the others, merges the answers.
fn put_record_batch(
    upstream: SocketAddr,
    request: &Request,
    state: &Mutex<State>,
) -> Option<(u16, String, Vec<u8>)> {
    let mut parsed: serde_json::Value = serde_json::from_slice(&request.body).ok()?;
    let records = parsed["Records"].as_array().cloned().unwrap_or_default();
    let mut refused = Vec::new();
    {
        let mut st = state.lock().unwrap();
        let k = st.faults.refuse_every_kth_record;
        for (i, record) in records.iter().enumerate() {
            let data = base64::engine::general_purpose::STANDARD
                .decode(record["Data"].as_str().unwrap_or_default())
                .ok()?;
            let times = {
                let n = st.seen.records_received.entry(data.clone()).or_default();
                *n += 1;
                *n
            };
            if times == 1 && k > 0 {
                st.new_records += 1;
                if st.new_records.is_multiple_of(k) {
                    refused.push(i);
                    st.seen.records_refused.push(data);
                }
            }
        }
    }
    let kept: Vec<serde_json::Value> = records
        .iter()
        .enumerate()
        .filter(|(i, _)| !refused.contains(i))
        .map(|(_, r)| r.clone())
        .collect();
    let mut answers: Vec<serde_json::Value> = Vec::new();
    if !kept.is_empty() {
        parsed["Records"] = serde_json::Value::Array(kept);
        let body = serde_json::to_vec(&parsed).ok()?;
        let (status, content_type, body) = forward(upstream, request, &body)?;
        if status != 200 {
            return Some((status, content_type, body));
        }
        let answer: serde_json::Value = serde_json::from_slice(&body).ok()?;
        answers = answer["RequestResponses"]
            .as_array()
            .cloned()
            .unwrap_or_default();
    }
    let mut merged = Vec::new();
    let mut forwarded = answers.into_iter();
    for i in 0..records.len() {
        if refused.contains(&i) {
            merged.push(serde_json::json!({
                "ErrorCode": "ServiceUnavailableException",
                "ErrorMessage": "Slow down (injected)"
            }));
        } else {
            merged.push(forwarded.next()?);
        }
    }
    let body = serde_json::json!({
        "FailedPutCount": refused.len(),
        "Encrypted": false,
        "RequestResponses": merged,
    });
    Some((
        200,
        "application/x-amz-json-1.1".to_string(),
        serde_json::to_vec(&body).ok()?,
    ))
}
