//! Every message round-trips through a frame unchanged.

#![allow(clippy::unwrap_used)]

use crate::frame::{encode_to_vec, FrameDecoder, DEFAULT_MAX_FRAME};
use crate::*;
use serde::{de::DeserializeOwned, Serialize};
use uuid::Uuid;

fn round_trip<T: Serialize + DeserializeOwned + PartialEq + std::fmt::Debug>(message: T) {
    let wire = encode_to_vec(&message).unwrap();
    let mut decoder = FrameDecoder::new(DEFAULT_MAX_FRAME);
    decoder.push(&wire);
    assert_eq!(decoder.next_frame::<T>().unwrap(), Some(message));
    assert_eq!(decoder.next_frame::<T>().unwrap(), None);
}

fn info() -> SessionInfo {
    SessionInfo {
        id: Uuid::now_v7(),
        name: Some("deploy".into()),
        host: "vps".into(),
        shell: "/bin/bash".into(),
        cwd: "/home/me".into(),
        created_ms: 1,
        last_active_ms: 2,
        attached: true,
        pid: Some(42),
        size: WinSize {
            rows: 30,
            cols: 100,
        },
        state: SessionState::Exited { code: 3 },
        output_bytes: 99,
    }
}

fn snapshot() -> Snapshot {
    Snapshot {
        name: Some("deploy".into()),
        host: "vps".into(),
        node_fingerprint: "SHA256:x".into(),
        shell: "/bin/bash".into(),
        cwd: "/srv".into(),
        env: vec![("TERM".into(), "xterm".into())],
        size: WinSize { rows: 3, cols: 4 },
        created_ms: 1,
        saved_at_ms: 2,
        scrollback: vec![0xff, b'\n', 0],
    }
}

fn error() -> ErrorReply {
    ErrorReply {
        kind: ErrorKind::NotFound,
        message: "no such session".into(),
    }
}

#[test]
fn control_messages_round_trip() {
    for credential in [
        None,
        Some(Credential::Invite("tok".into())),
        Some(Credential::MigrationTicket("tik".into())),
    ] {
        round_trip(Hello {
            version: PROTOCOL_VERSION,
            credential,
        });
    }
    round_trip(HelloReply::Welcome {
        version: 1,
        host: "h".into(),
        invited: false,
    });
    round_trip(HelloReply::Refused(error()));
    round_trip(RelayOpen {
        client_addr: "192.0.2.1:5000".into(),
        client: Fingerprint::of_spki(b"client"),
    });
    let id = Uuid::now_v7();
    let key = Fingerprint::of_spki(b"key");
    for request in [
        CreateSession {
            name: Some("n".into()),
            size: WinSize { rows: 1, cols: 2 },
            term: Some("xterm".into()),
            cwd: Some("/tmp".into()),
            env: vec![("A".into(), "B".into())],
        }
        .into_request(),
        ListSessions.into_request(),
        Revoke {
            fingerprint: key.clone(),
        }
        .into_request(),
        Show {
            session: id,
            tail: Some(5),
            screen: true,
        }
        .into_request(),
        MarkAttached {
            session: id,
            attached: true,
        }
        .into_request(),
        Destroy { session: id }.into_request(),
        DestroyIdle { idle_ms: 5 }.into_request(),
        SendInput {
            session: id,
            data: b"ls\n".to_vec(),
        }
        .into_request(),
        TakeSnapshot {
            session: id,
            lines: Some(10),
        }
        .into_request(),
        Restore {
            snapshot: snapshot(),
            name: Some("renamed".into()),
        }
        .into_request(),
        IssueTicket.into_request(),
        Register {
            name: "home".into(),
        }
        .into_request(),
        Relay { to: "home".into() }.into_request(),
        Migrate {
            session: id,
            to_name: "two".into(),
            to_addr: "127.0.0.1:7443".into(),
            to_fingerprint: key.clone(),
            ticket: "tok".into(),
            name: None,
        }
        .into_request(),
    ] {
        round_trip(request);
    }
    let restored = Restored {
        session: info(),
        dropped: 3,
    };
    for reply in [
        Reply::Session(info()),
        Reply::Sessions(vec![info(), info()]),
        Reply::Shown(Shown {
            session: info(),
            tail: b"x\n".to_vec(),
            screen: Some(ScreenText {
                rows: vec!["$ ls".into(), String::new()],
                ansi_rows: vec!["\x1b[1m$\x1b[0m ls".into(), String::new()],
                cursor: (4, 0, true),
                alternate: false,
            }),
        }),
        Reply::Destroyed(vec![id]),
        Reply::Done,
        Reply::Revoked(2),
        Reply::Error(error()),
        Reply::Snapshot(snapshot()),
        Reply::Restored(restored.clone()),
        Reply::Ticket(Ticket {
            token: "tok".into(),
            expires_ms: 9,
        }),
        Reply::Migrated(restored),
    ] {
        round_trip(reply);
    }
}

#[test]
fn a_call_takes_only_its_own_reply() {
    let shown = Shown {
        session: info(),
        tail: vec![],
        screen: None,
    };
    assert_eq!(Show::take_reply(Reply::Shown(shown.clone())), Ok(shown));
    assert_eq!(
        Show::take_reply(Reply::Error(error())),
        Err(Box::new(Reply::Error(error())))
    );
    assert_eq!(Show::take_reply(Reply::Done), Err(Box::new(Reply::Done)));
    assert_eq!(SendInput::take_reply(Reply::Done), Ok(()));
    let relaying = Relaying {
        node_addr: "198.51.100.7:40000".into(),
    };
    assert_eq!(
        Relay::take_reply(Reply::Relaying(relaying.clone())),
        Ok(relaying)
    );
    // An older meeting node's Done: relayed, with no address to punch to.
    assert_eq!(Relay::take_reply(Reply::Done).unwrap().node_addr, "");
    assert!(Relay::take_reply(Reply::Revoked(1)).is_err());
    assert_eq!(Register::take_reply(Reply::Done), Ok(()));
    assert_eq!(
        Restore::take_reply(Reply::Migrated(Restored {
            session: info(),
            dropped: 0
        }))
        .ok(),
        None
    );
}

#[test]
fn fingerprints_are_checked_when_read() {
    let fingerprint = Fingerprint::of_spki(b"key");
    let wire = encode_to_vec(&fingerprint).unwrap();
    let mut decoder = FrameDecoder::new(DEFAULT_MAX_FRAME);
    decoder.push(&wire);
    assert_eq!(
        decoder.next_frame::<Fingerprint>().unwrap(),
        Some(fingerprint)
    );
    let wire = encode_to_vec(&"SHA256:short".to_string()).unwrap();
    let mut decoder = FrameDecoder::new(DEFAULT_MAX_FRAME);
    decoder.push(&wire);
    assert!(decoder.next_frame::<Fingerprint>().is_err());
}

#[test]
fn attach_messages_round_trip() {
    round_trip(AttachRequest {
        session: Uuid::now_v7(),
        mode: AttachMode::ReadOnly,
        takeover: true,
        resume_from: Some(7),
        scrollback_bytes: 100,
        size: WinSize::default(),
        input_stream: 9,
    });
    for input in [
        AttachInput::Input {
            seq: 3,
            data: vec![3],
        },
        AttachInput::Resize(WinSize { rows: 5, cols: 6 }),
        AttachInput::Detach,
        AttachInput::Probe,
        AttachInput::Shown { offset: 77 },
    ] {
        round_trip(input);
    }
    for output in [
        AttachOutput::Attached {
            session: info(),
            offset: 5,
            input_seq: 2,
            input_reset: true,
        },
        AttachOutput::Output {
            offset: 9,
            data: b"hi".to_vec(),
        },
        AttachOutput::InputAck { seq: 4 },
        AttachOutput::EchoAck { seq: 3 },
        AttachOutput::Exited { code: 1 },
        AttachOutput::Detached(DetachReason::TakenOver {
            by: Fingerprint::of_spki(b"other"),
            from: "10.0.0.1:5".into(),
        }),
        AttachOutput::Detached(DetachReason::Moved {
            to: "two".into(),
            session: "deploy".into(),
        }),
        AttachOutput::Detached(DetachReason::Destroyed),
        AttachOutput::Screen(ScreenFrame {
            offset: 5_000_000,
            skipped: 4_000_000,
            reason: SkipReason::Typed,
            size: WinSize::default(),
            dump: b"\x1b[1;1Hprompt$ ".to_vec(),
        }),
        AttachOutput::Error(error()),
    ] {
        round_trip(output);
    }
}

#[test]
fn payload_bytes_are_byte_strings() {
    let send = SendInput {
        session: Uuid::nil(),
        data: vec![9; 4],
    };
    let wire = encode_to_vec(&send.into_request()).unwrap();
    assert!(wire.windows(5).any(|w| w == [0x44, 9, 9, 9, 9]));
}
