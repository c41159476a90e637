//! The interactive terminal: raw mode on the local terminal, keystrokes up, output down.
//!
//! - The **uplink** task reads stdin (on a dedicated thread) and window-size changes and sends
//!   them at once, numbered with input sequence numbers. It never waits for output, so Ctrl+C
//!   reaches the session while output floods.
//! - The **downlink** task writes output frames to stdout and remembers the highest offset
//!   shown; a gap marker says how much output was skipped.
//! - Ctrl+D (configurable) detaches; `Ctrl+]` then Ctrl+D sends a literal Ctrl+D, and `Ctrl+]`
//!   twice sends a literal `Ctrl+]`.
//! - Raw mode is restored on every exit path: normal return, error, and panic.
//! - **Roaming**: QUIC migration carries the link across address changes; the client rebinds
//!   its socket when the path goes silent or the wall clock jumps (a sleep). When the connection
//!   is gone it reconnects with backoff and resumes from the first offset not yet shown;
//!   keystrokes not yet acknowledged are sent again with their sequence numbers, and the node
//!   applies each once. A status line says what is happening while the link is down.

use crate::context::Context;
use anyhow::{anyhow, bail};
use cmdop_node::client::{describe_close, ClientError, Dialer, NodeClient, Target};
use cmdop_node::proto::{
    close_code, AttachInput, AttachMode, AttachOutput, AttachRequest, ErrorKind, SessionInfo,
    WinSize,
};
use cmdop_node::units::format_bytes;
use cmdop_node::wire::{FramedRecv, FramedSend, RecvError};
use std::collections::VecDeque;
use std::io::{Read, Write};
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime};
use tokio::sync::mpsc;
use uuid::Uuid;

/// How to attach.
#[derive(Debug, Clone, Copy)]
pub struct AttachOptions {
    /// Interactive or read-only.
    pub mode: AttachMode,
    /// Force-detach the current holder.
    pub takeover: bool,
}

/// The byte that prefixes a literal detach key.
const ESCAPE_PREFIX: u8 = 0x1d;

/// The local terminal's size, if stdin or stdout is a terminal.
pub fn window_size() -> Option<WinSize> {
    for fd in [libc::STDIN_FILENO, libc::STDOUT_FILENO] {
        let mut size: libc::winsize = unsafe { std::mem::zeroed() };
        // SAFETY: TIOCGWINSZ writes a winsize into the struct we own.
        let rc = unsafe { libc::ioctl(fd, libc::TIOCGWINSZ, &mut size) };
        if rc == 0 && size.ws_row > 0 && size.ws_col > 0 {
            return Some(WinSize {
                rows: size.ws_row,
                cols: size.ws_col,
            });
        }
    }
    None
}

static ORIGINAL_TERMIOS: OnceLock<libc::termios> = OnceLock::new();

fn restore_terminal() {
    if let Some(original) = ORIGINAL_TERMIOS.get() {
        // SAFETY: tcsetattr reads the termios we saved from this same descriptor.
        unsafe {
            libc::tcsetattr(libc::STDIN_FILENO, libc::TCSANOW, original);
        }
    }
}

/// Raw mode for as long as it lives.
struct RawMode;

impl RawMode {
    fn enter() -> Option<RawMode> {
        // SAFETY: isatty/tcgetattr/tcsetattr on stdin with structs we own.
        unsafe {
            if libc::isatty(libc::STDIN_FILENO) != 1 {
                return None;
            }
            let mut termios: libc::termios = std::mem::zeroed();
            if libc::tcgetattr(libc::STDIN_FILENO, &mut termios) != 0 {
                return None;
            }
            let _ = ORIGINAL_TERMIOS.set(termios);
            let previous = std::panic::take_hook();
            std::panic::set_hook(Box::new(move |info| {
                restore_terminal();
                previous(info);
            }));
            let mut raw = termios;
            libc::cfmakeraw(&mut raw);
            libc::tcsetattr(libc::STDIN_FILENO, libc::TCSANOW, &raw);
        }
        Some(RawMode)
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        restore_terminal();
    }
}

/// Parses `ctrl-d`-style key names.
pub fn parse_key(name: &str) -> anyhow::Result<u8> {
    let lower = name.trim().to_ascii_lowercase();
    let letter = lower
        .strip_prefix("ctrl-")
        .or_else(|| lower.strip_prefix("ctrl+"))
        .or_else(|| lower.strip_prefix('^'))
        .filter(|rest| rest.len() == 1)
        .and_then(|rest| rest.bytes().next())
        .filter(|b| b.is_ascii_lowercase() || *b == b'\\');
    match letter {
        Some(b) => Ok(b & 0x1f),
        None => bail!("client.detach_key '{name}' in config.yaml is not a key like ctrl-d (ctrl-a to ctrl-z or ctrl-\\)"),
    }
}

/// What ended an attachment.
enum Outcome {
    Detached,
    Exited(i32),
    Kicked(String),
    /// The session no longer exists (node restarted or shut down).
    Gone(String),
}

/// What ended one link (one QUIC connection's attach stream).
enum LinkEnd {
    /// The attachment is over for good.
    Done(Outcome),
    /// The connection was lost; reconnect and resume.
    Lost(String),
}

/// What a typed chunk means.
#[derive(Debug, PartialEq, Eq)]
struct Typed {
    /// Bytes to send.
    send: Vec<u8>,
    /// The detach key was pressed (after `send`).
    detach: bool,
}

/// Filters typed bytes for the detach key and the literal prefix; `escaped` carries a pending
/// prefix across chunks.
fn scan_typed(bytes: &[u8], detach_key: u8, escaped: &mut bool) -> Typed {
    let mut send = Vec::with_capacity(bytes.len());
    for &b in bytes {
        if *escaped {
            *escaped = false;
            if b != detach_key && b != ESCAPE_PREFIX {
                send.push(ESCAPE_PREFIX);
            }
            send.push(b);
        } else if b == ESCAPE_PREFIX {
            *escaped = true;
        } else if b == detach_key {
            return Typed { send, detach: true };
        } else {
            send.push(b);
        }
    }
    Typed {
        send,
        detach: false,
    }
}

/// Typed input not yet acknowledged by the node, kept to be sent again after a reconnect.
#[derive(Debug, Default)]
struct PendingInput {
    /// Sequence number of `bytes[0]`.
    base: u64,
    bytes: VecDeque<u8>,
}

impl PendingInput {
    /// Records typed bytes; returns their sequence number.
    fn push(&mut self, data: &[u8]) -> u64 {
        let seq = self.base + self.bytes.len() as u64;
        self.bytes.extend(data);
        seq
    }

    /// Forgets everything below `acked`.
    fn acknowledge(&mut self, acked: u64) {
        let drop = acked.saturating_sub(self.base).min(self.bytes.len() as u64) as usize;
        self.bytes.drain(..drop);
        self.base = self.base.max(acked.min(self.base + drop as u64));
    }

    /// Aligns with the node after a (re)attach: everything below `next` was applied.
    fn align(&mut self, next: u64) {
        if next < self.base {
            // A node that forgot input (new session lineage): start numbering where it is.
            self.base = next;
            return;
        }
        self.acknowledge(next);
        self.base = next;
    }

    /// Everything not yet acknowledged, with its first sequence number.
    fn unacked(&self) -> Option<(u64, Vec<u8>)> {
        (!self.bytes.is_empty()).then(|| (self.base, self.bytes.iter().copied().collect()))
    }
}

/// State the output task shares with the rest.
struct Shared {
    /// One past the last session byte shown.
    shown: AtomicU64,
    /// Input acknowledged by the node (next expected sequence number).
    acked: AtomicU64,
    /// Copy of every session byte shown, when CMDOP_TRANSCRIPT names a file (for tests).
    transcript: Option<Mutex<std::fs::File>>,
}

/// One attach stream on one connection.
struct Link {
    connection: quinn::Connection,
    send: FramedSend,
    recv: FramedRecv,
    /// The node's next expected input sequence number.
    input_seq: u64,
    /// Where output starts.
    offset: u64,
    info: SessionInfo,
}

/// Why a (re)attach failed.
enum AttachFailure {
    /// The node refused for good (session gone, held by another client, not authorized).
    Final(Outcome),
    /// Try again later.
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
    let mut recv = FramedRecv::new(recv, cmdop_node::frame::DEFAULT_MAX_FRAME);
    send.send(&request)
        .await
        .map_err(|e| AttachFailure::Retry(e.to_string()))?;
    match recv.recv::<AttachOutput>().await {
        Ok(Some(AttachOutput::Attached { session, offset, input_seq })) => {
            Ok(Link { connection, send, recv, input_seq, offset, info: session })
        }
        Ok(Some(AttachOutput::Error(e))) if e.kind == ErrorKind::NotFound && request.resume_from.is_some() => {
            Err(AttachFailure::Final(Outcome::Gone(format!(
                "session {} is gone from {name}: the node restarted, and the session's processes ended with it",
                request.session
            ))))
        }
        Ok(Some(AttachOutput::Error(e))) => Err(AttachFailure::Final(Outcome::Gone(e.message))),
        Ok(Some(other)) => Err(AttachFailure::Retry(format!("unexpected first frame from the node: {other:?}"))),
        Ok(None) => Err(AttachFailure::Retry("the node closed the attachment".into())),
        Err(e) => Err(AttachFailure::Retry(recv_failure(name, &connection, e))),
    }
}

/// Attaches to `session` over `client`'s connection and runs the terminal until detach, exit
/// or takeover, reconnecting as often as the network needs.
pub async fn run(
    context: &Context,
    client: NodeClient,
    session: SessionInfo,
    options: AttachOptions,
) -> anyhow::Result<ExitCode> {
    let detach_key = parse_key(&context.config.client.detach_key)?;
    let target = client.target.clone();
    let dialer = context.dialer()?;
    let request = AttachRequest {
        session: session.id,
        mode: options.mode,
        takeover: options.takeover,
        resume_from: None,
        scrollback_bytes: context.config.client.attach_scrollback.0,
        size: window_size().unwrap_or_default(),
    };
    let mut link = match open_link(client.connection.clone(), &target.name, request).await {
        Ok(link) => link,
        Err(AttachFailure::Final(Outcome::Gone(message))) | Err(AttachFailure::Retry(message)) => {
            bail!("{message}")
        }
        Err(AttachFailure::Final(_)) => bail!("the attachment ended at once"),
    };
    let info = link.info.clone();
    let label = info
        .name
        .clone()
        .unwrap_or_else(|| info.id.to_string()[..8].to_string());
    let short = info.id.to_string()[..8].to_string();
    let reattach_arg = info.name.clone().unwrap_or_else(|| info.id.to_string());

    let transcript = match std::env::var_os("CMDOP_TRANSCRIPT") {
        Some(path) => Some(Mutex::new(std::fs::File::create(path)?)),
        None => None,
    };
    let shared = Arc::new(Shared {
        shown: AtomicU64::new(link.offset),
        acked: AtomicU64::new(link.input_seq),
        transcript,
    });
    let raw = RawMode::enter();
    let (stdin_tx, stdin_rx) = mpsc::channel::<Vec<u8>>(64);
    std::thread::Builder::new()
        .name("stdin".into())
        .spawn(move || {
            let mut stdin = std::io::stdin().lock();
            let mut buf = [0u8; 4096];
            loop {
                match stdin.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        if stdin_tx.blocking_send(buf[..n].to_vec()).is_err() {
                            break;
                        }
                    }
                }
            }
        })?;
    let mut terminal = Terminal {
        stdin: stdin_rx,
        escaped: false,
        detach_key,
        mode: options.mode,
        pending: PendingInput {
            base: link.input_seq,
            bytes: VecDeque::new(),
        },
        shared: shared.clone(),
        status_shown: None,
        winch: tokio::signal::unix::signal(tokio::signal::unix::SignalKind::window_change())?,
    };
    let outcome = loop {
        match terminal.run_link(link, &dialer).await {
            LinkEnd::Done(outcome) => break outcome,
            LinkEnd::Lost(reason) => {
                tracing_note(&reason);
                match terminal.reconnect(&dialer, &target, session.id).await {
                    Ok(next) => link = next,
                    Err(outcome) => break outcome,
                }
            }
        }
    };
    terminal.clear_status();
    drop(raw);
    match outcome {
        Outcome::Detached => {
            eprintln!("\r\ndetached from session {label} ({short}); reattach with: cmdop connect {} --session {reattach_arg}", target.name);
            Ok(ExitCode::SUCCESS)
        }
        Outcome::Exited(code) => {
            eprintln!("\r\nsession {label} ({short}) ended: the shell exited with code {code}");
            Ok(ExitCode::from(
                u8::try_from(code.clamp(0, 255)).unwrap_or(1),
            ))
        }
        Outcome::Kicked(reason) => {
            eprintln!("\r\ndetached from session {label} ({short}): {reason}");
            Ok(ExitCode::SUCCESS)
        }
        Outcome::Gone(message) => Err(anyhow!("{message}")),
    }
}

/// Reasons a link dropped are only interesting when debugging.
fn tracing_note(reason: &str) {
    if std::env::var_os("CMDOP_DEBUG").is_some() {
        eprintln!("\r\ncmdop: link lost: {reason}\r");
    }
}

fn recv_failure(name: &str, connection: &quinn::Connection, error: RecvError) -> String {
    match connection.close_reason() {
        Some(close) => describe_close(name, close).to_string(),
        None => error.to_string(),
    }
}

/// How long the path may stay silent (no datagram received, keep-alives included) before the
/// client suspects a network change and moves to a fresh socket.
const SILENCE_BEFORE_REBIND: Duration = Duration::from_millis(2500);

/// How far the wall clock may run ahead of the monotonic clock before we call it a sleep.
const CLOCK_JUMP: Duration = Duration::from_secs(3);

/// The local side of an interactive terminal, across links.
struct Terminal {
    stdin: mpsc::Receiver<Vec<u8>>,
    escaped: bool,
    detach_key: u8,
    mode: AttachMode,
    pending: PendingInput,
    shared: Arc<Shared>,
    status_shown: Option<String>,
    winch: tokio::signal::unix::Signal,
}

/// What a chunk of stdin asks for.
enum StdinEvent {
    /// Input to send (already recorded in `pending`), with its sequence number.
    Input(u64, Vec<u8>),
    /// Nothing to do.
    Nothing,
}

impl Terminal {
    fn handle_stdin(&mut self, bytes: Option<Vec<u8>>) -> (StdinEvent, bool) {
        let Some(bytes) = bytes else {
            // stdin closed: leave the session running.
            return (StdinEvent::Nothing, true);
        };
        let typed = scan_typed(&bytes, self.detach_key, &mut self.escaped);
        let event = if !typed.send.is_empty() && self.mode == AttachMode::Interactive {
            let seq = self.pending.push(&typed.send);
            StdinEvent::Input(seq, typed.send)
        } else {
            StdinEvent::Nothing
        };
        (event, typed.detach)
    }

    /// Shows a one-line status on the top row (reverse video), like mosh.
    fn show_status(&mut self, text: &str) {
        if self.status_shown.as_deref() == Some(text) {
            return;
        }
        let mut out = std::io::stdout().lock();
        let _ = write!(out, "\x1b7\x1b[1;1H\x1b[7m {text} \x1b[0m\x1b[K\x1b8");
        let _ = out.flush();
        self.status_shown = Some(text.to_string());
    }

    fn clear_status(&mut self) {
        if self.status_shown.take().is_some() {
            let mut out = std::io::stdout().lock();
            let _ = write!(out, "\x1b7\x1b[1;1H\x1b[2K\x1b8");
            let _ = out.flush();
        }
    }

    /// Runs one link until it ends.
    async fn run_link(&mut self, link: Link, dialer: &Dialer) -> LinkEnd {
        let Link {
            connection,
            mut send,
            recv,
            input_seq,
            offset,
            ..
        } = link;
        self.pending.align(input_seq);
        self.shared.acked.store(input_seq, Ordering::Release);
        let _ = offset;
        if let Some((seq, data)) = self.pending.unacked() {
            if let Err(e) = send.send(&AttachInput::Input { seq, data }).await {
                return LinkEnd::Lost(e.to_string());
            }
        }
        let mut downlink = tokio::spawn(downlink(recv, connection.clone(), self.shared.clone()));
        let mut tick = tokio::time::interval(Duration::from_millis(250));
        let mut last_rx = (connection.stats().udp_rx.datagrams, Instant::now());
        let mut clock = (SystemTime::now(), Instant::now());
        let mut rebound_at: Option<Instant> = None;
        let end = loop {
            tokio::select! {
                end = &mut downlink => {
                    break end.unwrap_or_else(|e| LinkEnd::Lost(format!("output task failed: {e}")));
                }
                bytes = self.stdin.recv() => {
                    let (event, detach) = self.handle_stdin(bytes);
                    if let StdinEvent::Input(seq, data) = event {
                        if let Err(e) = send.send(&AttachInput::Input { seq, data }).await {
                            break LinkEnd::Lost(e.to_string());
                        }
                    }
                    if detach {
                        let _ = send.send(&AttachInput::Detach).await;
                        send.finish();
                        let _ = tokio::time::timeout(Duration::from_millis(500), send.stream().stopped()).await;
                        downlink.abort();
                        break LinkEnd::Done(Outcome::Detached);
                    }
                }
                _ = self.winch.recv() => {
                    if self.mode == AttachMode::Interactive {
                        if let Some(size) = window_size() {
                            if let Err(e) = send.send(&AttachInput::Resize(size)).await {
                                break LinkEnd::Lost(e.to_string());
                            }
                        }
                    }
                }
                _ = tick.tick() => {
                    self.pending.acknowledge(self.shared.acked.load(Ordering::Acquire));
                    let now = Instant::now();
                    let rx = connection.stats().udp_rx.datagrams;
                    if rx != last_rx.0 {
                        last_rx = (rx, now);
                        self.clear_status();
                    } else if now - last_rx.1 > SILENCE_BEFORE_REBIND {
                        let silent = (now - last_rx.1).as_secs();
                        self.show_status(&format!(
                            "cmdop: no contact with {} for {silent} s, waiting for the network (Ctrl+D detaches)",
                            connection.remote_address()
                        ));
                        if rebound_at.is_none_or(|at| now - at > SILENCE_BEFORE_REBIND) {
                            rebind(dialer);
                            rebound_at = Some(now);
                        }
                    }
                    // A wall clock far ahead of the monotonic one means the machine slept:
                    // the network may be another one now.
                    let wall = SystemTime::now().duration_since(clock.0).unwrap_or_default();
                    let mono = now - clock.1;
                    if wall > mono + CLOCK_JUMP {
                        rebind(dialer);
                        rebound_at = Some(now);
                    }
                    clock = (SystemTime::now(), now);
                }
            }
        };
        downlink.abort();
        end
    }

    /// Reconnects and re-attaches, showing a status line, until it works, the session turns
    /// out to be gone, or the user detaches.
    async fn reconnect(
        &mut self,
        dialer: &Dialer,
        target: &Target,
        session: Uuid,
    ) -> Result<Link, Outcome> {
        let lost_at = Instant::now();
        let mut backoff = Duration::from_millis(50);
        rebind(dialer);
        loop {
            let request = AttachRequest {
                session,
                mode: self.mode,
                takeover: false,
                resume_from: Some(self.shared.shown.load(Ordering::Acquire)),
                scrollback_bytes: 0,
                size: window_size().unwrap_or_default(),
            };
            let attempt = async {
                let client = match dialer.connect(target, None).await {
                    Ok(client) => client,
                    Err(ClientError::Offline { .. }) => {
                        return Err(AttachFailure::Retry("offline".into()))
                    }
                    Err(e @ (ClientError::KeyChanged { .. } | ClientError::Refused(_))) => {
                        return Err(AttachFailure::Final(Outcome::Gone(e.to_string())))
                    }
                    Err(e) => return Err(AttachFailure::Retry(e.to_string())),
                };
                open_link(client.connection.clone(), &target.name, request).await
            };
            tokio::pin!(attempt);
            let mut status = tokio::time::interval(Duration::from_secs(1));
            let result = loop {
                tokio::select! {
                    result = &mut attempt => break result,
                    bytes = self.stdin.recv() => {
                        // Typed input waits in `pending` and goes out after the reconnect.
                        let (_, detach) = self.handle_stdin(bytes);
                        if detach {
                            return Err(Outcome::Detached);
                        }
                    }
                    _ = status.tick() => {
                        let since = lost_at.elapsed().as_secs() + 1;
                        self.show_status(&format!(
                            "cmdop: reconnecting to {}, last contact {since} s ago (Ctrl+D detaches)",
                            target.name
                        ));
                    }
                }
            };
            match result {
                Ok(link) => {
                    self.clear_status();
                    return Ok(link);
                }
                Err(AttachFailure::Final(outcome)) => return Err(outcome),
                Err(AttachFailure::Retry(reason)) => {
                    tracing_note(&reason);
                    let wait = tokio::time::sleep(backoff);
                    tokio::pin!(wait);
                    loop {
                        tokio::select! {
                            _ = &mut wait => break,
                            bytes = self.stdin.recv() => {
                                let (_, detach) = self.handle_stdin(bytes);
                                if detach {
                                    return Err(Outcome::Detached);
                                }
                            }
                        }
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(2));
                }
            }
        }
    }
}

/// Moves the client's endpoint to a fresh UDP socket; QUIC migrates the connection.
fn rebind(dialer: &Dialer) {
    match std::net::UdpSocket::bind(("0.0.0.0", 0)) {
        Ok(socket) => {
            if let Err(e) = dialer.endpoint().rebind(socket) {
                tracing_note(&format!("rebind failed: {e}"));
            }
        }
        Err(e) => tracing_note(&format!("cannot open a new socket: {e}")),
    }
}

async fn downlink(
    mut recv: FramedRecv,
    connection: quinn::Connection,
    shared: Arc<Shared>,
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
                        LinkEnd::Done(Outcome::Gone(
                            "the node shut down, and the session's processes ended with it".into(),
                        ))
                    }
                    _ => LinkEnd::Lost(e.to_string()),
                }
            }
        };
        match frame {
            AttachOutput::Output { offset, data } => {
                // Never show a byte twice: skip anything below what was already shown.
                let shown = shared.shown.load(Ordering::Acquire);
                let skip = usize::try_from(shown.saturating_sub(offset))
                    .unwrap_or(usize::MAX)
                    .min(data.len());
                let fresh = &data[skip..];
                if fresh.is_empty() {
                    continue;
                }
                {
                    let mut out = std::io::stdout().lock();
                    if out.write_all(fresh).and_then(|_| out.flush()).is_err() {
                        return LinkEnd::Done(Outcome::Gone("cannot write to the terminal".into()));
                    }
                }
                if let Some(file) = &shared.transcript {
                    if let Ok(mut file) = file.lock() {
                        let _ = file.write_all(fresh);
                    }
                }
                shared
                    .shown
                    .store(offset.max(shown) + fresh.len() as u64, Ordering::Release);
            }
            AttachOutput::Gap { lost } => {
                let mut out = std::io::stdout().lock();
                let _ = write!(
                    out,
                    "\r\n[cmdop: {} of output skipped]\r\n",
                    format_bytes(lost)
                );
                let _ = out.flush();
            }
            AttachOutput::InputAck { seq } => {
                shared.acked.fetch_max(seq, Ordering::AcqRel);
            }
            AttachOutput::Exited { code } => return LinkEnd::Done(Outcome::Exited(code)),
            AttachOutput::Detached { reason } => return LinkEnd::Done(Outcome::Kicked(reason)),
            AttachOutput::Error(e) => return LinkEnd::Done(Outcome::Gone(e.message)),
            AttachOutput::Attached { .. } => {}
        };
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn detach_key_and_literal_prefix() {
        let mut escaped = false;
        assert_eq!(
            scan_typed(b"ls\r", 4, &mut escaped),
            Typed {
                send: b"ls\r".to_vec(),
                detach: false
            }
        );
        assert_eq!(
            scan_typed(b"ab\x04cd", 4, &mut escaped),
            Typed {
                send: b"ab".to_vec(),
                detach: true
            }
        );
        assert_eq!(
            scan_typed(b"\x1d\x04x", 4, &mut escaped),
            Typed {
                send: b"\x04x".to_vec(),
                detach: false
            }
        );
        // A prefix split across reads still works.
        assert_eq!(
            scan_typed(b"\x1d", 4, &mut escaped),
            Typed {
                send: vec![],
                detach: false
            }
        );
        assert_eq!(
            scan_typed(b"\x04", 4, &mut escaped),
            Typed {
                send: vec![4],
                detach: false
            }
        );
        assert_eq!(
            scan_typed(b"\x1d\x1d", 4, &mut escaped),
            Typed {
                send: vec![0x1d],
                detach: false
            }
        );
        assert_eq!(
            scan_typed(b"\x1dq", 4, &mut escaped),
            Typed {
                send: vec![0x1d, b'q'],
                detach: false
            }
        );
    }

    #[test]
    fn pending_input_is_resent_from_the_first_unacknowledged_byte() {
        let mut pending = PendingInput::default();
        pending.align(10);
        assert_eq!(pending.push(b"abc"), 10);
        assert_eq!(pending.push(b"de"), 13);
        pending.acknowledge(12);
        assert_eq!(pending.unacked(), Some((12, b"cde".to_vec())));
        // After a reconnect the node says it applied through 14: only "e" goes again.
        pending.align(14);
        assert_eq!(pending.unacked(), Some((14, b"e".to_vec())));
        pending.acknowledge(15);
        assert_eq!(pending.unacked(), None);
        assert_eq!(pending.push(b"f"), 15);
    }

    #[test]
    fn key_names() {
        assert_eq!(parse_key("ctrl-d").unwrap(), 4);
        assert_eq!(parse_key("Ctrl+A").unwrap(), 1);
        assert_eq!(parse_key("^q").unwrap(), 17);
        assert!(parse_key("meta-x").is_err());
    }
}
