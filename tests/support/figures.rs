//! The figures fault and resource tests report (records sent, acknowledged, delivered, lost,
//! duplicates; peak memory).
//!
//! `cargo test` shows a passing test's output only with `--nocapture`, so [`report`] also
//! appends each line to the file named by `LOGFERRY_FIGURES` when it is set: `scripts/test`
//! sets it and prints the collected lines at the end of the run.

use std::io::Write;

/// Prints `line` to stderr and, when `LOGFERRY_FIGURES` names a file, appends it there, prefixed
/// with the test binary's name.
pub fn report(line: impl std::fmt::Display) {
    eprintln!("{line}");
    let Some(path) = std::env::var_os("LOGFERRY_FIGURES") else {
        return;
    };
    let binary = std::env::current_exe()
        .ok()
        .and_then(|p| p.file_stem().map(|s| s.to_string_lossy().into_owned()))
        .map(|s| {
            s.rsplit_once('-')
                .map_or(s.clone(), |(name, _)| name.to_string())
        })
        .unwrap_or_default();
    let appended = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .and_then(|mut f| writeln!(f, "{binary}: {line}"));
    if let Err(e) = appended {
        eprintln!(
            "cannot append to LOGFERRY_FIGURES {}: {e}",
            path.to_string_lossy()
        );
    }
}
