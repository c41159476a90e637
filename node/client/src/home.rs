//! Where cmdop keeps its state: `$CMDOP_HOME`, or `~/.cmdop`.

use cmdop_proto::config::Config;
use std::path::{Path, PathBuf};

/// The state directory: `$CMDOP_HOME` if set, else `$HOME/.cmdop`.
pub fn cmdop_home() -> PathBuf {
    if let Some(home) = std::env::var_os("CMDOP_HOME").filter(|v| !v.is_empty()) {
        return PathBuf::from(home);
    }
    user_home().join(".cmdop")
}

/// The user's home directory.
pub fn user_home() -> PathBuf {
    std::env::var_os("HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/"))
}

/// This machine's host name.
pub fn host_name() -> String {
    let uname = rustix::system::uname();
    String::from_utf8_lossy(uname.nodename().to_bytes()).into_owned()
}

/// The identity file stem of a node.
pub const NODE_IDENTITY: &str = "node";
/// The identity file stem of a client.
pub const CLIENT_IDENTITY: &str = "client";

/// Why the config could not be loaded or saved.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file exists but could not be read or written.
    #[error("cannot access {path}: {error}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        error: std::io::Error,
    },
    /// The file is not a valid config.
    #[error("{path}: {message}; fix the file and try again (see README.md, Configuration)")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong, with line and column.
        message: String,
    },
}

/// The config file in `home`.
pub fn config_path(home: &Path) -> PathBuf {
    home.join("config.yaml")
}

/// Loads `home/config.yaml`; a missing or empty file gives the defaults.
pub fn load_config(home: &Path) -> Result<Config, ConfigError> {
    let path = config_path(home);
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Config::default()),
        Err(error) => return Err(ConfigError::Io { path, error }),
    };
    Config::parse(&text).map_err(|message| ConfigError::Invalid { path, message })
}

/// Writes `config` to `home/config.yaml`, atomically (comments in the file are not kept).
pub fn save_config(home: &Path, config: &Config) -> Result<(), ConfigError> {
    let path = config_path(home);
    let io = |error| ConfigError::Io {
        path: path.clone(),
        error,
    };
    cmdop_certs::files::ensure_private_dir(home).map_err(io)?;
    let text = config.to_yaml().map_err(|message| ConfigError::Invalid {
        path: path.clone(),
        message,
    })?;
    cmdop_certs::files::write_atomic(&path, text.as_bytes(), 0o600).map_err(io)
}
