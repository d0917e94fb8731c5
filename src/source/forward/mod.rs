//! The `forward` source: a Fluent forward protocol v1 server on TCP and/or a unix socket, as
//! FireLens (Docker's fluentd log driver), Fluent Bit, Fluentd and fluent-logger clients use it.
//!
//! - [`protocol`]: framing and decoding of the four message modes, EventTime, acks.
//! - [`server`]: listeners, connections, backpressure and acks.

pub mod protocol;
pub mod server;

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::Deserialize;

use crate::config::field::FieldError;
use crate::config::units::ByteSize;

pub use server::start;

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
    /// The shared_key handshake (HELO/PING/PONG) is not implemented; setting it is an error so
    /// that nobody believes connections are authenticated when they are not.
    #[serde(default)]
    pub shared_key: Option<String>,
    /// Fluent Bit 2.1+ sends each event as `[[time, metadata], record]`. The metadata map is
    /// dropped unless this names a record key to keep it under (e.g. `"_metadata"`); a record
    /// that already has that key keeps its own value. Default: unset (dropped).
    #[serde(default)]
    pub metadata_key: Option<String>,
}

fn default_buffer_max_size() -> ByteSize {
    ByteSize::mib(16)
}

fn default_buffer_chunk_size() -> ByteSize {
    ByteSize::kib(64)
}

impl ForwardConfig {
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

    pub fn validate(&self) -> Result<(), Vec<FieldError>> {
        let mut problems = Vec::new();
        if self.shared_key.is_some() {
            problems.push(FieldError::new(
                "shared_key",
                "the forward shared_key handshake is not implemented yet; remove it and keep the \
                 socket reachable only by trusted clients (unix socket or 127.0.0.1)",
            ));
        }
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
}
