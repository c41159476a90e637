//! Control-stream messages: [`Hello`] and its reply, then one [`Request`] at a time, each
//! answered by one [`Reply`].
//!
//! Enum variants are tagged by name, which is part of the protocol: renaming one is a protocol
//! change and needs a new [`PROTOCOL_VERSION`].

use crate::error::ErrorReply;
use crate::session::{SessionInfo, WinSize};
use crate::snapshot::Snapshot;
use crate::trigger::{
    AddTrigger, ListTriggers, RemoveTrigger, RunInfo, RunTrigger, SetTriggerEnabled, ShowTrigger,
    TriggerHistory, TriggerInfo, TriggerLog, TriggerLogs,
};
use crate::Fingerprint;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// The QUIC application protocol: the framing (one control stream of length-prefixed CBOR
/// frames, then attach streams). It changes only with the framing; the messages carry their
/// own [`PROTOCOL_VERSION`] in the [`Hello`], so that a mismatch is refused with a sentence
/// rather than a failed handshake.
pub const ALPN: &[u8] = b"cmdop/2";

/// The version of the messages in this module. A node serves only clients of its own version
/// and refuses others with [`crate::ErrorKind::VersionMismatch`], saying which side is older.
/// `cmdop-node upgrade` does not depend on it: a node of another version is asked to upgrade
/// by signal (SIGUSR2) instead.
///
/// - 2: sessions, attachments with resync by offset, screen frames, migration.
/// - 3: echo acknowledgements, predictive echo's screen frames, triggers, upgrade in place,
///   rendezvous and relaying through a meeting node, hole punching, migration tickets and
///   carrying a session through a meeting node; `AttachOutput::Gap` is gone (a screen frame
///   stands for overwritten output).
pub const PROTOCOL_VERSION: u32 = 3;

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
    /// The node is re-executing itself (an upgrade in place): reconnect, the sessions stay.
    pub const UPGRADING: u32 = 6;
}

/// First frame on the control stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    /// The client's [`PROTOCOL_VERSION`].
    pub version: u32,
    /// What admits a key the node does not know yet.
    pub credential: Option<Credential>,
}

/// A one-time credential presented in [`Hello`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Credential {
    /// An invite token from `cmdop-node invite`: authorizes this client's key for good.
    Invite(String),
    /// A migration ticket ([`IssueTicket`]): admits another node for one [`Restore`].
    MigrationTicket(String),
    /// An invite token from `cmdop-node invite --relay`: authorizes this node key to
    /// [`Register`] for good (ignored once it is authorized).
    RelayInvite(String),
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

/// List every session on the node.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListSessions;

/// One session's metadata and the last `tail` lines of its scrollback.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Show {
    /// The session.
    pub session: Uuid,
    /// Lines of scrollback to return (none when absent).
    pub tail: Option<u32>,
    /// Also return what is on the session's screen now.
    #[serde(default)]
    pub screen: bool,
}

/// Mark a session attached (metadata-only attach) or clear the mark.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MarkAttached {
    /// The session.
    pub session: Uuid,
    /// Set (true) or clear (false) the mark.
    pub attached: bool,
}

/// Destroy a session: hang up its processes and drop its scrollback.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Destroy {
    /// The session.
    pub session: Uuid,
}

/// Destroy every session idle (no attachment, no activity) for longer than `idle_ms`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DestroyIdle {
    /// Idle time in milliseconds.
    pub idle_ms: u64,
}

/// Close every live connection of a revoked client key (after `cmdop-node revoke` wrote the
/// revocation). Only the node's own client identity may ask.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Revoke {
    /// The revoked key.
    pub fingerprint: Fingerprint,
}

/// Re-execute the node's binary in place, keeping every session (`cmdop-node upgrade`). Only
/// the client identity in the node's own `CMDOP_HOME` may ask. The reply comes once the new
/// binary passed its dry run; the connection then closes with [`close_code::UPGRADING`], and
/// [`LastUpgrade`] on a new connection tells how it went.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Upgrade {
    /// While trigger runs are going, hold new runs back and wait this long (milliseconds) for
    /// them to end, instead of refusing at once (0).
    #[serde(default)]
    pub wait_for_runs_ms: u64,
}

/// What an accepted [`Upgrade`] is about to do.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UpgradePlan {
    /// The number the upgrade's [`UpgradeOutcome`] will carry.
    pub generation: u64,
    /// The running version.
    pub from_version: String,
    /// The version the new binary reported in its dry run.
    pub to_version: String,
    /// The binary executed.
    pub exe: String,
}

/// How the node's last upgrade in place went, if it had one since it started.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LastUpgrade;

/// The outcome of an upgrade in place.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UpgradeOutcome {
    /// Counts the upgrades since the node was started.
    pub generation: u64,
    /// The version that was running.
    pub from_version: String,
    /// The version running now (the old one again after a failure).
    pub to_version: String,
    /// How long the node served nothing (quiesce to serving again).
    pub paused_ms: u64,
    /// Sessions carried over.
    pub sessions: u32,
    /// Why the new binary was not kept, if it was not.
    pub error: Option<String>,
}

/// Write bytes to a session's PTY, as if typed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SendInput {
    /// The session.
    pub session: Uuid,
    /// The bytes.
    #[serde(with = "serde_bytes")]
    pub data: Vec<u8>,
}

/// A snapshot of a session: metadata and the last `lines` lines of scrollback (all of the
/// ringbuffer when absent).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TakeSnapshot {
    /// The session.
    pub session: Uuid,
    /// Lines of scrollback.
    pub lines: Option<u32>,
}

/// Create a session from a snapshot: its scrollback first, then a marker line, then a new shell
/// in the snapshot's working directory. The only request a migration ticket allows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Restore {
    /// What to restore.
    pub snapshot: Snapshot,
    /// A name to use instead of the snapshot's.
    pub name: Option<String>,
}

/// Issue a one-time, short-lived ticket that lets another node restore one session here.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct IssueTicket;

/// Move a session to another node: this node dials it with its own key, presents the ticket,
/// checks the node's key, restores the session there and, once it confirms, destroys it here.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Migrate {
    /// The session (on this node).
    pub session: Uuid,
    /// The target's name, as the client knows it (for messages).
    pub to_name: String,
    /// The target's address, as the client reaches it.
    pub to_addr: String,
    /// The target's key fingerprint, as the client pinned it.
    pub to_fingerprint: Fingerprint,
    /// The ticket the target issued.
    pub ticket: String,
    /// A name to use on the target instead of the session's.
    pub name: Option<String>,
}

/// The session now lives on another node (a client carried its snapshot there, as when the
/// target is reached through a meeting node and the source cannot dial it): tell its
/// interactive client where it went, and destroy it here.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MovedTo {
    /// The session (on this node).
    pub session: Uuid,
    /// The other node's name, as the client knows it.
    pub to: String,
    /// The session's name there, or its id.
    pub session_there: String,
}

/// Register this node at a meeting node under `name`, so clients reach it with [`Relay`]. Only
/// a node key the meeting node authorized with `cmdop-node authorize --relay` may ask; the
/// registration lasts as long as the connection.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Register {
    /// The name clients ask for.
    pub name: String,
}

/// Join this control stream to the node registered under `to`: after the reply [`Relaying`], the
/// stream carries the client's QUIC datagrams to that node and back (length-prefixed frames),
/// and the meeting node sees only ciphertext.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Relay {
    /// The registered name.
    pub to: String,
}

/// Asked of a node over a connection relayed by a meeting node: open your NAT towards me. The
/// node sends punch datagrams from its own port to this client's address as the meeting node
/// saw it, for a few seconds, while the client dials it directly (hole punching). Only an
/// admitted client can ask, so a meeting node cannot make the node send anywhere.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Punch;

/// The reply to [`Relay`]: the stream now carries the registered node's datagrams. Also where
/// the meeting node sees that node, for hole punching (the node is told the client's address
/// in [`RelayOpen`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Relaying {
    /// The registered node's address as the meeting node sees it.
    pub node_addr: String,
}

/// First frame on a stream a meeting node opens to a registered node: one relayed client.
/// Datagram frames follow.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RelayOpen {
    /// The client's address as the meeting node sees it.
    pub client_addr: String,
    /// The key the client presented to the meeting node.
    pub client: Fingerprint,
}

/// Metadata and scrollback, the reply to [`Show`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Shown {
    /// The metadata.
    pub session: SessionInfo,
    /// The scrollback lines requested.
    #[serde(with = "serde_bytes")]
    pub tail: Vec<u8>,
    /// The screen now, when asked for.
    #[serde(default)]
    pub screen: Option<ScreenText>,
}

/// What is on a session's screen, as text.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScreenText {
    /// Each row's text, trailing blanks trimmed.
    pub rows: Vec<String>,
    /// Each row with its colours and attributes as SGR sequences.
    pub ansi_rows: Vec<String>,
    /// The cursor's column and row (from 0), and whether it is visible.
    pub cursor: (u16, u16, bool),
    /// Whether a full-screen program holds the alternate screen.
    pub alternate: bool,
}

/// A session created from a snapshot (the reply to [`Restore`]) or moved to another node (the
/// reply to [`Migrate`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Restored {
    /// The new session.
    pub session: SessionInfo,
    /// Oldest scrollback bytes dropped because the target's ringbuffer is smaller.
    pub dropped: u64,
}

/// A migration ticket, the reply to [`IssueTicket`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ticket {
    /// The one-time token.
    pub token: String,
    /// When it expires, Unix milliseconds.
    pub expires_ms: u64,
}

/// A request on the control stream; each variant carries the [`Call`] of the same name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Request {
    /// See [`CreateSession`].
    CreateSession(CreateSession),
    /// See [`ListSessions`].
    ListSessions(ListSessions),
    /// See [`Show`].
    Show(Show),
    /// See [`MarkAttached`].
    MarkAttached(MarkAttached),
    /// See [`Destroy`].
    Destroy(Destroy),
    /// See [`DestroyIdle`].
    DestroyIdle(DestroyIdle),
    /// See [`Revoke`].
    Revoke(Revoke),
    /// See [`SendInput`].
    SendInput(SendInput),
    /// See [`TakeSnapshot`].
    TakeSnapshot(TakeSnapshot),
    /// See [`Restore`].
    Restore(Restore),
    /// See [`IssueTicket`].
    IssueTicket(IssueTicket),
    /// See [`Migrate`].
    Migrate(Migrate),
    /// See [`MovedTo`].
    MovedTo(MovedTo),
    /// See [`Punch`].
    Punch(Punch),
    /// See [`AddTrigger`].
    AddTrigger(AddTrigger),
    /// See [`ListTriggers`].
    ListTriggers(ListTriggers),
    /// See [`ShowTrigger`].
    ShowTrigger(ShowTrigger),
    /// See [`SetTriggerEnabled`].
    SetTriggerEnabled(SetTriggerEnabled),
    /// See [`RunTrigger`].
    RunTrigger(RunTrigger),
    /// See [`TriggerHistory`].
    TriggerHistory(TriggerHistory),
    /// See [`TriggerLogs`].
    TriggerLogs(TriggerLogs),
    /// See [`RemoveTrigger`].
    RemoveTrigger(RemoveTrigger),
    /// See [`Upgrade`].
    Upgrade(Upgrade),
    /// See [`LastUpgrade`].
    LastUpgrade(LastUpgrade),
    /// See [`Register`].
    Register(Register),
    /// See [`Relay`].
    Relay(Relay),
}

/// The node's answer to a [`Request`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Reply {
    /// A session's metadata (after CreateSession, MarkAttached).
    Session(SessionInfo),
    /// Every session (after ListSessions).
    Sessions(Vec<SessionInfo>),
    /// Metadata and scrollback (after Show).
    Shown(Shown),
    /// The sessions destroyed (after Destroy, DestroyIdle).
    Destroyed(Vec<Uuid>),
    /// Live connections closed (after Revoke).
    Revoked(u32),
    /// The relay is joined (after Relay).
    Relaying(Relaying),
    /// Done, nothing to report (after SendInput, Register).
    Done,
    /// A session's snapshot (after TakeSnapshot).
    Snapshot(Snapshot),
    /// The session created from a snapshot (after Restore).
    Restored(Restored),
    /// A migration ticket (after IssueTicket).
    Ticket(Ticket),
    /// The session now on the target node; the source's copy is destroyed (after Migrate).
    Migrated(Restored),
    /// A trigger (after AddTrigger, ShowTrigger, SetTriggerEnabled, RemoveTrigger).
    Trigger(Box<TriggerInfo>),
    /// Every trigger (after ListTriggers).
    Triggers(Vec<TriggerInfo>),
    /// One history row (after RunTrigger: the run started, or why it did not).
    TriggerRun(RunInfo),
    /// History rows, newest first (after TriggerHistory).
    TriggerRuns(Vec<RunInfo>),
    /// A run's output (after TriggerLogs).
    TriggerLog(TriggerLog),
    /// The upgrade is under way (after Upgrade).
    Upgrading(UpgradePlan),
    /// The last upgrade's outcome (after LastUpgrade).
    LastUpgrade(Option<UpgradeOutcome>),
    /// The request failed; the connection stays usable.
    Error(ErrorReply),
}

/// A request whose reply has a known type: the client sends any `Call` and gets its `Reply`
/// (or the node's [`ErrorReply`]), with no match on [`Reply`] at the call site.
pub trait Call {
    /// What a successful reply carries.
    type Reply;
    /// The request on the wire.
    fn into_request(self) -> Request;
    /// The typed reply, or the reply itself when it is not this call's (an error, or a node
    /// that answered something else).
    fn take_reply(reply: Reply) -> Result<Self::Reply, Box<Reply>>;
}

macro_rules! calls {
    ($($call:ident => $variant:ident($reply:ty)),* $(,)?) => {$(
        impl Call for $call {
            type Reply = $reply;
            fn into_request(self) -> Request {
                Request::$call(self)
            }
            fn take_reply(reply: Reply) -> Result<$reply, Box<Reply>> {
                match reply {
                    Reply::$variant(value) => Ok(value),
                    other => Err(Box::new(other)),
                }
            }
        }
    )*};
}

calls! {
    CreateSession => Session(SessionInfo),
    ListSessions => Sessions(Vec<SessionInfo>),
    Show => Shown(Shown),
    MarkAttached => Session(SessionInfo),
    Destroy => Destroyed(Vec<Uuid>),
    DestroyIdle => Destroyed(Vec<Uuid>),
    Revoke => Revoked(u32),
    TakeSnapshot => Snapshot(Snapshot),
    Restore => Restored(Restored),
    IssueTicket => Ticket(Ticket),
    Migrate => Migrated(Restored),
    AddTrigger => Trigger(Box<TriggerInfo>),
    ListTriggers => Triggers(Vec<TriggerInfo>),
    ShowTrigger => Trigger(Box<TriggerInfo>),
    SetTriggerEnabled => Trigger(Box<TriggerInfo>),
    RunTrigger => TriggerRun(RunInfo),
    TriggerHistory => TriggerRuns(Vec<RunInfo>),
    TriggerLogs => TriggerLog(TriggerLog),
    RemoveTrigger => Trigger(Box<TriggerInfo>),
    Upgrade => Upgrading(UpgradePlan),
    LastUpgrade => LastUpgrade(Option<UpgradeOutcome>),
}

macro_rules! done_calls {
    ($($call:ident),* $(,)?) => {$(
        impl Call for $call {
            type Reply = ();
            fn into_request(self) -> Request {
                Request::$call(self)
            }
            fn take_reply(reply: Reply) -> Result<(), Box<Reply>> {
                match reply {
                    Reply::Done => Ok(()),
                    other => Err(Box::new(other)),
                }
            }
        }
    )*};
}

done_calls!(SendInput, Register, MovedTo, Punch);

impl Call for Relay {
    type Reply = Relaying;
    fn into_request(self) -> Request {
        Request::Relay(self)
    }
    /// A meeting node from before hole punching replies `Done`: relayed, no address to punch.
    fn take_reply(reply: Reply) -> Result<Relaying, Box<Reply>> {
        match reply {
            Reply::Relaying(relaying) => Ok(relaying),
            Reply::Done => Ok(Relaying {
                node_addr: String::new(),
            }),
            other => Err(Box::new(other)),
        }
    }
}
