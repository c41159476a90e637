//! Where cmdop keeps its state: `$CMDOP_HOME`, or `~/.cmdop`.

use std::path::PathBuf;

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
    let mut buf = [0u8; 256];
    // SAFETY: gethostname writes at most `buf.len()` bytes into the buffer we own.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc != 0 {
        return "localhost".into();
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..end]).into_owned()
}

/// The identity file stem of a node.
pub const NODE_IDENTITY: &str = "node";
/// The identity file stem of a client.
pub const CLIENT_IDENTITY: &str = "client";
