//! Echo acknowledgements, sans-IO: telling the client which keystrokes have had time to show
//! their effect, mosh's "echo ack".
//!
//! Input acknowledgements say what the node wrote into the PTY; that alone cannot tell a
//! keystroke whose echo is still on its way from one that will never be echoed (a password).
//! So for each applied input the node waits [`ECHO_GRACE`], notes where the session's output
//! ended then, and once the client has been sent output up to there, sends an echo ack: any
//! echo of those keystrokes is in the output the client already has.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// How long a program gets to echo a keystroke (mosh uses 50 ms).
pub const ECHO_GRACE: Duration = Duration::from_millis(50);

/// Applied input waiting for its echo ack.
#[derive(Debug, Clone, Copy)]
struct Pending {
    /// Everything below this sequence number was applied.
    seq: u64,
    /// When its grace ends.
    due: Instant,
    /// Where the output ended when the grace ended.
    end: Option<u64>,
}

/// The echo acknowledgements of one attachment.
#[derive(Debug, Default)]
pub struct EchoLedger {
    pending: VecDeque<Pending>,
    /// Everything below this sequence number was applied at least a grace ago.
    graced: u64,
}

impl EchoLedger {
    /// Input below `seq` was written into the PTY at `now`.
    pub fn applied(&mut self, seq: u64, now: Instant) {
        self.pending.push_back(Pending {
            seq,
            due: now + ECHO_GRACE,
            end: None,
        });
    }

    /// When the next grace ends, if one is running.
    pub fn next_due(&self) -> Option<Instant> {
        self.pending.iter().find(|p| p.end.is_none()).map(|p| p.due)
    }

    /// Notes, for every grace over by `now`, that the output ended at `end`.
    pub fn tick(&mut self, now: Instant, end: u64) {
        for pending in self.pending.iter_mut() {
            if pending.end.is_none() && pending.due <= now {
                pending.end = Some(end);
                self.graced = self.graced.max(pending.seq);
            }
        }
    }

    /// Everything below this sequence number was applied at least a grace ago: the moment to
    /// acknowledge it, in the same packet as its echo ack, off the keystroke's path.
    pub fn graced(&self) -> u64 {
        self.graced
    }

    /// The highest sequence number whose echo, if any, is in output below `sent` (the output
    /// the client has been sent), if there is a new one.
    pub fn ready(&mut self, sent: u64) -> Option<u64> {
        let mut ready = None;
        while let Some(front) = self.pending.front() {
            match front.end {
                Some(end) if end <= sent => {
                    ready = Some(front.seq);
                    self.pending.pop_front();
                }
                _ => break,
            }
        }
        ready
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_echo_ack_waits_for_the_grace_and_for_the_output_then() {
        let now = Instant::now();
        let mut ledger = EchoLedger::default();
        ledger.applied(3, now);
        assert_eq!(ledger.next_due(), Some(now + ECHO_GRACE));
        ledger.tick(now + ECHO_GRACE / 2, 100);
        assert_eq!(ledger.ready(1_000), None, "the grace is not over");
        assert_eq!(ledger.graced(), 0);
        ledger.tick(now + ECHO_GRACE, 120);
        assert_eq!(ledger.graced(), 3);
        assert_eq!(ledger.next_due(), None);
        assert_eq!(ledger.ready(119), None, "output up to 120 not sent yet");
        assert_eq!(ledger.ready(120), Some(3));
        assert_eq!(ledger.ready(500), None, "sent once");
    }

    #[test]
    fn later_input_is_acked_in_order() {
        let now = Instant::now();
        let mut ledger = EchoLedger::default();
        ledger.applied(1, now);
        ledger.applied(2, now + Duration::from_millis(10));
        ledger.tick(now + ECHO_GRACE, 50);
        assert_eq!(ledger.ready(50), Some(1));
        ledger.tick(now + ECHO_GRACE + Duration::from_millis(10), 60);
        assert_eq!(ledger.ready(60), Some(2));
    }
}
