//! Incremental UTF-8 decoding of raw PTY output.
//!
//! PTY reads cut the byte stream anywhere, so a multi-byte character may be
//! split across two reads. [`Utf8Decoder`] keeps an incomplete trailing
//! sequence (at most 3 bytes) until the next call and turns every invalid
//! byte sequence into U+FFFD, one replacement per maximal invalid subpart
//! (the same policy as [`String::from_utf8_lossy`]). It never allocates.

/// The replacement text handed to the sink for invalid input.
const REPLACEMENT: &str = "\u{FFFD}";

/// Stateful UTF-8 decoder that carries incomplete sequences between calls.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct Utf8Decoder {
    pending: [u8; 4],
    pending_len: usize,
}

impl Utf8Decoder {
    /// The bytes of an incomplete sequence waiting for its continuation.
    pub(crate) fn pending(&self) -> &[u8] {
        &self.pending[..self.pending_len]
    }

    /// Decodes `bytes`, passing each decoded run of text to `sink`.
    pub(crate) fn decode(&mut self, bytes: &[u8], mut sink: impl FnMut(&str)) {
        let rest = self.finish_pending(bytes, &mut sink);
        let mut chunks = rest.utf8_chunks().peekable();

        while let Some(chunk) = chunks.next() {
            if !chunk.valid().is_empty() {
                sink(chunk.valid());
            }

            let invalid = chunk.invalid();

            if invalid.is_empty() {
                continue;
            }

            if chunks.peek().is_none() && is_incomplete(invalid) {
                self.stash(invalid);
            } else {
                sink(REPLACEMENT);
            }
        }
    }

    /// Completes the pending sequence with bytes from the front of `bytes`
    /// and returns the bytes not consumed.
    fn finish_pending<'a>(&mut self, bytes: &'a [u8], sink: &mut impl FnMut(&str)) -> &'a [u8] {
        let mut consumed = 0;

        while self.pending_len > 0 {
            let Some(&byte) = bytes.get(consumed) else {
                return &[];
            };

            self.pending[self.pending_len] = byte;
            self.pending_len += 1;
            consumed += 1;

            match std::str::from_utf8(self.pending()) {
                Ok(text) => {
                    sink(text);
                    self.pending_len = 0;
                }
                Err(err) => {
                    let Some(bad) = err.error_len() else {
                        continue;
                    };

                    sink(REPLACEMENT);
                    // Bytes after the invalid subpart start afresh; they came
                    // from `bytes`, so rewind over them and decode them again.
                    let leftover = self.pending_len - err.valid_up_to() - bad;
                    consumed -= leftover.min(consumed);
                    self.pending_len = 0;
                }
            }
        }

        &bytes[consumed..]
    }

    fn stash(&mut self, bytes: &[u8]) {
        let len = bytes.len().min(self.pending.len() - 1);
        self.pending[..len].copy_from_slice(&bytes[..len]);
        self.pending_len = len;
    }
}

/// Whether `bytes` is a valid but unfinished prefix of one UTF-8 sequence.
fn is_incomplete(bytes: &[u8]) -> bool {
    matches!(std::str::from_utf8(bytes), Err(err) if err.valid_up_to() == 0 && err.error_len().is_none())
}

#[cfg(test)]
mod tests {
    use super::Utf8Decoder;

    fn decode_in_pieces(pieces: &[&[u8]]) -> (String, Vec<u8>) {
        let mut decoder = Utf8Decoder::default();
        let mut out = String::new();

        for piece in pieces {
            decoder.decode(piece, |text| out.push_str(text));
        }

        (out, decoder.pending().to_vec())
    }

    #[test]
    fn matches_lossy_decoding_at_every_split() {
        let samples: [&[u8]; 6] = [
            "héllo 日本語 🎉".as_bytes(),
            b"\xe4\xb8a\xf0\x80\x80z",
            b"\xff\xfe\xc0\xafok\xed\xa0\x80",
            b"\xf4\x90\x80\x80\xe2\x82",
            b"\x1b[31m\xe2\x94\x80\x1b[0m",
            b"\xc3",
        ];

        for sample in samples {
            let whole = String::from_utf8_lossy(sample);

            for cut in 0..=sample.len() {
                for cut2 in cut..=sample.len() {
                    let pieces = [&sample[..cut], &sample[cut..cut2], &sample[cut2..]];
                    let (mut text, pending) = decode_in_pieces(&pieces);
                    text.push_str(&String::from_utf8_lossy(&pending));
                    assert_eq!(text, whole, "sample {sample:?} cut {cut} {cut2}");
                }
            }
        }
    }

    #[test]
    fn keeps_only_incomplete_tail() {
        let (text, pending) = decode_in_pieces(&[b"ab\xe6\x97"]);
        assert_eq!(text, "ab");
        assert_eq!(pending, b"\xe6\x97");
        let (text, pending) = decode_in_pieces(&[b"ab\xe6\x97", b"\xa5c"]);
        assert_eq!(text, "ab日c");
        assert!(pending.is_empty());
    }

    #[test]
    fn pending_interrupted_by_ascii_is_replaced() {
        let (text, pending) = decode_in_pieces(&[b"\xe6", b"\x97", b"x"]);
        assert_eq!(text, "\u{FFFD}x");
        assert!(pending.is_empty());
    }
}
