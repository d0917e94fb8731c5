//! The forward protocol v1 handshake (Fluentd's `<security>`, Fluent Bit's `Shared_Key`): the
//! server proves nothing is sent before the client shows it knows the shared key (and, with
//! `users`, a username and password).
//!
//! 1. Server: `["HELO", {"nonce": bin, "auth": bin salt or "", "keepalive": true}]`; `auth` is
//!    a fresh salt when users are configured, empty otherwise.
//! 2. Client: `["PING", client_hostname, shared_key_salt, hex(sha512(shared_key_salt +
//!    client_hostname + nonce + shared_key)), username, hex(sha512(auth_salt + username +
//!    password))]` (username and password digest may be empty strings).
//! 3. Server: `["PONG", true, "", self_hostname, hex(sha512(shared_key_salt + self_hostname +
//!    nonce + shared_key))]`, or `["PONG", false, reason, "", ""]` and the connection is
//!    closed.
//!
//! Digests are lowercase hex of SHA-512 over the plain concatenation of the bytes (Fluentd
//! `in_forward.rb`, Fluent Bit `out_forward`). Fluent Bit sends the 16-byte salt as a `str`
//! holding random bytes, so every field is read as bytes, never as UTF-8. Fluent Bit copies the
//! failure reason into a 32-byte buffer: reasons here stay shorter than that.
//!
//! Nothing here logs or displays the key, a password or a digest; the errors carry only what
//! the client claimed to be (hostname, username) and what failed.

use bytes::{Bytes, BytesMut};
use rand::RngCore;
use sha2::{Digest, Sha512};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::protocol::{FrameFinder, FrameStatus, Limits, ProtocolError};
use crate::msgpack::{write, Head, ReadError, Reader};

/// A string that never appears in `Debug` output (configs are debug-printed in places).
#[derive(Clone, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Self {
        Secret(s.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("\"<redacted>\"")
    }
}

/// What a connection must prove, built from the source's options.
#[derive(Clone, Debug)]
pub struct Security {
    pub shared_key: Secret,
    /// Our name in the PONG.
    pub self_hostname: String,
    /// Username and password pairs; empty: no user authentication.
    pub users: Vec<(String, Secret)>,
    /// `false`: a client that sends events without a PING is let through (migration).
    pub require_auth: bool,
}

/// How a connection passed the handshake.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// PING checked, PONG sent.
    Authenticated,
    /// The client sent no PING and `require_auth = false` let it through; its first message
    /// is still in the buffer.
    Unauthenticated,
}

/// Why a handshake failed. The connection is closed; nothing it sent is used.
#[derive(Debug, thiserror::Error)]
pub enum HandshakeError {
    #[error("the client closed the connection during the handshake")]
    Closed,
    #[error("the connection failed during the handshake: {0}")]
    Io(#[from] std::io::Error),
    #[error("the handshake is not valid msgpack or too large: {0}")]
    Frame(#[from] ProtocolError),
    #[error("the client sent {0} instead of a PING: it does not do the shared_key handshake; give it the shared key (Fluentd: <security> shared_key, Fluent Bit: Shared_Key), or set require_auth = false while clients are being changed")]
    NoPing(&'static str),
    #[error("the PING is malformed ({0})")]
    Malformed(&'static str),
    #[error("shared key mismatch (client hostname {hostname:?}); the client must use the same shared_key")]
    SharedKey { hostname: String },
    #[error("username/password mismatch (user {username:?}, client hostname {hostname:?}); check the client's username and password against `users`")]
    Password { username: String, hostname: String },
}

impl HandshakeError {
    /// `(metric, reason)`: failed authentication is an `auth_failure`, anything else an `error`.
    pub fn metric(&self) -> (MetricKind, &'static str) {
        match self {
            HandshakeError::SharedKey { .. } => (MetricKind::AuthFailure, "shared_key"),
            HandshakeError::Password { .. } => (MetricKind::AuthFailure, "password"),
            HandshakeError::NoPing(_) => (MetricKind::AuthFailure, "no_handshake"),
            HandshakeError::Closed | HandshakeError::Io(_) => {
                (MetricKind::Error, "handshake_closed")
            }
            HandshakeError::Frame(_) | HandshakeError::Malformed(_) => {
                (MetricKind::Error, "handshake_invalid")
            }
        }
    }
}

/// Which counter a refused connection goes to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MetricKind {
    AuthFailure,
    Error,
}

/// Largest PING accepted (real ones are ~300 bytes); a bigger first message that starts like a
/// PING is refused as invalid.
const MAX_PING_BYTES: usize = 64 * 1024;

/// Runs the server side of the handshake on a fresh connection. Bytes the client sent after its
/// PING (or, unauthenticated, its first message) are left in `buf` for the message reader.
pub async fn server<S>(
    stream: &mut S,
    buf: &mut BytesMut,
    security: &Security,
) -> Result<Outcome, HandshakeError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    // A fresh nonce per connection (a replayed PING is worthless); the thread-local generator
    // (a CSPRNG seeded from the OS) is not held across an await.
    let (nonce, auth_salt) = {
        let mut rng = rand::rng();
        let mut nonce = [0u8; 16];
        rng.fill_bytes(&mut nonce);
        let mut salt = Vec::new();
        if !security.users.is_empty() {
            salt.resize(16, 0);
            rng.fill_bytes(&mut salt);
        }
        (nonce, salt)
    };
    stream.write_all(&helo(&nonce, &auth_salt)).await?;
    stream.flush().await?;

    let len = match read_ping(stream, buf).await? {
        Read::Ping(len) => len,
        Read::NotPing(_) if !security.require_auth => return Ok(Outcome::Unauthenticated),
        Read::NotPing(what) => return Err(HandshakeError::NoPing(what)),
    };
    let frame = Bytes::copy_from_slice(&buf[..len]);
    let ping = match parse_ping(frame) {
        Ok(ping) => ping,
        Err(PingError::NotPing(what)) => return Err(HandshakeError::NoPing(what)),
        Err(PingError::Malformed(why)) => {
            reply(stream, &pong_failure("invalid ping message")).await;
            return Err(HandshakeError::Malformed(why));
        }
    };
    let _ = buf.split_to(len);
    match check(&ping, &nonce, &auth_salt, security) {
        Ok(()) => {
            let digest = shared_key_digest(
                &ping.shared_key_salt,
                security.self_hostname.as_bytes(),
                &nonce,
                security.shared_key.expose().as_bytes(),
            );
            stream
                .write_all(&pong_success(&security.self_hostname, &digest))
                .await?;
            stream.flush().await?;
            Ok(Outcome::Authenticated)
        }
        Err(e) => {
            let reason = match e {
                HandshakeError::Password { .. } => "username/password mismatch",
                _ => "shared_key mismatch",
            };
            reply(stream, &pong_failure(reason)).await;
            Err(e)
        }
    }
}

/// Best effort: the connection is closed right after, whatever happens.
async fn reply<S: AsyncWrite + Unpin>(stream: &mut S, message: &[u8]) {
    if stream.write_all(message).await.is_ok() {
        let _ = stream.flush().await;
    }
    let _ = stream.shutdown().await;
}

/// What the client sent first.
enum Read {
    /// A complete `["PING", ...]` frame of this many bytes at the front of the buffer.
    Ping(usize),
    /// Something else (events, a keepalive), told from its first bytes: the client skipped the
    /// handshake. Nothing of it was taken off the buffer.
    NotPing(&'static str),
}

/// Reads until `buf` holds a complete PING, or until its first bytes show it is none (so a
/// client that skipped the handshake is told apart at once, whatever the size of its message).
async fn read_ping<S: AsyncRead + Unpin>(
    stream: &mut S,
    buf: &mut BytesMut,
) -> Result<Read, HandshakeError> {
    let limits = Limits {
        max_frame_bytes: MAX_PING_BYTES,
        max_decompressed_bytes: MAX_PING_BYTES,
    };
    let mut finder = FrameFinder::new(&limits);
    loop {
        if !buf.is_empty() {
            if let Some(what) = not_a_ping(buf) {
                return Ok(Read::NotPing(what));
            }
            if let FrameStatus::Complete(len) = finder.find(buf)? {
                return Ok(Read::Ping(len));
            }
        }
        buf.reserve(4096);
        if stream.read_buf(buf).await? == 0 {
            return Err(HandshakeError::Closed);
        }
    }
}

/// `Some(what)` when the bytes received so far cannot be the start of `["PING", ...]`.
fn not_a_ping(buf: &[u8]) -> Option<&'static str> {
    let mut r = Reader::new(Bytes::copy_from_slice(&buf[..buf.len().min(16)]));
    match r.read_head() {
        Ok(Head::Array(_)) => {}
        Ok(Head::Nil) => return Some("a keepalive"),
        Ok(_) => return Some("a message that is not an array"),
        Err(ReadError::Incomplete { .. }) => return None,
        Err(ReadError::Malformed { .. }) => return Some("invalid msgpack"),
    }
    match r.peek() {
        // A tag of another length: an event message, however long it is.
        Ok(Head::Str(n) | Head::Bin(n)) if n != 4 => return Some("an event message"),
        Ok(Head::Str(_) | Head::Bin(_)) => {}
        Ok(_) => return Some("an event message"),
        Err(ReadError::Incomplete { .. }) => return None,
        Err(ReadError::Malformed { .. }) => return Some("invalid msgpack"),
    }
    match r.read_str_or_bin() {
        Ok(Some(first)) if first.as_ref() == b"PING" => None,
        Ok(_) => Some("an event message"),
        Err(ReadError::Incomplete { .. }) => None,
        Err(ReadError::Malformed { .. }) => Some("invalid msgpack"),
    }
}

/// The fields of a PING that are checked.
#[derive(Debug)]
pub struct Ping {
    pub hostname: Bytes,
    pub shared_key_salt: Bytes,
    pub shared_key_hexdigest: Bytes,
    pub username: Bytes,
    pub password_hexdigest: Bytes,
}

/// Why a frame is not a usable PING.
#[derive(Debug, PartialEq, Eq)]
pub enum PingError {
    /// Some other message (events, a keepalive): the client skipped the handshake.
    NotPing(&'static str),
    /// `["PING", ...]` with wrong fields.
    Malformed(&'static str),
}

/// Decodes `["PING", hostname, salt, digest, username, password_digest]` (str or bin each).
pub fn parse_ping(frame: Bytes) -> Result<Ping, PingError> {
    let mut r = Reader::new(frame);
    let bad = |_: ReadError| PingError::Malformed("truncated");
    let len = match r.read_head() {
        Ok(Head::Array(n)) => n,
        Ok(Head::Nil) => return Err(PingError::NotPing("a keepalive")),
        _ => return Err(PingError::NotPing("a message that is not an array")),
    };
    match r.read_str_or_bin() {
        Ok(Some(first)) if first.as_ref() == b"PING" => {}
        _ => return Err(PingError::NotPing("an event message")),
    }
    if len != 6 {
        return Err(PingError::Malformed("not 6 elements"));
    }
    let mut field = |what: &'static str| match r.read_str_or_bin() {
        Ok(Some(b)) => Ok(b),
        Ok(None) => Err(PingError::Malformed(what)),
        Err(e) => Err(bad(e)),
    };
    Ok(Ping {
        hostname: field("the hostname is not a string")?,
        shared_key_salt: field("the shared key salt is not a string")?,
        shared_key_hexdigest: field("the shared key digest is not a string")?,
        username: field("the username is not a string")?,
        password_hexdigest: field("the password digest is not a string")?,
    })
}

/// Verifies the PING against our key and users.
fn check(
    ping: &Ping,
    nonce: &[u8],
    auth_salt: &[u8],
    security: &Security,
) -> Result<(), HandshakeError> {
    let hostname = String::from_utf8_lossy(&ping.hostname).into_owned();
    let expected = shared_key_digest(
        &ping.shared_key_salt,
        &ping.hostname,
        nonce,
        security.shared_key.expose().as_bytes(),
    );
    if !digest_eq(&expected, &ping.shared_key_hexdigest) {
        return Err(HandshakeError::SharedKey { hostname });
    }
    if security.users.is_empty() {
        return Ok(());
    }
    // Every configured user is tried, so the time taken does not tell which names exist.
    let mut ok = false;
    for (username, password) in &security.users {
        let expected = password_digest(auth_salt, username.as_bytes(), password.expose());
        let name_matches = username.as_bytes() == ping.username.as_ref();
        ok |= name_matches & digest_eq(&expected, &ping.password_hexdigest);
    }
    if ok {
        Ok(())
    } else {
        Err(HandshakeError::Password {
            username: String::from_utf8_lossy(&ping.username).into_owned(),
            hostname,
        })
    }
}

/// `hex(sha512(salt + hostname + nonce + shared_key))`, lowercase: the PING's and the PONG's
/// shared key digest.
pub fn shared_key_digest(salt: &[u8], hostname: &[u8], nonce: &[u8], shared_key: &[u8]) -> String {
    let mut h = Sha512::new();
    h.update(salt);
    h.update(hostname);
    h.update(nonce);
    h.update(shared_key);
    hex::encode(h.finalize())
}

/// `hex(sha512(auth_salt + username + password))`, lowercase: the PING's password digest.
pub fn password_digest(auth_salt: &[u8], username: &[u8], password: &str) -> String {
    let mut h = Sha512::new();
    h.update(auth_salt);
    h.update(username);
    h.update(password.as_bytes());
    hex::encode(h.finalize())
}

/// Compares a computed lowercase hex digest with what the client sent, in time that does not
/// depend on where they differ. Upper-case hex from a client is accepted.
fn digest_eq(expected: &str, given: &[u8]) -> bool {
    if expected.len() != given.len() {
        return false;
    }
    expected
        .bytes()
        .zip(given)
        .fold(0u8, |acc, (a, b)| acc | (a ^ b.to_ascii_lowercase()))
        == 0
}

/// `["HELO", {"nonce": bin, "auth": bin or "", "keepalive": true}]`
pub fn helo(nonce: &[u8], auth_salt: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(64);
    // Lengths are 16 bytes or constants: writing cannot fail.
    let _ = write::write_array_len(&mut out, 2);
    let _ = write::write_str(&mut out, b"HELO");
    let _ = write::write_map_len(&mut out, 3);
    let _ = write::write_str(&mut out, b"nonce");
    let _ = write::write_bin(&mut out, nonce);
    let _ = write::write_str(&mut out, b"auth");
    if auth_salt.is_empty() {
        // As Fluentd: an empty string when no user authentication is asked for.
        let _ = write::write_str(&mut out, b"");
    } else {
        let _ = write::write_bin(&mut out, auth_salt);
    }
    let _ = write::write_str(&mut out, b"keepalive");
    write::write_bool(&mut out, true);
    out
}

fn pong_success(self_hostname: &str, digest: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(160 + self_hostname.len());
    let _ = write::write_array_len(&mut out, 5);
    let _ = write::write_str(&mut out, b"PONG");
    write::write_bool(&mut out, true);
    let _ = write::write_str(&mut out, b"");
    let _ = write::write_str(&mut out, self_hostname.as_bytes());
    let _ = write::write_str(&mut out, digest.as_bytes());
    out
}

fn pong_failure(reason: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(40);
    let _ = write::write_array_len(&mut out, 5);
    let _ = write::write_str(&mut out, b"PONG");
    write::write_bool(&mut out, false);
    let _ = write::write_str(&mut out, reason.as_bytes());
    let _ = write::write_str(&mut out, b"");
    let _ = write::write_str(&mut out, b"");
    out
}

/// The machine's hostname (the default `self_hostname`), as Fluentd's `Socket.gethostname`.
pub fn machine_hostname() -> String {
    ["/proc/sys/kernel/hostname", "/etc/hostname"]
        .iter()
        .filter_map(|p| std::fs::read_to_string(p).ok())
        .map(|s| s.trim().to_string())
        .find(|s| !s.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok().filter(|s| !s.is_empty()))
        .unwrap_or_else(|| "localhost".to_string())
}

#[cfg(test)]
#[path = "handshake_tests.rs"]
mod tests;
