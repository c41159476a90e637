//! One attachment's output pump and what it shares with the input reader: the pacing (the
//! client's `Shown` reports, the holder's keystrokes that may call for the screen) and the
//! input acknowledgements.
//!
//! The pump keeps its own cursor (an absolute ringbuffer offset) and sends what the PTY printed
//! from there, as much as the [`OutputPacer`] allows in flight; it sends the session's screen
//! in place of a backlog the client cannot take in time, or that the ringbuffer no longer
//! holds. It also sends input acknowledgements, the exit once the output is drained, and the
//! reason when the holder is kicked or the session destroyed.

use crate::server::attach::RoundTrip;
use crate::server::echo::EchoLedger;
use crate::server::framed::FrameSink;
use crate::server::skip::{MinRtt, OutputPacer, Verdict};
use crate::session::Session;
use cmdop_proto::{AttachOutput, DetachReason, ScreenFrame, SkipReason};
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

/// The input sequence number applied so far, from the input reader to the output pump.
#[derive(Clone)]
pub(super) struct Acks {
    applied: Arc<AtomicU64>,
    changed: Arc<Notify>,
}

impl Acks {
    pub(super) fn new(seq: u64) -> Self {
        Acks {
            applied: Arc::new(AtomicU64::new(seq)),
            changed: Arc::new(Notify::new()),
        }
    }

    fn get(&self) -> u64 {
        self.applied.load(Ordering::Acquire)
    }

    pub(super) fn set(&self, seq: u64) {
        self.applied.store(seq, Ordering::Release);
        self.changed.notify_one();
    }
}

/// How one attachment's output is paced, shared by its pump and its input reader.
pub(super) struct Pacing {
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
    pub(super) fn new(start: u64, rtt: RoundTrip) -> Self {
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

    /// The client has drawn everything below `offset`; `end` tells where the session's output
    /// ends. The pump is woken only when output waits for such a report: a caught-up pump has
    /// nothing it could send now, and waking it would put it ahead of the keystroke that usually
    /// comes in the same packet.
    pub(super) fn shown(&self, offset: u64, end: impl FnOnce() -> u64) {
        let rtt = self.rtt();
        self.pacer()
            .reported(offset, rtt, std::time::Instant::now());
        // Read after the report: output that came before it is counted here, and output that
        // comes after it finds the report in place. The cursor only lags the pump's own, so
        // waiting output is never missed.
        if self.cursor.load(Ordering::Acquire) < end() {
            self.changed.notify_one();
        }
    }

    /// The holder typed while the output ends at `end`: skip to the screen if much is queued.
    pub(super) fn typed(&self, end: u64) {
        let cursor = self.cursor.load(Ordering::Acquire);
        let rtt = self.rtt();
        if self.pacer().typed(cursor, end, rtt) {
            self.skip_now.store(true, Ordering::Release);
            self.changed.notify_one();
        }
    }
}

/// One attachment's output pump.
pub(super) struct Pump<'a> {
    session: &'a Arc<Session>,
    /// The next offset to send.
    cursor: u64,
    acks: Acks,
    pacing: Arc<Pacing>,
    /// Echo acknowledgements waiting for their grace or their output.
    echo: EchoLedger,
    /// When this pump last had the screen caught up in the background.
    warmed_at: Option<Instant>,
    stop: CancellationToken,
}

impl<'a> Pump<'a> {
    /// A pump for `session`'s output from `cursor`.
    pub(super) fn new(
        session: &'a Arc<Session>,
        cursor: u64,
        acks: Acks,
        pacing: Arc<Pacing>,
        stop: CancellationToken,
    ) -> Self {
        Pump {
            session,
            cursor,
            acks,
            pacing,
            echo: EchoLedger::default(),
            warmed_at: None,
            stop,
        }
    }

    /// Sends output, acknowledgements and the end (exit, kick, destruction) until one of them
    /// ends the attachment or the stream fails.
    pub(super) async fn run<S: FrameSink>(mut self, send: &mut S, mut kick: Kick) {
        let mut changes = self.session.subscribe();
        let mut acks = AcksSent {
            applied: self.acks.get(),
            sent: self.acks.get(),
        };
        // Input applied on an earlier link of this client gets its echo acknowledgement here.
        if acks.applied > 0 {
            self.echo.applied(acks.applied, std::time::Instant::now());
        }
        let mut exit_seen: Option<Instant> = None;
        loop {
            // Checked on every round, not only when idle: under a flood the pump never idles,
            // and a kicked holder must not keep its hold (or its keystrokes) a moment longer.
            if self.stop.is_cancelled() {
                return;
            }
            if let Some(reason) = kick.try_take() {
                self.last_words(send, &acks, AttachOutput::Detached(reason))
                    .await;
                return;
            }
            if !self.send_acks(send, &mut acks).await {
                return;
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
                    self.last_words(send, &acks, AttachOutput::Exited { code })
                        .await;
                    return;
                }
                let _ = tokio::time::timeout(EXIT_GRACE / 10, changes.changed()).await;
                continue;
            }
            tokio::select! {
                biased;
                reason = kick.wait() => {
                    self.last_words(send, &acks, AttachOutput::Detached(reason)).await;
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
                _ = echo_due(self.echo.next_due()) => {}
            }
            if self.session.lock().lifecycle.is_destroyed() {
                let _ = send
                    .send(&AttachOutput::Detached(DetachReason::Destroyed))
                    .await;
                return;
            }
        }
    }

    /// Sends the input acknowledgement of input applied a grace ago (or at once when output is
    /// about to go, in the same packet), and echo acknowledgements whose grace is over and whose
    /// output went out; false when the stream failed. No packet of its own is sent the moment
    /// a keystroke is applied: its echo is the first packet back.
    async fn send_acks<S: FrameSink>(&mut self, send: &mut S, acks: &mut AcksSent) -> bool {
        let now = Instant::now();
        let applied = self.acks.get();
        if applied != acks.applied {
            acks.applied = applied;
            self.echo.applied(applied, now.into_std());
        }
        let end = self.session.lock().ring.end();
        self.echo.tick(now.into_std(), end);
        // With output about to go, the acknowledgement rides in its packet; otherwise it waits
        // for the grace.
        let due = if self.cursor < end {
            acks.applied
        } else {
            self.echo.graced()
        };
        if due > acks.sent {
            acks.sent = due;
            let ack = AttachOutput::InputAck { seq: due };
            if send.send(&ack).await.is_err() {
                return false;
            }
        }
        match self.echo.ready(self.cursor) {
            Some(seq) => send.send(&AttachOutput::EchoAck { seq }).await.is_ok(),
            None => true,
        }
    }

    /// Sends the frame that ends the attachment, after the acknowledgement of any input applied
    /// but not yet acknowledged (so a client that reconnects elsewhere never sends it again).
    async fn last_words<S: FrameSink>(&self, send: &mut S, acks: &AcksSent, last: AttachOutput) {
        let applied = self.acks.get();
        if applied > acks.sent {
            let _ = send.send(&AttachOutput::InputAck { seq: applied }).await;
        }
        let _ = send.send(&last).await;
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
        // Catching the screen up may parse a megabyte: not on the runtime's threads.
        let session = self.session.clone();
        let Ok(shot) = tokio::task::spawn_blocking(move || session.screen_shot()).await else {
            return Sent::Failed;
        };
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
pub(super) struct Kick(pub(super) Option<oneshot::Receiver<DetachReason>>);

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

/// The input acknowledged so far: applied to the PTY, and told to the client.
struct AcksSent {
    applied: u64,
    sent: u64,
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

/// Sleeps until an echo acknowledgement's grace is over (forever when none is running).
async fn echo_due(due: Option<std::time::Instant>) {
    match due {
        Some(due) => tokio::time::sleep_until(Instant::from_std(due)).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pacing_at(cursor: u64) -> Pacing {
        Pacing::new(cursor, Arc::new(|| Duration::from_millis(1)))
    }

    /// Whether `changed` was notified (a stored permit completes the wait at once).
    async fn woken(pacing: &Pacing) -> bool {
        tokio::time::timeout(Duration::from_millis(20), pacing.changed.notified())
            .await
            .is_ok()
    }

    #[tokio::test]
    async fn a_report_wakes_the_pump_only_when_output_waits() {
        let pacing = pacing_at(100);
        pacing.shown(100, || 100);
        assert!(
            !woken(&pacing).await,
            "caught up: nothing a report could release"
        );
        pacing.shown(100, || 150);
        assert!(woken(&pacing).await, "50 bytes wait for the client");
    }
}
