//! The scrollback ringbuffer: every byte a session's PTY printed, addressed by its absolute
//! `u64` offset since the session began.
//!
//! Sans-IO and pure: the node appends PTY output, each attachment keeps its own cursor (an
//! offset) and reads from it. A cursor that fell behind what the buffer still holds learns how
//! many bytes it lost and continues from the oldest byte held. Offsets never wrap in practice
//! (2^64 bytes).

use std::ops::Range;

/// A fixed-capacity byte ring addressed by absolute offsets.
#[derive(Debug, Clone)]
pub struct RingBuffer {
    storage: Vec<u8>,
    capacity: usize,
    /// Absolute offset one past the newest byte.
    end: u64,
    /// Bytes currently held (`<= capacity`).
    held: usize,
}

/// What a read from an offset returned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chunk {
    /// Bytes between the requested offset and the oldest byte held, lost to overflow.
    pub lost: u64,
    /// Absolute offset of `data[0]`.
    pub offset: u64,
    /// The bytes.
    pub data: Vec<u8>,
}

/// A read asked for bytes the session has not printed yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("offset {requested} is beyond the end of the output ({end})")]
pub struct OffsetAhead {
    /// The offset asked for.
    pub requested: u64,
    /// The current end offset.
    pub end: u64,
}

impl RingBuffer {
    /// An empty ring holding at most `capacity` bytes (at least one).
    pub fn new(capacity: usize) -> Self {
        let capacity = capacity.max(1);
        RingBuffer {
            storage: Vec::new(),
            capacity,
            end: 0,
            held: 0,
        }
    }

    /// A ring of `capacity` holding `bytes` from offset `start` on, as a previous binary of
    /// this process held it (see [`crate::upgrade`]): offsets carry on where they were. The
    /// bytes become the storage without a copy when they can.
    pub fn resumed(capacity: usize, start: u64, mut bytes: Vec<u8>) -> Self {
        let capacity = capacity.max(1);
        let held = bytes.len();
        if start == 0 && held <= capacity {
            // Still growing: offsets are indices.
            return RingBuffer {
                storage: bytes,
                capacity,
                end: held as u64,
                held,
            };
        }
        if held == capacity {
            // Full: the byte at offset `start` belongs at index `start % capacity`.
            bytes.rotate_right((start % capacity as u64) as usize);
            return RingBuffer {
                storage: bytes,
                capacity,
                end: start + held as u64,
                held,
            };
        }
        let mut ring = RingBuffer::new(capacity);
        // Offsets no longer start at 0: index them modulo the capacity from the outset.
        ring.storage = vec![0; capacity];
        ring.end = start;
        ring.push(&bytes);
        ring
    }

    /// Every byte held, oldest first, and the offset of the first, taking the storage (no
    /// copy): what [`RingBuffer::resumed`] takes back.
    pub fn into_contents(mut self) -> Chunk {
        let start = self.start();
        let at = if self.storage.len() < self.capacity {
            0
        } else {
            self.index(start)
        };
        self.storage.rotate_left(at);
        self.storage.truncate(self.held);
        Chunk {
            lost: 0,
            offset: start,
            data: self.storage,
        }
    }

    /// Every byte held, oldest first, and the offset of the first.
    pub fn contents(&self) -> Chunk {
        let (a, b) = self.ranges(self.start(), self.len());
        let mut data = Vec::with_capacity(self.len());
        data.extend_from_slice(&self.storage[a]);
        data.extend_from_slice(&self.storage[b]);
        Chunk {
            lost: 0,
            offset: self.start(),
            data,
        }
    }

    /// The maximum number of bytes held.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Offset of the oldest byte held.
    pub fn start(&self) -> u64 {
        self.end - self.held as u64
    }

    /// Offset one past the newest byte: the total number of bytes ever appended.
    pub fn end(&self) -> u64 {
        self.end
    }

    /// Bytes of memory the ring has allocated for its storage so far.
    pub fn allocated(&self) -> usize {
        self.storage.len()
    }

    /// Bytes currently held.
    pub fn len(&self) -> usize {
        self.held
    }

    /// Whether nothing is held.
    pub fn is_empty(&self) -> bool {
        self.held == 0
    }

    fn index(&self, offset: u64) -> usize {
        (offset % self.capacity as u64) as usize
    }

    /// Appends bytes, overwriting the oldest when full.
    pub fn push(&mut self, mut bytes: &[u8]) {
        if bytes.len() > self.capacity {
            // Only the newest `capacity` bytes can be held; the rest still count in offsets.
            let skip = bytes.len() - self.capacity;
            self.end += skip as u64;
            bytes = &bytes[skip..];
        }
        let needed = self.held + bytes.len();
        if self.storage.len() < self.capacity && needed > self.storage.len() {
            // Grow lazily (doubling) so a session costs about what it printed, not its capacity.
            let want = needed.max(self.storage.len() * 2);
            self.storage.resize(want.min(self.capacity), 0);
        }
        if self.storage.len() < self.capacity {
            // Still growing, so nothing was ever dropped: the start is offset 0 and offsets are
            // indices. Once full size, offsets map to indices modulo the capacity, which agrees.
            let at = self.held;
            self.storage[at..at + bytes.len()].copy_from_slice(bytes);
        } else {
            let at = self.index(self.end);
            let first = bytes.len().min(self.capacity - at);
            self.storage[at..at + first].copy_from_slice(&bytes[..first]);
            self.storage[..bytes.len() - first].copy_from_slice(&bytes[first..]);
        }
        self.end += bytes.len() as u64;
        self.held = (self.held + bytes.len()).min(self.capacity);
    }

    /// The two storage ranges (in order) that hold absolute offsets `from..self.end`.
    fn ranges(&self, from: u64, len: usize) -> (Range<usize>, Range<usize>) {
        if self.storage.len() < self.capacity {
            let at = (from - self.start()) as usize;
            return (at..at + len, 0..0);
        }
        let at = self.index(from);
        let first = len.min(self.capacity - at);
        (at..at + first, 0..len - first)
    }

    /// Reads up to `max` bytes from `offset`. If `offset` is older than the oldest byte held,
    /// the read starts at the oldest byte and `lost` says how many bytes were skipped.
    pub fn read_from(&self, offset: u64, max: usize) -> Result<Chunk, OffsetAhead> {
        if offset > self.end {
            return Err(OffsetAhead {
                requested: offset,
                end: self.end,
            });
        }
        let from = offset.max(self.start());
        let lost = from - offset;
        let len = ((self.end - from) as usize).min(max);
        let (a, b) = self.ranges(from, len);
        let mut data = Vec::with_capacity(len);
        data.extend_from_slice(&self.storage[a]);
        data.extend_from_slice(&self.storage[b]);
        Ok(Chunk {
            lost,
            offset: from,
            data,
        })
    }

    /// The byte at absolute `offset`, if held.
    fn byte_at(&self, offset: u64) -> u8 {
        let (a, _) = self.ranges(offset, 1);
        self.storage[a.start]
    }

    /// Offset where the last `lines` lines begin. A trailing newline does not start an empty
    /// last line, so "last 1 line" of `a\nb\n` is `b\n`.
    pub fn last_lines_offset(&self, lines: usize) -> u64 {
        if lines == 0 {
            return self.end;
        }
        let start = self.start();
        let mut pos = self.end;
        if pos > start && self.byte_at(pos - 1) == b'\n' {
            pos -= 1;
        }
        let mut seen = 0;
        while pos > start {
            if self.byte_at(pos - 1) == b'\n' {
                seen += 1;
                if seen == lines {
                    return pos;
                }
            }
            pos -= 1;
        }
        start
    }

    /// The last `lines` lines held (fewer if fewer are held).
    pub fn last_lines(&self, lines: usize) -> Chunk {
        let from = self.last_lines_offset(lines);
        // `from` lies within what is held, so the read cannot fail.
        self.read_from(from, usize::MAX).unwrap_or(Chunk {
            lost: 0,
            offset: self.end,
            data: Vec::new(),
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// A ring handed down across an upgrade holds the same bytes at the same offsets, and
        /// goes on taking output exactly as the original would.
        #[test]
        fn a_resumed_ring_is_the_same_ring(
            capacity in 1usize..64,
            before in proptest::collection::vec(any::<u8>(), 0..200),
            after in proptest::collection::vec(any::<u8>(), 0..200),
        ) {
            let mut original = RingBuffer::new(capacity);
            original.push(&before);
            let held = original.contents();
            prop_assert_eq!(&original.clone().into_contents(), &held);
            let mut resumed = RingBuffer::resumed(capacity, held.offset, held.data.clone());
            prop_assert_eq!(resumed.start(), original.start());
            prop_assert_eq!(resumed.end(), original.end());
            original.push(&after);
            resumed.push(&after);
            prop_assert_eq!(resumed.contents(), original.contents());
            prop_assert_eq!(
                resumed.read_from(0, 1000).unwrap(),
                original.read_from(0, 1000).unwrap()
            );
        }

        /// Resumed with another capacity (a changed `ringbuffer` setting), a ring still holds
        /// what fits at the same offsets and appends after it.
        #[test]
        fn a_ring_resumed_with_another_capacity_keeps_its_offsets(
            capacity in 1usize..64,
            start in 0u64..500,
            held in proptest::collection::vec(any::<u8>(), 0..64),
            after in proptest::collection::vec(any::<u8>(), 0..100),
        ) {
            let mut ring = RingBuffer::resumed(capacity, start, held.clone());
            let mut expected = held.clone();
            expected.extend_from_slice(&after);
            ring.push(&after);
            let end = start + expected.len() as u64;
            prop_assert_eq!(ring.end(), end);
            let kept = expected.len().min(capacity);
            let chunk = ring.read_from(end - kept as u64, 1000).unwrap();
            prop_assert_eq!(chunk.data, expected[expected.len() - kept..].to_vec());
        }
    }

    #[test]
    fn read_back_without_wrap() {
        let mut ring = RingBuffer::new(16);
        ring.push(b"hello ");
        ring.push(b"world");
        assert_eq!(ring.end(), 11);
        assert_eq!(ring.start(), 0);
        let chunk = ring.read_from(6, 100).unwrap();
        assert_eq!(
            chunk,
            Chunk {
                lost: 0,
                offset: 6,
                data: b"world".to_vec()
            }
        );
        assert_eq!(ring.read_from(0, 5).unwrap().data, b"hello");
        assert_eq!(ring.read_from(11, 5).unwrap().data, b"");
        assert_eq!(
            ring.read_from(12, 5),
            Err(OffsetAhead {
                requested: 12,
                end: 11
            })
        );
    }

    #[test]
    fn overflow_reports_lost_bytes() {
        let mut ring = RingBuffer::new(8);
        ring.push(b"0123456789abcdef");
        assert_eq!(ring.start(), 8);
        let chunk = ring.read_from(3, 100).unwrap();
        assert_eq!(chunk.lost, 5);
        assert_eq!(chunk.offset, 8);
        assert_eq!(chunk.data, b"89abcdef");
        ring.push(b"XYZ");
        assert_eq!(ring.read_from(0, 100).unwrap().data, b"bcdefXYZ");
    }

    #[test]
    fn storage_grows_with_what_was_printed_not_with_pushes() {
        let mut ring = RingBuffer::new(4 << 20);
        for _ in 0..1000 {
            ring.push(b"0123456789abcdef");
        }
        assert_eq!(ring.len(), 16_000);
        assert!(
            ring.allocated() <= 32_000,
            "allocated {} for 16000 bytes",
            ring.allocated()
        );
        assert_eq!(ring.read_from(0, 16).unwrap().data, b"0123456789abcdef");
    }

    #[test]
    fn last_lines() {
        let mut ring = RingBuffer::new(64);
        ring.push(b"one\ntwo\nthree\n");
        assert_eq!(ring.last_lines(1).data, b"three\n");
        assert_eq!(ring.last_lines(2).data, b"two\nthree\n");
        assert_eq!(ring.last_lines(10).data, b"one\ntwo\nthree\n");
        assert_eq!(ring.last_lines(0).data, b"");
        ring.push(b"$ ");
        assert_eq!(ring.last_lines(1).data, b"$ ");
        assert_eq!(ring.last_lines(2).data, b"three\n$ ");
    }

    /// A model: the whole history in a Vec.
    fn check(capacity: usize, pushes: &[Vec<u8>], offset: u64, max: usize, lines: usize) {
        let mut ring = RingBuffer::new(capacity);
        let mut history = Vec::new();
        for p in pushes {
            ring.push(p);
            history.extend_from_slice(p);
        }
        let end = history.len() as u64;
        assert_eq!(ring.end(), end);
        let start = end.saturating_sub(capacity as u64);
        assert_eq!(ring.start(), start);
        let offset = offset % (end + 2);
        match ring.read_from(offset, max) {
            Err(e) => assert!(offset > end, "{e}"),
            Ok(chunk) => {
                let from = offset.max(start);
                assert_eq!(chunk.lost, from - offset);
                assert_eq!(chunk.offset, from);
                let to = (from as usize + max).min(history.len());
                assert_eq!(chunk.data, &history[from as usize..to]);
            }
        }
        // last_lines agrees with a naive scan of what is held.
        let held = &history[start as usize..];
        let got = ring.last_lines(lines).data;
        let mut body = held;
        if body.last() == Some(&b'\n') {
            body = &body[..body.len() - 1];
        }
        let cut = if lines == 0 {
            held.len()
        } else {
            let newlines: Vec<usize> = body
                .iter()
                .enumerate()
                .filter(|(_, b)| **b == b'\n')
                .map(|(i, _)| i)
                .collect();
            if newlines.len() >= lines {
                newlines[newlines.len() - lines] + 1
            } else {
                0
            }
        };
        assert_eq!(got, &held[cut..]);
    }

    proptest! {
        #[test]
        fn any_offset_any_wrap(
            capacity in 1usize..64,
            pushes in proptest::collection::vec(
                proptest::collection::vec(prop_oneof![Just(b'\n'), any::<u8>()], 0..40), 0..12),
            offset in any::<u64>(),
            max in 0usize..100,
            lines in 0usize..6,
        ) {
            check(capacity, &pushes, offset, max, lines);
        }
    }
}
