//! The output pacer of one attachment, sans-IO: how much output may be in flight to a client,
//! and when the client has fallen so far behind that it should skip to the current screen.
//!
//! The client reports what it has drawn ([`cmdop_proto::AttachInput::Shown`]). From those
//! reports the pacer learns the rate the link delivers at, and keeps no more in flight than
//! about one round trip of that rate (plus a little), so output never piles up in buffers the
//! node cannot take back. Then:
//! - while the client keeps up, every byte goes through, in order ([`Verdict::Send`]);
//! - when the backlog (printed but not drawn) would take more than [`MAX_DRAIN`] at the
//!   measured rate, the client should get the screen instead ([`Verdict::Skip`]);
//! - when the holder types while more than about a round trip of output is still queued,
//!   likewise ([`OutputPacer::typed`]): a Ctrl+C must not wait behind a flood.
//!
//! Time is a parameter (`now`), so tests drive it with a fake clock.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// A backlog that would take longer than this to drain is skipped ("about a second": a little
/// more, so that output a link carries in a second is never mistaken for a flood when the first
/// rate samples come in low).
pub const MAX_DRAIN: Duration = Duration::from_millis(1500);

/// In flight before the first delivery report: enough for a fast link to ramp up at once,
/// little enough that a slow one is not buried.
const INITIAL_WINDOW: u64 = 64 * 1024;

/// Never less in flight than this (a whole screenful of a busy program).
const MIN_WINDOW: u64 = 12 * 1024;

/// Never more in flight than this.
const MAX_WINDOW: u64 = 16 << 20;

/// Headroom on top of one round trip of output, for the client's own turnaround.
const WINDOW_SLACK: Duration = Duration::from_millis(25);

/// How long the smallest round trip seen stays the path's round trip (links change).
const MIN_RTT_MEMORY: Duration = Duration::from_secs(10);

/// No skip for a backlog smaller than this: it drains quickly on any link worth using.
const MIN_SKIP_BACKLOG: u64 = 32 * 1024;

/// Rate samples span at least this long, so one early report cannot claim a huge rate.
const MIN_SAMPLE: Duration = Duration::from_millis(20);

/// A rate sample older than this no longer counts (links change).
const RATE_MEMORY: Duration = Duration::from_secs(4);

/// What the output pump should do next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Send output from the pump's cursor, at most this many bytes.
    Send(u64),
    /// Enough is in flight: wait for the client to report progress.
    Wait,
    /// The client has fallen too far behind: send the current screen instead of the backlog.
    Skip,
}

/// One frame handed to the stream and not yet reported drawn.
#[derive(Debug, Clone, Copy)]
struct InFlight {
    /// The output offset the client reaches once it has drawn this frame.
    end: u64,
    /// Bytes on the wire.
    bytes: u64,
    /// More output waited behind it when it was sent: its delivery measures the link, not how
    /// fast the program printed.
    busy: bool,
}

/// One delivery-rate sample.
#[derive(Debug, Clone, Copy)]
struct Sample {
    at: Instant,
    bytes_per_sec: f64,
}

/// The pacer of one attachment.
#[derive(Debug)]
pub struct OutputPacer {
    /// Frames sent and not yet reported drawn, oldest first.
    in_flight: VecDeque<InFlight>,
    /// Sum of `in_flight`'s bytes.
    in_flight_bytes: u64,
    /// Highest offset the client reported drawn.
    shown: u64,
    /// Bytes of busy frames reported drawn since `interval_start`.
    delivered: u64,
    /// Start of the current rate-sampling interval.
    interval_start: Instant,
    /// Recent rate samples, newest last.
    samples: VecDeque<Sample>,
    /// The offset of a screen frame sent and not yet reported drawn: no second skip before it.
    skip_pending: Option<u64>,
}

impl OutputPacer {
    /// A pacer for an attachment whose output starts at `offset`.
    pub fn new(offset: u64, now: Instant) -> Self {
        OutputPacer {
            in_flight: VecDeque::new(),
            in_flight_bytes: 0,
            shown: offset,
            delivered: 0,
            interval_start: now,
            samples: VecDeque::new(),
            skip_pending: None,
        }
    }

    /// The client has drawn everything below this offset.
    pub fn shown(&self) -> u64 {
        self.shown
    }

    /// The delivery rate the link has shown lately (bytes per second), if measured.
    pub fn rate(&self) -> Option<f64> {
        self.samples
            .iter()
            .map(|s| s.bytes_per_sec)
            .max_by(f64::total_cmp)
    }

    /// How much may be in flight: about one round trip at the measured rate, plus slack.
    pub fn window(&self, rtt: Duration) -> u64 {
        match self.rate() {
            None => INITIAL_WINDOW,
            Some(rate) => {
                let bytes = rate * (rtt + WINDOW_SLACK).as_secs_f64();
                (bytes as u64).clamp(MIN_WINDOW, MAX_WINDOW)
            }
        }
    }

    /// A frame reaching output offset `end`, `bytes` long on the wire, was handed to the
    /// stream; `more_waiting` says whether output still waits behind it.
    pub fn sent(&mut self, end: u64, bytes: u64, more_waiting: bool) {
        self.in_flight.push_back(InFlight {
            end,
            bytes,
            busy: more_waiting,
        });
        self.in_flight_bytes += bytes;
    }

    /// The client reports it has drawn everything below `offset`.
    pub fn reported(&mut self, offset: u64, rtt: Duration, now: Instant) {
        if offset <= self.shown {
            return;
        }
        self.shown = offset;
        if self.skip_pending.is_some_and(|skip| offset >= skip) {
            self.skip_pending = None;
        }
        while let Some(frame) = self.in_flight.front().copied() {
            if frame.end > offset {
                break;
            }
            self.in_flight.pop_front();
            self.in_flight_bytes -= frame.bytes;
            if frame.busy {
                self.delivered += frame.bytes;
            } else {
                // The pipe ran dry here: what follows measures from now.
                self.delivered = 0;
                self.interval_start = now;
            }
        }
        self.sample(rtt, now);
    }

    /// Closes a sampling interval once it spans a round trip: the busy bytes drawn in it over
    /// its length is one sample of what the link delivers.
    fn sample(&mut self, rtt: Duration, now: Instant) {
        self.forget_old(now);
        let span = now.saturating_duration_since(self.interval_start);
        if span < rtt.max(MIN_SAMPLE) {
            return;
        }
        if self.delivered > 0 {
            self.samples.push_back(Sample {
                at: now,
                bytes_per_sec: self.delivered as f64 / span.as_secs_f64(),
            });
        }
        self.delivered = 0;
        self.interval_start = now;
    }

    /// Drops samples too old to describe the link now; with none left the rate is unknown and
    /// the pacer is optimistic again (no skip until the link shows its limit).
    fn forget_old(&mut self, now: Instant) {
        while self
            .samples
            .front()
            .is_some_and(|s| now.saturating_duration_since(s.at) > RATE_MEMORY)
        {
            self.samples.pop_front();
        }
    }

    /// What to do with output from `cursor` (the next byte to send) when the session's output
    /// ends at `end`.
    pub fn next(&self, cursor: u64, end: u64, rtt: Duration) -> Verdict {
        if self.behind(cursor, end, MAX_DRAIN) {
            return Verdict::Skip;
        }
        if cursor >= end {
            return Verdict::Wait;
        }
        let room = self.window(rtt).saturating_sub(self.in_flight_bytes);
        if room == 0 {
            return Verdict::Wait;
        }
        Verdict::Send(room.min(end - cursor))
    }

    /// The holder typed: true if so much output is queued (more than about a round trip's
    /// worth) that the client should skip to the screen to see the effect of its keystroke.
    pub fn typed(&self, cursor: u64, end: u64, rtt: Duration) -> bool {
        self.behind(cursor, end, rtt + WINDOW_SLACK)
    }

    /// Whether the client lags so far that its next keystroke would skip to the screen (so
    /// the screen should be kept ready).
    pub fn lagging(&self, cursor: u64, end: u64, rtt: Duration) -> bool {
        self.typed(cursor, end, rtt)
    }

    /// Whether the output queued for the client (in flight, and not yet sent) would take
    /// longer than `limit` to reach it at the measured rate. Never true before the rate is
    /// known.
    fn behind(&self, cursor: u64, end: u64, limit: Duration) -> bool {
        let backlog = self.in_flight_bytes + end.saturating_sub(cursor);
        if backlog < MIN_SKIP_BACKLOG || self.skip_pending.is_some() {
            return false;
        }
        self.rate()
            .is_some_and(|rate| backlog as f64 > rate * limit.as_secs_f64())
    }

    /// A screen frame standing for everything below `offset`, `bytes` long, was sent instead of
    /// the backlog: the output in flight before it still arrives, then the screen.
    pub fn skipped(&mut self, offset: u64, bytes: u64) {
        self.sent(offset, bytes, false);
        self.skip_pending = Some(offset);
    }
}

/// The path's round trip without queueing: the smallest of the recent round-trip estimates.
/// The connection's smoothed estimate includes the time packets wait in queues, so a window
/// sized by it would keep those queues full (and grow them): the pacer sizes by this instead.
#[derive(Debug, Clone, Copy)]
pub struct MinRtt {
    min: Option<(Duration, Instant)>,
}

impl MinRtt {
    /// None seen yet.
    pub fn new() -> Self {
        MinRtt { min: None }
    }

    /// Takes the connection's current estimate at `now`; returns the path's round trip.
    pub fn update(&mut self, estimate: Duration, now: Instant) -> Duration {
        let keep = self.min.is_some_and(|(min, at)| {
            min <= estimate && now.saturating_duration_since(at) < MIN_RTT_MEMORY
        });
        if !keep {
            self.min = Some((estimate, now));
        }
        self.min.map_or(estimate, |(min, _)| min)
    }
}

impl Default for MinRtt {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
#[path = "skip_tests.rs"]
mod tests;
