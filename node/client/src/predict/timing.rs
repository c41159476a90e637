//! When predictions are worth showing and underlining: mosh's adaptive
//! triggers, driven by the round-trip time and by long-pending predictions.
//!
//! The numbers are mosh's (`terminaloverlay.h`, `transportsender.h`,
//! `completeterminal.h`):
//!
//! - the send interval is `clamp(SRTT / 2, 20 ms, 250 ms)`, 250 ms until a
//!   round trip is known;
//! - the SRTT trigger shows predictions once the interval exceeds 30 ms
//!   (SRTT above 60 ms) and stops only when it is back at 20 ms (SRTT at
//!   most 40 ms) and no prediction is outstanding;
//! - flagging (underlining) starts above 80 ms (SRTT above 160 ms) and
//!   stops at 50 ms (SRTT at most 100 ms);
//! - the glitch trigger: a prediction pending 250 ms shows predictions, one
//!   pending 5 s also underlines them; it is cured by 10 quick
//!   confirmations (under 250 ms) at least 150 ms apart;
//! - the grace period: mosh's server acknowledges an echo 50 ms after the
//!   keystroke reached the PTY; the cmdop node acknowledges a keystroke in
//!   the packet of its echo, or with an echo acknowledgement 50 ms after it
//!   reached the PTY (`node/src/server/echo.rs`), and output may wait for the
//!   next frame, so a keystroke is judged 50 ms plus one send interval after
//!   its acknowledgement arrives.

use std::time::{Duration, Instant};

const fn ms(millis: u64) -> Duration {
    Duration::from_millis(millis)
}

/// Shortest send interval (mosh `SEND_INTERVAL_MIN`).
pub(crate) const SEND_INTERVAL_MIN: Duration = ms(20);
/// Longest send interval (mosh `SEND_INTERVAL_MAX`), also the interval
/// assumed before any round trip is known.
pub(crate) const SEND_INTERVAL_MAX: Duration = ms(250);
/// A send interval above this shows predictions (`SRTT_TRIGGER_HIGH`).
pub(crate) const SRTT_TRIGGER_HIGH: Duration = ms(30);
/// A send interval at or below this stops showing them (`SRTT_TRIGGER_LOW`).
pub(crate) const SRTT_TRIGGER_LOW: Duration = ms(20);
/// A send interval above this underlines predictions (`FLAG_TRIGGER_HIGH`).
pub(crate) const FLAG_TRIGGER_HIGH: Duration = ms(80);
/// A send interval at or below this stops underlining (`FLAG_TRIGGER_LOW`).
pub(crate) const FLAG_TRIGGER_LOW: Duration = ms(50);
/// A prediction pending this long is a glitch (`GLITCH_THRESHOLD`).
pub(crate) const GLITCH_THRESHOLD: Duration = ms(250);
/// Quick confirmations that cure the glitch trigger (`GLITCH_REPAIR_COUNT`).
pub(crate) const GLITCH_REPAIR_COUNT: u32 = 10;
/// Least time between two curing confirmations (`GLITCH_REPAIR_MININTERVAL`).
pub(crate) const GLITCH_REPAIR_MIN_INTERVAL: Duration = ms(150);
/// A prediction pending this long also underlines (`GLITCH_FLAG_THRESHOLD`).
pub(crate) const GLITCH_FLAG_THRESHOLD: Duration = ms(5000);
/// How long after it reached the PTY a program has to echo a keystroke
/// (mosh `ECHO_TIMEOUT`).
pub(crate) const ECHO_TIMEOUT: Duration = ms(50);

/// The adaptive display state.
#[derive(Debug, Clone)]
pub(crate) struct Triggers {
    send_interval: Duration,
    srtt: bool,
    flagging: bool,
    glitch: u32,
    last_quick_confirmation: Option<Instant>,
}

impl Default for Triggers {
    fn default() -> Self {
        Self {
            send_interval: SEND_INTERVAL_MAX,
            srtt: false,
            flagging: false,
            glitch: 0,
            last_quick_confirmation: None,
        }
    }
}

impl Triggers {
    /// Takes a new smoothed round-trip time.
    pub(crate) fn set_rtt(&mut self, srtt: Duration) {
        self.send_interval = (srtt / 2).clamp(SEND_INTERVAL_MIN, SEND_INTERVAL_MAX);
    }

    /// Applies the hysteresis rules; `active` says whether any prediction
    /// is outstanding.
    pub(crate) fn update(&mut self, active: bool) {
        if self.send_interval > SRTT_TRIGGER_HIGH {
            self.srtt = true;
        } else if self.send_interval <= SRTT_TRIGGER_LOW && !active {
            self.srtt = false;
        }

        if self.send_interval > FLAG_TRIGGER_HIGH {
            self.flagging = true;
        } else if self.send_interval <= FLAG_TRIGGER_LOW {
            self.flagging = false;
        }

        if self.glitch > GLITCH_REPAIR_COUNT {
            self.flagging = true;
        }
    }

    /// A prediction made at `made` is still pending at `now`.
    pub(crate) fn pending(&mut self, made: Instant, now: Instant) {
        let age = now.saturating_duration_since(made);
        if age >= GLITCH_FLAG_THRESHOLD {
            self.glitch = GLITCH_REPAIR_COUNT * 2;
        } else if age >= GLITCH_THRESHOLD && self.glitch < GLITCH_REPAIR_COUNT {
            self.glitch = GLITCH_REPAIR_COUNT;
        }
    }

    /// A prediction made at `made` was confirmed at `now`: a quick one,
    /// far enough from the last, takes a step towards curing the glitch.
    pub(crate) fn confirmed(&mut self, made: Instant, now: Instant) {
        let quick = now.saturating_duration_since(made) < GLITCH_THRESHOLD;
        let spaced = self
            .last_quick_confirmation
            .is_none_or(|last| now.saturating_duration_since(last) >= GLITCH_REPAIR_MIN_INTERVAL);
        if quick && self.glitch > 0 && spaced {
            self.glitch -= 1;
            self.last_quick_confirmation = Some(now);
        }
    }

    /// Whether predictions are shown in adaptive mode; `oldest` is when the
    /// oldest pending prediction was made (the glitch rule applies from
    /// the moment it is due, before the next check records it).
    pub(crate) fn showing(&self, oldest: Option<Instant>, now: Instant) -> bool {
        let glitching =
            oldest.is_some_and(|made| now.saturating_duration_since(made) >= GLITCH_THRESHOLD);
        self.srtt || self.glitch > 0 || glitching
    }

    /// Whether shown predictions are underlined.
    pub(crate) fn underline(&self) -> bool {
        self.flagging
    }

    /// Whether the glitch trigger is below `level` (a timer is still due).
    pub(crate) fn glitch_below(&self, level: u32) -> bool {
        self.glitch < level
    }

    /// How long after its echo acknowledgement a keystroke is judged.
    pub(crate) fn grace(&self) -> Duration {
        ECHO_TIMEOUT + self.send_interval
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at_rtt(millis: u64) -> Triggers {
        let mut triggers = Triggers::default();
        triggers.set_rtt(ms(millis));
        triggers.update(false);
        triggers
    }

    #[test]
    fn thresholds() {
        let now = Instant::now();
        for (rtt, shown, underlined) in [
            (40, false, false),
            (60, false, false),
            (62, true, false),
            (160, true, false),
            (162, true, true),
            (1000, true, true),
        ] {
            let triggers = at_rtt(rtt);
            assert_eq!(triggers.showing(None, now), shown, "rtt {rtt}");
            assert_eq!(triggers.underline(), underlined, "rtt {rtt}");
        }
        assert_eq!(at_rtt(10).grace(), ms(70));
        assert_eq!(at_rtt(2000).grace(), ms(300));
    }

    #[test]
    fn hysteresis() {
        let now = Instant::now();
        let mut triggers = at_rtt(200);
        assert!(triggers.underline());
        // Between the low and high marks nothing changes.
        triggers.set_rtt(ms(130));
        triggers.update(false);
        assert!(triggers.underline());
        triggers.set_rtt(ms(100));
        triggers.update(false);
        assert!(!triggers.underline());
        triggers.set_rtt(ms(50));
        triggers.update(false);
        assert!(triggers.showing(None, now));
        triggers.set_rtt(ms(40));
        triggers.update(true);
        assert!(
            triggers.showing(None, now),
            "kept while predictions are out"
        );
        triggers.update(false);
        assert!(!triggers.showing(None, now));
    }

    #[test]
    fn glitch_trigger_and_cure() {
        let t0 = Instant::now();
        let mut triggers = at_rtt(10);
        assert!(!triggers.showing(Some(t0), t0 + ms(249)));
        assert!(triggers.showing(Some(t0), t0 + ms(250)));
        triggers.pending(t0, t0 + ms(250));
        assert!(triggers.showing(None, t0 + ms(250)));
        assert!(!triggers.underline());

        let mut now = t0 + ms(1000);
        for _ in 0..GLITCH_REPAIR_COUNT {
            assert!(triggers.showing(None, now));
            // The second is too close to the first to count; a slow one
            // never counts.
            triggers.confirmed(now, now + ms(10));
            triggers.confirmed(now + ms(20), now + ms(30));
            triggers.confirmed(now - ms(300), now + ms(200));
            now += GLITCH_REPAIR_MIN_INTERVAL;
        }
        assert!(!triggers.showing(None, now));

        triggers.pending(t0, t0 + GLITCH_FLAG_THRESHOLD);
        triggers.update(false);
        assert!(triggers.underline(), "a 5 s glitch underlines");
    }
}
