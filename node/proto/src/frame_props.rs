//! Property tests for [`crate::frame`] and every message read from the network, the in-suite
//! counterpart of the `frame_decoder` fuzz target (`node/fuzz`).
//!
//! - hostile streams (raw bytes, and frames with arbitrary bodies) pushed in arbitrary pieces
//!   and decoded as each message type: no panic, and the decoder's buffer stays bounded by the
//!   frame limit;
//! - arbitrary well-formed messages round-trip exactly through [`encode`] and a decoder fed in
//!   random pieces;
//! - a valid frame truncated, bit-flipped or padded never panics and never yields a message it
//!   does not hold.
//!
//! Declared from the bottom of `frame.rs`, so that it can read the decoder's private buffer.

#![allow(clippy::unwrap_used)]

use super::*;
use crate::snapshot::Snapshot;
use crate::*;
use proptest::collection::vec;
use proptest::option;
use proptest::prelude::*;
use std::fmt::Debug;
use uuid::Uuid;

/// Bytes the decoder may hold beyond the unconsumed ones before it compacts its buffer (the
/// `64 * 1024` in [`FrameDecoder::next_frame`]).
const COMPACT_AFTER: usize = 64 * 1024;

/// What the tests need of a message type.
trait Message: Serialize + DeserializeOwned + PartialEq + Debug {}
impl<T: Serialize + DeserializeOwned + PartialEq + Debug> Message for T {}

/// Pushes `stream` in pieces of the sizes in `pieces` (cycled) and decodes every frame as `T`,
/// as a connection would, checking after each piece that the decoder's memory is bounded.
/// Returns the messages decoded and the error that ended the stream, if any.
fn decode_pieces<T: Message>(
    stream: &[u8],
    pieces: &[usize],
    max: usize,
) -> (Vec<T>, Option<FrameError>) {
    let mut decoder = FrameDecoder::new(max);
    let mut messages = Vec::new();
    let mut rest = stream;
    for &piece in pieces.iter().cycle() {
        if rest.is_empty() {
            break;
        }
        let (now, later) = rest.split_at(piece.clamp(1, rest.len()));
        rest = later;
        decoder.push(now);
        loop {
            match decoder.next_frame::<T>() {
                Ok(Some(message)) => messages.push(message),
                Ok(None) => break,
                // The decoder skipped the bad body; keep going, to exercise what follows it
                // (a connection closes here, which is only easier on the decoder).
                Err(FrameError::Malformed(_)) => {}
                Err(FrameError::Oversized { len, max: limit }) => {
                    assert!(len > max && limit == max, "{len} over {limit}, limit {max}");
                    let oversized = FrameError::Oversized { len, max };
                    // Sticky: the stream is not trusted past an oversized length.
                    assert_eq!(decoder.next_frame::<T>(), Err(oversized));
                    return (messages, Some(FrameError::Oversized { len, max }));
                }
            }
        }
        let pending = decoder.buffer.len() - decoder.consumed;
        assert!(
            pending < HEADER_LEN + max,
            "{pending} bytes pending, limit {max}"
        );
        assert!(
            decoder.buffer.len() <= COMPACT_AFTER + 2 * (HEADER_LEN + max),
            "buffer of {} bytes, limit {max}",
            decoder.buffer.len()
        );
    }
    (messages, None)
}

/// Decodes `stream` as every message type a node or a client reads; whatever decodes must
/// re-encode to a frame that decodes to the same message.
fn decode_as_everything(stream: &[u8], pieces: &[usize], max: usize) {
    fn check<T: Message>(stream: &[u8], pieces: &[usize], max: usize) {
        for message in decode_pieces::<T>(stream, pieces, max).0 {
            let wire = encode_to_vec(&message).unwrap();
            let (again, error) = decode_pieces::<T>(&wire, &[wire.len()], wire.len());
            assert_eq!((again, error), (vec![message], None));
        }
    }
    // Node side.
    check::<Hello>(stream, pieces, max);
    check::<Request>(stream, pieces, max);
    check::<AttachRequest>(stream, pieces, max);
    check::<AttachInput>(stream, pieces, max);
    // Client side.
    check::<HelloReply>(stream, pieces, max);
    check::<Reply>(stream, pieces, max);
    check::<AttachOutput>(stream, pieces, max);
}

/// Frames the given bodies with their true lengths.
fn framed(bodies: &[Vec<u8>]) -> Vec<u8> {
    let mut stream = Vec::new();
    for body in bodies {
        stream.extend_from_slice(&(body.len() as u32).to_be_bytes());
        stream.extend_from_slice(body);
    }
    stream
}

fn pieces() -> impl Strategy<Value = Vec<usize>> {
    vec(prop_oneof![1..8usize, 8..600usize], 1..8)
}

fn limits() -> impl Strategy<Value = usize> {
    prop_oneof![0..64usize, Just(4096), Just(DEFAULT_MAX_FRAME)]
}

fn text() -> impl Strategy<Value = String> {
    "(?s).{0,12}"
}

/// Byte payloads, sometimes past ciborium's 4096-byte scratch buffer (the segmented path).
fn bytes() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![4 => vec(any::<u8>(), 0..48), 1 => vec(any::<u8>(), 4090..4200)]
}

fn uuid() -> impl Strategy<Value = Uuid> {
    any::<u128>().prop_map(Uuid::from_u128)
}

fn win_size() -> impl Strategy<Value = WinSize> {
    (any::<u16>(), any::<u16>()).prop_map(|(rows, cols)| WinSize { rows, cols })
}

fn env() -> impl Strategy<Value = Vec<(String, String)>> {
    vec((text(), text()), 0..4)
}

fn hello() -> impl Strategy<Value = Hello> {
    let credential = option::of(prop_oneof![
        text().prop_map(Credential::Invite),
        text().prop_map(Credential::MigrationTicket),
    ]);
    (any::<u32>(), credential).prop_map(|(version, credential)| Hello {
        version,
        credential,
    })
}

fn snapshot() -> impl Strategy<Value = Snapshot> {
    (
        (option::of(text()), text(), text(), text(), text()),
        (env(), win_size(), any::<u64>(), any::<u64>(), bytes()),
    )
        .prop_map(
            |(
                (name, host, node_fingerprint, shell, cwd),
                (env, size, created_ms, saved_at_ms, scrollback),
            )| Snapshot {
                name,
                host,
                node_fingerprint,
                shell,
                cwd,
                env,
                size,
                created_ms,
                saved_at_ms,
                scrollback,
            },
        )
}

fn request() -> impl Strategy<Value = Request> {
    let create = (
        option::of(text()),
        win_size(),
        option::of(text()),
        option::of(text()),
        env(),
    )
        .prop_map(|(name, size, term, cwd, env)| {
            Request::CreateSession(CreateSession {
                name,
                size,
                term,
                cwd,
                env,
            })
        });
    let migrate = (uuid(), text(), text(), bytes(), text(), option::of(text())).prop_map(
        |(session, to_name, to_addr, key, ticket, name)| {
            Request::Migrate(Migrate {
                session,
                to_name,
                to_addr,
                to_fingerprint: Fingerprint::of_spki(&key),
                ticket,
                name,
            })
        },
    );
    prop_oneof![
        create,
        Just(Request::ListSessions(ListSessions)),
        (uuid(), option::of(any::<u32>()), any::<bool>()).prop_map(|(session, tail, screen)| {
            Request::Show(Show {
                session,
                tail,
                screen,
            })
        }),
        (uuid(), any::<bool>()).prop_map(|(session, attached)| Request::MarkAttached(
            MarkAttached { session, attached }
        )),
        uuid().prop_map(|session| Request::Destroy(Destroy { session })),
        any::<u64>().prop_map(|idle_ms| Request::DestroyIdle(DestroyIdle { idle_ms })),
        (uuid(), bytes())
            .prop_map(|(session, data)| Request::SendInput(SendInput { session, data })),
        (uuid(), option::of(any::<u32>()))
            .prop_map(|(session, lines)| Request::TakeSnapshot(TakeSnapshot { session, lines })),
        (snapshot(), option::of(text()))
            .prop_map(|(snapshot, name)| Request::Restore(Restore { snapshot, name })),
        Just(Request::IssueTicket(IssueTicket)),
        migrate,
    ]
}

fn attach_request() -> impl Strategy<Value = AttachRequest> {
    (
        uuid(),
        prop_oneof![Just(AttachMode::Interactive), Just(AttachMode::ReadOnly)],
        any::<bool>(),
        option::of(any::<u64>()),
        any::<u64>(),
        win_size(),
    )
        .prop_map(
            |(session, mode, takeover, resume_from, scrollback_bytes, size)| AttachRequest {
                session,
                mode,
                takeover,
                resume_from,
                scrollback_bytes,
                size,
                input_stream: scrollback_bytes ^ 0x5eed,
            },
        )
}

fn attach_input() -> impl Strategy<Value = AttachInput> {
    prop_oneof![
        (any::<u64>(), bytes()).prop_map(|(seq, data)| AttachInput::Input { seq, data }),
        win_size().prop_map(AttachInput::Resize),
        Just(AttachInput::Detach),
        Just(AttachInput::Probe),
        any::<u64>().prop_map(|offset| AttachInput::Shown { offset }),
    ]
}

/// Encodes `messages` back to back, decodes them from pieces, and checks they come back exact
/// with nothing left over.
fn round_trip<T: Message>(messages: Vec<T>, pieces: &[usize]) -> Result<(), TestCaseError> {
    let mut wire = Vec::new();
    for message in &messages {
        encode(message, &mut wire).unwrap();
    }
    let (decoded, error) = decode_pieces::<T>(&wire, pieces, DEFAULT_MAX_FRAME);
    prop_assert_eq!(error, None);
    prop_assert_eq!(decoded, messages);
    Ok(())
}

/// One frame holding `message`, damaged by `damage`, decoded from `pieces`.
fn damaged<T: Message>(message: T, damage: &Damage, pieces: &[usize]) -> Result<(), TestCaseError> {
    let mut wire = encode_to_vec(&message).unwrap();
    match *damage {
        Damage::Truncate(at) => {
            wire.truncate(at.index(wire.len()));
            // An incomplete frame is never a message, and the decoder asks for the rest.
            let (decoded, error) = decode_pieces::<T>(&wire, pieces, DEFAULT_MAX_FRAME);
            prop_assert!(decoded.is_empty() && error.is_none());
        }
        Damage::FlipBits(ref flips) => {
            for &(at, bit) in flips {
                let at = at.index(wire.len());
                wire[at] ^= 1 << bit;
            }
            for limit in [DEFAULT_MAX_FRAME, wire.len()] {
                for decoded in decode_pieces::<T>(&wire, pieces, limit).0 {
                    // A flip can land on an equivalent encoding; whatever decodes round-trips.
                    let again = encode_to_vec(&decoded).unwrap();
                    let (back, _) = decode_pieces::<T>(&again, &[again.len()], again.len());
                    prop_assert_eq!(back, vec![decoded]);
                }
            }
        }
        Damage::Pad(ref extra) => {
            // The length covers bytes after the message: the frame is not what was encoded.
            wire.extend_from_slice(extra);
            let len = (wire.len() - HEADER_LEN) as u32;
            wire[..HEADER_LEN].copy_from_slice(&len.to_be_bytes());
            let mut decoder = FrameDecoder::new(DEFAULT_MAX_FRAME);
            decoder.push(&wire);
            prop_assert!(matches!(
                decoder.next_frame::<T>(),
                Err(FrameError::Malformed(_))
            ));
            prop_assert_eq!(decoder.needed(), Ok(HEADER_LEN));
        }
    }
    Ok(())
}

/// What [`damaged`] does to a frame.
#[derive(Debug, Clone)]
enum Damage {
    /// Cut it short (never to its full length).
    Truncate(prop::sample::Index),
    /// Flip bits: (byte, bit).
    FlipBits(Vec<(prop::sample::Index, u8)>),
    /// Append bytes and count them in the length prefix.
    Pad(Vec<u8>),
}

fn damage() -> impl Strategy<Value = Damage> {
    prop_oneof![
        any::<prop::sample::Index>().prop_map(Damage::Truncate),
        vec((any::<prop::sample::Index>(), 0..8u8), 1..4).prop_map(Damage::FlipBits),
        vec(any::<u8>(), 1..8).prop_map(Damage::Pad),
    ]
}

proptest! {
    #[test]
    fn raw_bytes_never_panic(
        stream in vec(any::<u8>(), 0..256),
        pieces in pieces(),
        max in limits(),
    ) {
        decode_as_everything(&stream, &pieces, max);
    }

    #[test]
    fn frames_of_arbitrary_bodies_never_panic(
        bodies in vec(
            prop_oneof![
                vec(any::<u8>(), 0..64),
                // Bodies that start like a message: maps, enum variants, arrays.
                (prop_oneof![Just(0xa1u8), Just(0xa2), Just(0x64), Just(0x82), Just(0xbf)],
                 vec(any::<u8>(), 0..64))
                    .prop_map(|(head, mut tail)| { tail.insert(0, head); tail }),
            ],
            0..6,
        ),
        pieces in pieces(),
        max in limits(),
    ) {
        decode_as_everything(&framed(&bodies), &pieces, max);
    }

    #[test]
    fn hellos_round_trip(messages in vec(hello(), 1..4), pieces in pieces()) {
        round_trip(messages, &pieces)?;
    }

    #[test]
    fn requests_round_trip(messages in vec(request(), 1..4), pieces in pieces()) {
        round_trip(messages, &pieces)?;
    }

    #[test]
    fn attach_requests_round_trip(messages in vec(attach_request(), 1..4), pieces in pieces()) {
        round_trip(messages, &pieces)?;
    }

    #[test]
    fn attach_inputs_round_trip(messages in vec(attach_input(), 1..4), pieces in pieces()) {
        round_trip(messages, &pieces)?;
    }

    #[test]
    fn damaged_frames_never_panic(
        hello in hello(),
        request in request(),
        attach_request in attach_request(),
        attach_input in attach_input(),
        damage in damage(),
        pieces in pieces(),
    ) {
        damaged(hello, &damage, &pieces)?;
        damaged(request, &damage, &pieces)?;
        damaged(attach_request, &damage, &pieces)?;
        damaged(attach_input, &damage, &pieces)?;
    }
}
