//! A Lambda Runtime API stand-in (the three endpoints a custom runtime uses, plus init/error)
//! and a handle on the real `logferry-lambda` binary running against it. The stand-ins the
//! function delivers to (moto, tansu) and the readers of what arrived are the test kit's.
//!
//! Protocol: the function long-polls `GET /2018-06-01/runtime/invocation/next`, which answers
//! with the event and the `Lambda-Runtime-Aws-Request-Id` / `Lambda-Runtime-Deadline-Ms`
//! headers; it answers with `POST .../invocation/{id}/response` or `.../{id}/error`.

#![allow(dead_code)]

use std::collections::{HashMap, VecDeque};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use logferry_test_kit::paths::fixture_path;
use logferry_test_kit::wait::wait_for_exit;
use serde_json::Value;

/// What the function answered.
#[derive(Debug, Clone, PartialEq)]
pub enum Reply {
    Response(Value),
    Error(Value),
}

impl Reply {
    pub fn response(self) -> Value {
        match self {
            Reply::Response(v) => v,
            Reply::Error(e) => panic!("the invocation failed: {e}"),
        }
    }

    pub fn error(self) -> Value {
        match self {
            Reply::Error(e) => e,
            Reply::Response(v) => panic!("the invocation succeeded: {v}"),
        }
    }
}

struct Invocation {
    id: String,
    body: Vec<u8>,
    deadline_ms: u128,
}

#[derive(Default)]
struct Inner {
    queue: VecDeque<Invocation>,
    replies: HashMap<String, Reply>,
    init_error: Option<Value>,
    first_poll: Option<Instant>,
    next_id: u64,
}

#[derive(Default)]
struct State {
    inner: Mutex<Inner>,
    changed: Condvar,
}

/// The Runtime API server, on a free loopback port.
pub struct RuntimeApi {
    pub addr: SocketAddr,
    state: Arc<State>,
}

impl RuntimeApi {
    pub fn start() -> RuntimeApi {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the Runtime API stand-in");
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(State::default());
        let s = state.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { continue };
                let s = s.clone();
                std::thread::spawn(move || serve(conn, &s));
            }
        });
        RuntimeApi { addr, state }
    }

    /// When the function first asked for an invocation (it is initialised by then).
    pub fn wait_ready(&self, timeout: Duration) -> Option<Instant> {
        let inner = self.state.inner.lock().unwrap();
        let (inner, _) = self
            .state
            .changed
            .wait_timeout_while(inner, timeout, |i| {
                i.first_poll.is_none() && i.init_error.is_none()
            })
            .unwrap();
        inner.first_poll
    }

    /// Queues an event with `budget` until its deadline and waits for the answer (at most the
    /// budget plus 20 s).
    pub fn invoke(&self, body: &[u8], budget: Duration) -> Reply {
        let deadline_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_millis()
            + budget.as_millis();
        let id = {
            let mut inner = self.state.inner.lock().unwrap();
            inner.next_id += 1;
            let id = format!("req-{}", inner.next_id);
            inner.queue.push_back(Invocation {
                id: id.clone(),
                body: body.to_vec(),
                deadline_ms,
            });
            id
        };
        self.state.changed.notify_all();
        let inner = self.state.inner.lock().unwrap();
        let (mut inner, timed_out) = self
            .state
            .changed
            .wait_timeout_while(inner, budget + Duration::from_secs(20), |i| {
                !i.replies.contains_key(&id)
            })
            .unwrap();
        assert!(
            !timed_out.timed_out(),
            "no answer to invocation {id} within its budget + 20 s"
        );
        inner.replies.remove(&id).unwrap()
    }
}

fn read_request(reader: &mut BufReader<TcpStream>) -> Option<(String, String, Vec<u8>)> {
    let mut line = String::new();
    if reader.read_line(&mut line).ok()? == 0 {
        return None;
    }
    let mut parts = line.split_whitespace();
    let method = parts.next()?.to_string();
    let path = parts.next()?.to_string();
    let mut length = 0usize;
    loop {
        let mut header = String::new();
        reader.read_line(&mut header).ok()?;
        let header = header.trim_end();
        if header.is_empty() {
            break;
        }
        if let Some((name, value)) = header.split_once(':') {
            if name.eq_ignore_ascii_case("content-length") {
                length = value.trim().parse().ok()?;
            }
        }
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body).ok()?;
    Some((method, path, body))
}

fn respond(mut conn: &TcpStream, status: &str, headers: &[(String, String)], body: &[u8]) {
    let mut out = format!(
        "HTTP/1.1 {status}\r\ncontent-length: {}\r\ncontent-type: application/json\r\n",
        body.len()
    );
    for (k, v) in headers {
        out.push_str(&format!("{k}: {v}\r\n"));
    }
    out.push_str("\r\n");
    let _ = conn.write_all(out.as_bytes());
    let _ = conn.write_all(body);
    let _ = conn.flush();
}

/// Serves requests on one connection (keep-alive) until the client closes it.
fn serve(conn: TcpStream, state: &State) {
    let mut reader = BufReader::new(conn.try_clone().unwrap());
    while let Some((method, path, body)) = read_request(&mut reader) {
        let rest = path.strip_prefix("/2018-06-01/runtime/").unwrap_or("");
        if method == "GET" && rest == "invocation/next" {
            let mut inner = state.inner.lock().unwrap();
            if inner.first_poll.is_none() {
                inner.first_poll = Some(Instant::now());
                state.changed.notify_all();
            }
            let mut inner = state
                .changed
                .wait_while(inner, |i| i.queue.is_empty())
                .unwrap();
            let inv = inner.queue.pop_front().unwrap();
            drop(inner);
            let headers = vec![
                ("lambda-runtime-aws-request-id".to_string(), inv.id.clone()),
                (
                    "lambda-runtime-deadline-ms".to_string(),
                    inv.deadline_ms.to_string(),
                ),
                (
                    "lambda-runtime-invoked-function-arn".to_string(),
                    "arn:aws:lambda:us-east-1:123456789012:function:logferry".to_string(),
                ),
                (
                    "lambda-runtime-trace-id".to_string(),
                    "Root=1-00000000-000000000000000000000000".to_string(),
                ),
            ];
            respond(&conn, "200 OK", &headers, &inv.body);
        } else if method == "POST" && rest == "init/error" {
            let mut inner = state.inner.lock().unwrap();
            inner.init_error = Some(serde_json::from_slice(&body).unwrap_or(Value::Null));
            state.changed.notify_all();
            drop(inner);
            respond(&conn, "202 Accepted", &[], b"{}");
        } else if let Some(tail) = rest.strip_prefix("invocation/") {
            let (id, kind) = tail.split_once('/').unwrap_or((tail, ""));
            let value: Value = serde_json::from_slice(&body)
                .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&body).into_owned()));
            let reply = match kind {
                "response" => Reply::Response(value),
                "error" => Reply::Error(value),
                _ => {
                    respond(&conn, "404 Not Found", &[], b"{}");
                    continue;
                }
            };
            let mut inner = state.inner.lock().unwrap();
            inner.replies.insert(id.to_string(), reply);
            state.changed.notify_all();
            drop(inner);
            respond(&conn, "202 Accepted", &[], b"{}");
        } else {
            respond(&conn, "404 Not Found", &[], b"{}");
        }
    }
}

/// The real `logferry-lambda` binary, killed on drop.
pub struct Function {
    child: Child,
    pub api: RuntimeApi,
    pub log: PathBuf,
    /// Time from spawn to the first poll of the Runtime API (init).
    pub init: Duration,
}

impl Function {
    /// Starts the function with `env` (plus the variables Lambda always sets) in `dir`.
    pub fn start(dir: &Path, env: &[(&str, &str)]) -> Function {
        Function::start_program(
            &[PathBuf::from(env!("CARGO_BIN_EXE_logferry-lambda"))],
            dir,
            env,
        )
    }

    /// As [`Function::start`], with another program: `program[0]` run with the rest as its
    /// first arguments (a deployment zip's `bootstrap`, or `qemu-aarch64 bootstrap`).
    pub fn start_program(program: &[PathBuf], dir: &Path, env: &[(&str, &str)]) -> Function {
        let api = RuntimeApi::start();
        let log = dir.join("function.log");
        let stderr = std::fs::File::create(&log).unwrap();
        let mut cmd = Command::new(&program[0]);
        cmd.args(&program[1..]);
        cmd.env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("AWS_LAMBDA_RUNTIME_API", api.addr.to_string())
            .env("AWS_LAMBDA_FUNCTION_NAME", "logferry")
            .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "128")
            .env("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST")
            .env("AWS_REGION", "us-east-1")
            .env("LAMBDA_TASK_ROOT", dir)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let started = Instant::now();
        let child = cmd.spawn().expect("start logferry-lambda");
        let mut f = Function {
            child,
            api,
            log,
            init: Duration::ZERO,
        };
        match f.api.wait_ready(Duration::from_secs(20)) {
            Some(at) => f.init = at - started,
            None => panic!(
                "logferry-lambda did not poll the Runtime API within 20 s; its log:\n{}",
                f.log_text()
            ),
        }
        f
    }

    pub fn invoke(&self, body: &[u8], budget: Duration) -> Reply {
        self.api.invoke(body, budget)
    }

    /// Starts a function whose init must fail; returns what it posted to `/runtime/init/error`
    /// and its exit status.
    pub fn start_failing(dir: &Path, env: &[(&str, &str)]) -> (Value, std::process::ExitStatus) {
        let api = RuntimeApi::start();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_logferry-lambda"));
        cmd.env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("AWS_LAMBDA_RUNTIME_API", api.addr.to_string())
            .env("AWS_LAMBDA_FUNCTION_NAME", "logferry")
            .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "128")
            .env("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST")
            .env("LAMBDA_TASK_ROOT", dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("start logferry-lambda");
        let status = wait_for_exit(&mut child, Duration::from_secs(20), || {
            "logferry-lambda did not exit after a failed init".to_string()
        });
        let error = api.state.inner.lock().unwrap().init_error.clone();
        (error.expect("no POST to /runtime/init/error"), status)
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Function {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// base64(gzip(json)): CloudWatch Logs' payload encoding.
pub fn encode_payload(json: &[u8]) -> String {
    use base64::Engine;
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    enc.write_all(json).unwrap();
    base64::engine::general_purpose::STANDARD.encode(enc.finish().unwrap())
}

/// A direct subscription event holding `json`.
pub fn awslogs_event(json: &[u8]) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({"awslogs": {"data": encode_payload(json)}})).unwrap()
}

/// A DATA_MESSAGE of `n` events whose messages are `size` bytes; ids are `ev-<i>`.
pub fn data_message(n: usize, size: usize) -> Vec<u8> {
    let events: Vec<Value> = (0..n)
        .map(|i| {
            // Pseudo-random hex after a prefix: compresses about as poorly as real log text
            // with ids and numbers in it (roughly 2:1), not like a run of one letter.
            let mut message = format!("line {i:08} ");
            let mut x = (i as u64)
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            while message.len() < size {
                x = x
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                message.push_str(&format!("{:016x}", x >> 1));
            }
            message.truncate(size);
            serde_json::json!({"id": format!("ev-{i}"), "timestamp": 1715679001000u64 + i as u64,
                "message": message})
        })
        .collect();
    serde_json::to_vec(&serde_json::json!({
        "messageType": "DATA_MESSAGE", "owner": "123456789012", "logGroup": "/bench",
        "logStream": "s", "subscriptionFilters": ["f"], "logEvents": events
    }))
    .unwrap()
}

/// A CloudWatch Logs fixture (tests/fixtures/cwlogs, made as its README says).
pub fn fixture(name: &str) -> Vec<u8> {
    let path = fixture_path("cwlogs").join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}
