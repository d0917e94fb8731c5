//! The `stdout` and `file` sinks: encoded records written one after another.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;
use tokio::io::{AsyncWrite, AsyncWriteExt};

use super::dead_letter::reason;
use super::settle::{Token, Tracker};
use super::undeliverable::{Undeliverable, Why};
use super::{SinkContext, SinkError};
use crate::buffer::QueueReceiver;
use crate::config::field::FieldError;
use crate::encode::{options, EncodeOptions, Encoder, Format};

/// Options of `type = "stdout"` and `type = "file"`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WriterConfig {
    /// `file` only: the file to append to (created when missing).
    #[serde(default)]
    pub path: Option<PathBuf>,
    /// `json` (default): the record as a JSON object. `msgpack`: the record as a msgpack map,
    /// bytes intact. `text`: the value of `log_key` as is.
    #[serde(default = "default_format")]
    pub format: String,
    /// With `text`: the field to write (default `log`). With `json`/`msgpack`: write only that
    /// field's value instead of the whole record.
    #[serde(default)]
    pub log_key: Option<String>,
    /// End each record with `\n`. Default true for `json` and `text`, false for `msgpack`.
    #[serde(default)]
    pub append_newline: Option<bool>,
    /// Add the record's time under this key.
    #[serde(default)]
    pub time_key: Option<String>,
    /// strftime format of `time_key` (plus `%L` ms, `%f` µs, `%N` ns), or `iso8601`, `double`,
    /// `epoch_ms`. Default `%Y-%m-%dT%H:%M:%S` (UTC, whole seconds).
    #[serde(default)]
    pub time_key_format: Option<String>,
}

fn default_format() -> String {
    "json".to_string()
}

impl WriterConfig {
    /// Checks the options by building the encoder they describe.
    pub fn validate(&self) -> Result<(), Vec<FieldError>> {
        self.encoder().map(|_| ())
    }

    fn encoder(&self) -> Result<Encoder, Vec<FieldError>> {
        let format = options::format(
            "format",
            &self.format,
            &[
                ("json", Format::Json),
                ("msgpack", Format::Msgpack),
                ("text", Format::Text),
            ],
        )
        .map_err(|e| vec![e])?;
        let log_key = options::log_key(self.log_key.as_deref(), format);
        let time_format = options::time_format("time_key_format", self.time_key_format.as_deref())
            .map_err(|e| vec![e])?;
        let options = EncodeOptions {
            format,
            log_key,
            time_key: self.time_key.clone(),
            time_format,
            append_newline: self
                .append_newline
                .unwrap_or(!matches!(format, Format::Msgpack)),
            ..EncodeOptions::default()
        };
        Encoder::new(&options).map_err(|e| vec![e])
    }
}

/// A running `stdout` or `file` sink.
pub struct WriterSink {
    cx: SinkContext,
    encoder: Encoder,
    out: Box<dyn AsyncWrite + Send + Unpin>,
    target: String,
}

impl WriterSink {
    /// Opens the output (appending to a file, creating it when missing).
    pub async fn build(config: &WriterConfig, cx: SinkContext) -> Result<WriterSink, SinkError> {
        let encoder = config.encoder().map_err(|e| SinkError::Setup {
            name: cx.name.clone(),
            message: crate::config::field::join(&e),
        })?;
        let (out, target): (Box<dyn AsyncWrite + Send + Unpin>, String) = match &config.path {
            Some(path) => {
                let file = tokio::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
                    .await
                    .map_err(|source| SinkError::Open {
                        name: cx.name.clone(),
                        path: path.display().to_string(),
                        source,
                    })?;
                (Box::new(file), path.display().to_string())
            }
            None => (Box::new(tokio::io::stdout()), "standard output".to_string()),
        };
        Ok(WriterSink {
            cx,
            encoder,
            out,
            target,
        })
    }

    pub async fn run(mut self, mut input: QueueReceiver) {
        let mut buf = Vec::with_capacity(256 * 1024);
        let mut unencodable: Vec<(usize, String)> = Vec::new();
        let latency = self.cx.metrics.request_duration("write");
        let undeliverable = Undeliverable::new(&self.cx);
        while let Some(batch) = input.recv().await {
            buf.clear();
            let mut encoded = 0u64;
            for (index, event) in batch.events.iter().enumerate() {
                let start = buf.len();
                if let Err(e) = self.encoder.encode(event, &mut buf) {
                    buf.truncate(start);
                    unencodable.push((index, e.to_string()));
                    continue;
                }
                encoded += 1;
            }
            let started = std::time::Instant::now();
            self.write(&buf).await;
            latency.observe(started.elapsed().as_secs_f64());
            self.cx.metrics.records_out.inc_by(encoded);
            self.cx.metrics.bytes_out.inc_by(buf.len() as u64);
            if unencodable.is_empty() {
                batch.complete();
                continue;
            }
            // The batch completes once every unencodable record is dead-lettered or dropped
            // (and the written ones, the tracker's last share, are on their way).
            let tag = batch.tag.clone();
            let (events, done) = batch.into_parts();
            let tracker = Tracker::new(done, unencodable.len() + 1, Some(events));
            for (index, error) in unencodable.drain(..) {
                undeliverable.give_up(
                    [Token::new(&tracker, index)],
                    &Why::new(
                        reason::UNENCODABLE,
                        "record cannot be encoded as configured",
                        "",
                        &error,
                    )
                    .tagged(&tag),
                );
            }
            tracker.settle(true);
        }
        if let Some(dead_letters) = &self.cx.dead_letters {
            dead_letters.drained().await;
        }
        if let Err(e) = self.out.flush().await {
            tracing::error!(sink = %self.cx.name, error = %e, "final flush failed");
        }
    }

    /// Writes until it succeeds: a full disk pauses the sink (and so, by backpressure, its
    /// sources) instead of losing records. The sink reports unhealthy meanwhile.
    async fn write(&mut self, buf: &[u8]) {
        let mut delay = Duration::from_millis(100);
        loop {
            let result = async {
                self.out.write_all(buf).await?;
                self.out.flush().await
            }
            .await;
            match result {
                Ok(()) => {
                    self.cx.health.set_healthy(&self.cx.name);
                    return;
                }
                Err(e) => {
                    self.cx.metrics.error("write");
                    self.cx
                        .metrics
                        .retried(crate::metrics::retry_reason::WRITE_ERROR, 1);
                    let reason = format!("cannot write to {}: {e}; retrying", self.target);
                    if let Some(suppressed) = crate::log_limit::allow(&self.cx.name, "write") {
                        tracing::error!(sink = %self.cx.name, error = %e, target = %self.target,
                            suppressed, "write failed; retrying in {delay:?}");
                    }
                    self.cx.health.set_unhealthy(&self.cx.name, reason);
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(5));
                }
            }
        }
    }
}
