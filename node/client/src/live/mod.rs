//! A live attachment, client side: one session's terminal across any number of connections.
//!
//! [`Attachment::open`] attaches over an admitted connection and starts a driver task that
//! keeps the terminal alive:
//! - keystrokes ([`AttachmentHandle::input`]) go out at once with sequence numbers, on a path
//!   that never waits for output, so Ctrl+C is not stuck behind a flood;
//! - output arrives as [`Event::Output`] through a bounded channel: a slow terminal slows the
//!   stream (QUIC flow control), and the node lets it fall behind in its ringbuffer;
//! - QUIC migration carries the connection across address changes. When the path goes silent
//!   or the wall clock jumps (a sleep), the driver moves to a fresh UDP socket;
//! - when the connection is gone, the driver reconnects with backoff and resumes from the first
//!   offset not shown; unacknowledged keystrokes are sent again and applied once ([`Resync`]).
//!   A restarted node (stateless reset, then "no such session") ends the attachment with
//!   [`End::Gone`].
//!
//! Layout: this module is the public API; `link` is one connection's attach stream,
//! `driver` the task that runs links and reconnects, and `path_watch` the sans-IO watch
//! for a silent path.

mod driver;
mod link;
mod link_status;
mod path_watch;
mod shown;

use crate::dial::{ClientError, Dialer, NodeClient};
use cmdop_proto::resync::{Resync, ResyncStats};
use cmdop_proto::{AttachMode, AttachRequest, DetachReason, ScreenFrame, SessionInfo, WinSize};
use driver::{Channels, Driver};
use link::open_link;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::SystemTime;
use tokio::sync::mpsc;
use uuid::Uuid;

/// What to attach to, and how.
#[derive(Debug, Clone, Copy)]
pub struct AttachSpec {
    /// The session.
    pub session: Uuid,
    /// Interactive or read-only.
    pub mode: AttachMode,
    /// Force-detach the current holder.
    pub takeover: bool,
    /// Recent scrollback to replay on the first attach.
    pub scrollback_bytes: u64,
    /// The terminal's size.
    pub size: WinSize,
}

/// What the attachment reports to the terminal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// Session bytes to show, in order, each exactly once.
    Output(Vec<u8>),
    /// The node skipped output the link could not carry in time: draw this screen in place of
    /// it (reset the terminal, then write the frame's dump), then output continues.
    Screen(ScreenFrame),
    /// The node wrote the first this-many bytes typed through [`AttachmentHandle::input`] into
    /// the PTY a moment ago: any echo of them is in the output already delivered.
    EchoAck(u64),
    /// The link's state changed.
    Link(LinkState),
    /// The attachment left its meeting node's relay for a direct path to the node, at this
    /// address (hole punching worked).
    Direct(SocketAddr),
    /// The attachment is over.
    End(End),
}

/// The state of the network path, for a status line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LinkState {
    /// Packets flow.
    Up,
    /// Nothing received for this long; QUIC keeps trying on the same connection.
    Silent {
        /// Seconds since the last packet.
        secs: u64,
        /// The node's address.
        peer: SocketAddr,
    },
    /// The connection was lost; reconnecting.
    Reconnecting {
        /// Seconds since the last packet from the node.
        secs: u64,
    },
}

/// Why an attachment ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum End {
    /// The user detached.
    Detached,
    /// The session's shell exited with this code.
    Exited(i32),
    /// The node detached us (takeover, session moved or destroyed), with its reason.
    Kicked(DetachReason),
    /// The session is gone or cannot be reached for good (node restarted, refused).
    Gone(String),
}

enum Command {
    Input(Vec<u8>),
    Resize(WinSize),
    Rebind,
    Detach,
}

/// Sends keystrokes and controls to an attachment; cheap to clone, usable from any thread.
#[derive(Debug, Clone)]
pub struct AttachmentHandle {
    commands: mpsc::UnboundedSender<Command>,
}

impl AttachmentHandle {
    /// Sends typed bytes (ignored by the node for read-only attachments).
    pub fn input(&self, bytes: Vec<u8>) {
        let _ = self.commands.send(Command::Input(bytes));
    }

    /// Reports a new terminal size.
    pub fn resize(&self, size: WinSize) {
        let _ = self.commands.send(Command::Resize(size));
    }

    /// Moves to a fresh UDP socket now, as after a network change.
    pub fn rebind(&self) {
        let _ = self.commands.send(Command::Rebind);
    }

    /// Detaches; the attachment then ends with [`End::Detached`].
    pub fn detach(&self) {
        let _ = self.commands.send(Command::Detach);
    }
}

impl std::fmt::Debug for Command {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Command::Input(_) => "Input",
            Command::Resize(_) => "Resize",
            Command::Rebind => "Rebind",
            Command::Detach => "Detach",
        })
    }
}

/// A live attachment.
#[derive(Debug)]
pub struct Attachment {
    handle: AttachmentHandle,
    events: mpsc::Receiver<Event>,
    resync: Arc<Mutex<Resync>>,
    rtt: Arc<std::sync::atomic::AtomicU64>,
    /// The session as it was when attached.
    pub info: SessionInfo,
}

/// Locks the resync state.
fn lock(resync: &Mutex<Resync>) -> MutexGuard<'_, Resync> {
    // No code panics while holding this lock.
    resync.lock().unwrap_or_else(|p| p.into_inner())
}

impl Attachment {
    /// Attaches over `client`'s connection. Errors (session held by another client, not found)
    /// come back as the node's sentence.
    pub async fn open(
        dialer: Arc<Dialer>,
        mut client: NodeClient,
        spec: AttachSpec,
    ) -> Result<Attachment, ClientError> {
        ask_to_punch(&mut client).await;
        let target = client.target.clone();
        let input_stream = new_input_stream();
        let request = AttachRequest {
            session: spec.session,
            mode: spec.mode,
            takeover: spec.takeover,
            resume_from: None,
            scrollback_bytes: spec.scrollback_bytes,
            size: spec.size,
            input_stream,
        };
        let mut link = open_link(client.connection.clone(), &target.name, request)
            .await
            .map_err(|failure| ClientError::Refused(failure.into_reason()))?;
        link.punch_to = client.punch_to;
        let info = link.info.clone();
        let resync = Arc::new(Mutex::new(Resync::new(link.offset, link.input_seq)));
        let (commands_tx, commands) = mpsc::unbounded_channel();
        let (events_tx, events) = mpsc::channel(64);
        let rtt = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let channels = Channels {
            resync: resync.clone(),
            commands,
            events: events_tx,
            rtt: rtt.clone(),
        };
        let driver = Driver::new(dialer, target, spec, input_stream, channels);
        tokio::spawn(driver.run(link));
        Ok(Attachment {
            handle: AttachmentHandle {
                commands: commands_tx,
            },
            events,
            resync,
            rtt,
            info,
        })
    }

    /// The link's smoothed round-trip time, as last measured (zero before the first).
    pub fn rtt(&self) -> std::time::Duration {
        std::time::Duration::from_micros(self.rtt.load(std::sync::atomic::Ordering::Relaxed))
    }

    /// A handle for input and controls.
    pub fn handle(&self) -> AttachmentHandle {
        self.handle.clone()
    }

    /// The next event; None after [`Event::End`].
    pub async fn next_event(&mut self) -> Option<Event> {
        self.events.recv().await
    }

    /// Counters so far.
    pub fn stats(&self) -> ResyncStats {
        lock(&self.resync).stats()
    }
}

/// Over a relayed connection, asks the node to open its NAT towards this client, for the
/// direct path the attachment will try (a connection that is not relayed is left alone).
async fn ask_to_punch(client: &mut NodeClient) {
    if client.punch_to.is_some() {
        if let Err(e) = client.send_last(cmdop_proto::Punch).await {
            tracing::debug!("cannot ask for a punch: {e}");
        }
    }
}

/// A random, non-zero name for this attachment's keystroke stream.
fn new_input_stream() -> u64 {
    use ring::rand::SecureRandom;
    let mut bytes = [0u8; 8];
    // If the system RNG fails, a time-based value still tells streams apart in practice.
    if ring::rand::SystemRandom::new().fill(&mut bytes).is_err() {
        bytes = (SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos() as u64)
            .to_le_bytes();
    }
    u64::from_le_bytes(bytes).max(1)
}
