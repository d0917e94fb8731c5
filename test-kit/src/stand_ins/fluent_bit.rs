//! The real Fluent Bit binary as a forward client (`FLUENT_BIT_BIN`). `scripts/setup` does not
//! install it (`scripts/test` points the variable at ../shared/bench/peers/fluent-bit), so its
//! tests print a loud SKIPPED line where it is absent instead of failing.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use super::Running;

/// The Fluent Bit binary, or `None` (with a loud SKIPPED line naming `what` was skipped) when
/// this machine has none.
pub fn fluent_bit_bin(what: &str) -> Option<PathBuf> {
    match std::env::var_os("FLUENT_BIT_BIN").map(PathBuf::from) {
        Some(path) if path.is_file() => Some(path),
        other => {
            eprintln!(
                "\n*** SKIPPED: {what}: FLUENT_BIT_BIN is {} (scripts/test sets it from \
                 ../shared/bench/peers/fluent-bit) ***\n",
                match other {
                    Some(p) => format!("{} (not a file)", p.display()),
                    None => "unset".to_string(),
                }
            );
            None
        }
    }
}

/// A running `fluent-bit -i tail -o forward`, killed on drop.
pub struct FluentBit {
    process: Running,
}

impl FluentBit {
    /// `fluent-bit -i tail (input file, from its head, tag app.fb) -o forward (to logferry)`
    /// with `out_args` as extra `-p` properties of the forward output. Its log goes next to
    /// the input (`*.fluent-bit.log`).
    pub fn forward(
        bin: &Path,
        input: &Path,
        to: std::net::SocketAddr,
        out_args: &[impl AsRef<str>],
    ) -> FluentBit {
        let log = input.with_extension("fluent-bit.log");
        let mut cmd = Command::new(bin);
        cmd.args(["-f", "1", "-i", "tail", "-p"])
            .arg(format!("path={}", input.display()))
            .args(["-p", "read_from_head=true", "-p", "refresh_interval=1"])
            .args(["-t", "app.fb", "-o", "forward", "-m", "*"])
            .args(["-p", "host=127.0.0.1", "-p"])
            .arg(format!("port={}", to.port()));
        for arg in out_args {
            cmd.args(["-p", arg.as_ref()]);
        }
        let file = std::fs::File::create(&log).expect("fluent-bit log");
        let child = cmd
            .stdin(Stdio::null())
            .stdout(file.try_clone().expect("fluent-bit log"))
            .stderr(file)
            .spawn()
            .expect("spawn fluent-bit");
        FluentBit {
            process: Running::new(child, log),
        }
    }

    /// What Fluent Bit logged so far.
    pub fn log(&self) -> String {
        self.process.log_text()
    }
}

/// Writes `n` lines `line <i>` to `dir/input.log` for Fluent Bit's tail input.
pub fn numbered_lines(dir: &Path, n: usize) -> PathBuf {
    let path = dir.join("input.log");
    let mut text = String::with_capacity(n * 12);
    for i in 0..n {
        text.push_str(&format!("line {i}\n"));
    }
    std::fs::write(&path, text).expect("write input");
    path
}
