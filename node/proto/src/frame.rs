//! Length-prefixed CBOR frames, sans-IO.
//!
//! A frame is a 4-byte big-endian body length followed by the CBOR encoding (ciborium) of one
//! message. The decoder buffers pushed bytes and yields whole messages; a length over the limit
//! or a body that is not a valid message is an error, after which the stream is not trusted.

use serde::de::DeserializeOwned;
use serde::Serialize;

/// The default limit on a frame's body: large enough for a full output chunk or a snapshot's
/// scrollback, small enough that a peer cannot make the node buffer without bound.
pub const DEFAULT_MAX_FRAME: usize = 8 << 20;

/// Bytes in the length prefix.
pub const HEADER_LEN: usize = 4;

/// Why bytes could not be turned into (or made from) a frame.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FrameError {
    /// The length prefix exceeds the limit.
    #[error("frame of {len} bytes exceeds the {max}-byte limit (max_frame in config.yaml)")]
    Oversized {
        /// Announced body length.
        len: usize,
        /// The limit in force.
        max: usize,
    },
    /// The body is not valid CBOR for the expected message.
    #[error("malformed frame: {0}")]
    Malformed(String),
}

/// Appends one frame holding `message` to `out`.
pub fn encode<T: Serialize>(message: &T, out: &mut Vec<u8>) -> Result<(), FrameError> {
    let at = out.len();
    out.extend_from_slice(&[0; HEADER_LEN]);
    ciborium::into_writer(message, &mut *out).map_err(|e| FrameError::Malformed(e.to_string()))?;
    let len = out.len() - at - HEADER_LEN;
    let len32 = u32::try_from(len).map_err(|_| FrameError::Oversized {
        len,
        max: u32::MAX as usize,
    })?;
    out[at..at + HEADER_LEN].copy_from_slice(&len32.to_be_bytes());
    Ok(())
}

/// One frame holding `message`, as a new buffer.
pub fn encode_to_vec<T: Serialize>(message: &T) -> Result<Vec<u8>, FrameError> {
    let mut out = Vec::new();
    encode(message, &mut out)?;
    Ok(out)
}

/// Bytes of the CBOR decoder's scratch space (ciborium's own default): short strings are read
/// into it, byte strings are copied through it in pieces of this size.
const SCRATCH_LEN: usize = 4096;

/// Reassembles frames from a byte stream.
pub struct FrameDecoder {
    buffer: Vec<u8>,
    /// Bytes of `buffer` already consumed (compacted lazily).
    consumed: usize,
    max: usize,
    /// Kept from frame to frame: `ciborium::from_reader` zeroes a fresh 4 KiB of stack for
    /// every message, a whole page of cold cache lines on a keystroke's path.
    scratch: Box<[u8]>,
}

impl std::fmt::Debug for FrameDecoder {
    /// Leaves out the bytes: the buffer and the scratch space hold what was typed (passwords too).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FrameDecoder")
            .field("buffered", &(self.buffer.len() - self.consumed))
            .field("max", &self.max)
            .finish_non_exhaustive()
    }
}

impl FrameDecoder {
    /// A decoder that refuses bodies longer than `max` bytes.
    pub fn new(max: usize) -> Self {
        FrameDecoder {
            buffer: Vec::new(),
            consumed: 0,
            max,
            scratch: vec![0; SCRATCH_LEN].into_boxed_slice(),
        }
    }

    /// Changes the limit on bodies (e.g. raised once a peer is admitted).
    pub fn set_max(&mut self, max: usize) {
        self.max = max;
    }

    /// Adds bytes received from the stream.
    pub fn push(&mut self, bytes: &[u8]) {
        if self.consumed > 0 && self.consumed == self.buffer.len() {
            self.buffer.clear();
            self.consumed = 0;
        }
        self.buffer.extend_from_slice(bytes);
    }

    /// How many more bytes are needed before the next frame can be decoded (at least 1 when
    /// no whole frame is buffered), or an error if the announced length is over the limit.
    pub fn needed(&self) -> Result<usize, FrameError> {
        let pending = &self.buffer[self.consumed..];
        if pending.len() < HEADER_LEN {
            return Ok(HEADER_LEN - pending.len());
        }
        let len = u32::from_be_bytes([pending[0], pending[1], pending[2], pending[3]]) as usize;
        if len > self.max {
            return Err(FrameError::Oversized { len, max: self.max });
        }
        Ok((HEADER_LEN + len).saturating_sub(pending.len()))
    }

    /// Takes the bytes received but not yet decoded (when the stream stops carrying frames).
    pub fn take_buffered(&mut self) -> Vec<u8> {
        let rest = self.buffer.split_off(self.consumed);
        self.buffer.clear();
        self.consumed = 0;
        rest
    }

    /// The next whole message, if one is buffered.
    pub fn next_frame<T: DeserializeOwned>(&mut self) -> Result<Option<T>, FrameError> {
        if self.needed()? > 0 {
            return Ok(None);
        }
        let pending = &self.buffer[self.consumed..];
        let len = u32::from_be_bytes([pending[0], pending[1], pending[2], pending[3]]) as usize;
        let mut body = &pending[HEADER_LEN..HEADER_LEN + len];
        // ciborium stops at the end of the message; the rest of the body must be empty. Bytes
        // after the message mean the frame is not one message as the sender encoded it, so the
        // frame is refused rather than half read (found by the property tests in frame_props.rs).
        let message = ciborium::from_reader_with_buffer(&mut body, &mut self.scratch)
            .map_err(|e| FrameError::Malformed(e.to_string()))
            .and_then(|message| match body.len() {
                0 => Ok(message),
                extra => Err(FrameError::Malformed(format!(
                    "{extra} bytes after the message"
                ))),
            });
        self.consumed += HEADER_LEN + len;
        if self.consumed > 64 * 1024 && self.consumed * 2 > self.buffer.len() {
            self.buffer.drain(..self.consumed);
            self.consumed = 0;
        }
        message.map(Some)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize)]
    struct Sample {
        n: u32,
        #[serde(with = "serde_bytes")]
        data: Vec<u8>,
    }

    #[test]
    fn debug_output_shows_no_bytes_decoded_or_buffered() {
        let secret = b"hunter2".to_vec();
        let mut wire = Vec::new();
        for n in 0..2 {
            let sample = Sample {
                n,
                data: secret.clone(),
            };
            encode(&sample, &mut wire).unwrap();
        }
        let mut decoder = FrameDecoder::new(DEFAULT_MAX_FRAME);
        decoder.push(&wire);
        assert_eq!(
            decoder.next_frame::<Sample>().unwrap().unwrap().data,
            secret
        );
        let shown = format!("{decoder:?}");
        let bytes_as_debug = format!("{:?}", &secret[..3])
            .trim_matches(['[', ']'])
            .to_owned();
        assert!(
            !shown.contains("hunter2") && !shown.contains(&bytes_as_debug),
            "{shown}"
        );
        assert!(shown.contains("buffered"), "{shown}");
    }

    #[test]
    fn frames_split_anywhere_reassemble() {
        let mut wire = Vec::new();
        for n in 0..5 {
            encode(
                &Sample {
                    n,
                    data: vec![n as u8; n as usize * 100],
                },
                &mut wire,
            )
            .unwrap();
        }
        for step in [1, 3, 7, 1000] {
            let mut decoder = FrameDecoder::new(DEFAULT_MAX_FRAME);
            let mut got = Vec::new();
            for piece in wire.chunks(step) {
                decoder.push(piece);
                while let Some(sample) = decoder.next_frame::<Sample>().unwrap() {
                    got.push(sample.n);
                }
            }
            assert_eq!(got, vec![0, 1, 2, 3, 4]);
        }
    }

    #[test]
    fn bytes_are_cbor_byte_strings() {
        let wire = encode_to_vec(&Sample {
            n: 1,
            data: vec![7; 3],
        })
        .unwrap();
        // Major type 2 (byte string) of length 3: 0x43, followed by the bytes.
        assert!(wire.windows(4).any(|w| w == [0x43, 7, 7, 7]));
    }

    #[test]
    fn oversized_and_malformed_are_errors() {
        let mut decoder = FrameDecoder::new(16);
        decoder.push(&100u32.to_be_bytes());
        assert_eq!(
            decoder.next_frame::<Sample>(),
            Err(FrameError::Oversized { len: 100, max: 16 })
        );
        let mut decoder = FrameDecoder::new(16);
        decoder.push(&[0, 0, 0, 3, 0xff, 0xff, 0xff]);
        assert!(matches!(
            decoder.next_frame::<Sample>(),
            Err(FrameError::Malformed(_))
        ));
    }

    /// Regression (property tests): a length prefix that covers bytes after the message was
    /// accepted, the extra bytes silently dropped.
    #[test]
    fn bytes_after_the_message_are_malformed() {
        let hello = crate::Hello {
            version: 0,
            credential: None,
        };
        let mut wire = encode_to_vec(&hello).unwrap();
        wire.push(9);
        let len = (wire.len() - HEADER_LEN) as u32;
        wire[..HEADER_LEN].copy_from_slice(&len.to_be_bytes());
        encode(&hello, &mut wire).unwrap();
        let mut decoder = FrameDecoder::new(DEFAULT_MAX_FRAME);
        decoder.push(&wire);
        assert_eq!(
            decoder.next_frame::<crate::Hello>(),
            Err(FrameError::Malformed("1 bytes after the message".into()))
        );
        // The bad frame is skipped whole: the next one decodes.
        assert_eq!(decoder.next_frame(), Ok(Some(hello)));
    }
}

// Property tests, in their own file; a child of this module so that they can check the size of
// the decoder's buffer.
#[cfg(test)]
#[path = "frame_props.rs"]
mod props;
