//! The config loader on arbitrary text: it must report problems, never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use logferry::config::Config;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let lookup = |name: &str| (name == "SET").then(|| "value".to_string());
        let _ = Config::parse(std::path::Path::new("fuzz.toml"), text, &lookup);
    }
});
