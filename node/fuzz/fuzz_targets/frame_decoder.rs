//! Arbitrary bytes into [`FrameDecoder`], decoded as every message read from the network.
//!
//! - the first input byte picks the size of the pieces the rest is pushed in, and the frame
//!   limit (a small one, to reach the oversized path, or the default);
//! - the rest is a stream, decoded in turn as each message a node reads (`Hello`, `Request`,
//!   `AttachRequest`, `AttachInput`) and each a client reads (`HelloReply`, `Reply`,
//!   `AttachOutput`);
//! - nothing may panic; a malformed frame is skipped and decoding goes on; an oversized length
//!   ends the stream, as it ends the connection; every message decoded must re-encode to a
//!   frame that decodes to the same message.

#![no_main]

use cmdop_proto::frame::{encode_to_vec, FrameDecoder, FrameError, DEFAULT_MAX_FRAME, HEADER_LEN};
use cmdop_proto::{
    AttachInput, AttachOutput, AttachRequest, Hello, HelloReply, Reply, Request,
};
use libfuzzer_sys::fuzz_target;
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::fmt::Debug;

/// Piece sizes, picked by the low three bits of the first byte.
const PIECES: [usize; 8] = [1, 2, 3, 5, 16, 255, 4096, usize::MAX];

/// Frame limits, picked by the next two bits.
const LIMITS: [usize; 4] = [0, 24, 4096, DEFAULT_MAX_FRAME];

fuzz_target!(|data: &[u8]| {
    let Some((&knobs, stream)) = data.split_first() else {
        return;
    };
    let piece = PIECES[usize::from(knobs & 0b111)];
    let max = LIMITS[usize::from((knobs >> 3) & 0b11)];
    decode::<Hello>(stream, piece, max);
    decode::<Request>(stream, piece, max);
    decode::<AttachRequest>(stream, piece, max);
    decode::<AttachInput>(stream, piece, max);
    decode::<HelloReply>(stream, piece, max);
    decode::<Reply>(stream, piece, max);
    decode::<AttachOutput>(stream, piece, max);
});

fn decode<T>(stream: &[u8], piece: usize, max: usize)
where
    T: Serialize + DeserializeOwned + PartialEq + Debug,
{
    let mut decoder = FrameDecoder::new(max);
    for chunk in stream.chunks(piece) {
        decoder.push(chunk);
        loop {
            match decoder.next_frame::<T>() {
                Ok(Some(message)) => check_round_trip(&message),
                Ok(None) => {
                    let needed = decoder
                        .needed()
                        .expect("a length over the limit is an error");
                    assert!(needed > 0 && needed <= HEADER_LEN + max);
                    break;
                }
                Err(FrameError::Malformed(_)) => {}
                Err(FrameError::Oversized { len, max: limit }) => {
                    assert!(len > max && limit == max);
                    return;
                }
            }
        }
    }
}

fn check_round_trip<T>(message: &T)
where
    T: Serialize + DeserializeOwned + PartialEq + Debug,
{
    let wire = encode_to_vec(message).expect("a decoded message encodes");
    let mut decoder = FrameDecoder::new(wire.len());
    decoder.push(&wire);
    let again = decoder.next_frame::<T>();
    assert!(
        matches!(&again, Ok(Some(again)) if again == message),
        "{message:?} came back as {again:?}"
    );
    assert_eq!(decoder.next_frame::<T>(), Ok(None));
}
