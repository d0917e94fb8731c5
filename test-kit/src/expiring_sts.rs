//! A loopback HTTP proxy in front of moto that makes web identity credentials short-lived and
//! watches how they are obtained and used, for the IRSA refresh test.
//!
//! - `AssumeRoleWithWebIdentity` (STS, form-encoded, unsigned): recorded (session name, role,
//!   token), forwarded to moto with moto's auth enforcement switched off for that one call
//!   (an unsigned AssumeRoleWithWebIdentity crashes moto while enforcement is on; see
//!   docs/security.md), and answered with `Expiration` rewritten to `lifetime` from now. moto ignores
//!   nothing here: the SDK does not send `DurationSeconds` for web identity, so moto would
//!   grant an hour.
//! - every other request (Kinesis): the access key in its SigV4 `Authorization` header is looked
//!   up among the keys handed out above. A key past its rewritten expiration is answered with
//!   `ExpiredTokenException` instead of being forwarded, as AWS would, and counted; so is a key
//!   the proxy never handed out. Then it is forwarded to moto, which checks the signature and
//!   the role's IAM policy (enforcement on).
//!
//! Requests that arrive while the enforcement switch is off wait (a lock), so every Kinesis
//! call is checked by moto. One request per connection (`Connection: close`).
#![allow(dead_code)]

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::thread;
use std::time::{Duration, SystemTime};

use crate::net::http_request;

/// One AssumeRoleWithWebIdentity call as the proxy saw it.
#[derive(Debug, Clone)]
pub struct WebIdentityCall {
    pub role_session_name: String,
    pub role_arn: String,
    pub token: String,
    /// The access key moto issued (empty when moto refused).
    pub access_key_id: String,
}

/// What the proxy observed.
#[derive(Debug, Clone, Default)]
pub struct Observed {
    pub calls: Vec<WebIdentityCall>,
    /// Requests forwarded to moto, per access key (in first-use order).
    pub uses: Vec<(String, u64)>,
    /// Requests signed with a key whose (shortened) lifetime was over.
    pub expired_uses: u64,
    /// Requests signed with a key the proxy did not hand out.
    pub unknown_key_uses: u64,
}

#[derive(Default)]
struct State {
    observed: Observed,
    expiry: HashMap<String, SystemTime>,
}

pub struct ExpiringSts {
    pub addr: SocketAddr,
    state: Arc<Mutex<State>>,
    stop: Arc<AtomicBool>,
}

impl ExpiringSts {
    /// Listens on a free loopback port, in front of moto at `moto`.
    pub fn start(moto: SocketAddr, lifetime: Duration) -> ExpiringSts {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(Mutex::new(State::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let enforcement = Arc::new(RwLock::new(()));
        {
            let state = state.clone();
            let stop = stop.clone();
            thread::spawn(move || {
                for conn in listener.incoming() {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    let Ok(conn) = conn else { continue };
                    let state = state.clone();
                    let enforcement = enforcement.clone();
                    thread::spawn(move || {
                        let _ = serve(conn, moto, lifetime, &state, &enforcement);
                    });
                }
            });
        }
        ExpiringSts { addr, state, stop }
    }

    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn observed(&self) -> Observed {
        self.state.lock().unwrap().observed.clone()
    }
}

impl Drop for ExpiringSts {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = TcpStream::connect(self.addr); // wakes the accept loop
    }
}

/// A parsed HTTP request.
struct Request {
    head: String,
    body: Vec<u8>,
}

impl Request {
    fn header(&self, name: &str) -> Option<&str> {
        self.head.lines().skip(1).find_map(|line| {
            let (key, value) = line.split_once(':')?;
            key.trim()
                .eq_ignore_ascii_case(name)
                .then_some(value.trim())
        })
    }
}

fn serve(
    mut conn: TcpStream,
    moto: SocketAddr,
    lifetime: Duration,
    state: &Mutex<State>,
    enforcement: &RwLock<()>,
) -> std::io::Result<()> {
    conn.set_read_timeout(Some(Duration::from_secs(30)))?;
    let Some(request) = read_request(&mut conn)? else {
        return Ok(());
    };
    let form = String::from_utf8_lossy(&request.body).into_owned();
    let params = form_params(&form);
    if params.get("Action").map(String::as_str) == Some("AssumeRoleWithWebIdentity") {
        let _exclusive = enforcement.write().unwrap();
        post_control(moto, b"inf");
        let answer = forward(moto, &request);
        post_control(moto, b"0");
        let (head, body) = answer?;
        let body = String::from_utf8_lossy(&body).into_owned();
        let access_key_id = xml_text(&body, "AccessKeyId").unwrap_or_default();
        let expires = SystemTime::now() + lifetime;
        let body = replace_xml_text(&body, "Expiration", &iso8601(expires));
        let mut s = state.lock().unwrap();
        s.observed.calls.push(WebIdentityCall {
            role_session_name: params.get("RoleSessionName").cloned().unwrap_or_default(),
            role_arn: params.get("RoleArn").cloned().unwrap_or_default(),
            token: params.get("WebIdentityToken").cloned().unwrap_or_default(),
            access_key_id: access_key_id.clone(),
        });
        if !access_key_id.is_empty() {
            s.expiry.insert(access_key_id, expires);
        }
        drop(s);
        return respond(&mut conn, &head, body.as_bytes());
    }

    let key = request
        .header("Authorization")
        .and_then(|auth| auth.split("Credential=").nth(1))
        .and_then(|cred| cred.split('/').next())
        .unwrap_or_default()
        .to_string();
    {
        let mut s = state.lock().unwrap();
        match s.expiry.get(&key).copied() {
            Some(expires) if SystemTime::now() >= expires => {
                s.observed.expired_uses += 1;
                drop(s);
                let body = br#"{"__type":"ExpiredTokenException","message":"The security token included in the request is expired"}"#;
                return respond(
                    &mut conn,
                    "HTTP/1.1 400 Bad Request\r\nContent-Type: application/x-amz-json-1.1\r\n",
                    body,
                );
            }
            Some(_) => {}
            None => s.observed.unknown_key_uses += 1,
        }
        match s.observed.uses.iter_mut().find(|(k, _)| *k == key) {
            Some((_, n)) => *n += 1,
            None => s.observed.uses.push((key, 1)),
        }
    }
    let _shared = enforcement.read().unwrap();
    let (head, body) = forward(moto, &request)?;
    respond(&mut conn, &head, &body)
}

fn post_control(moto: SocketAddr, body: &[u8]) {
    let (status, answer) = http_request(moto, "POST", "/moto-api/reset-auth", body);
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&answer));
}

/// Reads one request (head and a Content-Length body); None when the peer closed at once.
fn read_request(conn: &mut TcpStream) -> std::io::Result<Option<Request>> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 16 * 1024];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let n = conn.read(&mut chunk)?;
        if n == 0 {
            return Ok(None);
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let mut request = Request {
        head,
        body: Vec::new(),
    };
    let length: usize = request
        .header("Content-Length")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let mut body = buf[head_end..].to_vec();
    while body.len() < length {
        let n = conn.read(&mut chunk)?;
        if n == 0 {
            break;
        }
        body.extend_from_slice(&chunk[..n]);
    }
    request.body = body;
    Ok(Some(request))
}

/// Sends `request` to moto (one connection) and returns its answer: the head without the
/// length and connection headers, and the decoded body.
fn forward(moto: SocketAddr, request: &Request) -> std::io::Result<(String, Vec<u8>)> {
    let mut upstream = TcpStream::connect(moto)?;
    upstream.set_read_timeout(Some(Duration::from_secs(60)))?;
    let mut head = String::new();
    for (i, line) in request.head.trim_end().lines().enumerate() {
        let name = line.split(':').next().unwrap_or_default().trim();
        if i > 0 && name.eq_ignore_ascii_case("Connection") {
            continue;
        }
        head.push_str(line);
        head.push_str("\r\n");
    }
    head.push_str("Connection: close\r\n\r\n");
    upstream.write_all(head.as_bytes())?;
    upstream.write_all(&request.body)?;
    let mut response = Vec::new();
    upstream.read_to_end(&mut response)?;
    let head_end = response
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map_or(response.len(), |i| i + 4);
    let head = String::from_utf8_lossy(&response[..head_end]).into_owned();
    let chunked = head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked");
    let mut body = response[head_end..].to_vec();
    if chunked {
        body = dechunk(&body);
    }
    let kept: String = head
        .trim_end()
        .lines()
        .filter(|line| {
            let name = line
                .split(':')
                .next()
                .unwrap_or_default()
                .trim()
                .to_ascii_lowercase();
            !matches!(
                name.as_str(),
                "content-length" | "connection" | "transfer-encoding"
            )
        })
        .map(|line| format!("{line}\r\n"))
        .collect();
    Ok((kept, body))
}

fn respond(conn: &mut TcpStream, head: &str, body: &[u8]) -> std::io::Result<()> {
    let head = format!(
        "{head}Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    conn.write_all(head.as_bytes())?;
    conn.write_all(body)?;
    conn.flush()
}

fn dechunk(mut body: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(eol) = body.windows(2).position(|w| w == b"\r\n") {
        let size_text = String::from_utf8_lossy(&body[..eol]);
        let size =
            usize::from_str_radix(size_text.split(';').next().unwrap().trim(), 16).unwrap_or(0);
        if size == 0 {
            break;
        }
        let start = eol + 2;
        out.extend_from_slice(&body[start..start + size]);
        body = &body[start + size + 2..];
    }
    out
}

/// `application/x-www-form-urlencoded` parameters.
fn form_params(form: &str) -> HashMap<String, String> {
    form.split('&')
        .filter_map(|pair| {
            let (k, v) = pair.split_once('=')?;
            Some((percent_decode(k), percent_decode(v)))
        })
        .collect()
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("");
                match u8::from_str_radix(hex, 16) {
                    Ok(b) => {
                        out.push(b);
                        i += 2;
                    }
                    Err(_) => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn xml_text(body: &str, tag: &str) -> Option<String> {
    let open = format!("<{tag}>");
    let start = body.find(&open)? + open.len();
    let end = body[start..].find(&format!("</{tag}>"))? + start;
    Some(body[start..end].trim().to_string())
}

fn replace_xml_text(body: &str, tag: &str, value: &str) -> String {
    let open = format!("<{tag}>");
    let close = format!("</{tag}>");
    match (body.find(&open), body.find(&close)) {
        (Some(start), Some(end)) if end > start => {
            format!("{}{open}{value}{}", &body[..start], &body[end..])
        }
        _ => body.to_string(),
    }
}

fn iso8601(at: SystemTime) -> String {
    chrono::DateTime::<chrono::Utc>::from(at)
        .format("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forms_and_xml() {
        let p = form_params("Action=AssumeRoleWithWebIdentity&RoleSessionName=logferry-irsa&RoleArn=arn%3Aaws%3Aiam%3A%3A1%3Arole%2Fx");
        assert_eq!(p["RoleArn"], "arn:aws:iam::1:role/x");
        assert_eq!(p["RoleSessionName"], "logferry-irsa");
        assert_eq!(
            replace_xml_text("<a><Expiration>x</Expiration></a>", "Expiration", "y"),
            "<a><Expiration>y</Expiration></a>"
        );
        assert_eq!(dechunk(b"3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n"), b"abcde");
    }
}
