//! A forward-protocol load generator: sends PackedForward messages of N records of S bytes to a
//! forward server (logferry, Fluent Bit, Fluentd), flat out or at a target rate, optionally
//! asking for acks, and reports the achieved rate.
//!
//! Each record is `{"seq": <n>, "log": "<padding>"}`, so a receiver can check for loss and
//! duplicates by `seq`.

use std::fmt;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// `logferry loadgen` options.
#[derive(Debug, Clone, clap::Args)]
pub struct LoadgenArgs {
    /// `HOST:PORT` of a TCP forward input, or `unix:PATH` for a unix socket.
    #[arg(long, default_value = "127.0.0.1:24224")]
    pub target: String,
    /// Records to send in total.
    #[arg(long, default_value_t = 100_000)]
    pub records: u64,
    /// Approximate size of each record's msgpack encoding, in bytes.
    #[arg(long, default_value_t = 200)]
    pub size: usize,
    /// Records per PackedForward message.
    #[arg(long, default_value_t = 1000)]
    pub batch: usize,
    /// Target records per second; 0 sends flat out.
    #[arg(long, default_value_t = 0)]
    pub rate: u64,
    /// Ask for an ack of every message (`chunk` option) and wait for it before the next.
    #[arg(long)]
    pub ack: bool,
    /// Tag of the messages.
    #[arg(long, default_value = "loadgen")]
    pub tag: String,
    /// First `seq` value (to continue a sequence across runs).
    #[arg(long, default_value_t = 0)]
    pub start_seq: u64,
}

/// What a load run achieved.
#[derive(Debug, Clone)]
pub struct LoadReport {
    pub records: u64,
    pub messages: u64,
    pub acked_messages: u64,
    pub bytes: u64,
    pub elapsed: Duration,
}

impl fmt::Display for LoadReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let secs = self.elapsed.as_secs_f64().max(1e-9);
        write!(
            f,
            "{{\"records\":{},\"messages\":{},\"acked_messages\":{},\"bytes\":{},\"seconds\":{:.3},\"records_per_sec\":{:.0},\"mib_per_sec\":{:.2}}}",
            self.records,
            self.messages,
            self.acked_messages,
            self.bytes,
            secs,
            self.records as f64 / secs,
            self.bytes as f64 / secs / 1048576.0
        )
    }
}

trait Stream: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send> Stream for T {}

async fn connect(target: &str) -> anyhow::Result<Box<dyn Stream>> {
    if let Some(path) = target.strip_prefix("unix:") {
        let s = tokio::net::UnixStream::connect(path)
            .await
            .with_context(|| format!("connecting to unix socket {path}"))?;
        Ok(Box::new(s))
    } else {
        let s = tokio::net::TcpStream::connect(target)
            .await
            .with_context(|| format!("connecting to {target}"))?;
        s.set_nodelay(true)?;
        Ok(Box::new(s))
    }
}

/// Runs the load and reports what was sent (and acknowledged).
pub async fn run(args: LoadgenArgs) -> anyhow::Result<LoadReport> {
    if args.batch == 0 {
        bail!("--batch must be at least 1");
    }
    let mut stream = connect(&args.target).await?;
    let started = Instant::now();
    let mut report = LoadReport {
        records: 0,
        messages: 0,
        acked_messages: 0,
        bytes: 0,
        elapsed: Duration::ZERO,
    };
    let padding = "x".repeat(args.size.saturating_sub(24).max(1));
    let mut message = Vec::with_capacity(args.batch * (args.size + 16) + 64);
    let mut entries = Vec::with_capacity(args.batch * (args.size + 16));
    let mut reply = Vec::with_capacity(64);
    // On failure the error carries what was sent and acknowledged so far (fault tests need
    // the count of acknowledged records when the server is killed mid-stream).
    let sent = async {
        let mut seq = args.start_seq;
        let end = args.start_seq + args.records;
        while seq < end {
            let n = ((end - seq) as usize).min(args.batch);
            entries.clear();
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default();
            for i in 0..n as u64 {
                write_entry(&mut entries, now, seq + i, &padding)?;
            }
            let chunk = args.ack.then(|| format!("lg-{seq}"));
            message.clear();
            write_message(&mut message, &args.tag, &entries, n, chunk.as_deref())?;
            stream.write_all(&message).await.context("sending")?;
            report.bytes += message.len() as u64;
            report.messages += 1;
            report.records += n as u64;
            seq += n as u64;
            if let Some(chunk) = chunk {
                read_ack(&mut stream, &mut reply, &chunk).await?;
                report.acked_messages += 1;
            }
            if args.rate > 0 {
                let due = Duration::from_secs_f64(report.records as f64 / args.rate as f64);
                if let Some(wait) = due.checked_sub(started.elapsed()) {
                    tokio::time::sleep(wait).await;
                }
            }
        }
        stream.flush().await?;
        Ok::<(), anyhow::Error>(())
    }
    .await;
    report.elapsed = started.elapsed();
    match sent {
        Ok(()) => Ok(report),
        Err(e) => Err(e.context(format!("after sending {report}"))),
    }
}

fn write_entry(out: &mut Vec<u8>, now: Duration, seq: u64, padding: &str) -> anyhow::Result<()> {
    use rmp::encode::*;
    write_array_len(out, 2)?;
    write_ext_meta(out, 8, 0)?;
    out.extend_from_slice(&(now.as_secs() as u32).to_be_bytes());
    out.extend_from_slice(&now.subsec_nanos().to_be_bytes());
    write_map_len(out, 2)?;
    write_str(out, "seq")?;
    write_uint(out, seq)?;
    write_str(out, "log")?;
    write_str(out, padding)?;
    Ok(())
}

fn write_message(
    out: &mut Vec<u8>,
    tag: &str,
    entries: &[u8],
    count: usize,
    chunk: Option<&str>,
) -> anyhow::Result<()> {
    use rmp::encode::*;
    write_array_len(out, 3)?;
    write_str(out, tag)?;
    write_bin_len(out, entries.len() as u32)?;
    out.extend_from_slice(entries);
    write_map_len(out, if chunk.is_some() { 2 } else { 1 })?;
    write_str(out, "size")?;
    write_uint(out, count as u64)?;
    if let Some(chunk) = chunk {
        write_str(out, "chunk")?;
        write_str(out, chunk)?;
    }
    Ok(())
}

/// Reads one `{"ack": chunk}` reply and checks it names our chunk.
async fn read_ack(
    stream: &mut Box<dyn Stream>,
    buf: &mut Vec<u8>,
    chunk: &str,
) -> anyhow::Result<()> {
    loop {
        if let Some((len, acked)) = parse_ack(buf)? {
            buf.drain(..len);
            if acked != chunk.as_bytes() {
                bail!(
                    "the server acknowledged chunk {:?}, expected {chunk:?}",
                    String::from_utf8_lossy(&acked)
                );
            }
            return Ok(());
        }
        let mut tmp = [0u8; 256];
        let n = tokio::time::timeout(Duration::from_secs(60), stream.read(&mut tmp))
            .await
            .context("no ack within 60 s")??;
        if n == 0 {
            bail!("the server closed the connection before acknowledging chunk {chunk}");
        }
        buf.extend_from_slice(&tmp[..n]);
    }
}

/// Parses `{"ack": <str|bin>}` at the front of `buf`: `Ok(None)` when more bytes are needed.
fn parse_ack(buf: &[u8]) -> anyhow::Result<Option<(usize, Vec<u8>)>> {
    use rmp::decode::*;
    let mut cur = buf;
    let map_len = match read_map_len(&mut cur) {
        Ok(n) => n,
        Err(ValueReadError::InvalidMarkerRead(_)) => return Ok(None),
        Err(e) => bail!("the reply is not a msgpack map: {e}"),
    };
    let mut acked = None;
    for _ in 0..map_len {
        let Some(key) = read_bytes_or_str(&mut cur)? else {
            return Ok(None);
        };
        let Some(value) = read_bytes_or_str(&mut cur)? else {
            return Ok(None);
        };
        if key == b"ack" {
            acked = Some(value);
        }
    }
    let consumed = buf.len() - cur.len();
    match acked {
        Some(a) => Ok(Some((consumed, a))),
        None => bail!("the reply has no `ack` key"),
    }
}

fn read_bytes_or_str(cur: &mut &[u8]) -> anyhow::Result<Option<Vec<u8>>> {
    use rmp::Marker;
    let Some((&first, rest)) = cur.split_first() else {
        return Ok(None);
    };
    let marker = Marker::from_u8(first);
    let (len, header) = match marker {
        Marker::FixStr(n) => (n as usize, 0),
        Marker::Str8 | Marker::Bin8 => match rest.first() {
            Some(&n) => (n as usize, 1),
            None => return Ok(None),
        },
        Marker::Str16 | Marker::Bin16 => match rest.get(..2) {
            Some(b) => (u16::from_be_bytes([b[0], b[1]]) as usize, 2),
            None => return Ok(None),
        },
        Marker::Str32 | Marker::Bin32 => match rest.get(..4) {
            Some(b) => (u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize, 4),
            None => return Ok(None),
        },
        other => bail!("unexpected msgpack marker {other:?} in the ack reply"),
    };
    let Some(value) = rest.get(header..header + len) else {
        return Ok(None);
    };
    let value = value.to_vec();
    *cur = &rest[header + len..];
    Ok(Some(value))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_str_and_bin_acks_and_waits_for_more() {
        let mut buf = Vec::new();
        rmp::encode::write_map_len(&mut buf, 1).unwrap();
        rmp::encode::write_str(&mut buf, "ack").unwrap();
        rmp::encode::write_bin(&mut buf, b"c1").unwrap();
        assert_eq!(parse_ack(&buf).unwrap(), Some((buf.len(), b"c1".to_vec())));
        for cut in 0..buf.len() {
            assert_eq!(parse_ack(&buf[..cut]).unwrap(), None, "cut at {cut}");
        }
    }
}
