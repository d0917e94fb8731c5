//! `logferry replay-dead-letters`: sends dead letters again through a sink as it is configured
//! now (after the cause was fixed), then marks each file replayed.
//!
//! Per file, records are sent in batches of at most [`BATCH_RECORDS`] with at most
//! [`IN_FLIGHT`] batches unacknowledged. Each time the oldest batch is acknowledged by the sink
//! (delivered, or written to a new dead-letter file), the number of lines done is committed to
//! `<file>.progress` (write, fsync, rename). A re-run after a crash skips the lines committed,
//! so the replay itself duplicates at most the batches in flight at the crash
//! (`BATCH_RECORDS * IN_FLIGHT` records). After a batch that is not acknowledged (its new dead
//! letter could not be written) nothing more of that file is sent. When every line of a file is done the file is renamed
//! to `<file>.replayed` and its progress file removed; a re-run ignores it.
//!
//! Records that fail again go to the sink's `dead_letter_path` (or, without one, next to the
//! replayed file) in a new file that this run does not read. Files locked by a running
//! logferry (the file it is writing) are skipped.

use std::collections::VecDeque;
use std::fmt;
use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use prometheus_client::metrics::gauge::Gauge;

use super::{line, list_files, DeadLetterSettings, DeadLetters, DEFAULT_MAX_SIZE};
use crate::buffer::{memory, AckRef, AckWaiter, Batch, QueueSender};
use crate::config::fluent_bit::defaults::{self, ConfigFile};
use crate::config::{Config, ConfigError, SinkEntry};
use crate::event::Event;
use crate::health::Health;
use crate::metrics::Metrics;
use crate::sink::SinkContext;

/// Records per batch handed to the sink.
pub const BATCH_RECORDS: usize = 500;
/// Batches sent and not yet acknowledged.
pub const IN_FLIGHT: usize = 4;

/// `logferry replay-dead-letters` options.
#[derive(Debug, Clone, clap::Args)]
pub struct ReplayArgs {
    /// The TOML config file (the sink is used as configured there now).
    #[arg(
        long,
        short = 'c',
        env = "LOGFERRY_CONFIG",
        conflicts_with = "fluent_bit_config"
    )]
    pub config: Option<PathBuf>,
    /// Or a Fluent Bit classic config (such as the one FireLens generates); its outputs have no
    /// dead-letter directory, so name the files with `--file`.
    #[arg(long, env = "LOGFERRY_FLUENT_BIT_CONFIG")]
    pub fluent_bit_config: Option<PathBuf>,
    /// The sink (its `name`, or `<type>.<index>`) to send the records through.
    #[arg(long)]
    pub sink: String,
    /// Dead-letter files to replay (repeatable). Default: every `*.jsonl` file in the sink's
    /// `dead_letter_path`, oldest first.
    #[arg(long = "file")]
    pub files: Vec<PathBuf>,
    /// Give up (exit 2, files not marked) when the records are not all acknowledged by then.
    #[arg(long, default_value = "10m")]
    pub timeout: crate::config::units::Duration,
}

impl ReplayArgs {
    /// The config file named on the command line or, with neither flag, the one `logferry
    /// run` would use (the mounted FireLens file, else /etc/logferry/logferry.toml).
    pub fn config_file(&self) -> ConfigFile {
        match (&self.config, &self.fluent_bit_config) {
            (Some(path), _) => ConfigFile::Native(path.clone()),
            (None, Some(path)) => ConfigFile::FluentBit(path.clone()),
            (None, None) => defaults::choose(&|name| std::env::var(name).ok()).0,
        }
    }
}

/// Loads the config the replay uses: native TOML or a Fluent Bit classic config.
pub fn load_config(args: &ReplayArgs) -> Result<Config, ConfigError> {
    args.config_file().load()
}

/// Why the replay could not run at all.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error("{config}: no sink named `{name}`; sinks: {known}")]
    NoSuchSink {
        config: String,
        name: String,
        known: String,
    },
    #[error(
        "sink `{0}` has no dead_letter_path: name the files to replay with --file, or set \
         dead_letter_path"
    )]
    NoFiles(String),
    #[error("cannot list {path}: {source}")]
    List {
        path: String,
        source: std::io::Error,
    },
    #[error("sink `{name}`: {message}")]
    Sink { name: String, message: String },
}

/// What a replay did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Summary {
    /// Files replayed completely and renamed to `*.replayed`.
    pub files_done: usize,
    /// Files left as they were (locked by a running logferry, unreadable lines, not all
    /// acknowledged), with the reason.
    pub files_left: Vec<(PathBuf, String)>,
    /// Records read and sent in this run.
    pub read: u64,
    /// Records skipped because an earlier, interrupted run had already done them.
    pub already_done: u64,
    /// Records the sink delivered.
    pub delivered: u64,
    /// Records that failed again and were written to a new dead-letter file.
    pub dead_lettered_again: u64,
    /// Records neither delivered nor dead-lettered (not acknowledged in time, or the new
    /// dead-letter write failed); their files stay for another run.
    pub not_acknowledged: u64,
    /// Lines that are not dead letters.
    pub unreadable: u64,
}

impl Summary {
    /// True when every record read was delivered and every file is done.
    pub fn all_delivered(&self) -> bool {
        self.dead_lettered_again == 0
            && self.not_acknowledged == 0
            && self.unreadable == 0
            && self.files_left.is_empty()
    }
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "read {} records ({} already done by an earlier run): delivered {}, dead-lettered \
             again {}, not acknowledged {}, unreadable lines {}",
            self.read,
            self.already_done,
            self.delivered,
            self.dead_lettered_again,
            self.not_acknowledged,
            self.unreadable
        )?;
        write!(f, "files replayed: {}", self.files_done)?;
        for (path, why) in &self.files_left {
            write!(f, "\nfile left for another run: {}: {why}", path.display())?;
        }
        Ok(())
    }
}

/// A batch sent and the line number that is done once it is acknowledged.
struct InFlight {
    waiter: AckWaiter,
    records: u64,
    lines_done: u64,
}

/// Replays the dead letters of `args.sink`.
pub async fn run(config: Config, args: &ReplayArgs) -> Result<Summary, ReplayError> {
    let known: Vec<String> = config.sinks.iter().map(|s| s.name.clone()).collect();
    let Some(entry) = config.sinks.into_iter().find(|s| s.name == args.sink) else {
        return Err(ReplayError::NoSuchSink {
            config: args.config_file().path().display().to_string(),
            name: args.sink.clone(),
            known: known.join(", "),
        });
    };
    let files = match (&args.files[..], &entry.dead_letter) {
        ([], Some(settings)) => list_files(&settings.path).map_err(|source| ReplayError::List {
            path: settings.path.display().to_string(),
            source,
        })?,
        ([], None) => return Err(ReplayError::NoFiles(entry.name.clone())),
        (files, _) => files.to_vec(),
    };
    let mut summary = Summary::default();
    // Lock every file first: one a running logferry writes is skipped, and two replays never
    // send the same file.
    let mut locked = Vec::new();
    for path in files {
        match File::open(&path) {
            Ok(file) => match file.try_lock() {
                Ok(()) => locked.push((path, file)),
                Err(_) => summary.files_left.push((
                    path,
                    "locked: a running logferry is writing it (it is replayed once it rotates)"
                        .into(),
                )),
            },
            Err(e) => summary.files_left.push((path, format!("cannot open: {e}"))),
        }
    }

    let metrics = Arc::new(Metrics::new());
    let health = Arc::new(Health::default());
    let settings = match (&entry.dead_letter, locked.first()) {
        (Some(s), _) => Some(s.clone()),
        (None, Some((path, _))) => Some(DeadLetterSettings {
            path: path
                .parent()
                .map(Path::to_path_buf)
                .unwrap_or_else(|| PathBuf::from(".")),
            max_size: DEFAULT_MAX_SIZE,
        }),
        (None, None) => None,
    };
    let Some(settings) = settings else {
        return Ok(summary);
    };
    let sink_error = |message: String| ReplayError::Sink {
        name: entry.name.clone(),
        message,
    };
    let dead_letters = DeadLetters::build(&entry.name, &settings, &metrics, health.clone())
        .map_err(|e| sink_error(e.to_string()))?;
    let (tx, rx) = memory::queue(entry.buffer_limit.as_usize(), Gauge::default());
    let task = {
        let cx = SinkContext {
            name: entry.name.clone(),
            metrics: metrics.component(&entry.name, "sink"),
            health: health.clone(),
            registry: metrics.clone(),
            dead_letters: Some(dead_letters.clone()),
        };
        let sink = entry
            .config
            .build(cx)
            .await
            .map_err(|e| sink_error(e.to_string()))?;
        tokio::spawn(sink.run(rx))
    };

    let deadline = tokio::time::Instant::now() + args.timeout.get();
    let mut acknowledged = 0u64;
    for (path, _lock) in &locked {
        let outcome = tokio::time::timeout_at(
            deadline,
            replay_file(path, &entry, &tx, &mut summary, &mut acknowledged),
        )
        .await;
        match outcome {
            Ok(Ok(())) => {
                let mut done = path.clone().into_os_string();
                done.push(".replayed");
                match std::fs::rename(path, &done) {
                    Ok(()) => {
                        let _ = std::fs::remove_file(progress_path(path));
                        summary.files_done += 1;
                    }
                    Err(e) => summary
                        .files_left
                        .push((path.clone(), format!("replayed, but cannot rename: {e}"))),
                }
            }
            Ok(Err(why)) => summary.files_left.push((path.clone(), why)),
            Err(_) => {
                let problems = health.problems();
                let why = if problems.is_empty() {
                    "not all records were acknowledged before --timeout".to_string()
                } else {
                    let list: Vec<String> =
                        problems.iter().map(|(k, v)| format!("{k}: {v}")).collect();
                    format!(
                        "not all records were acknowledged before --timeout; {}",
                        list.join("; ")
                    )
                };
                summary.files_left.push((path.clone(), why));
                break;
            }
        }
    }
    drop(tx);
    let finished = tokio::time::timeout_at(deadline, task).await.is_ok();
    if finished {
        dead_letters.drained().await;
    }
    summary.dead_lettered_again = dead_letters.written();
    summary.delivered = acknowledged.saturating_sub(summary.dead_lettered_again);
    summary.not_acknowledged = summary.read.saturating_sub(acknowledged);
    Ok(summary)
}

fn progress_path(path: &Path) -> PathBuf {
    let mut p = path.as_os_str().to_owned();
    p.push(".progress");
    PathBuf::from(p)
}

/// Lines of `path` an interrupted run has already done.
fn read_progress(path: &Path) -> u64 {
    std::fs::read_to_string(progress_path(path))
        .ok()
        .and_then(|t| t.trim().parse().ok())
        .unwrap_or(0)
}

/// Commits `lines` done: write a temporary file, fsync, rename over the progress file.
fn write_progress(path: &Path, lines: u64) -> std::io::Result<()> {
    let target = progress_path(path);
    let mut tmp = target.clone().into_os_string();
    tmp.push(".tmp");
    let mut file = File::create(&tmp)?;
    writeln!(file, "{lines}")?;
    file.sync_all()?;
    std::fs::rename(&tmp, &target)
}

/// Sends one file's records; `Ok` once every line is done (acknowledged or unreadable lines
/// excepted: those make it an `Err` so the file stays).
async fn replay_file(
    path: &Path,
    entry: &SinkEntry,
    tx: &QueueSender,
    summary: &mut Summary,
    acknowledged: &mut u64,
) -> Result<(), String> {
    let file = File::open(path).map_err(|e| format!("cannot open: {e}"))?;
    let skip = read_progress(path);
    summary.already_done += skip;
    let mut reader = BufReader::new(file);
    let mut line_no = 0u64;
    let mut buf = Vec::new();
    let mut unreadable = 0u64;
    let mut pending: Vec<Event> = Vec::new();
    let mut pending_bytes = 0usize;
    let mut in_flight: VecDeque<InFlight> = VecDeque::new();
    let mut failed = None;
    loop {
        buf.clear();
        let n = reader
            .read_until(b'\n', &mut buf)
            .map_err(|e| format!("cannot read: {e}"))?;
        let at_end = n == 0;
        if !at_end {
            line_no += 1;
        }
        let letter = if at_end || line_no <= skip {
            None
        } else {
            let text = buf.strip_suffix(b"\n").unwrap_or(&buf);
            if text.iter().all(u8::is_ascii_whitespace) {
                None
            } else {
                match line::parse_line(text) {
                    Ok(letter) => Some(letter),
                    Err(e) => {
                        tracing::error!(file = %path.display(), line = line_no, error = %e,
                            "not a dead letter; skipped (the file is not marked replayed)");
                        unreadable += 1;
                        None
                    }
                }
            }
        };
        // A batch holds records of one tag: cut it on a new tag, when full, and at the end.
        let cut = match &letter {
            Some(l) => pending
                .first()
                .is_some_and(|p| p.tag != l.event.tag || pending.len() >= BATCH_RECORDS),
            None => at_end,
        };
        if cut && !pending.is_empty() {
            // At most IN_FLIGHT batches unacknowledged: the bound on what a crash re-sends.
            while in_flight.len() >= IN_FLIGHT {
                wait_oldest(path, &mut in_flight, acknowledged, &mut failed).await;
            }
            if failed.is_some() {
                // Nothing after an unacknowledged batch can be committed: stop sending.
                break;
            }
            let events = std::mem::take(&mut pending);
            let records = events.len() as u64;
            let (ack, waiter) = AckRef::new();
            let tag = events[0].tag.clone();
            let batch = Batch::new(tag, events, std::mem::take(&mut pending_bytes), Some(ack));
            summary.read += records;
            if tx.send(batch).await.is_err() {
                return Err(format!("sink `{}` stopped", entry.name));
            }
            // Lines up to the one before this letter are done once this batch is acknowledged.
            let lines_done = if letter.is_some() {
                line_no - 1
            } else {
                line_no
            };
            in_flight.push_back(InFlight {
                waiter,
                records,
                lines_done,
            });
        }
        if let Some(letter) = letter {
            pending_bytes += buf.len();
            pending.push(letter.event);
        }
        if at_end {
            break;
        }
    }
    while !in_flight.is_empty() {
        wait_oldest(path, &mut in_flight, acknowledged, &mut failed).await;
    }
    summary.unreadable += unreadable;
    if let Some(why) = failed {
        return Err(why);
    }
    if unreadable > 0 {
        return Err(format!(
            "{unreadable} lines are not dead letters (see the log); fix or remove them"
        ));
    }
    Ok(())
}

/// Waits for the oldest batch in flight; commits the progress it completes, unless an earlier
/// batch failed (then the lines after it are not done).
async fn wait_oldest(
    path: &Path,
    in_flight: &mut VecDeque<InFlight>,
    acknowledged: &mut u64,
    failed: &mut Option<String>,
) {
    let Some(oldest) = in_flight.pop_front() else {
        return;
    };
    if oldest.waiter.wait().await {
        *acknowledged += oldest.records;
        if failed.is_none() {
            if let Err(e) = write_progress(path, oldest.lines_done) {
                tracing::warn!(file = %path.display(), error = %e,
                    "cannot record the replay's progress; a re-run resends this file");
            }
        }
    } else {
        failed.get_or_insert_with(|| {
            "some records were neither delivered nor dead-lettered again".to_string()
        });
    }
}
