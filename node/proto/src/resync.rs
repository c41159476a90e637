//! Resync of a live terminal across reconnects, sans-IO, both halves.
//!
//! The client's half ([`Resync`]): which output offset to resume from, which keystrokes the node
//! has not acknowledged yet, and counters that say how well a reconnect went. The node's half
//! ([`InputLedger`]): which keystrokes it already applied, so that input sent again is applied
//! once.
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
    /// Output bytes skipped for a screen frame (still in the node's ringbuffer).
    pub skipped_bytes: u64,
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
    /// Bytes ever typed through this attachment (a count that renumbering does not change).
    typed: u64,
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

    /// A screen frame standing for all output below `offset`, skipping `skipped` bytes: true if
    /// it is news (not older than what was shown), and then it counts as shown.
    pub fn screen(&mut self, offset: u64, skipped: u64) -> bool {
        if offset < self.shown {
            return false;
        }
        self.shown = offset;
        self.stats.skipped_bytes = self.stats.skipped_bytes.saturating_add(skipped);
        true
    }

    /// Records typed bytes; returns their sequence number.
    pub fn input(&mut self, data: &[u8]) -> u64 {
        let seq = self.input_base + self.pending.len() as u64;
        self.pending.extend(data);
        self.typed += data.len() as u64;
        seq
    }

    /// How many of the bytes ever typed come before the node's sequence number `seq` (for
    /// echo acknowledgements, in a count that does not change when the node renumbers).
    pub fn typed_before(&self, seq: u64) -> u64 {
        let acked = self.typed - self.pending.len() as u64;
        if seq < self.input_base {
            // Acknowledged already: numbering is contiguous back from `input_base`.
            return acked.saturating_sub(self.input_base - seq);
        }
        let within = (seq - self.input_base).min(self.pending.len() as u64);
        acked + within
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

/// The node's half of input resync: the keystrokes of one session already applied.
///
/// Sequence numbers count the bytes of one keystroke stream
/// ([`crate::AttachRequest::input_stream`]). A holder resuming its own stream resends what was
/// not acknowledged, and what was applied already is dropped; a holder of another stream is told
/// to number its input from [`InputLedger::next_seq`] on.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct InputLedger {
    /// The stream that typed last (0 before any interactive attachment).
    stream: u64,
    /// Sequence number of the next byte to apply.
    next: u64,
}

impl InputLedger {
    /// Nothing applied yet.
    pub fn new() -> Self {
        InputLedger::default()
    }

    /// The next sequence number expected: everything below was applied.
    pub fn next_seq(&self) -> u64 {
        self.next
    }

    /// An interactive client attaches with keystroke stream `stream`; returns whether that is a
    /// change of stream (the client must renumber its pending input from
    /// [`InputLedger::next_seq`], none of it was applied).
    pub fn attach(&mut self, stream: u64) -> bool {
        let changed = self.stream != stream;
        self.stream = stream;
        changed
    }

    /// Keystrokes numbered from `seq`: returns the part not applied yet (None when all of it
    /// was), and counts it as applied. Bytes past a hole in the numbering are applied as they
    /// come.
    pub fn apply<'a>(&mut self, seq: u64, data: &'a [u8]) -> Option<&'a [u8]> {
        let end = seq.saturating_add(data.len() as u64);
        if end <= self.next {
            return None;
        }
        let skip = usize::try_from(self.next.saturating_sub(seq))
            .unwrap_or(usize::MAX)
            .min(data.len());
        self.next = end;
        Some(&data[skip..])
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
    }

    #[test]
    fn a_screen_frame_moves_past_the_skipped_bytes_and_old_output_is_dropped() {
        let mut resync = Resync::new(0, 0);
        assert_eq!(resync.output(0, b"abc"), b"abc");
        // Output in flight before the screen still shows; then the screen stands for 0..5000.
        assert_eq!(resync.output(3, b"de"), b"de");
        assert!(resync.screen(5_000, 4_995));
        assert_eq!(resync.resume_from(), 5_000);
        assert_eq!(resync.stats().skipped_bytes, 4_995);
        // Bytes below the screen's offset that still arrive are not shown.
        assert_eq!(resync.output(4_995, b"0123456789"), b"56789");
        // A stale screen (older than what was shown) is ignored.
        assert!(!resync.screen(4_000, 1));
        assert_eq!(resync.resume_from(), 5_005);
    }

    #[test]
    fn echo_acks_map_to_bytes_typed_whatever_the_numbering() {
        let mut resync = Resync::new(0, 40);
        resync.input(b"abc");
        resync.input(b"de");
        assert_eq!(resync.typed_before(40), 0);
        assert_eq!(resync.typed_before(43), 3);
        resync.acknowledge(42);
        assert_eq!(resync.typed_before(45), 5);
        // An echo ack for keystrokes already acknowledged counts only those.
        assert_eq!(resync.typed_before(41), 1);
        assert_eq!(resync.typed_before(99), 5, "never more than was typed");
        // Another stream typed meanwhile: the node renumbers from 7; the count stays.
        resync.reattached(7, true);
        assert_eq!(resync.typed_before(7), 2);
        assert_eq!(resync.typed_before(10), 5);
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

    #[test]
    fn ledger_applies_each_byte_once() {
        let mut ledger = InputLedger::new();
        assert!(ledger.attach(7), "the first stream is a change from none");
        assert_eq!(ledger.apply(0, b"abc"), Some(&b"abc"[..]));
        assert_eq!(ledger.next_seq(), 3);
        // A reconnect of the same stream resends from 1: only "de" is new.
        assert!(!ledger.attach(7));
        assert_eq!(ledger.apply(1, b"bcde"), Some(&b"de"[..]));
        assert_eq!(ledger.apply(0, b"abcde"), None);
        assert_eq!(ledger.apply(5, b""), None);
        assert_eq!(ledger.next_seq(), 5);
    }

    #[test]
    fn ledger_keeps_counting_across_streams_and_holes() {
        let mut ledger = InputLedger::new();
        ledger.attach(1);
        assert_eq!(ledger.apply(0, b"ab"), Some(&b"ab"[..]));
        // Another stream takes over: it is told to renumber, and the count goes on.
        assert!(ledger.attach(2));
        assert_eq!(ledger.next_seq(), 2);
        // Its stale numbering from 0 would be dropped: that is why the client renumbers.
        assert_eq!(ledger.apply(0, b"xy"), None);
        assert_eq!(ledger.apply(2, b"xy"), Some(&b"xy"[..]));
        // A hole in the numbering is not waited for.
        assert_eq!(ledger.apply(10, b"z"), Some(&b"z"[..]));
        assert_eq!(ledger.next_seq(), 11);
        assert!(ledger.attach(1));
        assert_eq!(ledger.apply(u64::MAX, b"q"), Some(&b"q"[..]));
        assert_eq!(ledger.next_seq(), u64::MAX);
    }
}
