//! The state an upgrade in place hands to the next binary, and its format.
//!
//! A state is a header (the magic bytes `cmdop-up` and the format version, a little-endian
//! `u32`), the length of a CBOR value (`u64`) and that value, [`NodeState`] without the
//! ringbuffers' bytes, then each session's ring bytes in order, as a `u64` length and the raw
//! bytes (so megabytes of scrollback cost a copy, not an encoding). It is written to a memfd,
//! never to disk.
//! Fields added in later versions carry `#[serde(default)]`, so a newer node reads an older
//! node's state; a node refuses a state of a newer version than it knows, with an error that
//! names both, and the old binary resumes ([`crate::upgrade`]).
//!
//! What is not here: the connections (clients reconnect and resync by offset, as after roaming;
//! the stateless-reset key derives from the node's key, so the new binary answers the old
//! connections' packets with resets at once), the triggers (on disk already, see
//! [`crate::trigger::store`]) and the identity files.

use crate::session::lifecycle::Lifecycle;
use crate::session::screen::ScreenShot;
use cmdop_proto::resync::InputLedger;
use cmdop_proto::WinSize;
use serde::{Deserialize, Serialize};
use std::io::{Read, Write};
use uuid::Uuid;

/// The version of the format this binary writes, and the newest it reads.
pub const STATE_VERSION: u32 = 1;

/// The first bytes of every state.
const MAGIC: &[u8; 8] = b"cmdop-up";

/// Everything a node hands down to the next binary of its process.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeState {
    /// The version of the binary that wrote it.
    pub node_version: String,
    /// Upgrades in place since the node started, this one included.
    pub generation: u64,
    /// When the node stopped serving, in nanoseconds of `CLOCK_MONOTONIC` (the same clock
    /// across `execve`).
    pub paused_at_ns: u64,
    /// The UDP socket's descriptor, open across `execve`.
    pub socket_fd: i32,
    /// Every session.
    pub sessions: Vec<SessionState>,
    /// Programs of destroyed sessions hung up and not reaped yet, by pid.
    #[serde(default)]
    pub reaping: Vec<u32>,
}

/// One session, as [`crate::session::Session::export`] writes it down.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionState {
    /// The session's id.
    pub id: Uuid,
    /// Its name.
    pub name: Option<String>,
    /// The host name it reports.
    pub host: String,
    /// The program it runs.
    pub shell: String,
    /// Where it started.
    pub start_cwd: String,
    /// The environment it started with.
    pub env: Vec<(String, String)>,
    /// Creation time, Unix ms.
    pub created_ms: u64,
    /// The program's pid.
    pub pid: Option<u32>,
    /// The PTY master's descriptor, open across `execve`.
    pub pty_fd: i32,
    /// The program has not been reaped yet.
    pub child_running: bool,
    /// The PTY's output has not ended.
    pub reading: bool,
    /// The PTY still takes input.
    pub writing: bool,
    /// Window size.
    pub size: WinSize,
    /// Running, exited, destroyed.
    pub lifecycle: Lifecycle,
    /// Last activity, Unix ms.
    pub last_active_ms: u64,
    /// Marked attached by a metadata-only attach.
    pub marked_attached: bool,
    /// Someone was attached (their reconnection starts the idle clock afresh).
    pub watched: bool,
    /// The ringbuffer's capacity.
    pub ring_capacity: u64,
    /// The offset of the ringbuffer's first byte.
    pub ring_start: u64,
    /// The ringbuffer's bytes, oldest first (after the CBOR value, not in it).
    #[serde(skip)]
    pub ring: Vec<u8>,
    /// The keystrokes applied so far.
    pub input: InputLedger,
    /// Keystrokes queued for the PTY but not written yet.
    #[serde(with = "serde_bytes")]
    pub pending_input: Vec<u8>,
    /// The screen model.
    pub screen: ScreenShot,
    /// Window size changes the screen model had not followed yet, each with the output offset
    /// it came at, oldest first.
    #[serde(default)]
    pub resizes: Vec<(u64, WinSize)>,
}

impl SessionState {
    /// A session's metadata without its bytes or descriptors: what a dry run reads.
    pub fn preview(info: &cmdop_proto::SessionInfo) -> SessionState {
        SessionState {
            id: info.id,
            name: info.name.clone(),
            host: info.host.clone(),
            shell: info.shell.clone(),
            start_cwd: info.cwd.clone(),
            env: Vec::new(),
            created_ms: info.created_ms,
            pid: info.pid,
            pty_fd: -1,
            child_running: true,
            reading: true,
            writing: true,
            size: info.size,
            lifecycle: Lifecycle::default(),
            last_active_ms: info.last_active_ms,
            marked_attached: false,
            watched: info.attached,
            ring_capacity: 0,
            ring_start: info.output_bytes,
            ring: Vec::new(),
            input: InputLedger::default(),
            pending_input: Vec::new(),
            screen: ScreenShot {
                offset: info.output_bytes,
                size: info.size,
                dump: Vec::new(),
            },
            resizes: Vec::new(),
        }
    }
}

/// Why a state was not read.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// Not a state at all.
    #[error("the handed-down state is not a cmdop-node state (bad magic bytes)")]
    NotAState,
    /// Written by a newer node.
    #[error("the handed-down state has format version {found}, newer than the {STATE_VERSION} this binary reads; upgrade to a binary at least as new as the running one")]
    TooNew {
        /// The version found.
        found: u32,
    },
    /// The CBOR does not decode.
    #[error("the handed-down state is corrupt: {0}")]
    Corrupt(String),
    /// Reading or writing failed.
    #[error("cannot read or write the handed-down state: {0}")]
    Io(#[from] std::io::Error),
}

/// The largest CBOR part read: the metadata of sessions, never their bytes.
const MAX_METADATA: u64 = 1 << 30;

/// Writes `state` to `out`.
pub fn write(state: &NodeState, out: impl Write) -> Result<(), StateError> {
    let mut metadata = Vec::new();
    ciborium::into_writer(state, &mut metadata).map_err(|e| match e {
        ciborium::ser::Error::Io(e) => StateError::Io(e),
        ciborium::ser::Error::Value(e) => StateError::Corrupt(e),
    })?;
    let mut out = std::io::BufWriter::new(out);
    out.write_all(MAGIC)?;
    out.write_all(&STATE_VERSION.to_le_bytes())?;
    out.write_all(&(metadata.len() as u64).to_le_bytes())?;
    out.write_all(&metadata)?;
    for session in &state.sessions {
        out.write_all(&(session.ring.len() as u64).to_le_bytes())?;
        out.write_all(&session.ring)?;
    }
    out.flush()?;
    Ok(())
}

/// Reads a state written by [`write`] (by this binary or an older one).
pub fn read(input: impl Read) -> Result<NodeState, StateError> {
    let mut input = std::io::BufReader::new(input);
    let mut header = [0u8; 12];
    input.read_exact(&mut header).map_err(|e| match e.kind() {
        std::io::ErrorKind::UnexpectedEof => StateError::NotAState,
        _ => StateError::Io(e),
    })?;
    if &header[..8] != MAGIC {
        return Err(StateError::NotAState);
    }
    let found = u32::from_le_bytes([header[8], header[9], header[10], header[11]]);
    if found > STATE_VERSION {
        return Err(StateError::TooNew { found });
    }
    let metadata_len = read_len(&mut input, MAX_METADATA, "metadata")?;
    let mut state: NodeState = ciborium::from_reader((&mut input).take(metadata_len))
        .map_err(|e| StateError::Corrupt(e.to_string()))?;
    for session in &mut state.sessions {
        let len = read_len(&mut input, session.ring_capacity, "ringbuffer")?;
        session.ring = Vec::with_capacity(len as usize);
        (&mut input).take(len).read_to_end(&mut session.ring)?;
        if session.ring.len() as u64 != len {
            return Err(StateError::Corrupt(format!(
                "session {} ends {} bytes into its ringbuffer of {len}",
                session.id,
                session.ring.len()
            )));
        }
    }
    Ok(state)
}

/// Reads a little-endian `u64` length no larger than `max`.
fn read_len(input: &mut impl Read, max: u64, what: &str) -> Result<u64, StateError> {
    let mut bytes = [0u8; 8];
    input
        .read_exact(&mut bytes)
        .map_err(|_| StateError::Corrupt(format!("it ends before the length of its {what}")))?;
    let len = u64::from_le_bytes(bytes);
    if len > max {
        return Err(StateError::Corrupt(format!(
            "its {what} claims {len} bytes, more than the {max} possible"
        )));
    }
    Ok(len)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn sample() -> NodeState {
        NodeState {
            node_version: "0.1.0".into(),
            generation: 3,
            paused_at_ns: 42,
            socket_fd: 7,
            reaping: vec![4321],
            sessions: vec![SessionState {
                id: Uuid::now_v7(),
                name: Some("build".into()),
                host: "h".into(),
                shell: "/bin/sh".into(),
                start_cwd: "/tmp".into(),
                env: vec![("TERM".into(), "xterm-256color".into())],
                created_ms: 1,
                pid: Some(1234),
                pty_fd: 9,
                child_running: true,
                reading: true,
                writing: true,
                size: WinSize { rows: 24, cols: 80 },
                lifecycle: Lifecycle::Running { drained: false },
                last_active_ms: 5,
                marked_attached: false,
                watched: true,
                ring_capacity: 1 << 20,
                ring_start: 100,
                ring: (0..=255u8).cycle().take(70_000).collect(),
                input: InputLedger::default(),
                pending_input: b"ls\r".to_vec(),
                screen: ScreenShot {
                    offset: 70_100,
                    size: WinSize { rows: 24, cols: 80 },
                    dump: b"\x1b[Hprompt$ ".to_vec(),
                },
                resizes: vec![(
                    60,
                    WinSize {
                        rows: 40,
                        cols: 120,
                    },
                )],
            }],
        }
    }

    #[test]
    fn a_state_reads_back_as_written() {
        let state = sample();
        let mut bytes = Vec::new();
        write(&state, &mut bytes).unwrap();
        assert_eq!(read(bytes.as_slice()).unwrap(), state);
    }

    #[test]
    fn a_newer_format_is_refused_by_name() {
        let mut bytes = Vec::new();
        write(&sample(), &mut bytes).unwrap();
        bytes[8..12].copy_from_slice(&(STATE_VERSION + 1).to_le_bytes());
        let error = read(bytes.as_slice()).unwrap_err();
        assert!(matches!(error, StateError::TooNew { found } if found == STATE_VERSION + 1));
        assert!(error.to_string().contains("newer than the 1"), "{error}");
    }

    #[test]
    fn an_older_format_version_is_read() {
        let state = sample();
        let mut bytes = Vec::new();
        write(&state, &mut bytes).unwrap();
        bytes[8..12].copy_from_slice(&0u32.to_le_bytes());
        assert_eq!(read(bytes.as_slice()).unwrap(), state);
    }

    #[test]
    fn garbage_truncation_and_emptiness_are_errors_not_panics() {
        assert!(matches!(read(&b""[..]), Err(StateError::NotAState)));
        let mut bytes = Vec::new();
        write(&sample(), &mut bytes).unwrap();
        assert!(matches!(
            read(&b"not a state at all"[..]),
            Err(StateError::NotAState)
        ));
        for cut in [12, 16, 40, 300, bytes.len() / 2, bytes.len() - 1] {
            assert!(
                matches!(read(&bytes[..cut]), Err(StateError::Corrupt(_))),
                "cut at {cut}"
            );
        }
        // A length beyond what the session's ring can hold is refused before any allocation.
        let ring_len_at = bytes.len() - 70_000 - 8;
        bytes[ring_len_at..ring_len_at + 8].copy_from_slice(&u64::MAX.to_le_bytes());
        let error = read(bytes.as_slice()).unwrap_err();
        assert!(error.to_string().contains("more than the"), "{error}");
    }
}
