//! Attach-stream messages: one live terminal per stream. The client opens it with an
//! [`AttachRequest`], then sends [`AttachInput`]; the node answers with [`AttachOutput`].

use crate::error::ErrorReply;
use crate::session::{SessionInfo, WinSize};
use crate::Fingerprint;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

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
    /// The client has drawn the output below this offset. The node paces what it sends by it
    /// and tells from it when the client has fallen behind.
    Shown {
        /// One past the last byte drawn (or the offset of the last screen frame drawn).
        offset: u64,
    },
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
    /// The session's current screen, standing for all output below `offset`: the client
    /// skipped the bytes between what it had shown and `offset` (they stay in the node's
    /// ringbuffer). Output continues from `offset`.
    Screen(ScreenFrame),
    /// Every keystroke below `seq` was written into the PTY at least a moment ago (50 ms), and
    /// any echo of it is in the output sent before this frame: a prediction of those keystrokes
    /// that the output does not show will not be echoed.
    EchoAck {
        /// One past the last keystroke covered.
        seq: u64,
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
    Detached(DetachReason),
    /// The attach failed; the stream ends.
    Error(ErrorReply),
}

/// Why the node detached a client ([`AttachOutput::Detached`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum DetachReason {
    /// Another client took the session over with `--takeover`.
    TakenOver {
        /// The other client's key.
        by: Fingerprint,
        /// Where it connected from.
        from: String,
    },
    /// A newer connection of this same client resumed the attachment.
    Replaced,
    /// The session was destroyed.
    Destroyed,
    /// The session moved to another node.
    Moved {
        /// The other node's name, as the migrating client knows it.
        to: String,
        /// The session's name there, or its id.
        session: String,
    },
    /// The node is shutting down or let go for another reason.
    NodeGone,
}

impl std::fmt::Display for DetachReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DetachReason::TakenOver { by, from } => {
                write!(f, "taken over by client {by} from {from}")
            }
            DetachReason::Replaced => f.write_str("replaced by a newer connection of this client"),
            DetachReason::Destroyed => f.write_str("the session was destroyed"),
            DetachReason::Moved { to, session } => write!(
                f,
                "session moved to {to}; reattach with: cmdop connect {to} --session {session}"
            ),
            DetachReason::NodeGone => f.write_str("detached by the node"),
        }
    }
}

/// A screen frame ([`AttachOutput::Screen`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScreenFrame {
    /// The output offset the screen stands for; live output continues from here.
    pub offset: u64,
    /// Output bytes the client skipped to get here.
    pub skipped: u64,
    /// Why the node sent a screen instead of the bytes.
    pub reason: SkipReason,
    /// The screen's size.
    pub size: WinSize,
    /// Bytes that redraw the screen on a freshly reset terminal of `size`.
    #[serde(with = "serde_bytes")]
    pub dump: Vec<u8>,
}

/// Why a client got a screen frame instead of the bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum SkipReason {
    /// The link could not carry the output in time.
    SlowLink,
    /// The person typed while output was still queued.
    Typed,
    /// The bytes are no longer in the ringbuffer.
    Overwritten,
}
