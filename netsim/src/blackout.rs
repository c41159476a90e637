//! Blackout state: a switch that drops all traffic in both directions.
//!
//! A blackout is either timed (until an instant) or held on until cleared.
//! The state is a pair of atomics so the packet path can check it without a
//! lock, and so the check costs no clock read when no blackout was ever set.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Whether traffic is currently blacked out.
#[derive(Debug)]
pub(crate) struct Blackout {
    epoch: Instant,
    held: AtomicBool,
    /// End of a timed blackout, in nanoseconds after `epoch`; 0 = none.
    until_nanos: AtomicU64,
}

impl Blackout {
    pub(crate) fn new(epoch: Instant) -> Self {
        Blackout {
            epoch,
            held: AtomicBool::new(false),
            until_nanos: AtomicU64::new(0),
        }
    }

    fn nanos_since_epoch(&self, t: Instant) -> u64 {
        u64::try_from(t.saturating_duration_since(self.epoch).as_nanos()).unwrap_or(u64::MAX)
    }

    /// Black out from `now` for `duration` (replacing any timed blackout).
    pub(crate) fn start_timed(&self, now: Instant, duration: Duration) {
        let end = self
            .nanos_since_epoch(now)
            .saturating_add(u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX))
            .max(1);
        self.until_nanos.store(end, Ordering::Relaxed);
    }

    /// Hold the blackout on until cleared, or clear every blackout.
    pub(crate) fn set(&self, on: bool) {
        self.held.store(on, Ordering::Relaxed);
        if !on {
            self.until_nanos.store(0, Ordering::Relaxed);
        }
    }

    /// True if packets must be dropped at `now`.
    pub(crate) fn active_at(&self, now: Instant) -> bool {
        if self.held.load(Ordering::Relaxed) {
            return true;
        }
        let until = self.until_nanos.load(Ordering::Relaxed);
        until != 0 && self.nanos_since_epoch(now) < until
    }

    /// True if any blackout may be in force; lets the fast path skip reading
    /// the clock.
    pub(crate) fn maybe_active(&self) -> bool {
        self.held.load(Ordering::Relaxed) || self.until_nanos.load(Ordering::Relaxed) != 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timed_blackout_ends() {
        let t0 = Instant::now();
        let b = Blackout::new(t0);
        assert!(!b.maybe_active());
        assert!(!b.active_at(t0));
        b.start_timed(t0, Duration::from_secs(3));
        assert!(b.maybe_active());
        assert!(b.active_at(t0));
        assert!(b.active_at(t0 + Duration::from_millis(2999)));
        assert!(!b.active_at(t0 + Duration::from_secs(3)));
    }

    #[test]
    fn held_blackout_until_cleared() {
        let t0 = Instant::now();
        let b = Blackout::new(t0);
        b.set(true);
        assert!(b.active_at(t0 + Duration::from_secs(1000)));
        b.start_timed(t0, Duration::from_secs(1));
        b.set(false);
        assert!(!b.active_at(t0));
        assert!(!b.maybe_active());
    }

    #[test]
    fn huge_duration_saturates() {
        let t0 = Instant::now();
        let b = Blackout::new(t0);
        b.start_timed(t0, Duration::MAX);
        assert!(b.active_at(t0 + Duration::from_secs(1_000_000)));
    }
}
