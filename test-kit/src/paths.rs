//! Where the tests find the repository, the tools `scripts/setup` installs, and the binaries
//! under test. Same environment variables and defaults as `scripts/lib/common.sh`.

use std::path::PathBuf;

/// The repository root: `LOGFERRY_REPO`, else the folder above this crate.
pub fn repo_root() -> PathBuf {
    env_path("LOGFERRY_REPO").unwrap_or_else(|| {
        let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
        manifest.parent().map(PathBuf::from).unwrap_or(manifest)
    })
}

/// The Python venv with moto, boto3, confluent-kafka, aws-kinesis-agg, ...
pub fn venv_dir() -> PathBuf {
    env_path("LOGFERRY_VENV").unwrap_or_else(|| repo_root().join(".venv"))
}

/// Cache shared by clones; tansu is built into its `bin/`.
pub fn cache_dir() -> PathBuf {
    env_path("LOGFERRY_CACHE").unwrap_or_else(|| {
        let home = env_path("HOME").unwrap_or_else(|| PathBuf::from("/root"));
        home.join(".cache").join("logferry")
    })
}

/// Folder whose `node_modules` holds kinesalite.
pub fn kinesalite_dir() -> PathBuf {
    env_path("LOGFERRY_KINESALITE_DIR").unwrap_or_else(|| repo_root().join(".tools").join("node"))
}

/// The venv's Python interpreter (panics with a pointer to scripts/setup when missing).
pub fn python() -> PathBuf {
    venv_bin("python")
}

/// The venv's `bin/` entry `tool` (panics with a pointer to scripts/setup when missing).
pub fn venv_bin(tool: &str) -> PathBuf {
    installed(venv_dir().join("bin").join(tool), tool)
}

/// The tansu binary (panics with a pointer to scripts/setup when missing).
pub fn tansu_bin() -> PathBuf {
    installed(cache_dir().join("bin").join("tansu"), "tansu")
}

/// A file under tests/support (the Python tools, kinesalite.js).
pub fn support_file(name: &str) -> PathBuf {
    repo_root().join("tests").join("support").join(name)
}

/// A file under tests/fixtures (data made by the official tools; see its README).
pub fn fixture_path(relative: &str) -> PathBuf {
    repo_root().join("tests").join("fixtures").join(relative)
}

/// A binary of the workspace that cargo built for the running test (`logferry`,
/// `logferry-lambda`): next to the test executable's `deps/` folder, where
/// `CARGO_BIN_EXE_<name>` also points. The kit is a library, so it cannot read that variable
/// at compile time; the tests of the package that owns the binary make cargo build it.
pub fn cargo_bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("the test executable's path");
    let mut dir = exe
        .parent()
        .expect("the test executable's folder")
        .to_path_buf();
    if dir.ends_with("deps") {
        dir.pop();
    }
    let path = dir.join(format!("{name}{}", std::env::consts::EXE_SUFFIX));
    assert!(
        path.is_file(),
        "{} is missing: the binary `{name}` is built by `cargo test` of the package that owns it",
        path.display()
    );
    path
}

fn env_path(name: &str) -> Option<PathBuf> {
    std::env::var_os(name)
        .filter(|value| !value.is_empty())
        .map(PathBuf::from)
}

/// `path`, or a panic naming `what` and pointing at `scripts/setup`.
pub fn installed(path: PathBuf, what: &str) -> PathBuf {
    assert!(
        path.exists(),
        "{what} is not installed: {} is missing. Run scripts/setup (it installs the test tools; \
         see scripts/lib/common.sh for the LOGFERRY_* variables that move them)",
        path.display()
    );
    path
}
