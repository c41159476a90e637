//! Live attachments: one QUIC stream per terminal attached to a session.
//!
//! Per attachment:
//! - an **output pump** keeps this attachment's own cursor (an absolute ringbuffer offset) and
//!   sends what the PTY printed from there, waking on the session's change counter. Nothing is
//!   queued per client: a slow client only falls behind in the ringbuffer, and if it falls off
//!   the end it gets a [`AttachOutput::Gap`] and continues from the oldest byte held;
//! - an **input reader** applies keystrokes to the PTY as soon as they arrive, independently of
//!   the output pump, so Ctrl+C is not stuck behind output flow control. Input carries sequence
//!   numbers; anything already applied is dropped, and the pump acknowledges what was applied.
//!
//! One interactive client (the *holder*) may type and resize; read-only viewers only watch.

use crate::proto::{
    AttachInput, AttachMode, AttachOutput, AttachRequest, ErrorKind, ErrorReply, WinSize,
};
use crate::server::{close_for, Node};
use crate::session::{now_ms, Session};
use crate::wire::{FramedRecv, FramedSend};
use cmdop_certs::Fingerprint;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{oneshot, Notify};
use tokio_util::sync::CancellationToken;

/// Bytes of output per frame.
const OUTPUT_CHUNK: usize = 64 * 1024;

/// How long after the shell's exit to wait for the rest of its output.
const EXIT_GRACE: Duration = Duration::from_millis(500);

/// The client holding a session's input.
#[derive(Debug)]
pub struct Holder {
    /// Identifies this attachment (to release only our own hold).
    pub attachment: u64,
    /// The client's key.
    pub fingerprint: Fingerprint,
    /// The client's address.
    pub addr: SocketAddr,
    /// Since when (Unix ms).
    pub since_ms: u64,
    /// The holder's keystroke stream.
    pub input_stream: u64,
    /// Tells the holder's attachment to end, with a reason for its user.
    pub kick: Option<oneshot::Sender<String>>,
}

static NEXT_ATTACHMENT: AtomicU64 = AtomicU64::new(1);

/// Accepts attach streams on an admitted connection until it closes.
pub async fn accept_attachments(
    node: Arc<Node>,
    connection: quinn::Connection,
    fingerprint: Fingerprint,
    shutdown: CancellationToken,
) {
    loop {
        let streams = tokio::select! {
            biased;
            _ = shutdown.cancelled() => return,
            streams = connection.accept_bi() => streams,
        };
        let Ok((send, recv)) = streams else { return };
        let node = node.clone();
        let connection = connection.clone();
        let fingerprint = fingerprint.clone();
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            attach(node, connection, fingerprint, send, recv, shutdown).await;
        });
    }
}

fn error(kind: ErrorKind, message: String) -> AttachOutput {
    AttachOutput::Error(ErrorReply { kind, message })
}

/// Where a fresh attachment starts: about `scrollback` bytes back, at a line start when one is
/// near, so the replay does not begin in the middle of a line or an escape sequence.
fn replay_start(session: &Session, scrollback: u64) -> u64 {
    let core = session.lock();
    let ring = &core.ring;
    let from = ring.end().saturating_sub(scrollback).max(ring.start());
    if from == ring.start() {
        return from;
    }
    let chunk = ring
        .read_from(from, 4096)
        .map(|c| c.data)
        .unwrap_or_default();
    match chunk.iter().position(|&b| b == b'\n') {
        Some(at) => from + at as u64 + 1,
        None => from,
    }
}

async fn attach(
    node: Arc<Node>,
    connection: quinn::Connection,
    fingerprint: Fingerprint,
    send: quinn::SendStream,
    recv: quinn::RecvStream,
    shutdown: CancellationToken,
) {
    let mut send = FramedSend::new(send);
    let mut recv = FramedRecv::new(recv, node.max_frame);
    let request =
        match tokio::time::timeout(Duration::from_secs(10), recv.recv::<AttachRequest>()).await {
            Ok(Ok(Some(request))) => request,
            Ok(Err(e)) => return close_for(&connection, &e),
            _ => return,
        };
    let session = match node.registry.get(request.session) {
        Ok(session) => session,
        Err(e) => {
            let _ = send.send(&AttachOutput::Error(e)).await;
            send.finish();
            return;
        }
    };
    let attachment = NEXT_ATTACHMENT.fetch_add(1, Ordering::Relaxed);
    let addr = connection.remote_address();
    let (kick_tx, kick_rx) = oneshot::channel::<String>();
    let refusal = {
        let mut core = session.lock();
        let refusal = if core.live_attachments >= node.registry.config().max_attachments {
            Some(error(
                ErrorKind::Limit,
                format!(
                    "session {} already has {} attachments (max_attachments in config.yaml); detach one first",
                    session.id, core.live_attachments
                ),
            ))
        } else if request.mode == AttachMode::Interactive {
            let taken = match core.holder.as_mut() {
                // A client resuming its own attachment after a network change replaces its
                // stale hold silently.
                Some(holder)
                    if request.takeover
                        || (request.resume_from.is_some()
                            && holder.fingerprint == fingerprint
                            && holder.input_stream == request.input_stream) => {
                    if let Some(kick) = holder.kick.take() {
                        let reason = if holder.fingerprint == fingerprint && !request.takeover {
                            "replaced by a newer connection of this client".to_string()
                        } else {
                            format!("taken over by client {fingerprint} from {addr}")
                        };
                        let _ = kick.send(reason);
                    }
                    None
                }
                Some(holder) => Some(error(
                    ErrorKind::BadRequest,
                    format!(
                        "session {} is held by client {} from {} since {}; use --takeover to take it, or --read-only to watch",
                        session.id,
                        holder.fingerprint,
                        holder.addr,
                        crate::units::rfc3339_seconds(holder.since_ms)
                    ),
                )),
                None => None,
            };
            if taken.is_none() {
                core.holder = Some(Holder {
                    attachment,
                    fingerprint: fingerprint.clone(),
                    addr,
                    since_ms: now_ms(),
                    input_stream: request.input_stream,
                    kick: Some(kick_tx),
                });
            }
            taken
        } else {
            None
        };
        if refusal.is_none() {
            core.live_attachments += 1;
            core.last_active_ms = now_ms();
        }
        refusal
    };
    if let Some(refusal) = refusal {
        let _ = send.send(&refusal).await;
        send.finish();
        let _ = tokio::time::timeout(Duration::from_secs(1), send.stream().stopped()).await;
        return;
    }
    let guard = AttachmentGuard {
        session: session.clone(),
        attachment,
        node: node.clone(),
    };
    tracing::info!(session = %session.id, %addr, mode = ?request.mode, "attached");

    let start = match request.resume_from {
        Some(offset) => offset.min(session.lock().ring.end()),
        None => replay_start(&session, request.scrollback_bytes),
    };
    let (input_seq, input_reset) = {
        let mut core = session.lock();
        // Sequence numbers count one keystroke stream; a holder from another stream starts
        // its own numbering at the node's counter.
        let reset =
            request.mode == AttachMode::Interactive && core.input_stream != request.input_stream;
        if request.mode == AttachMode::Interactive {
            core.input_stream = request.input_stream;
        }
        (core.next_input_seq, reset)
    };
    if send
        .send(&AttachOutput::Attached {
            session: session.info(),
            offset: start,
            input_seq,
            input_reset,
        })
        .await
        .is_err()
    {
        return;
    }
    if request.mode == AttachMode::Interactive {
        nudge_redraw(&session, request.size);
    }
    session.notify();

    let acked = Arc::new(AtomicU64::new(input_seq));
    let ack_changed = Arc::new(Notify::new());
    let stop = shutdown.child_token();
    let input_task = tokio::spawn(read_input(
        session.clone(),
        attachment,
        recv,
        request.mode,
        acked.clone(),
        ack_changed.clone(),
        stop.clone(),
        connection.clone(),
    ));
    pump_output(
        &session,
        &mut send,
        start,
        acked,
        ack_changed,
        kick_rx,
        stop.clone(),
    )
    .await;
    stop.cancel();
    let _ = input_task.await;
    drop(guard);
    send.finish();
    let _ = tokio::time::timeout(Duration::from_secs(2), send.stream().stopped()).await;
}

/// Releases the hold and the attachment count when an attachment ends, however it ends.
struct AttachmentGuard {
    session: Arc<Session>,
    attachment: u64,
    node: Arc<Node>,
}

impl Drop for AttachmentGuard {
    fn drop(&mut self) {
        {
            let mut core = self.session.lock();
            core.live_attachments = core.live_attachments.saturating_sub(1);
            core.last_active_ms = now_ms();
            if core
                .holder
                .as_ref()
                .is_some_and(|h| h.attachment == self.attachment)
            {
                core.holder = None;
            }
        }
        self.node.registry.touch();
        tracing::info!(session = %self.session.id, "detached");
    }
}

/// Makes full-screen programs repaint for the new client: a size change delivers SIGWINCH; if
/// the size is unchanged, bounce through a different size first.
fn nudge_redraw(session: &Session, size: WinSize) {
    let current = session.lock().size;
    if current == size {
        let bounced = WinSize {
            rows: size.rows,
            cols: size.cols.saturating_add(1),
        };
        session.resize(bounced);
    }
    session.resize(size);
}

async fn pump_output(
    session: &Arc<Session>,
    send: &mut FramedSend,
    mut cursor: u64,
    acked: Arc<AtomicU64>,
    ack_changed: Arc<Notify>,
    mut kick: oneshot::Receiver<String>,
    stop: CancellationToken,
) {
    let mut changes = session.subscribe();
    let mut sent_ack = acked.load(Ordering::Acquire);
    let mut exit_seen: Option<std::time::Instant> = None;
    loop {
        // Checked on every round, not only when idle: under a flood the pump never idles, and a
        // kicked holder must not keep its hold (or its keystrokes) a moment longer.
        if stop.is_cancelled() {
            return;
        }
        if let Ok(reason) = kick.try_recv() {
            let _ = send.send(&AttachOutput::Detached { reason }).await;
            return;
        }
        let ack = acked.load(Ordering::Acquire);
        if ack != sent_ack {
            sent_ack = ack;
            if send
                .send(&AttachOutput::InputAck { seq: ack })
                .await
                .is_err()
            {
                return;
            }
        }
        let (chunk, exit, drained) = {
            let core = session.lock();
            (
                core.ring.read_from(cursor, OUTPUT_CHUNK),
                core.exit_code,
                core.output_closed,
            )
        };
        match chunk {
            Ok(chunk) => {
                if chunk.lost > 0
                    && send
                        .send(&AttachOutput::Gap { lost: chunk.lost })
                        .await
                        .is_err()
                {
                    return;
                }
                if !chunk.data.is_empty() {
                    cursor = chunk.offset + chunk.data.len() as u64;
                    let frame = AttachOutput::Output {
                        offset: chunk.offset,
                        data: chunk.data,
                    };
                    if send.send(&frame).await.is_err() {
                        return;
                    }
                    continue;
                }
            }
            Err(_) => cursor = session.lock().ring.end(),
        }
        if let Some(code) = exit {
            // The shell may exit before the reader has moved its last output into the ring:
            // report the exit once the PTY is drained (or, if a leftover background job keeps
            // the PTY open, shortly after).
            let seen = *exit_seen.get_or_insert_with(std::time::Instant::now);
            if drained || seen.elapsed() >= EXIT_GRACE {
                let _ = send.send(&AttachOutput::Exited { code }).await;
                return;
            }
            let _ = tokio::time::timeout(EXIT_GRACE / 10, changes.changed()).await;
            continue;
        }
        tokio::select! {
            biased;
            reason = &mut kick => {
                let reason = reason.unwrap_or_else(|_| "detached by the node".into());
                let _ = send.send(&AttachOutput::Detached { reason }).await;
                return;
            }
            _ = stop.cancelled() => return,
            changed = changes.changed() => {
                if changed.is_err() {
                    return;
                }
            }
            _ = ack_changed.notified() => {}
        }
        if session.lock().destroyed {
            let _ = send
                .send(&AttachOutput::Detached {
                    reason: "the session was destroyed".into(),
                })
                .await;
            return;
        }
    }
}

#[allow(clippy::too_many_arguments)]
async fn read_input(
    session: Arc<Session>,
    attachment: u64,
    mut recv: FramedRecv,
    mode: AttachMode,
    acked: Arc<AtomicU64>,
    ack_changed: Arc<Notify>,
    stop: CancellationToken,
    connection: quinn::Connection,
) {
    loop {
        let message = tokio::select! {
            biased;
            _ = stop.cancelled() => return,
            message = recv.recv::<AttachInput>() => message,
        };
        let message = match message {
            Ok(Some(message)) => message,
            Ok(None) => break,
            Err(e) => {
                close_for(&connection, &e);
                break;
            }
        };
        match (message, mode) {
            (AttachInput::Detach, _) => break,
            (AttachInput::Probe, _) => {}
            (_, AttachMode::ReadOnly) => {}
            (AttachInput::Resize(size), AttachMode::Interactive) => {
                if session
                    .lock()
                    .holder
                    .as_ref()
                    .is_some_and(|h| h.attachment == attachment)
                {
                    session.resize(size);
                }
            }
            (AttachInput::Input { seq, data }, AttachMode::Interactive) => {
                // Room in the PTY's queue first, cancellable: a program that never reads its
                // input must not pin this attachment (and its hold) forever.
                let permit = tokio::select! {
                    biased;
                    _ = stop.cancelled() => return,
                    permit = session.reserve_input() => match permit {
                        Ok(permit) => permit,
                        Err(_) => break,
                    },
                };
                let applied = {
                    let mut core = session.lock();
                    if core
                        .holder
                        .as_ref()
                        .is_none_or(|h| h.attachment != attachment)
                    {
                        // Taken over: this client no longer types here.
                        break;
                    }
                    let next = core.next_input_seq;
                    let end = seq.saturating_add(data.len() as u64);
                    if end > next {
                        let skip = usize::try_from(next.saturating_sub(seq))
                            .unwrap_or(usize::MAX)
                            .min(data.len());
                        core.next_input_seq = end;
                        core.last_active_ms = now_ms();
                        permit.send(data[skip..].to_vec());
                    }
                    core.next_input_seq
                };
                acked.store(applied, Ordering::Release);
                ack_changed.notify_one();
            }
        }
    }
    stop.cancel();
}
