//! The `tail` source, end to end: the real binary follows files written by the test and writes
//! what it reads to a file sink. Lines carry sequence numbers so that loss, duplication and
//! order are checked exactly.

mod support;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use logferry_test_kit::logferry::{logferry_bin, read_jsonl, wait_for_lines};
use logferry_test_kit::metrics;
use logferry_test_kit::net::{free_port, wait_listening};
use logferry_test_kit::wait::wait_until;
use serde_json::Value;

/// A logferry process running a config written to `dir`; killed on drop.
struct Tail {
    child: Option<Child>,
    stderr: PathBuf,
    http: std::net::SocketAddr,
}

/// Options for [`Tail::start`].
#[derive(Default)]
struct Run {
    /// Run as `nobody` (when the tests run as root), so file permissions apply.
    as_nobody: bool,
}

impl Tail {
    /// Starts logferry with `config` (`{http}` is replaced by a free address) and waits until
    /// its HTTP port answers.
    fn start(dir: &Path, name: &str, config: &str, run: Run) -> Tail {
        let http = format!("127.0.0.1:{}", free_port());
        let path = dir.join(format!("{name}.toml"));
        std::fs::write(
            &path,
            format!("[service]\nhttp_listen = \"{http}\"\ngrace_period = \"10s\"\n{config}"),
        )
        .unwrap();
        let stderr = dir.join(format!("{name}.stderr"));
        let bin = if run.as_nobody {
            binary_for_nobody(dir)
        } else {
            logferry_bin()
        };
        let mut cmd = Command::new(bin);
        cmd.args(["run", "--config"])
            .arg(&path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&stderr).unwrap());
        if run.as_nobody {
            use std::os::unix::process::CommandExt;
            cmd.uid(65534).gid(65534);
        }
        let mut t = Tail {
            child: Some(cmd.spawn().expect("spawn logferry")),
            stderr,
            http: http.parse().unwrap(),
        };
        let child = t.child.as_mut().expect("spawned above");
        if let Err(reason) = wait_listening(child, t.http, Duration::from_secs(20)) {
            panic!("logferry {reason}:\n{}", t.stderr());
        }
        t
    }

    /// Waits until `n` files are followed (the first scan is done, so a file present before it
    /// was read from its end, and what is appended now is new).
    fn wait_following(&self, n: usize) {
        wait_until("files to be followed", Duration::from_secs(10), || {
            self.stderr().matches("following file").count() >= n
        });
    }

    /// The value of the first metric line starting with `prefix` (0 when absent).
    fn metric(&self, prefix: &str) -> f64 {
        let (_, body) = logferry_test_kit::net::http_request(self.http, "GET", "/metrics", b"");
        metrics::first(&String::from_utf8_lossy(&body), prefix).unwrap_or(0.0)
    }

    fn pid(&self) -> u32 {
        self.child.as_ref().map(|c| c.id()).unwrap_or(0)
    }

    fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    fn signal(&mut self, sig: &str) -> std::process::ExitStatus {
        let child = self.child.as_mut().expect("running");
        let _ = Command::new("kill")
            .args([sig, &child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                self.child = None;
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "logferry did not exit:\n{}",
                self.stderr()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Tail {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Fast polling so the suite takes seconds.
const FAST: &str = "poll_interval = \"20ms\"\nrefresh_interval = \"100ms\"\n";

fn sink(out: &Path) -> String {
    format!(
        "[[sinks]]\ntype = \"file\"\nmatch = \"*\"\npath = \"{}\"\ntime_key = \"@t\"\ntime_key_format = \"iso8601_ns\"\n",
        out.display()
    )
}

fn append(path: &Path, text: &[u8]) {
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap();
    f.write_all(text).unwrap();
}

/// `seq` of records read back, in output order, from lines `"<prefix> <seq>"`.
fn seqs(records: &[Value], key: &str, prefix: &str) -> Vec<u64> {
    records
        .iter()
        .filter_map(|r| r[key].as_str())
        .filter_map(|l| l.strip_prefix(prefix))
        .map(|n| n.trim().parse::<u64>().unwrap())
        .collect()
}

fn exactly_once(seen: &[u64], n: u64) {
    let mut count = vec![0u32; n as usize];
    for &s in seen {
        assert!(s < n, "unexpected seq {s}");
        count[s as usize] += 1;
    }
    let missing: Vec<usize> = (0..n as usize).filter(|&i| count[i] == 0).collect();
    let dup: Vec<usize> = (0..n as usize).filter(|&i| count[i] > 1).collect();
    assert!(
        missing.is_empty() && dup.is_empty(),
        "of {n}: {} missing (first {:?}), {} duplicated (first {:?})",
        missing.len(),
        missing.iter().take(5).collect::<Vec<_>>(),
        dup.len(),
        dup.iter().take(5).collect::<Vec<_>>()
    );
}

#[test]
fn appended_lines_arrive_in_order_per_file_and_old_content_is_skipped() {
    let dir = tempfile::tempdir().unwrap();
    let logs = dir.path().join("logs");
    std::fs::create_dir(&logs).unwrap();
    let out = dir.path().join("out.jsonl");
    // Present before start: read from the end (read_from_head = false).
    append(&logs.join("a.log"), b"old 1\nold 2\n");
    let mut lf = Tail::start(
        dir.path(),
        "lf",
        &format!(
            "[[sources]]\ntype = \"tail\"\npath = \"{}/*.log\"\npath_key = \"file\"\n{FAST}{}",
            logs.display(),
            sink(&out)
        ),
        Run::default(),
    );
    lf.wait_following(1);
    // Lines appended over time, to the old file and to one created later (read from its start),
    // with a line written in two parts.
    for round in 0..10u64 {
        for (name, n) in [("a", 0u64), ("b", 1)] {
            append(
                &logs.join(format!("{name}.log")),
                format!(
                    "{name} {}\n{name} {}\n",
                    round * 4 + n * 2,
                    round * 4 + n * 2 + 1
                )
                .as_bytes(),
            );
        }
        if round == 5 {
            append(&logs.join("a.log"), b"a-part");
            std::thread::sleep(Duration::from_millis(60));
            append(&logs.join("a.log"), b"ial\n");
        }
        std::thread::sleep(Duration::from_millis(30));
    }
    wait_for_lines(&out, 41, Duration::from_secs(10));
    std::thread::sleep(Duration::from_millis(200));
    assert!(lf.signal("-TERM").success());
    let records = read_jsonl(&out);
    assert_eq!(records.len(), 41, "{records:?}");
    let a: Vec<u64> = seqs(&records, "log", "a ");
    let b: Vec<u64> = seqs(&records, "log", "b ");
    let want_a: Vec<u64> = (0..10).flat_map(|r| [r * 4, r * 4 + 1]).collect();
    let want_b: Vec<u64> = (0..10).flat_map(|r| [r * 4 + 2, r * 4 + 3]).collect();
    assert_eq!(a, want_a);
    assert_eq!(b, want_b);
    assert!(records.iter().any(|r| r["log"] == "a-partial"));
    assert!(!records
        .iter()
        .any(|r| r["log"].as_str().is_some_and(|l| l.starts_with("old"))));
    assert!(records.iter().all(|r| r["file"]
        .as_str()
        .unwrap()
        .starts_with(logs.to_str().unwrap())));
}

#[test]
fn json_docker_and_cri_lines_parse_into_fields_and_times_and_split_lines_are_joined() {
    let dir = tempfile::tempdir().unwrap();
    let logs = dir.path().join("logs");
    std::fs::create_dir(&logs).unwrap();
    let out = dir.path().join("out.jsonl");
    let mut cfg = String::new();
    for (name, extra) in [
        ("json", "parser = \"json\"\ntime_key = \"ts\"\ntime_format = \"%Y-%m-%dT%H:%M:%S.%L%z\"\n"),
        ("docker", "parser = \"docker\"\n"),
        ("cri", "parser = \"cri\"\n"),
        (
            "regex",
            "parser = \"regex\"\nregex = '^(?<host>\\S+) \\[(?<time>[^\\]]+)\\] (?<msg>.*)$'\ntime_format = \"%d/%b/%Y:%H:%M:%S %z\"\n",
        ),
    ] {
        cfg.push_str(&format!(
            "[[sources]]\ntype = \"tail\"\npath = \"{}/{name}.log\"\nread_from_head = true\npath_key = \"file\"\n{FAST}{extra}",
            logs.display()
        ));
    }
    append(
        &logs.join("json.log"),
        b"{\"ts\":\"2024-05-14T09:30:01.250+02:00\",\"msg\":\"hi\",\"n\":3}\nnot json\n",
    );
    let long_piece = "x".repeat(20_000);
    append(
        &logs.join("docker.log"),
        format!(
            "{{\"log\":\"hello\\n\",\"stream\":\"stdout\",\"time\":\"2024-05-14T09:30:01.123456789Z\"}}\n\
             {{\"log\":\"{long_piece}\",\"stream\":\"stderr\",\"time\":\"2024-05-14T09:30:02Z\"}}\n\
             {{\"log\":\"out-between\\n\",\"stream\":\"stdout\",\"time\":\"2024-05-14T09:30:02.5Z\"}}\n\
             {{\"log\":\"-tail\\n\",\"stream\":\"stderr\",\"time\":\"2024-05-14T09:30:03Z\"}}\n"
        )
        .as_bytes(),
    );
    append(
        &logs.join("cri.log"),
        b"2024-05-14T09:30:01.5+00:00 stdout F plain line\n\
          2024-05-14T09:30:02.000000001Z stdout P first \n\
          2024-05-14T09:30:02.2Z stderr F an error\n\
          2024-05-14T09:30:02.3Z stdout P second \n\
          2024-05-14T09:30:02.4Z stdout F third\n",
    );
    append(
        &logs.join("regex.log"),
        b"10.0.0.1 [14/May/2024:09:30:01 +0000] GET /health\nno match here\n",
    );
    let mut lf = Tail::start(
        dir.path(),
        "lf",
        &format!("{cfg}{}", sink(&out)),
        Run::default(),
    );
    wait_for_lines(&out, 10, Duration::from_secs(10));
    std::thread::sleep(Duration::from_millis(200));
    assert!(lf.signal("-TERM").success());
    let records = read_jsonl(&out);
    let of = |name: &str| -> Vec<&Value> {
        records
            .iter()
            .filter(|r| {
                r["file"]
                    .as_str()
                    .unwrap()
                    .ends_with(&format!("/{name}.log"))
            })
            .collect()
    };
    let json = of("json");
    assert_eq!(json.len(), 2, "{json:?}");
    assert_eq!(json[0]["msg"], "hi");
    assert_eq!(json[0]["n"], 3);
    assert_eq!(json[0]["@t"], "2024-05-14T07:30:01.250000000Z");
    assert!(json[0].get("ts").is_none());
    assert_eq!(json[1]["log"], "not json");

    let docker = of("docker");
    assert_eq!(docker.len(), 3, "{docker:?}");
    assert_eq!(docker[0]["log"], "hello\n");
    assert_eq!(docker[0]["stream"], "stdout");
    assert_eq!(docker[0]["@t"], "2024-05-14T09:30:01.123456789Z");
    assert_eq!(docker[1]["log"], "out-between\n");
    assert_eq!(docker[2]["log"], format!("{long_piece}-tail\n"));
    assert_eq!(docker[2]["stream"], "stderr");
    assert_eq!(docker[2]["@t"], "2024-05-14T09:30:02.000000000Z");

    let cri = of("cri");
    assert_eq!(cri.len(), 3, "{cri:?}");
    assert_eq!(cri[0]["log"], "plain line");
    assert_eq!(cri[0]["stream"], "stdout");
    assert_eq!(cri[0]["_p"], "F");
    assert_eq!(cri[0]["@t"], "2024-05-14T09:30:01.500000000Z");
    assert_eq!(cri[1]["log"], "an error");
    assert_eq!(cri[1]["stream"], "stderr");
    assert_eq!(cri[2]["log"], "first second third");
    assert_eq!(cri[2]["_p"], "F");
    assert_eq!(cri[2]["@t"], "2024-05-14T09:30:02.000000001Z");

    let regex = of("regex");
    assert_eq!(regex.len(), 2);
    assert_eq!(regex[0]["host"], "10.0.0.1");
    assert_eq!(regex[0]["msg"], "GET /health");
    assert_eq!(regex[0]["@t"], "2024-05-14T09:30:01.000000000Z");
    assert_eq!(regex[1]["log"], "no match here");
}

/// Writes `"line <seq>\n"` to `<logs>/app.log` from a thread, rotating with `rotate` every
/// `every` lines, until `n` lines are written.
fn continuous_writer(
    logs: PathBuf,
    n: u64,
    every: u64,
    rotate: fn(&Path, u64),
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let path = logs.join("app.log");
        let open = || {
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&path)
                .unwrap()
        };
        let mut f = open();
        let mut rotations = 0;
        for seq in 0..n {
            writeln!(f, "line {seq}").unwrap();
            if seq % 50 == 49 {
                std::thread::sleep(Duration::from_millis(1));
            }
            if seq % every == every - 1 && seq + 1 < n {
                rotations += 1;
                rotate(&logs, rotations);
                f = open();
            }
        }
    })
}

fn rotation_run(rotate: fn(&Path, u64)) {
    let dir = tempfile::tempdir().unwrap();
    let logs = dir.path().join("logs");
    std::fs::create_dir(&logs).unwrap();
    let out = dir.path().join("out.jsonl");
    let mut lf = Tail::start(
        dir.path(),
        "lf",
        &format!(
            "[[sources]]\ntype = \"tail\"\npath = \"{}/*.log\"\nread_from_head = true\nrotate_wait = \"1s\"\n{FAST}{}",
            logs.display(),
            sink(&out)
        ),
        Run::default(),
    );
    let n = 30_000;
    continuous_writer(logs.clone(), n, 5_000, rotate)
        .join()
        .unwrap();
    wait_lines_soft(&out, n as usize, Duration::from_secs(30));
    // Nothing more arrives late (duplicates would).
    std::thread::sleep(Duration::from_millis(1500));
    assert!(lf.signal("-TERM").success());
    let err = lf.stderr();
    if std::env::var_os("TAIL_TEST_VERBOSE").is_some() {
        eprintln!("{err}");
    }
    exactly_once(&seqs_fast(&out), n);
    assert!(!err.contains("panicked"), "{err}");
}

/// Waits for `n` lines in `path` but returns after `timeout` anyway: the exact check that
/// follows says what is missing.
fn wait_lines_soft(path: &Path, n: usize, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        let count = std::fs::read(path)
            .map(|b| b.iter().filter(|&&c| c == b'\n').count())
            .unwrap_or(0);
        if count >= n {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn rotation_by_rename_under_continuous_writes_delivers_every_line_once() {
    rotation_run(|logs, k| {
        std::fs::rename(logs.join("app.log"), logs.join(format!("app.log.{k}"))).unwrap();
    });
}

#[test]
fn copytruncate_under_continuous_writes_delivers_every_line_once() {
    // As logrotate's copytruncate does: copy, then truncate in place. The writer keeps its
    // O_APPEND handle (reopened here only for simplicity; the file is the same inode).
    rotation_run(|logs, k| {
        let live = logs.join("app.log");
        std::fs::copy(&live, logs.join(format!("app.log.{k}"))).unwrap();
        std::fs::OpenOptions::new()
            .write(true)
            .open(&live)
            .unwrap()
            .set_len(0)
            .unwrap();
        // Two copytruncates before the reader looks would lose the middle generation whatever
        // the reader does (it is in no file the reader can know of); real rotations are
        // minutes apart, this keeps a slow CI machine from hitting that.
        std::thread::sleep(Duration::from_millis(50));
    });
}

#[test]
fn kill_9_mid_file_and_restart_with_db_loses_nothing() {
    use std::io::Read;
    let dir = tempfile::tempdir().unwrap();
    let logs = dir.path().join("logs");
    std::fs::create_dir(&logs).unwrap();
    let out = dir.path().join("out.jsonl");
    let db = dir.path().join("tail.db");
    let n = 400_000u64;
    {
        let mut f = std::io::BufWriter::new(std::fs::File::create(logs.join("big.log")).unwrap());
        for seq in 0..n {
            writeln!(f, "line {seq}").unwrap();
        }
    }
    let source = format!(
        "[[sources]]\ntype = \"tail\"\npath = \"{}/*.log\"\nread_from_head = true\ndb = \"{}\"\nbuffer_max_size = \"16KiB\"\n{FAST}",
        logs.display(),
        db.display(),
    );
    // The first run writes into a FIFO that the test reads: the test, not the machine's speed,
    // decides how far the first run gets, so the kill always lands mid-file. Reads of 16KiB
    // make batches of ~1,400 lines, so checkpoints come long before the test stops reading.
    let (fifo, mut reader) = fifo(dir.path());
    let mut first = Tail::start(
        dir.path(),
        "first",
        &format!(
            "{source}[[sinks]]\ntype = \"file\"\nmatch = \"*\"\npath = \"{}\"\n",
            fifo.display()
        ),
        Run::default(),
    );
    // Read a part of the file's lines, then stop reading and kill once a checkpoint is written.
    let mut text = Vec::new();
    let mut chunk = vec![0u8; 1 << 16];
    let newlines = |t: &[u8]| t.iter().filter(|&&c| c == b'\n').count();
    wait_until("a checkpoint mid-file", Duration::from_secs(30), || {
        if newlines(&text) < n as usize / 8 {
            if let Ok(k) = reader.read(&mut chunk) {
                text.extend_from_slice(&chunk[..k]);
            }
        }
        let checkpointed = std::fs::read_to_string(&db)
            .map(|t| t.contains("\"offset\": ") && !t.contains("\"offset\": 0"))
            .unwrap_or(false);
        checkpointed && !text.is_empty()
    });
    eprintln!(
        "DEBUG lines {} bytes {} db {:?}",
        newlines(&text),
        text.len(),
        std::fs::read_to_string(&db)
    );
    first.signal("-KILL");
    // What the first run wrote before it died is delivered: drain the pipe to its end.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match reader.read(&mut chunk) {
            Ok(0) => break,
            Ok(k) => text.extend_from_slice(&chunk[..k]),
            Err(_) => std::thread::sleep(Duration::from_millis(2)),
        }
        assert!(Instant::now() < deadline, "the FIFO did not reach its end");
    }
    std::fs::write(&out, &text).unwrap();
    let at_kill = newlines(&text);
    assert!(
        (at_kill as u64) < n,
        "the whole file was delivered before the kill; the test reads too much of the FIFO"
    );
    let config = format!("{source}{}", sink(&out));
    let db_text = std::fs::read_to_string(&db).unwrap();
    let mut second = Tail::start(dir.path(), "second", &config, Run::default());
    // Done when the checkpoint reaches the end of the file: everything was delivered.
    let size = std::fs::metadata(logs.join("big.log")).unwrap().len();
    wait_until(
        "the checkpoint at the end of the file",
        Duration::from_secs(60),
        || std::fs::read_to_string(&db).is_ok_and(|t| t.contains(&format!("\"offset\": {size}"))),
    );
    std::thread::sleep(Duration::from_millis(300));
    assert!(second.signal("-TERM").success());
    let all = seqs_fast(&out);
    let mut count = vec![0u32; n as usize];
    for &s in &all {
        count[s as usize] += 1;
    }
    assert!(count.iter().all(|&c| c >= 1), "a line was lost");
    // Duplicates are only lines written out before the kill but not yet checkpointed: they
    // form one contiguous run ending where the first run stopped.
    let dups: Vec<usize> = (0..n as usize).filter(|&i| count[i] > 1).collect();
    assert!(
        dups.len() < at_kill,
        "{} duplicates but only {at_kill} lines were out before the kill",
        dups.len()
    );
    if let (Some(first_dup), Some(last_dup)) = (dups.first(), dups.last()) {
        assert_eq!(
            last_dup - first_dup + 1,
            dups.len(),
            "duplicates are one run"
        );
    }
    // The restart resumed from the checkpoint instead of the start.
    assert!(
        count[0] == 1,
        "restart read the file again from its start; db was:\n{db_text}"
    );
    let err = second.stderr();
    assert!(!err.contains("db is not valid"), "{err}");
}

#[test]
fn bad_files_are_reported_and_do_not_disturb_good_ones() {
    // Under /tmp (world-traversable) rather than $TMPDIR, which nobody may not reach.
    let dir = tempfile::Builder::new().tempdir_in("/tmp").unwrap();
    let root = dir.path();
    let logs = root.join("logs");
    for sub in ["good", "weird", "locked"] {
        std::fs::create_dir_all(logs.join(sub)).unwrap();
    }
    let out = root.join("out");
    std::fs::create_dir(&out).unwrap();
    let out_file = out.join("out.jsonl");
    let skipped_out = out.join("skipped.jsonl");
    // Root ignores permissions: run logferry as nobody so that a mode-000 directory and file
    // really cannot be read. Everything else must be reachable for nobody.
    let as_nobody = unsafe_is_root();
    use std::os::unix::fs::PermissionsExt;
    let open_perm = |p: &Path, mode: u32| {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap()
    };
    open_perm(root, 0o755);
    open_perm(&out, 0o777);
    for sub in ["good", "weird"] {
        open_perm(&logs.join(sub), 0o777);
    }
    std::fs::write(logs.join("locked/secret.log"), b"hidden\n").unwrap();
    open_perm(&logs.join("locked"), 0o000);
    let unreadable = logs.join("weird/unreadable.log");
    std::fs::write(&unreadable, b"you cannot read me\n").unwrap();
    open_perm(&unreadable, 0o000);
    let max = 4096;
    let config = format!(
        "[[sources]]\ntype = \"tail\"\ntag = \"split\"\npath = \"{l}/*/*.log\"\nread_from_head = true\nbuffer_max_size = \"{max}\"\n{FAST}\
         [[sources]]\ntype = \"tail\"\ntag = \"skip\"\npath = \"{l}/weird/long.log\"\nread_from_head = true\nbuffer_max_size = \"{max}\"\nskip_long_lines = true\n{FAST}\
         [[sinks]]\ntype = \"file\"\nmatch = \"split\"\npath = \"{o}\"\n\
         [[sinks]]\ntype = \"file\"\nmatch = \"skip\"\npath = \"{s}\"\n",
        l = logs.display(),
        o = out_file.display(),
        s = skipped_out.display(),
    );
    let mut lf = Tail::start(root, "lf", &config, Run { as_nobody });
    let good = logs.join("good/app.log");
    let long = logs.join("weird/long.log");
    let garbage = logs.join("weird/garbage.log");
    let vanishing = logs.join("weird/vanishing.log");
    append(&vanishing, b"before vanishing\n");
    std::thread::sleep(Duration::from_millis(300));
    for seq in 0..200u64 {
        append(&good, format!("good {seq}\n").as_bytes());
        match seq {
            20 => {
                // 2.5 lines' worth of one line, then a normal line.
                let mut l = vec![b'L'; max * 2 + max / 2];
                l.extend_from_slice(b"\nafter long\n");
                append(&long, &l);
            }
            40 => append(
                &garbage,
                b"\x00\x01\x02\xff\xfe binary \x80\x81\n\xc3\x28 invalid utf8 \xe2\x82\n",
            ),
            60 => std::fs::remove_file(&vanishing).unwrap(),
            _ => {}
        }
        if seq % 20 == 0 {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    wait_until("every good line", Duration::from_secs(15), || {
        seqs(&read_jsonl(&out_file), "log", "good ").len() >= 200
    });
    std::thread::sleep(Duration::from_millis(300));
    assert!(lf.signal("-TERM").success());
    open_perm(&logs.join("locked"), 0o755);
    let records = read_jsonl(&out_file);
    exactly_once(&seqs(&records, "log", "good "), 200);
    let logs_of = |needle: &str| -> Vec<String> {
        records
            .iter()
            .filter_map(|r| r["log"].as_str())
            .filter(|l| l.contains(needle))
            .map(str::to_string)
            .collect()
    };
    // Split into buffer_max_size pieces, nothing lost.
    let pieces: Vec<String> = records
        .iter()
        .filter_map(|r| r["log"].as_str())
        .filter(|l| l.starts_with('L'))
        .map(str::to_string)
        .collect();
    assert_eq!(
        pieces.iter().map(|p| p.len()).collect::<Vec<_>>(),
        [max, max, max / 2]
    );
    assert_eq!(logs_of("after long").len(), 1);
    // Skipped with skip_long_lines.
    let skipped = read_jsonl(&skipped_out);
    assert_eq!(skipped.len(), 1, "{skipped:?}");
    assert_eq!(skipped[0]["log"], "after long");
    // Binary and invalid UTF-8 pass (JSON output replaces invalid sequences).
    assert_eq!(logs_of("binary").len(), 1);
    assert_eq!(logs_of("invalid utf8").len(), 1);
    assert_eq!(logs_of("before vanishing").len(), 1);
    assert!(logs_of("hidden").is_empty());
    let err = lf.stderr();
    if std::env::var_os("TAIL_TEST_VERBOSE").is_some() {
        eprintln!("{err}");
    }
    assert!(!err.contains("panicked"), "{err}");
    assert!(
        err.contains("skipping a line longer than buffer_max_size"),
        "{err}"
    );
    if as_nobody {
        assert!(
            err.contains("cannot look at this path") && err.contains("locked"),
            "no warning about the locked directory:\n{err}"
        );
        assert!(
            err.contains("cannot open a file to follow") && err.contains("unreadable.log"),
            "no warning about the unreadable file:\n{err}"
        );
    }
}

/// The binary, or a copy in `dir` when `nobody` cannot reach it where cargo built it (a
/// checkout under /root).
fn binary_for_nobody(dir: &Path) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let bin = logferry_bin();
    let reachable = bin.ancestors().skip(1).all(|d| {
        d.as_os_str().is_empty()
            || std::fs::metadata(d).is_ok_and(|m| m.permissions().mode() & 0o001 != 0)
    }) && std::fs::metadata(&bin)
        .is_ok_and(|m| m.permissions().mode() & 0o001 != 0);
    if reachable {
        return bin;
    }
    let copy = dir.join("logferry");
    std::fs::copy(&bin, &copy).unwrap();
    std::fs::set_permissions(&copy, std::fs::Permissions::from_mode(0o755)).unwrap();
    copy
}

/// True when the tests run as root (then permission tests run logferry as nobody).
fn unsafe_is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(1).map(|u| u == "0"))
        })
        .unwrap_or(false)
}

#[test]
fn pod_log_file_names_yield_kubernetes_fields_and_kube_tags() {
    let dir = tempfile::tempdir().unwrap();
    let containers = dir.path().join("var/log/containers");
    std::fs::create_dir_all(&containers).unwrap();
    let out = dir.path().join("out.jsonl");
    let id = "4f7e0c6a2b1d9e8f7a6b5c4d3e2f1a0b9c8d7e6f5a4b3c2d1e0f9a8b7c6d5e4f";
    let name = format!("web-7d9f8c-x2x9z_shop_nginx-{id}.log");
    // The kubelet's names are symlinks into /var/log/pods.
    let pods = dir.path().join("var/log/pods/shop_web/nginx");
    std::fs::create_dir_all(&pods).unwrap();
    append(
        &pods.join("0.log"),
        b"2024-05-14T09:30:01Z stdout F ready\n",
    );
    std::os::unix::fs::symlink(pods.join("0.log"), containers.join(&name)).unwrap();
    let tag = format!(
        "kube.{}.{name}",
        containers
            .to_str()
            .unwrap()
            .trim_start_matches('/')
            .replace('/', ".")
    );
    let mut lf = Tail::start(
        dir.path(),
        "lf",
        &format!(
            "[[sources]]\ntype = \"tail\"\npath = \"{}/*.log\"\nparser = \"cri\"\ntag = \"kube.*\"\nread_from_head = true\n{FAST}\
             [[sinks]]\ntype = \"file\"\nmatch = \"{tag}\"\npath = \"{}\"\n",
            containers.display(),
            out.display()
        ),
        Run::default(),
    );
    wait_for_lines(&out, 1, Duration::from_secs(10));
    assert!(lf.signal("-TERM").success());
    let records = read_jsonl(&out);
    assert_eq!(records.len(), 1);
    let k = &records[0]["kubernetes"];
    assert_eq!(k["pod_name"], "web-7d9f8c-x2x9z");
    assert_eq!(k["namespace_name"], "shop");
    assert_eq!(k["container_name"], "nginx");
    assert_eq!(k["container_id"], id);
    assert_eq!(records[0]["log"], "ready");
}

#[test]
fn shipped_tail_examples_validate() {
    for name in ["tail-daemonset-cri.toml", "tail-sidecar.toml"] {
        let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("examples")
            .join(name);
        let out = logferry_test_kit::logferry::logferry(&[
            "validate",
            "--config",
            path.to_str().unwrap(),
        ]);
        assert!(
            out.status.success(),
            "{name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn a_stalled_sink_pauses_reading_and_nothing_is_lost_when_it_resumes() {
    // The file sink writes into a FIFO that the test opens but does not read: once the pipe and
    // the sink's small queue are full, the sink stalls, and the tail source must stop reading
    // (not buffer the file in memory, not drop lines). Then the test reads everything.
    stalled_sink_run("", "buffer_limit = \"256KiB\"", |read, size| {
        read < size / 4
    });
}

#[test]
fn reading_stops_at_read_ahead_limit_whatever_the_sink_would_queue() {
    // The sink's queue could take the whole file (10 MB of lines, buffer_limit 64MiB): what
    // bounds the reading is the source's read_ahead_limit (256KiB of records routed and not yet
    // delivered), plus the FIFO's 64KiB and one read window.
    stalled_sink_run(
        "read_ahead_limit = \"256KiB\"\n",
        "buffer_limit = \"64MiB\"",
        |read, _| read < 512 * 1024,
    );
}

/// A FIFO `out.fifo` in `dir` for a file sink to write into, and its read end, opened without
/// waiting for the writer (O_NONBLOCK): the test reads at the pace it chooses.
fn fifo(dir: &Path) -> (PathBuf, std::fs::File) {
    use std::os::unix::fs::OpenOptionsExt;
    let fifo = dir.join("out.fifo");
    assert!(Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap()
        .success());
    let reader = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(0o4000)
        .open(&fifo)
        .unwrap();
    (fifo, reader)
}

/// Tails a 200,000-line file into a file sink writing to a FIFO nobody reads yet, checks what
/// was read after 1.5 s with `bounded(read, file size)`, then drains the FIFO: every line
/// arrives once.
fn stalled_sink_run(source: &str, sink: &str, bounded: fn(usize, usize) -> bool) {
    use std::io::Read;
    let dir = tempfile::tempdir().unwrap();
    let logs = dir.path().join("logs");
    std::fs::create_dir(&logs).unwrap();
    let (fifo, mut reader) = fifo(dir.path());
    let n = 200_000u64;
    let mut size = 0;
    {
        let mut f = std::io::BufWriter::new(std::fs::File::create(logs.join("a.log")).unwrap());
        for seq in 0..n {
            let line = format!("line {seq} {}\n", "p".repeat(40));
            size += line.len();
            f.write_all(line.as_bytes()).unwrap();
        }
    }
    let lf = Tail::start(
        dir.path(),
        "lf",
        &format!(
            "[[sources]]\ntype = \"tail\"\npath = \"{}/*.log\"\nread_from_head = true\nbuffer_max_size = \"16KiB\"\n{FAST}{source}\
             [[sinks]]\ntype = \"file\"\nmatch = \"*\"\npath = \"{}\"\n{sink}\n",
            logs.display(),
            fifo.display()
        ),
        Run::default(),
    );
    std::thread::sleep(Duration::from_millis(1500));
    let read_so_far = lf.metric("logferry_bytes_in_total{component=\"tail.0\"");
    assert!(
        read_so_far > 0.0 && bounded(read_so_far as usize, size),
        "{read_so_far} of {size} bytes read while the sink was stalled"
    );
    // Now drain the FIFO: every line arrives, once.
    let mut text = Vec::new();
    let mut lines = 0;
    let mut chunk = vec![0u8; 1 << 16];
    let deadline = Instant::now() + Duration::from_secs(60);
    while lines < n as usize {
        assert!(Instant::now() < deadline, "the sink did not resume");
        match reader.read(&mut chunk) {
            Ok(k) if k > 0 => {
                lines += chunk[..k].iter().filter(|&&c| c == b'\n').count();
                text.extend_from_slice(&chunk[..k]);
            }
            _ => std::thread::sleep(Duration::from_millis(2)),
        }
    }
    let out = dir.path().join("drained.jsonl");
    std::fs::write(&out, &text).unwrap();
    exactly_once(&seqs_fast(&out), n);
    drop(lf);
}

#[test]
fn many_files_with_few_open_handles() {
    let dir = tempfile::tempdir().unwrap();
    let logs = dir.path().join("logs");
    std::fs::create_dir(&logs).unwrap();
    let out = dir.path().join("out.jsonl");
    let mut lf = Tail::start(
        dir.path(),
        "lf",
        &format!(
            "[[sources]]\ntype = \"tail\"\npath = \"{}/*.log\"\nread_from_head = true\nmax_open_files = 3\n{FAST}{}",
            logs.display(),
            sink(&out)
        ),
        Run::default(),
    );
    let files = 20u64;
    let mut most_open = 0;
    for round in 0..10u64 {
        for f in 0..files {
            append(
                &logs.join(format!("f{f}.log")),
                format!("line {}\n", round * files + f).as_bytes(),
            );
        }
        for _ in 0..4 {
            most_open = most_open.max(open_files_under(lf.pid(), &logs));
            std::thread::sleep(Duration::from_millis(10));
        }
    }
    wait_for_lines(&out, (files * 10) as usize, Duration::from_secs(15));
    std::thread::sleep(Duration::from_millis(200));
    assert!(
        most_open <= 3,
        "{most_open} files open with max_open_files = 3"
    );
    assert!(lf.signal("-TERM").success());
    exactly_once(&seqs(&read_jsonl(&out), "log", "line "), files * 10);
}

/// How many of the process's descriptors point into `dir`.
fn open_files_under(pid: u32, dir: &Path) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|entries| {
            entries
                .flatten()
                .filter_map(|e| std::fs::read_link(e.path()).ok())
                .filter(|target| target.starts_with(dir))
                .count()
        })
        .unwrap_or(0)
}

#[test]
fn restart_with_db_resumes_and_reads_files_created_while_down_from_their_start() {
    let dir = tempfile::tempdir().unwrap();
    let logs = dir.path().join("logs");
    std::fs::create_dir(&logs).unwrap();
    let out = dir.path().join("out.jsonl");
    let db = dir.path().join("tail.db");
    append(&logs.join("a.log"), b"before first start\n");
    let config = format!(
        "[[sources]]\ntype = \"tail\"\npath = \"{}/*.log\"\ndb = \"{}\"\n{FAST}{}",
        logs.display(),
        db.display(),
        sink(&out)
    );
    let mut first = Tail::start(dir.path(), "first", &config, Run::default());
    first.wait_following(1);
    append(&logs.join("a.log"), b"a 0\n");
    wait_for_lines(&out, 1, Duration::from_secs(10));
    assert!(first.signal("-TERM").success());
    // While logferry is down: more lines, and a new file.
    append(&logs.join("a.log"), b"a 1\na 2\n");
    std::thread::sleep(Duration::from_millis(20));
    append(&logs.join("b.log"), b"b 0\nb 1\n");
    let mut second = Tail::start(dir.path(), "second", &config, Run::default());
    wait_for_lines(&out, 5, Duration::from_secs(10));
    std::thread::sleep(Duration::from_millis(300));
    assert!(second.signal("-TERM").success());
    let logs: Vec<String> = read_jsonl(&out)
        .iter()
        .map(|r| r["log"].as_str().unwrap().to_string())
        .collect();
    let mut sorted = logs.clone();
    sorted.sort();
    assert_eq!(sorted, ["a 0", "a 1", "a 2", "b 0", "b 1"], "{logs:?}");
}

#[test]
fn truncation_is_noticed_even_when_the_file_grew_back_past_the_offset() {
    let dir = tempfile::tempdir().unwrap();
    let logs = dir.path().join("logs");
    std::fs::create_dir(&logs).unwrap();
    let out = dir.path().join("out.jsonl");
    let path = logs.join("app.log");
    append(&path, b"");
    // A slow poll: the truncation and the rewrite both happen between two looks.
    let mut lf = Tail::start(
        dir.path(),
        "lf",
        &format!(
            "[[sources]]\ntype = \"tail\"\npath = \"{}/*.log\"\nread_from_head = true\npoll_interval = \"1s\"\n{}",
            logs.display(),
            sink(&out)
        ),
        Run::default(),
    );
    let first: String = (0..100).map(|i| format!("line {i}\n")).collect();
    append(&path, first.as_bytes());
    wait_for_lines(&out, 100, Duration::from_secs(10));
    std::fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .unwrap()
        .set_len(0)
        .unwrap();
    let second: String = (100..300).map(|i| format!("line {i}\n")).collect();
    append(&path, second.as_bytes());
    wait_lines_soft(&out, 300, Duration::from_secs(10));
    std::thread::sleep(Duration::from_millis(1200));
    assert!(lf.signal("-TERM").success());
    exactly_once(&seqs(&read_jsonl(&out), "log", "line "), 300);
}

#[test]
fn a_file_deleted_while_open_is_read_to_its_end() {
    let dir = tempfile::tempdir().unwrap();
    let logs = dir.path().join("logs");
    std::fs::create_dir(&logs).unwrap();
    let out = dir.path().join("out.jsonl");
    let path = logs.join("app.log");
    let mut writer = std::fs::File::create(&path).unwrap();
    let mut lf = Tail::start(
        dir.path(),
        "lf",
        &format!(
            "[[sources]]\ntype = \"tail\"\npath = \"{}/*.log\"\nread_from_head = true\nrotate_wait = \"1s\"\n{FAST}{}",
            logs.display(),
            sink(&out)
        ),
        Run::default(),
    );
    writer.write_all(b"line 0\n").unwrap();
    wait_for_lines(&out, 1, Duration::from_secs(10));
    std::fs::remove_file(&path).unwrap();
    // The writer still holds the deleted file and goes on writing, ending without a newline.
    writer.write_all(b"line 1\nline 2\nline 3").unwrap();
    wait_lines_soft(&out, 4, Duration::from_secs(10));
    assert!(lf.signal("-TERM").success());
    exactly_once(&seqs(&read_jsonl(&out), "log", "line "), 4);
}

/// The `seq` of every `"line <seq>"` in a file sink's output, without a JSON parser (fast
/// enough for hundreds of thousands of lines in a debug build).
fn seqs_fast(path: &Path) -> Vec<u64> {
    let text = std::fs::read_to_string(path).unwrap();
    text.lines()
        .filter_map(|l| {
            let at = l.find("\"line ")? + 6;
            let digits: String = l[at..].chars().take_while(char::is_ascii_digit).collect();
            digits.parse().ok()
        })
        .collect()
}

#[test]
fn a_file_rotated_while_logferry_was_down_is_finished_after_restart() {
    let dir = tempfile::tempdir().unwrap();
    let logs = dir.path().join("logs");
    std::fs::create_dir(&logs).unwrap();
    let out = dir.path().join("out.jsonl");
    let db = dir.path().join("tail.db");
    let config = format!(
        "[[sources]]\ntype = \"tail\"\npath = \"{}/*.log\"\nread_from_head = true\nrotate_wait = \"300ms\"\ndb = \"{}\"\n{FAST}{}",
        logs.display(),
        db.display(),
        sink(&out)
    );
    let app = logs.join("app.log");
    append(&app, b"line 0\nline 1\n");
    let mut first = Tail::start(dir.path(), "first", &config, Run::default());
    wait_for_lines(&out, 2, Duration::from_secs(10));
    assert!(first.signal("-TERM").success());
    // While down: the file gets more lines, is rotated away, and a new one starts.
    append(&app, b"line 2\nline 3\n");
    std::fs::rename(&app, logs.join("app.log.1")).unwrap();
    append(&app, b"line 4\n");
    let mut second = Tail::start(dir.path(), "second", &config, Run::default());
    wait_lines_soft(&out, 5, Duration::from_secs(10));
    std::thread::sleep(Duration::from_millis(500));
    assert!(second.signal("-TERM").success());
    exactly_once(&seqs(&read_jsonl(&out), "log", "line "), 5);
    assert!(
        second.stderr().contains("rotated while logferry was down"),
        "{}",
        second.stderr()
    );
}

#[test]
fn an_unwritable_db_stops_start_up_with_a_clear_error_and_a_corrupt_one_is_set_aside() {
    let dir = tempfile::tempdir().unwrap();
    let logs = dir.path().join("logs");
    std::fs::create_dir(&logs).unwrap();
    let out = dir.path().join("out.jsonl");
    let config = |db: &Path| {
        format!(
            "[service]\nhttp_listen = \"off\"\n[[sources]]\ntype = \"tail\"\npath = \"{}/*.log\"\ndb = \"{}\"\n{}",
            logs.display(),
            db.display(),
            sink(&out)
        )
    };
    let path = dir.path().join("bad.toml");
    std::fs::write(&path, config(&dir.path().join("missing/dir/tail.db"))).unwrap();
    let run = Command::new(logferry_bin())
        .args(["run", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(run.status.code(), Some(2));
    let err = String::from_utf8_lossy(&run.stderr);
    assert!(err.contains("cannot write the checkpoint db"), "{err}");

    // A corrupt db: logged, moved aside, and the source runs as if there were none.
    let db = dir.path().join("tail.db");
    std::fs::write(&db, b"{not json").unwrap();
    append(&logs.join("a.log"), b"line 0\n");
    let mut lf = Tail::start(
        dir.path(),
        "lf",
        &format!(
            "[[sources]]\ntype = \"tail\"\npath = \"{}/*.log\"\nread_from_head = true\ndb = \"{}\"\n{FAST}{}",
            logs.display(),
            db.display(),
            sink(&out)
        ),
        Run::default(),
    );
    wait_for_lines(&out, 1, Duration::from_secs(10));
    assert!(lf.signal("-TERM").success());
    assert!(
        lf.stderr().contains("ignoring the checkpoint db"),
        "{}",
        lf.stderr()
    );
    assert!(dir.path().join("tail.db.invalid").exists());
    assert!(std::fs::read_to_string(&db)
        .unwrap()
        .contains("\"offset\": 7"));
}

/// Lines of `n` characters after `"line <i> "` (varied lengths, some longer than a 1KiB read).
fn varied_lines(from: usize, to: usize) -> Vec<String> {
    (from..to)
        .map(|i| {
            let pad = match i % 7 {
                0 => 3_000,
                3 => 20_000,
                _ => i % 200,
            };
            format!("line {i} {}", "p".repeat(pad))
        })
        .collect()
}

/// `got` is `expected`, record for record (lengths reported, not the long texts).
fn same_lines(got: &[String], expected: &[String], stderr: &str) {
    assert_eq!(got.len(), expected.len(), "{stderr}");
    for (i, (g, e)) in got.iter().zip(expected).enumerate() {
        assert!(
            g == e,
            "record {i}: {} bytes, expected {} bytes",
            g.len(),
            e.len()
        );
    }
}

fn logs_in_order(out: &Path) -> Vec<String> {
    read_jsonl(out)
        .iter()
        .map(|r| r["log"].as_str().unwrap_or_default().to_string())
        .collect()
}

/// Reads ask for `buffer_chunk_size` bytes; a line longer than that (and not longer than
/// `buffer_max_size`) is still one record, and one longer than `buffer_max_size` is split there.
#[test]
fn lines_longer_than_one_read_arrive_whole() {
    let dir = tempfile::tempdir().unwrap();
    let logs = dir.path().join("logs");
    std::fs::create_dir(&logs).unwrap();
    let out = dir.path().join("out.jsonl");
    let app = logs.join("app.log");
    let mut expected = varied_lines(0, 200);
    let mut text = expected.join("\n");
    text.push('\n');
    append(&app, text.as_bytes());
    let mut lf = Tail::start(
        dir.path(),
        "lf",
        &format!(
            "[[sources]]\ntype = \"tail\"\npath = \"{}/*.log\"\nread_from_head = true\n\
             buffer_chunk_size = \"1KiB\"\nbuffer_max_size = \"32KiB\"\n{FAST}{}",
            logs.display(),
            sink(&out)
        ),
        Run::default(),
    );
    wait_lines_soft(&out, expected.len(), Duration::from_secs(30));
    // Appended while followed: a line longer than buffer_max_size (split at it), then more.
    let huge = format!("line 200 {}", "h".repeat(40_000));
    let more = varied_lines(201, 260);
    append(&app, format!("{huge}\n{}\n", more.join("\n")).as_bytes());
    let (head, rest) = huge.split_at(32 * 1024);
    expected.push(head.to_string());
    expected.push(rest.to_string());
    expected.extend(more);
    wait_lines_soft(&out, expected.len(), Duration::from_secs(30));
    assert!(lf.signal("-TERM").success());
    same_lines(&logs_in_order(&out), &expected, &lf.stderr());
}

/// A rotated file is finished read after read: a read that ends inside the file ends inside
/// a line, which must wait for the next read, not be passed on as a line of its own.
#[test]
fn a_rotated_file_finished_over_many_reads_keeps_its_lines_whole() {
    let dir = tempfile::tempdir().unwrap();
    let logs = dir.path().join("logs");
    std::fs::create_dir(&logs).unwrap();
    let out = dir.path().join("out.jsonl");
    let db = dir.path().join("tail.db");
    let config = format!(
        "[[sources]]\ntype = \"tail\"\npath = \"{}/*.log\"\nread_from_head = true\n\
         rotate_wait = \"1ms\"\ndb = \"{}\"\nbuffer_chunk_size = \"1KiB\"\n\
         buffer_max_size = \"32KiB\"\n{FAST}{}",
        logs.display(),
        db.display(),
        sink(&out)
    );
    let app = logs.join("app.log");
    append(&app, b"line first\n");
    let mut first = Tail::start(dir.path(), "first", &config, Run::default());
    wait_for_lines(&out, 1, Duration::from_secs(10));
    assert!(first.signal("-TERM").success());
    // While down: hundreds of reads' worth of lines, then the file is rotated away. At start-up
    // it is known rotated, so after one read it is finished: the rest in the finishing reads.
    let lines = varied_lines(0, 700);
    append(&app, format!("{}\n", lines.join("\n")).as_bytes());
    std::fs::rename(&app, logs.join("app.log.1")).unwrap();
    let mut second = Tail::start(dir.path(), "second", &config, Run::default());
    wait_lines_soft(&out, 1 + lines.len(), Duration::from_secs(30));
    std::thread::sleep(Duration::from_millis(300));
    assert!(second.signal("-TERM").success());
    let got = logs_in_order(&out);
    assert!(
        second.stderr().contains("finished a rotated file"),
        "{}",
        second.stderr()
    );
    assert_eq!(got.first().map(String::as_str), Some("line first"));
    same_lines(&got[1..], &lines, &second.stderr());
}
