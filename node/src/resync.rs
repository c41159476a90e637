//! The client's half of resync, sans-IO: which output offset to resume from, which keystrokes
//! the node has not acknowledged yet, and counters that say how well a reconnect went.
//!
//! - Output: `shown` is one past the last session byte handed to the terminal. A resumed
//!   attachment asks for output from `shown`; any byte below it that still arrives is dropped,
//!   so nothing is shown twice.
//! - Input: typed bytes get consecutive sequence numbers and stay buffered until acknowledged.
//!   After a reconnect the node says which sequence number it expects next; everything from
//!   there is sent again, and the node drops what it already applied.

use std::collections::VecDeque;

/// Counters of one attachment's life.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ResyncStats {
    /// Session bytes shown.
    pub output_bytes: u64,
    /// Output bytes received that had already been shown (re-sent by the node).
    pub duplicate_bytes: u64,
    /// Output bytes lost to ringbuffer overflow (gap markers).
    pub lost_bytes: u64,
    /// Successful re-attachments after a lost connection.
    pub reconnects: u64,
    /// Input bytes sent again after a reconnect.
    pub input_resent_bytes: u64,
}

/// Resync state of one attachment, across connections.
#[derive(Debug, Default)]
pub struct Resync {
    shown: u64,
    /// Sequence number of `pending[0]`.
    input_base: u64,
    pending: VecDeque<u8>,
    stats: ResyncStats,
}

impl Resync {
    /// The state right after the first attach.
    pub fn new(offset: u64, input_seq: u64) -> Self {
        Resync {
            shown: offset,
            input_base: input_seq,
            ..Resync::default()
        }
    }

    /// Where to resume output after a reconnect.
    pub fn resume_from(&self) -> u64 {
        self.shown
    }

    /// The counters so far.
    pub fn stats(&self) -> ResyncStats {
        self.stats
    }

    /// A re-attachment succeeded; the node expects input `input_seq` next (and, with
    /// `input_reset`, saw another client's keystrokes since ours). What is still
    /// [`Resync::unacked`] afterwards must be sent again.
    pub fn reattached(&mut self, input_seq: u64, input_reset: bool) {
        self.stats.reconnects += 1;
        if input_reset {
            // Another keystroke stream typed in between: none of ours past the last
            // acknowledgement was applied; number it all from where the node is.
            self.input_base = input_seq;
        } else {
            self.align(input_seq);
        }
        self.stats.input_resent_bytes += self.pending.len() as u64;
    }

    fn align(&mut self, next: u64) {
        if next < self.input_base {
            // The node knows less than we thought (it never saw our earlier input): number
            // from where it is.
            self.input_base = next;
            return;
        }
        self.acknowledge(next);
        self.input_base = next;
    }

    /// Output at `offset`: returns the part not shown yet, and records it as shown.
    pub fn output<'a>(&mut self, offset: u64, data: &'a [u8]) -> &'a [u8] {
        let skip = usize::try_from(self.shown.saturating_sub(offset))
            .unwrap_or(usize::MAX)
            .min(data.len());
        self.stats.duplicate_bytes += skip as u64;
        let fresh = &data[skip..];
        if !fresh.is_empty() {
            self.shown = offset + data.len() as u64;
            self.stats.output_bytes += fresh.len() as u64;
        }
        fresh
    }

    /// The node skipped `lost` bytes that overflowed its ringbuffer.
    pub fn gap(&mut self, lost: u64) {
        self.stats.lost_bytes += lost;
    }

    /// Records typed bytes; returns their sequence number.
    pub fn input(&mut self, data: &[u8]) -> u64 {
        let seq = self.input_base + self.pending.len() as u64;
        self.pending.extend(data);
        seq
    }

    /// The node applied everything below `seq`.
    pub fn acknowledge(&mut self, seq: u64) {
        let applied = seq
            .saturating_sub(self.input_base)
            .min(self.pending.len() as u64);
        self.pending.drain(..applied as usize);
        self.input_base += applied;
    }

    /// Input not yet acknowledged, with its first sequence number.
    pub fn unacked(&self) -> Option<(u64, Vec<u8>)> {
        (!self.pending.is_empty())
            .then(|| (self.input_base, self.pending.iter().copied().collect()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_is_never_shown_twice() {
        let mut resync = Resync::new(100, 0);
        assert_eq!(resync.output(100, b"abc"), b"abc");
        assert_eq!(resync.resume_from(), 103);
        // A resumed link re-sends from 101: only the new byte is shown.
        assert_eq!(resync.output(101, b"bcd"), b"d");
        assert_eq!(resync.output(90, b"old"), b"");
        assert_eq!(resync.stats().duplicate_bytes, 5);
        assert_eq!(resync.stats().output_bytes, 4);
        // After a gap the node continues further on.
        resync.gap(50);
        assert_eq!(resync.output(154, b"xy"), b"xy");
        assert_eq!(resync.resume_from(), 156);
        assert_eq!(resync.stats().lost_bytes, 50);
    }

    #[test]
    fn input_is_resent_from_the_first_unacknowledged_byte() {
        let mut resync = Resync::new(0, 10);
        assert_eq!(resync.input(b"abc"), 10);
        assert_eq!(resync.input(b"de"), 13);
        resync.acknowledge(12);
        assert_eq!(resync.unacked(), Some((12, b"cde".to_vec())));
        // The node applied through 14 before the link dropped: only "e" goes again.
        resync.reattached(14, false);
        assert_eq!(resync.unacked(), Some((14, b"e".to_vec())));
        assert_eq!(resync.stats().input_resent_bytes, 1);
        resync.acknowledge(15);
        assert_eq!(resync.unacked(), None);
        assert_eq!(resync.input(b"f"), 15);
        resync.reattached(16, false);
        assert_eq!(resync.unacked(), None);
        // Another client typed 3 bytes while we were away: all 2 of ours go again, renumbered.
        assert_eq!(resync.input(b"gh"), 16);
        resync.reattached(19, true);
        assert_eq!(resync.unacked(), Some((19, b"gh".to_vec())));
        assert_eq!(resync.stats().reconnects, 3);
    }
}
