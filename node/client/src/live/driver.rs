//! The driver task behind an [`Attachment`](super::Attachment): it runs one link at a time
//! (keystrokes up, path watching), and when a link is lost it reconnects with backoff and
//! resumes where the terminal left off.

use super::link::{downlink, open_link, AttachFailure, Link, LinkEnd};
use super::link_status::LinkStatus;
use super::path_watch::{PathAction, PathWatch, Received};
use super::shown::ShownReports;
use super::{lock, AttachSpec, Command, End, Event, LinkState};
use crate::dial::{ClientError, Dialer, NodeClient, Target};
use crate::wire::{FramedSend, SendError};
use cmdop_proto::resync::Resync;
use cmdop_proto::{close_code, AttachInput, AttachMode, AttachRequest};
use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};
use tokio::sync::{mpsc, Notify};
use tokio::task::JoinHandle;

/// Why a hole-punched direct link is left: a new socket would get a new port from this side's
/// NAT, which the node's NAT does not let in, so the way back is through the meeting node.
const LEAVE_DIRECT: &str =
    "the direct path changed or went silent; going back through the meeting node";

/// How long attaching on a new direct path may take before the switch is given up.
const SWITCH_TIMEOUT: Duration = Duration::from_secs(3);

/// Largest input frame sent when replaying unacknowledged keystrokes.
const RESEND_CHUNK: usize = 32 * 1024;

/// The state of one attachment's driver task.
pub(super) struct Driver {
    dialer: Arc<Dialer>,
    target: Target,
    spec: AttachSpec,
    resync: Arc<Mutex<Resync>>,
    commands: mpsc::UnboundedReceiver<Command>,
    events: mpsc::Sender<Event>,
    /// What the terminal was told of the link.
    link_status: LinkStatus,
    /// When the last packet from the node arrived.
    last_contact: Instant,
    /// The last link's round-trip time.
    rtt: Duration,
    /// The same, shared with the attachment.
    shared_rtt: Arc<std::sync::atomic::AtomicU64>,
    /// This attachment's keystroke stream.
    input_stream: u64,
    /// When to tell the node how far output was shown, on the current link.
    reports: ShownReports,
    /// The current link is a direct one that hole punching opened.
    punched: bool,
}

/// What the driver needs from the attachment it drives.
pub(super) struct Channels {
    /// Shared with the attachment, for its counters.
    pub resync: Arc<Mutex<Resync>>,
    /// From the attachment's handles.
    pub commands: mpsc::UnboundedReceiver<Command>,
    /// To the terminal.
    pub events: mpsc::Sender<Event>,
    /// The link's round-trip time in microseconds, for the terminal.
    pub rtt: Arc<std::sync::atomic::AtomicU64>,
}

impl Driver {
    /// A driver for `spec`'s session on `target`, whose keystrokes form `input_stream`.
    pub(super) fn new(
        dialer: Arc<Dialer>,
        target: Target,
        spec: AttachSpec,
        input_stream: u64,
        channels: Channels,
    ) -> Self {
        Driver {
            dialer,
            target,
            spec,
            resync: channels.resync,
            commands: channels.commands,
            events: channels.events,
            link_status: LinkStatus::default(),
            last_contact: Instant::now(),
            rtt: Duration::from_millis(100),
            shared_rtt: channels.rtt,
            input_stream,
            reports: ShownReports::default(),
            punched: false,
        }
    }

    /// Runs links until the attachment ends, then reports how.
    pub(super) async fn run(mut self, first: Link) {
        let mut link = first;
        let end = loop {
            match self.run_link(link).await {
                LinkEnd::Done(end) => break end,
                LinkEnd::Switched(next) => {
                    let direct = next.connection.remote_address();
                    let _ = self.events.send(Event::Direct(direct)).await;
                    link = *next;
                }
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

    /// Tells the terminal the link's state when it changed, without waiting: a terminal that
    /// stopped drawing (its events queue full) must not stop keystrokes, probes or reconnects.
    /// A state it had no room for goes again on the next call (every path tick, every attempt
    /// to reconnect).
    fn set_link_state(&mut self, state: LinkState) {
        let Some(state) = self.link_status.update(state) else {
            return;
        };
        let full = matches!(
            self.events.try_send(Event::Link(state)),
            Err(mpsc::error::TrySendError::Full(_))
        );
        self.link_status.delivered(!full);
    }

    fn rebind(&self) {
        if let Err(e) = self.dialer.rebind() {
            tracing::debug!("rebind failed: {e}");
        }
    }

    /// Runs one link: output flows down in its own task, keystrokes go up, and the path is
    /// watched for silence.
    async fn run_link(&mut self, link: Link) -> LinkEnd {
        let Link {
            connection,
            mut send,
            recv,
            punch_to,
            punched,
            ..
        } = link;
        // Reconnects go through the meeting node: their timeout follows its round trip, not
        // the direct path's.
        if !punched {
            self.rtt = connection.rtt();
        }
        self.punched = punched;
        if let Err(e) = self.resend_unacked(&mut send).await {
            return LinkEnd::Lost(e.to_string());
        }
        let mut direct = punch_to.map(|seen| self.try_direct(seen, connection.rtt()));
        let shown = Arc::new(Notify::new());
        self.reports = ShownReports::default();
        let mut reporting = true;
        let mut downlink = tokio::spawn(downlink(
            recv,
            connection.clone(),
            self.resync.clone(),
            self.events.clone(),
            shown.clone(),
        ));
        let mut watch = PathWatch::new(
            self.received(&connection),
            Instant::now(),
            SystemTime::now(),
        );
        let mut next_tick = tokio::time::Instant::now();
        let end = loop {
            tokio::select! {
                made = wait_direct(&mut direct) => {
                    if let Some(client) = made {
                        match self.switch_to(client, &connection).await {
                            // The relayed link's own end, if it had one, is the one to keep (a
                            // successful move ends it with Replaced, which must not count).
                            lost @ LinkEnd::Lost(_) => {
                                break ended_meanwhile(&mut downlink).await.unwrap_or(lost);
                            }
                            switched => break switched,
                        }
                    }
                }
                end = &mut downlink => {
                    break end.unwrap_or_else(|e| LinkEnd::Lost(format!("output task failed: {e}")));
                }
                command = self.commands.recv() => {
                    if let Some(end) = self.on_command(command, &mut send).await {
                        break end;
                    }
                }
                _ = shown.notified(), if reporting => {
                    // A node that stopped reading (it detached us, and its reason is on the
                    // way down) is not a lost link: the output stream says how this ends.
                    let offset = self.reports.shown(self.shown_offset(), Instant::now());
                    reporting = report_shown(offset, &mut send).await.is_ok();
                }
                _ = sleep_until_due(self.reports.due()), if reporting => {
                    let offset = self.reports.take_due(self.shown_offset());
                    reporting = report_shown(offset, &mut send).await.is_ok();
                }
                _ = tokio::time::sleep_until(next_tick) => {
                    let now = Instant::now();
                    let received = self.received(&connection);
                    let rtt = connection.rtt();
                    self.shared_rtt.store(rtt.as_micros() as u64, std::sync::atomic::Ordering::Relaxed);
                    let action = watch.tick(now, SystemTime::now(), received, rtt);
                    next_tick = tokio::time::Instant::now() + watch.tick_interval();
                    if action.rebind && self.punched {
                        break LinkEnd::Lost(LEAVE_DIRECT.into());
                    }
                    match self.on_tick(action, now, &connection, &mut send).await {
                        // A probe the node no longer reads: as for the reports above, the
                        // output stream says how this ends.
                        Err(e) if stopped_reading(&e) => {}
                        Err(e) => break LinkEnd::Lost(e.to_string()),
                        Ok(()) => {}
                    }
                }
            }
        };
        downlink.abort();
        if let Some(direct) = direct {
            direct.abort();
        }
        end
    }

    /// Tries a direct path to the node of a relayed link, in the background.
    fn try_direct(&self, seen: SocketAddr, rtt: Duration) -> JoinHandle<Option<NodeClient>> {
        let dialer = self.dialer.clone();
        let target = self.target.clone();
        tokio::spawn(async move { dialer.punch(&target, seen, rtt).await })
    }

    /// Moves the attachment from `relayed` to a direct connection: attaches there from the first
    /// offset not shown (the node replaces the relayed attachment, and bytes that still arrive
    /// on it are shown once), then closes the relayed connection. Lost (and so a reconnect)
    /// when the direct attach fails.
    async fn switch_to(&mut self, direct: NodeClient, relayed: &quinn::Connection) -> LinkEnd {
        let request = self.resume_request();
        let name = self.target.name.clone();
        let attach = open_link(direct.connection.clone(), &name, request);
        match tokio::time::timeout(SWITCH_TIMEOUT, attach).await {
            Ok(Ok(mut link)) => {
                link.punched = true;
                lock(&self.resync).reattached(link.input_seq, link.input_reset);
                relayed.close(close_code::DONE.into(), b"moved to a direct path");
                tracing::info!(node = %name, addr = %direct.connection.remote_address(), "moved to the direct path");
                LinkEnd::Switched(Box::new(link))
            }
            Ok(Err(failure)) => LinkEnd::Lost(format!(
                "attaching on the direct path failed: {}",
                failure.into_reason()
            )),
            Err(_) => LinkEnd::Lost("attaching on the direct path took too long".into()),
        }
    }

    /// What the connection has received so far: datagrams, and output bytes.
    fn received(&self, connection: &quinn::Connection) -> Received {
        Received {
            datagrams: connection.stats().udp_rx.datagrams,
            output: lock(&self.resync).resume_from(),
        }
    }

    /// How far the terminal has shown output.
    fn shown_offset(&self) -> u64 {
        lock(&self.resync).resume_from()
    }

    /// Sends again the keystrokes typed while the link was down, in frames well under the
    /// node's max_frame however long the outage was.
    async fn resend_unacked(&self, send: &mut FramedSend) -> Result<(), SendError> {
        let Some((seq, data)) = lock(&self.resync).unacked() else {
            return Ok(());
        };
        for (i, piece) in data.chunks(RESEND_CHUNK).enumerate() {
            let frame = AttachInput::Input {
                seq: seq + (i * RESEND_CHUNK) as u64,
                data: piece.to_vec(),
            };
            send.send(&frame).await?;
        }
        Ok(())
    }

    /// Acts on a command from the attachment's handles; Some when the link is over.
    async fn on_command(
        &mut self,
        command: Option<Command>,
        send: &mut FramedSend,
    ) -> Option<LinkEnd> {
        let frame = match command {
            Some(Command::Input(bytes)) => {
                if self.spec.mode == AttachMode::ReadOnly || bytes.is_empty() {
                    return None;
                }
                // The waiting report goes first, in the same write: the node judges the
                // keystroke by how far the terminal really is.
                let offset = self.reports.before_input(self.shown_offset());
                let seq = lock(&self.resync).input(&bytes);
                let input = AttachInput::Input { seq, data: bytes };
                let sent = match offset {
                    Some(offset) => send.send_all(&[AttachInput::Shown { offset }, input]).await,
                    None => send.send_all(&[input]).await,
                };
                return sent.err().and_then(lost_unless_stopped);
            }
            Some(Command::Resize(size)) => {
                if self.spec.mode == AttachMode::ReadOnly {
                    return None;
                }
                // Later re-attachments ask for the size the terminal has now.
                self.spec.size = size;
                AttachInput::Resize(size)
            }
            Some(Command::Rebind) if self.punched => {
                return Some(LinkEnd::Lost(LEAVE_DIRECT.into()))
            }
            Some(Command::Rebind) => {
                self.rebind();
                return None;
            }
            Some(Command::Detach) | None => {
                let _ = send.send(&AttachInput::Detach).await;
                send.finish();
                let stopped = send.stream().stopped();
                let _ = tokio::time::timeout(Duration::from_millis(500), stopped).await;
                return Some(LinkEnd::Done(End::Detached));
            }
        };
        let sent = send.send(&frame).await;
        sent.err().and_then(lost_unless_stopped)
    }

    /// Does what a [`PathWatch`] tick asks for.
    async fn on_tick(
        &mut self,
        action: PathAction,
        now: Instant,
        connection: &quinn::Connection,
        send: &mut FramedSend,
    ) -> Result<(), SendError> {
        if action.received {
            self.last_contact = now;
            self.set_link_state(LinkState::Up);
        }
        if action.rebind {
            self.rebind();
        }
        if let Some(secs) = action.silent_secs {
            let peer = connection.remote_address();
            self.set_link_state(LinkState::Silent { secs, peer });
        }
        if action.probe {
            send.send(&AttachInput::Probe).await?;
        }
        Ok(())
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
            });
            match self.try_reattach(lost_at, backoff).await? {
                Some(link) => {
                    // `run_link` sends what is still unacknowledged.
                    lock(&self.resync).reattached(link.input_seq, link.input_reset);
                    self.set_link_state(LinkState::Up);
                    return Ok(link);
                }
                None => backoff = (backoff * 2).min(Duration::from_secs(1)),
            }
        }
    }

    /// One attempt to dial and re-attach, then the pause after a failure; meanwhile commands
    /// are taken and the status line counts on. None when the attempt failed.
    async fn try_reattach(
        &mut self,
        lost_at: Instant,
        backoff: Duration,
    ) -> Result<Option<Link>, End> {
        let attempt = self.attempt();
        tokio::pin!(attempt);
        let mut status = tokio::time::interval(Duration::from_secs(1));
        let mut retry_at: Option<tokio::time::Instant> = None;
        loop {
            let waiting = retry_at.is_some();
            let pause_over = retry_at.unwrap_or_else(tokio::time::Instant::now);
            tokio::select! {
                result = &mut attempt, if !waiting => match result {
                    Ok(link) => return Ok(Some(link)),
                    Err(AttachFailure::Final(end)) => return Err(end),
                    Err(failure) => {
                        // A timed-out attempt has already waited: retry at once.
                        let pause = match failure {
                            AttachFailure::NoAnswer => Duration::ZERO,
                            _ => backoff,
                        };
                        tracing::debug!("reconnect failed: {}", failure.into_reason());
                        retry_at = Some(tokio::time::Instant::now() + pause);
                    }
                },
                _ = tokio::time::sleep_until(pause_over), if waiting => return Ok(None),
                command = self.commands.recv() => self.take_command_while_down(command)?,
                _ = status.tick() => {
                    let secs = lost_at.elapsed().as_secs();
                    self.set_link_state(LinkState::Reconnecting { secs });
                }
            }
        }
    }

    /// While there is no link, keystrokes wait in the resync buffer and sizes are kept for
    /// the next attach; a detach ends the attachment.
    fn take_command_while_down(&mut self, command: Option<Command>) -> Result<(), End> {
        match command {
            Some(Command::Input(bytes)) if self.spec.mode == AttachMode::Interactive => {
                lock(&self.resync).input(&bytes);
            }
            Some(Command::Resize(size)) => self.spec.size = size,
            Some(Command::Detach) | None => return Err(End::Detached),
            _ => {}
        }
        Ok(())
    }

    /// The request that resumes this attachment from the first offset not shown.
    fn resume_request(&self) -> AttachRequest {
        AttachRequest {
            session: self.spec.session,
            mode: self.spec.mode,
            takeover: false,
            resume_from: Some(lock(&self.resync).resume_from()),
            scrollback_bytes: 0,
            size: self.spec.size,
            input_stream: self.input_stream,
        }
    }

    /// Dials the node and re-attaches, resuming from the first offset not shown; an attempt
    /// whose packets were lost is abandoned quickly (after six round trips, twelve through a
    /// meeting node), so that the first attempt after the network returns starts within about
    /// a second.
    fn attempt(&self) -> impl Future<Output = Result<Link, AttachFailure>> + 'static {
        let request = self.resume_request();
        let dialer = self.dialer.clone();
        let target = self.target.clone();
        // A relayed dial takes about five round trips (the meeting node's handshake, hello and
        // relay, then the node's own handshake and hello through it) instead of two.
        let trips = if self.target.via.is_some() { 12 } else { 6 };
        let timeout = (self.rtt * trips).max(Duration::from_secs(1));
        async move {
            let attempt = async {
                let mut client = dialer.connect(&target, None).await.map_err(dial_failure)?;
                super::ask_to_punch(&mut client).await;
                let mut link = open_link(client.connection.clone(), &target.name, request).await?;
                link.punch_to = client.punch_to;
                Ok(link)
            };
            tokio::time::timeout(timeout, attempt)
                .await
                .unwrap_or(Err(AttachFailure::NoAnswer))
        }
    }
}

/// How the attachment ended on the old link while it was moving to the direct one (another
/// client took over, the session exited): that end stands, not the move's outcome.
async fn ended_meanwhile(downlink: &mut JoinHandle<LinkEnd>) -> Option<LinkEnd> {
    if !downlink.is_finished() {
        return None;
    }
    match downlink.await {
        Ok(LinkEnd::Done(end)) => Some(LinkEnd::Done(end)),
        _ => None,
    }
}

/// The direct connection, once the background dial made one; forever pending otherwise.
async fn wait_direct(direct: &mut Option<JoinHandle<Option<NodeClient>>>) -> Option<NodeClient> {
    let Some(dial) = direct.as_mut() else {
        return std::future::pending().await;
    };
    let made = dial.await.ok().flatten();
    *direct = None;
    made
}

/// Whether a failed dial is worth retrying: a changed key or a refusal is final.
fn dial_failure(error: ClientError) -> AttachFailure {
    match error {
        ClientError::Offline { .. } => AttachFailure::Retry("offline".into()),
        e @ (ClientError::KeyChanged { .. }
        | ClientError::Refused(_)
        | ClientError::VersionMismatch(_)) => AttachFailure::Final(End::Gone(e.to_string())),
        e => AttachFailure::Retry(e.to_string()),
    }
}

/// Whether a send failed because the node stopped reading this stream (it ended the
/// attachment; the reason is on its way down), rather than because the link failed.
fn stopped_reading(error: &SendError) -> bool {
    matches!(error, SendError::Stream(quinn::WriteError::Stopped(_)))
}

/// What a failed send means for the link: lost, unless the node only stopped reading (the
/// keystrokes stay unacknowledged in the resync buffer; the output stream says how this ends).
fn lost_unless_stopped(error: SendError) -> Option<LinkEnd> {
    (!stopped_reading(&error)).then(|| LinkEnd::Lost(error.to_string()))
}

/// Tells the node how far the terminal has shown output, when there is something to tell.
async fn report_shown(offset: Option<u64>, send: &mut FramedSend) -> Result<(), SendError> {
    match offset {
        Some(offset) => send.send(&AttachInput::Shown { offset }).await,
        None => Ok(()),
    }
}

/// Sleeps until `due` (forever when None).
async fn sleep_until_due(due: Option<Instant>) {
    match due {
        Some(due) => tokio::time::sleep_until(tokio::time::Instant::from_std(due)).await,
        None => std::future::pending().await,
    }
}
