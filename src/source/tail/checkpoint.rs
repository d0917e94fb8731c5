//! The checkpoint database (`db`): per file, the offset up to which every record was delivered.
//!
//! The reader sends, in the order it routed them, one message per batch with the offset the
//! batch reaches and the batch's [`AckWaiter`]. This task waits for the acks in that order and
//! moves a file's offset only when its ack resolved true, so the stored offset never passes a
//! record that some sink did not accept. A failed ack freezes the file's offset for the rest of
//! the run: those records are read again after a restart (at-least-once, never a gap).
//!
//! The file is JSON, rewritten atomically (temporary file, fsync, rename) at most every
//! [`WRITE_INTERVAL`] and at exit. Entries are keyed by device + inode and carry the
//! fingerprint of the bytes before the offset, so a file that was truncated or replaced while
//! logferry was down (or an inode number reused) is recognised instead of resumed mid-way.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use base64::Engine;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use super::files::{FileId, Fingerprint};
use crate::buffer::AckWaiter;
use crate::metrics::ComponentMetrics;

/// Most frequent rewrite of the database.
pub const WRITE_INTERVAL: Duration = Duration::from_millis(500);

/// What the reader tells the checkpointer. `uid` names one reading of one file (a truncated
/// file gets a new uid, so acks of what was read before the truncation cannot move it).
pub enum Message {
    Track {
        uid: u64,
        id: FileId,
        path: PathBuf,
        offset: u64,
        fp: Fingerprint,
    },
    /// Once `waiter` resolves true (or at once without one), the file is done up to `offset`.
    Advance {
        uid: u64,
        offset: u64,
        fp: Fingerprint,
        waiter: Option<AckWaiter>,
    },
    /// The file is no longer read (rotated away and finished, deleted, truncated).
    Forget { uid: u64 },
}

/// One stored file position.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub path: PathBuf,
    pub id: FileId,
    pub offset: u64,
    pub fp: Fingerprint,
}

#[derive(Serialize, Deserialize)]
struct DbFile {
    version: u32,
    files: Vec<DbEntry>,
}

#[derive(Serialize, Deserialize)]
struct DbEntry {
    path: String,
    dev: u64,
    inode: u64,
    offset: u64,
    /// Base64 of the bytes just before `offset`.
    fingerprint: String,
}

/// Why the database could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("cannot read the checkpoint db {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("the checkpoint db {path} is not valid ({reason})")]
    Invalid { path: String, reason: String },
    #[error("cannot write the checkpoint db {path}: {source}; check that its directory exists and is writable")]
    Write {
        path: String,
        source: std::io::Error,
    },
}

/// Reads the database; a missing file is an empty one.
pub fn load(path: &Path) -> Result<Vec<Entry>, DbError> {
    let text = match std::fs::read(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => {
            return Err(DbError::Read {
                path: path.display().to_string(),
                source,
            })
        }
    };
    let invalid = |reason: String| DbError::Invalid {
        path: path.display().to_string(),
        reason,
    };
    let db: DbFile = serde_json::from_slice(&text).map_err(|e| invalid(e.to_string()))?;
    if db.version != 1 {
        return Err(invalid(format!("unknown version {}", db.version)));
    }
    let b64 = base64::engine::general_purpose::STANDARD;
    db.files
        .into_iter()
        .map(|e| {
            let fp = b64
                .decode(&e.fingerprint)
                .map_err(|err| invalid(format!("bad fingerprint: {err}")))?;
            Ok(Entry {
                path: PathBuf::from(e.path),
                id: FileId {
                    dev: e.dev,
                    ino: e.inode,
                },
                offset: e.offset,
                fp: Fingerprint::from_tail(&fp),
            })
        })
        .collect()
}

/// Writes the database atomically: a temporary file next to it, fsync, rename.
pub fn store(path: &Path, entries: &[Entry]) -> Result<(), DbError> {
    use std::io::Write;
    let b64 = base64::engine::general_purpose::STANDARD;
    let db = DbFile {
        version: 1,
        files: entries
            .iter()
            .map(|e| DbEntry {
                path: e.path.to_string_lossy().into_owned(),
                dev: e.id.dev,
                inode: e.id.ino,
                offset: e.offset,
                fingerprint: b64.encode(e.fp.bytes()),
            })
            .collect(),
    };
    let err = |source| DbError::Write {
        path: path.display().to_string(),
        source,
    };
    let mut tmp_name = path.as_os_str().to_owned();
    tmp_name.push(".tmp");
    let tmp = PathBuf::from(tmp_name);
    let body = serde_json::to_vec_pretty(&db).map_err(|e| err(std::io::Error::other(e)))?;
    let mut file = std::fs::File::create(&tmp).map_err(err)?;
    file.write_all(&body).map_err(err)?;
    file.sync_all().map_err(err)?;
    drop(file);
    std::fs::rename(&tmp, path).map_err(err)?;
    Ok(())
}

struct Tracked {
    entry: Entry,
    /// An ack failed: the offset stays where it is until restart.
    frozen: bool,
}

/// Runs until the reader drops its sender, then writes the final state.
pub async fn run(
    path: PathBuf,
    mut rx: mpsc::UnboundedReceiver<Message>,
    metrics: ComponentMetrics,
) {
    let mut files: HashMap<u64, Tracked> = HashMap::new();
    let mut dirty = false;
    let mut last_write = tokio::time::Instant::now();
    loop {
        let msg = if dirty {
            let due = last_write + WRITE_INTERVAL;
            tokio::select! {
                m = rx.recv() => m,
                _ = tokio::time::sleep_until(due) => {
                    write(&path, &files, &metrics).await;
                    dirty = false;
                    last_write = tokio::time::Instant::now();
                    continue;
                }
            }
        } else {
            rx.recv().await
        };
        let Some(msg) = msg else { break };
        match msg {
            Message::Track {
                uid,
                id,
                path,
                offset,
                fp,
            } => {
                files.insert(
                    uid,
                    Tracked {
                        entry: Entry {
                            path,
                            id,
                            offset,
                            fp,
                        },
                        frozen: false,
                    },
                );
                dirty = true;
            }
            Message::Advance {
                uid,
                offset,
                fp,
                waiter,
            } => {
                let ok = match waiter {
                    Some(w) => w.wait().await,
                    None => true,
                };
                if let Some(t) = files.get_mut(&uid) {
                    if t.frozen {
                        continue;
                    }
                    if ok {
                        if t.entry.offset != offset {
                            t.entry.offset = offset;
                            t.entry.fp = fp;
                            dirty = true;
                        }
                    } else {
                        t.frozen = true;
                        metrics.error("undelivered");
                        tracing::warn!(source = %metrics.name(), file = %t.entry.path.display(),
                            offset = t.entry.offset,
                            "records read from this file were not delivered; its checkpoint stays \
                             here so they are read again after a restart");
                    }
                }
            }
            Message::Forget { uid } => {
                if files.remove(&uid).is_some() {
                    dirty = true;
                }
            }
        }
        if dirty && last_write.elapsed() >= WRITE_INTERVAL {
            write(&path, &files, &metrics).await;
            dirty = false;
            last_write = tokio::time::Instant::now();
        }
    }
    if dirty {
        write(&path, &files, &metrics).await;
    }
}

async fn write(path: &Path, files: &HashMap<u64, Tracked>, metrics: &ComponentMetrics) {
    let mut entries: Vec<Entry> = files.values().map(|t| t.entry.clone()).collect();
    entries.sort_by(|a, b| a.path.cmp(&b.path).then(a.id.cmp(&b.id)));
    let path = path.to_path_buf();
    let result = tokio::task::spawn_blocking(move || store(&path, &entries)).await;
    match result {
        Ok(Ok(())) => {}
        Ok(Err(e)) => {
            metrics.error("db_write");
            tracing::error!(source = %metrics.name(), error = %e, "checkpoint not saved; retrying");
        }
        Err(e) => {
            metrics.error("db_write");
            tracing::error!(source = %metrics.name(), error = %e, "checkpoint writer failed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::buffer::AckRef;

    #[test]
    fn store_and_load_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db.json");
        assert!(load(&path).unwrap().is_empty());
        let e = Entry {
            path: PathBuf::from("/var/log/a.log"),
            id: FileId { dev: 1, ino: 2 },
            offset: 42,
            fp: Fingerprint::from_tail(b"line\n"),
        };
        store(&path, std::slice::from_ref(&e)).unwrap();
        assert_eq!(load(&path).unwrap(), vec![e]);
        std::fs::write(&path, b"{garbage").unwrap();
        assert!(matches!(load(&path), Err(DbError::Invalid { .. })));
    }

    #[tokio::test]
    async fn offsets_move_only_after_successful_acks_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db.json");
        let (tx, rx) = mpsc::unbounded_channel();
        let task = tokio::spawn(run(
            path.clone(),
            rx,
            ComponentMetrics::detached("tail", "source"),
        ));
        let id = FileId { dev: 1, ino: 9 };
        tx.send(Message::Track {
            uid: 1,
            id,
            path: PathBuf::from("/a"),
            offset: 0,
            fp: Fingerprint::default(),
        })
        .unwrap();
        let (ok, w1) = AckRef::new();
        let (bad, w2) = AckRef::new();
        let (late, w3) = AckRef::new();
        for (offset, w) in [(10, w1), (20, w2), (30, w3)] {
            tx.send(Message::Advance {
                uid: 1,
                offset,
                fp: Fingerprint::from_tail(b"x"),
                waiter: Some(w),
            })
            .unwrap();
        }
        ok.complete();
        bad.fail();
        late.complete();
        drop(tx);
        task.await.unwrap();
        let entries = load(&path).unwrap();
        assert_eq!(entries.len(), 1);
        assert_eq!(entries[0].offset, 10, "frozen before the failed batch");
    }
}
