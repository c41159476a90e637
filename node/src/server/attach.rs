//! Live attachments: one framed stream pair per terminal attached to a session.
//!
//! Per attachment:
//! - the first frame is an [`AttachRequest`]; admission ([`crate::session::admission`]) admits,
//!   refuses, or admits and kicks the previous holder;
//! - an **output pump** ([`crate::server::pump`]) keeps this attachment's own cursor (an
//!   absolute ringbuffer offset) and sends what the PTY printed from there, paced by what the
//!   client reports drawn, or the session's screen in place of a backlog it cannot take in
//!   time. Nothing is queued per client: a slow client only falls behind in the ringbuffer;
//! - an **input reader** applies keystrokes to the PTY as soon as they arrive, independently of
//!   the output pump, so Ctrl+C is not stuck behind output flow control. Input carries sequence
//!   numbers; anything already applied is dropped ([`cmdop_proto::resync::InputLedger`]), and
//!   the pump acknowledges what was applied.
//!
//! One interactive client (the *holder*) may type and resize; read-only viewers only watch.
//!
//! Nothing here knows QUIC: the streams are any [`FrameSink`] / [`FrameSource`], and what to do
//! with a connection whose peer sent garbage is the caller's [`OnMalformed`].

use crate::server::framed::{FrameSink, FrameSource, RecvError};
use crate::server::pump::{Acks, Kick, Pacing, Pump};
use crate::session::admission::{Admitted, Peer};
use crate::session::registry::Registry;
use crate::session::{now_ms, Session};
use cmdop_proto::frame::FrameError;
use cmdop_proto::{
    AttachInput, AttachMode, AttachOutput, AttachRequest, DetachReason, ErrorReply, WinSize,
};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot, OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;

/// Keystroke bytes read ahead of a program that is slow to take them.
const INPUT_BUFFER: usize = 4 << 20;

/// How long keystrokes read before the client left may take to go in.
const INPUT_DRAIN: Duration = Duration::from_secs(2);

/// How long a new attach stream may take to send its request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// Called when the peer sent an unreadable frame (closes its connection).
pub type OnMalformed = Arc<dyn Fn(&FrameError) + Send + Sync>;

/// The current round-trip time of the peer's connection.
pub type RoundTrip = Arc<dyn Fn() -> Duration + Send + Sync>;

static NEXT_ATTACHMENT: AtomicU64 = AtomicU64::new(1);

/// Serves one attach stream pair of `peer` until it ends.
pub async fn attach<S, R>(
    registry: Arc<Registry>,
    peer: Peer,
    mut send: S,
    mut recv: R,
    on_malformed: OnMalformed,
    rtt: RoundTrip,
    shutdown: CancellationToken,
) where
    S: FrameSink,
    R: FrameSource + 'static,
{
    let request = match tokio::time::timeout(REQUEST_TIMEOUT, recv.recv::<AttachRequest>()).await {
        Ok(Ok(Some(request))) => request,
        Ok(Err(RecvError::Frame(e))) => return on_malformed(&e),
        _ => return,
    };
    let session = match registry.get(request.session) {
        Ok(session) => session,
        Err(e) => return refuse(&mut send, e, Duration::ZERO).await,
    };
    let attachment = NEXT_ATTACHMENT.fetch_add(1, Ordering::Relaxed);
    let (kick_tx, kick_rx) = oneshot::channel::<DetachReason>();
    let max = registry.config().max_attachments;
    let admitted = match session.admit(max, &peer, &request, attachment, kick_tx) {
        Ok(admitted) => admitted,
        Err(refusal) => return refuse(&mut send, refusal, Duration::from_secs(1)).await,
    };
    let guard = AttachmentGuard {
        session: session.clone(),
        attachment,
        registry,
    };
    tracing::info!(session = %session.id, addr = %peer.addr, mode = ?request.mode, "attached");
    let start = match request.resume_from {
        Some(offset) => offset.min(session.lock().ring.end()),
        None => replay_start(&session, request.scrollback_bytes),
    };
    let Admitted {
        input_seq,
        input_reset,
    } = admitted;
    let attached = AttachOutput::Attached {
        session: session.info(),
        offset: start,
        input_seq,
        input_reset,
    };
    if send.send(&attached).await.is_err() {
        return;
    }
    if request.mode == AttachMode::Interactive {
        nudge_redraw(&session, request.size);
    }
    session.notify();

    let acks = Acks::new(input_seq);
    let pacing = Arc::new(Pacing::new(start, rtt));
    let stop = shutdown.child_token();
    let input = InputReader {
        session: session.clone(),
        attachment,
        mode: request.mode,
        acks: acks.clone(),
        pacing: pacing.clone(),
        stop: stop.clone(),
        on_malformed,
    };
    let input_task = tokio::spawn(input.run(recv));
    let pump = Pump::new(&session, start, acks, pacing, stop.clone());
    pump.run(&mut send, Kick(Some(kick_rx))).await;
    stop.cancel();
    let _ = input_task.await;
    drop(guard);
    send.finish(Duration::from_secs(2)).await;
}

/// Sends a refusal and ends the stream.
async fn refuse<S: FrameSink>(send: &mut S, refusal: ErrorReply, linger: Duration) {
    let _ = send.send(&AttachOutput::Error(refusal)).await;
    send.finish(linger).await;
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

/// Releases the hold and the attachment count when an attachment ends, however it ends.
struct AttachmentGuard {
    session: Arc<Session>,
    attachment: u64,
    registry: Arc<Registry>,
}

impl Drop for AttachmentGuard {
    fn drop(&mut self) {
        self.session.release(self.attachment);
        self.session.rest_screen();
        self.registry.touch();
        tracing::info!(session = %self.session.id, "detached");
    }
}

/// Makes full-screen programs repaint for the new client: a size change delivers SIGWINCH; if
/// the size is unchanged, bounce through a different size first.
fn nudge_redraw(session: &Arc<Session>, size: WinSize) {
    let size = crate::session::screen::clamp(size);
    let current = session.lock().size;
    if current == size {
        let cols = if size.cols > 1 { size.cols - 1 } else { 2 };
        session.resize(WinSize {
            rows: size.rows,
            cols,
        });
    }
    session.resize(size);
}

/// Where the frame reader hands keystrokes it cannot apply at once (a program not reading its
/// input) to the applying half.
struct InputQueue<'a> {
    sender: mpsc::UnboundedSender<QueuedInput>,
    /// The read-ahead room left.
    room: Arc<Semaphore>,
    /// Keystrokes handed over and not yet applied: while any are, later ones queue behind them.
    waiting: &'a AtomicUsize,
}

/// Keystrokes read and not yet applied, holding their share of the read-ahead room.
struct QueuedInput {
    seq: u64,
    data: Vec<u8>,
    _room: OwnedSemaphorePermit,
}

/// One attachment's input reader.
struct InputReader {
    session: Arc<Session>,
    attachment: u64,
    mode: AttachMode,
    acks: Acks,
    pacing: Arc<Pacing>,
    stop: CancellationToken,
    on_malformed: OnMalformed,
}

impl InputReader {
    /// Applies the client's input until it detaches, the stream ends or the attachment stops.
    /// Frames are read apart from applying keystrokes: a program that does not read its input
    /// holds up the keystrokes behind, never the client's `Shown` reports (or output would stop
    /// too) nor its resizes.
    async fn run<R: FrameSource>(self, mut recv: R) {
        let (queue, mut queued) = mpsc::unbounded_channel::<QueuedInput>();
        let room = Arc::new(Semaphore::new(INPUT_BUFFER));
        let waiting = AtomicUsize::new(0);
        let apply = async {
            while let Some(input) = queued.recv().await {
                let applied = self.apply(input.seq, &input.data).await;
                waiting.fetch_sub(1, Ordering::AcqRel);
                if !applied {
                    return;
                }
            }
        };
        tokio::pin!(apply);
        let queue = InputQueue {
            sender: queue,
            room,
            waiting: &waiting,
        };
        tokio::select! {
            _ = &mut apply => {}
            _ = self.read_frames(&mut recv, queue) => {
                // What the client typed before it left still goes in, briefly.
                let _ = tokio::time::timeout(INPUT_DRAIN, apply).await;
            }
        }
        self.stop.cancel();
    }

    /// Reads the client's frames until it detaches or the stream ends; keystrokes go to
    /// `queue`, within `room` bytes (waiting for room only when a huge paste meets a program
    /// that does not read).
    async fn read_frames<R: FrameSource>(&self, recv: &mut R, queue: InputQueue<'_>) {
        loop {
            let message = tokio::select! {
                biased;
                _ = self.stop.cancelled() => return,
                message = recv.recv::<AttachInput>() => message,
            };
            let message = match message {
                Ok(Some(message)) => message,
                Ok(None) | Err(RecvError::Stream(_)) => return,
                Err(RecvError::Frame(e)) => return (self.on_malformed)(&e),
            };
            match (message, self.mode) {
                (AttachInput::Detach, _) => return,
                (AttachInput::Shown { offset }, _) => {
                    self.pacing.shown(offset, || self.session.lock().ring.end());
                }
                (AttachInput::Probe, _) | (_, AttachMode::ReadOnly) => {}
                (AttachInput::Resize(size), AttachMode::Interactive) => {
                    if self.session.is_held_by(self.attachment) {
                        self.session.resize(size);
                    }
                }
                (AttachInput::Input { seq, data }, AttachMode::Interactive) => {
                    // Nothing queued ahead and room in the PTY's queue (a keystroke, almost
                    // always): applied here and now, with no hand-over to the applying half.
                    if queue.waiting.load(Ordering::Acquire) == 0 {
                        if let Some(permit) = self.session.try_reserve_input() {
                            if !self.apply_with(permit, seq, &data) {
                                return;
                            }
                            continue;
                        }
                    }
                    let wanted = u32::try_from(data.len().min(INPUT_BUFFER)).unwrap_or(u32::MAX);
                    let permit = tokio::select! {
                        biased;
                        _ = self.stop.cancelled() => return,
                        permit = queue.room.clone().acquire_many_owned(wanted) => permit,
                    };
                    let Ok(permit) = permit else { return };
                    let input = QueuedInput {
                        seq,
                        data,
                        _room: permit,
                    };
                    queue.waiting.fetch_add(1, Ordering::AcqRel);
                    if queue.sender.send(input).is_err() {
                        return;
                    }
                }
            }
        }
    }

    /// Queues the part of `data` not applied yet; false when this attachment no longer types
    /// here (taken over, or the program is gone).
    async fn apply(&self, seq: u64, data: &[u8]) -> bool {
        // Room in the PTY's queue first, cancellable: a program that never reads its input must
        // not pin this attachment (and its hold) forever.
        let permit = tokio::select! {
            biased;
            _ = self.stop.cancelled() => return false,
            permit = self.session.reserve_input() => match permit {
                Ok(permit) => permit,
                Err(_) => return false,
            },
        };
        self.apply_with(permit, seq, data)
    }

    /// As [`InputReader::apply`], with room in the PTY's queue already reserved.
    fn apply_with(&self, permit: mpsc::Permit<'_, Vec<u8>>, seq: u64, data: &[u8]) -> bool {
        let applied = {
            let mut core = self.session.lock();
            if core
                .holder
                .as_ref()
                .is_none_or(|h| h.attachment != self.attachment)
            {
                // Taken over: this client no longer types here.
                return false;
            }
            if let Some(fresh) = core.input.apply(seq, data) {
                permit.send(fresh.to_vec());
                core.last_active_ms = now_ms();
            }
            core.input.next_seq()
        };
        self.acks.set(applied);
        let end = self.session.lock().ring.end();
        self.pacing.typed(end);
        true
    }
}
