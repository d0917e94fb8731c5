//! The Fluent Bit classic config reader and its translation (what `--fluent-bit-config` and the
//! FireLens entrypoint load) on arbitrary text: problems are reported, never a panic.
//!
//! The reader takes a path (it resolves `@INCLUDE` relative to it), so each input is written to
//! one file in a private temporary directory. Inputs naming `@INCLUDE` are skipped: an include
//! reaches files outside the input (any path on the machine), which makes runs neither
//! repeatable nor bounded; includes are covered by the reader's unit tests.
#![no_main]

use std::path::PathBuf;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;

fn input_path() -> &'static PathBuf {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("logferry-fuzz-fb-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("a temporary directory for the fuzz input");
        dir.join("fluent-bit.conf")
    })
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if text.to_ascii_lowercase().contains("@include") {
        return;
    }
    let path = input_path();
    if std::fs::write(path, data).is_err() {
        return;
    }
    let lookup = |name: &str| (name == "SET").then(|| "value".to_string());
    let _ = logferry::config::fluent_bit::parse(path, &lookup);
});
