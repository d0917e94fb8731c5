//! Which config `logferry run` reads when given neither `--config` nor `--fluent-bit-config`:
//! the image's entrypoint logic, in Rust because the runtime image may have no shell.
//!
//! 1. `/fluent-bit/etc/fluent-bit.conf` when it exists: that is where ECS mounts the Fluent Bit
//!    config FireLens generates, so the logferry image is a drop-in FireLens log router.
//! 2. Otherwise `/etc/logferry/logferry.toml`, the native config.
//!
//! Both paths can be moved with environment variables (tests, other layouts):
//! [`FLUENT_BIT_CONFIG_ENV`] and [`NATIVE_CONFIG_ENV`].

use std::path::{Path, PathBuf};

/// Where ECS mounts the generated Fluent Bit config in the log router container.
pub const FLUENT_BIT_CONFIG_PATH: &str = "/fluent-bit/etc/fluent-bit.conf";
/// The native config's default place in the image.
pub const NATIVE_CONFIG_PATH: &str = "/etc/logferry/logferry.toml";
/// Overrides [`FLUENT_BIT_CONFIG_PATH`].
pub const FLUENT_BIT_CONFIG_ENV: &str = "LOGFERRY_DEFAULT_FLUENT_BIT_CONFIG";
/// Overrides [`NATIVE_CONFIG_PATH`].
pub const NATIVE_CONFIG_ENV: &str = "LOGFERRY_DEFAULT_CONFIG";

/// A config file and how to read it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ConfigFile {
    /// The native TOML config.
    Native(PathBuf),
    /// A Fluent Bit classic config.
    FluentBit(PathBuf),
}

impl ConfigFile {
    pub fn path(&self) -> &Path {
        match self {
            ConfigFile::Native(p) | ConfigFile::FluentBit(p) => p,
        }
    }

    /// `native` or `fluent-bit`, for logs.
    pub fn kind(&self) -> &'static str {
        match self {
            ConfigFile::Native(_) => "native",
            ConfigFile::FluentBit(_) => "fluent-bit",
        }
    }

    /// Reads and validates the file the way its kind requires.
    pub fn load(&self) -> Result<crate::config::Config, crate::config::ConfigError> {
        match self {
            ConfigFile::Native(p) => crate::config::Config::load(p),
            ConfigFile::FluentBit(p) => super::load(p),
        }
    }
}

/// The file to use when no flag names one, with why it was chosen; `env` reads variables.
pub fn choose(env: &dyn Fn(&str) -> Option<String>) -> (ConfigFile, String) {
    let var = |name: &str| env(name).filter(|v| !v.is_empty()).map(PathBuf::from);
    let fluent_bit = var(FLUENT_BIT_CONFIG_ENV).unwrap_or_else(|| FLUENT_BIT_CONFIG_PATH.into());
    let native = var(NATIVE_CONFIG_ENV).unwrap_or_else(|| NATIVE_CONFIG_PATH.into());
    if fluent_bit.is_file() {
        let why = format!(
            "{} exists (the Fluent Bit config FireLens mounts); reading it as Fluent Bit config",
            fluent_bit.display()
        );
        (ConfigFile::FluentBit(fluent_bit), why)
    } else {
        let why = format!(
            "no {}; using the native config {}",
            fluent_bit.display(),
            native.display()
        );
        (ConfigFile::Native(native), why)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fluent_bit_file_wins_when_present_else_native() {
        let dir = tempfile::tempdir().unwrap();
        let fb = dir.path().join("fluent-bit.conf");
        let native = dir.path().join("logferry.toml");
        let vars = |fb: &Path, native: &Path| {
            let fb = fb.display().to_string();
            let native = native.display().to_string();
            move |name: &str| match name {
                FLUENT_BIT_CONFIG_ENV => Some(fb.clone()),
                NATIVE_CONFIG_ENV => Some(native.clone()),
                _ => None,
            }
        };
        let (chosen, why) = choose(&vars(&fb, &native));
        assert_eq!(chosen, ConfigFile::Native(native.clone()));
        assert!(why.contains("no "), "{why}");
        std::fs::write(&fb, "").unwrap();
        let (chosen, _) = choose(&vars(&fb, &native));
        assert_eq!(chosen, ConfigFile::FluentBit(fb));
        if !Path::new(FLUENT_BIT_CONFIG_PATH).exists() {
            let (chosen, _) = choose(&|_| None);
            assert_eq!(chosen, ConfigFile::Native(NATIVE_CONFIG_PATH.into()));
        }
    }
}
