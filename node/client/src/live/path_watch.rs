//! Watching the network path for silence, sans-IO: [`PathWatch`] is fed the connection's
//! datagram and output counters and the time, and says when to probe, when to move to a fresh socket, and
//! how long the path has been silent. The driver ([`super::driver`]) does the I/O.

use std::time::{Duration, Instant, SystemTime};

/// How long the path may stay silent (keep-alives included) before the client suspects a
/// network change and moves to a fresh socket: a bit more than two keep-alive intervals.
const SILENCE_BEFORE_REBIND: Duration = Duration::from_millis(2500);

/// How far the wall clock may run ahead of the monotonic clock before we call it a sleep.
const CLOCK_JUMP: Duration = Duration::from_secs(3);

/// Watches the path for silence, sans-IO: fed the connection's datagram counter and the time.
///
/// - While output streams (at least [`STREAM_BYTES`] of it arrive between two ticks), a silence
///   longer than a few round trips means packets are going astray, typically a NAT rebinding the
///   client cannot see: send a probe at once (then back off), so the node learns the new address
///   now, not at the next keep-alive. Only output counts as streaming: the acknowledgement of a
///   probe is a datagram too, and counting it would keep an idle terminal probing forever.
/// - A silence past [`SILENCE_BEFORE_REBIND`] (or a wall clock jumping ahead after a sleep) moves
///   the client to a fresh socket, in case its own network changed.
/// - Ticks are fast while streaming and slow while idle: an idle terminal costs four wake-ups a
///   second.
#[derive(Debug)]
pub(super) struct PathWatch {
    datagrams: u64,
    output: u64,
    last_rx: Instant,
    last_output: Instant,
    streaming: bool,
    probes: u32,
    last_probe: Option<Instant>,
    rebound_at: Option<Instant>,
    wall: SystemTime,
    mono: Instant,
}

/// What a [`PathWatch`] tick asks for.
#[derive(Debug, Default, PartialEq, Eq)]
pub(super) struct PathAction {
    /// Datagrams arrived since the last tick.
    pub received: bool,
    /// Send a probe now.
    pub probe: bool,
    /// Move to a fresh socket.
    pub rebind: bool,
    /// The path has been silent this long (past [`SILENCE_BEFORE_REBIND`]).
    pub silent_secs: Option<u64>,
}

/// What the connection has received so far, as counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct Received {
    /// UDP datagrams (any: output, acknowledgements, keep-alives).
    pub datagrams: u64,
    /// Output bytes (the terminal's).
    pub output: u64,
}

/// Output between two ticks that means a stream (a flood), not a keystroke's echo.
const STREAM_BYTES: u64 = 512;
/// A stream ends after this long without output.
const STREAM_END: Duration = Duration::from_secs(1);

/// Tick while output streams.
const FAST_TICK: Duration = Duration::from_millis(5);
/// Tick while idle.
const SLOW_TICK: Duration = Duration::from_millis(250);
/// Shortest silence that triggers a probe while streaming.
const MIN_PROBE_SILENCE: Duration = Duration::from_millis(20);

impl PathWatch {
    /// Streaming starts with a tick's worth of output and ends after [`STREAM_END`] without any.
    fn follow_output(&mut self, now: Instant, output: u64) {
        if output != self.output {
            if output.saturating_sub(self.output) >= STREAM_BYTES {
                self.streaming = true;
            }
            self.output = output;
            self.last_output = now;
            // Output flows again: a later silence starts probing afresh (an answered probe
            // alone does not, or a pause in the output would be probed every few round trips).
            self.probes = 0;
            self.last_probe = None;
        } else if now.saturating_duration_since(self.last_output) > STREAM_END {
            self.streaming = false;
        }
    }

    /// Whether a probe is due after `since_last` of silence: a few round trips, doubling with
    /// every unanswered probe.
    fn probe_due(&mut self, now: Instant, since_last: Duration, rtt: Duration) -> bool {
        let wait = (rtt * 3).max(MIN_PROBE_SILENCE) * 2u32.pow(self.probes.min(6));
        let since_probe = self
            .last_probe
            .map_or(since_last, |at| now.saturating_duration_since(at));
        if since_probe < wait {
            return false;
        }
        self.probes += 1;
        self.last_probe = Some(now);
        true
    }

    /// A watch starting now, with the connection's datagram counter.
    pub(super) fn new(received: Received, now: Instant, wall: SystemTime) -> Self {
        PathWatch {
            datagrams: received.datagrams,
            output: received.output,
            last_rx: now,
            last_output: now,
            streaming: false,
            probes: 0,
            last_probe: None,
            rebound_at: None,
            wall,
            mono: now,
        }
    }

    /// How long until the next tick.
    pub(super) fn tick_interval(&self) -> Duration {
        if self.streaming {
            FAST_TICK
        } else {
            SLOW_TICK
        }
    }

    /// One tick: what to do now.
    pub(super) fn tick(
        &mut self,
        now: Instant,
        wall: SystemTime,
        received: Received,
        rtt: Duration,
    ) -> PathAction {
        self.follow_output(now, received.output);
        let mut action = PathAction::default();
        if received.datagrams != self.datagrams {
            self.datagrams = received.datagrams;
            self.last_rx = now;
            action.received = true;
        } else {
            let since_last = now.saturating_duration_since(self.last_rx);
            action.probe = self.streaming && self.probe_due(now, since_last, rtt);
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

#[cfg(test)]
mod tests {
    use super::*;

    fn got(datagrams: u64, output: u64) -> Received {
        Received { datagrams, output }
    }

    #[test]
    fn silence_while_streaming_sends_a_probe_with_backoff() {
        let start = Instant::now();
        let rtt = Duration::from_millis(2);
        let wall = SystemTime::now();
        let mut watch = PathWatch::new(got(0, 0), start, wall);
        // A KiB of output every 5 ms: streaming, fast ticks.
        let mut now = start;
        for n in 1..=10 {
            now = start + Duration::from_millis(5 * n);
            let action = watch.tick(now, wall, got(n, n * 1024), rtt);
            assert!(action.received && !action.probe);
        }
        assert_eq!(watch.tick_interval(), FAST_TICK);
        // Silence: the first probe after MIN_PROBE_SILENCE, the next after twice that.
        let at = |ms| now + Duration::from_millis(ms);
        let quiet = got(10, 10 * 1024);
        assert!(!watch.tick(at(10), wall, quiet, rtt).probe);
        assert!(watch.tick(at(20), wall, quiet, rtt).probe);
        assert!(!watch.tick(at(35), wall, quiet, rtt).probe);
        assert!(watch.tick(at(60), wall, quiet, rtt).probe);
        // Packets again: back to normal.
        assert!(watch.tick(at(65), wall, got(11, 11 * 1024), rtt).received);
    }

    #[test]
    fn answered_probes_do_not_keep_an_idle_terminal_probing() {
        let start = Instant::now();
        let rtt = Duration::from_millis(2);
        let wall = SystemTime::now();
        let mut watch = PathWatch::new(got(0, 0), start, wall);
        let at = |ms| start + Duration::from_millis(ms);
        assert!(watch.tick(at(5), wall, got(1, 4096), rtt).received);
        assert_eq!(watch.tick_interval(), FAST_TICK);
        // The output stops; every probe is acknowledged (a datagram, no output).
        let mut probes = 0;
        let mut datagrams = 1;
        for ms in (10..3000).step_by(5) {
            let action = watch.tick(at(ms), wall, got(datagrams, 4096), rtt);
            if action.probe {
                probes += 1;
                datagrams += 1;
            }
        }
        assert!(probes <= 8, "{probes} probes for one pause in the output");
        assert_eq!(watch.tick_interval(), SLOW_TICK);
    }

    #[test]
    fn echoes_at_typing_pace_are_not_a_stream() {
        let start = Instant::now();
        let rtt = Duration::from_millis(2);
        let wall = SystemTime::now();
        let mut watch = PathWatch::new(got(0, 0), start, wall);
        for n in 1..=20u64 {
            let action = watch.tick(start + Duration::from_millis(150 * n), wall, got(n, n), rtt);
            assert!(!action.probe);
            assert_eq!(watch.tick_interval(), SLOW_TICK);
        }
    }

    #[test]
    fn idle_silence_sends_no_probe_but_long_silence_rebinds() {
        let start = Instant::now();
        let rtt = Duration::from_millis(2);
        let wall = SystemTime::now();
        let mut watch = PathWatch::new(got(0, 0), start, wall);
        let at = |ms| start + Duration::from_millis(ms);
        // A keep-alive a second: idle, slow ticks, no probes.
        assert!(watch.tick(at(1000), wall, got(1, 0), rtt).received);
        assert_eq!(watch.tick_interval(), SLOW_TICK);
        assert!(!watch.tick(at(1500), wall, got(1, 0), rtt).probe);
        let action = watch.tick(at(3600), wall, got(1, 0), rtt);
        assert!(action.rebind && !action.probe);
        assert_eq!(action.silent_secs, Some(2));
        // No second rebind right after the first.
        assert!(!watch.tick(at(3900), wall, got(1, 0), rtt).rebind);
    }

    #[test]
    fn a_wall_clock_jump_means_a_sleep_and_rebinds() {
        let start = Instant::now();
        let wall = SystemTime::now();
        let rtt = Duration::from_millis(2);
        let mut watch = PathWatch::new(got(0, 0), start, wall);
        let later = start + Duration::from_millis(250);
        let action = watch.tick(later, wall + Duration::from_millis(250), got(1, 0), rtt);
        assert!(!action.rebind);
        // 250 ms of monotonic time, but an hour on the wall clock: the machine slept.
        let action = watch.tick(
            later + Duration::from_millis(250),
            wall + Duration::from_secs(3600),
            got(1, 0),
            rtt,
        );
        assert!(action.rebind);
    }
}
