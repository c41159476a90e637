//! Live attachments: one framed stream pair per terminal attached to a session.
//!
//! Per attachment:
//! - the first frame is an [`AttachRequest`]; admission ([`crate::session::admission`]) admits,
//!   refuses, or admits and kicks the previous holder;
//! - an **output pump** keeps this attachment's own cursor (an absolute ringbuffer offset) and
//!   sends what the PTY printed from there, waking on the session's change counter. Nothing is
//!   queued per client: a slow client only falls behind in the ringbuffer, and if it falls off
//!   the end it gets a [`AttachOutput::Gap`] and continues from the oldest byte held;
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
use crate::server::skip::{MinRtt, OutputPacer, Verdict};
use crate::session::admission::{Admitted, Peer};
use crate::session::registry::Registry;
use crate::session::{now_ms, Session};
use cmdop_proto::frame::FrameError;
use cmdop_proto::{
    AttachInput, AttachMode, AttachOutput, AttachRequest, DetachReason, ErrorReply, ScreenFrame,
    SkipReason, WinSize,
};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{oneshot, Notify};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// Bytes of output per frame.
const OUTPUT_CHUNK: usize = 64 * 1024;

/// A frame's bytes on the wire besides its payload (length prefix, CBOR tags, offset).
const FRAME_OVERHEAD: u64 = 24;

/// How long after the shell's exit to wait for the rest of its output.
const EXIT_GRACE: Duration = Duration::from_millis(500);

/// How often a lagging client's pump has the screen caught up in the background.
const WARM_EVERY: Duration = Duration::from_millis(100);

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
    let pump = Pump {
        session: &session,
        cursor: start,
        acks,
        pacing,
        warmed_at: None,
        stop: stop.clone(),
    };
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
        self.registry.touch();
        tracing::info!(session = %self.session.id, "detached");
    }
}

/// Makes full-screen programs repaint for the new client: a size change delivers SIGWINCH; if
/// the size is unchanged, bounce through a different size first.
fn nudge_redraw(session: &Session, size: WinSize) {
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

/// The input sequence number applied so far, from the input reader to the output pump.
#[derive(Clone)]
struct Acks {
    applied: Arc<AtomicU64>,
    changed: Arc<Notify>,
}

impl Acks {
    fn new(seq: u64) -> Self {
        Acks {
            applied: Arc::new(AtomicU64::new(seq)),
            changed: Arc::new(Notify::new()),
        }
    }

    fn get(&self) -> u64 {
        self.applied.load(Ordering::Acquire)
    }

    fn set(&self, seq: u64) {
        self.applied.store(seq, Ordering::Release);
        self.changed.notify_one();
    }
}

/// How one attachment's output is paced, shared by its pump and its input reader.
struct Pacing {
    pacer: std::sync::Mutex<OutputPacer>,
    /// The pump's cursor, for the input reader's "is output queued?" question.
    cursor: AtomicU64,
    /// The holder typed with output queued: the pump sends the screen at its next round.
    skip_now: AtomicBool,
    /// The client reported progress, or a skip was asked for.
    changed: Notify,
    /// The connection's (smoothed) round trip.
    rtt: RoundTrip,
    /// The path's round trip, without queueing.
    min_rtt: std::sync::Mutex<MinRtt>,
}

impl Pacing {
    fn new(start: u64, rtt: RoundTrip) -> Self {
        Pacing {
            pacer: std::sync::Mutex::new(OutputPacer::new(start, std::time::Instant::now())),
            cursor: AtomicU64::new(start),
            skip_now: AtomicBool::new(false),
            changed: Notify::new(),
            rtt,
            min_rtt: std::sync::Mutex::new(MinRtt::new()),
        }
    }

    /// The path's round trip now.
    fn rtt(&self) -> Duration {
        let estimate = (self.rtt)();
        let mut min = self.min_rtt.lock().unwrap_or_else(|p| p.into_inner());
        min.update(estimate, std::time::Instant::now())
    }

    fn pacer(&self) -> std::sync::MutexGuard<'_, OutputPacer> {
        self.pacer.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The client has drawn everything below `offset`.
    fn shown(&self, offset: u64) {
        let rtt = self.rtt();
        self.pacer()
            .reported(offset, rtt, std::time::Instant::now());
        self.changed.notify_one();
    }

    /// The holder typed while the output ends at `end`: skip to the screen if much is queued.
    fn typed(&self, end: u64) {
        let cursor = self.cursor.load(Ordering::Acquire);
        let rtt = self.rtt();
        if self.pacer().typed(cursor, end, rtt) {
            self.skip_now.store(true, Ordering::Release);
            self.changed.notify_one();
        }
    }
}

/// One attachment's output pump.
struct Pump<'a> {
    session: &'a Arc<Session>,
    /// The next offset to send.
    cursor: u64,
    acks: Acks,
    pacing: Arc<Pacing>,
    /// When this pump last had the screen caught up in the background.
    warmed_at: Option<Instant>,
    stop: CancellationToken,
}

impl Pump<'_> {
    /// Sends output, acknowledgements and the end (exit, kick, destruction) until one of them
    /// ends the attachment or the stream fails.
    async fn run<S: FrameSink>(mut self, send: &mut S, mut kick: Kick) {
        let mut changes = self.session.subscribe();
        let mut sent_ack = self.acks.get();
        let mut exit_seen: Option<Instant> = None;
        loop {
            // Checked on every round, not only when idle: under a flood the pump never idles,
            // and a kicked holder must not keep its hold (or its keystrokes) a moment longer.
            if self.stop.is_cancelled() {
                return;
            }
            if let Some(reason) = kick.try_take() {
                let _ = send.send(&AttachOutput::Detached(reason)).await;
                return;
            }
            let ack = self.acks.get();
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
            let (exit, drained) = {
                let core = self.session.lock();
                (core.lifecycle.exit_code(), core.lifecycle.is_drained())
            };
            match self.send_output(send).await {
                Sent::Some => continue,
                Sent::Failed => return,
                Sent::Paced => self.warm_screen_if_lagging(),
                Sent::CaughtUp => {}
            }
            let paced = self.cursor < self.session.lock().ring.end();
            if let (Some(code), false) = (exit, paced) {
                // The shell may exit before the reader has moved its last output into the ring:
                // report the exit once the PTY is drained (or, if a leftover background job
                // keeps the PTY open, shortly after).
                let seen = *exit_seen.get_or_insert_with(Instant::now);
                if drained || seen.elapsed() >= EXIT_GRACE {
                    let _ = send.send(&AttachOutput::Exited { code }).await;
                    return;
                }
                let _ = tokio::time::timeout(EXIT_GRACE / 10, changes.changed()).await;
                continue;
            }
            tokio::select! {
                biased;
                reason = kick.wait() => {
                    let _ = send.send(&AttachOutput::Detached(reason)).await;
                    return;
                }
                _ = self.stop.cancelled() => return,
                changed = changes.changed() => {
                    if changed.is_err() {
                        return;
                    }
                }
                _ = self.acks.changed.notified() => {}
                _ = self.pacing.changed.notified() => {}
            }
            if self.session.lock().lifecycle.is_destroyed() {
                let _ = send
                    .send(&AttachOutput::Detached(DetachReason::Destroyed))
                    .await;
                return;
            }
        }
    }

    /// Keeps the session's screen ready while this client lags (its next keystroke, or the
    /// pacer, will want it), at most every [`WARM_EVERY`].
    fn warm_screen_if_lagging(&mut self) {
        let now = Instant::now();
        if self
            .warmed_at
            .is_some_and(|at| now.duration_since(at) < WARM_EVERY)
        {
            return;
        }
        let end = self.session.lock().ring.end();
        let rtt = self.pacing.rtt();
        if self.pacing.pacer().lagging(self.cursor, end, rtt) {
            self.warmed_at = Some(now);
            self.session.warm_screen();
        }
    }

    /// Sends what the pacer allows from the cursor, or the screen in place of a backlog the
    /// client cannot take in time (or that the ringbuffer no longer holds).
    async fn send_output<S: FrameSink>(&mut self, send: &mut S) -> Sent {
        let end = self.session.lock().ring.end();
        let typed = self.pacing.skip_now.swap(false, Ordering::AcqRel);
        let rtt = self.pacing.rtt();
        let verdict = self.pacing.pacer().next(self.cursor, end, rtt);
        let reason = match verdict {
            Verdict::Skip => SkipReason::SlowLink,
            _ if typed && self.cursor < end => SkipReason::Typed,
            Verdict::Wait if self.cursor < end => return Sent::Paced,
            Verdict::Wait => return Sent::CaughtUp,
            Verdict::Send(allowed) => return self.send_bytes(send, allowed).await,
        };
        self.send_screen(send, reason).await
    }

    /// Sends up to `allowed` bytes from the cursor.
    async fn send_bytes<S: FrameSink>(&mut self, send: &mut S, allowed: u64) -> Sent {
        let limit = usize::try_from(allowed)
            .unwrap_or(usize::MAX)
            .min(OUTPUT_CHUNK);
        let chunk = self.session.lock().ring.read_from(self.cursor, limit);
        let chunk = match chunk {
            Ok(chunk) if chunk.lost > 0 => {
                return self.send_screen(send, SkipReason::Overwritten).await
            }
            Ok(chunk) => chunk,
            Err(_) => {
                self.cursor = self.session.lock().ring.end();
                return Sent::CaughtUp;
            }
        };
        if chunk.data.is_empty() {
            return Sent::CaughtUp;
        }
        let len = chunk.data.len() as u64;
        self.cursor = chunk.offset + len;
        let more_waiting = self.cursor < self.session.lock().ring.end();
        let frame = AttachOutput::Output {
            offset: chunk.offset,
            data: chunk.data,
        };
        if send.send(&frame).await.is_err() {
            return Sent::Failed;
        }
        self.pacing
            .pacer()
            .sent(self.cursor, len + FRAME_OVERHEAD, more_waiting);
        self.pacing.cursor.store(self.cursor, Ordering::Release);
        Sent::Some
    }

    /// Sends the session's screen in place of the output from the cursor to the screen's
    /// offset. A screen that has not caught up yet (the reader feeds it just after the
    /// ringbuffer, then wakes the pump) is sent on the next round.
    async fn send_screen<S: FrameSink>(&mut self, send: &mut S, reason: SkipReason) -> Sent {
        let shot = self.session.screen_shot();
        let start = self.session.lock().ring.start();
        if shot.offset <= self.cursor || shot.offset < start {
            if reason == SkipReason::Typed {
                self.pacing.skip_now.store(true, Ordering::Release);
            }
            return Sent::Paced;
        }
        let skipped = shot.offset.saturating_sub(self.cursor);
        let bytes = shot.dump.len() as u64 + FRAME_OVERHEAD;
        let frame = AttachOutput::Screen(ScreenFrame {
            offset: shot.offset,
            skipped,
            reason,
            size: shot.size,
            dump: shot.dump,
        });
        if send.send(&frame).await.is_err() {
            return Sent::Failed;
        }
        tracing::debug!(session = %self.session.id, skipped, ?reason, "sent the screen");
        self.cursor = shot.offset;
        self.pacing.pacer().skipped(shot.offset, bytes);
        self.pacing.cursor.store(self.cursor, Ordering::Release);
        Sent::Some
    }
}

/// The end of an attachment's hold, if it holds: another client took over, the same client
/// resumed elsewhere, or the session moved. Viewers (and a holder whose hold was dropped
/// unsent) never get one.
struct Kick(Option<oneshot::Receiver<DetachReason>>);

impl Kick {
    /// The reason, if the attachment was kicked.
    fn try_take(&mut self) -> Option<DetachReason> {
        let receiver = self.0.as_mut()?;
        match receiver.try_recv() {
            Ok(reason) => Some(reason),
            Err(oneshot::error::TryRecvError::Empty) => None,
            Err(oneshot::error::TryRecvError::Closed) => {
                // A closed receiver must not be polled again.
                self.0 = None;
                None
            }
        }
    }

    /// Waits for a kick (forever if none can come).
    async fn wait(&mut self) -> DetachReason {
        if let Some(receiver) = self.0.as_mut() {
            if let Ok(reason) = receiver.await {
                return reason;
            }
            self.0 = None;
        }
        std::future::pending().await
    }
}

/// What [`Pump::send_output`] did.
enum Sent {
    /// Sent output; there may be more.
    Some,
    /// Nothing more to send for now.
    CaughtUp,
    /// More to send, once the client reports progress.
    Paced,
    /// The stream failed.
    Failed,
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
    async fn run<R: FrameSource>(self, mut recv: R) {
        loop {
            let message = tokio::select! {
                biased;
                _ = self.stop.cancelled() => return,
                message = recv.recv::<AttachInput>() => message,
            };
            let message = match message {
                Ok(Some(message)) => message,
                Ok(None) | Err(RecvError::Stream(_)) => break,
                Err(RecvError::Frame(e)) => {
                    (self.on_malformed)(&e);
                    break;
                }
            };
            match (message, self.mode) {
                (AttachInput::Detach, _) => break,
                (AttachInput::Shown { offset }, _) => self.pacing.shown(offset),
                (AttachInput::Probe, _) | (_, AttachMode::ReadOnly) => {}
                (AttachInput::Resize(size), AttachMode::Interactive) => {
                    if self.session.is_held_by(self.attachment) {
                        self.session.resize(size);
                    }
                }
                (AttachInput::Input { seq, data }, AttachMode::Interactive) => {
                    if !self.apply(seq, &data).await {
                        break;
                    }
                }
            }
        }
        self.stop.cancel();
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
