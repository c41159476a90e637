//! The wire protocol: message types exchanged between `cmdop` and `cmdop-node`, sans-IO.
//!
//! A connection (QUIC, ALPN [`ALPN`]) carries:
//! - one **control stream**, the first bidirectional stream the client opens: the client sends
//!   [`Hello`] and then one [`Request`] at a time; the node answers each with one [`Reply`];
//! - one **attach stream** per live terminal (see the interactive terminal work), whose first
//!   frame is an [`AttachRequest`].
//!
//! Every message travels in a length-prefixed CBOR frame ([`crate::frame`]). Byte payloads are
//! CBOR byte strings. Enum variants are tagged by name, which is part of the protocol: renaming
//! one is a protocol change and needs a new [`PROTOCOL_VERSION`].

pub use crate::snapshot::Snapshot;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// The QUIC application protocol name.
pub const ALPN: &[u8] = b"cmdop/1";

/// The version of the messages in this module.
pub const PROTOCOL_VERSION: u32 = 1;

/// The default UDP port a node listens on.
pub const DEFAULT_PORT: u16 = 7443;

/// QUIC application close codes.
pub mod close_code {
    /// Normal close.
    pub const DONE: u32 = 0;
    /// The client is not authorized (or was revoked).
    pub const UNAUTHORIZED: u32 = 1;
    /// The peer sent a malformed, oversized or unexpected frame.
    pub const PROTOCOL_ERROR: u32 = 2;
    /// The peer speaks another protocol version.
    pub const VERSION_MISMATCH: u32 = 3;
    /// The node is shutting down.
    pub const SHUTDOWN: u32 = 4;
    /// A configured limit was exceeded.
    pub const LIMIT: u32 = 5;
}

/// First frame on the control stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    /// The client's [`PROTOCOL_VERSION`].
    pub version: u32,
    /// A one-time invite token, for a client the node does not know yet.
    pub invite: Option<String>,
}

/// The node's answer to [`Hello`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum HelloReply {
    /// The client is served.
    Welcome {
        /// The node's [`PROTOCOL_VERSION`].
        version: u32,
        /// The node's host name.
        host: String,
        /// Whether this connection's key was just authorized by an invite token.
        invited: bool,
    },
    /// The client is not served; the connection closes after this frame.
    Refused(ErrorReply),
}

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

/// How a session is asked to be created.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreateSession {
    /// Optional unique name on this node.
    pub name: Option<String>,
    /// Initial window size.
    pub size: WinSize,
    /// `TERM` for the shell (the node's default when absent).
    pub term: Option<String>,
    /// Working directory (the user's home when absent).
    pub cwd: Option<String>,
    /// Extra environment variables.
    pub env: Vec<(String, String)>,
}

/// A request on the control stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Request {
    /// Create a session.
    Create(CreateSession),
    /// List every session on the node.
    List,
    /// One session's metadata and the last `tail` lines of its scrollback.
    Show {
        /// The session.
        session: Uuid,
        /// Lines of scrollback to return (none when absent).
        tail: Option<u32>,
    },
    /// Mark a session attached (metadata-only attach).
    Attach {
        /// The session.
        session: Uuid,
    },
    /// Clear the attached mark.
    Detach {
        /// The session.
        session: Uuid,
    },
    /// Destroy a session: hang up its processes and drop its scrollback.
    Destroy {
        /// The session.
        session: Uuid,
    },
    /// Destroy every session idle (no attachment, no activity) for longer than `idle_ms`.
    DestroyIdle {
        /// Idle time in milliseconds.
        idle_ms: u64,
    },
    /// Close every live connection of a revoked client key (after `cmdop-node revoke` wrote
    /// the revocation). Only the node's own client identity may ask.
    Revoke {
        /// The revoked key.
        fingerprint: String,
    },
    /// Write bytes to a session's PTY, as if typed.
    Send {
        /// The session.
        session: Uuid,
        /// The bytes.
        #[serde(with = "serde_bytes")]
        data: Vec<u8>,
    },
    /// A snapshot of a session: metadata and the last `lines` lines of scrollback (all of the
    /// ringbuffer when absent).
    Snapshot {
        /// The session.
        session: Uuid,
        /// Lines of scrollback.
        lines: Option<u32>,
    },
    /// Create a session from a snapshot: its scrollback first, then a marker line, then a new
    /// shell in the snapshot's working directory. The only request a migration ticket allows.
    Restore {
        /// What to restore.
        snapshot: Snapshot,
        /// A name to use instead of the snapshot's.
        name: Option<String>,
    },
    /// Issue a one-time, short-lived ticket that lets another node restore one session here.
    MigrationTicket,
    /// Move a session to another node: this node dials it with its own key, presents the
    /// ticket, checks the node's key, restores the session there and, once it confirms,
    /// destroys it here.
    Migrate {
        /// The session (on this node).
        session: Uuid,
        /// The target's name, as the client knows it (for messages).
        to_name: String,
        /// The target's address, as the client reaches it.
        to_addr: String,
        /// The target's key fingerprint, as the client pinned it.
        to_fingerprint: String,
        /// The ticket the target issued.
        ticket: String,
        /// A name to use on the target instead of the session's.
        name: Option<String>,
    },
}

/// The node's answer to a [`Request`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Reply {
    /// A session's metadata (after Create, Attach, Detach).
    Session(SessionInfo),
    /// Every session (after List).
    Sessions(Vec<SessionInfo>),
    /// Metadata and scrollback (after Show).
    Shown {
        /// The metadata.
        session: SessionInfo,
        /// The scrollback lines requested.
        #[serde(with = "serde_bytes")]
        tail: Vec<u8>,
    },
    /// The sessions destroyed (after Destroy, DestroyIdle).
    Destroyed(Vec<Uuid>),
    /// Live connections closed (after Revoke).
    Revoked {
        /// How many.
        closed: u32,
    },
    /// Done, nothing to report (after Send).
    Done,
    /// A session's snapshot (after Snapshot).
    Snapshot(Snapshot),
    /// The session created from a snapshot (after Restore).
    Restored {
        /// The new session.
        session: SessionInfo,
        /// Oldest scrollback bytes dropped because the ringbuffer is smaller than the snapshot.
        dropped: u64,
    },
    /// A migration ticket (after MigrationTicket).
    Ticket {
        /// The one-time token.
        token: String,
        /// When it expires, Unix milliseconds.
        expires_ms: u64,
    },
    /// The session now on the target node; the source's copy is destroyed (after Migrate).
    Migrated {
        /// The session on the target.
        session: SessionInfo,
        /// Oldest scrollback bytes the target dropped (its ringbuffer is smaller).
        dropped: u64,
    },
    /// The request failed; the connection stays usable.
    Error(ErrorReply),
}

/// What kind of failure an [`ErrorReply`] reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ErrorKind {
    /// No session with that id.
    NotFound,
    /// The name is taken on this node.
    NameTaken,
    /// The client is not authorized.
    Unauthorized,
    /// The request is not valid.
    BadRequest,
    /// A configured limit would be exceeded.
    Limit,
    /// The peer speaks another protocol version.
    VersionMismatch,
    /// Something failed on the node.
    Internal,
}

/// A failure, with a sentence for the user.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorReply {
    /// The kind of failure.
    pub kind: ErrorKind,
    /// One sentence that says what failed and what to do next.
    pub message: String,
}

impl std::fmt::Display for ErrorReply {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
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

/// First frame on an attach stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttachRequest {
    /// The session to attach to.
    pub session: Uuid,
    /// Interactive or read-only.
    pub mode: AttachMode,
    /// Force-detach the client that holds the input.
    pub takeover: bool,
    /// Where to resume output: the first offset the client has not shown. When absent, the node
    /// starts with the recent scrollback (`scrollback_bytes` at most).
    pub resume_from: Option<u64>,
    /// Recent scrollback to replay on a fresh attach.
    pub scrollback_bytes: u64,
    /// The client's terminal size.
    pub size: WinSize,
    /// Names this client's stream of keystrokes across reconnects. Input sequence numbers are
    /// only comparable within one stream: when another stream typed in between, the node says
    /// so ([`AttachOutput::Attached::input_reset`]) and the client renumbers what it still holds.
    #[serde(default)]
    pub input_stream: u64,
}

/// Who may type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum AttachMode {
    /// Sees output, sends input and resizes; one per session.
    Interactive,
    /// Sees output only; any number per session.
    ReadOnly,
}

/// Client to node, on an attach stream after [`AttachRequest`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum AttachInput {
    /// Keystrokes, numbered from 0 per attachment lineage; the node drops any `seq` it has
    /// already applied.
    Input {
        /// Sequence number of the first byte of `data`.
        seq: u64,
        /// The bytes typed.
        #[serde(with = "serde_bytes")]
        data: Vec<u8>,
    },
    /// The client's terminal changed size.
    Resize(WinSize),
    /// The client leaves; the session keeps running.
    Detach,
    /// Nothing: sent when expected output stops arriving, so that a path change the client
    /// cannot see (a NAT rebinding) reaches the node at once instead of at the next keep-alive.
    Probe,
}

/// Node to client, on an attach stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum AttachOutput {
    /// The attachment is live.
    Attached {
        /// The session's metadata.
        session: SessionInfo,
        /// The offset the output will start from.
        offset: u64,
        /// The next input sequence number the node expects (everything below was applied).
        input_seq: u64,
        /// The last input applied came from another stream: number pending input from
        /// `input_seq` and send all of it, none was applied.
        #[serde(default)]
        input_reset: bool,
    },
    /// PTY output at absolute `offset`.
    Output {
        /// Offset of `data[0]`.
        offset: u64,
        /// The bytes.
        #[serde(with = "serde_bytes")]
        data: Vec<u8>,
    },
    /// Output lost to ringbuffer overflow before the next [`AttachOutput::Output`].
    Gap {
        /// Bytes lost.
        lost: u64,
    },
    /// Input applied up to (not including) this sequence number.
    InputAck {
        /// Next expected sequence number.
        seq: u64,
    },
    /// The shell exited; the stream ends.
    Exited {
        /// Exit code.
        code: i32,
    },
    /// The node detached this client; the stream ends.
    Detached {
        /// Why, for the user.
        reason: String,
    },
    /// The attach failed; the stream ends.
    Error(ErrorReply),
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::frame::{encode_to_vec, FrameDecoder, DEFAULT_MAX_FRAME};
    use serde::de::DeserializeOwned;

    fn round_trip<T: Serialize + DeserializeOwned + PartialEq + std::fmt::Debug>(message: T) {
        let wire = encode_to_vec(&message).unwrap();
        let mut decoder = FrameDecoder::new(DEFAULT_MAX_FRAME);
        decoder.push(&wire);
        assert_eq!(decoder.next_frame::<T>().unwrap(), Some(message));
        assert_eq!(decoder.next_frame::<T>().unwrap(), None);
    }

    fn info() -> SessionInfo {
        SessionInfo {
            id: Uuid::now_v7(),
            name: Some("deploy".into()),
            host: "vps".into(),
            shell: "/bin/bash".into(),
            cwd: "/home/me".into(),
            created_ms: 1,
            last_active_ms: 2,
            attached: true,
            pid: Some(42),
            size: WinSize {
                rows: 30,
                cols: 100,
            },
            state: SessionState::Exited { code: 3 },
            output_bytes: 99,
        }
    }

    fn snapshot() -> Snapshot {
        Snapshot {
            name: Some("deploy".into()),
            host: "vps".into(),
            node_fingerprint: "SHA256:x".into(),
            shell: "/bin/bash".into(),
            cwd: "/srv".into(),
            env: vec![("TERM".into(), "xterm".into())],
            size: WinSize { rows: 3, cols: 4 },
            created_ms: 1,
            saved_at_ms: 2,
            scrollback: vec![0xff, b'\n', 0],
        }
    }

    fn error() -> ErrorReply {
        ErrorReply {
            kind: ErrorKind::NotFound,
            message: "no such session".into(),
        }
    }

    #[test]
    fn control_messages_round_trip() {
        round_trip(Hello {
            version: PROTOCOL_VERSION,
            invite: Some("tok".into()),
        });
        round_trip(HelloReply::Welcome {
            version: 1,
            host: "h".into(),
            invited: false,
        });
        round_trip(HelloReply::Refused(error()));
        let id = Uuid::now_v7();
        for request in [
            Request::Create(CreateSession {
                name: Some("n".into()),
                size: WinSize { rows: 1, cols: 2 },
                term: Some("xterm".into()),
                cwd: Some("/tmp".into()),
                env: vec![("A".into(), "B".into())],
            }),
            Request::List,
            Request::Revoke {
                fingerprint: "SHA256:x".into(),
            },
            Request::Show {
                session: id,
                tail: Some(5),
            },
            Request::Attach { session: id },
            Request::Detach { session: id },
            Request::Destroy { session: id },
            Request::DestroyIdle { idle_ms: 5 },
            Request::Send {
                session: id,
                data: b"ls\n".to_vec(),
            },
            Request::Snapshot {
                session: id,
                lines: Some(10),
            },
            Request::Restore {
                snapshot: snapshot(),
                name: Some("renamed".into()),
            },
            Request::MigrationTicket,
            Request::Migrate {
                session: id,
                to_name: "two".into(),
                to_addr: "127.0.0.1:7443".into(),
                to_fingerprint: "SHA256:x".into(),
                ticket: "tok".into(),
                name: None,
            },
        ] {
            round_trip(request);
        }
        for reply in [
            Reply::Session(info()),
            Reply::Sessions(vec![info(), info()]),
            Reply::Shown {
                session: info(),
                tail: b"x\n".to_vec(),
            },
            Reply::Destroyed(vec![id]),
            Reply::Done,
            Reply::Revoked { closed: 2 },
            Reply::Error(error()),
            Reply::Snapshot(snapshot()),
            Reply::Restored {
                session: info(),
                dropped: 3,
            },
            Reply::Ticket {
                token: "tok".into(),
                expires_ms: 9,
            },
            Reply::Migrated {
                session: info(),
                dropped: 0,
            },
        ] {
            round_trip(reply);
        }
    }

    #[test]
    fn attach_messages_round_trip() {
        round_trip(AttachRequest {
            session: Uuid::now_v7(),
            mode: AttachMode::ReadOnly,
            takeover: true,
            resume_from: Some(7),
            scrollback_bytes: 100,
            size: WinSize::default(),
            input_stream: 9,
        });
        for input in [
            AttachInput::Input {
                seq: 3,
                data: vec![3],
            },
            AttachInput::Resize(WinSize { rows: 5, cols: 6 }),
            AttachInput::Detach,
            AttachInput::Probe,
        ] {
            round_trip(input);
        }
        for output in [
            AttachOutput::Attached {
                session: info(),
                offset: 5,
                input_seq: 2,
                input_reset: true,
            },
            AttachOutput::Output {
                offset: 9,
                data: b"hi".to_vec(),
            },
            AttachOutput::Gap { lost: 10 },
            AttachOutput::InputAck { seq: 4 },
            AttachOutput::Exited { code: 1 },
            AttachOutput::Detached {
                reason: "taken over".into(),
            },
            AttachOutput::Error(error()),
        ] {
            round_trip(output);
        }
    }

    #[test]
    fn payload_bytes_are_byte_strings() {
        let wire = encode_to_vec(&Request::Send {
            session: Uuid::nil(),
            data: vec![9; 4],
        })
        .unwrap();
        assert!(wire.windows(5).any(|w| w == [0x44, 9, 9, 9, 9]));
    }
}
