//! Traffic counters, updated atomically by the relay and readable at any time.
//!
//! The relay owns a [`Counters`] and bumps it with relaxed atomics on its hot
//! path; callers take a [`CountersSnapshot`], a plain value that can be
//! compared, printed on one line, or subtracted from a later snapshot.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};

/// Live counters for one direction.
#[derive(Debug, Default)]
pub(crate) struct DirectionCounters {
    pub(crate) received_packets: AtomicU64,
    pub(crate) received_bytes: AtomicU64,
    pub(crate) forwarded_packets: AtomicU64,
    pub(crate) forwarded_bytes: AtomicU64,
    pub(crate) dropped_loss: AtomicU64,
    pub(crate) dropped_blackout: AtomicU64,
    pub(crate) dropped_queue: AtomicU64,
    pub(crate) duplicated: AtomicU64,
    pub(crate) errors: AtomicU64,
}

/// Add one to a counter.
pub(crate) fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

/// Add `n` to a counter.
pub(crate) fn add(counter: &AtomicU64, n: usize) {
    counter.fetch_add(n as u64, Ordering::Relaxed);
}

impl DirectionCounters {
    fn snapshot(&self) -> DirectionSnapshot {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        DirectionSnapshot {
            received_packets: get(&self.received_packets),
            received_bytes: get(&self.received_bytes),
            forwarded_packets: get(&self.forwarded_packets),
            forwarded_bytes: get(&self.forwarded_bytes),
            dropped_loss: get(&self.dropped_loss),
            dropped_blackout: get(&self.dropped_blackout),
            dropped_queue: get(&self.dropped_queue),
            duplicated: get(&self.duplicated),
            errors: get(&self.errors),
        }
    }
}

/// Live counters for the whole relay.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) to_node: DirectionCounters,
    pub(crate) to_client: DirectionCounters,
    pub(crate) rebinds: AtomicU64,
    pub(crate) associations: AtomicU64,
}

impl Counters {
    pub(crate) fn snapshot(&self) -> CountersSnapshot {
        CountersSnapshot {
            to_node: self.to_node.snapshot(),
            to_client: self.to_client.snapshot(),
            rebinds: self.rebinds.load(Ordering::Relaxed),
            associations: self.associations.load(Ordering::Relaxed),
        }
    }
}

/// Counters for one direction at one moment.
///
/// Each copy sent counts in `forwarded_*`, so with duplication
/// `forwarded_packets` can exceed `received_packets`. Once the delay queue is
/// empty: `forwarded = received + duplicated - dropped_loss - dropped_blackout
/// - dropped_queue - errors`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DirectionSnapshot {
    /// Datagrams that arrived at the relay in this direction.
    pub received_packets: u64,
    /// Bytes in those datagrams.
    pub received_bytes: u64,
    /// Datagrams (copies included) sent on by the relay.
    pub forwarded_packets: u64,
    /// Bytes in those datagrams.
    pub forwarded_bytes: u64,
    /// Datagrams dropped by random loss.
    pub dropped_loss: u64,
    /// Datagrams (or queued copies) dropped because of a blackout.
    pub dropped_blackout: u64,
    /// Copies dropped because the bandwidth queue was full.
    pub dropped_queue: u64,
    /// Datagrams that were duplicated (one extra copy each).
    pub duplicated: u64,
    /// Socket errors on receive or send.
    pub errors: u64,
}

impl fmt::Display for DirectionSnapshot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "rx {} ({} B) fwd {} ({} B) loss {} blackout {} queue {} dup {} err {}",
            self.received_packets,
            self.received_bytes,
            self.forwarded_packets,
            self.forwarded_bytes,
            self.dropped_loss,
            self.dropped_blackout,
            self.dropped_queue,
            self.duplicated,
            self.errors
        )
    }
}

/// All counters of a relay at one moment.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CountersSnapshot {
    /// Client to node traffic.
    pub to_node: DirectionSnapshot,
    /// Node to client traffic.
    pub to_client: DirectionSnapshot,
    /// How many times upstream sockets were replaced (rebind or IP change).
    pub rebinds: u64,
    /// Client addresses seen so far, each with its own upstream socket.
    pub associations: u64,
}

impl fmt::Display for CountersSnapshot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "to-node: {} | to-client: {} | rebinds {} assoc {}",
            self.to_node, self.to_client, self.rebinds, self.associations
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshot_reads_what_was_bumped_and_displays_one_line() {
        let c = Counters::default();
        bump(&c.to_node.received_packets);
        add(&c.to_node.received_bytes, 1200);
        bump(&c.to_client.duplicated);
        bump(&c.rebinds);
        let s = c.snapshot();
        assert_eq!(s.to_node.received_packets, 1);
        assert_eq!(s.to_node.received_bytes, 1200);
        assert_eq!(s.to_client.duplicated, 1);
        assert_eq!(s.rebinds, 1);
        assert_eq!(s.associations, 0);
        let line = s.to_string();
        assert!(!line.contains('\n'));
        assert!(line.contains("to-node: rx 1 (1200 B)"), "{line}");
        assert!(line.contains("rebinds 1"), "{line}");
    }
}
