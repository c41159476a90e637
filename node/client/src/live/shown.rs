//! When to tell the node how far the terminal has shown output, sans-IO.
//!
//! The node paces output by these reports, so a flood is reported as it is drawn. A keystroke's
//! echo is not: reporting every few bytes at once would cost a packet, a wake-up on the node and
//! an acknowledgement back for each keystroke. Small amounts wait until the next keystroke goes
//! up (the report rides in the same packet, ahead of the input, so the node judges the input
//! with the terminal's true progress) or until [`REPORT_LATER`] has passed.

use std::time::{Duration, Instant};

/// Unreported output past which the report goes at once: well under the node's smallest window
/// (12 KiB) and its smallest backlog worth skipping (32 KiB), so waiting never stalls it. The
/// node counts each frame's overhead too, so every batch of output handed over counts
/// [`FRAME_WEIGHT`] more: a program writing a few bytes at a time is reported as a flood.
pub(super) const REPORT_NOW_BYTES: u64 = 4 * 1024;

/// What one batch of output weighs beyond its bytes (the node counts 24 bytes a frame).
const FRAME_WEIGHT: u64 = 32;

/// The longest a small report waits.
pub(super) const REPORT_LATER: Duration = Duration::from_millis(200);

/// The reports of one link.
#[derive(Debug, Default)]
pub(super) struct ShownReports {
    reported: u64,
    /// Batches of output shown since the last report.
    batches: u64,
    due: Option<Instant>,
}

impl ShownReports {
    /// The terminal has shown output up to `offset` at `now`: the offset to report at once, or
    /// None (a report is then due within [`REPORT_LATER`] if anything is unreported).
    pub(super) fn shown(&mut self, offset: u64, now: Instant) -> Option<u64> {
        if offset <= self.reported {
            return None;
        }
        self.batches += 1;
        if offset - self.reported + self.batches * FRAME_WEIGHT >= REPORT_NOW_BYTES {
            return self.report(offset);
        }
        self.due.get_or_insert(now + REPORT_LATER);
        None
    }

    /// Input is about to go up: the offset to report first, if any output is unreported.
    pub(super) fn before_input(&mut self, offset: u64) -> Option<u64> {
        (offset > self.reported)
            .then(|| self.report(offset))
            .flatten()
    }

    /// When the waiting report is due, if one waits.
    pub(super) fn due(&self) -> Option<Instant> {
        self.due
    }

    /// The waiting report, now due.
    pub(super) fn take_due(&mut self, offset: u64) -> Option<u64> {
        self.due = None;
        self.before_input(offset)
    }

    fn report(&mut self, offset: u64) -> Option<u64> {
        self.reported = offset;
        self.batches = 0;
        self.due = None;
        Some(offset)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_flood_is_reported_at_once_and_an_echo_later() {
        let now = Instant::now();
        let mut reports = ShownReports::default();
        assert_eq!(reports.shown(10_000, now), Some(10_000));
        assert_eq!(reports.due(), None);
        assert_eq!(reports.shown(10_001, now), None);
        assert_eq!(reports.due(), Some(now + REPORT_LATER));
        // More echoes do not push the deadline back.
        let later = now + Duration::from_millis(100);
        assert_eq!(reports.shown(10_002, later), None);
        assert_eq!(reports.due(), Some(now + REPORT_LATER));
        assert_eq!(reports.take_due(10_002), Some(10_002));
        assert_eq!(reports.due(), None);
        assert_eq!(reports.take_due(10_002), None, "nothing new to report");
    }

    #[test]
    fn a_keystroke_carries_the_waiting_report() {
        let now = Instant::now();
        let mut reports = ShownReports::default();
        assert_eq!(reports.shown(3, now), None);
        assert_eq!(reports.before_input(3), Some(3));
        assert_eq!(reports.due(), None, "reported with the keystroke");
        assert_eq!(reports.before_input(3), None);
        // Enough small echoes add up to a report at once.
        assert_eq!(reports.shown(3 + REPORT_NOW_BYTES / 2, now), None);
        assert_eq!(
            reports.shown(3 + REPORT_NOW_BYTES, now),
            Some(3 + REPORT_NOW_BYTES)
        );
    }

    #[test]
    fn many_tiny_batches_count_as_a_flood() {
        let now = Instant::now();
        let mut reports = ShownReports::default();
        let batches = REPORT_NOW_BYTES / (FRAME_WEIGHT + 1);
        let reported = (1..=batches + 1).find_map(|n| reports.shown(n, now));
        assert!(
            reported.is_some_and(|offset| offset <= batches + 1),
            "{reported:?}"
        );
    }
}
