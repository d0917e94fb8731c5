//! The `stdin` source: one record per line, as text (`{"log": line}`) or as a JSON object.

use bytes::Bytes;
use serde::Deserialize;
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};

use super::{SourceContext, SourceError};
use crate::config::field::FieldError;
use crate::event::{Event, EventTime, Map, Tag, Value};

/// Options of `type = "stdin"`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StdinConfig {
    /// Tag of the records. Default `stdin`.
    pub tag: String,
    /// `text`: each line becomes `{"<key>": line}`. `json`: each line is a JSON object; a line
    /// that is not one is kept as text (and counted as an `invalid_json` error), never dropped.
    pub format: LineFormat,
    /// Field holding the line in `text` format. Default `log`.
    pub key: String,
}

impl StdinConfig {
    /// Every value serde accepts is usable; here so every source config has the same verbs.
    pub fn validate(&self) -> Result<(), Vec<FieldError>> {
        Ok(())
    }
}

impl Default for StdinConfig {
    fn default() -> Self {
        StdinConfig {
            tag: "stdin".to_string(),
            format: LineFormat::Text,
            key: "log".to_string(),
        }
    }
}

/// How a line becomes a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LineFormat {
    Text,
    Json,
}

/// Most records handed to the router at once.
const MAX_BATCH: usize = 1024;

/// Returns the task that reads standard input until EOF or shutdown. Nothing to bind or open,
/// so it cannot fail (the `Result` keeps the shape every source's `start` has).
pub async fn start(
    config: StdinConfig,
    cx: SourceContext,
) -> Result<tokio::task::JoinHandle<()>, SourceError> {
    Ok(tokio::spawn(read_lines(config, tokio::io::stdin(), cx)))
}

/// Reads lines until EOF or shutdown. Lines are batched while more are already buffered, so a
/// fast producer gets large batches and an interactive one gets each line at once.
pub async fn read_lines(config: StdinConfig, input: impl AsyncRead + Unpin, cx: SourceContext) {
    let tag: Tag = config.tag.as_str().into();
    let key = Bytes::from(config.key.clone());
    let mut reader = BufReader::with_capacity(256 * 1024, input);
    let mut events = Vec::new();
    let mut bytes = 0usize;
    loop {
        let mut line = Vec::new();
        let read = tokio::select! {
            r = reader.read_until(b'\n', &mut line) => r,
            _ = cx.shutdown.cancelled() => Ok(0),
        };
        let n = match read {
            Ok(n) => n,
            Err(e) => {
                tracing::error!(source = %cx.name, error = %e, "reading standard input failed");
                cx.metrics.error("read");
                0
            }
        };
        if n > 0 {
            bytes += n;
            while matches!(line.last(), Some(b'\n' | b'\r')) {
                line.pop();
            }
            events.push(line_to_event(&config, &key, &tag, line, &cx));
        }
        let more_buffered = reader.buffer().contains(&b'\n');
        if !events.is_empty() && (n == 0 || events.len() >= MAX_BATCH || !more_buffered) {
            cx.metrics.records_in.inc_by(events.len() as u64);
            cx.metrics.bytes_in.inc_by(bytes as u64);
            let mut batch = std::mem::take(&mut events);
            let weight = crate::event::pack(&mut batch);
            if cx
                .router
                .submit(tag.clone(), batch, weight, None)
                .await
                .is_err()
            {
                return;
            }
            bytes = 0;
        }
        if n == 0 {
            return;
        }
    }
}

fn line_to_event(
    config: &StdinConfig,
    key: &Bytes,
    tag: &Tag,
    line: Vec<u8>,
    cx: &SourceContext,
) -> Event {
    let mut record = Map::with_capacity(1);
    if config.format == LineFormat::Json {
        match serde_json::from_slice::<serde_json::Value>(&line) {
            Ok(serde_json::Value::Object(o)) => {
                if let Value::Map(m) = Value::from(serde_json::Value::Object(o)) {
                    record = m;
                }
                return Event::new(tag.clone(), EventTime::now(), record);
            }
            _ => cx.metrics.error("invalid_json"),
        }
    }
    record.push(key.clone(), Value::Str(Bytes::from(line)));
    Event::new(tag.clone(), EventTime::now(), record)
}
