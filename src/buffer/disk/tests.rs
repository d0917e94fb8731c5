use std::sync::Arc;
use std::time::Duration;

use super::*;
use crate::buffer::{build_queue, AckRef, AckWaiter, BufferKind, QueueReceiver, QueueSender};
use crate::event::{Event, EventTime, Map, Value};
use crate::metrics::Metrics;

fn settings(dir: &Path, max_size: u64, when_full: WhenFull) -> DiskSettings {
    DiskSettings {
        path: dir.to_path_buf(),
        max_size,
        fsync: FsyncPolicy::Interval(Duration::from_millis(50)),
        when_full,
    }
}

struct Q {
    tx: QueueSender,
    rx: QueueReceiver,
    metrics: Arc<Metrics>,
    component: ComponentMetrics,
    health: Arc<Health>,
}

/// Opens the queue; waits briefly for a previous queue on the directory to let go of its lock
/// (its background ticker may hold it for a moment after the halves are dropped).
fn open_q(s: &DiskSettings) -> Result<Q, DiskError> {
    for _ in 0..100 {
        match open_q_once(s) {
            Err(e) if e.what == "cannot lock it" => std::thread::sleep(Duration::from_millis(20)),
            other => return other,
        }
    }
    open_q_once(s)
}

fn open_q_once(s: &DiskSettings) -> Result<Q, DiskError> {
    let metrics = Arc::new(Metrics::new());
    let component = metrics.component("s", "sink");
    let health = Arc::new(Health::default());
    let (tx, rx) = build_queue(
        "s",
        &BufferKind::Disk(s.clone()),
        1024 * 1024,
        &metrics,
        &component,
        health.clone(),
    )?;
    Ok(Q {
        tx,
        rx,
        metrics,
        component,
        health,
    })
}

/// A batch of `n` records whose `seq` starts at `first`, with `pad` bytes of text each.
fn batch(first: i64, n: i64, pad: usize) -> (Batch, AckWaiter) {
    let (ack, waiter) = AckRef::new();
    let events = (first..first + n)
        .map(|i| {
            let mut m = Map::new();
            m.insert("seq", Value::Int(i));
            m.insert("log", Value::string("x".repeat(pad)));
            Event::new("t".into(), EventTime::new(1700000000 + i, 5), m)
        })
        .collect();
    (
        Batch::new("t".into(), events, n as usize * pad, Some(ack)),
        waiter,
    )
}

fn seqs(b: &Batch) -> Vec<i64> {
    b.events
        .iter()
        .map(|e| match e.record.get(b"seq") {
            Some(Value::Int(i)) => *i,
            other => panic!("no seq: {other:?}"),
        })
        .collect()
}

async fn send(q: &Q, first: i64, n: i64, pad: usize) {
    let (b, waiter) = batch(first, n, pad);
    q.tx.send(b).await.unwrap();
    assert!(
        waiter.wait().await,
        "the upstream ack completes once on disk"
    );
}

async fn recv(q: &mut Q) -> Batch {
    tokio::time::timeout(Duration::from_secs(5), q.rx.recv())
        .await
        .expect("a batch in time")
        .expect("a batch")
}

fn segment_files(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "seg"))
        .collect();
    v.sort();
    v
}

#[tokio::test]
async fn append_read_ack_round_trip_with_times_and_metrics() {
    let dir = tempfile::tempdir().unwrap();
    let s = settings(dir.path(), 1 << 30, WhenFull::Block);
    let mut q = open_q(&s).unwrap();
    for i in 0..5 {
        send(&q, i * 10, 10, 20).await;
    }
    let m = q.metrics.buffer("s");
    assert_eq!(m.disk_records.get(), 50);
    assert!(m.disk_bytes.get() > 50 * 20);
    for i in 0..5 {
        let b = recv(&mut q).await;
        assert_eq!(seqs(&b), (i * 10..i * 10 + 10).collect::<Vec<_>>());
        assert_eq!(b.events[0].time, EventTime::new(1700000000 + i * 10, 5));
        assert_eq!(&*b.events[0].tag, "t");
        b.complete();
    }
    assert_eq!(m.disk_records.get(), 0);
    assert_eq!(m.disk_bytes.get(), 0);
    assert!(q.rx.try_recv().is_none());
    // Closing the senders ends the receiver.
    drop(q.tx);
    assert!(q.rx.recv().await.is_none());
}

#[tokio::test]
async fn unacknowledged_records_are_replayed_on_start_before_new_ones() {
    let dir = tempfile::tempdir().unwrap();
    let s = settings(dir.path(), 1 << 30, WhenFull::Block);
    {
        let mut q = open_q(&s).unwrap();
        for i in 0..10 {
            send(&q, i, 1, 10).await;
        }
        // 0, 1 acknowledged; 2 failed; 3 delivered out of order; 4 read and dropped.
        recv(&mut q).await.complete();
        recv(&mut q).await.complete();
        recv(&mut q).await.fail();
        let b3 = recv(&mut q).await;
        let b4 = recv(&mut q).await;
        b3.complete();
        drop(b4);
    }
    let mut q = open_q(&s).unwrap();
    assert_eq!(q.metrics.buffer("s").disk_records.get(), 8);
    send(&q, 100, 1, 10).await;
    let mut got = Vec::new();
    for _ in 0..8 {
        let b = recv(&mut q).await;
        got.extend(seqs(&b));
        b.complete();
    }
    // Everything after the last contiguous ack (1) is replayed, the new record last, except
    // 3: it was delivered ahead of 2, and the ack log recorded that.
    assert_eq!(got, vec![2, 4, 5, 6, 7, 8, 9, 100]);
    assert!(q.rx.try_recv().is_none(), "3 is not sent again");
    drop(q);
    let mut q = open_q(&s).unwrap();
    assert_eq!(q.metrics.buffer("s").disk_records.get(), 0);
    drop(q.tx);
    assert!(q.rx.recv().await.is_none());
}

/// A frame whose tag is longer than any fixed prefix the start-up scan might read (forward
/// tags have no length limit) is a valid frame: it and the frames after it are replayed.
#[tokio::test]
async fn frames_with_long_tags_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let s = settings(dir.path(), 1 << 30, WhenFull::Block);
    let long_tag: crate::event::Tag = "t".repeat(5000).as_str().into();
    {
        let q = open_q(&s).unwrap();
        for i in 0..3 {
            let (mut b, waiter) = batch(i, 1, 10);
            b.tag = long_tag.clone();
            for e in &mut b.events {
                e.tag = long_tag.clone();
            }
            q.tx.send(b).await.unwrap();
            assert!(waiter.wait().await);
        }
        send(&q, 3, 1, 10).await;
    }
    let mut q = open_q(&s).unwrap();
    assert_eq!(q.metrics.buffer("s").disk_records.get(), 4);
    let mut got = Vec::new();
    for _ in 0..4 {
        let b = recv(&mut q).await;
        got.extend(seqs(&b));
        b.complete();
    }
    assert_eq!(got, vec![0, 1, 2, 3]);
    assert_eq!(
        q.component.error_count("buffer_corrupt"),
        0,
        "no valid frame is reported corrupt"
    );
}

/// A segment that cannot be opened for a while (here: moved away) is read again from the same
/// place once it can, not skipped: its frames were acknowledged upstream.
#[tokio::test]
async fn a_read_error_is_retried_in_place_without_skipping_frames() {
    let dir = tempfile::tempdir().unwrap();
    let s = settings(dir.path(), 1 << 30, WhenFull::Block);
    let mut q = open_q(&s).unwrap();
    for i in 0..3 {
        send(&q, i, 1, 10).await;
    }
    let seg = segment_files(dir.path()).pop().expect("a segment");
    let away = dir.path().join("moved-away");
    fs::rename(&seg, &away).unwrap();
    assert!(
        tokio::time::timeout(Duration::from_millis(1500), q.rx.recv())
            .await
            .is_err(),
        "nothing can be read while the segment is gone"
    );
    assert!(q.component.error_count("buffer_read") >= 1);
    fs::rename(&away, &seg).unwrap();
    let mut got = Vec::new();
    for _ in 0..3 {
        let b = recv(&mut q).await;
        got.extend(seqs(&b));
        b.complete();
    }
    assert_eq!(got, vec![0, 1, 2]);
    assert_eq!(q.component.error_count("buffer_corrupt"), 0);
}

#[tokio::test]
async fn segments_are_deleted_once_every_record_in_them_is_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    // max 1 MiB → 128 KiB segments; each batch is ~10 KiB.
    let s = settings(dir.path(), 1 << 20, WhenFull::Block);
    let mut q = open_q(&s).unwrap();
    for i in 0..60 {
        send(&q, i * 10, 10, 1000).await;
    }
    let before = segment_files(dir.path()).len();
    assert!(before >= 4, "{before} segments");
    // Acknowledge half: the fully acknowledged leading segments go, the rest stay.
    for _ in 0..30 {
        recv(&mut q).await.complete();
    }
    let middle = segment_files(dir.path()).len();
    assert!(middle < before && middle > 1, "{before} → {middle}");
    for _ in 0..30 {
        recv(&mut q).await.complete();
    }
    // Only the segment being written remains.
    send(&q, 1000, 1, 10).await;
    recv(&mut q).await.complete();
    assert_eq!(segment_files(dir.path()).len(), 1);
}

#[tokio::test]
async fn full_buffer_blocks_until_space_frees_or_drops_newest_counted() {
    let dir = tempfile::tempdir().unwrap();
    let s = settings(dir.path(), 20_000, WhenFull::Block);
    let mut q = open_q(&s).unwrap();
    send(&q, 0, 10, 1000).await; // ~10 KiB
    let (b, waiter) = batch(10, 10, 1000);
    let tx = q.tx.clone();
    let blocked = tokio::spawn(async move { tx.send(b).await });
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(
        !blocked.is_finished(),
        "a full disk buffer holds the sender"
    );
    recv(&mut q).await.complete();
    blocked.await.unwrap().unwrap();
    assert!(waiter.wait().await);
    drop(q);

    let dir = tempfile::tempdir().unwrap();
    let s = settings(dir.path(), 20_000, WhenFull::DropNewest);
    let mut q = open_q(&s).unwrap();
    send(&q, 0, 10, 1000).await;
    send(&q, 10, 10, 1000).await; // dropped, but acknowledged: dropping is the configured policy
    assert_eq!(q.component.dropped_count("buffer_full"), 10);
    let b = recv(&mut q).await;
    assert_eq!(seqs(&b)[0], 0);
    b.complete();
    assert!(q.rx.try_recv().is_none());
}

#[tokio::test]
async fn an_unusable_path_is_a_clear_error_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("plain-file");
    fs::write(&file, b"x").unwrap();
    let s = settings(&file.join("buffer"), 1 << 20, WhenFull::Block);
    let e = open_q(&s)
        .err()
        .expect("a path through a regular file is unusable");
    let text = e.to_string();
    assert!(text.contains("plain-file/buffer"), "{text}");
    assert!(text.contains("buffer = \"memory\""), "{text}");
}

/// Three frames written, then the segment cut at every length from the end of the first frame
/// to the full size (and one byte flipped in the last frame): start-up keeps the whole frames,
/// reports the torn tail, and never panics.
#[tokio::test]
async fn a_torn_or_corrupt_tail_is_detected_at_every_truncation_point() {
    let dir = tempfile::tempdir().unwrap();
    let s = settings(dir.path(), 1 << 30, WhenFull::Block);
    {
        let q = open_q(&s).unwrap();
        for i in 0..3 {
            send(&q, i * 2, 2, 30).await;
        }
    }
    let files = segment_files(dir.path());
    let full = fs::read(&files[0]).unwrap();
    // Frame boundaries from the headers.
    let mut ends = Vec::new();
    let mut pos = 0;
    while pos < full.len() {
        let len = u32::from_le_bytes(full[pos..pos + 4].try_into().unwrap()) as usize;
        pos += frame::HEADER + len;
        ends.push(pos);
    }
    assert_eq!(ends.len(), 3);
    let mut cases: Vec<(Vec<u8>, usize, bool)> = Vec::new();
    for cut in ends[0]..=full.len() {
        let whole = ends.iter().filter(|&&e| e <= cut).count();
        cases.push((full[..cut].to_vec(), whole, !ends.contains(&cut)));
    }
    for at in [ends[1] + 3, ends[1] + 10, full.len() - 1] {
        let mut bad = full.clone();
        bad[at] ^= 0x40;
        cases.push((bad, 2, true));
    }
    for (n, (bytes, whole, corrupt)) in cases.into_iter().enumerate() {
        let case = tempfile::tempdir().unwrap();
        fs::write(case.path().join(files[0].file_name().unwrap()), &bytes).unwrap();
        let s = settings(case.path(), 1 << 30, WhenFull::Block);
        let mut q = open_q(&s).unwrap();
        assert_eq!(
            q.component.error_count("buffer_corrupt"),
            u64::from(corrupt),
            "case {n}"
        );
        send(&q, 100, 1, 5).await;
        let mut got = Vec::new();
        for _ in 0..=whole {
            let b = recv(&mut q).await;
            got.extend(seqs(&b));
            b.complete();
        }
        let mut want: Vec<i64> = (0..whole as i64 * 2).collect();
        want.push(100);
        assert_eq!(got, want, "case {n} ({} bytes)", bytes.len());
        assert!(q.health.problems().is_empty());
    }
}

#[tokio::test]
async fn a_corrupt_ack_file_replays_everything_rather_than_losing_records() {
    let dir = tempfile::tempdir().unwrap();
    let s = settings(dir.path(), 1 << 30, WhenFull::Block);
    {
        let mut q = open_q(&s).unwrap();
        send(&q, 0, 1, 5).await;
        send(&q, 1, 1, 5).await;
        recv(&mut q).await.complete();
    }
    fs::write(dir.path().join("ack"), b"garbage").unwrap();
    let mut q = open_q(&s).unwrap();
    assert_eq!(q.component.error_count("buffer_corrupt"), 1);
    assert_eq!(seqs(&recv(&mut q).await), vec![0]);
    assert_eq!(seqs(&recv(&mut q).await), vec![1]);
}

#[tokio::test]
async fn runtime_write_failures_hold_the_sender_and_mark_it_unhealthy() {
    let dir = tempfile::tempdir().unwrap();
    let buf = dir.path().join("buf");
    // Tiny segments: the second batch needs a new segment file.
    let s = settings(&buf, 1, WhenFull::Block);
    let mut q = open_q(&s).unwrap();
    send(&q, 0, 1, 70_000).await;
    recv(&mut q).await.complete();
    // The directory disappears (replaced by a regular file): new segments cannot be created.
    let moved = dir.path().join("moved");
    fs::rename(&buf, &moved).unwrap();
    fs::write(&buf, b"not a directory").unwrap();
    let (b, waiter) = batch(1, 1, 70_000);
    let tx = q.tx.clone();
    let pending = tokio::spawn(async move { tx.send(b).await });
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert!(!pending.is_finished(), "the sender waits while writes fail");
    assert!(q.component.error_count("buffer_write") >= 1);
    assert!(q.health.problems().contains_key("s.buffer"));
    fs::remove_file(&buf).unwrap();
    fs::rename(&moved, &buf).unwrap();
    tokio::time::timeout(Duration::from_secs(10), pending)
        .await
        .expect("writes resume")
        .unwrap()
        .unwrap();
    assert!(waiter.wait().await);
    assert!(q.health.problems().is_empty());
    assert_eq!(seqs(&recv(&mut q).await), vec![1]);
}

#[tokio::test]
async fn a_failed_batch_is_delivered_again_and_then_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let s = settings(dir.path(), 1 << 30, WhenFull::Block);
    let mut q = open_q(&s).unwrap();
    for i in 0..3 {
        send(&q, i, 1, 10).await;
    }
    let b0 = recv(&mut q).await;
    let b1 = recv(&mut q).await;
    b0.fail();
    b1.complete();
    let b2 = recv(&mut q).await;
    assert_eq!(seqs(&b2), vec![2]);
    b2.complete();
    // The ack position waits for 0; it comes again after a pause, and then everything is done.
    assert_eq!(q.metrics.buffer("s").disk_records.get(), 3);
    let again = recv(&mut q).await;
    assert_eq!(seqs(&again), vec![0]);
    again.complete();
    assert_eq!(q.metrics.buffer("s").disk_records.get(), 0);
    drop(q);
    let mut q = open_q(&s).unwrap();
    drop(q.tx);
    assert!(q.rx.recv().await.is_none(), "nothing is left to replay");
}

#[tokio::test]
async fn fsync_always_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = settings(dir.path(), 1 << 30, WhenFull::Block);
    s.fsync = FsyncPolicy::Always;
    let mut q = open_q(&s).unwrap();
    for i in 0..3 {
        send(&q, i * 5, 5, 10).await;
    }
    for i in 0..3 {
        let b = recv(&mut q).await;
        assert_eq!(seqs(&b), (i * 5..i * 5 + 5).collect::<Vec<_>>());
        b.complete();
    }
}

#[tokio::test]
async fn a_buffer_directory_is_used_by_one_queue_at_a_time() {
    let dir = tempfile::tempdir().unwrap();
    let s = settings(dir.path(), 1 << 30, WhenFull::Block);
    let q = open_q(&s).unwrap();
    let e = open_q_once(&s).err().expect("the directory is locked");
    assert!(e.to_string().contains("holds its lock"), "{e}");
    drop(q);
    open_q(&s).expect("free again once closed");
}

#[tokio::test]
async fn frames_delivered_out_of_order_keep_their_share_until_the_ack_position_passes_them() {
    let dir = tempfile::tempdir().unwrap();
    let s = settings(dir.path(), 1 << 30, WhenFull::Block);
    let mut q = open_q(&s).unwrap();
    // Three frames of ~400 KB against a 1 MiB buffer_limit.
    for i in 0..3 {
        send(&q, i, 1, 400_000).await;
    }
    let b0 = recv(&mut q).await;
    let b1 = recv(&mut q).await;
    b1.complete();
    // Frame 1 is delivered but the recorded position is still before frame 0: its share is
    // held, so the window (what a crash could repeat) stays within buffer_limit.
    assert!(
        q.rx.try_recv().is_none(),
        "a third frame would exceed the window"
    );
    assert_eq!(ack_log::read(dir.path()).unwrap(), None);
    b0.complete();
    // Both are recorded at once (no close needed: the ack log is appended per move).
    let after_two = ack_log::read(dir.path()).unwrap().expect("a position");
    let b2 = recv(&mut q).await;
    assert_eq!(seqs(&b2), vec![2]);
    b2.complete();
    let after_three = ack_log::read(dir.path()).unwrap().expect("a position");
    assert!(after_three > after_two);
}
