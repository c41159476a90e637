//! `$CMDOP_HOME/config.yaml`: one file for the node's settings, the client's settings and the
//! client's known hosts. Unknown keys, wrong types and bad durations are errors that name the
//! file and line; nothing starts on a broken config.
//!
//! ```yaml
//! node:
//!   listen: 0.0.0.0:7443      # UDP address cmdop-node listens on
//!   idle_ttl: 7d              # destroy sessions unattached and idle this long
//!   ringbuffer: 4MiB          # scrollback kept per session
//!   max_frame: 8MiB           # largest frame accepted from a peer
//!   max_sessions: 1024        # sessions on this node
//!   max_attachments: 32       # live attachments per session
//!   max_connections_per_client: 16
//!   max_handshakes: 64        # handshakes in progress (unauthenticated peers)
//! client:
//!   attach_scrollback: 64KiB  # scrollback replayed when attaching
//!   save_lines: 10000         # default for 'cmdop session save --lines'
//! hosts:
//!   vps-audi:
//!     addr: 203.0.113.7:7443
//! ```

use crate::frame::DEFAULT_MAX_FRAME;
use crate::proto::DEFAULT_PORT;
use crate::units::{ByteSize, HumanDuration};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The whole config file.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Settings of `cmdop-node`.
    pub node: NodeConfig,
    /// Settings of `cmdop`.
    pub client: ClientConfig,
    /// Hosts known to `cmdop`, by name.
    pub hosts: BTreeMap<String, HostEntry>,
}

/// Settings of `cmdop-node`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NodeConfig {
    /// UDP address to listen on.
    pub listen: String,
    /// Sessions unattached and idle for longer than this are destroyed.
    pub idle_ttl: HumanDuration,
    /// Scrollback bytes kept per session.
    pub ringbuffer: ByteSize,
    /// Largest frame accepted from a peer.
    pub max_frame: ByteSize,
    /// Most sessions the node runs at once.
    pub max_sessions: usize,
    /// Most live attachments per session (viewers included).
    pub max_attachments: usize,
    /// Most connections one client key may hold at once.
    pub max_connections_per_client: usize,
    /// Most handshakes in progress at once (unauthenticated peers).
    pub max_handshakes: usize,
}

impl Default for NodeConfig {
    fn default() -> Self {
        NodeConfig {
            listen: format!("0.0.0.0:{DEFAULT_PORT}"),
            idle_ttl: HumanDuration(Duration::from_secs(7 * 86_400)),
            ringbuffer: ByteSize(4 << 20),
            max_frame: ByteSize(DEFAULT_MAX_FRAME as u64),
            max_sessions: 1024,
            max_attachments: 32,
            max_connections_per_client: 16,
            max_handshakes: 64,
        }
    }
}

/// Settings of `cmdop`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClientConfig {
    /// Scrollback replayed when attaching, so the screen is not blank.
    pub attach_scrollback: ByteSize,
    /// Default for `cmdop session save --lines`.
    pub save_lines: u32,
    /// How long to wait for a node to answer before calling it offline.
    pub connect_timeout: HumanDuration,
    /// The key that detaches an interactive terminal (`ctrl-d` or `ctrl-a`..`ctrl-z`).
    pub detach_key: String,
}

impl Default for ClientConfig {
    fn default() -> Self {
        ClientConfig {
            attach_scrollback: ByteSize(64 << 10),
            save_lines: 10_000,
            connect_timeout: HumanDuration(Duration::from_secs(3)),
            detach_key: "ctrl-d".into(),
        }
    }
}

/// A host known to `cmdop`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HostEntry {
    /// `host:port` (the port defaults to 7443 when omitted).
    pub addr: String,
}

/// Why the config could not be loaded or saved.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file exists but could not be read or written.
    #[error("cannot access {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
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

impl Config {
    /// The config file in `home`.
    pub fn path(home: &Path) -> PathBuf {
        home.join("config.yaml")
    }

    /// Loads `home/config.yaml`; a missing or empty file gives the defaults.
    pub fn load(home: &Path) -> Result<Self, ConfigError> {
        let path = Self::path(home);
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Config::default()),
            Err(source) => return Err(ConfigError::Io { path, source }),
        };
        Self::parse(&text).map_err(|message| ConfigError::Invalid { path, message })
    }

    /// Parses config text; the error names line and column.
    pub fn parse(text: &str) -> Result<Self, String> {
        if text.trim().is_empty() {
            return Ok(Config::default());
        }
        let config: Config = serde_yaml::from_str(text).map_err(|e| match e.location() {
            Some(at) => {
                let message = e.to_string();
                // serde_yaml appends " at line L column C"; keep one copy, in front.
                let message = message
                    .split(" at line ")
                    .next()
                    .unwrap_or(&message)
                    .to_string();
                format!("line {} column {}: {message}", at.line(), at.column())
            }
            None => e.to_string(),
        })?;
        if config.node.ringbuffer.0 == 0 {
            return Err("node.ringbuffer must be at least 1 byte".into());
        }
        // A whole ringbuffer travels in one frame (show --tail, save, migrate).
        if config.node.ringbuffer.0 + (64 << 10) > config.node.max_frame.0 {
            return Err(format!(
                "node.ringbuffer ({}) must be at least 64KiB smaller than node.max_frame ({}); raise max_frame or lower ringbuffer",
                config.node.ringbuffer, config.node.max_frame
            ));
        }
        Ok(config)
    }

    /// Writes the config back (atomically; comments in the file are not kept).
    pub fn save(&self, home: &Path) -> Result<(), ConfigError> {
        let path = Self::path(home);
        let io = |source| ConfigError::Io {
            path: path.clone(),
            source,
        };
        cmdop_certs::files::ensure_private_dir(home).map_err(io)?;
        let text = serde_yaml::to_string(self).map_err(|e| ConfigError::Invalid {
            path: path.clone(),
            message: e.to_string(),
        })?;
        cmdop_certs::files::write_atomic(&path, text.as_bytes(), 0o600).map_err(io)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn defaults_and_overrides() {
        let config = Config::parse("node:\n  idle_ttl: 24h\n  ringbuffer: 1MiB\n").unwrap();
        assert_eq!(config.node.idle_ttl.0, Duration::from_secs(86_400));
        assert_eq!(config.node.ringbuffer.0, 1 << 20);
        assert_eq!(config.client, ClientConfig::default());
        assert_eq!(Config::parse("").unwrap(), Config::default());
    }

    #[test]
    fn errors_name_the_line() {
        let err = Config::parse("node:\n  idle_ttl: soon\n").unwrap_err();
        assert!(err.contains("line 2"), "{err}");
        assert!(err.contains("24h"), "{err}");
        let err = Config::parse("node:\n  colour: blue\n").unwrap_err();
        assert!(err.contains("unknown field `colour`"), "{err}");
        let err = Config::parse("node:\n  ringbuffer: 16MiB\n").unwrap_err();
        assert!(err.contains("max_frame"), "{err}");
        let err = Config::parse("node:\n  max_sessions: many\n").unwrap_err();
        assert!(err.contains("line 2"), "{err}");
    }

    #[test]
    fn save_and_load_round_trip() {
        let home = std::env::temp_dir().join(format!("cmdop-config-{}", std::process::id()));
        let mut config = Config::default();
        config.hosts.insert(
            "vps".into(),
            HostEntry {
                addr: "127.0.0.1:1".into(),
            },
        );
        config.save(&home).unwrap();
        assert_eq!(Config::load(&home).unwrap(), config);
        std::fs::remove_dir_all(&home).unwrap();
    }
}
