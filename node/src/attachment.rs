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

use crate::client::{describe_close, ClientError, Dialer, NodeClient, Target};
use crate::proto::{
    close_code, AttachInput, AttachMode, AttachOutput, AttachRequest, ErrorKind, SessionInfo,
    WinSize,
};
use crate::resync::{Resync, ResyncStats};
use crate::wire::{FramedRecv, FramedSend, RecvError};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};
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
    /// This many bytes were lost to ringbuffer overflow before the next output.
    Gap(u64),
    /// The link's state changed.
    Link(LinkState),
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
    Kicked(String),
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
    /// The session as it was when attached.
    pub info: SessionInfo,
}

fn lock(resync: &Mutex<Resync>) -> MutexGuard<'_, Resync> {
    // No code panics while holding this lock.
    resync.lock().unwrap_or_else(|p| p.into_inner())
}

/// One attach stream on one connection.
struct Link {
    connection: quinn::Connection,
    send: FramedSend,
    recv: FramedRecv,
    input_seq: u64,
    offset: u64,
    info: SessionInfo,
    input_reset: bool,
}

/// Why an attach attempt failed.
enum AttachFailure {
    /// For good.
    Final(End),
    /// Worth retrying.
    Retry(String),
}

async fn open_link(
    connection: quinn::Connection,
    name: &str,
    request: AttachRequest,
) -> Result<Link, AttachFailure> {
    let (send, recv) = connection
        .open_bi()
        .await
        .map_err(|e| AttachFailure::Retry(describe_close(name, e).to_string()))?;
    let mut send = FramedSend::new(send);
    let mut recv = FramedRecv::new(recv, crate::frame::DEFAULT_MAX_FRAME);
    send.send(&request)
        .await
        .map_err(|e| AttachFailure::Retry(e.to_string()))?;
    match recv.recv::<AttachOutput>().await {
        Ok(Some(AttachOutput::Attached { session, offset, input_seq, input_reset })) => {
            Ok(Link { connection, send, recv, input_seq, offset, info: session, input_reset })
        }
        Ok(Some(AttachOutput::Error(e))) if e.kind == ErrorKind::NotFound && request.resume_from.is_some() => {
            Err(AttachFailure::Final(End::Gone(format!(
                "session {} is gone from {name}: the node restarted, and the session's processes ended with it",
                request.session
            ))))
        }
        Ok(Some(AttachOutput::Error(e))) => Err(AttachFailure::Final(End::Gone(e.message))),
        Ok(Some(other)) => Err(AttachFailure::Retry(format!("unexpected first frame from the node: {other:?}"))),
        Ok(None) => Err(AttachFailure::Retry("the node closed the attachment".into())),
        Err(e) => Err(AttachFailure::Retry(recv_failure(name, &connection, e))),
    }
}

fn recv_failure(name: &str, connection: &quinn::Connection, error: RecvError) -> String {
    match connection.close_reason() {
        Some(close) => describe_close(name, close).to_string(),
        None => error.to_string(),
    }
}

impl Attachment {
    /// Attaches over `client`'s connection. Errors (session held by another client, not found)
    /// come back as the node's sentence.
    pub async fn open(
        dialer: Arc<Dialer>,
        client: NodeClient,
        spec: AttachSpec,
    ) -> Result<Attachment, ClientError> {
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
        let link = match open_link(client.connection.clone(), &target.name, request).await {
            Ok(link) => link,
            Err(AttachFailure::Final(End::Gone(message))) | Err(AttachFailure::Retry(message)) => {
                return Err(ClientError::Refused(message))
            }
            Err(AttachFailure::Final(end)) => return Err(ClientError::Refused(format!("{end:?}"))),
        };
        let info = link.info.clone();
        let resync = Arc::new(Mutex::new(Resync::new(link.offset, link.input_seq)));
        let (commands_tx, commands) = mpsc::unbounded_channel();
        let (events_tx, events) = mpsc::channel(64);
        let driver = Driver {
            dialer,
            target,
            spec,
            resync: resync.clone(),
            commands,
            events: events_tx,
            link_state: LinkState::Up,
            last_contact: Instant::now(),
            rtt: Duration::from_millis(100),
            input_stream,
        };
        tokio::spawn(driver.run(link));
        Ok(Attachment {
            handle: AttachmentHandle {
                commands: commands_tx,
            },
            events,
            resync,
            info,
        })
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

/// What ended one link.
enum LinkEnd {
    Done(End),
    Lost(String),
}

/// How long the path may stay silent (keep-alives included) before the client suspects a
/// network change and moves to a fresh socket: a bit more than two keep-alive intervals.
const SILENCE_BEFORE_REBIND: Duration = Duration::from_millis(2500);

/// How far the wall clock may run ahead of the monotonic clock before we call it a sleep.
const CLOCK_JUMP: Duration = Duration::from_secs(3);

/// Watches the path for silence, sans-IO: fed the connection's datagram counter and the time.
///
/// - While output streams (datagrams arrive tick after tick), a silence longer than a few round
///   trips means packets are going astray, typically a NAT rebinding the client cannot see: send
///   a probe at once (then back off), so the node learns the new address now, not at the next
///   keep-alive.
/// - A silence past [`SILENCE_BEFORE_REBIND`] (or a wall clock jumping ahead after a sleep) moves
///   the client to a fresh socket, in case its own network changed.
/// - Ticks are fast while streaming and slow while idle: an idle terminal costs four wake-ups a
///   second.
#[derive(Debug)]
struct PathWatch {
    datagrams: u64,
    last_rx: Instant,
    streaming: bool,
    probes: u32,
    last_probe: Option<Instant>,
    rebound_at: Option<Instant>,
    wall: SystemTime,
    mono: Instant,
}

/// What a [`PathWatch`] tick asks for.
#[derive(Debug, Default, PartialEq, Eq)]
struct PathAction {
    received: bool,
    probe: bool,
    rebind: bool,
    silent_secs: Option<u64>,
}

/// Tick while output streams.
const FAST_TICK: Duration = Duration::from_millis(5);
/// Tick while idle.
const SLOW_TICK: Duration = Duration::from_millis(250);
/// Shortest silence that triggers a probe while streaming.
const MIN_PROBE_SILENCE: Duration = Duration::from_millis(20);

impl PathWatch {
    fn new(datagrams: u64, now: Instant, wall: SystemTime) -> Self {
        PathWatch {
            datagrams,
            last_rx: now,
            streaming: false,
            probes: 0,
            last_probe: None,
            rebound_at: None,
            wall,
            mono: now,
        }
    }

    fn tick_interval(&self) -> Duration {
        if self.streaming {
            FAST_TICK
        } else {
            SLOW_TICK
        }
    }

    fn tick(
        &mut self,
        now: Instant,
        wall: SystemTime,
        datagrams: u64,
        rtt: Duration,
    ) -> PathAction {
        let mut action = PathAction::default();
        let since_last = now.saturating_duration_since(self.last_rx);
        if datagrams != self.datagrams {
            // Packets arriving less than a slow tick apart: output is streaming.
            self.streaming = since_last < SLOW_TICK;
            self.datagrams = datagrams;
            self.last_rx = now;
            self.probes = 0;
            self.last_probe = None;
            action.received = true;
        } else {
            if self.streaming {
                let wait = (rtt * 3).max(MIN_PROBE_SILENCE) * 2u32.pow(self.probes.min(6));
                let since_probe = self
                    .last_probe
                    .map_or(since_last, |at| now.saturating_duration_since(at));
                if since_probe >= wait {
                    action.probe = true;
                    self.probes += 1;
                    self.last_probe = Some(now);
                }
                if since_last > Duration::from_secs(1) {
                    self.streaming = false;
                }
            }
            if since_last > SILENCE_BEFORE_REBIND {
                action.silent_secs = Some(since_last.as_secs());
                if self
                    .rebound_at
                    .is_none_or(|at| now.saturating_duration_since(at) > SILENCE_BEFORE_REBIND)
                {
                    action.rebind = true;
                    self.rebound_at = Some(now);
                }
            }
        }
        // A wall clock far ahead of the monotonic one means the machine slept: the network may
        // be another one now.
        let wall_elapsed = wall.duration_since(self.wall).unwrap_or_default();
        if wall_elapsed > now.saturating_duration_since(self.mono) + CLOCK_JUMP {
            action.rebind = true;
            self.rebound_at = Some(now);
        }
        self.wall = wall;
        self.mono = now;
        action
    }
}

/// Largest input frame sent when replaying unacknowledged keystrokes.
const RESEND_CHUNK: usize = 32 * 1024;

/// Why a reconnect attempt that timed out failed.
const NO_ANSWER: &str = "no answer";

struct Driver {
    dialer: Arc<Dialer>,
    target: Target,
    spec: AttachSpec,
    resync: Arc<Mutex<Resync>>,
    commands: mpsc::UnboundedReceiver<Command>,
    events: mpsc::Sender<Event>,
    link_state: LinkState,
    /// When the last packet from the node arrived.
    last_contact: Instant,
    /// The last link's round-trip time.
    rtt: Duration,
    /// This attachment's keystroke stream.
    input_stream: u64,
}

impl Driver {
    async fn run(mut self, first: Link) {
        let mut link = first;
        let end = loop {
            match self.run_link(link).await {
                LinkEnd::Done(end) => break end,
                LinkEnd::Lost(reason) => {
                    tracing::debug!("link lost: {reason}");
                    match self.reconnect().await {
                        Ok(next) => link = next,
                        Err(end) => break end,
                    }
                }
            }
        };
        let _ = self.events.send(Event::End(end)).await;
    }

    async fn set_link_state(&mut self, state: LinkState) {
        if self.link_state != state {
            self.link_state = state.clone();
            let _ = self.events.send(Event::Link(state)).await;
        }
    }

    fn rebind(&self) {
        match std::net::UdpSocket::bind(("0.0.0.0", 0)) {
            Ok(socket) => {
                if let Err(e) = self.dialer.endpoint().rebind(socket) {
                    tracing::debug!("rebind failed: {e}");
                }
            }
            Err(e) => tracing::debug!("cannot open a new socket: {e}"),
        }
    }

    async fn run_link(&mut self, link: Link) -> LinkEnd {
        let Link {
            connection,
            mut send,
            recv,
            ..
        } = link;
        self.rtt = connection.rtt();
        // Keystrokes typed while the link was down go out again, in frames well under the
        // node's max_frame however long the outage was.
        let resend = lock(&self.resync).unacked();
        if let Some((seq, data)) = resend {
            for (i, piece) in data.chunks(RESEND_CHUNK).enumerate() {
                let frame = AttachInput::Input {
                    seq: seq + (i * RESEND_CHUNK) as u64,
                    data: piece.to_vec(),
                };
                if let Err(e) = send.send(&frame).await {
                    return LinkEnd::Lost(e.to_string());
                }
            }
        }
        let mut downlink = tokio::spawn(downlink(
            recv,
            connection.clone(),
            self.resync.clone(),
            self.events.clone(),
        ));
        let mut watch = PathWatch::new(
            connection.stats().udp_rx.datagrams,
            Instant::now(),
            SystemTime::now(),
        );
        let mut next_tick = tokio::time::Instant::now();
        let end = loop {
            tokio::select! {
                end = &mut downlink => {
                    break end.unwrap_or_else(|e| LinkEnd::Lost(format!("output task failed: {e}")));
                }
                command = self.commands.recv() => {
                    let frame = match command {
                        Some(Command::Input(bytes)) => {
                            if self.spec.mode == AttachMode::ReadOnly || bytes.is_empty() {
                                continue;
                            }
                            let seq = lock(&self.resync).input(&bytes);
                            AttachInput::Input { seq, data: bytes }
                        }
                        Some(Command::Resize(size)) => {
                            if self.spec.mode == AttachMode::ReadOnly {
                                continue;
                            }
                            // Later re-attachments ask for the size the terminal has now.
                            self.spec.size = size;
                            AttachInput::Resize(size)
                        }
                        Some(Command::Rebind) => {
                            self.rebind();
                            continue;
                        }
                        Some(Command::Detach) | None => {
                            let _ = send.send(&AttachInput::Detach).await;
                            send.finish();
                            let _ = tokio::time::timeout(Duration::from_millis(500), send.stream().stopped()).await;
                            break LinkEnd::Done(End::Detached);
                        }
                    };
                    if let Err(e) = send.send(&frame).await {
                        break LinkEnd::Lost(e.to_string());
                    }
                }
                _ = tokio::time::sleep_until(next_tick) => {
                    let now = Instant::now();
                    let action = watch.tick(now, SystemTime::now(), connection.stats().udp_rx.datagrams, connection.rtt());
                    next_tick = tokio::time::Instant::now() + watch.tick_interval();
                    if action.received {
                        self.last_contact = now;
                        self.set_link_state(LinkState::Up).await;
                    }
                    if action.probe {
                        if let Err(e) = send.send(&AttachInput::Probe).await {
                            break LinkEnd::Lost(e.to_string());
                        }
                    }
                    if action.rebind {
                        self.rebind();
                    }
                    if let Some(secs) = action.silent_secs {
                        self.set_link_state(LinkState::Silent { secs, peer: connection.remote_address() }).await;
                    }
                }
            }
        };
        downlink.abort();
        end
    }

    /// Reconnects and re-attaches until it works, the session turns out to be gone, or the user
    /// detaches. Keystrokes typed meanwhile wait in the resync buffer.
    async fn reconnect(&mut self) -> Result<Link, End> {
        let lost_at = self.last_contact;
        let mut backoff = Duration::from_millis(50);
        self.rebind();
        loop {
            self.set_link_state(LinkState::Reconnecting {
                secs: lost_at.elapsed().as_secs(),
            })
            .await;
            let request = AttachRequest {
                session: self.spec.session,
                mode: self.spec.mode,
                takeover: false,
                resume_from: Some(lock(&self.resync).resume_from()),
                scrollback_bytes: 0,
                size: self.spec.size,
                input_stream: self.input_stream,
            };
            let dialer = self.dialer.clone();
            let target = self.target.clone();
            // An attempt whose packets were lost is abandoned quickly, so that the first attempt
            // after the network returns starts within about a second.
            let attempt_timeout = (self.rtt * 6).max(Duration::from_secs(1));
            let attempt = async move {
                let client = match dialer.connect(&target, None).await {
                    Ok(client) => client,
                    Err(ClientError::Offline { .. }) => {
                        return Err(AttachFailure::Retry("offline".into()))
                    }
                    Err(e @ (ClientError::KeyChanged { .. } | ClientError::Refused(_))) => {
                        return Err(AttachFailure::Final(End::Gone(e.to_string())))
                    }
                    Err(e) => return Err(AttachFailure::Retry(e.to_string())),
                };
                open_link(client.connection.clone(), &target.name, request).await
            };
            let attempt = async move {
                tokio::time::timeout(attempt_timeout, attempt)
                    .await
                    .unwrap_or_else(|_| Err(AttachFailure::Retry(NO_ANSWER.into())))
            };
            tokio::pin!(attempt);
            let mut status = tokio::time::interval(Duration::from_secs(1));
            let mut retry_at: Option<tokio::time::Instant> = None;
            let linked = loop {
                let waiting = retry_at.is_some();
                tokio::select! {
                    result = &mut attempt, if !waiting => match result {
                        Ok(link) => break Some(link),
                        Err(AttachFailure::Final(end)) => return Err(end),
                        Err(AttachFailure::Retry(reason)) => {
                            tracing::debug!("reconnect failed: {reason}");
                            // A timed-out attempt has already waited: retry at once.
                            let pause = if reason == NO_ANSWER { Duration::ZERO } else { backoff };
                            retry_at = Some(tokio::time::Instant::now() + pause);
                        }
                    },
                    _ = tokio::time::sleep_until(retry_at.unwrap_or_else(tokio::time::Instant::now)), if waiting => break None,
                    command = self.commands.recv() => match command {
                        Some(Command::Input(bytes)) if self.spec.mode == AttachMode::Interactive => {
                            lock(&self.resync).input(&bytes);
                        }
                        Some(Command::Resize(size)) => self.spec.size = size,
                        Some(Command::Detach) | None => return Err(End::Detached),
                        _ => {}
                    },
                    _ = status.tick() => {
                        self.set_link_state(LinkState::Reconnecting { secs: lost_at.elapsed().as_secs() }).await;
                    }
                }
            };
            match linked {
                Some(link) => {
                    // `run_link` sends what is still unacknowledged.
                    lock(&self.resync).reattached(link.input_seq, link.input_reset);
                    self.set_link_state(LinkState::Up).await;
                    return Ok(link);
                }
                None => backoff = (backoff * 2).min(Duration::from_secs(1)),
            }
        }
    }
}

async fn downlink(
    mut recv: FramedRecv,
    connection: quinn::Connection,
    resync: Arc<Mutex<Resync>>,
    events: mpsc::Sender<Event>,
) -> LinkEnd {
    loop {
        let frame = match recv.recv::<AttachOutput>().await {
            Ok(Some(frame)) => frame,
            Ok(None) => return LinkEnd::Lost("the node ended the attachment".into()),
            Err(e) => {
                return match connection.close_reason() {
                    Some(quinn::ConnectionError::ApplicationClosed(close))
                        if close.error_code == close_code::SHUTDOWN.into() =>
                    {
                        LinkEnd::Done(End::Gone(
                            "the node shut down, and the session's processes ended with it".into(),
                        ))
                    }
                    _ => LinkEnd::Lost(e.to_string()),
                }
            }
        };
        let event = match frame {
            AttachOutput::Output { offset, data } => {
                // Room in the channel first: `shown` may only move once the bytes are handed
                // over, or a link aborted while waiting would skip them on resume.
                let Ok(permit) = events.reserve().await else {
                    return LinkEnd::Done(End::Detached);
                };
                let fresh = lock(&resync).output(offset, &data).to_vec();
                if !fresh.is_empty() {
                    permit.send(Event::Output(fresh));
                }
                continue;
            }
            AttachOutput::Gap { lost } => {
                lock(&resync).gap(lost);
                Event::Gap(lost)
            }
            AttachOutput::InputAck { seq } => {
                lock(&resync).acknowledge(seq);
                continue;
            }
            AttachOutput::Exited { code } => return LinkEnd::Done(End::Exited(code)),
            AttachOutput::Detached { reason } => return LinkEnd::Done(End::Kicked(reason)),
            AttachOutput::Error(e) => return LinkEnd::Done(End::Gone(e.message)),
            AttachOutput::Attached { .. } => continue,
        };
        if events.send(event).await.is_err() {
            return LinkEnd::Done(End::Detached);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn silence_while_streaming_sends_a_probe_with_backoff() {
        let start = Instant::now();
        let rtt = Duration::from_millis(2);
        let wall = SystemTime::now();
        let mut watch = PathWatch::new(0, start, wall);
        // Datagrams every 5 ms: streaming, fast ticks.
        let mut now = start;
        for n in 1..=10 {
            now = start + Duration::from_millis(5 * n);
            let action = watch.tick(now, wall, n, rtt);
            assert!(action.received && !action.probe);
        }
        assert_eq!(watch.tick_interval(), FAST_TICK);
        // Silence: the first probe after MIN_PROBE_SILENCE, the next after twice that.
        let at = |ms| now + Duration::from_millis(ms);
        assert!(!watch.tick(at(10), wall, 10, rtt).probe);
        assert!(watch.tick(at(20), wall, 10, rtt).probe);
        assert!(!watch.tick(at(35), wall, 10, rtt).probe);
        assert!(watch.tick(at(60), wall, 10, rtt).probe);
        // Packets again: back to normal.
        assert!(watch.tick(at(65), wall, 11, rtt).received);
    }

    #[test]
    fn idle_silence_sends_no_probe_but_long_silence_rebinds() {
        let start = Instant::now();
        let rtt = Duration::from_millis(2);
        let wall = SystemTime::now();
        let mut watch = PathWatch::new(0, start, wall);
        // A keep-alive a second: idle, slow ticks, no probes.
        assert!(
            watch
                .tick(start + Duration::from_secs(1), wall, 1, rtt)
                .received
        );
        assert_eq!(watch.tick_interval(), SLOW_TICK);
        assert!(
            !watch
                .tick(start + Duration::from_millis(1500), wall, 1, rtt)
                .probe
        );
        let action = watch.tick(start + Duration::from_millis(3600), wall, 1, rtt);
        assert!(action.rebind && !action.probe);
        assert_eq!(action.silent_secs, Some(2));
        // No second rebind right after the first.
        assert!(
            !watch
                .tick(start + Duration::from_millis(3900), wall, 1, rtt)
                .rebind
        );
    }

    #[test]
    fn a_wall_clock_jump_means_a_sleep_and_rebinds() {
        let start = Instant::now();
        let wall = SystemTime::now();
        let rtt = Duration::from_millis(2);
        let mut watch = PathWatch::new(0, start, wall);
        let later = start + Duration::from_millis(250);
        assert!(
            !watch
                .tick(later, wall + Duration::from_millis(250), 1, rtt)
                .rebind
        );
        // 250 ms of monotonic time, but an hour on the wall clock: the machine slept.
        let action = watch.tick(
            later + Duration::from_millis(250),
            wall + Duration::from_secs(3600),
            1,
            rtt,
        );
        assert!(action.rebind);
    }
}
