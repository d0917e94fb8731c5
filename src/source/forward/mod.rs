//! The `forward` source: a Fluent forward protocol v1 server on TCP and/or a unix socket, as
//! FireLens (Docker's fluentd log driver), Fluent Bit, Fluentd and fluent-logger clients use it.
//!
//! - [`protocol`]: framing and decoding of the four message modes, EventTime, acks.
//! - [`server`]: listeners, connections, backpressure and acks, generic over the stream (TCP,
//!   TLS over TCP, unix socket).
//! - [`handshake`]: the protocol's shared_key / username-password handshake (HELO, PING, PONG).
//! - [`tls`]: the rustls server configuration of the TCP listener.
//!
//! Security applies to the TCP listener only: `tls`, `shared_key` and `users` guard what other
//! hosts can reach, while the unix socket is guarded by its file permissions (`unix_perm`) and
//! its clients (Docker's fluentd driver, FireLens) cannot do the handshake anyway. Both
//! `tls` and the handshake are bounded by `handshake_timeout`, so a client that stalls cannot
//! hold a connection.

pub mod handshake;
pub mod protocol;
pub mod server;
pub mod tls;

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::Deserialize;

use crate::config::field::FieldError;
use crate::config::units::{ByteSize, Duration};

pub use handshake::Secret;
pub use server::start;
pub use tls::TlsConfig;

/// Default TCP address when neither `listen` nor `unix_path` is given.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:24224";

/// Options of `type = "forward"`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ForwardConfig {
    /// TCP `host:port` to listen on. Default `127.0.0.1:24224`, unless only `unix_path` is
    /// given, in which case there is no TCP listener. Use `0.0.0.0:24224` to accept other hosts
    /// (FireLens bridge mode).
    #[serde(default)]
    pub listen: Option<String>,
    /// Unix socket path (FireLens: `/var/run/fluent.sock`). A stale socket file left by a
    /// previous run is replaced; any other kind of file there is an error.
    #[serde(default)]
    pub unix_path: Option<PathBuf>,
    /// Octal permissions of the unix socket, e.g. `"0660"`. Default: the process umask.
    #[serde(default)]
    pub unix_perm: Option<String>,
    /// Largest message accepted (default 16MiB). A bigger or malformed message closes that
    /// connection with a warning and the `frame_too_large` / `malformed_frame` error metric.
    #[serde(default = "default_buffer_max_size")]
    pub buffer_max_size: ByteSize,
    /// Bytes read from a connection at a time (default 64KiB).
    #[serde(default = "default_buffer_chunk_size")]
    pub buffer_chunk_size: ByteSize,
    /// Connections served at once, the TCP listener and the unix socket together (default
    /// 1024). A connection beyond it is accepted and closed at once, counted in
    /// `connections_refused_total{reason="max_connections"}` and logged (rate-limited); its
    /// client reconnects later. With the read buffers this bounds the memory clients can hold:
    /// about `max_connections × (buffer_max_size + buffer_chunk_size)` at worst.
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    /// A connection that sends nothing for this long between messages, while it waits for no
    /// ack, is closed (`connections_timed_out_total{reason="idle"}`). Default `"0s"`: off, as
    /// Fluent Bit's `net.io_timeout`, because Docker's fluentd log driver (FireLens) keeps one
    /// connection per container that stays silent as long as the app does, and a client that
    /// sends without acks over TCP loses the first message written into a connection the
    /// server has closed. Dead TCP peers are found by TCP keepalive instead.
    #[serde(default = "default_idle_timeout")]
    pub idle_timeout: Duration,
    /// A connection that stops sending for this long in the middle of a message is closed
    /// (`connections_timed_out_total{reason="incomplete_message"}`), freeing the partial
    /// message's buffer (up to `buffer_max_size`). Default `"60s"`; `"0s"` turns it off.
    /// Complete messages received before are delivered and acknowledged as usual. It also
    /// bounds how long an ack may wait to be written to a client that does not read
    /// (`connections_timed_out_total{reason="unread_acks"}`).
    #[serde(default = "default_message_timeout")]
    pub message_timeout: Duration,
    /// TLS on the TCP listener (`crt_file`, `key_file`, optional `ca_file` for client
    /// certificates). Default: off. Not applied to the unix socket.
    #[serde(default)]
    pub tls: Option<TlsConfig>,
    /// Shared key of the forward protocol's handshake (Fluentd `<security> shared_key`, Fluent
    /// Bit `Shared_Key`): TCP clients must prove they know it before anything they send is
    /// taken. Default: unset (no handshake).
    #[serde(default)]
    pub shared_key: Option<Secret>,
    /// Handshake with an empty shared key (Fluent Bit's `empty_shared_key`): for user
    /// authentication without a shared key. Default false.
    #[serde(default)]
    pub empty_shared_key: bool,
    /// Our name in the handshake's PONG. Default: the machine's hostname.
    #[serde(default)]
    pub self_hostname: Option<String>,
    /// `[[sources.users]]` with `username` and `password`: when set, a TCP client must also
    /// authenticate as one of them. Needs `shared_key` or `empty_shared_key`.
    #[serde(default)]
    pub users: Vec<ForwardUser>,
    /// With a handshake configured, refuse clients that send events without one (default
    /// true). `false` lets them through, logged and counted, while a fleet's clients are being
    /// given the key; a client that does attempt the handshake must still pass it.
    #[serde(default = "default_true")]
    pub require_auth: bool,
    /// Time a TCP client has for the TLS handshake and the HELO/PING/PONG exchange together
    /// before it is disconnected (default 10s). Applies only with `tls` or a shared key.
    #[serde(default = "default_handshake_timeout")]
    pub handshake_timeout: Duration,
    /// Fluent Bit 2.1+ sends each event as `[[time, metadata], record]`. The metadata map is
    /// dropped unless this names a record key to keep it under (e.g. `"_metadata"`); a record
    /// that already has that key keeps its own value. Default: unset (dropped).
    #[serde(default)]
    pub metadata_key: Option<String>,
}

/// One `[[sources.users]]` entry.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ForwardUser {
    pub username: String,
    pub password: Secret,
}

fn default_true() -> bool {
    true
}

fn default_handshake_timeout() -> Duration {
    Duration::from_secs(10)
}

/// Default `max_connections`.
pub const DEFAULT_MAX_CONNECTIONS: usize = 1024;

fn default_max_connections() -> usize {
    DEFAULT_MAX_CONNECTIONS
}

fn default_idle_timeout() -> Duration {
    Duration::from_secs(0)
}

fn default_message_timeout() -> Duration {
    Duration::from_secs(60)
}

fn default_buffer_max_size() -> ByteSize {
    ByteSize::mib(16)
}

fn default_buffer_chunk_size() -> ByteSize {
    ByteSize::kib(64)
}

impl ForwardConfig {
    /// `idle_timeout`, unless off.
    pub fn idle_timeout(&self) -> Option<std::time::Duration> {
        Some(self.idle_timeout.get()).filter(|d| !d.is_zero())
    }

    /// `message_timeout`, unless off.
    pub fn message_timeout(&self) -> Option<std::time::Duration> {
        Some(self.message_timeout.get()).filter(|d| !d.is_zero())
    }

    /// The TCP address to bind, if any.
    pub fn tcp_listen(&self) -> Option<String> {
        match (&self.listen, &self.unix_path) {
            (Some(l), _) if l.trim().is_empty() || l == "off" => None,
            (Some(l), _) => Some(l.clone()),
            (None, Some(_)) => None,
            (None, None) => Some(DEFAULT_LISTEN.to_string()),
        }
    }

    /// The unix socket permissions as a mode.
    pub fn unix_mode(&self) -> Option<u32> {
        self.unix_perm
            .as_deref()
            .and_then(|p| u32::from_str_radix(p.trim_start_matches("0o"), 8).ok())
    }

    /// What TCP clients must prove, or `None` when no handshake is configured.
    pub fn security(&self) -> Option<handshake::Security> {
        let shared_key = match (&self.shared_key, self.empty_shared_key) {
            (Some(key), _) => key.clone(),
            (None, true) => Secret::default(),
            (None, false) => return None,
        };
        Some(handshake::Security {
            shared_key,
            self_hostname: self
                .self_hostname
                .clone()
                .unwrap_or_else(handshake::machine_hostname),
            users: self
                .users
                .iter()
                .map(|u| (u.username.clone(), u.password.clone()))
                .collect(),
            require_auth: self.require_auth,
        })
    }

    pub fn validate(&self) -> Result<(), Vec<FieldError>> {
        let mut problems = Vec::new();
        self.validate_security(&mut problems);
        if let Some(listen) = self.tcp_listen() {
            if listen.parse::<SocketAddr>().is_err() {
                problems.push(FieldError::new(
                    "listen",
                    format!("`{listen}` is not an address such as \"127.0.0.1:24224\""),
                ));
            }
        }
        if let Some(perm) = &self.unix_perm {
            if self.unix_mode().is_none_or(|m| m > 0o777) {
                problems.push(FieldError::new(
                    "unix_perm",
                    format!("`{perm}` is not an octal mode such as \"0660\""),
                ));
            }
            if self.unix_path.is_none() {
                problems.push(FieldError::new("unix_perm", "needs unix_path"));
            }
        }
        if self.buffer_max_size.bytes() < 1024 {
            problems.push(FieldError::new(
                "buffer_max_size",
                "must be at least 1KiB (the default is 16MiB)",
            ));
        }
        if self.buffer_chunk_size.bytes() == 0 {
            problems.push(FieldError::new("buffer_chunk_size", "must be > 0"));
        }
        if self.max_connections == 0 {
            problems.push(FieldError::new(
                "max_connections",
                format!("must be at least 1 (the default is {DEFAULT_MAX_CONNECTIONS})"),
            ));
        }
        if self.metadata_key.as_deref().is_some_and(str::is_empty) {
            problems.push(FieldError::new(
                "metadata_key",
                "must not be empty; leave it out to drop Fluent Bit's event metadata",
            ));
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(problems)
        }
    }

    fn validate_security(&self, problems: &mut Vec<FieldError>) {
        let tcp = self.tcp_listen().is_some();
        if self
            .shared_key
            .as_ref()
            .is_some_and(|k| k.expose().is_empty())
        {
            problems.push(FieldError::new(
                "shared_key",
                "is empty (an unset variable?); set a key, or `empty_shared_key = true` for a \
                 handshake without one",
            ));
        }
        if self.shared_key.is_some() && self.empty_shared_key {
            problems.push(FieldError::new(
                "empty_shared_key",
                "contradicts shared_key; keep one of them",
            ));
        }
        let handshake = self.shared_key.is_some() || self.empty_shared_key;
        if !self.users.is_empty() && !handshake {
            problems.push(FieldError::new(
                "users",
                "needs shared_key (or empty_shared_key = true): users authenticate in the \
                 shared_key handshake",
            ));
        }
        for (i, user) in self.users.iter().enumerate() {
            if user.username.is_empty() {
                problems.push(FieldError::new(
                    format!("users[{i}].username"),
                    "must not be empty",
                ));
            }
            if self.users[..i].iter().any(|u| u.username == user.username) {
                problems.push(FieldError::new(
                    format!("users[{i}].username"),
                    format!("`{}` is listed twice; keep one", user.username),
                ));
            }
        }
        if !self.require_auth && !handshake {
            problems.push(FieldError::new(
                "require_auth",
                "has no effect without shared_key; remove it",
            ));
        }
        if self.self_hostname.as_deref().is_some_and(str::is_empty) {
            problems.push(FieldError::new(
                "self_hostname",
                "must not be empty; leave it out to use the machine's hostname",
            ));
        }
        if self.handshake_timeout.get().is_zero() {
            problems.push(FieldError::new(
                "handshake_timeout",
                "must be above 0 (the default is \"10s\")",
            ));
        }
        if !tcp && (handshake || self.tls.is_some()) {
            let key = if self.tls.is_some() {
                "tls"
            } else {
                "shared_key"
            };
            problems.push(FieldError::new(
                key,
                "applies to the TCP listener, and this source has none (only unix_path); the \
                 unix socket is guarded by its permissions (unix_perm). Add `listen`, or \
                 remove this",
            ));
        }
        if let Some(tls) = &self.tls {
            for (key, path) in [
                ("tls.crt_file", &tls.crt_file),
                ("tls.key_file", &tls.key_file),
            ] {
                if path.as_os_str().is_empty() {
                    problems.push(FieldError::new(key, "must name a PEM file"));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> ForwardConfig {
        toml::from_str(text).unwrap_or_else(|e| panic!("{e}"))
    }

    fn problems(text: &str) -> Vec<String> {
        match parse(text).validate() {
            Ok(()) => Vec::new(),
            Err(p) => p.iter().map(ToString::to_string).collect(),
        }
    }

    #[test]
    fn secure_options_parse_with_their_defaults() {
        let c = parse(
            "listen = \"0.0.0.0:24224\"\nshared_key = \"k1\"\n[tls]\ncrt_file = \"/c\"\n\
             key_file = \"/k\"\n[[users]]\nusername = \"a\"\npassword = \"pa\"\n",
        );
        assert!(c.validate().is_ok());
        assert_eq!(
            c.handshake_timeout.get(),
            std::time::Duration::from_secs(10)
        );
        assert!(c.tls.as_ref().is_some_and(|t| t.ca_file.is_none()));
        let s = c.security().expect("handshake");
        assert!(s.require_auth);
        assert_eq!(s.self_hostname, handshake::machine_hostname());
        assert_eq!(s.users.len(), 1);
        // Neither the key nor a password shows in debug output of the config.
        let debug = format!("{c:?}");
        assert!(!debug.contains("k1") && !debug.contains("pa\""), "{debug}");
        assert!(parse("").security().is_none(), "no handshake by default");
    }

    #[test]
    fn connection_limits_have_defaults_and_can_be_turned_off() {
        let c = parse("");
        assert_eq!(c.max_connections, DEFAULT_MAX_CONNECTIONS);
        assert_eq!(c.idle_timeout(), None, "idle_timeout is off by default");
        assert_eq!(
            c.message_timeout(),
            Some(std::time::Duration::from_secs(60))
        );
        let c = parse("idle_timeout = \"5m\"\nmessage_timeout = \"0s\"\nmax_connections = 2\n");
        assert!(c.validate().is_ok());
        assert_eq!(c.idle_timeout(), Some(std::time::Duration::from_secs(300)));
        assert_eq!(c.message_timeout(), None);
        assert_eq!(c.max_connections, 2);
        let p = problems("max_connections = 0\n");
        assert!(
            p[0].starts_with("max_connections: must be at least 1"),
            "{p:?}"
        );
    }

    #[test]
    fn inconsistent_secure_options_are_refused() {
        let p = problems("users = [{ username = \"a\", password = \"b\" }]\n");
        assert!(p[0].starts_with("users: needs shared_key"), "{p:?}");
        let p = problems("shared_key = \"\"\n");
        assert!(p[0].starts_with("shared_key: is empty"), "{p:?}");
        let p = problems("shared_key = \"k\"\nempty_shared_key = true\n");
        assert!(p[0].starts_with("empty_shared_key: contradicts"), "{p:?}");
        let p = problems("require_auth = false\n");
        assert!(p[0].starts_with("require_auth: has no effect"), "{p:?}");
        let p = problems("shared_key = \"k\"\nhandshake_timeout = \"0s\"\n");
        assert!(
            p[0].starts_with("handshake_timeout: must be above 0"),
            "{p:?}"
        );
        let p = problems(
            "shared_key = \"k\"\nusers = [{ username = \"a\", password = \"b\" }, \
             { username = \"a\", password = \"c\" }]\n",
        );
        assert!(
            p[0].starts_with("users[1].username: `a` is listed twice"),
            "{p:?}"
        );
        let p =
            problems("unix_path = \"/tmp/x.sock\"\n[tls]\ncrt_file = \"/c\"\nkey_file = \"/k\"\n");
        assert!(
            p[0].starts_with("tls: applies to the TCP listener"),
            "{p:?}"
        );
        assert!(toml::from_str::<ForwardConfig>("[tls]\ncrt_file = \"/c\"\n").is_err());
    }
}
