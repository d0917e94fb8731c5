//! The handshake against the protocol's definitions, with a client written here from the
//! specification (Forward Protocol Specification v1, "Handshake Messages") over an in-memory
//! stream. Expected digests are known vectors computed with Python's `hashlib`, not with the
//! code under test:
//!
//! ```text
//! python3 -c "import hashlib; print(hashlib.sha512(bytes(range(16)) + b'client.example'
//!     + bytes(0xff - i for i in range(16)) + b's3cret key').hexdigest())"
//! python3 -c "import hashlib; print(hashlib.sha512(b'\x10' * 16 + b'alice'
//!     + 'pässword'.encode()).hexdigest())"
//! ```

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};

use super::*;
use crate::event::Value;

const SHARED_KEY_VECTOR: &str = "7874747c69aa1f4e47bcf4a1bdfc2a21ed64f8a5d16ba1b57ced26cc304ee85b85f8481c3d08408f099db30cc08375dbefa0cabe53bcc83658e5d589c8afe0d1";
const PASSWORD_VECTOR: &str = "c53ee38f1c204622095a0d1ab18ba6c9d844d8f443004fc9a35d23844c0e4e0cd0ded6bb19820ddddc4663200714198ff5718843ea9a7575bbdd8b2fdaa36a4b";

#[test]
fn digests_match_the_specification_vectors() {
    let salt: Vec<u8> = (0..16).collect();
    let nonce: Vec<u8> = (0..16).map(|i| 0xff - i).collect();
    assert_eq!(
        shared_key_digest(&salt, b"client.example", &nonce, b"s3cret key"),
        SHARED_KEY_VECTOR
    );
    assert_eq!(
        password_digest(&[0x10; 16], b"alice", "pässword"),
        PASSWORD_VECTOR
    );
    // Any change of an input changes the digest (the order of the parts matters).
    assert_ne!(
        shared_key_digest(&nonce, b"client.example", &salt, b"s3cret key"),
        SHARED_KEY_VECTOR
    );
}

#[test]
fn digest_comparison_accepts_only_the_same_digest() {
    assert!(digest_eq(SHARED_KEY_VECTOR, SHARED_KEY_VECTOR.as_bytes()));
    assert!(digest_eq(
        SHARED_KEY_VECTOR,
        SHARED_KEY_VECTOR.to_ascii_uppercase().as_bytes()
    ));
    let mut other = SHARED_KEY_VECTOR.as_bytes().to_vec();
    other[127] = b'0';
    assert!(!digest_eq(SHARED_KEY_VECTOR, &other));
    assert!(!digest_eq(SHARED_KEY_VECTOR, &other[..64]));
    assert!(!digest_eq(SHARED_KEY_VECTOR, b""));
}

#[test]
fn secrets_are_redacted_in_debug_output() {
    let s = Security {
        shared_key: Secret::new("hunter2-key"),
        self_hostname: "agg".into(),
        users: vec![("alice".into(), Secret::new("alice-password"))],
        require_auth: true,
    };
    let text = format!("{s:?}");
    assert!(!text.contains("hunter2-key") && !text.contains("alice-password"));
    assert!(text.contains("alice"), "usernames are not secret: {text}");
}

fn security(users: &[(&str, &str)]) -> Security {
    Security {
        shared_key: Secret::new("s3cret key"),
        self_hostname: "aggregator".into(),
        users: users
            .iter()
            .map(|(u, p)| (u.to_string(), Secret::new(*p)))
            .collect(),
        require_auth: true,
    }
}

/// Reads one msgpack value from the client's side.
async fn read_value(s: &mut DuplexStream) -> Value {
    let mut buf = Vec::new();
    loop {
        if !buf.is_empty() {
            let mut r = Reader::new(Bytes::from(buf.clone()));
            if let Ok(v) = r.read_value() {
                return v;
            }
        }
        let mut chunk = [0u8; 512];
        let n = s.read(&mut chunk).await.unwrap();
        assert!(n > 0, "server closed before a whole message");
        buf.extend_from_slice(&chunk[..n]);
    }
}

fn bytes_of(v: &Value) -> Vec<u8> {
    match v {
        Value::Str(b) | Value::Bin(b) => b.to_vec(),
        other => panic!("not a string: {other:?}"),
    }
}

fn items(v: &Value) -> &[Value] {
    match v {
        Value::Array(a) => a,
        other => panic!("not an array: {other:?}"),
    }
}

fn field<'a>(map: &'a Value, key: &str) -> &'a Value {
    match map {
        Value::Map(m) => m
            .iter()
            .find(|(k, _)| k.as_ref() == key.as_bytes())
            .map(|(_, v)| v)
            .unwrap_or_else(|| panic!("no {key} in {map:?}")),
        other => panic!("not a map: {other:?}"),
    }
}

/// `["PING", host, salt, digest, user, password_digest]`, the salt a `str` of raw bytes as
/// Fluent Bit sends it.
fn ping(host: &str, salt: &[u8], digest: &str, user: &str, password_digest: &str) -> Vec<u8> {
    let mut out = Vec::new();
    rmp::encode::write_array_len(&mut out, 6).unwrap();
    rmp::encode::write_str(&mut out, "PING").unwrap();
    rmp::encode::write_str(&mut out, host).unwrap();
    rmp::encode::write_str_len(&mut out, salt.len() as u32).unwrap();
    out.extend_from_slice(salt);
    rmp::encode::write_str(&mut out, digest).unwrap();
    rmp::encode::write_str(&mut out, user).unwrap();
    rmp::encode::write_str(&mut out, password_digest).unwrap();
    out
}

struct Client {
    key: &'static str,
    user: &'static str,
    password: &'static str,
    /// Sent right after the PING, in the same write.
    trailing: Vec<u8>,
}

/// Runs the server against a client following the spec; returns the server's result, what
/// the server left in its buffer, and the PONG.
async fn exchange(
    security: &Security,
    client: Client,
) -> (Result<Outcome, HandshakeError>, BytesMut, Value) {
    let (mut server_side, mut client_side) = tokio::io::duplex(4096);
    let sec = security.clone();
    let server = tokio::spawn(async move {
        let mut buf = BytesMut::new();
        let r = server(&mut server_side, &mut buf, &sec).await;
        (r, buf)
    });
    let helo = read_value(&mut client_side).await;
    let helo = items(&helo);
    assert_eq!(bytes_of(&helo[0]), b"HELO");
    let nonce = bytes_of(field(&helo[1], "nonce"));
    assert_eq!(nonce.len(), 16);
    assert!(matches!(field(&helo[1], "nonce"), Value::Bin(_)));
    assert_eq!(field(&helo[1], "keepalive"), &Value::Bool(true));
    let auth = bytes_of(field(&helo[1], "auth"));
    assert_eq!(auth.len(), if security.users.is_empty() { 0 } else { 16 });
    // Not valid UTF-8, on purpose: Fluent Bit's salt is random bytes in a str.
    let salt: Vec<u8> = (0..16).map(|i| 0xf0 ^ i).collect();
    let digest = shared_key_digest(&salt, b"client-1", &nonce, client.key.as_bytes());
    let password = if client.user.is_empty() {
        String::new()
    } else {
        password_digest(&auth, client.user.as_bytes(), client.password)
    };
    let mut msg = ping("client-1", &salt, &digest, client.user, &password);
    msg.extend_from_slice(&client.trailing);
    client_side.write_all(&msg).await.unwrap();
    let pong = read_value(&mut client_side).await;
    // The server's PONG digest proves it knows the key too.
    let p = items(&pong);
    if p[1] == Value::Bool(true) {
        assert_eq!(bytes_of(&p[3]), b"aggregator");
        let expected = shared_key_digest(&salt, b"aggregator", &nonce, client.key.as_bytes());
        assert_eq!(bytes_of(&p[4]), expected.as_bytes());
    }
    let (r, buf) = server.await.unwrap();
    (r, buf, pong)
}

#[tokio::test]
async fn right_key_is_accepted_and_later_bytes_are_kept() {
    let (r, buf, pong) = exchange(
        &security(&[]),
        Client {
            key: "s3cret key",
            user: "",
            password: "",
            trailing: vec![0xc0, 0x93],
        },
    )
    .await;
    assert_eq!(r.unwrap(), Outcome::Authenticated);
    let p = items(&pong);
    assert_eq!(bytes_of(&p[0]), b"PONG");
    assert_eq!(p[1], Value::Bool(true));
    assert_eq!(bytes_of(&p[2]), b"");
    assert_eq!(&buf[..], &[0xc0, 0x93]);
}

#[tokio::test]
async fn wrong_key_gets_a_failed_pong_with_a_reason() {
    let (r, _, pong) = exchange(
        &security(&[]),
        Client {
            key: "not the key",
            user: "",
            password: "",
            trailing: Vec::new(),
        },
    )
    .await;
    let e = r.unwrap_err();
    assert!(matches!(&e, HandshakeError::SharedKey { hostname } if hostname == "client-1"));
    assert_eq!(e.metric(), (MetricKind::AuthFailure, "shared_key"));
    let text = e.to_string();
    assert!(
        !text.contains("s3cret") && !text.contains("not the key"),
        "{text}"
    );
    let p = items(&pong);
    assert_eq!(p[1], Value::Bool(false));
    let reason = bytes_of(&p[2]);
    assert_eq!(reason, b"shared_key mismatch");
    assert!(
        reason.len() < 32,
        "Fluent Bit copies the reason into 32 bytes"
    );
    assert_eq!(bytes_of(&p[4]), b"", "no digest in a failed PONG");
}

#[tokio::test]
async fn users_must_give_a_listed_name_and_its_password() {
    let sec = security(&[("bob", "bob-pass"), ("alice", "pässword")]);
    let ok = |user, password| Client {
        key: "s3cret key",
        user,
        password,
        trailing: Vec::new(),
    };
    let (r, _, _) = exchange(&sec, ok("alice", "pässword")).await;
    assert_eq!(r.unwrap(), Outcome::Authenticated);
    for (user, password) in [("alice", "bob-pass"), ("carol", "pässword"), ("", "")] {
        let (r, _, pong) = exchange(&sec, ok(user, password)).await;
        let e = r.unwrap_err();
        assert!(matches!(e, HandshakeError::Password { .. }), "{user}: {e}");
        assert_eq!(e.metric(), (MetricKind::AuthFailure, "password"));
        assert!(!e.to_string().contains(password) || password.is_empty());
        assert_eq!(bytes_of(&items(&pong)[2]), b"username/password mismatch");
    }
}

/// A client that sends events right away, as Fluent Bit does without `tls on`.
async fn skip_handshake(
    require_auth: bool,
) -> (Result<Outcome, HandshakeError>, BytesMut, Vec<u8>) {
    let mut sec = security(&[]);
    sec.require_auth = require_auth;
    let (mut server_side, mut client_side) = tokio::io::duplex(4096);
    let mut event = Vec::new();
    rmp::encode::write_array_len(&mut event, 3).unwrap();
    rmp::encode::write_str(&mut event, "app.some.long.tag").unwrap();
    rmp::encode::write_uint(&mut event, 1_700_000_000).unwrap();
    rmp::encode::write_map_len(&mut event, 0).unwrap();
    client_side.write_all(&event).await.unwrap();
    let mut buf = BytesMut::new();
    let r = server(&mut server_side, &mut buf, &sec).await;
    (r, buf, event)
}

#[tokio::test]
async fn events_without_a_ping_are_refused_unless_auth_is_optional() {
    let (r, _, _) = skip_handshake(true).await;
    let e = r.unwrap_err();
    assert!(matches!(e, HandshakeError::NoPing(_)), "{e}");
    assert_eq!(e.metric(), (MetricKind::AuthFailure, "no_handshake"));
    let (r, buf, event) = skip_handshake(false).await;
    assert_eq!(r.unwrap(), Outcome::Unauthenticated);
    assert_eq!(
        &buf[..],
        &event[..],
        "the first message stays for the reader"
    );
}

#[test]
fn malformed_pings_are_told_apart_from_other_messages() {
    let frame = |v: Vec<u8>| parse_ping(Bytes::from(v));
    assert_eq!(
        frame(vec![0xc0]).unwrap_err(),
        PingError::NotPing("a keepalive")
    );
    let mut short = Vec::new();
    rmp::encode::write_array_len(&mut short, 2).unwrap();
    rmp::encode::write_str(&mut short, "PING").unwrap();
    rmp::encode::write_str(&mut short, "host").unwrap();
    assert_eq!(
        frame(short).unwrap_err(),
        PingError::Malformed("not 6 elements")
    );
    let mut wrong_type = Vec::new();
    rmp::encode::write_array_len(&mut wrong_type, 6).unwrap();
    rmp::encode::write_str(&mut wrong_type, "PING").unwrap();
    rmp::encode::write_uint(&mut wrong_type, 7).unwrap();
    assert!(matches!(frame(wrong_type), Err(PingError::Malformed(_))));
    assert_eq!(not_a_ping(&[0x93]), None, "wait for more");
    assert_eq!(not_a_ping(&[0x96, 0xa4, b'P']), None, "wait for more");
    assert_eq!(not_a_ping(&[0x93, 0xa5]), Some("an event message"));
    assert_eq!(not_a_ping(&[0x81]), Some("a message that is not an array"));
}

#[tokio::test]
async fn a_client_closing_mid_handshake_is_an_error() {
    let (mut server_side, client_side) = tokio::io::duplex(4096);
    drop(client_side);
    let mut buf = BytesMut::new();
    let r = server(&mut server_side, &mut buf, &security(&[])).await;
    assert!(
        matches!(r, Err(HandshakeError::Io(_) | HandshakeError::Closed)),
        "{r:?}"
    );
}
