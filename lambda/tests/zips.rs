//! The deployment zips `scripts/build-lambda` builds (cargo-lambda with zig, the sinks and
//! librdkafka linked, OpenSSL built in): each holds one `bootstrap` for its architecture that
//! the `provided.al2023` runtime can load (glibc symbol versions up to 2.34, AL2023's), and each
//! delivers a CloudWatch Logs subscription event to Kinesis on moto through the Runtime API
//! stand-in. x86_64 runs natively, aarch64 under `qemu-aarch64` (Debian's qemu-user-static, with
//! the arm64 glibc from Debian's multiarch packages). The init time of each is printed (under
//! qemu it is the emulator's, far above a Graviton's).
//!
//! `LOGFERRY_LAMBDA_ZIPS` names the folder with `x86_64/bootstrap.zip` and `arm64/bootstrap.zip`
//! (`scripts/test` builds them and sets it). Without it these tests print a loud SKIPPED line
//! and pass, so that a plain `cargo test` does not need the cross builds.

mod support;
// The root suite's figures reporter: the init times also reach scripts/test's summary.
#[path = "../../tests/support/figures.rs"]
mod figures;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use logferry_test_kit::kinesis::{create_stream, read_stream};
use logferry_test_kit::stand_ins::Moto;
use serde_json::{json, Value};
use support::{fixture, Function};

/// The newest glibc `provided.al2023` has (Amazon Linux 2023: glibc 2.34).
const AL2023_GLIBC_MINOR: u32 = 34;

fn zip_path(test: &str, arch: &str) -> Option<PathBuf> {
    let Some(dir) = std::env::var_os("LOGFERRY_LAMBDA_ZIPS").filter(|v| !v.is_empty()) else {
        eprintln!(
            "*** SKIPPED {test}: LOGFERRY_LAMBDA_ZIPS is not set (scripts/test builds the zips \
             with scripts/build-lambda and sets it) ***"
        );
        return None;
    };
    let zip = PathBuf::from(dir).join(arch).join("bootstrap.zip");
    assert!(
        zip.is_file(),
        "{} is missing: run scripts/build-lambda",
        zip.display()
    );
    Some(zip)
}

/// Unzips `zip` into `dir` with Python's zipfile; the names it held.
fn unzip(zip: &Path, dir: &Path) -> Vec<String> {
    // Lambda keeps the Unix mode stored in the zip; extractall does not, so set it.
    let script = "import os, sys, zipfile\n\
                  z = zipfile.ZipFile(sys.argv[1])\n\
                  z.extractall(sys.argv[2])\n\
                  for i in z.infolist():\n\
                  \x20   mode = i.external_attr >> 16\n\
                  \x20   os.chmod(os.path.join(sys.argv[2], i.filename), mode & 0o777)\n\
                  \x20   print(i.filename, oct(mode))";
    let out = Command::new("python3")
        .args(["-c", script])
        .arg(zip)
        .arg(dir)
        .output()
        .expect("python3");
    assert!(out.status.success(), "{out:?}");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect()
}

/// ELF `e_machine` of a file.
fn elf_machine(bytes: &[u8]) -> u16 {
    assert_eq!(&bytes[..4], b"\x7fELF", "not an ELF file");
    u16::from_le_bytes([bytes[18], bytes[19]])
}

/// The highest `GLIBC_2.N` version named in the binary (its version needs are among them).
fn newest_glibc_minor(bytes: &[u8]) -> u32 {
    let needle = b"GLIBC_2.";
    let mut newest = 0;
    let mut i = 0;
    while let Some(pos) = bytes[i..].windows(needle.len()).position(|w| w == needle) {
        let start = i + pos + needle.len();
        let digits: String = bytes[start..]
            .iter()
            .take_while(|b| b.is_ascii_digit())
            .map(|&b| b as char)
            .collect();
        if let Ok(n) = digits.parse::<u32>() {
            newest = newest.max(n);
        }
        i = start;
    }
    newest
}

fn qemu_aarch64() -> PathBuf {
    for name in ["qemu-aarch64-static", "qemu-aarch64"] {
        for dir in ["/usr/bin", "/usr/local/bin"] {
            let path = Path::new(dir).join(name);
            if path.is_file() {
                return path;
            }
        }
    }
    panic!("qemu-aarch64 is not installed: run scripts/setup (qemu-user-static)");
}

fn zip_delivers_a_subscription_event_to_kinesis(arch: &str) {
    let test = format!("lambda_zip_{arch}");
    let Some(zip) = zip_path(&test, arch) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let code = dir.path().join("task");
    std::fs::create_dir(&code).unwrap();
    let names = unzip(&zip, &code);
    assert_eq!(names.len(), 1, "{names:?}");
    assert_eq!(
        names[0], "bootstrap 0o100755",
        "one executable file, bootstrap"
    );
    let bootstrap = code.join("bootstrap");
    let bytes = std::fs::read(&bootstrap).unwrap();
    let (machine, program) = match arch {
        "x86_64" => (62, vec![bootstrap.clone()]),
        "arm64" => (183, vec![qemu_aarch64(), bootstrap.clone()]),
        other => panic!("unknown architecture {other}"),
    };
    assert_eq!(elf_machine(&bytes), machine, "{arch} bootstrap");
    let glibc = newest_glibc_minor(&bytes);
    assert!(
        (17..=AL2023_GLIBC_MINOR).contains(&glibc),
        "the {arch} bootstrap needs GLIBC_2.{glibc}, provided.al2023 has 2.{AL2023_GLIBC_MINOR}"
    );

    let moto = Moto::start();
    create_stream(&moto.endpoint(), "out", 1);
    let aws = moto.aws_env();
    let mut env: Vec<(&str, &str)> = aws.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    env.extend([
        ("LOGFERRY_SINK", "kinesis"),
        ("LOGFERRY_STREAM", "out"),
        ("LOGFERRY_AGGREGATION", "true"),
    ]);
    let f = Function::start_program(&program, &code, &env);
    figures::report(format!(
        "logferry-lambda {arch} ({}): init {:.1} ms (process start to the first Runtime API poll{})",
        zip.display(),
        f.init.as_secs_f64() * 1000.0,
        if arch == "arm64" {
            ", under qemu-aarch64 emulation"
        } else {
            ""
        }
    ));
    let reply = f
        .invoke(
            &fixture("lambda-data-message-realistic.json"),
            Duration::from_secs(60),
        )
        .response();
    assert_eq!(
        reply,
        json!({"records": 5, "control_messages": 0}),
        "{}",
        f.log_text()
    );

    let decoded: Value =
        serde_json::from_slice(&fixture("lambda-data-message-realistic.decoded.json")).unwrap();
    let want: Vec<&str> = decoded["logEvents"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["message"].as_str().unwrap())
        .collect();
    let contents = read_stream(&moto.endpoint(), "out");
    assert!(contents.records.iter().all(|r| r.aggregated));
    let got: Vec<Value> = contents.users().iter().map(|(_, u)| u.json()).collect();
    let messages: Vec<&str> = got.iter().map(|r| r["message"].as_str().unwrap()).collect();
    assert_eq!(messages, want);
    for (_, user) in contents.users() {
        assert_eq!(user.partition_key, "web/app/0123");
        assert_eq!(user.json()["logGroup"], "/ecs/web");
    }
}

#[test]
fn x86_64_zip_delivers_a_subscription_event_to_kinesis() {
    zip_delivers_a_subscription_event_to_kinesis("x86_64");
}

#[test]
fn arm64_zip_under_qemu_delivers_a_subscription_event_to_kinesis() {
    zip_delivers_a_subscription_event_to_kinesis("arm64");
}
