//! Watching the network path for silence, sans-IO: [`PathWatch`] is fed the connection's
//! datagram counter and the time, and says when to probe, when to move to a fresh socket, and
//! how long the path has been silent. The driver ([`super::driver`]) does the I/O.

use std::time::{Duration, Instant, SystemTime};

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
pub(super) struct PathWatch {
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

/// Tick while output streams.
const FAST_TICK: Duration = Duration::from_millis(5);
/// Tick while idle.
const SLOW_TICK: Duration = Duration::from_millis(250);
/// Shortest silence that triggers a probe while streaming.
const MIN_PROBE_SILENCE: Duration = Duration::from_millis(20);

impl PathWatch {
    /// A watch starting now, with the connection's datagram counter.
    pub(super) fn new(datagrams: u64, now: Instant, wall: SystemTime) -> Self {
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
