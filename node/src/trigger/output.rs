//! A run's output, sans-IO: bytes addressed by absolute offsets since the run began, of which
//! only the last `capacity` are kept; everything is counted. `logs --follow` reads from an
//! offset and learns how much of what it asked for is gone.

use std::collections::VecDeque;

/// The kept tail of a run's output and the count of everything it printed.
#[derive(Debug, Clone, Default)]
pub struct OutputRing {
    capacity: usize,
    total: u64,
    kept: VecDeque<u8>,
}

/// What a read from an offset returns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Read {
    /// The offset of the first byte of `data`.
    pub from: u64,
    /// Bytes asked for that are no longer kept.
    pub skipped: u64,
    /// The bytes.
    pub data: Vec<u8>,
}

impl OutputRing {
    /// An empty ring keeping at most `capacity` bytes.
    pub fn new(capacity: u64) -> OutputRing {
        OutputRing {
            capacity: usize::try_from(capacity).unwrap_or(usize::MAX),
            total: 0,
            kept: VecDeque::new(),
        }
    }

    /// A ring restored from storage: `kept` are the last bytes of `total`.
    pub fn restored(capacity: u64, total: u64, kept: &[u8]) -> OutputRing {
        let mut ring = OutputRing::new(capacity);
        ring.push(kept);
        ring.total = total.max(kept.len() as u64);
        ring
    }

    /// Appends output, dropping the oldest bytes beyond the capacity.
    pub fn push(&mut self, bytes: &[u8]) {
        self.total += bytes.len() as u64;
        let keep = bytes.len().min(self.capacity);
        let overflow = (self.kept.len() + keep).saturating_sub(self.capacity);
        self.kept.drain(..overflow.min(self.kept.len()));
        self.kept.extend(&bytes[bytes.len() - keep..]);
    }

    /// Every byte printed.
    pub fn total(&self) -> u64 {
        self.total
    }

    /// Bytes kept.
    pub fn kept_len(&self) -> u64 {
        self.kept.len() as u64
    }

    /// The kept bytes.
    pub fn kept(&self) -> Vec<u8> {
        self.kept.iter().copied().collect()
    }

    /// The bytes from offset `from` on, as kept.
    pub fn read_from(&self, from: u64) -> Read {
        self.read_at_most(from, usize::MAX)
    }

    /// At most `max` bytes from offset `from` on, as kept.
    pub fn read_at_most(&self, from: u64, max: usize) -> Read {
        let first_kept = self.total - self.kept.len() as u64;
        let start = from.clamp(first_kept, self.total);
        let skip_in_kept = usize::try_from(start - first_kept).unwrap_or(usize::MAX);
        Read {
            from: start,
            skipped: start - from.min(start),
            data: (self.kept.iter().skip(skip_in_kept).take(max))
                .copied()
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_flood_is_capped_and_counted() {
        let mut ring = OutputRing::new(8);
        ring.push(b"0123");
        ring.push(b"456789abcdef");
        assert_eq!(ring.total(), 16);
        assert_eq!(ring.kept(), b"89abcdef");
        let read = ring.read_from(0);
        assert_eq!((read.from, read.skipped), (8, 8));
        assert_eq!(read.data, b"89abcdef");
        let read = ring.read_from(12);
        assert_eq!(
            (read.from, read.skipped, read.data),
            (12, 0, b"cdef".to_vec())
        );
        assert!(ring.read_from(16).data.is_empty());
        assert_eq!(ring.read_from(99).from, 16);
        let read = ring.read_at_most(0, 3);
        assert_eq!(
            (read.from, read.skipped, read.data),
            (8, 8, b"89a".to_vec())
        );
        assert_eq!(ring.read_at_most(11, 3).data, b"bcd");
    }

    #[test]
    fn small_output_is_kept_whole_and_restores() {
        let mut ring = OutputRing::new(1024);
        ring.push(b"hello\n");
        assert_eq!(ring.kept(), b"hello\n");
        let back = OutputRing::restored(1024, 100, b"tail");
        assert_eq!((back.total(), back.kept_len()), (100, 4));
        assert_eq!(back.read_from(96).data, b"tail");
        let empty = OutputRing::new(0);
        assert_eq!(empty.read_from(0).data, b"");
    }
}
