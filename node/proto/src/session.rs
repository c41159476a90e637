//! What a client learns about a session: its metadata and window size.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// Terminal size in character cells.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct WinSize {
    /// Rows.
    pub rows: u16,
    /// Columns.
    pub cols: u16,
}

impl Default for WinSize {
    fn default() -> Self {
        WinSize { rows: 24, cols: 80 }
    }
}

/// Whether a session's program still runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum SessionState {
    /// The shell is running.
    Running,
    /// The shell exited with this code.
    Exited {
        /// Exit code (128 + signal number when killed by a signal).
        code: i32,
    },
}

/// A session's metadata.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionInfo {
    /// UUID v7, time-ordered.
    pub id: Uuid,
    /// Optional name, unique on the node.
    pub name: Option<String>,
    /// The node's host name.
    pub host: String,
    /// The shell program.
    pub shell: String,
    /// The foreground process's working directory (the shell's when unknown).
    pub cwd: String,
    /// Creation time, Unix milliseconds.
    pub created_ms: u64,
    /// Last input, output or attachment change, Unix milliseconds.
    pub last_active_ms: u64,
    /// Whether a client is attached (interactive or marked by `session attach`).
    pub attached: bool,
    /// The shell's process id.
    pub pid: Option<u32>,
    /// Window size.
    pub size: WinSize,
    /// Running or exited.
    pub state: SessionState,
    /// Total bytes of output so far (the ringbuffer's end offset).
    pub output_bytes: u64,
}
